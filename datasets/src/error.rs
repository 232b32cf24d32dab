//! Errors from loading and checking a business's data. Every message names the file, the row or
//! the field, and what was expected.

use std::path::PathBuf;

/// An error in a config file or a data file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: could not {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("config {}: {msg}", path.display())]
    Config { path: PathBuf, msg: String },

    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },

    #[error("{}: required column {column:?} is missing; columns found: {}", path.display(), found.join(", "))]
    MissingColumn {
        path: PathBuf,
        column: String,
        found: Vec<String>,
    },

    #[error("{}: row {row}, column {column:?}: {msg}", path.display())]
    Value {
        path: PathBuf,
        row: usize,
        column: String,
        msg: String,
    },

    #[error("{0}")]
    TooLittleData(String),

    /// A bad flag or option value.
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    pub(crate) fn file(path: &std::path::Path, msg: impl Into<String>) -> Self {
        DataError::File {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}

//! Reading a file piece by piece, so that a customer list or a sales history larger than memory
//! comfortably allows is processed in bounded memory: Parquet by row-group slices (polars reads
//! only the row groups a slice touches), CSV by whole records (a quoted field may span lines).
//!
//! Polars' lazy engine could do this too, but its query planner and streaming engine are a large
//! extra compile in a CI that can afford exactly one build; the eager readers, fed one slice at a
//! time, give the same bounded memory for the simple projections these jobs need.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::config::FileSpec;
use crate::error::DataError;
use crate::table::{
    check_csv_spec, check_data_file, csv_columns, csv_options, csv_separator, is_parquet,
    open_file, parquet_columns, polars_err, replace_separator, Separator, Table, CSV_READ_FAILED,
};

/// A file read in pieces of at most `rows_per_chunk` data rows: an iterator of [`Table`]s whose
/// `file_row` numbers continue from one piece to the next.
pub struct TableChunks {
    read: ReadSpec,
    rows_per_chunk: usize,
    rows_done: usize,
    source: Source,
    done: bool,
}

/// What is read: the file, how, and which columns.
struct ReadSpec {
    path: PathBuf,
    spec: FileSpec,
    required: Vec<String>,
    optional: Vec<String>,
}

enum Source {
    Parquet {
        columns: Vec<String>,
        total_rows: usize,
    },
    Csv {
        reader: BufReader<std::fs::File>,
        separator: Separator,
        /// The header record, prepended to every piece.
        header: Vec<u8>,
    },
}

impl ReadSpec {
    /// Parses the header and a run of whole records.
    fn parse_csv(
        &self,
        separator: &Separator,
        header: &[u8],
        body: &[u8],
    ) -> Result<DataFrame, DataError> {
        let mut bytes = Vec::with_capacity(header.len() + body.len());
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(body);
        let (bytes, b) = match separator {
            Separator::Byte(b) => (bytes, *b),
            Separator::Multi(m) => replace_separator(&self.path, &bytes, m)?,
        };
        let df = csv_options(&self.spec, b)
            .into_reader_with_file_handle(std::io::Cursor::new(bytes))
            .finish()
            .map_err(|e| polars_err(&self.path, CSV_READ_FAILED, e))?;
        csv_columns(
            &self.path,
            &self.spec,
            separator,
            df,
            &self.required,
            &self.optional,
        )
    }
}

impl TableChunks {
    /// Opens `path` and checks what can be checked before the first piece: the file exists and is
    /// not empty, the Parquet schema or the CSV header has the `required` columns.
    pub fn open(
        path: &Path,
        spec: &FileSpec,
        required: &[String],
        optional: &[String],
        rows_per_chunk: usize,
    ) -> Result<TableChunks, DataError> {
        check_data_file(path)?;
        let source = if is_parquet(path) {
            let mut reader = ParquetReader::new(open_file(path, "open the Parquet file")?);
            let columns = parquet_columns(path, &mut reader, required, optional)?;
            let total_rows = reader
                .num_rows()
                .map_err(|e| polars_err(path, "read the Parquet metadata", e))?;
            Source::Parquet {
                columns,
                total_rows,
            }
        } else {
            check_csv_spec(path, spec)?;
            let separator = csv_separator(path, spec)?;
            let mut reader =
                BufReader::with_capacity(1 << 20, open_file(path, "open the CSV file")?);
            let mut header = Vec::new();
            if spec.has_header {
                read_record(path, &mut reader, &mut header)?;
            }
            Source::Csv {
                reader,
                separator,
                header,
            }
        };
        let chunks = TableChunks {
            read: ReadSpec {
                path: path.to_path_buf(),
                spec: spec.clone(),
                required: required.to_vec(),
                optional: optional.to_vec(),
            },
            rows_per_chunk: rows_per_chunk.max(1),
            rows_done: 0,
            source,
            done: false,
        };
        if let Source::Csv {
            header, separator, ..
        } = &chunks.source
        {
            // The header alone, parsed, names the columns: a missing one is reported now.
            if spec.has_header {
                chunks.read.parse_csv(separator, header, &[])?;
            }
        }
        Ok(chunks)
    }

    fn next_piece(&mut self) -> Result<Option<Table>, DataError> {
        let df = match &mut self.source {
            Source::Parquet {
                columns,
                total_rows,
            } => {
                if self.rows_done >= *total_rows {
                    return Ok(None);
                }
                let columns = columns.clone();
                ParquetReader::new(open_file(&self.read.path, "open the Parquet file")?)
                    .with_columns(Some(columns))
                    .with_slice(Some((self.rows_done, self.rows_per_chunk)))
                    .finish()
                    .map_err(|e| polars_err(&self.read.path, "read the Parquet rows", e))?
            }
            Source::Csv {
                reader,
                separator,
                header,
            } => {
                let mut body = Vec::new();
                let mut records = 0;
                while records < self.rows_per_chunk {
                    if !read_record(&self.read.path, reader, &mut body)? {
                        break;
                    }
                    records += 1;
                }
                if records == 0 {
                    return Ok(None);
                }
                self.read.parse_csv(separator, header, &body)?
            }
        };
        if df.height() == 0 {
            return Ok(None);
        }
        let table = Table::from_frame(&self.read.path, df, self.rows_done);
        self.rows_done += table.len();
        Ok(Some(table))
    }
}

impl Iterator for TableChunks {
    type Item = Result<Table, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_piece() {
            Ok(Some(t)) => Some(Ok(t)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Appends one CSV record (one line, or several when a quoted field holds line breaks) to `out`;
/// false at the end of the file.
fn read_record(
    path: &Path,
    reader: &mut BufReader<std::fs::File>,
    out: &mut Vec<u8>,
) -> Result<bool, DataError> {
    let mut quotes = 0usize;
    let mut any = false;
    loop {
        let start = out.len();
        let n = reader.read_until(b'\n', out).map_err(|e| DataError::Io {
            path: path.to_path_buf(),
            what: "read the CSV file".into(),
            source: e,
        })?;
        if n == 0 {
            return Ok(any);
        }
        any = true;
        quotes += out[start..].iter().filter(|&&b| b == b'"').count();
        // An even number of quotes so far: the line break ends the record.
        if quotes.is_multiple_of(2) || out.last() != Some(&b'\n') {
            return Ok(true);
        }
    }
}

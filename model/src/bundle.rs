//! The saved-bundle format: a directory with `bundle.json` (versions, the config as used, the data
//! fingerprint, a checksum of every other file), `metrics.json`, weight files (`*.bpk`) and JSON
//! side files (id vocabularies, scaling, recent history).
//!
//! A bundle is written into a scratch directory beside its destination and moved into place only
//! when complete, so a killed job never leaves a half-written bundle: the previous one stays.
//! Opening a bundle checks every file against its checksum before anything is loaded.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bumped whenever a bundle written by this version cannot be read by an older one or vice versa.
/// 2: the forecaster is saved as an ensemble of networks.
/// 3: its LSTM layers are fused (one input, hidden and bias tensor per layer).
/// 4: the forecaster's decoder reads the window's sales shape.
/// 5: the recommender's per-customer and per-product data in Parquet tables beside a JSON header.
pub const FORMAT_VERSION: u32 = 5;
/// The Burn version the weights were written with (pinned in the workspace manifest).
pub const BURN_VERSION: &str = "0.22.1";
/// Name of the manifest file.
pub const MANIFEST: &str = "bundle.json";

/// Errors opening or writing a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("bundle {}: {msg}", dir.display())]
    Invalid { dir: PathBuf, msg: String },
    #[error(
        "bundle {}: written with bundle format {found}, this build reads format {FORMAT_VERSION}; retrain with this version",
        dir.display()
    )]
    Version { dir: PathBuf, found: u32 },
}

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> BundleError {
    let path = path.to_path_buf();
    move |source| BundleError::Io { path, what, source }
}

/// `bundle.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleManifest {
    pub format_version: u32,
    pub crate_version: String,
    pub burn_version: String,
    pub created_at: String,
    /// The business config as used (TOML text).
    pub config: String,
    /// SHA-256 over the input data files (names, sizes and contents).
    pub data_fingerprint: String,
    /// Which models the bundle holds: `recommender`, `forecaster`.
    pub models: Vec<String>,
    /// Backend the models were trained on.
    pub trained_on: String,
    pub seed: u64,
    /// `ok`, or `failing` when a quality gate failed (the reasons are in `quality_gate`).
    pub status: String,
    #[serde(default)]
    pub quality_gate: Vec<String>,
    /// SHA-256 of every other file in the bundle.
    pub files: BTreeMap<String, String>,
}

/// SHA-256 of a file, hex encoded.
pub fn sha256_file(path: &Path) -> Result<String, BundleError> {
    let mut file = std::fs::File::open(path).map_err(io(path, "open for checksum"))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io(path, "read for checksum"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fingerprint of input files: their names, sizes and contents.
pub fn fingerprint_files(paths: &[PathBuf]) -> Result<String, BundleError> {
    let mut hasher = Sha256::new();
    for p in paths {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        hasher.update(name.as_bytes());
        hasher.update(sha256_file(p)?.as_bytes());
    }
    Ok(hex(&hasher.finalize()))
}

/// Writes a bundle into a scratch directory, then moves it into place.
pub struct BundleWriter {
    dest: PathBuf,
    scratch: PathBuf,
    files: BTreeMap<String, String>,
}

fn sibling(dest: &Path, tag: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "bundle".into());
    dest.with_file_name(format!(".{name}.{tag}-{}", std::process::id()))
}

impl BundleWriter {
    /// Starts a bundle that will end up at `dest`.
    pub fn create(dest: &Path) -> Result<Self, BundleError> {
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io(parent, "create the output directory"))?;
        }
        let scratch = sibling(dest, "partial");
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch)
                .map_err(io(&scratch, "remove an old scratch directory"))?;
        }
        std::fs::create_dir_all(&scratch).map_err(io(&scratch, "create the scratch directory"))?;
        Ok(BundleWriter {
            dest: dest.to_path_buf(),
            scratch,
            files: BTreeMap::new(),
        })
    }

    /// The scratch path of a file being written (for writers that take a path).
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.scratch.join(name)
    }

    /// The scratch directory the bundle's files are written into (for writers of several files;
    /// [`Self::register`] each of them).
    pub fn dir(&self) -> &Path {
        &self.scratch
    }

    /// Records a file written at [`Self::path_of`].
    pub fn register(&mut self, name: &str) -> Result<(), BundleError> {
        let sum = sha256_file(&self.scratch.join(name))?;
        self.files.insert(name.to_string(), sum);
        Ok(())
    }

    /// Writes a JSON file.
    pub fn write_json<T: Serialize>(&mut self, name: &str, value: &T) -> Result<(), BundleError> {
        let path = self.scratch.join(name);
        let text = serde_json::to_vec_pretty(value).map_err(|e| BundleError::Invalid {
            dir: self.dest.clone(),
            msg: format!("cannot encode {name}: {e}"),
        })?;
        std::fs::write(&path, text).map_err(io(&path, "write"))?;
        self.register(name)
    }

    /// Writes a module's weights as `<name>` (burnpack; `name` should end in `.bpk`).
    pub fn write_module<M: Module>(&mut self, name: &str, module: M) -> Result<(), BundleError> {
        let path = self.scratch.join(name);
        module.save_file(&path).map_err(|e| BundleError::Invalid {
            dir: self.dest.clone(),
            msg: format!("cannot save weights {name}: {e:?}"),
        })?;
        self.register(name)
    }

    /// Copies files of a previous bundle whose names start with `prefix` (keeping the other model
    /// when only one is retrained).
    pub fn carry_over(&mut self, previous: &Bundle, prefix: &str) -> Result<usize, BundleError> {
        let mut n = 0;
        for name in previous
            .manifest
            .files
            .keys()
            .filter(|n| n.starts_with(prefix))
        {
            let from = previous.dir.join(name);
            let to = self.scratch.join(name);
            std::fs::copy(&from, &to).map_err(io(&from, "copy from the previous bundle"))?;
            self.register(name)?;
            n += 1;
        }
        Ok(n)
    }

    /// Writes `bundle.json` and moves the bundle into place. The previous bundle at the
    /// destination, if any, is replaced only after the new one is complete on disk.
    pub fn finish(self, mut manifest: BundleManifest) -> Result<PathBuf, BundleError> {
        manifest.files = self.files.clone();
        let path = self.scratch.join(MANIFEST);
        let text = serde_json::to_vec_pretty(&manifest).map_err(|e| BundleError::Invalid {
            dir: self.dest.clone(),
            msg: format!("cannot encode the manifest: {e}"),
        })?;
        std::fs::write(&path, text).map_err(io(&path, "write"))?;
        for name in self.files.keys().map(String::as_str).chain([MANIFEST]) {
            let p = self.scratch.join(name);
            std::fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(io(&p, "flush"))?;
        }
        let old = sibling(&self.dest, "previous");
        if self.dest.exists() {
            if old.exists() {
                std::fs::remove_dir_all(&old).map_err(io(&old, "remove an old backup"))?;
            }
            std::fs::rename(&self.dest, &old)
                .map_err(io(&self.dest, "move the previous bundle aside"))?;
        }
        std::fs::rename(&self.scratch, &self.dest)
            .map_err(io(&self.dest, "move the new bundle into place"))?;
        if old.exists() {
            let _ = std::fs::remove_dir_all(&old);
        }
        Ok(self.dest)
    }

    /// Removes the scratch directory (on failure).
    pub fn abandon(self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// An opened, verified bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: BundleManifest,
}

/// Finds a bundle set aside by an interrupted swap (`.<name>.previous-<pid>`), if the destination is gone.
fn recover_interrupted_swap(dir: &Path) -> Option<PathBuf> {
    let name = dir.file_name()?.to_string_lossy().to_string();
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!(".{name}.previous-");
    std::fs::read_dir(parent)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                && p.join(MANIFEST).exists()
        })
}

impl Bundle {
    /// Opens a bundle and verifies the format version and every checksum.
    pub fn open(dir: &Path) -> Result<Self, BundleError> {
        if !dir.exists() {
            if let Some(previous) = recover_interrupted_swap(dir) {
                // A job was killed between moving the old bundle aside and moving the new one in.
                std::fs::rename(&previous, dir).map_err(io(dir, "restore the previous bundle"))?;
            }
        }
        let manifest_path = dir.join(MANIFEST);
        if !dir.is_dir() {
            return Err(BundleError::Invalid {
                dir: dir.to_path_buf(),
                msg: "no such bundle directory".into(),
            });
        }
        let text = std::fs::read(&manifest_path)
            .map_err(io(&manifest_path, "read the bundle manifest"))?;
        let value: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| BundleError::Invalid {
                dir: dir.to_path_buf(),
                msg: format!("{MANIFEST} is not valid JSON: {e}"),
            })?;
        let found = value
            .get("format_version")
            .and_then(|v| v.as_u64())
            .unwrap_or(0) as u32;
        if found != FORMAT_VERSION {
            return Err(BundleError::Version {
                dir: dir.to_path_buf(),
                found,
            });
        }
        let manifest: BundleManifest =
            serde_json::from_value(value).map_err(|e| BundleError::Invalid {
                dir: dir.to_path_buf(),
                msg: format!("{MANIFEST} does not have the expected fields: {e}"),
            })?;
        for (name, sum) in &manifest.files {
            let p = dir.join(name);
            if !p.exists() {
                return Err(BundleError::Invalid {
                    dir: dir.to_path_buf(),
                    msg: format!("file {name} is missing"),
                });
            }
            let actual = sha256_file(&p)?;
            if &actual != sum {
                return Err(BundleError::Invalid {
                    dir: dir.to_path_buf(),
                    msg: format!("file {name} does not match its checksum (truncated or corrupted); retrain or restore it"),
                });
            }
        }
        Ok(Bundle {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// Whether the bundle holds a model (`recommender` or `forecaster`).
    pub fn has(&self, model: &str) -> bool {
        self.manifest.models.iter().any(|m| m == model)
    }

    /// Checks that every named file is in the bundle (its checksum held when it was opened), for
    /// files read by other readers from [`Self::dir`].
    pub fn require(&self, names: &[&str]) -> Result<&Path, BundleError> {
        match names
            .iter()
            .find(|n| !self.manifest.files.contains_key(**n))
        {
            Some(name) => Err(BundleError::Invalid {
                dir: self.dir.clone(),
                msg: format!("file {name} is not in the bundle"),
            }),
            None => Ok(&self.dir),
        }
    }

    /// Reads a JSON file of the bundle.
    pub fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<T, BundleError> {
        if !self.manifest.files.contains_key(name) {
            return Err(BundleError::Invalid {
                dir: self.dir.clone(),
                msg: format!("file {name} is not in the bundle"),
            });
        }
        let path = self.dir.join(name);
        let bytes = std::fs::read(&path).map_err(io(&path, "read"))?;
        serde_json::from_slice(&bytes).map_err(|e| BundleError::Invalid {
            dir: self.dir.clone(),
            msg: format!("{name}: {e}"),
        })
    }

    /// Loads weights into a freshly initialised module.
    pub fn load_module<M: Module>(&self, name: &str, module: M) -> Result<M, BundleError> {
        if !self.manifest.files.contains_key(name) {
            return Err(BundleError::Invalid {
                dir: self.dir.clone(),
                msg: format!("weights {name} are not in the bundle"),
            });
        }
        module
            .try_load_file(self.dir.join(name))
            .map_err(|e| BundleError::Invalid {
                dir: self.dir.clone(),
                msg: format!("cannot load weights {name}: {e:?}"),
            })
    }
}

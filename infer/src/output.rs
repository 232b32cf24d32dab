//! Writing a scoring job's output (CSV or Parquet by extension) and its JSON manifest, both
//! through a temporary file and a rename.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use polars::prelude::DataFrame;
use serde::Serialize;
use shopcast_datasets::table::write_frame_atomic;
use shopcast_model::bundle::{sha256_file, MANIFEST};
use shopcast_model::Bundle;

/// `<out>.manifest.json`: what a job read, wrote and skipped.
#[derive(Debug, Clone, Serialize)]
pub struct JobManifest {
    pub job: String,
    pub output: String,
    pub bundle: String,
    /// SHA-256 of the bundle's `bundle.json` (which holds the checksums of all its files).
    pub bundle_checksum: String,
    pub bundle_created_at: String,
    pub device: String,
    pub shard: Option<String>,
    pub input_rows: usize,
    pub rows_written: usize,
    /// Rows skipped, by reason.
    pub rows_skipped: BTreeMap<String, usize>,
    /// Other counts worth knowing (e.g. cold-start customers, new products).
    pub counts: BTreeMap<String, usize>,
    /// Assumptions the job made (e.g. future prices when no future file was given).
    pub assumptions: Vec<String>,
    pub duration_seconds: f64,
    pub finished_at: String,
}

impl JobManifest {
    pub fn new(
        job: &str,
        out: &Path,
        bundle: &Bundle,
        device: &str,
        shard: Option<(u32, u32)>,
    ) -> Result<Self> {
        Ok(JobManifest {
            job: job.into(),
            output: out.display().to_string(),
            bundle: bundle.dir.display().to_string(),
            bundle_checksum: sha256_file(&bundle.dir.join(MANIFEST))?,
            bundle_created_at: bundle.manifest.created_at.clone(),
            device: device.into(),
            shard: shard.map(|(i, n)| format!("{i}/{n}")),
            input_rows: 0,
            rows_written: 0,
            rows_skipped: BTreeMap::new(),
            counts: BTreeMap::new(),
            assumptions: Vec::new(),
            duration_seconds: 0.0,
            finished_at: String::new(),
        })
    }
}

/// Path of the manifest beside an output file.
pub fn manifest_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".manifest.json");
    out.with_file_name(name)
}

/// Checks the output extension before any work is done.
pub fn check_output_path(out: &Path) -> Result<()> {
    match out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("csv") | Some("parquet") => Ok(()),
        _ => Err(shopcast_datasets::DataError::File {
            path: out.to_path_buf(),
            msg: "--out must end in .csv or .parquet".into(),
        }
        .into()),
    }
}

/// Writes the output, then the manifest.
pub fn write_output(
    df: &mut DataFrame,
    out: &Path,
    manifest: &mut JobManifest,
    started: std::time::Instant,
) -> Result<()> {
    write_frame_atomic(df, out)?;
    manifest.rows_written = df.height();
    manifest.duration_seconds = started.elapsed().as_secs_f64();
    manifest.finished_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let path = manifest_path(out);
    let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(manifest)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("moving the manifest into place at {}", path.display()))?;
    Ok(())
}

/// Parses `--shard I/N` (I counts from 0).
pub fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("--shard {s:?}: expected I/N, e.g. 0/4"))?;
    let i: u32 = i
        .trim()
        .parse()
        .map_err(|_| format!("--shard {s:?}: I must be a number"))?;
    let n: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("--shard {s:?}: N must be a number"))?;
    if n == 0 || i >= n {
        return Err(format!("--shard {s:?}: need 0 <= I < N"));
    }
    Ok((i, n))
}

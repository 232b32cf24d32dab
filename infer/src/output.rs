//! Writing a scoring job's output (CSV or Parquet by extension) and its JSON manifest, both
//! through a temporary file and a rename.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use polars::prelude::DataFrame;
use serde::Serialize;
use shopcast_datasets::table::{write_file_atomic, AtomicFrameWriter};
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
    /// The process's peak resident memory so far (Linux `VmHWM`), when the system reports it.
    pub peak_memory_bytes: Option<u64>,
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
            peak_memory_bytes: None,
            finished_at: String::new(),
        })
    }
}

/// Picks the device for a job, logging the fallback note (e.g. no GPU for `auto`) as a warning.
pub fn open_device(
    job: &str,
    choice: shopcast_model::DeviceChoice,
) -> Result<shopcast_model::SelectedDevice> {
    let selected =
        shopcast_model::select_device(choice).map_err(shopcast_datasets::DataError::Invalid)?;
    if let Some(note) = &selected.note {
        crate::log::warn(job, note);
    }
    Ok(selected)
}

/// Output columns holding the series keys, named as in the business's files.
pub fn key_columns(names: &[String], values: Vec<Vec<String>>) -> Vec<polars::prelude::Column> {
    names
        .iter()
        .zip(values)
        .map(|(name, v)| polars::prelude::Column::new(name.as_str().into(), v))
        .collect()
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
    let mut writer = AtomicFrameWriter::create(out, df.schema())?;
    writer.write(df)?;
    finish_output(writer, out, manifest, started)
}

/// Moves a streamed output into place, then writes the manifest beside it.
pub fn finish_output(
    writer: AtomicFrameWriter,
    out: &Path,
    manifest: &mut JobManifest,
    started: std::time::Instant,
) -> Result<()> {
    manifest.rows_written = writer.rows();
    writer.finish()?;
    manifest.duration_seconds = started.elapsed().as_secs_f64();
    manifest.peak_memory_bytes = peak_memory_bytes();
    manifest.finished_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let path = manifest_path(out);
    write_file_atomic(&path, &serde_json::to_vec_pretty(manifest)?)?;
    Ok(())
}

/// Peak resident memory of this process (`VmHWM` in `/proc/self/status`; Linux only).
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The shard a job scores: `--shard I/N` when given; else, with `--shards N`, index `I` from
/// `JOB_COMPLETION_INDEX` (Kubernetes Indexed Job) or `SLURM_ARRAY_TASK_ID` (minus
/// `SLURM_ARRAY_TASK_MIN`); else, inside a Slurm array, `SLURM_ARRAY_TASK_ID` of
/// `SLURM_ARRAY_TASK_COUNT`; else the whole input. Also says where the shard came from.
pub fn resolve_shard(
    explicit: Option<(u32, u32)>,
    shards: Option<u32>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Option<(u32, u32)>, String), shopcast_datasets::DataError> {
    use shopcast_datasets::DataError;
    let number = |name: &str| -> Result<Option<u32>, DataError> {
        match env(name) {
            None => Ok(None),
            Some(v) => v.trim().parse::<u32>().map(Some).map_err(|_| {
                DataError::Invalid(format!(
                    "environment variable {name}={v:?}: expected a whole number"
                ))
            }),
        }
    };
    let slurm_index = || -> Result<Option<u32>, DataError> {
        let (id, min) = (
            number("SLURM_ARRAY_TASK_ID")?,
            number("SLURM_ARRAY_TASK_MIN")?,
        );
        Ok(id.map(|i| i.saturating_sub(min.unwrap_or(0))))
    };
    let checked =
        |i: u32, n: u32, from: String| -> Result<(Option<(u32, u32)>, String), DataError> {
            if n == 0 || i >= n {
                return Err(DataError::Invalid(format!(
                    "shard {i} of {n} ({from}): need 0 <= index < count"
                )));
            }
            Ok((Some((i, n)), from))
        };
    if let Some((i, n)) = explicit {
        if shards.is_some_and(|s| s != n) {
            return Err(DataError::Invalid(format!(
                "--shard {i}/{n} and --shards {} disagree",
                shards.unwrap_or(0)
            )));
        }
        return checked(i, n, "--shard".into());
    }
    if let Some(n) = shards {
        if let Some(i) = number("JOB_COMPLETION_INDEX")? {
            return checked(i, n, "JOB_COMPLETION_INDEX with --shards".into());
        }
        if let Some(i) = slurm_index()? {
            return checked(i, n, "SLURM_ARRAY_TASK_ID with --shards".into());
        }
        return Err(DataError::Invalid(format!(
            "--shards {n}: the shard index comes from JOB_COMPLETION_INDEX (Kubernetes Indexed Job) \
             or SLURM_ARRAY_TASK_ID (Slurm array), and neither is set; pass --shard I/{n} instead"
        )));
    }
    if let (Some(i), Some(n)) = (slurm_index()?, number("SLURM_ARRAY_TASK_COUNT")?) {
        return checked(i, n, "SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT".into());
    }
    Ok((None, "unsharded".into()))
}

/// Which part of the input a job covers (customers or series, by a stable hash of their id):
/// `--shard I/N`, or `--shards N` with the index from the scheduler.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ShardArgs {
    /// Score only shard I of N (I from 0).
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<(u32, u32)>,
    /// The number of shards, the index coming from JOB_COMPLETION_INDEX (Kubernetes Indexed
    /// Job) or SLURM_ARRAY_TASK_ID (Slurm array). Inside a Slurm array the shard is taken from
    /// SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT even without this flag.
    #[arg(long)]
    pub shards: Option<u32>,
}

impl ShardArgs {
    /// The shard this job scores (see [`resolve_shard`]), said in the log.
    pub fn resolve(&self) -> anyhow::Result<Option<(u32, u32)>> {
        let (shard, from) =
            resolve_shard(self.shard, self.shards, &|name| std::env::var(name).ok())?;
        if let Some((i, n)) = shard {
            crate::log::info("infer", &format!("shard {i}/{n} (from {from})"));
        }
        Ok(shard)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn shard_comes_from_the_flag_kubernetes_or_slurm() {
        let none = env_of(&[]);
        assert_eq!(resolve_shard(None, None, &none).unwrap().0, None);
        assert_eq!(
            resolve_shard(Some((1, 4)), None, &none).unwrap().0,
            Some((1, 4))
        );
        let k8s = env_of(&[("JOB_COMPLETION_INDEX", "2")]);
        assert_eq!(resolve_shard(None, Some(3), &k8s).unwrap().0, Some((2, 3)));
        let slurm = env_of(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        assert_eq!(resolve_shard(None, None, &slurm).unwrap().0, Some((1, 3)));
        assert_eq!(
            resolve_shard(None, Some(3), &slurm).unwrap().0,
            Some((1, 3))
        );
        let err = resolve_shard(None, Some(3), &none).unwrap_err().to_string();
        assert!(
            err.contains("JOB_COMPLETION_INDEX") && err.contains("--shard I/3"),
            "{err}"
        );
        let err = resolve_shard(None, Some(2), &k8s).unwrap_err().to_string();
        assert!(err.contains("shard 2 of 2"), "{err}");
        let bad = env_of(&[("JOB_COMPLETION_INDEX", "x")]);
        let err = resolve_shard(None, Some(2), &bad).unwrap_err().to_string();
        assert!(err.contains("JOB_COMPLETION_INDEX=\"x\""), "{err}");
        assert!(resolve_shard(Some((0, 2)), Some(3), &none).is_err());
    }
}

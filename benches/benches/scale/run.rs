//! What both halves of the scale bench share: running the real binaries under GNU time, reading
//! the epoch lines, sizes on disk, and generating a configured shop once.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use shopcast_datasets::demo::generate_if_missing;
use shopcast_datasets::ShopConfig;

/// Runs `cmd` under GNU time; returns its stderr lines with the seconds at which each arrived,
/// the wall time and the peak RSS in GB.
pub fn timed(cmd: Command, what: &str) -> (Vec<(f64, String)>, f64, f64) {
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-f").arg("peak-rss-kb %M").arg(cmd.get_program());
    timed
        .args(cmd.get_args())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let started = Instant::now();
    let mut child = match timed.spawn() {
        Ok(c) => c,
        Err(e) => panic!("{what}: cannot start /usr/bin/time (GNU time is needed): {e}"),
    };
    let mut lines = Vec::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            lines.push((started.elapsed().as_secs_f64(), line));
        }
    }
    let status = child.wait().map(|s| s.success()).unwrap_or(false);
    let wall = started.elapsed().as_secs_f64();
    let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    assert!(status, "{what} failed:\n{}", text.join("\n"));
    let rss_kb = text
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("peak-rss-kb "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    (lines, wall, rss_kb / 1e6)
}

pub fn binary(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join("target/release").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release --workspace` first",
        path.display()
    );
    path
}

/// From the `model`'s epoch lines ("MODEL: epoch N: ... (S steps, X ms/step; validation Y s)"):
/// the median step, the median epoch (its steps and its validation) and the time until the first
/// epoch's steps began (loading and setup).
pub fn training_figures(lines: &[(f64, String)], model: &str) -> (f64, f64, f64) {
    let prefix = format!("{model}: epoch ");
    let mut steps_ms = Vec::new();
    let mut epochs_s = Vec::new();
    let mut first_start = f64::NAN;
    for (at, line) in lines.iter().filter(|(_, l)| l.starts_with(&prefix)) {
        let Some((_, timing)) = line.rsplit_once(" (") else {
            continue;
        };
        let field = |after: &str, before: &str| -> Option<f64> {
            let (_, rest) = timing.split_once(after)?;
            rest.split_once(before)?.0.trim().parse().ok()
        };
        let (Some(steps), Some(step_ms)) = (field("", " steps"), field("steps, ", " ms/step"))
        else {
            continue;
        };
        let validation_s = field("validation ", "s)").unwrap_or(0.0);
        let epoch_s = steps * step_ms / 1e3 + validation_s;
        if steps_ms.is_empty() {
            first_start = at - epoch_s;
        }
        steps_ms.push(step_ms);
        epochs_s.push(epoch_s);
    }
    (first_start, median(&mut epochs_s), median(&mut steps_ms))
}

pub fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn dir_megabytes(dir: &Path) -> f64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len() as f64)
                .sum::<f64>()
        })
        .unwrap_or(f64::NAN)
        / 1e6
}

/// Writes `config_text` to `dir/scale.toml` and generates its demo shop unless it is cached;
/// returns the config's path.
pub fn prepare_shop(dir: &Path, config_text: &str, label: &str) -> PathBuf {
    if let Err(e) = std::fs::create_dir_all(dir) {
        panic!("{}: {e}", dir.display());
    }
    let config = dir.join("scale.toml");
    if let Err(e) = std::fs::write(&config, config_text) {
        panic!("{}: {e}", config.display());
    }
    let loaded = match ShopConfig::load(&config) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    let started = Instant::now();
    if let Some(demo) = &loaded.config.demo {
        match generate_if_missing(&loaded.data_dir(), demo, loaded.config.business.seed) {
            Ok(true) => eprintln!(
                "scale {label}: generated the shop in {:.0}s",
                started.elapsed().as_secs_f64()
            ),
            Ok(false) => {}
            Err(e) => panic!("{e}"),
        }
    }
    config
}

/// `x` and its growth against `base`: "1.23 (4.56x)".
pub fn growth(x: f64, base: f64) -> String {
    format!("{x:.2} ({:.2}x)", x / base)
}

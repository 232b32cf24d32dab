//! `infer anomalies`: re-forecasts the latest periods of every series from the history before
//! them and flags the periods whose actual sales fall outside a wide band.
//!
//! The band is central with coverage `--band` (default 0.98, i.e. P1-P99). The model forecasts
//! only its configured quantiles, so the band is extended from them: below the median with the
//! spread of the lower quantile, above it with that of the upper one (normal tails on each
//! side), and never narrower than one unit either way, because sales come in whole units and a
//! single sale of a product forecast at zero is not news. `surprise` is how many of those
//! spreads the actual lies from the median (positive for spikes, negative for drops).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use polars::prelude::{Column, DataFrame};
use shopcast_datasets::table::date_of_day;
use shopcast_datasets::DataError;
use shopcast_model::DeviceChoice;

use crate::forecast::{open_forecaster, series_in_shard};
use crate::output::{check_output_path, key_columns, write_output, JobManifest, ShardArgs};
use crate::quantiles::normal_quantile;

/// Options of `infer anomalies`: periods among the latest whose actual sales fall outside a
/// wide forecast band.
#[derive(Debug, Clone, clap::Args)]
pub struct AnomalyOptions {
    #[arg(long)]
    pub bundle: PathBuf,
    /// Output file, `.csv` or `.parquet`.
    #[arg(long)]
    pub out: PathBuf,
    /// Latest periods to check (default: the model's horizon).
    #[arg(long)]
    pub periods: Option<usize>,
    /// Central coverage of the band (0.98 = P1 to P99).
    #[arg(long, default_value_t = 0.98)]
    pub band: f64,
    #[command(flatten)]
    pub shard: ShardArgs,
    /// `auto` (a GPU through WGPU when one is present, else `flex`), `flex`, `ndarray` or `wgpu`.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

/// The verdict on one period.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub low: f64,
    pub high: f64,
    /// `spike`, `drop`, or `None` inside the band.
    pub direction: Option<&'static str>,
    pub surprise: f64,
}

/// Checks one actual against a period's quantiles (`levels` ascending, one of them 0.5).
pub fn check(actual: f64, quantiles: &[f32], levels: &[f64], band: f64) -> Check {
    let median_at = levels
        .iter()
        .position(|q| (q - 0.5).abs() < 1e-9)
        .unwrap_or(levels.len() / 2);
    let m = quantiles[median_at] as f64;
    let last = levels.len() - 1;
    let side = |j: usize| -> f64 {
        let z = normal_quantile(levels[j]).abs();
        if j == median_at || z == 0.0 {
            1.0
        } else {
            ((quantiles[j] as f64 - m).abs() / z).max(1.0)
        }
    };
    let (sd_low, sd_high) = (side(0), side(last));
    let z = normal_quantile(0.5 + band / 2.0);
    let (low, high) = ((m - z * sd_low).max(0.0), m + z * sd_high);
    let (direction, surprise) = if actual > high {
        (Some("spike"), (actual - m) / sd_high)
    } else if actual < low {
        (Some("drop"), (actual - m) / sd_low)
    } else {
        (None, 0.0)
    };
    Check {
        low,
        high,
        direction,
        surprise,
    }
}

/// Runs `infer anomalies`.
pub fn anomalies(opts: &AnomalyOptions) -> Result<JobManifest> {
    let shard = opts.shard.resolve()?;
    let started = Instant::now();
    check_output_path(&opts.out)?;
    if !(opts.band > 0.0 && opts.band < 1.0) {
        anyhow::bail!(DataError::Invalid(format!(
            "--band {}: expected the band's coverage strictly between 0 and 1, e.g. 0.98 for P1-P99",
            opts.band
        )));
    }
    let (loaded, backend) = open_forecaster(&opts.bundle, opts.device)?;
    let a = &loaded.artifacts;
    let horizon = a.spec.horizon;
    let periods = opts.periods.unwrap_or(horizon);
    let stored = a.series.iter().map(|t| t.target.len()).min().unwrap_or(0);
    if periods == 0 || periods > horizon || periods > stored {
        anyhow::bail!(DataError::Invalid(format!(
            "--periods {periods}: expected 1 to {} (the model's horizon, within the {stored} periods the bundle keeps)",
            horizon.min(stored)
        )));
    }
    let mut manifest = JobManifest::new("anomalies", &opts.out, &loaded.bundle, &backend, shard)?;
    let series = series_in_shard(&loaded, shard);
    let forecasts = loaded
        .forecast_from(&series, periods, None)
        .context("re-forecasting the latest periods")?;

    let mut key_cols: Vec<Vec<String>> = vec![Vec::new(); a.key_names.len()];
    let (mut dates, mut actual, mut low, mut high, mut direction, mut surprise) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut checked = 0usize;
    let mut missing = 0usize;
    let mut too_new = 0usize;
    // A series needs some history before the re-forecast origin, as in the backtest.
    let min_history = a.spec.context.min(2 * a.spec.season);
    for f in &forecasts {
        let tail = &a.series[f.series];
        let history = tail.target[..f.origin]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if history < min_history {
            too_new += periods;
            continue;
        }
        let keys = loaded.key_values(f.series);
        for h in 0..periods {
            let Some(y) = tail.target.get(f.origin + h).copied().flatten() else {
                missing += 1;
                continue;
            };
            checked += 1;
            let c = check(y as f64, &f.quantiles[h], &a.quantiles, opts.band);
            let Some(dir) = c.direction else { continue };
            for (col, v) in key_cols.iter_mut().zip(&keys) {
                col.push(v.clone());
            }
            dates.push(date_of_day(f.days[h]).format("%Y-%m-%d").to_string());
            actual.push(y as f64);
            low.push(c.low);
            high.push(c.high);
            direction.push(dir.to_string());
            surprise.push(c.surprise);
        }
    }
    let n = dates.len();
    let mut columns = key_columns(&a.key_names, key_cols);
    columns.extend([
        Column::new("date".into(), dates),
        Column::new("actual".into(), actual),
        Column::new("p_low".into(), low),
        Column::new("p_high".into(), high),
        Column::new("direction".into(), direction),
        Column::new("surprise".into(), surprise),
    ]);
    let mut df = DataFrame::new(n, columns)?;
    manifest.input_rows = checked + missing + too_new;
    if too_new > 0 {
        manifest.rows_skipped.insert(
            format!(
                "series with under {min_history} periods of history before the checked periods"
            ),
            too_new,
        );
    }
    manifest.counts.insert("series".into(), forecasts.len());
    manifest.counts.insert("periods_checked".into(), checked);
    if missing > 0 {
        manifest
            .rows_skipped
            .insert("no actual value for the period".into(), missing);
    }
    manifest.assumptions.push(format!(
        "band: central {:.1}% of the forecast distribution, extended from the model's quantiles {:?}",
        opts.band * 100.0,
        a.quantiles
    ));
    write_output(&mut df, &opts.out, &mut manifest, started)?;
    crate::log::info(
        "anomalies",
        &format!(
            "{n} of {checked} series-periods outside the band, written to {}",
            opts.out.display()
        ),
    );
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_by_hand() {
        let levels = [0.1, 0.5, 0.9];
        let q = [30.0, 50.0, 80.0];
        let z90 = 1.2815515655;
        let z99 = 2.3263478740;
        let c = check(50.0, &q, &levels, 0.98);
        assert_eq!(c.direction, None);
        assert!((c.low - (50.0 - z99 * 20.0 / z90)).abs() < 1e-6);
        assert!((c.high - (50.0 + z99 * 30.0 / z90)).abs() < 1e-6);
        let spike = check(200.0, &q, &levels, 0.98);
        assert_eq!(spike.direction, Some("spike"));
        assert!((spike.surprise - 150.0 / (30.0 / z90)).abs() < 1e-6);
        let drop = check(0.0, &q, &levels, 0.98);
        assert_eq!(drop.direction, Some("drop"));
        assert!(drop.surprise < -2.0);
        // A product forecast at zero that sells one unit is not flagged.
        assert_eq!(check(1.0, &[0.0, 0.0, 0.0], &levels, 0.98).direction, None);
    }
}

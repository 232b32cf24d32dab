//! `infer forecast`: P10/P50/P90 (the configured quantiles) per series and date for the next
//! horizon, from the recent history stored in the bundle and an optional file of planned future
//! covariates (prices, promotions, holidays).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::config::Config;
use burn::prelude::*;
use polars::prelude::{Column, DataFrame};
use shopcast_datasets::artifacts::{files, shard_of, ForecasterArtifacts};
use shopcast_datasets::config::FileSpec;
use shopcast_datasets::table::{date_of_day, day_of, Table};
use shopcast_datasets::windows::{SeriesView, WindowBatch};
use shopcast_datasets::DataError;
use shopcast_model::{
    select_device, Bundle, BundleError, DemandForecaster, DeviceChoice, ForecastInput,
    ForecasterConfig,
};

use crate::output::{check_output_path, write_output, JobManifest};

/// Options of `infer forecast`.
#[derive(Debug, Clone)]
pub struct ForecastOptions {
    pub bundle: PathBuf,
    pub future: Option<PathBuf>,
    pub horizon: Option<usize>,
    pub out: PathBuf,
    pub shard: Option<(u32, u32)>,
    pub device: DeviceChoice,
}

/// A loaded forecaster with its side data.
pub struct LoadedForecaster {
    pub bundle: Bundle,
    pub model: DemandForecaster,
    pub config: ForecasterConfig,
    pub artifacts: ForecasterArtifacts,
    pub device: Device,
}

/// Opens a bundle's forecaster on a device.
pub fn load_forecaster(dir: &std::path::Path, device: &Device) -> Result<LoadedForecaster> {
    let bundle = Bundle::open(dir)?;
    let invalid = |msg: String| -> anyhow::Error {
        BundleError::Invalid {
            dir: dir.to_path_buf(),
            msg,
        }
        .into()
    };
    if !bundle.has("forecaster") {
        return Err(invalid(
            "the bundle holds no forecaster (train it with --only forecaster)".into(),
        ));
    }
    let config = ForecasterConfig::load(bundle.dir.join(files::FORECASTER_CONFIG))
        .map_err(|e| invalid(format!("{}: {e}", files::FORECASTER_CONFIG)))?;
    let artifacts: ForecasterArtifacts = bundle.read_json(files::FORECASTER_ARTIFACTS)?;
    let model = bundle.load_module(files::FORECASTER_WEIGHTS, config.init(device))?;
    Ok(LoadedForecaster {
        bundle,
        model,
        config,
        artifacts,
        device: device.clone(),
    })
}

/// One series' forecast: per step, the quantiles.
#[derive(Debug, Clone)]
pub struct SeriesForecast {
    pub series: usize,
    /// Day number of each forecast period.
    pub days: Vec<i64>,
    /// `[horizon][quantiles]`
    pub quantiles: Vec<Vec<f32>>,
}

impl LoadedForecaster {
    /// Forecasts the given series; `future_known[s]` holds each known covariate over the horizon.
    pub fn forecast(
        &self,
        series: &[usize],
        future_known: &[Vec<Vec<f32>>],
    ) -> Result<Vec<SeriesForecast>> {
        let spec = &self.artifacts.spec;
        let q = self.config.quantiles.len();
        let mut out = Vec::with_capacity(series.len());
        for chunk in series.chunks(512) {
            let mut batch = WindowBatch::default();
            let mut owned = Vec::with_capacity(chunk.len());
            for &s in chunk {
                let tail = &self.artifacts.series[s];
                let target: Vec<f32> = tail.target.iter().map(|v| v.unwrap_or(f32::NAN)).collect();
                let known: Vec<Vec<f32>> = tail
                    .known
                    .iter()
                    .zip(&future_known[s])
                    .map(|(past, fut)| past.iter().chain(fut).copied().collect())
                    .collect();
                owned.push((target, known));
            }
            for (&s, (target, known)) in chunk.iter().zip(&owned) {
                let tail = &self.artifacts.series[s];
                let view = SeriesView {
                    target,
                    known,
                    past: &tail.past,
                    first_day: tail.first_day,
                    keys: &tail.keys,
                };
                spec.push(&mut batch, &view, target.len(), false);
            }
            let scale = batch.scale.clone();
            let b = batch.len;
            let input = ForecastInput::from_arrays(
                batch.encoder,
                batch.decoder,
                batch.keys,
                batch.baseline,
                b,
                spec.context,
                spec.horizon,
                &self.device,
            );
            let flat = self
                .model
                .predict(input, &scale)
                .map_err(anyhow::Error::msg)?;
            for (&s, w) in chunk.iter().zip(flat.chunks(spec.horizon * q)) {
                let tail = &self.artifacts.series[s];
                let origin = tail.target.len() as i64;
                out.push(SeriesForecast {
                    series: s,
                    days: (0..spec.horizon as i64)
                        .map(|h| tail.first_day + (origin + h) * spec.period_days)
                        .collect(),
                    quantiles: w.chunks(q).map(<[f32]>::to_vec).collect(),
                });
            }
        }
        Ok(out)
    }

    /// The key values of a series, e.g. `["store_1", "P0042"]`.
    pub fn key_values(&self, s: usize) -> Vec<String> {
        let a = &self.artifacts;
        a.series[s]
            .keys
            .iter()
            .zip(&a.key_vocabs)
            .map(|(&k, v)| v.id(k).to_string())
            .collect()
    }

    /// Known covariates over the horizon: from the future file where given, else assumed.
    pub fn future_covariates(
        &self,
        future: Option<&PathBuf>,
        assumptions: &mut Vec<String>,
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        let a = &self.artifacts;
        let spec = &a.spec;
        let h = spec.horizon;
        // Default: a flag (0/1 in training) is assumed off, anything else stays at its last value.
        let mut out: Vec<Vec<Vec<f32>>> = a
            .series
            .iter()
            .map(|tail| {
                spec.known
                    .iter()
                    .zip(&tail.known)
                    .map(|(stats, v)| {
                        vec![
                            if stats.binary {
                                0.0
                            } else {
                                v.last().copied().unwrap_or(stats.mean)
                            };
                            h
                        ]
                    })
                    .collect()
            })
            .collect();
        if spec.known.is_empty() {
            return Ok(out);
        }
        let Some(path) = future else {
            for stats in &spec.known {
                assumptions.push(if stats.binary {
                    format!(
                        "no --future file: {} assumed 0 over the horizon",
                        stats.name
                    )
                } else {
                    format!(
                        "no --future file: {} assumed to stay at its last value",
                        stats.name
                    )
                });
            }
            return Ok(out);
        };
        let mut columns = a.key_names.clone();
        columns.push(a.date_column.clone());
        columns.extend(spec.known.iter().map(|s| s.name.clone()));
        let file = FileSpec {
            path: path.clone(),
            separator: None,
            has_header: true,
            column_names: Vec::new(),
        };
        let table = Table::read(path, &file, &columns)?;
        let keys: Vec<Vec<String>> = a
            .key_names
            .iter()
            .map(|k| table.ids(k))
            .collect::<Result<_, _>>()?;
        let days: Vec<i64> = table
            .timestamps(&a.date_column, None)?
            .into_iter()
            .map(day_of)
            .collect();
        let values: Vec<Vec<Option<f64>>> = spec
            .known
            .iter()
            .map(|s| table.numbers(&s.name))
            .collect::<Result<_, _>>()?;
        let index: HashMap<Vec<String>, usize> = (0..a.series.len())
            .map(|s| (self.key_values(s), s))
            .collect();
        let mut filled = 0usize;
        for i in 0..table.len() {
            let key: Vec<String> = keys.iter().map(|k| k[i].clone()).collect();
            let Some(&s) = index.get(&key) else { continue };
            let tail = &a.series[s];
            let origin = tail.target.len() as i64;
            let offset = (days[i] - tail.first_day).div_euclid(spec.period_days) - origin;
            if !(0..h as i64).contains(&offset) {
                continue;
            }
            for (k, col) in values.iter().enumerate() {
                if let Some(x) = col[i] {
                    if !x.is_finite() {
                        return Err(DataError::Value {
                            path: path.clone(),
                            row: table.file_row(i),
                            column: spec.known[k].name.clone(),
                            msg: "expected a finite number".into(),
                        }
                        .into());
                    }
                    out[s][k][offset as usize] = x as f32;
                    filled += 1;
                }
            }
        }
        let expected = a.series.len() * h * spec.known.len();
        if filled < expected {
            assumptions.push(format!(
                "--future file covered {filled} of {expected} series-period-covariate values; the rest were assumed (flags 0, others at their last value)"
            ));
        }
        Ok(out)
    }
}

/// Runs `infer forecast`.
pub fn forecast(opts: &ForecastOptions) -> Result<JobManifest> {
    let started = Instant::now();
    check_output_path(&opts.out)?;
    let selected = select_device(opts.device).map_err(DataError::Invalid)?;
    if let Some(note) = &selected.note {
        eprintln!("warning: {note}");
    }
    let loaded = load_forecaster(&opts.bundle, &selected.device)?;
    let a = &loaded.artifacts;
    let horizon = opts.horizon.unwrap_or(a.spec.horizon);
    if horizon == 0 || horizon > a.spec.horizon {
        anyhow::bail!(DataError::Invalid(format!(
            "--horizon {horizon}: the model forecasts 1 to {} periods ahead",
            a.spec.horizon
        )));
    }
    let mut manifest = JobManifest::new(
        "forecast",
        &opts.out,
        &loaded.bundle,
        &selected.backend.to_string(),
        opts.shard,
    )?;
    manifest.input_rows = a.series.len();
    let series: Vec<usize> = (0..a.series.len())
        .filter(|&s| {
            opts.shard
                .is_none_or(|(i, n)| shard_of(&loaded.key_values(s).join("\u{1f}"), n) == i)
        })
        .collect();
    let mut assumptions = Vec::new();
    let future = loaded.future_covariates(opts.future.as_ref(), &mut assumptions)?;
    for line in &assumptions {
        eprintln!("forecast: {line}");
    }
    let forecasts = loaded.forecast(&series, &future).context("forecasting")?;

    let n = forecasts.len() * horizon;
    let mut key_cols: Vec<Vec<String>> = vec![Vec::with_capacity(n); a.key_names.len()];
    let mut dates = Vec::with_capacity(n);
    let mut q_cols: Vec<Vec<f64>> = vec![Vec::with_capacity(n); a.quantiles.len()];
    for f in &forecasts {
        let keys = loaded.key_values(f.series);
        for h in 0..horizon {
            for (col, v) in key_cols.iter_mut().zip(&keys) {
                col.push(v.clone());
            }
            dates.push(date_of_day(f.days[h]).format("%Y-%m-%d").to_string());
            for (col, v) in q_cols.iter_mut().zip(&f.quantiles[h]) {
                col.push(*v as f64);
            }
        }
    }
    let mut columns: Vec<Column> = a
        .key_names
        .iter()
        .zip(key_cols)
        .map(|(name, v)| Column::new(name.as_str().into(), v))
        .collect();
    columns.push(Column::new("date".into(), dates));
    for (q, v) in a.quantiles.iter().zip(q_cols) {
        columns.push(Column::new(
            ForecasterArtifacts::quantile_column(*q).into(),
            v,
        ));
    }
    let mut df = DataFrame::new(n, columns)?;
    manifest.assumptions = assumptions;
    manifest.rows_skipped = BTreeMap::new();
    write_output(&mut df, &opts.out, &mut manifest, started)?;
    eprintln!(
        "forecast: {} series x {horizon} periods written to {} ({:.1}s)",
        forecasts.len(),
        opts.out.display(),
        manifest.duration_seconds
    );
    Ok(manifest)
}

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
use shopcast_datasets::charts::{forecast_chart, ForecastSample};
use shopcast_datasets::config::FileSpec;
use shopcast_datasets::table::{date_of_day, day_of, write_file_atomic, Table};
use shopcast_datasets::windows::{forecast_windows, SeriesView};
use shopcast_datasets::DataError;
use shopcast_model::{
    Bundle, BundleError, DeviceChoice, ForecastInput, ForecasterConfig, ForecasterEnsemble,
};

use crate::output::{
    check_output_path, key_columns, open_device, write_output, JobManifest, ShardArgs,
};
use crate::quantiles::{period_demand, sum_quantile, PeriodDemand};

/// Options of `infer forecast`: quantile forecasts per series and date for the next horizon.
#[derive(Debug, Clone, clap::Args)]
pub struct ForecastOptions {
    #[arg(long)]
    pub bundle: PathBuf,
    /// Planned future covariates (series keys, date, known covariates).
    #[arg(long)]
    pub future: Option<PathBuf>,
    /// Periods to forecast (at most the model's horizon).
    #[arg(long)]
    pub horizon: Option<usize>,
    /// Output file, `.csv` or `.parquet`.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub shard: ShardArgs,
    /// `auto` (a GPU through WGPU when one is present, else `flex`), `flex`, `ndarray` or `wgpu`.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Sum the forecast over every other key, per value of this series key and date (e.g.
    /// `store_id` to plan staff per store); adds expected revenue when the config names a price.
    #[arg(long)]
    pub aggregate: Option<String>,
    /// Also draw one chart per forecast series (SVG: recent history, median, P10-P90 band) into
    /// this directory.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// A loaded forecaster with its side data.
pub struct LoadedForecaster {
    pub bundle: Bundle,
    pub model: ForecasterEnsemble,
    pub config: ForecasterConfig,
    pub artifacts: ForecasterArtifacts,
    pub device: Device,
}

/// Opens a bundle's forecaster on a device.
pub fn load_forecaster(dir: &std::path::Path, device: &Device) -> Result<LoadedForecaster> {
    forecaster_of(Bundle::open(dir)?, device)
}

/// The forecaster of an opened (verified) bundle, on a device.
pub fn forecaster_of(bundle: Bundle, device: &Device) -> Result<LoadedForecaster> {
    let dir = bundle.dir.clone();
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
        .map_err(|e| e.to_string())
        .and_then(|c| c.check().map(|()| c))
        .map_err(|e| invalid(format!("{}: {e}", files::FORECASTER_CONFIG)))?;
    let mut artifacts: ForecasterArtifacts = bundle.read_json(files::FORECASTER_ARTIFACTS)?;
    artifacts.read_tables(bundle.require(&[files::FORECASTER_PERIODS])?)?;
    let model = bundle.load_module(files::FORECASTER_WEIGHTS, config.init_ensemble(device))?;
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
    /// Index in the series' stored tail of the first forecast period.
    pub origin: usize,
    /// Day number of each forecast period.
    pub days: Vec<i64>,
    /// `[horizon][quantiles]`
    pub quantiles: Vec<Vec<f32>>,
}

impl LoadedForecaster {
    /// Forecasts the given series from the end of their stored history; `future_known[s]` holds
    /// each known covariate over the horizon.
    pub fn forecast(
        &self,
        series: &[usize],
        future_known: &[Vec<Vec<f32>>],
    ) -> Result<Vec<SeriesForecast>> {
        self.forecast_from(series, 0, Some(future_known))
    }

    /// Forecasts the given series from `back` periods before the end of their stored history
    /// (0: the next horizon, with `future_known`; more: a re-forecast of periods already seen,
    /// whose known covariates come from the history itself).
    pub fn forecast_from(
        &self,
        series: &[usize],
        back: usize,
        future_known: Option<&[Vec<Vec<f32>>]>,
    ) -> Result<Vec<SeriesForecast>> {
        let spec = &self.artifacts.spec;
        let q = self.config.quantiles.len();
        // Each series' target and known covariates up to its origin and over the horizon.
        let owned: Vec<(Vec<f32>, Vec<Vec<f32>>, usize)> = series
            .iter()
            .map(|&s| {
                let tail = &self.artifacts.series[s];
                let target: Vec<f32> = tail.target.iter().map(|v| v.unwrap_or(f32::NAN)).collect();
                let origin = target.len().saturating_sub(back);
                let known: Vec<Vec<f32>> = match future_known {
                    Some(future) if back == 0 => tail
                        .known
                        .iter()
                        .zip(&future[s])
                        .map(|(past, fut)| past.iter().chain(fut).copied().collect())
                        .collect(),
                    // Past the end of the history, covariates stay at their last value.
                    _ => tail
                        .known
                        .iter()
                        .map(|v| {
                            let last = v.last().copied().unwrap_or(0.0);
                            let mut v = v.clone();
                            v.resize(origin + spec.horizon, last);
                            v
                        })
                        .collect(),
                };
                (target, known, origin)
            })
            .collect();
        let windows: Vec<(SeriesView<'_>, usize)> = series
            .iter()
            .zip(&owned)
            .map(|(&s, (target, known, origin))| {
                let tail = &self.artifacts.series[s];
                let view = SeriesView {
                    target,
                    known,
                    past: &tail.past,
                    first_day: tail.first_day,
                    keys: &tail.keys,
                    statics: &tail.statics,
                    ets: tail.ets.as_ref(),
                };
                (view, *origin)
            })
            .collect();
        let weights = &self.artifacts.network_weights;
        let (forecasts, _) = forecast_windows(spec, &windows, (q, weights), |batch| {
            let input = ForecastInput::from_arrays(
                batch.encoder,
                batch.decoder,
                batch.keys,
                batch.baseline,
                batch.len,
                spec.context,
                spec.horizon,
                &self.device,
            );
            self.model
                .predict(input, &batch.scale)
                .map_err(anyhow::Error::msg)
        })?;
        Ok(series
            .iter()
            .zip(forecasts)
            .zip(&owned)
            .map(|((&s, quantiles), (_, _, origin))| {
                let tail = &self.artifacts.series[s];
                let origin = *origin as i64;
                SeriesForecast {
                    series: s,
                    origin: origin as usize,
                    days: (0..spec.horizon as i64)
                        .map(|h| tail.first_day + (origin + h) * spec.period_days)
                        .collect(),
                    quantiles,
                }
            })
            .collect())
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

/// The series a job covers: all, or those of one shard (stable hash of the series keys).
pub fn series_in_shard(loaded: &LoadedForecaster, shard: Option<(u32, u32)>) -> Vec<usize> {
    (0..loaded.artifacts.series.len())
        .filter(|&s| {
            shard.is_none_or(|(i, n)| shard_of(&loaded.key_values(s).join("\u{1f}"), n) == i)
        })
        .collect()
}

/// Opens the bundle's forecaster on the chosen device and reports the device choice.
pub fn open_forecaster(
    bundle: &std::path::Path,
    device: DeviceChoice,
) -> Result<(LoadedForecaster, String)> {
    let selected = open_device("forecast", device)?;
    let loaded = load_forecaster(bundle, &selected.device)?;
    Ok((loaded, selected.backend.to_string()))
}

/// Runs `infer forecast`.
pub fn forecast(opts: &ForecastOptions) -> Result<JobManifest> {
    let shard = opts.shard.resolve()?;
    let started = Instant::now();
    check_output_path(&opts.out)?;
    let (loaded, backend) = open_forecaster(&opts.bundle, opts.device)?;
    let a = &loaded.artifacts;
    let horizon = opts.horizon.unwrap_or(a.spec.horizon);
    if horizon == 0 || horizon > a.spec.horizon {
        anyhow::bail!(DataError::Invalid(format!(
            "--horizon {horizon}: the model forecasts 1 to {} periods ahead",
            a.spec.horizon
        )));
    }
    let aggregate_key = match &opts.aggregate {
        None => None,
        Some(key) => Some(a.key_names.iter().position(|k| k == key).ok_or_else(|| {
            DataError::Invalid(format!(
                "--aggregate {key:?}: expected one of the series keys {:?}",
                a.key_names
            ))
        })?),
    };
    let mut manifest = JobManifest::new("forecast", &opts.out, &loaded.bundle, &backend, shard)?;
    manifest.input_rows = a.series.len();
    let series = series_in_shard(&loaded, shard);
    let mut assumptions = Vec::new();
    let future = loaded.future_covariates(opts.future.as_ref(), &mut assumptions)?;
    for line in &assumptions {
        crate::log::info("forecast", line);
    }
    let forecasts = loaded.forecast(&series, &future).context("forecasting")?;
    let mut df = match aggregate_key {
        None => per_series_frame(&loaded, &forecasts, horizon)?,
        Some(k) => {
            if a.price_covariate.is_none() {
                assumptions.push(
                    "no price covariate in the config (`forecaster.data.price`): no revenue column"
                        .into(),
                );
            }
            aggregate_frame(&loaded, &forecasts, &future, horizon, k)?
        }
    };
    if let Some(dir) = &opts.plot {
        let written = plot_forecasts(&loaded, &forecasts, horizon, dir)?;
        manifest.counts.insert("charts written".into(), written);
    }
    manifest.assumptions = assumptions;
    manifest.rows_skipped = BTreeMap::new();
    write_output(&mut df, &opts.out, &mut manifest, started)?;
    crate::log::info(
        "forecast",
        &format!(
            "{} series x {horizon} periods, {} rows written to {} ({:.1}s)",
            forecasts.len(),
            manifest.rows_written,
            opts.out.display(),
            manifest.duration_seconds
        ),
    );
    Ok(manifest)
}

/// Draws each forecast (the last three horizons of history, then the median and the outer
/// quantiles' band) into `dir/<keys>.svg`; each file is written whole or not at all.
fn plot_forecasts(
    loaded: &LoadedForecaster,
    forecasts: &[SeriesForecast],
    horizon: usize,
    dir: &std::path::Path,
) -> Result<usize> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the chart directory {}", dir.display()))?;
    let a = &loaded.artifacts;
    for f in forecasts {
        let tail = &a.series[f.series];
        let from = tail.target.len().saturating_sub(3 * a.spec.horizon);
        let keys = loaded.key_values(f.series);
        let sample = ForecastSample {
            label: "forecast".into(),
            keys: keys.clone(),
            mase: f64::NAN,
            first_day: tail.first_day + from as i64 * a.spec.period_days,
            period_days: a.spec.period_days,
            history: tail.target[from..]
                .iter()
                .map(|v| v.unwrap_or(f32::NAN))
                .collect(),
            actual: Vec::new(),
            forecast: f.quantiles[..horizon.min(f.quantiles.len())].to_vec(),
        };
        let title = format!(
            "{}: forecast from {}",
            keys.join(" / "),
            f.days
                .first()
                .map(|&d| date_of_day(d).to_string())
                .unwrap_or_default()
        );
        let svg = forecast_chart(&title, &sample)
            .map_err(|e| anyhow::anyhow!("drawing the chart of {}: {e}", keys.join("/")))?;
        let name: String = keys
            .join("_")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        write_file_atomic(&dir.join(format!("{name}.svg")), svg.as_bytes())?;
    }
    Ok(forecasts.len())
}

/// One row per series and date: the key columns, `date`, then one column per quantile.
fn per_series_frame(
    loaded: &LoadedForecaster,
    forecasts: &[SeriesForecast],
    horizon: usize,
) -> Result<DataFrame> {
    let a = &loaded.artifacts;
    let n = forecasts.len() * horizon;
    let mut key_cols: Vec<Vec<String>> = vec![Vec::with_capacity(n); a.key_names.len()];
    let mut dates = Vec::with_capacity(n);
    let mut q_cols: Vec<Vec<f64>> = vec![Vec::with_capacity(n); a.quantiles.len()];
    for f in forecasts {
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
    let mut columns = key_columns(&a.key_names, key_cols);
    columns.push(Column::new("date".into(), dates));
    for (q, v) in a.quantiles.iter().zip(q_cols) {
        columns.push(Column::new(
            ForecasterArtifacts::quantile_column(*q).into(),
            v,
        ));
    }
    Ok(DataFrame::new(n, columns)?)
}

/// One row per value of key `k` and date: the forecast summed over the other keys (quantiles of
/// the sum, see [`crate::quantiles`]), and with a price covariate `revenue`, the expected revenue
/// (sum of expected units times the planned price).
fn aggregate_frame(
    loaded: &LoadedForecaster,
    forecasts: &[SeriesForecast],
    future: &[Vec<Vec<f32>>],
    horizon: usize,
    k: usize,
) -> Result<DataFrame> {
    let a = &loaded.artifacts;
    // (key value, day) -> (the parts summed, expected revenue)
    type Group = (Vec<(PeriodDemand, f64)>, f64);
    let mut groups: BTreeMap<(String, i64), Group> = BTreeMap::new();
    for f in forecasts {
        let key = loaded.key_values(f.series)[k].clone();
        for (h, (quantiles, &day)) in f.quantiles.iter().zip(&f.days).take(horizon).enumerate() {
            let d = period_demand(quantiles, &a.quantiles);
            let g = groups.entry((key.clone(), day)).or_default();
            g.0.push((d, 1.0));
            if let Some(p) = a.price_covariate {
                g.1 += d.mean * future[f.series][p][h] as f64;
            }
        }
    }
    let n = groups.len();
    let mut keys = Vec::with_capacity(n);
    let mut dates = Vec::with_capacity(n);
    let mut q_cols: Vec<Vec<f64>> = vec![Vec::with_capacity(n); a.quantiles.len()];
    let mut revenue = Vec::with_capacity(n);
    for ((key, day), (parts, rev)) in &groups {
        keys.push(key.clone());
        dates.push(date_of_day(*day).format("%Y-%m-%d").to_string());
        for (col, level) in q_cols.iter_mut().zip(&a.quantiles) {
            col.push(sum_quantile(parts, *level));
        }
        revenue.push(*rev);
    }
    let mut columns = vec![
        Column::new(a.key_names[k].as_str().into(), keys),
        Column::new("date".into(), dates),
    ];
    for (q, v) in a.quantiles.iter().zip(q_cols) {
        columns.push(Column::new(
            ForecasterArtifacts::quantile_column(*q).into(),
            v,
        ));
    }
    if a.price_covariate.is_some() {
        columns.push(Column::new("revenue".into(), revenue));
    }
    Ok(DataFrame::new(n, columns)?)
}

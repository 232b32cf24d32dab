//! Training the demand forecaster: random windows per series, early stopping on the period just
//! before the backtest, then a rolling-origin backtest against seasonal naive and a moving
//! average on the same folds, and the quality gate.
//!
//! Periods: `| training windows ... | validation (horizon) | fold 1 | fold 2 | ... | fold N |`.
//! The model never sees the folds while training; at each fold origin it reads the actual
//! history up to that origin, as it would in production (backtest without refitting).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shopcast_datasets::artifacts::{ForecasterArtifacts, SeriesTail};
use shopcast_datasets::config::ForecasterSection;
use shopcast_datasets::sales::{load_sales_panel, SalesPanel};
use shopcast_datasets::windows::{CovariateStats, SeriesView, WindowBatch, WindowSpec};
use shopcast_datasets::{DataError, LoadedConfig};
use shopcast_model::losses::pinball;
use shopcast_model::{DemandForecaster, ForecastInput, ForecasterConfig};

use crate::forecast_eval::{moving_average, seasonal_naive, ForecastScore};
use crate::progress::Progress;

/// Training hyperparameters of the forecaster, saved in the bundle.
#[derive(Config, Debug)]
pub struct ForecasterTrainingConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub windows_per_series: usize,
    pub patience: usize,
    pub seed: u64,
    pub backtest_folds: usize,
    pub moving_average_window: usize,
    pub allow_worse_than_baseline: bool,
}

/// The result of a forecaster training run.
pub struct ForecasterOutcome {
    pub model: DemandForecaster,
    pub model_config: ForecasterConfig,
    pub training_config: ForecasterTrainingConfig,
    pub artifacts: ForecasterArtifacts,
    /// `metrics.json` entries (`forecaster.*`, `baseline.seasonal_naive.*`, `baseline.moving_average.*`).
    pub metrics: BTreeMap<String, f64>,
    /// Why the quality gate failed (empty when it passed).
    pub gate_failures: Vec<String>,
    pub best_epoch: usize,
}

fn view<'a>(panel: &'a SalesPanel, s: usize) -> SeriesView<'a> {
    SeriesView {
        target: &panel.target[s],
        known: &panel.known[s],
        past: &panel.past[s],
        first_day: panel.first_day,
        keys: &panel.series_keys[s],
    }
}

fn training_input(
    batch: WindowBatch,
    spec: &WindowSpec,
    device: &Device,
) -> (ForecastInput, Tensor<2>, Tensor<2>) {
    let b = batch.len;
    let target = Tensor::from_data(TensorData::new(batch.target, [b, spec.horizon]), device);
    let mask = Tensor::from_data(
        TensorData::new(batch.target_mask, [b, spec.horizon]),
        device,
    );
    let input = ForecastInput::from_arrays(
        batch.encoder,
        batch.decoder,
        batch.keys,
        batch.baseline,
        b,
        spec.context,
        spec.horizon,
        device,
    );
    (input, target, mask)
}

/// Forecasts (in units) of the windows at `origin` of the given series: `[series][h][q]`.
fn forecast_at(
    model: &DemandForecaster,
    panel: &SalesPanel,
    spec: &WindowSpec,
    series: &[usize],
    origin: usize,
    n_quantiles: usize,
    device: &Device,
) -> Result<Vec<Vec<Vec<f32>>>> {
    let mut out = Vec::with_capacity(series.len());
    for chunk in series.chunks(512) {
        let mut batch = WindowBatch::default();
        for &s in chunk {
            spec.push(&mut batch, &view(panel, s), origin, false);
        }
        let input = ForecastInput::from_arrays(
            batch.encoder,
            batch.decoder,
            batch.keys,
            batch.baseline,
            batch.len,
            spec.context,
            spec.horizon,
            device,
        );
        let flat = model
            .predict(input, &batch.scale)
            .map_err(anyhow::Error::msg)?;
        for w in flat.chunks(spec.horizon * n_quantiles) {
            out.push(w.chunks(n_quantiles).map(<[f32]>::to_vec).collect());
        }
    }
    Ok(out)
}

/// Trains, backtests and packages the forecaster.
pub fn train_forecaster(
    cfg: &LoadedConfig,
    sec: &ForecasterSection,
    device: &Device,
    seed: u64,
) -> Result<ForecasterOutcome> {
    let panel = load_sales_panel(cfg, sec)?;
    let m = &sec.model;
    let tc = ForecasterTrainingConfig::new(
        sec.training.epochs,
        sec.training.batch_size,
        sec.training.learning_rate,
        sec.training.windows_per_series,
        sec.training.patience,
        seed,
        sec.evaluation.backtest_folds,
        sec.evaluation.moving_average_window,
        sec.evaluation.allow_worse_than_baseline,
    );
    let (h, t_all, folds) = (m.horizon, panel.periods, tc.backtest_folds);
    eprintln!(
        "forecaster: {} series ({} in the file), {} periods from day {}; {} rows read, {} negative targets dropped",
        panel.len(),
        panel.report.series_total,
        t_all,
        shopcast_datasets::table::date_of_day(panel.first_day),
        panel.report.rows_read,
        panel.report.negative_targets_dropped
    );
    for f in &panel.report.filters {
        eprintln!("forecaster: filter {} dropped {} rows", f.filter, f.dropped);
    }
    let needed = (folds + 2) * h + m.season_length * 2;
    if t_all < needed {
        anyhow::bail!(DataError::TooLittleData(format!(
            "forecaster: the data has {t_all} periods, but {folds} backtest folds of {h}, a validation period of {h}, \
             and at least one training window need {needed}; lower `forecaster.evaluation.backtest_folds` or \
             `forecaster.model.horizon`, or provide more history"
        )));
    }
    let fold_origins: Vec<usize> = (0..folds).map(|f| t_all - (folds - f) * h).collect();
    let val_origin = fold_origins[0] - h;

    // Covariate scaling is fitted on the training periods only.
    let fit = |names: &[String], values: &[Vec<Vec<f32>>]| -> Vec<CovariateStats> {
        names
            .iter()
            .enumerate()
            .map(|(k, n)| {
                CovariateStats::fit(
                    n,
                    (0..panel.len()).flat_map(|s| {
                        values[s][k][panel.start[s].min(val_origin)..val_origin]
                            .iter()
                            .copied()
                    }),
                )
            })
            .collect()
    };
    let known = fit(&panel.known_names, &panel.known);
    let past = fit(&panel.past_names, &panel.past);
    let spec = WindowSpec {
        context: m.context_length,
        horizon: h,
        season: m.season_length,
        period_days: panel.period_days,
        known,
        past,
    };

    // Series with a training window that ends before the validation period.
    let trainable: Vec<usize> = (0..panel.len())
        .filter(|&s| spec.min_origin(panel.start[s]) + h <= val_origin)
        .collect();
    if trainable.is_empty() {
        anyhow::bail!(DataError::TooLittleData(format!(
            "forecaster: no series has enough history before the validation period (day {}) for a training window",
            shopcast_datasets::table::date_of_day(panel.day_of_period(val_origin))
        )));
    }
    let val_series: Vec<usize> = (0..panel.len())
        .filter(|&s| val_origin >= spec.min_origin(panel.start[s]))
        .collect();

    let model_config = ForecasterConfig::new(
        spec.encoder_features(),
        spec.decoder_features(),
        panel.key_vocabs.iter().map(|v| v.len()).collect(),
        spec.context,
        h,
        m.quantiles.clone(),
    )
    .with_hidden_size(m.hidden_size)
    .with_key_embedding_dim(m.key_embedding_dim);
    let plain = device.clone();
    let train_device = device.clone().autodiff();
    let mut model =
        shopcast_model::seeded_init(&train_device, seed, || model_config.init(&train_device));
    let mut optim = AdamConfig::new().init();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xf0_7eca57);
    let windows_per_epoch = trainable.len() * tc.windows_per_series;
    let steps_per_epoch = windows_per_epoch.div_ceil(tc.batch_size);
    let mut progress = Progress::new("forecaster", (steps_per_epoch * tc.epochs) as u64);
    let (mut best, mut best_loss, mut best_epoch, mut since_best) =
        (model.valid(), f64::INFINITY, 0, 0);
    for epoch in 1..=tc.epochs {
        let mut samples: Vec<(usize, usize)> = Vec::with_capacity(windows_per_epoch);
        for &s in &trainable {
            let (lo, hi) = (spec.min_origin(panel.start[s]), val_origin - h);
            for _ in 0..tc.windows_per_series {
                samples.push((s, rng.random_range(lo..=hi)));
            }
        }
        samples.shuffle(&mut rng);
        let (mut loss_sum, mut loss_n) = (0.0, 0usize);
        for (step, chunk) in samples.chunks(tc.batch_size).enumerate() {
            let mut batch = WindowBatch::default();
            for &(s, origin) in chunk {
                spec.push(&mut batch, &view(&panel, s), origin, true);
            }
            let (input, target, mask) = training_input(batch, &spec, &train_device);
            let loss = pinball(model.forward(input), target, mask, &m.quantiles);
            if step % 10 == 0 {
                loss_sum += loss.clone().into_scalar::<f32>() as f64;
                loss_n += 1;
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(tc.learning_rate, model, grads);
            let shown = loss_sum / loss_n.max(1) as f64;
            progress.step(|| format!("epoch {epoch}/{} loss {shown:.4}", tc.epochs));
        }
        // Validation: every series' window at the validation origin.
        let snapshot = model.valid();
        let mut val_loss = 0.0;
        for chunk in val_series.chunks(512) {
            let mut batch = WindowBatch::default();
            for &s in chunk {
                spec.push(&mut batch, &view(&panel, s), val_origin, true);
            }
            let (input, target, mask) = training_input(batch, &spec, &plain);
            val_loss += pinball(snapshot.forward(input), target, mask, &m.quantiles)
                .into_scalar::<f32>() as f64
                * chunk.len() as f64;
        }
        val_loss /= val_series.len().max(1) as f64;
        progress.log(&format!(
            "epoch {epoch}: train loss {:.4}, validation loss {val_loss:.4}",
            loss_sum / loss_n.max(1) as f64
        ));
        if val_loss < best_loss {
            best_loss = val_loss;
            best = snapshot;
            best_epoch = epoch;
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= tc.patience {
                progress.log(&format!(
                    "no improvement for {} epochs: stopping, keeping epoch {best_epoch}",
                    tc.patience
                ));
                break;
            }
        }
    }
    progress.finish(&format!(
        "best validation loss {best_loss:.4} at epoch {best_epoch}"
    ));

    // Rolling-origin backtest on the folds.
    let q = m.quantiles.len();
    let mut model_score = ForecastScore::new(&m.quantiles);
    let mut naive_score = ForecastScore::new(&m.quantiles);
    let mut ma_score = ForecastScore::new(&m.quantiles);
    for &origin in &fold_origins {
        let series: Vec<usize> = (0..panel.len())
            .filter(|&s| origin >= spec.min_origin(panel.start[s]))
            .collect();
        let forecasts = forecast_at(&best, &panel, &spec, &series, origin, q, &plain)
            .context("backtest forecast")?;
        for (&s, f) in series.iter().zip(&forecasts) {
            let y = &panel.target[s];
            let history = &y[panel.start[s]..origin];
            let actual = &y[origin..origin + h];
            model_score.add(history, actual, f, spec.season);
            naive_score.add(
                history,
                actual,
                &seasonal_naive(history, h, spec.season, &m.quantiles),
                spec.season,
            );
            ma_score.add(
                history,
                actual,
                &moving_average(history, h, tc.moving_average_window, &m.quantiles),
                spec.season,
            );
        }
    }
    let mut metrics = BTreeMap::new();
    for (prefix, score) in [
        ("forecaster.", &model_score),
        ("baseline.seasonal_naive.", &naive_score),
        ("baseline.moving_average.", &ma_score),
    ] {
        for (k, v) in score.metrics() {
            metrics.insert(format!("{prefix}{k}"), v);
        }
    }
    metrics.insert("forecaster.validation.loss".into(), best_loss);
    metrics.insert("forecaster.best_epoch".into(), best_epoch as f64);
    metrics.insert("forecaster.series".into(), panel.len() as f64);
    metrics.insert("forecaster.backtest_folds".into(), folds as f64);

    let mut gate_failures = Vec::new();
    let (model_mase, naive_mase) = (
        metrics["forecaster.mase"],
        metrics["baseline.seasonal_naive.mase"],
    );
    if model_mase > naive_mase {
        gate_failures.push(format!(
            "forecaster MASE {model_mase:.4} is worse than seasonal naive {naive_mase:.4} on the backtest"
        ));
    }

    let artifacts = build_artifacts(sec, &panel, &spec);
    Ok(ForecasterOutcome {
        model: best,
        model_config,
        training_config: tc,
        artifacts,
        metrics,
        gate_failures,
        best_epoch,
    })
}

fn build_artifacts(
    sec: &ForecasterSection,
    panel: &SalesPanel,
    spec: &WindowSpec,
) -> ForecasterArtifacts {
    let t_all = panel.periods;
    let from = t_all.saturating_sub(spec.context);
    let series = (0..panel.len())
        .map(|s| SeriesTail {
            keys: panel.series_keys[s].clone(),
            first_day: panel.day_of_period(from),
            target: panel.target[s][from..]
                .iter()
                .map(|v| (!v.is_nan()).then_some(*v))
                .collect(),
            known: panel.known[s].iter().map(|v| v[from..].to_vec()).collect(),
            past: panel.past[s].iter().map(|v| v[from..].to_vec()).collect(),
        })
        .collect();
    ForecasterArtifacts {
        spec: spec.clone(),
        key_names: panel.key_names.clone(),
        key_vocabs: panel.key_vocabs.clone(),
        date_column: sec.data.date.clone(),
        quantiles: sec.model.quantiles.clone(),
        price_covariate: sec
            .data
            .price
            .as_ref()
            .and_then(|p| panel.known_names.iter().position(|n| n == p)),
        series,
    }
}

//! Training the demand forecaster: exponential smoothing fitted per series (the anchor), random
//! windows per series for the network that corrects it, early stopping on the period just
//! before the backtest, a per-quantile blend of network and anchor chosen on that same period,
//! then a rolling-origin backtest against seasonal naive, a moving average and exponential
//! smoothing on the same folds, and the quality gate.
//!
//! Periods: `| training windows ... | validation (horizon) | fold 1 | fold 2 | ... | fold N |`.
//! The model never sees the folds while training; at each fold origin it reads the actual
//! history up to that origin, as it would in production (backtest without refitting). The
//! anchor's smoothing constants are fitted before the validation period; the ETS baseline is
//! refitted at every fold origin, as a classical forecaster would be.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use burn::optim::AdamConfig;
use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use shopcast_datasets::artifacts::{ForecasterArtifacts, SeriesTail};
use shopcast_datasets::charts::ForecastSample;
use shopcast_datasets::config::ForecasterSection;
use shopcast_datasets::exp_smoothing::EtsModel;
use shopcast_datasets::profile::SalesProfile;
use shopcast_datasets::sales::{load_sales_panel, SalesPanel};
use shopcast_datasets::windows::{
    blend_quantiles, CovariateStats, SeriesView, WindowBatch, WindowSpec,
};
use shopcast_datasets::{DataError, LoadedConfig};
use shopcast_model::losses::pinball;
use shopcast_model::{DemandForecaster, ForecastInput, ForecasterConfig, ForecasterEnsemble};

use crate::checkpoint::{self, Checkpoints, EpochLog, LoopState, Validation};
use crate::forecast_eval::{moving_average, seasonal_naive, seasonal_scale, ForecastScore};
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
    #[config(default = 1)]
    pub ensemble: usize,
}

/// The result of a forecaster training run.
pub struct ForecasterOutcome {
    pub model: ForecasterEnsemble,
    pub model_config: ForecasterConfig,
    pub training_config: ForecasterTrainingConfig,
    pub artifacts: ForecasterArtifacts,
    /// `metrics.json` entries (`forecaster.*`, `baseline.seasonal_naive.*`,
    /// `baseline.moving_average.*`, `baseline.ets.*`).
    pub metrics: BTreeMap<String, f64>,
    /// Backtest metrics per series (written to the bundle as `forecaster.series_metrics.json`).
    pub series_metrics: Vec<SeriesMetrics>,
    /// Why the quality gate failed (empty when it passed).
    pub gate_failures: Vec<String>,
    /// What the data was, for the model card: (what, how much).
    pub data_summary: Vec<(String, String)>,
    /// What the data was, for `infer monitor`.
    pub profile: SalesProfile,
    /// Training and validation loss per epoch (the first network).
    pub history: Vec<EpochLog>,
    /// The latest backtest fold of the best, median and worst series by MASE.
    pub samples: Vec<ForecastSample>,
    pub best_epoch: usize,
}

/// The best, median and worst series by backtest MASE, with their latest fold.
fn forecast_samples(
    panel: &SalesPanel,
    series_metrics: &[SeriesMetrics],
    latest: &[Option<(usize, Vec<Vec<f32>>)>],
    h: usize,
) -> Vec<ForecastSample> {
    let by_keys: std::collections::HashMap<Vec<String>, usize> =
        (0..panel.len()).map(|s| (panel.key_values(s), s)).collect();
    let mut ranked: Vec<(f64, usize)> = series_metrics
        .iter()
        .filter_map(|m| {
            let mase = *m.metrics.get("forecaster")?.get("mase")?;
            let s = *by_keys.get(&m.keys)?;
            (mase.is_finite() && latest[s].is_some()).then_some((mase, s))
        })
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    if ranked.is_empty() {
        return Vec::new();
    }
    let picks = [
        ("best", 0),
        ("median", ranked.len() / 2),
        ("worst", ranked.len() - 1),
    ];
    picks
        .iter()
        .filter_map(|&(label, i)| {
            let (mase, s) = ranked[i];
            let (origin, forecast) = latest[s].clone()?;
            let from = origin.saturating_sub(3 * h).max(panel.start[s]);
            let y = &panel.target[s];
            Some(ForecastSample {
                label: label.into(),
                keys: panel.key_values(s),
                mase,
                first_day: panel.day_of_period(from),
                period_days: panel.period_days,
                history: y[from..origin].to_vec(),
                actual: y[origin..(origin + h).min(y.len())].to_vec(),
                forecast,
            })
        })
        .collect()
}

/// One series' backtest: its keys and, per method, its metrics over the folds.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesMetrics {
    pub keys: Vec<String>,
    pub folds: usize,
    /// Method (`forecaster`, `seasonal_naive`, `moving_average`, `ets`) to metric to value.
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
}

/// Names of the compared methods, as in `metrics.json` prefixes.
const METHODS: [&str; 4] = ["forecaster", "seasonal_naive", "moving_average", "ets"];

fn view<'a>(panel: &'a SalesPanel, anchors: &'a [EtsModel], s: usize) -> SeriesView<'a> {
    SeriesView {
        target: &panel.target[s],
        known: &panel.known[s],
        past: &panel.past[s],
        first_day: panel.first_day,
        keys: &panel.series_keys[s],
        statics: &panel.series_statics[s],
        ets: anchors.get(s),
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

/// Forecasts (in units) of the windows at `origin` of the given series: `[series][h][q]`,
/// the network's blended with the anchor's by `weights`, and the anchor's alone.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn forecast_at(
    model: &ForecasterEnsemble,
    panel: &SalesPanel,
    anchors: &[EtsModel],
    spec: &WindowSpec,
    series: &[usize],
    origin: usize,
    weights: &[f32],
    device: &Device,
) -> Result<(Vec<Vec<Vec<f32>>>, Vec<Vec<Vec<f32>>>)> {
    let q = weights.len();
    let per_window = spec.horizon * q;
    let (mut out, mut anchor_out) = (Vec::new(), Vec::new());
    for chunk in series.chunks(512) {
        let mut batch = WindowBatch::default();
        for &s in chunk {
            spec.push(&mut batch, &view(panel, anchors, s), origin, false);
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
        let mut flat = model
            .predict(input, &batch.scale)
            .map_err(anyhow::Error::msg)?;
        blend_quantiles(&mut flat, &batch.anchor_quantiles, weights);
        let split = |v: &[f32]| -> Vec<Vec<Vec<f32>>> {
            v.chunks(per_window)
                .map(|w| w.chunks(q).map(<[f32]>::to_vec).collect())
                .collect()
        };
        out.extend(split(&flat));
        anchor_out.extend(split(&batch.anchor_quantiles));
    }
    Ok((out, anchor_out))
}

/// Per quantile level, the weight of the network against the anchor (0, 0.1, ..., 1) with the
/// lowest pinball loss on the validation windows, each series' loss divided by its seasonal
/// scale so that every series counts alike (as in MASE).
fn choose_blend(
    network: &[Vec<Vec<f32>>],
    anchor: &[Vec<Vec<f32>>],
    actual: &[(&[f32], f64)],
    levels: &[f64],
) -> Vec<f32> {
    levels
        .iter()
        .enumerate()
        .map(|(j, &level)| {
            let loss_of = |w: f32| -> f64 {
                let mut total = 0.0;
                for ((net, anc), (y, scale)) in network.iter().zip(anchor).zip(actual) {
                    for (h, &v) in y.iter().enumerate() {
                        if v.is_nan() {
                            continue;
                        }
                        let f = w * net[h][j] + (1.0 - w) * anc[h][j];
                        let e = (v - f) as f64;
                        total += (level * e).max((level - 1.0) * e) / scale;
                    }
                }
                total
            };
            let mut best = (f64::INFINITY, 1.0f32);
            for k in (0..=10).rev() {
                let w = k as f32 / 10.0;
                let loss = loss_of(w);
                // Strictly better only: ties keep the larger network weight.
                if loss < best.0 - 1e-12 {
                    best = (loss, w);
                }
            }
            best.1
        })
        .collect()
}

/// What one network trains on.
struct TrainingData<'a> {
    panel: &'a SalesPanel,
    anchors: &'a [EtsModel],
    spec: &'a WindowSpec,
    trainable: &'a [usize],
    val_series: &'a [usize],
    val_origin: usize,
    quantiles: &'a [f64],
}

/// Trains one network from `seed`: random windows per series each epoch, Adam on the pinball
/// loss, early stopping on the validation windows. Returns the best epoch's network, its
/// validation loss and the epoch. The loop is checkpointed like the recommender's (after every
/// epoch, and after the current step when a stop is requested).
#[allow(clippy::too_many_arguments)]
fn train_network(
    data: &TrainingData<'_>,
    model_config: &ForecasterConfig,
    tc: &ForecasterTrainingConfig,
    device: &Device,
    seed: u64,
    progress: &mut Progress,
    label: &str,
    checkpoints: &Checkpoints,
) -> Result<(DemandForecaster, f64, usize, Vec<EpochLog>)> {
    let (panel, anchors, spec) = (data.panel, data.anchors, data.spec);
    let h = spec.horizon;
    let plain = device.clone();
    let train_device = device.clone().autodiff();
    let mut model =
        shopcast_model::seeded_init(&train_device, seed, || model_config.init(&train_device));
    let mut optim = AdamConfig::new().init();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xf0_7eca57);
    let windows_per_epoch = data.trainable.len() * tc.windows_per_series;
    let steps_per_epoch = windows_per_epoch.div_ceil(tc.batch_size);
    let mut best = model.valid();
    let mut samples: Vec<(usize, usize)> = Vec::with_capacity(windows_per_epoch);
    let mut state = checkpoints.new_state();
    if let Some(saved) = checkpoints.restore(label, model.clone(), || model_config.init(&plain))? {
        saved.state.restore_rng(&mut rng)?;
        samples = saved
            .state
            .order
            .chunks(2)
            .map(|p| (p[0] as usize, p.get(1).copied().unwrap_or(0) as usize))
            .collect();
        (model, optim, state) = (saved.model, saved.optim, saved.state);
        if let Some(b) = saved.best {
            best = b;
        }
    }
    progress.skip(((state.epoch - 1) * steps_per_epoch + state.next_step) as u64);
    let save_order = |samples: &[(usize, usize)]| -> Vec<u32> {
        samples
            .iter()
            .flat_map(|&(s, o)| [s as u32, o as u32])
            .collect()
    };
    let epochs_to_run = if state.finished { 0 } else { tc.epochs };
    for epoch in state.epoch..=epochs_to_run {
        if state.next_step == 0 {
            samples.clear();
            for &s in data.trainable {
                let (lo, hi) = (spec.min_origin(panel.start[s]), data.val_origin - h);
                for _ in 0..tc.windows_per_series {
                    samples.push((s, rng.random_range(lo..=hi)));
                }
            }
            samples.shuffle(&mut rng);
            (state.loss_sum, state.loss_n) = (0.0, 0);
        }
        let first_step = state.next_step;
        for (step, chunk) in samples.chunks(tc.batch_size).enumerate().skip(first_step) {
            let mut batch = WindowBatch::default();
            for &(s, origin) in chunk {
                spec.push(&mut batch, &view(panel, anchors, s), origin, true);
            }
            let (input, target, mask) = training_input(batch, spec, &train_device);
            // On the CPU backends the LSTM pair runs its hand-written backward pass here.
            let (loss, grads) = model
                .loss_and_gradients(input, |raw| pinball(raw, target, mask, data.quantiles))
                .map_err(anyhow::Error::msg)
                .context("forecaster training step")?;
            if step % 10 == 0 {
                state.loss_sum += loss.into_scalar::<f32>() as f64;
                state.loss_n += 1;
            }
            model = optim.step(tc.learning_rate, model, grads);
            let shown = state.loss_sum / state.loss_n.max(1) as f64;
            progress.step(|| format!("epoch {epoch}/{} loss {shown:.4}", tc.epochs));
            checkpoint::step_done(label);
            if checkpoint::stop_requested() && step + 1 < steps_per_epoch {
                state.next_step = step + 1;
                state.rng_word_pos = LoopState::rng_position(&rng);
                state.order = save_order(&samples);
                checkpoints.save(label, &mut state, &model, &optim, Some(&best))?;
                progress.finish(&format!("stopped at epoch {epoch}, step {}", step + 1));
                return Err(checkpoints.interrupted());
            }
        }
        // Validation: every series' window at the validation origin.
        let snapshot = model.valid();
        let mut val_loss = 0.0;
        for chunk in data.val_series.chunks(512) {
            let mut batch = WindowBatch::default();
            for &s in chunk {
                spec.push(&mut batch, &view(panel, anchors, s), data.val_origin, true);
            }
            let (input, target, mask) = training_input(batch, spec, &plain);
            val_loss += pinball(snapshot.forward(input), target, mask, data.quantiles)
                .into_scalar::<f32>() as f64
                * chunk.len() as f64;
        }
        val_loss /= data.val_series.len().max(1) as f64;
        state.history.push(EpochLog {
            epoch,
            train_loss: state.loss_sum / state.loss_n.max(1) as f64,
            validation: Some(val_loss),
        });
        progress.log(&format!(
            "epoch {epoch}: train loss {:.4}, validation loss {val_loss:.4}",
            state.loss_sum / state.loss_n.max(1) as f64
        ));
        let mut stop_early = false;
        let improved = val_loss < state.best_score.unwrap_or(f64::INFINITY);
        match state.validated(epoch, val_loss, improved, tc.patience) {
            Validation::Best => best = snapshot,
            Validation::Worse => {}
            Validation::Stop => {
                progress.log(&state.stop_message());
                stop_early = true;
            }
        }
        (state.epoch, state.next_step, state.epochs_run) = (epoch + 1, 0, epoch);
        state.finished = stop_early || epoch == tc.epochs;
        state.rng_word_pos = LoopState::rng_position(&rng);
        state.order = Vec::new();
        checkpoints.save(label, &mut state, &model, &optim, Some(&best))?;
        if stop_early {
            break;
        }
        if checkpoint::stop_requested() && epoch < tc.epochs {
            progress.finish(&format!("stopped after epoch {epoch}"));
            return Err(checkpoints.interrupted());
        }
    }
    Ok((
        best,
        state.best_score.unwrap_or(f64::INFINITY),
        state.best_epoch,
        state.history,
    ))
}

/// Trains, backtests and packages the forecaster.
pub fn train_forecaster(
    cfg: &LoadedConfig,
    sec: &ForecasterSection,
    device: &Device,
    seed: u64,
    checkpoints: &Checkpoints,
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
    )
    .with_ensemble(sec.training.ensemble);
    let (h, t_all, folds) = (m.horizon, panel.periods, tc.backtest_folds);
    eprintln!(
        "forecaster: {} series ({} in the file), {} periods from day {}; {} rows read, {} negative targets dropped, {} duplicate rows dropped",
        panel.len(),
        panel.report.series_total,
        t_all,
        shopcast_datasets::table::date_of_day(panel.first_day),
        panel.report.rows_read,
        panel.report.negative_targets_dropped,
        panel.report.duplicate_rows_dropped
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
    // The anchor of every series: smoothing constants fitted before the validation period.
    let anchors: Vec<EtsModel> = panel
        .target
        .iter()
        .map(|y| EtsModel::fit(y, val_origin, spec.season, &m.quantiles))
        .collect();

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
        panel
            .key_vocabs
            .iter()
            .chain(&panel.static_vocabs)
            .map(|v| v.len())
            .collect(),
        spec.context,
        h,
        m.quantiles.clone(),
    )
    .with_hidden_size(m.hidden_size)
    .with_key_embedding_dim(m.key_embedding_dim)
    .with_ensemble(tc.ensemble);
    let plain = device.clone();
    let data = TrainingData {
        panel: &panel,
        anchors: &anchors,
        spec: &spec,
        trainable: &trainable,
        val_series: &val_series,
        val_origin,
        quantiles: &m.quantiles,
    };
    let windows_per_epoch = trainable.len() * tc.windows_per_series;
    let steps_per_epoch = windows_per_epoch.div_ceil(tc.batch_size);
    let mut progress = Progress::new(
        "forecaster",
        (steps_per_epoch * tc.epochs * tc.ensemble) as u64,
    );
    let mut members = Vec::with_capacity(tc.ensemble);
    let mut history = Vec::new();
    let (mut best_loss, mut best_epoch) = (0.0, 0);
    for member in 0..tc.ensemble {
        // Member 0 uses the run's seed, so an ensemble of one is the plain model.
        let member_seed = seed.wrapping_add(member as u64 * 0x9e37_79b9);
        if tc.ensemble > 1 {
            progress.log(&format!("network {} of {}", member + 1, tc.ensemble));
        }
        let (net, loss, epoch, epochs) = train_network(
            &data,
            &model_config,
            &tc,
            device,
            member_seed,
            &mut progress,
            &if tc.ensemble == 1 {
                "forecaster".to_string()
            } else {
                format!("forecaster-{member}")
            },
            checkpoints,
        )?;
        members.push(net);
        if member == 0 {
            history = epochs;
        }
        best_loss += loss / tc.ensemble as f64;
        best_epoch = best_epoch.max(epoch);
    }
    progress.finish(&format!(
        "mean best validation loss {best_loss:.4} over {} network(s)",
        tc.ensemble
    ));
    let best = ForecasterEnsemble { members };

    // The blend of network and anchor, per quantile, on the validation windows.
    let q = m.quantiles.len();
    let ones = vec![1.0f32; q];
    let (val_network, val_anchor) = forecast_at(
        &best,
        &panel,
        &anchors,
        &spec,
        &val_series,
        val_origin,
        &ones,
        &plain,
    )
    .context("validation forecast")?;
    let val_actual: Vec<(&[f32], f64)> = val_series
        .iter()
        .map(|&s| {
            let y = &panel.target[s];
            let scale = seasonal_scale(&y[..val_origin], spec.season)
                .filter(|v| *v > 0.0)
                .unwrap_or(1.0);
            (&y[val_origin..val_origin + h], scale)
        })
        .collect();
    let blend = choose_blend(&val_network, &val_anchor, &val_actual, &m.quantiles);
    progress.log(&format!(
        "network weight against exponential smoothing, per quantile {:?}: {:?}",
        m.quantiles, blend
    ));

    // Rolling-origin backtest on the folds: every method on the same series and origins.
    let mut totals: Vec<ForecastScore> = METHODS
        .iter()
        .map(|_| ForecastScore::new(&m.quantiles))
        .collect();
    let mut per_series: Vec<Option<Vec<ForecastScore>>> = vec![None; panel.len()];
    // The latest fold's forecast of each series, for the report's charts.
    let mut latest: Vec<Option<(usize, Vec<Vec<f32>>)>> = vec![None; panel.len()];
    for &origin in &fold_origins {
        let series: Vec<usize> = (0..panel.len())
            .filter(|&s| origin >= spec.min_origin(panel.start[s]))
            .collect();
        let (forecasts, _) = forecast_at(
            &best, &panel, &anchors, &spec, &series, origin, &blend, &plain,
        )
        .context("backtest forecast")?;
        for (&s, f) in series.iter().zip(&forecasts) {
            let y = &panel.target[s];
            let history = &y[panel.start[s]..origin];
            let actual = &y[origin..origin + h];
            let ets = EtsModel::fit(y, origin, spec.season, &m.quantiles);
            let by_method = [
                f.clone(),
                seasonal_naive(history, h, spec.season, &m.quantiles),
                moving_average(history, h, tc.moving_average_window, &m.quantiles),
                ets.quantiles_from(&ets.state_at(y, origin), h),
            ];
            if latest[s].as_ref().is_none_or(|(o, _)| origin > *o) {
                latest[s] = Some((origin, f.clone()));
            }
            let scores = per_series[s].get_or_insert_with(|| {
                METHODS
                    .iter()
                    .map(|_| ForecastScore::new(&m.quantiles))
                    .collect()
            });
            for ((total, own), forecast) in totals.iter_mut().zip(scores).zip(&by_method) {
                total.add(history, actual, forecast, spec.season);
                own.add(history, actual, forecast, spec.season);
            }
        }
    }
    let mut metrics = BTreeMap::new();
    for (method, score) in METHODS.iter().zip(&totals) {
        let prefix = if *method == "forecaster" {
            "forecaster.".to_string()
        } else {
            format!("baseline.{method}.")
        };
        for (k, v) in score.metrics() {
            metrics.insert(format!("{prefix}{k}"), v);
        }
    }
    let series_metrics: Vec<SeriesMetrics> = per_series
        .iter()
        .enumerate()
        .filter_map(|(s, scores)| {
            let scores = scores.as_ref()?;
            Some(SeriesMetrics {
                keys: panel.key_values(s),
                folds: scores[0].series_folds(),
                metrics: METHODS
                    .iter()
                    .zip(scores)
                    .map(|(name, sc)| (name.to_string(), sc.metrics()))
                    .collect(),
            })
        })
        .collect();
    // The median over series of each method's MASE: the mean is led by a few series whose
    // seasonal-naive scale is tiny.
    for (j, method) in METHODS.iter().enumerate() {
        let mut mase: Vec<f64> = per_series
            .iter()
            .flatten()
            .filter(|sc| sc[j].has_mase())
            .map(|sc| sc[j].metrics()["mase"])
            .collect();
        if !mase.is_empty() {
            mase.sort_by(f64::total_cmp);
            let key = if *method == "forecaster" {
                "forecaster.mase_median".to_string()
            } else {
                format!("baseline.{method}.mase_median")
            };
            metrics.insert(key, mase[mase.len() / 2]);
        }
    }
    for (level, w) in m.quantiles.iter().zip(&blend) {
        metrics.insert(
            format!(
                "forecaster.network_weight.{}",
                ForecasterArtifacts::quantile_column(*level)
            ),
            *w as f64,
        );
    }
    metrics.insert("forecaster.validation.loss".into(), best_loss);
    metrics.insert("forecaster.best_epoch".into(), best_epoch as f64);
    metrics.insert("forecaster.series".into(), panel.len() as f64);
    metrics.insert("forecaster.backtest_folds".into(), folds as f64);

    let gate_failures = quality_gate(&metrics);

    let samples = forecast_samples(&panel, &series_metrics, &latest, h);
    let artifacts = build_artifacts(sec, &panel, &spec, blend);
    let r = &panel.report;
    let data_summary = vec![
        ("rows read".into(), r.rows_read.to_string()),
        ("rows used".into(), r.rows_used.to_string()),
        (
            "negative targets (returns) dropped".into(),
            r.negative_targets_dropped.to_string(),
        ),
        (
            "duplicate rows dropped".into(),
            r.duplicate_rows_dropped.to_string(),
        ),
        (
            "series".into(),
            format!("{} ({} in the file)", panel.len(), r.series_total),
        ),
        (
            "period".into(),
            format!(
                "{} to {} ({} {} periods)",
                shopcast_datasets::table::date_of_day(panel.first_day),
                shopcast_datasets::table::date_of_day(panel.day_of_period(t_all) - 1),
                t_all,
                if panel.period_days == 7 {
                    "weekly"
                } else {
                    "daily"
                }
            ),
        ),
    ];
    Ok(ForecasterOutcome {
        model: best,
        model_config,
        training_config: tc,
        artifacts,
        metrics,
        series_metrics,
        gate_failures,
        data_summary,
        profile: SalesProfile::of(&panel),
        history,
        samples,
        best_epoch,
    })
}

/// The quality gate: the forecaster must not be worse than seasonal naive on the backtest, on
/// MASE (point forecast) nor on weighted quantile loss (the whole distribution). Returns why it
/// failed (empty when it passed).
pub fn quality_gate(metrics: &BTreeMap<String, f64>) -> Vec<String> {
    ["mase", "wql"]
        .iter()
        .filter_map(|m| {
            let model = *metrics.get(&format!("forecaster.{m}"))?;
            let naive = *metrics.get(&format!("baseline.seasonal_naive.{m}"))?;
            (model > naive || !model.is_finite()).then(|| {
                format!(
                    "forecaster {} {model:.4} is worse than seasonal naive {naive:.4} on the backtest",
                    m.to_uppercase()
                )
            })
        })
        .collect()
}

/// The bundle's side data: the spec, key vocabularies, the blend, and per series the last
/// `context + horizon` periods (enough to forecast the next horizon, and to re-forecast the
/// latest one for anomaly checks) with its exponential smoothing, fitted on all its history and
/// moved on to the tail's start.
fn build_artifacts(
    sec: &ForecasterSection,
    panel: &SalesPanel,
    spec: &WindowSpec,
    blend: Vec<f32>,
) -> ForecasterArtifacts {
    let t_all = panel.periods;
    let from = t_all.saturating_sub(spec.context + spec.horizon);
    let series = (0..panel.len())
        .map(|s| SeriesTail {
            keys: panel.series_keys[s].clone(),
            statics: panel.series_statics[s].clone(),
            first_day: panel.day_of_period(from),
            target: panel.target[s][from..]
                .iter()
                .map(|v| (!v.is_nan()).then_some(*v))
                .collect(),
            known: panel.known[s].iter().map(|v| v[from..].to_vec()).collect(),
            past: panel.past[s].iter().map(|v| v[from..].to_vec()).collect(),
            // Refitted on all the history: a series that started after the validation period
            // has no anchor otherwise.
            ets: Some(
                EtsModel::fit(&panel.target[s], t_all, spec.season, &sec.model.quantiles)
                    .rebased(&panel.target[s], from),
            ),
        })
        .collect();
    ForecasterArtifacts {
        spec: spec.clone(),
        key_names: panel.key_names.clone(),
        key_vocabs: panel.key_vocabs.clone(),
        static_names: panel.static_names.clone(),
        static_vocabs: panel.static_vocabs.clone(),
        date_column: sec.data.date.clone(),
        quantiles: sec.model.quantiles.clone(),
        price_covariate: sec
            .data
            .price
            .as_ref()
            .and_then(|p| panel.known_names.iter().position(|n| n == p)),
        network_weights: blend,
        series,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_gate_checks_mase_and_wql_against_seasonal_naive() {
        let metrics = |mase: f64, wql: f64| -> BTreeMap<String, f64> {
            [
                ("forecaster.mase", mase),
                ("forecaster.wql", wql),
                ("baseline.seasonal_naive.mase", 1.0),
                ("baseline.seasonal_naive.wql", 0.5),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
        };
        assert!(quality_gate(&metrics(0.9, 0.4)).is_empty());
        let mase = quality_gate(&metrics(1.1, 0.4));
        assert_eq!(mase.len(), 1);
        assert!(mase[0].contains("MASE 1.1000") && mase[0].contains("seasonal naive 1.0000"));
        assert_eq!(quality_gate(&metrics(0.9, 0.6)).len(), 1);
        assert_eq!(quality_gate(&metrics(f64::NAN, 0.4)).len(), 1);
    }
}

//! Training the demand forecaster, one stage per file: the sales panel and its periods
//! (`data.rs`), the networks (`fit.rs`), the per-quantile blend of network and anchor (`blend.rs`),
//! forecasts at an origin (`predict.rs`), the rolling-origin backtest against the baselines and the
//! quality gate (`backtest.rs`), and the bundle's side data (`artifacts.rs`).
//!
//! Each series' exponential smoothing (fitted before the validation period) is the anchor the
//! network corrects; early stopping and the blend are decided on the validation period just
//! before the backtest folds, which those networks never see. With `refit`, every network is
//! then retrained from scratch for its best number of epochs on everything before each fold's
//! origin (those networks score the fold) and on the whole history (the bundle's). At each fold
//! origin the forecast reads the actual history up to that origin, as it would in production;
//! the ETS baseline is refitted at every fold origin, as a classical forecaster would be.

mod artifacts;
mod backtest;
mod blend;
mod data;
mod fit;
mod predict;

use std::collections::BTreeMap;

use anyhow::Result;
use burn::prelude::*;
use shopcast_datasets::artifacts::ForecasterArtifacts;
use shopcast_datasets::charts::ForecastSample;
use shopcast_datasets::config::ForecasterSection;
use shopcast_datasets::profile::SalesProfile;
use shopcast_datasets::LoadedConfig;
use shopcast_model::{ForecasterConfig, ForecasterEnsemble};

pub use backtest::{quality_gate, SeriesMetrics};
pub use fit::ForecasterTrainingConfig;

use crate::checkpoint::{Checkpoints, EpochLog};
use data::Prepared;

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

/// Trains, blends, backtests and packages the forecaster.
pub fn train_forecaster(
    cfg: &LoadedConfig,
    sec: &ForecasterSection,
    device: &Device,
    seed: u64,
    checkpoints: &Checkpoints,
) -> Result<ForecasterOutcome> {
    let tc = ForecasterTrainingConfig::from_section(sec, seed);
    let data = data::prepare(cfg, sec)?;
    let levels = &sec.model.quantiles;
    let model_config = model_config(sec, &data, &tc);
    let plan = fit::FitPlan::early_stopping(&data);
    let ensemble = fit::train_ensemble(&data, &model_config, &tc, device, checkpoints, &plan)?;

    let validation = blend::validation_blend(&ensemble.model, &data, levels, device)?;
    let blend = validation.weights;
    eprintln!(
        "forecaster: network weight against exponential smoothing, per quantile {levels:?}: {blend:?}; validation MASE {:.4}, WQL {:.4}",
        validation.mase, validation.wql
    );
    let fold_ends: Vec<(String, usize)> = (data.fold_origins.iter().enumerate())
        .map(|(f, &origin)| (format!("forecaster-fold{}", f + 1), origin))
        .collect();
    let fold_models = refit_before(
        &data,
        &fold_ends,
        &ensemble,
        (&model_config, &tc),
        device,
        checkpoints,
    )?;
    let by_fold: Vec<&ForecasterEnsemble> = if fold_models.is_empty() {
        vec![&ensemble.model]
    } else {
        fold_models.iter().collect()
    };
    let mut tested = backtest::backtest(&by_fold, &data, &blend, &tc, levels, device)?;
    let metrics = &mut tested.metrics;
    for (level, w) in levels.iter().zip(&blend) {
        let column = ForecasterArtifacts::quantile_column(*level);
        metrics.insert(format!("forecaster.network_weight.{column}"), *w as f64);
    }
    metrics.insert("forecaster.validation.loss".into(), ensemble.best_loss);
    metrics.insert("forecaster.validation.mase".into(), validation.mase);
    metrics.insert("forecaster.validation.wql".into(), validation.wql);
    metrics.insert("forecaster.best_epoch".into(), ensemble.best_epoch as f64);
    metrics.insert("forecaster.series".into(), data.panel.len() as f64);
    metrics.insert("forecaster.backtest_folds".into(), tc.backtest_folds as f64);
    metrics.insert("forecaster.refit".into(), if tc.refit { 1.0 } else { 0.0 });

    let model = match refit_before(
        &data,
        &[("forecaster-refit".to_string(), data.panel.periods)],
        &ensemble,
        (&model_config, &tc),
        device,
        checkpoints,
    )?
    .pop()
    {
        Some(refitted) => refitted,
        None => ensemble.model,
    };
    let Prepared { panel, spec, .. } = &data;
    let samples =
        artifacts::forecast_samples(panel, &tested.series_metrics, &tested.latest, spec.horizon);
    Ok(ForecasterOutcome {
        model,
        model_config,
        gate_failures: quality_gate(&tested.metrics),
        artifacts: artifacts::build_artifacts(sec, panel, spec, blend),
        training_config: tc,
        metrics: tested.metrics,
        series_metrics: tested.series_metrics,
        data_summary: data::summary(panel, sec.data.frequency),
        profile: SalesProfile::of(panel),
        history: ensemble.history,
        samples,
        best_epoch: ensemble.best_epoch,
    })
}

/// With `refit`, the early-stopped networks retrained from scratch, each for its best number of
/// epochs, on everything before each of `ends` (one ensemble per end, its loops named by the
/// label beside it); without, none.
fn refit_before(
    data: &Prepared,
    ends: &[(String, usize)],
    early_stopped: &fit::Ensemble,
    (model_config, tc): (&ForecasterConfig, &ForecasterTrainingConfig),
    device: &Device,
    checkpoints: &Checkpoints,
) -> Result<Vec<ForecasterEnsemble>> {
    if !tc.refit {
        return Ok(Vec::new());
    }
    ends.iter()
        .map(|(label, end)| {
            let plan = fit::FitPlan {
                label: label.clone(),
                train_end: *end,
                epochs: Some(&early_stopped.best_epochs),
            };
            Ok(fit::train_ensemble(data, model_config, tc, device, checkpoints, &plan)?.model)
        })
        .collect()
}

/// The network's shapes for this data.
fn model_config(
    sec: &ForecasterSection,
    data: &Prepared,
    tc: &ForecasterTrainingConfig,
) -> ForecasterConfig {
    let (m, spec, panel) = (&sec.model, &data.spec, &data.panel);
    ForecasterConfig::new(
        spec.encoder_features(),
        spec.decoder_features(),
        panel
            .key_vocabs
            .iter()
            .chain(&panel.static_vocabs)
            .map(|v| v.len())
            .collect(),
        spec.context,
        spec.horizon,
        m.quantiles.clone(),
    )
    .with_hidden_size(m.hidden_size)
    .with_key_embedding_dim(m.key_embedding_dim)
    .with_ensemble(tc.ensemble)
}

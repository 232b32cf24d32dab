//! The rolling-origin backtest: at every fold origin, the forecaster (reading the actual history
//! up to the origin, as in production, without refitting) and the baselines (seasonal naive, a
//! moving average, exponential smoothing refitted at the origin) on the same series, scored
//! overall and per series; and the quality gate.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use burn::prelude::*;
use serde::Serialize;
use shopcast_datasets::artifacts::metric_keys::{self, forecast_method_prefix};
use shopcast_datasets::exp_smoothing::EtsModel;
use shopcast_model::ForecasterEnsemble;

use super::data::Prepared;
use super::fit::ForecasterTrainingConfig;
use super::predict::forecast_at;
use crate::forecast_eval::{moving_average, seasonal_naive, ForecastScore};

/// Names of the compared methods, as in `metrics.json` prefixes and the per-series metrics.
const METHODS: [&str; 4] = ["forecaster", "seasonal_naive", "moving_average", "ets"];

/// One series' backtest: its keys and, per method, its metrics over the folds.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesMetrics {
    pub keys: Vec<String>,
    pub folds: usize,
    /// Method (`forecaster`, `seasonal_naive`, `moving_average`, `ets`) to metric to value.
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
}

/// A series' latest backtest fold: its origin and the forecast `[h][q]`.
pub type LatestFold = Option<(usize, Vec<Vec<f32>>)>;

/// What the backtest measured.
pub struct Backtest {
    /// `forecaster.*` and `baseline.*` entries of `metrics.json`.
    pub metrics: BTreeMap<String, f64>,
    pub series_metrics: Vec<SeriesMetrics>,
    /// The latest fold's origin and forecast of each series, for the report's charts.
    pub latest: Vec<LatestFold>,
}

/// Every method on every fold: per method the scores over all series and per series. Fold `f`
/// is forecast by `models[f]` (networks that never saw the fold), or by the last of `models`.
pub fn backtest(
    models: &[&ForecasterEnsemble],
    data: &Prepared,
    blend: &[f32],
    tc: &ForecasterTrainingConfig,
    levels: &[f64],
    device: &Device,
) -> Result<Backtest> {
    let (panel, spec) = (&data.panel, &data.spec);
    let h = spec.horizon;
    let mut totals: Vec<ForecastScore> =
        METHODS.iter().map(|_| ForecastScore::new(levels)).collect();
    let mut per_series: Vec<Option<Vec<ForecastScore>>> = vec![None; panel.len()];
    let mut latest: Vec<LatestFold> = vec![None; panel.len()];
    // The forecaster's own scores per fold (`forecaster.fold1.mase`...).
    let mut by_fold: Vec<ForecastScore> = data
        .fold_origins
        .iter()
        .map(|_| ForecastScore::new(levels))
        .collect();
    for (fold, &origin) in data.fold_origins.iter().enumerate() {
        let Some(model) = models.get(fold).or(models.last()) else {
            anyhow::bail!("backtest: no networks to forecast with");
        };
        let series: Vec<usize> = (0..panel.len())
            .filter(|&s| origin >= spec.min_origin(panel.start[s]))
            .collect();
        let (forecasts, _) = forecast_at(model, data, &series, origin, blend, device)
            .context("backtest forecast")?;
        for (&s, f) in series.iter().zip(&forecasts) {
            let y = &panel.target[s];
            let history = &y[panel.start[s]..origin];
            let actual = &y[origin..origin + h];
            let ets = EtsModel::fit(y, origin, spec.season, levels);
            let by_method = [
                f.clone(),
                seasonal_naive(history, h, spec.season, levels),
                moving_average(history, h, tc.moving_average_window, levels),
                ets.quantiles_from(&ets.state_at(y, origin), h),
            ];
            if latest[s].as_ref().is_none_or(|(o, _)| origin > *o) {
                latest[s] = Some((origin, f.clone()));
            }
            let scores = per_series[s].get_or_insert_with(|| {
                METHODS.iter().map(|_| ForecastScore::new(levels)).collect()
            });
            for ((total, own), forecast) in totals.iter_mut().zip(scores).zip(&by_method) {
                total.add(history, actual, forecast, spec.season);
                own.add(history, actual, forecast, spec.season);
            }
            by_fold[fold].add(history, actual, f, spec.season);
        }
    }
    let mut metrics = BTreeMap::new();
    for (method, score) in METHODS.iter().zip(&totals) {
        let prefix = forecast_method_prefix(method);
        for (k, v) in score.metrics() {
            metrics.insert(format!("{prefix}{k}"), v);
        }
    }
    for (fold, score) in by_fold.iter().enumerate() {
        let all = score.metrics();
        for k in ["mase", "wql"] {
            if let Some(v) = all.get(k) {
                metrics.insert(
                    format!("{}fold{}.{k}", metric_keys::FORECASTER, fold + 1),
                    *v,
                );
            }
        }
    }
    insert_median_mase(&mut metrics, &per_series);
    let series_metrics = per_series
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
    Ok(Backtest {
        metrics,
        series_metrics,
        latest,
    })
}

/// The median over series of each method's MASE (`<prefix>mase_median`): the mean is led by a
/// few series whose seasonal-naive scale is tiny.
fn insert_median_mase(
    metrics: &mut BTreeMap<String, f64>,
    per_series: &[Option<Vec<ForecastScore>>],
) {
    for (j, method) in METHODS.iter().enumerate() {
        let mut mase: Vec<f64> = per_series
            .iter()
            .flatten()
            .filter(|sc| sc[j].has_mase())
            .map(|sc| sc[j].metrics()["mase"])
            .collect();
        if !mase.is_empty() {
            mase.sort_by(f64::total_cmp);
            let key = format!("{}mase_median", forecast_method_prefix(method));
            metrics.insert(key, mase[mase.len() / 2]);
        }
    }
}

/// The quality gate: the forecaster must not be worse than seasonal naive on the backtest, on
/// MASE (point forecast) nor on weighted quantile loss (the whole distribution). Returns why it
/// failed (empty when it passed).
pub fn quality_gate(metrics: &BTreeMap<String, f64>) -> Vec<String> {
    ["mase", "wql"]
        .iter()
        .filter_map(|m| {
            let model = *metrics.get(&format!("{}{m}", metric_keys::FORECASTER))?;
            let naive = *metrics.get(&format!("{}{m}", metric_keys::SEASONAL_NAIVE))?;
            (model > naive || !model.is_finite()).then(|| {
                format!(
                    "forecaster {} {model:.4} is worse than seasonal naive {naive:.4} on the backtest",
                    m.to_uppercase()
                )
            })
        })
        .collect()
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

//! The forecaster's side of the bundle (the spec, vocabularies, the blend and each series'
//! recent history with its exponential smoothing) and the report's sample series.

use shopcast_datasets::artifacts::{ForecasterArtifacts, SeriesTail};
use shopcast_datasets::charts::ForecastSample;
use shopcast_datasets::config::ForecasterSection;
use shopcast_datasets::exp_smoothing::EtsModel;
use shopcast_datasets::sales::SalesPanel;
use shopcast_datasets::windows::WindowSpec;

use super::backtest::{LatestFold, SeriesMetrics};

/// The best, median and worst series by backtest MASE, with their latest fold.
pub fn forecast_samples(
    panel: &SalesPanel,
    series_metrics: &[SeriesMetrics],
    latest: &[LatestFold],
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

/// The bundle's side data: the spec, key vocabularies, the blend, and per series the last
/// `history + horizon` periods (enough to forecast the next horizon, and to re-forecast the
/// latest one for anomaly checks) with its exponential smoothing, fitted on all its history and
/// moved on to the tail's start.
pub fn build_artifacts(
    sec: &ForecasterSection,
    panel: &SalesPanel,
    spec: &WindowSpec,
    blend: Vec<f32>,
) -> ForecasterArtifacts {
    let t_all = panel.periods;
    let from = t_all.saturating_sub(spec.history() + spec.horizon);
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

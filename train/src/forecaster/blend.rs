//! The blend of network and anchor: per quantile level, the weight of the network against the
//! series' exponential smoothing, chosen on the validation windows.

use anyhow::{Context, Result};
use burn::prelude::*;
use shopcast_model::ForecasterEnsemble;

use super::data::Prepared;
use super::predict::forecast_at;
use crate::forecast_eval::{seasonal_scale, ForecastScore};

/// The blend chosen on the validation windows and how well it forecasts them.
pub struct ValidationBlend {
    /// The network's weight per quantile level.
    pub weights: Vec<f32>,
    /// MASE of the blended median on the validation windows (each series' error over its
    /// seasonal scale before the validation origin, averaged over series with a scale): the
    /// figure that compares configurations without touching the backtest folds.
    pub mase: f64,
    /// WQL of the blended quantiles on the validation windows.
    pub wql: f64,
}

/// The network's weight per quantile level (`levels`), chosen on the validation windows.
pub fn validation_blend(
    model: &ForecasterEnsemble,
    data: &Prepared,
    levels: &[f64],
    device: &Device,
) -> Result<ValidationBlend> {
    let (origin, h) = (data.val_origin, data.spec.horizon);
    let ones = vec![1.0f32; levels.len()];
    let (network, anchor) = forecast_at(model, data, &data.val_series, origin, &ones, device)
        .context("validation forecast")?;
    let actual: Vec<(&[f32], f64)> = data
        .val_series
        .iter()
        .map(|&s| {
            let y = &data.panel.target[s];
            let scale = seasonal_scale(&y[..origin], data.spec.season).unwrap_or(0.0);
            (&y[origin..origin + h], scale)
        })
        .collect();
    let weights = choose_blend(&network, &anchor, &actual, levels);
    let mut score = ForecastScore::new(levels);
    for ((&s, net), anc) in data.val_series.iter().zip(&network).zip(&anchor) {
        let blended: Vec<Vec<f32>> = net
            .iter()
            .zip(anc)
            .map(|(n, a)| {
                n.iter()
                    .zip(a)
                    .zip(&weights)
                    .map(|((n, a), w)| (w * n + (1.0 - w) * a).max(0.0))
                    .collect()
            })
            .collect();
        let y = &data.panel.target[s];
        score.add(
            &y[..origin],
            &y[origin..origin + h],
            &blended,
            data.spec.season,
        );
    }
    let metrics = score.metrics();
    let mase = if score.has_mase() {
        metrics["mase"]
    } else {
        f64::NAN
    };
    Ok(ValidationBlend {
        weights,
        mase,
        wql: metrics.get("wql").copied().unwrap_or(f64::NAN),
    })
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
                        total += (level * e).max((level - 1.0) * e)
                            / if *scale > 0.0 { *scale } else { 1.0 };
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

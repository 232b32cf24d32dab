//! Forecasts of a trained ensemble at one origin, as the backtest and the blend need them:
//! through the windowed-prediction path that `infer` uses too
//! ([`shopcast_datasets::windows::forecast_windows`]).

use anyhow::Result;
use burn::prelude::*;
use shopcast_datasets::windows::{forecast_windows, WindowQuantiles};
use shopcast_model::{ForecastInput, ForecasterEnsemble};

use super::data::Prepared;

/// Forecasts (in units) of the windows at `origin` of the given series, `[series][h][q]`: the
/// network's blended with the anchor's by `weights`, and the anchor's alone.
pub fn forecast_at(
    model: &ForecasterEnsemble,
    data: &Prepared,
    series: &[usize],
    origin: usize,
    weights: &[f32],
    device: &Device,
) -> Result<(Vec<WindowQuantiles>, Vec<WindowQuantiles>)> {
    let spec = &data.spec;
    let windows: Vec<_> = series.iter().map(|&s| (data.view(s), origin)).collect();
    forecast_windows(spec, &windows, (weights.len(), weights), |batch| {
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
        model
            .predict(input, &batch.scale)
            .map_err(anyhow::Error::msg)
    })
}

//! Turning a stretch of a series into the forecaster's inputs: a context window for the encoder,
//! the horizon's known-future inputs for the decoder, and the anchor forecast the network
//! corrects (the series' exponential smoothing forecast, or a seasonal average without one).
//!
//! Values are divided by a per-window scale (the context's mean absolute seasonal difference, at
//! least a quarter of its mean and at least 1), so one global model serves fast and slow movers
//! alike; what that hides (the scale itself, the share of zero periods) is a decoder input, and
//! a training window's loss weight brings its errors back to MASE's scale ([`mase_weight`]).

use chrono::Datelike;
use serde::{Deserialize, Serialize};

use crate::exp_smoothing::EtsModel;
use crate::profile::seasonal_scale;
use crate::table::date_of_day;

/// Calendar features per period: day-of-week one-hot (daily data), and two harmonics of the
/// position in the year.
pub const CALENDAR_FEATURES: usize = 11;
/// Seasons averaged by the baseline.
pub const BASELINE_SEASONS: usize = 4;

/// Normalisation of one covariate, fitted on the training periods.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CovariateStats {
    pub name: String,
    pub mean: f32,
    pub std: f32,
    /// Only 0 and 1 were seen (promotion or holiday flags).
    pub binary: bool,
}

impl CovariateStats {
    /// Fits the mean and spread over all finite values.
    pub fn fit(name: &str, values: impl Iterator<Item = f32>) -> Self {
        let (mut n, mut sum, mut sq, mut binary) = (0usize, 0f64, 0f64, true);
        for v in values.filter(|v| v.is_finite()) {
            n += 1;
            sum += v as f64;
            sq += (v as f64) * (v as f64);
            binary &= v == 0.0 || v == 1.0;
        }
        let mean = if n > 0 { sum / n as f64 } else { 0.0 };
        let var = if n > 0 {
            (sq / n as f64 - mean * mean).max(0.0)
        } else {
            0.0
        };
        let std = var.sqrt().max(1e-3);
        CovariateStats {
            name: name.to_string(),
            mean: mean as f32,
            std: std as f32,
            binary,
        }
    }
}

/// Shapes and normalisation of the forecaster's inputs, stored in the bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WindowSpec {
    pub context: usize,
    pub horizon: usize,
    pub season: usize,
    pub period_days: i64,
    pub known: Vec<CovariateStats>,
    pub past: Vec<CovariateStats>,
}

impl WindowSpec {
    /// Encoder features per period.
    pub fn encoder_features(&self) -> usize {
        2 + 2 * self.known.len() + 2 * self.past.len() + CALENDAR_FEATURES
    }

    /// Decoder features per period: anchor, seasonal average, position, the window's
    /// [`SalesShape`], known covariates, calendar.
    pub fn decoder_features(&self) -> usize {
        3 + SalesShape::FEATURES + 2 * self.known.len() + CALENDAR_FEATURES
    }

    /// The earliest origin that leaves enough context in a series starting at `start`
    /// (shorter series are padded and flagged as missing).
    pub fn min_origin(&self, start: usize) -> usize {
        start + self.context.min(2 * self.season)
    }

    /// Periods of history before an origin that a window reads: the context, and the same
    /// period of the last [`BASELINE_SEASONS`] seasons for the seasonal average (which may
    /// reach further back than a context shorter than those seasons).
    pub fn history(&self) -> usize {
        self.context.max(BASELINE_SEASONS * self.season)
    }
}

/// One series as the window builder sees it; index 0 is the series' first period here.
pub struct SeriesView<'a> {
    /// Target per period (NaN = missing); needs at least `origin` values, `origin + horizon` for training.
    pub target: &'a [f32],
    /// Known covariates per period; need `origin + horizon` values.
    pub known: &'a [Vec<f32>],
    /// Past-only covariates; need `origin` values.
    pub past: &'a [Vec<f32>],
    /// Day number (days since 1970-01-01) of period 0.
    pub first_day: i64,
    /// Key indices of the series (one per key column).
    pub keys: &'a [u32],
    /// Static attribute indices (one per attribute column), embedded after the keys.
    pub statics: &'a [u32],
    /// The series' exponential smoothing, with its state at index 0 of `target` or earlier.
    pub ets: Option<&'a EtsModel>,
}

/// A batch of windows as flat row-major arrays, ready to become tensors.
#[derive(Debug, Clone, Default)]
pub struct WindowBatch {
    pub len: usize,
    /// `[len, context, encoder_features]`
    pub encoder: Vec<f32>,
    /// `[len, horizon, decoder_features]`
    pub decoder: Vec<f32>,
    /// `[len, n_keys + n_statics]`
    pub keys: Vec<i64>,
    /// `[len, horizon]` scaled anchor forecast the network corrects.
    pub baseline: Vec<f32>,
    /// `[len, horizon, quantiles]` the anchor's own quantile forecast in units (empty without
    /// exponential smoothing, and for training windows), blended with the network's by
    /// [`blend_quantiles`].
    pub anchor_quantiles: Vec<f32>,
    /// `[len, horizon]` scaled target (0 where unknown).
    pub target: Vec<f32>,
    /// `[len, horizon]` the weight of each target in the loss: 0 where it is unknown, else the
    /// window's [`mase_weight`].
    pub target_mask: Vec<f32>,
    /// `[len]`
    pub scale: Vec<f32>,
}

/// What scaling hides about a window's context: how large its sales are (the log of the scale)
/// and how intermittent (the share of periods that sold nothing). A series selling 0 or 1 most
/// days has another median than one selling hundreds, even where both scale to the same shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SalesShape {
    pub log_scale: f32,
    pub zero_share: f32,
}

impl SalesShape {
    pub const FEATURES: usize = 2;

    /// The shape of `context` (NaN = missing, left out) scaled by `scale`.
    pub fn of(context: &[f32], scale: f32) -> Self {
        let (zeros, known) = context
            .iter()
            .filter(|v| !v.is_nan())
            .fold((0usize, 0usize), |(z, n), v| {
                (z + (*v == 0.0) as usize, n + 1)
            });
        SalesShape {
            log_scale: scale.max(1.0).ln() / 5.0,
            zero_share: if known > 0 {
                zeros as f32 / known as f32
            } else {
                0.0
            },
        }
    }
}

fn calendar(day: i64, period_days: i64, out: &mut Vec<f32>) {
    let date = date_of_day(day);
    let dow = date.weekday().num_days_from_monday() as usize;
    for d in 0..7 {
        out.push(if period_days == 1 && d == dow {
            1.0
        } else {
            0.0
        });
    }
    let year_pos = (date.ordinal0() as f32 + 0.5) / 365.25 * std::f32::consts::TAU;
    out.extend([
        year_pos.sin(),
        year_pos.cos(),
        (2.0 * year_pos).sin(),
        (2.0 * year_pos).cos(),
    ]);
}

fn push_covariate(stats: &CovariateStats, x: f32, context_mean: f32, out: &mut Vec<f32>) {
    if stats.binary {
        out.push(x);
        out.push(0.0);
    } else {
        out.push((x - stats.mean) / stats.std);
        out.push((x - context_mean) / stats.std);
    }
}

impl WindowSpec {
    /// The scale of a window at `origin` (from its context) and its scaled seasonal average:
    /// the mean of the same period in the last [`BASELINE_SEASONS`] seasons of the series'
    /// history, also where they lie before the context (a weekly model with a context shorter
    /// than a year still sees last year's same week).
    pub fn seasonal_average(&self, target: &[f32], origin: usize) -> (f32, Vec<f32>) {
        let lo = origin.saturating_sub(self.context);
        let ctx = &target[lo..origin];
        let (sum, n) = ctx
            .iter()
            .filter(|v| !v.is_nan())
            .fold((0f32, 0usize), |(s, n), v| (s + v, n + 1));
        let mean = if n > 0 { sum / n as f32 } else { 0.0 };
        let (mut diff_sum, mut diff_n) = (0f32, 0usize);
        for t in self.season..ctx.len() {
            let (a, b) = (ctx[t], ctx[t - self.season]);
            if !a.is_nan() && !b.is_nan() {
                diff_sum += (a - b).abs();
                diff_n += 1;
            }
        }
        let diff = if diff_n > 0 {
            diff_sum / diff_n as f32
        } else {
            mean
        };
        let scale = diff.max(0.25 * mean).max(1.0);
        let base = (0..self.horizon)
            .map(|h| {
                let t = origin + h;
                let first_k = h / self.season + 1;
                let (mut s, mut c) = (0f32, 0usize);
                for k in first_k..first_k + BASELINE_SEASONS {
                    let Some(past) = t.checked_sub(k * self.season) else {
                        break;
                    };
                    if !target[past].is_nan() {
                        s += target[past];
                        c += 1;
                    }
                }
                (if c > 0 { s / c as f32 } else { mean }) / scale
            })
            .collect();
        (scale, base)
    }

    /// Appends the window of `series` at `origin` to `batch`. With `with_target`, the horizon's
    /// actual values are added as training targets.
    pub fn push(
        &self,
        batch: &mut WindowBatch,
        series: &SeriesView<'_>,
        origin: usize,
        with_target: bool,
    ) {
        let (scale, seasonal) = self.seasonal_average(series.target, origin);
        let base: Vec<f32> = match series.ets {
            Some(ets) => {
                let state = ets.state_at(series.target, origin);
                // The anchor's own quantiles are only blended into forecasts, never trained on.
                if !with_target {
                    for step in ets.quantiles_from(&state, self.horizon) {
                        batch.anchor_quantiles.extend_from_slice(&step);
                    }
                }
                state
                    .forecast(&ets.params, self.horizon)
                    .into_iter()
                    .map(|f| f / scale)
                    .collect()
            }
            None => seasonal.clone(),
        };
        let ctx_start = origin as i64 - self.context as i64;
        let mean_of = |v: &[f32]| -> f32 {
            let lo = origin.saturating_sub(self.context);
            let w = &v[lo..origin.min(v.len()).max(lo)];
            if w.is_empty() {
                0.0
            } else {
                w.iter().sum::<f32>() / w.len() as f32
            }
        };
        let known_means: Vec<f32> = series.known.iter().map(|v| mean_of(v)).collect();
        let shape = SalesShape::of(
            &series.target[origin.saturating_sub(self.context)..origin],
            scale,
        );
        let past_means: Vec<f32> = series.past.iter().map(|v| mean_of(v)).collect();
        for i in 0..self.context {
            let t = ctx_start + i as i64;
            let (y, missing) = if t < 0 || series.target[t as usize].is_nan() {
                (0.0, 1.0)
            } else {
                (series.target[t as usize] / scale, 0.0)
            };
            batch.encoder.push(y);
            batch.encoder.push(missing);
            let tc = t.max(0) as usize;
            for (k, stats) in self.known.iter().enumerate() {
                push_covariate(
                    stats,
                    series.known[k][tc],
                    known_means[k],
                    &mut batch.encoder,
                );
            }
            for (k, stats) in self.past.iter().enumerate() {
                push_covariate(stats, series.past[k][tc], past_means[k], &mut batch.encoder);
            }
            calendar(
                series.first_day + t * self.period_days,
                self.period_days,
                &mut batch.encoder,
            );
        }
        let weight = if with_target {
            mase_weight(scale, seasonal_scale(&series.target[..origin], self.season))
        } else {
            1.0
        };
        for h in 0..self.horizon {
            let t = origin + h;
            batch.decoder.push(base[h]);
            batch.decoder.push(seasonal[h]);
            batch.decoder.push(h as f32 / self.horizon as f32);
            batch.decoder.push(shape.log_scale);
            batch.decoder.push(shape.zero_share);
            for (k, stats) in self.known.iter().enumerate() {
                push_covariate(
                    stats,
                    series.known[k][t],
                    known_means[k],
                    &mut batch.decoder,
                );
            }
            calendar(
                series.first_day + t as i64 * self.period_days,
                self.period_days,
                &mut batch.decoder,
            );
            if with_target {
                let y = series.target.get(t).copied().unwrap_or(f32::NAN);
                batch.target.push(if y.is_nan() { 0.0 } else { y / scale });
                batch
                    .target_mask
                    .push(if y.is_nan() { 0.0 } else { weight });
            }
        }
        batch.baseline.extend_from_slice(&base);
        batch
            .keys
            .extend(series.keys.iter().chain(series.statics).map(|&k| k as i64));
        batch.scale.push(scale);
        batch.len += 1;
    }
}

/// The weight of a window in the loss, so that training minimises what MASE measures: targets
/// are divided by the window's own `scale` (from its context), MASE divides errors by the
/// series' seasonal scale over its whole history before the origin, so the window's loss counts
/// `scale / history_scale` times (bounded to [0.2, 5], so that one quiet or one frantic context
/// cannot take over a batch). Without a history scale (no seasonal pair, or 0) it counts once.
pub fn mase_weight(scale: f32, history_scale: Option<f64>) -> f32 {
    match history_scale {
        Some(h) if h > 0.0 => (scale as f64 / h).clamp(0.2, 5.0) as f32,
        _ => 1.0,
    }
}

/// Blends the network's quantiles with the anchor's, per quantile level:
/// `w * network + (1 - w) * anchor`, then sorts each step so that quantiles never cross
/// (sorting never increases the pinball loss). Both are flat `[windows * horizon * levels]`.
pub fn blend_quantiles(network: &mut [f32], anchor: &[f32], weights: &[f32]) {
    let q = weights.len().max(1);
    if anchor.len() != network.len() || weights.iter().all(|w| *w == 1.0) {
        return;
    }
    for (step, a) in network.chunks_mut(q).zip(anchor.chunks(q)) {
        for ((v, a), w) in step.iter_mut().zip(a).zip(weights) {
            *v = (w * *v + (1.0 - w) * a).max(0.0);
        }
        step.sort_by(f32::total_cmp);
    }
}

/// Windows forecast together in one network call.
const FORECAST_CHUNK: usize = 512;

/// Per window, its forecast `[horizon][quantile]` in units.
pub type WindowQuantiles = Vec<Vec<f32>>;

/// The one windowed-prediction path of training (validation, backtest) and scoring (forecast,
/// anomalies, monitor): the windows of `series` (a view and its origin each) are batched
/// 512 at a time, `predict` runs the network on a batch (forecasts in units,
/// `[len, horizon, quantiles]` row-major), and each of the `quantiles` levels is blended with
/// the anchor's by `weights` ([`blend_quantiles`]; no weights, or all 1, keep the network's).
/// Returns per window the blended forecast and the anchor's own (empty without exponential
/// smoothing).
pub fn forecast_windows<E>(
    spec: &WindowSpec,
    series: &[(SeriesView<'_>, usize)],
    (quantiles, weights): (usize, &[f32]),
    mut predict: impl FnMut(WindowBatch) -> Result<Vec<f32>, E>,
) -> Result<(Vec<WindowQuantiles>, Vec<WindowQuantiles>), E> {
    let q = quantiles.max(1);
    let per_window = spec.horizon * q;
    let split = |v: &[f32]| -> Vec<WindowQuantiles> {
        v.chunks(per_window)
            .map(|w| w.chunks(q).map(<[f32]>::to_vec).collect())
            .collect()
    };
    let (mut forecasts, mut anchors) = (Vec::new(), Vec::new());
    for chunk in series.chunks(FORECAST_CHUNK) {
        let mut batch = WindowBatch::default();
        for (view, origin) in chunk {
            spec.push(&mut batch, view, *origin, false);
        }
        let anchor = std::mem::take(&mut batch.anchor_quantiles);
        let mut flat = predict(batch)?;
        blend_quantiles(&mut flat, &anchor, weights);
        forecasts.extend(split(&flat));
        anchors.extend(split(&anchor));
    }
    Ok((forecasts, anchors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blend_mixes_per_level_and_never_crosses() {
        let mut net = vec![1.0, 2.0, 3.0, 0.0, 10.0, 11.0];
        let anchor = vec![3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        blend_quantiles(&mut net, &anchor, &[0.0, 1.0, 0.5]);
        assert_eq!(&net[..3], &[2.0, 3.0, 4.0]);
        // Second step: 6, 10, 9.5 sorted.
        assert_eq!(&net[3..], &[6.0, 9.5, 10.0]);
    }

    /// The shape of a window: zeros counted among the known periods only, the scale on a log
    /// scale; a training window's loss weight is its scale over the history's, bounded.
    #[test]
    fn sales_shape_and_mase_weight() {
        let shape = SalesShape::of(&[0.0, 3.0, f32::NAN, 0.0, 5.0], 20.0);
        assert!((shape.zero_share - 0.5).abs() < 1e-6, "{shape:?}");
        assert!((shape.log_scale - 20f32.ln() / 5.0).abs() < 1e-6);
        assert_eq!(SalesShape::of(&[f32::NAN; 3], 0.5).zero_share, 0.0);
        assert_eq!(SalesShape::of(&[1.0], 0.5).log_scale, 0.0);
        assert_eq!(mase_weight(4.0, Some(2.0)), 2.0);
        assert_eq!(mase_weight(100.0, Some(2.0)), 5.0);
        assert_eq!(mase_weight(1.0, Some(50.0)), 0.2);
        assert_eq!(mase_weight(3.0, Some(0.0)), 1.0);
        assert_eq!(mase_weight(3.0, None), 1.0);
    }

    /// Training windows carry their MASE weight in the target mask (0 where the target is
    /// unknown), and the decoder reads the window's shape after the position.
    #[test]
    fn training_windows_carry_their_weight_and_shape() {
        let spec = WindowSpec {
            context: 14,
            horizon: 3,
            season: 7,
            period_days: 1,
            known: Vec::new(),
            past: Vec::new(),
        };
        // A quiet first month, then a busy fortnight: the context's scale is far above the
        // history's.
        let mut target: Vec<f32> = (0..28).map(|t| (t % 7) as f32).collect();
        target.extend((0..14).map(|t| 10.0 * (t % 7) as f32 + if t % 2 == 0 { 0.0 } else { 30.0 }));
        target.extend([5.0, f32::NAN, 7.0]);
        let view = SeriesView {
            target: &target,
            known: &[],
            past: &[],
            first_day: 19_000,
            keys: &[0],
            statics: &[],
            ets: None,
        };
        let mut batch = WindowBatch::default();
        spec.push(&mut batch, &view, 42, true);
        let (scale, _) = spec.seasonal_average(&target, 42);
        let history = crate::profile::seasonal_scale(&target[..42], 7);
        let w = mase_weight(scale, history);
        assert!(w > 1.0, "{w}");
        assert_eq!(batch.target_mask, vec![w, 0.0, w]);
        let shape = SalesShape::of(&target[28..42], scale);
        let per_step = spec.decoder_features();
        assert_eq!(batch.decoder[3], shape.log_scale);
        assert_eq!(batch.decoder[4], shape.zero_share);
        assert_eq!(batch.decoder[per_step + 4], shape.zero_share);
    }
}

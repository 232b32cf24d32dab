//! Exponential smoothing with additive seasonality (ETS(A,N,A), or ETS(A,Ad,A) with a damped
//! trend), fitted per series by a small grid search on one-step absolute errors.
//!
//! It serves twice: as the strong classical baseline of the backtest (`baseline.ets.*`), and as
//! the anchor of the neural forecaster, which predicts a correction on top of it and is blended
//! back with it on validation data, so the network is never worse than this baseline by much.
//! Absolute rather than squared errors pick the smoothing constants, because a shop's daily
//! sales have rare huge orders that would otherwise drive the level around.

use serde::{Deserialize, Serialize};

/// Smoothing constants of one series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EtsParams {
    pub alpha: f32,
    pub beta: f32,
    /// Trend damping; 0 means no trend.
    pub phi: f32,
    pub gamma: f32,
    /// Season length in periods; 1 means no seasonality (too little history for one).
    pub season: usize,
}

/// The filter's state before a period: level, trend and the seasonal terms of the next
/// `season` periods (index 0 = the next period).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EtsState {
    pub level: f32,
    pub trend: f32,
    pub seasonal: Vec<f32>,
}

/// A fitted series: constants, the state at a known period, and the spread of its one-step
/// errors (quantile offsets around the median error, one per forecast quantile).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EtsModel {
    pub params: EtsParams,
    /// State before period `state_period` of the series it was fitted on.
    pub state: EtsState,
    pub state_period: usize,
    /// Per quantile level, the empirical quantile of the one-step errors minus their median.
    pub band: Vec<f32>,
}

const ALPHAS: [f32; 6] = [0.02, 0.05, 0.1, 0.2, 0.3, 0.5];
const GAMMAS: [f32; 4] = [0.0, 0.05, 0.1, 0.2];
/// (beta, phi): no trend, and a slowly learnt, damped one.
const TRENDS: [(f32, f32); 2] = [(0.0, 0.0), (0.02, 0.9)];

impl EtsState {
    /// Initial state (before period 0) from the first seasons of `y` that have data (NaN =
    /// missing; a series that starts late has NaN before its start).
    fn initial(y: &[f32], season: usize) -> EtsState {
        let first = y.iter().position(|v| !v.is_nan()).unwrap_or(0);
        let y = &y[first..];
        let seasons = (y.len() / season).clamp(1, 4);
        let head = &y[..(seasons * season).min(y.len())];
        let (sum, n) = head
            .iter()
            .filter(|v| !v.is_nan())
            .fold((0f64, 0usize), |(s, n), v| (s + *v as f64, n + 1));
        let level = if n > 0 { (sum / n as f64) as f32 } else { 0.0 };
        let mut seasonal = vec![0f32; season];
        if season > 1 {
            for j in 0..season {
                let vals: Vec<f32> = head
                    .iter()
                    .skip(j)
                    .step_by(season)
                    .copied()
                    .filter(|v| !v.is_nan())
                    .collect();
                if !vals.is_empty() {
                    // Period `first + j` of the series has this phase.
                    seasonal[(first + j) % season] =
                        vals.iter().sum::<f32>() / vals.len() as f32 - level;
                }
            }
        }
        EtsState {
            level,
            trend: 0.0,
            seasonal,
        }
    }

    /// Observes one period (NaN: no update, the state just moves on) and returns the one-step
    /// error, if any.
    fn observe(&mut self, y: f32, p: &EtsParams) -> Option<f32> {
        let s = self.seasonal[0];
        let damped = p.phi * self.trend;
        let err = (!y.is_nan()).then_some(y - (self.level + damped + s));
        let e = err.unwrap_or(0.0);
        self.level += damped + p.alpha * e;
        self.trend = damped + p.beta * e;
        self.seasonal.rotate_left(1);
        if let Some(last) = self.seasonal.last_mut() {
            *last = s + p.gamma * e;
        }
        err
    }

    /// Point forecasts of the next `horizon` periods, never negative.
    pub fn forecast(&self, p: &EtsParams, horizon: usize) -> Vec<f32> {
        let mut damp_sum = 0f32;
        let mut phi_k = 1f32;
        (0..horizon)
            .map(|h| {
                phi_k *= p.phi;
                damp_sum += phi_k;
                (self.level + damp_sum * self.trend + self.seasonal[h % self.seasonal.len()])
                    .max(0.0)
            })
            .collect()
    }
}

impl EtsModel {
    /// Fits the constants on `y[..end]` (NaN = missing). The model keeps the initial state
    /// (before period 0), so it can forecast from any origin with [`EtsModel::state_at`].
    /// Seasonality needs two full seasons; shorter series get level (and trend) only.
    pub fn fit(y: &[f32], end: usize, season: usize, levels: &[f64]) -> EtsModel {
        let y = &y[..end.min(y.len())];
        let observed = y.iter().filter(|v| !v.is_nan()).count();
        let season = if season > 1 && observed >= 2 * season {
            season
        } else {
            1
        };
        // Errors before the warm-up are dominated by the crude initial state.
        let first = y.iter().position(|v| !v.is_nan()).unwrap_or(0);
        let warmup = first + (season * 2).min((y.len() - first) / 2);
        let mut best: Option<(f64, EtsParams)> = None;
        for &alpha in &ALPHAS {
            for &gamma in GAMMAS.iter().filter(|g| season > 1 || **g == 0.0) {
                for &(beta, phi) in &TRENDS {
                    let p = EtsParams {
                        alpha,
                        beta,
                        phi,
                        gamma,
                        season,
                    };
                    let mut st = EtsState::initial(y, season);
                    let (mut sum, mut n) = (0f64, 0usize);
                    for (t, &v) in y.iter().enumerate() {
                        if let Some(e) = st.observe(v, &p) {
                            if t >= warmup {
                                sum += e.abs() as f64;
                                n += 1;
                            }
                        }
                    }
                    let mae = if n > 0 { sum / n as f64 } else { 0.0 };
                    // Strictly better only: ties keep the simpler, earlier setting.
                    if best.is_none_or(|(b, _)| mae < b - 1e-9) {
                        best = Some((mae, p));
                    }
                }
            }
        }
        let params = best.map(|(_, p)| p).unwrap_or(EtsParams {
            alpha: 0.1,
            beta: 0.0,
            phi: 0.0,
            gamma: 0.0,
            season,
        });
        let initial = EtsState::initial(y, season);
        let mut state = initial.clone();
        let mut errors = Vec::new();
        for (t, &v) in y.iter().enumerate() {
            if let Some(e) = state.observe(v, &params) {
                if t >= warmup {
                    errors.push(e);
                }
            }
        }
        EtsModel {
            params,
            state: initial,
            state_period: 0,
            band: error_band(&mut errors, levels),
        }
    }

    /// The state before period `to`, moving on from the stored state over `y` (which must hold
    /// the actual values from `state_period` to `to`; indices are the series' own). An origin
    /// before the stored state gets the stored state.
    pub fn state_at(&self, y: &[f32], to: usize) -> EtsState {
        let mut st = self.state.clone();
        for &v in y.iter().take(to).skip(self.state_period) {
            st.observe(v, &self.params);
        }
        st
    }

    /// The same model with its state moved on to period `from`, re-indexed so that `from`
    /// becomes period 0 (what a bundle stores with the tail of a series that starts at `from`).
    pub fn rebased(&self, y: &[f32], from: usize) -> EtsModel {
        EtsModel {
            state: self.state_at(y, from),
            state_period: 0,
            ..self.clone()
        }
    }

    /// Quantile forecasts `[horizon][levels]` from a state: the point forecast plus the one-step
    /// error quantiles, widened with the horizon as the level's uncertainty accumulates.
    pub fn quantiles_from(&self, state: &EtsState, horizon: usize) -> Vec<Vec<f32>> {
        let a = self.params.alpha;
        state
            .forecast(&self.params, horizon)
            .into_iter()
            .enumerate()
            .map(|(h, f)| {
                let widen = (1.0 + h as f32 * a * a).sqrt();
                let mut q: Vec<f32> = self.band.iter().map(|o| (f + o * widen).max(0.0)).collect();
                for j in 1..q.len() {
                    q[j] = q[j].max(q[j - 1]);
                }
                q
            })
            .collect()
    }
}

/// Empirical quantiles of the errors at `levels`, minus their median (all 0 without errors).
pub fn error_band(errors: &mut [f32], levels: &[f64]) -> Vec<f32> {
    if errors.is_empty() {
        return vec![0.0; levels.len()];
    }
    errors.sort_by(f32::total_cmp);
    let at = |q: f64| -> f32 {
        let pos = (errors.len() - 1) as f64 * q;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        let frac = (pos - lo as f64) as f32;
        errors[lo] * (1.0 - frac) + errors[hi] * frac
    };
    let median = at(0.5);
    levels.iter().map(|&q| at(q) - median).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_seasonal_pattern() {
        let pattern = [10.0, 12.0, 14.0, 9.0, 8.0, 30.0, 25.0];
        let y: Vec<f32> = (0..140).map(|t| pattern[t % 7]).collect();
        let m = EtsModel::fit(&y, 140, 7, &[0.1, 0.5, 0.9]);
        let f = m.state_at(&y, 140).forecast(&m.params, 14);
        for (h, v) in f.iter().enumerate() {
            assert!((v - pattern[(140 + h) % 7]).abs() < 0.5, "h {h}: {v}");
        }
    }

    #[test]
    fn follows_a_level_shift_and_skips_missing_values() {
        let mut y: Vec<f32> = (0..100).map(|t| if t < 60 { 5.0 } else { 20.0 }).collect();
        y[80] = f32::NAN;
        let m = EtsModel::fit(&y, 100, 7, &[0.5]);
        let f = m.state_at(&y, 100).forecast(&m.params, 3);
        assert!(f.iter().all(|v| (v - 20.0).abs() < 2.0), "{f:?}");
    }

    #[test]
    fn a_late_start_keeps_the_seasonal_phase() {
        let pattern = [10.0, 12.0, 14.0, 9.0, 8.0, 30.0, 25.0];
        let y: Vec<f32> = (0..100)
            .map(|t| if t < 17 { f32::NAN } else { pattern[t % 7] })
            .collect();
        let m = EtsModel::fit(&y, 100, 7, &[0.5]);
        let f = m.state_at(&y, 100).forecast(&m.params, 7);
        for (h, v) in f.iter().enumerate() {
            assert!((v - pattern[(100 + h) % 7]).abs() < 0.5, "h {h}: {v}");
        }
    }

    #[test]
    fn short_series_fall_back_to_the_level_and_never_go_negative() {
        let y = [3.0, 0.0, 4.0, 0.0, 0.0];
        let m = EtsModel::fit(&y, 5, 7, &[0.1, 0.5, 0.9]);
        assert_eq!(m.params.season, 1);
        let q = m.quantiles_from(&m.state_at(&y, 5), 10);
        for step in &q {
            assert!(step.iter().all(|v| *v >= 0.0 && v.is_finite()));
            assert!(step.windows(2).all(|w| w[0] <= w[1]));
        }
    }

    #[test]
    fn rebased_model_forecasts_the_same_from_the_tail() {
        let y: Vec<f32> = (0..60).map(|t| (t % 7) as f32 + (t / 10) as f32).collect();
        let m = EtsModel::fit(&y, 40, 7, &[0.5]);
        let tail = m.rebased(&y, 30);
        assert_eq!(m.state_at(&y, 55), tail.state_at(&y[30..], 25));
    }
}

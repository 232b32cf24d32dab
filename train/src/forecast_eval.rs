//! Forecast metrics on a rolling-origin backtest, and the classical baselines.
//!
//! MASE: a series-fold's mean absolute error over the mean |y_t - y_{t-m}| of its history before
//! the origin (m = season length), averaged over series-folds whose scale is not 0.
//! sMAPE: mean of 2|y - f| / (|y| + |f|) over points (0 where both are 0).
//! WQL: mean over quantiles of 2 * sum of pinball losses / sum |y|.
//! Coverage: share of actuals inside the outermost quantile band. Bias: sum(f - y) / sum(y).

use std::collections::BTreeMap;

/// A forecast of one series at one origin: per step, the quantiles in ascending order.
#[derive(Debug, Clone)]
pub struct FoldForecast {
    pub series: usize,
    pub origin: usize,
    /// `[horizon][quantiles]`
    pub quantiles: Vec<Vec<f32>>,
}

/// Accumulates errors of one method over series and folds.
#[derive(Debug, Clone)]
pub struct ForecastScore {
    levels: Vec<f64>,
    median: usize,
    mase_sum: f64,
    mase_n: usize,
    smape_sum: f64,
    points: usize,
    pinball: Vec<f64>,
    abs_actual: f64,
    inside: usize,
    sum_forecast: f64,
    sum_actual: f64,
    folds: usize,
}

impl ForecastScore {
    pub fn new(levels: &[f64]) -> Self {
        let median = levels
            .iter()
            .position(|q| (q - 0.5).abs() < 1e-9)
            .unwrap_or(levels.len() / 2);
        ForecastScore {
            levels: levels.to_vec(),
            median,
            mase_sum: 0.0,
            mase_n: 0,
            smape_sum: 0.0,
            points: 0,
            pinball: vec![0.0; levels.len()],
            abs_actual: 0.0,
            inside: 0,
            sum_forecast: 0.0,
            sum_actual: 0.0,
            folds: 0,
        }
    }

    /// Adds one series-fold. `history` is the series up to the origin (NaN = missing), `actual`
    /// the horizon's values.
    pub fn add(&mut self, history: &[f32], actual: &[f32], forecast: &[Vec<f32>], season: usize) {
        let scale = seasonal_scale(history, season);
        self.folds += 1;
        let (mut abs_err, mut n) = (0.0, 0usize);
        for (h, &y) in actual.iter().enumerate() {
            if y.is_nan() {
                continue;
            }
            let (y, q) = (y as f64, &forecast[h]);
            let f = q[self.median] as f64;
            abs_err += (y - f).abs();
            n += 1;
            self.smape_sum += if y.abs() + f.abs() > 0.0 {
                2.0 * (y - f).abs() / (y.abs() + f.abs())
            } else {
                0.0
            };
            self.points += 1;
            for (j, level) in self.levels.iter().enumerate() {
                let e = y - q[j] as f64;
                self.pinball[j] += (level * e).max((level - 1.0) * e);
            }
            self.abs_actual += y.abs();
            let (lo, hi) = (q[0] as f64, q[q.len() - 1] as f64);
            self.inside += (y >= lo && y <= hi) as usize;
            self.sum_forecast += f;
            self.sum_actual += y;
        }
        if let Some(scale) = scale.filter(|s| *s > 0.0) {
            if n > 0 {
                self.mase_sum += abs_err / n as f64 / scale;
                self.mase_n += 1;
            }
        }
    }

    /// Series-folds added.
    pub fn series_folds(&self) -> usize {
        self.folds
    }

    /// Whether at least one series-fold had a non-zero MASE scale.
    pub fn has_mase(&self) -> bool {
        self.mase_n > 0
    }

    /// The metrics, keyed without prefix (`mase`, `smape`, `wql`, `coverage_p10_p90`, `bias`).
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        m.insert("mase".into(), self.mase_sum / self.mase_n.max(1) as f64);
        m.insert("smape".into(), self.smape_sum / self.points.max(1) as f64);
        let wql = self
            .pinball
            .iter()
            .map(|p| 2.0 * p / self.abs_actual.max(1e-9))
            .sum::<f64>()
            / self.levels.len() as f64;
        m.insert("wql".into(), wql);
        m.insert(
            "coverage_p10_p90".into(),
            self.inside as f64 / self.points.max(1) as f64,
        );
        m.insert(
            "bias".into(),
            (self.sum_forecast - self.sum_actual) / self.sum_actual.abs().max(1e-9),
        );
        m
    }
}

pub use shopcast_datasets::profile::seasonal_scale;

/// A point forecast turned into quantiles with the empirical quantiles of its own in-sample
/// errors, so baselines get a fair probabilistic score.
fn with_residual_bands(point: Vec<f32>, residuals: &mut [f32], levels: &[f64]) -> Vec<Vec<f32>> {
    residuals.sort_by(f32::total_cmp);
    let offsets: Vec<f32> = levels
        .iter()
        .map(|q| {
            if residuals.is_empty() {
                0.0
            } else {
                let pos = ((residuals.len() - 1) as f64 * q).round() as usize;
                residuals[pos]
            }
        })
        .collect();
    let median_level = levels
        .iter()
        .position(|q| (q - 0.5).abs() < 1e-9)
        .unwrap_or(levels.len() / 2);
    point
        .iter()
        .map(|&f| {
            // Centre the band on the point forecast itself.
            let centre = offsets[median_level];
            offsets
                .iter()
                .map(|o| (f + o - centre).max(0.0))
                .collect::<Vec<f32>>()
        })
        .map(|mut q| {
            for j in 1..q.len() {
                q[j] = q[j].max(q[j - 1]);
            }
            q
        })
        .collect()
}

fn last_valid(history: &[f32], t: usize, season: usize) -> f32 {
    // Walk back whole seasons over missing values.
    let mut k = t;
    loop {
        if !history[k].is_nan() {
            return history[k];
        }
        if k < season {
            return 0.0;
        }
        k -= season;
    }
}

/// Seasonal naive: the value one season before (repeated over the horizon).
pub fn seasonal_naive(
    history: &[f32],
    horizon: usize,
    season: usize,
    levels: &[f64],
) -> Vec<Vec<f32>> {
    let n = history.len();
    let point: Vec<f32> = (0..horizon)
        .map(|h| {
            let back = season * (h / season + 1);
            if n + h >= back {
                last_valid(history, n + h - back, season)
            } else {
                0.0
            }
        })
        .collect();
    let mut residuals: Vec<f32> = (season..n)
        .filter(|&t| !history[t].is_nan() && !history[t - season].is_nan())
        .map(|t| history[t] - history[t - season])
        .collect();
    with_residual_bands(point, &mut residuals, levels)
}

/// Moving average of the last `window` values.
pub fn moving_average(
    history: &[f32],
    horizon: usize,
    window: usize,
    levels: &[f64],
) -> Vec<Vec<f32>> {
    let mean_at = |end: usize| -> f32 {
        let lo = end.saturating_sub(window);
        let vals: Vec<f32> = history[lo..end]
            .iter()
            .copied()
            .filter(|v| !v.is_nan())
            .collect();
        if vals.is_empty() {
            0.0
        } else {
            vals.iter().sum::<f32>() / vals.len() as f32
        }
    };
    let f = mean_at(history.len());
    let mut residuals: Vec<f32> = (window..history.len())
        .filter(|&t| !history[t].is_nan())
        .map(|t| history[t] - mean_at(t))
        .collect();
    with_residual_bands(vec![f; horizon], &mut residuals, levels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_forecast_scores_zero() {
        let levels = [0.1, 0.5, 0.9];
        let history: Vec<f32> = (0..28).map(|t| (t % 7) as f32).collect();
        let actual: Vec<f32> = (28..35).map(|t| (t % 7) as f32).collect();
        let f = seasonal_naive(&history, 7, 7, &levels);
        let mut s = ForecastScore::new(&levels);
        s.add(&history, &actual, &f, 7);
        let m = s.metrics();
        // The history is exactly periodic, so its seasonal scale is 0 and MASE skips it.
        assert_eq!(m["smape"], 0.0);
        assert_eq!(m["coverage_p10_p90"], 1.0);
        assert_eq!(m["bias"], 0.0);
    }

    #[test]
    fn mase_by_hand() {
        let levels = [0.5];
        let history = [1.0, 2.0, 4.0]; // season 1: diffs 1, 2 -> scale 1.5
        let actual = [4.0, 7.0];
        let forecast = vec![vec![4.0], vec![4.0]]; // errors 0, 3 -> MAE 1.5
        let mut s = ForecastScore::new(&levels);
        s.add(&history, &actual, &forecast, 1);
        assert!((s.metrics()["mase"] - 1.0).abs() < 1e-12);
        // WQL with only the median: 2 * sum(0.5 * |e|) / sum|y| = 3 / 11.
        assert!((s.metrics()["wql"] - 3.0 / 11.0).abs() < 1e-9);
    }
}

//! A profile of the data a bundle was trained on (`data_profile.json`), so that `infer monitor`
//! can tell how the business's latest data differs: volume, new customers and products, and the
//! distribution of the sales target (population stability index over the training deciles).

use serde::{Deserialize, Serialize};

use crate::interactions::RecommenderData;
use crate::sales::SalesPanel;
use crate::table::day_of;

/// What the models were trained on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DataProfile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommender: Option<InteractionProfile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecaster: Option<SalesProfile>,
}

/// The interactions: how many, over which days.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InteractionProfile {
    pub rows: usize,
    pub first_day: i64,
    pub last_day: i64,
    pub rows_per_day: f64,
    pub customers: usize,
    pub products: usize,
}

impl InteractionProfile {
    pub fn of(data: &RecommenderData) -> Self {
        let (first_day, last_day) = (day_of(data.first_ts), day_of(data.last_ts));
        InteractionProfile {
            rows: data.report.rows_used,
            first_day,
            last_day,
            rows_per_day: data.report.rows_used as f64 / (last_day - first_day + 1).max(1) as f64,
            customers: data.customers.len(),
            products: data.products.len(),
        }
    }
}

/// The sales: how many rows over which days, and the distribution of the target and of every
/// covariate (decile edges and the share of values in each bin between them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SalesProfile {
    pub rows: usize,
    pub series: usize,
    pub first_day: i64,
    /// The last day of the last period.
    pub last_day: i64,
    pub rows_per_day: f64,
    pub target: Distribution,
    /// Known, then past covariates, by name.
    #[serde(default)]
    pub covariates: Vec<(String, Distribution)>,
}

/// A column's deciles and the share of values between them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Distribution {
    pub edges: Vec<f64>,
    pub shares: Vec<f64>,
}

impl Distribution {
    /// The deciles of `values` (repeated edges merged) and the shares between them.
    pub fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = (1..10)
            .filter_map(|k| sorted.get(sorted.len() * k / 10).copied())
            .collect();
        edges.dedup();
        Distribution {
            shares: shares(&edges, values),
            edges,
        }
    }

    /// Population stability index of `values` against this distribution: the sum over bins of
    /// (actual - expected) * ln(actual / expected), shares floored at 1e-4. Below 0.1 is usually
    /// read as stable, above 0.25 as a large shift.
    pub fn psi(&self, values: &[f64]) -> f64 {
        let actual = shares(&self.edges, values);
        actual
            .iter()
            .zip(&self.shares)
            .map(|(&a, &e)| {
                let (a, e) = (a.max(1e-4), e.max(1e-4));
                (a - e) * (a / e).ln()
            })
            .sum()
    }
}

/// Bin of `x` among sorted `edges`: how many edges lie below it.
fn bin_of(edges: &[f64], x: f64) -> usize {
    edges.partition_point(|e| *e < x)
}

/// Share of `values` in each of the `edges.len() + 1` bins.
fn shares(edges: &[f64], values: &[f64]) -> Vec<f64> {
    let mut counts = vec![0usize; edges.len() + 1];
    for &x in values {
        counts[bin_of(edges, x)] += 1;
    }
    let n = values.len().max(1) as f64;
    counts.into_iter().map(|c| c as f64 / n).collect()
}

/// The first period starting on or after `from_day` (0 with `None`).
fn first_period(panel: &SalesPanel, from_day: Option<i64>) -> usize {
    from_day.map_or(0, |d| {
        (0..panel.periods)
            .find(|&t| panel.day_of_period(t) >= d)
            .unwrap_or(panel.periods)
    })
}

/// Observed target values of the periods from `from_day` on (every period with `None`).
pub fn target_values(panel: &SalesPanel, from_day: Option<i64>) -> Vec<f64> {
    let first = first_period(panel, from_day);
    panel
        .target
        .iter()
        .flat_map(|y| y[first..].iter())
        .filter(|v| !v.is_nan())
        .map(|&v| v as f64)
        .collect()
}

/// Values of covariate `k` (known ones first, then past ones) in the periods from `from_day` on
/// where the series has a target.
pub fn covariate_values(panel: &SalesPanel, k: usize, from_day: Option<i64>) -> Vec<f64> {
    let first = first_period(panel, from_day);
    let n_known = panel.known_names.len();
    (0..panel.len())
        .flat_map(|s| {
            let column = if k < n_known {
                &panel.known[s][k]
            } else {
                &panel.past[s][k - n_known]
            };
            let y = &panel.target[s];
            (first..panel.periods)
                .filter(move |&t| !y[t].is_nan())
                .map(move |t| column[t] as f64)
        })
        .collect()
}

impl SalesProfile {
    pub fn of(panel: &SalesPanel) -> Self {
        let first_day = panel.first_day;
        let last_day = panel.day_of_period(panel.periods) - 1;
        let names = panel.known_names.iter().chain(&panel.past_names);
        SalesProfile {
            rows: panel.report.rows_used,
            series: panel.len(),
            first_day,
            last_day,
            rows_per_day: panel.report.rows_used as f64 / (last_day - first_day + 1).max(1) as f64,
            target: Distribution::of(&target_values(panel, None)),
            covariates: names
                .enumerate()
                .map(|(k, name)| {
                    (
                        name.clone(),
                        Distribution::of(&covariate_values(panel, k, None)),
                    )
                })
                .collect(),
        }
    }
}

/// Mean absolute seasonal difference of a history (the MASE scale); `None` without any pair.
pub fn seasonal_scale(history: &[f32], season: usize) -> Option<f64> {
    let (mut s, mut n) = (0.0, 0usize);
    for t in season..history.len() {
        let (a, b) = (history[t], history[t - season]);
        if !a.is_nan() && !b.is_nan() {
            s += (a - b).abs() as f64;
            n += 1;
        }
    }
    (n > 0).then(|| s / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_is_zero_for_the_same_distribution_and_large_for_a_shift() {
        let values: Vec<f64> = (0..1000).map(|i| (i % 50) as f64).collect();
        let d = Distribution::of(&values);
        assert!(d.psi(&values).abs() < 1e-12);
        let tripled: Vec<f64> = values.iter().map(|v| v * 3.0).collect();
        assert!(d.psi(&tripled) > 0.25, "{}", d.psi(&tripled));
        // Repeated values (many zeros) merge edges rather than leave empty bins.
        let zeros: Vec<f64> = (0..100)
            .map(|i| if i < 70 { 0.0 } else { i as f64 })
            .collect();
        let z = Distribution::of(&zeros);
        assert!(z.edges.windows(2).all(|w| w[0] < w[1]));
        assert!(z.psi(&zeros).abs() < 1e-12);
    }
}

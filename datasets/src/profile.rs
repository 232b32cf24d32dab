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

/// The sales: how many rows over which days, and the target's distribution (decile edges and
/// the share of values in each bin between them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SalesProfile {
    pub rows: usize,
    pub series: usize,
    pub first_day: i64,
    /// The last day of the last period.
    pub last_day: i64,
    pub rows_per_day: f64,
    pub target_edges: Vec<f64>,
    pub target_shares: Vec<f64>,
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

/// Observed target values of the periods from `from_day` on (every period with `None`).
pub fn target_values(panel: &SalesPanel, from_day: Option<i64>) -> Vec<f64> {
    let first = from_day.map_or(0, |d| {
        (0..panel.periods)
            .find(|&t| panel.day_of_period(t) >= d)
            .unwrap_or(panel.periods)
    });
    panel
        .target
        .iter()
        .flat_map(|y| y[first..].iter())
        .filter(|v| !v.is_nan())
        .map(|&v| v as f64)
        .collect()
}

impl SalesProfile {
    pub fn of(panel: &SalesPanel) -> Self {
        let mut values = target_values(panel, None);
        values.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = (1..10)
            .filter_map(|k| values.get(values.len() * k / 10).copied())
            .collect();
        edges.dedup();
        let first_day = panel.first_day;
        let last_day = panel.day_of_period(panel.periods) - 1;
        SalesProfile {
            rows: panel.report.rows_used,
            series: panel.len(),
            first_day,
            last_day,
            rows_per_day: panel.report.rows_used as f64 / (last_day - first_day + 1).max(1) as f64,
            target_shares: shares(&edges, &values),
            target_edges: edges,
        }
    }

    /// Population stability index of `values` against the training distribution: the sum over
    /// bins of (actual - expected) * ln(actual / expected), shares floored at 1e-4. Below 0.1 is
    /// usually read as stable, above 0.25 as a large shift.
    pub fn psi(&self, values: &[f64]) -> f64 {
        let actual = shares(&self.target_edges, values);
        actual
            .iter()
            .zip(&self.target_shares)
            .map(|(&a, &e)| {
                let (a, e) = (a.max(1e-4), e.max(1e-4));
                (a - e) * (a / e).ln()
            })
            .sum()
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
        let mut edges: Vec<f64> = {
            let mut v = values.clone();
            v.sort_by(f64::total_cmp);
            (1..10).map(|k| v[v.len() * k / 10]).collect()
        };
        edges.dedup();
        let p = SalesProfile {
            rows: 1000,
            series: 1,
            first_day: 0,
            last_day: 999,
            rows_per_day: 1.0,
            target_shares: shares(&edges, &values),
            target_edges: edges,
        };
        assert!(p.psi(&values).abs() < 1e-12);
        let tripled: Vec<f64> = values.iter().map(|v| v * 3.0).collect();
        assert!(p.psi(&tripled) > 0.25, "{}", p.psi(&tripled));
    }
}

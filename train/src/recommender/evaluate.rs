//! The held-out evaluation: the final model and the baselines (popularity, item-kNN) on the
//! test items, where the top-10 slots go by product popularity, and the metrics per customer
//! group.

use std::collections::BTreeMap;

use serde::Serialize;
use shopcast_datasets::artifacts::metric_keys;
use shopcast_datasets::config::RecommenderSection;
use shopcast_datasets::interactions::FeatureSet;

use crate::ranking::{metrics_of, outcomes, Case, ItemKnn, Outcome, Popularity};

/// The test results of a recommender run.
pub struct TestResults {
    /// `recommender.*`, `baseline.popularity.*` and `baseline.itemknn.*` entries of
    /// `metrics.json`.
    pub metrics: BTreeMap<String, f64>,
    /// Per method, the share of the top-10 slots going to each popularity decile.
    pub popularity_slots: Vec<(String, Vec<f64>)>,
    pub group_metrics: Vec<GroupMetrics>,
}

/// Evaluates the model's test outcomes and the baselines fitted on the same training pairs.
pub fn evaluate_on_test(
    sec: &RecommenderSection,
    customer_features: &FeatureSet,
    model: &[Outcome],
    test_cases: &[Case],
    final_train: &[(u32, u32, f32)],
    (n_c, n_p): (usize, usize),
) -> TestResults {
    let popularity = outcomes(&Popularity::fit(final_train, n_p), test_cases, n_p);
    let knn = outcomes(&ItemKnn::fit(final_train, n_c, n_p), test_cases, n_p);
    let mut metrics = BTreeMap::new();
    for (prefix, of) in [
        (metric_keys::RECOMMENDER, model),
        (metric_keys::POPULARITY, &popularity),
        (metric_keys::ITEMKNN, &knn),
    ] {
        insert_prefixed(&mut metrics, prefix, metrics_of(of, n_p));
    }
    // Popularity bias: where the top-10 slots go, by the products' popularity decile.
    let popularity_slots = vec![
        (
            "model".to_string(),
            slots_by_popularity_decile(model, final_train, n_p),
        ),
        (
            "item-kNN".to_string(),
            slots_by_popularity_decile(&knn, final_train, n_p),
        ),
        (
            "popularity".to_string(),
            slots_by_popularity_decile(&popularity, final_train, n_p),
        ),
    ];
    // Per group of each customer attribute (region, age band...): is a group badly served?
    let mut group_columns: Vec<String> = Vec::new();
    if let Some(t) = &sec.data.customers {
        group_columns.extend(t.categorical.iter().cloned());
        group_columns.extend(t.numeric_bands.iter().map(|b| b.column.clone()));
    }
    let group_metrics = metrics_by_group(
        &group_columns,
        customer_features,
        test_cases,
        (model, &popularity),
        n_p,
    );
    TestResults {
        metrics,
        popularity_slots,
        group_metrics,
    }
}

fn insert_prefixed(out: &mut BTreeMap<String, f64>, prefix: &str, m: BTreeMap<String, f64>) {
    for (k, v) in m {
        out.insert(format!("{prefix}{k}"), v);
    }
}

/// Share of the test customers' top-10 slots (their known products left out) that goes to each
/// popularity decile of the catalogue, by the training pairs (decile 0: the most bought 10%).
fn slots_by_popularity_decile(
    outcomes: &[Outcome],
    train: &[(u32, u32, f32)],
    n_p: usize,
) -> Vec<f64> {
    let mut counts = vec![0usize; n_p];
    for &(_, p, _) in train {
        counts[p as usize] += 1;
    }
    let mut by_popularity: Vec<usize> = (0..n_p).collect();
    by_popularity.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
    let mut decile = vec![0usize; n_p];
    for (rank, &p) in by_popularity.iter().enumerate() {
        decile[p] = (rank * 10 / n_p.max(1)).min(9);
    }
    let mut slots = [0f64; 10];
    for outcome in outcomes {
        for &p in &outcome.top {
            slots[decile[p as usize]] += 1.0;
        }
    }
    let total: f64 = slots.iter().sum::<f64>().max(1.0);
    slots.iter().map(|s| s / total).collect()
}

/// Test metrics of the customers with one value of one attribute, beside the popularity
/// baseline's on the same customers.
#[derive(Debug, Clone, Serialize)]
pub struct GroupMetrics {
    pub attribute: String,
    pub value: String,
    pub customers: usize,
    pub model: BTreeMap<String, f64>,
    pub popularity: BTreeMap<String, f64>,
}

/// Splits the test cases by each customer's value of each attribute (`(none)` without one) and
/// evaluates the model and the popularity baseline on every group.
fn metrics_by_group(
    columns: &[String],
    features: &FeatureSet,
    cases: &[Case],
    (model, popularity): (&[Outcome], &[Outcome]),
    n_p: usize,
) -> Vec<GroupMetrics> {
    let mut out = Vec::new();
    for column in columns {
        let prefix = format!("{column}=");
        let value_of = |c: u32| -> String {
            features
                .entity_tokens
                .get(c as usize)
                .and_then(|toks| {
                    toks.iter().find_map(|&t| {
                        features
                            .tokens
                            .get(t as usize)
                            .and_then(|tok| tok.strip_prefix(&prefix))
                    })
                })
                .unwrap_or("(none)")
                .to_string()
        };
        // Each group's cases by position, in the cases' order.
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, case) in cases.iter().enumerate() {
            groups.entry(value_of(case.customer)).or_default().push(i);
        }
        for (value, group) in groups {
            out.push(GroupMetrics {
                attribute: column.clone(),
                value,
                customers: group.len(),
                model: metrics_of(group.iter().map(|&i| &model[i]), n_p),
                popularity: metrics_of(group.iter().map(|&i| &popularity[i]), n_p),
            });
        }
    }
    out
}

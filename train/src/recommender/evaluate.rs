//! The held-out evaluation: the final model and the baselines (popularity, item-kNN) on the
//! test items, where the top-10 slots go by product popularity, and the metrics per customer
//! group.

use std::collections::BTreeMap;

use serde::Serialize;
use shopcast_datasets::artifacts::metric_keys;
use shopcast_datasets::config::RecommenderSection;
use shopcast_datasets::interactions::FeatureSet;

use shopcast_model::recommender::TopK;

use crate::ranking::{evaluate, Case, DenseScores, ItemKnn, Popularity, Scorer};

/// The test results of a recommender run.
pub struct TestResults {
    /// `recommender.*`, `baseline.popularity.*` and `baseline.itemknn.*` entries of
    /// `metrics.json`.
    pub metrics: BTreeMap<String, f64>,
    /// Per method, the share of the top-10 slots going to each popularity decile.
    pub popularity_slots: Vec<(String, Vec<f64>)>,
    pub group_metrics: Vec<GroupMetrics>,
}

/// Evaluates the model's test scores and the baselines fitted on the same training pairs.
pub fn evaluate_on_test(
    sec: &RecommenderSection,
    customer_features: &FeatureSet,
    model_scores: &DenseScores,
    test_cases: &[Case],
    final_train: &[(u32, u32, f32)],
    (n_c, n_p): (usize, usize),
) -> TestResults {
    let mut metrics = BTreeMap::new();
    insert_prefixed(
        &mut metrics,
        metric_keys::RECOMMENDER,
        evaluate(model_scores, test_cases, n_p),
    );
    let popularity = Popularity::fit(final_train, n_p);
    insert_prefixed(
        &mut metrics,
        metric_keys::POPULARITY,
        evaluate(&popularity, test_cases, n_p),
    );
    let knn = ItemKnn::fit(final_train, n_c, n_p);
    insert_prefixed(
        &mut metrics,
        metric_keys::ITEMKNN,
        evaluate(&knn, test_cases, n_p),
    );
    // Popularity bias: where the top-10 slots go, by the products' popularity decile.
    let popularity_slots = vec![
        (
            "model".to_string(),
            slots_by_popularity_decile(model_scores, test_cases, final_train, n_p),
        ),
        (
            "item-kNN".to_string(),
            slots_by_popularity_decile(&knn, test_cases, final_train, n_p),
        ),
        (
            "popularity".to_string(),
            slots_by_popularity_decile(&popularity, test_cases, final_train, n_p),
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
        (model_scores, &popularity),
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
    scorer: &dyn Scorer,
    cases: &[Case],
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
    let mut scores = Vec::with_capacity(n_p);
    for case in cases {
        scores.clear();
        scorer.scores(case.customer, &mut scores);
        for &p in &case.known {
            scores[p as usize] = f32::NEG_INFINITY;
        }
        for p in TopK::of_row(&scores, 10) {
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
    (model, popularity): (&dyn Scorer, &dyn Scorer),
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
        let mut groups: BTreeMap<String, Vec<Case>> = BTreeMap::new();
        for case in cases {
            groups
                .entry(value_of(case.customer))
                .or_default()
                .push(case.clone());
        }
        for (value, group) in groups {
            out.push(GroupMetrics {
                attribute: column.clone(),
                value,
                customers: group.len(),
                model: evaluate(model, &group, n_p),
                popularity: evaluate(popularity, &group, n_p),
            });
        }
    }
    out
}

//! The recency term: a customer's latest purchases pull their vector at scoring time, with a
//! weight chosen on the validation items.

use std::collections::HashSet;

use anyhow::Result;
use shopcast_datasets::interactions::RecommenderData;

/// Weights tried for the recency term, picked by validation NDCG@10.
const RECENCY_WEIGHTS: [f32; 8] = [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0];

/// Per customer, the target products of their latest baskets among the `allowed` pairs: every
/// product bought at or after the time of their `k`-th latest one (oldest first). Products that
/// share a timestamp (one invoice, one sitting) are taken or left together: cutting a basket at
/// `k` would keep the ones the split's tie-break put last, and those give the held-out item away.
pub fn recent_items(
    data: &RecommenderData,
    allowed: &HashSet<(u32, u32)>,
    k: usize,
) -> Vec<Vec<u32>> {
    let mut recent: Vec<Vec<(i64, u32)>> = vec![Vec::new(); data.customers.len()];
    // `pairs` is sorted by (customer, time, product).
    for p in &data.pairs {
        if p.is_target && allowed.contains(&(p.customer, p.product)) {
            recent[p.customer as usize].push((p.ts, p.product));
        }
    }
    recent
        .into_iter()
        .map(|items| {
            let Some(&(since, _)) = items.get(items.len().saturating_sub(k.max(1))) else {
                return Vec::new();
            };
            items
                .iter()
                .filter(|(ts, _)| *ts >= since)
                .map(|&(_, p)| p)
                .collect()
        })
        .collect()
}

/// The weight of the recency term: every candidate weight is scored by `validation_ndcg`, and
/// the smallest within 1% of the best wins. A larger pull towards the latest basket that
/// validation cannot tell apart is not worth its cost elsewhere (it lowered the sampled-protocol
/// numbers on Online Retail).
/// Returns the weight and its validation NDCG@10.
pub fn choose_weight(mut validation_ndcg: impl FnMut(f32) -> Result<f64>) -> Result<(f32, f64)> {
    let mut tried = Vec::with_capacity(RECENCY_WEIGHTS.len());
    for w in RECENCY_WEIGHTS {
        let ndcg = validation_ndcg(w)?;
        eprintln!("recommender: recency weight {w}: validation NDCG@10 {ndcg:.4}");
        tried.push((w, ndcg));
    }
    let best = tried.iter().map(|t| t.1).fold(f64::NEG_INFINITY, f64::max);
    let (weight, ndcg) = tried
        .iter()
        .find(|t| t.1 >= best * 0.99)
        .copied()
        .unwrap_or((0.0, best));
    eprintln!("recommender: recency weight {weight} chosen");
    Ok((weight, ndcg))
}

/// Weights tried for the latest basket's completion query in the sequential model's reading.
const COMPLETION_WEIGHTS: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

/// The weight of the latest basket's completion query (sequential model with basket
/// completion): the best validation NDCG@10, ties to the smaller weight. `validation_ndcg`
/// scores every candidate weight at once (one list, in the order given). Returns the weight and
/// its validation NDCG@10, and writes every weight's score to the log.
pub fn choose_completion_weight(
    validation_ndcg: impl FnOnce(&[f64]) -> Result<Vec<f64>>,
) -> Result<(f64, f64)> {
    let best = best_completion_weight(|weights| {
        let scores = validation_ndcg(weights)?;
        for (w, ndcg) in weights.iter().zip(&scores) {
            eprintln!("recommender: completion weight {w}: validation NDCG@10 {ndcg:.4}");
        }
        Ok(scores)
    })?;
    eprintln!("recommender: completion weight {} chosen", best.0);
    Ok(best)
}

/// [`choose_completion_weight`] without the log: what early stopping judges each epoch's
/// snapshot by, since the saved model reads customers with the weight chosen this way.
pub fn best_completion_weight(
    validation_ndcg: impl FnOnce(&[f64]) -> Result<Vec<f64>>,
) -> Result<(f64, f64)> {
    let scores = validation_ndcg(&COMPLETION_WEIGHTS)?;
    if scores.len() != COMPLETION_WEIGHTS.len() {
        anyhow::bail!(
            "scoring completion weights: {} scores for {} weights",
            scores.len(),
            COMPLETION_WEIGHTS.len()
        );
    }
    let mut best: Option<(f64, f64)> = None;
    for (w, ndcg) in COMPLETION_WEIGHTS.into_iter().zip(scores) {
        // A score that is not a number never wins (the first one stands).
        if best.is_none_or(|(_, b)| ndcg > b) {
            best = Some((w, ndcg));
        }
    }
    Ok(best.unwrap_or((0.0, f64::NAN)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_completion_weight_is_the_best_on_validation_ties_to_the_smaller() {
        let by = |f: fn(f64) -> f64| move |ws: &[f64]| Ok(ws.iter().map(|&w| f(w)).collect());
        assert_eq!(
            choose_completion_weight(by(|w| 1.0 - (w - 0.5).abs())).ok(),
            Some((0.5, 1.0))
        );
        assert_eq!(choose_completion_weight(by(|_| 0.3)).ok(), Some((0.0, 0.3)));
        assert_eq!(choose_completion_weight(by(|w| w)).ok(), Some((1.0, 1.0)));
        let (w, score) = choose_completion_weight(by(|_| f64::NAN)).unwrap_or((1.0, 0.0));
        assert!(w == 0.0 && score.is_nan());
        // A scorer that does not score every weight is an error, not a silent choice.
        assert!(choose_completion_weight(|_: &[f64]| Ok(vec![0.5])).is_err());
    }
    use shopcast_datasets::interactions::{FeatureSet, LoadReport, Pair};
    use shopcast_datasets::IdVocab;

    #[test]
    fn recent_items_keep_whole_baskets() {
        let mut data = RecommenderData {
            customers: IdVocab::build(["c"]),
            products: IdVocab::build(["0", "1", "2", "3", "4", "5"]),
            customer_features: FeatureSet::default(),
            product_features: FeatureSet::default(),
            product_names: Vec::new(),
            pairs: Vec::new(),
            spend: None,
            report: LoadReport::default(),
            first_ts: 1,
            last_ts: 3,
        };
        // Customer 0: product 0 alone at t=1, then a basket of 1..=4 at t=2 and product 5 at t=3.
        for (product, ts) in [(0, 1), (1, 2), (2, 2), (3, 2), (4, 2), (5, 3)] {
            data.pairs.push(Pair {
                customer: 0,
                product,
                ts,
                weight: 1.0,
                is_target: true,
            });
        }
        let allowed: HashSet<(u32, u32)> = (0..6).map(|p| (0, p)).collect();
        // Two latest items would cut the basket at t=2: all of it comes instead.
        assert_eq!(recent_items(&data, &allowed, 2), vec![vec![1, 2, 3, 4, 5]]);
        assert_eq!(recent_items(&data, &allowed, 1), vec![vec![5]]);
        assert_eq!(
            recent_items(&data, &allowed, 10),
            vec![vec![0, 1, 2, 3, 4, 5]]
        );
    }
}

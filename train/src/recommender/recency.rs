//! The recency term: a customer's latest purchases pull their vector at scoring time, with a
//! weight chosen on the validation items.

use std::collections::HashSet;

use anyhow::Result;
use shopcast_datasets::interactions::RecommenderData;

/// Weights tried for the recency term, picked by validation NDCG@10.
const RECENCY_WEIGHTS: [f32; 8] = [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0];

/// Per customer, their last `k` target products by time among the `allowed` pairs (oldest
/// first).
pub fn recent_items(
    data: &RecommenderData,
    allowed: &HashSet<(u32, u32)>,
    k: usize,
) -> Vec<Vec<u32>> {
    let mut recent = vec![Vec::new(); data.customers.len()];
    // `pairs` is sorted by (customer, time, product).
    for p in &data.pairs {
        if p.is_target && allowed.contains(&(p.customer, p.product)) {
            recent[p.customer as usize].push(p.product);
        }
    }
    for r in &mut recent {
        let skip = r.len().saturating_sub(k);
        r.drain(..skip);
    }
    recent
}

/// The weight of the recency term: every candidate weight is scored by `validation_ndcg`, and
/// the smallest within 1% of the best wins. A larger pull towards the latest basket that
/// validation cannot tell apart is not worth its cost elsewhere (it lowered the sampled-protocol
/// numbers on Online Retail).
pub fn choose_weight(mut validation_ndcg: impl FnMut(f32) -> Result<f64>) -> Result<f32> {
    let mut tried = Vec::with_capacity(RECENCY_WEIGHTS.len());
    for w in RECENCY_WEIGHTS {
        let ndcg = validation_ndcg(w)?;
        eprintln!("recommender: recency weight {w}: validation NDCG@10 {ndcg:.4}");
        tried.push((w, ndcg));
    }
    let best = tried.iter().map(|t| t.1).fold(f64::NEG_INFINITY, f64::max);
    let weight = tried
        .iter()
        .find(|t| t.1 >= best * 0.99)
        .map_or(0.0, |t| t.0);
    eprintln!("recommender: recency weight {weight} chosen");
    Ok(weight)
}

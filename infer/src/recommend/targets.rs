//! The customers a job scores: what each one bought, viewed and chose lately, and the recency
//! term their vector gets.

use burn::prelude::*;
use shopcast_datasets::artifacts::RecommenderArtifacts;

use super::catalogue::Catalogue;
use super::load::LoadedRecommender;

/// One customer to score.
pub(crate) struct Target {
    pub(crate) id: String,
    /// Index in the bundle; `None` for a new customer.
    pub(crate) known: Option<u32>,
    /// Products bought (masked from the list and used in reasons).
    pub(crate) bought: Vec<u32>,
    pub(crate) viewed: Vec<u32>,
    /// Latest purchases, oldest first (the recency term).
    pub(crate) recent: Vec<u32>,
    /// Attribute tokens of a new customer.
    pub(crate) attributes: Vec<u32>,
}

/// Adds the recency term (the bundle's weight, each customer's latest purchases; at most as
/// many as training used) to the vectors of `rows`.
pub(crate) fn with_recent(
    loaded: &LoadedRecommender,
    u: Tensor<2>,
    rows: &[usize],
    targets: &[Target],
    catalogue: &Catalogue,
) -> Tensor<2> {
    let weight = loaded.artifacts.recency_weight;
    if weight == 0.0 {
        return u;
    }
    let keep = loaded.artifacts.recent_items.max(1);
    let lists: Vec<Vec<u32>> = rows
        .iter()
        .map(|&i| {
            let r = &targets[i].recent;
            r[r.len().saturating_sub(keep)..].to_vec()
        })
        .collect();
    loaded
        .model
        .with_recent(u, &lists, &catalogue.matrix, weight)
}

/// A customer the bundle knows, with their history from the bundle.
pub(crate) fn known_target(a: &RecommenderArtifacts, c: u32) -> Target {
    Target {
        id: a.customers.id(c).to_string(),
        known: Some(c),
        bought: a.purchased[c as usize].clone(),
        viewed: a.browsed[c as usize].clone(),
        recent: a.recent.get(c as usize).cloned().unwrap_or_default(),
        attributes: Vec::new(),
    }
}

/// Every customer the bundle knows.
pub(crate) fn known_targets(a: &RecommenderArtifacts) -> Vec<Target> {
    (0..a.customers.len() as u32)
        .map(|c| known_target(a, c))
        .collect()
}

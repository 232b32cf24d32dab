//! The recommender's side of the bundle: vocabularies, attribute tokens, histories, popularity,
//! the recency lists and the customer segments with their profiles.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use burn::prelude::*;
use shopcast_datasets::artifacts::{RecommenderArtifacts, SegmentProfile};
use shopcast_datasets::config::RecommenderSection;
use shopcast_datasets::interactions::RecommenderData;
use shopcast_model::{EntityFeatures, Recommender};

use super::recency::recent_items;
use super::score::customer_matrix;
use crate::segments::kmeans;

/// The recency term as the bundle keeps it.
pub struct Recency {
    /// Latest purchases per customer that make the term.
    pub items: usize,
    pub weight: f32,
}

/// Everything `infer` needs besides the weights.
pub fn build_artifacts(
    sec: &RecommenderSection,
    data: &RecommenderData,
    model: &Recommender,
    cf: &EntityFeatures,
    device: &Device,
    seed: u64,
    recency: &Recency,
) -> Result<RecommenderArtifacts> {
    let n_c = data.customers.len();
    let n_p = data.products.len();
    let mut purchased = vec![Vec::new(); n_c];
    let mut browsed = vec![Vec::new(); n_c];
    let mut popularity = vec![0u32; n_p];
    for p in &data.pairs {
        popularity[p.product as usize] += 1;
        if p.is_target {
            purchased[p.customer as usize].push(p.product);
        } else {
            browsed[p.customer as usize].push(p.product);
        }
    }
    for v in purchased.iter_mut().chain(browsed.iter_mut()) {
        v.sort_unstable();
        v.dedup();
    }
    let (vectors, d) = customer_matrix(model, cf, n_c, device)
        .context("computing customer vectors for segments")?;
    let segments = kmeans(&vectors, d, sec.model.segments, seed, 30);
    let (segment_centroids, segment_profiles) =
        segment_profiles(data, &segments, &vectors, d, (&purchased, &browsed));
    let all_pairs: HashSet<(u32, u32)> =
        data.pairs.iter().map(|p| (p.customer, p.product)).collect();
    Ok(RecommenderArtifacts {
        customer_column: sec.data.customer_id.clone(),
        product_column: sec.data.product_id.clone(),
        customer_attributes: sec.data.customers.clone(),
        product_attributes: sec.data.products.clone(),
        customers: data.customers.clone(),
        pseudonyms: None,
        products: data.products.clone(),
        customer_features: data.customer_features.clone(),
        product_features: data.product_features.clone(),
        product_names: data.product_names.clone(),
        purchased,
        browsed,
        popularity,
        recent: recent_items(data, &all_pairs, recency.items),
        recent_items: recency.items,
        recency_weight: recency.weight,
        segments,
        segment_centroids,
        segment_profiles,
    })
}

/// Each segment's centre and profile (size, top categories, mean products, spend, top products).
fn segment_profiles(
    data: &RecommenderData,
    segments: &[u32],
    vectors: &[f32],
    d: usize,
    (purchased, browsed): (&[Vec<u32>], &[Vec<u32>]),
) -> (Vec<Vec<f32>>, Vec<SegmentProfile>) {
    let n_c = data.customers.len();
    let k = segments.iter().map(|s| *s as usize + 1).max().unwrap_or(0);
    let mut segment_centroids = vec![vec![0f32; d]; k];
    let mut segment_sizes = vec![0usize; k];
    for (c, &s) in segments.iter().enumerate() {
        segment_sizes[s as usize] += 1;
        for (acc, x) in segment_centroids[s as usize]
            .iter_mut()
            .zip(&vectors[c * d..(c + 1) * d])
        {
            *acc += x;
        }
    }
    for (centre, &n) in segment_centroids.iter_mut().zip(&segment_sizes) {
        centre.iter_mut().for_each(|x| *x /= n.max(1) as f32);
    }
    let mut segment_profiles = Vec::with_capacity(k);
    for s in 0..k as u32 {
        let members: Vec<usize> = (0..n_c).filter(|&c| segments[c] == s).collect();
        let mut cat_counts: HashMap<String, usize> = HashMap::new();
        let mut product_counts: HashMap<u32, usize> = HashMap::new();
        let mut n_items = 0usize;
        for &c in &members {
            let items = if purchased[c].is_empty() {
                &browsed[c]
            } else {
                &purchased[c]
            };
            n_items += items.len();
            for &p in items {
                *product_counts.entry(p).or_default() += 1;
                if let Some(v) = data.product_features.primary_value(p as usize) {
                    *cat_counts.entry(v.to_string()).or_default() += 1;
                }
            }
        }
        let cat_total: usize = cat_counts.values().sum();
        let mut cats: Vec<(String, usize)> = cat_counts.into_iter().collect();
        cats.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut prods: Vec<(u32, usize)> = product_counts.into_iter().collect();
        prods.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        segment_profiles.push(SegmentProfile {
            segment: s,
            customers: members.len(),
            top_categories: cats
                .into_iter()
                .take(3)
                .map(|(c, n)| (c, n as f64 / cat_total.max(1) as f64))
                .collect(),
            mean_products: n_items as f64 / members.len().max(1) as f64,
            average_spend: data.spend.as_ref().map(|spend| {
                members.iter().map(|&c| spend[c]).sum::<f64>() / members.len().max(1) as f64
            }),
            top_products: prods.into_iter().take(20).map(|(p, _)| p).collect(),
        });
    }
    (segment_centroids, segment_profiles)
}

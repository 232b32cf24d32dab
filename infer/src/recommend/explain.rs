//! The reason given for every recommendation, and the segment of a customer the bundle has
//! not seen.

use std::collections::HashSet;

use shopcast_datasets::artifacts::RecommenderArtifacts;

use super::catalogue::Catalogue;

/// Cosine similarity above which "because you bought X" is given.
const SIMILAR_ENOUGH: f32 = 0.35;

/// What the explainer knows about one scored customer.
pub struct CustomerContext<'a> {
    pub bought: &'a [u32],
    pub viewed: &'a [u32],
    pub segment: u32,
}

/// Writes readable reasons for recommendations.
pub struct Explainer<'a> {
    catalogue: &'a Catalogue,
    segment_top: Vec<HashSet<u32>>,
}

impl<'a> Explainer<'a> {
    pub fn new(artifacts: &RecommenderArtifacts, catalogue: &'a Catalogue) -> Self {
        let segment_top = artifacts
            .segment_profiles
            .iter()
            .map(|p| p.top_products.iter().copied().collect())
            .collect();
        Explainer {
            catalogue,
            segment_top,
        }
    }

    fn cosine(&self, a: u32, b: u32) -> f32 {
        let d = self.catalogue.dim;
        let (a, b) = (a as usize * d, b as usize * d);
        let u = &self.catalogue.unit_vectors;
        u[a..a + d]
            .iter()
            .zip(&u[b..b + d])
            .map(|(x, y)| x * y)
            .sum()
    }

    /// The reason for recommending `product` to a customer.
    pub fn reason(&self, customer: &CustomerContext<'_>, product: u32) -> String {
        let cat = self.catalogue;
        let best = customer
            .bought
            .iter()
            .map(|&p| (p, "bought"))
            .chain(customer.viewed.iter().map(|&p| (p, "viewed")))
            .filter(|(p, _)| *p != product)
            .map(|(p, verb)| (self.cosine(p, product), p, verb))
            .max_by(|x, y| x.0.total_cmp(&y.0).then(y.1.cmp(&x.1)));
        let category = cat.primary[product as usize].as_deref();
        let is_new = cat.popularity[product as usize] == 0;
        let buys_there = category.is_some_and(|c| {
            customer
                .bought
                .iter()
                .chain(customer.viewed)
                .any(|&p| cat.primary[p as usize].as_deref() == Some(c))
        });
        if let (true, true, Some(c)) = (is_new, buys_there, category) {
            return format!("new in a category you buy: {c}");
        }
        if let Some((sim, p, verb)) = best {
            if sim >= SIMILAR_ENOUGH {
                return format!("because you {verb} {}", cat.names[p as usize]);
            }
        }
        if self
            .segment_top
            .get(customer.segment as usize)
            .is_some_and(|s| s.contains(&product))
        {
            return "popular with customers like you".into();
        }
        if let (true, Some(c)) = (buys_there, category) {
            return format!("more from {c}, a category you buy");
        }
        // The collaborative signal alone: customers with similar vectors chose it.
        "liked by customers like you".into()
    }
}

/// The segment whose centre is nearest to a vector.
pub(crate) fn nearest_segment(centroids: &[Vec<f32>], v: &[f32]) -> u32 {
    centroids
        .iter()
        .enumerate()
        .map(|(s, c)| {
            let d: f32 = c.iter().zip(v).map(|(a, b)| (a - b) * (a - b)).sum();
            (s as u32, d)
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(0, |(s, _)| s)
}

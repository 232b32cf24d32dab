//! Scoring with a trained recommender during training: the catalogue, score rows of chosen
//! customers (with or without the recency term) and every customer's vector.

use anyhow::Result;
use burn::prelude::*;
use shopcast_datasets::interactions::FeatureSet;
use shopcast_model::recommender::ids_tensor;
use shopcast_model::{EntityFeatures, ProductMatrix, Recommender};

use crate::ranking::DenseScores;

/// Feature lookups of both towers on a device.
pub fn feature_lookups(
    customers: &FeatureSet,
    products: &FeatureSet,
    device: &Device,
) -> (EntityFeatures, EntityFeatures) {
    let (ct, cw) = customers.padded();
    let (pt, pw) = products.padded();
    (
        EntityFeatures::new(ct, cw, device),
        EntityFeatures::new(pt, pw, device),
    )
}

fn to_f32(t: Tensor<2>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading scores back from the device: {e:?}"))
}

/// The whole catalogue of a model, prepared for scoring.
pub fn catalogue(
    model: &Recommender,
    product_features: &EntityFeatures,
    n_products: usize,
    device: &Device,
) -> ProductMatrix {
    let all: Vec<u32> = (0..n_products as u32).collect();
    let products = ids_tensor(&all, device);
    model.product_matrix(
        model.product_vectors(products.clone(), product_features),
        model.product_biases(products),
    )
}

/// Scores of all products for the given customers, one row each; with `recent`, each
/// customer's vector gets the recency term (their recent products, its weight).
pub fn score_rows(
    model: &Recommender,
    (customer_features, product_features): (&EntityFeatures, &EntityFeatures),
    customers: &[u32],
    n_products: usize,
    recent: Option<(&[Vec<u32>], f32)>,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let matrix = catalogue(model, product_features, n_products, device);
    let chunk = model.customers_per_chunk(n_products);
    let mut rows = Vec::with_capacity(customers.len());
    for chunk in customers.chunks(chunk) {
        let mut u = model.customer_vectors(ids_tensor(chunk, device), customer_features);
        if let Some((recent, weight)) = recent {
            let lists: Vec<Vec<u32>> = chunk.iter().map(|&c| recent[c as usize].clone()).collect();
            u = model.with_recent(u, &lists, &matrix, weight);
        }
        let scores = to_f32(model.score_all(u, &matrix))?;
        rows.extend(scores.chunks(n_products).map(<[f32]>::to_vec));
    }
    Ok(rows)
}

/// Score rows of some customers as a scorer over all customers (the others score nothing).
pub fn dense_for(
    rows: Vec<Vec<f32>>,
    customers: &[u32],
    n_customers: usize,
    n_products: usize,
) -> DenseScores {
    let mut all = vec![Vec::new(); n_customers];
    for (c, row) in customers.iter().zip(rows) {
        all[*c as usize] = row;
    }
    DenseScores {
        n_products,
        rows: all,
    }
}

/// Customer vectors of every known customer, `[n, d]` row-major.
pub fn customer_matrix(
    model: &Recommender,
    cf: &EntityFeatures,
    n_customers: usize,
    device: &Device,
) -> Result<(Vec<f32>, usize)> {
    let ids: Vec<u32> = (0..n_customers as u32).collect();
    let mut out = Vec::new();
    let mut d = 0;
    for chunk in ids.chunks(4096) {
        let u = model.customer_vectors(ids_tensor(chunk, device), cf);
        d = u.dims()[1];
        out.extend(to_f32(u)?);
    }
    Ok((out, d))
}

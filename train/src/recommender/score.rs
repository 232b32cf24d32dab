//! Scoring with a trained recommender during training: the catalogue, score rows of chosen
//! customers (with or without the recency term) and every customer's vector.

use anyhow::Result;
use burn::prelude::*;
use shopcast_datasets::interactions::FeatureSet;
use shopcast_model::recommender::ids_tensor;
use shopcast_model::{EntityFeatures, ProductMatrix, Recommender};

use crate::ranking::{Case, Outcome};

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

/// Scores of all products for the given customers, a chunk of customers at a time, in order:
/// `each` gets a chunk's rows (`n_products` scores per customer), so only one chunk's rows are
/// ever held. With `recent`, each customer's vector gets the recency
/// term (their recent products, its weight).
pub fn score_chunks(
    model: &Recommender,
    (customer_features, product_features): (&EntityFeatures, &EntityFeatures),
    customers: &[u32],
    n_products: usize,
    recent: Option<(&[Vec<u32>], f32)>,
    device: &Device,
    mut each: impl FnMut(&mut [f32]),
) -> Result<()> {
    let matrix = catalogue(model, product_features, n_products, device);
    let chunk = model.customers_per_chunk(n_products);
    for chunk in customers.chunks(chunk) {
        let mut u = model.customer_vectors(ids_tensor(chunk, device), customer_features);
        if let Some((recent, weight)) = recent {
            let lists: Vec<Vec<u32>> = chunk.iter().map(|&c| recent[c as usize].clone()).collect();
            u = model.with_recent(u, &lists, &matrix, weight);
        }
        let mut scores = to_f32(model.score_all(u, &matrix))?;
        each(&mut scores);
    }
    Ok(())
}

/// Each case's [`Outcome`] under the model (scored as [`score_chunks`] scores).
pub fn model_outcomes(
    model: &Recommender,
    features: (&EntityFeatures, &EntityFeatures),
    cases: &[Case],
    n_products: usize,
    recent: Option<(&[Vec<u32>], f32)>,
    device: &Device,
) -> Result<Vec<Outcome>> {
    let customers: Vec<u32> = cases.iter().map(|c| c.customer).collect();
    let mut outcomes = Vec::with_capacity(cases.len());
    score_chunks(
        model,
        features,
        &customers,
        n_products,
        recent,
        device,
        |rows| {
            for row in rows.chunks_mut(n_products.max(1)) {
                outcomes.push(Outcome::of(&cases[outcomes.len()], row));
            }
        },
    )?;
    Ok(outcomes)
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

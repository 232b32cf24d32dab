//! Scoring with a trained recommender during training: the catalogue, score rows of chosen
//! customers (with or without the recency term) and every customer's vector.

use anyhow::Result;
use burn::prelude::*;
use shopcast_datasets::interactions::FeatureSet;
use shopcast_model::recommender::ids_tensor;
use shopcast_model::{EntityFeatures, ProductMatrix, Recommender, SequenceEvent, SequenceSlots};

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

/// What customer vectors are read from besides the network: each customer's history, for the
/// sequential model (empty for the others).
pub type Histories<'a> = &'a [Vec<SequenceEvent>];

/// Vectors of customers `ids`: from their histories for the sequential model, from the id
/// tables for the others.
fn chunk_vectors(
    model: &Recommender,
    features: (&EntityFeatures, &EntityFeatures),
    ids: &[u32],
    histories: Histories<'_>,
    device: &Device,
) -> Tensor<2> {
    let customers = ids_tensor(ids, device);
    if !model.is_sequential() {
        return model.customer_vectors(customers, features.0);
    }
    let windows: Vec<&[SequenceEvent]> = ids
        .iter()
        .map(|&c| histories.get(c as usize).map_or(&[][..], Vec::as_slice))
        .collect();
    let slots = SequenceSlots::scoring(&windows, model.max_sequence());
    model.sequence_customer_vectors(customers, features, &slots)
}

/// Scores of all products for the given customers, a chunk of customers at a time, in order:
/// `each` gets a chunk's rows (`n_products` scores per customer), so only one chunk's rows are
/// ever held. With `recent`, each customer's vector gets the recency
/// term (their recent products, its weight).
#[allow(clippy::too_many_arguments)]
pub fn score_chunks(
    model: &Recommender,
    (customer_features, product_features): (&EntityFeatures, &EntityFeatures),
    customers: &[u32],
    histories: Histories<'_>,
    n_products: usize,
    recent: Option<(&[Vec<u32>], f32)>,
    device: &Device,
    mut each: impl FnMut(&mut [f32]),
) -> Result<()> {
    let matrix = catalogue(model, product_features, n_products, device);
    let chunk = model.customers_per_chunk(n_products);
    let features = (customer_features, product_features);
    for chunk in customers.chunks(chunk) {
        let mut u = chunk_vectors(model, features, chunk, histories, device);
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
    histories: Histories<'_>,
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
        histories,
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

/// A sequential model whose customer id rows hold what the encoder reads from each customer's
/// whole history, so that [`Recommender::customer_vectors`] (the segments, `infer`) gives the
/// sequential vector of every known customer as of the training data.
pub fn with_sequence_vectors_in_id_table(
    model: Recommender,
    features: (&EntityFeatures, &EntityFeatures),
    histories: Histories<'_>,
    device: &Device,
) -> Result<Recommender> {
    if !model.is_sequential() {
        return Ok(model);
    }
    let [customers, products, biases] = model.id_tables();
    let n = customers.dims()[0];
    drop(customers);
    let ids: Vec<u32> = (0..n as u32).collect();
    let mut rows = Vec::new();
    for chunk in ids.chunks(1024) {
        let read = chunk_vectors(&model, features, chunk, histories, device);
        // The attribute mean is added back by `customer_vectors`.
        rows.push(read - model.customer_attribute_vectors(ids_tensor(chunk, device), features.0));
    }
    let table = Tensor::cat(rows, 0);
    Ok(model.with_id_tables([table, products, biases]))
}

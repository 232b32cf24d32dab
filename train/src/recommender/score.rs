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
    let slots = scoring_slots(ids, histories, model.max_sequence());
    model.sequence_customer_vectors(customers, features, &slots)
}

/// The scoring windows of customers `ids`: each one's latest interactions.
fn scoring_slots(ids: &[u32], histories: Histories<'_>, max_sequence: usize) -> SequenceSlots {
    let windows: Vec<&[SequenceEvent]> = ids
        .iter()
        .map(|&c| histories.get(c as usize).map_or(&[][..], Vec::as_slice))
        .collect();
    SequenceSlots::scoring(&windows, max_sequence)
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

/// Each case's [`Outcome`] under the model read at each of `weights` (completion weights;
/// one list of outcomes per weight, in order): what [`model_outcomes`] gives with each weight
/// set in turn, from one pass of the encoder over each chunk of customers. The other models
/// read the same vectors at every weight.
pub fn outcomes_by_completion_weight(
    model: &Recommender,
    features: (&EntityFeatures, &EntityFeatures),
    cases: &[Case],
    histories: Histories<'_>,
    n_products: usize,
    weights: &[f64],
    device: &Device,
) -> Result<Vec<Vec<Outcome>>> {
    let matrix = catalogue(model, features.1, n_products, device);
    let mut outcomes = vec![Vec::with_capacity(cases.len()); weights.len()];
    for chunk in cases.chunks(model.customers_per_chunk(n_products)) {
        let ids: Vec<u32> = chunk.iter().map(|c| c.customer).collect();
        // The other models read no history (and have no window length to cut one to).
        let slots = if model.is_sequential() {
            scoring_slots(&ids, histories, model.max_sequence())
        } else {
            SequenceSlots::default()
        };
        let vectors = model.sequence_customer_vectors_by_weight(
            ids_tensor(&ids, device),
            features,
            &slots,
            weights,
        );
        for (u, weight_outcomes) in vectors.into_iter().zip(&mut outcomes) {
            let mut scores = to_f32(model.score_all(u, &matrix))?;
            for (case, row) in chunk.iter().zip(scores.chunks_mut(n_products.max(1))) {
                weight_outcomes.push(Outcome::of(case, row));
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use shopcast_model::{Architecture, RecommenderConfig};

    /// Scoring the validation cases at every completion weight from one encoder pass gives the
    /// outcomes of scoring them with each weight set in turn.
    #[test]
    fn outcomes_by_completion_weight_match_one_weight_at_a_time() {
        let device = Device::flex();
        let (n_c, n_p) = (60usize, 40usize);
        let config = RecommenderConfig::new(n_c, n_p, 3, 3)
            .with_embedding_dim(8)
            .with_architecture(Architecture::Sequential)
            .with_max_sequence(6)
            .with_sequence_customer_embedding(true);
        let model = shopcast_model::seeded_init(&device, 11, || config.init(&device));
        let tokens = |n: usize| {
            EntityFeatures::new((0..n).map(|i| (i % 3) as i64 + 1).collect(), 1, &device)
        };
        let (cf, pf) = (tokens(n_c), tokens(n_p));
        // Baskets of two products a day, 3-5 days per customer.
        let histories: Vec<Vec<SequenceEvent>> = (0..n_c as u32)
            .map(|c| {
                (0..(6 + 2 * (c % 3)))
                    .map(|j| SequenceEvent {
                        product: (c * 7 + j * 5) % n_p as u32,
                        ts: i64::from(j / 2) * 86_400,
                        is_target: true,
                    })
                    .collect()
            })
            .collect();
        let cases: Vec<Case> = (0..n_c as u32)
            .map(|c| Case {
                customer: c,
                item: (c * 3 + 1) % n_p as u32,
                known: vec![],
                negatives: (0..9).map(|k| (c + 2 * k + 2) % n_p as u32).collect(),
            })
            .collect();
        let weights = [0.0, 0.5, 1.0];
        let together = outcomes_by_completion_weight(
            &model,
            (&cf, &pf),
            &cases,
            &histories,
            n_p,
            &weights,
            &device,
        )
        .expect("scores");
        assert_eq!(together.len(), weights.len());
        for (&w, outcomes) in weights.iter().zip(&together) {
            let alone = model_outcomes(
                &model.clone().with_completion_weight(w),
                (&cf, &pf),
                &cases,
                &histories,
                n_p,
                None,
                &device,
            )
            .expect("scores");
            assert_eq!(outcomes, &alone, "completion weight {w}");
        }
        assert_ne!(together[0], together[2], "the weights rank alike");
    }
}

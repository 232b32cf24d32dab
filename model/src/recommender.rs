//! The hybrid two-tower recommender.
//!
//! A customer's vector is their id embedding plus the mean of their attribute embeddings (region,
//! age band...); a product's vector is its id embedding plus the mean of its attribute embeddings
//! (category, brand, price band, tags, description words). The score is the dot product plus a
//! product bias, so the whole catalogue is scored with one matrix product, and a new customer or
//! product with attributes but no history still gets a meaningful vector.

use burn::nn::{Embedding, EmbeddingConfig, Initializer};
use burn::prelude::*;

/// Shapes and sizes of a [`Recommender`]; saved in the bundle to rebuild the model.
#[derive(Config, Debug)]
pub struct RecommenderConfig {
    pub n_customers: usize,
    pub n_products: usize,
    /// Distinct customer attribute tokens.
    pub n_customer_tokens: usize,
    /// Distinct product attribute tokens.
    pub n_product_tokens: usize,
    #[config(default = 32)]
    pub embedding_dim: usize,
}

/// Attribute tokens of every entity on the device: token ids padded with 0 (`[n, width]`) and
/// the weight of each slot (1/number of tokens, 0 for padding).
#[derive(Debug, Clone)]
pub struct EntityFeatures {
    pub tokens: Tensor<2, Int>,
    pub weights: Tensor<2>,
}

impl EntityFeatures {
    /// Builds the lookup from padded token ids (0 = padding, token `t` stored as `t + 1`).
    pub fn new(padded_tokens: Vec<i64>, width: usize, device: &Device) -> Self {
        let n = padded_tokens.len() / width.max(1);
        let mut weights = vec![0f32; padded_tokens.len()];
        for row in 0..n {
            let slots = &padded_tokens[row * width..(row + 1) * width];
            let count = slots.iter().filter(|t| **t > 0).count();
            for (j, t) in slots.iter().enumerate() {
                if *t > 0 {
                    weights[row * width + j] = 1.0 / count as f32;
                }
            }
        }
        EntityFeatures {
            tokens: Tensor::from_data(TensorData::new(padded_tokens, [n, width]), device),
            weights: Tensor::from_data(TensorData::new(weights, [n, width]), device),
        }
    }

    /// The rows of the given entities.
    pub fn rows(&self, ids: Tensor<1, Int>) -> (Tensor<2, Int>, Tensor<2>) {
        (
            self.tokens.clone().select(0, ids.clone()),
            self.weights.clone().select(0, ids),
        )
    }
}

/// The two-tower model.
#[derive(Module, Debug)]
pub struct Recommender {
    customer_id: Embedding,
    product_id: Embedding,
    /// Row 0 is padding (its contribution is weighted to zero).
    customer_attribute: Embedding,
    product_attribute: Embedding,
    product_bias: Embedding,
}

/// Entity indices as an `Int` tensor on a device.
pub fn ids_tensor(ids: &[u32], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(
        TensorData::new(
            ids.iter().map(|&i| i as i64).collect::<Vec<_>>(),
            [ids.len()],
        ),
        device,
    )
}

fn small_normal() -> Initializer {
    Initializer::Normal {
        mean: 0.0,
        std: 0.05,
    }
}

impl RecommenderConfig {
    /// A freshly initialised model (seed the device first for reproducibility).
    pub fn init(&self, device: &Device) -> Recommender {
        let d = self.embedding_dim;
        Recommender {
            customer_id: EmbeddingConfig::new(self.n_customers.max(1), d)
                .with_initializer(small_normal())
                .init(device),
            product_id: EmbeddingConfig::new(self.n_products.max(1), d)
                .with_initializer(small_normal())
                .init(device),
            customer_attribute: EmbeddingConfig::new(self.n_customer_tokens + 1, d)
                .with_initializer(small_normal())
                .init(device),
            product_attribute: EmbeddingConfig::new(self.n_product_tokens + 1, d)
                .with_initializer(small_normal())
                .init(device),
            product_bias: EmbeddingConfig::new(self.n_products.max(1), 1)
                .with_initializer(Initializer::Zeros)
                .init(device),
        }
    }
}

/// Mean of attribute embeddings: `[B, W]` tokens weighted by `[B, W]` weights -> `[B, d]`.
fn attribute_mean(table: &Embedding, tokens: Tensor<2, Int>, weights: Tensor<2>) -> Tensor<2> {
    let emb = table.forward(tokens); // [B, W, d]
    (emb * weights.unsqueeze_dim::<3>(2))
        .sum_dim(1)
        .squeeze_dim::<2>(1)
}

fn id_rows(table: &Embedding, ids: Tensor<1, Int>) -> Tensor<2> {
    table.weight.val().select(0, ids)
}

/// A training batch: customers, their positive products with weights, and `k` negatives each.
#[derive(Debug, Clone)]
pub struct InteractionBatch {
    pub customers: Tensor<1, Int>,
    pub positives: Tensor<1, Int>,
    pub weights: Tensor<1>,
    /// `[B * k]`, row-major per customer.
    pub negatives: Tensor<1, Int>,
    pub negatives_per_positive: usize,
}

impl Recommender {
    /// Customer vectors `[B, d]` for known customers.
    pub fn customer_vectors(&self, ids: Tensor<1, Int>, features: &EntityFeatures) -> Tensor<2> {
        let (tokens, weights) = features.rows(ids.clone());
        id_rows(&self.customer_id, ids) + attribute_mean(&self.customer_attribute, tokens, weights)
    }

    /// Product vectors `[B, d]` for known products.
    pub fn product_vectors(&self, ids: Tensor<1, Int>, features: &EntityFeatures) -> Tensor<2> {
        let (tokens, weights) = features.rows(ids.clone());
        id_rows(&self.product_id, ids) + attribute_mean(&self.product_attribute, tokens, weights)
    }

    /// Product biases `[B]`.
    pub fn product_biases(&self, ids: Tensor<1, Int>) -> Tensor<1> {
        id_rows(&self.product_bias, ids).squeeze_dim::<1>(1)
    }

    /// Vectors of entities with no id embedding (cold start): attributes only.
    pub fn customer_vectors_from_attributes(
        &self,
        tokens: Tensor<2, Int>,
        weights: Tensor<2>,
    ) -> Tensor<2> {
        attribute_mean(&self.customer_attribute, tokens, weights)
    }

    /// Product vectors from attributes only (new products).
    pub fn product_vectors_from_attributes(
        &self,
        tokens: Tensor<2, Int>,
        weights: Tensor<2>,
    ) -> Tensor<2> {
        attribute_mean(&self.product_attribute, tokens, weights)
    }

    /// Logits of positives `[B]` and negatives `[B, k]`, plus the batch's squared vector norm.
    pub fn batch_logits(
        &self,
        batch: &InteractionBatch,
        customer_features: &EntityFeatures,
        product_features: &EntityFeatures,
    ) -> (Tensor<1>, Tensor<2>, Tensor<1>) {
        let k = batch.negatives_per_positive;
        let u = self.customer_vectors(batch.customers.clone(), customer_features); // [B, d]
        let [b, d] = u.dims();
        let p = self.product_vectors(batch.positives.clone(), product_features); // [B, d]
        let n = self
            .product_vectors(batch.negatives.clone(), product_features)
            .reshape([b, k, d]);
        let pos = (u.clone() * p.clone()).sum_dim(1).squeeze_dim::<1>(1)
            + self.product_biases(batch.positives.clone());
        let neg = (n.clone() * u.clone().unsqueeze_dim::<3>(1))
            .sum_dim(2)
            .squeeze_dim::<2>(2)
            + self.product_biases(batch.negatives.clone()).reshape([b, k]);
        let norms = u.powf_scalar(2.0).sum() + p.powf_scalar(2.0).sum() + n.powf_scalar(2.0).sum();
        (pos, neg, norms)
    }
}

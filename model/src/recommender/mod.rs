//! The hybrid recommender.
//!
//! A customer's vector is their id embedding plus the mean of their attribute embeddings (region,
//! age band...); a product's vector is its id embedding plus the mean of its attribute embeddings
//! (category, brand, price band, tags, description words). A new customer or product with
//! attributes but no history still gets a meaningful vector.
//!
//! Two ways to score a (customer, product) pair from those vectors:
//! - `two_tower` (default): dot product plus a product bias, so the whole catalogue is scored with
//!   one matrix product;
//! - `neumf`: NeuMF (He et al. 2017) over the same vectors: a GMF part (element-wise product) and
//!   an MLP over the concatenated vectors, joined by one output layer. Scoring the catalogue then
//!   costs one MLP pass per pair; the first MLP layer is split into a customer half and a product
//!   half so it is still two matrix products;
//! - `sequential`: two-tower scoring, with the customer vector read from their latest baskets by
//!   self-attention (`sequential.rs`) plus their attribute mean.

use burn::nn::{Embedding, EmbeddingConfig, Initializer, LinearConfig};
use burn::prelude::*;

use crate::device::memory_is_host;
use crate::host::host_values;

mod fold_in;
mod lazy_tables;
mod neumf;
mod sampled_softmax;
mod sequential;
mod top_k;

pub use fold_in::FoldInConfig;
pub use lazy_tables::{BatchLeaves, LazyTables};
pub use neumf::NeuMfHead;
pub use sequential::{
    latest_events, SequenceEncoder, SequenceEncoderConfig, SequenceEvent, SequenceInput,
    SequenceSlots,
};
pub use top_k::TopK;

/// Working memory of one scoring call, in floats (16 MiB): customers per chunk keep the score
/// matrix about this size, in training's evaluation and in the scoring jobs alike. Smaller than it
/// could be on purpose: every chunk's score matrix is a fresh allocation, and on this project's
/// machines the page faults of a 64 MiB buffer cost more than the larger matrix product saves
/// (`cargo bench --workspace --bench scoring`).
pub const SCORING_BUDGET_FLOATS: usize = 4 << 20;

/// How a (customer, product) pair is scored from the two hybrid vectors; spelt as in the config
/// (`two_tower`, `neumf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// Dot product plus a product bias: the catalogue is one matrix product.
    TwoTower,
    /// GMF + MLP over the same vectors, joined by one output layer.
    Neumf,
    /// Dot product, the customer vector read from their latest baskets by self-attention.
    Sequential,
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::TwoTower => "two_tower",
            Self::Neumf => "neumf",
            Self::Sequential => "sequential",
        })
    }
}

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
    #[config(default = "Architecture::TwoTower")]
    pub architecture: Architecture,
    /// Hidden sizes of the NeuMF MLP (unused by `two_tower`).
    #[config(default = "vec![64, 32]")]
    pub mlp_layers: Vec<usize>,
    /// The sequential encoder (unused by the others): interactions read per customer.
    #[config(default = 50)]
    pub max_sequence: usize,
    #[config(default = 2)]
    pub sequence_blocks: usize,
    #[config(default = 1)]
    pub sequence_heads: usize,
    #[config(default = 0.2)]
    pub sequence_dropout: f64,
    /// Sequential model: the customer's id embedding is added to the encoder's reading.
    #[config(default = false)]
    pub sequence_customer_embedding: bool,
    /// Sequential model: weight of the latest basket's completion query in a customer's reading
    /// (chosen on validation; absent in bundles written before it existed: 0).
    pub sequence_completion_weight: Option<f64>,
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
    /// Present for `neumf`.
    neumf: Option<NeuMfHead>,
    /// Present for `sequential`.
    sequence: Option<SequenceEncoder>,
}

/// A sequential model's reading at completion weight `w`: the next-basket reading, moved
/// towards the latest basket's completion by `w` (the next-basket reading alone at 0 or
/// without completion queries).
fn mix_readings(next: Tensor<2>, completion: Option<Tensor<2>>, w: f64) -> Tensor<2> {
    match completion {
        Some(completion) if w != 0.0 => next * (1.0 - w) + completion * w,
        _ => next,
    }
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
    /// Checks a config read back from a bundle before a model is built from it: the message
    /// names the field.
    pub fn check(&self) -> Result<(), String> {
        if self.embedding_dim == 0 {
            return Err("embedding_dim: must be at least 1, got 0".into());
        }
        if self.architecture == Architecture::Neumf && self.mlp_layers.contains(&0) {
            return Err("mlp_layers: every layer needs at least 1 unit".into());
        }
        if self.architecture == Architecture::Sequential {
            self.sequence_config().check()?;
        }
        Ok(())
    }

    /// The sequential encoder's shapes.
    pub fn sequence_config(&self) -> SequenceEncoderConfig {
        SequenceEncoderConfig::new(self.embedding_dim)
            .with_max_sequence(self.max_sequence)
            .with_blocks(self.sequence_blocks)
            .with_heads(self.sequence_heads)
            .with_dropout(self.sequence_dropout)
            .with_customer_embedding(self.sequence_customer_embedding)
            .with_completion_weight(self.sequence_completion_weight.unwrap_or(0.0))
    }

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
            neumf: (self.architecture == Architecture::Neumf).then(|| {
                let mut mlp = Vec::new();
                let mut d_in = 2 * d;
                for &h in &self.mlp_layers {
                    mlp.push(LinearConfig::new(d_in, h).init(device));
                    d_in = h;
                }
                NeuMfHead {
                    mlp,
                    output: LinearConfig::new(d + d_in, 1).init(device),
                    embedding_dim: d,
                }
            }),
            sequence: (self.architecture == Architecture::Sequential)
                .then(|| self.sequence_config().init(device)),
        }
    }
}

/// The catalogue prepared for scoring many customers: product vectors, biases, and for NeuMF
/// the product half of the first MLP layer.
#[derive(Debug, Clone)]
pub struct ProductMatrix {
    /// `[d, P]`.
    transposed: Tensor<2>,
    /// `[P, d]`.
    vectors: Tensor<2>,
    /// `[1, P]`.
    bias: Tensor<2>,
    /// `[d + 1, P]`: the vectors with the bias as one more row, so that a customer vector with
    /// a trailing 1 scores the whole catalogue in one matrix product, without a second pass
    /// over the score matrix to add the biases.
    with_bias: Tensor<2>,
    /// `[P, h1]` (NeuMF only).
    mlp_product_part: Option<Tensor<2>>,
    /// `[P, d + 1]` row-major in host memory (vectors, then the bias), made on first use by
    /// the CPU scoring path and shared by every chunk scored against this catalogue.
    host_rows: std::sync::OnceLock<std::sync::Arc<Vec<f32>>>,
}

impl ProductMatrix {
    /// The same matrix cut off from the autodiff graph (for fitting new customers against it).
    pub fn detach(self) -> Self {
        ProductMatrix {
            transposed: self.transposed.detach(),
            with_bias: self.with_bias.detach(),
            vectors: self.vectors.detach(),
            bias: self.bias.detach(),
            mlp_product_part: self.mlp_product_part.map(Tensor::detach),
            host_rows: self.host_rows,
        }
    }

    /// Number of products.
    pub fn len(&self) -> usize {
        self.bias.dims()[1]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Product vectors `[P, d]`.
    pub fn vectors(&self) -> Tensor<2> {
        self.vectors.clone()
    }

    /// Product biases `[P]`.
    pub fn biases(&self) -> Tensor<1> {
        self.bias.clone().squeeze_dim::<1>(0)
    }

    /// The catalogue as `[P, d + 1]` rows in host memory (vector, then bias), read once.
    fn host_rows(&self) -> Result<std::sync::Arc<Vec<f32>>, String> {
        if let Some(rows) = self.host_rows.get() {
            return Ok(rows.clone());
        }
        let rows = std::sync::Arc::new(host_values(self.with_bias.clone().transpose())?);
        Ok(self.host_rows.get_or_init(|| rows).clone())
    }
}

/// Mean of attribute embeddings: `[B, W]` tokens weighted by `[B, W]` weights -> `[B, d]`.
fn attribute_mean(table: &Embedding, tokens: Tensor<2, Int>, weights: Tensor<2>) -> Tensor<2> {
    let emb = table.forward(tokens); // [B, W, d]
    (emb * weights.unsqueeze_dim::<3>(2))
        .sum_dim(1)
        .squeeze_dim::<2>(1)
}

/// The hybrid vectors `[B, d]` of entities `ids`: their id rows plus their attribute mean.
fn with_attributes(
    id_rows: Tensor<2>,
    attributes: &Embedding,
    features: &EntityFeatures,
    ids: Tensor<1, Int>,
) -> Tensor<2> {
    let (tokens, weights) = features.rows(ids);
    id_rows + attribute_mean(attributes, tokens, weights)
}

fn id_rows(table: &Embedding, ids: Tensor<1, Int>) -> Tensor<2> {
    table.weight.val().select(0, ids)
}

/// The id-table rows one training batch reads, one per id of the batch (repeats included).
#[derive(Debug, Clone)]
pub struct BatchIdRows {
    /// `[B, d]`.
    pub customers: Tensor<2>,
    /// `[B, d]`.
    pub positives: Tensor<2>,
    /// `[B * k, d]`.
    pub negatives: Tensor<2>,
    /// `[B]`.
    pub positive_biases: Tensor<1>,
    /// `[B * k]`.
    pub negative_biases: Tensor<1>,
}

/// A training batch of the sequential model: windows of customers' histories, every product
/// slot of which is a target, and negatives shared by all targets.
#[derive(Debug, Clone)]
pub struct SequenceBatch {
    pub input: SequenceInput,
    /// `[B]`: the customer of each window.
    pub customers: Tensor<1, Int>,
    /// `[N]`: flat slot (`row * len + slot`) of each target.
    pub target_slots: Tensor<1, Int>,
    /// `[N]`: the window of each target.
    pub target_rows: Tensor<1, Int>,
    /// `[N]`: the product at each target slot.
    pub targets: Tensor<1, Int>,
    /// `[K]`.
    pub negatives: Tensor<1, Int>,
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
        let rows = id_rows(&self.customer_id, ids.clone());
        with_attributes(rows, &self.customer_attribute, features, ids)
    }

    /// Product vectors `[B, d]` for known products.
    pub fn product_vectors(&self, ids: Tensor<1, Int>, features: &EntityFeatures) -> Tensor<2> {
        let rows = id_rows(&self.product_id, ids.clone());
        with_attributes(rows, &self.product_attribute, features, ids)
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

    /// The catalogue (`[P, d]` vectors and `[P]` biases, known and new products alike) prepared
    /// for [`Recommender::score_all`].
    pub fn product_matrix(&self, vectors: Tensor<2>, biases: Tensor<1>) -> ProductMatrix {
        let mlp_product_part = self.neumf.as_ref().map(|head| {
            let d = head.embedding_dim;
            let w_p = head.mlp[0].weight.val().narrow(0, d, d); // product half of the first layer
            vectors.clone().matmul(w_p)
        });
        let bias = biases.unsqueeze_dim::<2>(0);
        ProductMatrix {
            transposed: vectors.clone().transpose(),
            // Built as [P, d + 1] and viewed transposed: the layout the matrix product is
            // fastest with (the same as `transposed`).
            with_bias: Tensor::cat(vec![vectors.clone(), bias.clone().transpose()], 1).transpose(),
            vectors,
            bias,
            mlp_product_part,
            host_rows: std::sync::OnceLock::new(),
        }
    }

    /// Customer vectors moved towards the products they chose most recently:
    /// `u + weight * mean(product vectors of recent[i])` for each row (rows with no recent
    /// products are unchanged). A customer's id embedding summarises all of their history; the
    /// recent term lets the current basket count more. `weight` is chosen on validation data.
    pub fn with_recent(
        &self,
        customers: Tensor<2>,
        recent: &[Vec<u32>],
        products: &ProductMatrix,
        weight: f32,
    ) -> Tensor<2> {
        if weight == 0.0 || recent.iter().all(Vec::is_empty) {
            return customers;
        }
        let n_p = products.len();
        let c = recent.len();
        let mut mix = vec![0f32; c * n_p];
        for (row, items) in recent.iter().enumerate() {
            let valid: Vec<u32> = items
                .iter()
                .copied()
                .filter(|&p| (p as usize) < n_p)
                .collect();
            for &p in &valid {
                mix[row * n_p + p as usize] += weight / valid.len() as f32;
            }
        }
        let device = customers.device();
        let mix = Tensor::<2>::from_data(TensorData::new(mix, [c, n_p]), &device);
        customers + mix.matmul(products.vectors.clone())
    }

    /// Scores `[C, P]` of customer vectors `[C, d]` against the whole catalogue.
    pub fn score_all(&self, customers: Tensor<2>, products: &ProductMatrix) -> Tensor<2> {
        match &self.neumf {
            None => {
                let [c, _] = customers.dims();
                let ones = Tensor::<2>::ones([c, 1], &customers.device());
                Tensor::cat(vec![customers, ones], 1).matmul(products.with_bias.clone())
            }
            Some(head) => head.all_scores(customers, products) + products.bias.clone(),
        }
    }

    /// Customers per [`Recommender::score_all`] call that keep its working memory near
    /// [`SCORING_BUDGET_FLOATS`] floats (NeuMF materialises a `[C, P, h]` activation).
    pub fn customers_per_chunk(&self, n_products: usize) -> usize {
        let budget_floats = SCORING_BUDGET_FLOATS;
        let per_customer = match &self.neumf {
            None => n_products,
            Some(head) => n_products * head.mlp[0].weight.dims()[1].max(1),
        };
        (budget_floats / per_customer.max(1)).clamp(1, 4096)
    }

    /// Scores `[N]` of matching rows of customer and product vectors, with product biases.
    fn pair_scores(&self, u: Tensor<2>, p: Tensor<2>, bias: Tensor<1>) -> Tensor<1> {
        let raw = match &self.neumf {
            None => (u * p).sum_dim(1).squeeze_dim::<1>(1),
            Some(head) => head.pair_scores(u, p),
        };
        raw + bias
    }

    /// Whether customer vectors are read from histories
    /// ([`Recommender::sequence_customer_vectors`]).
    pub fn is_sequential(&self) -> bool {
        self.sequence.is_some()
    }

    /// The interactions the sequential encoder reads per customer (0 for the other models).
    pub fn max_sequence(&self) -> usize {
        self.sequence
            .as_ref()
            .map_or(0, SequenceEncoder::max_sequence)
    }

    /// The encoder's reading at every slot, `[B, T, d]` (`None` unless sequential).
    fn encode(
        &self,
        input: &SequenceInput,
        product_features: &EntityFeatures,
    ) -> Option<Tensor<3>> {
        let encoder = self.sequence.as_ref()?;
        let [b, t] = input.products.dims();
        let ids = input.products.clone().reshape([b * t]);
        let products = self.product_vectors(ids, product_features);
        let d = products.dims()[1];
        Some(encoder.forward(input, products.reshape([b, t, d])))
    }

    /// The attribute mean of customers `ids`, `[B, d]`.
    pub fn customer_attribute_vectors(
        &self,
        ids: Tensor<1, Int>,
        features: &EntityFeatures,
    ) -> Tensor<2> {
        let (tokens, weights) = features.rows(ids);
        attribute_mean(&self.customer_attribute, tokens, weights)
    }

    /// Customer vectors `[B, d]` of a sequential model: each row's attribute mean plus the
    /// encoder's reading at its scoring slot ([`SequenceSlots::scoring`]). Any other model
    /// gives [`Recommender::customer_vectors`].
    pub fn sequence_customer_vectors(
        &self,
        customers: Tensor<1, Int>,
        (customer_features, product_features): (&EntityFeatures, &EntityFeatures),
        slots: &SequenceSlots,
    ) -> Tensor<2> {
        let Some(read) = self.sequence_readings(slots, product_features, &customers.device())
        else {
            return self.customer_vectors(customers, customer_features);
        };
        let read = self.with_customer_embedding(read, customers.clone());
        read + self.customer_attribute_vectors(customers, customer_features)
    }

    /// [`Recommender::sequence_customer_vectors`] as the model would give them at each of
    /// `weights` (completion weights), from one forward pass of the encoder: what choosing the
    /// weight on validation items reads, without one pass per weight. One tensor per weight, in
    /// order; the same values as setting each weight and reading again.
    pub fn sequence_customer_vectors_by_weight(
        &self,
        customers: Tensor<1, Int>,
        (customer_features, product_features): (&EntityFeatures, &EntityFeatures),
        slots: &SequenceSlots,
        weights: &[f64],
    ) -> Vec<Tensor<2>> {
        let device = customers.device();
        let Some((next, completion)) =
            self.sequence_reading_parts(slots, product_features, &device)
        else {
            let vectors = self.customer_vectors(customers, customer_features);
            return weights.iter().map(|_| vectors.clone()).collect();
        };
        let attributes = self.customer_attribute_vectors(customers.clone(), customer_features);
        weights
            .iter()
            .map(|&w| {
                let read = mix_readings(next.clone(), completion.clone(), w);
                self.with_customer_embedding(read, customers.clone()) + attributes.clone()
            })
            .collect()
    }

    /// The encoder's reading at each row's scoring slot, `[B, d]`: what a sequential model
    /// expects next from the interactions in `slots`, before the customer's attributes are
    /// added. One forward pass, which is how customers the bundle has never seen are read.
    /// `None` unless the model is sequential.
    pub fn sequence_readings(
        &self,
        slots: &SequenceSlots,
        product_features: &EntityFeatures,
        device: &Device,
    ) -> Option<Tensor<2>> {
        let (next, completion) = self.sequence_reading_parts(slots, product_features, device)?;
        Some(mix_readings(next, completion, self.completion_weight()))
    }

    /// The encoder's reading at each row's scoring slot (the next basket) and, where `slots`
    /// hold completion queries, at each row's completion query (what goes with the latest
    /// basket), `[B, d]` each. `None` unless the model is sequential.
    fn sequence_reading_parts(
        &self,
        slots: &SequenceSlots,
        product_features: &EntityFeatures,
        device: &Device,
    ) -> Option<(Tensor<2>, Option<Tensor<2>>)> {
        self.sequence.as_ref()?;
        let read = self.encode(&slots.to_device(device), product_features)?;
        let [b, t, d] = read.dims();
        let read = read.reshape([b * t, d]);
        let next = read
            .clone()
            .select(0, ids_tensor(&slots.scoring_slots(), device));
        let completion = (slots.queries > 0)
            .then(|| read.select(0, ids_tensor(&slots.completion_slots(), device)));
        Some((next, completion))
    }

    /// Weight of the latest basket's completion query in a sequential model's reading (0 for
    /// the other models).
    pub fn completion_weight(&self) -> f64 {
        self.sequence
            .as_ref()
            .map_or(0.0, SequenceEncoder::completion_weight)
    }

    /// The same model reading customers with another completion weight (see
    /// [`SequenceEncoderConfig::completion_weight`]); other models are returned unchanged.
    pub fn with_completion_weight(mut self, weight: f64) -> Self {
        if let Some(encoder) = self.sequence.as_mut() {
            encoder.set_completion_weight(weight);
        }
        self
    }

    /// Each target's customer vector `[N, d]` in a sequential batch: the encoder's reading at
    /// the target's slot plus its customer's attributes; `None` for the other models.
    fn sequence_target_vectors(
        &self,
        batch: &SequenceBatch,
        customer_features: &EntityFeatures,
        product_features: &EntityFeatures,
    ) -> Option<Tensor<2>> {
        let read = self.encode(&batch.input, product_features)?;
        let [b, t, d] = read.dims();
        let attributes = self
            .customer_attribute_vectors(batch.customers.clone(), customer_features)
            .select(0, batch.target_rows.clone());
        let targets_customers = batch.customers.clone().select(0, batch.target_rows.clone());
        let read = read
            .reshape([b * t, d])
            .select(0, batch.target_slots.clone());
        Some(self.with_customer_embedding(read, targets_customers) + attributes)
    }

    /// `read` (`[B, d]`) plus customers' id embeddings when the sequential model adds them.
    fn with_customer_embedding(&self, read: Tensor<2>, customers: Tensor<1, Int>) -> Tensor<2> {
        let adds = self
            .sequence
            .as_ref()
            .is_some_and(SequenceEncoder::adds_customer_embedding);
        if adds {
            read + id_rows(&self.customer_id, customers)
        } else {
            read
        }
    }

    /// Each target's logit `[N]` from its customer vectors `u` `[N, d]`.
    fn positive_logits(
        &self,
        u: Tensor<2>,
        targets: Tensor<1, Int>,
        product_features: &EntityFeatures,
    ) -> Tensor<1> {
        let p = self.product_vectors(targets.clone(), product_features);
        (u * p).sum_dim(1).squeeze_dim::<1>(1) + self.product_biases(targets)
    }

    /// Logits of each target `[N]` and of the shared negatives `[N, K]` (accidental hits
    /// lowered), for a sequential model; `None` for the others. The plain tensor version of
    /// [`Recommender::sequence_loss`].
    pub fn sequence_logits(
        &self,
        batch: &SequenceBatch,
        customer_features: &EntityFeatures,
        product_features: &EntityFeatures,
    ) -> Option<(Tensor<1>, Tensor<2>)> {
        let u = self.sequence_target_vectors(batch, customer_features, product_features)?;
        let pos = self.positive_logits(u.clone(), batch.targets.clone(), product_features);
        let n = self.product_vectors(batch.negatives.clone(), product_features); // [K, d]
        let neg = u.matmul(n.transpose())
            + self
                .product_biases(batch.negatives.clone())
                .unsqueeze_dim::<2>(0);
        // A negative that is the target itself is no negative.
        let [rows, k] = neg.dims();
        let hits = batch
            .targets
            .clone()
            .unsqueeze_dim::<2>(1)
            .expand([rows, k])
            .equal(
                batch
                    .negatives
                    .clone()
                    .unsqueeze_dim::<2>(0)
                    .expand([rows, k]),
            );
        Some((pos, neg.mask_fill(hits, -1.0e9)))
    }

    /// The sequential model's training loss on a batch: each target's softmax against the
    /// negatives the batch shares (`losses::sampled_softmax` of
    /// [`Recommender::sequence_logits`]). Where tensors live in host memory the logit matrix
    /// is handled by hand (`recommender/sampled_softmax.rs`); the encoder trains by
    /// autodiff either way. An error for a model without a sequence encoder.
    pub fn sequence_loss(
        &self,
        batch: &SequenceBatch,
        customer_features: &EntityFeatures,
        product_features: &EntityFeatures,
    ) -> Result<Tensor<1>, String> {
        const NOT_SEQUENTIAL: &str =
            "the sequential loss was asked of a model without a sequence encoder";
        if !memory_is_host(&batch.targets.device()) {
            let (pos, neg) = self
                .sequence_logits(batch, customer_features, product_features)
                .ok_or(NOT_SEQUENTIAL)?;
            return Ok(crate::losses::sampled_softmax(pos, neg));
        }
        let u = self
            .sequence_target_vectors(batch, customer_features, product_features)
            .ok_or(NOT_SEQUENTIAL)?;
        let host_ids = |t: &Tensor<1, Int>| -> Vec<u32> {
            t.clone()
                .into_data()
                .iter::<i64>()
                .map(|x| x as u32)
                .collect()
        };
        let (target_ids, negative_ids) = (host_ids(&batch.targets), host_ids(&batch.negatives));
        sampled_softmax::host_sampled_softmax(sampled_softmax::SoftmaxInputs {
            positive: self.positive_logits(u.clone(), batch.targets.clone(), product_features),
            u,
            negatives: self.product_vectors(batch.negatives.clone(), product_features),
            negative_bias: self.product_biases(batch.negatives.clone()),
            target_ids: &target_ids,
            negative_ids: &negative_ids,
        })
    }

    /// Mean of the customer id embeddings: the "average customer" that a new customer starts
    /// from.
    pub fn mean_customer_id_embedding(&self) -> Tensor<2> {
        self.customer_id.weight.val().mean_dim(0)
    }

    /// The id tables that grow with the shop: customer and product id embeddings (`[C, d]`,
    /// `[P, d]`) and product biases (`[P, 1]`). A sparse optimiser trains these row by row
    /// ([`crate::optim::LazyAdamTable`]) and writes them back with [`Recommender::with_id_tables`].
    pub fn id_tables(&self) -> [Tensor<2>; 3] {
        [
            self.customer_id.weight.val(),
            self.product_id.weight.val(),
            self.product_bias.weight.val(),
        ]
    }

    /// Draws the initial values of the tables a dense training step reads first, in that step's
    /// order (customer ids, customer attributes, product ids, product biases, product
    /// attributes). Burn draws a parameter when it is first read: the dense step calls this first,
    /// and so does lazy Adam before it copies the id tables, so both start from one network.
    pub fn draw_parameters_in_step_order(&self) {
        let _ = self.customer_id.weight.val();
        let _ = self.customer_attribute.weight.val();
        let _ = self.product_id.weight.val();
        let _ = self.product_bias.weight.val();
        let _ = self.product_attribute.weight.val();
    }

    /// The same network with its id tables replaced (shapes as [`Recommender::id_tables`]).
    pub fn with_id_tables(mut self, [customers, products, biases]: [Tensor<2>; 3]) -> Self {
        self.customer_id.weight = self.customer_id.weight.map(|_| customers);
        self.product_id.weight = self.product_id.weight.map(|_| products);
        self.product_bias.weight = self.product_bias.weight.map(|_| biases);
        self
    }

    /// The id-table rows a batch reads, from the network's own tables (dense training: the
    /// gradient reaches the whole tables).
    pub fn batch_id_rows(&self, batch: &InteractionBatch) -> BatchIdRows {
        // Burn draws a parameter's initial values when it is first read: one order for every
        // path, so a seed gives one initial network.
        self.draw_parameters_in_step_order();
        BatchIdRows {
            customers: id_rows(&self.customer_id, batch.customers.clone()),
            positives: id_rows(&self.product_id, batch.positives.clone()),
            negatives: id_rows(&self.product_id, batch.negatives.clone()),
            positive_biases: self.product_biases(batch.positives.clone()),
            negative_biases: self.product_biases(batch.negatives.clone()),
        }
    }

    /// Logits of positives `[B]` and negatives `[B, k]`, plus the batch's squared vector norm.
    pub fn batch_logits(
        &self,
        batch: &InteractionBatch,
        customer_features: &EntityFeatures,
        product_features: &EntityFeatures,
    ) -> (Tensor<1>, Tensor<2>, Tensor<1>) {
        let rows = self.batch_id_rows(batch);
        self.batch_logits_from_rows(batch, rows, customer_features, product_features)
    }

    /// [`Recommender::batch_logits`] over id rows given by the caller: the rows gathered for a
    /// sparse optimiser (leaves of the graph whose gradients it reads), or the network's own.
    pub fn batch_logits_from_rows(
        &self,
        batch: &InteractionBatch,
        rows: BatchIdRows,
        customer_features: &EntityFeatures,
        product_features: &EntityFeatures,
    ) -> (Tensor<1>, Tensor<2>, Tensor<1>) {
        let k = batch.negatives_per_positive;
        let u = with_attributes(
            rows.customers,
            &self.customer_attribute,
            customer_features,
            batch.customers.clone(),
        ); // [B, d]
        let [b, d] = u.dims();
        let p = with_attributes(
            rows.positives,
            &self.product_attribute,
            product_features,
            batch.positives.clone(),
        ); // [B, d]
        let n = with_attributes(
            rows.negatives,
            &self.product_attribute,
            product_features,
            batch.negatives.clone(),
        )
        .reshape([b, k, d]);
        let pos = self.pair_scores(u.clone(), p.clone(), rows.positive_biases);
        let neg_bias = rows.negative_biases.reshape([b, k]);
        let neg = match &self.neumf {
            // Broadcast `[B, 1, d] * [B, k, d]` rather than repeating the customer rows.
            None => {
                (n.clone() * u.clone().unsqueeze_dim::<3>(1))
                    .sum_dim(2)
                    .squeeze_dim::<2>(2)
                    + neg_bias
            }
            Some(head) => {
                let u_rep = u
                    .clone()
                    .unsqueeze_dim::<3>(1)
                    .repeat_dim(1, k)
                    .reshape([b * k, d]);
                head.pair_scores(u_rep, n.clone().reshape([b * k, d]))
                    .reshape([b, k])
                    + neg_bias
            }
        };
        // `square`, not `powf_scalar(2.0)`: flex computes the latter with a general `powf` per element,
        // which cost half of a training step.
        let norms = u.square().sum() + p.square().sum() + n.square().sum();
        (pos, neg, norms)
    }
}

#[cfg(test)]
mod tests;

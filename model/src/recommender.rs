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
//!   half so it is still two matrix products.

use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::IndexingUpdateOp;
use rayon::prelude::*;

use crate::fused_lstm::{host_values, matmul};

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
    /// `two_tower` or `neumf`.
    #[config(default = "String::from(\"two_tower\")")]
    pub architecture: String,
    /// Hidden sizes of the NeuMF MLP (unused by `two_tower`).
    #[config(default = "vec![64, 32]")]
    pub mlp_layers: Vec<usize>,
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
}

/// GMF + MLP scoring head of NeuMF.
#[derive(Module, Debug)]
pub struct NeuMfHead {
    /// First layer over `[customer; product]`, then the hidden layers.
    mlp: Vec<Linear>,
    /// Over `[customer ⊙ product; last hidden]`.
    output: Linear,
    embedding_dim: usize,
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
            neumf: (self.architecture == "neumf").then(|| {
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

impl NeuMfHead {
    /// Scores of matching rows of `u` and `p` (`[N, d]` each) -> `[N]`, without the bias.
    fn pair_scores(&self, u: Tensor<2>, p: Tensor<2>) -> Tensor<1> {
        let mut h = Tensor::cat(vec![u.clone(), p.clone()], 1);
        for layer in &self.mlp {
            h = relu(layer.forward(h));
        }
        self.output
            .forward(Tensor::cat(vec![u * p, h], 1))
            .squeeze_dim::<1>(1)
    }

    /// `[C, P]` scores of every customer row with every product, without the bias.
    fn all_scores(&self, u: Tensor<2>, m: &ProductMatrix) -> Tensor<2> {
        let d = self.embedding_dim;
        let [c, _] = u.dims();
        let p = m.vectors.dims()[0];
        let out_w = self.output.weight.val(); // [d + h_last, 1]
        let h_last = out_w.dims()[0] - d;
        let gmf_w = out_w.clone().narrow(0, 0, d).reshape([1, d]);
        let gmf = (u.clone() * gmf_w).matmul(m.transposed.clone()); // [C, P]
        let first = &self.mlp[0];
        let w_u = first.weight.val().narrow(0, 0, d); // customer half of the first layer
        let mut a = u.matmul(w_u);
        if let Some(b) = &first.bias {
            a = a + b.val().unsqueeze_dim::<2>(0);
        }
        let h1 = a.dims()[1];
        let product_part = match &m.mlp_product_part {
            Some(t) => t.clone(),
            None => return gmf, // not built for NeuMF: cannot happen through `product_matrix`
        };
        let mut h: Tensor<2> = relu(
            a.unsqueeze_dim::<3>(1) + product_part.unsqueeze_dim::<3>(0), // [C, P, h1]
        )
        .reshape([c * p, h1]);
        for layer in self.mlp.iter().skip(1) {
            h = relu(layer.forward(h));
        }
        let mlp_w = out_w.narrow(0, d, h_last); // [h_last, 1]
        let mut mlp = h.matmul(mlp_w).reshape([c, p]);
        if let Some(b) = &self.output.bias {
            mlp = mlp + b.val().unsqueeze_dim::<2>(0);
        }
        gmf + mlp
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
    /// `budget_floats` floats (NeuMF materialises a `[C, P, h]` activation).
    pub fn customers_per_chunk(&self, n_products: usize, budget_floats: usize) -> usize {
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

    /// Mean of the customer id embeddings: the "average customer" that a new customer starts
    /// from.
    pub fn mean_customer_id_embedding(&self) -> Tensor<2> {
        self.customer_id.weight.val().mean_dim(0)
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
        let pos = self.pair_scores(
            u.clone(),
            p.clone(),
            self.product_biases(batch.positives.clone()),
        );
        let neg_bias = self.product_biases(batch.negatives.clone()).reshape([b, k]);
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

/// How a new customer's vector is fitted to the items they are known to have chosen.
#[derive(Config, Debug)]
pub struct FoldInConfig {
    #[config(default = 60)]
    pub steps: usize,
    #[config(default = 0.05)]
    pub learning_rate: f64,
    /// Weight of a not-chosen product relative to a chosen one, times the catalogue size: the
    /// negatives per positive used in training.
    #[config(default = 4.0)]
    pub negatives_per_positive: f64,
    /// Pull of the fitted offset towards zero (the customer's attribute-based start).
    #[config(default = 0.01)]
    pub l2: f64,
}

impl Recommender {
    /// Fits vectors for customers unknown to the model from a few products each (fold-in):
    /// starting from `start` (`[C, d]`, e.g. attributes plus the average customer), an offset per
    /// customer is fitted by gradient steps on the training loss over the whole catalogue
    /// (chosen products positive, every other product a weighted negative) with the model frozen.
    /// `self` and `products` must live on an autodiff device; the result is on `plain`.
    pub fn fold_in(
        &self,
        start: Tensor<2>,
        chosen: &[Vec<u32>],
        products: &ProductMatrix,
        config: &FoldInConfig,
        plain: &Device,
    ) -> Tensor<2> {
        let [c, d] = start.dims();
        let n_p = products.len();
        let ad = products.bias.device();
        let mut targets = vec![0f32; c * n_p];
        let mut pos_weight = vec![0f32; c];
        for (row, items) in chosen.iter().enumerate() {
            for &p in items {
                if (p as usize) < n_p {
                    targets[row * n_p + p as usize] = 1.0;
                }
            }
            let n = items.len().max(1) as f32;
            pos_weight[row] = 1.0 / n;
        }
        let targets = Tensor::<2>::from_data(TensorData::new(targets, [c, n_p]), &ad);
        let pos_weight = Tensor::<2>::from_data(TensorData::new(pos_weight, [c, 1]), &ad);
        let neg_weight = (config.negatives_per_positive / n_p.max(1) as f64) as f32;
        let start_ad = Tensor::<2>::from_data(start.clone().into_data(), &ad);
        let mut offset = Tensor::<2>::zeros([c, d], plain);
        let (mut m, mut v) = (offset.zeros_like(), offset.zeros_like());
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        for step in 1..=config.steps {
            let e = Tensor::<2>::from_data(offset.clone().into_data(), &ad).require_grad();
            let scores = self.score_all(start_ad.clone() + e.clone(), products);
            // Positives: -log sigmoid(s) / |chosen|; every other product: softplus(s) * weight.
            let pos = burn::tensor::activation::log_sigmoid(scores.clone()).neg()
                * targets.clone()
                * pos_weight.clone();
            let neg = burn::tensor::activation::softplus(scores, 1.0)
                * targets.clone().neg().add_scalar(1.0)
                * neg_weight;
            let loss = pos.sum() + neg.sum() + e.clone().square().sum() * config.l2;
            let grads = loss.backward();
            let Some(g) = e.grad(&grads) else { break };
            let g = Tensor::<2>::from_data(g.into_data(), plain);
            m = m * b1 + g.clone() * (1.0 - b1);
            v = v * b2 + g.square() * (1.0 - b2);
            let m_hat = m.clone() / (1.0 - b1.powi(step as i32));
            let v_hat = v.clone() / (1.0 - b2.powi(step as i32));
            offset = offset - m_hat / (v_hat.sqrt() + eps) * config.learning_rate;
        }
        start + offset
    }
}

impl Recommender {
    /// The `k` best products `(index, score)` per customer `[C, d]`, best first (ties: lower
    /// index first), leaving out each customer's `lists[c]` and every `blocked` product; fewer
    /// than `k` when not enough are left.
    ///
    /// Burn's `topk` sorts whole rows, which on a 20k-product catalogue costs several times the
    /// matrix product that made the scores, and its `gather` is slow on the CPU backends. So:
    /// - on a CPU backend (flex, ndarray), whose tensors live in host memory, the score matrix
    ///   is read as it is and one pass per row keeps the best `k` allowed products (most scores
    ///   fall below the k-th best so far at the first comparison);
    /// - on a GPU, on the device: the score matrix cut into blocks of about sqrt(P) columns, the
    ///   maximum of every block and the `k + m` blocks with the largest maxima (`m` the longest
    ///   exclusion list: the best `k` allowed products lie in them, as a product outside them is
    ///   beaten by `k + m` block maxima of which at most `m` are excluded). Only those blocks'
    ///   scores, about `(k + m) sqrt(P)` per customer instead of `P`, are read back, and the
    ///   host picks the best `k` allowed among them. Customers with long exclusion lists get
    ///   their exclusions written into the score matrix on the device first, so that `k` blocks
    ///   suffice.
    pub fn top_k_excluding(
        &self,
        customers: Tensor<2>,
        products: &ProductMatrix,
        lists: &[&[u32]],
        blocked: &[u32],
        k: usize,
    ) -> Result<Vec<Vec<(u32, f32)>>, String> {
        let on_host = crate::device::memory_is_host(&customers.device());
        self.select_top_k(customers, products, lists, blocked, k, on_host)
    }

    /// [`Recommender::top_k_excluding`] with the path chosen by the caller (the tests run the
    /// GPU path on the CPU too).
    fn select_top_k(
        &self,
        customers: Tensor<2>,
        products: &ProductMatrix,
        lists: &[&[u32]],
        blocked: &[u32],
        k: usize,
        on_host: bool,
    ) -> Result<Vec<Vec<(u32, f32)>>, String> {
        let rows = lists.len();
        let n_p = products.len();
        if rows == 0 || n_p == 0 || k == 0 {
            return Ok(vec![Vec::new(); rows]);
        }
        let mut blocked_sorted = blocked.to_vec();
        blocked_sorted.sort_unstable();
        if on_host && self.neumf.is_none() {
            return host_top_k(customers, products, lists, &blocked_sorted, k);
        }
        let device = customers.device();
        let mut scores = self.score_all(customers, products);
        let longest = lists.iter().map(|l| l.len()).max().unwrap_or(0) + blocked.len();
        // A CPU backend's tensors are in host memory already: read the scores as they are
        // (one block per row) and select there.
        let block = if on_host {
            n_p
        } else {
            block_size(n_p, k + longest)
        };
        let blocks = n_p.div_ceil(block);
        let (wide, penalised) = if on_host || (k + longest) * 2 <= blocks {
            (k + longest, false)
        } else {
            let ex = Exclusions::new(lists, blocked, &device);
            scores = scores.scatter(1, ex.indices, ex.penalties, IndexingUpdateOp::Add);
            (k.min(blocks), true)
        };
        // Held as `TensorData` and borrowed as a slice: on a CPU backend that is the score
        // matrix itself, no copy.
        let read = |t: Tensor<2>| -> TensorData { t.into_data().convert::<f32>() };
        // Per row, the candidate blocks (all of them when the catalogue is read back whole) and
        // their scores, `block` per candidate block.
        let (top_blocks, values, wide) = if on_host || wide * block * 2 >= n_p {
            // Small catalogue, or most blocks needed anyway: read the rows back whole.
            let padded = pad_columns(scores, blocks * block);
            let all: Vec<i64> = (0..blocks as i64).collect();
            (all.repeat(rows), read(padded), blocks)
        } else {
            let blocked_scores = pad_columns(scores, blocks * block).reshape([rows, blocks, block]);
            let maxima = blocked_scores.clone().max_dim(2).reshape([rows, blocks]);
            let (_, top_blocks) = maxima.topk_with_indices(wide, 1); // [rows, wide]
            let candidates = blocked_scores.gather(
                1,
                top_blocks
                    .clone()
                    .reshape([rows, wide, 1])
                    .expand([rows, wide, block]),
            );
            let top_blocks = top_blocks
                .into_data()
                .convert::<i64>()
                .try_into_vec::<i64>()
                .map_err(|e| format!("reading indices back from the device: {e:?}"))?;
            (
                top_blocks,
                read(candidates.reshape([rows, wide * block])),
                wide,
            )
        };
        let values = values
            .as_slice::<f32>()
            .map_err(|e| format!("reading scores back from the device: {e:?}"))?;
        // Rows are independent: select on every core.
        Ok(lists
            .par_iter()
            .enumerate()
            .map(|(row, own)| {
                let mut best = TopK::new(k, own, &blocked_sorted, n_p, !penalised);
                for (j, &b) in top_blocks[row * wide..(row + 1) * wide].iter().enumerate() {
                    let first = (row * wide + j) * block;
                    best.scan(&values[first..first + block], b as usize * block);
                }
                best.into_sorted()
            })
            .collect())
    }
}

/// Top-k with exclusions on the CPU backends for the two-tower model: scores are computed in
/// blocks of a few customers by 2048 products straight into a buffer that stays in cache and
/// selected from there, so the `[C, P]` score matrix is never written to memory. Each element
/// is the same `[u, 1] . [v, bias]` product (in the same order) as [`Recommender::score_all`].
fn host_top_k(
    customers: Tensor<2>,
    products: &ProductMatrix,
    lists: &[&[u32]],
    blocked_sorted: &[u32],
    k: usize,
) -> Result<Vec<Vec<(u32, f32)>>, String> {
    // About 48 customers x 2048 products per block (measured best of 16-48 rows; the block,
    // 384 KiB, stays in the core's cache), in a number of groups that divides evenly over
    // the threads.
    const BLOCK: usize = 2048;
    let threads = rayon::current_num_threads().max(1);
    let [rows, d] = customers.dims();
    let n_p = products.len();
    let d1 = d + 1;
    let catalogue = products.host_rows()?;
    let u = host_values(customers)?;
    let mut with_one = vec![1f32; rows * d1];
    for (dst, src) in with_one.chunks_exact_mut(d1).zip(u.chunks_exact(d.max(1))) {
        dst[..d].copy_from_slice(&src[..d]);
    }
    let group = rows
        .div_ceil(rows.div_ceil(48).next_multiple_of(threads))
        .max(1);
    let groups: Vec<usize> = (0..rows).step_by(group).collect();
    let selected: Vec<Vec<Vec<(u32, f32)>>> = groups
        .par_iter()
        .map(|&r0| {
            let g = group.min(rows - r0);
            let mut best: Vec<TopK> = (r0..r0 + g)
                .map(|r| TopK::new(k, lists[r], blocked_sorted, n_p, true))
                .collect();
            let mut scores = vec![0f32; g * BLOCK];
            for p0 in (0..n_p).step_by(BLOCK) {
                let pb = BLOCK.min(n_p - p0);
                matmul(
                    &mut scores,
                    (g, pb, d1),
                    false,
                    (&with_one[r0 * d1..], d1, 1),
                    (&catalogue[p0 * d1..], 1, d1),
                );
                for (i, b) in best.iter_mut().enumerate() {
                    b.scan(&scores[i * pb..(i + 1) * pb], p0);
                }
            }
            best.into_iter().map(TopK::into_sorted).collect()
        })
        .collect();
    Ok(selected.into_iter().flatten().collect())
}

/// The best `k` allowed products of one customer, fed scores block by block.
struct TopK<'a> {
    k: usize,
    /// Sorted: best first, ties by product index.
    best: Vec<(u32, f32)>,
    /// Scores below this cannot enter (the k-th best so far, once there are k).
    floor: f32,
    own: Vec<u32>,
    blocked: &'a [u32],
    n_p: usize,
    /// False when the exclusions were already written into the scores (as penalties).
    check_exclusions: bool,
}

impl<'a> TopK<'a> {
    fn new(k: usize, own: &[u32], blocked: &'a [u32], n_p: usize, check: bool) -> Self {
        let mut own = own.to_vec();
        own.sort_unstable();
        TopK {
            k,
            best: Vec::with_capacity(k + 1),
            floor: -1.0e29,
            own,
            blocked,
            n_p,
            check_exclusions: check,
        }
    }

    fn order(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
        b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
    }

    fn allowed(&self, p: u32) -> bool {
        (p as usize) < self.n_p
            && (!self.check_exclusions
                || (self.own.binary_search(&p).is_err() && self.blocked.binary_search(&p).is_err()))
    }

    /// Offers `scores` of products `first, first + 1, ...`.
    fn scan(&mut self, scores: &[f32], first: usize) {
        let k = self.k;
        for (run, chunk) in scores.chunks(64).enumerate() {
            // A vectorised maximum skips runs of 64 scores that cannot enter.
            if chunk.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x)) < self.floor {
                continue;
            }
            for (within, &v) in chunk.iter().enumerate() {
                // Ties go on to the full order.
                if v < self.floor || v <= -1.0e29 {
                    continue;
                }
                let p = (first + run * 64 + within) as u32;
                let candidate = (p, v);
                if (self.best.len() == k
                    && Self::order(&candidate, &self.best[k - 1]) != std::cmp::Ordering::Less)
                    || !self.allowed(p)
                {
                    continue;
                }
                let at = self
                    .best
                    .partition_point(|x| Self::order(x, &candidate).is_lt());
                self.best.insert(at, candidate);
                self.best.truncate(k);
                if self.best.len() == k {
                    self.floor = self.best[k - 1].1;
                }
            }
        }
    }

    fn into_sorted(self) -> Vec<(u32, f32)> {
        self.best
    }
}

/// `scores` widened to `width` columns with a value below any score (penalised ones included).
fn pad_columns(scores: Tensor<2>, width: usize) -> Tensor<2> {
    let [rows, p] = scores.dims();
    if width <= p {
        return scores;
    }
    let pad = Tensor::<2>::full([rows, width - p], -1.0e38, &scores.device());
    Tensor::cat(vec![scores, pad], 1)
}

/// Products to keep out of each customer's list (already bought, out of stock), as a small
/// `[C, m]` table of product indices and penalties that is added onto the score matrix on the
/// device: m is the longest list, far smaller than the catalogue, so nothing catalogue-sized
/// crosses from the host.
#[derive(Debug, Clone)]
struct Exclusions {
    indices: Tensor<2, Int>,
    penalties: Tensor<2>,
}

impl Exclusions {
    /// Each row excludes its own list and every product of `blocked`.
    fn new(lists: &[&[u32]], blocked: &[u32], device: &Device) -> Self {
        let rows = lists.len();
        let width = lists.iter().map(|l| l.len()).max().unwrap_or(0) + blocked.len();
        let width = width.max(1);
        // Padding adds 0 to product 0.
        let mut indices = vec![0i64; rows * width];
        let mut penalties = vec![0f32; rows * width];
        for (r, list) in lists.iter().enumerate() {
            for (j, &p) in list.iter().chain(blocked).enumerate() {
                indices[r * width + j] = p as i64;
                penalties[r * width + j] = -1.0e30;
            }
        }
        Exclusions {
            indices: Tensor::from_data(TensorData::new(indices, [rows, width]), device),
            penalties: Tensor::from_data(TensorData::new(penalties, [rows, width]), device),
        }
    }
}

/// Columns per block: about sqrt(P) and at least `k`, preferably a divisor of P (padding the
/// score matrix to whole blocks costs a copy of it).
fn block_size(p: usize, k: usize) -> usize {
    let root = ((p as f64).sqrt().ceil() as usize).max(1);
    let lowest = k.max(1).max(root / 2);
    (root.max(lowest)..=2 * root.max(lowest))
        .find(|b| p % b == 0)
        .or_else(|| (lowest..root).rev().find(|b| p % b == 0))
        .unwrap_or(root.max(lowest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(n: usize, tokens: usize, device: &Device) -> EntityFeatures {
        // Entity i carries tokens (i % tokens) and ((i * 7) % tokens), stored as id + 1.
        let mut padded = Vec::with_capacity(n * 2);
        for i in 0..n {
            padded.push((i % tokens) as i64 + 1);
            padded.push(((i * 7) % tokens) as i64 + 1);
        }
        EntityFeatures::new(padded, 2, device)
    }

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 values")
    }

    /// The catalogue-wide fast path (`score_all`, first MLP layer split in two) gives the same
    /// scores as scoring every pair one by one, for both architectures.
    #[test]
    fn score_all_matches_pairwise_scores() {
        let device = Device::flex();
        for architecture in ["two_tower", "neumf"] {
            let config = RecommenderConfig::new(9, 13, 5, 6)
                .with_embedding_dim(8)
                .with_architecture(architecture.into())
                .with_mlp_layers(vec![12, 6]);
            let model = crate::seeded_init(&device, 3, || config.init(&device));
            let (cf, pf) = (features(9, 5, &device), features(13, 6, &device));
            let customers: Vec<u32> = (0..9).collect();
            let products: Vec<u32> = (0..13).collect();
            let u = model.customer_vectors(ids_tensor(&customers, &device), &cf);
            let p_ids = ids_tensor(&products, &device);
            let matrix = model.product_matrix(
                model.product_vectors(p_ids.clone(), &pf),
                model.product_biases(p_ids),
            );
            let fast = values(model.score_all(u, &matrix));
            // Pair by pair through the training path (`batch_logits` positives).
            let mut slow = Vec::new();
            for c in 0..9u32 {
                let batch = InteractionBatch {
                    customers: ids_tensor(&vec![c; 13], &device),
                    positives: ids_tensor(&products, &device),
                    weights: Tensor::ones([13], &device),
                    negatives: ids_tensor(&products, &device),
                    negatives_per_positive: 1,
                };
                let (pos, _, _) = model.batch_logits(&batch, &cf, &pf);
                slow.extend(
                    pos.into_data()
                        .convert::<f32>()
                        .try_into_vec::<f32>()
                        .expect("f32 values"),
                );
            }
            for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                assert!(
                    (a - b).abs() < 1e-4,
                    "{architecture}: pair {i}: score_all {a} vs pairwise {b}"
                );
            }
        }
    }

    /// The recency term adds `weight` times the mean vector of each row's recent products.
    #[test]
    fn recency_term_adds_the_mean_of_recent_product_vectors() {
        let device = Device::flex();
        let config = RecommenderConfig::new(2, 5, 1, 1).with_embedding_dim(3);
        let model = crate::seeded_init(&device, 9, || config.init(&device));
        let v: Vec<f32> = (0..15).map(|i| i as f32 * 0.1).collect();
        let vectors = Tensor::<2>::from_data(TensorData::new(v.clone(), [5, 3]), &device);
        let matrix = model.product_matrix(vectors, Tensor::zeros([5], &device));
        let u = Tensor::<2>::from_data(
            TensorData::new(vec![1f32, 2., 3., 4., 5., 6.], [2, 3]),
            &device,
        );
        let out = values(model.with_recent(u, &[vec![1, 2], vec![]], &matrix, 0.5));
        for j in 0..3 {
            let expected = [1f32, 2., 3.][j] + 0.5 * (v[3 + j] + v[6 + j]) / 2.0;
            assert!(
                (out[j] - expected).abs() < 1e-5,
                "row 0, {j}: {} vs {expected}",
                out[j]
            );
            assert!(
                (out[3 + j] - [4f32, 5., 6.][j]).abs() < 1e-6,
                "row 1 must not move"
            );
        }
    }

    /// Folding in a new customer who chose two products lowers the fold-in objective and, for the
    /// dot-product model, ranks those products near the top.
    #[test]
    fn fold_in_moves_a_new_customer_towards_their_products() {
        let plain = Device::flex();
        let ad = plain.clone().autodiff();
        for (architecture, seed) in (0..12u64).flat_map(|s| [("two_tower", s), ("neumf", s)]) {
            // 32 dimensions for 20 products: random product vectors are nearly orthogonal, so a
            // customer vector can favour any two of them.
            let config = RecommenderConfig::new(4, 20, 3, 20)
                .with_embedding_dim(32)
                .with_architecture(architecture.into())
                .with_mlp_layers(vec![8]);
            let model = crate::seeded_init(&ad, seed, || config.init(&ad));
            let pf = features(20, 20, &ad); // every product its own attributes
            let ids: Vec<u32> = (0..20).collect();
            let t = ids_tensor(&ids, &ad);
            let matrix = model
                .product_matrix(
                    model.product_vectors(t.clone(), &pf),
                    model.product_biases(t),
                )
                .detach();
            // An arbitrary starting customer, not aimed at the chosen products.
            let start_values: Vec<f32> = (0..32).map(|i| (i as f32 * 1.7).sin() * 0.1).collect();
            let start = Tensor::<2>::from_data(TensorData::new(start_values, [1, 32]), &plain);
            let rank_of = |u: Tensor<2>, product: usize| -> usize {
                let scores =
                    values(model.score_all(Tensor::from_data(u.into_data(), &ad), &matrix));
                scores.iter().filter(|s| **s > scores[product]).count()
            };
            let chosen = vec![vec![3u32, 11]];
            let fitted = model.fold_in(
                start.clone(),
                &chosen,
                &matrix,
                &FoldInConfig::new().with_steps(150),
                &plain,
            );
            // The fold-in objective (without its small L2 term): chosen products' -log sigmoid,
            // every other product's softplus weighted by negatives / catalogue size.
            let objective = |u: Tensor<2>| -> f32 {
                let scores =
                    values(model.score_all(Tensor::from_data(u.into_data(), &ad), &matrix));
                let softplus = |x: f32| (1.0 + x.exp()).ln();
                scores
                    .iter()
                    .enumerate()
                    .map(|(p, s)| match p {
                        3 | 11 => softplus(-s) / 2.0,
                        _ => softplus(*s) * 4.0 / 20.0,
                    })
                    .sum()
            };
            let (before, after) = (objective(start.clone()), objective(fitted.clone()));
            assert!(
                after < before,
                "{architecture}, seed {seed}: the fold-in objective rose from {before} to {after}"
            );
            if architecture == "two_tower" {
                // A dot product on nearly orthogonal vectors puts both at the top.
                for product in [3usize, 11] {
                    let after = rank_of(fitted.clone(), product);
                    assert!(
                        after < 2,
                        "seed {seed}: chosen product {product} ranks {after}"
                    );
                }
            }
        }
    }

    /// Every path (short exclusion lists filtered on the host, long ones written into the score
    /// matrix; a catalogue in whole blocks, padded, or read back whole) gives the plain answer:
    /// every allowed product's score, sorted.
    #[test]
    fn top_k_excluding_matches_a_full_mask_on_both_paths() {
        for n_p in [3000, 3001, 50] {
            check_top_k_excluding(9, n_p);
        }
    }

    fn check_top_k_excluding(n_c: usize, n_p: usize) {
        let device = Device::flex();
        let model = crate::seeded_init(&device, 21, || {
            RecommenderConfig::new(n_c, n_p, 3, 3)
                .with_embedding_dim(8)
                .init(&device)
        });
        let cf = features(n_c, 3, &device);
        let pf = features(n_p, 3, &device);
        let all: Vec<u32> = (0..n_p as u32).collect();
        let matrix = model.product_matrix(
            model.product_vectors(ids_tensor(&all, &device), &pf),
            model.product_biases(ids_tensor(&all, &device)),
        );
        let customers: Vec<u32> = (0..n_c as u32).collect();
        let u = model.customer_vectors(ids_tensor(&customers, &device), &cf);
        let full = values(model.score_all(u.clone(), &matrix));
        for list_len in [3usize, 200] {
            let lists: Vec<Vec<u32>> = (0..n_c)
                .map(|c| {
                    (0..list_len)
                        .map(|j| ((c * 131 + j * 17) % n_p) as u32)
                        .collect()
                })
                .collect();
            let refs: Vec<&[u32]> = lists.iter().map(Vec::as_slice).collect();
            let blocked = [7u32, (n_p - 1) as u32];
            for on_host in [true, false] {
                let got = model
                    .select_top_k(u.clone(), &matrix, &refs, &blocked, 10, on_host)
                    .expect("scores");
                for c in 0..n_c {
                    let mut expected: Vec<(u32, f32)> = (0..n_p as u32)
                        .filter(|p| !lists[c].contains(p) && !blocked.contains(p))
                        .map(|p| (p, full[c * n_p + p as usize]))
                        .collect();
                    expected.sort_by(|a, b| b.1.total_cmp(&a.1));
                    expected.truncate(10);
                    // The same products in the same order; the CPU path computes each score
                    // in its own blocks, which may round the last bit differently.
                    let ids = |l: &[(u32, f32)]| l.iter().map(|x| x.0).collect::<Vec<_>>();
                    assert_eq!(
                        ids(&got[c]),
                        ids(&expected),
                        "customer {c}, lists of {list_len}, host {on_host}"
                    );
                    for (g, e) in got[c].iter().zip(&expected) {
                        assert!(
                            (g.1 - e.1).abs() <= 1e-6 * e.1.abs().max(1e-3),
                            "customer {c}: score {} vs {}",
                            g.1,
                            e.1
                        );
                    }
                }
            }
        }
    }
}

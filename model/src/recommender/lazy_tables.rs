//! The recommender's id tables under lazy Adam: host copies of the customer and product id
//! embeddings and the product biases that each step reads and updates row by row. A batch's rows
//! enter the graph as small leaf tensors; their gradients come back to the host and only those
//! rows (and their moments) move. The network's own tables are written from these copies before
//! it is validated or checkpointed, so a step costs the batch, not the shop's size.

use burn::prelude::*;
use burn::tensor::Gradients;

use super::{ids_tensor, BatchIdRows, Recommender};
use crate::host::host_values;
use crate::optim::{GatheredRows, LazyAdamTable};

type Result<T> = std::result::Result<T, String>;

/// Host copies of the three id tables with their lazy Adam state.
pub struct LazyTables {
    customers: LazyAdamTable,
    products: LazyAdamTable,
    biases: LazyAdamTable,
}

/// The leaves one step's rows were read through, to take their gradients from.
pub struct BatchLeaves {
    customer_rows: Vec<u32>,
    customers: Tensor<2>,
    product_rows: Vec<u32>,
    products: Tensor<2>,
    biases: Tensor<2>,
}

fn leaf(gathered: &GatheredRows, dim: usize, device: &Device) -> Tensor<2> {
    let data = TensorData::new(gathered.values.clone(), [gathered.rows.len(), dim]);
    Tensor::<2>::from_data(data, device).require_grad()
}

fn table_of(tensor: Tensor<2>) -> Result<LazyAdamTable> {
    let [_, dim] = tensor.dims();
    Ok(LazyAdamTable::new(host_values(tensor)?, dim))
}

impl LazyTables {
    /// Copies of `model`'s id tables, with zero moments.
    pub fn new(model: &Recommender) -> Result<Self> {
        model.draw_parameters_in_step_order();
        let [customers, products, biases] = model.id_tables();
        Ok(LazyTables {
            customers: table_of(customers)?,
            products: table_of(products)?,
            biases: table_of(biases)?,
        })
    }

    /// The rows of a batch (customers `[B]`, positives `[B]`, negatives `[B * k]`) as leaves on
    /// the autodiff `device`, and the [`BatchIdRows`] the network reads through them.
    pub fn gather(
        &mut self,
        (customers, positives, negatives): (&[u32], &[u32], &[u32]),
        device: &Device,
    ) -> Result<(BatchIdRows, BatchLeaves)> {
        let c = self.customers.gather(customers)?;
        let products: Vec<u32> = positives.iter().chain(negatives).copied().collect();
        let p = self.products.gather(&products)?;
        // The biases are a product table too: the same rows, in the same order.
        let biases = TensorData::new(self.biases.values_of(&p.rows), [p.rows.len(), 1]);
        let leaves = BatchLeaves {
            customers: leaf(&c, self.customers.dim(), device),
            products: leaf(&p, self.products.dim(), device),
            biases: Tensor::<2>::from_data(biases, device).require_grad(),
            customer_rows: c.rows,
            product_rows: p.rows,
        };
        let (pos_at, neg_at) = p.positions.split_at(positives.len());
        let (pos_at, neg_at) = (ids_tensor(pos_at, device), ids_tensor(neg_at, device));
        let bias_of = |at: Tensor<1, Int>| leaves.biases.clone().select(0, at).squeeze_dim::<1>(1);
        let rows = BatchIdRows {
            customers: leaves
                .customers
                .clone()
                .select(0, ids_tensor(&c.positions, device)),
            positives: leaves.products.clone().select(0, pos_at.clone()),
            negatives: leaves.products.clone().select(0, neg_at.clone()),
            positive_biases: bias_of(pos_at),
            negative_biases: bias_of(neg_at),
        };
        Ok((rows, leaves))
    }

    /// One lazy Adam step of the rows `leaves` read, with their gradients from `grads`.
    pub fn step(
        &mut self,
        learning_rate: f64,
        leaves: BatchLeaves,
        grads: &Gradients,
    ) -> Result<()> {
        let grad_of = |t: &Tensor<2>| -> Result<Option<Vec<f32>>> {
            t.grad(grads).map(host_values).transpose()
        };
        if let Some(g) = grad_of(&leaves.customers)? {
            self.customers
                .step(learning_rate, &leaves.customer_rows, &g);
        }
        if let Some(g) = grad_of(&leaves.products)? {
            self.products.step(learning_rate, &leaves.product_rows, &g);
        }
        if let Some(g) = grad_of(&leaves.biases)? {
            self.biases.step(learning_rate, &leaves.product_rows, &g);
        }
        Ok(())
    }

    /// `model` with its id tables replaced by these copies (on `device`).
    pub fn write_into(&self, model: Recommender, device: &Device) -> Recommender {
        let tensor = |t: &LazyAdamTable| {
            let data = TensorData::new(t.values(), [t.rows(), t.dim()]);
            Tensor::<2>::from_data(data, device)
        };
        model.with_id_tables([
            tensor(&self.customers),
            tensor(&self.products),
            tensor(&self.biases),
        ])
    }

    /// The moments and step counts of the three tables, for a checkpoint.
    pub fn state_bytes(&self) -> Vec<u8> {
        let mut out = self.customers.state_bytes();
        out.extend(self.products.state_bytes());
        out.extend(self.biases.state_bytes());
        out
    }

    /// A resumed job's tables, from `saved` (which holds the values as the tables store them,
    /// before any catch-up of missed steps; the checkpointed network's are those caught up).
    pub fn restore(&mut self, saved: &[u8]) -> Result<()> {
        let mut rest = saved;
        for table in [&mut self.customers, &mut self.products, &mut self.biases] {
            rest = table
                .restore_state(rest)
                .map_err(|e| format!("resuming the id tables: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Architecture, EntityFeatures, InteractionBatch, RecommenderConfig};
    use super::*;
    use crate::losses::sampled_bce;
    use burn::optim::GradientsParams;

    fn features(n: usize, device: &Device) -> EntityFeatures {
        let padded = (0..n).flat_map(|i| [(i % 3) as i64 + 1, 0]).collect();
        EntityFeatures::new(padded, 2, device)
    }

    /// Batch `step`: every customer and every product is read (as a positive or a negative), some
    /// twice, so lazy Adam must move the same rows as dense Adam.
    fn batch_ids(step: usize) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
        let customers = vec![0, 1, 2, 3, (step % 4) as u32];
        let positives: Vec<u32> = (0..5).map(|i| ((i + step) % 6) as u32).collect();
        let negatives: Vec<u32> = (0..10).map(|i| ((i * 5 + step) % 6) as u32).collect();
        (customers, positives, negatives)
    }

    /// The batch of [`batch_ids`] as tensors: 5 positives with 2 negatives each.
    fn batch_of((c, p, n): (&[u32], &[u32], &[u32]), device: &Device) -> InteractionBatch {
        InteractionBatch {
            customers: ids_tensor(c, device),
            positives: ids_tensor(p, device),
            weights: Tensor::ones([5], device),
            negatives: ids_tensor(n, device),
            negatives_per_positive: 2,
        }
    }

    fn loss_of(pos: Tensor<1>, neg: Tensor<2>, norms: Tensor<1>, device: &Device) -> Tensor<1> {
        sampled_bce(pos, neg, Tensor::ones([5], device)) + norms * 1e-3
    }

    /// With every row read at every step, training with the tables under lazy Adam ends with the
    /// same network as dense Adam, for both architectures (the gathered rows, their positions,
    /// the biases and the write-back are all on that path).
    #[test]
    fn lazy_adam_equals_dense_adam_when_every_row_is_read() {
        let device = Device::flex().autodiff();
        let (cf, pf) = (features(4, &device), features(6, &device));
        for architecture in [Architecture::TwoTower, Architecture::Neumf] {
            let config = RecommenderConfig::new(4, 6, 3, 3)
                .with_embedding_dim(5)
                .with_architecture(architecture)
                .with_mlp_layers(vec![4]);
            // One network, its parameters all drawn while the seed is held (a forward pass reads
            // each; a copy would draw later, from whatever another test left in the generator),
            // then copied.
            let start = crate::seeded_init(&device, 7, || {
                let model = config.init(&device);
                let (c, p, n) = batch_ids(0);
                let _ = model.batch_logits(&batch_of((&c, &p, &n), &device), &cf, &pf);
                model
            });
            let (mut dense, mut lazy) = (start.clone(), start.clone());
            let (mut dense_adam, mut lazy_adam) = (crate::optim::adam(), crate::optim::adam());
            let mut tables = LazyTables::new(&lazy).unwrap();
            for step in 0..6 {
                let (c, p, n) = batch_ids(step);
                let batch = batch_of((&c, &p, &n), &device);
                let (pos, neg, norms) = dense.batch_logits(&batch, &cf, &pf);
                let grads = loss_of(pos, neg, norms, &device).backward();
                let grads = GradientsParams::from_grads(grads, &dense);
                dense = dense_adam.step(0.05, dense, grads);

                let (rows, leaves) = tables.gather((&c, &p, &n), &device).unwrap();
                let (pos, neg, norms) = lazy.batch_logits_from_rows(&batch, rows, &cf, &pf);
                let grads = loss_of(pos, neg, norms, &device).backward();
                tables.step(0.05, leaves, &grads).unwrap();
                let grads = GradientsParams::from_grads(grads, &lazy);
                lazy = lazy_adam.step(0.05, lazy, grads);
            }
            lazy = tables.write_into(lazy, &device);
            let all = |m: &Recommender| {
                let c = m.customer_vectors(ids_tensor(&[0, 1, 2, 3], &device), &cf);
                let p_ids = ids_tensor(&[0, 1, 2, 3, 4, 5], &device);
                let p = m.product_vectors(p_ids.clone(), &pf);
                let scores = m.score_all(c.clone(), &m.product_matrix(p, m.product_biases(p_ids)));
                [c, scores].map(|t| host_values(t).unwrap())
            };
            let (want, got) = (all(&dense), all(&lazy));
            let moved = all(&start);
            assert!(
                want[1]
                    .iter()
                    .zip(&moved[1])
                    .any(|(a, b)| (a - b).abs() > 1e-2),
                "{architecture}: training did not move the scores"
            );
            for (w, g) in want.iter().zip(&got) {
                for (a, b) in w.iter().zip(g) {
                    assert!((a - b).abs() < 1e-4, "{architecture}: dense {a} lazy {b}");
                }
            }
        }
    }

    /// A seed gives one initial network whichever optimiser trains the id tables: lazy Adam
    /// copies the tables before the first step, dense Adam's step reads them in its own order,
    /// and Burn draws each parameter when it is first read.
    #[test]
    fn lazy_and_dense_training_start_from_the_same_network() {
        let device = Device::flex().autodiff();
        let (cf, pf) = (features(4, &device), features(6, &device));
        let config = RecommenderConfig::new(4, 6, 3, 3).with_embedding_dim(5);
        let (c, p, n) = batch_ids(0);
        let batch = batch_of((&c, &p, &n), &device);
        let first_scores = |lazy: bool| {
            let model = crate::seeded_init(&device, 11, || {
                let model = config.init(&device);
                let tables = lazy.then(|| LazyTables::new(&model).unwrap());
                let _ = model.batch_logits(&batch, &cf, &pf);
                (model, tables)
            });
            let (model, tables) = model;
            let model = match tables {
                Some(t) => t.write_into(model, &device),
                None => model,
            };
            let (pos, neg, _) = model.batch_logits(&batch, &cf, &pf);
            [pos.reshape([-1]), neg.reshape([-1])].map(|t| host_values(t).unwrap())
        };
        // Equal but for the rounding of matrix products that share the cores with other tests;
        // another initial network is 0.01-0.1 away.
        let (lazy, dense) = (first_scores(true), first_scores(false));
        for (l, d) in lazy.iter().flatten().zip(dense.iter().flatten()) {
            assert!((l - d).abs() < 1e-5, "lazy {l} dense {d}");
        }
    }
}

//! Cold start for customers: a customer the bundle has never seen starts from the average
//! customer plus their attributes' embeddings and, with recent items, is fitted to them with the
//! model frozen (fold-in). A sequential model needs no fitting: it reads the recent items as one
//! basket (a customer list gives them no order and no times) in one forward pass.

use anyhow::Result;
use burn::prelude::*;
use shopcast_datasets::artifacts::files;
use shopcast_model::recommender::ids_tensor;
use shopcast_model::{FoldInConfig, ProductMatrix, Recommender, SequenceEvent, SequenceSlots};

use super::catalogue::{token_tensors, Catalogue};
use super::load::{to_vec_f32, LoadedRecommender};

/// New customers fitted per fold-in call (bounds its `[C, P]` working set).
const FOLD_IN_CHUNK: usize = 256;
/// New customers read per encoder pass (bounds its `[C, T, T]` attention).
const SEQUENCE_CHUNK: usize = 1024;

impl LoadedRecommender {
    /// Vectors `[C, d]` of customers the bundle has not seen: the average customer plus their
    /// attributes, fitted to their recent products when they have any.
    pub fn new_customer_vectors(
        &self,
        attribute_tokens: &[Vec<u32>],
        recent: &[Vec<u32>],
        catalogue: &Catalogue,
    ) -> Result<Tensor<2>> {
        let n = attribute_tokens.len();
        let f = token_tensors(attribute_tokens, &self.device);
        let attributes = self
            .model
            .customer_vectors_from_attributes(f.tokens, f.weights);
        if self.model.is_sequential() {
            return Ok(attributes + self.recent_basket_readings(recent)?);
        }
        let start = attributes + self.model.mean_customer_id_embedding(); // broadcast [1, d]
        let with_items: Vec<usize> = (0..n).filter(|&i| !recent[i].is_empty()).collect();
        if with_items.is_empty() {
            return Ok(start);
        }
        // Fold-in needs gradients: the same weights on the autodiff twin of the device.
        let ad = self.device.clone().autodiff();
        let ad_model = self
            .bundle
            .load_module(files::RECOMMENDER_WEIGHTS, self.config.init(&ad))?;
        let ad_matrix = rebuild_on(&ad_model, catalogue, &ad)?;
        let fold = FoldInConfig::new();
        let mut rows = to_vec_f32(start.clone())?;
        let d = start.dims()[1];
        for chunk in with_items.chunks(FOLD_IN_CHUNK) {
            let idx = ids_tensor(
                &chunk.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                &self.device,
            );
            let chunk_start = start.clone().select(0, idx);
            let chosen: Vec<Vec<u32>> = chunk.iter().map(|&i| recent[i].clone()).collect();
            let fitted = to_vec_f32(ad_model.fold_in(
                chunk_start,
                &chosen,
                &ad_matrix,
                &fold,
                &self.device,
            ))?;
            for (k, &i) in chunk.iter().enumerate() {
                rows[i * d..(i + 1) * d].copy_from_slice(&fitted[k * d..(k + 1) * d]);
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(rows, [n, d]),
            &self.device,
        ))
    }
}

impl LoadedRecommender {
    /// A sequential model's reading `[C, d]` of each new customer's recent items as one basket
    /// bought just now (an empty list reads as a customer with no history, which training
    /// teaches at the first basket of every window). Products added after training (at or past
    /// the bundle's product count) have no row in the encoder's tables and are left out; of a
    /// list longer than the encoder's window, the last `max_sequence` listed are read.
    fn recent_basket_readings(&self, recent: &[Vec<u32>]) -> Result<Tensor<2>> {
        if recent.is_empty() {
            return Ok(Tensor::zeros([0, self.config.embedding_dim], &self.device));
        }
        let known_products = self.config.n_products as u32;
        let max_sequence = self.model.max_sequence();
        let mut readings = Vec::new();
        for chunk in recent.chunks(SEQUENCE_CHUNK) {
            let baskets: Vec<Vec<SequenceEvent>> = chunk
                .iter()
                .map(|items| {
                    items
                        .iter()
                        .filter(|&&p| p < known_products)
                        .map(|&product| SequenceEvent {
                            product,
                            ts: 0,
                            is_target: true,
                        })
                        .collect()
                })
                .collect();
            let windows: Vec<&[SequenceEvent]> = baskets.iter().map(Vec::as_slice).collect();
            let slots = SequenceSlots::scoring(&windows, max_sequence);
            readings.push(
                self.model
                    .sequence_readings(&slots, &self.product_features, &self.device)
                    .ok_or_else(|| anyhow::anyhow!("the model has no sequence encoder"))?,
            );
        }
        Ok(Tensor::cat(readings, 0))
    }
}

/// The catalogue's product matrix rebuilt for a model on another device (the same vectors and
/// biases, known and new products alike), cut off from the autodiff graph.
fn rebuild_on(
    model: &Recommender,
    catalogue: &Catalogue,
    device: &Device,
) -> Result<ProductMatrix> {
    let (p, d) = (catalogue.len(), catalogue.dim);
    let vectors = to_vec_f32(catalogue.matrix.vectors())?;
    let biases = to_vec_f32(catalogue.matrix.biases().unsqueeze_dim::<2>(0))?;
    Ok(model
        .product_matrix(
            Tensor::from_data(TensorData::new(vectors, [p, d]), device),
            Tensor::from_data(TensorData::new(biases, [p]), device),
        )
        .detach())
}

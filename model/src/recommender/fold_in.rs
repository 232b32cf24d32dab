//! Fold-in: a vector for a customer the model has never seen, fitted to a few products they
//! chose with the model frozen (Adam on the training loss over the whole catalogue).

use burn::prelude::*;

use super::{ProductMatrix, Recommender};

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
        // The training loops' Adam constants, applied by hand to the offsets (a raw tensor, not
        // a module).
        use crate::optim::{BETA_1, BETA_2, EPSILON};
        let (b1, b2, eps) = (BETA_1 as f64, BETA_2 as f64, EPSILON as f64);
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

//! Training losses: binary cross-entropy with sampled negatives, BPR, sampled softmax and the
//! pinball loss.

use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, log_softmax, softplus};

/// Weighted BCE on logits: positives `[B]` with weights `[B]`, negatives `[B, k]` with label 0.
pub fn sampled_bce(pos: Tensor<1>, neg: Tensor<2>, weights: Tensor<1>) -> Tensor<1> {
    let [b, k] = neg.dims();
    // -log sigmoid(x) for positives, -log(1 - sigmoid(x)) = softplus(x) for negatives.
    let pos_loss = (log_sigmoid(pos).neg() * weights.clone()).sum();
    let neg_loss = (softplus(neg, 1.0).sum_dim(1).squeeze_dim::<1>(1) * weights).sum();
    (pos_loss + neg_loss) / (b * (k + 1)) as f64
}

/// Bayesian personalised ranking: -log sigmoid(pos - neg), averaged over the k negatives.
pub fn bpr(pos: Tensor<1>, neg: Tensor<2>, weights: Tensor<1>) -> Tensor<1> {
    let [b, k] = neg.dims();
    let diff = pos.unsqueeze_dim::<2>(1) - neg; // [B, k]
    (log_sigmoid(diff).neg().sum_dim(1).squeeze_dim::<1>(1) * weights).sum() / (b * k) as f64
}

/// Sampled softmax cross-entropy: each positive `[N]` against its row of negatives `[N, k]`
/// (accidental hits already pushed to a very low logit). With every other product as the
/// negatives this is the exact softmax over the catalogue.
pub fn sampled_softmax(pos: Tensor<1>, neg: Tensor<2>) -> Tensor<1> {
    let logits = Tensor::cat(vec![pos.unsqueeze_dim::<2>(1), neg], 1);
    log_softmax(logits, 1).narrow(1, 0, 1).mean().neg()
}

/// Mean pinball (quantile) loss over known targets.
///
/// `forecast` is `[B, H, Q]`, `target` and `mask` are `[B, H]`.
pub fn pinball(
    forecast: Tensor<3>,
    target: Tensor<2>,
    mask: Tensor<2>,
    quantiles: &[f64],
) -> Tensor<1> {
    let [_, _, q] = forecast.dims();
    let device = forecast.device();
    let levels = Tensor::<1>::from_data(
        TensorData::new(quantiles.iter().map(|x| *x as f32).collect::<Vec<_>>(), [q]),
        &device,
    )
    .reshape([1, 1, q]);
    let err = target.unsqueeze_dim::<3>(2) - forecast; // y - y_hat
    let loss = (err.clone() * levels.clone()).max_pair(err * (levels - 1.0));
    let masked = loss * mask.clone().unsqueeze_dim::<3>(2);
    masked.sum() / (mask.sum() * q as f64).clamp_min(1.0)
}

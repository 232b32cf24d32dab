//! The sequential model's loss on host memory: a softmax of each target against the negatives
//! the batch shares, forward and backward by hand.
//!
//! With 6,400 targets and 1,024 negatives the logit matrix has 6.5 M entries. Built from tensor
//! operations it is written and read about ten times per step (the product, the bias, the mask,
//! the concatenation with the positives, the log-softmax and each of their backward passes):
//! measured in `benches/peers`, 77 of the step's ~190 ms. Here it lives in one host buffer: one
//! matrix product, one pass that turns each row into its softmax (the loss falls out of the
//! same pass), and two matrix products for the gradients of the customer and negative vectors.
//! Those gradients reach the network through a surrogate `sum(x * dL/dx)` whose value is
//! replaced by the loss, so the encoder below still trains by autodiff.

use burn::prelude::*;
use rayon::prelude::*;

use crate::fused_lstm::exp_in_place;
use crate::host::{host_values, matmul};

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 64;

/// The tensors the loss reads: `u` (`[N, d]`, each target's customer vector), `positive`
/// (`[N]`, its logit), `negatives` (`[K, d]`, the shared negatives' vectors) and
/// `negative_bias` (`[K]`), all on the training device; with the host ids of the targets
/// (`[N]`) and of the negatives (`[K]`): a negative that is the row's target is left out.
pub struct SoftmaxInputs<'a> {
    pub u: Tensor<2>,
    pub positive: Tensor<1>,
    pub negatives: Tensor<2>,
    pub negative_bias: Tensor<1>,
    pub target_ids: &'a [u32],
    pub negative_ids: &'a [u32],
}

/// What the host pass gives: the mean loss and the gradients of the mean loss.
struct HostSoftmax {
    loss: f64,
    d_u: Vec<f32>,
    d_positive: Vec<f32>,
    d_negatives: Vec<f32>,
    d_negative_bias: Vec<f32>,
}

/// The mean over targets of `-log softmax(positive, negatives)[0]`, with its gradients routed
/// into the autodiff graph (see the module comment). Equal to
/// [`crate::losses::sampled_softmax`] on the logits `u · negativesᵀ + bias` with the target's
/// own id masked out.
pub fn host_sampled_softmax(inputs: SoftmaxInputs<'_>) -> Result<Tensor<1>, String> {
    let [n, d] = inputs.u.dims();
    let k = inputs.negatives.dims()[0];
    if inputs.target_ids.len() != n || inputs.negative_ids.len() != k {
        return Err(format!(
            "sampled softmax: {} target ids for {n} rows, {} negative ids for {k} negatives",
            inputs.target_ids.len(),
            inputs.negative_ids.len()
        ));
    }
    let host = softmax_on_host(
        &host_values(inputs.u.clone())?,
        &host_values(inputs.positive.clone())?,
        &host_values(inputs.negatives.clone())?,
        &host_values(inputs.negative_bias.clone())?,
        (inputs.target_ids, inputs.negative_ids),
        (n, k, d),
    );
    let plain = inputs.u.device().inner();
    let constant2 =
        |v: Vec<f32>, shape: [usize; 2]| Tensor::<2>::from_data(TensorData::new(v, shape), &plain);
    let constant1 = |v: Vec<f32>| {
        let len = v.len();
        Tensor::<1>::from_data(TensorData::new(v, [len]), &plain)
    };
    let surrogate = (inputs.u * constant2(host.d_u, [n, d])).sum()
        + (inputs.positive * constant1(host.d_positive)).sum()
        + (inputs.negatives * constant2(host.d_negatives, [k, d])).sum()
        + (inputs.negative_bias * constant1(host.d_negative_bias)).sum();
    // The surrogate's gradients with the loss's value.
    Ok(surrogate.clone() - surrogate.detach() + host.loss)
}

/// The loss and its gradients for row-major `u` `[n, d]`, `positive` `[n]`, `negatives`
/// `[k, d]`, `bias` `[k]`.
fn softmax_on_host(
    u: &[f32],
    positive: &[f32],
    negatives: &[f32],
    bias: &[f32],
    ids: (&[u32], &[u32]),
    (n, k, d): (usize, usize, usize),
) -> HostSoftmax {
    let (probabilities, row_loss, d_positive) =
        scaled_probabilities(u, positive, negatives, bias, ids, (n, k, d));
    let mut d_u = vec![0.0f32; n * d];
    product_by_row_blocks(
        &mut d_u,
        (d, k),
        |first| (&probabilities[first * k..], k, 1),
        (negatives, d, 1),
    );
    // dL/dnegatives = probabilitiesᵀ · u, split over the negatives.
    let mut d_negatives = vec![0.0f32; k * d];
    product_by_row_blocks(
        &mut d_negatives,
        (d, n),
        |first| (&probabilities[first..], 1, k),
        (u, d, 1),
    );
    let d_negative_bias = column_sums(&probabilities, k);
    HostSoftmax {
        loss: row_loss.iter().sum::<f64>() / n.max(1) as f64,
        d_u,
        d_positive,
        d_negatives,
        d_negative_bias,
    }
}

/// The softmax of every row (its positive in the normaliser) over the negatives, `[n, k]`,
/// scaled by `1/n` (the mean's gradient), with each row's loss and `dL/dpositive`.
fn scaled_probabilities(
    u: &[f32],
    positive: &[f32],
    negatives: &[f32],
    bias: &[f32],
    (target_ids, negative_ids): (&[u32], &[u32]),
    (n, k, d): (usize, usize, usize),
) -> (Vec<f32>, Vec<f64>, Vec<f32>) {
    // First the logits, then, row by row, the softmax.
    let mut probabilities = vec![0.0f32; n * k];
    let mut row_loss = vec![0.0f64; n];
    let mut d_positive = vec![0.0f32; n];
    let scale = 1.0 / n as f32;
    probabilities
        .par_chunks_mut(ROWS_PER_TASK * k)
        .zip(row_loss.par_chunks_mut(ROWS_PER_TASK))
        .zip(d_positive.par_chunks_mut(ROWS_PER_TASK))
        .enumerate()
        .for_each(|(task, ((p, loss), d_pos))| {
            let first = task * ROWS_PER_TASK;
            let rows = loss.len();
            matmul(
                p,
                (rows, k, d),
                false,
                (&u[first * d..], d, 1),
                (negatives, 1, d),
            );
            for (r, row) in p.chunks_mut(k).enumerate() {
                let i = first + r;
                let (l, g) = row_softmax(row, positive[i], bias, target_ids[i], negative_ids);
                loss[r] = l;
                d_pos[r] = g * scale;
                row.iter_mut().for_each(|x| *x *= scale);
            }
        });
    (probabilities, row_loss, d_positive)
}

/// `out` (`[rows, width]`) = lhs `[rows, inner]` · rhs `[inner, width]`, in blocks of
/// [`ROWS_PER_TASK`] rows on every core; `lhs_from(first)` gives the left operand (with its row
/// and column strides) starting at row `first`.
fn product_by_row_blocks<'a>(
    out: &mut [f32],
    (width, inner): (usize, usize),
    lhs_from: impl Fn(usize) -> (&'a [f32], usize, usize) + Sync,
    rhs: (&[f32], usize, usize),
) {
    out.par_chunks_mut(ROWS_PER_TASK * width)
        .enumerate()
        .for_each(|(task, block)| {
            let rows = block.len() / width;
            matmul(
                block,
                (rows, width, inner),
                false,
                lhs_from(task * ROWS_PER_TASK),
                rhs,
            );
        });
}

/// Turns one row of logits (before the bias) into its softmax probabilities, the positive
/// included in the normaliser; returns the row's loss `-log p(positive)` and
/// `dloss/dpositive = p(positive) - 1`. Negatives that are the target get probability 0.
fn row_softmax(
    row: &mut [f32],
    positive: f32,
    bias: &[f32],
    target: u32,
    negative_ids: &[u32],
) -> (f64, f32) {
    let mut max = positive;
    for ((x, b), &id) in row.iter_mut().zip(bias).zip(negative_ids) {
        *x = if id == target {
            f32::NEG_INFINITY
        } else {
            *x + b
        };
        max = max.max(*x);
    }
    row.iter_mut().for_each(|x| *x -= max);
    exp_in_place(row);
    // fast_exp clamps its argument, so a masked entry comes out tiny rather than 0.
    for (x, &id) in row.iter_mut().zip(negative_ids) {
        if id == target {
            *x = 0.0;
        }
    }
    let e_positive = (positive - max).exp();
    let total = e_positive as f64 + row.iter().map(|&x| x as f64).sum::<f64>();
    let inverse = (1.0 / total) as f32;
    row.iter_mut().for_each(|x| *x *= inverse);
    let p_positive = e_positive as f64 / total;
    // In log space: p(positive) underflows when the positive trails the best negative by ~100.
    (
        total.ln() + (max - positive) as f64,
        p_positive as f32 - 1.0,
    )
}

/// Sums over the rows of a row-major `[rows, k]` matrix.
fn column_sums(matrix: &[f32], k: usize) -> Vec<f32> {
    matrix
        .par_chunks(ROWS_PER_TASK * k)
        .map(|block| {
            let mut sums = vec![0.0f32; k];
            for row in block.chunks(k) {
                sums.iter_mut().zip(row).for_each(|(s, x)| *s += x);
            }
            sums
        })
        .reduce(
            || vec![0.0f32; k],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::sampled_softmax;
    use burn::tensor::Distribution;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        host_values(t).unwrap_or_default()
    }

    fn assert_close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 2e-4 * scale,
                "{what}[{i}]: host {x}, autodiff {y} (scale {scale})"
            );
        }
    }

    /// The host pass against the plain autodiff version (the logits built from tensors, masked,
    /// and `losses::sampled_softmax`) on random inputs: the same loss and the same gradients
    /// for every input, with several negatives equal to their row's target.
    #[test]
    fn matches_the_autodiff_softmax_on_random_inputs() {
        let device = Device::flex().autodiff();
        for (n, k, d, spread) in [(300, 130, 16, 1.0), (70, 1000, 64, 4.0), (1, 3, 2, 20.0)] {
            let leaf = |shape: Vec<usize>| {
                Tensor::<2>::random(shape, Distribution::Normal(0.0, spread), &device)
                    .require_grad()
            };
            let (u, neg) = (leaf(vec![n, d]), leaf(vec![k, d]));
            let pos =
                Tensor::<1>::random([n], Distribution::Normal(0.0, spread), &device).require_grad();
            let bias =
                Tensor::<1>::random([k], Distribution::Normal(0.0, 1.0), &device).require_grad();
            // Ids from a small range, so that many negatives are some row's target.
            let target_ids: Vec<u32> = (0..n as u32).map(|i| (i * 7) % 50).collect();
            let negative_ids: Vec<u32> = (0..k as u32).map(|q| (q * 3) % 50).collect();

            let ours = host_sampled_softmax(SoftmaxInputs {
                u: u.clone(),
                positive: pos.clone(),
                negatives: neg.clone(),
                negative_bias: bias.clone(),
                target_ids: &target_ids,
                negative_ids: &negative_ids,
            })
            .expect("host pass");
            let plain = Device::flex();
            let ids = |v: &[u32]| {
                Tensor::<1, Int>::from_data(
                    TensorData::new(v.iter().map(|&x| x as i64).collect::<Vec<_>>(), [v.len()]),
                    &plain,
                )
            };
            let hits = ids(&target_ids)
                .unsqueeze_dim::<2>(1)
                .expand([n, k])
                .equal(ids(&negative_ids).unsqueeze_dim::<2>(0).expand([n, k]));
            let logits =
                u.clone().matmul(neg.clone().transpose()) + bias.clone().unsqueeze_dim::<2>(0);
            let reference = sampled_softmax(
                pos.clone(),
                logits.mask_fill(hits.to_device(&device), -1.0e9),
            );

            assert_close(&values(ours.clone()), &values(reference.clone()), "loss");
            let (g_ours, g_ref) = (ours.backward(), reference.backward());
            for (name, a, b) in [
                ("u", u.grad(&g_ours), u.grad(&g_ref)),
                ("negatives", neg.grad(&g_ours), neg.grad(&g_ref)),
            ] {
                let (a, b) = (a.expect("host grad"), b.expect("autodiff grad"));
                assert_close(&values(a), &values(b), name);
            }
            for (name, a, b) in [
                ("positive", pos.grad(&g_ours), pos.grad(&g_ref)),
                ("bias", bias.grad(&g_ours), bias.grad(&g_ref)),
            ] {
                let (a, b) = (a.expect("host grad"), b.expect("autodiff grad"));
                assert_close(&values(a), &values(b), name);
            }
        }
    }

    #[test]
    fn mismatched_ids_are_an_error() {
        let device = Device::flex().autodiff();
        let err = host_sampled_softmax(SoftmaxInputs {
            u: Tensor::zeros([2, 4], &device),
            positive: Tensor::zeros([2], &device),
            negatives: Tensor::zeros([3, 4], &device),
            negative_bias: Tensor::zeros([3], &device),
            target_ids: &[1],
            negative_ids: &[1, 2, 3],
        })
        .err()
        .unwrap_or_default();
        assert!(err.contains("1 target ids for 2 rows"), "{err}");
    }
}

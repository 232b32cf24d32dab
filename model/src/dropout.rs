//! Dropout whose keep-mask is drawn on the host when the tensors live there.
//!
//! Burn's [`Dropout`] draws its mask through the backend's random generator, which on the CPU
//! backends samples one element at a time from a cryptographic generator: in the sequential
//! recommender's training step (seven dropouts over 0.3-0.4 M elements each) that took 47 of
//! 240 ms. Here, on a host-memory device, one seed is drawn from the backend's generator (so the
//! run stays determined by the seed) and the mask comes from a counter-based hash of it, split
//! over the cores; on other devices Burn's own layer runs.

use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::Distribution;
use rayon::prelude::*;

use crate::device::memory_is_host;
use crate::host::host_values;

/// Elements per parallel chunk of the mask.
const CHUNK: usize = 1 << 14;

/// `layer` applied to `x`: during training on an autodiff device, each element kept with
/// probability `1 - layer.prob` and scaled by `1 / (1 - prob)`, else zeroed; unchanged otherwise
/// (as [`Dropout::forward`]).
pub fn dropout<const D: usize>(layer: &Dropout, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !layer.training.is_enabled() || !device.is_autodiff() || layer.prob == 0.0 {
        return x;
    }
    if !memory_is_host(&device) {
        return layer.forward(x);
    }
    let seed = seed_from_backend(&device);
    dropout_with_seed(layer.prob, x, seed)
}

/// `x` with a keep-mask drawn from `seed` (see [`keep_mask`]).
fn dropout_with_seed<const D: usize>(prob: f64, x: Tensor<D>, seed: u64) -> Tensor<D> {
    let (shape, device) = (x.shape(), x.device());
    let mask = keep_mask(shape.num_elements(), 1.0 - prob, seed);
    x * Tensor::<D>::from_data(TensorData::new(mask, shape), &device)
}

/// 48 random bits from the backend's generator (two uniform f32 draws of 24 bits each), so that
/// the backend's seed decides every mask.
fn seed_from_backend(device: &Device) -> u64 {
    let draws =
        host_values(Tensor::<1>::random([2], Distribution::Default, device)).unwrap_or_default();
    draws.iter().fold(0u64, |seed, &u| {
        (seed << 24) | ((u as f64 * (1u64 << 24) as f64) as u64)
    })
}

/// `n` values, each `1 / keep` with probability `keep` and 0 otherwise, from `seed`.
fn keep_mask(n: usize, keep: f64, seed: u64) -> Vec<f32> {
    // An element is kept when its 32 random bits fall below this.
    let threshold = (keep * 4_294_967_296.0).round().min(u32::MAX as f64) as u32;
    let scale = (1.0 / keep) as f32;
    let mut mask = vec![0.0f32; n];
    mask.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(chunk, values)| {
            let first = (chunk * CHUNK) as u64;
            for (pair, out) in values.chunks_mut(2).enumerate() {
                let bits = splitmix64(seed ^ splitmix64(first / 2 + pair as u64));
                for (v, half) in out.iter_mut().zip([bits as u32, (bits >> 32) as u32]) {
                    *v = if half < threshold { scale } else { 0.0 };
                }
            }
        });
    mask
}

/// SplitMix64's output function: a bijective 64-bit mix (Steele, Lea & Flood 2014).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::DropoutConfig;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        host_values(t).unwrap_or_default()
    }

    #[test]
    fn the_mask_keeps_the_asked_share_scaled() {
        for keep in [0.5, 0.8, 0.95] {
            let n = 200_001; // odd, and several chunks
            let mask = keep_mask(n, keep, 7);
            let kept = mask.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
            assert!((kept - keep).abs() < 0.005, "keep {keep}: kept {kept}");
            let scale = (1.0 / keep) as f32;
            assert!(mask.iter().all(|&v| v == 0.0 || v == scale));
            // The mean is preserved.
            let mean = mask.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            assert!((mean - 1.0).abs() < 0.01, "keep {keep}: mean {mean}");
        }
    }

    #[test]
    fn masks_depend_on_the_seed_and_only_on_it() {
        assert_eq!(keep_mask(50_000, 0.8, 3), keep_mask(50_000, 0.8, 3));
        assert_ne!(keep_mask(50_000, 0.8, 3), keep_mask(50_000, 0.8, 4));
        // Neighbouring elements are not correlated: pairs of kept elements as often as chance.
        let mask = keep_mask(100_000, 0.5, 11);
        let both = mask
            .chunks(2)
            .filter(|p| p[0] != 0.0 && p[1] != 0.0)
            .count() as f64
            / 50_000.0;
        assert!((both - 0.25).abs() < 0.01, "both kept: {both}");
    }

    /// Against Burn's layer on random inputs: the same kept share and scale, the same
    /// gradient rule (the mask), and the same seed giving the same result.
    #[test]
    fn behaves_as_burns_dropout_on_random_inputs() {
        let device = Device::flex().autodiff();
        let layer = DropoutConfig::new(0.3).init();
        let x = Tensor::<3>::random([64, 50, 64], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let ours = dropout(&layer, x.clone());
        let theirs = layer.forward(x.clone());
        let input = values(x.clone());
        for output in [values(ours.clone()), values(theirs)] {
            let kept = output.iter().filter(|&&v| v != 0.0).count() as f64 / output.len() as f64;
            assert!((kept - 0.7).abs() < 0.01, "kept {kept}");
            for (o, i) in output.iter().zip(&input) {
                assert!(*o == 0.0 || (o - i / 0.7).abs() <= 1e-5 * i.abs().max(1.0));
            }
        }
        // The gradient of sum(dropout(x)) is the mask itself.
        let grads = ours.clone().sum().backward();
        let grad = x.grad(&grads).map(values).unwrap_or_default();
        for ((g, o), i) in grad.iter().zip(values(ours)).zip(&input) {
            let expected = if o == 0.0 && *i != 0.0 {
                0.0
            } else {
                1.0 / 0.7
            };
            assert!((g - expected).abs() < 1e-5, "grad {g}, expected {expected}");
        }
        // Determinism: the same seed gives the same output, another seed another one.
        let ones = || Tensor::<2>::ones([100, 100], &device);
        let a = values(dropout_with_seed(0.3, ones(), 9));
        assert_eq!(a, values(dropout_with_seed(0.3, ones(), 9)));
        assert_ne!(a, values(dropout_with_seed(0.3, ones(), 10)));
    }

    #[test]
    fn outside_training_it_is_the_identity() {
        let layer = DropoutConfig::new(0.5).init();
        let plain = Device::flex();
        let x = Tensor::<2>::ones([10, 10], &plain);
        assert_eq!(values(dropout(&layer, x.clone())), values(x));
    }
}

//! Benchmarks for shopcast live in `benches/` (`cargo bench --workspace --bench NAME`); this
//! library holds what several of them share: the synthetic inputs, so that every benchmark (and
//! the PyTorch peer, `benches/peers/torch_peer.py`, which builds the same patterns) times the
//! same work.

use burn::prelude::*;
use shopcast_model::ForecastInput;

/// The median of some timings.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Waits until `device` has done the work queued on it (GPU backends run asynchronously), so that
/// a step's time includes it. Reading back a tensor of the tracked model instead, as the benches
/// did until 2026-12-07, leaves a graph that Burn's autodiff never frees: every later backward
/// pass scans the accumulated graphs, and a step grew with the steps taken before it (2.7 to 7.9
/// ms over 2,000 steps in `training_throughput`).
pub fn wait_for(device: &Device) {
    if let Err(e) = device.sync() {
        panic!("waiting for the device: {e:?}");
    }
}

/// `n` entity ids below `modulo`, spread by a fixed pattern (`salt` varies it).
pub fn id_values(n: usize, modulo: usize, salt: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7919 + salt * 104_729) % modulo) as u32)
        .collect()
}

/// [`id_values`] as a tensor.
pub fn ids(n: usize, modulo: usize, salt: usize, device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = id_values(n, modulo, salt)
        .into_iter()
        .map(i64::from)
        .collect();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

/// A forecaster batch of `b` windows with fixed patterns: encoder features `(i % 13) / 13`,
/// decoder features `(i % 7) / 7`, two keys (of 3 and 60 values), an anchor of 1.
pub fn forecaster_batch(
    b: usize,
    (context, horizon): (usize, usize),
    (encoder_features, decoder_features): (usize, usize),
    device: &Device,
) -> ForecastInput {
    ForecastInput::from_arrays(
        (0..b * context * encoder_features)
            .map(|i| ((i % 13) as f32) / 13.0)
            .collect(),
        (0..b * horizon * decoder_features)
            .map(|i| ((i % 7) as f32) / 7.0)
            .collect(),
        (0..b * 2)
            .map(|i| {
                if i % 2 == 0 {
                    (i % 3) as i64
                } else {
                    (i % 60) as i64
                }
            })
            .collect(),
        vec![1.0; b * horizon],
        b,
        context,
        horizon,
        device,
    )
}

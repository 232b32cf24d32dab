//! Training throughput of the recommender (default two-tower, with 16 negatives, and NeuMF;
//! interactions per second) and of the forecaster
//! (series-windows per second) on flex, with a plain matrix product measured in the same run as
//! the reference, so figures can be compared across machines as ratios.
//!
//! `cargo bench -p shopcast-benches` (set `SHOPCAST_BENCH_DEVICE=wgpu` or `ndarray` for others).

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use shopcast_benches::{forecaster_batch, ids, median};
use shopcast_model::losses::{pinball, sampled_bce};
use shopcast_model::{
    select_device, Architecture, DeviceChoice, EntityFeatures, ForecasterConfig, InteractionBatch,
    RecommenderConfig,
};

/// Seconds per [1024, 256] x [256, 1024] matrix product (2 * 1024 * 256 * 1024 FLOPs).
fn reference_matmul(device: &Device) -> f64 {
    let a = Tensor::<2>::random([1024, 256], burn::tensor::Distribution::Default, device);
    let b = Tensor::<2>::random([256, 1024], burn::tensor::Distribution::Default, device);
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let _ = a.clone().matmul(b.clone()).sum().into_scalar::<f32>();
        times.push(t.elapsed().as_secs_f64());
    }
    median(times)
}

/// One training step of the recommender: `architecture` is `two_tower` (the default) or `neumf`,
/// `k` the sampled negatives per positive.
fn recommender_step_seconds(device: &Device, architecture: Architecture, k: usize) -> (f64, usize) {
    let (n_c, n_p, tokens, b) = (20_000, 5_000, 200, 1024);
    let train_device = device.clone().autodiff();
    train_device.seed(1);
    let config = RecommenderConfig::new(n_c, n_p, tokens, tokens)
        .with_embedding_dim(32)
        .with_architecture(architecture);
    let mut model = config.init(&train_device);
    let padded =
        |n: usize| -> Vec<i64> { (0..n * 4).map(|i| ((i * 31) % tokens) as i64 + 1).collect() };
    let cf = EntityFeatures::new(padded(n_c), 4, device);
    let pf = EntityFeatures::new(padded(n_p), 4, device);
    let mut optim = shopcast_model::optim::adam();
    let mut times = Vec::new();
    for step in 0..30 {
        let batch = InteractionBatch {
            customers: ids(b, n_c, step, &train_device),
            positives: ids(b, n_p, step + 1, &train_device),
            weights: Tensor::ones([b], &train_device),
            negatives: ids(b * k, n_p, step + 2, &train_device),
            negatives_per_positive: k,
        };
        let t = Instant::now();
        let (pos, neg, _) = model.batch_logits(&batch, &cf, &pf);
        let loss = sampled_bce(pos, neg, batch.weights);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
        let _ = model
            .product_biases(ids(1, n_p, 0, &train_device))
            .into_data();
        if step >= 5 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    (median(times), b)
}

fn forecaster_step_seconds(device: &Device) -> (f64, usize) {
    let (b, context, horizon, enc_f, dec_f) = (256, 56, 28, 20, 19);
    let train_device = device.clone().autodiff();
    train_device.seed(1);
    let config = ForecasterConfig::new(
        enc_f,
        dec_f,
        vec![3, 60],
        context,
        horizon,
        vec![0.1, 0.5, 0.9],
    );
    let mut model = config.init(&train_device);
    let mut optim = shopcast_model::optim::adam();
    let mut times = Vec::new();
    for step in 0..12 {
        let input = forecaster_batch(b, (context, horizon), (enc_f, dec_f), &train_device);
        let target = Tensor::<2>::ones([b, horizon], &train_device);
        let mask = Tensor::<2>::ones([b, horizon], &train_device);
        let t = Instant::now();
        // The call `train` makes: the fused LSTM's host kernels on CPU backends.
        let (loss, grads) = match model
            .loss_and_gradients(input, |raw| pinball(raw, target, mask, &[0.1, 0.5, 0.9]))
        {
            Ok(step) => step,
            Err(e) => panic!("forecaster training step failed: {e}"),
        };
        model = optim.step(1e-3, model, grads);
        let _ = loss.into_scalar::<f32>();
        if step >= 2 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    (median(times), b)
}

fn main() {
    let choice = std::env::var("SHOPCAST_BENCH_DEVICE").unwrap_or_else(|_| "flex".into());
    let choice: DeviceChoice = match choice.parse() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let selected = match select_device(choice) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let device = selected.device;
    let reference = reference_matmul(&device);
    println!("device: {}", selected.backend);
    println!(
        "reference: [1024x256]x[256x1024] matmul {:.3} ms ({:.1} GFLOP/s)",
        reference * 1e3,
        2.0 * 1024.0 * 256.0 * 1024.0 / reference / 1e9
    );
    for (architecture, k) in [
        (Architecture::TwoTower, 4),
        (Architecture::TwoTower, 16),
        (Architecture::Neumf, 4),
    ] {
        let (rec, b) = recommender_step_seconds(&device, architecture, k);
        println!(
            "recommender training, {architecture} (batch {b}, {k} negatives, d=32): {:.2} ms/step, {:.0} interactions/s, {:.1} reference matmuls per step",
            rec * 1e3,
            b as f64 / rec,
            rec / reference
        );
    }
    let (fc, b) = forecaster_step_seconds(&device);
    println!(
        "forecaster training (batch {b}, context 56, horizon 28, hidden 64): {:.1} ms/step, {:.0} series-windows/s, {:.1} reference matmuls per step",
        fc * 1e3,
        b as f64 / fc,
        fc / reference
    );
}

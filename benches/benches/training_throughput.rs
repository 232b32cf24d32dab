//! Training throughput of the recommender (default two-tower, with 16 negatives, and NeuMF;
//! interactions per second) and of the forecaster
//! (series-windows per second) on flex, with a plain matrix product measured in the same run as
//! the reference, so figures can be compared across machines as ratios.
//!
//! `cargo bench -p shopcast-benches` (set `SHOPCAST_BENCH_DEVICE=wgpu` or `ndarray` for others).

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use shopcast_benches::{forecaster_batch, id_values, median, wait_for};
use shopcast_model::losses::{pinball, sampled_bce};
use shopcast_model::recommender::{ids_tensor, LazyTables};
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

/// Id tables of a recommender step: the shop's customers and products.
#[derive(Clone, Copy)]
struct Tables {
    customers: usize,
    products: usize,
}

/// The peer benchmark's shop (20k customers, 5k products) and one ten times its customers.
const SMALL_SHOP: Tables = Tables {
    customers: 20_000,
    products: 5_000,
};
const LARGE_SHOP: Tables = Tables {
    customers: 200_000,
    products: 20_000,
};

/// One training step of the recommender: `architecture` is `two_tower` (the default) or `neumf`,
/// `k` the sampled negatives per positive; the id tables under lazy Adam (what `train` runs by
/// default, rows gathered and updated on the host) or dense Adam over the whole tables.
fn recommender_step_seconds(
    device: &Device,
    architecture: Architecture,
    k: usize,
    tables: Tables,
    lazy: bool,
    timed_steps: usize,
) -> (f64, usize) {
    let (n_c, n_p, tokens, b) = (tables.customers, tables.products, 200, 1024);
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
    let mut lazy_tables = match lazy.then(|| LazyTables::new(&model)).transpose() {
        Ok(t) => t,
        Err(e) => panic!("copying the id tables: {e}"),
    };
    let mut times = Vec::new();
    for step in 0..timed_steps + 5 {
        let (c, p, n) = (
            id_values(b, n_c, step),
            id_values(b, n_p, step + 1),
            id_values(b * k, n_p, step + 2),
        );
        let batch = InteractionBatch {
            customers: ids_tensor(&c, &train_device),
            positives: ids_tensor(&p, &train_device),
            weights: Tensor::ones([b], &train_device),
            negatives: ids_tensor(&n, &train_device),
            negatives_per_positive: k,
        };
        let t = Instant::now();
        let (rows, leaves) = match &mut lazy_tables {
            None => (model.batch_id_rows(&batch), None),
            Some(tables) => match tables.gather((&c, &p, &n), &train_device) {
                Ok((rows, leaves)) => (rows, Some(leaves)),
                Err(e) => panic!("gathering the batch's rows: {e}"),
            },
        };
        let (pos, neg, _) = model.batch_logits_from_rows(&batch, rows, &cf, &pf);
        let grads = sampled_bce(pos, neg, batch.weights).backward();
        if let (Some(tables), Some(leaves)) = (&mut lazy_tables, leaves) {
            if let Err(e) = tables.step(1e-3, leaves, &grads) {
                panic!("lazy Adam step: {e}");
            }
        }
        let grads = GradientsParams::from_grads(grads, &model);
        model = optim.step(1e-3, model, grads);
        wait_for(&train_device);
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

/// The step at 20k and at 200k customers, tables under lazy Adam and under dense Adam: with lazy
/// Adam the step should not grow with the tables (issue 18: at most 1.3x). The two sizes are
/// timed in turn, three rounds of 100 steps each, and the median round's ratio is printed with
/// the rounds' range: single runs of 25 steps moved by tens of percent on a shared machine.
fn table_size_scaling(device: &Device) {
    for lazy in [true, false] {
        let name = if lazy { "lazy Adam" } else { "dense Adam" };
        let steps = if lazy { 100 } else { 25 };
        let mut rounds: Vec<(f64, f64)> = (0..3)
            .map(|_| {
                let step = |tables| {
                    recommender_step_seconds(device, Architecture::TwoTower, 4, tables, lazy, steps)
                        .0
                };
                (step(SMALL_SHOP), step(LARGE_SHOP))
            })
            .collect();
        rounds.sort_by(|a, b| (a.1 / a.0).total_cmp(&(b.1 / b.0)));
        let (small, large) = rounds[1];
        println!(
            "recommender training, two_tower, id tables under {name}: {:.2} ms/step at 20k customers x 5k products, {:.2} ms/step at 200k x 20k ({:.2}x; rounds {:.2}x-{:.2}x)",
            small * 1e3,
            large * 1e3,
            large / small,
            rounds[0].1 / rounds[0].0,
            rounds[2].1 / rounds[2].0
        );
    }
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
        let (rec, b) = recommender_step_seconds(&device, architecture, k, SMALL_SHOP, true, 25);
        println!(
            "recommender training, {architecture} (batch {b}, {k} negatives, d=32): {:.2} ms/step, {:.0} interactions/s, {:.1} reference matmuls per step",
            rec * 1e3,
            b as f64 / rec,
            rec / reference
        );
    }
    table_size_scaling(&device);
    let (fc, b) = forecaster_step_seconds(&device);
    println!(
        "forecaster training (batch {b}, context 56, horizon 28, hidden 64): {:.1} ms/step, {:.0} series-windows/s, {:.1} reference matmuls per step",
        fc * 1e3,
        b as f64 / fc,
        fc / reference
    );
}

//! The shopcast side of the peer benchmark against PyTorch (`benches/peers/run.sh` runs both
//! sides and prints the comparison; `benches/peers/torch_peer.py` is the other side).
//!
//! Every operation goes through the project's real model code, the calls `train` and `infer`
//! make: `Recommender::batch_logits` + `sampled_bce` + Adam for a recommender step,
//! `SequenceSlots::training` + `Recommender::sequence_loss` + Adam for a
//! sequential recommender step,
//! `DemandForecaster::loss_and_gradients` + Adam for a forecaster step (and, shopcast only, the
//! same step through `reference_loss_and_gradients`: the plain autodiff tensor ops the fused
//! LSTM's kernels replace), `ForecasterEnsemble::
//! predict` for forecaster inference and `Recommender::top_k_excluding` for batch scoring.
//!
//! Prints one JSON object: `{"side": "shopcast", "device": ..., "ops": {name: seconds}}`, each
//! figure the median of the timed repetitions after warm-up.
//! Options (after `--`): `--device flex|ndarray|wgpu`, `--repeats N`, `--only a,b`.

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use shopcast_benches::{forecaster_batch, ids, median, wait_for};
use shopcast_model::losses::{pinball, sampled_bce};
use shopcast_model::recommender::{ids_tensor, SequenceBatch};
use shopcast_model::{
    select_device, Architecture, DeviceChoice, EntityFeatures, ForecastInput, ForecasterConfig,
    InteractionBatch, RecommenderConfig, SequenceEvent, SequenceSlots,
};

struct Options {
    device: String,
    repeats: usize,
    only: Vec<String>,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        device: "flex".into(),
        repeats: 30,
        only: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--device" => o.device = args.next().ok_or("--device needs a value")?,
            "--repeats" => {
                o.repeats = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--repeats needs a number")?
            }
            "--only" => {
                o.only = args
                    .next()
                    .ok_or("--only needs a list")?
                    .split(',')
                    .map(String::from)
                    .collect()
            }
            // `cargo bench` passes `--bench` to every bench binary.
            "--bench" => {}
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

/// Median seconds of `repeats` calls of `f` after `warmup` untimed ones. `f` must end with a
/// read back from the device, so that the time covers the work.
fn median_seconds(warmup: usize, repeats: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let times = (0..repeats.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    median(times)
}

/// Customers' and products' attribute tokens, 4 per entity (`(i * 31) % tokens`, the PyTorch
/// side's pattern), on the plain device as `train` builds them: constants, not part of the graph.
fn entity_features(
    n_c: usize,
    n_p: usize,
    tokens: usize,
    device: &Device,
) -> (EntityFeatures, EntityFeatures) {
    let padded =
        |n: usize| -> Vec<i64> { (0..n * 4).map(|i| ((i * 31) % tokens) as i64 + 1).collect() };
    (
        EntityFeatures::new(padded(n_c), 4, device),
        EntityFeatures::new(padded(n_p), 4, device),
    )
}

/// A training step of the recommender as `train` runs it (default `two_tower`, or `neumf`):
/// 20,000 customers, 5,000 products, 200 attribute tokens (4 per entity), batch 1024,
/// `k` negatives each, embedding 32, learning rate 0.01, L2 1e-6.
fn recommender_training_step(
    device: &Device,
    architecture: Architecture,
    k: usize,
    repeats: usize,
) -> f64 {
    let (n_c, n_p, tokens, b, l2) = (20_000, 5_000, 200, 1024, 1e-6);
    let train_device = device.clone().autodiff();
    let config = RecommenderConfig::new(n_c, n_p, tokens, tokens)
        .with_embedding_dim(32)
        .with_architecture(architecture);
    // An Option so that the timed closure can move the model through the optimizer.
    let mut model = Some(shopcast_model::seeded_init(&train_device, 1, || {
        config.init(&train_device)
    }));
    let (cf, pf) = entity_features(n_c, n_p, tokens, device);
    let mut optim = shopcast_model::optim::adam();
    let mut step = 0;
    median_seconds(5, repeats, || {
        // A fresh batch every step from host ids, as `train` builds them.
        let s = step % 8;
        step += 1;
        let batch = &InteractionBatch {
            customers: ids(b, n_c, s, &train_device),
            positives: ids(b, n_p, s + 1, &train_device),
            weights: Tensor::ones([b], &train_device),
            negatives: ids(b * k, n_p, s + 2, &train_device),
            negatives_per_positive: k,
        };
        let Some(m) = model.take() else { return };
        let (pos, neg, norms) = m.batch_logits(batch, &cf, &pf);
        let loss = sampled_bce(pos, neg, batch.weights.clone()) + norms * (l2 / b as f64);
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        let m = optim.step(1e-2, m, grads);
        wait_for(&train_device);
        model = Some(m);
    })
}

const SEQ_WINDOWS: usize = 128;
const SEQ_LEN: usize = 50;
const SEQ_NEGATIVES: usize = 1024;

/// The sequential batch's windows, the same pattern as the PyTorch side: row `r`'s event `j` is
/// product `((r * 50 + j) * 7919 + salt * 104_729) % n_p`, a purchase, in basket `j / 2 + 1`,
/// baskets `r % 5 + 1` days apart.
fn sequence_windows(n_p: usize, salt: usize) -> Vec<Vec<SequenceEvent>> {
    (0..SEQ_WINDOWS)
        .map(|r| {
            (0..SEQ_LEN)
                .map(|j| SequenceEvent {
                    product: (((r * SEQ_LEN + j) * 7919 + salt * 104_729) % n_p) as u32,
                    ts: ((j / 2 + 1) * (r % 5 + 1) * 86_400) as i64,
                    is_target: true,
                })
                .collect()
        })
        .collect()
}

/// A training step of the sequential recommender as `train` runs it: 128 windows of 50
/// purchases (baskets of two), every purchase a target twice, of its slot's next-basket
/// reading and of a completion query that reads the rest of its basket (basket completion, on
/// by default), 1,024 negatives shared by the batch, a softmax; embedding 64, 2 blocks, 1 head,
/// dropout 0.2; 20,000 customers, 5,000 products, 200 attribute tokens (4 per entity); Adam,
/// learning rate 1e-3. The batch is built from host events inside the step, as `train` builds
/// it.
fn sequential_training_step(device: &Device, repeats: usize) -> f64 {
    let (n_c, n_p, tokens) = (20_000, 5_000, 200);
    let train_device = device.clone().autodiff();
    let config = RecommenderConfig::new(n_c, n_p, tokens, tokens)
        .with_embedding_dim(64)
        .with_architecture(Architecture::Sequential)
        .with_max_sequence(SEQ_LEN);
    let mut model = Some(shopcast_model::seeded_init(&train_device, 1, || {
        config.init(&train_device)
    }));
    let (cf, pf) = entity_features(n_c, n_p, tokens, device);
    let batches: Vec<Vec<Vec<SequenceEvent>>> = (0..8).map(|s| sequence_windows(n_p, s)).collect();
    let mut optim = shopcast_model::optim::adam();
    let mut step = 0;
    median_seconds(3, repeats, || {
        let s = step % batches.len();
        step += 1;
        let windows: Vec<&[SequenceEvent]> = batches[s].iter().map(Vec::as_slice).collect();
        // Slot 0 is the start slot; event `j` sits in slot `j + 1`, and every event has a basket
        // mate, so each gets a completion query (query `j` of its row).
        let completed: Vec<Vec<u32>> = vec![(1..=SEQ_LEN as u32).collect(); SEQ_WINDOWS];
        let slots = SequenceSlots::training(&windows, SEQ_LEN).with_completion_queries(&completed);
        let next_slots = (0..SEQ_WINDOWS).flat_map(|r| (0..SEQ_LEN).map(move |j| (r, j + 1)));
        let query_slots = (0..SEQ_WINDOWS).flat_map(|r| (0..SEQ_LEN).map(move |j| (r, j)));
        let target_slots: Vec<u32> = next_slots
            .map(|(r, i)| slots.flat_slot(r, i))
            .chain(query_slots.map(|(r, k)| slots.flat_query(r, k)))
            .collect();
        let target_rows: Vec<u32> = (0..2 * SEQ_WINDOWS)
            .flat_map(|r| std::iter::repeat_n((r % SEQ_WINDOWS) as u32, SEQ_LEN))
            .collect();
        let products = batches[s].iter().flatten().map(|e| e.product);
        let targets: Vec<u32> = products.clone().chain(products).collect();
        let batch = SequenceBatch {
            input: slots.to_device(&train_device),
            customers: ids(SEQ_WINDOWS, n_c, s, &train_device),
            target_slots: ids_tensor(&target_slots, &train_device),
            target_rows: ids_tensor(&target_rows, &train_device),
            targets: ids_tensor(&targets, &train_device),
            negatives: ids(SEQ_NEGATIVES, n_p, s + 2, &train_device),
        };
        let Some(m) = model.take() else { return };
        let loss = match m.sequence_loss(&batch, &cf, &pf) {
            Ok(loss) => loss,
            Err(e) => panic!("sequential training step failed: {e}"),
        };
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        let m = optim.step(1e-3, m, grads);
        wait_for(&train_device);
        model = Some(m);
    })
}

const FC_BATCH: usize = 256;
const FC_CONTEXT: usize = 56;
const FC_HORIZON: usize = 28;
const FC_ENCODER_FEATURES: usize = 20;
const FC_DECODER_FEATURES: usize = 19;
const QUANTILES: [f64; 3] = [0.1, 0.5, 0.9];

fn forecaster_config() -> ForecasterConfig {
    ForecasterConfig::new(
        FC_ENCODER_FEATURES,
        FC_DECODER_FEATURES,
        vec![3, 60],
        FC_CONTEXT,
        FC_HORIZON,
        QUANTILES.to_vec(),
    )
}

/// The same deterministic window batch as the PyTorch side.
fn forecaster_input(device: &Device) -> ForecastInput {
    forecaster_batch(
        FC_BATCH,
        (FC_CONTEXT, FC_HORIZON),
        (FC_ENCODER_FEATURES, FC_DECODER_FEATURES),
        device,
    )
}

/// A forecaster training step as `train` runs it: batch 256, context 56, horizon 28, hidden 64,
/// two keys with embedding 8, 3 quantiles, pinball loss, Adam. With `tensor_ops`, the same step
/// through the plain autodiff tensor path (no host or recurrence kernels), which is what the
/// kernels are measured against.
fn forecaster_training_step(device: &Device, repeats: usize, tensor_ops: bool) -> f64 {
    let train_device = device.clone().autodiff();
    let config = forecaster_config();
    let mut model = Some(shopcast_model::seeded_init(&train_device, 1, || {
        config.init(&train_device)
    }));
    let mut optim = shopcast_model::optim::adam();
    let input = forecaster_input(&train_device);
    let target = Tensor::<2>::ones([FC_BATCH, FC_HORIZON], &train_device);
    let mask = Tensor::<2>::ones([FC_BATCH, FC_HORIZON], &train_device);
    median_seconds(3, repeats, || {
        let Some(m) = model.take() else { return };
        let loss_fn = |raw| pinball(raw, target.clone(), mask.clone(), &QUANTILES);
        let step = if tensor_ops {
            Ok(m.reference_loss_and_gradients(input.clone(), loss_fn))
        } else {
            m.loss_and_gradients(input.clone(), loss_fn)
        };
        let (loss, grads) = match step {
            Ok(s) => s,
            Err(e) => panic!("forecaster training step failed: {e}"),
        };
        model = Some(optim.step(1e-3, m, grads));
        let _ = loss.into_scalar::<f32>();
    })
}

/// Forecaster inference as `infer forecast` runs it: one batch of 256 windows, read back.
fn forecaster_inference_step(device: &Device, repeats: usize) -> f64 {
    let config = forecaster_config();
    let model = shopcast_model::seeded_init(device, 1, || config.init_ensemble(device));
    let input = forecaster_input(device);
    let scale = vec![1.0f32; FC_BATCH];
    median_seconds(3, repeats, || {
        let _ = model.predict(input.clone(), &scale);
    })
}

const SCORING_CUSTOMERS: usize = 20_000;
const SCORING_PRODUCTS: usize = 20_000;
const SCORING_DIM: usize = 64;
const SCORING_TOP_K: usize = 10;
const SCORING_BOUGHT: usize = 20;

/// `infer recommend`'s scoring: 20,000 customers against 20,000 products (embedding 64), 20
/// bought products excluded per customer, top-10, in the chunks `infer` uses.
fn batch_scoring(device: &Device, repeats: usize) -> f64 {
    let (n_c, n_p) = (SCORING_CUSTOMERS, SCORING_PRODUCTS);
    let config = RecommenderConfig::new(n_c, n_p, 1, 1).with_embedding_dim(SCORING_DIM);
    let model = shopcast_model::seeded_init(device, 3, || config.init(device));
    let no_tokens = |n: usize| EntityFeatures::new(vec![0; n], 1, device);
    let (customer_features, product_features) = (no_tokens(n_c), no_tokens(n_p));
    let bought: Vec<Vec<u32>> = (0..n_c)
        .map(|c| {
            (0..SCORING_BOUGHT)
                .map(|b| ((c * 7919 + b * 104_729) % n_p) as u32)
                .collect()
        })
        .collect();
    // The chunk size `infer recommend` uses (16 MiB score matrices).
    let chunk = model.customers_per_chunk(n_p);
    median_seconds(1, (repeats / 10).max(3), || {
        let all: Vec<u32> = (0..n_p as u32).collect();
        let product_ids = ids_tensor(&all, device);
        let matrix = model.product_matrix(
            model.product_vectors(product_ids.clone(), &product_features),
            model.product_biases(product_ids),
        );
        let mut found = 0;
        for start in (0..n_c).step_by(chunk) {
            let rows: Vec<u32> = (start..(start + chunk).min(n_c))
                .map(|c| c as u32)
                .collect();
            let u = model.customer_vectors(ids_tensor(&rows, device), &customer_features);
            let lists: Vec<&[u32]> = bought[start..start + rows.len()]
                .iter()
                .map(Vec::as_slice)
                .collect();
            let top = model.top_k_excluding(u, &matrix, &lists, &[], SCORING_TOP_K);
            found += top.map(|t| t.len()).unwrap_or(0);
        }
        assert_eq!(found, n_c, "every customer scored");
    })
}

fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("peers: {e}");
            std::process::exit(2);
        }
    };
    let selected = match o.device.parse::<DeviceChoice>().and_then(select_device) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("peers: {e}");
            std::process::exit(2);
        }
    };
    // As `train` and `infer` do at start.
    shopcast_model::keep_freed_memory_for_reuse();
    let device = selected.device;
    let r = o.repeats;
    type Op<'a> = (&'a str, Box<dyn Fn() -> f64 + 'a>);
    let ops: Vec<Op> = vec![
        (
            "recommender_training_step",
            Box::new(|| recommender_training_step(&device, Architecture::TwoTower, 4, r)),
        ),
        (
            "recommender_training_step_neumf",
            Box::new(|| recommender_training_step(&device, Architecture::Neumf, 4, r)),
        ),
        (
            "sequential_training_step",
            Box::new(|| sequential_training_step(&device, r)),
        ),
        (
            "forecaster_training_step",
            Box::new(|| forecaster_training_step(&device, r, false)),
        ),
        (
            "forecaster_training_step_tensor_ops",
            Box::new(|| forecaster_training_step(&device, r, true)),
        ),
        (
            "forecaster_inference_step",
            Box::new(|| forecaster_inference_step(&device, r)),
        ),
        ("batch_scoring", Box::new(|| batch_scoring(&device, r))),
    ];
    let mut results = Vec::new();
    for (name, op) in &ops {
        if o.only.is_empty() || o.only.iter().any(|x| x == name) {
            results.push(format!("\"{name}\": {:.9}", op()));
        }
    }
    println!(
        "{{\"side\": \"shopcast\", \"device\": \"{}\", \"threads\": {}, \"ops\": {{{}}}}}",
        selected.backend,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        results.join(", ")
    );
}

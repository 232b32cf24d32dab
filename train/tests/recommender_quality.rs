//! The recommender on a generated shop: the hybrid model beats popularity and item-kNN under both
//! protocols, the NeuMF option and the BPR loss train to something useful, and the segment
//! profiles describe the customers (size, top categories, average spend).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shopcast_model::DeviceChoice;
use train::{Only, TrainOptions};

/// A shop of 600 customers and 300 products (bigger than the other tests' so that item-kNN is
/// not saturated), with extra config edits.
fn train_shop(dir: &Path, name: &str, edits: &[(&str, &str)]) -> (BTreeMap<String, f64>, PathBuf) {
    let mut all = vec![
        ("customers = 400", "customers = 600"),
        ("products = 120", "products = 300"),
        ("epochs = 12", "epochs = 60"),
    ];
    all.extend_from_slice(edits);
    let config = common::shop_config_with(dir, name, &all);
    let _turn = common::one_training_at_a_time();
    let out = dir.join(format!("{name}-bundle"));
    let summary = train::run(&TrainOptions {
        config,
        device: Some(DeviceChoice::Flex),
        only: Some(Only::Recommender),
        out: Some(out.clone()),
        seed: None,
        data_dir: None,
        resume: false,
    })
    .expect("training succeeds");
    eprintln!("{name}: {:#?}", summary.metrics);
    (summary.metrics, out)
}

fn assert_beats(m: &BTreeMap<String, f64>, baseline: &str, keys: &[&str]) {
    for key in keys {
        let model = m[&format!("recommender.{key}")];
        let base = m[&format!("baseline.{baseline}.{key}")];
        assert!(
            model > base,
            "recommender {key} {model:.4} does not beat {baseline} {base:.4}"
        );
    }
}

const BOTH_PROTOCOLS: [&str; 5] = [
    "sampled.hr@10",
    "sampled.ndcg@10",
    "full.recall@10",
    "full.recall@20",
    "full.ndcg@10",
];

#[test]
fn hybrid_beats_popularity_and_item_knn_on_both_protocols() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (m, bundle) = train_shop(dir.path(), "hybrid", &[]);
    assert_beats(&m, "popularity", &BOTH_PROTOCOLS);
    assert_beats(&m, "itemknn", &BOTH_PROTOCOLS);

    // Segment profiles: every customer in one segment, top categories, average spend.
    let profiles: serde_json::Value = serde_json::from_slice(
        &std::fs::read(bundle.join("recommender.segments.json")).expect("segments file"),
    )
    .expect("segments json");
    let profiles = profiles.as_array().expect("a list of segments");
    assert_eq!(profiles.len(), 4, "segments = 4 in the config");
    let total: u64 = profiles
        .iter()
        .map(|p| p["customers"].as_u64().expect("size"))
        .sum();
    assert_eq!(total, 600, "every customer belongs to exactly one segment");
    for p in profiles {
        let spend = p["average_spend"].as_f64().expect("average spend");
        assert!(spend > 0.0, "segment {p} has no spend");
        let cats = p["top_categories"].as_array().expect("top categories");
        assert!(!cats.is_empty(), "segment {p} lists no category");
    }
    let spends: Vec<f64> = profiles
        .iter()
        .map(|p| p["average_spend"].as_f64().unwrap_or_default())
        .collect();
    assert!(
        spends.iter().any(|s| (s - spends[0]).abs() > 1e-6),
        "every segment has the same average spend: {spends:?}"
    );
}

#[test]
fn neumf_option_trains_and_beats_popularity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (m, bundle) = train_shop(
        dir.path(),
        "neumf",
        &[("segments = 4", "segments = 4\narchitecture = \"neumf\"")],
    );
    assert_beats(&m, "popularity", &BOTH_PROTOCOLS);
    let config = std::fs::read_to_string(bundle.join("recommender.config.json")).expect("config");
    assert!(
        config.contains("neumf"),
        "the bundle does not record NeuMF: {config}"
    );
}

/// `architecture = "sequential"`: the customer vector read from the latest baskets by
/// self-attention trains to something better than popularity, and the bundle records it with
/// every known customer's vector as of the training data, and with the latest basket's
/// completion weight chosen on validation (basket completion is on by default).
#[test]
fn sequential_option_trains_and_beats_popularity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (m, bundle) = train_shop(
        dir.path(),
        "sequential",
        &[
            ("segments = 4", "segments = 4\narchitecture = \"sequential\""),
            (
                "[forecaster.data]",
                "[recommender.sequence]\nepochs = 40\nmax_sequence = 20\nlearning_rate = 0.005\n\n[forecaster.data]",
            ),
        ],
    );
    assert_beats(&m, "popularity", &BOTH_PROTOCOLS);
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(bundle.join("recommender.config.json")).expect("config"),
    )
    .expect("config json");
    assert!(
        config["architecture"] == "sequential" && config["max_sequence"] == 20,
        "the bundle does not record the sequential model: {config}"
    );
    let weight = config["sequence_completion_weight"].as_f64();
    assert!(
        weight.is_some_and(|w| (0.0..=1.0).contains(&w))
            && weight == m.get("recommender.completion_weight").copied(),
        "the bundle and metrics.json do not agree on a completion weight: {config}"
    );
}

/// `architecture = "auto"` trains every candidate (two-tower, NeuMF, sequential), records each
/// one's validation NDCG@10 (with its own recency weight), keeps the best one in the bundle and
/// lists them all in the model card.
#[test]
fn auto_architecture_keeps_the_best_candidate_on_validation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (m, bundle) = train_shop(
        dir.path(),
        "auto",
        &[
            ("segments = 4", "segments = 4\narchitecture = \"auto\""),
            (
                "[forecaster.data]",
                "[recommender.sequence]\nepochs = 40\nmax_sequence = 20\nlearning_rate = 0.005\n\n[forecaster.data]",
            ),
        ],
    );
    let candidates = ["two_tower", "neumf", "sequential"];
    let scores: Vec<f64> = candidates
        .iter()
        .map(|c| m[&format!("recommender.candidate.{c}.validation.ndcg@10")])
        .collect();
    assert!(scores.iter().all(|&s| s > 0.0), "{scores:?}");
    // The first of the best (ties keep the earlier candidate).
    let best = scores.iter().cloned().fold(f64::MIN, f64::max);
    let expected = candidates[scores.iter().position(|&s| s == best).unwrap_or(0)];
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(bundle.join("recommender.config.json")).expect("config"),
    )
    .expect("config json");
    let text = config.to_string();
    assert!(
        text.contains(&format!("\"architecture\":\"{expected}\"")),
        "the bundle does not hold the validation winner {expected} ({candidates:?}: {scores:?}): {text}"
    );
    assert_beats(&m, "popularity", &BOTH_PROTOCOLS);
    let card = std::fs::read_to_string(bundle.join("MODEL_CARD.md")).expect("model card");
    assert!(
        card.contains(&format!("| `{expected}` (chosen) |"))
            && candidates
                .iter()
                .all(|c| card.contains(&format!("| `{c}`"))),
        "the model card does not list the candidates: {card}"
    );
}

#[test]
fn bpr_loss_with_popularity_sampling_beats_popularity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (m, _) = train_shop(
        dir.path(),
        "bpr",
        &[(
            "patience = 3",
            "patience = 3\nloss = \"bpr\"\nnegative_sampling = \"popularity\"",
        )],
    );
    assert_beats(&m, "popularity", &BOTH_PROTOCOLS);
}

/// Hit rate at 10 of every customer's validation item under the bundle's model, its training
/// items masked (the recency term left out): how well the model knows those items.
fn validation_hit_rate(bundle: &Path, config: &Path) -> f64 {
    use burn::prelude::*;
    use shopcast_datasets::artifacts::{files, RecommenderArtifacts};
    use shopcast_model::recommender::{ids_tensor, TopK};
    use shopcast_model::{Bundle, EntityFeatures, RecommenderConfig};

    let loaded = shopcast_datasets::ShopConfig::load(config).expect("config");
    let sec = loaded
        .config
        .recommender
        .clone()
        .expect("recommender section");
    let data = shopcast_datasets::interactions::load_recommender_data(&loaded, &sec).expect("data");
    let split = data
        .leave_one_out(sec.evaluation.min_items_per_customer)
        .expect("split");
    let bundle = Bundle::open(bundle).expect("bundle");
    let device = Device::flex();
    let model_config =
        RecommenderConfig::load(bundle.dir.join(files::RECOMMENDER_CONFIG)).expect("model config");
    let model = bundle
        .load_module(files::RECOMMENDER_WEIGHTS, model_config.init(&device))
        .expect("weights");
    let mut a: RecommenderArtifacts = bundle
        .read_json(files::RECOMMENDER_ARTIFACTS)
        .expect("artifacts");
    a.read_tables(&bundle.dir).expect("the artifact tables");
    let features = |f: &shopcast_datasets::interactions::FeatureSet| {
        let (tokens, width) = f.padded();
        EntityFeatures::new(tokens, width, &device)
    };
    let (cf, pf) = (
        features(&a.customer_features),
        features(&a.product_features),
    );
    let n_p = a.products.len() as u32;
    let all = ids_tensor(&(0..n_p).collect::<Vec<_>>(), &device);
    let matrix = model.product_matrix(
        model.product_vectors(all.clone(), &pf),
        model.product_biases(all),
    );
    let customers: Vec<u32> = split.validation.iter().map(|&(c, _)| c).collect();
    let scores: Vec<f32> = model
        .score_all(
            model.customer_vectors(ids_tensor(&customers, &device), &cf),
            &matrix,
        )
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("scores");
    let mut trained: Vec<Vec<u32>> = vec![Vec::new(); a.customers.len()];
    for &(c, p, _) in &split.train {
        trained[c as usize].push(p);
    }
    let mut hits = 0usize;
    for (row, &(c, item)) in split.validation.iter().enumerate() {
        let mut row_scores = scores[row * n_p as usize..(row + 1) * n_p as usize].to_vec();
        for &p in &trained[c as usize] {
            row_scores[p as usize] = f32::NEG_INFINITY;
        }
        hits += TopK::of_row(&row_scores, 10).contains(&item) as usize;
    }
    hits as f64 / split.validation.len().max(1) as f64
}

#[test]
fn refit_trains_on_the_validation_items_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (early, early_bundle) = train_shop(dir.path(), "early", &[]);
    let early_config = dir.path().join("early.toml");
    let (m, bundle) = train_shop(
        dir.path(),
        "refit",
        &[("patience = 3", "patience = 3\nrefit = true")],
    );
    assert_eq!(early["recommender.refit"], 0.0);
    assert_eq!(m["recommender.refit"], 1.0);
    assert_beats(&m, "popularity", &BOTH_PROTOCOLS);
    // The refitted model was trained on each customer's validation item: it ranks those items
    // far higher than the early-stopped model, which never saw them.
    let without = validation_hit_rate(&early_bundle, &early_config);
    let with = validation_hit_rate(&bundle, &dir.path().join("refit.toml"));
    assert!(
        with > without + 0.1,
        "validation items in the top 10: {with:.3} with refit, {without:.3} without"
    );
}

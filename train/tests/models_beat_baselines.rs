//! Trained on a small generated shop, both models beat their simple baselines on held-out data,
//! and the same seed gives the same model.

mod common;

use std::collections::BTreeMap;

use shopcast_model::DeviceChoice;
use train::{Only, TrainOptions};

fn options(
    config: std::path::PathBuf,
    out: std::path::PathBuf,
    only: Option<Only>,
) -> TrainOptions {
    TrainOptions {
        config,
        device: Some(DeviceChoice::Flex),
        only,
        out: Some(out),
        seed: None,
        data_dir: None,
        resume: false,
    }
}

#[test]
fn both_models_beat_their_baselines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::small_shop_config(dir.path(), "beats");
    let _turn = common::one_training_at_a_time();
    let summary =
        train::run(&options(config, dir.path().join("bundle"), None)).expect("training succeeds");
    let m = &summary.metrics;
    eprintln!("{m:#?}");
    for key in ["sampled.hr@10", "full.recall@10"] {
        let model = m[&format!("recommender.{key}")];
        let popularity = m[&format!("baseline.popularity.{key}")];
        assert!(
            model > popularity,
            "recommender {key} {model:.4} does not beat popularity {popularity:.4}"
        );
    }
    let (mase, naive) = (m["forecaster.mase"], m["baseline.seasonal_naive.mase"]);
    assert!(
        mase < naive,
        "forecaster MASE {mase:.4} does not beat seasonal naive {naive:.4}"
    );
    let (wql, ma_wql) = (m["forecaster.wql"], m["baseline.moving_average.wql"]);
    assert!(
        wql < ma_wql,
        "forecaster WQL {wql:.4} does not beat the moving average {ma_wql:.4}"
    );
    // The validation period's scores, which settings are chosen by, are reported beside the
    // backtest's.
    for key in ["forecaster.validation.mase", "forecaster.validation.wql"] {
        let v = m.get(key).copied().unwrap_or(f64::NAN);
        assert!(v.is_finite() && v > 0.0, "{key} is {v}");
    }
    // Every contract key is present.
    for key in [
        "recommender.sampled.hr@10",
        "recommender.sampled.ndcg@10",
        "recommender.full.recall@10",
        "recommender.full.recall@20",
        "recommender.full.ndcg@10",
        "recommender.coverage@10",
        "baseline.itemknn.full.ndcg@10",
        "forecaster.smape",
        "forecaster.coverage_p10_p90",
        "forecaster.bias",
        "baseline.seasonal_naive.wql",
    ] {
        assert!(m.contains_key(key), "metrics.json lacks {key}");
    }
    let bundle = dir.path().join("bundle");
    for f in [
        "bundle.json",
        "metrics.json",
        "recommender.bpk",
        "forecaster.bpk",
        "recommender.vocab.json",
        "recommender.customers.parquet",
        "recommender.products.parquet",
        "recommender.histories.parquet",
        "recommender.customer_tokens.parquet",
        "recommender.product_tokens.parquet",
        "forecaster.series.json",
        "forecaster.periods.parquet",
    ] {
        assert!(bundle.join(f).exists(), "bundle lacks {f}");
    }

    // The model card: data, models, metrics against baselines, every customer group of each
    // configured attribute, limitations; counts and names only, never a customer's id.
    let card = std::fs::read_to_string(bundle.join("MODEL_CARD.md")).expect("MODEL_CARD.md");
    for part in [
        "# Model card: beats",
        "## Recommender",
        "Customer attributes: region, age_band.",
        "| rows read |",
        "### Metrics against baselines",
        "| full.recall@10 |",
        "### By region",
        "### By age_band",
        "### How a recommendation is explained",
        "## Demand forecaster",
        "| mase |",
        "Quality gate",
        "## Known limitations",
    ] {
        assert!(
            card.contains(part),
            "the model card lacks {part:?}:\n{card}"
        );
    }
    assert!(
        !card.contains("C0000"),
        "a customer id in the model card:\n{card}"
    );

    let groups: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(bundle.join("recommender.group_metrics.json")).expect("group metrics"),
    )
    .expect("json");
    let in_region: u64 = groups
        .iter()
        .filter(|g| g["attribute"] == "region")
        .map(|g| g["customers"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        in_region as f64, m["recommender.test_customers"],
        "every test customer is in one region group"
    );
    assert!(groups
        .iter()
        .all(|g| g["model"]["full.recall@10"].as_f64().is_some()));
}

#[test]
fn same_seed_same_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::small_shop_config(dir.path(), "seeded");
    let _turn = common::one_training_at_a_time();
    let run = |out: &str| -> BTreeMap<String, f64> {
        let out = dir.path().join(out);
        train::run(&options(
            config.clone(),
            out.clone(),
            Some(Only::Recommender),
        ))
        .expect("training succeeds");
        let text = std::fs::read(out.join("metrics.json")).expect("metrics.json");
        serde_json::from_slice(&text).expect("metrics.json is a map of numbers")
    };
    let a = run("a");
    let b = run("b");
    assert!(!a.is_empty());
    assert_eq!(a, b, "two runs with the same seed give different metrics");
}

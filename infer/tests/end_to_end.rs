//! End to end through the real binaries: `train` writes a bundle on flex, then `infer` scores it
//! on flex, ndarray and wgpu (Mesa's software Vulkan in CI) and gets the same numbers.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use common::{bin, run};

use polars::prelude::*;

fn read_csv(path: &Path) -> DataFrame {
    CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .expect("open csv")
        .finish()
        .expect("read csv")
}

fn col_f64(df: &DataFrame, name: &str) -> Vec<f64> {
    df.column(name)
        .expect(name)
        .cast(&DataType::Float64)
        .expect("cast")
        .f64()
        .expect("f64")
        .into_no_null_iter()
        .collect()
}

fn col_str(df: &DataFrame, name: &str) -> Vec<String> {
    df.column(name)
        .expect(name)
        .cast(&DataType::String)
        .expect("cast")
        .str()
        .expect("str")
        .iter()
        .map(|s| s.unwrap_or_default().to_string())
        .collect()
}

const SHOP: &str = r#"
[business]
name = "e2e"
seed = 11
device = "flex"
data_dir = "data"

[demo]
customers = 300
products = 90
categories = 6
days = 300
stores = 2
series_products = 6

[recommender.data]
events = { path = "events.csv" }
customer_id = "customer_id"
product_id = "product_id"
timestamp = "timestamp"
event_type = "event_type"
target_event = "purchase"
event_weights = { view = 0.1, cart = 0.4, purchase = 1.0 }

[recommender.data.customers]
file = { path = "customers.csv" }
id = "customer_id"
categorical = ["region", "age_band"]

[recommender.data.products]
file = { path = "products.csv" }
id = "product_id"
name = "name"
categorical = ["category", "brand"]

[recommender.model]
embedding_dim = 16
segments = 3

[recommender.training]
epochs = 4
batch_size = 256

[forecaster.data]
sales = { path = "sales.csv" }
series_keys = ["store_id", "product_id"]
date = "date"
target = "units"
known_covariates = ["price", "promo", "holiday"]
past_covariates = ["temperature"]

[forecaster.model]
context_length = 21
horizon = 7
hidden_size = 16

[forecaster.training]
epochs = 2
windows_per_series = 16

[forecaster.evaluation]
backtest_folds = 2
allow_worse_than_baseline = true
"#;

#[test]
fn train_then_score_on_every_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("shop.toml");
    std::fs::write(&config, SHOP).expect("write config");
    let bundle = dir.path().join("bundle");
    run(Command::new(bin("train"))
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&bundle));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("bundle.json")).expect("bundle.json"))
            .expect("json");
    assert_eq!(
        manifest["models"],
        serde_json::json!(["recommender", "forecaster"])
    );
    assert!(manifest["files"]["recommender.bpk"]
        .as_str()
        .is_some_and(|s| s.len() == 64));

    let mut recs: HashMap<&str, DataFrame> = HashMap::new();
    let mut fcs: HashMap<&str, DataFrame> = HashMap::new();
    for device in ["flex", "ndarray", "wgpu"] {
        let out = dir.path().join(format!("recs-{device}.csv"));
        run(Command::new(bin("infer"))
            .args(["recommend", "--top-k", "5", "--device", device, "--bundle"])
            .arg(&bundle)
            .arg("--out")
            .arg(&out));
        recs.insert(device, read_csv(&out));
        let out = dir.path().join(format!("forecast-{device}.csv"));
        run(Command::new(bin("infer"))
            .args(["forecast", "--device", device, "--bundle"])
            .arg(&bundle)
            .arg("--out")
            .arg(&out));
        fcs.insert(device, read_csv(&out));
    }

    // Recommendations: the contract's columns, ranks 1..=5, and a reason on every row.
    let flex = &recs["flex"];
    let names: Vec<String> = flex
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "customer_id",
            "rank",
            "product_id",
            "score",
            "reason",
            "segment"
        ]
    );
    assert_eq!(flex.height(), 300 * 5);
    assert!(col_str(flex, "reason").iter().all(|r| !r.is_empty()));
    let key = |df: &DataFrame| -> HashMap<(String, String), f64> {
        col_str(df, "customer_id")
            .into_iter()
            .zip(col_str(df, "product_id"))
            .zip(col_f64(df, "score"))
            .collect()
    };
    let reference = key(flex);
    for device in ["ndarray", "wgpu"] {
        let other = key(&recs[device]);
        let mut shared = 0;
        for (pair, score) in &other {
            if let Some(r) = reference.get(pair) {
                shared += 1;
                assert!(
                    (r - score).abs() < 1e-4,
                    "{device}: score of {pair:?} is {score}, flex gave {r}"
                );
            }
        }
        // Near-ties may swap the last rank between backends; nearly all pairs must agree.
        assert!(
            shared as f64 >= 0.98 * reference.len() as f64,
            "{device}: only {shared} of {} pairs match",
            reference.len()
        );
    }

    // Forecasts: keys, date, quantiles; non-negative, non-crossing, equal across backends.
    let f = &fcs["flex"];
    let names: Vec<String> = f.get_column_names().iter().map(|s| s.to_string()).collect();
    assert_eq!(
        names,
        ["store_id", "product_id", "date", "p10", "p50", "p90"]
    );
    assert_eq!(f.height(), 2 * 6 * 7);
    let (p10, p50, p90) = (col_f64(f, "p10"), col_f64(f, "p50"), col_f64(f, "p90"));
    for i in 0..p50.len() {
        assert!(
            p10[i] >= 0.0 && p10[i] <= p50[i] && p50[i] <= p90[i],
            "row {i}: {} {} {}",
            p10[i],
            p50[i],
            p90[i]
        );
    }
    for device in ["ndarray", "wgpu"] {
        let other = col_f64(&fcs[device], "p50");
        for (i, (a, b)) in p50.iter().zip(&other).enumerate() {
            assert!(
                (a - b).abs() < 1e-4 * a.abs().max(1.0),
                "{device}: p50 row {i} is {b}, flex gave {a}"
            );
        }
    }

    // Manifest beside the output.
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("recs-flex.csv.manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(m["rows_written"], 1500);
    assert_eq!(m["device"], "flex");

    // Sharding: the union of shards is the whole output, with no overlap.
    let mut union: Vec<String> = Vec::new();
    for i in 0..3 {
        let out = dir.path().join(format!("shard-{i}.csv"));
        run(Command::new(bin("infer"))
            .args([
                "recommend",
                "--top-k",
                "5",
                "--device",
                "flex",
                "--shard",
                &format!("{i}/3"),
                "--bundle",
            ])
            .arg(&bundle)
            .arg("--out")
            .arg(&out));
        union.extend(col_str(&read_csv(&out), "customer_id"));
    }
    let mut all = col_str(flex, "customer_id");
    all.sort();
    union.sort();
    assert_eq!(all, union);
}

#[test]
fn corrupted_bundle_is_refused_with_exit_code_4() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).expect("mkdir");
    std::fs::write(bundle.join("bundle.json"), "{\"format_version\": 99}").expect("write");
    let out = Command::new(bin("infer"))
        .args(["forecast", "--device", "flex", "--bundle"])
        .arg(&bundle)
        .arg("--out")
        .arg(dir.path().join("f.csv"))
        .output()
        .expect("run infer");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("format 99"), "{stderr}");
    assert!(!dir.path().join("f.csv").exists());
}

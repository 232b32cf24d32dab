//! `infer monitor` through the real binaries: quiet on the data the bundle was trained on; on
//! latest data with planted drift (new customers and products, sales four times as high, prices
//! two and a half times as high) it
//! names the crossed thresholds and exits 7.

mod common;

use std::path::Path;
use std::process::Command;

use chrono::{Days, NaiveDate, NaiveDateTime};
use common::{bin, run};

const SHOP: &str = r#"
[business]
name = "monitored"
seed = 5
device = "flex"
data_dir = "data"

[demo]
customers = 300
products = 80
categories = 5
days = 240
stores = 2
series_products = 5

[recommender.data]
events = { path = "events.csv" }
customer_id = "customer_id"
product_id = "product_id"
timestamp = "timestamp"
event_type = "event_type"
target_event = "purchase"
event_weights = { view = 0.1, cart = 0.4, purchase = 1.0 }

[recommender.model]
embedding_dim = 16
segments = 3

[recommender.training]
epochs = 3
batch_size = 256

[forecaster.data]
sales = { path = "sales.csv" }
series_keys = ["store_id", "product_id"]
date = "date"
target = "units"
known_covariates = ["price", "promo"]

[forecaster.model]
context_length = 21
horizon = 7
hidden_size = 8

[forecaster.training]
epochs = 2
windows_per_series = 16

[forecaster.evaluation]
backtest_folds = 1
allow_worse_than_baseline = true
"#;

fn monitor(dir: &Path, data_dir: &Path, report: &Path) -> (Option<i32>, String, serde_json::Value) {
    let o = Command::new(bin("infer"))
        .args(["monitor", "--device", "flex", "--bundle"])
        .arg(dir.join("bundle"))
        .arg("--config")
        .arg(dir.join("shop.toml"))
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--out")
        .arg(report)
        .output()
        .expect("spawn infer monitor");
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let json = serde_json::from_slice(&std::fs::read(report).expect("report")).expect("json");
    (o.status.code(), stderr, json)
}

fn flagged(report: &serde_json::Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["flagged"] == true)
        .map(|c| c["check"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn monitor_is_quiet_on_unchanged_data_and_flags_planted_drift() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("shop.toml"), SHOP).expect("write config");
    run(Command::new(bin("train"))
        .arg("--config")
        .arg(dir.path().join("shop.toml"))
        .arg("--out")
        .arg(dir.path().join("bundle")));
    let data = dir.path().join("data");

    // The data the bundle was trained on: every check passes.
    let (code, stderr, report) = monitor(dir.path(), &data, &dir.path().join("same.json"));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["retrain"], false, "{report:#}");
    let names: Vec<&str> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["check"].as_str())
        .collect();
    for name in [
        "events_volume_change",
        "sales_volume_change",
        "new_customer_share",
        "new_product_share",
        "target_psi",
        "psi.price",
        "psi.promo",
        "accuracy_loss",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }

    // Latest data: two more weeks in which sales are four times as high at prices two and a half
    // times as high, and new customers buy new products.
    let latest = dir.path().join("latest");
    std::fs::create_dir_all(&latest).expect("mkdir");
    for f in ["events.csv", "sales.csv", "products.csv"] {
        if data.join(f).exists() {
            std::fs::copy(data.join(f), latest.join(f)).expect("copy");
        }
    }
    let sales = std::fs::read_to_string(data.join("sales.csv")).expect("sales");
    let header: Vec<&str> = sales.lines().next().expect("header").split(',').collect();
    let (date_at, units_at, price_at) = (
        header.iter().position(|c| *c == "date").expect("date"),
        header.iter().position(|c| *c == "units").expect("units"),
        header.iter().position(|c| *c == "price").expect("price"),
    );
    let last = sales
        .lines()
        .skip(1)
        .filter_map(|l| NaiveDate::parse_from_str(l.split(',').nth(date_at)?, "%Y-%m-%d").ok())
        .max()
        .expect("a date");
    let mut more = sales.clone();
    for line in sales.lines().skip(1) {
        let mut fields: Vec<String> = line.split(',').map(str::to_string).collect();
        let Ok(day) = NaiveDate::parse_from_str(&fields[date_at], "%Y-%m-%d") else {
            continue;
        };
        let back = (last - day).num_days();
        if !(0..14).contains(&back) {
            continue;
        }
        fields[date_at] = (day + Days::new(14)).format("%Y-%m-%d").to_string();
        let units: f64 = fields[units_at].parse().expect("units");
        fields[units_at] = format!("{}", units * 4.0 + 4.0);
        let price: f64 = fields[price_at].parse().expect("price");
        fields[price_at] = format!("{:.2}", price * 2.5);
        more.push_str(&fields.join(","));
        more.push('\n');
    }
    std::fs::write(latest.join("sales.csv"), more).expect("write sales");
    let events = std::fs::read_to_string(data.join("events.csv")).expect("events");
    let header: Vec<&str> = events.lines().next().expect("header").split(',').collect();
    let col = |name: &str| header.iter().position(|c| *c == name).expect("column");
    let (c_at, p_at, t_at, e_at) = (
        col("customer_id"),
        col("product_id"),
        col("timestamp"),
        col("event_type"),
    );
    let template: Vec<String> = events
        .lines()
        .nth(1)
        .expect("a row")
        .split(',')
        .map(str::to_string)
        .collect();
    let mut more = events.clone();
    let when = NaiveDateTime::new(last + Days::new(3), chrono::NaiveTime::MIN);
    for i in 0..200 {
        let mut fields = template.clone();
        fields[c_at] = format!("NEW-C{i}");
        fields[p_at] = format!("NEW-P{}", i % 40);
        fields[t_at] = when.format("%Y-%m-%d %H:%M:%S").to_string();
        fields[e_at] = "purchase".into();
        more.push_str(&fields.join(","));
        more.push('\n');
    }
    std::fs::write(latest.join("events.csv"), more).expect("write events");

    let (code, stderr, report) = monitor(dir.path(), &latest, &dir.path().join("drift.json"));
    assert_eq!(code, Some(7), "{stderr}");
    assert_eq!(report["retrain"], true);
    let flags = flagged(&report);
    for name in [
        "new_customer_share",
        "new_product_share",
        "target_psi",
        "psi.price",
        "accuracy_loss",
    ] {
        assert!(
            flags.contains(&name.to_string()),
            "{name} not flagged: {report:#}"
        );
    }
    assert!(stderr.contains("retraining advised"), "{stderr}");
}

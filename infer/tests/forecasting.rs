//! The forecaster through the real binaries, on generated daily sales with a weekly pattern,
//! promotions that lift sales, a slow trend and Poisson noise, plus one planted spike and one
//! planted stock-out in the last weeks:
//! - the backtest beats seasonal naive and the moving average on MASE and weighted quantile
//!   loss, and the P10-P90 band covers roughly 80% of the actuals;
//! - `infer forecast` is non-negative with non-crossing quantiles, also for a series that
//!   started only two weeks before the end;
//! - `--aggregate store_id` sums per store (checked by hand, with revenue);
//! - `infer reorder` matches a hand computation from the forecast file;
//! - `infer anomalies` flags the spike and the stock-out, and little else.

mod common;

use std::collections::HashMap;

use chrono::Datelike;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{bin, run};
use polars::prelude::*;

fn read_csv(path: &Path) -> DataFrame {
    CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .expect("open csv")
        .finish()
        .expect("read csv")
}

fn col(df: &DataFrame, name: &str) -> Vec<String> {
    df.column(name)
        .unwrap_or_else(|_| panic!("no column {name}"))
        .str()
        .expect("str")
        .iter()
        .map(|s| s.unwrap_or_default().to_string())
        .collect()
}

fn num(df: &DataFrame, name: &str) -> Vec<f64> {
    col(df, name)
        .iter()
        .map(|s| s.parse().expect("number"))
        .collect()
}

/// A bundle's `metrics.json`.
fn metrics(bundle: &Path) -> HashMap<String, f64> {
    serde_json::from_slice(&std::fs::read(bundle.join("metrics.json")).expect("metrics"))
        .expect("json")
}

/// A small deterministic generator (SplitMix64), so the test needs no extra crate.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn poisson(&mut self, lambda: f64) -> u64 {
        // Knuth for small means, a rounded normal for large ones.
        if lambda > 30.0 {
            let (u1, u2) = (self.uniform().max(1e-12), self.uniform());
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            return (lambda + lambda.sqrt() * z).round().max(0.0) as u64;
        }
        let (limit, mut k, mut p) = ((-lambda).exp(), 0u64, 1.0);
        loop {
            p *= self.uniform();
            if p <= limit {
                return k;
            }
            k += 1;
        }
    }
}

const DAYS: usize = 420;
const SPIKE_DAY: usize = DAYS - 9;
const STOCKOUT: std::ops::Range<usize> = DAYS - 12..DAYS - 7;

/// Writes `sales.csv`: 2 stores x 6 products (+ one product that starts late in both stores);
/// the category (`c0`/`c1`) decides the weekly pattern.
fn write_sales(path: &Path) {
    let mut rng = Rng(2026);
    let start = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).expect("date");
    let mut csv = String::from("store_id,product_id,category,date,units,price,promo\n");
    let weekly = [
        [1.0, 0.9, 0.9, 1.0, 1.3, 1.8, 0.6],
        [0.8, 0.8, 1.0, 1.1, 1.2, 1.5, 1.1],
    ];
    for store in 0..2 {
        for product in 0..7 {
            let level =
                [40.0, 25.0, 12.0, 6.0, 3.0, 60.0, 15.0][product] * (1.0 + 0.3 * store as f64);
            let first = if product == 6 { DAYS - 14 } else { 0 };
            let base_price = 2.0 + product as f64;
            let mut promo_left = 0;
            for d in first..DAYS {
                if promo_left == 0 && rng.uniform() < 0.02 {
                    promo_left = 5 + (rng.uniform() * 5.0) as usize;
                }
                let promo = promo_left > 0;
                promo_left = promo_left.saturating_sub(1);
                let date = start + chrono::Duration::days(d as i64);
                let dow = d % 7;
                let trend = 1.0 + 0.4 * d as f64 / DAYS as f64;
                let lambda =
                    level * weekly[product % 2][dow] * trend * if promo { 1.6 } else { 1.0 };
                let mut units = rng.poisson(lambda);
                // Planted: a spike for product 0 in store 0, a stock-out for product 5 in store 1.
                if store == 0 && product == 0 && d == SPIKE_DAY {
                    units = (lambda * 6.0).round() as u64;
                }
                if store == 1 && product == 5 && STOCKOUT.contains(&d) {
                    units = 0;
                }
                let price = base_price * if promo { 0.8 } else { 1.0 };
                writeln!(
                    csv,
                    "s{store},p{product},c{},{},{units},{price:.2},{}",
                    product % 2,
                    date.format("%Y-%m-%d"),
                    promo as u8
                )
                .expect("write");
            }
        }
    }
    std::fs::write(path, csv).expect("write sales");
}

const SHOP: &str = r#"
[business]
name = "forecasting"
seed = 3
device = "flex"
data_dir = "."

[forecaster.data]
sales = { path = "sales.csv" }
series_keys = ["store_id", "product_id"]
date = "date"
target = "units"
known_covariates = ["price", "promo"]
static_attributes = ["category"]
price = "price"
fill_missing = "zero"

[forecaster.model]
context_length = 28
horizon = 14
hidden_size = 32
season_length = 7

[forecaster.training]
epochs = 12
batch_size = 64
learning_rate = 0.005
windows_per_series = 64
patience = 3

[forecaster.evaluation]
backtest_folds = 3
"#;

/// The bundle trained once on the generated sales, shared by this file's tests.
fn shared_bundle() -> &'static Path {
    static BUNDLE: OnceLock<PathBuf> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("forecasting");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fixture directory");
        write_sales(&dir.join("sales.csv"));
        let config = dir.join("shop.toml");
        std::fs::write(&config, SHOP).expect("write config");
        let bundle = dir.join("bundle");
        run(Command::new(bin("train"))
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(&bundle));
        bundle
    })
}

/// `infer forecast --plot` of the shared bundle, run once: the forecast file, the charts'
/// directory and the job's stderr.
fn shared_forecast() -> &'static (PathBuf, PathBuf, String) {
    static FORECAST: OnceLock<(PathBuf, PathBuf, String)> = OnceLock::new();
    FORECAST.get_or_init(|| {
        let bundle = shared_bundle();
        let forecast = bundle.with_file_name("forecast.csv");
        let plots = bundle.with_file_name("plots");
        let stderr = run(Command::new(bin("infer"))
            .args(["forecast", "--device", "flex", "--bundle"])
            .arg(bundle)
            .arg("--plot")
            .arg(&plots)
            .arg("--out")
            .arg(&forecast));
        (forecast, plots, stderr)
    })
}

/// The shared forecast's columns.
struct ForecastColumns {
    rows: usize,
    stores: Vec<String>,
    products: Vec<String>,
    dates: Vec<String>,
    p10: Vec<f64>,
    p50: Vec<f64>,
    p90: Vec<f64>,
}

fn forecast_columns() -> ForecastColumns {
    let f = read_csv(&shared_forecast().0);
    ForecastColumns {
        rows: f.height(),
        stores: col(&f, "store_id"),
        products: col(&f, "product_id"),
        dates: col(&f, "date"),
        p10: num(&f, "p10"),
        p50: num(&f, "p50"),
        p90: num(&f, "p90"),
    }
}

/// The backtest beats seasonal naive and the moving average on MASE and WQL; P10-P90 covers roughly 80%.
#[test]
fn the_backtest_beats_the_baselines_and_the_band_covers_about_80_percent() {
    let bundle = shared_bundle();

    // Backtest against the baselines, from metrics.json.
    let m = metrics(bundle);
    eprintln!("{m:#?}");
    for metric in ["mase", "wql"] {
        let model = m[&format!("forecaster.{metric}")];
        for baseline in ["seasonal_naive", "moving_average"] {
            let b = m[&format!("baseline.{baseline}.{metric}")];
            assert!(
                model < b,
                "forecaster {metric} {model:.4} does not beat {baseline} {b:.4}"
            );
        }
        assert!(m.contains_key(&format!("baseline.ets.{metric}")));
    }
    let coverage = m["forecaster.coverage_p10_p90"];
    assert!(
        (0.65..=0.93).contains(&coverage),
        "P10-P90 covers {coverage:.3} of actuals, expected roughly 0.8"
    );
    let per_series: serde_json::Value = serde_json::from_slice(
        &std::fs::read(bundle.join("forecaster.series_metrics.json")).expect("series metrics"),
    )
    .expect("json");
    let rows = per_series.as_array().expect("array");
    assert!(
        rows.len() >= 12,
        "per-series metrics for {} series",
        rows.len()
    );
    assert!(rows[0]["metrics"]["ets"]["mase"].is_number());
}

/// `infer forecast`: non-negative, non-crossing quantiles for every series, the late starter included, and one chart per series.
#[test]
fn forecasts_are_non_negative_ordered_and_cover_the_late_starter() {
    // Forecast: non-negative, non-crossing, every series including the late starter.
    let (forecast, plots, stderr) = shared_forecast();
    assert!(stderr.contains("promo assumed 0"), "{stderr}");
    // One chart per series, with the history, the median and the band drawn.
    let charts: Vec<_> = std::fs::read_dir(plots)
        .expect("plots")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    assert_eq!(charts.len(), 14, "{charts:?}");
    let late_chart = std::fs::read_to_string(plots.join("s0_p6.svg")).expect("s0/p6 chart");
    assert!(late_chart.starts_with("<svg") && late_chart.contains("s0 / p6: forecast from"));
    assert!(late_chart.matches("<polyline").count() >= 2 && late_chart.contains("<polygon"));
    let f = read_csv(forecast);
    let (p10, p50, p90) = (num(&f, "p10"), num(&f, "p50"), num(&f, "p90"));
    assert_eq!(f.height(), 14 * 14);
    for i in 0..f.height() {
        assert!(
            p10[i] >= 0.0 && p10[i] <= p50[i] && p50[i] <= p90[i],
            "row {i}"
        );
    }
    let stores = col(&f, "store_id");
    let products = col(&f, "product_id");
    let late: Vec<f64> = (0..f.height())
        .filter(|&i| stores[i] == "s0" && products[i] == "p6")
        .map(|i| p50[i])
        .collect();
    let late_mean = late.iter().sum::<f64>() / late.len() as f64;
    assert!(
        late.len() == 14 && (5.0..40.0).contains(&late_mean),
        "a series with two weeks of history (about 15-23 a day) is forecast {late_mean:.1} a day"
    );
}

/// `--aggregate store_id`: the sum of the series' means and the revenue at the last prices, by hand.
#[test]
fn per_store_totals_sum_the_series_means_with_revenue() {
    let bundle = shared_bundle();
    let dir = tempfile::tempdir().expect("tempdir");

    let ForecastColumns {
        rows,
        stores,
        products,
        dates,
        p10,
        p50,
        p90,
    } = forecast_columns();
    // Per store: the sum of the series' means, and revenue at the last prices, by hand.
    let agg_path = dir.path().join("per-store.csv");
    run(Command::new(bin("infer"))
        .args([
            "forecast",
            "--device",
            "flex",
            "--aggregate",
            "store_id",
            "--bundle",
        ])
        .arg(bundle)
        .arg("--out")
        .arg(&agg_path));
    let agg = read_csv(&agg_path);
    assert_eq!(agg.height(), 2 * 14);
    let (a_store, a_date, a_p50, a_rev) = (
        col(&agg, "store_id"),
        col(&agg, "date"),
        num(&agg, "p50"),
        num(&agg, "revenue"),
    );
    let sales = read_csv(&bundle.with_file_name("sales.csv"));
    let (s_store, s_product, s_price) = (
        col(&sales, "store_id"),
        col(&sales, "product_id"),
        num(&sales, "price"),
    );
    let mut last_price: HashMap<(String, String), f64> = HashMap::new();
    for i in 0..sales.height() {
        last_price.insert((s_store[i].clone(), s_product[i].clone()), s_price[i]);
    }
    for j in 0..agg.height() {
        let (mut mean, mut revenue) = (0.0, 0.0);
        for i in 0..rows {
            if stores[i] == a_store[j] && dates[i] == a_date[j] {
                let mu = 0.3 * p10[i] + 0.4 * p50[i] + 0.3 * p90[i];
                mean += mu;
                revenue += mu * last_price[&(stores[i].clone(), products[i].clone())];
            }
        }
        assert!(
            (a_p50[j] - mean).abs() < 1e-3 * mean.max(1.0),
            "row {j}: {} vs {mean}",
            a_p50[j]
        );
        assert!(
            (a_rev[j] - revenue).abs() < 1e-3 * revenue.max(1.0),
            "row {j}: revenue"
        );
    }
}

/// `infer reorder`: lead-time demand at the service level, by hand from the forecast file.
#[test]
fn reorder_matches_a_hand_computation() {
    let bundle = shared_bundle();
    let dir = tempfile::tempdir().expect("tempdir");

    let ForecastColumns {
        rows: n_rows,
        stores,
        products,
        p10,
        p50,
        p90,
        ..
    } = forecast_columns();
    // Reorder: lead-time demand at the service level by hand from the forecast file.
    let stock = dir.path().join("stock.csv");
    std::fs::write(
        &stock,
        "store_id,product_id,on_hand,lead_time_days,service_level\n\
         s0,p0,30,3,0.95\ns1,p1,500,7.5,0.9\ns0,p4,0,14,\ns9,p9,1,1,0.9\n",
    )
    .expect("write stock");
    let orders_path = dir.path().join("orders.csv");
    run(Command::new(bin("infer"))
        .args([
            "reorder",
            "--device",
            "flex",
            "--service-level",
            "0.8",
            "--bundle",
        ])
        .arg(bundle)
        .arg("--stock")
        .arg(&stock)
        .arg("--out")
        .arg(&orders_path));
    let orders = read_csv(&orders_path);
    assert_eq!(orders.height(), 3, "the unknown series s9/p9 is skipped");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("orders.csv.manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["rows_skipped"]["unknown series"], 1);
    let z = |p: f64| match p {
        0.8 => 0.8416212336,
        0.9 => 1.2815515655,
        0.95 => 1.6448536270,
        _ => unreachable!(),
    };
    let (o_store, o_product, o_on, o_lead, o_level, o_demand, o_qty) = (
        col(&orders, "store_id"),
        col(&orders, "product_id"),
        num(&orders, "on_hand"),
        num(&orders, "lead_time_days"),
        num(&orders, "service_level"),
        num(&orders, "demand_lead_time"),
        num(&orders, "order_qty"),
    );
    assert_eq!(o_level, vec![0.95, 0.9, 0.8]);
    for j in 0..orders.height() {
        let rows: Vec<usize> = (0..n_rows)
            .filter(|&i| stores[i] == o_store[j] && products[i] == o_product[j])
            .collect();
        let (mut mean, mut var) = (0.0, 0.0);
        for (t, &i) in rows.iter().enumerate() {
            let w = (o_lead[j] - t as f64).clamp(0.0, 1.0);
            let sd = (p90[i] - p10[i]) / (2.0 * 1.2815515655);
            mean += w * (0.3 * p10[i] + 0.4 * p50[i] + 0.3 * p90[i]);
            var += (w * sd).powi(2);
        }
        let demand = (mean + z(o_level[j]) * var.sqrt()).max(0.0);
        assert!(
            (o_demand[j] - demand).abs() < 1e-3 * demand.max(1.0),
            "order {j}: {} vs {demand}",
            o_demand[j]
        );
        assert_eq!(o_qty[j], (demand - o_on[j]).ceil().max(0.0), "order {j}");
    }
    assert_eq!(o_qty[1], 0.0, "500 on hand covers a week of p1");
}

/// A lead time beyond the horizon is refused with the row and column named (exit 3).
#[test]
fn a_lead_time_beyond_the_horizon_is_refused() {
    let bundle = shared_bundle();
    let dir = tempfile::tempdir().expect("tempdir");

    let stock = dir.path().join("stock.csv");
    // A lead time beyond the horizon is refused with the row and column named.
    std::fs::write(
        &stock,
        "store_id,product_id,on_hand,lead_time_days\ns0,p0,3,30\n",
    )
    .expect("write");
    let out = Command::new(bin("infer"))
        .args(["reorder", "--device", "flex", "--bundle"])
        .arg(bundle)
        .arg("--stock")
        .arg(&stock)
        .arg("--out")
        .arg(dir.path().join("bad.csv"))
        .output()
        .expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("lead_time_days") && stderr.contains("row 1") && stderr.contains("14 days"),
        "{stderr}"
    );
}

/// `infer anomalies` flags the planted spike and stock-out with their direction, and little else.
#[test]
fn anomalies_flag_the_planted_spike_and_stock_out() {
    let bundle = shared_bundle();
    let dir = tempfile::tempdir().expect("tempdir");

    // Anomalies: the planted spike and stock-out are flagged, with their direction.
    let anomalies_path = dir.path().join("anomalies.csv");
    run(Command::new(bin("infer"))
        .args([
            "anomalies",
            "--device",
            "flex",
            "--periods",
            "14",
            "--bundle",
        ])
        .arg(bundle)
        .arg("--out")
        .arg(&anomalies_path));
    let an = read_csv(&anomalies_path);
    let (an_store, an_product, an_date, an_dir) = (
        col(&an, "store_id"),
        col(&an, "product_id"),
        col(&an, "date"),
        col(&an, "direction"),
    );
    eprintln!(
        "{}",
        std::fs::read_to_string(&anomalies_path).expect("read")
    );
    let start = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).expect("date");
    let day = |d: usize| {
        (start + chrono::Duration::days(d as i64))
            .format("%Y-%m-%d")
            .to_string()
    };
    let flagged = |s: &str, p: &str, d: usize, dir: &str| {
        (0..an.height()).any(|i| {
            an_store[i] == s && an_product[i] == p && an_date[i] == day(d) && an_dir[i] == dir
        })
    };
    assert!(
        flagged("s0", "p0", SPIKE_DAY, "spike"),
        "the planted spike is not flagged"
    );
    for d in STOCKOUT {
        assert!(
            flagged("s1", "p5", d, "drop"),
            "stock-out day {} is not flagged",
            day(d)
        );
    }
    // 12 established series x 14 periods are checked (the late starter has no history before
    // them); 6 are planted, a P1-P99 band should add only a few more.
    assert!(
        an.height() <= 6 + 8,
        "{} of 12 x 14 series-periods flagged: the band is too narrow",
        an.height()
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("anomalies.csv.manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["counts"]["periods_checked"], 12 * 14);
    for c in ["actual", "p_low", "p_high", "surprise"] {
        assert!(an.column(c).is_ok());
    }
}

const WEEKLY_SHOP: &str = r#"
[business]
name = "weekly"
seed = 4
device = "flex"
data_dir = "."

[forecaster.data]
sales = { path = "weekly.csv" }
series_keys = ["product_id"]
date = "week"
target = "units"
frequency = "weekly"
known_covariates = ["promo"]

[forecaster.model]
context_length = 52
horizon = 8
hidden_size = 16
season_length = 52

[forecaster.training]
epochs = 8
batch_size = 64
windows_per_series = 64

[forecaster.evaluation]
backtest_folds = 2
"#;

/// Weekly data: a yearly pattern, promotions, three years; the quality gate (not worse than
/// seasonal naive) must pass and the forecast must continue on Mondays, a week apart.
#[test]
fn weekly_sales_are_forecast_week_by_week() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 2023-01-02 is a Monday; rows are dated mid-week to show that dates map to their week.
    let start = chrono::NaiveDate::from_ymd_opt(2023, 1, 4).expect("date");
    let csv = weekly_csv(156, start, 52);
    std::fs::write(dir.path().join("weekly.csv"), csv).expect("write");
    let config = dir.path().join("weekly.toml");
    std::fs::write(&config, WEEKLY_SHOP).expect("write config");
    let bundle = dir.path().join("bundle");
    run(Command::new(bin("train"))
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&bundle));
    let out = dir.path().join("forecast.csv");
    run(Command::new(bin("infer"))
        .args(["forecast", "--device", "flex", "--bundle"])
        .arg(&bundle)
        .arg("--out")
        .arg(&out));
    let f = read_csv(&out);
    assert_eq!(f.height(), 6 * 8);
    let dates: Vec<chrono::NaiveDate> = col(&f, "date")
        .iter()
        .map(|d| d.parse().expect("date"))
        .collect();
    let last_week = start + chrono::Duration::days(7 * 155);
    for (i, d) in dates.iter().enumerate() {
        assert_eq!(d.weekday(), chrono::Weekday::Mon, "{d}");
        let step = (i % 8) as i64;
        assert_eq!((*d - dates[i - i % 8]).num_days(), 7 * step);
        // The last row is a Wednesday: its week's Monday plus one week starts the forecast.
        assert_eq!(dates[i - i % 8], last_week + chrono::Duration::days(5));
    }
    let (p10, p50, p90) = (num(&f, "p10"), num(&f, "p50"), num(&f, "p90"));
    for i in 0..f.height() {
        assert!(
            p10[i] >= 0.0 && p10[i] <= p50[i] && p50[i] <= p90[i],
            "row {i}"
        );
    }
}

/// Weekly sales of six products over `weeks` weeks from `start` (one row a week, dated that
/// weekday): a yearly pattern, promotions and Poisson noise, drawn from `seed`.
fn weekly_csv(weeks: usize, start: chrono::NaiveDate, seed: u64) -> String {
    let mut rng = Rng(seed);
    let mut csv = String::from("product_id,week,units,promo\n");
    for product in 0..6 {
        let level = [200.0, 80.0, 40.0, 120.0, 20.0, 60.0][product];
        for w in 0..weeks {
            let promo = rng.uniform() < 0.1;
            let year = (w as f64 / 52.0 * std::f64::consts::TAU + product as f64).sin();
            let lambda = level * (1.0 + 0.5 * year) * if promo { 1.5 } else { 1.0 };
            let date = start + chrono::Duration::days(7 * w as i64);
            writeln!(
                csv,
                "p{product},{},{},{}",
                date.format("%Y-%m-%d"),
                rng.poisson(lambda),
                promo as u8
            )
            .expect("write");
        }
    }
    csv
}

/// A weekly business with under three years of history (143 weeks), a season of 52 and a
/// quarter's horizon: three backtest folds run, with a context shorter than the season; data
/// that is really too short is refused as clearly as before.
#[test]
fn short_weekly_histories_run_three_backtest_folds() {
    let shop = WEEKLY_SHOP
        .replace("context_length = 52", "context_length = 26")
        .replace("horizon = 8", "horizon = 13")
        .replace("backtest_folds = 2", "backtest_folds = 3");
    let train_on = |weeks: usize| {
        let dir = tempfile::tempdir().expect("tempdir");
        let start = chrono::NaiveDate::from_ymd_opt(2023, 1, 2).expect("date");
        std::fs::write(dir.path().join("weekly.csv"), weekly_csv(weeks, start, 143))
            .expect("write");
        let config = dir.path().join("weekly.toml");
        std::fs::write(&config, &shop).expect("write config");
        let bundle = dir.path().join("bundle");
        let out = Command::new(bin("train"))
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(&bundle)
            .output()
            .expect("spawn train");
        (dir, bundle, out)
    };
    let (_dir, bundle, out) = train_on(143);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(0) | Some(6)),
        "143 weeks refused: {stderr}"
    );
    let m = metrics(&bundle);
    eprintln!("{m:#?}");
    assert_eq!(m["forecaster.backtest_folds"], 3.0);
    for key in [
        "forecaster.mase",
        "baseline.seasonal_naive.mase",
        "forecaster.wql",
    ] {
        assert!(m[key].is_finite(), "{key}: {}", m[key]);
    }
    let forecast = bundle.with_file_name("forecast.csv");
    run(Command::new(bin("infer"))
        .args(["forecast", "--device", "flex", "--bundle"])
        .arg(&bundle)
        .arg("--out")
        .arg(&forecast));
    assert_eq!(read_csv(&forecast).height(), 6 * 13);

    // 3 folds and a validation period of 13 weeks, and a training window after 26 weeks of
    // context, need 91 weeks.
    let (_dir, _, out) = train_on(80);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("the data has 80 periods") && stderr.contains("need 91"),
        "{stderr}"
    );
}

/// Daily sales of eight products over `days` days (a weekly pattern, promotions, Poisson noise);
/// from day `changed_from` on, sales are `factor` times what was drawn.
fn eight_products_csv(days: usize, changed_from: usize, factor: u64) -> String {
    let mut rng = Rng(77);
    let start = chrono::NaiveDate::from_ymd_opt(2024, 3, 4).expect("date");
    let mut csv = String::from("product_id,date,units,promo\n");
    for product in 0..8 {
        let level = [30.0, 12.0, 50.0, 8.0, 20.0, 40.0, 15.0, 25.0][product];
        for d in 0..days {
            let promo = rng.uniform() < 0.1;
            let weekly = [1.0, 0.9, 1.0, 1.1, 1.3, 1.5, 0.7][d % 7];
            let units = rng.poisson(level * weekly * if promo { 2.0 } else { 1.0 });
            let units = if d >= changed_from {
                units * factor
            } else {
                units
            };
            let date = start + chrono::Duration::days(d as i64);
            writeln!(
                csv,
                "p{product},{},{units},{}",
                date.format("%Y-%m-%d"),
                promo as u8
            )
            .expect("write");
        }
    }
    csv
}

/// With `refit` (the default) each backtest fold is scored by networks retrained on everything
/// before its origin, and never on the fold: changing the sales of the last fold changes that
/// fold's score but leaves the earlier folds' scores exactly as they were; the bundle's
/// networks are retrained on the whole history. Without refit no fold network is trained.
#[test]
fn refitted_fold_networks_see_everything_before_their_fold_and_nothing_after() {
    const SHOP: &str = r#"
[business]
name = "refit"
seed = 5
device = "flex"
data_dir = "."

[forecaster.data]
sales = { path = "sales.csv" }
series_keys = ["product_id"]
date = "date"
target = "units"
known_covariates = ["promo"]

[forecaster.model]
context_length = 28
horizon = 14
hidden_size = 16
season_length = 7

[forecaster.training]
epochs = 6
batch_size = 64
learning_rate = 0.005
windows_per_series = 32
patience = 3

[forecaster.evaluation]
backtest_folds = 3
allow_worse_than_baseline = true
"#;
    // 200 days: validation from day 144, folds from 158, 172 and 186.
    let dir = tempfile::tempdir().expect("tempdir");
    let train_on = |name: &str, csv: String, refit: bool| {
        let data = dir.path().join(name);
        std::fs::create_dir_all(&data).expect("dir");
        std::fs::write(data.join("sales.csv"), csv).expect("write");
        let shop = SHOP.replace("patience = 3", &format!("patience = 3\nrefit = {refit}"));
        std::fs::write(data.join("shop.toml"), shop).expect("write config");
        let bundle = data.join("bundle");
        let stderr = run(Command::new(bin("train"))
            .arg("--config")
            .arg(data.join("shop.toml"))
            .arg("--out")
            .arg(&bundle));
        let m = metrics(&bundle);
        (m, stderr)
    };
    let (base, stderr) = train_on("base", eight_products_csv(200, 200, 1), true);
    for (fold, origin) in [(1, 158), (2, 172), (3, 186)] {
        let line =
            format!("forecaster-fold{fold}: 1 network(s) refitted on periods before {origin}");
        assert!(stderr.contains(&line), "{line}: {stderr}");
    }
    assert!(stderr.contains("forecaster-refit: 1 network(s) refitted on periods before 200"));
    assert_eq!(base["forecaster.refit"], 1.0);
    let (changed, _) = train_on("changed", eight_products_csv(200, 186, 3), true);
    for key in [
        "forecaster.fold1.mase",
        "forecaster.fold1.wql",
        "forecaster.fold2.mase",
        "forecaster.fold2.wql",
        "forecaster.network_weight.p50",
    ] {
        assert_eq!(base[key], changed[key], "{key}");
    }
    assert_ne!(
        base["forecaster.fold3.mase"],
        changed["forecaster.fold3.mase"]
    );

    let (plain, stderr) = train_on("plain", eight_products_csv(200, 200, 1), false);
    assert!(!stderr.contains("refitted"), "{stderr}");
    assert_eq!(plain["forecaster.refit"], 0.0);
}

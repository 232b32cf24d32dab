//! How the forecaster's costs grow with the number of series: generated daily shops of two years
//! with 1,250, 2,500 and 5,000 series (5 stores x 250 / 500 / 1,000 products), trained with
//! `train --only forecaster` and forecast with `infer forecast`.

use std::path::Path;
use std::process::Command;

use crate::run::{binary, dir_megabytes, growth, prepare_shop, timed, training_figures};

pub struct SeriesSize {
    pub label: &'static str,
    stores: usize,
    products: usize,
}

impl SeriesSize {
    pub fn series(&self) -> usize {
        self.stores * self.products
    }
}

pub const SERIES_SIZES: [SeriesSize; 3] = [
    SeriesSize {
        label: "1250",
        stores: 5,
        products: 250,
    },
    SeriesSize {
        label: "2500",
        stores: 5,
        products: 500,
    },
    SeriesSize {
        label: "5000",
        stores: 5,
        products: 1_000,
    },
];

const DAYS: usize = 730;

/// What one size measured.
#[derive(Debug, Default, Clone)]
pub struct SeriesRow {
    rows: f64,
    load_s: f64,
    step_ms: f64,
    epoch_s: f64,
    train_s: f64,
    train_rss_gb: f64,
    bundle_mb: f64,
    forecast_s: f64,
    forecast_rss_gb: f64,
}

fn config_text(size: &SeriesSize, epochs: usize) -> String {
    // The demo shop's forecaster settings; the quality gate is off because two epochs do not
    // make a model worth gating, only one worth timing.
    format!(
        r#"[business]
name = "scale-series-{label}"
seed = 42
device = "flex"
data_dir = "data"

[demo]
customers = 200
products = {products}
categories = 15
days = {DAYS}
stores = {stores}
series_products = {products}
start_date = "2023-01-01"
format = "parquet"

[forecaster.data]
sales = {{ path = "sales.parquet" }}
series_keys = ["store_id", "product_id"]
date = "date"
target = "units"
frequency = "daily"
known_covariates = ["price", "promo", "holiday"]
past_covariates = ["temperature"]
static_attributes = ["category"]
price = "price"
fill_missing = "zero"

[forecaster.model]
context_length = 56
horizon = 28
hidden_size = 64
key_embedding_dim = 8
quantiles = [0.1, 0.5, 0.9]
season_length = 7

[forecaster.training]
epochs = {epochs}
batch_size = 256
learning_rate = 0.003
windows_per_series = 32
patience = 3
refit = false

[forecaster.evaluation]
backtest_folds = 3
moving_average_window = 28
allow_worse_than_baseline = true
"#,
        label = size.label,
        stores = size.stores,
        products = size.products,
    )
}

pub fn measure(size: &SeriesSize, root: &Path, epochs: usize) -> SeriesRow {
    let dir = root.join(format!("series-{}", size.label));
    let config = prepare_shop(&dir, &config_text(size, epochs), size.label);
    let bundle = dir.join("bundle");
    let mut train = Command::new(binary("train"));
    train
        .arg("--config")
        .arg(&config)
        .args(["--only", "forecaster", "--device", "flex", "--out"])
        .arg(&bundle);
    let (lines, train_s, train_rss_gb) = timed(train, "train --only forecaster");
    let (load_s, epoch_s, step_ms) = training_figures(&lines, "forecaster");
    let mut forecast = Command::new(binary("infer"));
    forecast
        .args(["forecast", "--device", "flex", "--bundle"])
        .arg(&bundle)
        .arg("--out")
        .arg(dir.join("forecast.parquet"));
    let (_, forecast_s, forecast_rss_gb) = timed(forecast, "infer forecast");
    SeriesRow {
        rows: (size.series() * DAYS) as f64,
        load_s,
        step_ms,
        epoch_s,
        train_s,
        train_rss_gb,
        bundle_mb: dir_megabytes(&bundle),
        forecast_s,
        forecast_rss_gb,
    }
}

pub fn print_table(sizes: &[&SeriesSize], rows: &[SeriesRow]) {
    let Some(base) = rows.first().cloned() else {
        return;
    };
    println!();
    println!(
        "| series ({DAYS} days) | sales rows | load s | step ms | epoch s | train s | train peak RSS GB (B/row) | bundle MB | forecast s | forecast peak RSS GB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let base_series = sizes.first().map_or(1.0, |s| s.series() as f64);
    for (size, r) in sizes.iter().zip(rows) {
        println!(
            "| {} ({:.2}x) | {:.2} M | {} | {} | {} | {} | {} ({:.0}) | {} | {} | {} |",
            size.series(),
            size.series() as f64 / base_series,
            r.rows / 1e6,
            growth(r.load_s, base.load_s),
            growth(r.step_ms, base.step_ms),
            growth(r.epoch_s, base.epoch_s),
            growth(r.train_s, base.train_s),
            growth(r.train_rss_gb, base.train_rss_gb),
            r.train_rss_gb * 1e9 / r.rows,
            growth(r.bundle_mb, base.bundle_mb),
            growth(r.forecast_s, base.forecast_s),
            growth(r.forecast_rss_gb, base.forecast_rss_gb),
        );
    }
}

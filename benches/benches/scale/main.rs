//! How the costs grow with the shop: generated shops of 50k, 200k and 1M customers (5k / 20k /
//! 50k products) for the recommender and of 1,250 / 2,500 / 5,000 daily series for the
//! forecaster, each generated once and cached, trained with the real `train` binary and run with
//! the real `infer`, under GNU time for the peak RSS.
//!
//! `cargo bench --workspace --bench scale` after `cargo build --release --workspace`. Settings:
//! `SHOPCAST_SCALE_SIZES=50k,200k` (default all three; `none` for none),
//! `SHOPCAST_SCALE_SERIES=1250,5000` (default all three; `none` for none),
//! `SHOPCAST_SCALE_EPOCHS` (default 2), `SHOPCAST_SCALE_DIR` (the cache, default
//! `target/scale`). Prints a table per model, and each figure's growth against the smallest size
//! run.

mod forecaster;
mod run;

use std::path::{Path, PathBuf};
use std::process::Command;

use forecaster::SERIES_SIZES;
use run::{binary, dir_megabytes, growth, prepare_shop, timed, training_figures};

struct Size {
    label: &'static str,
    customers: usize,
    products: usize,
}

const SIZES: [Size; 3] = [
    Size {
        label: "50k",
        customers: 50_000,
        products: 5_000,
    },
    Size {
        label: "200k",
        customers: 200_000,
        products: 20_000,
    },
    Size {
        label: "1m",
        customers: 1_000_000,
        products: 50_000,
    },
];

/// What one size measured.
#[derive(Debug, Default, Clone)]
struct Row {
    events: f64,
    load_s: f64,
    step_ms: f64,
    epoch_s: f64,
    train_s: f64,
    train_rss_gb: f64,
    bundle_mb: f64,
    bundle_load_s: f64,
    bundle_load_rss_gb: f64,
    recommend_s: f64,
    recommend_rss_gb: f64,
}

fn config_text(size: &Size, epochs: usize) -> String {
    format!(
        r#"[business]
name = "scale-{label}"
seed = 42
device = "flex"
data_dir = "data"

[demo]
customers = {customers}
products = {products}
categories = 40
days = 365
stores = 1
series_products = 10
start_date = "2024-01-01"
format = "parquet"

[recommender.data]
events = {{ path = "events.parquet" }}
customer_id = "customer_id"
product_id = "product_id"
timestamp = "timestamp"
event_type = "event_type"
quantity = "quantity"
unit_price = "unit_price"
target_event = "purchase"
event_weights = {{ view = 0.1, cart = 0.4, purchase = 1.0 }}

[recommender.data.customers]
file = {{ path = "customers.parquet" }}
id = "customer_id"
categorical = ["region", "age_band"]

[recommender.data.products]
file = {{ path = "products.parquet" }}
id = "product_id"
name = "name"
categorical = ["category", "brand"]
multi_valued = [{{ column = "tags", separator = "|" }}]
numeric_bands = [{{ column = "price", bands = 5 }}]

[recommender.model]
embedding_dim = 32
segments = 6

[recommender.training]
epochs = {epochs}
batch_size = 1024
learning_rate = 0.01
negatives = 4
optimizer = "lazy_adam"
patience = 3
"#,
        label = size.label,
        customers = size.customers,
        products = size.products,
    )
}

fn events_in(bundle: &Path) -> f64 {
    let text = std::fs::read_to_string(bundle.join("recommender.data_profile.json"));
    let value: serde_json::Value = text
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    value
        .get("rows")
        .and_then(|v| v.as_f64())
        .unwrap_or(f64::NAN)
}

fn measure(size: &Size, root: &Path, epochs: usize) -> Row {
    let dir = root.join(size.label);
    let config = prepare_shop(&dir, &config_text(size, epochs), size.label);
    let bundle = dir.join("bundle");
    let mut train = Command::new(binary("train"));
    train
        .arg("--config")
        .arg(&config)
        .args(["--only", "recommender", "--device", "flex", "--out"])
        .arg(&bundle);
    let (lines, train_s, train_rss_gb) = timed(train, "train");
    let (load_s, epoch_s, step_ms) = training_figures(&lines, "recommender");

    let one = dir.join("one-customer.csv");
    let first_customer = "customer_id\nC00001\n";
    if let Err(e) = std::fs::write(&one, first_customer) {
        panic!("{}: {e}", one.display());
    }
    let infer = |customers: Option<&Path>, out: &str| {
        let mut cmd = Command::new(binary("infer"));
        cmd.args(["recommend", "--device", "flex", "--bundle"])
            .arg(&bundle)
            .arg("--out")
            .arg(dir.join(out));
        if let Some(list) = customers {
            cmd.arg("--customers").arg(list);
        }
        cmd
    };
    let (_, bundle_load_s, bundle_load_rss_gb) =
        timed(infer(Some(&one), "one.csv"), "infer recommend (one)");
    let (_, recommend_s, recommend_rss_gb) = timed(infer(None, "all.csv"), "infer recommend (all)");
    Row {
        events: events_in(&bundle),
        load_s,
        step_ms,
        epoch_s,
        train_s,
        train_rss_gb,
        bundle_mb: dir_megabytes(&bundle),
        bundle_load_s,
        bundle_load_rss_gb,
        recommend_s,
        recommend_rss_gb,
    }
}

fn main() {
    let epochs = std::env::var("SHOPCAST_SCALE_EPOCHS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2usize);
    let root = std::env::var_os("SHOPCAST_SCALE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scale"));
    let sizes = chosen(&SIZES, "SHOPCAST_SCALE_SIZES", |s| s.label);
    let rows: Vec<Row> = sizes
        .iter()
        .map(|size| {
            let row = measure(size, &root, epochs);
            eprintln!("scale {}: {row:?}", size.label);
            row
        })
        .collect();
    let series = chosen(&SERIES_SIZES, "SHOPCAST_SCALE_SERIES", |s| s.label);
    let series_rows: Vec<_> = series
        .iter()
        .map(|size| {
            let row = forecaster::measure(size, &root, epochs);
            eprintln!("scale {} series: {row:?}", size.label);
            row
        })
        .collect();
    print_table(&sizes, &rows);
    if let Some(largest) = sizes.last() {
        print_recommend_linearity(largest, &root.join(largest.label));
    }
    forecaster::print_table(&series, &series_rows);
}

/// The sizes named in `variable` (labels separated by commas; unset: all of them).
fn chosen<'a, T>(all: &'a [T], variable: &str, label: impl Fn(&T) -> &str) -> Vec<&'a T> {
    let wanted: Vec<String> = std::env::var(variable)
        .map(|v| v.split(',').map(|w| w.trim().to_string()).collect())
        .unwrap_or_default();
    all.iter()
        .filter(|s| wanted.is_empty() || wanted.iter().any(|w| w == label(s)))
        .collect()
}

/// `infer recommend` on a quarter, a half and all of the largest shop's customers: the time and
/// the peak RSS should grow with the customers scored, at most linearly.
fn print_recommend_linearity(size: &Size, dir: &Path) {
    println!();
    println!(
        "| customers scored ({} x {} bundle) | recommend s | per 1k customers ms | peak RSS GB |",
        size.customers, size.products
    );
    println!("|---|---|---|---|");
    for share in [4, 2, 1] {
        let n = size.customers / share;
        let list = dir.join(format!("customers-{n}.csv"));
        let ids: String = (1..=n).map(|c| format!("C{c:05}\n")).collect();
        if let Err(e) = std::fs::write(&list, format!("customer_id\n{ids}")) {
            panic!("{}: {e}", list.display());
        }
        let mut cmd = Command::new(binary("infer"));
        cmd.args(["recommend", "--device", "flex", "--bundle"])
            .arg(dir.join("bundle"))
            .arg("--customers")
            .arg(&list)
            .arg("--out")
            .arg(dir.join("some.csv"));
        let (_, seconds, rss_gb) = timed(cmd, "infer recommend (share)");
        println!(
            "| {n} | {seconds:.2} | {:.1} | {rss_gb:.2} |",
            seconds * 1e3 / (n as f64 / 1e3)
        );
    }
}

fn print_table(sizes: &[&Size], rows: &[Row]) {
    let Some(base) = rows.first().cloned() else {
        return;
    };
    println!(
        "| shop | events | load s | step ms | epoch s | train s | train peak RSS GB (B/event) | bundle MB | bundle load s (peak RSS GB) | recommend all s | recommend peak RSS GB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let g = growth;
    for (size, r) in sizes.iter().zip(rows) {
        println!(
            "| {} x {} | {:.2} M ({:.2}x) | {} | {} | {} | {} | {} ({:.0}) | {} | {} ({:.2}) | {} | {} |",
            size.customers,
            size.products,
            r.events / 1e6,
            r.events / base.events,
            g(r.load_s, base.load_s),
            g(r.step_ms, base.step_ms),
            g(r.epoch_s, base.epoch_s),
            g(r.train_s, base.train_s),
            g(r.train_rss_gb, base.train_rss_gb),
            r.train_rss_gb * 1e9 / r.events,
            g(r.bundle_mb, base.bundle_mb),
            g(r.bundle_load_s, base.bundle_load_s),
            r.bundle_load_rss_gb,
            g(r.recommend_s, base.recommend_s),
            g(r.recommend_rss_gb, base.recommend_rss_gb),
        );
    }
}

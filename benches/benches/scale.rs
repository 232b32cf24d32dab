//! How the recommender's costs grow with the shop: generated shops of 50k, 200k and 1M customers
//! (5k / 20k / 50k products), each generated once and cached, trained with the real `train`
//! binary and scored with the real `infer`, under GNU time for the peak RSS.
//!
//! `cargo bench --workspace --bench scale` after `cargo build --release --workspace`. Settings:
//! `SHOPCAST_SCALE_SIZES=50k,200k` (default all three), `SHOPCAST_SCALE_EPOCHS` (default 2),
//! `SHOPCAST_SCALE_DIR` (the cache, default `target/scale`). Prints one table, and each figure's
//! growth against the smallest size run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use shopcast_datasets::demo::generate_if_missing;
use shopcast_datasets::ShopConfig;

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

/// Runs `cmd` under GNU time; returns its stderr lines with the seconds at which each arrived,
/// the wall time and the peak RSS in GB.
fn timed(cmd: Command, what: &str) -> (Vec<(f64, String)>, f64, f64) {
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-f").arg("peak-rss-kb %M").arg(cmd.get_program());
    timed
        .args(cmd.get_args())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let started = Instant::now();
    let mut child = match timed.spawn() {
        Ok(c) => c,
        Err(e) => panic!("{what}: cannot start /usr/bin/time (GNU time is needed): {e}"),
    };
    let mut lines = Vec::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            lines.push((started.elapsed().as_secs_f64(), line));
        }
    }
    let status = child.wait().map(|s| s.success()).unwrap_or(false);
    let wall = started.elapsed().as_secs_f64();
    let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    assert!(status, "{what} failed:\n{}", text.join("\n"));
    let rss_kb = text
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("peak-rss-kb "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    (lines, wall, rss_kb / 1e6)
}

fn binary(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join("target/release").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release --workspace` first",
        path.display()
    );
    path
}

/// From the first training loop's epoch lines ("epoch N: ... (S steps, X ms/step; validation
/// Y s)"): the median step, the median epoch (its steps and its validation) and the time until
/// the first epoch's steps began (loading and setup).
fn training_figures(lines: &[(f64, String)]) -> (f64, f64, f64) {
    let mut steps_ms = Vec::new();
    let mut epochs_s = Vec::new();
    let mut first_start = f64::NAN;
    for (at, line) in lines
        .iter()
        .filter(|(_, l)| l.starts_with("recommender: epoch "))
    {
        let Some((_, timing)) = line.rsplit_once(" (") else {
            continue;
        };
        let field = |after: &str, before: &str| -> Option<f64> {
            let (_, rest) = timing.split_once(after)?;
            rest.split_once(before)?.0.trim().parse().ok()
        };
        let (Some(steps), Some(step_ms)) = (field("", " steps"), field("steps, ", " ms/step"))
        else {
            continue;
        };
        let validation_s = field("validation ", "s)").unwrap_or(0.0);
        let epoch_s = steps * step_ms / 1e3 + validation_s;
        if steps_ms.is_empty() {
            first_start = at - epoch_s;
        }
        steps_ms.push(step_ms);
        epochs_s.push(epoch_s);
    }
    (first_start, median(&mut epochs_s), median(&mut steps_ms))
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn dir_megabytes(dir: &Path) -> f64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len() as f64)
                .sum::<f64>()
        })
        .unwrap_or(f64::NAN)
        / 1e6
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
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("{}: {e}", dir.display());
    }
    let config = dir.join("scale.toml");
    if let Err(e) = std::fs::write(&config, config_text(size, epochs)) {
        panic!("{}: {e}", config.display());
    }
    let loaded = match ShopConfig::load(&config) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    let started = Instant::now();
    if let Some(demo) = &loaded.config.demo {
        match generate_if_missing(&loaded.data_dir(), demo, loaded.config.business.seed) {
            Ok(true) => eprintln!(
                "scale {}: generated the shop in {:.0}s",
                size.label,
                started.elapsed().as_secs_f64()
            ),
            Ok(false) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let bundle = dir.join("bundle");
    let mut train = Command::new(binary("train"));
    train
        .arg("--config")
        .arg(&config)
        .args(["--only", "recommender", "--device", "flex", "--out"])
        .arg(&bundle);
    let (lines, train_s, train_rss_gb) = timed(train, "train");
    let (load_s, epoch_s, step_ms) = training_figures(&lines);

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
    let (_, bundle_load_s, _) = timed(infer(Some(&one), "one.csv"), "infer recommend (one)");
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
        recommend_s,
        recommend_rss_gb,
    }
}

fn main() {
    let wanted = std::env::var("SHOPCAST_SCALE_SIZES").unwrap_or_else(|_| "50k,200k,1m".into());
    let epochs = std::env::var("SHOPCAST_SCALE_EPOCHS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2usize);
    let root = std::env::var_os("SHOPCAST_SCALE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scale"));
    let sizes: Vec<&Size> = SIZES
        .iter()
        .filter(|s| wanted.split(',').any(|w| w.trim() == s.label))
        .collect();
    let mut rows = Vec::new();
    for size in &sizes {
        let row = measure(size, &root, epochs);
        eprintln!("scale {}: {row:?}", size.label);
        rows.push(row);
    }
    print_table(&sizes, &rows);
    if let Some(largest) = sizes.last() {
        print_recommend_linearity(largest, &root.join(largest.label));
    }
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
        "| shop | events | load s | step ms | epoch s | train s | train peak RSS GB (B/event) | bundle MB | bundle load s | recommend all s | recommend peak RSS GB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let g = |x: f64, b: f64| format!("{x:.2} ({:.2}x)", x / b);
    for (size, r) in sizes.iter().zip(rows) {
        println!(
            "| {} x {} | {:.2} M ({:.2}x) | {} | {} | {} | {} | {} ({:.0}) | {} | {} | {} | {} |",
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
            g(r.recommend_s, base.recommend_s),
            g(r.recommend_rss_gb, base.recommend_rss_gb),
        );
    }
}

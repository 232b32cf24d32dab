//! Cold start and explanations through the real binaries: a bundle trained on a generated shop
//! scores new products (attributes only) and new customers (attributes and/or recent items), and
//! every recommendation carries a reason a shop owner can read.

mod common;

use std::collections::{HashMap, HashSet};
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
        .expect(name)
        .str()
        .expect("str")
        .iter()
        .map(|s| s.unwrap_or_default().to_string())
        .collect()
}

const SHOP: &str = r#"
[business]
name = "cold"
seed = 5
device = "flex"
data_dir = "data"

[demo]
customers = 500
products = 160
categories = 6
days = 365
stores = 1
series_products = 4

[recommender.data]
events = { path = "events.csv" }
customer_id = "customer_id"
product_id = "product_id"
timestamp = "timestamp"
event_type = "event_type"
quantity = "quantity"
unit_price = "unit_price"
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
multi_valued = [{ column = "tags" }]
numeric_bands = [{ column = "price", bands = 4 }]

[recommender.model]
embedding_dim = 16
segments = 4

[recommender.training]
epochs = 40
batch_size = 256
"#;

/// A trained bundle plus what the tests need to know about the generated shop.
struct Shop {
    dir: PathBuf,
    bundle: PathBuf,
    /// Product id -> category.
    category: HashMap<String, String>,
    /// Customer id -> the category they bought most.
    top_category: HashMap<String, String>,
    /// Customer id -> products bought.
    bought: HashMap<String, HashSet<String>>,
}

/// Generates the shop of `config` in a fixture folder `name` and trains its recommender.
fn trained_shop(name: &str, config_text: &str) -> Shop {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("fixture directory");
    let config = dir.join("shop.toml");
    std::fs::write(&config, config_text).expect("write config");
    let bundle = dir.join("bundle");
    run(Command::new(bin("train"))
        .arg("--config")
        .arg(&config)
        .args(["--only", "recommender", "--out"])
        .arg(&bundle));
    let products = read_csv(&dir.join("data/products.csv"));
    let category: HashMap<String, String> = col(&products, "product_id")
        .into_iter()
        .zip(col(&products, "category"))
        .collect();
    let events = read_csv(&dir.join("data/events.csv"));
    let mut counts: HashMap<String, HashMap<String, usize>> = HashMap::new();
    let mut bought: HashMap<String, HashSet<String>> = HashMap::new();
    for ((c, p), t) in col(&events, "customer_id")
        .into_iter()
        .zip(col(&events, "product_id"))
        .zip(col(&events, "event_type"))
    {
        if t == "purchase" {
            *counts
                .entry(c.clone())
                .or_default()
                .entry(category[&p].clone())
                .or_default() += 1;
            bought.entry(c).or_default().insert(p);
        }
    }
    let top_category = counts
        .into_iter()
        .map(|(c, m)| {
            let best = m
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
                .map(|(k, _)| k)
                .unwrap_or_default();
            (c, best)
        })
        .collect();
    Shop {
        dir,
        bundle,
        category,
        top_category,
        bought,
    }
}

impl Shop {
    /// The category most customers buy most, and its products by how many customers bought
    /// them (most first, ties by id).
    fn popular_category(&self) -> (String, Vec<String>) {
        let mut per_category: HashMap<&str, usize> = HashMap::new();
        for c in self.top_category.values() {
            *per_category.entry(c.as_str()).or_default() += 1;
        }
        let popular = per_category
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(c, _)| c.to_string())
            .expect("some purchases");
        let mut sales: HashMap<&str, usize> = HashMap::new();
        for items in self.bought.values() {
            for p in items {
                if self.category[p] == popular {
                    *sales.entry(p.as_str()).or_default() += 1;
                }
            }
        }
        let mut by_sales: Vec<(&str, usize)> = sales.into_iter().collect();
        by_sales.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        assert!(by_sales.len() >= 4, "too few products sold in {popular}");
        (
            popular,
            by_sales.into_iter().map(|(p, _)| p.to_string()).collect(),
        )
    }
}

/// The cold-start scoring run every test here checks, made once: the shop, its most bought
/// category, the new customers' recent items, the known customers listed, and the output.
struct ColdStart {
    shop: Shop,
    popular: String,
    recent: Vec<String>,
    known: usize,
    recs: PathBuf,
}

fn cold_start() -> &'static ColdStart {
    static RUN: OnceLock<ColdStart> = OnceLock::new();
    RUN.get_or_init(|| {
        let shop = trained_shop("cold_start", SHOP);
        let dir = shop.dir.as_path();
        // The most bought category, and a new product with the attributes of its best seller.
        let (popular, sales) = shop.popular_category();
        let best_seller = sales[0].clone();
        let products = read_csv(&dir.join("data/products.csv"));
        let row = col(&products, "product_id")
            .iter()
            .position(|p| *p == best_seller)
            .expect("best seller row");
        let new_products = dir.join("new_products.csv");
        std::fs::write(
            &new_products,
            format!(
                "product_id,name,category,brand,tags,price\nNEW-1,Brand-new thing,{},{},{},{}\n",
                popular,
                col(&products, "brand")[row],
                col(&products, "tags")[row],
                col(&products, "price")[row],
            ),
        )
        .expect("write new products");

        // New customers: one with recent items from the popular category only, one with only
        // attributes, one with nothing at all; plus every known customer.
        let recent: Vec<&str> = sales[1..4].iter().map(String::as_str).collect();
        let customers = dir.join("customers.csv");
        let mut list = String::from("customer_id,region,age_band,recent_items\n");
        list.push_str(&format!("NEWBIE-ITEMS,,,{}\n", recent.join("|")));
        list.push_str("NEWBIE-ATTRS,north,25-34,\n");
        list.push_str("NEWBIE-NOTHING,,,\n");
        let mut known: Vec<&String> = shop.top_category.keys().collect();
        known.sort();
        for c in &known {
            list.push_str(&format!("{c},,,\n"));
        }
        std::fs::write(&customers, list).expect("write customers");

        let out = dir.join("recs.csv");
        run(Command::new(bin("infer"))
            .args(["recommend", "--bundle"])
            .arg(&shop.bundle)
            .arg("--customers")
            .arg(&customers)
            .arg("--new-products")
            .arg(&new_products)
            .args(["--top-k", "10", "--device", "flex", "--out"])
            .arg(&out));
        let recent = recent.iter().map(|p| p.to_string()).collect();
        let known = known.len();
        ColdStart {
            shop,
            popular,
            recent,
            known,
            recs: out,
        }
    })
}

/// The output's columns and each customer's list: (row, product, reason).
struct Recs {
    ids: Vec<String>,
    prods: Vec<String>,
    reasons: Vec<String>,
}

impl Recs {
    fn read(path: &Path) -> Self {
        let recs = read_csv(path);
        Recs {
            ids: col(&recs, "customer_id"),
            prods: col(&recs, "product_id"),
            reasons: col(&recs, "reason"),
        }
    }

    fn lists(&self) -> HashMap<&str, Vec<(usize, &str, &str)>> {
        let mut lists: HashMap<&str, Vec<(usize, &str, &str)>> = HashMap::new();
        for (i, ((c, p), r)) in self
            .ids
            .iter()
            .zip(&self.prods)
            .zip(&self.reasons)
            .enumerate()
        {
            lists
                .entry(c.as_str())
                .or_default()
                .push((i, p.as_str(), r.as_str()));
        }
        lists
    }
}

/// Every customer, new ones included, gets a full list with a reason a shop owner can read on every row; the manifest counts the new customers and products.
#[test]
fn every_customer_gets_a_full_list_with_a_readable_reason() {
    let run = cold_start();
    let recs = Recs::read(&run.recs);
    let (ids, prods, reasons) = (
        recs.ids.as_slice(),
        recs.prods.as_slice(),
        recs.reasons.as_slice(),
    );
    let lists = recs.lists();

    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run.recs.with_file_name("recs.csv.manifest.json")).expect("manifest"),
    )
    .expect("manifest json");
    assert_eq!(manifest["counts"]["new customers (cold start)"], 3);
    assert_eq!(manifest["counts"]["new products added"], 1);

    // Every customer, new ones included, gets a full list with a reason on every row.
    for c in ["NEWBIE-ITEMS", "NEWBIE-ATTRS", "NEWBIE-NOTHING"] {
        assert_eq!(
            lists.get(c).map_or(0, Vec::len),
            10,
            "{c} lacks a full list"
        );
    }
    assert_eq!(lists.len(), run.known + 3);
    for (r, (c, p)) in reasons.iter().zip(ids.iter().zip(prods)) {
        let readable = r.starts_with("because you bought ")
            || r.starts_with("because you viewed ")
            || r == "popular with customers like you"
            || r == "liked by customers like you"
            || r.starts_with("new in a category you buy: ")
            || r.starts_with("more from ");
        assert!(readable, "{c} / {p}: unexpected reason {r:?}");
    }
}

/// "because you bought X" names something the customer did buy.
#[test]
fn because_you_bought_names_a_product_the_customer_bought() {
    let run = cold_start();
    let (shop, recent) = (&run.shop, &run.recent);
    let recs = Recs::read(&run.recs);
    let (ids, reasons) = (recs.ids.as_slice(), recs.reasons.as_slice());

    let products = read_csv(&shop.dir.join("data/products.csv"));
    // "because you bought X" names something the customer did buy.
    let names: HashMap<String, String> = col(&products, "name")
        .into_iter()
        .zip(col(&products, "product_id"))
        .collect();
    let mut because = 0;
    for (r, c) in reasons.iter().zip(ids) {
        if let Some(name) = r.strip_prefix("because you bought ") {
            because += 1;
            let p = &names[name];
            let history = shop.bought.get(c.as_str());
            let recent_hit = c == "NEWBIE-ITEMS" && recent.contains(p);
            assert!(
                recent_hit || history.is_some_and(|h| h.contains(p)),
                "{c}: reason names {name} ({p}), which they did not buy"
            );
        }
    }
    assert!(because > 0, "no \"because you bought\" reason at all");
}

/// Nothing a customer already bought is recommended again.
#[test]
fn nothing_already_bought_is_recommended_again() {
    let run = cold_start();
    let shop = &run.shop;
    let recs = Recs::read(&run.recs);
    let (ids, prods) = (recs.ids.as_slice(), recs.prods.as_slice());

    // Nothing already bought is recommended again.
    for (c, p) in ids.iter().zip(prods) {
        if let Some(h) = shop.bought.get(c.as_str()) {
            assert!(!h.contains(p), "{c} is recommended {p}, already bought");
        }
    }
}

/// A new product (attributes only) reaches the customers of its category far more than the others, explained as new in a category they buy.
#[test]
fn a_new_product_reaches_the_customers_of_its_category() {
    let run = cold_start();
    let (shop, popular) = (&run.shop, &run.popular);
    let recs = Recs::read(&run.recs);
    let (ids, prods, reasons) = (
        recs.ids.as_slice(),
        recs.prods.as_slice(),
        recs.reasons.as_slice(),
    );
    let lists = recs.lists();

    // The new product reaches the customers of its category, far more than the others, and is
    // explained as new in a category they buy.
    let (mut fans, mut fans_hit, mut others, mut others_hit) = (0, 0, 0, 0);
    for (c, top) in &shop.top_category {
        let hit = lists
            .get(c.as_str())
            .is_some_and(|l| l.iter().any(|(_, p, _)| *p == "NEW-1"));
        if top == popular {
            fans += 1;
            fans_hit += hit as usize;
        } else {
            others += 1;
            others_hit += hit as usize;
        }
    }
    let fan_rate = fans_hit as f64 / fans as f64;
    let other_rate = others_hit as f64 / others.max(1) as f64;
    eprintln!(
        "new product NEW-1 ({popular}): in the top 10 of {fans_hit}/{fans} {popular} customers, {others_hit}/{others} others"
    );
    assert!(
        fan_rate >= 0.3,
        "the new {popular} product reaches only {fans_hit} of {fans} {popular} customers"
    );
    assert!(
        fan_rate > 2.0 * other_rate,
        "the new product is not targeted: {fan_rate:.2} of {popular} customers vs {other_rate:.2} of others"
    );
    for (i, p) in prods.iter().enumerate() {
        if p == "NEW-1" && shop.top_category.get(&ids[i]) == Some(popular) {
            assert_eq!(
                reasons[i],
                format!("new in a category you buy: {popular}"),
                "reason for the new product"
            );
        }
    }
}

/// A new customer who just bought three products of a category is shown mostly that category, without the recent items.
#[test]
fn a_new_customer_with_recent_items_is_shown_their_category() {
    let run = cold_start();
    let (shop, popular, recent) = (&run.shop, &run.popular, &run.recent);
    let recs = Recs::read(&run.recs);
    let lists = recs.lists();

    // A new customer who just bought three products of the category is shown mostly that
    // category, and the recent items are not recommended back.
    let items_list = &lists["NEWBIE-ITEMS"];
    let in_category = items_list
        .iter()
        .filter(|(_, p, _)| *p == "NEW-1" || shop.category.get(*p) == Some(popular))
        .count();
    assert!(
        in_category >= 6,
        "a new customer who bought {popular} gets only {in_category}/10 {popular} products"
    );
    for (_, p, _) in items_list {
        assert!(
            !recent.iter().any(|r| r == p),
            "recent item {p} recommended back"
        );
    }
    let nothing: HashSet<&str> = lists["NEWBIE-NOTHING"].iter().map(|(_, p, _)| *p).collect();
    let items: HashSet<&str> = items_list.iter().map(|(_, p, _)| *p).collect();
    assert_ne!(
        nothing, items,
        "recent items made no difference to a new customer's list"
    );
}

/// The NeuMF option goes through the same scoring job: known and new customers, new products.
#[test]
fn neumf_bundle_scores_known_and_new_customers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("shop.toml");
    let text = SHOP
        .replace("segments = 4", "segments = 4\narchitecture = \"neumf\"")
        .replace("epochs = 40", "epochs = 6");
    std::fs::write(&config, text).expect("write config");
    let bundle = dir.path().join("bundle");
    run(Command::new(bin("train"))
        .arg("--config")
        .arg(&config)
        .args(["--only", "recommender", "--out"])
        .arg(&bundle));
    let events = read_csv(&dir.path().join("data/events.csv"));
    let some_products: Vec<String> = col(&events, "product_id").into_iter().take(2).collect();
    let customers = dir.path().join("customers.csv");
    std::fs::write(
        &customers,
        format!(
            "customer_id,region,recent_items\nC00001,,\nNEW-A,south,{}\nNEW-B,,\n",
            some_products.join("|")
        ),
    )
    .expect("write customers");
    let new_products = dir.path().join("new.csv");
    std::fs::write(
        &new_products,
        "product_id,category,brand\nNEW-P,kitchen,Brand A\n",
    )
    .expect("write new products");
    let out = dir.path().join("recs.parquet");
    run(Command::new(bin("infer"))
        .args(["recommend", "--bundle"])
        .arg(&bundle)
        .arg("--customers")
        .arg(&customers)
        .arg("--new-products")
        .arg(&new_products)
        .args(["--top-k", "5", "--device", "flex", "--out"])
        .arg(&out));
    let df = ParquetReader::new(std::fs::File::open(&out).expect("open output"))
        .finish()
        .expect("read parquet");
    assert_eq!(df.height(), 15, "3 customers x top 5");
    let ids = col(&df, "customer_id");
    for c in ["C00001", "NEW-A", "NEW-B"] {
        assert_eq!(ids.iter().filter(|i| *i == c).count(), 5, "{c}");
    }
    let prods = col(&df, "product_id");
    for (c, p) in ids.iter().zip(&prods) {
        assert!(
            !(c == "NEW-A" && some_products.contains(p)),
            "NEW-A is recommended {p}, one of their recent items"
        );
    }
}

/// A sequential bundle reads a new customer's recent items through its encoder as one basket:
/// three products of a category bring mostly that category, the same items listed in another
/// order give the same list (a basket has no order), and none of them is recommended back.
#[test]
fn sequential_bundle_reads_a_new_customers_recent_items_as_a_basket() {
    let config = SHOP.replace(
        "segments = 4",
        "segments = 4\narchitecture = \"sequential\"",
    )
        + "\n[recommender.sequence]\nepochs = 40\nmax_sequence = 20\nlearning_rate = 0.005\n";
    let shop = trained_shop("cold_start_sequential", &config);
    let (popular, sales) = shop.popular_category();
    let recent = &sales[1..4];
    let customers = shop.dir.join("customers.csv");
    let reversed: Vec<&str> = recent.iter().rev().map(String::as_str).collect();
    std::fs::write(
        &customers,
        format!(
            "customer_id,region,age_band,recent_items\nNEW-A,,,{}\nNEW-B,,,{}\nNEW-C,,,\n",
            recent.join("|"),
            reversed.join("|")
        ),
    )
    .expect("write customers");
    let out = shop.dir.join("recs.csv");
    run(Command::new(bin("infer"))
        .args(["recommend", "--bundle"])
        .arg(&shop.bundle)
        .arg("--customers")
        .arg(&customers)
        .args(["--top-k", "10", "--device", "flex", "--out"])
        .arg(&out));
    let recs = Recs::read(&out);
    let lists = recs.lists();
    let products = |c: &str| -> Vec<&str> { lists[c].iter().map(|(_, p, _)| *p).collect() };
    let a = products("NEW-A");
    let in_category = a
        .iter()
        .filter(|p| shop.category.get(**p) == Some(&popular))
        .count();
    assert!(
        in_category >= 6,
        "a new customer who bought {popular} gets only {in_category}/10 {popular} products: {a:?}"
    );
    assert!(
        !a.iter().any(|p| recent.iter().any(|r| r == p)),
        "a recent item is recommended back: {a:?}"
    );
    assert_eq!(
        a,
        products("NEW-B"),
        "the order of recent_items changed the list"
    );
    assert_ne!(a, products("NEW-C"), "recent items made no difference");
}

//! A small generated shop for tests: big enough for the hidden structure to show, small enough
//! to train in seconds.

use std::path::{Path, PathBuf};

/// Writes a config for a small demo shop into `dir` (data generated into `dir/data`).
pub fn small_shop_config(dir: &Path, name: &str) -> PathBuf {
    let text = format!(
        r#"
[business]
name = "{name}"
seed = 7
device = "flex"
data_dir = "data"

[demo]
customers = 400
products = 120
categories = 8
days = 400
stores = 2
series_products = 12
format = "csv"

[recommender.data]
events = {{ path = "events.csv" }}
customer_id = "customer_id"
product_id = "product_id"
timestamp = "timestamp"
event_type = "event_type"
quantity = "quantity"
unit_price = "unit_price"
target_event = "purchase"
event_weights = {{ view = 0.1, cart = 0.4, purchase = 1.0 }}

[recommender.data.customers]
file = {{ path = "customers.csv" }}
id = "customer_id"
categorical = ["region", "age_band"]

[recommender.data.products]
file = {{ path = "products.csv" }}
id = "product_id"
name = "name"
categorical = ["category", "brand"]
multi_valued = [{{ column = "tags" }}]
numeric_bands = [{{ column = "price", bands = 4 }}]

[recommender.model]
embedding_dim = 16
segments = 4

[recommender.training]
epochs = 12
batch_size = 256
learning_rate = 0.01
patience = 3

[forecaster.data]
sales = {{ path = "sales.csv" }}
series_keys = ["store_id", "product_id"]
date = "date"
target = "units"
known_covariates = ["price", "promo", "holiday"]
past_covariates = ["temperature"]
price = "price"

[forecaster.model]
context_length = 28
horizon = 14
hidden_size = 32
season_length = 7

[forecaster.training]
epochs = 15
batch_size = 128
learning_rate = 0.005
windows_per_series = 96
patience = 3

[forecaster.evaluation]
backtest_folds = 2
"#
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write test config");
    path
}

/// [`small_shop_config`] with text replacements applied (each `from` must occur).
#[allow(dead_code)]
pub fn shop_config_with(dir: &Path, name: &str, edits: &[(&str, &str)]) -> PathBuf {
    let path = small_shop_config(dir, name);
    let mut text = std::fs::read_to_string(&path).expect("read test config");
    for (from, to) in edits {
        assert!(text.contains(from), "test config lacks {from:?}");
        text = text.replacen(from, to, 1);
    }
    std::fs::write(&path, text).expect("write test config");
    path
}

/// Trainings in one test binary take turns: run side by side in one process, flex's parallel
/// kernels share one thread pool and their float reductions can come out in a different order,
/// so two runs with the same seed would no longer be bit-identical.
#[allow(dead_code)]
pub fn one_training_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

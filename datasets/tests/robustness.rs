//! Property-based robustness: arbitrary bytes as a sales CSV and arbitrary text as a config
//! either load or return an error; nothing panics. Inputs mix raw bytes with CSV and TOML
//! fragments so that the parsers get past their first checks.

use std::path::Path;

use proptest::prelude::*;
use shopcast_datasets::config::FileSpec;
use shopcast_datasets::table::Table;
use shopcast_datasets::table_chunks::TableChunks;
use shopcast_datasets::ShopConfig;

const CSV_PARTS: &[&str] = &[
    "sku",
    "day",
    "units",
    "price",
    ",",
    ",",
    ";",
    "\t",
    "\n",
    "\n",
    "\r\n",
    "\"",
    "a",
    "b",
    "2024-01-01",
    "2024-01-02",
    "2024-02-30",
    "01/02/2024",
    "3",
    "0",
    "-1",
    "2.5",
    "NaN",
    "inf",
    "1e309",
    "",
    " ",
    "é",
    "\u{0}",
    "::",
    "\"x\ny\"",
];

const TOML_PARTS: &[&str] = &[
    "[business]\n",
    "name = \"x\"\n",
    "[forecaster.data]\n",
    "sales = { path = \"s.csv\" }\n",
    "series_keys = [\"sku\"]\n",
    "date = \"day\"\n",
    "target = \"units\"\n",
    "[forecaster.training]\n",
    "epochs = 0\n",
    "learning_rate = -1\n",
    "batch_size = 0\n",
    "[forecaster.model]\n",
    "quantiles = [0.1, 1.5]\n",
    "horizon = 99999999999\n",
    "[recommender.data]\n",
    "events = 3\n",
    "= =\n",
    "[[x]]\n",
    "\"\n",
    "device = \"gpu\"\n",
    "seed = -4\n",
    "\u{0}",
    "[business]\n",
];

fn from_parts(parts: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(prop::sample::select(parts), 0..80)
            .prop_map(|p| p.concat().into_bytes()),
        // A valid header, then fragments: reaches the value parsers.
        prop::collection::vec(prop::sample::select(parts), 0..80).prop_map(|p| format!(
            "sku,day,units\n{}",
            p.concat()
        )
        .into_bytes()),
    ]
}

fn spec(path: &Path) -> FileSpec {
    FileSpec {
        path: path.to_path_buf(),
        separator: None,
        has_header: true,
        column_names: Vec::new(),
    }
}

fn cols() -> Vec<String> {
    ["sku", "day", "units"].map(String::from).to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_bytes_as_a_csv_load_or_fail_cleanly(bytes in from_parts(CSV_PARTS)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sales.csv");
        std::fs::write(&path, &bytes).expect("write");
        if let Ok(t) = Table::read(&path, &spec(&path), &cols()) {
            let _ = t.ids("sku");
            let _ = t.timestamps("day", None);
            let _ = t.finite_numbers("units");
        }
        if let Ok(pieces) = TableChunks::open(&path, &spec(&path), &cols(), &[], 3) {
            for t in pieces.flatten() {
                let _ = t.ids("sku");
                let _ = t.numbers("units");
            }
        }
        // The whole forecaster loading path, through a config.
        std::fs::write(
            dir.path().join("shop.toml"),
            "[business]\nname = \"p\"\ndata_dir = \".\"\n[forecaster.data]\n\
             sales = { path = \"sales.csv\" }\nseries_keys = [\"sku\"]\ndate = \"day\"\n\
             target = \"units\"\n",
        )
        .expect("write config");
        let cfg = ShopConfig::load(&dir.path().join("shop.toml")).expect("config");
        let fc = cfg.config.forecaster.clone().expect("section");
        let _ = shopcast_datasets::sales::load_sales_panel(&cfg, &fc);
    }

    #[test]
    fn any_text_as_a_config_loads_or_fails_cleanly(bytes in from_parts(TOML_PARTS)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shop.toml");
        std::fs::write(&path, &bytes).expect("write");
        if let Ok(loaded) = ShopConfig::load(&path) {
            let _ = loaded.config.to_toml();
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = ShopConfig::parse(&text).and_then(ShopConfig::check);
    }
}

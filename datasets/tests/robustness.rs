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

/// Well-formed sales rows: a key, a valid date, a count; some with a quoted key holding a comma
/// or a line break.
fn sales_rows() -> impl Strategy<Value = Vec<(String, u32, u32)>> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["a", "b", "c,d", "e\nf", "g h"]),
            0u32..400,
            0u32..1000,
        )
            .prop_map(|(k, day, units)| (k.to_string(), day, units)),
        0..60,
    )
}

fn sales_csv(rows: &[(String, u32, u32)]) -> String {
    let start = chrono::NaiveDate::from_ymd_opt(2023, 1, 1).expect("date");
    let mut text = String::from("sku,day,units\n");
    for (key, day, units) in rows {
        let date = start + chrono::Days::new(*day as u64);
        let key = if key.contains([',', '\n']) {
            format!("\"{key}\"")
        } else {
            key.clone()
        };
        text.push_str(&format!("{key},{date},{units}\n"));
    }
    text
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// Every row written is read back, whole or in pieces of any size, with its values.
    #[test]
    fn written_rows_are_read_back_whole_and_in_pieces(rows in sales_rows(), piece in 1usize..9) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sales.csv");
        std::fs::write(&path, sales_csv(&rows)).expect("write");
        let whole = Table::read(&path, &spec(&path), &cols()).expect("well-formed CSV loads");
        prop_assert_eq!(whole.len(), rows.len());
        let keys = whole.ids("sku").expect("keys");
        let units = whole.finite_numbers("units").expect("units");
        for (i, (key, _, u)) in rows.iter().enumerate() {
            prop_assert_eq!(&keys[i], key);
            prop_assert_eq!(units[i], *u as f64);
        }
        let pieces = TableChunks::open(&path, &spec(&path), &cols(), &[], piece).expect("open");
        let mut read = Vec::new();
        for t in pieces {
            let t = t.expect("piece");
            prop_assert!(t.len() <= piece);
            read.extend(t.ids("sku").expect("keys"));
        }
        prop_assert_eq!(read, keys);
    }

    /// Any config that loads survives a round trip through its TOML text unchanged.
    #[test]
    fn a_config_that_loads_round_trips(bytes in from_parts(TOML_PARTS)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shop.toml");
        std::fs::write(&path, &bytes).expect("write");
        if let Ok(loaded) = ShopConfig::load(&path) {
            let text = loaded.config.to_toml().expect("serialise");
            let again = ShopConfig::parse(&text).expect("parses again");
            prop_assert_eq!(&*loaded.config, &again);
        }
    }
}

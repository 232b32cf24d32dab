//! The config file: the shipped configs parse and round-trip; malformed ones name the key.

use std::path::{Path, PathBuf};

use shopcast_datasets::config::DeviceName;
use shopcast_datasets::ShopConfig;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn parse_err(text: &str) -> String {
    match ShopConfig::parse(text).and_then(ShopConfig::check) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    }
}

const MINIMAL: &str = r#"
[business]
name = "tiny"

[forecaster.data]
sales = { path = "sales.csv" }
series_keys = ["store"]
date = "date"
target = "units"
"#;

#[test]
fn shipped_configs_load_and_round_trip() {
    for rel in [
        "configs/demo-shop.toml",
        "configs/online-retail.toml",
        "configs/movielens-100k.toml",
    ] {
        let loaded = ShopConfig::load(&repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let text = loaded.config.to_toml().expect("serialise");
        let again = ShopConfig::parse(&text)
            .unwrap_or_else(|e| panic!("{rel} after a round trip: {e}\n{text}"));
        assert_eq!(*loaded.config, again, "{rel} changed in a round trip");
    }
}

#[test]
fn minimal_config_gets_defaults() {
    let c = ShopConfig::parse(MINIMAL).expect("minimal config");
    let c = c.check().expect("valid");
    let f = c.forecaster.clone().expect("forecaster section");
    assert_eq!(f.model.quantiles, vec![0.1, 0.5, 0.9]);
    assert_eq!(c.business.device, DeviceName::Auto);
}

#[test]
fn unknown_key_is_named() {
    let e = parse_err(&MINIMAL.replace(
        "target = \"units\"",
        "target = \"units\"\ntargte_column = 3",
    ));
    assert!(e.contains("targte_column"), "{e}");
    assert!(e.contains("forecaster.data"), "{e}");
}

#[test]
fn wrong_type_is_named() {
    let e = parse_err(&format!(
        "{MINIMAL}\n[forecaster.training]\nepochs = \"ten\"\n"
    ));
    assert!(e.contains("forecaster.training.epochs"), "{e}");
    assert!(e.contains("string"), "{e}");
}

#[test]
fn out_of_range_values_are_named() {
    let e = parse_err(&format!(
        "{MINIMAL}\n[forecaster.training]\nlearning_rate = -0.1\n"
    ));
    assert!(e.contains("forecaster.training.learning_rate"), "{e}");
    let e = parse_err(&format!(
        "{MINIMAL}\n[forecaster.training]\nbatch_size = 0\n"
    ));
    assert!(e.contains("forecaster.training.batch_size"), "{e}");
    let e = parse_err(&format!(
        "{MINIMAL}\n[forecaster.model]\nquantiles = [0.1, 0.5, 1.2]\n"
    ));
    assert!(e.contains("forecaster.model.quantiles"), "{e}");
    let e = parse_err(&format!("{MINIMAL}\n[monitoring]\nmax_target_psi = -1\n"));
    assert!(e.contains("monitoring.max_target_psi"), "{e}");
    let e = parse_err(&MINIMAL.replace("name = \"tiny\"", "name = \"tiny\"\ndevice = \"tpu\""));
    assert!(e.contains("business.device"), "{e}");
}

#[test]
fn value_outside_a_fixed_set_names_the_key_and_the_choices() {
    let e = parse_err(&MINIMAL.replace(
        "target = \"units\"",
        "target = \"units\"\nfrequency = \"hourly\"",
    ));
    assert!(e.contains("forecaster.data.frequency"), "{e}");
    assert!(
        e.contains("hourly") && e.contains("daily") && e.contains("weekly"),
        "{e}"
    );
    let e = parse_err(&format!(
        "{MINIMAL}\n[recommender.data]\nevents = {{ path = \"e.csv\" }}\ncustomer_id = \"c\"\n\
         product_id = \"p\"\ntimestamp = \"t\"\n[recommender.model]\narchitecture = \"NeuMF\"\n"
    ));
    assert!(e.contains("recommender.model.architecture"), "{e}");
    assert!(e.contains("two_tower") && e.contains("neumf"), "{e}");
}

/// The sequential encoder's settings are checked with the recommender's: heads that do not
/// divide the embedding, a dropout of 1, a negative averaging span, and lazy Adam (which trains id tables the sequential
/// model does not train row by row) are refused with the key named.
#[test]
fn sequential_settings_are_checked() {
    let recommender = format!(
        "{MINIMAL}\n[recommender.data]\nevents = {{ path = \"e.csv\" }}\ncustomer_id = \"c\"\n\
         product_id = \"p\"\ntimestamp = \"t\"\n[recommender.model]\nembedding_dim = 30\n\
         architecture = \"sequential\"\n"
    );
    assert!(ShopConfig::parse(&recommender)
        .and_then(ShopConfig::check)
        .is_ok());
    let e = parse_err(&format!("{recommender}[recommender.sequence]\nheads = 4\n"));
    assert!(
        e.contains("recommender.sequence.heads") && e.contains("30"),
        "{e}"
    );
    let e = parse_err(&format!(
        "{recommender}[recommender.sequence]\ndropout = 1.0\n"
    ));
    assert!(e.contains("recommender.sequence.dropout"), "{e}");
    let e = parse_err(&format!(
        "{recommender}[recommender.sequence]\naverage_epochs = -1.0\n"
    ));
    assert!(
        e.contains("recommender.sequence.average_epochs") && e.contains("-1"),
        "{e}"
    );
    let e = parse_err(&format!(
        "{recommender}[recommender.sequence]\nwindow = 5\n"
    ));
    assert!(e.contains("window"), "{e}");
}

#[test]
fn missing_required_key_is_named() {
    let e = parse_err(&MINIMAL.replace("target = \"units\"\n", ""));
    assert!(e.contains("target"), "{e}");
}

#[test]
fn missing_config_file_names_the_path() {
    let e = ShopConfig::load(Path::new("/nonexistent/shop.toml"))
        .expect_err("missing file")
        .to_string();
    assert!(e.contains("/nonexistent/shop.toml"), "{e}");
}

#[test]
fn data_paths_resolve_against_the_config_file_or_the_override() {
    let loaded = ShopConfig::load(&repo_file("configs/demo-shop.toml")).expect("demo config");
    let events = loaded.resolve(Path::new("events.csv"));
    assert!(
        events.starts_with(repo_file("configs").join("../data/demo-shop")),
        "{}",
        events.display()
    );
    let moved = loaded.with_data_dir_override(Some(PathBuf::from("/srv/shop")));
    assert_eq!(
        moved.resolve(Path::new("events.csv")),
        PathBuf::from("/srv/shop/events.csv")
    );
    assert_eq!(
        moved.resolve(Path::new("/abs/events.csv")),
        PathBuf::from("/abs/events.csv")
    );
}

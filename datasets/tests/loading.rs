//! Loading real files: bad input names the file, row, column and what was expected.

use std::path::Path;

use shopcast_datasets::config::{FileSpec, FilterOp, FilterValue, RowFilter};
use shopcast_datasets::table::Table;
use shopcast_datasets::DataError;

fn spec(path: &Path) -> FileSpec {
    FileSpec {
        path: path.to_path_buf(),
        separator: None,
        has_header: true,
        column_names: Vec::new(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p
}

fn cols(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn missing_column_lists_what_was_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "s.csv", "store,day,units\na,2024-01-01,3\n");
    let e = Table::read(&p, &spec(&p), &cols(&["store", "date"]))
        .err()
        .expect("error")
        .to_string();
    assert!(e.contains("\"date\""), "{e}");
    assert!(e.contains("store, day, units"), "{e}");
    assert!(e.contains("s.csv"), "{e}");
}

#[test]
fn bad_number_names_row_and_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "s.csv", "store,units\na,3\na,4\na,lots\n");
    let t = Table::read(&p, &spec(&p), &cols(&["store", "units"])).expect("read");
    let e = t.numbers("units").expect_err("bad number").to_string();
    assert!(e.contains("row 3"), "{e}");
    assert!(e.contains("\"lots\""), "{e}");
    assert!(e.contains("units"), "{e}");
}

#[test]
fn bad_date_names_row_and_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "s.csv", "date\n2024-01-01\n01/02/2024\n");
    let t = Table::read(&p, &spec(&p), &cols(&["date"])).expect("read");
    let e = t
        .timestamps("date", None)
        .expect_err("bad date")
        .to_string();
    assert!(e.contains("row 2") && e.contains("01/02/2024"), "{e}");
}

#[test]
fn empty_and_missing_files_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "empty.csv", "");
    let e = Table::read(&p, &spec(&p), &cols(&["a"]))
        .err()
        .expect("error")
        .to_string();
    assert!(e.contains("empty.csv") && e.contains("empty"), "{e}");
    let missing = dir.path().join("nope.csv");
    let e = Table::read(&missing, &spec(&missing), &cols(&["a"]))
        .err()
        .expect("error");
    assert!(matches!(e, DataError::Io { .. }));
    assert!(e.to_string().contains("nope.csv"));
}

#[test]
fn wrong_delimiter_is_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "s.csv", "store;units\na;3\n");
    let e = Table::read(&p, &spec(&p), &cols(&["store", "units"]))
        .err()
        .expect("error")
        .to_string();
    assert!(e.contains("separator"), "{e}");
}

#[test]
fn empty_id_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "s.csv", "customer,units\nc1,3\n,4\n");
    let t = Table::read(&p, &spec(&p), &cols(&["customer"])).expect("read");
    let e = t.ids("customer").expect_err("empty id").to_string();
    assert!(e.contains("row 2") && e.contains("empty"), "{e}");
}

#[test]
fn filters_drop_rows_and_keep_row_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(
        dir.path(),
        "t.csv",
        "inv,qty,code\nC1,5,10001\n2,-1,10002\n3,2,POST\n4,1,10004\n5,x,10005\n",
    );
    let mut t = Table::read(&p, &spec(&p), &cols(&["inv", "qty", "code"])).expect("read");
    let filters = vec![
        RowFilter {
            column: "inv".into(),
            op: FilterOp::NotStartsWith,
            value: Some(FilterValue::Text("C".into())),
            values: vec![],
        },
        RowFilter {
            column: "code".into(),
            op: FilterOp::Matches,
            value: Some(FilterValue::Text("^[0-9]{5}".into())),
            values: vec![],
        },
    ];
    let report = t.apply_filters(&filters).expect("filters");
    assert_eq!(report[0].dropped, 1);
    assert_eq!(report[1].dropped, 1);
    assert_eq!(t.len(), 3);
    // The bad quantity is on file row 5 and is reported as such after filtering.
    let e = t.numbers("qty").expect_err("bad qty").to_string();
    assert!(e.contains("row 5"), "{e}");
}

/// A recommender config over a MovieLens-style ratings file (no header), selected by config only.
fn ratings_config(dir: &Path, file: &str, separator: &str, threshold: Option<f64>) -> String {
    let threshold = threshold
        .map(|t| format!("rating_threshold = {t}\n"))
        .unwrap_or_default();
    let text = format!(
        r#"
[business]
name = "ratings"
data_dir = "."

[recommender.data]
events = {{ path = "{file}", separator = "{separator}", has_header = false, column_names = ["user", "item", "rating", "ts"] }}
customer_id = "user"
product_id = "item"
timestamp = "ts"
rating = "rating"
{threshold}"#
    );
    let path = dir.join("ratings.toml");
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

fn load_ratings(config: &str) -> shopcast_datasets::interactions::RecommenderData {
    let cfg = shopcast_datasets::ShopConfig::load(Path::new(config)).expect("config loads");
    let rec = cfg.config.recommender.clone().expect("recommender section");
    shopcast_datasets::interactions::load_recommender_data(&cfg, &rec).expect("ratings load")
}

// MovieLens 100K `u.data`: user, item, rating, unix time, tab-separated, no header.
const U_DATA: &str = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n244\t51\t2\t880606923\n196\t302\t5\t881251000\n";
// MovieLens 1M `ratings.dat`: the same fields separated by `::`.
const RATINGS_DAT: &str = "1::1193::5::978300760\n1::661::3::978302109\n1::914::3::978301968\n2::1357::5::978298709\n2::3068::4::978299000\n2::1193::2::978299100\n";

#[test]
fn movielens_layouts_load_as_implicit_feedback() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "u.data", U_DATA);
    write(dir.path(), "ratings.dat", RATINGS_DAT);

    // u.data, every rating counts (the NCF protocol's reading of MovieLens).
    let data = load_ratings(&ratings_config(dir.path(), "u.data", "\\t", None));
    assert_eq!(data.report.rows_read, 5);
    assert_eq!(data.pairs.len(), 5);
    assert_eq!(data.customers.len(), 4);
    let first = data
        .pairs
        .iter()
        .find(|p| data.customers.id(p.customer) == "196" && data.products.id(p.product) == "302")
        .expect("user 196 rated item 302");
    assert_eq!(first.ts, 881251000, "unix seconds are read as timestamps");

    // ratings.dat with `::`, keeping ratings >= 4 only.
    let data = load_ratings(&ratings_config(dir.path(), "ratings.dat", "::", Some(4.0)));
    assert_eq!(data.report.rows_read, 6);
    assert_eq!(data.report.below_rating_threshold, 3);
    let mut kept: Vec<(String, String)> = data
        .pairs
        .iter()
        .map(|p| {
            (
                data.customers.id(p.customer).to_string(),
                data.products.id(p.product).to_string(),
            )
        })
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        vec![
            ("1".to_string(), "1193".to_string()),
            ("2".to_string(), "1357".to_string()),
            ("2".to_string(), "3068".to_string()),
        ]
    );
}

#[test]
fn rating_that_is_not_a_number_names_the_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "ratings.dat",
        "1::1193::5::978300760\n1::661::five::978302109\n",
    );
    let config = ratings_config(dir.path(), "ratings.dat", "::", Some(4.0));
    let cfg = shopcast_datasets::ShopConfig::load(Path::new(&config)).expect("config loads");
    let rec = cfg.config.recommender.clone().expect("recommender section");
    let e = shopcast_datasets::interactions::load_recommender_data(&cfg, &rec)
        .expect_err("bad rating is an error")
        .to_string();
    assert!(e.contains("row 2"), "{e}");
    assert!(e.contains("\"five\""), "{e}");
    assert!(e.contains("rating"), "{e}");
}

#[test]
fn weekly_panel_sums_weeks_fills_gaps_and_keeps_the_latest_static_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 2024-01-01 is a Monday. Series a: two rows in week 1, nothing in week 2, one in week 3,
    // a return (-2) that is dropped; its category changes to "toys" in its last row. Series b
    // starts in week 3.
    write(
        dir.path(),
        "weekly.csv",
        "sku,day,units,category\n\
         a,2024-01-01,3,games\na,2024-01-07,4,games\na,2024-01-10,-2,games\n\
         a,2024-01-16,5,toys\nb,2024-01-18,7,games\n",
    );
    let text = r#"
[business]
name = "weekly"
data_dir = "."

[forecaster.data]
sales = { path = "weekly.csv" }
series_keys = ["sku"]
date = "day"
target = "units"
frequency = "weekly"
aggregate = true
static_attributes = ["category"]
"#;
    let path = dir.path().join("weekly.toml");
    std::fs::write(&path, text).expect("write config");
    let cfg = shopcast_datasets::ShopConfig::load(&path).expect("config loads");
    let fc = cfg.config.forecaster.clone().expect("forecaster section");
    let panel = shopcast_datasets::sales::load_sales_panel(&cfg, &fc).expect("panel loads");
    assert_eq!(panel.period_days, 7);
    assert_eq!(panel.periods, 3);
    assert_eq!(panel.report.negative_targets_dropped, 1);
    assert_eq!(panel.target[0], vec![7.0, 0.0, 5.0]);
    assert!(panel.target[1][0].is_nan() && panel.target[1][1].is_nan());
    assert_eq!(panel.target[1][2], 7.0);
    assert_eq!(panel.start, vec![0, 2]);
    let category = |s: usize| {
        panel.static_vocabs[0]
            .id(panel.series_statics[s][0])
            .to_string()
    };
    assert_eq!(category(0), "toys");
    assert_eq!(category(1), "games");
}

/// A daily sales config over `sales.csv` in `dir`, with extra `[forecaster.data]` lines.
fn daily_panel(
    dir: &Path,
    csv: &str,
    extra: &str,
) -> Result<shopcast_datasets::sales::SalesPanel, DataError> {
    write(dir, "sales.csv", csv);
    let text = format!(
        "[business]\nname = \"daily\"\ndata_dir = \".\"\n\n[forecaster.data]\n\
         sales = {{ path = \"sales.csv\" }}\nseries_keys = [\"sku\"]\ndate = \"day\"\n\
         target = \"units\"\n{extra}\n"
    );
    let path = dir.join("daily.toml");
    std::fs::write(&path, text).expect("write config");
    let cfg = shopcast_datasets::ShopConfig::load(&path).expect("config loads");
    let fc = cfg.config.forecaster.clone().expect("forecaster section");
    shopcast_datasets::sales::load_sales_panel(&cfg, &fc)
}

#[test]
fn text_that_is_not_utf8_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("latin1.csv");
    // "Café" in Latin-1: 0xE9 is not UTF-8.
    std::fs::write(&p, b"customer,name\nc1,Caf\xe9\n").expect("write");
    let e = Table::read(&p, &spec(&p), &cols(&["customer", "name"]))
        .err()
        .expect("not UTF-8")
        .to_string();
    assert!(e.contains("latin1.csv") && e.contains("UTF-8"), "{e}");
}

#[test]
fn truncated_parquet_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("events.parquet");
    let mut df = polars::prelude::DataFrame::new(
        3,
        vec![polars::prelude::Column::new(
            "customer".into(),
            ["a", "b", "c"],
        )],
    )
    .expect("frame");
    shopcast_datasets::table::write_frame_atomic(&mut df, &p).expect("write parquet");
    let bytes = std::fs::read(&p).expect("read back");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("truncate");
    let e = Table::read(&p, &spec(&p), &cols(&["customer"]))
        .err()
        .expect("truncated")
        .to_string();
    assert!(
        e.contains("events.parquet") && e.contains("is the file complete"),
        "{e}"
    );
}

#[test]
fn a_directory_is_not_a_data_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("sales.csv");
    std::fs::create_dir(&p).expect("mkdir");
    let e = Table::read(&p, &spec(&p), &cols(&["a"]))
        .err()
        .expect("directory")
        .to_string();
    assert!(
        e.contains("sales.csv") && e.contains("not a regular file"),
        "{e}"
    );
}

#[test]
fn nan_and_infinite_targets_name_the_row() {
    for bad in ["NaN", "inf", "-inf"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let csv = format!("sku,day,units\na,2024-01-01,3\na,2024-01-02,{bad}\n");
        let e = daily_panel(dir.path(), &csv, "")
            .expect_err(bad)
            .to_string();
        assert!(
            e.contains("sales.csv")
                && e.contains("row 2")
                && e.contains("units")
                && e.contains("finite"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn negative_targets_are_dropped_and_counted_or_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = "sku,day,units\na,2024-01-01,3\na,2024-01-02,-1\na,2024-01-03,2\n";
    let panel = daily_panel(dir.path(), csv, "").expect("returns dropped by default");
    assert_eq!(panel.report.negative_targets_dropped, 1);
    let e = daily_panel(dir.path(), csv, "negative_targets = \"error\"")
        .expect_err("error")
        .to_string();
    assert!(
        e.contains("row 2") && e.contains("negative value -1"),
        "{e}"
    );
}

#[test]
fn duplicate_rows_are_collapsed_and_counted_and_conflicting_ones_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = "sku,day,units\na,2024-01-01,3\na,2024-01-01,3\na,2024-01-02,2\na,2024-01-02,2\n";
    let panel = daily_panel(dir.path(), csv, "").expect("exact duplicates collapse");
    assert_eq!(panel.report.duplicate_rows_dropped, 2);
    assert_eq!(panel.target[0], vec![3.0, 2.0]);
    let csv = "sku,day,units\na,2024-01-01,3\na,2024-01-01,4\n";
    let e = daily_panel(dir.path(), csv, "")
        .expect_err("conflict")
        .to_string();
    assert!(
        e.contains("row 2") && e.contains("first at row 1") && e.contains("aggregate"),
        "{e}"
    );
}

#[test]
fn a_header_only_file_has_no_rows_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = daily_panel(dir.path(), "sku,day,units\n", "")
        .expect_err("no rows")
        .to_string();
    assert!(
        e.contains("sales.csv") && e.contains("no rows are left"),
        "{e}"
    );
}

#[test]
fn exact_duplicate_events_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The first two lines twice over: an export appended to itself.
    let doubled = format!("{U_DATA}196\t242\t3\t881250949\n186\t302\t3\t891717742\n");
    write(dir.path(), "u.data", &doubled);
    let data = load_ratings(&ratings_config(dir.path(), "u.data", "\\t", None));
    assert_eq!(data.report.duplicate_rows, 2);
    assert_eq!(data.report.rows_read, 7);
    assert_eq!(data.pairs.len(), 5, "duplicates collapse into their pair");
}

#[test]
fn empty_covariate_cells_are_counted_and_carried_forward() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = "sku,day,units,price,temp\n\
               a,2024-01-01,1,2.0,10\n\
               a,2024-01-02,2,,11\n\
               a,2024-01-03,3,2.5,\n\
               a,2024-01-04,4,,\n\
               b,2024-01-01,1,7.0,10\n";
    let panel = daily_panel(
        dir.path(),
        csv,
        "known_covariates = [\"price\"]\npast_covariates = [\"temp\"]",
    )
    .expect("loads");
    assert_eq!(
        panel.report.empty_covariate_cells,
        vec![("price".to_string(), 2), ("temp".to_string(), 2)]
    );
    let a = panel
        .series_keys
        .iter()
        .position(|k| panel.key_vocabs[0].id(k[0]) == "a")
        .expect("series a");
    // Each empty cell took the series' previous period's value.
    assert_eq!(panel.known[a][0], vec![2.0, 2.0, 2.5, 2.5]);
    assert_eq!(panel.past[a][0], vec![10.0, 11.0, 11.0, 11.0]);
    let notes = panel.report.empty_cell_notes();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].contains("\"price\": 2 empty cells") && notes[0].contains("previous period"));
}

/// Items rated in one second have no order: the split takes the one with the largest numeric
/// id as the test item and the next as the validation item, not the text order ("9" > "10").
#[test]
fn ties_at_one_timestamp_are_broken_by_numeric_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    // User 1 rates 3 alone, then 9, 10, 100 and 20 in one second.
    let ratings = "1\t3\t4\t100\n1\t9\t4\t200\n1\t100\t4\t200\n1\t10\t4\t200\n1\t20\t4\t200\n";
    write(dir.path(), "u.data", ratings);
    let data = load_ratings(&ratings_config(dir.path(), "u.data", "\\t", None));
    let split = data.leave_one_out(3).expect("split");
    let id = |p: u32| data.products.id(p).to_string();
    assert_eq!(
        split.test.iter().map(|&(_, p)| id(p)).collect::<Vec<_>>(),
        ["100"]
    );
    assert_eq!(
        split
            .validation
            .iter()
            .map(|&(_, p)| id(p))
            .collect::<Vec<_>>(),
        ["20"]
    );
    let mut train: Vec<String> = split.train.iter().map(|&(_, p, _)| id(p)).collect();
    train.sort();
    assert_eq!(train, ["10", "3", "9"]);
}

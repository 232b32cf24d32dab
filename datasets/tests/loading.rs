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

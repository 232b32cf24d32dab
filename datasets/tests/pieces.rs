//! Reading a file in pieces gives exactly what reading it whole gives, with row numbers that
//! carry on from piece to piece.

use std::path::{Path, PathBuf};

use polars::prelude::*;
use shopcast_datasets::config::FileSpec;
use shopcast_datasets::table::{write_frame_atomic, Table};
use shopcast_datasets::table_chunks::TableChunks;

fn spec(path: &Path, separator: Option<&str>) -> FileSpec {
    FileSpec {
        path: path.to_path_buf(),
        separator: separator.map(str::to_string),
        has_header: true,
        column_names: Vec::new(),
    }
}

fn cols(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Every piece's (file row, id, note) rows, in order.
fn rows_in_pieces(
    path: &Path,
    spec: &FileSpec,
    rows_per_piece: usize,
) -> Vec<(usize, String, Option<String>)> {
    let pieces = TableChunks::open(
        path,
        spec,
        &cols(&["id"]),
        &cols(&["note", "absent"]),
        rows_per_piece,
    )
    .expect("open");
    let mut out = Vec::new();
    let mut sizes = Vec::new();
    for piece in pieces {
        let t = piece.expect("piece");
        assert!(!t.has_column("absent"));
        sizes.push(t.len());
        let ids = t.ids("id").expect("ids");
        let notes = t.strings("note").expect("notes");
        for (i, (id, note)) in ids.into_iter().zip(notes).enumerate() {
            out.push((t.file_row(i), id, note));
        }
    }
    assert!(sizes.iter().all(|&n| n <= rows_per_piece), "{sizes:?}");
    out
}

fn whole(path: &Path, spec: &FileSpec) -> Vec<(usize, String, Option<String>)> {
    let t = Table::read_with_optional(path, spec, &cols(&["id"]), &cols(&["note", "absent"]))
        .expect("read");
    let ids = t.ids("id").expect("ids");
    let notes = t.strings("note").expect("notes");
    ids.into_iter()
        .zip(notes)
        .enumerate()
        .map(|(i, (id, note))| (t.file_row(i), id, note))
        .collect()
}

fn sample_csv(dir: &Path, separator: &str) -> PathBuf {
    let mut text = format!("id{separator}note{separator}other\n");
    for i in 0..23 {
        let note = match i % 5 {
            0 => "\"two\nlines\"".to_string(),
            1 => String::new(),
            2 => "\"quoted, with \"\"quotes\"\"\"".to_string(),
            _ => format!("n{i}"),
        };
        text.push_str(&format!("c{i}{separator}{note}{separator}{}\n", i * 7));
    }
    let p = dir.join(format!("customers{}.csv", separator.len()));
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn csv_pieces_equal_the_whole_file_even_with_quoted_line_breaks() {
    let dir = tempfile::tempdir().expect("tempdir");
    for separator in [",", "::"] {
        let p = sample_csv(dir.path(), separator);
        let s = spec(&p, Some(separator));
        let expected = whole(&p, &s);
        assert_eq!(expected.len(), 23);
        assert_eq!(expected[0].2.as_deref(), Some("two\nlines"));
        for rows_per_piece in [1, 2, 5, 23, 1000] {
            assert_eq!(
                rows_in_pieces(&p, &s, rows_per_piece),
                expected,
                "{separator} {rows_per_piece}"
            );
        }
    }
}

#[test]
fn parquet_pieces_equal_the_whole_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("customers.parquet");
    let ids: Vec<String> = (0..57).map(|i| format!("c{i}")).collect();
    let notes: Vec<Option<String>> = (0..57)
        .map(|i| (i % 3 != 0).then(|| format!("n{i}")))
        .collect();
    let mut df = DataFrame::new(
        57,
        vec![
            Column::new("id".into(), ids),
            Column::new("note".into(), notes),
        ],
    )
    .expect("frame");
    write_frame_atomic(&mut df, &p).expect("write parquet");
    let s = spec(&p, None);
    let expected = whole(&p, &s);
    assert_eq!(expected.len(), 57);
    for rows_per_piece in [1, 10, 56, 57, 100] {
        assert_eq!(
            rows_in_pieces(&p, &s, rows_per_piece),
            expected,
            "{rows_per_piece}"
        );
    }
}

#[test]
fn a_missing_column_is_reported_before_the_first_piece_and_bad_values_by_file_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("s.csv");
    std::fs::write(&p, "store,units\na,1\na,2\na,3\na,x\na,5\n").expect("write");
    let e = TableChunks::open(&p, &spec(&p, None), &cols(&["store", "date"]), &[], 2)
        .err()
        .expect("missing column")
        .to_string();
    assert!(
        e.contains("\"date\"") && e.contains("store, units") && e.contains("s.csv"),
        "{e}"
    );

    let pieces =
        TableChunks::open(&p, &spec(&p, None), &cols(&["store", "units"]), &[], 2).expect("open");
    let errors: Vec<String> = pieces
        .map(|piece| piece.expect("piece"))
        .filter_map(|t| t.numbers("units").err())
        .map(|e| e.to_string())
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("row 4") && errors[0].contains("\"x\""),
        "{}",
        errors[0]
    );
}

#[test]
fn a_header_only_file_has_no_pieces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("h.csv");
    std::fs::write(&p, "id,note\n").expect("write");
    let pieces = TableChunks::open(&p, &spec(&p, None), &cols(&["id"]), &[], 10).expect("open");
    assert_eq!(pieces.count(), 0);
}

//! Reading a business's CSV or Parquet file with polars, and pulling typed columns out of it with
//! errors that name the file, row, column and value.
//!
//! CSV files are read with every column as text so that a bad value is reported by our own
//! parser (row and value), not as a polars schema-inference failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, NaiveDateTime};
use polars::prelude::*;

use crate::config::{FileSpec, FilterOp, FilterValue, RowFilter};
use crate::error::DataError;

/// A column of ids as codes: `distinct[codes[row]]` is the row's id.
#[derive(Debug, Clone, Default)]
pub struct InternedIds {
    pub codes: Vec<u32>,
    pub distinct: Vec<String>,
}

/// Rows of one file, restricted to the columns asked for.
pub struct Table {
    path: PathBuf,
    df: DataFrame,
    /// 1-based data row number in the file for each row still present (filters drop rows).
    rows: Vec<usize>,
}

/// How many rows a filter dropped.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FilterReport {
    pub filter: String,
    pub dropped: usize,
}

fn check_columns(path: &Path, wanted: &[String], found: &[String]) -> Result<(), DataError> {
    match wanted.iter().find(|c| !found.contains(c)) {
        Some(c) => Err(DataError::MissingColumn {
            path: path.to_path_buf(),
            column: c.clone(),
            found: found.to_vec(),
        }),
        None => Ok(()),
    }
}

pub(crate) fn polars_err(path: &Path, what: &str, e: PolarsError) -> DataError {
    DataError::file(path, format!("could not {what}: {e}"))
}

pub(crate) const CSV_READ_FAILED: &str =
    "read the CSV file (is it UTF-8 text with a consistent number of fields?)";

pub(crate) fn open_file(path: &Path, what: &str) -> Result<std::fs::File, DataError> {
    std::fs::File::open(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        what: what.into(),
        source: e,
    })
}

/// A data file must exist, be a regular file and hold something.
pub(crate) fn check_data_file(path: &Path) -> Result<(), DataError> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        what: "open the data file".into(),
        source: e,
    })?;
    if !meta.is_file() {
        return Err(DataError::file(path, "is not a regular file"));
    }
    if meta.len() == 0 {
        return Err(DataError::file(path, "the file is empty"));
    }
    Ok(())
}

/// Parquet by extension (`.parquet`, `.pq`); anything else is read as delimited text.
pub(crate) fn is_parquet(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet") || e.eq_ignore_ascii_case("pq"))
}

/// The required columns, then the optional ones the file has (`found`), without repeats.
fn columns_to_keep(required: &[String], optional: &[String], found: &[String]) -> Vec<String> {
    let mut keep: Vec<String> = required.to_vec();
    for c in optional {
        if found.contains(c) && !keep.contains(c) {
            keep.push(c.clone());
        }
    }
    keep
}

/// Checks a Parquet file's schema for the required columns; the columns to read.
pub(crate) fn parquet_columns(
    path: &Path,
    reader: &mut ParquetReader<std::fs::File>,
    required: &[String],
    optional: &[String],
) -> Result<Vec<String>, DataError> {
    let schema = reader
        .schema()
        .map_err(|e| polars_err(path, "read the Parquet schema (is the file complete?)", e))?;
    let found: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
    check_columns(path, required, &found)?;
    Ok(columns_to_keep(required, optional, &found))
}

pub(crate) fn check_csv_spec(path: &Path, spec: &FileSpec) -> Result<(), DataError> {
    if !spec.has_header && spec.column_names.is_empty() {
        return Err(DataError::file(
            path,
            "`has_header = false` needs `column_names` in the config to name the columns",
        ));
    }
    Ok(())
}

/// Every column is read as text: our own parsers report bad values by row.
pub(crate) fn csv_options(spec: &FileSpec, separator: u8) -> CsvReadOptions {
    CsvReadOptions::default()
        .with_has_header(spec.has_header)
        .with_infer_schema_length(Some(0))
        .map_parse_options(|o| o.with_separator(separator).with_missing_is_null(true))
}

/// Names the columns of a header-less file, checks the required ones are there (with a hint
/// when the separator looks wrong) and keeps the wanted ones.
pub(crate) fn csv_columns(
    path: &Path,
    spec: &FileSpec,
    sep: &Separator,
    mut df: DataFrame,
    required: &[String],
    optional: &[String],
) -> Result<DataFrame, DataError> {
    if !spec.has_header {
        if spec.column_names.len() != df.width() {
            return Err(DataError::file(
                path,
                format!(
                    "the file has {} columns but `column_names` lists {}",
                    df.width(),
                    spec.column_names.len()
                ),
            ));
        }
        df.set_column_names(&spec.column_names)
            .map_err(|e| polars_err(path, "name the columns", e))?;
    }
    let found: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    if found.len() == 1 && required.len() > 1 {
        let shown = match sep {
            Separator::Byte(b) => (*b as char).to_string(),
            Separator::Multi(m) => m.clone(),
        };
        return Err(DataError::file(
            path,
            format!(
                "only one column {:?} was found with separator {:?}: is the separator right? (set `separator` in the config)",
                found[0], shown
            ),
        ));
    }
    check_columns(path, required, &found)?;
    let keep = columns_to_keep(required, optional, &found);
    df.select(keep.iter().map(String::as_str))
        .map_err(|e| polars_err(path, "select the columns", e))
}

impl Table {
    /// Reads `columns` of a file. Missing file, empty file, bad format and missing columns are errors.
    pub fn read(path: &Path, spec: &FileSpec, columns: &[String]) -> Result<Table, DataError> {
        Self::read_with_optional(path, spec, columns, &[])
    }

    /// Reads the `required` columns and those of `optional` that the file has.
    pub fn read_with_optional(
        path: &Path,
        spec: &FileSpec,
        required: &[String],
        optional: &[String],
    ) -> Result<Table, DataError> {
        check_data_file(path)?;
        let df = if is_parquet(path) {
            let file = open_file(path, "open the Parquet file")?;
            let mut reader = ParquetReader::new(file);
            let columns = parquet_columns(path, &mut reader, required, optional)?;
            reader
                .with_columns(Some(columns))
                .finish()
                .map_err(|e| polars_err(path, "read the Parquet rows", e))?
        } else {
            check_csv_spec(path, spec)?;
            let sep = csv_separator(path, spec)?;
            let df = match &sep {
                Separator::Byte(b) => csv_options(spec, *b)
                    .try_into_reader_with_file_path(Some(path.to_path_buf()))
                    .map_err(|e| polars_err(path, "open the CSV file", e))?
                    .finish(),
                Separator::Multi(multi) => {
                    let bytes = std::fs::read(path).map_err(|e| DataError::Io {
                        path: path.to_path_buf(),
                        what: "read the CSV file".into(),
                        source: e,
                    })?;
                    let (bytes, b) = replace_separator(path, &bytes, multi)?;
                    csv_options(spec, b)
                        .into_reader_with_file_handle(std::io::Cursor::new(bytes))
                        .finish()
                }
            };
            let df = df.map_err(|e| polars_err(path, CSV_READ_FAILED, e))?;
            csv_columns(path, spec, &sep, df, required, optional)?
        };
        Ok(Table::from_frame(path, df, 0))
    }

    /// A table of rows `first_row + 1 ..` of `path` (1-based data rows).
    pub(crate) fn from_frame(path: &Path, df: DataFrame, first_row: usize) -> Table {
        let rows = (first_row + 1..=first_row + df.height()).collect();
        Table {
            path: path.to_path_buf(),
            df,
            rows,
        }
    }

    /// Whether the table has a column.
    pub fn has_column(&self, name: &str) -> bool {
        self.df.column(name).is_ok()
    }

    /// The file this table came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of rows left.
    pub fn len(&self) -> usize {
        self.df.height()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The 1-based row number in the file of row `i` of the table.
    pub fn file_row(&self, i: usize) -> usize {
        self.rows[i]
    }

    /// Drops a column that will not be read again, to free its memory.
    pub fn release(&mut self, name: &str) {
        let _ = self.df.drop_in_place(name);
    }

    fn column(&self, name: &str) -> Result<&Column, DataError> {
        self.df
            .column(name)
            .map_err(|e| polars_err(&self.path, &format!("find column {name:?}"), e))
    }

    fn value_error(&self, i: usize, column: &str, msg: String) -> DataError {
        DataError::Value {
            path: self.path.clone(),
            row: self.rows[i],
            column: column.to_string(),
            msg,
        }
    }

    /// A column as polars text (numbers are formatted), read in place: no string per row.
    pub fn text(&self, name: &str) -> Result<StringChunked, DataError> {
        let c = self.column(name)?;
        let c = c
            .cast(&DataType::String)
            .map_err(|e| polars_err(&self.path, &format!("read column {name:?} as text"), e))?;
        let ca = c
            .str()
            .map_err(|e| polars_err(&self.path, &format!("read column {name:?} as text"), e))?;
        Ok(ca.clone())
    }

    /// A column as text (numbers are formatted); null stays `None`.
    pub fn strings(&self, name: &str) -> Result<Vec<Option<String>>, DataError> {
        Ok(self
            .text(name)?
            .iter()
            .map(|v| v.map(str::to_string))
            .collect())
    }

    /// A column of ids: text, trimmed, never null or empty.
    pub fn ids(&self, name: &str) -> Result<Vec<String>, DataError> {
        let interned = self.id_codes(name)?;
        Ok(interned
            .codes
            .iter()
            .map(|&c| interned.distinct[c as usize].clone())
            .collect())
    }

    /// A column of ids (as [`Self::ids`]) interned: each row's code into the distinct ids in the
    /// order they first appear. A large events file costs 4 bytes a row instead of a string.
    pub fn id_codes(&self, name: &str) -> Result<InternedIds, DataError> {
        let text = self.text(name)?;
        let mut index: HashMap<&str, u32> = HashMap::new();
        let mut codes = Vec::with_capacity(text.len());
        for (i, v) in text.iter().enumerate() {
            match v.map(str::trim) {
                Some(s) if !s.is_empty() => {
                    let next = index.len() as u32;
                    codes.push(*index.entry(s).or_insert(next));
                }
                _ => {
                    return Err(self.value_error(
                        i,
                        name,
                        "the id is empty; every row needs an id".into(),
                    ))
                }
            }
        }
        let mut distinct = vec![String::new(); index.len()];
        for (id, code) in index {
            distinct[code as usize] = id.to_string();
        }
        Ok(InternedIds { codes, distinct })
    }

    /// A numeric column; text is parsed, empty text is `None`, anything else unparsable is an error.
    pub fn numbers(&self, name: &str) -> Result<Vec<Option<f64>>, DataError> {
        let c = self.column(name)?;
        if c.dtype() == &DataType::String {
            let ca = c
                .str()
                .map_err(|e| polars_err(&self.path, &format!("read column {name:?}"), e))?;
            let mut out = Vec::with_capacity(ca.len());
            for (i, v) in ca.iter().enumerate() {
                let v = v.map(str::trim).filter(|s| !s.is_empty());
                match v {
                    None => out.push(None),
                    Some(s) => match s.parse::<f64>() {
                        Ok(x) => out.push(Some(x)),
                        Err(_) => {
                            return Err(self.value_error(
                                i,
                                name,
                                format!("expected a number, got {s:?}"),
                            ))
                        }
                    },
                }
            }
            return Ok(out);
        }
        if c.dtype() == &DataType::Boolean {
            let ca = c
                .bool()
                .map_err(|e| polars_err(&self.path, &format!("read column {name:?}"), e))?;
            return Ok(ca
                .iter()
                .map(|v| v.map(|b| if b { 1.0 } else { 0.0 }))
                .collect());
        }
        let c = c.cast(&DataType::Float64).map_err(|_| {
            DataError::file(
                &self.path,
                format!(
                    "column {name:?} has type {} where a number was expected",
                    c.dtype()
                ),
            )
        })?;
        let ca = c
            .f64()
            .map_err(|e| polars_err(&self.path, &format!("read column {name:?}"), e))?;
        Ok(ca.iter().collect())
    }

    /// A numeric column that must be present and finite on every row.
    pub fn finite_numbers(&self, name: &str) -> Result<Vec<f64>, DataError> {
        let raw = self.numbers(name)?;
        let mut out = Vec::with_capacity(raw.len());
        for (i, v) in raw.into_iter().enumerate() {
            match v {
                Some(x) if x.is_finite() => out.push(x),
                Some(x) => {
                    return Err(self.value_error(
                        i,
                        name,
                        format!("expected a finite number, got {x}"),
                    ))
                }
                None => {
                    return Err(self.value_error(
                        i,
                        name,
                        "the value is missing; expected a number".into(),
                    ))
                }
            }
        }
        Ok(out)
    }

    /// A timestamp column as seconds since 1970-01-01 (naive, no time zone).
    ///
    /// Text is parsed with `format` when given, else with common ISO-like formats.
    pub fn timestamps(&self, name: &str, format: Option<&str>) -> Result<Vec<i64>, DataError> {
        let c = self.column(name)?;
        match c.dtype() {
            DataType::Date => {
                let c = c
                    .cast(&DataType::Int32)
                    .map_err(|e| polars_err(&self.path, "read dates", e))?;
                let ca = c
                    .i32()
                    .map_err(|e| polars_err(&self.path, "read dates", e))?;
                ca.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.map(|d| d as i64 * 86_400)
                            .ok_or_else(|| self.value_error(i, name, "the date is missing".into()))
                    })
                    .collect()
            }
            DataType::Datetime(unit, _) => {
                let per_second: i64 = match unit {
                    TimeUnit::Nanoseconds => 1_000_000_000,
                    TimeUnit::Microseconds => 1_000_000,
                    TimeUnit::Milliseconds => 1_000,
                };
                let c = c
                    .cast(&DataType::Int64)
                    .map_err(|e| polars_err(&self.path, "read timestamps", e))?;
                let ca = c
                    .i64()
                    .map_err(|e| polars_err(&self.path, "read timestamps", e))?;
                ca.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.map(|t| t.div_euclid(per_second)).ok_or_else(|| {
                            self.value_error(i, name, "the timestamp is missing".into())
                        })
                    })
                    .collect()
            }
            _ => {
                let text = self.strings(name)?;
                text.into_iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let s = v.as_deref().map(str::trim).unwrap_or("");
                        if s.is_empty() {
                            return Err(self.value_error(i, name, "the date is missing".into()));
                        }
                        parse_timestamp(s, format).ok_or_else(|| {
                            let expected = match format {
                                Some(f) => format!("a date in the format {f:?}"),
                                None => "a date such as 2024-03-31 or 2024-03-31 14:05:00 (or set the format in the config)".into(),
                            };
                            self.value_error(i, name, format!("expected {expected}, got {s:?}"))
                        })
                    })
                    .collect()
            }
        }
    }

    /// Applies row filters; returns what each dropped.
    pub fn apply_filters(&mut self, filters: &[RowFilter]) -> Result<Vec<FilterReport>, DataError> {
        let mut reports = Vec::new();
        for f in filters {
            let keep = self.filter_mask(f)?;
            let dropped = keep.iter().filter(|k| !**k).count();
            let mask = BooleanChunked::from_slice("keep".into(), &keep);
            self.df = self
                .df
                .filter(&mask)
                .map_err(|e| polars_err(&self.path, "filter rows", e))?;
            self.rows = self
                .rows
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(r, _)| *r)
                .collect();
            reports.push(FilterReport {
                filter: describe_filter(f),
                dropped,
            });
        }
        Ok(reports)
    }

    fn filter_mask(&self, f: &RowFilter) -> Result<Vec<bool>, DataError> {
        let name = f.column.as_str();
        let mask = match f.op {
            FilterOp::NotNull => self
                .strings(name)?
                .into_iter()
                .map(|v| v.is_some_and(|s| !s.trim().is_empty()))
                .collect(),
            FilterOp::Gt | FilterOp::Ge | FilterOp::Lt | FilterOp::Le => {
                let Some(FilterValue::Number(t)) = f.value else {
                    return Err(DataError::file(
                        &self.path,
                        format!("filter on {name:?} needs a numeric value"),
                    ));
                };
                self.numbers(name)?
                    .into_iter()
                    .map(|v| {
                        v.is_some_and(|x| match f.op {
                            FilterOp::Gt => x > t,
                            FilterOp::Ge => x >= t,
                            FilterOp::Lt => x < t,
                            _ => x <= t,
                        })
                    })
                    .collect()
            }
            FilterOp::Eq | FilterOp::Ne => {
                let want_eq = f.op == FilterOp::Eq;
                match &f.value {
                    Some(FilterValue::Number(t)) => self
                        .numbers(name)?
                        .into_iter()
                        .map(|v| v.is_some_and(|x| (x == *t) == want_eq))
                        .collect(),
                    Some(FilterValue::Text(t)) => self
                        .strings(name)?
                        .into_iter()
                        .map(|v| v.is_some_and(|s| (s.trim() == t) == want_eq))
                        .collect(),
                    None => {
                        return Err(DataError::file(
                            &self.path,
                            format!("filter on {name:?} needs a value"),
                        ))
                    }
                }
            }
            FilterOp::StartsWith | FilterOp::NotStartsWith => {
                let Some(FilterValue::Text(p)) = &f.value else {
                    return Err(DataError::file(
                        &self.path,
                        format!("filter on {name:?} needs a text value"),
                    ));
                };
                let want = f.op == FilterOp::StartsWith;
                self.strings(name)?
                    .into_iter()
                    .map(|v| v.is_some_and(|s| s.trim().starts_with(p.as_str()) == want))
                    .collect()
            }
            FilterOp::In | FilterOp::NotIn => {
                let want = f.op == FilterOp::In;
                let set: std::collections::HashSet<&str> =
                    f.values.iter().map(String::as_str).collect();
                self.strings(name)?
                    .into_iter()
                    .map(|v| v.is_some_and(|s| set.contains(s.trim()) == want))
                    .collect()
            }
            FilterOp::Matches | FilterOp::NotMatches => {
                let Some(FilterValue::Text(p)) = &f.value else {
                    return Err(DataError::file(
                        &self.path,
                        format!("filter on {name:?} needs a pattern"),
                    ));
                };
                let re = regex::Regex::new(p).map_err(|e| {
                    DataError::file(&self.path, format!("filter pattern {p:?} is invalid: {e}"))
                })?;
                let want = f.op == FilterOp::Matches;
                self.strings(name)?
                    .into_iter()
                    .map(|v| v.is_some_and(|s| re.is_match(s.trim()) == want))
                    .collect()
            }
        };
        Ok(mask)
    }
}

fn describe_filter(f: &RowFilter) -> String {
    let value = match (&f.value, f.values.is_empty()) {
        (Some(FilterValue::Number(x)), _) => format!(" {x}"),
        (Some(FilterValue::Text(s)), _) => format!(" {s:?}"),
        (None, false) => format!(" {:?}", f.values),
        (None, true) => String::new(),
    };
    format!("{} {:?}{}", f.column, f.op, value)
}

/// A CSV field separator: one byte (read by polars directly) or several (`::`).
pub(crate) enum Separator {
    Byte(u8),
    Multi(String),
}

pub(crate) fn csv_separator(path: &Path, spec: &FileSpec) -> Result<Separator, DataError> {
    match &spec.separator {
        Some(s) if s == "\\t" || s.eq_ignore_ascii_case("tab") => Ok(Separator::Byte(b'\t')),
        Some(s) if s.len() == 1 => Ok(Separator::Byte(s.as_bytes()[0])),
        Some(s) if s.is_empty() || s.contains(['\n', '\r', '"']) => Err(DataError::file(
            path,
            format!("`separator` must be non-empty and hold no quote or line break, got {s:?}"),
        )),
        Some(s) => Ok(Separator::Multi(s.clone())),
        None => {
            let tsv = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
            Ok(Separator::Byte(if tsv { b'\t' } else { b',' }))
        }
    }
}

/// Rewrites the bytes of a file whose separator has several bytes with a single byte that does
/// not occur in them (polars splits on one byte only).
pub(crate) fn replace_separator(
    path: &Path,
    bytes: &[u8],
    sep: &str,
) -> Result<(Vec<u8>, u8), DataError> {
    let mut present = [false; 256];
    for &b in bytes {
        present[b as usize] = true;
    }
    // Control characters that text files practically never contain.
    let Some(single) = [0x1fu8, 0x1e, 0x1d, 0x1c, 0x01, 0x02, 0x03]
        .into_iter()
        .find(|b| !present[*b as usize])
    else {
        return Err(DataError::file(
            path,
            format!("cannot split on {sep:?}: the file uses every spare control byte"),
        ));
    };
    let sep = sep.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(sep) {
            out.push(single);
            i += sep.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok((out, single))
}

/// Parses a date or date-time; with no format, tries common ISO-like ones.
pub fn parse_timestamp(s: &str, format: Option<&str>) -> Option<i64> {
    let to_secs = |dt: NaiveDateTime| dt.and_utc().timestamp();
    if let Some(f) = format {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, f) {
            return Some(to_secs(dt));
        }
        return NaiveDate::parse_from_str(s, f)
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(to_secs);
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, f) {
            return Some(to_secs(dt));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(to_secs);
    }
    // Unix seconds.
    s.parse::<i64>().ok()
}

/// Day number (days since 1970-01-01) of a timestamp in seconds.
pub fn day_of(ts: i64) -> i64 {
    ts.div_euclid(86_400)
}

/// The calendar date of a day number.
pub fn date_of_day(day: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default() + chrono::Days::new(day.max(0) as u64)
}

/// The permissions a finished output gets: those of the file it replaces, or 0644 on Unix.
fn output_permissions(path: &Path) -> Option<std::fs::Permissions> {
    if let Ok(m) = std::fs::metadata(path) {
        return Some(m.permissions());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Some(std::fs::Permissions::from_mode(0o644))
    }
    #[cfg(not(unix))]
    None
}

/// Writes `bytes` to `path` through a flushed temporary file in the same directory renamed over
/// it (a reader never sees a partial file; a killed writer leaves the previous one), with the
/// replaced file's permissions or the usual 0644.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    use std::io::Write;
    let io = |what: &str, e: std::io::Error| DataError::Io {
        path: path.to_path_buf(),
        what: what.into(),
        source: e,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| io("create a temporary file beside", e))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| io("write", e))?;
    if let Some(permissions) = output_permissions(path) {
        std::fs::set_permissions(tmp.path(), permissions)
            .map_err(|e| io("set the permissions of", e))?;
    }
    tmp.persist(path)
        .map_err(|e| io("move into place", e.error))?;
    Ok(())
}

/// Writes `df` to `path` (CSV or Parquet by extension) through a temporary file in the same
/// directory that is renamed over `path` when complete: a reader never sees a partial file, and
/// a job killed mid-write leaves the previous output as it was.
pub fn write_frame_atomic(df: &mut DataFrame, path: &Path) -> Result<(), DataError> {
    let mut out = AtomicFrameWriter::create(path, df.schema())?;
    out.write(df)?;
    out.finish()
}

enum FrameSink {
    Csv { header_written: bool },
    // Boxed: the batched writer is large beside the CSV state.
    Parquet(Box<polars::io::parquet::write::BatchedWriter<std::fs::File>>),
}

/// An output written in chunks (so that a job's memory does not grow with its output) into a
/// temporary file beside the destination, renamed into place by [`AtomicFrameWriter::finish`].
/// Dropped or killed before that, the destination is untouched.
pub struct AtomicFrameWriter {
    path: PathBuf,
    tmp: tempfile::NamedTempFile,
    schema: Schema,
    sink: FrameSink,
    rows: usize,
    /// Fault injection for the crash tests: sleep this long after each chunk.
    slow_write: Option<std::time::Duration>,
}

impl AtomicFrameWriter {
    /// Opens the temporary file for `path` (CSV unless the extension is `.parquet`).
    pub fn create(path: &Path, schema: &Schema) -> Result<Self, DataError> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| DataError::Io {
            path: dir.to_path_buf(),
            what: "create the output directory".into(),
            source: e,
        })?;
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("output");
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{file_name}."))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| DataError::Io {
                path: dir.to_path_buf(),
                what: "create a temporary output file".into(),
                source: e,
            })?;
        let is_parquet = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
        let sink = if is_parquet {
            let file = tmp.as_file().try_clone().map_err(|e| DataError::Io {
                path: tmp.path().to_path_buf(),
                what: "open the temporary output file".into(),
                source: e,
            })?;
            FrameSink::Parquet(Box::new(
                ParquetWriter::new(file)
                    .batched(schema)
                    .map_err(|e| polars_err(path, "start writing Parquet", e))?,
            ))
        } else {
            FrameSink::Csv {
                header_written: false,
            }
        };
        let slow_write = std::env::var("SHOPCAST_FAULT_SLOW_WRITE_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(std::time::Duration::from_millis);
        Ok(AtomicFrameWriter {
            path: path.to_path_buf(),
            tmp,
            schema: schema.clone(),
            sink,
            rows: 0,
            slow_write,
        })
    }

    /// Appends a chunk (same columns as the schema).
    pub fn write(&mut self, df: &mut DataFrame) -> Result<(), DataError> {
        match &mut self.sink {
            FrameSink::Csv { header_written } => {
                CsvWriter::new(self.tmp.as_file_mut())
                    .include_header(!*header_written)
                    .finish(df)
                    .map_err(|e| polars_err(&self.path, "write CSV", e))?;
                *header_written = true;
            }
            FrameSink::Parquet(writer) => writer
                .write_batch(df)
                .map_err(|e| polars_err(&self.path, "write Parquet", e))?,
        }
        self.rows += df.height();
        if let Some(pause) = self.slow_write {
            std::thread::sleep(pause);
        }
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Flushes the file to disk and renames it over the destination.
    pub fn finish(mut self) -> Result<(), DataError> {
        match &mut self.sink {
            FrameSink::Csv { header_written } => {
                if !*header_written {
                    let mut empty = DataFrame::empty_with_schema(&self.schema);
                    CsvWriter::new(self.tmp.as_file_mut())
                        .include_header(true)
                        .finish(&mut empty)
                        .map_err(|e| polars_err(&self.path, "write CSV", e))?;
                }
            }
            FrameSink::Parquet(writer) => {
                writer
                    .finish()
                    .map_err(|e| polars_err(&self.path, "finish the Parquet file", e))?;
            }
        }
        self.tmp.as_file().sync_all().map_err(|e| DataError::Io {
            path: self.tmp.path().to_path_buf(),
            what: "flush the output".into(),
            source: e,
        })?;
        let path = self.path;
        // The temporary file is private (0600); the output gets the permissions of the file it
        // replaces, or the usual 0644, so that other users and services can read it.
        if let Some(permissions) = output_permissions(&path) {
            std::fs::set_permissions(self.tmp.path(), permissions).map_err(|e| DataError::Io {
                path: self.tmp.path().to_path_buf(),
                what: "set the output's permissions".into(),
                source: e,
            })?;
        }
        self.tmp.persist(&path).map_err(|e| DataError::Io {
            path: path.clone(),
            what: "move the finished output into place".into(),
            source: e.error,
        })?;
        Ok(())
    }
}

//! The data side of a bundle that grows with the business, as Parquet tables: the recommender's
//! per-customer and per-product data, the forecaster's per-series periods.
//!
//! A bundle's recommender side grows with the shop (ids, histories, attribute tokens of every
//! customer and product); JSON of a million customers is hundreds of megabytes that must be parsed
//! whole. These tables hold those columns; the small rest (column names, attribute tables, token
//! names, band cuts, segment profiles) stays in the JSON header `recommender.vocab.json`.
//! Lists are stored long, one row per element in order: `(customer, product)` pairs for the
//! purchase, browse and recency lists, `(entity, token)` pairs for the attribute tokens.

use std::path::Path;

use polars::prelude::*;

use crate::artifacts::{files, ForecasterArtifacts, RecommenderArtifacts};
use crate::error::DataError;
use crate::table::{open_file, polars_err};

// The tables (names in `artifacts::files`):
// - customers, in vocabulary order: `customer` (the id, or its pseudonym) and `segment`;
// - products, in vocabulary order: `product` (the id), `name` and `popularity`;
// - histories: `customer`, `list` (`purchased`, `browsed` or `recent`) and `product`, in list
//   order;
// - customer and product tokens: `entity` (its index) and `token` (an attribute token id).
const CUSTOMERS: &str = files::RECOMMENDER_CUSTOMERS;
const PRODUCTS: &str = files::RECOMMENDER_PRODUCTS;
const HISTORIES: &str = files::RECOMMENDER_HISTORIES;
const CUSTOMER_TOKENS: &str = files::RECOMMENDER_CUSTOMER_TOKENS;
const PRODUCT_TOKENS: &str = files::RECOMMENDER_PRODUCT_TOKENS;

/// Names of the three per-customer lists in [`HISTORIES`].
const LISTS: [&str; 3] = ["purchased", "browsed", "recent"];

impl RecommenderArtifacts {
    /// Writes the per-entity columns into `dir` (one file per `files::RECOMMENDER_TABLES` entry).
    pub fn write_tables(&self, dir: &Path) -> Result<(), DataError> {
        let n_c = self.customers.len();
        let n_p = self.products.len();
        write(
            &dir.join(CUSTOMERS),
            n_c,
            vec![
                Column::new("customer".into(), self.customers.ids()),
                Column::new("segment".into(), self.segments.as_slice()),
            ],
        )?;
        write(
            &dir.join(PRODUCTS),
            n_p,
            vec![
                Column::new("product".into(), self.products.ids()),
                Column::new("name".into(), self.product_names.as_slice()),
                Column::new("popularity".into(), self.popularity.as_slice()),
            ],
        )?;
        let (mut customer, mut list, mut product) = (Vec::new(), Vec::new(), Vec::new());
        for (name, lists) in LISTS
            .iter()
            .zip([&self.purchased, &self.browsed, &self.recent])
        {
            for (c, items) in lists.iter().enumerate() {
                customer.extend(std::iter::repeat_n(c as u32, items.len()));
                list.extend(std::iter::repeat_n(*name, items.len()));
                product.extend_from_slice(items);
            }
        }
        write(
            &dir.join(HISTORIES),
            customer.len(),
            vec![
                Column::new("customer".into(), customer),
                Column::new("list".into(), list),
                Column::new("product".into(), product),
            ],
        )?;
        write_long(
            &dir.join(CUSTOMER_TOKENS),
            &self.customer_features.entity_tokens,
        )?;
        write_long(
            &dir.join(PRODUCT_TOKENS),
            &self.product_features.entity_tokens,
        )
    }

    /// Reads the columns [`Self::write_tables`] wrote into an artifacts header read from JSON.
    pub fn read_tables(&mut self, dir: &Path) -> Result<(), DataError> {
        let path = dir.join(CUSTOMERS);
        let customers = read(&path)?;
        let ids = strings(&path, &customers, "customer")?;
        self.segments = numbers(&path, &customers, "segment")?;
        self.customers = ids.into();
        let n_c = self.customers.len();

        let path = dir.join(PRODUCTS);
        let products = read(&path)?;
        let ids = strings(&path, &products, "product")?;
        self.product_names = strings(&path, &products, "name")?;
        self.popularity = numbers(&path, &products, "popularity")?;
        self.products = ids.into();
        let n_p = self.products.len();

        let path = dir.join(HISTORIES);
        let lists = read_histories(&path, n_c, n_p)?;
        let [purchased, browsed, recent] = lists;
        (self.purchased, self.browsed, self.recent) = (purchased, browsed, recent);

        self.customer_features.entity_tokens = read_long(&dir.join(CUSTOMER_TOKENS), n_c)?;
        self.product_features.entity_tokens = read_long(&dir.join(PRODUCT_TOKENS), n_p)?;
        Ok(())
    }
}

impl ForecasterArtifacts {
    /// Writes the series' periods into `dir` (`files::FORECASTER_PERIODS`): one row per series
    /// and period, `series`, `target` (null where unknown), `known_<j>` and `past_<j>`.
    pub fn write_tables(&self, dir: &Path) -> Result<(), DataError> {
        let path = dir.join(files::FORECASTER_PERIODS);
        let (n_known, n_past) = self
            .series
            .first()
            .map(|t| (t.known.len(), t.past.len()))
            .unwrap_or_default();
        let mut series = Vec::new();
        let mut target = Vec::new();
        let mut known = vec![Vec::new(); n_known];
        let mut past = vec![Vec::new(); n_past];
        for (s, tail) in self.series.iter().enumerate() {
            let periods = tail.target.len();
            let lengths_fit = tail.known.len() == n_known
                && tail.past.len() == n_past
                && tail
                    .known
                    .iter()
                    .chain(&tail.past)
                    .all(|v| v.len() == periods);
            if !lengths_fit {
                return Err(DataError::file(
                    &path,
                    format!("series {s}: its covariates do not cover its {periods} periods"),
                ));
            }
            series.extend(std::iter::repeat_n(s as u32, periods));
            target.extend_from_slice(&tail.target);
            for (column, values) in known.iter_mut().zip(&tail.known) {
                column.extend_from_slice(values);
            }
            for (column, values) in past.iter_mut().zip(&tail.past) {
                column.extend_from_slice(values);
            }
        }
        let height = series.len();
        let mut columns = vec![
            Column::new("series".into(), series),
            Column::new("target".into(), target),
        ];
        for (j, values) in known.into_iter().enumerate() {
            columns.push(Column::new(format!("known_{j}").into(), values));
        }
        for (j, values) in past.into_iter().enumerate() {
            columns.push(Column::new(format!("past_{j}").into(), values));
        }
        write(&path, height, columns)
    }

    /// Reads the periods [`Self::write_tables`] wrote into a header read from JSON.
    pub fn read_tables(&mut self, dir: &Path) -> Result<(), DataError> {
        let path = dir.join(files::FORECASTER_PERIODS);
        let df = read(&path)?;
        let series = numbers(&path, &df, "series")?;
        let target = optional_floats(&path, &df, "target")?;
        let count = |prefix: &str| {
            (0..)
                .take_while(|j| df.column(&format!("{prefix}_{j}")).is_ok())
                .count()
        };
        let read_all = |prefix: &str| -> Result<Vec<Vec<f32>>, DataError> {
            (0..count(prefix))
                .map(|j| floats(&path, &df, &format!("{prefix}_{j}")))
                .collect()
        };
        let (known, past) = (read_all("known")?, read_all("past")?);
        let n = self.series.len();
        for tail in &mut self.series {
            tail.target.clear();
            tail.known = vec![Vec::new(); known.len()];
            tail.past = vec![Vec::new(); past.len()];
        }
        for (row, &s) in series.iter().enumerate() {
            check_index(&path, row, "series", s, n)?;
            let tail = &mut self.series[s as usize];
            tail.target.push(target[row]);
            for (column, values) in tail.known.iter_mut().zip(&known) {
                column.push(values[row]);
            }
            for (column, values) in tail.past.iter_mut().zip(&past) {
                column.push(values[row]);
            }
        }
        Ok(())
    }
}

/// The three per-customer lists of the histories table. The list names are read in place and
/// each list is allocated at its final length: at a million customers, a string per row and
/// lists grown by doubling took over 3 GB to load a 234 MB bundle.
fn read_histories(path: &Path, n_c: usize, n_p: usize) -> Result<[Vec<Vec<u32>>; 3], DataError> {
    LongLists {
        path,
        entity: ("customer", n_c),
        element: ("product", Some(n_p)),
        list_names: Some(("list", LISTS)),
        rows_per_slice: ROWS_PER_SLICE,
    }
    .read()
}

/// Per-entity lists stored long, one row per element in list order, optionally several lists
/// told apart by a name column. Read in two passes over slices of rows (the lengths, then the
/// elements into lists allocated at their final size), so the table is never held whole: at a
/// million customers the whole histories table and its copies were most of a bundle's load.
struct LongLists<'a, const N: usize> {
    path: &'a Path,
    /// The entity column and the number of entities.
    entity: (&'a str, usize),
    /// The element column and, where it is an index, the number of values it indexes.
    element: (&'a str, Option<usize>),
    /// The column naming each row's list, and the names in list order; without it, one list.
    list_names: Option<(&'a str, [&'a str; N])>,
    rows_per_slice: usize,
}

impl<const N: usize> LongLists<'_, N> {
    fn read(&self) -> Result<[Vec<Vec<u32>>; N], DataError> {
        let (entity_col, n_entities) = self.entity;
        let mut lengths: [Vec<u32>; N] = std::array::from_fn(|_| vec![0u32; n_entities]);
        let mut columns = vec![entity_col];
        columns.extend(self.list_names.map(|(name, _)| name));
        for_each_slice(self.path, &columns, self.rows_per_slice, |df, first_row| {
            let entity = numbers_from(self.path, df, entity_col, first_row)?;
            let which = self.which_lists(df, first_row)?;
            for (i, e) in entity.iter().enumerate() {
                check_index(self.path, first_row + i, entity_col, *e, n_entities)?;
                lengths[which.get(i).copied().unwrap_or(0) as usize][*e as usize] += 1;
            }
            Ok(())
        })?;
        let mut lists = lengths.map(|lens| {
            lens.into_iter()
                .map(|n| Vec::with_capacity(n as usize))
                .collect::<Vec<Vec<u32>>>()
        });
        let (element_col, n_values) = self.element;
        columns.push(element_col);
        for_each_slice(self.path, &columns, self.rows_per_slice, |df, first_row| {
            let entity = numbers_from(self.path, df, entity_col, first_row)?;
            let element = numbers_from(self.path, df, element_col, first_row)?;
            let which = self.which_lists(df, first_row)?;
            for (i, (e, v)) in entity.iter().zip(element).enumerate() {
                if let Some(n) = n_values {
                    check_index(self.path, first_row + i, element_col, v, n)?;
                }
                lists[which.get(i).copied().unwrap_or(0) as usize][*e as usize].push(v);
            }
            Ok(())
        })?;
        Ok(lists)
    }

    /// Each row's list (empty without a name column: every row is in list 0).
    fn which_lists(&self, df: &DataFrame, first_row: usize) -> Result<Vec<u8>, DataError> {
        let Some((name_col, names)) = self.list_names else {
            return Ok(Vec::new());
        };
        let values = column(self.path, df, name_col)?
            .str()
            .map_err(|e| polars_err(self.path, &format!("read column {name_col:?} as text"), e))?;
        values
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let row = first_row + i;
                let name =
                    name.ok_or_else(|| value_err(self.path, row, name_col, "empty value".into()))?;
                names
                    .iter()
                    .position(|l| *l == name)
                    .map(|l| l as u8)
                    .ok_or_else(|| {
                        value_err(
                            self.path,
                            row,
                            name_col,
                            format!("expected one of {names:?}, got {name:?}"),
                        )
                    })
            })
            .collect()
    }
}

/// Rows of a bundle table read at a time.
const ROWS_PER_SLICE: usize = 1 << 20;

/// Calls `f` on each slice of at most `rows_per_slice` rows of a Parquet table's `columns`, with
/// the number of the slice's first row (0-based). Polars decodes only the row groups a slice
/// touches.
fn for_each_slice(
    path: &Path,
    columns: &[&str],
    rows_per_slice: usize,
    mut f: impl FnMut(&DataFrame, usize) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let rows = ParquetReader::new(open_file(path, "open the bundle table")?)
        .num_rows()
        .map_err(|e| polars_err(path, "read the bundle table's metadata", e))?;
    let mut first_row = 0;
    loop {
        let df = ParquetReader::new(open_file(path, "open the bundle table")?)
            .with_columns(Some(columns.iter().map(|c| c.to_string()).collect()))
            .with_slice(Some((first_row, rows_per_slice)))
            .finish()
            .map_err(|e| polars_err(path, "read the bundle table", e))?;
        // The first slice is read even from an empty table: its columns are checked.
        f(&df, first_row)?;
        first_row += rows_per_slice.max(1);
        if first_row >= rows {
            return Ok(());
        }
    }
}

fn write(path: &Path, height: usize, columns: Vec<Column>) -> Result<(), DataError> {
    let mut df = DataFrame::new(height, columns).map_err(|e| polars_err(path, "build", e))?;
    let file = std::fs::File::create(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        what: "create".into(),
        source: e,
    })?;
    ParquetWriter::new(file)
        .finish(&mut df)
        .map_err(|e| polars_err(path, "write Parquet", e))?;
    Ok(())
}

/// `(entity, token)` rows of per-entity token lists.
fn write_long(path: &Path, lists: &[Vec<u32>]) -> Result<(), DataError> {
    let (mut entity, mut token) = (Vec::new(), Vec::new());
    for (e, tokens) in lists.iter().enumerate() {
        entity.extend(std::iter::repeat_n(e as u32, tokens.len()));
        token.extend_from_slice(tokens);
    }
    write(
        path,
        entity.len(),
        vec![
            Column::new("entity".into(), entity),
            Column::new("token".into(), token),
        ],
    )
}

fn read_long(path: &Path, n: usize) -> Result<Vec<Vec<u32>>, DataError> {
    let [lists] = LongLists {
        path,
        entity: ("entity", n),
        element: ("token", None),
        list_names: None,
        rows_per_slice: ROWS_PER_SLICE,
    }
    .read()?;
    Ok(lists)
}

fn read(path: &Path) -> Result<DataFrame, DataError> {
    ParquetReader::new(open_file(path, "open the bundle table")?)
        .finish()
        .map_err(|e| polars_err(path, "read the bundle table", e))
}

fn column<'a>(path: &Path, df: &'a DataFrame, name: &str) -> Result<&'a Column, DataError> {
    df.column(name).map_err(|_| DataError::MissingColumn {
        path: path.to_path_buf(),
        column: name.into(),
        found: df
            .get_column_names()
            .iter()
            .map(|c| c.to_string())
            .collect(),
    })
}

fn value_err(path: &Path, row: usize, column: &str, msg: String) -> DataError {
    DataError::Value {
        path: path.to_path_buf(),
        row: row + 1,
        column: column.into(),
        msg,
    }
}

fn check_index(path: &Path, row: usize, name: &str, i: u32, n: usize) -> Result<(), DataError> {
    if (i as usize) < n {
        return Ok(());
    }
    Err(value_err(
        path,
        row,
        name,
        format!("index {i} is outside 0..{n}"),
    ))
}

fn strings(path: &Path, df: &DataFrame, name: &str) -> Result<Vec<String>, DataError> {
    let values = column(path, df, name)?
        .str()
        .map_err(|e| polars_err(path, &format!("read column {name:?} as text"), e))?;
    values
        .iter()
        .enumerate()
        .map(|(row, v)| {
            v.map(str::to_string)
                .ok_or_else(|| value_err(path, row, name, "empty value".into()))
        })
        .collect()
}

fn numbers(path: &Path, df: &DataFrame, name: &str) -> Result<Vec<u32>, DataError> {
    numbers_from(path, df, name, 0)
}

/// [`numbers`] of a slice of a table whose first row is row `first_row` of the file.
fn numbers_from(
    path: &Path,
    df: &DataFrame,
    name: &str,
    first_row: usize,
) -> Result<Vec<u32>, DataError> {
    let values = column(path, df, name)?
        .u32()
        .map_err(|e| polars_err(path, &format!("read column {name:?} as u32"), e))?;
    values
        .iter()
        .enumerate()
        .map(|(row, v)| {
            v.ok_or_else(|| value_err(path, first_row + row, name, "empty value".into()))
        })
        .collect()
}

fn float_column(path: &Path, df: &DataFrame, name: &str) -> Result<Float32Chunked, DataError> {
    let values = column(path, df, name)?
        .f32()
        .map_err(|e| polars_err(path, &format!("read column {name:?} as f32"), e))?;
    Ok(values.clone())
}

fn optional_floats(path: &Path, df: &DataFrame, name: &str) -> Result<Vec<Option<f32>>, DataError> {
    Ok(float_column(path, df, name)?.iter().collect())
}

fn floats(path: &Path, df: &DataFrame, name: &str) -> Result<Vec<f32>, DataError> {
    float_column(path, df, name)?
        .iter()
        .enumerate()
        .map(|(row, v)| v.ok_or_else(|| value_err(path, row, name, "empty value".into())))
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::artifacts::SeriesTail;
    use crate::interactions::FeatureSet;
    use crate::windows::WindowSpec;

    fn lists(rng: &mut rand_chacha::ChaCha8Rng, n: usize, of: u32) -> Vec<Vec<u32>> {
        (0..n)
            .map(|_| {
                let len = rng.random_range(0..5);
                (0..len).map(|_| rng.random_range(0..of)).collect()
            })
            .collect()
    }

    fn random_artifacts(seed: u64) -> RecommenderArtifacts {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (n_c, n_p) = (37, 11);
        let features = |rng: &mut rand_chacha::ChaCha8Rng, n| FeatureSet {
            tokens: (0..6).map(|t| format!("attr=v{t}")).collect(),
            entity_tokens: lists(rng, n, 6),
            bands: Vec::new(),
            primary_attribute: Some("attr".into()),
        };
        RecommenderArtifacts {
            customer_column: "customer_id".into(),
            product_column: "sku".into(),
            customer_attributes: None,
            product_attributes: None,
            customers: (0..n_c)
                .map(|c| format!("C{c:03}"))
                .collect::<Vec<_>>()
                .into(),
            pseudonyms: None,
            products: (0..n_p)
                .map(|p| format!("{}", 100 + p))
                .collect::<Vec<_>>()
                .into(),
            customer_features: features(&mut rng, n_c),
            product_features: features(&mut rng, n_p),
            product_names: (0..n_p).map(|p| format!("Product «{p}»")).collect(),
            purchased: lists(&mut rng, n_c, n_p as u32),
            browsed: lists(&mut rng, n_c, n_p as u32),
            popularity: (0..n_p).map(|_| rng.random_range(0..50)).collect(),
            recent: lists(&mut rng, n_c, n_p as u32),
            recent_items: 5,
            recency_weight: 0.25,
            segments: (0..n_c).map(|_| rng.random_range(0..4)).collect(),
            segment_centroids: vec![vec![0.5; 3]; 4],
            segment_profiles: Vec::new(),
        }
    }

    #[test]
    fn the_header_and_the_tables_give_back_every_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = random_artifacts(3);
        a.write_tables(dir.path()).expect("write");
        let header = serde_json::to_vec(&a).expect("header");
        let mut b: RecommenderArtifacts = serde_json::from_slice(&header).expect("read header");
        assert!(
            b.customers.is_empty() && b.purchased.is_empty(),
            "the header holds no lists"
        );
        b.read_tables(dir.path()).expect("read");
        assert_eq!(b.customers, a.customers);
        assert_eq!(b.products, a.products);
        assert_eq!(b.product_names, a.product_names);
        assert_eq!(b.popularity, a.popularity);
        assert_eq!(b.segments, a.segments);
        assert_eq!(b.purchased, a.purchased);
        assert_eq!(b.browsed, a.browsed);
        assert_eq!(b.recent, a.recent);
        assert_eq!(
            b.customer_features.entity_tokens,
            a.customer_features.entity_tokens
        );
        assert_eq!(
            b.product_features.entity_tokens,
            a.product_features.entity_tokens
        );
        assert_eq!(b.product_features.tokens, a.product_features.tokens);
        assert_eq!((b.recent_items, b.recency_weight), (5, 0.25));
    }

    #[test]
    fn histories_read_in_slices_are_the_histories_read_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = random_artifacts(6);
        a.write_tables(dir.path()).expect("write");
        let path = dir.path().join(HISTORIES);
        let read = |rows_per_slice| {
            LongLists {
                path: &path,
                entity: ("customer", a.customers.len()),
                element: ("product", Some(a.products.len())),
                list_names: Some(("list", LISTS)),
                rows_per_slice,
            }
            .read()
            .expect("read")
        };
        let whole = read(1 << 20);
        assert_eq!(
            whole,
            [a.purchased.clone(), a.browsed.clone(), a.recent.clone()]
        );
        for rows_per_slice in [1, 3, 7] {
            assert_eq!(
                read(rows_per_slice),
                whole,
                "slices of {rows_per_slice} rows"
            );
        }
        // A bad index in a later slice is reported at its row of the file.
        let mut b = random_artifacts(6);
        b.recent[36] = vec![99];
        b.write_tables(dir.path()).expect("write");
        let rows: usize = [&b.purchased, &b.browsed, &b.recent]
            .iter()
            .map(|l| l.iter().map(Vec::len).sum::<usize>())
            .sum();
        let msg = LongLists {
            path: &path,
            entity: ("customer", b.customers.len()),
            element: ("product", Some(b.products.len())),
            list_names: Some(("list", LISTS)),
            rows_per_slice: 4,
        }
        .read()
        .expect_err("product 99 of 11")
        .to_string();
        assert!(msg.contains(&format!("row {rows}")), "{msg}");
    }

    #[test]
    fn a_table_that_does_not_fit_the_vocabulary_is_refused_with_file_row_and_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut a = random_artifacts(4);
        a.purchased[0] = vec![0, 99];
        a.write_tables(dir.path()).expect("write");
        let e = a.read_tables(dir.path()).expect_err("product 99 of 11");
        let msg = e.to_string();
        assert!(msg.contains(HISTORIES), "{msg}");
        assert!(
            msg.contains("row 2") && msg.contains("\"product\""),
            "{msg}"
        );
        assert!(msg.contains("index 99 is outside 0..11"), "{msg}");

        std::fs::write(dir.path().join(PRODUCTS), b"not parquet").expect("overwrite");
        let msg = a.read_tables(dir.path()).expect_err("garbage").to_string();
        assert!(
            msg.contains(PRODUCTS) && msg.contains("read the bundle table"),
            "{msg}"
        );
    }

    #[test]
    fn the_forecaster_periods_give_back_every_series() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let tail = |rng: &mut rand_chacha::ChaCha8Rng, s: u32| {
            let periods = 9;
            let values = |rng: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
                (0..periods).map(|_| rng.random_range(-2.0..40.0)).collect()
            };
            SeriesTail {
                keys: vec![s, s % 2],
                statics: vec![s % 3],
                first_day: 19_000 + s as i64,
                target: (0..periods)
                    .map(|_| rng.random_bool(0.8).then(|| rng.random_range(0.0..30.0)))
                    .collect(),
                known: vec![values(rng), values(rng)],
                past: vec![values(rng)],
                ets: None,
            }
        };
        let mut a = ForecasterArtifacts {
            spec: WindowSpec {
                context: 7,
                horizon: 2,
                season: 7,
                period_days: 1,
                known: Vec::new(),
                past: Vec::new(),
            },
            key_names: vec!["store".into(), "sku".into()],
            key_vocabs: Vec::new(),
            static_names: Vec::new(),
            static_vocabs: Vec::new(),
            date_column: "date".into(),
            quantiles: vec![0.1, 0.5, 0.9],
            price_covariate: Some(0),
            network_weights: Vec::new(),
            series: (0..6).map(|s| tail(&mut rng, s)).collect(),
        };
        a.write_tables(dir.path()).expect("write");
        let header = serde_json::to_vec(&a).expect("header");
        let mut b: ForecasterArtifacts = serde_json::from_slice(&header).expect("read header");
        assert!(
            b.series.iter().all(|t| t.target.is_empty()),
            "no periods in the header"
        );
        b.read_tables(dir.path()).expect("read");
        for (got, want) in b.series.iter().zip(&a.series) {
            assert_eq!(got.keys, want.keys);
            assert_eq!(got.first_day, want.first_day);
            assert_eq!(got.target, want.target);
            assert_eq!(got.known, want.known);
            assert_eq!(got.past, want.past);
        }

        a.series[3].known[1].pop();
        let msg = a.write_tables(dir.path()).expect_err("short").to_string();
        assert!(
            msg.contains("series 3") && msg.contains("9 periods"),
            "{msg}"
        );
    }
}

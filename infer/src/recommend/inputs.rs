//! The input files of `recommend` and `audience`: customer lists read piece by piece,
//! excluded products and opt-outs, each with its id column found or a clear error.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::Result;
use shopcast_datasets::artifacts::RecommenderArtifacts;
use shopcast_datasets::config::FileSpec;
use shopcast_datasets::privacy::Pseudonymiser;
use shopcast_datasets::table::Table;
use shopcast_datasets::table_chunks::TableChunks;
use shopcast_datasets::DataError;

use super::catalogue::Catalogue;
use super::load::LoadedRecommender;
use super::targets::{known_target, Target};
use crate::output::JobManifest;

/// Column of a customer list holding recently chosen products.
pub const RECENT_ITEMS_COLUMN: &str = "recent_items";
/// Separator of the product ids in `recent_items`.
pub const RECENT_ITEMS_SEPARATOR: char = '|';

/// Turns the pieces of a `--customers` file into customers to score, remembering across pieces
/// which customers were already seen (a bit per known customer, a 64-bit fingerprint per new
/// one) and what was counted.
pub(crate) struct CustomerListReader<'a> {
    artifacts: &'a RecommenderArtifacts,
    pseudonymiser: Option<&'a Pseudonymiser>,
    id_column: String,
    product_index: HashMap<&'a str, u32>,
    seen_known: Vec<bool>,
    seen_new: HashSet<u64>,
    duplicates: usize,
    pub(crate) cold: usize,
    unknown_items: usize,
}

impl<'a> CustomerListReader<'a> {
    pub(crate) fn new(
        artifacts: &'a RecommenderArtifacts,
        pseudonymiser: Option<&'a Pseudonymiser>,
        catalogue: &'a Catalogue,
        id_column: String,
    ) -> Self {
        CustomerListReader {
            artifacts,
            pseudonymiser,
            id_column,
            product_index: catalogue.index(),
            seen_known: vec![false; artifacts.customers.len()],
            seen_new: HashSet::new(),
            duplicates: 0,
            cold: 0,
            unknown_items: 0,
        }
    }

    /// The customers of one piece of the file, duplicates of earlier rows skipped.
    pub(crate) fn targets(&mut self, table: &Table) -> Result<Vec<Target>, DataError> {
        let a = self.artifacts;
        let ids = table.ids(&self.id_column)?;
        let attributes: Vec<Vec<u32>> = match &a.customer_attributes {
            Some(t) => a.customer_features.encode_rows(table, t)?,
            None => vec![Vec::new(); ids.len()],
        };
        let recent: Vec<Option<String>> = if table.has_column(RECENT_ITEMS_COLUMN) {
            table.strings(RECENT_ITEMS_COLUMN)?
        } else {
            vec![None; ids.len()]
        };
        let mut targets = Vec::with_capacity(ids.len());
        for ((id, attrs), recent) in ids.into_iter().zip(attributes).zip(recent) {
            let known = match self.pseudonymiser {
                Some(p) => a.customers.get(&p.apply(&id)),
                None => a.customers.get(&id),
            };
            let first_time = match known {
                Some(c) => !std::mem::replace(&mut self.seen_known[c as usize], true),
                None => self.seen_new.insert(fingerprint(&id)),
            };
            if !first_time {
                self.duplicates += 1;
                continue;
            }
            let mut items: Vec<u32> = Vec::new();
            for item in recent
                .as_deref()
                .unwrap_or("")
                .split(RECENT_ITEMS_SEPARATOR)
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                match self.product_index.get(item) {
                    Some(&p) => items.push(p),
                    None => self.unknown_items += 1,
                }
            }
            let mut target = match known {
                Some(c) => {
                    let mut t = known_target(a, c);
                    // The input's id (the bundle may only know its pseudonym).
                    t.id = id;
                    t.recent.extend(items.iter().copied());
                    t.bought.extend(items);
                    t
                }
                None => {
                    self.cold += 1;
                    Target {
                        id,
                        known: None,
                        recent: items.clone(),
                        bought: items,
                        viewed: Vec::new(),
                        attributes: attrs,
                    }
                }
            };
            target.bought.sort_unstable();
            target.bought.dedup();
            targets.push(target);
        }
        Ok(targets)
    }

    pub(crate) fn report(&self, manifest: &mut JobManifest) {
        if self.duplicates > 0 {
            manifest
                .rows_skipped
                .insert("duplicate customer id".into(), self.duplicates);
        }
        if self.unknown_items > 0 {
            manifest.counts.insert(
                "recent items not in the catalogue (ignored)".into(),
                self.unknown_items,
            );
        }
    }
}

/// A 64-bit fingerprint of an id (SipHash with fixed keys): new customers' ids are
/// remembered by it, so duplicate detection does not hold every id's text.
pub(crate) fn fingerprint(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // `DefaultHasher::new()` has fixed keys: the same id gives the same value within a run.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

pub(crate) fn file_spec(path: &Path) -> FileSpec {
    FileSpec {
        path: path.to_path_buf(),
        separator: None,
        has_header: true,
        column_names: Vec::new(),
    }
}

/// Opens `path` by the business's id column, or by `fallback` when it lacks that one (the
/// first error is the one reported).
pub(crate) fn with_id_fallback<T>(
    column: &str,
    fallback: &str,
    open: impl Fn(&str) -> Result<T, DataError>,
) -> Result<(T, String), DataError> {
    match open(column) {
        Ok(t) => Ok((t, column.to_string())),
        Err(first @ DataError::MissingColumn { .. }) if column != fallback => {
            match open(fallback) {
                Ok(t) => Ok((t, fallback.to_string())),
                Err(_) => Err(first),
            }
        }
        Err(e) => Err(e),
    }
}

/// Opens a file keyed by the business's id column (or `fallback`), to be read in pieces of
/// `rows_per_piece` rows.
pub(crate) fn open_with_id(
    path: &Path,
    column: &str,
    fallback: &str,
    optional: &[String],
    rows_per_piece: usize,
) -> Result<(TableChunks, String), DataError> {
    let spec = file_spec(path);
    with_id_fallback(column, fallback, |c| {
        TableChunks::open(path, &spec, &[c.to_string()], optional, rows_per_piece)
    })
}

/// Reads a file keyed by the business's id column (or `fallback`).
pub(crate) fn read_with_id(
    path: &Path,
    column: &str,
    fallback: &str,
    optional: &[String],
) -> Result<(Table, String), DataError> {
    let spec = file_spec(path);
    with_id_fallback(column, fallback, |c| {
        Table::read_with_optional(path, &spec, &[c.to_string()], optional)
    })
}

/// Reads a file of product ids (the business's product column, or `product_id`).
pub(crate) fn read_product_ids(path: &Path, column: &str) -> Result<(Table, String), DataError> {
    read_with_id(path, column, "product_id", &[])
}

/// The catalogue indices of the products listed in an exclusion file (by the product id column
/// of the business's files, or `product_id`); ids not in the catalogue are counted.
pub(crate) fn read_excluded(
    path: &Path,
    a: &RecommenderArtifacts,
    catalogue: &Catalogue,
    manifest: &mut JobManifest,
) -> Result<Vec<u32>, DataError> {
    let (table, column) = read_product_ids(path, &a.product_column)?;
    let index = catalogue.index();
    let mut blocked = Vec::new();
    let mut unknown = 0usize;
    for id in table.ids(&column)? {
        match index.get(id.as_str()) {
            Some(&p) => blocked.push(p),
            None => unknown += 1,
        }
    }
    blocked.sort_unstable();
    blocked.dedup();
    manifest
        .counts
        .insert("excluded_products".into(), blocked.len());
    if unknown > 0 {
        manifest
            .counts
            .insert("excluded_ids_not_in_catalogue".into(), unknown);
    }
    Ok(blocked)
}

/// Reads an opt-out list (the business's customer id column, or `customer_id`): customers who
/// get no personalised output.
/// With a pseudonymised bundle, each id's pseudonym is listed too (customers taken from the
/// bundle are known by their pseudonyms only).
pub(crate) fn read_opt_outs(
    path: &Path,
    loaded: &LoadedRecommender,
    manifest: &mut JobManifest,
) -> Result<HashSet<String>, DataError> {
    let a = &loaded.artifacts;
    let (table, column) = read_with_id(path, &a.customer_column, "customer_id", &[])?;
    let ids = table.ids(&column)?;
    manifest.counts.insert("opt_out_ids".into(), ids.len());
    let mut out: HashSet<String> = HashSet::with_capacity(ids.len() * 2);
    for id in ids {
        if let Some(p) = &loaded.pseudonymiser {
            out.insert(p.apply(&id));
        }
        out.insert(id);
    }
    Ok(out)
}

/// Drops opted-out customers from `targets`, counting them in the manifest.
pub(crate) fn drop_opted_out(
    targets: &mut Vec<Target>,
    opted_out: &HashSet<String>,
    manifest: &mut JobManifest,
) {
    if opted_out.is_empty() {
        return;
    }
    let before = targets.len();
    targets.retain(|t| !opted_out.contains(&t.id));
    if before > targets.len() {
        *manifest
            .rows_skipped
            .entry("opted out of personalisation".into())
            .or_default() += before - targets.len();
    }
}

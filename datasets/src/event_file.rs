//! Reading the recommender's events file into compact columns: ids as codes, timestamps,
//! weights, target flags and values. The file is read a piece at a time ([`TableChunks`]), so
//! its text columns are held only for one piece: at 14 M events the whole-file table was most of
//! `train`'s peak memory.

use std::collections::HashMap;

use crate::config::{InteractionData, LoadedConfig};
use crate::error::DataError;
use crate::interactions::LoadReport;
use crate::table::{InternedIds, Table};
use crate::table_chunks::TableChunks;

/// Rows of the events file read per piece.
const EVENT_ROWS_PER_PIECE: usize = 1 << 20;

/// The events kept, ids as codes into `customer.distinct` / `product.distinct`.
pub(crate) struct RawEvents {
    pub customer: InternedIds,
    pub product: InternedIds,
    pub ts: Vec<i64>,
    pub weight: Vec<f32>,
    pub is_target: Vec<bool>,
    pub value: Option<Vec<f64>>,
    pub report: LoadReport,
}

/// One piece's events, ids as codes into the piece's own distinct ids.
struct PieceEvents {
    customer: InternedIds,
    product: InternedIds,
    ts: Vec<i64>,
    weight: Vec<f32>,
    is_target: Vec<bool>,
    value: Option<Vec<f64>>,
}

/// Ids interned across pieces: each piece's codes are renumbered into one list of distinct ids,
/// in the order the ids first appear in the file.
#[derive(Default)]
struct IdInterner {
    ids: InternedIds,
    index: HashMap<String, u32>,
}

impl IdInterner {
    fn append(&mut self, piece: InternedIds) {
        let global: Vec<u32> = piece
            .distinct
            .into_iter()
            .map(|id| {
                let next = self.ids.distinct.len() as u32;
                *self.index.entry(id).or_insert_with_key(|id| {
                    self.ids.distinct.push(id.clone());
                    next
                })
            })
            .collect();
        self.ids
            .codes
            .extend(piece.codes.iter().map(|&c| global[c as usize]));
    }
}

/// The columns the events file is read for (each once).
fn event_columns(d: &InteractionData) -> Vec<String> {
    let mut columns = vec![
        d.customer_id.clone(),
        d.product_id.clone(),
        d.timestamp.clone(),
    ];
    columns.extend(d.event_type.iter().cloned());
    columns.extend(d.quantity.iter().cloned());
    columns.extend(d.value.iter().cloned());
    columns.extend(d.unit_price.iter().cloned());
    columns.extend(d.rating.iter().cloned());
    columns.extend(d.filters.iter().map(|f| f.column.clone()));
    let mut seen = std::collections::HashSet::new();
    columns.retain(|c| seen.insert(c.clone()));
    columns
}

/// Reads the events file named in the config, piece by piece.
pub(crate) fn load_events(cfg: &LoadedConfig, d: &InteractionData) -> Result<RawEvents, DataError> {
    let path = cfg.resolve(&d.events.path);
    let columns = event_columns(d);
    let pieces = TableChunks::open(&path, &d.events, &columns, &[], EVENT_ROWS_PER_PIECE)?;
    let (mut customer, mut product) = (IdInterner::default(), IdInterner::default());
    let (mut ts, mut weight, mut is_target) = (Vec::new(), Vec::new(), Vec::new());
    let mut value = (d.value.is_some() || d.unit_price.is_some()).then(Vec::new);
    let mut report = LoadReport::default();
    for table in pieces {
        let piece = read_piece(table?, d, &columns, &mut report)?;
        customer.append(piece.customer);
        product.append(piece.product);
        ts.extend(piece.ts);
        weight.extend(piece.weight);
        is_target.extend(piece.is_target);
        if let (Some(all), Some(v)) = (&mut value, piece.value) {
            all.extend(v);
        }
    }
    report.rows_used = ts.len();
    check_rows_left(&path, d, &report)?;
    Ok(RawEvents {
        customer: customer.ids,
        product: product.ids,
        ts,
        weight,
        is_target,
        value,
        report,
    })
}

/// The errors for a file from which nothing is left to train on.
fn check_rows_left(
    path: &std::path::Path,
    d: &InteractionData,
    report: &LoadReport,
) -> Result<(), DataError> {
    let filtered: usize = report.filters.iter().map(|f| f.dropped).sum();
    if report.rows_read == filtered {
        return Err(DataError::file(
            path,
            "no rows are left after the configured filters",
        ));
    }
    if report.rows_used > 0 {
        return Ok(());
    }
    if report.below_rating_threshold > 0 {
        return Err(DataError::file(
            path,
            format!(
                "every row's rating is below `rating_threshold` ({})",
                d.rating_threshold.unwrap_or_default()
            ),
        ));
    }
    Err(DataError::file(
        path,
        format!(
            "no row has an event type listed in `event_weights` ({})",
            d.event_weights
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// One piece of the file: filtered, each column read into an array and dropped from the table
/// after its last read, rows of unknown event types and low ratings left out. Its counts are
/// added to `report`.
fn read_piece(
    mut table: Table,
    d: &InteractionData,
    columns: &[String],
    report: &mut LoadReport,
) -> Result<PieceEvents, DataError> {
    report.rows_read += table.len();
    let filters = table.apply_filters(&d.filters)?;
    if report.filters.is_empty() {
        report.filters = filters;
    } else {
        for (total, piece) in report.filters.iter_mut().zip(filters) {
            total.dropped += piece.dropped;
        }
    }
    let mut pending = PendingReads::of(d);
    pending.release_unread(&mut table, columns);
    let mut customer = table.id_codes(&d.customer_id)?;
    pending.done(&mut table, &d.customer_id);
    let mut product = table.id_codes(&d.product_id)?;
    pending.done(&mut table, &d.product_id);
    let ts = table.timestamps(&d.timestamp, d.timestamp_format.as_deref())?;
    pending.done(&mut table, &d.timestamp);
    let n = table.len();
    let (mut weight, mut is_target) = (vec![1.0f32; n], vec![true; n]);
    let mut keep = vec![true; n];
    if let Some(col) = &d.event_type {
        let types = table.text(col)?;
        for (i, t) in types.iter().enumerate() {
            let t = t.map(str::trim).unwrap_or("");
            match d.event_weights.get(t) {
                Some(w) => {
                    weight[i] = *w as f32;
                    is_target[i] = d.target_event.as_deref().is_none_or(|target| target == t);
                }
                None => {
                    keep[i] = false;
                    *report.unknown_event_types.entry(t.to_string()).or_default() += 1;
                }
            }
        }
        drop(types);
        pending.done(&mut table, col);
    }
    if let Some(col) = &d.rating {
        let ratings = table.finite_numbers(col)?;
        pending.done(&mut table, col);
        let threshold = d.rating_threshold.unwrap_or(f64::NEG_INFINITY);
        for (i, r) in ratings.iter().enumerate() {
            if keep[i] && *r < threshold {
                keep[i] = false;
                report.below_rating_threshold += 1;
            }
        }
    }
    let value = event_values(&mut table, d, &mut pending)?;
    drop(table);
    customer.codes = keep_rows(customer.codes, &keep);
    product.codes = keep_rows(product.codes, &keep);
    Ok(PieceEvents {
        customer,
        product,
        ts: keep_rows(ts, &keep),
        weight: keep_rows(weight, &keep),
        is_target: keep_rows(is_target, &keep),
        value: value.map(|v| keep_rows(v, &keep)),
    })
}

/// The values whose `keep` flag is set (in place: no second copy of a column).
fn keep_rows<T>(mut values: Vec<T>, keep: &[bool]) -> Vec<T> {
    let mut flags = keep.iter();
    values.retain(|_| flags.next().copied().unwrap_or(false));
    values.shrink_to_fit();
    values
}

/// The columns `read_piece` reads, in the order it reads them (a column read for two roles
/// appears twice), so that each can be dropped from the table after its last read.
struct PendingReads(Vec<String>);

impl PendingReads {
    fn of(d: &InteractionData) -> Self {
        let mut reads = vec![
            d.customer_id.clone(),
            d.product_id.clone(),
            d.timestamp.clone(),
        ];
        reads.extend(d.event_type.iter().cloned());
        reads.extend(d.rating.iter().cloned());
        match (&d.value, &d.unit_price) {
            (Some(v), _) => reads.push(v.clone()),
            (None, Some(p)) => {
                reads.push(p.clone());
                reads.extend(d.quantity.iter().cloned());
            }
            (None, None) => {}
        }
        PendingReads(reads)
    }

    /// Drops every column of `table` no read needs (filter columns, once filtered).
    fn release_unread(&self, table: &mut Table, columns: &[String]) {
        for c in columns.iter().filter(|c| !self.0.contains(c)) {
            table.release(c);
        }
    }

    /// One read of `name` done: the column goes once no later read needs it.
    fn done(&mut self, table: &mut Table, name: &str) {
        if let Some(i) = self.0.iter().position(|c| c == name) {
            self.0.remove(i);
        }
        if !self.0.iter().any(|c| c == name) {
            table.release(name);
        }
    }
}

/// Each event's value: the value column, or unit price times quantity (1 without one).
fn event_values(
    table: &mut Table,
    d: &InteractionData,
    pending: &mut PendingReads,
) -> Result<Option<Vec<f64>>, DataError> {
    Ok(match (&d.value, &d.unit_price) {
        (Some(col), _) => Some(table.finite_numbers(col)?),
        (None, Some(col)) => {
            let mut value = table.finite_numbers(col)?;
            pending.done(table, col);
            if let Some(q) = &d.quantity {
                for (v, q) in value.iter_mut().zip(table.finite_numbers(q)?) {
                    *v *= q;
                }
            }
            Some(value)
        }
        (None, None) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interned(ids: &[&str]) -> InternedIds {
        let mut distinct: Vec<String> = Vec::new();
        let codes = ids
            .iter()
            .map(|id| match distinct.iter().position(|d| d == id) {
                Some(i) => i as u32,
                None => {
                    distinct.push(id.to_string());
                    (distinct.len() - 1) as u32
                }
            })
            .collect();
        InternedIds { codes, distinct }
    }

    #[test]
    fn pieces_interned_apart_give_the_codes_of_the_whole_column() {
        let column = ["b", "a", "b", "c", "a", "d", "c", "b", "e"];
        let whole = interned(&column);
        let mut interner = IdInterner::default();
        for piece in column.chunks(4) {
            interner.append(interned(piece));
        }
        assert_eq!(interner.ids.distinct, whole.distinct);
        assert_eq!(interner.ids.codes, whole.codes);
    }
}

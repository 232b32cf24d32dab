//! The recommender's data: interactions loaded from the business's event file, customer and
//! product attributes turned into feature tokens, and the leave-one-out split.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::config::{AttributeTable, LoadedConfig, RecommenderSection};
use crate::error::DataError;
use crate::event_file::{load_events, RawEvents};
use crate::table::{FilterReport, InternedIds, Table};
use crate::vocab::IdVocab;

/// Most tokens kept per entity; words beyond this are dropped (rarest first).
pub const MAX_TOKENS_PER_ENTITY: usize = 24;

/// Attribute tokens ("category=shoes", "word:candle", "price_band=2") per entity.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FeatureSet {
    /// Token names; a token's position is its id.
    pub tokens: Vec<String>,
    /// For each entity (by vocabulary index), its token ids. Not in the bundle's JSON header:
    /// the bundle keeps them in a Parquet table (`artifact_tables`).
    #[serde(skip)]
    pub entity_tokens: Vec<Vec<u32>>,
    /// Cut points of the numeric bands, for turning a new entity's value into a token.
    pub bands: Vec<BandCuts>,
    /// Name of the first categorical attribute (e.g. `category`), used in explanations.
    pub primary_attribute: Option<String>,
}

/// Quantile cut points of one numeric column.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BandCuts {
    pub column: String,
    pub cuts: Vec<f64>,
}

impl FeatureSet {
    /// The value of the primary attribute of an entity, if it has one.
    pub fn primary_value(&self, entity: usize) -> Option<&str> {
        self.primary_value_in(self.entity_tokens.get(entity)?)
    }

    /// The value of the primary attribute among some token ids (a new entity's).
    pub fn primary_value_in(&self, tokens: &[u32]) -> Option<&str> {
        let attr = self.primary_attribute.as_deref()?;
        tokens.iter().find_map(|&t| {
            let tok = self.tokens.get(t as usize)?;
            tok.strip_prefix(attr).and_then(|r| r.strip_prefix('='))
        })
    }

    /// Token ids padded to the longest entity, as (ids + 1 with 0 for padding, width).
    pub fn padded(&self) -> (Vec<i64>, usize) {
        pad_tokens(&self.entity_tokens)
    }
}

/// Token id lists padded to the longest, as (ids + 1 with 0 for padding, width).
pub fn pad_tokens(lists: &[Vec<u32>]) -> (Vec<i64>, usize) {
    let width = lists.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut out = vec![0i64; lists.len() * width];
    for (e, toks) in lists.iter().enumerate() {
        for (j, &t) in toks.iter().enumerate() {
            out[e * width + j] = t as i64 + 1;
        }
    }
    (out, width)
}

/// One deduplicated customer-product interaction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    pub customer: u32,
    pub product: u32,
    /// Latest timestamp (seconds).
    pub ts: i64,
    /// Largest event weight seen for the pair.
    pub weight: f32,
    /// Whether the pair includes the target event (e.g. a purchase).
    pub is_target: bool,
}

/// Leave-one-out split: per evaluated customer, the latest target item is the test item and the
/// one before it the validation item.
#[derive(Debug, Clone, Default)]
pub struct Split {
    /// (customer, product, weight) used for training.
    pub train: Vec<(u32, u32, f32)>,
    pub validation: Vec<(u32, u32)>,
    pub test: Vec<(u32, u32)>,
}

/// Counts of what loading did, for the run log and the model card.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadReport {
    pub rows_read: usize,
    pub filters: Vec<FilterReport>,
    pub unknown_event_types: BTreeMap<String, usize>,
    /// Rows dropped because their rating was below `rating_threshold`.
    pub below_rating_threshold: usize,
    pub rows_used: usize,
    /// Rows repeating an earlier row exactly (same customer, product, time and event), collapsed.
    #[serde(default)]
    pub duplicate_rows: usize,
    pub pairs: usize,
}

/// Everything the recommender trains and scores from.
#[derive(Debug, Clone)]
pub struct RecommenderData {
    pub customers: IdVocab,
    pub products: IdVocab,
    pub customer_features: FeatureSet,
    pub product_features: FeatureSet,
    /// Display name per product (the id when no name column is configured).
    pub product_names: Vec<String>,
    pub pairs: Vec<Pair>,
    /// Total value of each customer's target events (purchases), when a value or unit price
    /// column is configured.
    pub spend: Option<Vec<f64>>,
    pub report: LoadReport,
    /// Range of the interaction timestamps (seconds).
    pub first_ts: i64,
    pub last_ts: i64,
}

/// Loads the interactions and attributes named in the config.
pub fn load_recommender_data(
    cfg: &LoadedConfig,
    rec: &RecommenderSection,
) -> Result<RecommenderData, DataError> {
    let events = load_events(cfg, &rec.data)?;
    let customer_attrs = rec
        .data
        .customers
        .as_ref()
        .map(|t| load_attributes(cfg, t))
        .transpose()?;
    let product_attrs = rec
        .data
        .products
        .as_ref()
        .map(|t| load_attributes(cfg, t))
        .transpose()?;

    let customers = IdVocab::build(
        events.customer.distinct.iter().map(String::as_str).chain(
            customer_attrs
                .iter()
                .flat_map(|a| a.ids.iter().map(String::as_str)),
        ),
    );
    let products = IdVocab::build(
        events.product.distinct.iter().map(String::as_str).chain(
            product_attrs
                .iter()
                .flat_map(|a| a.ids.iter().map(String::as_str)),
        ),
    );
    let min_words = rec.model.min_word_count;
    let customer_features = match &customer_attrs {
        Some(a) => a.features(&customers, min_words),
        None => FeatureSet {
            entity_tokens: vec![Vec::new(); customers.len()],
            ..Default::default()
        },
    };
    let product_features = match &product_attrs {
        Some(a) => a.features(&products, min_words),
        None => FeatureSet {
            entity_tokens: vec![Vec::new(); products.len()],
            ..Default::default()
        },
    };
    let mut product_names: Vec<String> = products.ids().to_vec();
    if let Some(a) = &product_attrs {
        for (id, name) in a.ids.iter().zip(&a.names) {
            if let (Some(idx), Some(name)) = (products.get(id), name) {
                product_names[idx as usize] = name.clone();
            }
        }
    }

    let mut events = events;
    let customer_of = vocab_indices(std::mem::take(&mut events.customer), &customers);
    let product_of = vocab_indices(std::mem::take(&mut events.product), &products);
    let (pairs, duplicate_rows) = collapse_pairs(&events, &customer_of, &product_of);
    let spend = events.value.as_ref().map(|value| {
        let mut spend = vec![0.0; customers.len()];
        for (i, v) in value.iter().enumerate() {
            let c = customer_of[i];
            if events.is_target[i] && c != NOT_IN_VOCAB {
                spend[c as usize] += v;
            }
        }
        spend
    });
    let pairs = sorted_pairs(pairs, &products);
    let mut report = events.report;
    report.pairs = pairs.len();
    report.duplicate_rows = duplicate_rows;
    let first_ts = events.ts.iter().copied().min().unwrap_or(0);
    let last_ts = events.ts.iter().copied().max().unwrap_or(0);
    Ok(RecommenderData {
        customers,
        products,
        customer_features,
        product_features,
        product_names,
        pairs,
        spend,
        report,
        first_ts,
        last_ts,
    })
}

/// Marks an event whose id is not in the vocabulary (none is: the vocabularies are built from the
/// events' ids).
const NOT_IN_VOCAB: u32 = u32::MAX;

/// Each event's index in `vocab` ([`NOT_IN_VOCAB`] for an id not in it), written over the
/// events' codes: 4 bytes an event.
fn vocab_indices(ids: InternedIds, vocab: &IdVocab) -> Vec<u32> {
    let of_code: Vec<u32> = ids
        .distinct
        .iter()
        .map(|id| vocab.get(id).unwrap_or(NOT_IN_VOCAB))
        .collect();
    drop(ids.distinct);
    let mut codes = ids.codes;
    for c in &mut codes {
        *c = of_code[*c as usize];
    }
    codes
}

/// One pair per customer and product: the latest timestamp, the largest weight, a target if any
/// of its events was. Also counts the rows that repeat an earlier row exactly (an export run
/// twice). Sorting the events' keys costs 24 bytes an event, a fraction of hashing them.
fn collapse_pairs(
    events: &RawEvents,
    customer_of: &[u32],
    product_of: &[u32],
) -> (Vec<Pair>, usize) {
    let mut rows: Vec<(u32, u32, i64, u32, bool)> = (0..events.ts.len())
        .filter_map(|i| {
            let (c, p) = (customer_of[i], product_of[i]);
            if c == NOT_IN_VOCAB || p == NOT_IN_VOCAB {
                return None;
            }
            let w = events.weight[i].to_bits();
            Some((c, p, events.ts[i], w, events.is_target[i]))
        })
        .collect();
    rows.sort_unstable();
    let duplicate_rows = rows.windows(2).filter(|w| w[0] == w[1]).count();
    let pairs = rows
        .chunk_by(|a, b| (a.0, a.1) == (b.0, b.1))
        .map(|events| Pair {
            customer: events[0].0,
            product: events[0].1,
            ts: events.iter().map(|e| e.2).max().unwrap_or(events[0].2),
            weight: events
                .iter()
                .map(|e| f32::from_bits(e.3))
                .fold(f32::NEG_INFINITY, f32::max),
            is_target: events.iter().any(|e| e.4),
        })
        .collect();
    (pairs, duplicate_rows)
}

/// Pairs by customer, then time. Interactions at one timestamp (one basket) have no order of
/// their own; the leave-one-out split breaks the tie by the products' natural id order, as the
/// field's tools do.
fn sorted_pairs(mut pairs: Vec<Pair>, products: &IdVocab) -> Vec<Pair> {
    let natural_rank = products.natural_ranks();
    pairs.sort_by_key(|p| (p.customer, p.ts, natural_rank[p.product as usize]));
    pairs
}

impl RecommenderData {
    /// The leave-one-out split over target interactions (ties on the timestamp broken by the
    /// products' natural id order, numeric ids as numbers: the last kept as test). Customers with fewer than `min_items` distinct target products
    /// are used for training only. A customer's non-target interactions (views, carts) are used
    /// for training only when they happened before that customer's validation item.
    pub fn leave_one_out(&self, min_items: usize) -> Result<Split, DataError> {
        let mut split = Split::default();
        let mut start = 0;
        while start < self.pairs.len() {
            let c = self.pairs[start].customer;
            let mut end = start;
            while end < self.pairs.len() && self.pairs[end].customer == c {
                end += 1;
            }
            let pairs = &self.pairs[start..end]; // sorted by (ts, natural product order)
            let targets: Vec<&Pair> = pairs.iter().filter(|p| p.is_target).collect();
            if targets.len() >= min_items.max(3) {
                let test = targets[targets.len() - 1];
                let val = targets[targets.len() - 2];
                split.test.push((c, test.product));
                split.validation.push((c, val.product));
                for p in pairs {
                    if p.product == test.product || p.product == val.product {
                        continue;
                    }
                    if p.is_target || p.ts < val.ts {
                        split.train.push((c, p.product, p.weight));
                    }
                }
            } else {
                split
                    .train
                    .extend(pairs.iter().map(|p| (c, p.product, p.weight)));
            }
            start = end;
        }
        if split.test.is_empty() {
            return Err(DataError::TooLittleData(format!(
                "no customer has at least {} distinct products, so there is no held-out data to evaluate on; \
                 lower `recommender.evaluation.min_items_per_customer` or provide more history",
                min_items.max(3)
            )));
        }
        Ok(split)
    }

    /// Every product each customer interacted with (sorted), for masking at scoring time.
    pub fn histories(&self) -> Vec<Vec<u32>> {
        let mut h = vec![Vec::new(); self.customers.len()];
        for p in &self.pairs {
            h[p.customer as usize].push(p.product);
        }
        for v in &mut h {
            v.sort_unstable();
            v.dedup();
        }
        h
    }
}

struct Attributes {
    ids: Vec<String>,
    names: Vec<Option<String>>,
    /// Per row: tokens before vocabulary building.
    raw_tokens: Vec<Vec<String>>,
    /// Per row: which tokens are words (subject to the minimum count).
    word_flags: Vec<Vec<bool>>,
    bands: Vec<BandCuts>,
    primary: Option<String>,
}

fn load_attributes(cfg: &LoadedConfig, t: &AttributeTable) -> Result<Attributes, DataError> {
    let path = cfg.resolve(&t.file.path);
    let mut columns = vec![t.id.clone()];
    columns.extend(t.name.iter().cloned());
    columns.extend(t.categorical.iter().cloned());
    columns.extend(t.multi_valued.iter().map(|m| m.column.clone()));
    columns.extend(t.text.iter().cloned());
    columns.extend(t.numeric_bands.iter().map(|b| b.column.clone()));
    columns.extend(t.filters.iter().map(|f| f.column.clone()));
    columns.sort();
    columns.dedup();
    let mut table = Table::read(&path, &t.file, &columns)?;
    table.apply_filters(&t.filters)?;
    let ids = table.ids(&t.id)?;
    // The first row of each id wins (transaction files repeat ids).
    let mut first_row: HashMap<&str, usize> = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        first_row.entry(id.as_str()).or_insert(i);
    }
    let mut rows: Vec<usize> = first_row.into_values().collect();
    rows.sort_unstable();
    let names = match &t.name {
        Some(c) => {
            let v = table.strings(c)?;
            rows.iter()
                .map(|&r| v[r].as_deref().map(str::trim).map(str::to_string))
                .collect()
        }
        None => vec![None; rows.len()],
    };
    let tokens = row_tokens(&table, t, &rows, None)?;
    let ids = rows.iter().map(|&r| ids[r].clone()).collect();
    Ok(Attributes {
        ids,
        names,
        raw_tokens: tokens.raw,
        word_flags: tokens.word_flags,
        bands: tokens.bands,
        primary: t.categorical.first().cloned(),
    })
}

/// Attribute tokens of table rows before vocabulary building.
struct RowTokens {
    raw: Vec<Vec<String>>,
    /// Which tokens are words (subject to the minimum count).
    word_flags: Vec<Vec<bool>>,
    bands: Vec<BandCuts>,
}

/// Turns the configured attribute columns of `rows` into tokens. With `known_bands` (new entities
/// at scoring time) the training cut points are reused and columns the file lacks are skipped;
/// without, cut points are computed from the rows.
fn row_tokens(
    table: &Table,
    t: &AttributeTable,
    rows: &[usize],
    known_bands: Option<&[BandCuts]>,
) -> Result<RowTokens, DataError> {
    let n = rows.len();
    let mut raw = vec![Vec::<String>::new(); n];
    let mut word_flags = vec![Vec::<bool>::new(); n];
    let present = |c: &str| known_bands.is_none() || table.has_column(c);
    for c in t.categorical.iter().filter(|c| present(c)) {
        let v = table.strings(c)?;
        for (k, &r) in rows.iter().enumerate() {
            if let Some(s) = v[r].as_deref().map(str::trim).filter(|s| !s.is_empty()) {
                raw[k].push(format!("{c}={s}"));
                word_flags[k].push(false);
            }
        }
    }
    for m in t.multi_valued.iter().filter(|m| present(&m.column)) {
        let v = table.strings(&m.column)?;
        for (k, &r) in rows.iter().enumerate() {
            if let Some(s) = v[r].as_deref() {
                for part in s
                    .split(m.separator.as_str())
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                {
                    raw[k].push(format!("{}={part}", m.column));
                    word_flags[k].push(false);
                }
            }
        }
    }
    for c in t.text.iter().filter(|c| present(c)) {
        let v = table.strings(c)?;
        for (k, &r) in rows.iter().enumerate() {
            if let Some(s) = v[r].as_deref() {
                let lower = s.to_lowercase();
                for w in lower
                    .split(|ch: char| !ch.is_alphanumeric())
                    .filter(|w| w.len() >= 3)
                {
                    let tok = format!("{c}~{w}");
                    if !raw[k].contains(&tok) {
                        raw[k].push(tok);
                        word_flags[k].push(true);
                    }
                }
            }
        }
    }
    let mut bands = Vec::new();
    for b in t.numeric_bands.iter().filter(|b| present(&b.column)) {
        let v = table.numbers(&b.column)?;
        let cuts: Vec<f64> = match known_bands {
            Some(known) => match known.iter().find(|k| k.column == b.column) {
                Some(k) => k.cuts.clone(),
                None => continue,
            },
            None => {
                let mut vals: Vec<f64> = rows
                    .iter()
                    .filter_map(|&r| v[r])
                    .filter(|x| x.is_finite())
                    .collect();
                vals.sort_by(f64::total_cmp);
                (1..b.bands)
                    .filter_map(|q| vals.get(q * vals.len() / b.bands).copied())
                    .collect()
            }
        };
        for (k, &r) in rows.iter().enumerate() {
            if let Some(x) = v[r].filter(|x| x.is_finite()) {
                raw[k].push(format!("{}={}", b.column, band_of(&cuts, x)));
                word_flags[k].push(false);
            }
        }
        bands.push(BandCuts {
            column: b.column.clone(),
            cuts,
        });
    }
    Ok(RowTokens {
        raw,
        word_flags,
        bands,
    })
}

/// Every attribute column an [`AttributeTable`] reads (for reading a file of new entities).
pub fn attribute_columns(t: &AttributeTable) -> Vec<String> {
    let mut columns: Vec<String> = t.name.iter().cloned().collect();
    columns.extend(t.categorical.iter().cloned());
    columns.extend(t.multi_valued.iter().map(|m| m.column.clone()));
    columns.extend(t.text.iter().cloned());
    columns.extend(t.numeric_bands.iter().map(|b| b.column.clone()));
    let mut seen = std::collections::HashSet::new();
    columns.retain(|c| seen.insert(c.clone()));
    columns
}

impl FeatureSet {
    /// Token ids of every row of `table` (new customers or products at scoring time), using the
    /// training vocabulary and band cut points; values never seen in training are ignored.
    pub fn encode_rows(
        &self,
        table: &Table,
        t: &AttributeTable,
    ) -> Result<Vec<Vec<u32>>, DataError> {
        let rows: Vec<usize> = (0..table.len()).collect();
        let tokens = row_tokens(table, t, &rows, Some(&self.bands))?;
        Ok(tokens
            .raw
            .iter()
            .map(|toks| {
                let mut ids: Vec<u32> = toks
                    .iter()
                    .filter_map(|tok| {
                        self.tokens
                            .binary_search_by(|probe| probe.as_str().cmp(tok.as_str()))
                            .ok()
                            .map(|i| i as u32)
                    })
                    .collect();
                ids.truncate(MAX_TOKENS_PER_ENTITY);
                ids
            })
            .collect())
    }
}

/// The band index of a value given quantile cut points.
pub fn band_of(cuts: &[f64], x: f64) -> usize {
    cuts.iter().filter(|c| x >= **c).count()
}

impl Attributes {
    fn features(&self, vocab: &IdVocab, min_word_count: usize) -> FeatureSet {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for toks in &self.raw_tokens {
            for t in toks {
                *counts.entry(t.as_str()).or_default() += 1;
            }
        }
        let mut names: Vec<&str> = counts.keys().copied().collect();
        names.sort_unstable();
        let is_word: HashMap<&str, bool> = self
            .raw_tokens
            .iter()
            .zip(&self.word_flags)
            .flat_map(|(t, f)| t.iter().map(String::as_str).zip(f.iter().copied()))
            .collect();
        // Words must be frequent enough to learn from; categorical values are always kept.
        names.retain(|n| !is_word[n] || counts[n] >= min_word_count);
        let token_index: HashMap<&str, u32> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, i as u32))
            .collect();
        let mut entity_tokens = vec![Vec::new(); vocab.len()];
        for (k, id) in self.ids.iter().enumerate() {
            let Some(e) = vocab.get(id) else { continue };
            let mut toks: Vec<u32> = self.raw_tokens[k]
                .iter()
                .filter_map(|t| token_index.get(t.as_str()).copied())
                .collect();
            if toks.len() > MAX_TOKENS_PER_ENTITY {
                // Keep attributes, then the most frequent words.
                toks.sort_by_key(|t| {
                    (
                        is_word[names[*t as usize]],
                        std::cmp::Reverse(counts[names[*t as usize]]),
                    )
                });
                toks.truncate(MAX_TOKENS_PER_ENTITY);
            }
            entity_tokens[e as usize] = toks;
        }
        FeatureSet {
            tokens: names.into_iter().map(str::to_string).collect(),
            entity_tokens,
            bands: self.bands.clone(),
            primary_attribute: self.primary.clone(),
        }
    }
}

//! The forecaster's data: a dense panel of series (one row per series and period) built from the
//! business's sales file, with gaps filled per config.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{FillMissing, ForecasterSection, LoadedConfig, NegativeTargets, SalesData};
use crate::error::DataError;
use crate::table::{day_of, FilterReport};
use crate::table_chunks::TableChunks;
use crate::vocab::IdVocab;

/// Counts of what loading did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SalesReport {
    pub rows_read: usize,
    pub filters: Vec<FilterReport>,
    pub negative_targets_dropped: usize,
    /// Exact copies of earlier rows (daily data without `aggregate`), dropped.
    #[serde(default)]
    pub duplicate_rows_dropped: usize,
    pub rows_used: usize,
    pub series_total: usize,
    pub series_kept: usize,
    /// Per covariate column (in the config's order), the empty cells of the rows kept by the
    /// filters; such a cell took the value of its series' previous period ([`FILL_ASSUMPTION`]).
    #[serde(default)]
    pub empty_covariate_cells: Vec<(String, usize)>,
}

/// What is assumed for an empty covariate cell.
pub const FILL_ASSUMPTION: &str =
    "the series' value of the previous period (of its first known one before that)";

impl SalesReport {
    /// One line per covariate column with empty cells: how many, and what was assumed.
    pub fn empty_cell_notes(&self) -> Vec<String> {
        self.empty_covariate_cells
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(column, n)| {
                format!("column {column:?}: {n} empty cells, each taken as {FILL_ASSUMPTION}")
            })
            .collect()
    }
}

/// All series on one calendar: period `t` starts on day `first_day + t * period_days`.
#[derive(Debug, Clone)]
pub struct SalesPanel {
    pub key_names: Vec<String>,
    /// Per key column, its vocabulary (stores, products...).
    pub key_vocabs: Vec<IdVocab>,
    /// Per series, the index of its value in each key vocabulary.
    pub series_keys: Vec<Vec<u32>>,
    /// Static attribute columns (e.g. category) and their vocabularies.
    pub static_names: Vec<String>,
    pub static_vocabs: Vec<IdVocab>,
    /// Per series, the index of its latest value of each static attribute.
    pub series_statics: Vec<Vec<u32>>,
    pub period_days: i64,
    pub first_day: i64,
    pub periods: usize,
    /// Per series, the target per period; NaN where missing or before the series starts.
    pub target: Vec<Vec<f32>>,
    /// Per series, the first period with data.
    pub start: Vec<usize>,
    pub known_names: Vec<String>,
    pub past_names: Vec<String>,
    /// Per series, per known covariate, values per period (gaps carried forward).
    pub known: Vec<Vec<Vec<f32>>>,
    pub past: Vec<Vec<Vec<f32>>>,
    pub report: SalesReport,
}

impl SalesPanel {
    pub fn len(&self) -> usize {
        self.target.len()
    }

    pub fn is_empty(&self) -> bool {
        self.target.is_empty()
    }

    /// The key values of a series, e.g. `["store_1", "P0042"]`.
    pub fn key_values(&self, s: usize) -> Vec<String> {
        self.series_keys[s]
            .iter()
            .zip(&self.key_vocabs)
            .map(|(&i, v)| v.id(i).to_string())
            .collect()
    }

    /// Day number of the start of period `t`.
    pub fn day_of_period(&self, t: usize) -> i64 {
        self.first_day + t as i64 * self.period_days
    }
}

/// Data rows per piece when reading a sales file (a few tens of MB of text).
const SALES_ROWS_PER_PIECE: usize = 250_000;

/// The parsed columns of a sales file, with repeated text (keys, attributes) stored once.
struct SalesRows {
    file_row: Vec<usize>,
    /// Per key column, per row, the index of its value in `key_names`.
    keys: Vec<Vec<u32>>,
    key_names: Vec<Vec<String>>,
    days: Vec<i64>,
    target: Vec<f64>,
    /// Per static attribute, per row, the index of its non-empty value in `static_names`.
    statics: Vec<Vec<Option<u32>>>,
    static_names: Vec<Vec<String>>,
    key_index: Vec<HashMap<String, u32>>,
    static_index: Vec<HashMap<String, u32>>,
}

fn intern(index: &mut HashMap<String, u32>, names: &mut Vec<String>, value: &str) -> u32 {
    if let Some(&i) = index.get(value) {
        return i;
    }
    let i = names.len() as u32;
    names.push(value.to_string());
    index.insert(value.to_string(), i);
    i
}

impl SalesRows {
    fn new(n_keys: usize, n_statics: usize) -> Self {
        SalesRows {
            file_row: Vec::new(),
            keys: vec![Vec::new(); n_keys],
            key_names: vec![Vec::new(); n_keys],
            days: Vec::new(),
            target: Vec::new(),
            statics: vec![Vec::new(); n_statics],
            static_names: vec![Vec::new(); n_statics],
            key_index: vec![HashMap::new(); n_keys],
            static_index: vec![HashMap::new(); n_statics],
        }
    }

    fn len(&self) -> usize {
        self.target.len()
    }

    fn push<'a>(
        &mut self,
        file_row: usize,
        keys: impl Iterator<Item = &'a str>,
        day: i64,
        target: f64,
        statics: impl Iterator<Item = Option<&'a str>>,
    ) {
        self.file_row.push(file_row);
        for (k, v) in keys.enumerate() {
            let i = intern(&mut self.key_index[k], &mut self.key_names[k], v);
            self.keys[k].push(i);
        }
        self.days.push(day);
        self.target.push(target);
        for (c, v) in statics.enumerate() {
            let i = v
                .filter(|v| !v.is_empty())
                .map(|v| intern(&mut self.static_index[c], &mut self.static_names[c], v));
            self.statics[c].push(i);
        }
    }
}

/// Loads the sales file into a panel: the rows read piece by piece, grouped into series, laid
/// on one calendar, each series filled per config.
pub fn load_sales_panel(
    cfg: &LoadedConfig,
    fc: &ForecasterSection,
) -> Result<SalesPanel, DataError> {
    let d = &fc.data;
    let path = cfg.resolve(&d.sales.path);
    let (rows, covariates, report) = read_sales_rows(&path, d)?;
    if rows.len() == 0 {
        return Err(DataError::file(
            &path,
            "no rows are left after the configured filters",
        ));
    }
    let (groups, report) = group_series(&rows, d, report, &path)?;
    let calendar = Calendar::of(&rows, &groups, d.frequency.period_days());
    let mut panel = empty_panel(&rows, &groups, &calendar, d, report);
    for &s in &groups.order {
        let keys = groups.key_values[s]
            .iter()
            .zip(&panel.key_vocabs)
            .map(|(v, voc)| voc.get(v).unwrap_or(0))
            .collect();
        panel.series_keys.push(keys);
        let series = fill_series(&rows, &covariates, &groups, s, &calendar, d, &path)?;
        panel.report.duplicate_rows_dropped += series.duplicates;
        panel.report.rows_used -= series.duplicates;
        let mut covs = series.covariates;
        let past_part = covs.split_off(d.known_covariates.len());
        panel.known.push(covs);
        panel.past.push(past_part);
        panel.target.push(series.target);
        panel.start.push(series.start);
    }
    Ok(panel)
}

/// Per covariate (known ones first, then past ones), per row, its value (`None`: empty cell).
type CovariateRows = Vec<Vec<Option<f64>>>;

/// Reads the sales file piece by piece, so that only the parsed columns of the whole history are
/// held, never its text: a sales file larger than memory comfortably allows still loads.
fn read_sales_rows(
    path: &Path,
    d: &SalesData,
) -> Result<(SalesRows, CovariateRows, SalesReport), DataError> {
    let path = path.to_path_buf();
    let mut columns: Vec<String> = d.series_keys.clone();
    columns.push(d.date.clone());
    columns.push(d.target.clone());
    columns.extend(d.known_covariates.iter().cloned());
    columns.extend(d.past_covariates.iter().cloned());
    columns.extend(d.static_attributes.iter().cloned());
    columns.extend(d.filters.iter().map(|f| f.column.clone()));
    let mut seen = std::collections::HashSet::new();
    columns.retain(|c| seen.insert(c.clone()));
    let mut report = SalesReport {
        empty_covariate_cells: d
            .known_covariates
            .iter()
            .chain(&d.past_covariates)
            .map(|c| (c.clone(), 0))
            .collect(),
        ..SalesReport::default()
    };
    let mut rows = SalesRows::new(d.series_keys.len(), d.static_attributes.len());
    let mut known: Vec<Vec<Option<f64>>> = vec![Vec::new(); d.known_covariates.len()];
    let mut past: Vec<Vec<Option<f64>>> = vec![Vec::new(); d.past_covariates.len()];
    let pieces = TableChunks::open(&path, &d.sales, &columns, &[], SALES_ROWS_PER_PIECE)?;
    for piece in pieces {
        let mut table = piece?;
        report.rows_read += table.len();
        let dropped = table.apply_filters(&d.filters)?;
        if report.filters.is_empty() {
            report.filters = dropped;
        } else {
            for (total, f) in report.filters.iter_mut().zip(dropped) {
                total.dropped += f.dropped;
            }
        }
        let keys: Vec<Vec<String>> = d
            .series_keys
            .iter()
            .map(|k| table.ids(k))
            .collect::<Result<_, _>>()?;
        let days = table.timestamps(&d.date, d.date_format.as_deref())?;
        let target = table.finite_numbers(&d.target)?;
        let statics: Vec<Vec<Option<String>>> = d
            .static_attributes
            .iter()
            .map(|c| table.strings(c))
            .collect::<Result<_, _>>()?;
        for ((name, out), (_, empty)) in d
            .known_covariates
            .iter()
            .zip(known.iter_mut())
            .chain(d.past_covariates.iter().zip(past.iter_mut()))
            .zip(report.empty_covariate_cells.iter_mut())
        {
            let values = table.numbers(name)?;
            *empty += values.iter().filter(|v| v.is_none()).count();
            if let Some(i) = values
                .iter()
                .position(|v| v.is_some_and(|x| !x.is_finite()))
            {
                return Err(DataError::Value {
                    path: path.clone(),
                    row: table.file_row(i),
                    column: name.clone(),
                    msg: "expected a finite number".into(),
                });
            }
            out.extend(values);
        }
        for (i, y) in target.into_iter().enumerate() {
            if y < 0.0 && d.negative_targets == NegativeTargets::Error {
                return Err(DataError::Value {
                    path: path.clone(),
                    row: table.file_row(i),
                    column: d.target.clone(),
                    msg: format!(
                        "negative value {y}; set `forecaster.data.negative_targets = \"drop\"` to drop returns"
                    ),
                });
            }
            rows.push(
                table.file_row(i),
                keys.iter().map(|k| k[i].as_str()),
                day_of(days[i]),
                y,
                statics.iter().map(|c| c[i].as_deref()),
            );
        }
    }
    known.extend(past);
    Ok((rows, known, report))
}

/// The rows of each series, and which series are kept in which order.
struct SeriesGroups {
    /// Per series (in order of first appearance), its key values and its rows.
    key_values: Vec<Vec<String>>,
    rows_of: Vec<Vec<usize>>,
    /// The series kept (`top_series`), sorted by key values for determinism.
    order: Vec<usize>,
}

/// Drops negative targets (returns; `error` stopped while reading), groups the rows per series
/// and keeps the largest series when asked.
fn group_series(
    rows: &SalesRows,
    d: &SalesData,
    mut report: SalesReport,
    path: &Path,
) -> Result<(SeriesGroups, SalesReport), DataError> {
    let (keys, key_names, target) = (&rows.keys, &rows.key_names, &rows.target);
    let keep: Vec<bool> = target.iter().map(|&y| y >= 0.0).collect();
    report.negative_targets_dropped = keep.iter().filter(|k| !**k).count();

    // Group rows per series.
    let mut series_of: HashMap<Vec<u32>, usize> = HashMap::new();
    let mut series_key_values: Vec<Vec<String>> = Vec::new();
    let mut rows_of: Vec<Vec<usize>> = Vec::new();
    for i in 0..target.len() {
        if !keep[i] {
            continue;
        }
        let key: Vec<u32> = keys.iter().map(|k| k[i]).collect();
        let next = series_key_values.len();
        let s = *series_of.entry(key.clone()).or_insert_with(|| {
            series_key_values.push(
                key.iter()
                    .zip(key_names)
                    .map(|(&v, names)| names[v as usize].clone())
                    .collect(),
            );
            rows_of.push(Vec::new());
            next
        });
        rows_of[s].push(i);
    }
    report.rows_used = keep.iter().filter(|k| **k).count();
    report.series_total = series_key_values.len();
    if series_key_values.is_empty() {
        return Err(DataError::file(
            path,
            "no usable rows: every target is negative",
        ));
    }

    // Keep the largest series when asked; order series by key values for determinism.
    let mut order: Vec<usize> = (0..series_key_values.len()).collect();
    if let Some(top) = d.top_series {
        let total = |s: usize| -> f64 { rows_of[s].iter().map(|&i| target[i]).sum() };
        order.sort_by(|&a, &b| {
            total(b)
                .total_cmp(&total(a))
                .then(series_key_values[a].cmp(&series_key_values[b]))
        });
        order.truncate(top);
    }
    order.sort_by(|&a, &b| series_key_values[a].cmp(&series_key_values[b]));
    report.series_kept = order.len();

    Ok((
        SeriesGroups {
            key_values: series_key_values,
            rows_of,
            order,
        },
        report,
    ))
}

/// The panel's calendar: period `t` starts on day `first_day + t * period_days`; weekly periods
/// start on Mondays.
struct Calendar {
    period_days: i64,
    first_period: i64,
    periods: usize,
    first_day: i64,
}

impl Calendar {
    fn of(rows: &SalesRows, groups: &SeriesGroups, period_days: i64) -> Self {
        let period = |day: i64| period_of(day, period_days);
        let (order, rows_of, days) = (&groups.order, &groups.rows_of, &rows.days);
        let first_period = order
            .iter()
            .flat_map(|&s| rows_of[s].iter().map(|&i| period(days[i])))
            .min()
            .unwrap_or(0);
        let last_period = order
            .iter()
            .flat_map(|&s| rows_of[s].iter().map(|&i| period(days[i])))
            .max()
            .unwrap_or(0);
        let periods = (last_period - first_period + 1) as usize;
        let first_day = if period_days == 7 {
            first_period * 7 + 4
        } else {
            first_period
        };
        Calendar {
            period_days,
            first_period,
            periods,
            first_day,
        }
    }

    /// Index of the period holding `day`.
    fn index(&self, day: i64) -> usize {
        (period_of(day, self.period_days) - self.first_period) as usize
    }
}

/// The period number of a day: the day itself, or its week (weeks start on Mondays; day 4
/// since 1970-01-01 was a Monday).
fn period_of(day: i64, period_days: i64) -> i64 {
    if period_days == 7 {
        (day - 4).div_euclid(7)
    } else {
        day
    }
}

/// The panel before its series are filled in: vocabularies of the keys and static attributes,
/// each series' latest static values, and the calendar.
fn empty_panel(
    rows: &SalesRows,
    groups: &SeriesGroups,
    calendar: &Calendar,
    d: &SalesData,
    report: SalesReport,
) -> SalesPanel {
    let (order, series_key_values, rows_of) = (&groups.order, &groups.key_values, &groups.rows_of);
    let (statics, static_names, days) = (&rows.statics, &rows.static_names, &rows.days);
    let key_vocabs: Vec<IdVocab> = (0..d.series_keys.len())
        .map(|k| IdVocab::build(order.iter().map(|&s| series_key_values[s][k].as_str())))
        .collect();
    // Each series' latest non-empty value of each static attribute ("(none)" when it has none).
    let static_values: Vec<Vec<String>> = order
        .iter()
        .map(|&s| {
            statics
                .iter()
                .zip(static_names)
                .map(|(col, names)| {
                    rows_of[s]
                        .iter()
                        .filter_map(|&i| col[i].map(|v| (days[i], v)))
                        .max_by_key(|(day, _)| *day)
                        .map(|(_, v)| names[v as usize].clone())
                        .unwrap_or_else(|| "(none)".into())
                })
                .collect()
        })
        .collect();
    let static_vocabs: Vec<IdVocab> = (0..statics.len())
        .map(|k| IdVocab::build(static_values.iter().map(|v| v[k].as_str())))
        .collect();
    let series_statics: Vec<Vec<u32>> = static_values
        .iter()
        .map(|v| {
            v.iter()
                .zip(&static_vocabs)
                .map(|(x, voc)| voc.get(x).unwrap_or(0))
                .collect()
        })
        .collect();
    SalesPanel {
        key_names: d.series_keys.clone(),
        key_vocabs,
        series_keys: Vec::new(),
        static_names: d.static_attributes.clone(),
        static_vocabs,
        series_statics,
        period_days: calendar.period_days,
        first_day: calendar.first_day,
        periods: calendar.periods,
        target: Vec::new(),
        start: Vec::new(),
        known_names: d.known_covariates.clone(),
        past_names: d.past_covariates.clone(),
        known: Vec::new(),
        past: Vec::new(),
        report,
    }
}

/// One series on the panel's calendar.
struct FilledSeries {
    target: Vec<f32>,
    /// Per covariate (known, then past), per period.
    covariates: Vec<Vec<f32>>,
    /// The first period with a target.
    start: usize,
    /// Exact copies of earlier rows dropped.
    duplicates: usize,
}

/// Series `s`'s target per period (rows of one period summed; gaps per `fill_missing`) and its
/// covariates (per-period means, carried forward over gaps and back over the lead-in). A second
/// row for a date of daily data without `aggregate` is dropped when it is an exact copy, an error
/// otherwise.
fn fill_series(
    rows: &SalesRows,
    covariates: &CovariateRows,
    groups: &SeriesGroups,
    s: usize,
    calendar: &Calendar,
    d: &SalesData,
    path: &Path,
) -> Result<FilledSeries, DataError> {
    let (target, statics, file_row) = (&rows.target, &rows.statics, &rows.file_row);
    let (periods, kv) = (calendar.periods, &groups.key_values[s]);
    let mut duplicates = 0;
    let mut y = vec![f32::NAN; periods];
    let mut cov_sum: Vec<BTreeMap<usize, (f64, usize)>> = vec![BTreeMap::new(); covariates.len()];
    let mut seen_period: HashMap<usize, usize> = HashMap::new();
    for &i in &groups.rows_of[s] {
        let t = calendar.index(rows.days[i]);
        if let Some(&prev) = seen_period.get(&t) {
            if !d.aggregate && calendar.period_days == 1 {
                // An exact copy of an earlier row (an export run twice) is dropped and
                // counted; a different value for the same date is an error.
                let same = target[i] == target[prev]
                    && covariates.iter().all(|c| c[i] == c[prev])
                    && statics.iter().all(|c| c[i] == c[prev]);
                if same {
                    duplicates += 1;
                    continue;
                }
                return Err(DataError::Value {
                    path: path.to_path_buf(),
                    row: file_row[i],
                    column: d.date.clone(),
                    msg: format!(
                        "series {} has a second row for the same date with other values \
                             (first at row {}); set `forecaster.data.aggregate = true` to sum \
                             such rows",
                        kv.join("/"),
                        file_row[prev]
                    ),
                });
            }
        } else {
            seen_period.insert(t, i);
        }
        y[t] = if y[t].is_nan() { 0.0 } else { y[t] } + target[i] as f32;
        for (c, col) in covariates.iter().enumerate() {
            if let Some(x) = col[i] {
                let e = cov_sum[c].entry(t).or_insert((0.0, 0));
                e.0 += x;
                e.1 += 1;
            }
        }
    }
    let start = y.iter().position(|v| !v.is_nan()).unwrap_or(0);
    if d.fill_missing == FillMissing::Zero {
        for v in y.iter_mut().skip(start) {
            if v.is_nan() {
                *v = 0.0;
            }
        }
    }
    // Covariates: per-period means, carried forward over gaps and back over the lead-in.
    let mut covs: Vec<Vec<f32>> = Vec::with_capacity(cov_sum.len());
    for m in &cov_sum {
        let mut v = vec![f32::NAN; periods];
        for (&t, &(sum, n)) in m {
            v[t] = (sum / n as f64) as f32;
        }
        let first = v.iter().copied().find(|x| !x.is_nan()).unwrap_or(0.0);
        let mut last = first;
        for x in v.iter_mut() {
            if x.is_nan() {
                *x = last;
            } else {
                last = *x;
            }
        }
        covs.push(v);
    }
    Ok(FilledSeries {
        target: y,
        covariates: covs,
        start,
        duplicates,
    })
}

//! The forecaster's data: a dense panel of series (one row per series and period) built from the
//! business's sales file, with gaps filled per config.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::config::{ForecasterSection, LoadedConfig};
use crate::error::DataError;
use crate::table::{day_of, FilterReport, Table};
use crate::vocab::IdVocab;

/// Counts of what loading did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SalesReport {
    pub rows_read: usize,
    pub filters: Vec<FilterReport>,
    pub negative_targets_dropped: usize,
    pub rows_used: usize,
    pub series_total: usize,
    pub series_kept: usize,
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

/// Loads the sales file into a panel.
pub fn load_sales_panel(
    cfg: &LoadedConfig,
    fc: &ForecasterSection,
) -> Result<SalesPanel, DataError> {
    let d = &fc.data;
    let path = cfg.resolve(&d.sales.path);
    let mut columns: Vec<String> = d.series_keys.clone();
    columns.push(d.date.clone());
    columns.push(d.target.clone());
    columns.extend(d.known_covariates.iter().cloned());
    columns.extend(d.past_covariates.iter().cloned());
    columns.extend(d.static_attributes.iter().cloned());
    columns.extend(d.filters.iter().map(|f| f.column.clone()));
    let mut seen = std::collections::HashSet::new();
    columns.retain(|c| seen.insert(c.clone()));
    let mut table = Table::read(&path, &d.sales, &columns)?;
    let mut report = SalesReport {
        rows_read: table.len(),
        ..Default::default()
    };
    report.filters = table.apply_filters(&d.filters)?;
    if table.is_empty() {
        return Err(DataError::file(
            &path,
            "no rows are left after the configured filters",
        ));
    }
    let keys: Vec<Vec<String>> = d
        .series_keys
        .iter()
        .map(|k| table.ids(k))
        .collect::<Result<_, _>>()?;
    let days: Vec<i64> = table
        .timestamps(&d.date, d.date_format.as_deref())?
        .into_iter()
        .map(day_of)
        .collect();
    let target = table.finite_numbers(&d.target)?;
    let statics: Vec<Vec<Option<String>>> = d
        .static_attributes
        .iter()
        .map(|c| table.strings(c))
        .collect::<Result<_, _>>()?;
    let known: Vec<Vec<Option<f64>>> = d
        .known_covariates
        .iter()
        .map(|c| table.numbers(c))
        .collect::<Result<_, _>>()?;
    let past: Vec<Vec<Option<f64>>> = d
        .past_covariates
        .iter()
        .map(|c| table.numbers(c))
        .collect::<Result<_, _>>()?;
    for (name, cols) in d
        .known_covariates
        .iter()
        .zip(&known)
        .chain(d.past_covariates.iter().zip(&past))
    {
        if let Some(i) = cols.iter().position(|v| v.is_some_and(|x| !x.is_finite())) {
            return Err(DataError::Value {
                path: path.clone(),
                row: table.file_row(i),
                column: name.clone(),
                msg: "expected a finite number".into(),
            });
        }
    }

    let period_days: i64 = if d.frequency == "weekly" { 7 } else { 1 };
    // Weekly periods start on Mondays (day 4 since 1970-01-01 was a Monday).
    let period_of = |day: i64| -> i64 {
        if period_days == 7 {
            (day - 4).div_euclid(7)
        } else {
            day
        }
    };

    let mut keep = vec![true; target.len()];
    for (i, &y) in target.iter().enumerate() {
        if y < 0.0 {
            if d.negative_targets == "error" {
                return Err(DataError::Value {
                    path: path.clone(),
                    row: table.file_row(i),
                    column: d.target.clone(),
                    msg: format!(
                        "negative value {y}; set `forecaster.data.negative_targets = \"drop\"` to drop returns"
                    ),
                });
            }
            keep[i] = false;
            report.negative_targets_dropped += 1;
        }
    }

    // Group rows per series.
    let mut series_of: HashMap<Vec<&str>, usize> = HashMap::new();
    let mut series_key_values: Vec<Vec<String>> = Vec::new();
    let mut rows_of: Vec<Vec<usize>> = Vec::new();
    for i in 0..target.len() {
        if !keep[i] {
            continue;
        }
        let key: Vec<&str> = keys.iter().map(|k| k[i].as_str()).collect();
        let next = series_key_values.len();
        let s = *series_of.entry(key.clone()).or_insert_with(|| {
            series_key_values.push(key.iter().map(|s| s.to_string()).collect());
            rows_of.push(Vec::new());
            next
        });
        rows_of[s].push(i);
    }
    report.rows_used = keep.iter().filter(|k| **k).count();
    report.series_total = series_key_values.len();
    if series_key_values.is_empty() {
        return Err(DataError::file(
            &path,
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

    let first_period = order
        .iter()
        .flat_map(|&s| rows_of[s].iter().map(|&i| period_of(days[i])))
        .min()
        .unwrap_or(0);
    let last_period = order
        .iter()
        .flat_map(|&s| rows_of[s].iter().map(|&i| period_of(days[i])))
        .max()
        .unwrap_or(0);
    let periods = (last_period - first_period + 1) as usize;
    let first_day = if period_days == 7 {
        first_period * 7 + 4
    } else {
        first_period
    };

    let key_vocabs: Vec<IdVocab> = (0..d.series_keys.len())
        .map(|k| IdVocab::build(order.iter().map(|&s| series_key_values[s][k].as_str())))
        .collect();
    // Each series' latest non-empty value of each static attribute ("(none)" when it has none).
    let static_values: Vec<Vec<String>> = order
        .iter()
        .map(|&s| {
            statics
                .iter()
                .map(|col| {
                    rows_of[s]
                        .iter()
                        .filter_map(|&i| {
                            col[i]
                                .as_deref()
                                .filter(|v| !v.is_empty())
                                .map(|v| (days[i], v))
                        })
                        .max_by_key(|(day, _)| *day)
                        .map(|(_, v)| v.to_string())
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
    let zero_fill = d.fill_missing == "zero";
    let mut panel = SalesPanel {
        key_names: d.series_keys.clone(),
        key_vocabs,
        series_keys: Vec::new(),
        static_names: d.static_attributes.clone(),
        static_vocabs,
        series_statics,
        period_days,
        first_day,
        periods,
        target: Vec::new(),
        start: Vec::new(),
        known_names: d.known_covariates.clone(),
        past_names: d.past_covariates.clone(),
        known: Vec::new(),
        past: Vec::new(),
        report,
    };
    for &s in &order {
        let kv = &series_key_values[s];
        panel.series_keys.push(
            kv.iter()
                .zip(&panel.key_vocabs)
                .map(|(v, voc)| voc.get(v).unwrap_or(0))
                .collect(),
        );
        let mut y = vec![f32::NAN; periods];
        let mut cov_sum: Vec<BTreeMap<usize, (f64, usize)>> =
            vec![BTreeMap::new(); known.len() + past.len()];
        let mut seen_period: HashMap<usize, usize> = HashMap::new();
        for &i in &rows_of[s] {
            let t = (period_of(days[i]) - first_period) as usize;
            if let Some(prev) = seen_period.insert(t, i) {
                if !d.aggregate && period_days == 1 {
                    return Err(DataError::Value {
                        path: path.clone(),
                        row: table.file_row(i),
                        column: d.date.clone(),
                        msg: format!(
                            "series {} has a second row for the same date (first at row {}); \
                             set `forecaster.data.aggregate = true` to sum such rows",
                            kv.join("/"),
                            table.file_row(prev)
                        ),
                    });
                }
            }
            y[t] = if y[t].is_nan() { 0.0 } else { y[t] } + target[i] as f32;
            for (c, col) in known.iter().chain(past.iter()).enumerate() {
                if let Some(x) = col[i] {
                    let e = cov_sum[c].entry(t).or_insert((0.0, 0));
                    e.0 += x;
                    e.1 += 1;
                }
            }
        }
        let start = y.iter().position(|v| !v.is_nan()).unwrap_or(0);
        if zero_fill {
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
        let past_part = covs.split_off(known.len());
        panel.known.push(covs);
        panel.past.push(past_part);
        panel.target.push(y);
        panel.start.push(start);
    }
    Ok(panel)
}

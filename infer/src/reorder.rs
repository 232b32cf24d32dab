//! `infer reorder`: order quantities from the demand forecast and a stock file.
//!
//! For each row of the stock file (the series key columns of the config, `on_hand`,
//! `lead_time_days`, and optionally `service_level`), demand over the lead time is the sum of
//! the forecast periods it covers, starting with the first forecast period (a partial last
//! period counts pro rata). `demand_lead_time` is that sum's quantile at the service level
//! (see [`crate::quantiles`]: mean by Swanson's rule, spread from the outer quantiles, periods
//! independent and the sum normal), and `order_qty = max(0, ceil(demand_lead_time - on_hand))`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use polars::prelude::{Column, DataFrame};
use shopcast_datasets::config::FileSpec;
use shopcast_datasets::table::Table;
use shopcast_datasets::DataError;
use shopcast_model::DeviceChoice;

use crate::forecast::{open_forecaster, LoadedForecaster, SeriesForecast};
use crate::output::{check_output_path, key_columns, write_output, JobManifest};
use crate::quantiles::{period_demand, sum_quantile};

/// Options of `infer reorder`: order quantities, lead-time demand at a service level minus stock
/// on hand.
#[derive(Debug, Clone, clap::Args)]
pub struct ReorderOptions {
    #[arg(long)]
    pub bundle: PathBuf,
    /// CSV or Parquet with the series key columns, `on_hand`, `lead_time_days` and optionally
    /// `service_level`.
    #[arg(long)]
    pub stock: PathBuf,
    /// Planned future covariates (series keys, date, known covariates), as for `forecast`.
    #[arg(long)]
    pub future: Option<PathBuf>,
    /// Service level for rows without one in the stock file.
    #[arg(long, default_value_t = 0.95)]
    pub service_level: f64,
    /// Output file, `.csv` or `.parquet`.
    #[arg(long)]
    pub out: PathBuf,
    /// `auto` (a GPU through WGPU when one is present, else `flex`), `flex`, `ndarray` or `wgpu`.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

/// One computed order line.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderLine {
    pub demand_lead_time: f64,
    pub order_qty: f64,
}

/// Demand over `lead_days` at `service_level` and the order quantity, from a series' forecast
/// (`[horizon][levels]`) with periods of `period_days`.
pub fn order_line(
    quantiles: &[Vec<f32>],
    levels: &[f64],
    period_days: i64,
    lead_days: f64,
    service_level: f64,
    on_hand: f64,
) -> OrderLine {
    let periods = lead_days / period_days as f64;
    let parts: Vec<_> = quantiles
        .iter()
        .enumerate()
        .map(|(t, q)| {
            (
                period_demand(q, levels),
                (periods - t as f64).clamp(0.0, 1.0),
            )
        })
        .filter(|(_, w)| *w > 0.0)
        .collect();
    let demand = sum_quantile(&parts, service_level);
    OrderLine {
        demand_lead_time: demand,
        order_qty: (demand - on_hand).ceil().max(0.0),
    }
}

/// Runs `infer reorder`.
pub fn reorder(opts: &ReorderOptions) -> Result<JobManifest> {
    let started = Instant::now();
    check_output_path(&opts.out)?;
    if !(opts.service_level > 0.0 && opts.service_level < 1.0) {
        anyhow::bail!(DataError::Invalid(format!(
            "--service-level {}: expected a probability strictly between 0 and 1, e.g. 0.95",
            opts.service_level
        )));
    }
    let (loaded, backend) = open_forecaster(&opts.bundle, opts.device)?;
    let stock = StockRows::read(&opts.stock, &loaded.artifacts.key_names)?;
    // Every row is checked before anything is forecast.
    let (wanted, skipped) = stock.wanted(&loaded, opts)?;
    let mut manifest = JobManifest::new("reorder", &opts.out, &loaded.bundle, &backend, None)?;
    manifest.input_rows = stock.table.len();
    let mut assumptions = Vec::new();
    let future = loaded.future_covariates(opts.future.as_ref(), &mut assumptions)?;
    let mut series: Vec<usize> = wanted.iter().map(|w| w.1).collect();
    series.sort_unstable();
    series.dedup();
    let forecasts = loaded.forecast(&series, &future).context("forecasting")?;
    let mut df = order_frame(&loaded, &stock, &wanted, &forecasts)?;
    manifest.assumptions = assumptions;
    manifest.rows_skipped = skipped;
    write_output(&mut df, &opts.out, &mut manifest, started)?;
    crate::log::info(
        "reorder",
        &format!(
            "{} order lines written to {} ({} stock rows skipped)",
            manifest.rows_written,
            opts.out.display(),
            manifest.rows_skipped.values().sum::<usize>()
        ),
    );
    Ok(manifest)
}

/// The stock file's columns.
struct StockRows {
    path: PathBuf,
    table: Table,
    /// Per series key column, per row.
    keys: Vec<Vec<String>>,
    on_hand: Vec<f64>,
    lead: Vec<f64>,
    levels: Vec<Option<f64>>,
}

/// A stock row to order for: (row, series, service level).
type Wanted = (usize, usize, f64);

impl StockRows {
    /// Reads the series keys, `on_hand`, `lead_time_days` and the optional `service_level`.
    fn read(path: &Path, key_names: &[String]) -> Result<Self> {
        let mut columns = key_names.to_vec();
        columns.extend(["on_hand".to_string(), "lead_time_days".to_string()]);
        let file = FileSpec {
            path: path.to_path_buf(),
            separator: None,
            has_header: true,
            column_names: Vec::new(),
        };
        let table =
            Table::read_with_optional(path, &file, &columns, &["service_level".to_string()])?;
        let keys: Vec<Vec<String>> = key_names
            .iter()
            .map(|k| table.ids(k))
            .collect::<Result<_, _>>()?;
        let on_hand = table.finite_numbers("on_hand")?;
        let lead = table.finite_numbers("lead_time_days")?;
        let levels: Vec<Option<f64>> = if table.has_column("service_level") {
            table.numbers("service_level")?
        } else {
            vec![None; table.len()]
        };
        Ok(StockRows {
            path: path.to_path_buf(),
            table,
            keys,
            on_hand,
            lead,
            levels,
        })
    }

    /// Checks every row (stock on hand, a lead time within the horizon, a service level) and
    /// finds its series; rows of series the bundle does not know are skipped and counted.
    fn wanted(
        &self,
        loaded: &LoadedForecaster,
        opts: &ReorderOptions,
    ) -> Result<(Vec<Wanted>, BTreeMap<String, usize>)> {
        let a = &loaded.artifacts;
        let spec = &a.spec;
        let (table, keys, on_hand, lead, levels) = (
            &self.table,
            &self.keys,
            &self.on_hand,
            &self.lead,
            &self.levels,
        );
        let index: HashMap<Vec<String>, usize> = (0..a.series.len())
            .map(|s| (loaded.key_values(s), s))
            .collect();
        let max_days = spec.horizon as i64 * spec.period_days;
        let bad = |i: usize, column: &str, msg: String| -> anyhow::Error {
            DataError::Value {
                path: self.path.clone(),
                row: table.file_row(i),
                column: column.to_string(),
                msg,
            }
            .into()
        };
        let mut wanted: Vec<(usize, usize, f64)> = Vec::new(); // (row, series, service level)
        let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..table.len() {
            if on_hand[i] < 0.0 {
                return Err(bad(
                    i,
                    "on_hand",
                    format!("expected stock on hand >= 0, got {}", on_hand[i]),
                ));
            }
            if !(lead[i] > 0.0 && lead[i] <= max_days as f64) {
                return Err(bad(
                    i,
                    "lead_time_days",
                    format!(
                        "expected a lead time above 0 and at most the forecast horizon ({max_days} days), got {}",
                        lead[i]
                    ),
                ));
            }
            let level = levels[i].unwrap_or(opts.service_level);
            if !(level > 0.0 && level < 1.0) {
                return Err(bad(
                    i,
                    "service_level",
                    format!("expected a probability strictly between 0 and 1, got {level}"),
                ));
            }
            let key: Vec<String> = keys.iter().map(|k| k[i].clone()).collect();
            match index.get(&key) {
                Some(&s) => wanted.push((i, s, level)),
                None => *skipped.entry("unknown series".into()).or_default() += 1,
            }
        }
        Ok((wanted, skipped))
    }
}

/// The order lines: the stock row's keys, stock, lead time and service level with the
/// lead-time demand and the quantity to order.
fn order_frame(
    loaded: &LoadedForecaster,
    stock: &StockRows,
    wanted: &[Wanted],
    forecasts: &[SeriesForecast],
) -> Result<DataFrame> {
    let a = &loaded.artifacts;
    let spec = &a.spec;
    let (keys, on_hand, lead) = (&stock.keys, &stock.on_hand, &stock.lead);
    let by_series: HashMap<usize, &Vec<Vec<f32>>> =
        forecasts.iter().map(|f| (f.series, &f.quantiles)).collect();
    let n = wanted.len();
    let mut key_cols: Vec<Vec<String>> = vec![Vec::with_capacity(n); a.key_names.len()];
    let (mut c_on, mut c_lead, mut c_level, mut c_demand, mut c_qty) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for &(i, s, level) in wanted {
        let line = order_line(
            by_series[&s],
            &a.quantiles,
            spec.period_days,
            lead[i],
            level,
            on_hand[i],
        );
        for (col, k) in key_cols.iter_mut().zip(keys) {
            col.push(k[i].clone());
        }
        c_on.push(on_hand[i]);
        c_lead.push(lead[i]);
        c_level.push(level);
        c_demand.push(line.demand_lead_time);
        c_qty.push(line.order_qty);
    }
    let mut columns = key_columns(&a.key_names, key_cols);
    columns.extend([
        Column::new("on_hand".into(), c_on),
        Column::new("lead_time_days".into(), c_lead),
        Column::new("service_level".into(), c_level),
        Column::new("demand_lead_time".into(), c_demand),
        Column::new("order_qty".into(), c_qty),
    ]);
    Ok(DataFrame::new(n, columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_by_hand() {
        // Two daily periods and half of a third, P10/P50/P90 = 2/5/12 each.
        let q = vec![vec![2.0, 5.0, 12.0]; 3];
        let line = order_line(&q, &[0.1, 0.5, 0.9], 1, 2.5, 0.95, 4.0);
        let sd: f64 = 10.0 / (2.0 * 1.2815515655);
        let by_hand = 6.2 * 2.5 + 1.6448536270 * (sd * sd * 2.25).sqrt();
        assert!((line.demand_lead_time - by_hand).abs() < 1e-6);
        assert_eq!(line.order_qty, (by_hand - 4.0).ceil());
        // Plenty of stock: nothing to order, never a negative order.
        let none = order_line(&q, &[0.1, 0.5, 0.9], 1, 2.5, 0.95, 1000.0);
        assert_eq!(none.order_qty, 0.0);
    }
}

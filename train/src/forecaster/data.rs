//! The forecaster's data: the sales panel read through the config, the periods of training,
//! validation and backtest, covariate scaling, each series' exponential smoothing anchor, and
//! which series train and validate.
//!
//! Periods: `| training windows ... | validation (horizon) | fold 1 | fold 2 | ... | fold N |`.

use anyhow::Result;
use shopcast_datasets::config::{ForecasterSection, Frequency};
use shopcast_datasets::exp_smoothing::EtsModel;
use shopcast_datasets::sales::{load_sales_panel, SalesPanel, FILL_ASSUMPTION};
use shopcast_datasets::table::date_of_day;
use shopcast_datasets::windows::{CovariateStats, SeriesView, WindowSpec};
use shopcast_datasets::{DataError, LoadedConfig};

/// Everything training, blending and the backtest read.
pub struct Prepared {
    pub panel: SalesPanel,
    pub spec: WindowSpec,
    /// Each series' exponential smoothing, fitted before the validation period.
    pub anchors: Vec<EtsModel>,
    /// Series with a window at the validation origin.
    pub val_series: Vec<usize>,
    pub val_origin: usize,
    /// The first period of each backtest fold.
    pub fold_origins: Vec<usize>,
}

impl Prepared {
    /// Series `s` as the window builder sees it.
    pub fn view(&self, s: usize) -> SeriesView<'_> {
        view(&self.panel, &self.anchors, s)
    }

    /// Series with a whole training window (context and horizon) that ends by `end`.
    pub fn trainable_before(&self, end: usize) -> Vec<usize> {
        let h = self.spec.horizon;
        (0..self.panel.len())
            .filter(|&s| self.spec.min_origin(self.panel.start[s]) + h <= end)
            .collect()
    }
}

fn view<'a>(panel: &'a SalesPanel, anchors: &'a [EtsModel], s: usize) -> SeriesView<'a> {
    SeriesView {
        target: &panel.target[s],
        known: &panel.known[s],
        past: &panel.past[s],
        first_day: panel.first_day,
        keys: &panel.series_keys[s],
        statics: &panel.series_statics[s],
        ets: anchors.get(s),
    }
}

/// Loads the panel and lays out its periods; too short a history is an error that says what
/// would fit.
pub fn prepare(cfg: &LoadedConfig, sec: &ForecasterSection) -> Result<Prepared> {
    let panel = load_sales_panel(cfg, sec)?;
    log_panel(&panel);
    let m = &sec.model;
    let (h, t_all, folds) = (m.horizon, panel.periods, sec.evaluation.backtest_folds);
    // The backtest folds, the validation period and one training window after the context
    // (a series' first fold sees what there is before its origin).
    let needed = (folds + 2) * h + m.context_length.min(2 * m.season_length);
    if t_all < needed {
        anyhow::bail!(DataError::TooLittleData(format!(
            "forecaster: the data has {t_all} periods, but {folds} backtest folds of {h}, a validation period of {h}, \
             and at least one training window need {needed}; lower `forecaster.evaluation.backtest_folds` or \
             `forecaster.model.horizon`, or provide more history"
        )));
    }
    let fold_origins: Vec<usize> = (0..folds).map(|f| t_all - (folds - f) * h).collect();
    let val_origin = fold_origins[0] - h;
    let spec = WindowSpec {
        context: m.context_length,
        horizon: h,
        season: m.season_length,
        period_days: panel.period_days,
        known: covariate_scaling(&panel, &panel.known_names, &panel.known, val_origin),
        past: covariate_scaling(&panel, &panel.past_names, &panel.past, val_origin),
    };
    // The anchor of every series: smoothing constants fitted before the validation period.
    let anchors: Vec<EtsModel> = panel
        .target
        .iter()
        .map(|y| EtsModel::fit(y, val_origin, spec.season, &m.quantiles))
        .collect();
    let val_series: Vec<usize> = (0..panel.len())
        .filter(|&s| val_origin >= spec.min_origin(panel.start[s]))
        .collect();
    let prepared = Prepared {
        panel,
        spec,
        anchors,
        val_series,
        val_origin,
        fold_origins,
    };
    if prepared.trainable_before(val_origin).is_empty() {
        anyhow::bail!(DataError::TooLittleData(format!(
            "forecaster: no series has enough history before the validation period (day {}) for a training window",
            date_of_day(prepared.panel.day_of_period(val_origin))
        )));
    }
    Ok(prepared)
}

/// Covariate scaling, fitted on the training periods only.
fn covariate_scaling(
    panel: &SalesPanel,
    names: &[String],
    values: &[Vec<Vec<f32>>],
    val_origin: usize,
) -> Vec<CovariateStats> {
    names
        .iter()
        .enumerate()
        .map(|(k, n)| {
            CovariateStats::fit(
                n,
                (0..panel.len()).flat_map(|s| {
                    values[s][k][panel.start[s].min(val_origin)..val_origin]
                        .iter()
                        .copied()
                }),
            )
        })
        .collect()
}

fn log_panel(panel: &SalesPanel) {
    eprintln!(
        "forecaster: {} series ({} in the file), {} periods from day {}; {} rows read, {} negative targets dropped, {} duplicate rows dropped",
        panel.len(),
        panel.report.series_total,
        panel.periods,
        date_of_day(panel.first_day),
        panel.report.rows_read,
        panel.report.negative_targets_dropped,
        panel.report.duplicate_rows_dropped
    );
    for f in &panel.report.filters {
        eprintln!("forecaster: filter {} dropped {} rows", f.filter, f.dropped);
    }
    for note in panel.report.empty_cell_notes() {
        eprintln!("forecaster: {note}");
    }
}

/// What the data was, for the model card: (what, how much).
pub fn summary(panel: &SalesPanel, frequency: Frequency) -> Vec<(String, String)> {
    let r = &panel.report;
    let t_all = panel.periods;
    let mut rows = vec![
        ("rows read".into(), r.rows_read.to_string()),
        ("rows used".into(), r.rows_used.to_string()),
        (
            "negative targets (returns) dropped".into(),
            r.negative_targets_dropped.to_string(),
        ),
        (
            "duplicate rows dropped".into(),
            r.duplicate_rows_dropped.to_string(),
        ),
        (
            "series".into(),
            format!("{} ({} in the file)", panel.len(), r.series_total),
        ),
        (
            "period".into(),
            format!(
                "{} to {} ({} {} periods)",
                date_of_day(panel.first_day),
                date_of_day(panel.day_of_period(t_all) - 1),
                t_all,
                frequency
            ),
        ),
    ];
    for (column, n) in r.empty_covariate_cells.iter().filter(|(_, n)| *n > 0) {
        rows.push((
            format!("empty cells in covariate `{column}`"),
            format!("{n}, each taken as {FILL_ASSUMPTION}"),
        ));
    }
    rows
}

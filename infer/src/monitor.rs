//! `infer monitor`: does the business's latest data still look like what the bundle was trained
//! on, and does the forecaster still forecast as well as its backtest said? Each check has a
//! threshold from the config's `[monitoring]` section; when one is crossed the job says why and
//! exits 7, so that a scheduler can ask someone to retrain.
//!
//! "Latest" is what the config's files hold after the last day the bundle was trained on (all
//! of it when there is nothing newer yet).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;
use shopcast_datasets::artifacts::files;
use shopcast_datasets::config::{ForecasterSection, MonitoringSection, RecommenderSection};
use shopcast_datasets::interactions::load_recommender_data;
use shopcast_datasets::privacy::Pseudonymiser;
use shopcast_datasets::profile::{
    covariate_values, seasonal_scale, target_values, InteractionProfile, SalesProfile,
};
use shopcast_datasets::sales::{load_sales_panel, SalesPanel};
use shopcast_datasets::table::{date_of_day, day_of, write_file_atomic};
use shopcast_datasets::{LoadedConfig, ShopConfig};
use shopcast_model::{Bundle, DeviceChoice};

use crate::forecast::{forecaster_of, LoadedForecaster};
use crate::output::open_device;
use crate::recommend::read_recommender_artifacts;

/// Options of `infer monitor`: compares the business's latest data (and the forecaster's recent
/// accuracy) with what the bundle was trained on.
#[derive(Debug, Clone, clap::Args)]
pub struct MonitorOptions {
    #[arg(long)]
    pub bundle: PathBuf,
    /// The business's config, pointing at its latest data.
    #[arg(long)]
    pub config: PathBuf,
    /// Data directory; overrides `business.data_dir`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// `auto` (a GPU through WGPU when one is present, else `flex`), `flex`, `ndarray` or `wgpu`.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

/// One check: its value, the threshold it is held to, and whether it crossed it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: String,
    pub value: f64,
    pub threshold: f64,
    pub flagged: bool,
    pub detail: String,
}

/// What `infer monitor` found.
#[derive(Debug, Clone, Serialize)]
pub struct MonitorReport {
    pub bundle: String,
    pub config: String,
    pub checked_at: String,
    pub checks: Vec<Check>,
    /// Whether any threshold was crossed.
    pub retrain: bool,
}

/// A threshold was crossed (exit code 7).
#[derive(Debug, thiserror::Error)]
#[error("retraining advised: {}", .0.join("; "))]
pub struct RetrainAdvised(pub Vec<String>);

fn check(name: &str, value: f64, threshold: f64, detail: String) -> Check {
    Check {
        check: name.into(),
        value,
        threshold,
        flagged: value.is_finite() && value > threshold,
        detail,
    }
}

fn volume_check(name: &str, now: f64, then: f64, threshold: f64) -> Check {
    let ratio = now / then.max(1e-9);
    check(
        name,
        (ratio - 1.0).abs(),
        threshold,
        format!("{now:.1} rows per day now, {then:.1} in training (x{ratio:.2})"),
    )
}

/// Share of `ids` that `known` does not hold.
fn new_share<'a>(ids: impl Iterator<Item = &'a str>, known: impl Fn(&str) -> bool) -> (f64, usize) {
    let distinct: HashSet<&str> = ids.collect();
    let new = distinct.iter().filter(|id| !known(id)).count();
    (new as f64 / distinct.len().max(1) as f64, distinct.len())
}

/// Runs `infer monitor`; the report says whether a threshold was crossed.
pub fn monitor(opts: &MonitorOptions) -> Result<MonitorReport> {
    let cfg = ShopConfig::load(&opts.config)?.with_data_dir_override(opts.data_dir.clone());
    let th = &cfg.config.monitoring;
    let bundle = Bundle::open(&opts.bundle)?;
    let mut checks = Vec::new();
    if let (true, Some(sec)) = (bundle.has("recommender"), &cfg.config.recommender) {
        checks.extend(recommender_checks(&cfg, sec, &bundle, th)?);
    }
    if let (true, Some(sec)) = (bundle.has("forecaster"), &cfg.config.forecaster) {
        checks.extend(forecaster_checks(&cfg, sec, &bundle, th, opts.device)?);
    }
    let report = MonitorReport {
        bundle: opts.bundle.display().to_string(),
        config: opts.config.display().to_string(),
        checked_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        retrain: checks.iter().any(|c| c.flagged),
        checks,
    };
    for c in &report.checks {
        crate::log::info(
            "monitor",
            &format!(
                "{} {}: {:.3} (threshold {}): {}",
                if c.flagged { "FLAGGED" } else { "ok" },
                c.check,
                c.value,
                c.threshold,
                c.detail
            ),
        );
    }
    if let Some(out) = &opts.out {
        write_file_atomic(out, &serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(report)
}

/// Event volume and the shares of customers and products the bundle has never seen.
fn recommender_checks(
    cfg: &LoadedConfig,
    sec: &RecommenderSection,
    bundle: &Bundle,
    th: &MonitoringSection,
) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    let then: InteractionProfile = bundle.read_json(files::RECOMMENDER_PROFILE)?;
    let artifacts = read_recommender_artifacts(bundle)?;
    let pseudonymiser = match &artifacts.pseudonyms {
        Some(info) => Some(Pseudonymiser::for_bundle(info)?),
        None => None,
    };
    let data = load_recommender_data(cfg, sec).context("reading the latest interactions")?;
    let now = InteractionProfile::of(&data);
    checks.push(volume_check(
        "events_volume_change",
        now.rows_per_day,
        then.rows_per_day,
        th.max_volume_change,
    ));
    let newer: Vec<_> = data
        .pairs
        .iter()
        .filter(|p| day_of(p.ts) > then.last_day)
        .collect();
    let (pairs, window) = if newer.is_empty() {
        (
            data.pairs.iter().collect(),
            "in the whole data (nothing newer than training)".to_string(),
        )
    } else {
        (
            newer,
            format!("active after {}", date_of_day(then.last_day)),
        )
    };
    let (share, n) =
        new_share(
            pairs.iter().map(|p| data.customers.id(p.customer)),
            |id| match &pseudonymiser {
                Some(ps) => artifacts.customers.get(&ps.apply(id)).is_some(),
                None => artifacts.customers.get(id).is_some(),
            },
        );
    checks.push(check(
        "new_customer_share",
        share,
        th.max_new_customer_share,
        format!(
            "{:.1}% of {n} customers {window} are not in the bundle",
            share * 100.0
        ),
    ));
    let (share, n) = new_share(pairs.iter().map(|p| data.products.id(p.product)), |id| {
        artifacts.products.get(id).is_some()
    });
    checks.push(check(
        "new_product_share",
        share,
        th.max_new_product_share,
        format!(
            "{:.1}% of {n} products {window} are not in the bundle",
            share * 100.0
        ),
    ));
    Ok(checks)
}

/// Sales volume, the PSI of the target and of every covariate, and the recent accuracy against
/// the backtest's.
fn forecaster_checks(
    cfg: &LoadedConfig,
    sec: &ForecasterSection,
    bundle: &Bundle,
    th: &MonitoringSection,
    device: DeviceChoice,
) -> Result<Vec<Check>> {
    let metrics: BTreeMap<String, f64> = bundle.read_json(files::METRICS)?;
    let mut checks = Vec::new();
    let then: SalesProfile = bundle.read_json(files::FORECASTER_PROFILE)?;
    let panel = load_sales_panel(cfg, sec).context("reading the latest sales")?;
    let now = SalesProfile::of(&panel);
    checks.push(volume_check(
        "sales_volume_change",
        now.rows_per_day,
        then.rows_per_day,
        th.max_volume_change,
    ));
    let newer = target_values(&panel, Some(then.last_day + 1));
    let newer_is_empty = newer.is_empty();
    let (values, window) = if newer_is_empty {
        (
            target_values(&panel, None),
            "the whole data (nothing newer than training)".to_string(),
        )
    } else {
        (
            newer,
            format!("the periods after {}", date_of_day(then.last_day)),
        )
    };
    let psi = then.target.psi(&values);
    checks.push(check(
        "target_psi",
        psi,
        th.max_target_psi,
        format!(
            "population stability index of `{}` over {window} ({} values) against training",
            sec.data.target,
            values.len()
        ),
    ));
    let from = (!newer_is_empty).then_some(then.last_day + 1);
    for (name, distribution) in &then.covariates {
        let Some(k) = panel
            .known_names
            .iter()
            .chain(&panel.past_names)
            .position(|n| n == name)
        else {
            continue;
        };
        let values = covariate_values(&panel, k, from);
        checks.push(check(
            &format!("psi.{name}"),
            distribution.psi(&values),
            th.max_covariate_psi,
            format!(
                "population stability index of `{name}` over {window} ({} values)",
                values.len()
            ),
        ));
    }
    let selected = open_device("monitor", device)?;
    let loaded = forecaster_of(bundle.clone(), &selected.device)?;
    let backtest = metrics.get("forecaster.mase").copied().unwrap_or(f64::NAN);
    match recent_mase(&loaded, &panel, then.last_day)? {
        Some((mase, series)) => checks.push(check(
            "accuracy_loss",
            mase / backtest - 1.0,
            th.max_accuracy_loss,
            format!(
                "MASE {mase:.3} on the periods after training ({series} series, forecast as \
                 the nightly job would without a plan file) against {backtest:.3} in the backtest"
            ),
        )),
        None => checks.push(Check {
            check: "accuracy_loss".into(),
            value: f64::NAN,
            threshold: th.max_accuracy_loss,
            flagged: false,
            detail: "no actuals after the bundle's last day yet".into(),
        }),
    }
    Ok(checks)
}

/// MASE of the bundle's forecasts (from the end of its data, covariates assumed as `infer
/// forecast` assumes them without a plan) on the actuals the latest data has for those periods,
/// each series scaled by its seasonal differences up to the end of training; with the number of
/// series that had actuals. `None` when no forecast period has an actual yet.
fn recent_mase(
    loaded: &LoadedForecaster,
    panel: &SalesPanel,
    trained_until: i64,
) -> Result<Option<(f64, usize)>> {
    let a = &loaded.artifacts;
    let mut assumptions = Vec::new();
    let future = loaded.future_covariates(None, &mut assumptions)?;
    let series: Vec<usize> = (0..a.series.len()).collect();
    let forecasts = loaded.forecast(&series, &future).context("forecasting")?;
    let in_panel: HashMap<Vec<String>, usize> =
        (0..panel.len()).map(|s| (panel.key_values(s), s)).collect();
    let period_of = |day: i64| -> Option<usize> {
        let offset = day - panel.first_day;
        (offset >= 0 && offset % panel.period_days == 0)
            .then_some((offset / panel.period_days) as usize)
            .filter(|&t| t < panel.periods)
    };
    let trained_periods = (0..panel.periods)
        .take_while(|&t| panel.day_of_period(t) <= trained_until)
        .count();
    let median = a
        .quantiles
        .iter()
        .position(|&q| (q - 0.5).abs() < 1e-9)
        .unwrap_or(a.quantiles.len() / 2);
    let (mut total, mut n) = (0.0, 0usize);
    for f in &forecasts {
        let Some(&s) = in_panel.get(&loaded.key_values(f.series)) else {
            continue;
        };
        let y = &panel.target[s];
        let Some(scale) = seasonal_scale(&y[..trained_periods], a.spec.season).filter(|v| *v > 0.0)
        else {
            continue;
        };
        let errors: Vec<f64> = f
            .days
            .iter()
            .zip(&f.quantiles)
            .filter_map(|(&day, q)| {
                let actual = y.get(period_of(day)?).copied().filter(|v| !v.is_nan())?;
                Some((actual - q[median]).abs() as f64)
            })
            .collect();
        if errors.is_empty() {
            continue;
        }
        total += errors.iter().sum::<f64>() / errors.len() as f64 / scale;
        n += 1;
    }
    Ok((n > 0).then(|| (total / n as f64, n)))
}

//! `infer recommend --bundle DIR [--customers FILE] [--new-products FILE] [--exclude FILE] [--top-k K] --out FILE.(csv|parquet) [--shard I/N | --shards N] [--device D] [--piece-rows N]`
//! `infer forecast  --bundle DIR [--future FILE] [--horizon H] [--aggregate KEY] [--plot DIR] --out FILE.(csv|parquet) [--shard I/N] [--device D]`
//! `infer reorder   --bundle DIR --stock FILE [--future FILE] [--service-level P] --out FILE.(csv|parquet) [--device D]`
//! `infer audience  --bundle DIR (--products FILE | --category NAME) --top N [--exclude FILE] [--opt-out FILE] --out FILE.(csv|parquet) [--device D]`
//! `infer anomalies --bundle DIR [--periods N] [--band P] --out FILE.(csv|parquet) [--shard I/N] [--device D]`
//!
//! `infer monitor   --bundle DIR --config FILE [--data-dir DIR] [--out FILE.json] [--device D]`
//!
//! Exit codes: 0 success, 2 usage error, 3 bad input, 4 bundle missing, corrupt or incompatible,
//! 5 runtime failure, 7 (monitor) a `[monitoring]` threshold was crossed: retraining advised.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use infer::log::{self, LogFormat};
use infer::{
    AnomalyOptions, AudienceOptions, ForecastOptions, MonitorOptions, RecommendOptions,
    ReorderOptions,
};
use shopcast_datasets::DataError;
use shopcast_model::BundleError;

/// Score customers and forecast demand from a trained shopcast bundle.
#[derive(Debug, Parser)]
#[command(name = "infer", version)]
struct Args {
    /// `text` (for people) or `json` (one JSON object per stderr line, for log collectors).
    #[arg(long, global = true, value_parser = parse_log_format, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// `text` or `json`.
fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    s.parse()
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Top-K products per customer, with a reason and a segment.
    Recommend(RecommendOptions),
    /// Quantile forecasts per series and date for the next horizon.
    Forecast(ForecastOptions),
    /// Order quantities: lead-time demand at a service level minus stock on hand.
    Reorder(ReorderOptions),
    /// The customers most likely to buy given products, or a category, for a campaign.
    Audience(AudienceOptions),
    /// Compares the business's latest data (and the forecaster's recent accuracy) with what the
    /// bundle was trained on; exit code 7 when a `[monitoring]` threshold is crossed.
    Monitor(MonitorOptions),
    /// Periods among the latest whose actual sales fall outside a wide forecast band.
    Anomalies(AnomalyOptions),
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Tensor buffers are reused instead of unmapped and faulted in again (2x on a step).
    shopcast_model::keep_freed_memory_for_reuse();
    log::set_format(args.log_format);
    let job = args.command.name();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = if err.chain().any(|e| e.is::<infer::RetrainAdvised>()) {
                7
            } else if err.chain().any(|e| e.is::<BundleError>()) {
                4
            } else if err.chain().any(|e| e.is::<DataError>()) {
                3
            } else {
                5
            };
            log::error(job, &format!("{err:#}"), code);
            ExitCode::from(code)
        }
    }
}

impl Command {
    /// The subcommand's name, for log lines.
    fn name(&self) -> &'static str {
        match self {
            Command::Recommend(_) => "recommend",
            Command::Forecast(_) => "forecast",
            Command::Audience(_) => "audience",
            Command::Reorder(_) => "reorder",
            Command::Anomalies(_) => "anomalies",
            Command::Monitor(_) => "monitor",
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    match &args.command {
        Command::Recommend(opts) => infer::recommend(opts).map(drop),
        Command::Forecast(opts) => infer::forecast(opts).map(drop),
        Command::Reorder(opts) => infer::reorder(opts).map(drop),
        Command::Audience(opts) => infer::audience(opts).map(drop),
        Command::Anomalies(opts) => infer::anomalies(opts).map(drop),
        Command::Monitor(opts) => {
            let report = infer::monitor(opts)?;
            if !report.retrain {
                return Ok(());
            }
            let reasons = report
                .checks
                .iter()
                .filter(|c| c.flagged)
                .map(|c| format!("{}: {}", c.check, c.detail))
                .collect();
            Err(infer::RetrainAdvised(reasons).into())
        }
    }
}

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

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use infer::log::{self, LogFormat};
use infer::output::{parse_shard, resolve_shard};
use infer::{AnomalyOptions, AudienceOptions, ForecastOptions, RecommendOptions, ReorderOptions};
use shopcast_datasets::DataError;
use shopcast_model::{BundleError, DeviceChoice};

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
    Recommend {
        #[arg(long)]
        bundle: PathBuf,
        /// CSV or Parquet file with the customers to score (default: every known customer).
        /// Customers the bundle has not seen are scored from the attribute columns the config
        /// reads for customers and/or a `recent_items` column (product ids separated by `|`).
        #[arg(long)]
        customers: Option<PathBuf>,
        /// CSV or Parquet file of products not in the bundle: the product id column and the
        /// attribute columns the config reads for products. They are ranked alongside the rest.
        #[arg(long)]
        new_products: Option<PathBuf>,
        #[arg(long, default_value_t = 10)]
        top_k: usize,
        /// CSV or Parquet file of products to recommend to no one (out of stock, withdrawn):
        /// the product id column.
        #[arg(long)]
        exclude: Option<PathBuf>,
        /// CSV or Parquet file of customers who opted out of personalisation (the customer id
        /// column): they get no rows.
        #[arg(long)]
        opt_out: Option<PathBuf>,
        /// Output file, `.csv` or `.parquet`.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        shard: ShardArgs,
        #[arg(long, value_parser = parse_device, default_value = "auto")]
        device: DeviceChoice,
        /// Customers read and scored per piece of the customer list (bounds memory).
        #[arg(long, default_value_t = infer::recommend::INPUT_PIECE_ROWS)]
        piece_rows: usize,
    },
    /// Quantile forecasts per series and date for the next horizon.
    Forecast {
        #[arg(long)]
        bundle: PathBuf,
        /// Planned future covariates (series keys, date, known covariates).
        #[arg(long)]
        future: Option<PathBuf>,
        /// Periods to forecast (at most the model's horizon).
        #[arg(long)]
        horizon: Option<usize>,
        /// Sum the forecast over every other key, per value of this series key and date (e.g.
        /// `store_id` to plan staff per store); adds expected revenue when the config names a
        /// price.
        #[arg(long)]
        aggregate: Option<String>,
        /// Also draw one chart per forecast series (SVG: recent history, median, P10-P90 band)
        /// into this directory.
        #[arg(long)]
        plot: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        shard: ShardArgs,
        #[arg(long, value_parser = parse_device, default_value = "auto")]
        device: DeviceChoice,
    },
    /// Order quantities: lead-time demand at a service level minus stock on hand.
    Reorder {
        #[arg(long)]
        bundle: PathBuf,
        /// CSV or Parquet with the series key columns, `on_hand`, `lead_time_days` and
        /// optionally `service_level`.
        #[arg(long)]
        stock: PathBuf,
        /// Planned future covariates (series keys, date, known covariates).
        #[arg(long)]
        future: Option<PathBuf>,
        /// Service level for rows without one in the stock file.
        #[arg(long, default_value_t = 0.95)]
        service_level: f64,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_parser = parse_device, default_value = "auto")]
        device: DeviceChoice,
    },
    /// The customers most likely to buy given products, or a category, for a campaign.
    Audience {
        #[arg(long)]
        bundle: PathBuf,
        /// CSV or Parquet file with the product id column: one audience per product.
        #[arg(
            long,
            conflicts_with = "category",
            required_unless_present = "category"
        )]
        products: Option<PathBuf>,
        /// One audience for the products of this category (the products' primary attribute).
        #[arg(long)]
        category: Option<String>,
        /// Customers per audience.
        #[arg(long)]
        top: usize,
        /// Products to build no audience for (out of stock, withdrawn): the product id column.
        #[arg(long)]
        exclude: Option<PathBuf>,
        /// Customers who opted out of personalisation (the customer id column): never listed.
        #[arg(long)]
        opt_out: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_parser = parse_device, default_value = "auto")]
        device: DeviceChoice,
    },
    /// Compares the business's latest data (and the forecaster's recent accuracy) with what the
    /// bundle was trained on; exit code 7 when a `[monitoring]` threshold is crossed.
    Monitor {
        #[arg(long)]
        bundle: PathBuf,
        /// The business's config, pointing at its latest data.
        #[arg(long)]
        config: PathBuf,
        /// Data directory; overrides `business.data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Also write the report as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, value_parser = parse_device, default_value = "auto")]
        device: DeviceChoice,
    },
    /// Periods among the latest whose actual sales fall outside a wide forecast band.
    Anomalies {
        #[arg(long)]
        bundle: PathBuf,
        /// Latest periods to check (default: the model's horizon).
        #[arg(long)]
        periods: Option<usize>,
        /// Central coverage of the band (0.98 = P1 to P99).
        #[arg(long, default_value_t = 0.98)]
        band: f64,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        shard: ShardArgs,
        #[arg(long, value_parser = parse_device, default_value = "auto")]
        device: DeviceChoice,
    },
}

/// Which part of the input a job covers (customers or series, by a stable hash of their id).
#[derive(Debug, clap::Args)]
struct ShardArgs {
    /// Score only shard I of N (I from 0).
    #[arg(long, value_parser = parse_shard)]
    shard: Option<(u32, u32)>,
    /// The number of shards, the index coming from JOB_COMPLETION_INDEX (Kubernetes Indexed
    /// Job) or SLURM_ARRAY_TASK_ID (Slurm array). Inside a Slurm array the shard is taken from
    /// SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT even without this flag.
    #[arg(long)]
    shards: Option<u32>,
}

impl ShardArgs {
    fn resolve(&self) -> anyhow::Result<Option<(u32, u32)>> {
        let (shard, from) =
            resolve_shard(self.shard, self.shards, &|name| std::env::var(name).ok())?;
        if let Some((i, n)) = shard {
            log::info("infer", &format!("shard {i}/{n} (from {from})"));
        }
        Ok(shard)
    }
}

/// `auto`, `flex`, `ndarray` or `wgpu`.
fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse()
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
            Command::Recommend { .. } => "recommend",
            Command::Forecast { .. } => "forecast",
            Command::Audience { .. } => "audience",
            Command::Reorder { .. } => "reorder",
            Command::Anomalies { .. } => "anomalies",
            Command::Monitor { .. } => "monitor",
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Recommend {
            bundle,
            customers,
            new_products,
            top_k,
            exclude,
            opt_out,
            out,
            shard,
            device,
            piece_rows,
        } => infer::recommend(&RecommendOptions {
            bundle,
            customers,
            new_products,
            top_k,
            exclude,
            opt_out,
            out,
            shard: shard.resolve()?,
            device,
            input_piece_rows: piece_rows,
        }),
        Command::Forecast {
            bundle,
            future,
            horizon,
            aggregate,
            plot,
            out,
            shard,
            device,
        } => infer::forecast(&ForecastOptions {
            bundle,
            future,
            horizon,
            out,
            shard: shard.resolve()?,
            device,
            aggregate,
            plot,
        }),
        Command::Reorder {
            bundle,
            stock,
            future,
            service_level,
            out,
            device,
        } => infer::reorder(&ReorderOptions {
            bundle,
            stock,
            future,
            service_level,
            out,
            device,
        }),
        Command::Audience {
            bundle,
            products,
            category,
            top,
            exclude,
            opt_out,
            out,
            device,
        } => infer::audience(&AudienceOptions {
            bundle,
            products,
            category,
            top,
            exclude,
            opt_out,
            out,
            device,
        }),
        Command::Monitor {
            bundle,
            config,
            data_dir,
            out,
            device,
        } => {
            let report = infer::monitor(&infer::MonitorOptions {
                bundle,
                config,
                data_dir,
                out,
                device,
            })?;
            if report.retrain {
                let reasons = report
                    .checks
                    .iter()
                    .filter(|c| c.flagged)
                    .map(|c| format!("{}: {}", c.check, c.detail))
                    .collect();
                return Err(infer::RetrainAdvised(reasons).into());
            }
            return Ok(());
        }
        Command::Anomalies {
            bundle,
            periods,
            band,
            out,
            shard,
            device,
        } => infer::anomalies(&AnomalyOptions {
            bundle,
            out,
            periods,
            band,
            shard: shard.resolve()?,
            device,
        }),
    }?;
    Ok(())
}

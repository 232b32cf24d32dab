//! `train --config FILE [--device auto|flex|ndarray|wgpu] [--only recommender|forecaster]
//!        [--out DIR] [--seed N] [--data-dir DIR] [--resume]`
//!
//! Exit codes: 0 success, 2 usage error, 3 bad input (config or data, or nothing to resume),
//! 4 bundle error, 5 runtime failure, 6 the bundle was written but failed its quality gate,
//! 130 interrupted by SIGINT/SIGTERM after writing a checkpoint (`--resume` continues).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use shopcast_datasets::DataError;
use shopcast_model::{BundleError, DeviceChoice};
use train::{CannotResume, Interrupted, Only, QualityGateFailed, TrainOptions};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OnlyArg {
    Recommender,
    Forecaster,
}

/// Train shopcast's recommender and demand forecaster on a business's data and write a bundle.
#[derive(Debug, Parser)]
#[command(name = "train", version)]
struct Args {
    /// The business config (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Compute device; overrides `business.device` in the config.
    #[arg(long, value_parser = parse_device)]
    device: Option<DeviceChoice>,
    /// Train only one model (the other is kept from the previous bundle, if any).
    #[arg(long, value_enum)]
    only: Option<OnlyArg>,
    /// Bundle directory (default `runs/<business name>/`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Random seed; overrides `business.seed`.
    #[arg(long)]
    seed: Option<u64>,
    /// Data directory; overrides `business.data_dir` and the SHOPCAST_DATA_DIR variable.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Continue an interrupted run from the checkpoint beside the bundle (`<out>.checkpoint/`);
    /// the same config, seed, device and data give the same model as an uninterrupted run.
    #[arg(long)]
    resume: bool,
}

/// `auto`, `flex`, `ndarray` or `wgpu`.
fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse()
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Tensor buffers are reused instead of unmapped and faulted in again (2x on a step).
    shopcast_model::keep_freed_memory_for_reuse();
    if let Err(e) = train::checkpoint::stop_on_signals() {
        eprintln!("warning: cannot catch SIGINT/SIGTERM ({e}): an interrupted run will not save a checkpoint");
    }
    let opts = TrainOptions {
        config: args.config,
        device: args.device,
        only: args.only.map(|o| match o {
            OnlyArg::Recommender => Only::Recommender,
            OnlyArg::Forecaster => Only::Forecaster,
        }),
        out: args.out,
        seed: args.seed,
        data_dir: args.data_dir,
        resume: args.resume,
    };
    match train::run(&opts) {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            let code = if err.chain().any(|e| e.is::<Interrupted>()) {
                130
            } else if err.chain().any(|e| e.is::<QualityGateFailed>()) {
                6
            } else if err
                .chain()
                .any(|e| e.is::<DataError>() || e.is::<CannotResume>())
            {
                3
            } else if err.chain().any(|e| e.is::<BundleError>()) {
                4
            } else {
                5
            };
            ExitCode::from(code)
        }
    }
}

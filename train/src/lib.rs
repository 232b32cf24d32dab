//! The `train` job as a library: loading a business's config and data, training the recommender
//! and the demand forecaster, evaluating them against baselines, and writing a bundle.
//!
//! The binary (`src/main.rs`) only parses the command line and maps errors to exit codes.

pub mod checkpoint;
pub mod forecast_eval;
pub mod forecaster;
pub mod model_card;
pub mod progress;
pub mod ranking;
pub mod recommender;
pub mod report;
pub mod run;
pub mod segments;
pub mod training_loop;
pub mod weight_average;

pub use checkpoint::{CannotResume, Interrupted};
pub use run::{run, Only, QualityGateFailed, TrainOptions, TrainSummary};

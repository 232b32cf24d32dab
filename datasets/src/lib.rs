//! Data for shopcast: the per-business config, polars loading with schema checks, id
//! vocabularies, the recommender's leave-one-out split, the forecaster's sales panel and windows,
//! and the synthetic demo shop.
//!
//! This crate knows nothing of the models: it produces plain arrays and serialisable tables that
//! the `train` and `infer` binaries turn into tensors.

pub mod artifact_tables;
pub mod artifacts;
pub mod charts;
pub mod config;
pub mod demo;
pub mod error;
mod event_file;
pub mod exp_smoothing;
pub mod interactions;
pub mod privacy;
pub mod profile;
pub mod sales;
pub mod table;
pub mod table_chunks;
pub mod vocab;
pub mod windows;

pub use config::{CheckedConfig, LoadedConfig, ShopConfig};
pub use error::DataError;
pub use vocab::IdVocab;

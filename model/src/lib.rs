//! Burn modules for shopcast: the hybrid two-tower recommender, the LSTM demand forecaster,
//! their losses, device selection and the saved-bundle format.
//!
//! Burn 0.22 has no backend type parameter: tensors and modules are plain, and the [`Device`]
//! (chosen at run time by [`device::select_device`]) decides the backend.
//!
//! [`Device`]: burn::prelude::Device

pub mod bundle;
pub mod device;
pub mod dropout;
pub mod forecaster;
pub mod fused_lstm;
pub mod host;
pub mod lazy_adam;
pub mod losses;
pub mod optim;
pub mod recommender;

pub use bundle::{Bundle, BundleError, BundleManifest, BundleWriter};
pub use device::{
    keep_freed_memory_for_reuse, seeded_init, select_device, DeviceChoice, SelectedDevice,
};
pub use forecaster::{DemandForecaster, ForecastInput, ForecasterConfig, ForecasterEnsemble};
pub use recommender::{
    Architecture, BatchIdRows, EntityFeatures, FoldInConfig, InteractionBatch, ProductMatrix,
    Recommender, RecommenderConfig, SequenceBatch, SequenceEvent, SequenceSlots,
};

//! The one optimiser setting of every training loop: Adam with Burn's defaults (betas 0.9 and
//! 0.999, epsilon 1e-5, no weight decay; the L2 term is in the losses). The checkpoints load
//! its state back into the same setting, the fold-in of new customers steps with the same
//! constants, and the PyTorch peer benchmark sets its epsilon to match.

use burn::optim::{AdamConfig, ModuleOptimizer};

/// Adam's first-moment decay.
pub const BETA_1: f32 = 0.9;
/// Adam's second-moment decay.
pub const BETA_2: f32 = 0.999;
/// Adam's epsilon (Burn's default; PyTorch's is 1e-8).
pub const EPSILON: f32 = 1e-5;

/// The optimiser's configuration.
pub fn adam_config() -> AdamConfig {
    AdamConfig::new()
        .with_beta_1(BETA_1)
        .with_beta_2(BETA_2)
        .with_epsilon(EPSILON)
}

/// A fresh optimiser (no moments yet).
pub fn adam() -> ModuleOptimizer {
    adam_config().init()
}

pub use crate::lazy_adam::{GatheredRows, LazyAdamTable};

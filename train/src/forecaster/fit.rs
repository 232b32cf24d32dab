//! The forecaster's training loop: random windows per series each epoch, Adam on the pinball
//! loss, early stopping on the validation windows; run by the shared driver in
//! [`crate::training_loop`], once per network of the ensemble.

use anyhow::{Context, Result};
use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shopcast_datasets::config::ForecasterSection;
use shopcast_datasets::windows::{WindowBatch, WindowSpec};
use shopcast_model::losses::pinball;
use shopcast_model::{DemandForecaster, ForecastInput, ForecasterConfig, ForecasterEnsemble};

use super::data::Prepared;
use crate::checkpoint::{Checkpoints, EpochLog};
use crate::progress::Progress;
use crate::training_loop::{run_epochs, Better, EpochTask, LoopSettings};

/// Training hyperparameters of the forecaster, saved in the bundle. The defaults are the config
/// file's.
#[derive(Config, Debug)]
pub struct ForecasterTrainingConfig {
    #[config(default = 15)]
    pub epochs: usize,
    #[config(default = 256)]
    pub batch_size: usize,
    #[config(default = 0.003)]
    pub learning_rate: f64,
    #[config(default = 32)]
    pub windows_per_series: usize,
    #[config(default = 3)]
    pub patience: usize,
    #[config(default = 42)]
    pub seed: u64,
    #[config(default = 3)]
    pub backtest_folds: usize,
    #[config(default = 28)]
    pub moving_average_window: usize,
    #[config(default = false)]
    pub allow_worse_than_baseline: bool,
    #[config(default = 1)]
    pub ensemble: usize,
    #[config(default = true)]
    pub refit: bool,
    /// Each network is a moving average of its parameters over about this many latest epochs
    /// (0: the network itself).
    #[config(default = 0.0)]
    pub average_epochs: f64,
}

impl ForecasterTrainingConfig {
    pub fn from_section(sec: &ForecasterSection, seed: u64) -> Self {
        let (t, e) = (&sec.training, &sec.evaluation);
        ForecasterTrainingConfig::new()
            .with_epochs(t.epochs)
            .with_batch_size(t.batch_size)
            .with_learning_rate(t.learning_rate)
            .with_windows_per_series(t.windows_per_series)
            .with_patience(t.patience)
            .with_seed(seed)
            .with_backtest_folds(e.backtest_folds)
            .with_moving_average_window(e.moving_average_window)
            .with_allow_worse_than_baseline(e.allow_worse_than_baseline)
            .with_ensemble(t.ensemble)
            .with_refit(t.refit)
            .with_average_epochs(t.average_epochs)
    }
}

/// A batch of training or validation windows as tensors: the input, the scaled target and its
/// mask.
fn training_input(
    batch: WindowBatch,
    spec: &WindowSpec,
    device: &Device,
) -> (ForecastInput, Tensor<2>, Tensor<2>) {
    let b = batch.len;
    let target = Tensor::from_data(TensorData::new(batch.target, [b, spec.horizon]), device);
    let mask = Tensor::from_data(
        TensorData::new(batch.target_mask, [b, spec.horizon]),
        device,
    );
    let input = ForecastInput::from_arrays(
        batch.encoder,
        batch.decoder,
        batch.keys,
        batch.baseline,
        b,
        spec.context,
        spec.horizon,
        device,
    );
    (input, target, mask)
}

/// Which periods a set of networks trains on, and for how long.
pub struct FitPlan<'a> {
    /// Names the loops' checkpoints (`forecaster`, `forecaster-fold1`...).
    pub label: String,
    /// Training windows end at or before this period.
    pub train_end: usize,
    /// Per network, a fixed number of epochs (a refit); `None`: early stopping on the
    /// validation windows.
    pub epochs: Option<&'a [usize]>,
}

impl FitPlan<'_> {
    /// Early stopping on the validation period, training on what lies before it.
    pub fn early_stopping(data: &Prepared) -> Self {
        FitPlan {
            label: "forecaster".into(),
            train_end: data.val_origin,
            epochs: None,
        }
    }
}

/// One epoch of one network: `windows_per_series` random origins per trainable series,
/// shuffled, in batches.
struct ForecasterEpochs<'a> {
    data: &'a Prepared,
    tc: &'a ForecasterTrainingConfig,
    quantiles: &'a [f64],
    /// Series with a whole training window before `train_end`.
    trainable: &'a [usize],
    train_end: usize,
    /// Score each epoch on the validation windows (early stopping).
    validating: bool,
    /// (series, origin) of each training window of the epoch.
    samples: Vec<(usize, usize)>,
    train_device: Device,
    plain: Device,
}

impl EpochTask for ForecasterEpochs<'_> {
    type Model = DemandForecaster;

    fn start_epoch(&mut self, rng: &mut ChaCha8Rng) {
        let (data, h) = (self.data, self.data.spec.horizon);
        self.samples.clear();
        for &s in self.trainable {
            let (lo, hi) = (
                data.spec.min_origin(data.panel.start[s]),
                self.train_end - h,
            );
            for _ in 0..self.tc.windows_per_series {
                self.samples.push((s, rng.random_range(lo..=hi)));
            }
        }
        self.samples.shuffle(rng);
    }

    fn step(
        &mut self,
        model: &DemandForecaster,
        step: usize,
        _rng: &mut ChaCha8Rng,
        read_loss: bool,
    ) -> Result<(Option<f64>, GradientsParams)> {
        let bs = self.tc.batch_size;
        let chunk = &self.samples[step * bs..((step + 1) * bs).min(self.samples.len())];
        let mut batch = WindowBatch::default();
        for &(s, origin) in chunk {
            self.data
                .spec
                .push(&mut batch, &self.data.view(s), origin, true);
        }
        let (input, target, mask) = training_input(batch, &self.data.spec, &self.train_device);
        // On the CPU backends the LSTM pair runs its hand-written backward pass here.
        let (loss, grads) = model
            .loss_and_gradients(input, |raw| pinball(raw, target, mask, self.quantiles))
            .map_err(anyhow::Error::msg)
            .context("forecaster training step")?;
        Ok((read_loss.then(|| loss.into_scalar::<f32>() as f64), grads))
    }

    fn saved_order(&self) -> Vec<u32> {
        self.samples
            .iter()
            .flat_map(|&(s, o)| [s as u32, o as u32])
            .collect()
    }

    fn restore_order(&mut self, order: &[u32]) {
        self.samples = order
            .chunks(2)
            .map(|p| (p[0] as usize, p.get(1).copied().unwrap_or(0) as usize))
            .collect();
    }

    /// The mean pinball loss over every series' window at the validation origin.
    fn validate(&mut self, snapshot: &DemandForecaster) -> Result<Option<f64>> {
        if !self.validating {
            return Ok(None);
        }
        let data = self.data;
        let mut val_loss = 0.0;
        for chunk in data.val_series.chunks(512) {
            let mut batch = WindowBatch::default();
            for &s in chunk {
                data.spec
                    .push(&mut batch, &data.view(s), data.val_origin, true);
            }
            let (input, target, mask) = training_input(batch, &data.spec, &self.plain);
            val_loss += pinball(snapshot.forward(input), target, mask, self.quantiles)
                .into_scalar::<f32>() as f64
                * chunk.len() as f64;
        }
        Ok(Some(val_loss / data.val_series.len().max(1) as f64))
    }
}

/// The trained networks of the ensemble.
pub struct Ensemble {
    pub model: ForecasterEnsemble,
    /// The members' mean best validation loss (infinite for a refit).
    pub best_loss: f64,
    /// The latest best epoch of any member.
    pub best_epoch: usize,
    /// Each member's best epoch (the epochs run, for a refit).
    pub best_epochs: Vec<usize>,
    /// Training and validation loss per epoch of the first network.
    pub history: Vec<EpochLog>,
}

/// Trains `tc.ensemble` networks from different seeds (the first from the run's seed, so an
/// ensemble of one is the plain model) as `plan` says, each checkpointed as its own loop. A
/// refit draws from the same seeds as the early-stopped networks it repeats.
pub fn train_ensemble(
    data: &Prepared,
    model_config: &ForecasterConfig,
    tc: &ForecasterTrainingConfig,
    device: &Device,
    checkpoints: &Checkpoints,
    plan: &FitPlan<'_>,
) -> Result<Ensemble> {
    let trainable = data.trainable_before(plan.train_end);
    let steps_per_epoch = (trainable.len() * tc.windows_per_series).div_ceil(tc.batch_size);
    let epochs_of = |member: usize| -> usize {
        plan.epochs
            .and_then(|e| e.get(member).copied())
            .unwrap_or(tc.epochs)
            .max(1)
    };
    let total_epochs: usize = (0..tc.ensemble).map(epochs_of).sum();
    let mut progress = Progress::new(&plan.label, (steps_per_epoch * total_epochs) as u64);
    let mut members = Vec::with_capacity(tc.ensemble);
    let mut best_epochs = Vec::with_capacity(tc.ensemble);
    let mut history = Vec::new();
    let (mut best_loss, mut best_epoch) = (0.0, 0);
    for member in 0..tc.ensemble {
        let seed = tc.seed.wrapping_add(member as u64 * 0x9e37_79b9);
        if tc.ensemble > 1 {
            progress.log(&format!("network {} of {}", member + 1, tc.ensemble));
        }
        let label = if tc.ensemble == 1 {
            plan.label.clone()
        } else {
            format!("{}-{member}", plan.label)
        };
        let train_device = device.clone().autodiff();
        let model =
            shopcast_model::seeded_init(&train_device, seed, || model_config.init(&train_device));
        let mut task = ForecasterEpochs {
            data,
            tc,
            quantiles: &model_config.quantiles,
            samples: Vec::new(),
            trainable: &trainable,
            train_end: plan.train_end,
            validating: plan.epochs.is_none(),
            train_device,
            plain: device.clone(),
        };
        let settings = LoopSettings {
            label: &label,
            epochs: epochs_of(member),
            steps_per_epoch,
            learning_rate: tc.learning_rate,
            patience: tc.patience,
            loss_every: 10,
            better: Better::Lower,
            score_name: "validation loss",
            average_steps: tc.average_epochs * steps_per_epoch as f64,
        };
        let trained = run_epochs(
            &mut task,
            &settings,
            model,
            ChaCha8Rng::seed_from_u64(seed ^ 0xf0_7eca57),
            || model_config.init(device),
            checkpoints,
            &mut progress,
        )?;
        members.push(trained.model);
        if member == 0 {
            history = trained.history;
        }
        best_loss += trained.best_score.unwrap_or(f64::INFINITY) / tc.ensemble as f64;
        best_epoch = best_epoch.max(trained.best_epoch);
        best_epochs.push(trained.best_epoch);
    }
    if plan.epochs.is_none() {
        progress.finish(&format!(
            "mean best validation loss {best_loss:.4} over {} network(s), best epochs {best_epochs:?}",
            tc.ensemble
        ));
    } else {
        progress.finish(&format!(
            "{} network(s) refitted on periods before {} for {best_epochs:?} epochs",
            tc.ensemble, plan.train_end
        ));
    }
    Ok(Ensemble {
        model: ForecasterEnsemble { members },
        best_loss,
        best_epoch,
        best_epochs,
        history,
    })
}

//! The one training loop both models run: epochs of shuffled steps with Adam, validation after
//! every epoch with early stopping, and a checkpoint after every epoch and after the current step
//! when a stop is requested. What differs between the models (how an epoch's order is drawn, what
//! one step computes, how a network is scored) is an [`EpochTask`].
//!
//! Resuming replays exactly: the generator's position, the epoch's order and the step are saved,
//! so a resumed run draws the same negatives and windows and ends with the same model.

use std::time::Instant;

use anyhow::Result;
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::{self, Checkpoints, EpochLog, LoopState, Validation};
use crate::progress::Progress;
use crate::weight_average::WeightAverage;

/// What one model's training loop does at each point of the shared driver.
pub trait EpochTask {
    /// The network trained (on the autodiff device while training).
    type Model: Module;

    /// Draws the order of a new epoch (not called for an epoch resumed mid-way).
    fn start_epoch(&mut self, rng: &mut ChaCha8Rng);

    /// The loss of step `step` of the epoch (its value read back only when `read_loss`, which
    /// forces a device sync) and the gradients of the model's parameters.
    fn step(
        &mut self,
        model: &Self::Model,
        step: usize,
        rng: &mut ChaCha8Rng,
        read_loss: bool,
    ) -> Result<(Option<f64>, GradientsParams)>;

    /// The epoch's order in the checkpoint's encoding, and back.
    fn saved_order(&self) -> Vec<u32>;
    fn restore_order(&mut self, order: &[u32]);

    /// The validation score of a snapshot (on the plain device), or `None` for a loop that
    /// trains for a fixed number of epochs.
    fn validate(&mut self, snapshot: &Self::Model) -> Result<Option<f64>>;

    /// Writes what the task trains itself, outside the loop's optimiser (id-table rows under
    /// lazy Adam), into the network; called before the network is validated or saved.
    fn sync_model(&mut self, model: Self::Model) -> Self::Model {
        model
    }

    /// The task's own optimiser state for the checkpoint (empty when it has none), and back,
    /// once the network it goes with is restored.
    fn saved_optimiser(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore_optimiser(&mut self, _model: &Self::Model, _saved: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// Which way a validation score improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Ranking quality (NDCG).
    Higher,
    /// A loss.
    Lower,
}

impl Better {
    /// Whether `score` beats the best so far (any number beats none; NaN never does).
    fn improves(self, score: f64, best: Option<f64>) -> bool {
        match (self, best) {
            (_, None) => !score.is_nan(),
            (Better::Higher, Some(best)) => score > best,
            (Better::Lower, Some(best)) => score < best,
        }
    }
}

/// The log line of a finished epoch, with how long its steps and its validation took.
fn epoch_line(
    epoch: usize,
    train_loss: f64,
    validation: Option<(&str, f64)>,
    (steps, step_ms, validation_s): (usize, f64, f64),
) -> String {
    match validation {
        Some((name, score)) => format!(
            "epoch {epoch}: train loss {train_loss:.4}, {name} {score:.4} ({steps} steps, {step_ms:.2} ms/step; validation {validation_s:.1}s)"
        ),
        None => format!(
            "epoch {epoch}: train loss {train_loss:.4} ({steps} steps, {step_ms:.2} ms/step)"
        ),
    }
}

/// The loop's fixed settings.
pub struct LoopSettings<'a> {
    /// Names the loop's checkpoint files (`recommender`, `forecaster-1`...).
    pub label: &'a str,
    pub epochs: usize,
    pub steps_per_epoch: usize,
    pub learning_rate: f64,
    /// Epochs without a better validation score before stopping.
    pub patience: usize,
    /// The loss is read back every this many steps (for the log line only).
    pub loss_every: usize,
    pub better: Better,
    /// What the validation score is, for the log (`validation NDCG@10`).
    pub score_name: &'a str,
    /// With a span of two steps or more, the loop keeps a moving average of the parameters
    /// over about that many latest steps, and validates, keeps and returns it instead of the
    /// network itself. Only for networks the loop's optimiser trains wholly (no
    /// [`EpochTask::sync_model`]).
    pub average_steps: f64,
}

/// What the loop produced.
pub struct Trained<M> {
    /// The best network by validation (the last one without validation), on the plain device.
    pub model: M,
    /// The best validation score (`None` without validation).
    pub best_score: Option<f64>,
    /// The best epoch (the last one without validation).
    pub best_epoch: usize,
    pub epochs_run: usize,
    pub history: Vec<EpochLog>,
}

/// Runs `task` from a freshly initialised `model` (or from loop `label`'s checkpoint when the job
/// resumes); `rng` is made from the loop's seed and `plain` builds an empty network on the plain
/// device (the template a saved best network or average is loaded into). Returns [`Interrupted`]
/// after saving when a stop is requested.
///
/// [`Interrupted`]: crate::checkpoint::Interrupted
pub fn run_epochs<T: EpochTask>(
    task: &mut T,
    settings: &LoopSettings<'_>,
    model: T::Model,
    mut rng: ChaCha8Rng,
    plain: impl Fn() -> T::Model,
    checkpoints: &Checkpoints,
    progress: &mut Progress,
) -> Result<Trained<T::Model>> {
    let label = settings.label;
    let mut model = model;
    let mut optim = shopcast_model::optim::adam();
    let mut best: Option<T::Model> = None;
    let mut state = checkpoints.new_state();
    let mut average = WeightAverage::spanning(settings.average_steps, model.valid());
    if let Some(saved) = checkpoints.restore(label, model.clone(), plain)? {
        saved.state.restore_rng(&mut rng)?;
        task.restore_order(&saved.state.order);
        task.restore_optimiser(&saved.model, &saved.task_optimiser)?;
        average = average.map(|fresh| match saved.average {
            Some(kept) => fresh.resumed(kept, saved.state.average_steps),
            None => fresh.resumed(saved.model.valid(), 0),
        });
        (model, optim, best, state) = (saved.model, saved.optim, saved.best, saved.state);
    }
    progress.skip(((state.epoch - 1) * settings.steps_per_epoch + state.next_step) as u64);
    let epochs = settings.epochs;
    let epochs_to_run = if state.finished { 0 } else { epochs };
    for epoch in state.epoch..=epochs_to_run {
        state.epochs_run = epoch;
        if state.next_step == 0 {
            task.start_epoch(&mut rng);
            (state.loss_sum, state.loss_n) = (0.0, 0);
        }
        let (steps_started, first_step) = (Instant::now(), state.next_step);
        for step in state.next_step..settings.steps_per_epoch {
            let (loss, grads) =
                task.step(&model, step, &mut rng, step % settings.loss_every == 0)?;
            if let Some(loss) = loss {
                state.loss_sum += loss;
                state.loss_n += 1;
            }
            model = optim.step(settings.learning_rate, model, grads);
            if let Some(average) = average.as_mut() {
                average.update(&model.valid());
            }
            let shown = state.loss_sum / state.loss_n.max(1) as f64;
            progress.step(|| format!("epoch {epoch}/{epochs} loss {shown:.4}"));
            checkpoint::step_done(label);
            if checkpoint::stop_requested() && step + 1 < settings.steps_per_epoch {
                state.next_step = step + 1;
                model = task.sync_model(model);
                let tensors = (&model, &optim, best.as_ref(), average.as_ref());
                save_loop(checkpoints, label, &mut state, &rng, task, tensors)?;
                progress.finish(&format!("stopped at epoch {epoch}, step {}", step + 1));
                return Err(checkpoints.interrupted());
            }
        }
        let train_loss = state.loss_sum / state.loss_n.max(1) as f64;
        let steps_run = settings.steps_per_epoch - first_step;
        let step_ms = steps_started.elapsed().as_secs_f64() * 1e3 / steps_run.max(1) as f64;
        model = task.sync_model(model);
        let snapshot = kept_network(average.as_ref(), &model);
        let validation_started = Instant::now();
        let validation = task.validate(&snapshot)?;
        let timing = (
            steps_run,
            step_ms,
            validation_started.elapsed().as_secs_f64(),
        );
        let named = validation.map(|score| (settings.score_name, score));
        progress.log(&epoch_line(epoch, train_loss, named, timing));
        let mut stop_early = false;
        if let Some(score) = validation {
            let improved = settings.better.improves(score, state.best_score);
            match state.validated(epoch, score, improved, settings.patience) {
                Validation::Best => best = Some(snapshot),
                Validation::Worse => {}
                Validation::Stop => {
                    progress.log(&state.stop_message());
                    stop_early = true;
                }
            }
        }
        state.history.push(EpochLog {
            epoch,
            train_loss,
            validation,
        });
        // The end of an epoch: the next one starts with its shuffle.
        (state.epoch, state.next_step) = (epoch + 1, 0);
        state.finished = stop_early || epoch == epochs;
        let tensors = (&model, &optim, best.as_ref(), average.as_ref());
        save_loop(checkpoints, label, &mut state, &rng, task, tensors)?;
        if stop_early {
            break;
        }
        if checkpoint::stop_requested() && epoch < epochs {
            progress.finish(&format!("stopped after epoch {epoch}"));
            return Err(checkpoints.interrupted());
        }
    }
    Ok(match (best, state.best_score) {
        (Some(model), Some(score)) => Trained {
            model,
            best_score: Some(score),
            best_epoch: state.best_epoch,
            epochs_run: state.epochs_run,
            history: state.history,
        },
        _ => Trained {
            model: kept_network(average.as_ref(), &model),
            best_score: None,
            best_epoch: state.epochs_run,
            epochs_run: state.epochs_run,
            history: state.history,
        },
    })
}

/// What a checkpoint holds besides the state: the network, its optimiser, and the best network
/// and the moving average where there are ones.
type LoopTensors<'a, M> = (
    &'a M,
    &'a ModuleOptimizer,
    Option<&'a M>,
    Option<&'a WeightAverage<M>>,
);

/// Saves loop `label`'s checkpoint: the state (with the generator's position and the epoch's
/// order), the network and the optimisers, and the best network and the moving average where
/// there are ones.
fn save_loop<T: EpochTask>(
    checkpoints: &Checkpoints,
    label: &str,
    state: &mut LoopState,
    rng: &ChaCha8Rng,
    task: &T,
    (model, optim, best, average): LoopTensors<'_, T::Model>,
) -> Result<()> {
    state.rng_word_pos = LoopState::rng_position(rng);
    state.order = task.saved_order();
    state.average_steps = average.map_or(0, WeightAverage::steps);
    let saved = (model, optim, task.saved_optimiser());
    checkpoints.save(
        label,
        state,
        saved,
        (best, average.map(WeightAverage::model)),
    )
}

/// The network the loop validates, keeps and returns: the moving average where it keeps one,
/// else the network itself (on the plain device).
fn kept_network<M: Module>(average: Option<&WeightAverage<M>>, network: &M) -> M {
    average.map_or_else(|| network.valid(), |average| average.model().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::prelude::*;
    use rand::{RngExt, SeedableRng};

    /// Least squares on noisy targets: every step's batch pulls the weights towards a different
    /// noisy answer, so the network the optimiser ends on jitters around the true weights.
    struct NoisyRegression {
        device: Device,
    }

    const TRUE_WEIGHTS: [f32; 4] = [0.5, -1.0, 2.0, 0.25];

    impl EpochTask for NoisyRegression {
        type Model = Linear;

        fn start_epoch(&mut self, _rng: &mut ChaCha8Rng) {}

        fn step(
            &mut self,
            model: &Linear,
            _step: usize,
            rng: &mut ChaCha8Rng,
            _read_loss: bool,
        ) -> Result<(Option<f64>, GradientsParams)> {
            let n = 8;
            let x: Vec<f32> = (0..n * 4).map(|_| rng.random_range(-1.0..1.0)).collect();
            let y: Vec<f32> = x
                .chunks(4)
                .map(|row| {
                    let clean: f32 = row.iter().zip(TRUE_WEIGHTS).map(|(a, w)| a * w).sum();
                    clean + rng.random_range(-2.0..2.0)
                })
                .collect();
            let x = Tensor::<2>::from_data(TensorData::new(x, [n, 4]), &self.device);
            let y = Tensor::<2>::from_data(TensorData::new(y, [n, 1]), &self.device);
            let loss = (model.forward(x) - y).powi_scalar(2).mean();
            let grads = GradientsParams::from_grads(loss.backward(), model);
            Ok((None, grads))
        }

        fn saved_order(&self) -> Vec<u32> {
            Vec::new()
        }

        fn restore_order(&mut self, _order: &[u32]) {}

        fn validate(&mut self, _snapshot: &Linear) -> Result<Option<f64>> {
            Ok(None)
        }
    }

    /// The squared distance of the trained weights from the true ones, after 10 epochs of 40
    /// steps with a moving average over `average_steps`.
    fn error_after_training(average_steps: f64) -> f64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let checkpoints =
            Checkpoints::new(&dir.path().join("bundle"), "test".into(), false).expect("dir");
        let plain = Device::default();
        let device = plain.clone().autodiff();
        let start = LinearConfig::new(4, 1).with_bias(false).init(&device);
        let settings = LoopSettings {
            label: "regression",
            epochs: 10,
            steps_per_epoch: 40,
            learning_rate: 0.05,
            patience: 3,
            loss_every: 10,
            better: Better::Lower,
            score_name: "validation loss",
            average_steps,
        };
        let mut task = NoisyRegression { device };
        let trained = run_epochs(
            &mut task,
            &settings,
            start,
            ChaCha8Rng::seed_from_u64(7),
            || LinearConfig::new(4, 1).with_bias(false).init(&plain),
            &checkpoints,
            &mut Progress::new("regression", 400),
        )
        .expect("training runs");
        let weights = trained.model.weight.val().into_data().try_to_vec::<f32>();
        let weights = weights.expect("float weights");
        weights
            .iter()
            .zip(TRUE_WEIGHTS)
            .map(|(w, t)| ((w - t) as f64).powi(2))
            .sum()
    }

    /// The loop returns the moving average, not the last network: on noisy steps it lies
    /// closer to the true weights (same seed, same steps: 0.015 against 0.044 when written).
    #[test]
    fn with_a_moving_average_the_loop_returns_the_averaged_network() {
        let last = error_after_training(0.0);
        let averaged = error_after_training(100.0);
        assert!(
            averaged * 2.0 < last,
            "squared error with the average {averaged:.5}, without {last:.5}"
        );
    }
}

//! Checkpoints of the training loops, so that an interrupted job continues where it stopped.
//!
//! After every epoch, and after the current step when SIGINT or SIGTERM asks the job to stop, a
//! loop writes its whole state into `<bundle>.checkpoint/`: the network's weights, Adam's moments,
//! the best network so far (early stopping), the position of its random number generator, the
//! epoch's shuffled order and where in it the loop is. `train --resume` reloads that state and
//! runs the remaining steps exactly as the uninterrupted run would have (same weights, same
//! random draws), so it ends with the same model. A loop that has finished leaves a `finished`
//! checkpoint, so resuming skips it.
//!
//! Writes are atomic: a checkpoint's tensors go to files named by a generation number, and the
//! small `<loop>.json` that names the generation is written to a temporary file and renamed last.
//! A job killed at any moment (even `kill -9` mid-write) leaves the previous checkpoint whole.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use shopcast_datasets::table::write_file_atomic;

/// Set by SIGINT/SIGTERM: the training loops stop after their current step.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Makes SIGINT and SIGTERM ask the training loops to stop after their current step; a second
/// signal ends the process at once. Called by the `train` binary.
pub fn stop_on_signals() -> std::io::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // The shutdown is registered first, so it only fires once the flag is already set.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&stop))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
        signal_hook::flag::register(signal, &STOP_REQUESTED)?;
    }
    Ok(())
}

/// Whether a stop was requested (by a signal, or by [`request_stop`]).
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

/// Asks the training loops to stop after their current step.
pub fn request_stop() {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// The job stopped on request after writing a checkpoint (exit code 130).
#[derive(Debug, thiserror::Error)]
#[error("interrupted: the training state is saved in {}; run the same command with --resume to continue", .0.display())]
pub struct Interrupted(pub PathBuf);

/// `train --resume` found nothing it can continue from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CannotResume(pub String);

/// Where a training loop is: everything besides the tensors that the next step depends on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoopState {
    /// What the checkpoint was written for (config, seed, device, data); must match to resume.
    pub fingerprint: String,
    /// Generation of the tensor files this state goes with.
    pub generation: u64,
    /// The epoch being run (1-based) and its next step; `next_step == 0` means the epoch has not
    /// started (its shuffle is still to come).
    pub epoch: usize,
    pub next_step: usize,
    /// Word position of the loop's ChaCha8 generator (decimal: JSON numbers stop at 2^53).
    pub rng_word_pos: String,
    /// The order of the epoch (the loop's own encoding: row indices, or pairs flattened).
    pub order: Vec<u32>,
    /// Running training loss of the epoch (for the log line only).
    pub loss_sum: f64,
    pub loss_n: usize,
    /// Early stopping: the best validation score and its epoch, and epochs since.
    pub best_score: Option<f64>,
    pub best_epoch: usize,
    pub since_best: usize,
    pub epochs_run: usize,
    /// The loop has ended (early stop or last epoch): its result is the best network.
    pub finished: bool,
    /// Every finished epoch's losses, for the report's curves.
    #[serde(default)]
    pub history: Vec<EpochLog>,
    /// Steps folded into the parameters' moving average (0 without one).
    #[serde(default)]
    pub average_steps: u64,
}

/// One epoch's mean training loss and validation score.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub train_loss: f64,
    pub validation: Option<f64>,
}

/// What an epoch's validation score means for early stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// The best so far: keep this network.
    Best,
    /// Not better, patience left.
    Worse,
    /// Not better for `patience` epochs: stop, keeping the best.
    Stop,
}

impl LoopState {
    /// Records epoch `epoch`'s validation `score`; `improved` says whether it beats the best.
    pub fn validated(
        &mut self,
        epoch: usize,
        score: f64,
        improved: bool,
        patience: usize,
    ) -> Validation {
        if improved {
            (self.best_score, self.best_epoch, self.since_best) = (Some(score), epoch, 0);
            return Validation::Best;
        }
        self.since_best += 1;
        if self.since_best >= patience {
            Validation::Stop
        } else {
            Validation::Worse
        }
    }

    /// The log line of an early stop.
    pub fn stop_message(&self) -> String {
        format!(
            "no improvement for {} epochs: stopping, keeping epoch {}",
            self.since_best, self.best_epoch
        )
    }

    /// The generator's position, to restore with [`LoopState::restore_rng`].
    pub fn rng_position(rng: &ChaCha8Rng) -> String {
        rng.get_word_pos().to_string()
    }

    /// Moves a generator made from the loop's seed to the saved position.
    pub fn restore_rng(&self, rng: &mut ChaCha8Rng) -> Result<()> {
        let pos: u128 = self
            .rng_word_pos
            .parse()
            .map_err(|_| CannotResume(format!("bad generator position {:?}", self.rng_word_pos)))?;
        rng.set_word_pos(pos);
        Ok(())
    }
}

/// A saved loop: its state and its tensors, loaded onto the caller's modules.
pub struct Restored<M> {
    pub state: LoopState,
    /// The network being trained (on the autodiff device) and the optimizer's state.
    pub model: M,
    pub optim: ModuleOptimizer,
    /// The best network so far, when there is one (on the plain device).
    pub best: Option<M>,
    /// The moving average of the parameters, for a loop that keeps one (on the plain device).
    pub average: Option<M>,
    /// The loop task's own optimiser state (empty when it has none).
    pub task_optimiser: Vec<u8>,
}

/// The checkpoint directory of one training job.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
    fingerprint: String,
    resume: bool,
}

impl Checkpoints {
    /// Checkpoints of the bundle `out` go to `<out>.checkpoint/`. `fingerprint` identifies what
    /// is trained (config, seed, device, data); with `resume`, loops continue from a matching
    /// checkpoint, and without it any old checkpoint is discarded.
    pub fn new(out: &Path, fingerprint: String, resume: bool) -> Result<Self> {
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "bundle".into());
        let dir = out.with_file_name(format!("{name}.checkpoint"));
        if resume {
            if !dir.join(JOB_FILE).exists() {
                return Err(CannotResume(format!(
                    "--resume: there is no checkpoint at {} (a job writes one when it is \
                     interrupted or after each epoch); run without --resume to start afresh",
                    dir.display()
                ))
                .into());
            }
            let saved = std::fs::read_to_string(dir.join(JOB_FILE))
                .with_context(|| format!("reading {}", dir.join(JOB_FILE).display()))?;
            if saved.trim() != fingerprint {
                return Err(CannotResume(format!(
                    "--resume: the checkpoint at {} was written for another config, seed, \
                     device or data; run without --resume to start afresh",
                    dir.display()
                ))
                .into());
            }
        } else if dir.exists() {
            if dir.join(JOB_FILE).exists() {
                eprintln!(
                    "train: starting afresh, discarding the checkpoint at {} (--resume continues from one)",
                    dir.display()
                );
            }
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("removing the old checkpoint {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the checkpoint directory {}", dir.display()))?;
        write_file_atomic(&dir.join(JOB_FILE), fingerprint.as_bytes())?;
        Ok(Checkpoints {
            dir,
            fingerprint,
            resume,
        })
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The error to return after saving on a stop request.
    pub fn interrupted(&self) -> anyhow::Error {
        Interrupted(self.dir.clone()).into()
    }

    /// A fresh loop state carrying the job's fingerprint.
    pub fn new_state(&self) -> LoopState {
        LoopState {
            fingerprint: self.fingerprint.clone(),
            generation: 0,
            epoch: 1,
            next_step: 0,
            rng_word_pos: "0".into(),
            order: Vec::new(),
            loss_sum: 0.0,
            loss_n: 0,
            best_score: None,
            best_epoch: 0,
            since_best: 0,
            epochs_run: 0,
            finished: false,
            history: Vec::new(),
            average_steps: 0,
        }
    }

    /// With `--resume`, the saved state of loop `label` loaded onto `model` (a freshly built
    /// network on the training device) and `plain_template()` (one on the plain device, for the
    /// best network and the moving average).
    pub fn restore<M: Module>(
        &self,
        label: &str,
        model: M,
        plain_template: impl Fn() -> M,
    ) -> Result<Option<Restored<M>>> {
        if !self.resume {
            return Ok(None);
        }
        let state_path = self.dir.join(format!("{label}.json"));
        if !state_path.exists() {
            return Ok(None);
        }
        let state: LoopState = serde_json::from_slice(
            &std::fs::read(&state_path)
                .with_context(|| format!("reading {}", state_path.display()))?,
        )
        .map_err(|e| CannotResume(format!("{} is not a checkpoint: {e}", state_path.display())))?;
        if state.fingerprint != self.fingerprint {
            return Err(CannotResume(format!(
                "{} was written for another config, seed, device or data",
                state_path.display()
            ))
            .into());
        }
        let file = |what: &str| {
            self.dir
                .join(format!("{label}.{}.{what}.bpk", state.generation))
        };
        let model = model
            .try_load_file(file("model"))
            .map_err(|e| CannotResume(format!("cannot load {}: {e:?}", file("model").display())))?;
        let optim = shopcast_model::optim::adam()
            .load(file("optim"))
            .map_err(|e| CannotResume(format!("cannot load {}: {e:?}", file("optim").display())))?;
        let tables = self.task_optimiser_file(label, state.generation);
        let task_optimiser = if tables.exists() {
            std::fs::read(&tables)
                .map_err(|e| CannotResume(format!("cannot read {}: {e}", tables.display())))?
        } else {
            Vec::new()
        };
        let plain = |what: &str| -> Result<Option<M>> {
            if !file(what).exists() {
                return Ok(None);
            }
            let loaded = plain_template().try_load_file(file(what)).map_err(|e| {
                CannotResume(format!("cannot load {}: {e:?}", file(what).display()))
            })?;
            Ok(Some(loaded))
        };
        let (best, average) = (plain("best")?, plain("average")?);
        eprintln!(
            "train: {label}: resuming at epoch {}, step {}{}",
            state.epoch,
            state.next_step,
            if state.finished { " (finished)" } else { "" }
        );
        Ok(Some(Restored {
            state,
            model,
            optim,
            best,
            average,
            task_optimiser,
        }))
    }

    /// Where loop `label`'s task keeps its own optimiser state in generation `generation`.
    fn task_optimiser_file(&self, label: &str, generation: u64) -> PathBuf {
        self.dir.join(format!("{label}.{generation}.tables.bin"))
    }

    /// Saves loop `label`: the state, then its tensors (the network, the optimiser and the
    /// task's own optimiser state; the best network and the parameters' moving average where
    /// there are ones) under the next generation, then the state file that points at them (the
    /// commit), then removes the previous generation.
    pub fn save<M: Module>(
        &self,
        label: &str,
        state: &mut LoopState,
        (model, optim, task_optimiser): (&M, &ModuleOptimizer, Vec<u8>),
        (best, average): (Option<&M>, Option<&M>),
    ) -> Result<()> {
        let previous = state.generation;
        state.generation += 1;
        let file = |g: u64, what: &str| self.dir.join(format!("{label}.{g}.{what}.bpk"));
        let fail = |what: &str| {
            format!(
                "writing the checkpoint {}",
                file(state.generation, what).display()
            )
        };
        model
            .clone()
            .save_file(file(state.generation, "model"))
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .with_context(|| fail("model"))?;
        optim
            .save(file(state.generation, "optim"))
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .with_context(|| fail("optim"))?;
        for (what, kept) in [("best", best), ("average", average)] {
            if let Some(kept) = kept {
                kept.clone()
                    .save_file(file(state.generation, what))
                    .map_err(|e| anyhow::anyhow!("{e:?}"))
                    .with_context(|| fail(what))?;
            }
        }
        if !task_optimiser.is_empty() {
            let tables = self.task_optimiser_file(label, state.generation);
            write_file_atomic(&tables, &task_optimiser)?;
        }
        let text = serde_json::to_vec(state).context("encoding the checkpoint state")?;
        write_file_atomic(&self.dir.join(format!("{label}.json")), &text)?;
        for what in ["model", "optim", "best", "average"] {
            let _ = std::fs::remove_file(file(previous, what));
        }
        let _ = std::fs::remove_file(self.task_optimiser_file(label, previous));
        Ok(())
    }

    /// Removes the checkpoint directory (after the bundle is written).
    pub fn remove(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The job's fingerprint file in the checkpoint directory.
const JOB_FILE: &str = "job.fingerprint";

/// Counts a finished step of loop `label`. Fault injection for the crash tests:
/// `SHOPCAST_FAULT_STOP_AFTER_STEPS=N` requests a stop (as SIGTERM would) after the N-th step of
/// the job, `SHOPCAST_FAULT_STOP_AFTER_STEPS=LABEL:N` after the N-th step of loop `LABEL`.
pub fn step_done(label: &str) {
    use std::sync::atomic::AtomicUsize;
    use std::sync::OnceLock;
    static LIMIT: OnceLock<Option<(Option<String>, usize)>> = OnceLock::new();
    static STEPS: AtomicUsize = AtomicUsize::new(0);
    let limit = LIMIT.get_or_init(|| {
        let v = std::env::var("SHOPCAST_FAULT_STOP_AFTER_STEPS").ok()?;
        match v.rsplit_once(':') {
            Some((l, n)) => Some((Some(l.to_string()), n.parse().ok()?)),
            None => Some((None, v.parse().ok()?)),
        }
    });
    if let Some((only, n)) = limit {
        if only.as_deref().is_none_or(|l| l == label)
            && STEPS.fetch_add(1, Ordering::SeqCst) + 1 == *n
        {
            request_stop();
        }
    }
}

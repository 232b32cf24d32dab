//! The sequential model's training loop: shuffled windows of customers' histories, every
//! purchase slot in a window's target part a target (predicted from strictly earlier baskets), a softmax over
//! negatives shared by the batch, Adam; run by the shared driver in [`crate::training_loop`].

use anyhow::Result;
use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shopcast_datasets::config::SequenceSection;
use shopcast_model::recommender::{ids_tensor, SequenceBatch};
use shopcast_model::{
    EntityFeatures, Recommender, RecommenderConfig, SequenceEvent, SequenceSlots,
};

use super::fit::{fitted, Fitted, Validate};
use super::sequences::{training_windows, TrainingWindow};
use crate::checkpoint::Checkpoints;
use crate::progress::Progress;
use crate::training_loop::{run_epochs, Better, EpochTask, LoopSettings};

/// One epoch of the sequential model: the windows in a shuffled order, in batches.
struct SequenceEpochs<'a, 'v> {
    histories: &'a [Vec<SequenceEvent>],
    windows: Vec<TrainingWindow>,
    /// Indices into `windows`; each epoch shuffles the previous epoch's order.
    order: Vec<usize>,
    sc: &'a SequenceSection,
    max_sequence: usize,
    n_products: usize,
    features: (&'a EntityFeatures, &'a EntityFeatures),
    train_device: Device,
    validate: Option<Validate<'a, 'v>>,
}

impl SequenceEpochs<'_, '_> {
    /// The negatives a batch shares: the whole catalogue when it is no larger than
    /// `negatives` (an exact softmax), else that many drawn uniformly.
    fn negatives(&self, rng: &mut ChaCha8Rng) -> Vec<u32> {
        let n = self.n_products as u32;
        if self.n_products <= self.sc.negatives {
            return (0..n).collect();
        }
        (0..self.sc.negatives)
            .map(|_| rng.random_range(0..n))
            .collect()
    }

    fn batch(&self, step: usize, rng: &mut ChaCha8Rng) -> SequenceBatch {
        let device = &self.train_device;
        let size = self.sc.batch_size;
        let chunk = &self.order[step * size..((step + 1) * size).min(self.order.len())];
        let windows: Vec<&TrainingWindow> = chunk.iter().map(|&i| &self.windows[i]).collect();
        let events: Vec<&[SequenceEvent]> = windows
            .iter()
            .map(|w| &self.histories[w.customer as usize][w.start..w.end])
            .collect();
        // Slot 0 is the start slot; event `i` sits in slot `i + 1`. Events before the
        // window's first target are context only (targets of an older window).
        let row_targets: Vec<Vec<usize>> = events
            .iter()
            .zip(&windows)
            .map(|(window, w)| {
                (0..window.len())
                    .filter(|&i| window[i].is_target && w.start + i >= w.first_target)
                    .collect()
            })
            .collect();
        // With basket completion, each target that shares its basket with another event is
        // also predicted from the rest of that basket.
        let completed: Vec<Vec<usize>> = if self.sc.basket_completion {
            events
                .iter()
                .zip(&row_targets)
                .map(|(window, targets)| {
                    targets
                        .iter()
                        .copied()
                        .filter(|&i| has_basket_mate(window, i))
                        .collect()
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut slots = SequenceSlots::training(&events, self.max_sequence);
        if self.sc.basket_completion {
            let query_slots: Vec<Vec<u32>> = completed
                .iter()
                .map(|c| c.iter().map(|&i| i as u32 + 1).collect())
                .collect();
            slots = slots.with_completion_queries(&query_slots);
        }
        let (mut target_slots, mut target_rows, mut targets) = (Vec::new(), Vec::new(), Vec::new());
        for (row, (window, ids)) in events.iter().zip(&row_targets).enumerate() {
            for &i in ids {
                target_slots.push(slots.flat_slot(row, i + 1));
                target_rows.push(row as u32);
                targets.push(window[i].product);
            }
        }
        for (row, (window, ids)) in events.iter().zip(&completed).enumerate() {
            for (k, &i) in ids.iter().enumerate() {
                target_slots.push(slots.flat_query(row, k));
                target_rows.push(row as u32);
                targets.push(window[i].product);
            }
        }
        let customers: Vec<u32> = windows.iter().map(|w| w.customer).collect();
        SequenceBatch {
            input: slots.to_device(device),
            customers: ids_tensor(&customers, device),
            target_slots: ids_tensor(&target_slots, device),
            target_rows: ids_tensor(&target_rows, device),
            targets: ids_tensor(&targets, device),
            negatives: ids_tensor(&self.negatives(rng), device),
        }
    }
}

/// Whether event `i` of a window shares its timestamp (its basket) with another event there.
fn has_basket_mate(window: &[SequenceEvent], i: usize) -> bool {
    let ts = window[i].ts;
    (i > 0 && window[i - 1].ts == ts) || window.get(i + 1).is_some_and(|e| e.ts == ts)
}

impl EpochTask for SequenceEpochs<'_, '_> {
    type Model = Recommender;

    fn start_epoch(&mut self, rng: &mut ChaCha8Rng) {
        self.order.shuffle(rng);
    }

    fn step(
        &mut self,
        model: &Recommender,
        step: usize,
        rng: &mut ChaCha8Rng,
        read_loss: bool,
    ) -> Result<(Option<f64>, GradientsParams)> {
        let batch = self.batch(step, rng);
        let (cf, pf) = self.features;
        let loss = model
            .sequence_loss(&batch, cf, pf)
            .map_err(|e| anyhow::anyhow!("sequential training step: {e}"))?;
        let value = read_loss.then(|| loss.clone().into_scalar::<f32>() as f64);
        let grads = loss.backward();
        Ok((value, GradientsParams::from_grads(grads, model)))
    }

    fn saved_order(&self) -> Vec<u32> {
        self.order.iter().map(|&i| i as u32).collect()
    }

    fn restore_order(&mut self, order: &[u32]) {
        if order.len() == self.order.len() {
            self.order = order.iter().map(|&i| i as usize).collect();
        }
    }

    fn validate(&mut self, snapshot: &Recommender) -> Result<Option<f64>> {
        self.validate.as_mut().map(|v| v(snapshot)).transpose()
    }
}

/// Trains a fresh sequential model on the windows of `histories` for up to `epochs` epochs;
/// with `validate`, training stops after `patience` epochs without a better validation
/// NDCG@10, keeping the best epoch.
#[allow(clippy::too_many_arguments)]
pub fn fit_sequential(
    model_config: &RecommenderConfig,
    sc: &SequenceSection,
    seed: u64,
    histories: &[Vec<SequenceEvent>],
    epochs: usize,
    validate: Option<Validate<'_, '_>>,
    features: (&EntityFeatures, &EntityFeatures),
    device: &Device,
    label: &str,
    checkpoints: &Checkpoints,
) -> Result<Fitted> {
    let train_device = device.clone().autodiff();
    let model =
        shopcast_model::seeded_init(&train_device, seed, || model_config.init(&train_device));
    let windows = training_windows(histories, model_config.max_sequence);
    let steps_per_epoch = windows.len().div_ceil(sc.batch_size);
    if steps_per_epoch == 0 {
        anyhow::bail!("the sequential recommender has no training window: no customer has a purchase in the training data");
    }
    let mut task = SequenceEpochs {
        histories,
        order: (0..windows.len()).collect(),
        windows,
        sc,
        max_sequence: model_config.max_sequence,
        n_products: model_config.n_products,
        features,
        train_device,
        validate,
    };
    let settings = LoopSettings {
        label,
        epochs,
        steps_per_epoch,
        learning_rate: sc.learning_rate,
        patience: sc.patience,
        loss_every: 5,
        better: Better::Higher,
        score_name: "validation NDCG@10",
        average_steps: sc.average_epochs * steps_per_epoch as f64,
    };
    let mut progress = Progress::new(label, (steps_per_epoch * epochs) as u64);
    let trained = run_epochs(
        &mut task,
        &settings,
        model,
        ChaCha8Rng::seed_from_u64(seed),
        || model_config.init(device),
        checkpoints,
        &mut progress,
    )?;
    Ok(fitted(trained, &mut progress))
}

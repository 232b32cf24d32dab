//! The recommender's training loop: shuffled positives, sampled negatives, the ranking loss with
//! an L2 term, Adam; run by the shared driver in [`crate::training_loop`].

use anyhow::Result;
use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shopcast_datasets::config::{
    self, NegativeSampling, RankingLoss, RecommenderSection, TableOptimizer,
};
use shopcast_model::losses::{bpr, sampled_bce};
use shopcast_model::recommender::{ids_tensor, LazyTables};
use shopcast_model::{
    Architecture, EntityFeatures, InteractionBatch, Recommender, RecommenderConfig,
};

use crate::checkpoint::{Checkpoints, EpochLog};
use crate::progress::Progress;
use crate::training_loop::{run_epochs, Better, EpochTask, LoopSettings, Trained};

/// Training hyperparameters of the recommender, saved in the bundle. The defaults are the
/// config file's.
#[derive(Config, Debug)]
pub struct RecommenderTrainingConfig {
    #[config(default = 60)]
    pub epochs: usize,
    #[config(default = 1024)]
    pub batch_size: usize,
    #[config(default = 0.01)]
    pub learning_rate: f64,
    #[config(default = 4)]
    pub negatives: usize,
    #[config(default = "NegativeSampling::Uniform")]
    pub negative_sampling: NegativeSampling,
    #[config(default = "RankingLoss::Bce")]
    pub loss: RankingLoss,
    #[config(default = "TableOptimizer::Adam")]
    pub optimizer: TableOptimizer,
    #[config(default = 1e-6)]
    pub l2: f64,
    #[config(default = 3)]
    pub patience: usize,
    #[config(default = 42)]
    pub seed: u64,
    #[config(default = 3)]
    pub min_items_per_customer: usize,
    #[config(default = 99)]
    pub sampled_negatives: usize,
    #[config(default = false)]
    pub refit: bool,
}

impl RecommenderTrainingConfig {
    pub fn from_section(sec: &RecommenderSection, seed: u64) -> Self {
        let t = &sec.training;
        RecommenderTrainingConfig::new()
            .with_epochs(t.epochs)
            .with_batch_size(t.batch_size)
            .with_learning_rate(t.learning_rate)
            .with_negatives(t.negatives)
            .with_negative_sampling(t.negative_sampling)
            .with_loss(t.loss)
            .with_optimizer(t.optimizer)
            .with_l2(t.l2)
            .with_patience(t.patience)
            .with_seed(seed)
            .with_min_items_per_customer(sec.evaluation.min_items_per_customer)
            .with_sampled_negatives(sec.evaluation.sampled_negatives)
            .with_refit(t.refit)
    }
}

/// The scoring heads the config's architecture asks to train: one, or every candidate for
/// `auto` (the best on the validation items is kept).
pub fn candidate_architectures(architecture: config::Architecture) -> Vec<Architecture> {
    match architecture {
        config::Architecture::TwoTower => vec![Architecture::TwoTower],
        config::Architecture::Neumf => vec![Architecture::Neumf],
        config::Architecture::Sequential => vec![Architecture::Sequential],
        config::Architecture::Auto => vec![
            Architecture::TwoTower,
            Architecture::Neumf,
            Architecture::Sequential,
        ],
    }
}

/// Negative sampler: uniform, or proportional to popularity^0.75.
struct NegativeSampler {
    cumulative: Option<Vec<f64>>,
    n_products: u32,
}

impl NegativeSampler {
    fn new(kind: NegativeSampling, train: &[(u32, u32, f32)], n_products: usize) -> Self {
        let cumulative = (kind == NegativeSampling::Popularity).then(|| {
            let mut counts = vec![0f64; n_products];
            for &(_, p, _) in train {
                counts[p as usize] += 1.0;
            }
            let mut acc = 0.0;
            counts
                .iter()
                .map(|c| {
                    acc += (c + 1.0).powf(0.75);
                    acc
                })
                .collect()
        });
        NegativeSampler {
            cumulative,
            n_products: n_products as u32,
        }
    }

    fn sample(&self, rng: &mut ChaCha8Rng, avoid: u32) -> u32 {
        loop {
            let p = match &self.cumulative {
                None => rng.random_range(0..self.n_products),
                Some(cum) => {
                    let r = rng.random::<f64>() * cum[cum.len() - 1];
                    cum.partition_point(|c| *c <= r).min(cum.len() - 1) as u32
                }
            };
            if p != avoid || self.n_products == 1 {
                return p;
            }
        }
    }
}

/// Scores a snapshot on the validation items (higher is better).
pub type Validate<'a, 'v> = &'a mut (dyn FnMut(&Recommender) -> Result<f64> + 'v);

/// One epoch of the recommender: the positives in a shuffled order, in batches.
struct RecommenderEpochs<'a, 'v> {
    train: &'a [(u32, u32, f32)],
    /// Indices into `train`; each epoch shuffles the previous epoch's order.
    order: Vec<usize>,
    tc: &'a RecommenderTrainingConfig,
    sampler: NegativeSampler,
    features: (&'a EntityFeatures, &'a EntityFeatures),
    train_device: Device,
    validate: Option<Validate<'a, 'v>>,
    /// The id tables under lazy Adam (`None`: dense Adam through the loop's optimiser).
    lazy_tables: Option<LazyTables>,
}

impl EpochTask for RecommenderEpochs<'_, '_> {
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
        let (tc, device) = (self.tc, &self.train_device);
        let start = step * tc.batch_size;
        let chunk = &self.order[start..(start + tc.batch_size).min(self.order.len())];
        let b = chunk.len();
        let mut customers = Vec::with_capacity(b);
        let mut positives = Vec::with_capacity(b);
        let mut weights = Vec::with_capacity(b);
        let mut negatives = Vec::with_capacity(b * tc.negatives);
        for &i in chunk {
            let (c, p, w) = self.train[i];
            customers.push(c);
            positives.push(p);
            weights.push(w);
            for _ in 0..tc.negatives {
                negatives.push(self.sampler.sample(rng, p));
            }
        }
        let batch = InteractionBatch {
            customers: ids_tensor(&customers, device),
            positives: ids_tensor(&positives, device),
            weights: Tensor::from_data(TensorData::new(weights, [b]), device),
            negatives: ids_tensor(&negatives, device),
            negatives_per_positive: tc.negatives,
        };
        let (cf, pf) = self.features;
        let (rows, leaves) = match &mut self.lazy_tables {
            None => (model.batch_id_rows(&batch), None),
            Some(tables) => {
                let (rows, leaves) = tables
                    .gather((&customers, &positives, &negatives), device)
                    .map_err(anyhow::Error::msg)?;
                (rows, Some(leaves))
            }
        };
        let (pos, neg, norms) = model.batch_logits_from_rows(&batch, rows, cf, pf);
        let ranking_loss = match tc.loss {
            RankingLoss::Bpr => bpr(pos, neg, batch.weights),
            RankingLoss::Bce => sampled_bce(pos, neg, batch.weights),
        };
        let loss = ranking_loss + norms * (tc.l2 / b as f64);
        let value = read_loss.then(|| loss.clone().into_scalar::<f32>() as f64);
        let grads = loss.backward();
        if let (Some(tables), Some(leaves)) = (&mut self.lazy_tables, leaves) {
            tables
                .step(tc.learning_rate, leaves, &grads)
                .map_err(anyhow::Error::msg)?;
        }
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

    fn sync_model(&mut self, model: Recommender) -> Recommender {
        match &self.lazy_tables {
            Some(tables) => tables.write_into(model, &self.train_device),
            None => model,
        }
    }

    fn saved_optimiser(&self) -> Vec<u8> {
        self.lazy_tables
            .as_ref()
            .map(LazyTables::state_bytes)
            .unwrap_or_default()
    }

    fn restore_optimiser(&mut self, _model: &Recommender, saved: &[u8]) -> Result<()> {
        match &mut self.lazy_tables {
            Some(tables) => tables.restore(saved).map_err(anyhow::Error::msg),
            None => Ok(()),
        }
    }
}

/// What one call of [`fit`] produced.
pub struct Fitted {
    /// The best model by validation NDCG@10 (the last one without validation).
    pub model: Recommender,
    pub history: Vec<EpochLog>,
    /// NaN without validation.
    pub best_score: f64,
    pub best_epoch: usize,
    pub epochs_run: usize,
}

/// Trains a fresh model on `train` for up to `epochs` epochs; with `validate`, training stops
/// after `patience` epochs without a better validation NDCG@10, keeping the best epoch.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    model_config: &RecommenderConfig,
    tc: &RecommenderTrainingConfig,
    train: &[(u32, u32, f32)],
    epochs: usize,
    validate: Option<Validate<'_, '_>>,
    features: (&EntityFeatures, &EntityFeatures),
    device: &Device,
    label: &str,
    checkpoints: &Checkpoints,
) -> Result<Fitted> {
    let train_device = device.clone().autodiff();
    let model =
        shopcast_model::seeded_init(&train_device, tc.seed, || model_config.init(&train_device));
    let steps_per_epoch = train.len().div_ceil(tc.batch_size);
    let lazy_tables = match tc.optimizer {
        TableOptimizer::LazyAdam => Some(LazyTables::new(&model).map_err(anyhow::Error::msg)?),
        TableOptimizer::Adam => None,
    };
    let mut task = RecommenderEpochs {
        train,
        order: (0..train.len()).collect(),
        tc,
        sampler: NegativeSampler::new(tc.negative_sampling, train, model_config.n_products),
        features,
        train_device,
        validate,
        lazy_tables,
    };
    let settings = LoopSettings {
        label,
        epochs,
        steps_per_epoch,
        learning_rate: tc.learning_rate,
        patience: tc.patience,
        loss_every: 20,
        better: Better::Higher,
        score_name: "validation NDCG@10",
        // The id tables train outside the loop's optimiser (lazy Adam): no average.
        average_steps: 0.0,
    };
    let mut progress = Progress::new(label, (steps_per_epoch * epochs) as u64);
    let trained = run_epochs(
        &mut task,
        &settings,
        model,
        ChaCha8Rng::seed_from_u64(tc.seed),
        || model_config.init(device),
        checkpoints,
        &mut progress,
    )?;
    Ok(fitted(trained, &mut progress))
}

/// What a finished loop produced, with its closing progress line.
pub fn fitted(trained: Trained<Recommender>, progress: &mut Progress) -> Fitted {
    match trained.best_score {
        Some(score) => progress.finish(&format!(
            "best validation NDCG@10 {score:.4} at epoch {}",
            trained.best_epoch
        )),
        None => progress.finish(&format!("{} epochs", trained.epochs_run)),
    }
    Fitted {
        model: trained.model,
        history: trained.history,
        best_score: trained.best_score.unwrap_or(f64::NAN),
        best_epoch: trained.best_epoch,
        epochs_run: trained.epochs_run,
    }
}

//! Training the recommender: sampled-negative loop, early stopping on validation NDCG@10, the
//! held-out evaluation against popularity and item-kNN, and customer segments.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{Context, Result};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use shopcast_datasets::artifacts::{RecommenderArtifacts, SegmentProfile};
use shopcast_datasets::config::RecommenderSection;
use shopcast_datasets::interactions::{load_recommender_data, FeatureSet, RecommenderData};
use shopcast_datasets::profile::InteractionProfile;
use shopcast_datasets::LoadedConfig;
use shopcast_model::losses::{bpr, sampled_bce};
use shopcast_model::recommender::ids_tensor;
use shopcast_model::recommender::ProductMatrix;
use shopcast_model::{EntityFeatures, InteractionBatch, Recommender, RecommenderConfig};

use crate::checkpoint::{self, Checkpoints, EpochLog, LoopState, Validation};
use crate::progress::Progress;
use crate::ranking::{
    build_cases, evaluate, full_ndcg, top_k, Case, DenseScores, ItemKnn, Popularity, Scorer,
};
use crate::segments::kmeans;

/// Validation customers scored after each epoch (a fixed sample keeps epochs fast).
const MAX_VALIDATION_CUSTOMERS: usize = 3000;
/// Working memory of one scoring call, in floats (64 MiB).
const SCORING_BUDGET_FLOATS: usize = 16 << 20;

/// Training hyperparameters of the recommender, saved in the bundle.
#[derive(Config, Debug)]
pub struct RecommenderTrainingConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub negatives: usize,
    pub negative_sampling: String,
    pub loss: String,
    pub l2: f64,
    pub patience: usize,
    pub seed: u64,
    pub min_items_per_customer: usize,
    pub sampled_negatives: usize,
    #[config(default = false)]
    pub refit: bool,
}

impl RecommenderTrainingConfig {
    pub fn from_section(sec: &RecommenderSection, seed: u64) -> Self {
        let t = &sec.training;
        RecommenderTrainingConfig::new(
            t.epochs,
            t.batch_size,
            t.learning_rate,
            t.negatives,
            t.negative_sampling.clone(),
            t.loss.clone(),
            t.l2,
            t.patience,
            seed,
            sec.evaluation.min_items_per_customer,
            sec.evaluation.sampled_negatives,
        )
        .with_refit(t.refit)
    }
}

/// The result of a recommender training run.
pub struct RecommenderOutcome {
    /// The best model (by validation NDCG@10), on the plain (non-autodiff) device.
    pub model: Recommender,
    pub model_config: RecommenderConfig,
    pub training_config: RecommenderTrainingConfig,
    pub artifacts: RecommenderArtifacts,
    /// `metrics.json` entries (`recommender.*`, `baseline.popularity.*`, `baseline.itemknn.*`).
    pub metrics: BTreeMap<String, f64>,
    /// Test metrics per customer group (written as `recommender.group_metrics.json`).
    pub group_metrics: Vec<GroupMetrics>,
    /// What the data was, for the model card: (what, how much).
    pub data_summary: Vec<(String, String)>,
    /// What the data was, for `infer monitor`.
    pub profile: InteractionProfile,
    /// Training loss and validation NDCG@10 per epoch (the early-stopped fit).
    pub history: Vec<EpochLog>,
    /// Per method, the share of the test top-10 slots going to each popularity decile of the
    /// catalogue (the first: the 10% most bought products).
    pub popularity_slots: Vec<(String, Vec<f64>)>,
    pub epochs_run: usize,
    pub best_epoch: usize,
}

/// Feature lookups of both towers on a device.
pub fn feature_lookups(
    customers: &FeatureSet,
    products: &FeatureSet,
    device: &Device,
) -> (EntityFeatures, EntityFeatures) {
    let (ct, cw) = customers.padded();
    let (pt, pw) = products.padded();
    (
        EntityFeatures::new(ct, cw, device),
        EntityFeatures::new(pt, pw, device),
    )
}

fn to_f32(t: Tensor<2>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading scores back from the device: {e:?}"))
}

/// The whole catalogue of a model, prepared for scoring.
pub fn catalogue(
    model: &Recommender,
    product_features: &EntityFeatures,
    n_products: usize,
    device: &Device,
) -> ProductMatrix {
    let all: Vec<u32> = (0..n_products as u32).collect();
    let products = ids_tensor(&all, device);
    model.product_matrix(
        model.product_vectors(products.clone(), product_features),
        model.product_biases(products),
    )
}

/// Scores of all products for the given customers, one row each; with `recent`, each
/// customer's vector gets the recency term (their recent products, its weight).
pub fn score_rows(
    model: &Recommender,
    customer_features: &EntityFeatures,
    product_features: &EntityFeatures,
    customers: &[u32],
    n_products: usize,
    recent: Option<(&[Vec<u32>], f32)>,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let matrix = catalogue(model, product_features, n_products, device);
    let chunk = model.customers_per_chunk(n_products, SCORING_BUDGET_FLOATS);
    let mut rows = Vec::with_capacity(customers.len());
    for chunk in customers.chunks(chunk) {
        let mut u = model.customer_vectors(ids_tensor(chunk, device), customer_features);
        if let Some((recent, weight)) = recent {
            let lists: Vec<Vec<u32>> = chunk.iter().map(|&c| recent[c as usize].clone()).collect();
            u = model.with_recent(u, &lists, &matrix, weight);
        }
        let scores = to_f32(model.score_all(u, &matrix))?;
        rows.extend(scores.chunks(n_products).map(<[f32]>::to_vec));
    }
    Ok(rows)
}

/// Per customer, their last `k` target products by time among the `allowed` pairs (oldest
/// first).
fn recent_items(data: &RecommenderData, allowed: &HashSet<(u32, u32)>, k: usize) -> Vec<Vec<u32>> {
    let mut recent = vec![Vec::new(); data.customers.len()];
    // `pairs` is sorted by (customer, time, product).
    for p in &data.pairs {
        if p.is_target && allowed.contains(&(p.customer, p.product)) {
            recent[p.customer as usize].push(p.product);
        }
    }
    for r in &mut recent {
        let skip = r.len().saturating_sub(k);
        r.drain(..skip);
    }
    recent
}

/// Weights tried for the recency term, picked by validation NDCG@10.
const RECENCY_WEIGHTS: [f32; 8] = [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0];

fn dense_for(
    rows: Vec<Vec<f32>>,
    customers: &[u32],
    n_customers: usize,
    n_products: usize,
) -> DenseScores {
    let mut all = vec![Vec::new(); n_customers];
    for (c, row) in customers.iter().zip(rows) {
        all[*c as usize] = row;
    }
    DenseScores {
        n_products,
        rows: all,
    }
}

/// Negative sampler: uniform, or proportional to popularity^0.75.
struct NegativeSampler {
    cumulative: Option<Vec<f64>>,
    n_products: u32,
}

impl NegativeSampler {
    fn new(kind: &str, train: &[(u32, u32, f32)], n_products: usize) -> Self {
        let cumulative = (kind == "popularity").then(|| {
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

/// Trains, evaluates and packages the recommender.
pub fn train_recommender(
    cfg: &LoadedConfig,
    sec: &RecommenderSection,
    device: &Device,
    seed: u64,
    checkpoints: &Checkpoints,
) -> Result<RecommenderOutcome> {
    let data = load_recommender_data(cfg, sec)?;
    let tc = RecommenderTrainingConfig::from_section(sec, seed);
    let split = data.leave_one_out(tc.min_items_per_customer)?;
    let n_c = data.customers.len();
    let n_p = data.products.len();
    eprintln!(
        "recommender: {} customers, {} products, {} interactions ({} rows read, {} exact duplicate rows collapsed); {} training pairs, {} held-out customers",
        n_c,
        n_p,
        data.pairs.len(),
        data.report.rows_read,
        data.report.duplicate_rows,
        split.train.len(),
        split.test.len()
    );
    for f in &data.report.filters {
        eprintln!(
            "recommender: filter {} dropped {} rows",
            f.filter, f.dropped
        );
    }
    if n_p < 11 {
        anyhow::bail!(shopcast_datasets::DataError::TooLittleData(format!(
            "the catalogue has {n_p} products; at least 11 are needed to rank a top 10"
        )));
    }

    let history = data.histories();
    let mut train_items = vec![Vec::new(); n_c];
    for &(c, p, _) in &split.train {
        train_items[c as usize].push(p);
    }
    let val_known = train_items.clone();
    let mut test_known = train_items;
    for &(c, p) in &split.validation {
        test_known[c as usize].push(p);
    }
    let mut val_pairs = split.validation.clone();
    val_pairs.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x7a11d));
    val_pairs.truncate(MAX_VALIDATION_CUSTOMERS);
    let val_cases = build_cases(&val_pairs, &val_known, &history, n_p, 0, seed);
    let test_cases = build_cases(
        &split.test,
        &test_known,
        &history,
        n_p,
        tc.sampled_negatives,
        seed,
    );

    let plain = device.clone();
    let (cf, pf) = feature_lookups(&data.customer_features, &data.product_features, &plain);
    let model_config = RecommenderConfig::new(
        n_c,
        n_p,
        data.customer_features.tokens.len(),
        data.product_features.tokens.len(),
    )
    .with_embedding_dim(sec.model.embedding_dim)
    .with_architecture(sec.model.architecture.clone())
    .with_mlp_layers(sec.model.mlp_layers.clone());
    let val_customers: Vec<u32> = val_cases.iter().map(|c| c.customer).collect();
    // Full NDCG@10 on the validation items, with or without the recency term.
    let validation_ndcg =
        |model: &Recommender, recent: Option<(&[Vec<u32>], f32)>| -> Result<f64> {
            let rows = score_rows(model, &cf, &pf, &val_customers, n_p, recent, &plain)?;
            Ok(full_ndcg(
                &dense_for(rows, &val_customers, n_c, n_p),
                &val_cases,
                n_p,
            ))
        };
    let mut validate = |snapshot: &Recommender| validation_ndcg(snapshot, None);
    let early = fit(
        &model_config,
        &tc,
        &split.train,
        tc.epochs,
        Some(&mut validate),
        (&cf, &pf),
        device,
        "recommender",
        checkpoints,
    )?;
    let (best_ndcg, best_epoch, epochs_run) =
        (early.best_score, early.best_epoch, early.epochs_run);
    // The recency term's weight, chosen on the validation items with the early-stopped model.
    let k_recent = sec.model.recent_items;
    let train_pairs: HashSet<(u32, u32)> = split.train.iter().map(|&(c, p, _)| (c, p)).collect();
    let val_recent = recent_items(&data, &train_pairs, k_recent);
    let mut recency_weight = 0.0f32;
    if k_recent > 0 {
        let mut tried = Vec::with_capacity(RECENCY_WEIGHTS.len());
        for w in RECENCY_WEIGHTS {
            let ndcg = validation_ndcg(&early.model, Some((&val_recent, w)))?;
            eprintln!("recommender: recency weight {w}: validation NDCG@10 {ndcg:.4}");
            tried.push((w, ndcg));
        }
        // The smallest weight within 1% of the best: a larger pull towards the latest basket
        // that validation cannot tell apart is not worth its cost elsewhere (it lowered the
        // sampled-protocol numbers on Online Retail).
        let best = tried.iter().map(|t| t.1).fold(f64::NEG_INFINITY, f64::max);
        recency_weight = tried
            .iter()
            .find(|t| t.1 >= best * 0.99)
            .map_or(0.0, |t| t.0);
        eprintln!("recommender: recency weight {recency_weight} chosen");
    }
    // Training pairs of the final model (and of the baselines, so all are compared alike).
    let mut final_train = split.train.clone();
    let best = if tc.refit {
        final_train.extend(split.validation.iter().map(|&(c, p)| (c, p, 1.0)));
        fit(
            &model_config,
            &tc,
            &final_train,
            best_epoch,
            None,
            (&cf, &pf),
            device,
            "recommender refit",
            checkpoints,
        )?
        .model
    } else {
        early.model
    };

    let mut metrics = BTreeMap::new();
    let test_customers: Vec<u32> = test_cases.iter().map(|c| c.customer).collect();
    let final_pairs: HashSet<(u32, u32)> = final_train.iter().map(|&(c, p, _)| (c, p)).collect();
    let test_recent = recent_items(&data, &final_pairs, k_recent);
    let rows = score_rows(
        &best,
        &cf,
        &pf,
        &test_customers,
        n_p,
        Some((&test_recent, recency_weight)),
        &plain,
    )?;
    let model_scores = dense_for(rows, &test_customers, n_c, n_p);
    insert_prefixed(
        &mut metrics,
        "recommender.",
        evaluate(&model_scores, &test_cases, n_p),
    );
    metrics.insert("recommender.validation.ndcg@10".into(), best_ndcg);
    metrics.insert("recommender.best_epoch".into(), best_epoch as f64);
    metrics.insert("recommender.test_customers".into(), test_cases.len() as f64);
    metrics.insert("recommender.recency_weight".into(), recency_weight as f64);
    metrics.insert("recommender.refit".into(), if tc.refit { 1.0 } else { 0.0 });
    let popularity = Popularity::fit(&final_train, n_p);
    insert_prefixed(
        &mut metrics,
        "baseline.popularity.",
        evaluate(&popularity, &test_cases, n_p),
    );
    let knn = ItemKnn::fit(&final_train, n_c, n_p);
    insert_prefixed(
        &mut metrics,
        "baseline.itemknn.",
        evaluate(&knn, &test_cases, n_p),
    );

    // Popularity bias: where the top-10 slots go, by the products' popularity decile.
    let popularity_slots = vec![
        (
            "model".to_string(),
            slots_by_popularity_decile(&model_scores, &test_cases, &final_train, n_p),
        ),
        (
            "item-kNN".to_string(),
            slots_by_popularity_decile(&knn, &test_cases, &final_train, n_p),
        ),
        (
            "popularity".to_string(),
            slots_by_popularity_decile(&popularity, &test_cases, &final_train, n_p),
        ),
    ];
    // Per group of each customer attribute (region, age band...): is a group badly served?
    let mut group_columns: Vec<String> = Vec::new();
    if let Some(t) = &sec.data.customers {
        group_columns.extend(t.categorical.iter().cloned());
        group_columns.extend(t.numeric_bands.iter().map(|b| b.column.clone()));
    }
    let group_metrics = metrics_by_group(
        &group_columns,
        &data.customer_features,
        &test_cases,
        (&model_scores, &popularity),
        n_p,
    );
    let (first_ts, last_ts) = (
        data.pairs.iter().map(|p| p.ts).min().unwrap_or(0),
        data.pairs.iter().map(|p| p.ts).max().unwrap_or(0),
    );
    let summary = vec![
        ("rows read".into(), data.report.rows_read.to_string()),
        ("rows used".into(), data.report.rows_used.to_string()),
        (
            "exact duplicate rows collapsed".into(),
            data.report.duplicate_rows.to_string(),
        ),
        ("customers".into(), n_c.to_string()),
        ("products".into(), n_p.to_string()),
        (
            "customer-product pairs".into(),
            data.pairs.len().to_string(),
        ),
        (
            "period".into(),
            format!(
                "{} to {}",
                shopcast_datasets::table::date_of_day(shopcast_datasets::table::day_of(first_ts)),
                shopcast_datasets::table::date_of_day(shopcast_datasets::table::day_of(last_ts))
            ),
        ),
        (
            "test customers (latest item held out)".into(),
            test_cases.len().to_string(),
        ),
    ];

    let mut artifacts = build_artifacts(sec, &data, &best, &cf, &plain, seed)?;
    let all_pairs: HashSet<(u32, u32)> =
        data.pairs.iter().map(|p| (p.customer, p.product)).collect();
    artifacts.recent = recent_items(&data, &all_pairs, k_recent);
    artifacts.recent_items = k_recent;
    artifacts.recency_weight = recency_weight;
    Ok(RecommenderOutcome {
        model: best,
        model_config,
        training_config: tc,
        artifacts,
        metrics,
        group_metrics,
        data_summary: summary,
        profile: InteractionProfile::of(&data),
        history: early.history.clone(),
        popularity_slots,
        epochs_run,
        best_epoch,
    })
}

/// Share of the test customers' top-10 slots (their known products left out) that goes to each
/// popularity decile of the catalogue, by the training pairs (decile 0: the most bought 10%).
fn slots_by_popularity_decile(
    scorer: &dyn Scorer,
    cases: &[Case],
    train: &[(u32, u32, f32)],
    n_p: usize,
) -> Vec<f64> {
    let mut counts = vec![0usize; n_p];
    for &(_, p, _) in train {
        counts[p as usize] += 1;
    }
    let mut by_popularity: Vec<usize> = (0..n_p).collect();
    by_popularity.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
    let mut decile = vec![0usize; n_p];
    for (rank, &p) in by_popularity.iter().enumerate() {
        decile[p] = (rank * 10 / n_p.max(1)).min(9);
    }
    let mut slots = vec![0f64; 10];
    let mut scores = Vec::with_capacity(n_p);
    for case in cases {
        scores.clear();
        scorer.scores(case.customer, &mut scores);
        for &p in &case.known {
            scores[p as usize] = f32::NEG_INFINITY;
        }
        for p in top_k(&scores, 10) {
            slots[decile[p]] += 1.0;
        }
    }
    let total: f64 = slots.iter().sum::<f64>().max(1.0);
    slots.iter().map(|s| s / total).collect()
}

/// Test metrics of the customers with one value of one attribute, beside the popularity
/// baseline's on the same customers.
#[derive(Debug, Clone, Serialize)]
pub struct GroupMetrics {
    pub attribute: String,
    pub value: String,
    pub customers: usize,
    pub model: BTreeMap<String, f64>,
    pub popularity: BTreeMap<String, f64>,
}

/// Splits the test cases by each customer's value of each attribute (`(none)` without one) and
/// evaluates the model and the popularity baseline on every group.
fn metrics_by_group(
    columns: &[String],
    features: &FeatureSet,
    cases: &[Case],
    (model, popularity): (&dyn Scorer, &dyn Scorer),
    n_p: usize,
) -> Vec<GroupMetrics> {
    let mut out = Vec::new();
    for column in columns {
        let prefix = format!("{column}=");
        let value_of = |c: u32| -> String {
            features
                .entity_tokens
                .get(c as usize)
                .and_then(|toks| {
                    toks.iter().find_map(|&t| {
                        features
                            .tokens
                            .get(t as usize)
                            .and_then(|tok| tok.strip_prefix(&prefix))
                    })
                })
                .unwrap_or("(none)")
                .to_string()
        };
        let mut groups: BTreeMap<String, Vec<Case>> = BTreeMap::new();
        for case in cases {
            groups
                .entry(value_of(case.customer))
                .or_default()
                .push(case.clone());
        }
        for (value, group) in groups {
            out.push(GroupMetrics {
                attribute: column.clone(),
                value,
                customers: group.len(),
                model: evaluate(model, &group, n_p),
                popularity: evaluate(popularity, &group, n_p),
            });
        }
    }
    out
}

/// What one call of [`fit`] produced.
struct Fitted {
    /// The best model by validation NDCG@10 (the last one without validation).
    model: Recommender,
    history: Vec<EpochLog>,
    best_score: f64,
    best_epoch: usize,
    epochs_run: usize,
}

/// The training loop: shuffled positives, `k` sampled negatives each, Adam; after every epoch
/// `validate` (when given) scores the model and training stops after `patience` epochs without
/// improvement, keeping the best epoch. The loop's state is checkpointed after every epoch, and
/// after the current step when a stop is requested (then it returns [`Interrupted`]).
#[allow(clippy::too_many_arguments)]
fn fit(
    model_config: &RecommenderConfig,
    tc: &RecommenderTrainingConfig,
    train: &[(u32, u32, f32)],
    epochs: usize,
    mut validate: Option<&mut dyn FnMut(&Recommender) -> Result<f64>>,
    (cf, pf): (&EntityFeatures, &EntityFeatures),
    device: &Device,
    label: &str,
    checkpoints: &Checkpoints,
) -> Result<Fitted> {
    let train_device = device.clone().autodiff();
    let mut model =
        shopcast_model::seeded_init(&train_device, tc.seed, || model_config.init(&train_device));
    let mut optim = AdamConfig::new().init();
    let sampler = NegativeSampler::new(&tc.negative_sampling, train, model_config.n_products);
    let mut rng = ChaCha8Rng::seed_from_u64(tc.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let steps_per_epoch = train.len().div_ceil(tc.batch_size);
    let mut best: Option<Recommender> = None;
    let mut state = checkpoints.new_state();
    if let Some(saved) = checkpoints.restore(label, model.clone(), || model_config.init(device))? {
        saved.state.restore_rng(&mut rng)?;
        if saved.state.order.len() == order.len() {
            order = saved.state.order.iter().map(|&i| i as usize).collect();
        }
        (model, optim, best, state) = (saved.model, saved.optim, saved.best, saved.state);
    }
    let done_steps = (state.epoch - 1) * steps_per_epoch + state.next_step;
    let mut progress = Progress::new(label, (steps_per_epoch * epochs) as u64);
    progress.skip(done_steps as u64);
    let epochs_to_run = if state.finished { 0 } else { epochs };
    for epoch in state.epoch..=epochs_to_run {
        state.epochs_run = epoch;
        if state.next_step == 0 {
            order.shuffle(&mut rng);
            (state.loss_sum, state.loss_n) = (0.0, 0);
        }
        let first_step = state.next_step;
        for (step, chunk) in order.chunks(tc.batch_size).enumerate().skip(first_step) {
            let b = chunk.len();
            let mut customers = Vec::with_capacity(b);
            let mut positives = Vec::with_capacity(b);
            let mut weights = Vec::with_capacity(b);
            let mut negatives = Vec::with_capacity(b * tc.negatives);
            for &i in chunk {
                let (c, p, w) = train[i];
                customers.push(c);
                positives.push(p);
                weights.push(w);
                for _ in 0..tc.negatives {
                    negatives.push(sampler.sample(&mut rng, p));
                }
            }
            let batch = InteractionBatch {
                customers: ids_tensor(&customers, &train_device),
                positives: ids_tensor(&positives, &train_device),
                weights: Tensor::from_data(TensorData::new(weights, [b]), &train_device),
                negatives: ids_tensor(&negatives, &train_device),
                negatives_per_positive: tc.negatives,
            };
            let (pos, neg, norms) = model.batch_logits(&batch, cf, pf);
            let ranking_loss = if tc.loss == "bpr" {
                bpr(pos, neg, batch.weights)
            } else {
                sampled_bce(pos, neg, batch.weights)
            };
            let loss = ranking_loss + norms * (tc.l2 / b as f64);
            // Reading the loss forces a device sync: do it every 20 steps only.
            if step % 20 == 0 {
                state.loss_sum += loss.clone().into_scalar::<f32>() as f64;
                state.loss_n += 1;
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(tc.learning_rate, model, grads);
            let shown = state.loss_sum / state.loss_n.max(1) as f64;
            progress.step(|| format!("epoch {epoch}/{epochs} loss {shown:.4}"));
            checkpoint::step_done(label);
            if checkpoint::stop_requested() && step + 1 < steps_per_epoch {
                state.next_step = step + 1;
                state.rng_word_pos = LoopState::rng_position(&rng);
                state.order = order.iter().map(|&i| i as u32).collect();
                checkpoints.save(label, &mut state, &model, &optim, best.as_ref())?;
                progress.finish(&format!("stopped at epoch {epoch}, step {}", step + 1));
                return Err(checkpoints.interrupted());
            }
        }
        let train_loss = state.loss_sum / state.loss_n.max(1) as f64;
        let mut stop_early = false;
        let mut validation = None;
        if let Some(validate) = validate.as_mut() {
            let snapshot = model.valid();
            let ndcg = validate(&snapshot)?;
            validation = Some(ndcg);
            progress.log(&format!(
                "epoch {epoch}: train loss {train_loss:.4}, validation NDCG@10 {ndcg:.4}"
            ));
            let improved = state.best_score.is_none_or(|score| ndcg > score);
            match state.validated(epoch, ndcg, improved, tc.patience) {
                Validation::Best => best = Some(snapshot),
                Validation::Worse => {}
                Validation::Stop => {
                    progress.log(&state.stop_message());
                    stop_early = true;
                }
            }
        } else {
            progress.log(&format!("epoch {epoch}: train loss {train_loss:.4}"));
        }
        state.history.push(EpochLog {
            epoch,
            train_loss,
            validation,
        });
        // The end of an epoch: the next one starts with its shuffle.
        (state.epoch, state.next_step) = (epoch + 1, 0);
        state.finished = stop_early || epoch == epochs;
        state.rng_word_pos = LoopState::rng_position(&rng);
        state.order = order.iter().map(|&i| i as u32).collect();
        checkpoints.save(label, &mut state, &model, &optim, best.as_ref())?;
        if stop_early {
            break;
        }
        if checkpoint::stop_requested() && epoch < epochs {
            progress.finish(&format!("stopped after epoch {epoch}"));
            return Err(checkpoints.interrupted());
        }
    }
    let epochs_run = state.epochs_run;
    Ok(match (best, state.best_score) {
        (Some(model), Some(best_score)) => {
            progress.finish(&format!(
                "best validation NDCG@10 {best_score:.4} at epoch {}",
                state.best_epoch
            ));
            Fitted {
                model,
                history: state.history.clone(),
                best_score,
                best_epoch: state.best_epoch,
                epochs_run,
            }
        }
        _ => {
            progress.finish(&format!("{epochs_run} epochs"));
            Fitted {
                model: model.valid(),
                history: state.history.clone(),
                best_score: f64::NAN,
                best_epoch: epochs_run,
                epochs_run,
            }
        }
    })
}

fn insert_prefixed(out: &mut BTreeMap<String, f64>, prefix: &str, m: BTreeMap<String, f64>) {
    for (k, v) in m {
        out.insert(format!("{prefix}{k}"), v);
    }
}

/// Customer vectors of every known customer, `[n, d]` row-major.
pub fn customer_matrix(
    model: &Recommender,
    cf: &EntityFeatures,
    n_customers: usize,
    device: &Device,
) -> Result<(Vec<f32>, usize)> {
    let ids: Vec<u32> = (0..n_customers as u32).collect();
    let mut out = Vec::new();
    let mut d = 0;
    for chunk in ids.chunks(4096) {
        let u = model.customer_vectors(ids_tensor(chunk, device), cf);
        d = u.dims()[1];
        out.extend(to_f32(u)?);
    }
    Ok((out, d))
}

fn build_artifacts(
    sec: &RecommenderSection,
    data: &RecommenderData,
    model: &Recommender,
    cf: &EntityFeatures,
    device: &Device,
    seed: u64,
) -> Result<RecommenderArtifacts> {
    let n_c = data.customers.len();
    let n_p = data.products.len();
    let mut purchased = vec![Vec::new(); n_c];
    let mut browsed = vec![Vec::new(); n_c];
    let mut popularity = vec![0u32; n_p];
    for p in &data.pairs {
        popularity[p.product as usize] += 1;
        if p.is_target {
            purchased[p.customer as usize].push(p.product);
        } else {
            browsed[p.customer as usize].push(p.product);
        }
    }
    for v in purchased.iter_mut().chain(browsed.iter_mut()) {
        v.sort_unstable();
        v.dedup();
    }
    let (vectors, d) = customer_matrix(model, cf, n_c, device)
        .context("computing customer vectors for segments")?;
    let segments = kmeans(&vectors, d, sec.model.segments, seed, 30);
    let k = segments.iter().map(|s| *s as usize + 1).max().unwrap_or(0);
    let mut segment_centroids = vec![vec![0f32; d]; k];
    let mut segment_sizes = vec![0usize; k];
    for (c, &s) in segments.iter().enumerate() {
        segment_sizes[s as usize] += 1;
        for (acc, x) in segment_centroids[s as usize]
            .iter_mut()
            .zip(&vectors[c * d..(c + 1) * d])
        {
            *acc += x;
        }
    }
    for (centre, &n) in segment_centroids.iter_mut().zip(&segment_sizes) {
        centre.iter_mut().for_each(|x| *x /= n.max(1) as f32);
    }
    let mut segment_profiles = Vec::with_capacity(k);
    for s in 0..k as u32 {
        let members: Vec<usize> = (0..n_c).filter(|&c| segments[c] == s).collect();
        let mut cat_counts: HashMap<String, usize> = HashMap::new();
        let mut product_counts: HashMap<u32, usize> = HashMap::new();
        let mut n_items = 0usize;
        for &c in &members {
            let items = if purchased[c].is_empty() {
                &browsed[c]
            } else {
                &purchased[c]
            };
            n_items += items.len();
            for &p in items {
                *product_counts.entry(p).or_default() += 1;
                if let Some(v) = data.product_features.primary_value(p as usize) {
                    *cat_counts.entry(v.to_string()).or_default() += 1;
                }
            }
        }
        let cat_total: usize = cat_counts.values().sum();
        let mut cats: Vec<(String, usize)> = cat_counts.into_iter().collect();
        cats.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut prods: Vec<(u32, usize)> = product_counts.into_iter().collect();
        prods.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        segment_profiles.push(SegmentProfile {
            segment: s,
            customers: members.len(),
            top_categories: cats
                .into_iter()
                .take(3)
                .map(|(c, n)| (c, n as f64 / cat_total.max(1) as f64))
                .collect(),
            mean_products: n_items as f64 / members.len().max(1) as f64,
            average_spend: data.spend.as_ref().map(|spend| {
                members.iter().map(|&c| spend[c]).sum::<f64>() / members.len().max(1) as f64
            }),
            top_products: prods.into_iter().take(20).map(|(p, _)| p).collect(),
        });
    }
    Ok(RecommenderArtifacts {
        customer_column: sec.data.customer_id.clone(),
        product_column: sec.data.product_id.clone(),
        customer_attributes: sec.data.customers.clone(),
        product_attributes: sec.data.products.clone(),
        customers: data.customers.clone(),
        pseudonyms: None,
        products: data.products.clone(),
        customer_features: data.customer_features.clone(),
        product_features: data.product_features.clone(),
        product_names: data.product_names.clone(),
        purchased,
        browsed,
        popularity,
        recent: Vec::new(),
        recent_items: 0,
        recency_weight: 0.0,
        segments,
        segment_centroids,
        segment_profiles,
    })
}

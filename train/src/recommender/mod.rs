//! Training the recommender, one stage per file: the data and its leave-one-out split
//! (`data.rs`), the training loop (`fit.rs`), the recency term (`recency.rs`), scoring (`score.rs`),
//! the held-out evaluation against popularity and item-kNN (`evaluate.rs`) and the bundle's side
//! data with the customer segments (`artifacts.rs`).

mod artifacts;
mod data;
mod evaluate;
mod fit;
mod recency;
mod score;

use std::collections::{BTreeMap, HashSet};

use anyhow::Result;
use burn::prelude::*;
use shopcast_datasets::artifacts::RecommenderArtifacts;
use shopcast_datasets::config::RecommenderSection;
use shopcast_datasets::profile::InteractionProfile;
use shopcast_datasets::LoadedConfig;
use shopcast_model::{Recommender, RecommenderConfig};

pub use evaluate::GroupMetrics;
pub use fit::RecommenderTrainingConfig;

use crate::checkpoint::{Checkpoints, EpochLog};
use crate::ranking::full_ndcg;
use artifacts::{build_artifacts, Recency};
use data::Prepared;
use fit::{fit, model_architecture, Fitted};
use recency::recent_items;
use score::{dense_for, feature_lookups, score_rows};

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

/// Trains with early stopping on the validation items, chooses the recency weight there,
/// optionally refits on training and validation items, evaluates on the test items and packages
/// the model.
// Splitting it further would scatter the one place that says how a recommender is trained.
// long: the stages in the order they run, each one call.
pub fn train_recommender(
    cfg: &LoadedConfig,
    sec: &RecommenderSection,
    device: &Device,
    seed: u64,
    checkpoints: &Checkpoints,
) -> Result<RecommenderOutcome> {
    let tc = RecommenderTrainingConfig::from_section(sec, seed);
    let prepared = data::prepare(cfg, sec, &tc)?;
    let Prepared {
        data,
        split,
        val_cases,
        test_cases,
    } = &prepared;
    let (n_c, n_p) = (data.customers.len(), data.products.len());
    let plain = device.clone();
    let (cf, pf) = feature_lookups(&data.customer_features, &data.product_features, &plain);
    let features = (&cf, &pf);
    let model_config = model_config(sec, &prepared);

    // Full NDCG@10 on the validation items, with or without the recency term.
    let val_customers: Vec<u32> = val_cases.iter().map(|c| c.customer).collect();
    let validation_ndcg =
        |model: &Recommender, recent: Option<(&[Vec<u32>], f32)>| -> Result<f64> {
            let rows = score_rows(model, features, &val_customers, n_p, recent, &plain)?;
            let scores = dense_for(rows, &val_customers, n_c, n_p);
            Ok(full_ndcg(&scores, val_cases, n_p))
        };
    let mut validate = |snapshot: &Recommender| validation_ndcg(snapshot, None);
    let early = fit(
        &model_config,
        &tc,
        &split.train,
        tc.epochs,
        Some(&mut validate),
        features,
        device,
        "recommender",
        checkpoints,
    )?;

    // The recency term's weight, chosen on the validation items with the early-stopped model.
    let k_recent = sec.model.recent_items;
    let train_pairs: HashSet<(u32, u32)> = split.train.iter().map(|&(c, p, _)| (c, p)).collect();
    let val_recent = recent_items(data, &train_pairs, k_recent);
    let recency_weight = if k_recent > 0 {
        recency::choose_weight(|w| validation_ndcg(&early.model, Some((&val_recent, w))))?
    } else {
        0.0
    };

    // Training pairs of the final model (and of the baselines, so all are compared alike).
    let mut final_train = split.train.clone();
    let Fitted {
        model: early_model,
        history,
        best_score: best_ndcg,
        best_epoch,
        epochs_run,
    } = early;
    let best = if tc.refit {
        final_train.extend(split.validation.iter().map(|&(c, p)| (c, p, 1.0)));
        let label = "recommender refit";
        let refit = fit(
            &model_config,
            &tc,
            &final_train,
            best_epoch,
            None,
            features,
            device,
            label,
            checkpoints,
        )?;
        refit.model
    } else {
        early_model
    };

    // The test items, scored as `infer` scores: with the recency term of the final pairs.
    let final_pairs: HashSet<(u32, u32)> = final_train.iter().map(|&(c, p, _)| (c, p)).collect();
    let test_recent = recent_items(data, &final_pairs, k_recent);
    let test_customers: Vec<u32> = test_cases.iter().map(|c| c.customer).collect();
    let recent = Some((test_recent.as_slice(), recency_weight));
    let rows = score_rows(&best, features, &test_customers, n_p, recent, &plain)?;
    let model_scores = dense_for(rows, &test_customers, n_c, n_p);
    let results = evaluate::evaluate_on_test(
        sec,
        &data.customer_features,
        &model_scores,
        test_cases,
        &final_train,
        (n_c, n_p),
    );
    let mut metrics = results.metrics;
    metrics.insert("recommender.validation.ndcg@10".into(), best_ndcg);
    metrics.insert("recommender.best_epoch".into(), best_epoch as f64);
    metrics.insert("recommender.test_customers".into(), test_cases.len() as f64);
    metrics.insert("recommender.recency_weight".into(), recency_weight as f64);
    metrics.insert("recommender.refit".into(), if tc.refit { 1.0 } else { 0.0 });

    let recency = Recency {
        items: k_recent,
        weight: recency_weight,
    };
    let artifacts = build_artifacts(sec, data, &best, &cf, &plain, seed, &recency)?;
    Ok(RecommenderOutcome {
        model: best,
        model_config,
        training_config: tc,
        artifacts,
        metrics,
        group_metrics: results.group_metrics,
        data_summary: data::summary(data, test_cases.len()),
        profile: InteractionProfile::of(data),
        history,
        popularity_slots: results.popularity_slots,
        epochs_run,
        best_epoch,
    })
}

/// The model's shapes for this data.
fn model_config(sec: &RecommenderSection, prepared: &Prepared) -> RecommenderConfig {
    let data = &prepared.data;
    RecommenderConfig::new(
        data.customers.len(),
        data.products.len(),
        data.customer_features.tokens.len(),
        data.product_features.tokens.len(),
    )
    .with_embedding_dim(sec.model.embedding_dim)
    .with_architecture(model_architecture(sec.model.architecture))
    .with_mlp_layers(sec.model.mlp_layers.clone())
}

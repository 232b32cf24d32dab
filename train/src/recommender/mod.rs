//! Training the recommender, one stage per file: the data and its leave-one-out split
//! (`data.rs`), the training loop (`fit.rs`; the sequential model's windows of history in
//! `sequences.rs` and its loop in `sequence_fit.rs`), the recency term (`recency.rs`), scoring (`score.rs`),
//! the held-out evaluation against popularity and item-kNN (`evaluate.rs`) and the bundle's side
//! data with the customer segments (`artifacts.rs`).

mod artifacts;
mod data;
mod evaluate;
mod fit;
mod recency;
mod score;
mod sequence_fit;
mod sequences;

use std::collections::{BTreeMap, HashSet};

use anyhow::{Context, Result};
use burn::prelude::*;
use shopcast_datasets::artifacts::RecommenderArtifacts;
use shopcast_datasets::config::RecommenderSection;
use shopcast_datasets::profile::InteractionProfile;
use shopcast_datasets::LoadedConfig;
use shopcast_model::{Architecture, EntityFeatures, Recommender, RecommenderConfig, SequenceEvent};

pub use evaluate::GroupMetrics;
pub use fit::RecommenderTrainingConfig;

use crate::checkpoint::{Checkpoints, EpochLog};
use crate::ranking::full_ndcg;
use artifacts::{build_artifacts, Recency};
use data::Prepared;
use fit::{candidate_architectures, fit, Fitted};
use recency::recent_items;
use score::{
    feature_lookups, model_outcomes, outcomes_by_completion_weight,
    with_sequence_vectors_in_id_table,
};
use sequence_fit::fit_sequential;

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
    /// Each architecture trained and its validation NDCG@10 (with its recency weight), when the
    /// config let `auto` choose; the chosen one is `model_config.architecture`.
    pub candidates: Vec<(Architecture, f64)>,
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
    let histories = SequenceHistories::of(sec, &prepared);

    // Full NDCG@10 on the validation items, with or without the recency term.
    let validation_ndcg =
        |model: &Recommender, recent: Option<(&[Vec<u32>], f32)>| -> Result<f64> {
            let outcomes = model_outcomes(
                model,
                features,
                val_cases,
                &histories.validation,
                n_p,
                recent,
                &plain,
            )?;
            Ok(full_ndcg(&outcomes))
        };
    let by_completion_weight = |model: &Recommender, weights: &[f64]| -> Result<Vec<f64>> {
        let outcomes = outcomes_by_completion_weight(
            model,
            features,
            val_cases,
            &histories.validation,
            n_p,
            weights,
            &plain,
        )?;
        Ok(outcomes.iter().map(|o| full_ndcg(o)).collect())
    };
    let validation = Validation {
        ndcg: &validation_ndcg,
        by_completion_weight: &by_completion_weight,
    };

    // Every candidate architecture (one unless the config says `auto`) is trained with early
    // stopping, gets its recency weight, and is judged on the validation items with that weight.
    let k_recent = sec.model.recent_items;
    let candidates = fit_candidates(
        sec,
        &prepared,
        &tc,
        (features, device),
        (checkpoints, &histories),
        &validation,
    )?;
    let (
        Candidate {
            model_config,
            early,
            recency_weight,
            ..
        },
        candidate_scores,
    ) = choose_candidate(candidates)?;

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
        let set = TrainingSet {
            pairs: &final_train,
            histories: &histories.test,
        };
        let refit = fit_model(
            &model_config,
            (sec, &tc),
            set,
            best_epoch,
            None,
            (features, device),
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
    let recent = Some((test_recent.as_slice(), recency_weight));
    let model_outcomes = model_outcomes(
        &best,
        features,
        test_cases,
        &histories.test,
        n_p,
        recent,
        &plain,
    )?;
    let results = evaluate::evaluate_on_test(
        sec,
        &data.customer_features,
        &model_outcomes,
        test_cases,
        &final_train,
        (n_c, n_p),
    );
    let mut metrics = results.metrics;
    metrics.insert("recommender.validation.ndcg@10".into(), best_ndcg);
    metrics.insert("recommender.best_epoch".into(), best_epoch as f64);
    metrics.insert("recommender.test_customers".into(), test_cases.len() as f64);
    metrics.insert("recommender.recency_weight".into(), recency_weight as f64);
    if let Some(w) = model_config.sequence_completion_weight {
        metrics.insert("recommender.completion_weight".into(), w);
    }
    metrics.insert("recommender.refit".into(), if tc.refit { 1.0 } else { 0.0 });
    if candidate_scores.len() > 1 {
        for (candidate, score) in &candidate_scores {
            metrics.insert(
                format!("recommender.candidate.{candidate}.validation.ndcg@10"),
                *score,
            );
        }
    }

    let recency = Recency {
        items: k_recent,
        weight: recency_weight,
    };
    let best = with_sequence_vectors_in_id_table(best, features, &histories.all, &plain)?;
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
        candidates: if candidate_scores.len() > 1 {
            candidate_scores
        } else {
            Vec::new()
        },
    })
}

/// Customers' histories for the sequential model (empty unless the config trains it): what
/// the validation items are scored from (the training pairs), what the test items are scored
/// from (training and validation pairs), and everything (the bundle's customer vectors).
struct SequenceHistories {
    validation: Vec<Vec<SequenceEvent>>,
    test: Vec<Vec<SequenceEvent>>,
    all: Vec<Vec<SequenceEvent>>,
}

impl SequenceHistories {
    fn of(sec: &RecommenderSection, prepared: &Prepared) -> Self {
        let wanted =
            candidate_architectures(sec.model.architecture).contains(&Architecture::Sequential);
        if !wanted {
            return SequenceHistories {
                validation: Vec::new(),
                test: Vec::new(),
                all: Vec::new(),
            };
        }
        let (data, split) = (&prepared.data, &prepared.split);
        let mut allowed: HashSet<(u32, u32)> =
            split.train.iter().map(|&(c, p, _)| (c, p)).collect();
        let validation = sequences::histories(data, &allowed);
        allowed.extend(split.validation.iter().copied());
        let test = sequences::histories(data, &allowed);
        allowed.extend(split.test.iter().copied());
        let all = sequences::histories(data, &allowed);
        SequenceHistories {
            validation,
            test,
            all,
        }
    }
}

/// What one fit trains on: the (customer, product, weight) pairs for the id-table models, the
/// same pairs as histories for the sequential one.
struct TrainingSet<'a> {
    pairs: &'a [(u32, u32, f32)],
    histories: &'a [Vec<SequenceEvent>],
}

/// Trains a fresh model of `model_config`'s architecture for up to `epochs` epochs (with early
/// stopping when given `validate`), by the loop that architecture trains with.
#[allow(clippy::too_many_arguments)]
fn fit_model(
    model_config: &RecommenderConfig,
    (sec, tc): (&RecommenderSection, &RecommenderTrainingConfig),
    set: TrainingSet<'_>,
    epochs: usize,
    validate: Option<fit::Validate<'_, '_>>,
    (features, device): ((&EntityFeatures, &EntityFeatures), &Device),
    label: &str,
    checkpoints: &Checkpoints,
) -> Result<Fitted> {
    match model_config.architecture {
        Architecture::Sequential => fit_sequential(
            model_config,
            &sec.sequence,
            tc.seed,
            set.histories,
            epochs,
            validate,
            features,
            device,
            label,
            checkpoints,
        ),
        Architecture::TwoTower | Architecture::Neumf => fit(
            model_config,
            tc,
            set.pairs,
            epochs,
            validate,
            features,
            device,
            label,
            checkpoints,
        ),
    }
}

/// One architecture trained with early stopping, with its recency weight.
struct Candidate {
    architecture: Architecture,
    model_config: RecommenderConfig,
    early: Fitted,
    recency_weight: f32,
    /// Validation NDCG@10 with that recency weight.
    validation_score: f64,
}

/// Full NDCG@10 on the validation items: of a model as it reads customers (with the recency
/// term: its recent products and weight), and of a sequential model at each of several
/// completion weights (one list, in order; one encoder pass for all).
struct Validation<'a> {
    ndcg: &'a NdcgOf<'a>,
    by_completion_weight: &'a NdcgByCompletionWeight<'a>,
}

/// Recent products of each customer and the recency weight.
type RecentWeighted<'r> = (&'r [Vec<u32>], f32);
/// A model's validation NDCG@10, with the recency term if given.
type NdcgOf<'a> = dyn for<'r> Fn(&Recommender, Option<RecentWeighted<'r>>) -> Result<f64> + 'a;
/// A sequential model's validation NDCG@10 at each completion weight given.
type NdcgByCompletionWeight<'a> = dyn Fn(&Recommender, &[f64]) -> Result<Vec<f64>> + 'a;

/// Trains each architecture the config asks for with early stopping on the validation items and
/// chooses its recency weight there.
fn fit_candidates(
    sec: &RecommenderSection,
    prepared: &Prepared,
    tc: &RecommenderTrainingConfig,
    (features, device): ((&EntityFeatures, &EntityFeatures), &Device),
    (checkpoints, histories): (&Checkpoints, &SequenceHistories),
    validation: &Validation<'_>,
) -> Result<Vec<Candidate>> {
    let (data, split) = (&prepared.data, &prepared.split);
    let k_recent = sec.model.recent_items;
    let train_pairs: HashSet<(u32, u32)> = split.train.iter().map(|&(c, p, _)| (c, p)).collect();
    let val_recent = recent_items(data, &train_pairs, k_recent);
    let architectures = candidate_architectures(sec.model.architecture);
    let mut candidates = Vec::with_capacity(architectures.len());
    for &architecture in &architectures {
        let mut model_config = model_config(sec, prepared, architecture);
        // A single architecture keeps the plain label, so its checkpoints resume as before.
        let label = match architectures.len() {
            1 => "recommender".to_string(),
            _ => format!("recommender-{architecture}"),
        };
        let completes = architecture == Architecture::Sequential && sec.sequence.basket_completion;
        let mut validate = |snapshot: &Recommender| snapshot_score(snapshot, completes, validation);
        let set = TrainingSet {
            pairs: &split.train,
            histories: &histories.validation,
        };
        let epochs = match architecture {
            Architecture::Sequential => sec.sequence.epochs,
            _ => tc.epochs,
        };
        let mut early = fit_model(
            &model_config,
            (sec, tc),
            set,
            epochs,
            Some(&mut validate),
            (features, device),
            &label,
            checkpoints,
        )?;
        if completes {
            let (weight, score) = recency::choose_completion_weight(|weights| {
                (validation.by_completion_weight)(&early.model, weights)
            })?;
            early.model = early.model.with_completion_weight(weight);
            early.best_score = score;
            model_config.sequence_completion_weight = Some(weight);
        }
        let (recency_weight, validation_score) = if k_recent > 0 {
            recency::choose_weight(|w| (validation.ndcg)(&early.model, Some((&val_recent, w))))?
        } else {
            (0.0, early.best_score)
        };
        candidates.push(Candidate {
            architecture,
            model_config,
            early,
            recency_weight,
            validation_score,
        });
    }
    Ok(candidates)
}

/// What early stopping judges a snapshot by: its validation NDCG@10 read as the saved model
/// will read customers. With basket completion that is the best completion weight's score (the
/// weight is chosen after training): judged by the next-basket reading alone, training can stop
/// at an epoch that is poor for the reading then used.
fn snapshot_score(
    snapshot: &Recommender,
    completes: bool,
    validation: &Validation<'_>,
) -> Result<f64> {
    if !completes {
        return (validation.ndcg)(snapshot, None);
    }
    let (_, score) = recency::best_completion_weight(|weights| {
        (validation.by_completion_weight)(snapshot, weights)
    })?;
    Ok(score)
}

/// The candidate with the best validation score, and every candidate's score.
fn choose_candidate(candidates: Vec<Candidate>) -> Result<(Candidate, Vec<(Architecture, f64)>)> {
    let scores: Vec<(Architecture, f64)> = candidates
        .iter()
        .map(|c| (c.architecture, c.validation_score))
        .collect();
    let best = best_index(&scores.iter().map(|s| s.1).collect::<Vec<_>>());
    let chosen = candidates
        .into_iter()
        .nth(best)
        .context("the config names no recommender architecture")?;
    if scores.len() > 1 {
        let listed: Vec<String> = scores.iter().map(|(a, s)| format!("{a} {s:.4}")).collect();
        eprintln!(
            "recommender: {} chosen on validation NDCG@10 ({})",
            chosen.architecture,
            listed.join(", ")
        );
    }
    Ok((chosen, scores))
}

/// The position of the highest score; ties keep the earlier (simpler) candidate, and a score
/// that is not a number never wins over one that is.
fn best_index(scores: &[f64]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if (!scores[best].is_finite() && s.is_finite()) || s > scores[best] {
            best = i;
        }
    }
    best
}

/// The model's shapes for this data and architecture.
fn model_config(
    sec: &RecommenderSection,
    prepared: &Prepared,
    architecture: Architecture,
) -> RecommenderConfig {
    let data = &prepared.data;
    RecommenderConfig::new(
        data.customers.len(),
        data.products.len(),
        data.customer_features.tokens.len(),
        data.product_features.tokens.len(),
    )
    .with_embedding_dim(sec.model.embedding_dim)
    .with_architecture(architecture)
    .with_mlp_layers(sec.model.mlp_layers.clone())
    .with_max_sequence(sec.sequence.max_sequence)
    .with_sequence_blocks(sec.sequence.blocks)
    .with_sequence_heads(sec.sequence.heads)
    .with_sequence_dropout(sec.sequence.dropout)
    .with_sequence_customer_embedding(sec.sequence.customer_embedding)
}

#[cfg(test)]
mod tests {
    use super::{best_index, snapshot_score, Validation};
    use shopcast_model::{Architecture, Recommender, RecommenderConfig};

    #[test]
    fn with_basket_completion_a_snapshot_scores_at_its_best_completion_weight() {
        let device = burn::prelude::Device::flex();
        let model: Recommender = RecommenderConfig::new(3, 4, 1, 1)
            .with_embedding_dim(8)
            .with_architecture(Architecture::Sequential)
            .init(&device);
        // A validation score that peaks at completion weight 0.75.
        let peak = |w: f64| 1.0 - (w - 0.75).abs();
        let ndcg = |m: &Recommender, _: Option<(&[Vec<u32>], f32)>| Ok(peak(m.completion_weight()));
        let by_completion_weight =
            |_: &Recommender, ws: &[f64]| Ok(ws.iter().map(|&w| peak(w)).collect());
        let validation = Validation {
            ndcg: &ndcg,
            by_completion_weight: &by_completion_weight,
        };
        let with = snapshot_score(&model, true, &validation).unwrap_or(0.0);
        let without = snapshot_score(&model, false, &validation).unwrap_or(1.0);
        assert_eq!(with, 1.0);
        assert_eq!(
            without, 0.25,
            "without completion the model reads at weight 0"
        );
    }

    #[test]
    fn the_best_validation_score_wins_and_ties_keep_the_first() {
        assert_eq!(best_index(&[0.50, 0.60]), 1);
        assert_eq!(best_index(&[0.60, 0.50]), 0);
        assert_eq!(best_index(&[0.55, 0.55]), 0);
        assert_eq!(best_index(&[f64::NAN, 0.40]), 1);
        assert_eq!(best_index(&[0.40, f64::NAN]), 0);
        assert_eq!(best_index(&[0.1]), 0);
    }
}

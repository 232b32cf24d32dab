//! The recommender's data: interactions and attributes read through the config, the
//! leave-one-out split, and the validation and test cases it is judged on.

use anyhow::Result;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use shopcast_datasets::config::RecommenderSection;
use shopcast_datasets::interactions::{load_recommender_data, RecommenderData, Split};
use shopcast_datasets::table::{date_of_day, day_of};
use shopcast_datasets::{DataError, LoadedConfig};

use super::fit::RecommenderTrainingConfig;
use crate::ranking::{build_cases, Case};

/// Validation customers scored after each epoch (a fixed sample keeps epochs fast).
const MAX_VALIDATION_CUSTOMERS: usize = 3000;

/// Everything training and evaluation read.
pub struct Prepared {
    pub data: RecommenderData,
    pub split: Split,
    /// Full-ranking cases of (a sample of) the validation items, for early stopping.
    pub val_cases: Vec<Case>,
    /// The held-out test items, with their sampled negatives.
    pub test_cases: Vec<Case>,
}

/// Loads the data, splits it and builds the evaluation cases.
pub fn prepare(
    cfg: &LoadedConfig,
    sec: &RecommenderSection,
    tc: &RecommenderTrainingConfig,
) -> Result<Prepared> {
    let data = load_recommender_data(cfg, sec)?;
    let split = data.leave_one_out(tc.min_items_per_customer)?;
    log_data(&data, &split);
    let n_p = data.products.len();
    if n_p < 11 {
        anyhow::bail!(DataError::TooLittleData(format!(
            "the catalogue has {n_p} products; at least 11 are needed to rank a top 10"
        )));
    }
    let history = data.histories();
    let mut train_items = vec![Vec::new(); data.customers.len()];
    for &(c, p, _) in &split.train {
        train_items[c as usize].push(p);
    }
    let val_known = train_items.clone();
    let mut test_known = train_items;
    for &(c, p) in &split.validation {
        test_known[c as usize].push(p);
    }
    let mut val_pairs = split.validation.clone();
    val_pairs.shuffle(&mut ChaCha8Rng::seed_from_u64(tc.seed ^ 0x7a11d));
    val_pairs.truncate(MAX_VALIDATION_CUSTOMERS);
    let val_cases = build_cases(&val_pairs, &val_known, &history, n_p, 0, tc.seed);
    let test_cases = build_cases(
        &split.test,
        &test_known,
        &history,
        n_p,
        tc.sampled_negatives,
        tc.seed,
    );
    Ok(Prepared {
        data,
        split,
        val_cases,
        test_cases,
    })
}

fn log_data(data: &RecommenderData, split: &Split) {
    eprintln!(
        "recommender: {} customers, {} products, {} interactions ({} rows read, {} exact duplicate rows collapsed); {} training pairs, {} held-out customers",
        data.customers.len(),
        data.products.len(),
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
}

/// What the data was, for the model card: (what, how much).
pub fn summary(data: &RecommenderData, test_customers: usize) -> Vec<(String, String)> {
    let (first_ts, last_ts) = (
        data.pairs.iter().map(|p| p.ts).min().unwrap_or(0),
        data.pairs.iter().map(|p| p.ts).max().unwrap_or(0),
    );
    vec![
        ("rows read".into(), data.report.rows_read.to_string()),
        ("rows used".into(), data.report.rows_used.to_string()),
        (
            "exact duplicate rows collapsed".into(),
            data.report.duplicate_rows.to_string(),
        ),
        ("customers".into(), data.customers.len().to_string()),
        ("products".into(), data.products.len().to_string()),
        (
            "customer-product pairs".into(),
            data.pairs.len().to_string(),
        ),
        (
            "period".into(),
            format!(
                "{} to {}",
                date_of_day(day_of(first_ts)),
                date_of_day(day_of(last_ts))
            ),
        ),
        (
            "test customers (latest item held out)".into(),
            test_customers.to_string(),
        ),
    ]
}

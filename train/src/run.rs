//! The `train` job: config, data, device, both models, the bundle and the summary table.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::config::Config;
use shopcast_datasets::artifacts::{files, metric_keys};
use shopcast_datasets::config::{DeviceName, ShopConfig};
use shopcast_datasets::demo::generate_if_missing;
use shopcast_datasets::privacy::Pseudonymiser;
use shopcast_datasets::{DataError, IdVocab, LoadedConfig};
use shopcast_model::bundle::{
    fingerprint_files, BundleManifest, BundleWriter, BURN_VERSION, FORMAT_VERSION,
};
use shopcast_model::{select_device, Bundle, DeviceChoice};

use crate::checkpoint::Checkpoints;
use crate::forecaster::{train_forecaster, ForecasterOutcome};
use crate::recommender::{train_recommender, RecommenderOutcome};

/// Which models to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    Recommender,
    Forecaster,
}

/// Options of one `train` run (the command line, as a library type).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub config: PathBuf,
    pub device: Option<DeviceChoice>,
    pub only: Option<Only>,
    pub out: Option<PathBuf>,
    pub seed: Option<u64>,
    pub data_dir: Option<PathBuf>,
    /// Continue from the checkpoint an interrupted run left beside the bundle.
    pub resume: bool,
}

/// The bundle was written but a quality gate failed (exit code 6).
#[derive(Debug, thiserror::Error)]
#[error("quality gate failed (the bundle is marked as failing): {}", .0.join("; "))]
pub struct QualityGateFailed(pub Vec<String>);

/// What a successful run produced.
#[derive(Debug)]
pub struct TrainSummary {
    pub bundle: PathBuf,
    pub metrics: BTreeMap<String, f64>,
}

/// Runs the whole training job.
pub fn run(opts: &TrainOptions) -> Result<TrainSummary> {
    let started = Instant::now();
    let loaded = ShopConfig::load(&opts.config)?.with_data_dir_override(opts.data_dir.clone());
    let seed = opts.seed.unwrap_or(loaded.config.business.seed);
    let choice = opts
        .device
        .unwrap_or_else(|| device_choice(loaded.config.business.device));
    let selected = select_device(choice).map_err(|e| DataError::Config {
        path: opts.config.clone(),
        msg: e,
    })?;
    if let Some(note) = &selected.note {
        eprintln!("warning: {note}");
    }
    eprintln!(
        "train: business {:?}, device {}, seed {seed}",
        loaded.config.business.name, selected.backend
    );
    let config = loaded
        .config
        .clone()
        .with_run_settings(seed, device_name(selected.backend));

    if let Some(demo) = &config.demo {
        let dir = loaded.data_dir();
        let started = Instant::now();
        if generate_if_missing(&dir, demo, seed)? {
            eprintln!(
                "train: generated the demo shop into {} ({:.1}s)",
                dir.display(),
                started.elapsed().as_secs_f64()
            );
        }
    }

    let want_rec = opts.only.is_none_or(|o| o == Only::Recommender);
    let want_fc = opts.only.is_none_or(|o| o == Only::Forecaster);
    if opts.only == Some(Only::Recommender) && config.recommender.is_none() {
        anyhow::bail!(DataError::Config {
            path: opts.config.clone(),
            msg: "--only recommender, but the config has no [recommender] section".into()
        });
    }
    if opts.only == Some(Only::Forecaster) && config.forecaster.is_none() {
        anyhow::bail!(DataError::Config {
            path: opts.config.clone(),
            msg: "--only forecaster, but the config has no [forecaster] section".into()
        });
    }
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&config.business.name));
    let previous = Bundle::open(&out).ok();

    let mut inputs = input_files(
        &loaded,
        &config,
        want_rec && config.recommender.is_some(),
        want_fc && config.forecaster.is_some(),
    );
    inputs.sort();
    // A missing file is bad input (exit 3), named as the loaders name it.
    for path in &inputs {
        std::fs::metadata(path).map_err(|e| DataError::Io {
            path: path.clone(),
            what: "open the data file".into(),
            source: e,
        })?;
    }
    let fingerprint = fingerprint_files(&inputs)?;
    // A checkpoint continues only the same training: config, seed, device, models and data.
    let job = format!(
        "{}\nseed {seed}\ndevice {}\nonly {:?}\ndata {fingerprint}",
        config
            .to_toml()
            .map_err(|e| anyhow::anyhow!("encoding the config: {e}"))?,
        selected.backend,
        opts.only,
    );
    let checkpoints = Checkpoints::new(&out, hex_sha256(job.as_bytes()), opts.resume)?;

    // Pseudonyms: the salt must be there before hours of training, not after.
    let pseudonymiser = match &config.privacy {
        Some(p) if p.pseudonymise_customer_ids && want_rec => Some((
            Pseudonymiser::from_env(&p.salt_env).map_err(|e| DataError::Config {
                path: opts.config.clone(),
                msg: format!("[privacy]: {e}"),
            })?,
            p.salt_env.clone(),
        )),
        _ => None,
    };

    let device = selected.device.clone();
    let recommender = match (&config.recommender, want_rec) {
        (Some(sec), true) => {
            let mut outcome = train_recommender(&loaded, sec, &device, seed, &checkpoints)
                .context("training the recommender")?;
            if let Some((p, salt_env)) = &pseudonymiser {
                let a = &mut outcome.artifacts;
                a.customers = IdVocab::from(
                    a.customers
                        .ids()
                        .iter()
                        .map(|id| p.apply(id))
                        .collect::<Vec<_>>(),
                );
                a.pseudonyms = Some(p.info(salt_env));
            }
            Some(outcome)
        }
        _ => None,
    };
    // A stop requested after the recommender's last step: its result is checkpointed already.
    if crate::checkpoint::stop_requested() && want_fc && config.forecaster.is_some() {
        return Err(checkpoints.interrupted());
    }
    let forecaster = match (&config.forecaster, want_fc) {
        (Some(sec), true) => Some(
            train_forecaster(&loaded, sec, &device, seed, &checkpoints)
                .context("training the forecaster")?,
        ),
        _ => None,
    };
    let mut metrics: BTreeMap<String, f64> = BTreeMap::new();
    let mut writer = BundleWriter::create(&out)?;
    let written = write_models(
        &mut writer,
        recommender.as_ref(),
        forecaster.as_ref(),
        &mut metrics,
    );
    if let Err(e) = written {
        writer.abandon();
        return Err(e);
    }
    let mut models: Vec<String> = Vec::new();
    if recommender.is_some() {
        models.push("recommender".into());
    }
    if forecaster.is_some() {
        models.push("forecaster".into());
    }
    // Keep the model that was not retrained from the previous bundle.
    if let Some(prev) = &previous {
        let prev_metrics: BTreeMap<String, f64> =
            prev.read_json(files::METRICS).unwrap_or_default();
        for (name, retrained, methods) in [
            (
                "recommender",
                recommender.is_some(),
                &metric_keys::RECOMMENDER_METHODS[..],
            ),
            (
                "forecaster",
                forecaster.is_some(),
                &metric_keys::FORECASTER_METHODS[..],
            ),
        ] {
            if !retrained && prev.has(name) {
                writer.carry_over(prev, name)?;
                models.push(name.into());
                for (k, v) in prev_metrics
                    .iter()
                    .filter(|(k, _)| methods.iter().any(|(_, p)| k.starts_with(p)))
                {
                    metrics.insert(k.clone(), *v);
                }
                eprintln!("train: kept the {name} of the previous bundle");
            }
        }
    }
    writer.write_json(files::METRICS, &metrics)?;
    let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut card = crate::model_card::render(&crate::model_card::CardInputs {
        config: &config,
        recommender: recommender.as_ref(),
        forecaster: forecaster.as_ref(),
        metrics: &metrics,
        device: &selected.backend.to_string(),
        seed,
        created_at: &created_at,
    });
    for kept in models.iter().filter(|m| {
        !matches!(
            (m.as_str(), &recommender, &forecaster),
            ("recommender", Some(_), _) | ("forecaster", _, Some(_))
        )
    }) {
        card.push_str(&format!(
            "\nThe {kept} was kept from the previous bundle (`train --only`): its metrics are in \
             `metrics.json`; a run that trains it describes it here.\n"
        ));
    }
    std::fs::write(writer.path_of(files::MODEL_CARD), card).context("writing the model card")?;
    writer.register(files::MODEL_CARD)?;
    let report = crate::report::render(&crate::report::ReportInputs {
        business: &config.business.name,
        created_at: &created_at,
        device: &selected.backend.to_string(),
        seed,
        metrics: &metrics,
        recommender: recommender.as_ref(),
        forecaster: forecaster.as_ref(),
    });
    std::fs::write(writer.path_of(files::REPORT), report).context("writing the report")?;
    writer.register(files::REPORT)?;

    let gate = forecaster
        .as_ref()
        .map(|f| f.gate_failures.clone())
        .unwrap_or_default();
    let allow = config
        .forecaster
        .as_ref()
        .is_some_and(|f| f.evaluation.allow_worse_than_baseline);
    let manifest = BundleManifest {
        format_version: FORMAT_VERSION,
        crate_version: env!("CARGO_PKG_VERSION").to_string(),
        burn_version: BURN_VERSION.to_string(),
        created_at,
        config: config
            .to_toml()
            .map_err(|e| anyhow::anyhow!("encoding the config: {e}"))?,
        data_fingerprint: fingerprint,
        models,
        trained_on: selected.backend.to_string(),
        seed,
        status: if gate.is_empty() {
            "ok".into()
        } else {
            "failing".into()
        },
        quality_gate: gate.clone(),
        files: BTreeMap::new(),
    };
    let bundle = writer.finish(manifest)?;
    // The bundle is in place: the training state is no longer needed.
    checkpoints.remove();
    print_summary(&metrics);
    eprintln!(
        "train: wrote {} in {:.1}s",
        bundle.display(),
        started.elapsed().as_secs_f64()
    );
    if !gate.is_empty() {
        if allow {
            eprintln!("warning: quality gate failed, allowed by `forecaster.evaluation.allow_worse_than_baseline`: {}", gate.join("; "));
        } else {
            return Err(QualityGateFailed(gate).into());
        }
    }
    Ok(TrainSummary { bundle, metrics })
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn save_config<C: Config>(writer: &mut BundleWriter, name: &str, config: &C) -> Result<()> {
    config
        .save(writer.path_of(name))
        .with_context(|| format!("writing {name}"))?;
    writer.register(name)?;
    Ok(())
}

fn write_models(
    writer: &mut BundleWriter,
    recommender: Option<&RecommenderOutcome>,
    forecaster: Option<&ForecasterOutcome>,
    metrics: &mut BTreeMap<String, f64>,
) -> Result<()> {
    if let Some(r) = recommender {
        writer.write_module(files::RECOMMENDER_WEIGHTS, r.model.clone())?;
        save_config(writer, files::RECOMMENDER_CONFIG, &r.model_config)?;
        save_config(writer, files::RECOMMENDER_TRAINING, &r.training_config)?;
        writer.write_json(files::RECOMMENDER_ARTIFACTS, &r.artifacts)?;
        writer.write_json(files::SEGMENTS, &r.artifacts.segment_profiles)?;
        writer.write_json(files::RECOMMENDER_GROUP_METRICS, &r.group_metrics)?;
        writer.write_json(files::RECOMMENDER_PROFILE, &r.profile)?;
        metrics.extend(r.metrics.clone());
        metrics.insert("recommender.epochs_run".into(), r.epochs_run as f64);
    }
    if let Some(f) = forecaster {
        writer.write_module(files::FORECASTER_WEIGHTS, f.model.clone())?;
        save_config(writer, files::FORECASTER_CONFIG, &f.model_config)?;
        save_config(writer, files::FORECASTER_TRAINING, &f.training_config)?;
        writer.write_json(files::FORECASTER_ARTIFACTS, &f.artifacts)?;
        writer.write_json(files::FORECASTER_SERIES_METRICS, &f.series_metrics)?;
        writer.write_json(files::FORECASTER_PROFILE, &f.profile)?;
        metrics.extend(f.metrics.clone());
    }
    Ok(())
}

fn input_files(loaded: &LoadedConfig, config: &ShopConfig, rec: bool, fc: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let (true, Some(r)) = (rec, &config.recommender) {
        out.push(loaded.resolve(&r.data.events.path));
        for t in [&r.data.customers, &r.data.products].into_iter().flatten() {
            out.push(loaded.resolve(&t.file.path));
        }
    }
    if let (true, Some(f)) = (fc, &config.forecaster) {
        out.push(loaded.resolve(&f.data.sales.path));
    }
    out.dedup();
    out
}

/// Prints the metric tables (model against baselines) to stdout.
pub fn print_summary(metrics: &BTreeMap<String, f64>) {
    let table = |title: &str, methods: &[(&str, &str)], keys: &[&str]| {
        if !metrics.keys().any(|k| k.starts_with(methods[0].1)) {
            return;
        }
        print!("\n{title:<22}");
        for (name, _) in methods {
            print!("{name:>16}");
        }
        println!();
        for key in keys {
            print!("{key:<22}");
            for (_, prefix) in methods {
                match metrics.get(&format!("{prefix}{key}")) {
                    Some(v) => print!("{v:>16.4}"),
                    None => print!("{:>16}", "-"),
                }
            }
            println!();
        }
    };
    table(
        "recommender",
        &metric_keys::RECOMMENDER_METHODS,
        &crate::ranking::RANKING_METRICS,
    );
    table(
        "forecaster",
        &metric_keys::FORECASTER_METHODS,
        &[
            "mase",
            "mase_median",
            "smape",
            "wql",
            "coverage_p10_p90",
            "bias",
        ],
    );
}

/// The backend a config's `business.device` asks for.
fn device_choice(name: DeviceName) -> DeviceChoice {
    match name {
        DeviceName::Auto => DeviceChoice::Auto,
        DeviceName::Flex => DeviceChoice::Flex,
        DeviceName::Ndarray => DeviceChoice::Ndarray,
        DeviceName::Wgpu => DeviceChoice::Wgpu,
    }
}

/// How the bundle's copy of the config records the backend that ran.
fn device_name(choice: DeviceChoice) -> DeviceName {
    match choice {
        DeviceChoice::Auto => DeviceName::Auto,
        DeviceChoice::Flex => DeviceName::Flex,
        DeviceChoice::Ndarray => DeviceName::Ndarray,
        DeviceChoice::Wgpu => DeviceName::Wgpu,
    }
}

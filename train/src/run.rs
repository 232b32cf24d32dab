//! The `train` job: config, data, device, both models, the bundle and the summary table.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::config::Config;
use shopcast_datasets::artifacts::{files, metric_keys};
use shopcast_datasets::config::{CheckedConfig, DeviceName, ShopConfig};
use shopcast_datasets::demo::generate_if_missing;
use shopcast_datasets::privacy::Pseudonymiser;
use shopcast_datasets::{DataError, IdVocab, LoadedConfig};
use shopcast_model::bundle::{
    fingerprint_files, BundleManifest, BundleWriter, BURN_VERSION, FORMAT_VERSION,
};
use shopcast_model::{select_device, Bundle, DeviceChoice, SelectedDevice};

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

/// Runs the whole training job: setup, data check and checkpoints, both models, the bundle.
pub fn run(opts: &TrainOptions) -> Result<TrainSummary> {
    let started = Instant::now();
    let setup = RunSetup::new(opts)?;
    let (checkpoints, fingerprint) = job_checkpoints(&setup, opts)?;
    let previous = Bundle::open(&setup.out).ok();
    let trained = train_models(&setup, opts, &checkpoints)?;
    let (bundle, metrics, gate) = write_bundle(&setup, &trained, previous.as_ref(), fingerprint)?;
    // The bundle is in place: the training state is no longer needed.
    checkpoints.remove();
    print_summary(&metrics);
    eprintln!(
        "train: wrote {} in {:.1}s",
        bundle.display(),
        started.elapsed().as_secs_f64()
    );
    if !gate.is_empty() {
        let allow = setup
            .config
            .forecaster
            .as_ref()
            .is_some_and(|f| f.evaluation.allow_worse_than_baseline);
        if !allow {
            return Err(QualityGateFailed(gate).into());
        }
        eprintln!(
            "warning: quality gate failed, allowed by `forecaster.evaluation.allow_worse_than_baseline`: {}",
            gate.join("; ")
        );
    }
    Ok(TrainSummary { bundle, metrics })
}

/// What a run trains, where, and into which bundle.
struct RunSetup {
    loaded: LoadedConfig,
    /// The config as run: the command line's seed and device in place of the file's.
    config: CheckedConfig,
    selected: SelectedDevice,
    seed: u64,
    want_recommender: bool,
    want_forecaster: bool,
    out: PathBuf,
}

impl RunSetup {
    /// Reads the config, picks the device, generates the demo shop when the config has one,
    /// and checks that `--only` names a model the config has.
    fn new(opts: &TrainOptions) -> Result<Self> {
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
        for (only, name, present) in [
            (
                Only::Recommender,
                "recommender",
                config.recommender.is_some(),
            ),
            (Only::Forecaster, "forecaster", config.forecaster.is_some()),
        ] {
            if opts.only == Some(only) && !present {
                anyhow::bail!(DataError::Config {
                    path: opts.config.clone(),
                    msg: format!("--only {name}, but the config has no [{name}] section"),
                });
            }
        }
        let out = opts
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(&config.business.name));
        Ok(RunSetup {
            want_recommender: opts.only.is_none_or(|o| o == Only::Recommender)
                && config.recommender.is_some(),
            want_forecaster: opts.only.is_none_or(|o| o == Only::Forecaster)
                && config.forecaster.is_some(),
            loaded,
            config,
            selected,
            seed,
            out,
        })
    }
}

/// Checks that every input file is there (a missing one is bad input, exit 3), fingerprints
/// them, and opens the job's checkpoints: a checkpoint continues only the same training
/// (config, seed, device, models and data). Returns the checkpoints and the data fingerprint.
fn job_checkpoints(setup: &RunSetup, opts: &TrainOptions) -> Result<(Checkpoints, String)> {
    let mut inputs = input_files(
        &setup.loaded,
        &setup.config,
        setup.want_recommender,
        setup.want_forecaster,
    );
    inputs.sort();
    for path in &inputs {
        std::fs::metadata(path).map_err(|e| DataError::Io {
            path: path.clone(),
            what: "open the data file".into(),
            source: e,
        })?;
    }
    let fingerprint = fingerprint_files(&inputs)?;
    let job = format!(
        "{}\nseed {}\ndevice {}\nonly {:?}\ndata {fingerprint}",
        config_text(&setup.config)?,
        setup.seed,
        setup.selected.backend,
        opts.only,
    );
    let checkpoints = Checkpoints::new(&setup.out, hex_sha256(job.as_bytes()), opts.resume)?;
    Ok((checkpoints, fingerprint))
}

fn config_text(config: &CheckedConfig) -> Result<String> {
    config
        .to_toml()
        .map_err(|e| anyhow::anyhow!("encoding the config: {e}"))
}

/// The models this run trained.
struct Trained {
    recommender: Option<RecommenderOutcome>,
    forecaster: Option<ForecasterOutcome>,
}

/// Trains the models the run asks for, the recommender first.
fn train_models(
    setup: &RunSetup,
    opts: &TrainOptions,
    checkpoints: &Checkpoints,
) -> Result<Trained> {
    let (config, seed, device) = (&setup.config, setup.seed, &setup.selected.device);
    // Pseudonyms: the salt must be there before hours of training, not after.
    let pseudonymiser = match &config.privacy {
        Some(p) if p.pseudonymise_customer_ids && setup.want_recommender => Some((
            Pseudonymiser::from_env(&p.salt_env).map_err(|e| DataError::Config {
                path: opts.config.clone(),
                msg: format!("[privacy]: {e}"),
            })?,
            p.salt_env.clone(),
        )),
        _ => None,
    };
    let recommender = match (&config.recommender, setup.want_recommender) {
        (Some(sec), true) => {
            let mut outcome = train_recommender(&setup.loaded, sec, device, seed, checkpoints)
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
    if crate::checkpoint::stop_requested() && setup.want_forecaster {
        return Err(checkpoints.interrupted());
    }
    let forecaster = match (&config.forecaster, setup.want_forecaster) {
        (Some(sec), true) => Some(
            train_forecaster(&setup.loaded, sec, device, seed, checkpoints)
                .context("training the forecaster")?,
        ),
        _ => None,
    };
    Ok(Trained {
        recommender,
        forecaster,
    })
}

/// Writes the bundle (replacing the previous one whole): the trained models, the model that
/// `--only` kept from the previous bundle, the metrics, the model card, the report and the
/// manifest. Returns its path, the metrics and why the quality gate failed (empty: passed).
fn write_bundle(
    setup: &RunSetup,
    trained: &Trained,
    previous: Option<&Bundle>,
    fingerprint: String,
) -> Result<(PathBuf, BTreeMap<String, f64>, Vec<String>)> {
    let (recommender, forecaster) = (trained.recommender.as_ref(), trained.forecaster.as_ref());
    let mut metrics: BTreeMap<String, f64> = BTreeMap::new();
    let mut writer = BundleWriter::create(&setup.out)?;
    if let Err(e) = write_models(&mut writer, recommender, forecaster, &mut metrics) {
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
    let kept = match previous {
        Some(prev) => carry_over_previous(&mut writer, prev, trained, &mut metrics)?,
        None => Vec::new(),
    };
    models.extend(kept.iter().cloned());
    writer.write_json(files::METRICS, &metrics)?;
    let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    write_card_and_report(&mut writer, setup, trained, &metrics, &kept, &created_at)?;
    let gate = forecaster
        .map(|f| f.gate_failures.clone())
        .unwrap_or_default();
    let manifest = BundleManifest {
        format_version: FORMAT_VERSION,
        crate_version: env!("CARGO_PKG_VERSION").to_string(),
        burn_version: BURN_VERSION.to_string(),
        created_at,
        config: config_text(&setup.config)?,
        data_fingerprint: fingerprint,
        models,
        trained_on: setup.selected.backend.to_string(),
        seed: setup.seed,
        status: if gate.is_empty() {
            "ok".into()
        } else {
            "failing".into()
        },
        quality_gate: gate.clone(),
        files: BTreeMap::new(),
    };
    Ok((writer.finish(manifest)?, metrics, gate))
}

/// Keeps the model this run did not train from the previous bundle, with its metrics; returns
/// the names of the models kept.
fn carry_over_previous(
    writer: &mut BundleWriter,
    prev: &Bundle,
    trained: &Trained,
    metrics: &mut BTreeMap<String, f64>,
) -> Result<Vec<String>> {
    let prev_metrics: BTreeMap<String, f64> = prev.read_json(files::METRICS).unwrap_or_default();
    let mut kept = Vec::new();
    for (name, retrained, methods) in [
        (
            "recommender",
            trained.recommender.is_some(),
            &metric_keys::RECOMMENDER_METHODS[..],
        ),
        (
            "forecaster",
            trained.forecaster.is_some(),
            &metric_keys::FORECASTER_METHODS[..],
        ),
    ] {
        if !retrained && prev.has(name) {
            writer.carry_over(prev, name)?;
            kept.push(name.to_string());
            for (k, v) in prev_metrics
                .iter()
                .filter(|(k, _)| methods.iter().any(|(_, p)| k.starts_with(p)))
            {
                metrics.insert(k.clone(), *v);
            }
            eprintln!("train: kept the {name} of the previous bundle");
        }
    }
    Ok(kept)
}

/// `MODEL_CARD.md` (with a note for each model kept from the previous bundle) and
/// `report.html`.
fn write_card_and_report(
    writer: &mut BundleWriter,
    setup: &RunSetup,
    trained: &Trained,
    metrics: &BTreeMap<String, f64>,
    kept: &[String],
    created_at: &str,
) -> Result<()> {
    let device = setup.selected.backend.to_string();
    let mut card = crate::model_card::render(&crate::model_card::CardInputs {
        config: &setup.config,
        recommender: trained.recommender.as_ref(),
        forecaster: trained.forecaster.as_ref(),
        metrics,
        device: &device,
        seed: setup.seed,
        created_at,
    });
    for name in kept {
        card.push_str(&format!(
            "\nThe {name} was kept from the previous bundle (`train --only`): its metrics are in \
             `metrics.json`; a run that trains it describes it here.\n"
        ));
    }
    std::fs::write(writer.path_of(files::MODEL_CARD), card).context("writing the model card")?;
    writer.register(files::MODEL_CARD)?;
    let report = crate::report::render(&crate::report::ReportInputs {
        business: &setup.config.business.name,
        created_at,
        device: &device,
        seed: setup.seed,
        metrics,
        recommender: trained.recommender.as_ref(),
        forecaster: trained.forecaster.as_ref(),
    });
    std::fs::write(writer.path_of(files::REPORT), report).context("writing the report")?;
    writer.register(files::REPORT)?;
    Ok(())
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
        r.artifacts.write_tables(writer.dir())?;
        for name in files::RECOMMENDER_TABLES {
            writer.register(name)?;
        }
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
        f.artifacts.write_tables(writer.dir())?;
        writer.register(files::FORECASTER_PERIODS)?;
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

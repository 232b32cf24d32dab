//! Crash safety of the real `train` binary: a stop request (SIGTERM, or the same request injected
//! after a chosen step) writes a checkpoint and exits 130; `--resume` continues and ends with the
//! metrics of an uninterrupted run; `kill -9` at random moments never leaves a bundle that does
//! not load, and the last checkpoint still resumes.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use shopcast_model::Bundle;

/// The demo shop, short; the recommender's id tables under dense Adam (the default, lazy Adam,
/// has a test of its own below); the forecaster keeps a moving average of its parameters, which
/// a resumed run must carry on from the checkpoint.
fn config(dir: &Path) -> PathBuf {
    common::shop_config_with(
        dir,
        "crash",
        &[
            ("epochs = 12", "epochs = 4\noptimizer = \"adam\""),
            ("epochs = 15", "epochs = 3"),
            (
                "windows_per_series = 96",
                "windows_per_series = 24\naverage_epochs = 1",
            ),
        ],
    )
}

fn train(config: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_train"));
    cmd.arg("--config")
        .arg(config)
        .arg("--out")
        .arg(out)
        .args(extra)
        .env_remove("SHOPCAST_FAULT_STOP_AFTER_STEPS")
        .envs(env.iter().copied());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run train")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn checkpoint_dir(out: &Path) -> PathBuf {
    out.with_file_name(format!(
        "{}.checkpoint",
        out.file_name().expect("name").to_string_lossy()
    ))
}

fn metrics(bundle: &Path) -> BTreeMap<String, f64> {
    let b = Bundle::open(bundle).expect("the bundle opens and its checksums hold");
    b.read_json("metrics.json").expect("metrics")
}

fn assert_same_metrics(got: &BTreeMap<String, f64>, want: &BTreeMap<String, f64>, what: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (k, w) in want {
        let g = got[k];
        let same = (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-6 * w.abs().max(1.0);
        assert!(same, "{what}: {k} is {g}, uninterrupted {w}");
    }
}

/// Exit 130, the resume hint, a checkpoint on disk and no bundle written.
fn assert_interrupted(o: &Output, out: &Path) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(130), "{e}");
    assert!(e.contains("--resume"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert!(checkpoint_dir(out).join("job.fingerprint").exists());
}

#[test]
fn interrupted_training_resumes_to_the_same_model_and_kill_9_never_breaks_a_bundle() {
    let _one = common::one_training_at_a_time();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());

    // The uninterrupted reference.
    let reference = dir.path().join("reference");
    let started = Instant::now();
    let o = run(&mut train(&cfg, &reference, &[], &[]));
    assert!(o.status.success(), "{}", stderr(&o));
    let full_run = started.elapsed();
    let want = metrics(&reference);
    assert!(
        !checkpoint_dir(&reference).exists(),
        "a finished run removes its checkpoint"
    );

    // Stops injected mid-epoch in the recommender, mid-epoch in the forecaster, at the end of a
    // forecaster epoch, and mid-epoch in the refit of the second backtest fold's network, each
    // resumed by the next run.
    let out = dir.path().join("stopped");
    let o = run(&mut train(
        &cfg,
        &out,
        &[],
        &[("SHOPCAST_FAULT_STOP_AFTER_STEPS", "recommender:3")],
    ));
    assert_interrupted(&o, &out);
    assert!(!out.exists(), "an interrupted first run writes no bundle");
    assert!(checkpoint_dir(&out).join("recommender.json").exists());
    for stop in ["forecaster:1", "forecaster:4", "forecaster-fold2:2"] {
        let o = run(&mut train(
            &cfg,
            &out,
            &["--resume"],
            &[("SHOPCAST_FAULT_STOP_AFTER_STEPS", stop)],
        ));
        assert_interrupted(&o, &out);
        assert!(stderr(&o).contains("resuming"), "{}", stderr(&o));
    }
    let o = run(&mut train(&cfg, &out, &["--resume"], &[]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_metrics(&metrics(&out), &want, "resumed three times");
    assert!(!checkpoint_dir(&out).exists());

    // Nothing to resume, or a checkpoint of another training: exit 3, and why.
    let o = run(&mut train(&cfg, &out, &["--resume"], &[]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("no checkpoint"), "{}", stderr(&o));
    let o = run(&mut train(
        &cfg,
        &out,
        &[],
        &[("SHOPCAST_FAULT_STOP_AFTER_STEPS", "2")],
    ));
    assert_interrupted(&o, &out);
    let o = run(&mut train(&cfg, &out, &["--resume", "--seed", "99"], &[]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("another config"), "{}", stderr(&o));

    // A real SIGTERM once the first epoch's checkpoint exists: the job finishes its step, saves
    // and exits 130; resuming gives the reference again.
    let out = dir.path().join("sigterm");
    let child = train(&cfg, &out, &[], &[])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let marker = checkpoint_dir(&out).join("recommender.json");
    let waited = Instant::now();
    while !marker.exists() {
        assert!(waited.elapsed() < Duration::from_secs(300), "no checkpoint");
        std::thread::sleep(Duration::from_millis(10));
    }
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill -TERM");
    assert!(killed.success());
    let o = child.wait_with_output().expect("wait");
    assert_interrupted(&o, &out);
    let o = run(&mut train(&cfg, &out, &["--resume"], &[]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_metrics(&metrics(&out), &want, "after SIGTERM");

    // kill -9 at random moments of a retraining over a good bundle: the bundle always opens (its
    // checksums hold) and the checkpoint left behind always resumes or is absent.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let good = out;
    for round in 0..12 {
        let mut child = train(&cfg, &good, &[], &[])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let at = Duration::from_secs_f64(full_run.as_secs_f64() * rng.random_range(0.05..1.1));
        let deadline = Instant::now() + at;
        while Instant::now() < deadline {
            if child.try_wait().expect("poll").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        assert_same_metrics(
            &metrics(&good),
            &want,
            &format!("bundle after kill -9 at {at:?} (round {round})"),
        );
    }
    // The last kill's checkpoint (if one was written) continues to the same model.
    let o = run(&mut train(&cfg, &good, &["--resume"], &[]));
    match o.status.code() {
        Some(0) => {}
        Some(3) if stderr(&o).contains("no checkpoint") => {}
        _ => panic!(
            "resume after kill -9 ended with {}: {}",
            o.status,
            stderr(&o)
        ),
    }
    assert_same_metrics(&metrics(&good), &want, "resumed after kill -9");
}

/// Under `optimizer = "lazy_adam"` the id tables' values and moments live on the host, outside the
/// network: a stop in the first epoch, one in a later epoch and one in the refit all resume to the
/// uninterrupted run's metrics, which needs those moments in the checkpoint.
#[test]
fn lazy_adam_training_resumes_to_the_same_model() {
    let _one = common::one_training_at_a_time();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = common::shop_config_with(
        dir.path(),
        "crash-lazy",
        &[(
            "epochs = 12\n",
            "epochs = 4\noptimizer = \"lazy_adam\"\nrefit = true\n",
        )],
    );
    let only = ["--only", "recommender"];
    let reference = dir.path().join("reference");
    let o = run(&mut train(&cfg, &reference, &only, &[]));
    assert!(o.status.success(), "{}", stderr(&o));
    let want = metrics(&reference);
    assert_eq!(want["recommender.refit"], 1.0);

    let out = dir.path().join("stopped");
    let first = run(&mut train(
        &cfg,
        &out,
        &only,
        &[("SHOPCAST_FAULT_STOP_AFTER_STEPS", "recommender:3")],
    ));
    assert_interrupted(&first, &out);
    let resumed = [&["--only", "recommender", "--resume"][..]].concat();
    for stop in ["recommender:9", "recommender refit:2"] {
        let o = run(&mut train(
            &cfg,
            &out,
            &resumed,
            &[("SHOPCAST_FAULT_STOP_AFTER_STEPS", stop)],
        ));
        assert_interrupted(&o, &out);
        assert!(stderr(&o).contains("resuming"), "{}", stderr(&o));
        let saved_moments = std::fs::read_dir(checkpoint_dir(&out))
            .expect("checkpoint dir")
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().ends_with(".tables.bin"));
        assert!(saved_moments, "stop at {stop}: no lazy Adam state saved");
    }
    let o = run(&mut train(&cfg, &out, &resumed, &[]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_metrics(&metrics(&out), &want, "lazy Adam resumed three times");
}

//! `infer` as a scheduled job, through the real binaries: shards (by flag, Kubernetes Indexed Job
//! and Slurm array variables) partition the output exactly; reruns are byte-identical; the
//! manifest says what was read and written; a job killed while writing leaves the previous
//! output intact; bad input and bundle mismatches get their documented exit codes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{bin, run};

const SHOP: &str = r#"
[business]
name = "jobs"
seed = 13
device = "flex"
data_dir = "data"

[demo]
customers = 300
products = 80
categories = 5
days = 240
stores = 2
series_products = 5

[recommender.data]
events = { path = "events.csv" }
customer_id = "customer_id"
product_id = "product_id"
timestamp = "timestamp"
event_type = "event_type"
target_event = "purchase"
event_weights = { view = 0.1, cart = 0.4, purchase = 1.0 }

[recommender.data.products]
file = { path = "products.csv" }
id = "product_id"
name = "name"
categorical = ["category"]

[recommender.model]
embedding_dim = 16
segments = 3

[recommender.training]
epochs = 3
batch_size = 256

[forecaster.data]
sales = { path = "sales.csv" }
series_keys = ["store_id", "product_id"]
date = "date"
target = "units"
known_covariates = ["price", "promo"]

[forecaster.model]
context_length = 21
horizon = 7
hidden_size = 8

[forecaster.training]
epochs = 1
windows_per_series = 8

[forecaster.evaluation]
backtest_folds = 1
allow_worse_than_baseline = true
"#;

fn train(dir: &Path) -> PathBuf {
    let config = dir.join("shop.toml");
    std::fs::write(&config, SHOP).expect("write config");
    let bundle = dir.join("bundle");
    run(Command::new(bin("train"))
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&bundle));
    bundle
}

/// Data lines of a CSV output (header dropped).
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read output")
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

/// An audience output's rows, split into fields.
fn rows_of_audience(path: &Path) -> Vec<Vec<String>> {
    lines(path)
        .iter()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

/// Two sorted recommendation outputs with the same customers, ranks, products, reasons and
/// segments, and scores within float rounding.
fn assert_same_recommendations(got: &[String], want: &[String], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        let (g, w): (Vec<&str>, Vec<&str>) = (g.split(',').collect(), w.split(',').collect());
        let score = |f: &[&str]| f[3].parse::<f64>().unwrap_or(f64::NAN);
        assert!(
            g.len() == w.len()
                && (0..g.len()).all(|i| i == 3 || g[i] == w[i])
                && (score(&g) - score(&w)).abs() < 1e-5,
            "{what}: {g:?} vs {w:?}"
        );
    }
}

fn infer(args: &[&str], bundle: &Path, out: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin("infer"));
    cmd.args(args)
        .args(["--device", "flex", "--bundle"])
        .arg(bundle)
        .arg("--out")
        .arg(out)
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("SLURM_ARRAY_TASK_COUNT")
        .env_remove("SLURM_ARRAY_TASK_MIN")
        .envs(env.iter().copied());
    cmd
}

/// The bundle every test here scores with, trained once per run of this file (tests that damage
/// a bundle work on a copy).
fn shared_bundle() -> &'static Path {
    static BUNDLE: OnceLock<PathBuf> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("batch_jobs");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fixture directory");
        train(&dir)
    })
}

/// `infer recommend` for every known customer of the shared bundle (top 10, CSV), run once; its
/// manifest lies beside it.
fn all_recommendations() -> &'static Path {
    static RECS: OnceLock<PathBuf> = OnceLock::new();
    RECS.get_or_init(|| {
        let bundle = shared_bundle();
        let recs = bundle.with_file_name("recs.csv");
        run(&mut infer(&["recommend"], bundle, &recs, &[]));
        recs
    })
}

/// The manifest beside an output.
fn manifest_of(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    output.with_file_name(format!("{name}.manifest.json"))
}

/// The first customer's best product in [`all_recommendations`].
fn first_recommended_product() -> String {
    lines(all_recommendations())[0]
        .split(',')
        .nth(2)
        .expect("product")
        .to_string()
}

/// Shards by flag, by Kubernetes' index and by Slurm's array variables partition the output of `recommend` and `forecast`: every row in exactly one shard, none empty.
#[test]
fn shards_partition_the_output_exactly() {
    let bundle = shared_bundle();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = |name: &str| dir.path().join(name);

    // Shards: by flag, by Kubernetes' index with --shards, by Slurm's array variables.
    for (job, key_columns) in [("recommend", 1usize), ("forecast", 2)] {
        let whole = out(&format!("{job}.csv"));
        run(&mut infer(&[job], bundle, &whole, &[]));
        let all = lines(&whole);
        assert!(!all.is_empty());
        let parts = [
            (out(&format!("{job}-0.csv")), vec!["--shard", "0/3"], vec![]),
            (
                out(&format!("{job}-1.csv")),
                vec!["--shards", "3"],
                vec![("JOB_COMPLETION_INDEX", "1")],
            ),
            (
                out(&format!("{job}-2.csv")),
                vec![],
                vec![
                    ("SLURM_ARRAY_TASK_ID", "7"),
                    ("SLURM_ARRAY_TASK_MIN", "5"),
                    ("SLURM_ARRAY_TASK_COUNT", "3"),
                ],
            ),
        ];
        let mut union: Vec<String> = Vec::new();
        let mut owner: BTreeMap<String, usize> = BTreeMap::new();
        for (k, (path, flags, env)) in parts.iter().enumerate() {
            let mut args = vec![job];
            args.extend(flags.iter().copied());
            let stderr = run(&mut infer(&args, bundle, path, env));
            assert!(stderr.contains(&format!("shard {k}/3")), "{stderr}");
            for line in lines(path) {
                let key: Vec<&str> = line.split(',').take(key_columns).collect();
                let key = key.join(",");
                let first = *owner.entry(key.clone()).or_insert(k);
                assert_eq!(first, k, "{key} is in shards {first} and {k}");
                union.push(line);
            }
            let manifest: serde_json::Value = serde_json::from_slice(
                &std::fs::read(path.with_file_name(format!(
                    "{}.manifest.json",
                    path.file_name().and_then(|n| n.to_str()).unwrap_or_default()
                )))
                .expect("manifest"),
            )
            .expect("json");
            assert_eq!(manifest["shard"], format!("{k}/3"));
        }
        let (mut a, mut b) = (all.clone(), union);
        a.sort();
        b.sort();
        assert_eq!(
            a, b,
            "{job}: the shards' union differs from the unsharded output"
        );
        assert!(
            owner.values().collect::<BTreeSet<_>>().len() == 3,
            "a shard is empty"
        );
    }
}

/// A rerun writes the same bytes, CSV and Parquet.
#[test]
fn reruns_are_byte_identical() {
    let bundle = shared_bundle();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = |name: &str| dir.path().join(name);

    // Reruns give byte-identical outputs, CSV and Parquet.
    for name in ["recs.csv", "recs.parquet"] {
        let (first, second) = (out(&format!("a-{name}")), out(&format!("b-{name}")));
        run(&mut infer(&["recommend"], bundle, &first, &[]));
        run(&mut infer(&["recommend"], bundle, &second, &[]));
        assert_eq!(
            std::fs::read(&first).expect("first"),
            std::fs::read(&second).expect("second"),
            "{name}: two runs differ"
        );
    }
}

/// A customer list read in pieces gives what it gives read whole, CSV and Parquet; duplicates are found across pieces.
#[test]
fn customer_lists_read_in_pieces_give_the_rows_of_one_piece() {
    let bundle = shared_bundle();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = |name: &str| dir.path().join(name);

    // A customer list read in pieces (CSV and Parquet, pieces of 7 rows) gives what it gives read
    // in one piece; duplicates are found across pieces.
    let known_ids: Vec<String> = lines(all_recommendations())
        .iter()
        .map(|l| l.split(',').next().unwrap_or_default().to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .take(40)
        .collect();
    let some_products: Vec<String> = lines(all_recommendations())
        .iter()
        .take(3)
        .map(|l| l.split(',').nth(2).unwrap_or_default().to_string())
        .collect();
    let mut list = String::from("customer_id,recent_items\n");
    for (i, id) in known_ids.iter().enumerate() {
        list.push_str(&format!("{id},\n"));
        if i % 9 == 0 {
            list.push_str(&format!("NEW-{i},{}\n", some_products.join("|")));
            list.push_str(&format!("NEW-PLAIN-{i},\n"));
        }
    }
    list.push_str(&format!("{},\nNEW-0,\n", known_ids[3]));
    let list_csv = out("list.csv");
    std::fs::write(&list_csv, &list).expect("write list");
    let list_rows = list.lines().count() - 1;
    let mut reference: Option<Vec<String>> = None;
    for (name, customers, piece_rows) in [
        ("whole.csv", &list_csv, "100000"),
        ("pieces.csv", &list_csv, "7"),
        ("one-by-one.csv", &list_csv, "1"),
    ] {
        let path = out(name);
        let mut cmd = infer(
            &["recommend", "--piece-rows", piece_rows],
            bundle,
            &path,
            &[],
        );
        cmd.arg("--customers").arg(customers);
        run(&mut cmd);
        let mut got = lines(&path);
        got.sort();
        assert_eq!(got.len(), 10 * (list_rows - 2), "{name}");
        match &reference {
            None => reference = Some(got),
            // The same rows; scores equal up to float rounding (a matrix product over 7 rows
            // may sum in another order than one over 100).
            Some(r) => assert_same_recommendations(&got, r, name),
        }
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out(&format!("{name}.manifest.json"))).expect("manifest"),
        )
        .expect("json");
        assert_eq!(manifest["input_rows"], list_rows, "{name}");
        assert_eq!(
            manifest["rows_skipped"]["duplicate customer id"], 2,
            "{name}"
        );
    }
    // The same list as Parquet, read in pieces of 7 rows.
    let list_parquet = out("list.parquet");
    {
        use polars::prelude::*;
        let (ids, recent): (Vec<String>, Vec<Option<String>>) = list
            .lines()
            .skip(1)
            .map(|l| {
                let (id, items) = l.split_once(',').unwrap_or((l, ""));
                (
                    id.to_string(),
                    (!items.is_empty()).then(|| items.to_string()),
                )
            })
            .unzip();
        let mut df = DataFrame::new(
            ids.len(),
            vec![
                Column::new("customer_id".into(), ids),
                Column::new("recent_items".into(), recent),
            ],
        )
        .expect("frame");
        shopcast_datasets::table::write_frame_atomic(&mut df, &list_parquet).expect("parquet");
    }
    let from_parquet = out("from-parquet.csv");
    let mut cmd = infer(
        &["recommend", "--piece-rows", "7"],
        bundle,
        &from_parquet,
        &[],
    );
    cmd.arg("--customers").arg(&list_parquet);
    run(&mut cmd);
    let mut got = lines(&from_parquet);
    got.sort();
    assert_same_recommendations(&got, reference.as_deref().unwrap_or_default(), "Parquet");
}

/// The manifest of a run: job, device, rows read and written, checksum, duration; the output is readable by others.
#[test]
fn the_manifest_says_what_was_read_and_written() {
    let _bundle = shared_bundle();
    let dir = tempfile::tempdir().expect("tempdir");
    let _out = |name: &str| dir.path().join(name);

    // The manifest.
    let recs = all_recommendations();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest_of(recs)).expect("manifest")).expect("json");
    assert_eq!(manifest["job"], "recommend");
    assert_eq!(manifest["device"], "flex");
    // Every known customer (the generated shop's 300, less any without a purchase), ten rows each.
    let customers = manifest["input_rows"].as_u64().unwrap_or(0) as usize;
    assert!((250..=300).contains(&customers), "{customers} customers");
    assert_eq!(manifest["rows_written"], lines(recs).len());
    assert_eq!(lines(recs).len(), 10 * customers);
    assert_eq!(manifest["bundle_checksum"].as_str().map(str::len), Some(64));
    assert!(manifest["duration_seconds"]
        .as_f64()
        .is_some_and(|d| d > 0.0));
    assert!(manifest["shard"].is_null());
    // Readable by the services that pick it up, not private like the temporary file was.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(recs)
            .expect("output")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "{mode:o}");
    }
}

/// `kill -9` while writing leaves the previous output byte for byte.
#[test]
fn a_job_killed_mid_write_leaves_the_previous_output() {
    let bundle = shared_bundle();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = |name: &str| dir.path().join(name);

    // Killed mid-write (the write slowed down by fault injection): the previous output stays,
    // byte for byte, and the unfinished file is only a hidden temporary beside it.
    let recs = out("a-recs.csv");
    std::fs::copy(all_recommendations(), &recs).expect("the previous output");
    let before = std::fs::read(&recs).expect("previous output");
    let mut child = infer(
        &["recommend"],
        bundle,
        &recs,
        &[("SHOPCAST_FAULT_SLOW_WRITE_MS", "20000")],
    )
    .spawn()
    .expect("spawn");
    let started = Instant::now();
    let temporary = loop {
        let found = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .find(|n| n.starts_with(".a-recs.csv.") && n.ends_with(".tmp"));
        if let Some(name) = found {
            break name;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the job never started writing"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().expect("kill -9");
    let status = child.wait().expect("wait");
    assert!(!status.success());
    assert_eq!(std::fs::read(&recs).expect("output"), before);
    assert!(dir.path().join(&temporary).exists());
}

/// `audience` ranks customers as the full recommendation lists score the product, per product and per category.
#[test]
fn audience_lists_the_customers_who_score_a_product_highest() {
    let bundle = shared_bundle();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = |name: &str| dir.path().join(name);

    // Audience: the customers with the highest score for a product are those whose full
    // recommendation lists score it highest (the same model, the other way round).
    let full = out("full.csv");
    run(&mut infer(
        &["recommend", "--top-k", "80"],
        bundle,
        &full,
        &[],
    ));
    let full_lines = lines(&full);
    let product = full_lines[0]
        .split(',')
        .nth(2)
        .expect("product")
        .to_string();
    let mut by_score: Vec<(f64, String)> = full_lines
        .iter()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f[2] == product)
        .map(|f| (f[3].parse().expect("score"), f[0].to_string()))
        .collect();
    by_score.sort_by(|a, b| b.0.total_cmp(&a.0));
    let products_file = out("campaign.csv");
    std::fs::write(
        &products_file,
        format!("product_id\n{product}\nNOT-A-PRODUCT\n"),
    )
    .expect("write");
    let audience = out("audience.csv");
    let mut cmd = infer(&["audience", "--top", "20"], bundle, &audience, &[]);
    cmd.arg("--products").arg(&products_file);
    run(&mut cmd);
    let rows: Vec<Vec<String>> = lines(&audience)
        .iter()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    assert_eq!(rows.len(), 20);
    for (r, row) in rows.iter().enumerate() {
        assert_eq!(row[0], product);
        assert_eq!(row[1], (r + 1).to_string());
        let score: f64 = row[3].parse().expect("score");
        assert!(
            (score - by_score[r].0).abs() < 1e-3,
            "rank {r}: {score} vs {}",
            by_score[r].0
        );
        assert!(!row[4].is_empty(), "no reason");
    }
    let ours: BTreeSet<&str> = rows.iter().map(|r| r[2].as_str()).collect();
    let theirs: BTreeSet<&str> = by_score[..20].iter().map(|(_, c)| c.as_str()).collect();
    assert!(
        ours.intersection(&theirs).count() >= 19,
        "{ours:?} vs {theirs:?}"
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out("audience.csv.manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["rows_skipped"]["product not in the bundle"], 1);
    assert_eq!(manifest["input_rows"], 2, "two product rows asked for");
    assert!(manifest["counts"]["customers_scored"]
        .as_u64()
        .is_some_and(|n| n >= 250));
    // By category: one audience, labelled with the category.
    let by_category = out("audience-category.csv");
    let products = std::fs::read_to_string(bundle.with_file_name("data").join("products.csv"))
        .expect("products");
    let header: Vec<&str> = products
        .lines()
        .next()
        .expect("header")
        .split(',')
        .collect();
    let category_at = header
        .iter()
        .position(|c| *c == "category")
        .expect("category column");
    let category = products
        .lines()
        .nth(1)
        .expect("row")
        .split(',')
        .nth(category_at)
        .expect("category")
        .to_string();
    run(&mut infer(
        &["audience", "--top", "15", "--category", &category],
        bundle,
        &by_category,
        &[],
    ));
    let rows = lines(&by_category);
    assert_eq!(rows.len(), 15);
    assert!(rows.iter().all(|l| l.starts_with(&format!("{category},"))));
}

/// `--exclude` removes products from every list.
#[test]
fn excluded_products_are_recommended_to_no_one() {
    let bundle = shared_bundle();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = |name: &str| dir.path().join(name);

    // Excluded products (out of stock) are recommended to no one.
    let recs = all_recommendations();
    let product = first_recommended_product();
    let exclude = out("out-of-stock.csv");
    std::fs::write(&exclude, format!("product_id\n{product}\n")).expect("write");
    let recs_excluded = out("recs-excluded.csv");
    let mut cmd = infer(&["recommend"], bundle, &recs_excluded, &[]);
    cmd.arg("--exclude").arg(&exclude);
    run(&mut cmd);
    assert!(lines(recs)
        .iter()
        .any(|l| l.split(',').nth(2) == Some(product.as_str())));
    assert!(!lines(&recs_excluded)
        .iter()
        .any(|l| l.split(',').nth(2) == Some(product.as_str())));
}

/// `--opt-out` customers get no recommendations and are in no audience; an audience for an excluded product is refused.
#[test]
fn opted_out_customers_get_no_rows_and_are_in_no_audience() {
    let bundle = shared_bundle();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = |name: &str| dir.path().join(name);

    // Opt-outs: the customers on the list get no recommendations and are in no audience; an
    // audience for an excluded product is refused.
    let recs = all_recommendations();
    let product = first_recommended_product();
    let products_file = out("campaign.csv");
    std::fs::write(&products_file, format!("product_id\n{product}\n")).expect("write");
    let exclude = out("out-of-stock.csv");
    std::fs::write(&exclude, format!("product_id\n{product}\n")).expect("write");
    let audience = out("audience.csv");
    let mut cmd = infer(&["audience", "--top", "20"], bundle, &audience, &[]);
    cmd.arg("--products").arg(&products_file);
    run(&mut cmd);
    let top_two: Vec<String> = rows_of_audience(&audience)
        .iter()
        .take(2)
        .map(|r| r[2].clone())
        .collect();
    let opt_out = out("opt-out.csv");
    std::fs::write(
        &opt_out,
        format!(
            "customer_id\n{}\n{}\nNOT-A-CUSTOMER\n",
            top_two[0], top_two[1]
        ),
    )
    .expect("write");
    let recs_private = out("recs-opt-out.csv");
    let mut cmd = infer(&["recommend"], bundle, &recs_private, &[]);
    cmd.arg("--opt-out").arg(&opt_out);
    run(&mut cmd);
    let listed = |path: &Path, column: usize, id: &str| {
        lines(path)
            .iter()
            .any(|l| l.split(',').nth(column) == Some(id))
    };
    for id in &top_two {
        assert!(listed(recs, 0, id), "{id} was recommended to before");
        assert!(!listed(&recs_private, 0, id), "{id} opted out");
    }
    assert_eq!(lines(&recs_private).len(), lines(recs).len() - 20);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out("recs-opt-out.csv.manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["rows_skipped"]["opted out of personalisation"], 2);
    let audience_private = out("audience-opt-out.csv");
    let mut cmd = infer(&["audience", "--top", "20"], bundle, &audience_private, &[]);
    cmd.arg("--products")
        .arg(&products_file)
        .arg("--opt-out")
        .arg(&opt_out);
    run(&mut cmd);
    let kept = rows_of_audience(&audience_private);
    assert_eq!(kept.len(), 20);
    assert!(kept.iter().all(|r| !top_two.contains(&r[2])));
    let o = infer(&["audience", "--top", "20"], bundle, &out("never.csv"), &[])
        .arg("--products")
        .arg(&products_file)
        .arg("--exclude")
        .arg(&exclude)
        .output()
        .expect("spawn");
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(e.contains("exclusion list"), "{e}");
}

/// `--log-format json`: one JSON object per stderr line, the last one of a failed job with its exit code.
#[test]
fn json_logs_are_one_object_per_line() {
    let bundle = shared_bundle();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = |name: &str| dir.path().join(name);

    // Machine-read logs: every stderr line is one JSON object; the last one of a failed job is
    // the error with its exit code.
    let json_lines = |stderr: &[u8]| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(stderr)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
            .collect()
    };
    let ok = infer(
        &["forecast", "--log-format", "json"],
        bundle,
        &out("f.csv"),
        &[],
    )
    .output()
    .expect("spawn");
    assert!(ok.status.success());
    let logged = json_lines(&ok.stderr);
    assert!(logged
        .iter()
        .any(|l| l["level"] == "info" && l["job"] == "forecast"));
    assert!(logged
        .iter()
        .all(|l| l["ts"].is_string() && l["msg"].is_string()));
    let mut failing = infer(
        &["recommend", "--log-format", "json"],
        bundle,
        &out("x.csv"),
        &[],
    );
    failing.arg("--customers").arg(out("no-such-file.csv"));
    let failed = failing.output().expect("spawn");
    assert_eq!(failed.status.code(), Some(3));
    let last = json_lines(&failed.stderr).pop().expect("a log line");
    assert_eq!(last["level"], "error");
    assert_eq!(last["job"], "recommend");
    assert_eq!(last["exit_code"], 3);
    assert!(last["msg"]
        .as_str()
        .is_some_and(|m| m.contains("no-such-file.csv")));
}

/// Exit codes: 3 for bad input and flags, 4 for a missing bundle.
#[test]
fn bad_input_exits_3_and_a_bundle_that_does_not_fit_exits_4() {
    let bundle = shared_bundle();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = |name: &str| dir.path().join(name);

    // Exit codes: 3 for bad input, 4 for a bundle that does not fit the job.
    let code = |cmd: &mut Command| cmd.output().expect("spawn").status.code();
    let mut missing = infer(&["recommend"], bundle, &out("x.csv"), &[]);
    missing.arg("--customers").arg(out("no-such-file.csv"));
    assert_eq!(code(&mut missing), Some(3));
    assert_eq!(
        code(&mut infer(
            &["recommend", "--shards", "3"],
            bundle,
            &out("x.csv"),
            &[]
        )),
        Some(3),
        "--shards without an index"
    );
    assert_eq!(
        code(&mut infer(
            &["forecast"],
            &out("no-bundle"),
            &out("x.csv"),
            &[]
        )),
        Some(4)
    );
    // More top-K than products: exit 3, and why.
    let too_many = infer(&["recommend", "--top-k", "500"], bundle, &out("x.csv"), &[])
        .output()
        .expect("spawn");
    let e = String::from_utf8_lossy(&too_many.stderr);
    assert_eq!(too_many.status.code(), Some(3), "{e}");
    assert!(
        e.contains("--top-k 500 is larger than the catalogue (80 products)"),
        "{e}"
    );
}

/// A damaged or mismatched bundle is refused (exit 4, the file named, no output).
#[test]
fn damaged_bundles_are_refused_with_exit_4() {
    let bundle = shared_bundle();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = |name: &str| dir.path().join(name);

    // Bundle damage: exit 4 with the file named, and no output written.
    let refused = |bundle: &Path, job: &str, expect: &str| {
        let o = infer(&[job], bundle, &out("never.csv"), &[])
            .output()
            .expect("spawn");
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(4), "{e}");
        assert!(e.contains(expect), "{expect:?} not in {e}");
        assert!(!e.contains("panicked"), "{e}");
        assert!(!out("never.csv").exists());
    };
    let copy = |name: &str| -> PathBuf {
        let to = out(name);
        std::fs::create_dir_all(&to).expect("mkdir");
        for entry in std::fs::read_dir(bundle).expect("list") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
        to
    };
    // Truncated weights are caught by their checksum before loading.
    let truncated = copy("truncated");
    let weights = truncated.join("forecaster.bpk");
    let bytes = std::fs::read(&weights).expect("weights");
    std::fs::write(&weights, &bytes[..bytes.len() / 3]).expect("truncate");
    refused(
        &truncated,
        "forecast",
        "forecaster.bpk does not match its checksum",
    );
    // A copy whose recommender config says `to` where it said `from`, its checksum made to
    // agree (as a hand-edited or mismatched bundle would have).
    let edited_config = |name: &str, from: &str, to: &str| -> PathBuf {
        let edited = copy(name);
        let config_path = edited.join("recommender.config.json");
        let config = std::fs::read_to_string(&config_path).expect("config");
        let config = config.replacen(from, to, 1);
        assert!(config.contains(to), "{config}");
        std::fs::write(&config_path, &config).expect("write config");
        let manifest_path = edited.join("bundle.json");
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&manifest_path).expect("manifest"))
                .expect("json");
        manifest["files"]["recommender.config.json"] = serde_json::Value::String({
            use sha2::Digest;
            sha2::Sha256::digest(config.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        });
        std::fs::write(
            &manifest_path,
            serde_json::to_vec_pretty(&manifest).expect("encode"),
        )
        .expect("write manifest");
        edited
    };
    // A model config that does not fit the weights: the weights are refused, not misread.
    let mismatched = edited_config(
        "mismatched",
        "\"embedding_dim\": 16",
        "\"embedding_dim\": 24",
    );
    refused(&mismatched, "recommend", "recommender.bpk");
    // A model config that fails its checks is refused by name before any weights are read.
    let invalid = edited_config(
        "invalid-config",
        "\"embedding_dim\": 16",
        "\"embedding_dim\": 0",
    );
    refused(
        &invalid,
        "recommend",
        "recommender.config.json: embedding_dim: must be at least 1, got 0",
    );
    // A bundle with only a forecaster cannot recommend.
    let forecaster_only = copy("forecaster-only");
    std::fs::remove_file(forecaster_only.join("recommender.bpk")).expect("remove");
    refused(&forecaster_only, "recommend", "recommender");
}

#[test]
fn pseudonymised_bundles_hold_no_customer_id_and_score_from_the_real_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = shared_bundle();
    let private_dir = dir.path().join("private");
    std::fs::create_dir_all(&private_dir).expect("mkdir");
    let config = private_dir.join("shop.toml");
    std::fs::write(
        &config,
        format!("{SHOP}\n[privacy]\npseudonymise_customer_ids = true\n"),
    )
    .expect("write config");
    let bundle = private_dir.join("bundle");
    let salt = ("SHOPCAST_ID_SALT", "correct horse battery staple");
    let train_private = |env: &[(&str, &str)]| {
        Command::new(bin("train"))
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(&bundle)
            .env_remove("SHOPCAST_ID_SALT")
            .envs(env.iter().copied())
            .output()
            .expect("spawn train")
    };
    // No salt: refused before training, naming the variable.
    let o = train_private(&[]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(e.contains("SHOPCAST_ID_SALT"), "{e}");
    let o = train_private(&[salt]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let opened = shopcast_model::Bundle::open(&bundle).expect("bundle");
    let stored = infer::recommend::read_recommender_artifacts(&opened).expect("artifacts");
    let ids = stored.customers.ids();
    assert!(
        !ids.is_empty() && ids.iter().all(|id| id.starts_with("p_")),
        "ids in the bundle: {:?}",
        &ids[..ids.len().min(3)]
    );
    for file in std::fs::read_dir(&bundle).expect("bundle dir") {
        let path = file.expect("entry").path();
        let bytes = std::fs::read(&path).expect("bundle file");
        assert!(
            !bytes.windows(6).any(|w| w == b"C00001"),
            "{} holds a customer id",
            path.display()
        );
    }

    // Scoring from the real ids: known customers are recognised, outputs carry the real ids and
    // match the plain bundle's (pseudonyms change names, not the model).
    let list = dir.path().join("list.csv");
    std::fs::write(&list, "customer_id\nC00001\nC00002\nNEW-X\n").expect("write list");
    let score = |bundle: &Path, out: &Path, env: &[(&str, &str)]| {
        let mut cmd = infer(&["recommend"], bundle, out, env);
        cmd.arg("--customers")
            .arg(&list)
            .env_remove("SHOPCAST_ID_SALT");
        cmd.envs(env.iter().copied());
        cmd.output().expect("spawn infer")
    };
    let (ours, theirs) = (dir.path().join("ours.csv"), dir.path().join("theirs.csv"));
    let o = score(&bundle, &ours, &[salt]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = score(plain, &theirs, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(lines(&ours), lines(&theirs));
    assert!(lines(&ours).iter().any(|l| l.starts_with("C00001,")));
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("ours.csv.manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["counts"]["new customers (cold start)"], 1);

    // Without the salt, or with another one: exit 3, and why.
    for (env, expect) in [
        (vec![], "SHOPCAST_ID_SALT"),
        (
            vec![("SHOPCAST_ID_SALT", "another long secret value")],
            "not the one the bundle was trained with",
        ),
    ] {
        let o = score(&bundle, &dir.path().join("never.csv"), &env);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{e}");
        assert!(e.contains(expect), "{e}");
    }
}

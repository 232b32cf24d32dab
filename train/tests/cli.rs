//! The real `train` binary: bad configs exit with code 3 and a message naming the key.

use std::process::Command;

fn train() -> Command {
    Command::new(env!("CARGO_BIN_EXE_train"))
}

#[test]
fn malformed_config_names_the_key_and_exits_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[business]\nname = \"x\"\n[forecaster.data]\nsales = { path = \"s.csv\" }\nseries_keys = [\"a\"]\ndate = \"d\"\ntarget = \"y\"\n[forecaster.training]\nepochz = 3\n",
    )
    .expect("write");
    let out = train()
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run train");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert!(stderr.contains("epochz"), "{stderr}");
    assert!(stderr.contains("forecaster.training"), "{stderr}");
    assert!(stderr.contains("bad.toml"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn missing_data_file_names_it_and_exits_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shop.toml");
    std::fs::write(
        &path,
        "[business]\nname = \"x\"\ndevice = \"flex\"\n[forecaster.data]\nsales = { path = \"nowhere.csv\" }\nseries_keys = [\"a\"]\ndate = \"d\"\ntarget = \"y\"\n",
    )
    .expect("write");
    let out = train()
        .arg("--config")
        .arg(&path)
        .arg("--out")
        .arg(dir.path().join("b"))
        .output()
        .expect("run train");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert!(stderr.contains("nowhere.csv"), "{stderr}");
    assert!(
        !dir.path().join("b").exists(),
        "no bundle may be written on failure"
    );
}

/// Runs `train` on `config_text` with `files` written beside it; the exit code and stderr.
fn train_on(files: &[(&str, String)], config_text: &str) -> (Option<i32>, String, bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write data");
    }
    let config = dir.path().join("shop.toml");
    std::fs::write(&config, config_text).expect("write config");
    let bundle = dir.path().join("b");
    let out = train()
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&bundle)
        .output()
        .expect("run train");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code(), stderr, bundle.exists())
}

#[test]
fn too_little_data_is_explained_and_exits_3() {
    // A forecaster over 20 days cannot hold two backtest folds, a validation period and a
    // training window of 14-day horizons.
    let mut sales = String::from("sku,day,units\n");
    for d in 1..=20 {
        sales.push_str(&format!("a,2024-01-{d:02},{}\n", d % 5));
    }
    let (code, e, bundle) = train_on(
        &[("sales.csv", sales)],
        "[business]\nname = \"short\"\ndevice = \"flex\"\ndata_dir = \".\"\n\
         [forecaster.data]\nsales = { path = \"sales.csv\" }\nseries_keys = [\"sku\"]\n\
         date = \"day\"\ntarget = \"units\"\n[forecaster.model]\nhorizon = 14\n",
    );
    assert_eq!(code, Some(3), "{e}");
    assert!(
        e.contains("the data has 20 periods") && e.contains("backtest_folds"),
        "{e}"
    );
    assert!(!bundle);

    // Every customer bought one product: leave-one-out leaves no validation data.
    let mut events = String::from("customer_id,product_id,timestamp\n");
    for c in 0..40 {
        events.push_str(&format!("c{c},p{},2024-01-01\n", c % 20));
    }
    let recommender = "[business]\nname = \"thin\"\ndevice = \"flex\"\ndata_dir = \".\"\n\
         [recommender.data]\nevents = { path = \"events.csv\" }\ncustomer_id = \"customer_id\"\n\
         product_id = \"product_id\"\ntimestamp = \"timestamp\"\n";
    let (code, e, bundle) = train_on(&[("events.csv", events)], recommender);
    assert_eq!(code, Some(3), "{e}");
    assert!(e.contains("no held-out data"), "{e}");
    assert!(!bundle);

    // A catalogue of 5 products cannot rank a top 10.
    let mut events = String::from("customer_id,product_id,timestamp\n");
    for c in 0..40 {
        for k in 0..3 {
            events.push_str(&format!("c{c},p{},2024-01-0{}\n", (c + k) % 5, k + 1));
        }
    }
    let (code, e, _) = train_on(&[("events.csv", events)], recommender);
    assert_eq!(code, Some(3), "{e}");
    assert!(e.contains("the catalogue has 5 products"), "{e}");
}

#[test]
fn wgpu_without_an_adapter_names_the_fix_and_auto_falls_back_to_cpu() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shop.toml");
    std::fs::write(
        &path,
        "[business]\nname = \"x\"\n[forecaster.data]\nsales = { path = \"nowhere.csv\" }\nseries_keys = [\"a\"]\ndate = \"d\"\ntarget = \"y\"\n",
    )
    .expect("write");
    // The Vulkan loader and libglvnd's EGL are pointed at driver lists that do not exist: no
    // adapter at all (without the EGL part, WGPU finds Mesa's llvmpipe through OpenGL).
    let run = |device: &str| {
        let out = train()
            .arg("--config")
            .arg(&path)
            .arg("--out")
            .arg(dir.path().join("b"))
            .args(["--device", device])
            .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
            .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
            .env("__EGL_VENDOR_LIBRARY_FILENAMES", "/nonexistent/egl.json")
            .env("__EGL_VENDOR_LIBRARY_DIRS", "/nonexistent")
            .output()
            .expect("run train");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, e) = run("wgpu");
    assert_eq!(code, Some(3), "{e}");
    assert!(
        e.contains("no usable WGPU adapter") && e.contains("mesa-vulkan-drivers"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
    // auto: a warning, then the job goes on on flex (and stops at the missing data file).
    let (code, e) = run("auto");
    assert!(
        e.contains("warning: --device auto: no GPU adapter found"),
        "{e}"
    );
    assert!(e.contains("device flex"), "{e}");
    assert_eq!(code, Some(3), "{e}");
    assert!(e.contains("nowhere.csv"), "{e}");
}

#[test]
fn empty_covariate_cells_are_reported_in_the_log_and_the_model_card() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sales = String::from("sku,day,units,price\n");
    let start = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).expect("date");
    for d in 0..200u32 {
        let day = start + chrono::Days::new(d as u64);
        for sku in ["a", "b"] {
            // Every 10th day of `a` has no price.
            let price = if sku == "a" && d % 10 == 3 {
                String::new()
            } else {
                format!("{}", 2 + d % 3)
            };
            sales.push_str(&format!("{sku},{day},{},{price}\n", 3 + (d % 7)));
        }
    }
    std::fs::write(dir.path().join("sales.csv"), sales).expect("write data");
    let config = dir.path().join("shop.toml");
    std::fs::write(
        &config,
        "[business]\nname = \"gaps\"\ndevice = \"flex\"\ndata_dir = \".\"\n\
         [forecaster.data]\nsales = { path = \"sales.csv\" }\nseries_keys = [\"sku\"]\n\
         date = \"day\"\ntarget = \"units\"\nknown_covariates = [\"price\"]\n\
         [forecaster.model]\nhorizon = 7\ncontext_length = 14\nhidden_size = 8\n\
         [forecaster.training]\nepochs = 1\nwindows_per_series = 4\n\
         [forecaster.evaluation]\nallow_worse_than_baseline = true\n",
    )
    .expect("write config");
    let bundle = dir.path().join("b");
    let out = train()
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&bundle)
        .output()
        .expect("run train");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("column \"price\": 20 empty cells, each taken as the series' value of the previous period"),
        "{stderr}"
    );
    let card = std::fs::read_to_string(bundle.join("MODEL_CARD.md")).expect("model card");
    assert!(
        card.contains("empty cells in covariate `price`") && card.contains("20, each taken as"),
        "{card}"
    );
}

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

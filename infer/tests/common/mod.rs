//! Helpers shared by the tests that drive the real `train` and `infer` binaries.

use std::path::PathBuf;
use std::process::Command;

/// A binary of this workspace, built beside `infer` by `cargo test --release --workspace`.
pub fn bin(name: &str) -> PathBuf {
    let infer = PathBuf::from(env!("CARGO_BIN_EXE_infer"));
    let path = infer.with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is not built: run the tests with `cargo test --release --workspace`",
        path.display()
    );
    path
}

/// Runs a command that must succeed; returns its stderr.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({:?}):\n{stderr}",
        out.status.code()
    );
    stderr
}

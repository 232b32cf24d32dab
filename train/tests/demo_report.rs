//! The README's main job, `train --config configs/demo-shop.toml`, end to end: its bundle's
//! `report.html` has every chart and table, draws something in each, fetches nothing from
//! elsewhere, and opened in headless Chromium is not blank.

use std::path::Path;
use std::process::Command;

#[test]
fn the_demo_run_writes_a_complete_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/demo-shop.toml");
    let bundle = dir.path().join("bundle");
    let o = Command::new(env!("CARGO_BIN_EXE_train"))
        .arg("--config")
        .arg(&config)
        .args(["--device", "flex", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--out")
        .arg(&bundle)
        .output()
        .expect("run train");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // The run report: every chart (inline SVG) and table, nothing fetched from elsewhere.
    let report = std::fs::read_to_string(bundle.join("report.html")).expect("report.html");
    for id in [
        "loss-recommender",
        "validation-recommender",
        "popularity-bias",
        "segment-sizes",
        "loss-forecaster",
        "forecast-best",
        "forecast-median",
        "forecast-worst",
    ] {
        let at = report
            .find(&format!("<figure id=\"{id}\"><svg"))
            .unwrap_or_else(|| panic!("no chart {id}"));
        let end = report[at..].find("</figure>").expect("figure end");
        let svg = &report[at..at + end];
        let marks = svg.matches("<polyline").count()
            + svg.matches("<rect").count()
            + svg.matches("<polygon").count();
        assert!(marks >= 2, "{id} draws nothing");
    }
    for id in ["metrics-recommender", "metrics-forecaster", "segments"] {
        assert!(
            report.contains(&format!("<table id=\"{id}\">")),
            "no table {id}"
        );
    }
    assert!(report.contains("<td>full.recall@10</td>") && report.contains("<td>mase</td>"));
    assert!(
        !report.contains("src=\"http") && !report.contains("href=\"http"),
        "external resources"
    );
    // Opened in headless Chromium, the page is not blank (required in CI, which installs
    // Chromium; skipped with a note on a machine without it).
    let chromium = std::process::Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .is_ok_and(|o| o.status.success());
    if chromium {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs/scripts/report-screenshot.sh");
        let o = std::process::Command::new("bash")
            .arg(script)
            .arg(&bundle)
            .arg(dir.path().join("report.png"))
            .output()
            .expect("run the screenshot script");
        assert!(
            o.status.success(),
            "screenshot check: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must check the report in Chromium"
        );
        eprintln!("note: chromium not found; the report's screenshot check was skipped");
    }
}

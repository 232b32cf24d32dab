//! The jobs' log lines on stderr: plain text for people (`warning: ...`, `recommend: ...`), or
//! with `--log-format json` one JSON object per line for log collectors:
//! `{"ts":"2026-11-23T03:00:00Z","level":"info","job":"recommend","msg":"..."}` (an error line
//! also carries `exit_code`).

use std::sync::OnceLock;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("--log-format {s:?}: expected text or json")),
        }
    }
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Sets the format for the rest of the process (the first call wins).
pub fn set_format(format: LogFormat) {
    let _ = FORMAT.set(format);
}

fn line(level: &str, job: &str, msg: &str, exit_code: Option<u8>) -> String {
    match FORMAT.get().copied().unwrap_or_default() {
        LogFormat::Text => match level {
            "info" => format!("{job}: {msg}"),
            _ => format!("{level}: {msg}"),
        },
        LogFormat::Json => {
            let mut record = serde_json::json!({
                "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "level": level,
                "job": job,
                "msg": msg,
            });
            if let Some(code) = exit_code {
                record["exit_code"] = code.into();
            }
            record.to_string()
        }
    }
}

/// A progress or summary line of `job`.
pub fn info(job: &str, msg: &str) {
    eprintln!("{}", line("info", job, msg, None));
}

/// Something the operator should know (an assumption, a fallback).
pub fn warn(job: &str, msg: &str) {
    eprintln!("{}", line("warning", job, msg, None));
}

/// The error a job ends with, and its exit code.
pub fn error(job: &str, msg: &str, exit_code: u8) {
    eprintln!("{}", line("error", job, msg, Some(exit_code)));
}

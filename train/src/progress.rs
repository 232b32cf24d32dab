//! Progress reporting: an indicatif bar (epochs, batches, loss, ETA) on a terminal, plain log
//! lines otherwise (cron, CI, log files).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Progress of one training stage.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    done: u64,
    /// Steps done before a resume (not timed by this run).
    skipped: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    /// A bar over `total` steps (batches across all epochs).
    pub fn new(label: &str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {pos}/{len} {msg} (ETA {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label.to_string());
            bar
        });
        Progress {
            bar,
            label: label.to_string(),
            total,
            done: 0,
            skipped: 0,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    /// Steps already done by the run this one resumes.
    pub fn skip(&mut self, steps: u64) {
        let steps = steps.min(self.total);
        self.done += steps;
        self.skipped += steps;
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
        }
    }

    /// One step done; `msg` says the epoch and loss.
    pub fn step(&mut self, msg: impl FnOnce() -> String) {
        self.done += 1;
        if let Some(bar) = &self.bar {
            bar.inc(1);
            if self.done.is_multiple_of(5) || self.done == self.total {
                bar.set_message(msg());
            }
        } else if self.last_line.elapsed() > Duration::from_secs(10) {
            self.last_line = Instant::now();
            let elapsed = self.started.elapsed().as_secs_f64();
            let timed = (self.done - self.skipped).max(1);
            let eta = elapsed / timed as f64 * (self.total.saturating_sub(self.done)) as f64;
            eprintln!(
                "{}: {}/{} steps, {} (ETA {:.0}s)",
                self.label,
                self.done,
                self.total,
                msg(),
                eta
            );
        }
    }

    /// A line for the log that does not break the bar.
    pub fn log(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("{}: {line}", self.label)),
            None => eprintln!("{}: {line}", self.label),
        }
    }

    /// Training stopped early: the bar's total shrinks to what was done.
    pub fn finish(&self, msg: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(self.done);
                bar.finish_with_message(msg.to_string());
            }
            None => eprintln!(
                "{}: {msg} ({:.1}s)",
                self.label,
                self.started.elapsed().as_secs_f64()
            ),
        }
    }
}

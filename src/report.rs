//! Output: one writer for everything hactl prints. Results go to stdout (text or one JSON
//! document), progress and logs to stderr (indicatif bars on a TTY, plain lines otherwise), and
//! every line passes through the secret [`Redactor`].

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::outcome::{Stats, Status, StepResult, Summary};
use crate::secrets::Redactor;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON document on stdout.
    Json,
}

/// The writer.
pub struct Reporter {
    format: Format,
    redactor: Redactor,
    bars: Option<MultiProgress>,
    overall: Mutex<Option<ProgressBar>>,
    host_bars: Mutex<BTreeMap<String, ProgressBar>>,
    color: bool,
    verbose: bool,
    silent: bool,
}

impl Reporter {
    /// A writer for this format; bars only when stderr is a terminal. `verbose` shows a progress
    /// line for every step, not only those that changed or failed.
    pub fn new(format: Format, redactor: Redactor, verbose: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bars = tty.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self::with_bars(format, redactor, verbose, bars)
    }

    /// A writer drawing its bars (if any) where `bars` says.
    fn with_bars(format: Format, redactor: Redactor, verbose: bool, bars: Option<MultiProgress>) -> Self {
        let color = bars.is_some() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Reporter {
            format,
            redactor,
            bars,
            overall: Mutex::new(None),
            host_bars: Mutex::new(BTreeMap::new()),
            color,
            verbose,
            silent: false,
        }
    }

    /// A writer that shows nothing (a reviewed plan's check run: its differences are reported
    /// by the caller).
    pub fn silent(redactor: Redactor) -> Self {
        Reporter {
            silent: true,
            ..Self::with_bars(Format::Json, redactor, false, None)
        }
    }

    /// Replaces the redactor (once secrets are known).
    pub fn set_redactor(&mut self, redactor: Redactor) {
        self.redactor = redactor;
    }

    /// The redactor it masks with.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The output format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// A log line on stderr, above the bars when there are bars.
    pub fn log(&self, line: &str) {
        if self.silent {
            return;
        }
        let line = self.redactor.redact(line);
        match &self.bars {
            Some(mp) => {
                let _ = mp.println(line);
            }
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
        }
    }

    /// Text on stdout (text format only; JSON goes out once through [`Reporter::json`]).
    pub fn out(&self, text: &str) {
        if self.format == Format::Text && !self.silent {
            let text = self.redactor.redact(text);
            let print = || {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            };
            match &self.bars {
                Some(mp) => mp.suspend(print),
                None => print(),
            }
        }
    }

    /// Starts the overall bar for `stages` stages.
    pub fn start(&self, stages: u64) {
        if let Some(mp) = &self.bars {
            let bar = mp.add(ProgressBar::new(stages));
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} stages {msg} {elapsed}").expect("valid template"),
            );
            *self.overall.lock().expect("lock") = Some(bar);
        }
    }

    /// Shows what a host is doing now (a spinner line on a TTY).
    pub fn host_activity(&self, host: &str, what: &str) {
        let Some(mp) = &self.bars else { return };
        let mut bars = self.host_bars.lock().expect("lock");
        let bar = bars.entry(host.to_string()).or_insert_with(|| {
            let b = mp.add(ProgressBar::new_spinner());
            b.set_style(ProgressStyle::with_template("{spinner} {prefix:>12} {msg}").expect("valid template"));
            b.set_prefix(host.to_string());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        bar.set_message(self.redactor.redact(what));
    }

    /// A host has nothing under way any more (its spinner goes).
    pub fn host_idle(&self, host: &str) {
        if let Some(bar) = self.host_bars.lock().expect("lock").remove(host) {
            bar.finish_and_clear();
        }
    }

    /// A stage is over: the overall bar moves one step (it counts stages, so it never passes its
    /// total, however many batches, handlers and gates a stage has).
    pub fn stage_done(&self, stage: &str) {
        if let Some(bar) = self.overall.lock().expect("lock").as_ref() {
            bar.inc(1);
            bar.set_message(format!("({stage} done)"));
        }
    }

    /// A progress line for a result, `[host] stage/step status`: for changes and failures, or for
    /// every result when verbose (the stage summaries on stdout cover the rest).
    pub fn progress(&self, r: &StepResult) {
        if !self.verbose && !matches!(r.status, Status::Changed | Status::Failed) {
            return;
        }
        let status = if self.color {
            let code = match r.status {
                Status::Changed => "33",
                Status::Failed => "31",
                Status::Ok | Status::Passed => "32",
                Status::Skipped => "36",
            };
            format!("\x1b[{code}m{}\x1b[0m", r.status.word())
        } else {
            r.status.word().to_string()
        };
        let mut line = format!("[{}] {}/{} {status}", r.host, r.stage, r.step);
        if let Some(e) = &r.error {
            line.push_str(&format!(": {}", e.lines().next().unwrap_or("")));
        }
        self.log(&line);
    }

    /// Clears the bars.
    pub fn finish(&self) {
        if let Some(bar) = self.overall.lock().expect("lock").take() {
            bar.finish_and_clear();
        }
        if let Some(mp) = &self.bars {
            let _ = mp.clear();
        }
    }

    /// Prints the JSON document (JSON format only).
    pub fn json(&self, summary: &Summary, results: &[StepResult], stats: &Stats) {
        if self.format != Format::Json {
            return;
        }
        let redacted: Vec<StepResult> = results
            .iter()
            .map(|r| StepResult {
                diff: r.diff.as_deref().map(|d| self.redactor.redact_diff(d)),
                summary: r.summary.as_deref().map(|s| self.redactor.redact(s)),
                error: r.error.as_deref().map(|s| self.redactor.redact(s)),
                ..r.clone()
            })
            .collect();
        let doc = serde_json::json!({ "summary": summary, "results": redacted, "stats": stats });
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&doc).expect("json serialises"));
    }

    /// A human-readable block for one stage's results (changes, diffs, failures).
    pub fn stage_text(&self, stage: &str, results: &[StepResult], plan: bool) -> String {
        let mut text = String::new();
        let mut by_host: BTreeMap<&str, Vec<&StepResult>> = BTreeMap::new();
        for r in results.iter().filter(|r| r.stage == stage) {
            by_host.entry(&r.host).or_default().push(r);
        }
        for (host, rs) in by_host {
            // Changes, failures, and the rest when they say something (a handler found
            // redundant, a wait, a gate's figure).
            let interesting: Vec<&&StepResult> = rs
                .iter()
                .filter(|r| matches!(r.status, Status::Changed | Status::Failed) || r.summary.is_some())
                .collect();
            let counts = |s: Status| rs.iter().filter(|r| r.status == s).count();
            text.push_str(&format!(
                "{stage} {host}: {} {}, {} ok, {} failed\n",
                counts(Status::Changed),
                if plan { "to change" } else { "changed" },
                counts(Status::Ok) + counts(Status::Passed),
                counts(Status::Failed)
            ));
            for r in interesting {
                let mark = match r.status {
                    Status::Failed => "!",
                    Status::Skipped => "-",
                    Status::Changed => "~",
                    _ => "=",
                };
                text.push_str(&format!(
                    "  {mark} {}: {}\n",
                    r.step,
                    r.summary.as_deref().unwrap_or("")
                ));
                if let Some(e) = &r.error {
                    for l in e.lines() {
                        text.push_str(&format!("      {l}\n"));
                    }
                }
                if let Some(d) = &r.diff {
                    for l in self.redactor.redact_diff(d).lines() {
                        text.push_str(&format!("      {l}\n"));
                    }
                }
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_counts_stages_and_never_passes_its_total() {
        let bars = MultiProgress::with_draw_target(ProgressDrawTarget::hidden());
        let r = Reporter::with_bars(Format::Text, Redactor::default(), false, Some(bars));
        r.start(3);
        for stage in ["base", "etcd", "postgres"] {
            // Batches, handlers and gates make hosts busy and idle many times a stage.
            for _ in 0..5 {
                r.host_activity("node1", "probing");
                r.host_idle("node1");
            }
            r.stage_done(stage);
        }
        let overall = r.overall.lock().unwrap();
        let bar = overall.as_ref().unwrap();
        assert_eq!((bar.position(), bar.length()), (3, Some(3)));
    }
}

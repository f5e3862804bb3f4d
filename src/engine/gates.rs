//! Verification gates: read-only commands that must exit 0 after a stage (and alone, with
//! `hactl verify`). A host's gates run in one script, each retried on the host.

use std::sync::atomic::Ordering;

use super::batch::{batch_script, parse_batch, part_failure, tail, BatchKind};
use super::{Engine, Mode, Verdict};
use crate::outcome::{Status, StepResult};
use crate::playbook::{Gate, Stage};
use crate::ssh::Remote;

impl Engine {
    /// The stage's gates on one host.
    pub(super) async fn host_gates(&self, remote: &Remote, host: &str, stage: &Stage, is_first: bool) -> Verdict {
        let ctx = &self.contexts()[host];
        let mut gates: Vec<&Gate> = Vec::new();
        let mut max_skews: Vec<Option<f64>> = Vec::new();
        let mut parts = Vec::new();
        for gate in stage.verify.iter().filter(|g| !g.run_once || is_first) {
            if gate.after_change && self.options.mode == Mode::Apply && !self.applied_any.load(Ordering::SeqCst) {
                let mut r = StepResult::new(host, &stage.name, &format!("verify: {}", gate.name), Status::Skipped);
                r.summary = Some("not run: this run changed nothing (`hactl verify` runs it)".to_string());
                self.record(r);
                continue;
            }
            // A gate whose `when` is false here renders nothing, its clock limit included.
            let rendered = self.render_gate(stage, gate, ctx).and_then(|cmd| match cmd {
                Some(cmd) => Ok(Some((cmd, self.max_clock_skew(stage, gate, ctx)?))),
                None => Ok(None),
            });
            match rendered {
                Ok(Some((cmd, max_skew))) => {
                    parts.push((gates.len(), gate_script(&cmd, gate.retries, gate.delay)));
                    gates.push(gate);
                    max_skews.push(max_skew);
                }
                Ok(None) => {}
                Err(e) => return self.fail(host, &stage.name, &format!("verify: {}", gate.name), format!("{e}")),
            }
        }
        if gates.is_empty() {
            return Verdict::Succeeded;
        }
        self.reporter.host_activity(host, &format!("{}: verifying", stage.name));
        // The clock checks' window opens once a channel is free, not while the batch waited for one.
        let script = batch_script(&parts, BatchKind::Gates);
        let sent = std::sync::Mutex::new(0.0);
        let made = || {
            *sent.lock().expect("lock") = epoch_seconds();
            script
        };
        let what = format!("{}: verifying", stage.name);
        let out = match self.noting_long_work(host, &what, remote.run_made(made)).await {
            Ok(o) => parse_batch(&o.stdout),
            Err(e) => return self.connection_lost(host, &stage.name, "verify", &e),
        };
        let window = (*sent.lock().expect("lock"), epoch_seconds());
        let mut verdict = Verdict::Succeeded;
        for (i, (gate, max_skew)) in gates.iter().zip(&max_skews).enumerate() {
            let name = format!("verify: {}", gate.name);
            let stdout = out.get(&i).map(|o| o.stdout.as_str()).unwrap_or("");
            let outcome = match (part_failure(out.get(&i), 10), max_skew) {
                (Some(failure), _) => Err(failure),
                (None, Some(max)) => clock_verdict(stdout, window, *max),
                (None, None) => Ok(tail(stdout, 1)),
            };
            verdict = verdict.and(match outcome {
                Ok(last_line) => {
                    let mut passed = StepResult::new(host, &stage.name, &name, self.gate_passed());
                    if gate.report && !last_line.is_empty() {
                        passed.summary = Some(last_line);
                    }
                    self.record(passed);
                    Verdict::Succeeded
                }
                Err(failure) => self.fail(host, &stage.name, &name, failure),
            });
        }
        verdict
    }

    /// A clock gate's allowed skew in seconds, rendered; `None` for other gates.
    fn max_clock_skew(&self, stage: &Stage, gate: &Gate, ctx: &minijinja::Value) -> miette::Result<Option<f64>> {
        let Some(expr) = &gate.max_clock_skew else {
            return Ok(None);
        };
        let origin = self.origin(stage, "verify", &gate.name);
        let text = self.loaded.renderer.render_str(&origin, expr, ctx)?;
        match text.trim().parse::<f64>() {
            Ok(max) if max >= 0.0 => Ok(Some(max)),
            _ => Err(miette::miette!(
                "{origin}: max_clock_skew is not a number of seconds: {text:?}"
            )),
        }
    }

    /// A gate's command rendered for a host; `None` where its `when` is false.
    pub(super) fn render_gate(
        &self,
        stage: &Stage,
        gate: &Gate,
        ctx: &minijinja::Value,
    ) -> miette::Result<Option<String>> {
        let origin = self.origin(stage, "verify", &gate.name);
        if !self.applies(&origin, gate.when.as_deref(), ctx)? {
            return Ok(None);
        }
        gate.render(&self.loaded.renderer, &origin, ctx).map(Some)
    }

    /// A passed gate's status: `passed` for `verify`, `ok` within a provision (the contract's set).
    fn gate_passed(&self) -> Status {
        if self.options.mode == Mode::Verify {
            Status::Passed
        } else {
            Status::Ok
        }
    }
}

/// Seconds since the epoch on the controller.
fn epoch_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A clock gate's verdict: the node's time (the first line it printed, seconds since the epoch)
/// against the controller's `(sent, received)` window; how far outside it, at most `max`.
fn clock_verdict(stdout: &str, (sent, received): (f64, f64), max: f64) -> Result<String, String> {
    let first = stdout.lines().next().unwrap_or("").trim();
    let node: f64 = first
        .parse()
        .map_err(|_| format!("the clock check printed {first:?}, not the node's time in seconds"))?;
    let skew = if node < sent {
        node - sent
    } else if node > received {
        node - received
    } else {
        0.0
    };
    let trip = received - sent;
    if skew.abs() > max {
        let side = if skew < 0.0 { "behind" } else { "ahead of" };
        return Err(format!(
            "the clock is {:.3} s {side} the controller's, beyond the gate's {trip:.3} s round trip (at most {max} s)",
            skew.abs()
        ));
    }
    Ok(format!(
        "skew {skew:+.3} s beyond the gate's {trip:.3} s round trip (at most {max} s)"
    ))
}

/// A script that retries a gate command on the host.
fn gate_script(cmd: &str, retries: u32, delay: f64) -> String {
    format!(
        "n={}\nwhile :; do out=$( ( {cmd}\n ) 2>&1 </dev/null ); rc=$?; [ $rc -eq 0 ] && break; n=$((n-1)); [ $n -le 0 ] && break; sleep {delay}; done\nprintf '%s\\n' \"$out\"; exit $rc\n",
        retries.max(1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::run_local;

    #[test]
    fn gate_retries_until_success() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("n");
        let cmd = format!("echo x >> {0}; [ $(wc -l < {0}) -ge 3 ]", f.display());
        let out = run_local(&gate_script(&cmd, 5, 0.01));
        assert_eq!(out.rc, 0);
        assert_eq!(std::fs::read_to_string(&f).unwrap().lines().count(), 3);
        assert_ne!(run_local(&gate_script("false", 2, 0.01)).rc, 0);
    }

    #[test]
    fn a_clock_inside_the_round_trip_has_no_skew_and_one_outside_is_measured_from_its_edge() {
        let window = (1000.0, 1000.8);
        let inside = clock_verdict("1000.7\n", window, 0.5).unwrap();
        assert!(
            inside.starts_with("skew +0.000 s beyond the gate's 0.800 s round trip"),
            "{inside}"
        );
        let ahead = clock_verdict("1001.2", window, 0.5).unwrap();
        assert!(ahead.starts_with("skew +0.400 s"), "{ahead}");
        let behind = clock_verdict("999.3", window, 0.5).unwrap_err();
        assert!(
            behind.starts_with("the clock is 0.700 s behind the controller's"),
            "{behind}"
        );
        let far_ahead = clock_verdict("1002.0", window, 0.5).unwrap_err();
        assert!(far_ahead.contains("1.200 s ahead of"), "{far_ahead}");
        assert!(clock_verdict("", window, 0.5)
            .unwrap_err()
            .contains("not the node's time"));
    }

    #[test]
    fn the_clock_gate_reads_the_node_time_inside_its_window() {
        let sent = epoch_seconds();
        let out = run_local(&gate_script("date +%s.%N", 1, 0.01));
        let verdict = clock_verdict(&out.stdout, (sent, epoch_seconds()), 0.0);
        assert_eq!(out.rc, 0);
        assert!(verdict.is_ok(), "{verdict:?}");
    }
}

//! Verification gates: read-only commands that must exit 0 after a stage (and alone, with
//! `hactl verify`). A host's gates run in one script, each retried on the host.

use std::sync::atomic::Ordering;

use super::batch::{batch_script, parse_batch, part_failure, tail, BatchKind};
use super::{Engine, Mode, Verdict};
use crate::playbook::{Gate, Stage};
use crate::report::{Status, StepResult};
use crate::ssh::Remote;

impl Engine {
    /// The stage's gates on one host.
    pub(super) async fn host_gates(&self, remote: &Remote, host: &str, stage: &Stage, is_first: bool) -> Verdict {
        let ctx = &self.loaded.contexts[host];
        let mut gates: Vec<&Gate> = Vec::new();
        let mut parts = Vec::new();
        for gate in stage.verify.iter().filter(|g| !g.run_once || is_first) {
            if gate.after_change && self.options.mode == Mode::Apply && !self.applied_any.load(Ordering::SeqCst) {
                let mut r = StepResult::new(host, &stage.name, &format!("verify: {}", gate.name), Status::Skipped);
                r.summary = Some("not run: this run changed nothing (`hactl verify` runs it)".to_string());
                self.record(r);
                continue;
            }
            match self.render_gate(stage, gate, ctx) {
                Ok(Some(cmd)) => {
                    parts.push((gates.len(), gate_script(&cmd, gate.retries, gate.delay)));
                    gates.push(gate);
                }
                Ok(None) => {}
                Err(e) => return self.fail(host, &stage.name, &format!("verify: {}", gate.name), format!("{e}")),
            }
        }
        if gates.is_empty() {
            return Verdict::Succeeded;
        }
        self.reporter.host_activity(host, &format!("{}: verifying", stage.name));
        // Rendered again once a channel is free: a gate may carry the time it was made.
        let made = || {
            let again: Vec<(usize, String)> = gates
                .iter()
                .zip(&parts)
                .map(|(gate, (i, first))| match self.render_gate(stage, gate, ctx) {
                    Ok(Some(cmd)) => (*i, gate_script(&cmd, gate.retries, gate.delay)),
                    _ => (*i, first.clone()),
                })
                .collect();
            batch_script(&again, BatchKind::Gates)
        };
        let out = match remote.run_made(made).await {
            Ok(o) => parse_batch(&o.stdout),
            Err(e) => return self.connection_lost(host, &stage.name, "verify", &e),
        };
        let mut verdict = Verdict::Succeeded;
        for (i, gate) in gates.iter().enumerate() {
            let name = format!("verify: {}", gate.name);
            verdict = verdict.and(match part_failure(out.get(&i), 10) {
                None => {
                    let mut passed = StepResult::new(host, &stage.name, &name, self.gate_passed());
                    if gate.report {
                        passed.summary = out.get(&i).map(|o| tail(&o.stdout, 1)).filter(|l| !l.is_empty());
                    }
                    self.record(passed);
                    Verdict::Succeeded
                }
                Some(failure) => self.fail(host, &stage.name, &name, failure),
            });
        }
        verdict
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
        self.loaded.renderer.render_str(&origin, &gate.command, ctx).map(Some)
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
}

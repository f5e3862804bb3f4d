//! One host through one stage: render its steps, probe them all in one round trip, diff, and
//! (when applying) apply the changed ones in one script, re-probe to prove convergence, then run
//! the handlers they notified (unless the stage is rolling).

use std::borrow::Borrow;
use std::collections::BTreeSet;

use miette::Result;
use minijinja::value::Value;

use super::batch::{batch_script, parse_batch, part_failure, tail, BatchKind};
use super::load::render_json;
use super::{Engine, Mode, Verdict};
use crate::modules::{self, BuildCx, Change, Module};
use crate::outcome::{Status, StepResult};
use crate::playbook::{Stage, Step};
use crate::ssh::{Remote, ScriptOutput};

/// One step of a host's stage, rendered.
pub(super) struct Planned {
    /// The step's name.
    pub(super) name: String,
    /// Its module, built for this host.
    pub(super) module: Box<dyn Module>,
    /// Handlers it notifies when it changes something.
    pub(super) notify: Vec<String>,
}

/// Why probing failed.
#[derive(Debug)]
pub(super) enum ProbeError {
    /// One step's probe failed: its index among the probed steps, and why.
    Step(usize, String),
    /// The host's connection failed.
    Connection(crate::ssh::SshError),
}

impl ProbeError {
    /// The same error with its step index mapped by `f` (from a subset to the whole list).
    pub(super) fn reindex(self, f: impl Fn(usize) -> usize) -> Self {
        match self {
            ProbeError::Step(i, e) => ProbeError::Step(f(i), e),
            other => other,
        }
    }
}

impl Engine {
    /// One host through one stage.
    pub(super) async fn host_stage(&self, remote: &Remote, host: &str, stage: &Stage, is_first: bool) -> Verdict {
        let ctx = &self.contexts()[host];
        // Rendered before the run began (see `check_renders`), unless the first host changed since.
        let key = (stage.name.clone(), host.to_string());
        let cached = self.rendered.lock().expect("lock").remove(&key);
        let as_prefetched = matches!(&cached, Some((first, _)) if *first == is_first);
        let rendered: Vec<Result<Option<Planned>>> = match cached {
            Some((first, planned)) if first == is_first => planned.into_iter().map(Ok).collect(),
            _ => stage
                .steps
                .iter()
                .map(|step| self.plan_step(stage, step, ctx, is_first))
                .collect(),
        };
        let mut steps: Vec<Planned> = Vec::new();
        for (step, planned) in stage.steps.iter().zip(rendered) {
            match planned {
                Ok(Some(p)) => steps.push(p),
                Ok(None) => self.record(StepResult::new(host, &stage.name, &step.name, Status::Skipped)),
                Err(e) => return self.fail(host, &stage.name, &step.name, format!("{e:?}")),
            }
        }
        self.reporter
            .host_activity(host, &format!("{}: probing {} steps", stage.name, steps.len()));
        let probed = match self.take_prefetched(&key, as_prefetched).await {
            Some(out) => out
                .map_err(ProbeError::Connection)
                .and_then(|out| read_probes(&steps, &out)),
            None => self.probe_all(remote, &steps).await,
        };
        let mut changes = match probed {
            Ok(c) => c,
            Err(e) => return self.probe_failed(host, &stage.name, &steps, e),
        };
        let owed: BTreeSet<String> = self.pending.get(host, &stage.name);
        let mut notified = owed.clone();
        if self.options.mode == Mode::Plan {
            for (step, change) in steps.iter().zip(&changes) {
                if change.as_ref().is_some_and(|c| c.counts) {
                    notified.extend(self.applicable_handlers(stage, ctx, &step.notify));
                }
                self.record_change(host, &stage.name, &step.name, change.as_ref(), true);
            }
            let redundant = self.redundant_handlers(stage, ctx, &steps, &changes, &owed);
            self.record_redundant(host, stage, &redundant, true);
            notified.retain(|h| !redundant.contains(h));
            self.plan_handlers(remote, host, stage, ctx, &notified).await;
            return Verdict::Succeeded;
        }
        if self.options.prune {
            let refused = steps.iter().zip(&changes).find_map(|(step, c)| {
                c.as_ref()
                    .and_then(|c| c.refusal.as_ref())
                    .map(|why| (step.name.clone(), why.clone()))
            });
            if let Some((step, why)) = refused {
                return self.fail(host, &stage.name, &step, why);
            }
        }
        let mut applied: Vec<Option<Change>> = vec![None; steps.len()];
        loop {
            let todo: Vec<usize> = (0..steps.len())
                .filter(|&i| applied[i].is_none())
                .filter(|&i| {
                    changes[i].as_ref().is_some_and(|c| {
                        (!c.counts || self.in_reviewed_plan(host, &stage.name, &steps[i].name))
                            && (!c.prune || self.options.prune)
                    })
                })
                .collect();
            if todo.is_empty() {
                break;
            }
            if self
                .gates_before_change(host, &stage.name, step_name(&steps, todo[0]))
                .await
                .failed()
            {
                self.record_applied(host, &stage.name, &steps, &applied);
                return Verdict::Failed;
            }
            for &i in &todo {
                if changes[i].as_ref().is_some_and(|c| c.counts) {
                    notified.extend(self.applicable_handlers(stage, ctx, &steps[i].notify));
                }
            }
            if let Err(e) = self.pending.set(host, &stage.name, notified.clone()) {
                return self.fail(host, &stage.name, "pending handlers", format!("{e}"));
            }
            self.reporter
                .host_activity(host, &format!("{}: applying {} steps", stage.name, todo.len()));
            let parts: Vec<(usize, String)> = todo.iter().map(|&i| (i, steps[i].module.apply())).collect();
            let what = applying(&stage.name, &steps, &changes, &todo);
            let script = batch_script(&parts, BatchKind::Apply);
            let out = match self.noting_long_work(host, &what, remote.run(&script)).await {
                Ok(o) => parse_batch(&o.stdout),
                Err(e) => {
                    self.record_applied(host, &stage.name, &steps, &applied);
                    return self.connection_lost(host, &stage.name, step_name(&steps, todo[0]), &e);
                }
            };
            for &i in &todo {
                if let Some(failure) = part_failure(out.get(&i), 20) {
                    self.record_applied(host, &stage.name, &steps, &applied);
                    return self.fail(host, &stage.name, &steps[i].name, failure);
                }
                applied[i] = changes[i].take();
            }
            changes = match self.probe_all(remote, &steps).await {
                Ok(c) => c,
                Err(e) => {
                    self.record_applied(host, &stage.name, &steps, &applied);
                    return self.probe_failed(host, &stage.name, &steps, e);
                }
            };
            for (i, step) in steps.iter().enumerate() {
                if applied[i].is_some() && step.module.converges() {
                    if let Some(still) = changes[i].as_ref().filter(|c| c.counts) {
                        let error = format!("did not converge: still {}", still.summary);
                        self.record_applied(host, &stage.name, &steps, &applied);
                        return self.fail(host, &stage.name, &step.name, error);
                    }
                }
                if applied[i].is_some() {
                    changes[i] = None;
                }
            }
        }
        for (i, step) in steps.iter().enumerate() {
            let left = changes[i].as_ref().filter(|c| c.prune && !self.options.prune);
            if let (None, Some(removal)) = (&applied[i], left) {
                let mut r = StepResult::new(host, &stage.name, &step.name, Status::Skipped);
                r.summary = Some(match &removal.refusal {
                    Some(why) => format!("left: {} (provision --prune refuses it: {why})", removal.summary),
                    None => format!("left: {} (provision --prune does it)", removal.summary),
                });
                self.record(r);
            } else if applied[i].is_none() && changes[i].as_ref().is_some_and(|c| c.counts) {
                let mut r = StepResult::new(host, &stage.name, &step.name, Status::Skipped);
                r.summary = Some("not in the reviewed plan: left as it is".to_string());
                self.record(r);
            } else {
                self.record_change(host, &stage.name, &step.name, applied[i].as_ref(), false);
            }
        }
        let redundant = self.redundant_handlers(stage, ctx, &steps, &applied, &owed);
        if !redundant.is_empty() {
            self.record_redundant(host, stage, &redundant, false);
            notified.retain(|h| !redundant.contains(h));
            if let Err(e) = self.pending.set(host, &stage.name, notified.clone()) {
                return self.fail(host, &stage.name, "pending handlers", format!("{e}"));
            }
        }
        if stage.rolling {
            return Verdict::Succeeded; // the handlers owed are pending; `rolling_handlers` runs them host by host
        }
        self.run_handlers(remote, host, stage, ctx, notified).await
    }

    /// Renders every step, handler and gate of `stage` for each of its hosts, before anything is
    /// connected to or changed: a template error in a late stage must not surface after earlier
    /// stages were applied.
    /// The steps' renderings are kept for the run.
    pub(super) fn check_renders(&self, stage: &Stage, hosts: &[String]) -> Result<()> {
        for (index, host) in hosts.iter().enumerate() {
            let ctx = &self.contexts()[host];
            let is_first = index == 0;
            let steps = stage
                .steps
                .iter()
                .map(|step| self.plan_step(stage, step, ctx, is_first))
                .collect::<Result<Vec<_>>>()?;
            for handler in &stage.handlers {
                self.plan_step(stage, handler, ctx, true)?;
            }
            self.rendered
                .lock()
                .expect("lock")
                .insert((stage.name.clone(), host.clone()), (is_first, steps));
            for gate in &stage.verify {
                self.render_gate(stage, gate, ctx)?;
            }
        }
        Ok(())
    }

    /// Where a step, handler or gate is, for errors: "templates/etcd/stage.yml stage `etcd` step `x`".
    pub(super) fn origin(&self, stage: &Stage, kind: &str, name: &str) -> String {
        format!("{} stage `{}` {kind} `{name}`", stage.file.display(), stage.name)
    }

    /// Whether a `when` expression (none: always) is true for a host.
    pub(super) fn applies(&self, origin: &str, when: Option<&str>, ctx: &Value) -> Result<bool> {
        match when {
            Some(expr) => self.loaded.renderer.eval_bool(&format!("{origin} when"), expr, ctx),
            None => Ok(true),
        }
    }

    /// Renders a step for a host: `None` when its `when` is false or it is run_once elsewhere.
    pub(super) fn plan_step(&self, stage: &Stage, step: &Step, ctx: &Value, is_first: bool) -> Result<Option<Planned>> {
        if step.run_once && !is_first {
            return Ok(None);
        }
        let origin = self.origin(stage, "step", &step.name);
        if !self.applies(&origin, step.when.as_deref(), ctx)? {
            return Ok(None);
        }
        let renderer = &self.loaded.renderer;
        let args = render_json(renderer, &origin, step.args.clone(), ctx)?;
        let cx = BuildCx {
            origin: &origin,
            renderer,
            ctx,
            redactor: &self.loaded.redactor,
        };
        Ok(Some(Planned {
            name: step.name.clone(),
            module: modules::build(&step.module, args, &cx)?,
            notify: step.notify.clone(),
        }))
    }

    /// The handlers notified in this run that need not run: each refreshes a unit (restart,
    /// reload) that a later step of this run started, with the configuration already in place
    /// (a first provision must not restart what it has just started). Handlers owed by an
    /// earlier run always run.
    fn redundant_handlers(
        &self,
        stage: &Stage,
        ctx: &Value,
        steps: &[Planned],
        changes: &[Option<Change>],
        owed: &BTreeSet<String>,
    ) -> BTreeSet<String> {
        let counted = |i: usize| changes[i].as_ref().filter(|c| c.counts);
        let started_at = |unit: &str| {
            (0..steps.len())
                .rev()
                .find(|&i| counted(i).and_then(|c| c.starts.as_deref()) == Some(unit))
        };
        let last_notify = |handler: &str| {
            (0..steps.len())
                .rev()
                .find(|&i| counted(i).is_some() && steps[i].notify.iter().any(|n| n == handler))
        };
        stage
            .handlers
            .iter()
            .filter(|h| !owed.contains(&h.name))
            .filter(|h| {
                let Some(notified_at) = last_notify(&h.name) else {
                    return false;
                };
                let Ok(Some(planned)) = self.plan_step(stage, h, ctx, true) else {
                    return false;
                };
                planned
                    .module
                    .refreshes()
                    .and_then(started_at)
                    .is_some_and(|started| started > notified_at)
            })
            .map(|h| h.name.clone())
            .collect()
    }

    /// Records the handlers found redundant (see [`Engine::redundant_handlers`]).
    fn record_redundant(&self, host: &str, stage: &Stage, redundant: &BTreeSet<String>, plan: bool) {
        for name in redundant {
            let mut r = StepResult::new(host, &stage.name, name, Status::Skipped);
            let verb = if plan { "would not run" } else { "not run" };
            r.summary = Some(format!(
                "handler `{name}` {verb}: this run starts its unit after the change, with the new configuration"
            ));
            self.record(r);
        }
    }

    /// Probes every step in one round trip and diffs each against what it wants. A probe that
    /// exits non-zero is an error carrying its stderr, never "absent".
    pub(super) async fn probe_all(
        &self,
        remote: &Remote,
        steps: &[Planned],
    ) -> Result<Vec<Option<Change>>, ProbeError> {
        self.probe_some(remote, &steps.iter().collect::<Vec<_>>()).await
    }

    /// [`Engine::probe_all`] for some of the steps.
    pub(super) async fn probe_some(
        &self,
        remote: &Remote,
        steps: &[&Planned],
    ) -> Result<Vec<Option<Change>>, ProbeError> {
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let out = remote.run(&probe_script(steps)).await.map_err(ProbeError::Connection)?;
        read_probes(steps, &out)
    }

    /// Records why probing `steps` failed: a step's failure, or the connection's.
    pub(super) fn probe_failed(&self, host: &str, stage: &str, steps: &[Planned], e: ProbeError) -> Verdict {
        match e {
            ProbeError::Step(i, why) => self.fail(host, stage, step_name(steps, i), why),
            ProbeError::Connection(e) => self.connection_lost(host, stage, "probe", &e),
        }
    }

    /// Whether a step may be applied: always, unless the run applies a reviewed plan that does
    /// not name it.
    fn in_reviewed_plan(&self, host: &str, stage: &str, step: &str) -> bool {
        self.options.only.as_ref().is_none_or(|only| {
            only.changes
                .contains(&(host.to_string(), stage.to_string(), step.to_string()))
        })
    }

    /// Records the steps already applied when a run stops early, so the report shows them.
    fn record_applied(&self, host: &str, stage: &str, steps: &[Planned], applied: &[Option<Change>]) {
        for (step, change) in steps.iter().zip(applied).filter(|(_, c)| c.is_some()) {
            self.record_change(host, stage, &step.name, change.as_ref(), false);
        }
    }

    /// Records a step's result: ok, or changed (in a plan: "would …") with its summary and diff.
    fn record_change(&self, host: &str, stage: &str, step: &str, change: Option<&Change>, plan: bool) {
        let mut r = StepResult::new(host, stage, step, Status::Ok);
        if let Some(c) = change {
            if c.counts {
                r.status = Status::Changed;
            }
            let summary = if plan && c.counts && !c.summary.starts_with("would") {
                format!("would {}", c.summary)
            } else {
                c.summary.clone()
            };
            r.summary = Some(match &c.refusal {
                Some(why) => format!("{summary}; provision --prune refuses it: {why}"),
                None => summary,
            });
            r.diff = c.diff.clone();
        }
        self.record(r);
    }
}

/// The name of step `i` (or "probe" when there is none).
fn step_name(steps: &[Planned], i: usize) -> &str {
    steps.get(i).map(|s| s.name.as_str()).unwrap_or("probe")
}

/// The one round trip that probes `steps`.
pub(super) fn probe_script<P: Borrow<Planned>>(steps: &[P]) -> String {
    let parts: Vec<(usize, String)> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (i, s.borrow().module.probe()))
        .collect();
    batch_script(&parts, BatchKind::Probe)
}

/// Each step's change, read from the output of its [`probe_script`]. A probe that exits
/// non-zero is an error carrying its stderr, never "absent".
pub(super) fn read_probes<P: Borrow<Planned>>(
    steps: &[P],
    out: &ScriptOutput,
) -> Result<Vec<Option<Change>>, ProbeError> {
    let observed = parse_batch(&out.stdout);
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let o = observed
                .get(&i)
                .ok_or_else(|| ProbeError::Step(i, format!("probe produced no output: {}", tail(&out.stderr, 5))))?;
            if o.rc != 0 {
                return Err(ProbeError::Step(
                    i,
                    format!("probe failed (exit {}): {}", o.rc, tail(&o.stderr, 5)),
                ));
            }
            s.borrow()
                .module
                .diff(o)
                .map_err(|e| ProbeError::Step(i, format!("{e}")))
        })
        .collect()
}

/// What an apply round trip does, for a notice that it is taking long: its steps, the waits among
/// them first (a wait is what takes long: another host's migration, a port that must answer).
fn applying(stage: &str, steps: &[Planned], changes: &[Option<Change>], todo: &[usize]) -> String {
    let is_wait = |i: &&usize| changes[**i].as_ref().is_some_and(|c| !c.counts);
    let (waits, others): (Vec<&usize>, Vec<&usize>) = todo.iter().partition(is_wait);
    let names: Vec<&str> = waits.iter().chain(&others).map(|&&i| steps[i].name.as_str()).collect();
    let shown = names
        .iter()
        .take(3)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let more = names.len().saturating_sub(3);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!("{stage}: applying {shown}{more}")
}

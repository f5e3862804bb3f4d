//! Handlers: run once at the end of a host's stage when a step notified them, in their definition
//! order, in one script; cleared from the pending store when they succeed.

use std::collections::BTreeSet;

use minijinja::value::Value;

use super::batch::{batch_script, parse_batch, part_failure, BatchKind};
use super::converge::{Planned, ProbeError};
use super::{Engine, Verdict};
use crate::outcome::{Status, StepResult};
use crate::playbook::Stage;
use crate::ssh::Remote;

impl Engine {
    /// The handlers named in `names` that do something on this host: one whose `when` is false
    /// here is never owed (a rolling stage would otherwise visit the host for nothing). A
    /// handler that fails to render is kept, so that its error surfaces when it runs.
    pub(super) fn applicable_handlers(&self, stage: &Stage, ctx: &Value, names: &[String]) -> Vec<String> {
        let applies = |name: &String| match stage.handlers.iter().find(|h| &h.name == name) {
            Some(h) => {
                let origin = self.origin(stage, "handler", &h.name);
                self.applies(&origin, h.when.as_deref(), ctx).unwrap_or(true)
            }
            None => true,
        };
        names.iter().filter(|n| applies(n)).cloned().collect()
    }

    /// Records, in a plan, the handlers that would run (and those that would have nothing to do
    /// here as things stand, such as a try-restart of a unit that does not run).
    pub(super) async fn plan_handlers(
        &self,
        remote: &Remote,
        host: &str,
        stage: &Stage,
        ctx: &Value,
        notified: &BTreeSet<String>,
    ) {
        let planned: Vec<Planned> = stage
            .handlers
            .iter()
            .filter(|h| notified.contains(&h.name))
            .filter_map(|h| self.plan_step(stage, h, ctx, true).ok().flatten())
            .collect();
        let idle = self.idle_handlers(remote, &planned).await.unwrap_or_default();
        for handler in stage.handlers.iter().filter(|h| notified.contains(&h.name)) {
            let mut r = StepResult::new(host, &stage.name, &handler.name, Status::Changed);
            r.summary = Some(format!("would run handler `{}`", handler.name));
            r.handler = true;
            if idle.contains(&handler.name) {
                r.status = Status::Skipped;
                r.summary = Some(format!("handler `{}` would have nothing to do here", handler.name));
            }
            self.record(r);
        }
    }

    /// Runs the notified handlers; clears them when done.
    pub(super) async fn run_handlers(
        &self,
        remote: &Remote,
        host: &str,
        stage: &Stage,
        ctx: &Value,
        notified: BTreeSet<String>,
    ) -> Verdict {
        if notified.is_empty() {
            return Verdict::Succeeded;
        }
        let mut planned = Vec::new();
        for handler in stage.handlers.iter().filter(|h| notified.contains(&h.name)) {
            match self.plan_step(stage, handler, ctx, true) {
                Ok(Some(p)) => planned.push(p),
                Ok(None) => {}
                Err(e) => return self.fail(host, &stage.name, &handler.name, format!("{e:?}")),
            }
        }
        // A handler with nothing to do here (a try-restart of a unit that does not run) is not run.
        let idle = match self.idle_handlers(remote, &planned).await {
            Ok(idle) => idle,
            Err(e) => return self.probe_failed(host, &stage.name, &planned, e),
        };
        for name in &idle {
            let mut r = StepResult::new(host, &stage.name, name, Status::Skipped);
            r.summary = Some(format!("handler `{name}` had nothing to do here"));
            self.record(r);
        }
        planned.retain(|p| !idle.contains(&p.name));
        if planned.is_empty() {
            return self.clear_pending(host, stage);
        }
        if self
            .gates_before_change(host, &stage.name, &planned[0].name)
            .await
            .failed()
        {
            return Verdict::Failed;
        }
        self.reporter
            .host_activity(host, &format!("{}: {} handlers", stage.name, planned.len()));
        let parts: Vec<(usize, String)> = planned.iter().enumerate().map(|(i, p)| (i, p.module.apply())).collect();
        let out = match remote.run(&batch_script(&parts, BatchKind::Apply)).await {
            Ok(o) => parse_batch(&o.stdout),
            Err(e) => return self.connection_lost(host, &stage.name, &planned[0].name, &e),
        };
        for (i, p) in planned.iter().enumerate() {
            if let Some(failure) = part_failure(out.get(&i), 20) {
                return self.fail(host, &stage.name, &p.name, failure);
            }
            let mut r = StepResult::new(host, &stage.name, &p.name, Status::Changed);
            r.summary = Some(format!("handler `{}` ran", p.name));
            r.handler = true;
            self.record(r);
        }
        self.clear_pending(host, stage)
    }

    /// Forgets the handlers owed on `host` for `stage`.
    fn clear_pending(&self, host: &str, stage: &Stage) -> Verdict {
        match self.pending.set(host, &stage.name, BTreeSet::new()) {
            Ok(()) => Verdict::Succeeded,
            Err(e) => self.fail(host, &stage.name, "pending handlers", format!("{e}")),
        }
    }

    /// The handlers among `planned` that would do nothing here: those whose module allows the
    /// question (see [`crate::modules::Module::idle_when_in_sync`]), probed in one round trip
    /// (none when no handler allows it).
    async fn idle_handlers(&self, remote: &Remote, planned: &[Planned]) -> Result<Vec<String>, ProbeError> {
        let (askable, indexes): (Vec<&Planned>, Vec<usize>) = planned
            .iter()
            .enumerate()
            .filter(|(_, p)| p.module.idle_when_in_sync())
            .map(|(i, p)| (p, i))
            .unzip();
        if askable.is_empty() {
            return Ok(Vec::new());
        }
        let changes = self
            .probe_some(remote, &askable)
            .await
            .map_err(|e| e.reindex(|i| indexes[i]))?;
        Ok(askable
            .iter()
            .zip(&changes)
            .filter(|(_, c)| c.is_none())
            .map(|(p, _)| p.name.clone())
            .collect())
    }
}

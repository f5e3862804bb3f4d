//! Rolling handlers: the hosts that owe handlers, in the stage's `rolling_order`, one at a time,
//! each followed by the stage's gates (restarts that keep a cluster's quorum and a writable
//! primary) on the hosts that owe none any more: a host still waiting for its restart runs its
//! old configuration, which the new one's gates need not recognise (a service switching to TLS
//! still speaks plain HTTP there). A plan prints the order and records it (a saved plan keeps
//! it); a run applying a reviewed plan restarts in the reviewed order or not at all.

use super::{Engine, Mode, Verdict, Work};
use crate::outcome::{RollingOrder, Status};
use crate::playbook::Stage;
use std::sync::Arc;

impl Engine {
    /// Runs (or, in a plan, announces) the rolling handlers of `batch`.
    pub(super) async fn rolling_handlers(
        self: &Arc<Self>,
        stage: &Stage,
        batch: &[String],
        first: Option<&str>,
    ) -> Verdict {
        let plan = self.options.mode == Mode::Plan;
        let owing: Vec<String> = if plan {
            let results = self.results.lock().expect("lock");
            let would = |h: &String| {
                results.iter().any(|r| {
                    &r.host == h
                        && r.stage == stage.name
                        && r.status == Status::Changed
                        && stage.handlers.iter().any(|x| x.name == r.step)
                })
            };
            batch.iter().filter(|h| would(h)).cloned().collect()
        } else {
            batch
                .iter()
                .filter(|h| !self.pending.get(h, &stage.name).is_empty())
                .cloned()
                .collect()
        };
        if owing.is_empty() {
            return Verdict::Succeeded;
        }
        let order = match self.rolling_order(stage, &owing).await {
            Ok(order) => order,
            Err((host, RollingError::Other(e))) => return self.fail(&host, &stage.name, "rolling order", e),
            Err((host, RollingError::Connection(e))) => {
                return self.connection_lost(&host, &stage.name, "rolling order", &e)
            }
        };
        let rolling = RollingOrder {
            stage: stage.name.clone(),
            hosts: order.clone(),
        };
        let line = rolling.line(if plan { "would restart" } else { "restarting" });
        if let Err(e) = self.note_rolling(rolling) {
            return self.fail(&order[0], &stage.name, "rolling order", e);
        }
        self.reporter.out(&line);
        if plan {
            return Verdict::Succeeded;
        }
        for (rolled, host) in order.iter().enumerate() {
            let Some(remote) = self.remote(host).await else {
                return Verdict::Failed;
            };
            let notified = self.pending.get(host, &stage.name);
            let ctx = &self.contexts()[host];
            if self.run_handlers(&remote, host, stage, ctx, notified).await.failed() {
                return Verdict::Failed;
            }
            let waiting = &order[rolled + 1..];
            let settled: Vec<String> = batch.iter().filter(|h| !waiting.contains(h)).cloned().collect();
            // The stage's run-once gates on its first host, or on a settled one while it waits.
            let checker = first
                .filter(|f| settled.iter().any(|h| h == f))
                .or(settled.first().map(String::as_str));
            if !stage.verify.is_empty() && self.for_hosts(&settled, stage, checker, Work::Gates).await.failed() {
                return Verdict::Failed;
            }
        }
        Verdict::Succeeded
    }

    /// Records a rolling order; applying a reviewed plan, refuses one that is not the plan's
    /// next (the leader moved since the review, say), before anything restarts.
    fn note_rolling(&self, order: RollingOrder) -> Result<(), String> {
        let mut orders = self.rolling.lock().expect("lock");
        if self.options.mode == Mode::Apply {
            if let Some(reviewed) = &self.options.only {
                match reviewed.rolling.get(orders.len()) {
                    Some(planned) if *planned == order => {}
                    Some(planned) => {
                        return Err(format!(
                            "the reviewed plan restarts {planned}, and now the order is {order}: nothing restarted; plan again"
                        ))
                    }
                    None => {
                        return Err(format!(
                            "the reviewed plan restarts nothing here, and now {order} would: nothing restarted; plan again"
                        ))
                    }
                }
            }
        }
        orders.push(order);
        Ok(())
    }

    /// The hosts sorted by the output of `rolling_order` (then by inventory order); the error
    /// names the host whose order could not be read.
    async fn rolling_order(&self, stage: &Stage, hosts: &[String]) -> Result<Vec<String>, (String, RollingError)> {
        let Some(cmd) = &stage.rolling_order else {
            return Ok(hosts.to_vec());
        };
        let origin = format!("{} stage `{}` rolling_order", stage.file.display(), stage.name);
        let mut keyed = Vec::new();
        for (index, host) in hosts.iter().enumerate() {
            let script = self
                .loaded
                .renderer
                .render_str(&origin, cmd, &self.contexts()[host])
                .map_err(|e| (host.clone(), RollingError::Other(format!("{e}"))))?;
            let remote = self
                .remote(host)
                .await
                .ok_or_else(|| (host.clone(), RollingError::Other("unreachable".to_string())))?;
            let out = remote
                .run(&script)
                .await
                .map_err(|e| (host.clone(), RollingError::Connection(e)))?;
            keyed.push((out.stdout.trim().to_string(), index, host.clone()));
        }
        keyed.sort();
        Ok(keyed.into_iter().map(|(_, _, h)| h).collect())
    }
}

/// Why a rolling order could not be read on a host.
enum RollingError {
    /// Its command did not render, or the host could not be reached.
    Other(String),
    /// The host's connection failed while it ran.
    Connection(crate::ssh::SshError),
}

//! Probes fetched ahead: at the start of a run every host's probes of every stage are sent at
//! once (still one round trip per host per stage), so that a run that changes nothing, or a
//! plan, waits for the slowest probe rather than for the sum of them. A stage uses its prefetched
//! probes only while the run has changed nothing on any host: once a change is applied, every
//! later stage probes again, after that change.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::converge::probe_script;
use super::Engine;
use crate::playbook::Stage;
use crate::ssh::{ScriptOutput, SshError};

/// A prefetched probe: the round trip's output, or why it failed; `None` when the host could not
/// be reached (already reported).
pub(super) type Prefetched = tokio::task::JoinHandle<Option<Result<ScriptOutput, SshError>>>;

impl Engine {
    /// Connects every host of the run (one master each, concurrently), then sends each host's
    /// probes of every stage without waiting for them.
    pub(super) async fn prefetch_probes(self: &Arc<Self>, plan: &[(&Stage, Vec<String>)]) {
        let hosts: std::collections::BTreeSet<&String> = plan.iter().flat_map(|(_, h)| h).collect();
        let mut connecting = tokio::task::JoinSet::new();
        for host in hosts {
            let (me, host) = (Arc::clone(self), host.clone());
            connecting.spawn(async move { me.remote(&host).await.is_some() });
        }
        while connecting.join_next().await.is_some() {}
        for (stage, hosts) in plan {
            for host in hosts {
                let key = (stage.name.clone(), host.clone());
                let script = {
                    let rendered = self.rendered.lock().expect("lock");
                    let Some((_, planned)) = rendered.get(&key) else {
                        continue;
                    };
                    let steps: Vec<&super::converge::Planned> = planned.iter().flatten().collect();
                    if steps.is_empty() {
                        continue;
                    }
                    probe_script(&steps)
                };
                let (me, host) = (Arc::clone(self), host.clone());
                let probe = tokio::spawn(async move {
                    let remote = me.remote(&host).await?;
                    Some(remote.run(&script).await)
                });
                self.prefetched.lock().expect("lock").insert(key, probe);
            }
        }
    }

    /// The prefetched probe output of `key` (stage, host), when it may stand for a probe now:
    /// the steps are the ones it was made from (`same_steps`) and nothing has been applied yet.
    pub(super) async fn take_prefetched(
        &self,
        key: &(String, String),
        same_steps: bool,
    ) -> Option<Result<ScriptOutput, SshError>> {
        let probe = self.prefetched.lock().expect("lock").remove(key)?;
        let out = probe.await.ok().flatten()?;
        // Read after the probe ended: a change applied before that may not show in it.
        (same_steps && !self.applied_any.load(Ordering::SeqCst)).then_some(out)
    }
}

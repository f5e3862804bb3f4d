//! The engine: for each stage, each host probes every step in one round trip, diffs, and (when
//! applying) converges in batched scripts, re-probes to prove convergence, runs notified handlers
//! (remembered locally until they succeed), then runs the stage's verification gates.
//!
//! Where things are: [`load`] (inputs and template contexts), [`converge`] (one host through one
//! stage: probe, diff, apply, re-probe), [`handlers`], [`rolling`] (handlers one host at a time),
//! [`gates`] (verification), [`batch`] (the one-round-trip script protocol), [`pending`] (handlers
//! owed across runs), [`prefetch`] (every stage's probes sent at the start), [`preflight`] (the
//! nodes' record of their secrets and CA, checked before anything changes). This file runs the
//! stages over the hosts and records results.
//!
//! The gates of a stage that changed nothing (and every gate in `verify`) do not hold the run
//! up: they run while the next stages probe, and the run waits for them before it changes
//! anything on any host (a step, a handler), so a failing gate still stops the run before the
//! next change. A stage's text is printed once its gates have ended, stages in order.

pub mod batch;
mod converge;
pub mod facts;
mod gates;
#[cfg(test)]
mod golden;
mod handlers;
pub mod load;
mod pending;
mod prefetch;
pub mod preflight;
mod rolling;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use miette::Result;
use tokio::sync::Semaphore;

pub use facts::FactSource;
pub use load::{load, load_rotating, Loaded};

use crate::journal::Journal;
use crate::outcome::{summarize, RollingOrder, Stats, Status, StepResult, Summary};
use crate::playbook::Stage;
use crate::report::Reporter;
use crate::ssh::{self, HostKeyPolicy, Remote};
use crate::workspace::Workspace;
use pending::PendingStore;

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Converge the hosts.
    Apply,
    /// Probe and report what would change; change nothing.
    Plan,
    /// Run the verification gates only.
    Verify,
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// What to do.
    pub mode: Mode,
    /// Stages to run (all when `None`).
    pub stages: Option<Vec<String>>,
    /// Host pattern limiting the run.
    pub limit: Option<String>,
    /// Hosts handled at once.
    pub forks: usize,
    /// Unknown host keys.
    pub host_key_policy: HostKeyPolicy,
    /// How long to keep trying a host that refuses connections or logins (it is booting).
    pub connect_timeout: std::time::Duration,
    /// A reviewed plan: when set, only its changes are applied (any other change is left as it
    /// is and reported skipped), and its rolling stages restart hosts in its order or not at all.
    pub only: Option<Reviewed>,
    /// Whether changes that remove a cluster's member are applied (`provision --prune`); without
    /// it they are left, and reported so.
    pub prune: bool,
}

/// What a reviewed plan allows a run to do.
#[derive(Debug, Clone, Default)]
pub struct Reviewed {
    /// The changes, as (host, stage, step).
    pub changes: BTreeSet<(String, String, String)>,
    /// The rolling restarts, in the run's order.
    pub rolling: Vec<RollingOrder>,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Outcome {
    /// Counts.
    pub summary: Summary,
    /// Every result.
    pub results: Vec<StepResult>,
    /// Round trips and time.
    pub stats: Stats,
    /// The rolling restarts it made (or, in a plan, would make), in order.
    pub rolling: Vec<RollingOrder>,
}

/// Whether a part of a run (a host's stage, its handlers, its gates, a whole stage) succeeded.
/// Failures are recorded as results where they happen; a `Failed` part stops what follows it.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Everything in it succeeded (or had nothing to do).
    Succeeded,
    /// Something in it failed.
    Failed,
}

impl Verdict {
    /// Whether it failed.
    pub fn failed(self) -> bool {
        self == Verdict::Failed
    }

    /// `Failed` when either failed.
    pub fn and(self, other: Verdict) -> Verdict {
        if self.failed() || other.failed() {
            Verdict::Failed
        } else {
            Verdict::Succeeded
        }
    }
}

/// A run in progress.
pub struct Engine {
    loaded: Loaded,
    options: Options,
    reporter: Arc<Reporter>,
    /// The run's journal (when applying): it notes every result.
    journal: Option<Arc<Journal>>,
    pending: PendingStore,
    remotes: tokio::sync::Mutex<HashMap<String, Arc<Remote>>>,
    /// One lock per host, held while connecting to it: tasks that ask for a host at once share
    /// one connection (two would carry twice the channels sshd allows one client).
    connecting: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    unreachable: Mutex<BTreeSet<String>>,
    results: Mutex<Vec<StepResult>>,
    /// The rolling orders so far.
    rolling: Mutex<Vec<RollingOrder>>,
    /// Gates running while the run goes on (see the module's documentation).
    deferred: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<Verdict>>>,
    /// Whether a deferred gate failed.
    deferred_failed: AtomicBool,
    /// Probes sent at the start of the run, per (stage, host).
    prefetched: Mutex<HashMap<(String, String), prefetch::Prefetched>>,
    /// Whether the run has begun to change anything (prefetched probes are stale from then on).
    applied_any: AtomicBool,
    /// Each host's template context with the facts the run read ([`Engine::contexts`]).
    contexts: std::sync::OnceLock<HashMap<String, minijinja::Value>>,
    /// Steps rendered before the run, per (stage, host): whether rendered as the stage's first
    /// host, and each step (`None`: skipped by `when` or `run_once`).
    rendered: Mutex<HashMap<(String, String), Rendered>>,
}

/// A host's rendered steps for one stage (see [`Engine::check_renders`]).
type Rendered = (bool, Vec<Option<converge::Planned>>);

impl Engine {
    /// A run over loaded inputs, noting its results in `journal` if any; fails when the store
    /// of owed handlers cannot be read.
    pub fn new(
        loaded: Loaded,
        options: Options,
        reporter: Arc<Reporter>,
        journal: Option<Arc<Journal>>,
    ) -> Result<Arc<Self>> {
        let pending = PendingStore::open(&Workspace::of(&loaded.inventory.path))?;
        Ok(Arc::new(Engine {
            loaded,
            options,
            reporter,
            journal,
            pending,
            remotes: tokio::sync::Mutex::new(HashMap::new()),
            connecting: Mutex::new(HashMap::new()),
            unreachable: Mutex::new(BTreeSet::new()),
            results: Mutex::new(Vec::new()),
            rolling: Mutex::new(Vec::new()),
            deferred: tokio::sync::Mutex::new(Vec::new()),
            deferred_failed: AtomicBool::new(false),
            prefetched: Mutex::new(HashMap::new()),
            applied_any: AtomicBool::new(false),
            rendered: Mutex::new(HashMap::new()),
            contexts: std::sync::OnceLock::new(),
        }))
    }

    /// Every host of the playbook's one-release groups (see [`crate::playbook::Playbook`]).
    fn release_group_hosts(&self) -> BTreeSet<String> {
        let groups = &self.loaded.inventory.groups;
        self.loaded
            .playbook
            .release_groups
            .iter()
            .filter_map(|g| groups.get(g))
            .flatten()
            .cloned()
            .collect()
    }

    /// Each host's template context: with the facts the run read from the hosts once it has,
    /// else with those the load assumed.
    fn contexts(&self) -> &HashMap<String, minijinja::Value> {
        self.contexts.get().unwrap_or(&self.loaded.contexts)
    }

    /// Runs the selected stages in order; stops after a stage in which anything failed.
    pub async fn run(self: &Arc<Self>) -> Result<Outcome> {
        let started = Instant::now();
        let stages = self.loaded.playbook.select_stages(self.options.stages.as_deref())?;
        let limit = match &self.options.limit {
            Some(p) => Some(self.loaded.inventory.select(p)?),
            None => None,
        };
        let mut plan: Vec<(&Stage, Vec<String>)> = Vec::new();
        for stage in stages {
            let mut hosts = self.loaded.inventory.select(&stage.hosts)?;
            if let Some(limit) = &limit {
                hosts.retain(|h| limit.contains(h));
            }
            plan.push((stage, hosts));
        }
        let all_hosts: BTreeSet<&String> = plan.iter().flat_map(|(_, h)| h).collect();
        // Before connecting, with the facts the load assumed: a template error stops the run at once.
        for (stage, hosts) in &plan {
            self.check_renders(stage, hosts)?;
        }
        self.reporter.start(plan.len() as u64);
        let keeper = tokio::spawn(Arc::clone(self).keep_masters());
        let outputs = match self.first_round_trip(&plan, &all_hosts).await {
            Ok(outputs) => outputs,
            Err(refused) => {
                keeper.abort();
                self.reporter.finish();
                return Err(refused);
            }
        };
        if self.options.mode != Mode::Verify {
            self.prefetch_probes(&plan).await;
        }
        if let Err(refused) = self.judge(&outputs, &all_hosts) {
            for (_, probe) in self.prefetched.lock().expect("lock").drain() {
                probe.abort();
            }
            keeper.abort();
            self.reporter.finish();
            return Err(refused);
        }
        let mut unshown: Vec<&Stage> = Vec::new();
        for (stage, hosts) in &plan {
            let stage_started = Instant::now();
            let verdict = self.run_stage(stage, hosts).await;
            tracing::debug!(stage = %stage.name, ms = stage_started.elapsed().as_millis() as u64, "stage: done (deferred gates aside)");
            unshown.push(stage);
            if self.deferred.lock().await.is_empty() {
                self.show_stages(&mut unshown);
            }
            if verdict.failed() {
                self.reporter
                    .log(&format!("stage {} failed: later stages not run", stage.name));
                break;
            }
        }
        if self.settle_deferred().await.failed() {
            self.reporter
                .log("a stage's gates failed (they ran while the next stages probed): nothing was changed after them");
        }
        self.show_stages(&mut unshown);
        for (_, probe) in self.prefetched.lock().expect("lock").drain() {
            probe.abort();
        }
        keeper.abort();
        self.reporter.finish();
        let mut stats = Stats {
            seconds: started.elapsed().as_secs_f64(),
            ..Stats::default()
        };
        let remotes = std::mem::take(&mut *self.remotes.lock().await);
        for (host, remote) in remotes {
            stats.round_trips.insert(host, remote.round_trips());
        }
        let results = std::mem::take(&mut *self.results.lock().expect("lock"));
        let unreachable = self.unreachable.lock().expect("lock").len();
        Ok(Outcome {
            summary: summarize(all_hosts.len(), unreachable, &results),
            results,
            stats,
            rolling: std::mem::take(&mut *self.rolling.lock().expect("lock")),
        })
    }

    /// The run's first round trip ([`Engine::read_nodes`]): the hosts' own facts, with which
    /// everything is rendered again, and their secrets records (its output by host). The hosts
    /// of a one-release group are read even when not `selected`: a cluster is judged on all its
    /// members' releases.
    async fn first_round_trip(
        self: &Arc<Self>,
        plan: &[(&Stage, Vec<String>)],
        selected: &BTreeSet<&String>,
    ) -> Result<BTreeMap<String, String>> {
        let mut read: BTreeSet<String> = selected.iter().map(|h| h.to_string()).collect();
        read.extend(self.release_group_hosts());
        let outputs = self.read_nodes(&read).await?;
        // A host read for its facts alone is no host of this run, reached or not.
        self.unreachable.lock().expect("lock").retain(|h| selected.contains(h));
        self.adopt_facts(&outputs)?;
        for (stage, hosts) in plan {
            self.check_renders(stage, hosts)?;
        }
        Ok(outputs)
    }

    /// One stage over its hosts, in `serial` batches: converge, rolling handlers, gates.
    async fn run_stage(self: &Arc<Self>, stage: &Stage, hosts: &[String]) -> Verdict {
        let live: Vec<String> = {
            let down = self.unreachable.lock().expect("lock");
            hosts.iter().filter(|h| !down.contains(*h)).cloned().collect()
        };
        let first = live.first().cloned();
        let batch_size = stage.serial.unwrap_or(live.len()).max(1);
        let mode = self.options.mode;
        for batch in live.chunks(batch_size) {
            if mode != Mode::Verify
                && self
                    .for_hosts(batch, stage, first.as_deref(), Work::Converge)
                    .await
                    .failed()
            {
                return Verdict::Failed;
            }
            if stage.rolling
                && mode != Mode::Verify
                && self.rolling_handlers(stage, batch, first.as_deref()).await.failed()
            {
                return Verdict::Failed;
            }
            if mode == Mode::Plan || stage.verify.is_empty() {
                continue;
            }
            if mode == Mode::Verify || !self.changed_in(&stage.name) {
                self.defer_gates(batch, stage, first.as_deref()).await;
            } else if self
                .for_hosts(batch, stage, first.as_deref(), Work::Gates)
                .await
                .failed()
            {
                return Verdict::Failed;
            }
        }
        Verdict::Succeeded
    }

    /// Whether the run changed anything in `stage` (a step or a handler, on any host).
    fn changed_in(&self, stage: &str) -> bool {
        self.results
            .lock()
            .expect("lock")
            .iter()
            .any(|r| r.stage == stage && r.status == Status::Changed)
    }

    /// Starts the gates of `batch` without waiting for them.
    async fn defer_gates(self: &Arc<Self>, batch: &[String], stage: &Stage, first: Option<&str>) {
        let (me, batch, stage, first) = (
            Arc::clone(self),
            batch.to_vec(),
            stage.clone(),
            first.map(str::to_string),
        );
        let gates = tokio::spawn(async move {
            let started = Instant::now();
            let verdict = me.for_hosts(&batch, &stage, first.as_deref(), Work::Gates).await;
            tracing::debug!(stage = %stage.name, ms = started.elapsed().as_millis() as u64, "stage: deferred gates ended");
            verdict
        });
        self.deferred.lock().await.push(gates);
    }

    /// Waits for every deferred gate; `Failed` when one failed (now or before).
    async fn settle_deferred(&self) -> Verdict {
        let mut deferred = self.deferred.lock().await;
        for gates in deferred.drain(..) {
            if gates.await.map_or(true, Verdict::failed) {
                self.deferred_failed.store(true, Ordering::SeqCst);
            }
        }
        if self.deferred_failed.load(Ordering::SeqCst) {
            Verdict::Failed
        } else {
            Verdict::Succeeded
        }
    }

    /// Before a change on `host`: marks prefetched probes stale and waits for the deferred gates;
    /// when one failed, records that `step` was not applied and returns `Failed`.
    async fn gates_before_change(&self, host: &str, stage: &str, step: &str) -> Verdict {
        self.applied_any.store(true, Ordering::SeqCst);
        if !self.settle_deferred().await.failed() {
            return Verdict::Succeeded;
        }
        let mut r = StepResult::new(host, stage, step, Status::Skipped);
        r.summary = Some("not applied: an earlier stage's gates failed".to_string());
        self.record(r);
        Verdict::Failed
    }

    /// Prints the text of each stage in `stages` (in plan or apply mode) and empties it.
    fn show_stages(&self, stages: &mut Vec<&Stage>) {
        for stage in stages.drain(..) {
            if self.options.mode != Mode::Verify {
                let text = {
                    let results = self.results.lock().expect("lock");
                    self.reporter
                        .stage_text(&stage.name, &results, self.options.mode == Mode::Plan)
                };
                self.reporter.out(&text);
            }
            self.reporter.stage_done(&stage.name);
        }
    }

    /// Runs the stage's steps or its gates on hosts concurrently, at most `forks` at once. A task
    /// that panics is its host's failure, recorded and counted.
    async fn for_hosts(self: &Arc<Self>, hosts: &[String], stage: &Stage, first: Option<&str>, work: Work) -> Verdict {
        let forks = Arc::new(Semaphore::new(self.options.forks.max(1)));
        let tasks = hosts.iter().map(|host| {
            let (me, host, stage, forks) = (Arc::clone(self), host.clone(), stage.clone(), Arc::clone(&forks));
            let is_first = first == Some(host.as_str());
            let name = host.clone();
            let task = async move {
                let _permit = forks.acquire().await.expect("semaphore open");
                let verdict = match me.remote(&host).await {
                    Some(remote) if work == Work::Gates => me.host_gates(&remote, &host, &stage, is_first).await,
                    Some(remote) => me.host_stage(&remote, &host, &stage, is_first).await,
                    None => Verdict::Failed,
                };
                me.reporter.host_idle(&host);
                verdict
            };
            (name, task)
        });
        let mut verdict = Verdict::Succeeded;
        for (host, outcome) in join_host_tasks(tasks.collect()).await {
            verdict = verdict.and(match outcome {
                Ok(v) => v,
                Err(why) => self.fail(&host, &stage.name, "internal error", why),
            });
        }
        verdict
    }

    /// Keeps every host's SSH master up for the whole run, however long a host waits (a rolling
    /// stage restarting the others): a master ends after [`crate::ssh::PERSIST_SECS`] without a
    /// client, and asking it whether it runs counts as one.
    async fn keep_masters(self: Arc<Self>) {
        let every = Duration::from_secs((crate::ssh::PERSIST_SECS / 3) as u64);
        loop {
            tokio::time::sleep(every).await;
            let remotes: Vec<Arc<Remote>> = self.remotes.lock().await.values().cloned().collect();
            for remote in remotes {
                remote.keep_master().await;
            }
        }
    }

    /// The host's connection, connecting on first use; `None` (and reported) when unreachable.
    async fn remote(&self, host: &str) -> Option<Arc<Remote>> {
        if let Some(r) = self.remotes.lock().await.get(host) {
            return Some(Arc::clone(r));
        }
        let lock = Arc::clone(
            self.connecting
                .lock()
                .expect("lock")
                .entry(host.to_string())
                .or_default(),
        );
        let _connecting = lock.lock().await;
        // Another task may have connected while this one waited.
        if let Some(r) = self.remotes.lock().await.get(host) {
            return Some(Arc::clone(r));
        }
        if self.unreachable.lock().expect("lock").contains(host) {
            return None;
        }
        self.reporter.host_activity(host, "connecting");
        let conn = &self.loaded.inventory.hosts[host].conn;
        let waiting = |what: &str| self.reporter.log(&format!("[{host}] {what}"));
        match ssh::connect(
            host,
            conn,
            self.options.host_key_policy,
            self.options.connect_timeout,
            &waiting,
        )
        .await
        {
            Ok(remote) => {
                let remote = Arc::new(remote);
                self.remotes.lock().await.insert(host.to_string(), Arc::clone(&remote));
                Some(remote)
            }
            Err(e) => {
                self.reporter.log(&format!("[{host}] UNREACHABLE: {e}"));
                self.unreachable.lock().expect("lock").insert(host.to_string());
                None
            }
        }
    }

    /// Records a result, notes it in the journal and shows its progress.
    fn record(&self, result: StepResult) {
        if let Some(journal) = &self.journal {
            journal.note(&result);
        }
        self.reporter.progress(&result);
        self.results.lock().expect("lock").push(result);
    }

    /// Records a failure of `step` on `host`.
    fn fail(&self, host: &str, stage: &str, step: &str, error: String) -> Verdict {
        self.record(StepResult {
            error: Some(error),
            ..StepResult::new(host, stage, step, Status::Failed)
        });
        Verdict::Failed
    }

    /// Awaits `work` (one round trip to `host` doing `what`), saying on stderr every
    /// [`LONG_WORK_NOTICE`] that it is still under way, so that a long run names what it waits
    /// for even where no progress bars show (a log, CI).
    async fn noting_long_work<T>(&self, host: &str, what: &str, work: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + LONG_WORK_NOTICE, LONG_WORK_NOTICE);
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = ticks.tick() => self.reporter.log(&format!(
                    "[{host}] {what}: still under way after {} s",
                    started.elapsed().as_secs()
                )),
            }
        }
    }

    /// Records that `host`'s connection failed during `step` (the script may have run in part):
    /// the step failed and the host is unreachable from now on, as when it could not be reached.
    fn connection_lost(&self, host: &str, stage: &str, step: &str, error: &ssh::SshError) -> Verdict {
        self.reporter.log(&format!(
            "[{host}] UNREACHABLE: the connection was lost during {stage}/{step}"
        ));
        self.unreachable.lock().expect("lock").insert(host.to_string());
        self.record(StepResult {
            error: Some(format!("the connection was lost: {error}")),
            lost: true,
            ..StepResult::new(host, stage, step, Status::Failed)
        });
        Verdict::Failed
    }
}

/// How often a long round trip is said to be still under way.
const LONG_WORK_NOTICE: Duration = Duration::from_secs(60);

/// Runs each host's task concurrently; a task that panics (or is cancelled) is that host's
/// error, never lost and never the whole run's crash.
async fn join_host_tasks<F>(tasks: Vec<(String, F)>) -> Vec<(String, Result<Verdict, String>)>
where
    F: std::future::Future<Output = Verdict> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut names = HashMap::new();
    for (host, task) in tasks {
        names.insert(set.spawn(task).id(), host);
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = set.join_next_with_id().await {
        outcomes.push(match joined {
            Ok((id, v)) => (names.remove(&id).unwrap_or_default(), Ok(v)),
            Err(e) => (
                names.remove(&e.id()).unwrap_or_default(),
                Err(format!("hactl's task for this host failed: {e}")),
            ),
        });
    }
    outcomes
}

/// What [`Engine::for_hosts`] runs on each host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    /// The stage's steps (probe, diff and, when applying, converge and handlers).
    Converge,
    /// The stage's verification gates.
    Gates,
}

/// Blocks on a run with a fresh runtime (the CLI is otherwise synchronous).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_host_task_is_that_host_failure() {
        let task = |host: &str, panics: bool| {
            let host = host.to_string();
            let future = async move {
                if panics {
                    panic!("a bug while handling {}", "node2");
                }
                Verdict::Succeeded
            };
            (host, future)
        };
        let mut outcomes = join_host_tasks(vec![task("node1", false), task("node2", true), task("node3", false)]).await;
        outcomes.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(outcomes[0], ("node1".to_string(), Ok(Verdict::Succeeded)));
        assert_eq!(outcomes[2], ("node3".to_string(), Ok(Verdict::Succeeded)));
        let (host, outcome) = &outcomes[1];
        assert_eq!(host, "node2");
        assert!(outcome.as_ref().unwrap_err().contains("panicked"), "{outcome:?}");
    }
}

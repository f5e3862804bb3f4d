//! The engine: for each stage, each host probes every step in one round trip, diffs, and (when
//! applying) converges in batched scripts, re-probes to prove convergence, runs notified handlers
//! (remembered locally until they succeed), then runs the stage's verification gates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use miette::{miette, Result};
use minijinja::value::Value;
use serde_json::Value as Json;
use tokio::sync::Semaphore;

use crate::inventory::{Inventory, Vars};
use crate::modules::file::File;
use crate::modules::{Attrs, Change, Module, Observed};
use crate::playbook::{Gate, ModuleSpec, Playbook, Stage, Step};
use crate::render::Renderer;
use crate::report::{summarize, Reporter, Stats, Status, StepResult, Summary};
use crate::secrets::{secrets_path, Redactor, Secrets};
use crate::ssh::{self, HostKeyPolicy, Remote};

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
}

/// Everything loaded before connecting: inventory, playbook, secrets, per-host contexts.
pub struct Loaded {
    /// The inventory.
    pub inventory: Inventory,
    /// The playbook.
    pub playbook: Playbook,
    /// Values of the secrets (for redaction).
    pub redactor: Redactor,
    contexts: HashMap<String, Value>,
    renderer: Renderer,
}

/// Loads inventory, playbook and secrets (generating missing secrets unless `dry_run`).
pub fn load(inventory: &Path, playbook: &Path, dry_run: bool) -> Result<Loaded> {
    let inventory = Inventory::load(inventory)?;
    let playbook = Playbook::load(playbook)?;
    let given = |name: &str| inventory.hosts.values().any(|h| h.vars.contains_key(name));
    let secrets = Secrets::load_or_generate(&secrets_path(&inventory.path), &playbook.secrets, &given, dry_run)?;
    let mut values: Vec<&str> = secrets.values.values().map(|s| s.expose()).collect();
    let given_secrets: Vec<String> = playbook
        .secrets
        .keys()
        .flat_map(|k| inventory.hosts.values().filter_map(move |h| h.vars.get(k)))
        .map(crate::inventory::scalar_text)
        .collect();
    values.extend(given_secrets.iter().map(String::as_str));
    let redactor = Redactor::new(values);
    let hostvars: BTreeMap<String, Vars> = inventory
        .hosts
        .values()
        .map(|h| {
            let mut vars = playbook.vars.clone();
            for (k, v) in &secrets.values {
                vars.insert(k.clone(), Json::String(v.expose().to_string()));
            }
            vars.extend(h.vars.clone());
            vars.insert("inventory_hostname".into(), Json::String(h.name.clone()));
            vars.entry("ansible_host".to_string())
                .or_insert_with(|| Json::String(h.conn.address.clone()));
            (h.name.clone(), vars)
        })
        .collect();
    let renderer = Renderer::new(&playbook.template_dir());
    let hostvars = render_templated_vars(&renderer, hostvars, &inventory.groups)?;
    let contexts = contexts(&hostvars, &inventory.groups);
    Ok(Loaded {
        inventory,
        playbook,
        redactor,
        contexts,
        renderer,
    })
}

/// Each host's template context: its variables plus `hostvars` and `groups`.
fn contexts(hostvars: &BTreeMap<String, Vars>, groups: &BTreeMap<String, Vec<String>>) -> HashMap<String, Value> {
    let all = serde_json::to_value(hostvars).expect("vars serialise");
    let groups = serde_json::to_value(groups).expect("groups serialise");
    hostvars
        .iter()
        .map(|(name, vars)| {
            let mut ctx = vars.clone();
            ctx.insert("hostvars".into(), all.clone());
            ctx.insert("groups".into(), groups.clone());
            (name.clone(), Value::from(minijinja::value::Serde(Json::Object(ctx))))
        })
        .collect()
}

/// Renders variables whose values are templates (e.g. `etcd_endpoints: "{% for h in ... %}"`), as
/// Ansible does, in each host's context; repeated so that variables may refer to each other.
fn render_templated_vars(
    renderer: &Renderer,
    mut hostvars: BTreeMap<String, Vars>,
    groups: &BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<String, Vars>> {
    let is_template = |v: &Json| v.as_str().is_some_and(|s| s.contains("{{") || s.contains("{%"));
    for _ in 0..5 {
        if !hostvars.values().any(|vars| vars.values().any(is_template)) {
            return Ok(hostvars);
        }
        let ctxs = contexts(&hostvars, groups);
        for (host, vars) in hostvars.iter_mut() {
            for (name, value) in vars.iter_mut().filter(|(_, v)| is_template(v)) {
                let origin = format!("variable `{name}` of host {host}");
                *value = renderer.render_value(&origin, value.as_str().expect("a string"), &ctxs[host])?;
            }
        }
    }
    Err(miette!(
        "variables still contain templates after 5 rounds of rendering: do they refer to each other in a loop?"
    ))
}

/// Handlers notified but not yet run, per host and stage; kept beside the inventory so that a
/// restart owed by a failed run happens on the next run.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Pending {
    #[serde(flatten)]
    hosts: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

struct PendingStore {
    path: PathBuf,
    state: Mutex<Pending>,
}

impl PendingStore {
    fn open(inventory: &Path) -> Self {
        let path = inventory
            .parent()
            .unwrap_or(Path::new("."))
            .join(".hactl/pending-handlers.json");
        let state = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        PendingStore {
            path,
            state: Mutex::new(state),
        }
    }

    fn get(&self, host: &str, stage: &str) -> BTreeSet<String> {
        let state = self.state.lock().expect("lock");
        state
            .hosts
            .get(host)
            .and_then(|s| s.get(stage))
            .cloned()
            .unwrap_or_default()
    }

    fn set(&self, host: &str, stage: &str, handlers: BTreeSet<String>) -> Result<()> {
        let mut state = self.state.lock().expect("lock");
        let stages = state.hosts.entry(host.to_string()).or_default();
        if handlers.is_empty() {
            stages.remove(stage);
        } else {
            stages.insert(stage.to_string(), handlers);
        }
        state.hosts.retain(|_, s| !s.is_empty());
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| miette!("{}: {e}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(&*state).expect("pending serialises");
        std::fs::write(&self.path, text).map_err(|e| miette!("{}: {e}", self.path.display()))
    }
}

/// A run in progress.
pub struct Engine {
    loaded: Loaded,
    options: Options,
    reporter: Arc<Reporter>,
    pending: PendingStore,
    remotes: tokio::sync::Mutex<HashMap<String, Arc<Remote>>>,
    unreachable: Mutex<BTreeSet<String>>,
    results: Mutex<Vec<StepResult>>,
}

/// One step of a host's stage, rendered.
struct Planned {
    name: String,
    module: Box<dyn Module>,
    notify: Vec<String>,
}

impl Engine {
    /// A run over loaded inputs.
    pub fn new(loaded: Loaded, options: Options, reporter: Arc<Reporter>) -> Arc<Self> {
        let pending = PendingStore::open(&loaded.inventory.path);
        Arc::new(Engine {
            loaded,
            options,
            reporter,
            pending,
            remotes: tokio::sync::Mutex::new(HashMap::new()),
            unreachable: Mutex::new(BTreeSet::new()),
            results: Mutex::new(Vec::new()),
        })
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
        self.reporter.start(plan.iter().map(|(_, h)| h.len() as u64).sum());
        for (stage, hosts) in &plan {
            let failed = self.run_stage(stage, hosts).await;
            if self.options.mode != Mode::Verify {
                let text = {
                    let results = self.results.lock().expect("lock");
                    self.reporter
                        .stage_text(&stage.name, &results, self.options.mode == Mode::Plan)
                };
                self.reporter.out(&text);
            }
            if failed {
                self.reporter
                    .log(&format!("stage {} failed: later stages not run", stage.name));
                break;
            }
        }
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
        })
    }

    /// One stage over its hosts (in `serial` batches); returns whether anything failed.
    async fn run_stage(self: &Arc<Self>, stage: &Stage, hosts: &[String]) -> bool {
        let live: Vec<String> = {
            let down = self.unreachable.lock().expect("lock");
            hosts.iter().filter(|h| !down.contains(*h)).cloned().collect()
        };
        let first = live.first().cloned();
        let batch_size = stage.serial.unwrap_or(live.len()).max(1);
        for batch in live.chunks(batch_size) {
            let mut failed = false;
            if self.options.mode != Mode::Verify {
                failed = self.for_hosts(batch, stage, first.as_deref(), false).await;
            }
            if !failed && stage.rolling && self.options.mode != Mode::Verify {
                failed = self.rolling_handlers(stage, batch, first.as_deref()).await;
            }
            if !failed && self.options.mode != Mode::Plan && !stage.verify.is_empty() {
                failed = self.for_hosts(batch, stage, first.as_deref(), true).await;
            }
            if failed {
                return true;
            }
        }
        false
    }

    /// Rolling handlers: the hosts owing handlers, in `rolling_order`, one at a time, each followed
    /// by the stage's gates. A plan prints the order. Returns whether anything failed.
    async fn rolling_handlers(self: &Arc<Self>, stage: &Stage, batch: &[String], first: Option<&str>) -> bool {
        let owing: Vec<String> = if self.options.mode == Mode::Plan {
            let results = self.results.lock().expect("lock");
            let would = |h: &String| {
                results
                    .iter()
                    .any(|r| &r.host == h && r.stage == stage.name && stage.handlers.iter().any(|x| x.name == r.step))
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
            return false;
        }
        let order = match self.rolling_order(stage, &owing).await {
            Ok(order) => order,
            Err((host, e)) => return !self.fail(&host, &stage.name, "rolling order", e),
        };
        let verb = if self.options.mode == Mode::Plan {
            "would restart"
        } else {
            "restarting"
        };
        self.reporter.out(&format!(
            "{} rolling: {verb} one host at a time, gates between: {}\n",
            stage.name,
            order.join(" → ")
        ));
        if self.options.mode == Mode::Plan {
            return false;
        }
        for host in &order {
            let Some(remote) = self.remote(host).await else {
                return true;
            };
            let notified = self.pending.get(host, &stage.name);
            if !self
                .run_handlers(&remote, host, stage, &self.loaded.contexts[host], notified)
                .await
            {
                return true;
            }
            if !stage.verify.is_empty() && self.for_hosts(batch, stage, first, true).await {
                return true;
            }
        }
        false
    }

    /// The hosts sorted by the output of `rolling_order` (then by inventory order).
    async fn rolling_order(&self, stage: &Stage, hosts: &[String]) -> Result<Vec<String>, (String, String)> {
        let Some(cmd) = &stage.rolling_order else {
            return Ok(hosts.to_vec());
        };
        let mut keyed = Vec::new();
        for (index, host) in hosts.iter().enumerate() {
            let origin = format!(
                "{} stage `{}` rolling_order",
                self.loaded.playbook.path.display(),
                stage.name
            );
            let rendered = self
                .loaded
                .renderer
                .render_str(&origin, cmd, &self.loaded.contexts[host]);
            let script = rendered.map_err(|e| (host.clone(), format!("{e}")))?;
            let remote = self
                .remote(host)
                .await
                .ok_or_else(|| (host.clone(), "unreachable".to_string()))?;
            let out = remote.run(&script).await.map_err(|e| (host.clone(), e.to_string()))?;
            keyed.push((out.stdout.trim().to_string(), index, host.clone()));
        }
        keyed.sort();
        Ok(keyed.into_iter().map(|(_, _, h)| h).collect())
    }

    /// Runs the stage (or its gates) on hosts concurrently, at most `forks` at once.
    async fn for_hosts(self: &Arc<Self>, hosts: &[String], stage: &Stage, first: Option<&str>, gates: bool) -> bool {
        let forks = Arc::new(Semaphore::new(self.options.forks.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for host in hosts {
            let (me, host, stage, forks) = (Arc::clone(self), host.clone(), stage.clone(), Arc::clone(&forks));
            let is_first = first == Some(host.as_str());
            tasks.spawn(async move {
                let _permit = forks.acquire().await.expect("semaphore open");
                let ok = match me.remote(&host).await {
                    Some(remote) if gates => me.host_gates(&remote, &host, &stage, is_first).await,
                    Some(remote) => me.host_stage(&remote, &host, &stage, is_first).await,
                    None => false,
                };
                me.reporter.host_done(&host);
                ok
            });
        }
        let mut failed = false;
        while let Some(joined) = tasks.join_next().await {
            failed |= !joined.unwrap_or(false);
        }
        failed
    }

    /// The host's connection, connecting on first use; `None` (and reported) when unreachable.
    async fn remote(&self, host: &str) -> Option<Arc<Remote>> {
        if let Some(r) = self.remotes.lock().await.get(host) {
            return Some(Arc::clone(r));
        }
        if self.unreachable.lock().expect("lock").contains(host) {
            return None;
        }
        self.reporter.host_activity(host, "connecting");
        let conn = &self.loaded.inventory.hosts[host].conn;
        match ssh::connect(conn, self.options.host_key_policy).await {
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

    fn record(&self, result: StepResult) {
        self.reporter.progress(&result);
        self.results.lock().expect("lock").push(result);
    }

    fn result(&self, host: &str, stage: &str, step: &str, status: Status) -> StepResult {
        StepResult {
            host: host.into(),
            stage: stage.into(),
            step: step.into(),
            status,
            summary: None,
            diff: None,
            error: None,
        }
    }

    fn fail(&self, host: &str, stage: &str, step: &str, error: String) -> bool {
        self.record(StepResult {
            error: Some(error),
            ..self.result(host, stage, step, Status::Failed)
        });
        false
    }

    /// Renders a step for a host: `None` when its `when` is false or it is run_once elsewhere.
    fn plan_step(&self, stage: &Stage, step: &Step, ctx: &Value, is_first: bool) -> Result<Option<Planned>> {
        if step.run_once && !is_first {
            return Ok(None);
        }
        let origin = format!(
            "{} stage `{}` step `{}`",
            self.loaded.playbook.path.display(),
            stage.name,
            step.name
        );
        if let Some(when) = &step.when {
            if !self.loaded.renderer.eval_bool(&format!("{origin} when"), when, ctx)? {
                return Ok(None);
            }
        }
        let spec = serde_json::to_value(step.module()?).map_err(|e| miette!("{origin}: {e}"))?;
        let rendered = render_json(&self.loaded.renderer, &origin, spec, ctx)?;
        let spec: ModuleSpec = serde_json::from_value(rendered).map_err(|e| miette!("{origin}: {e}"))?;
        let module: Box<dyn Module> = match spec {
            ModuleSpec::File(args) => Box::new(self.build_file(&origin, args, ctx)?),
            ModuleSpec::Package(m) => Box::new(m),
            ModuleSpec::Directory(m) => Box::new(m),
            ModuleSpec::Lineinfile(m) => Box::new(m),
            ModuleSpec::Hosts(m) => Box::new(m),
            ModuleSpec::User(m) => Box::new(m),
            ModuleSpec::Group(m) => Box::new(m),
            ModuleSpec::Service(m) => Box::new(m),
            ModuleSpec::Command(m) => Box::new(m),
            ModuleSpec::Pip(m) => Box::new(m),
            ModuleSpec::WaitFor(m) => Box::new(m),
        };
        Ok(Some(Planned {
            name: step.name.clone(),
            module,
            notify: step.notify.clone(),
        }))
    }

    fn build_file(&self, origin: &str, args: crate::modules::file::FileArgs, ctx: &Value) -> Result<File> {
        let content = match (&args.content, &args.template) {
            (Some(_), Some(_)) => return Err(miette!("{origin}: give `content` or `template`, not both")),
            (Some(c), None) => Some(c.clone().into_bytes()),
            (None, Some(t)) => Some(self.loaded.renderer.render_template(t, ctx)?.into_bytes()),
            (None, None) => None,
        };
        if let Some(m) = &args.mode {
            crate::modules::parse_mode(m).map_err(|e| miette!("{origin}: {e}"))?;
        }
        Ok(File {
            path: args.path,
            content,
            attrs: Attrs {
                owner: args.owner,
                group: args.group,
                mode: args.mode,
            },
            state: args.state,
            sensitive: args.sensitive,
        })
    }

    /// One host through one stage. Returns false on failure.
    async fn host_stage(&self, remote: &Remote, host: &str, stage: &Stage, is_first: bool) -> bool {
        let ctx = &self.loaded.contexts[host];
        let mut steps: Vec<Planned> = Vec::new();
        for step in &stage.steps {
            match self.plan_step(stage, step, ctx, is_first) {
                Ok(Some(p)) => steps.push(p),
                Ok(None) => self.record(self.result(host, &stage.name, &step.name, Status::Skipped)),
                Err(e) => return self.fail(host, &stage.name, &step.name, format!("{e:?}")),
            }
        }
        self.reporter
            .host_activity(host, &format!("{}: probing {} steps", stage.name, steps.len()));
        let mut changes = match self.probe_all(remote, &steps).await {
            Ok(c) => c,
            Err((i, e)) => return self.fail(host, &stage.name, step_name(&steps, i), e),
        };
        let mut notified: BTreeSet<String> = self.pending.get(host, &stage.name);
        if self.options.mode == Mode::Plan {
            for (step, change) in steps.iter().zip(&changes) {
                if change.as_ref().is_some_and(|c| c.counts) {
                    notified.extend(step.notify.iter().cloned());
                }
                self.record_change(host, &stage.name, &step.name, change.as_ref(), true);
            }
            self.plan_handlers(host, stage, &notified);
            return true;
        }
        let mut applied: Vec<Option<Change>> = vec![None; steps.len()];
        loop {
            let todo: Vec<usize> = (0..steps.len())
                .filter(|&i| changes[i].is_some() && applied[i].is_none())
                .collect();
            if todo.is_empty() {
                break;
            }
            for &i in &todo {
                if changes[i].as_ref().is_some_and(|c| c.counts) {
                    notified.extend(steps[i].notify.iter().cloned());
                }
            }
            if let Err(e) = self.pending.set(host, &stage.name, notified.clone()) {
                return self.fail(host, &stage.name, "pending handlers", format!("{e}"));
            }
            self.reporter
                .host_activity(host, &format!("{}: applying {} steps", stage.name, todo.len()));
            let parts: Vec<(usize, String)> = todo.iter().map(|&i| (i, steps[i].module.apply())).collect();
            let out = match remote.run(&batch_script(&parts, true, true)).await {
                Ok(o) => parse_batch(&o.stdout),
                Err(e) => return self.fail(host, &stage.name, step_name(&steps, todo[0]), e.to_string()),
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
                Err((i, e)) => return self.fail(host, &stage.name, step_name(&steps, i), e),
            };
            for (i, step) in steps.iter().enumerate() {
                if applied[i].is_some() && step.module.converges() {
                    if let Some(still) = changes[i].as_ref().filter(|c| c.counts) {
                        return self.fail(
                            host,
                            &stage.name,
                            &step.name,
                            format!("did not converge: still {}", still.summary),
                        );
                    }
                }
                if applied[i].is_some() {
                    changes[i] = None;
                }
            }
        }
        for (step, change) in steps.iter().zip(&applied) {
            self.record_change(host, &stage.name, &step.name, change.as_ref(), false);
        }
        if stage.rolling {
            return true; // the handlers owed are pending; `rolling_handlers` runs them host by host
        }
        self.run_handlers(remote, host, stage, ctx, notified).await
    }

    /// Records the steps already applied when a run stops early, so the report shows them.
    fn record_applied(&self, host: &str, stage: &str, steps: &[Planned], applied: &[Option<Change>]) {
        for (step, change) in steps.iter().zip(applied).filter(|(_, c)| c.is_some()) {
            self.record_change(host, stage, &step.name, change.as_ref(), false);
        }
    }

    fn record_change(&self, host: &str, stage: &str, step: &str, change: Option<&Change>, plan: bool) {
        let mut r = self.result(host, stage, step, Status::Ok);
        if let Some(c) = change {
            if c.counts {
                r.status = Status::Changed;
            }
            r.summary = Some(if plan && c.counts && !c.summary.starts_with("would") {
                format!("would {}", c.summary)
            } else {
                c.summary.clone()
            });
            r.diff = c.diff.clone();
        }
        self.record(r);
    }

    fn plan_handlers(&self, host: &str, stage: &Stage, notified: &BTreeSet<String>) {
        for handler in stage.handlers.iter().filter(|h| notified.contains(&h.name)) {
            let mut r = self.result(host, &stage.name, &handler.name, Status::Changed);
            r.summary = Some(format!("would run handler `{}`", handler.name));
            self.record(r);
        }
    }

    /// Runs notified handlers in their definition order, in one script; clears them when done.
    async fn run_handlers(
        &self,
        remote: &Remote,
        host: &str,
        stage: &Stage,
        ctx: &Value,
        notified: BTreeSet<String>,
    ) -> bool {
        if notified.is_empty() {
            return true;
        }
        let mut planned = Vec::new();
        for handler in stage.handlers.iter().filter(|h| notified.contains(&h.name)) {
            match self.plan_step(stage, handler, ctx, true) {
                Ok(Some(p)) => planned.push(p),
                Ok(None) => {}
                Err(e) => return self.fail(host, &stage.name, &handler.name, format!("{e:?}")),
            }
        }
        self.reporter
            .host_activity(host, &format!("{}: {} handlers", stage.name, planned.len()));
        let parts: Vec<(usize, String)> = planned.iter().enumerate().map(|(i, p)| (i, p.module.apply())).collect();
        let out = match remote.run(&batch_script(&parts, true, true)).await {
            Ok(o) => parse_batch(&o.stdout),
            Err(e) => return self.fail(host, &stage.name, &planned[0].name, e.to_string()),
        };
        for (i, p) in planned.iter().enumerate() {
            if let Some(failure) = part_failure(out.get(&i), 20) {
                return self.fail(host, &stage.name, &p.name, failure);
            }
            let mut r = self.result(host, &stage.name, &p.name, Status::Changed);
            r.summary = Some(format!("handler `{}` ran", p.name));
            self.record(r);
        }
        match self.pending.set(host, &stage.name, BTreeSet::new()) {
            Ok(()) => true,
            Err(e) => self.fail(host, &stage.name, "pending handlers", format!("{e}")),
        }
    }

    /// Probes every step in one round trip. Err carries the failing step index.
    async fn probe_all(&self, remote: &Remote, steps: &[Planned]) -> Result<Vec<Option<Change>>, (usize, String)> {
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let parts: Vec<(usize, String)> = steps.iter().enumerate().map(|(i, s)| (i, s.module.probe())).collect();
        let out = remote
            .run(&batch_script(&parts, false, false))
            .await
            .map_err(|e| (0, e.to_string()))?;
        let observed = parse_batch(&out.stdout);
        steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let o = observed
                    .get(&i)
                    .ok_or((i, format!("probe produced no output: {}", tail(&out.stderr, 5))))?;
                s.module.diff(o).map_err(|e| (i, format!("{e}")))
            })
            .collect()
    }

    /// A passed gate's status: `passed` for `verify`, `ok` within a provision (the contract's set).
    fn gate_passed(&self) -> Status {
        if self.options.mode == Mode::Verify {
            Status::Passed
        } else {
            Status::Ok
        }
    }

    /// The stage's gates on one host, all in one script (each retried on the host).
    async fn host_gates(&self, remote: &Remote, host: &str, stage: &Stage, is_first: bool) -> bool {
        let ctx = &self.loaded.contexts[host];
        let gates: Vec<&Gate> = stage.verify.iter().filter(|g| !g.run_once || is_first).collect();
        if gates.is_empty() {
            return true;
        }
        let mut parts = Vec::new();
        for (i, gate) in gates.iter().enumerate() {
            let origin = format!(
                "{} stage `{}` verify `{}`",
                self.loaded.playbook.path.display(),
                stage.name,
                gate.name
            );
            match self.loaded.renderer.render_str(&origin, &gate.command, ctx) {
                Ok(cmd) => parts.push((i, gate_script(&cmd, gate.retries, gate.delay))),
                Err(e) => return self.fail(host, &stage.name, &format!("verify: {}", gate.name), format!("{e}")),
            }
        }
        self.reporter.host_activity(host, &format!("{}: verifying", stage.name));
        let out = match remote.run(&batch_script(&parts, false, true)).await {
            Ok(o) => parse_batch(&o.stdout),
            Err(e) => return self.fail(host, &stage.name, "verify", e.to_string()),
        };
        let mut ok = true;
        for (i, gate) in gates.iter().enumerate() {
            let name = format!("verify: {}", gate.name);
            match part_failure(out.get(&i), 10) {
                None => self.record(self.result(host, &stage.name, &name, self.gate_passed())),
                Some(failure) => ok = self.fail(host, &stage.name, &name, failure),
            }
        }
        ok
    }
}

/// Why a part of a batch did not succeed (`None` when it did): its exit code and last lines, or
/// that the script stopped before it.
fn part_failure(outcome: Option<&Observed>, lines: usize) -> Option<String> {
    match outcome {
        Some(o) if o.rc == 0 => None,
        Some(o) => Some(format!("exit {}: {}", o.rc, tail(&o.stdout, lines))),
        None => Some("did not run (the script stopped before it)".to_string()),
    }
}

fn step_name(steps: &[Planned], i: usize) -> &str {
    steps.get(i).map(|s| s.name.as_str()).unwrap_or("probe")
}

/// The last `n` lines of a text.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Renders every string in a JSON value as a template.
fn render_json(renderer: &Renderer, origin: &str, value: Json, ctx: &Value) -> Result<Json> {
    Ok(match value {
        Json::String(s) => renderer.render_value(origin, &s, ctx)?,
        Json::Array(items) => Json::Array(
            items
                .into_iter()
                .map(|v| render_json(renderer, origin, v, ctx))
                .collect::<Result<_>>()?,
        ),
        Json::Object(map) => Json::Object(
            map.into_iter()
                .map(|(k, v)| Ok((k, render_json(renderer, origin, v, ctx)?)))
                .collect::<Result<_>>()?,
        ),
        other => other,
    })
}

/// A script that retries a gate command on the host.
fn gate_script(cmd: &str, retries: u32, delay: f64) -> String {
    format!(
        "n={}\nwhile :; do out=$( ( {cmd}\n ) 2>&1 </dev/null ); rc=$?; [ $rc -eq 0 ] && break; n=$((n-1)); [ $n -le 0 ] && break; sleep {delay}; done\nprintf '%s\\n' \"$out\"; exit $rc\n",
        retries.max(1)
    )
}

/// Joins parts into one script; each part runs in a subshell with stdin closed, framed by
/// `\x1eB i` / `\x1eE i rc` markers. `stop_on_failure` ends the script at the first failing part;
/// `merge_stderr` folds stderr into the part's output (applies), else it is dropped (probes).
pub fn batch_script(parts: &[(usize, String)], stop_on_failure: bool, merge_stderr: bool) -> String {
    let stderr = if merge_stderr { "2>&1" } else { "2>/dev/null" };
    let mut s = String::from("export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n");
    for (i, body) in parts {
        s.push_str(&format!(
            "printf '\\036B {i}\\n'\n(\n{body}\n) </dev/null {stderr}\nrc=$?\nprintf '\\n\\036E {i} %d\\n' \"$rc\"\n"
        ));
        if stop_on_failure {
            s.push_str("[ $rc -eq 0 ] || exit 0\n");
        }
    }
    s
}

/// Splits a batch's stdout into each part's output and exit code.
pub fn parse_batch(stdout: &str) -> HashMap<usize, Observed> {
    let mut out = HashMap::new();
    let mut rest = stdout;
    while let Some(start) = rest.find("\x1eB ") {
        let after = &rest[start + 3..];
        let Some(nl) = after.find('\n') else { break };
        let Ok(index) = after[..nl].trim().parse::<usize>() else {
            break;
        };
        let body_start = &after[nl + 1..];
        let end_marker = format!("\n\x1eE {index} ");
        let Some(end) = body_start.find(&end_marker) else {
            break;
        };
        let body = &body_start[..end];
        let after_end = &body_start[end + end_marker.len()..];
        let eol = after_end.find('\n').unwrap_or(after_end.len());
        let rc = after_end[..eol].trim().parse().unwrap_or(-1);
        out.insert(
            index,
            Observed {
                stdout: body.to_string(),
                rc,
            },
        );
        rest = &after_end[eol..];
    }
    out
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

    #[test]
    fn batch_round_trip_locally() {
        let parts = vec![
            (0, "echo one; echo err >&2".to_string()),
            (1, "printf 'no newline'".to_string()),
            (2, "exit 3".to_string()),
            (3, "echo never".to_string()),
        ];
        let out = crate::modules::run_local(&batch_script(&parts, true, true));
        let parsed = parse_batch(&out.stdout);
        assert_eq!(parsed[&0].stdout, "one\nerr\n");
        assert_eq!(parsed[&1].stdout, "no newline");
        assert_eq!(parsed[&2].rc, 3);
        assert!(!parsed.contains_key(&3));
    }

    #[test]
    fn probes_do_not_read_the_script_from_stdin() {
        let parts = vec![(0, "cat".to_string()), (1, "echo after".to_string())];
        let parsed = parse_batch(&crate::modules::run_local(&batch_script(&parts, false, false)).stdout);
        assert_eq!(parsed[&0].stdout, "");
        assert_eq!(parsed[&1].stdout, "after\n");
    }

    #[test]
    fn gate_retries_until_success() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("n");
        let cmd = format!("echo x >> {0}; [ $(wc -l < {0}) -ge 3 ]", f.display());
        let out = crate::modules::run_local(&gate_script(&cmd, 5, 0.01));
        assert_eq!(out.rc, 0);
        assert_eq!(std::fs::read_to_string(&f).unwrap().lines().count(), 3);
        assert_ne!(crate::modules::run_local(&gate_script("false", 2, 0.01)).rc, 0);
    }
}

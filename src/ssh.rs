//! SSH transport: one OpenSSH master per host (openssh, native-mux), at most
//! [`MAX_CHANNELS`] concurrent channels on it, scripts fed on stdin to `sh -s` (through `sudo -n`
//! when the host wants `become`), retries on connect failures and refused channels.
//!
//! Like Ansible's ControlPersist, a master outlives the run for [`PERSIST_SECS`] idle seconds, so a
//! re-run within that time skips the SSH handshake. Its control socket lives in a private (0700)
//! directory, keyed by the inventory host and every connection setting (address, user, port,
//! key, known_hosts, policy): two inventory names for one address have a master each, so that
//! each master carries at most [`MAX_CHANNELS`] channels.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::path::{Path, PathBuf};

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::inventory::Connection;

/// sshd's MaxSessions is 10; stay under it.
pub const MAX_CHANNELS: usize = 8;
/// Idle seconds a master stays up after a run.
pub const PERSIST_SECS: usize = 60;

/// How unknown host keys are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum HostKeyPolicy {
    /// The host key must already be in known_hosts.
    #[default]
    Strict,
    /// Unknown hosts are added to known_hosts; changed keys are still refused.
    AcceptNew,
}

/// Why a host could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// No ssh client on this machine.
    #[error("the `ssh` client was not found on PATH: install it (apt-get install openssh-client)")]
    NoClient,
    /// The host key is unknown or changed.
    #[error("host key verification failed for {host}: add its key to known_hosts, or pass --host-key-policy accept-new for a new host")]
    HostKey {
        /// The address.
        host: String,
    },
    /// Could not connect or authenticate.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// A channel or command failed.
    #[error("ssh: {0}")]
    Channel(String),
}

/// Why one attempt to run a script failed.
#[derive(Debug)]
enum Attempt {
    /// The channel was never opened: the script did not start and may be sent again.
    NotStarted(String),
    /// It failed after the script was handed over: it may have run, in part or whole.
    Started(String),
    /// The connection itself is gone: no point in trying again.
    Gone(String),
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attempt::NotStarted(e) | Attempt::Started(e) | Attempt::Gone(e) => f.write_str(e),
        }
    }
}

/// How [`Remote::run`] retries: up to 5 attempts, a script sent again only when the attempt
/// before provably never started it (its channel did not open); a failure after the start is
/// returned at once (a retry could run a command or a switchover twice).
async fn retry_unstarted<F, Fut>(mut attempt: F) -> Result<ScriptOutput, SshError>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<ScriptOutput, Attempt>>,
{
    let mut last = String::new();
    for n in 0..5u64 {
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(200 * n)).await;
        }
        match attempt(n).await {
            Ok(out) => return Ok(out),
            Err(Attempt::NotStarted(e)) => last = e,
            Err(Attempt::Started(e)) => {
                return Err(SshError::Channel(format!(
                    "{e} (the script may have started on the host, so it is not sent again)"
                )))
            }
            Err(Attempt::Gone(e)) => return Err(SshError::Channel(format!("{e}; before that: {last}"))),
        }
    }
    Err(SshError::Channel(last))
}

/// A script's outcome.
#[derive(Debug, Clone)]
pub struct ScriptOutput {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
}

/// A connected host.
pub struct Remote {
    address: String,
    session: Session,
    channels: Semaphore,
    sudo: bool,
    round_trips: AtomicUsize,
}

/// Where persistent masters' control sockets are recorded (created 0700).
fn control_root() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    // An empty or relative variable would put the sockets under the working directory.
    let absolute = |name: &str| std::env::var_os(name).map(PathBuf::from).filter(|p| p.is_absolute());
    let base = absolute("XDG_RUNTIME_DIR").or_else(|| absolute("HOME").map(|h| h.join(".cache")))?;
    let dir = base.join("hactl/ssh");
    std::fs::create_dir_all(&dir).ok()?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).ok()?;
    Some(dir)
}

/// A name for an inventory host's connection settings: a master is reused only by that host,
/// with identical settings.
fn control_key(host: &str, conn: &Connection, policy: HostKeyPolicy) -> String {
    let text = format!("{host}|{conn:?}|{policy:?}");
    hex::encode(&Sha256::digest(text.as_bytes())[..12])
}

/// The port OpenSSH connects to for `conn`: its `ansible_port` (hactl passes it as `-p`, which
/// wins over any configuration), else the one `ssh -G` resolves for its address and user from the
/// user's and the system's configuration (`~/.ssh/config`), else OpenSSH's default, 22.
pub fn effective_port(conn: &Connection) -> u16 {
    if let Some(port) = conn.port {
        return port;
    }
    let mut cmd = std::process::Command::new("ssh");
    cmd.arg("-G");
    if let Some(user) = &conn.user {
        cmd.arg("-l").arg(user);
    }
    cmd.arg("--").arg(&conn.address).stdin(std::process::Stdio::null());
    match cmd.output() {
        Ok(out) if out.status.success() => port_in_config(&String::from_utf8_lossy(&out.stdout)).unwrap_or(22),
        _ => 22,
    }
}

/// The `port` line of `ssh -G`'s output (one `keyword value` per line, keywords in lower case).
fn port_in_config(text: &str) -> Option<u16> {
    text.lines()
        .filter_map(|line| line.trim().split_once(char::is_whitespace))
        .find(|(key, _)| key.eq_ignore_ascii_case("port"))
        .and_then(|(_, value)| value.trim().parse().ok())
}

/// A live persistent master for these settings, if one is recorded.
async fn resume(record: &Path) -> Option<Session> {
    let ctl = PathBuf::from(std::fs::read_to_string(record).ok()?.trim());
    if !ctl.exists() {
        return None;
    }
    let session = Session::resume_mux(ctl.into_boxed_path(), None);
    // The mux check only asks the local master; a command proves the remote end is still there.
    let alive = tokio::time::timeout(Duration::from_secs(3), session.command("true").status()).await;
    if matches!(alive, Ok(Ok(status)) if status.success()) {
        return Some(session);
    }
    let _ = session.close().await;
    None
}

/// Whether a connection failure may pass by itself: nothing listens yet, or sshd closes the
/// connection during authentication (a booting Debian refuses non-root logins until boot ends).
fn transient(error: &str) -> bool {
    [
        "Connection refused",
        "Connection closed",
        "Connection reset",
        "Connection timed out",
        "No route to host",
        "timed out",
        "kex_exchange_identification",
        "not permitted to log in yet",
    ]
    .iter()
    .any(|t| error.contains(t))
}

/// Connects to the inventory host `host`, reusing its persistent master when one is up. A host that refuses
/// connections or logins for a while (it is booting) is tried again until `patience` runs out,
/// saying once through `waiting` what it waits for; a host key or authentication error fails at
/// once.
pub async fn connect(
    host: &str,
    conn: &Connection,
    policy: HostKeyPolicy,
    patience: Duration,
    waiting: &(dyn Fn(&str) + Send + Sync),
) -> Result<Remote, SshError> {
    which::which("ssh").map_err(|_| SshError::NoClient)?;
    let sudo = conn.become_root && conn.user.as_deref().is_some_and(|u| u != "root");
    let started = std::time::Instant::now();
    let remote = |session| Remote {
        address: conn.address.clone(),
        session,
        channels: Semaphore::new(MAX_CHANNELS),
        sudo,
        round_trips: AtomicUsize::new(0),
    };
    let root = control_root();
    let record = root
        .as_ref()
        .map(|r| r.join(format!("{}.ctl", control_key(host, conn, policy))));
    if let Some(session) = match &record {
        Some(r) => resume(r).await,
        None => None,
    } {
        tracing::debug!(host = %conn.address, ms = started.elapsed().as_millis() as u64, "ssh: reused a persistent master");
        return Ok(remote(session));
    }
    let mut builder = SessionBuilder::default();
    builder
        .known_hosts_check(match policy {
            HostKeyPolicy::Strict => KnownHosts::Strict,
            HostKeyPolicy::AcceptNew => KnownHosts::Add,
        })
        .connect_timeout(Duration::from_secs(10))
        .server_alive_interval(Duration::from_secs(5))
        .control_directory(root.clone().unwrap_or_else(std::env::temp_dir))
        .control_persist(ControlPersist::IdleFor(PERSIST_SECS.try_into().expect("non-zero")));
    if let Some(user) = &conn.user {
        builder.user(user.clone());
    }
    if let Some(port) = conn.port {
        builder.port(port);
    }
    if let Some(key) = &conn.key {
        builder.keyfile(key);
    }
    if let Some(kh) = &conn.known_hosts {
        builder.user_known_hosts_file(kh);
    }
    let destination = conn.address.clone();
    let patience = conn.connect_timeout.map(Duration::from_secs).unwrap_or(patience);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let last = match builder.connect_mux(&destination).await {
            Ok(session) => {
                tracing::debug!(host = %destination, attempt, ms = started.elapsed().as_millis() as u64, "ssh: new master");
                let Some(record) = &record else {
                    return Ok(remote(session));
                };
                let (ctl, log) = session.detach();
                let _ = crate::fsutil::write_atomic(record, ctl.to_string_lossy().as_bytes(), 0o600);
                return Ok(remote(Session::resume_mux(ctl, log)));
            }
            Err(e) => error_chain(&e),
        };
        tracing::debug!(host = %destination, attempt, error = %last.trim(), "ssh: connect failed");
        if last.contains("Host key verification failed") || last.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
            return Err(SshError::HostKey { host: destination });
        }
        if !transient(&last) || started.elapsed() >= patience {
            let waited = if attempt > 1 {
                format!(" (tried for {} s)", started.elapsed().as_secs())
            } else {
                String::new()
            };
            return Err(SshError::Unreachable(format!("{destination}: {}{waited}", last.trim())));
        }
        if attempt == 1 {
            waiting(&format!(
                "{destination} refuses the connection or login ({}); trying again for up to {} s (booting?)",
                last.trim().lines().last().unwrap_or(""),
                patience.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt.min(4)))).await;
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Remote {
    /// Asks the local master whether it runs (no round trip to the host): a client, so its
    /// idle timer starts again. A master that is gone is not this call's business: the next
    /// script reports it.
    pub async fn keep_master(&self) {
        let _ = self.session.check().await;
    }

    /// Runs a POSIX shell script on the host (one round trip), as root when `become` applies. A
    /// script is sent again only when it provably never started (the channel could not be
    /// opened); a failure after that is reported, never retried: a retry could run a command
    /// or a switchover twice.
    pub async fn run(&self, script: &str) -> Result<ScriptOutput, SshError> {
        self.run_made(|| script.to_string()).await
    }

    /// [`Remote::run`] with the script made by `make` once a channel is free: a caller that times
    /// the round trip (a clock check's window) starts then, not while it waited for a channel.
    pub async fn run_made(&self, make: impl FnOnce() -> String) -> Result<ScriptOutput, SshError> {
        let asked = std::time::Instant::now();
        let _permit = self
            .channels
            .acquire()
            .await
            .map_err(|e| SshError::Channel(e.to_string()))?;
        let script = &make();
        let started = std::time::Instant::now();
        let queued = started.duration_since(asked).as_millis() as u64;
        let out = retry_unstarted(|attempt| async move {
            if attempt > 0 && self.session.check().await.is_err() {
                return Err(Attempt::Gone("the SSH connection is gone".into()));
            }
            let outcome = self.run_once(script).await;
            if let Err(e) = &outcome {
                tracing::debug!(host = %self.address, attempt, error = %e, "ssh: attempt failed");
            }
            outcome
        })
        .await?;
        let trip = self.round_trips.fetch_add(1, Ordering::Relaxed) + 1;
        // Sizes and times only: scripts and their output may carry secrets.
        tracing::debug!(
            host = %self.address,
            trip,
            sent = script.len(),
            stdout = out.stdout.len(),
            stderr = out.stderr.len(),
            code = out.code,
            ms = started.elapsed().as_millis() as u64,
            queued,
            "ssh: round trip"
        );
        Ok(out)
    }

    async fn run_once(&self, script: &str) -> Result<ScriptOutput, Attempt> {
        let mut cmd = if self.sudo {
            let mut c = self.session.command("sudo");
            c.args(["-n", "-H", "--", "sh", "-s"]);
            c
        } else {
            let mut c = self.session.command("sh");
            c.arg("-s");
            c
        };
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().await.map_err(|e| Attempt::NotStarted(error_chain(&e)))?;
        let started = |e: String| Attempt::Started(e);
        let mut stdin = child.stdin().take().ok_or_else(|| started("no stdin".into()))?;
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| started(e.to_string()))?;
        stdin.shutdown().await.map_err(|e| started(e.to_string()))?;
        drop(stdin);
        let out = child.wait_with_output().await.map_err(|e| started(error_chain(&e)))?;
        Ok(ScriptOutput {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            code: out.status.code().unwrap_or(-1),
        })
    }

    /// Scripts run on this host so far.
    pub fn round_trips(&self) -> usize {
        self.round_trips.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn the_port_is_read_from_ssh_g() {
        let config = "host node1\nuser root\nhostname 10.0.0.1\nport 2222\naddressfamily any\n";
        assert_eq!(port_in_config(config), Some(2222));
        assert_eq!(port_in_config("user root\nport 22\n"), Some(22));
        // `proxyjump` and the like are not `port`; a missing or broken line is none.
        assert_eq!(port_in_config("portx 1\nuser root\n"), None);
        assert_eq!(port_in_config("port seventy\n"), None);
        assert_eq!(port_in_config("port 70000\n"), None);
        assert_eq!(port_in_config(""), None);
    }

    #[test]
    fn ansible_port_wins_without_asking_ssh() {
        let conn = Connection {
            address: "-oProxyCommand=false".into(),
            user: None,
            port: Some(2022),
            key: None,
            become_root: false,
            known_hosts: None,
            connect_timeout: None,
        };
        assert_eq!(effective_port(&conn), 2022);
    }

    fn ok() -> ScriptOutput {
        ScriptOutput {
            stdout: "done".into(),
            stderr: String::new(),
            code: 0,
        }
    }

    /// Runs the retry policy over scripted attempt outcomes; returns its result and how many
    /// times the script was handed over.
    async fn replay(mut outcomes: Vec<Result<ScriptOutput, Attempt>>) -> (Result<ScriptOutput, SshError>, usize) {
        outcomes.reverse();
        let outcomes = RefCell::new(outcomes);
        let sent = RefCell::new(0);
        let result = retry_unstarted(|_| {
            let next = outcomes.borrow_mut().pop().expect("an outcome per attempt");
            if !matches!(next, Err(Attempt::NotStarted(_))) {
                *sent.borrow_mut() += 1;
            }
            async move { next }
        })
        .await;
        let sent = *sent.borrow();
        (result, sent)
    }

    #[tokio::test(start_paused = true)]
    async fn a_script_that_may_have_started_is_never_sent_again() {
        let (result, sent) = replay(vec![Err(Attempt::Started("channel closed".into())), Ok(ok())]).await;
        let err = result.unwrap_err().to_string();
        assert!(err.contains("not sent again"), "{err}");
        assert_eq!(sent, 1, "sent once, never retried");
    }

    #[tokio::test(start_paused = true)]
    async fn a_channel_that_never_opened_is_tried_again() {
        let refused = || Err(Attempt::NotStarted("open failed".into()));
        let (result, sent) = replay(vec![refused(), refused(), Ok(ok())]).await;
        assert_eq!(result.unwrap().stdout, "done");
        assert_eq!(sent, 1, "handed over once, by the attempt that opened");
        let (result, _) = replay((0..5).map(|_| refused()).collect()).await;
        assert!(result.unwrap_err().to_string().contains("open failed"));
        let (result, _) = replay(vec![refused(), Err(Attempt::Gone("the SSH connection is gone".into()))]).await;
        assert!(result.unwrap_err().to_string().contains("gone"));
    }
}

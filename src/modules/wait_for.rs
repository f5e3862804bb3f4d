//! `wait_for`: waits until a TCP port accepts connections or a URL answers with a status.
//! Waiting is not a change.

use miette::Result;
use serde::{Deserialize, Serialize};

use super::{script, Change, Fact, ProbeLines, Resource};

/// Arguments of `wait_for`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitFor {
    /// Host to connect to (default 127.0.0.1).
    #[serde(default = "default_host")]
    pub host: String,
    /// TCP port.
    pub port: Option<u16>,
    /// URL to GET instead of a port.
    pub url: Option<String>,
    /// Expected HTTP status.
    #[serde(default = "default_status")]
    pub status: u16,
    /// Seconds to wait.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_status() -> u16 {
    200
}
fn default_timeout() -> u64 {
    60
}

/// The module's shell functions.
const SH: &str = include_str!("wait_for.sh");

/// Exits 0 when HACTL_URL answers with HACTL_STATUS.
const HTTP_PY: &str = r#"import os, sys, urllib.request, urllib.error
try: code = urllib.request.urlopen(os.environ["HACTL_URL"], timeout=2).status
except urllib.error.HTTPError as e: code = e.code
except Exception: code = 0
sys.exit(0 if code == int(os.environ["HACTL_STATUS"]) else 1)"#;

/// Whether the port or URL answers now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// It answers.
    pub ready: bool,
}

impl Fact for Readiness {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        Ok(Readiness {
            ready: lines.require("ready")? == "yes",
        })
    }
}

impl WaitFor {
    fn target(&self) -> String {
        match (&self.url, self.port) {
            (Some(url), _) => format!("{url} → {}", self.status),
            (None, Some(port)) => format!("{}:{port}", self.host),
            (None, None) => "nothing (give port or url)".into(),
        }
    }

    fn script(&self, call: &str) -> String {
        let (port, status, timeout) = (
            self.port.map(|p| p.to_string()).unwrap_or_default(),
            self.status.to_string(),
            self.timeout.to_string(),
        );
        let target = self.target();
        let vars = [
            ("HACTL_URL", self.url.as_deref().unwrap_or("")),
            ("HACTL_HTTP_PY", HTTP_PY),
            ("HACTL_STATUS", &status),
            ("HACTL_HOST", &self.host),
            ("HACTL_PORT", &port),
            ("HACTL_TIMEOUT", &timeout),
            ("HACTL_TARGET", &target),
        ];
        script(SH, &vars, call)
    }
}

impl Resource for WaitFor {
    type Fact = Readiness;

    fn probe(&self) -> String {
        self.script("hactl_probe")
    }

    fn diff(&self, readiness: &Readiness) -> Result<Option<Change>> {
        if self.url.is_none() && self.port.is_none() {
            return Err(miette::miette!("wait_for needs `port` or `url`"));
        }
        Ok((!readiness.ready).then(|| Change::not_counted(format!("wait for {}", self.target()))))
    }

    fn apply(&self) -> String {
        self.script("hactl_apply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::{local_apply, local_diff};

    #[test]
    fn port_ready_and_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let w = WaitFor {
            host: "127.0.0.1".into(),
            port: Some(port),
            url: None,
            status: 200,
            timeout: 2,
        };
        assert_eq!(local_diff(&w).unwrap(), None);
        drop(listener);
        let ch = local_diff(&w).unwrap().unwrap();
        assert!(!ch.counts);
        assert_ne!(local_apply(&w).rc, 0);
    }
}

//! `wait_for`: waits until a TCP port accepts connections or a URL answers with a status.
//! Waiting is not a change.

use miette::Result;
use serde::{Deserialize, Serialize};

use super::{q, Change, Module, Observed};

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

const HTTP_PY: &str = r#"import sys, urllib.request, urllib.error
try: code = urllib.request.urlopen(sys.argv[1], timeout=2).status
except urllib.error.HTTPError as e: code = e.code
except Exception: code = 0
sys.exit(0 if code == int(sys.argv[2]) else 1)"#;

impl WaitFor {
    fn check(&self) -> String {
        match (&self.url, self.port) {
            (Some(url), _) => format!("python3 -c {} {} {}", q(HTTP_PY), q(url), self.status),
            (None, Some(port)) => format!(
                "timeout 2 bash -c {} 2>/dev/null",
                q(&format!("</dev/tcp/{}/{port}", self.host))
            ),
            (None, None) => "false".into(),
        }
    }

    fn target(&self) -> String {
        match (&self.url, self.port) {
            (Some(url), _) => format!("{url} → {}", self.status),
            (None, Some(port)) => format!("{}:{port}", self.host),
            (None, None) => "nothing (give port or url)".into(),
        }
    }
}

impl Module for WaitFor {
    fn probe(&self) -> String {
        format!("if {}; then echo ready; else echo waiting; fi\n", self.check())
    }

    fn diff(&self, observed: &Observed) -> Result<Option<Change>> {
        if self.url.is_none() && self.port.is_none() {
            return Err(miette::miette!("wait_for needs `port` or `url`"));
        }
        Ok((!observed.stdout.contains("ready")).then(|| Change {
            summary: format!("would wait for {}", self.target()),
            diff: None,
            counts: false,
        }))
    }

    fn apply(&self) -> String {
        format!(
            "end=$(( $(date +%s) + {} ))\nuntil {}; do [ $(date +%s) -ge $end ] && {{ echo 'timed out waiting for {}' >&2; exit 1; }}; sleep 1; done\n",
            self.timeout,
            self.check(),
            self.target().replace('\'', "")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::run_local;

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
        assert_eq!(w.diff(&run_local(&w.probe())).unwrap(), None);
        drop(listener);
        let ch = w.diff(&run_local(&w.probe())).unwrap().unwrap();
        assert!(!ch.counts);
        assert_ne!(run_local(&w.apply()).rc, 0);
    }
}

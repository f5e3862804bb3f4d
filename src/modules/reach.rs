//! `reach`: the TCP endpoints a stage's services need through other hosts (a load balancer's
//! name, a broker node) accept a connection from this host, checked before the stage relies on
//! them. The plan names each that does not (`wait until hactl-lb:5000 answers (now: hactl-lb
//! (10.0.0.9) port 5000: No route to host)`); the run tries again for `timeout` seconds, then
//! fails with the same reason: which name, which address, what answered.

use miette::Result;
use serde::{Deserialize, Serialize};

use super::{script, Change, Fact, ProbeLines, Resource};

/// Arguments of `reach`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reach {
    /// `HOST:PORT` endpoints (a name this host resolves, or an address): a list, or one
    /// `{{ expression }}` that renders to one.
    pub endpoints: Endpoints,
    /// Seconds the run tries again before it fails.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

fn default_timeout() -> u64 {
    20
}

/// The endpoints: a list, or (before rendering) the template that gives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Endpoints {
    /// The endpoints.
    List(Vec<String>),
    /// A template not rendered to a list.
    Template(String),
}

/// The module's shell functions.
const SH: &str = include_str!("reach.sh");

/// The endpoints that do not answer, each with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable(pub Vec<(String, String)>);

impl Fact for Unreachable {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        lines.require("checked")?;
        let parse = |line: &str| {
            let (endpoint, why) = line.split_once(' ').unwrap_or((line, "no reason"));
            (endpoint.to_string(), why.to_string())
        };
        Ok(Unreachable(lines.all("unreachable").map(parse).collect()))
    }
}

impl Reach {
    /// The endpoints, or an error when they did not render to a list of `HOST:PORT`.
    fn list(&self) -> Result<&[String]> {
        let list = match &self.endpoints {
            Endpoints::List(list) => list,
            Endpoints::Template(t) => return Err(miette::miette!("reach: `endpoints` did not render to a list: {t}")),
        };
        match list.iter().find(|e| e.rsplit_once(':').is_none()) {
            Some(bad) => Err(miette::miette!("reach: `{bad}` is not HOST:PORT")),
            None => Ok(list),
        }
    }

    fn script(&self, call: &str) -> String {
        let endpoints = self.list().map(|l| l.join("\n")).unwrap_or_default();
        let timeout = self.timeout.to_string();
        let vars = [("HACTL_ENDPOINTS", endpoints.as_str()), ("HACTL_TIMEOUT", &timeout)];
        script(SH, &vars, call)
    }
}

impl Resource for Reach {
    type Fact = Unreachable;

    fn probe(&self) -> String {
        self.script("hactl_probe")
    }

    fn diff(&self, found: &Unreachable) -> Result<Option<Change>> {
        self.list()?;
        if found.0.is_empty() {
            return Ok(None);
        }
        let names: Vec<&str> = found.0.iter().map(|(e, _)| e.as_str()).collect();
        let whys: Vec<&str> = found.0.iter().map(|(_, why)| why.as_str()).collect();
        Ok(Some(Change::not_counted(format!(
            "wait until {} answers (now: {})",
            names.join(", "),
            whys.join("; ")
        ))))
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
    fn an_open_port_is_reached_and_a_closed_one_is_named_with_its_reason() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = format!("localhost:{}", listener.local_addr().unwrap().port());
        let closed_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let closed = format!("127.0.0.1:{closed_port}");
        let reach = |endpoints: Vec<String>| Reach {
            endpoints: Endpoints::List(endpoints),
            timeout: 1,
        };

        assert_eq!(local_diff(&reach(vec![open.clone()])).unwrap(), None);
        assert_eq!(local_apply(&reach(vec![open.clone()])).rc, 0);

        let both = reach(vec![open, closed.clone(), "no-such-host.invalid:5000".into()]);
        let change = local_diff(&both).unwrap().unwrap();
        assert!(!change.counts, "waiting is not a change");
        assert_eq!(
            change.summary,
            format!(
                "wait until {closed}, no-such-host.invalid:5000 answers (now: 127.0.0.1 (127.0.0.1) port {closed_port}: Connection refused; no-such-host.invalid does not resolve here)"
            )
        );
        let failed = local_apply(&both);
        assert_ne!(failed.rc, 0);
        assert_eq!(
            failed.stderr,
            format!("127.0.0.1 (127.0.0.1) port {closed_port}: Connection refused\nno-such-host.invalid does not resolve here\n")
        );
    }

    #[test]
    fn an_endpoint_without_a_port_is_an_error() {
        let r = Reach {
            endpoints: Endpoints::List(vec!["hactl-lb".into()]),
            timeout: 1,
        };
        assert!(crate::modules::diff_of(&r, "checked yes\n").is_err());
        let unrendered = Reach {
            endpoints: Endpoints::Template("{{ x }}".into()),
            timeout: 1,
        };
        assert!(crate::modules::diff_of(&unrendered, "checked yes\n").is_err());
    }
}

//! `decommission`: the stack's services of the roles this host left are stopped and disabled, so
//! that none of them runs here or starts again at boot (a host taken out of a group, still in
//! the inventory). Units stop in the order given: a Celery worker first (its warm shutdown lets
//! running tasks finish), the guard before the units it runs (its leases go at once). A unit is
//! touched only where the file hactl writes for it is there and says hactl manages it: a unit of
//! the same name that hactl did not set up (the host's own HAProxy) is left alone. With
//! `prune`, stopping them takes a cluster member away (etcd, PostgreSQL under Patroni,
//! RabbitMQ): only `provision --prune` does that, and without it the report says what it left.
//! A unit that is not installed here is nothing to do. The plan says `stop and disable
//! airflow-worker (running tasks finish first), haproxy: this host left groups airflow_workers,
//! loadbalancers`.

use miette::{miette, Result};
use serde::{Deserialize, Serialize};

use super::{Change, Fact, ProbeLines, Resource, Templated};

/// The module's shell functions.
const SH: &str = include_str!("decommission.sh");

/// The unit whose stop is a warm shutdown (its running tasks finish first).
const WORKER_UNIT: &str = "airflow-worker";

/// Arguments of `decommission`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decommission {
    /// The units, in the order they stop, each with the file hactl writes for it (its unit file,
    /// a drop-in, or its configuration: the mark that the unit is hactl's).
    pub units: Templated<Vec<(String, String)>>,
    /// The groups this host left (for the plan).
    pub left: Templated<Vec<String>>,
    /// Whether stopping them removes a cluster member: applied by `provision --prune` only.
    #[serde(default)]
    pub prune: bool,
}

/// A unit installed here, as systemd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    /// Its name.
    pub name: String,
    /// Whether it runs.
    pub active: bool,
    /// Whether it starts at boot (a static unit, started only by others, never does).
    pub enabled: bool,
}

/// The installed units of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitsFact(pub Vec<UnitState>);

impl Fact for UnitsFact {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        lines
            .all("unit")
            .map(|line| match line.split(' ').collect::<Vec<_>>().as_slice() {
                [name, active, enabled] => Ok(UnitState {
                    name: name.to_string(),
                    active: *active == "yes",
                    enabled: *enabled == "yes",
                }),
                _ => Err(miette!("unexpected `unit {line}`")),
            })
            .collect::<Result<_>>()
            .map(UnitsFact)
    }
}

impl Decommission {
    fn script(&self, call: &str) -> String {
        let units: Vec<String> = self
            .units
            .or_default()
            .iter()
            .map(|(unit, marker)| format!("{unit} {marker}"))
            .collect();
        let units = units.join("\n");
        super::script(SH, &[("HACTL_UNITS", &units)], call)
    }
}

/// How the plan names a unit to stop.
fn described(unit: &UnitState) -> String {
    match (unit.name.as_str(), unit.active) {
        (WORKER_UNIT, true) => format!("{WORKER_UNIT} (running tasks finish first)"),
        (name, true) => name.to_string(),
        (name, false) => format!("{name} (stopped already)"),
    }
}

impl Resource for Decommission {
    type Fact = UnitsFact;

    fn probe(&self) -> String {
        self.script("hactl_probe")
    }

    fn diff(&self, fact: &UnitsFact) -> Result<Option<Change>> {
        let units = self.units.value("units")?;
        if let Some((unit, marker)) = units
            .iter()
            .find(|(u, m)| u.contains(char::is_whitespace) || m.contains(char::is_whitespace))
        {
            return Err(miette!(
                "unit `{unit}` or its file `{marker}` has a space: they travel as words"
            ));
        }
        let left = self.left.value("left")?;
        let pending: Vec<String> = fact.0.iter().filter(|u| u.active || u.enabled).map(described).collect();
        if pending.is_empty() {
            return Ok(None);
        }
        let groups = if left.len() == 1 { "group" } else { "groups" };
        let summary = format!(
            "stop and disable {}: this host left {groups} {}",
            pending.join(", "),
            left.join(", ")
        );
        Ok(Some(if self.prune {
            Change::removal(summary)
        } else {
            Change::new(summary)
        }))
    }

    fn apply(&self) -> String {
        self.script("hactl_apply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::{diff_of, run_local};

    fn decommission(prune: bool) -> Decommission {
        let unit = |u: &str| (u.to_string(), format!("/tmp/hactl-test-marks/{u}"));
        Decommission {
            units: Templated::Value(vec![unit("airflow-worker"), unit("haproxy"), unit("etcd")]),
            left: Templated::Value(vec!["airflow_workers".into(), "etcd".into()]),
            prune,
        }
    }

    #[test]
    fn running_or_enabled_units_are_stopped_and_disabled_and_a_cluster_s_only_with_prune() {
        let out = "unit airflow-worker yes yes\nunit etcd no yes\n";
        let change = diff_of(&decommission(false), out).unwrap().unwrap();
        assert_eq!(
            change.summary,
            "stop and disable airflow-worker (running tasks finish first), etcd (stopped already): this host left groups airflow_workers, etcd"
        );
        assert!(!change.prune);
        assert!(diff_of(&decommission(true), out).unwrap().unwrap().prune);
        let done = "unit airflow-worker no no\nunit etcd no static\n";
        assert_eq!(diff_of(&decommission(true), done).unwrap(), None);
        assert_eq!(diff_of(&decommission(true), "").unwrap(), None, "none installed");
    }

    /// The real script, with a stand-in systemctl: units that are not installed, or not hactl's
    /// (no mark), are skipped; running ones stopped in order, enabled ones disabled.
    #[test]
    fn the_script_stops_hactl_s_units_in_order_and_disables_them() {
        let marks = tempfile::tempdir().unwrap();
        std::fs::write(marks.path().join("airflow-worker"), "# Managed by hactl.\n").unwrap();
        std::fs::write(marks.path().join("airflow-scheduler"), "# Managed by hactl.\n").unwrap();
        std::fs::write(marks.path().join("haproxy"), "# Managed by hactl: reloads\n").unwrap();
        std::fs::write(marks.path().join("etcd"), "the host's own\n").unwrap();
        let module = Decommission {
            units: Templated::Value(
                ["airflow-worker", "airflow-scheduler", "haproxy", "etcd", "nginx"]
                    .iter()
                    .map(|u| (u.to_string(), marks.path().join(u).display().to_string()))
                    .collect(),
            ),
            ..decommission(true)
        };
        // Every fake call reads its standard input to the end, as a real command may: the loop
        // must still see each unit after it.
        let fake = "systemctl() { cat >/dev/null; case \"$*\" in \
            'show -p LoadState --value nginx') echo not-found ;; \
            'show -p LoadState --value '*) echo loaded ;; \
            'is-active --quiet airflow-'* | 'is-active --quiet etcd') return 0 ;; \
            'is-active --quiet '*) return 3 ;; \
            'is-enabled airflow-'* | 'is-enabled etcd') echo enabled ;; \
            'is-enabled haproxy') echo disabled ;; \
            'is-failed --quiet airflow-scheduler') return 0 ;; \
            'is-failed --quiet '*) return 1 ;; \
            *) echo \"systemctl $*\" >&2 ;; esac; }\n";
        let with_fake = |call: &str| module.script(call).replacen(call, &format!("{fake}{call}"), 1);
        let probe = run_local(&with_fake("hactl_probe"));
        assert_eq!(probe.rc, 0, "{probe:?}");
        assert_eq!(
            probe.stdout,
            "unit airflow-worker yes yes\nunit airflow-scheduler yes yes\nunit haproxy no no\n"
        );
        let apply = run_local(&with_fake("hactl_apply"));
        assert_eq!(apply.rc, 0, "{apply:?}");
        assert_eq!(
            apply.stdout,
            "stopped airflow-worker\ndisabled airflow-worker\n\
             stopped airflow-scheduler\nreset airflow-scheduler (failed while it stopped)\n\
             disabled airflow-scheduler\n"
        );
        assert_eq!(
            apply.stderr,
            "systemctl stop airflow-worker\nsystemctl disable --quiet airflow-worker\n\
             systemctl stop airflow-scheduler\nsystemctl reset-failed airflow-scheduler\n\
             systemctl disable --quiet airflow-scheduler\n"
        );
    }
}

//! The batch protocol: the parts of one round trip (a stage's probes, applies, handlers or gates)
//! joined into one POSIX shell script, and its output split back into each part's stdout, exit
//! code and (for probes) stderr.
//!
//! Each part runs in a subshell with stdin closed, framed by `\x1eB i` before its output,
//! `\x1eE i rc` after it, then (probes only, and only when the part failed) its stderr, then
//! `\x1eF i`. Probes and applies run one part after another (most probes are a few shell builtins:
//! starting each apart would cost more than it saves); gates, which only read and are few and
//! slow, run all at once (each into its own file), and their outputs follow in order when the
//! last has ended. Probe and gate scripts have a private directory, `$hactl_dir`, where
//! `hactl_once` keeps the answers their parts share.

use std::collections::HashMap;

use crate::modules::Observed;

/// How a batch treats its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    /// Read-only probes: every part runs; a failing part's stderr is reported apart from its
    /// stdout (which is the fact it printed).
    Probe,
    /// Gates: every part runs, all at once, stderr folded into the output.
    Gates,
    /// Applies and handlers: stop at the first failing part; stderr folded into the output.
    Apply,
}

/// Joins parts into one script.
pub fn batch_script(parts: &[(usize, String)], kind: BatchKind) -> String {
    let mut s = String::from("export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n");
    // The modules' shared helpers, once for every part (each part's subshell inherits them).
    s.push_str(crate::modules::LIB_SH);
    s.push('\n');
    if kind == BatchKind::Gates {
        s.push_str(&concurrent_parts(parts));
        return s;
    }
    let stderr = if kind == BatchKind::Probe {
        s.push_str("hactl_dir=$(mktemp -d) || exit 1\ntrap 'rm -rf \"$hactl_dir\"' EXIT\n");
        "2>\"$hactl_dir/err\""
    } else {
        "2>&1"
    };
    for (i, body) in parts {
        s.push_str(&format!(
            "printf '\\036B {i}\\n'\n(\n{body}\n) </dev/null {stderr}\nrc=$?\nprintf '\\n\\036E {i} %d\\n' \"$rc\"\n"
        ));
        if kind == BatchKind::Probe {
            s.push_str("[ $rc -eq 0 ] || cat \"$hactl_dir/err\"\n");
        }
        s.push_str(&format!("printf '\\036F {i}\\n'\n"));
        if kind == BatchKind::Apply {
            s.push_str("[ $rc -eq 0 ] || exit 0\n");
        }
    }
    s
}

/// Read-only parts started together, each writing its output and exit code to its own file; when
/// every one has ended, their framed outputs in order.
fn concurrent_parts(parts: &[(usize, String)]) -> String {
    let mut s = String::from("hactl_dir=$(mktemp -d) || exit 1\ntrap 'rm -rf \"$hactl_dir\"' EXIT\n");
    for (i, body) in parts {
        s.push_str(&format!(
            "(\n(\n{body}\n) </dev/null >\"$hactl_dir/{i}\" 2>&1\necho $? >\"$hactl_dir/{i}.rc\"\n) &\n"
        ));
    }
    s.push_str("wait\n");
    for (i, _) in parts {
        s.push_str(&format!(
            "printf '\\036B {i}\\n'\ncat \"$hactl_dir/{i}\"\nprintf '\\n\\036E {i} %d\\n' \"$(cat \"$hactl_dir/{i}.rc\")\"\nprintf '\\036F {i}\\n'\n"
        ));
    }
    s
}

/// Splits a batch's stdout into each part's output, exit code and stderr.
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
        let after_end = &body_start[end + end_marker.len()..];
        let eol = after_end.find('\n').unwrap_or(after_end.len());
        let rc = after_end[..eol].trim().parse().unwrap_or(-1);
        let tail = &after_end[(eol + 1).min(after_end.len())..];
        let final_marker = format!("\x1eF {index}\n");
        let (stderr, next) = match tail.find(&final_marker) {
            Some(f) => (&tail[..f], &tail[f + final_marker.len()..]),
            None => ("", tail),
        };
        out.insert(
            index,
            Observed {
                stdout: body_start[..end].to_string(),
                stderr: stderr.to_string(),
                rc,
            },
        );
        rest = next;
    }
    out
}

/// Why a part of a batch did not succeed (`None` when it did): its exit code and last lines, or
/// that the script stopped before it.
pub fn part_failure(outcome: Option<&Observed>, lines: usize) -> Option<String> {
    match outcome {
        Some(o) if o.rc == 0 => None,
        Some(o) => Some(format!("exit {}: {}", o.rc, tail(&o.stdout, lines))),
        None => Some("did not run (the script stopped before it)".to_string()),
    }
}

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::run_local;

    #[test]
    fn apply_batch_stops_at_the_first_failure() {
        let parts = vec![
            (0, "echo one; echo err >&2".to_string()),
            (1, "printf 'no newline'".to_string()),
            (2, "exit 3".to_string()),
            (3, "echo never".to_string()),
        ];
        let parsed = parse_batch(&run_local(&batch_script(&parts, BatchKind::Apply)).stdout);
        assert_eq!(parsed[&0].stdout, "one\nerr\n");
        assert_eq!(parsed[&1].stdout, "no newline");
        assert_eq!(parsed[&2].rc, 3);
        assert!(!parsed.contains_key(&3));
    }

    #[test]
    fn probes_keep_stdout_apart_from_a_failing_part_stderr() {
        let parts = vec![
            (0, "cat".to_string()),
            (1, "echo fact; echo noise >&2".to_string()),
            (2, "echo partial; echo 'dpkg: cannot read' >&2; exit 2".to_string()),
            (3, "echo after".to_string()),
        ];
        let parsed = parse_batch(&run_local(&batch_script(&parts, BatchKind::Probe)).stdout);
        assert_eq!(parsed[&0].stdout, "", "probes do not read the script from stdin");
        assert_eq!((parsed[&1].stdout.as_str(), parsed[&1].stderr.as_str()), ("fact\n", ""));
        assert_eq!(parsed[&2].rc, 2);
        assert_eq!(parsed[&2].stdout, "partial\n");
        assert_eq!(parsed[&2].stderr, "dpkg: cannot read\n");
        assert_eq!(parsed[&3].stdout, "after\n");
    }

    #[test]
    fn gates_run_at_once_and_report_in_order() {
        let parts = vec![
            (0, "sleep 1; echo slow".to_string()),
            (1, "echo quick; echo warn >&2; exit 4".to_string()),
            (2, "sleep 1; cat; echo done".to_string()),
        ];
        let started = std::time::Instant::now();
        let parsed = parse_batch(&run_local(&batch_script(&parts, BatchKind::Gates)).stdout);
        assert!(
            started.elapsed() < std::time::Duration::from_millis(1900),
            "two 1 s gates took {:?}",
            started.elapsed()
        );
        assert_eq!((parsed[&0].stdout.as_str(), parsed[&0].rc), ("slow\n", 0));
        assert_eq!((parsed[&1].stdout.as_str(), parsed[&1].rc), ("quick\nwarn\n", 4));
        assert_eq!(parsed[&2].stdout, "done\n", "gates do not read the script from stdin");
    }

    #[test]
    fn parts_share_a_command_run_once_in_their_batch() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        let once = format!(
            "hactl_once status sh -c 'echo run >> {}; sleep 0.3; echo answer; exit 3'; echo \"rc $?\"",
            runs.display()
        );
        let parts: Vec<(usize, String)> = (0..3).map(|i| (i, once.clone())).collect();
        for (kind, runs_after) in [(BatchKind::Probe, "run\n"), (BatchKind::Gates, "run\nrun\n")] {
            let parsed = parse_batch(&run_local(&batch_script(&parts, kind)).stdout);
            for i in 0..3 {
                assert_eq!(parsed[&i].stdout, "answer\nrc 3\n", "{kind:?} part {i}");
            }
            assert_eq!(
                std::fs::read_to_string(&runs).unwrap(),
                runs_after,
                "once per {kind:?} batch"
            );
        }
        let applied = run_local(&batch_script(&parts[..2], BatchKind::Apply)).stdout;
        assert_eq!(applied.matches("answer").count(), 2);
        assert_eq!(
            std::fs::read_to_string(&runs).unwrap(),
            "run\nrun\nrun\nrun\n",
            "an apply runs it each time"
        );
    }

    #[test]
    fn a_cut_output_loses_only_the_unfinished_parts() {
        let script = batch_script(&[(0, "echo a".into()), (1, "echo b".into())], BatchKind::Gates);
        let full = run_local(&script).stdout;
        let cut = &full[..full.find("b\n").unwrap()];
        let parsed = parse_batch(cut);
        assert_eq!(parsed[&0].stdout, "a\n");
        assert!(!parsed.contains_key(&1));
    }
}

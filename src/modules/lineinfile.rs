//! `lineinfile`: one line present (optionally replacing the last line matching a regexp) or absent.
//! Also the shared machinery for modules that transform a file with awk (see [`AwkEdit`]).

use base64::Engine;
use miette::Result;
use serde::{Deserialize, Serialize};

use super::file::unified_diff;
use super::{fields, q, Change, Module, Observed, Presence};

/// Arguments of `lineinfile`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineInFile {
    /// The file.
    pub path: String,
    /// The line wanted (present) or removed (absent, when no regexp).
    #[serde(default)]
    pub line: String,
    /// POSIX ERE: with present, the last matching line is replaced; with absent, matches are removed.
    pub regexp: Option<String>,
    /// present (default) or absent.
    #[serde(default)]
    pub state: Presence,
    /// Create the file when missing.
    #[serde(default)]
    pub create: bool,
}

const PRESENT_AWK: &str = r#"{ l[NR]=$0; if (re != "" && $0 ~ re) last=NR; if ($0 == line) exact=NR }
END { n=NR; if (re != "" && last) l[last]=line; else if (!exact) l[++n]=line; for (i=1;i<=n;i++) print l[i] }"#;
const ABSENT_AWK: &str = r#"{ if ((re != "" && $0 ~ re) || (re == "" && $0 == line)) next; print }"#;

impl Module for LineInFile {
    fn probe(&self) -> String {
        self.edit().probe()
    }
    fn diff(&self, observed: &Observed) -> Result<Option<Change>> {
        self.edit().diff(observed)
    }
    fn apply(&self) -> String {
        self.edit().apply()
    }
}

impl LineInFile {
    fn edit(&self) -> AwkEdit {
        let program = if self.state == Presence::Present {
            PRESENT_AWK
        } else {
            ABSENT_AWK
        };
        let prelude = "line = ENVIRON[\"HL_LINE\"]; re = ENVIRON[\"HL_RE\"]";
        AwkEdit {
            path: self.path.clone(),
            program: format!("BEGIN {{ {prelude} }}\n{program}"),
            env: vec![
                ("HL_LINE".into(), self.line.clone()),
                ("HL_RE".into(), self.regexp.clone().unwrap_or_default()),
            ],
            create: self.create && self.state == Presence::Present,
            what: if self.state == Presence::Present {
                format!("line `{}`", self.line)
            } else {
                "matching lines removed".into()
            },
        }
    }
}

/// A file edited in place by an awk program (values passed through the environment, never
/// interpolated): the probe runs the program to stdout and compares; the apply writes atomically
/// keeping owner and mode.
#[derive(Debug, Clone)]
pub struct AwkEdit {
    /// The file.
    pub path: String,
    /// The awk program.
    pub program: String,
    /// Environment for the program.
    pub env: Vec<(String, String)>,
    /// Create the file (empty) when missing.
    pub create: bool,
    /// What the edit ensures, for the summary.
    pub what: String,
}

impl AwkEdit {
    fn run_awk(&self, input: &str) -> String {
        let env: String = self.env.iter().map(|(k, v)| format!("{k}={} ", q(v))).collect();
        format!("{env}awk {} {input}", q(&self.program))
    }

    /// Read-only probe: `same`, `absent`, or `differs` with old and new content in base64.
    pub fn probe(&self) -> String {
        format!(
            "p={}\nif [ ! -f \"$p\" ]; then echo absent; n=$({} </dev/null | base64 -w0); echo \"new $n\"\n\
             elif {} \"$p\" | cmp -s - \"$p\"; then echo same\n\
             else echo differs; printf 'old '; base64 -w0 < \"$p\"; echo; printf 'new '; {} \"$p\" | base64 -w0; echo; fi\n",
            q(&self.path),
            self.run_awk(""),
            self.run_awk(""),
            self.run_awk("")
        )
    }

    /// The change, from the probe's output.
    pub fn diff(&self, observed: &Observed) -> Result<Option<Change>> {
        let f = fields(&observed.stdout);
        let decode = |k: &str| {
            f.get(k)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .unwrap_or_default()
        };
        if f.contains_key("same") {
            return Ok(None);
        }
        if f.contains_key("absent") {
            if !self.create {
                return Err(miette::miette!(
                    "{} does not exist (set create: true to create it)",
                    self.path
                ));
            }
            let diff = unified_diff(&self.path, b"", &decode("new"));
            return Ok(Some(Change {
                summary: format!("create {} with {}", self.path, self.what),
                diff: Some(diff),
                counts: true,
            }));
        }
        let diff = unified_diff(&self.path, &decode("old"), &decode("new"));
        Ok(Some(Change {
            summary: format!("edit {}: {}", self.path, self.what),
            diff: Some(diff),
            counts: true,
        }))
    }

    /// Converging script: transform into a temp file beside the original, keep owner/mode, rename.
    pub fn apply(&self) -> String {
        format!(
            "p={}; d=$(dirname \"$p\")\n[ -f \"$p\" ] || {{ [ -d \"$d\" ] && : > \"$p\"; }} || exit 1\n\
             target=$(mktemp \"$d/.hactl.XXXXXX\") || exit 1\ntrap 'rm -f \"$target\"' EXIT\n\
             {} \"$p\" > \"$target\" || exit 1\n\
             chown --reference=\"$p\" \"$target\" && chmod --reference=\"$p\" \"$target\" || exit 1\n\
             if cmp -s \"$target\" \"$p\"; then rm -f \"$target\"; else mv -f \"$target\" \"$p\" || exit 1; fi\ntrap - EXIT\n",
            q(&self.path),
            self.run_awk("")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::run_local;

    fn lif(path: &str, line: &str, re: Option<&str>, state: Presence) -> LineInFile {
        LineInFile {
            path: path.into(),
            line: line.into(),
            regexp: re.map(String::from),
            state,
            create: false,
        }
    }

    #[test]
    fn replaces_last_match_appends_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c").display().to_string();
        std::fs::write(&p, "a=1\n#x\nmax=1\nmax=2\n").unwrap();
        let m = lif(&p, "max=9 'q' $HOME", Some("^max="), Presence::Present);
        let ch = m.diff(&run_local(&m.probe())).unwrap().unwrap();
        assert!(ch.diff.unwrap().contains("+max=9 'q' $HOME"));
        assert_eq!(run_local(&m.apply()).rc, 0);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "a=1\n#x\nmax=1\nmax=9 'q' $HOME\n"
        );
        assert_eq!(m.diff(&run_local(&m.probe())).unwrap(), None);

        let add = lif(&p, "new=1", None, Presence::Present);
        run_local(&add.apply());
        assert!(std::fs::read_to_string(&p).unwrap().ends_with("new=1\n"));
        assert_eq!(add.diff(&run_local(&add.probe())).unwrap(), None);

        let rm = lif(&p, "", Some("^max="), Presence::Absent);
        run_local(&rm.apply());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a=1\n#x\nnew=1\n");
    }

    #[test]
    fn missing_file_without_create_is_an_error() {
        let m = lif("/nonexistent-hactl/f", "x", None, Presence::Present);
        assert!(m.diff(&run_local(&m.probe())).is_err());
    }
}

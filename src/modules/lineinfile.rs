//! `lineinfile`: one line present (optionally replacing the last line matching a regexp) or absent.

use miette::Result;
use serde::{Deserialize, Serialize};

use super::awk_edit::{AwkEdit, EditFact};
use super::{Change, Presence, Resource};

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

impl Resource for LineInFile {
    type Fact = EditFact;

    fn probe(&self) -> String {
        self.edit().probe()
    }
    fn diff(&self, fact: &EditFact) -> Result<Option<Change>> {
        self.edit().diff(fact)
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
        let prelude = "line = ENVIRON[\"HACTL_LINE\"]; re = ENVIRON[\"HACTL_RE\"]";
        AwkEdit {
            path: self.path.clone(),
            program: format!("BEGIN {{ {prelude} }}\n{program}"),
            env: vec![
                ("HACTL_LINE", self.line.clone()),
                ("HACTL_RE", self.regexp.clone().unwrap_or_default()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::{local_apply, local_diff};

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
        let ch = local_diff(&m).unwrap().unwrap();
        assert!(ch.diff.unwrap().contains("+max=9 'q' $HOME"));
        assert_eq!(local_apply(&m).rc, 0);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "a=1\n#x\nmax=1\nmax=9 'q' $HOME\n"
        );
        assert_eq!(local_diff(&m).unwrap(), None);

        let add = lif(&p, "new=1", None, Presence::Present);
        local_apply(&add);
        assert!(std::fs::read_to_string(&p).unwrap().ends_with("new=1\n"));
        assert_eq!(local_diff(&add).unwrap(), None);

        let rm = lif(&p, "", Some("^max="), Presence::Absent);
        local_apply(&rm);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a=1\n#x\nnew=1\n");
    }

    #[test]
    fn missing_file_without_create_is_an_error() {
        let m = lif("/nonexistent-hactl/f", "x", None, Presence::Present);
        assert!(local_diff(&m).is_err());
    }
}

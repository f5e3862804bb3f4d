//! The Debian releases the lab boots: their names, numbers and the default.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The release `hactl lab up` boots when a new lab is made without `--release`: the one place
/// that decides it (`--release`'s help in cli.rs and docs/cli.md name it too).
pub const DEFAULT_RELEASE: Release = Release::Trixie;

/// A Debian release the lab can boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Release {
    /// Debian 12.
    Bookworm,
    /// Debian 13.
    Trixie,
}

impl Release {
    /// The codename debootstrap and apt know it by.
    pub fn codename(self) -> &'static str {
        match self {
            Release::Bookworm => "bookworm",
            Release::Trixie => "trixie",
        }
    }

    /// Its major version number, as `/etc/debian_version` starts.
    pub fn number(self) -> u32 {
        match self {
            Release::Bookworm => 12,
            Release::Trixie => 13,
        }
    }

    /// The release of a state file written before labs recorded one: they all booted Debian 12.
    pub fn before_releases() -> Release {
        Release::Bookworm
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (Debian {})", self.codename(), self.number())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn releases_parse_from_their_codenames() {
        assert_eq!(Release::from_str("trixie", false), Ok(Release::Trixie));
        assert_eq!(Release::from_str("bookworm", false), Ok(Release::Bookworm));
        assert!(Release::from_str("sid", false).is_err());
        assert_eq!(Release::Trixie.to_string(), "trixie (Debian 13)");
    }

    #[test]
    fn the_state_records_the_codename() {
        assert_eq!(serde_json::to_string(&Release::Trixie).unwrap(), "\"trixie\"");
        let back: Release = serde_json::from_str("\"bookworm\"").unwrap();
        assert_eq!(back, Release::Bookworm);
    }
}

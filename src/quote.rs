//! Quoting: values as POSIX shell words (module scripts, the templates' `quote` filter, the
//! forms of a secret the redactor masks) and as parts of a URL (the templates' `urlencode`
//! filter, ditto).

/// Characters a URL's user-info or query keeps as they are (the rest is percent-encoded).
const URL_KEEPS: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A value as one POSIX shell word (shlex's quoting), or why it cannot be one (a NUL byte).
pub fn try_q(s: &str) -> std::result::Result<String, String> {
    shlex::try_quote(s).map(|w| w.into_owned()).map_err(|e| e.to_string())
}

/// A value as one POSIX shell word, for module scripts. A NUL byte cannot be passed through a
/// shell at all: it is dropped (a path or name never has one).
pub fn q(s: &str) -> String {
    try_q(s).unwrap_or_else(|_| try_q(&s.replace('\0', "")).expect("no NUL left"))
}

/// A value for one part of a URL (user, password, path segment): everything but letters,
/// digits and `-._~` percent-encoded.
pub fn url_part(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, URL_KEEPS).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `sh` prints for `script`.
    fn sh(script: &str) -> String {
        let out = std::process::Command::new("sh").arg("-c").arg(script).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn quoted_values_come_back_whole_from_a_real_shell() {
        for value in [
            "plain",
            "",
            "it's",
            "a b",
            "$HOME `id` \\ \"x\" ; & | * ?",
            "line\nbreak",
            "-dash",
        ] {
            assert_eq!(sh(&format!("printf '%s' {}", q(value))), value, "{}", q(value));
        }
        assert_eq!(q("a\0b"), "ab");
    }
}

//! Generated secrets (passwords, cookies, keys) and their redaction.
//!
//! A playbook declares the secrets it needs; values not given in the inventory are generated on the
//! first run into a 0600 file beside the inventory. Every value is a [`Secret`], which never prints,
//! and every line hactl prints passes through a [`Redactor`] that masks the values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use miette::{miette, Result};
use serde::Deserialize;

/// A secret value: shown as `********` by Debug and Display.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value itself, for rendering templates only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(********)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("********")
    }
}

/// How a playbook wants a secret generated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    /// Number of characters.
    #[serde(default = "default_length")]
    pub length: usize,
    /// Characters to draw from.
    #[serde(default)]
    pub charset: Charset,
}

fn default_length() -> usize {
    32
}

/// Alphabets for generated secrets.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Charset {
    /// Letters and digits.
    #[default]
    Alnum,
    /// Lower-case letters and digits.
    LowerAlnum,
    /// Lower-case hex digits.
    Hex,
    /// URL-safe base64 of random bytes (e.g. an Airflow fernet key: length 32 bytes → 44 chars).
    FernetKey,
}

/// The secrets of one run: loaded, generated where missing, and saved.
#[derive(Debug, Default)]
pub struct Secrets {
    /// Name → value.
    pub values: BTreeMap<String, Secret>,
}

/// Where the secrets of an inventory are kept.
pub fn secrets_path(inventory: &Path) -> PathBuf {
    let stem = inventory.file_stem().and_then(|s| s.to_str()).unwrap_or("inventory");
    inventory.with_file_name(format!("{stem}.secrets.yml"))
}

/// What a run does about declared secrets that neither the secrets file nor the inventory has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Generate them and save the file (provision).
    Generate,
    /// Generate them for this run only, writing nothing (plan: they would be generated).
    Preview,
    /// Refuse: the run checks what exists (verify), and values it invented would only make its
    /// gates fail misleadingly.
    Refuse,
}

impl Secrets {
    /// Loads the secrets file and deals with the declared secrets that neither it nor `given`
    /// (names the inventory sets itself) has, as `missing` says; a generated file is written
    /// 0600 from its first byte.
    pub fn load_or_generate(
        path: &Path,
        wanted: &BTreeMap<String, SecretSpec>,
        given: &dyn Fn(&str) -> bool,
        missing: Missing,
    ) -> Result<Self> {
        let mut stored: BTreeMap<String, String> = match std::fs::read_to_string(path) {
            // No snippet: the lines around an error would show secret values.
            Ok(text) => serde_saphyr::from_str::<Option<BTreeMap<String, String>>>(&text)
                .map_err(|e| {
                    let at = e.location().map(|l| format!(":{}:{}", l.line(), l.column())).unwrap_or_default();
                    miette!(
                        "{}{at}: not a secrets file (a map of names to strings); fix or remove it (its values are not shown)",
                        path.display()
                    )
                })?
                .unwrap_or_default(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(miette!("cannot read secrets {}: {e}", path.display())),
        };
        let absent: Vec<&String> = wanted
            .keys()
            .filter(|n| !given(n) && !stored.contains_key(*n))
            .collect();
        if missing == Missing::Refuse && !absent.is_empty() {
            let names: Vec<&str> = absent.iter().map(|n| n.as_str()).collect();
            return Err(miette!(
                "{} lacks {}: provision makes them (verify checks a provisioned cluster)",
                path.display(),
                names.join(", ")
            ));
        }
        for name in &absent {
            stored.insert((*name).clone(), generate(&wanted[*name])?);
        }
        if !absent.is_empty() && missing == Missing::Generate {
            save(path, &stored)?;
        }
        Ok(Secrets {
            values: stored.into_iter().map(|(k, v)| (k, Secret(v))).collect(),
        })
    }
}

/// Writes the secrets file: 0600 from its first byte (a unique temporary file, renamed).
fn save(path: &Path, values: &BTreeMap<String, String>) -> Result<()> {
    let yaml = serde_saphyr::to_string(values).map_err(|e| miette!("cannot serialise secrets: {e}"))?;
    let text = format!("# Generated by hactl: keep private (mode 0600).\n{yaml}");
    crate::fsutil::write_atomic(path, text.as_bytes(), 0o600)
}

fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| miette!("no random bytes from the system: {e}"))?;
    Ok(buf)
}

/// Generates a secret by the spec (rejection sampling: no modulo bias).
pub fn generate(spec: &SecretSpec) -> Result<String> {
    use base64::Engine;
    let alphabet: &[u8] = match spec.charset {
        Charset::Alnum => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        Charset::LowerAlnum => b"abcdefghijklmnopqrstuvwxyz0123456789",
        Charset::Hex => b"0123456789abcdef",
        Charset::FernetKey => {
            return Ok(base64::engine::general_purpose::URL_SAFE.encode(random_bytes(spec.length)?));
        }
    };
    let limit = 256 - (256 % alphabet.len());
    let mut out = String::with_capacity(spec.length);
    while out.len() < spec.length {
        for b in random_bytes(spec.length * 2)? {
            if (b as usize) < limit && out.len() < spec.length {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    Ok(out)
}

/// Whether a variable's name says it holds a secret (password, secret, token, cookie, fernet or
/// JWT key): its value is redacted wherever it is set.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_NAME_WORDS.iter().any(|w| name.contains(w))
}

/// Words that make a variable's name a secret's (see [`is_secret_name`]).
pub const SECRET_NAME_WORDS: [&str; 7] = ["password", "passwd", "secret", "token", "cookie", "fernet", "jwt"];

/// Masks secret values in text that is about to be printed.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    values: Vec<String>,
}

/// What a secret value is replaced with.
pub const MASK: &str = "********";

/// The forms a secret can take in what templates render: itself, base64 (standard and URL-safe,
/// padded or not), its sha256 and sha512 hex digests, URL-encoded (in a URL that embeds it),
/// shell-quoted and JSON-escaped, and as an INI value (`%` doubled), plain or URL-encoded.
pub fn derived_forms(value: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine;
    use sha2::Digest;
    let bytes = value.as_bytes();
    let json = serde_json::to_string(value).expect("a string serialises");
    let url = crate::quote::url_part(value);
    vec![
        value.replace('%', "%%"),
        url.replace('%', "%%"),
        value.to_string(),
        STANDARD.encode(bytes),
        STANDARD_NO_PAD.encode(bytes),
        URL_SAFE.encode(bytes),
        URL_SAFE_NO_PAD.encode(bytes),
        hex::encode(sha2::Sha256::digest(bytes)),
        hex::encode(sha2::Sha512::digest(bytes)),
        url,
        crate::quote::q(value),
        json[1..json.len() - 1].to_string(),
    ]
}

impl Redactor {
    /// A redactor for these values and every form derived from them (very short values are
    /// ignored: they would mask ordinary text).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut values: Vec<String> = values
            .into_iter()
            .filter(|v| v.len() >= 6)
            .flat_map(derived_forms)
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Redactor { values }
    }

    /// The text with every secret value masked.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_secrets_persist_0600_and_respect_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inv.secrets.yml");
        let mut wanted = BTreeMap::new();
        wanted.insert(
            "a".to_string(),
            SecretSpec {
                length: 40,
                charset: Charset::Alnum,
            },
        );
        wanted.insert(
            "b".to_string(),
            SecretSpec {
                length: 8,
                charset: Charset::Hex,
            },
        );
        let first = Secrets::load_or_generate(&path, &wanted, &|n| n == "b", Missing::Generate).unwrap();
        assert_eq!(first.values["a"].expose().len(), 40);
        assert!(!first.values.contains_key("b"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = Secrets::load_or_generate(&path, &wanted, &|n| n == "b", Missing::Generate).unwrap();
        assert_eq!(first.values["a"], again.values["a"]);
        assert_eq!(
            format!("{:?} {}", again.values["a"], again.values["a"]),
            "Secret(********) ********"
        );
    }

    #[test]
    fn dry_run_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yml");
        let wanted = BTreeMap::from([(
            "x".to_string(),
            SecretSpec {
                length: 10,
                charset: Charset::Alnum,
            },
        )]);
        Secrets::load_or_generate(&path, &wanted, &|_| false, Missing::Preview).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn verify_refuses_missing_secrets_and_errors_never_show_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yml");
        let wanted = BTreeMap::from([(
            "db_password".to_string(),
            SecretSpec {
                length: 10,
                charset: Charset::Alnum,
            },
        )]);
        let err = Secrets::load_or_generate(&path, &wanted, &|_| false, Missing::Refuse)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lacks db_password") && err.contains("provision"), "{err}");
        assert!(!path.exists());
        std::fs::write(&path, "db_password: \"hunter2-secret\n other: [x\n").unwrap();
        let err = format!(
            "{:?}",
            Secrets::load_or_generate(&path, &wanted, &|_| false, Missing::Generate).unwrap_err()
        );
        assert!(err.contains("s.yml:") && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn redactor_masks_values() {
        let r = Redactor::new(["s3cr3t-value", "abc"]);
        assert_eq!(r.redact("pw=s3cr3t-value abc"), "pw=******** abc");
    }

    #[test]
    fn redactor_masks_what_templates_derive_from_a_secret() {
        use base64::Engine;
        use sha2::Digest;
        let secret = "p'w \"$x\\ ;`y`/+?";
        let r = Redactor::new([secret]);
        let forms = [
            base64::engine::general_purpose::STANDARD.encode(secret),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
            hex::encode(sha2::Sha256::digest(secret)),
            crate::quote::url_part(secret),
            crate::quote::q(secret),
            serde_json::to_string(secret).unwrap(),
        ];
        for form in forms {
            let line = format!("url=amqp://airflow:{form}@node1:5672/ done");
            let redacted = r.redact(&line);
            assert!(!redacted.contains(&form), "{form} survives in {redacted}");
            assert!(
                redacted.starts_with("url=amqp://airflow:") && redacted.ends_with("@node1:5672/ done"),
                "{redacted}"
            );
        }
    }

    #[test]
    fn fernet_key_is_urlsafe_base64_of_32_bytes() {
        let key = generate(&SecretSpec {
            length: 32,
            charset: Charset::FernetKey,
        })
        .unwrap();
        assert_eq!(key.len(), 44);
        assert!(key.ends_with('='));
    }
}

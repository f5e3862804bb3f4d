//! An age-encrypted secrets file (`INVENTORY.secrets.yml.age`, ASCII-armored), to commit: opened
//! with the identity file named by `HACTL_AGE_IDENTITY`, or the passphrase in
//! `HACTL_SECRETS_PASSPHRASE`, and written back sealed the same way (to the identity file's
//! public keys, or the passphrase).

use std::io::{Read, Write};
use std::path::PathBuf;

use age::secrecy::SecretString;
use miette::{miette, Result};

/// The environment variable naming an age identity file.
pub const IDENTITY_ENV: &str = "HACTL_AGE_IDENTITY";
/// The environment variable holding a passphrase.
pub const PASSPHRASE_ENV: &str = "HACTL_SECRETS_PASSPHRASE";

/// What opens and seals an encrypted secrets file.
pub enum Key {
    /// An age identity file (its public keys are the recipients).
    Identity(PathBuf),
    /// A passphrase (scrypt).
    Passphrase(SecretString),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Identity(path) => write!(f, "Key::Identity({})", path.display()),
            Key::Passphrase(_) => f.write_str("Key::Passphrase(********)"),
        }
    }
}

impl Key {
    /// The key the environment gives: `HACTL_AGE_IDENTITY` first, then
    /// `HACTL_SECRETS_PASSPHRASE` (an empty one is none).
    pub fn from_env() -> Option<Key> {
        if let Some(path) = std::env::var_os(IDENTITY_ENV).filter(|p| !p.is_empty()) {
            return Some(Key::Identity(PathBuf::from(path)));
        }
        std::env::var(PASSPHRASE_ENV)
            .ok()
            .filter(|p| !p.is_empty())
            .map(|p| Key::Passphrase(SecretString::from(p)))
    }

    /// The identity file's entries.
    fn identity_file(path: &std::path::Path) -> Result<age::IdentityFile<age::NoCallbacks>> {
        age::IdentityFile::from_file(path.display().to_string()).map_err(|e| {
            miette!(
                "{IDENTITY_ENV}={}: cannot read the age identity file: {e}",
                path.display()
            )
        })
    }

    /// `text` sealed (ASCII-armored age).
    pub fn encrypt(&self, text: &str) -> Result<Vec<u8>> {
        let fail = |e: &dyn std::fmt::Display| miette!("cannot encrypt the secrets: {e}");
        let encryptor = match self {
            Key::Passphrase(p) => age::Encryptor::with_user_passphrase(p.clone()),
            Key::Identity(path) => {
                let recipients = Self::identity_file(path)?.to_recipients().map_err(|e| fail(&e))?;
                age::Encryptor::with_recipients(recipients.iter().map(|r| r.as_ref() as &dyn age::Recipient))
                    .map_err(|e| fail(&e))?
            }
        };
        let mut out = Vec::new();
        let armored =
            age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor).map_err(|e| fail(&e))?;
        let mut writer = encryptor.wrap_output(armored).map_err(|e| fail(&e))?;
        writer.write_all(text.as_bytes()).map_err(|e| fail(&e))?;
        writer.finish().and_then(|armor| armor.finish()).map_err(|e| fail(&e))?;
        Ok(out)
    }

    /// The plaintext of a sealed file (armored or binary); `origin` names it in errors.
    pub fn decrypt(&self, bytes: &[u8], origin: &str) -> Result<String> {
        let fail = |e: &dyn std::fmt::Display| miette!("{origin}: cannot decrypt: {e}");
        let decryptor = age::Decryptor::new_buffered(age::armor::ArmoredReader::new(bytes)).map_err(|e| fail(&e))?;
        let mut reader = match self {
            Key::Passphrase(p) => {
                let identity = age::scrypt::Identity::new(p.clone());
                decryptor
                    .decrypt(std::iter::once(&identity as &dyn age::Identity))
                    .map_err(|e| fail(&e))?
            }
            Key::Identity(path) => {
                let identities = Self::identity_file(path)?.into_identities().map_err(|e| fail(&e))?;
                decryptor
                    .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
                    .map_err(|e| fail(&e))?
            }
        };
        let mut text = String::new();
        reader.read_to_string(&mut text).map_err(|e| fail(&e))?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passphrase_round_trip_and_a_wrong_passphrase_fails() {
        let key = Key::Passphrase(SecretString::from("correct horse".to_string()));
        let sealed = key.encrypt("a_password: v4lue\n").unwrap();
        let text = String::from_utf8(sealed.clone()).unwrap();
        assert!(text.starts_with("-----BEGIN AGE ENCRYPTED FILE-----") && !text.contains("v4lue"));
        assert_eq!(key.decrypt(&sealed, "s.age").unwrap(), "a_password: v4lue\n");
        let wrong = Key::Passphrase(SecretString::from("wrong".to_string()));
        let err = wrong.decrypt(&sealed, "s.age").unwrap_err().to_string();
        assert!(err.starts_with("s.age: cannot decrypt"), "{err}");
        assert!(format!("{key:?}").contains("********") && !format!("{key:?}").contains("horse"));
    }

    #[test]
    fn an_identity_file_round_trip_seals_to_its_public_key() {
        use age::secrecy::ExposeSecret;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.txt");
        let identity = age::pq::Identity::generate();
        std::fs::write(
            &path,
            format!("# a comment\n{}\n", identity.to_string().expose_secret()),
        )
        .unwrap();
        let key = Key::Identity(path);
        let sealed = key.encrypt("b_key: s3cret\n").unwrap();
        assert_eq!(key.decrypt(&sealed, "s.age").unwrap(), "b_key: s3cret\n");
        let other = dir.path().join("other.txt");
        let stranger = age::pq::Identity::generate();
        std::fs::write(&other, stranger.to_string().expose_secret()).unwrap();
        assert!(Key::Identity(other).decrypt(&sealed, "s.age").is_err());
    }
}

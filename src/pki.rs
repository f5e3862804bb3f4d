//! The cluster's certificate authority, made by hactl on the machine that runs it: a CA and one
//! certificate per host for that host's names, kept beside the inventory's secrets
//! (`INVENTORY.pki/`, private keys 0600, never printed). A host certificate is made again when
//! its names change or it ends within [`RENEW_DAYS`]; an inventory may give a host its own
//! certificate and key instead (`tls_cert_file`, `tls_key_file`), checked to match.
//!
//! A host may also get role certificates (`ROLE-HOST.crt`, `ROLE-HOST.key`) for the same names,
//! always from the cluster CA: server authentication only, so that a service running as a less
//! trusted user (the api-servers, as airflow) holds a key that no client-authenticating service
//! (etcd, PostgreSQL) admits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use miette::{miette, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::secrets::{Missing, PendingWrite, Secret};

/// A host certificate is made again when it ends within this many days.
pub const RENEW_DAYS: i64 = 30;
/// How long a host certificate is valid.
const HOST_DAYS: i64 = 398;
/// How long the CA is valid.
const CA_DAYS: i64 = 3650;

/// A host's certificate (PEM) and its private key.
#[derive(Debug, Clone)]
pub struct HostCert {
    /// The certificate, PEM.
    pub cert: String,
    /// Its private key, PEM (PKCS#8).
    pub key: Secret,
}

/// The CA's certificate and every host's certificate.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate (PEM) that every node trusts.
    pub ca_cert: String,
    /// Each host's certificate, by inventory name.
    pub hosts: BTreeMap<String, HostCert>,
    /// Each host's role certificates (server authentication only), by inventory name, then role.
    pub roles: BTreeMap<String, BTreeMap<String, HostCert>>,
    /// Whether the CA was made by this run (there was none).
    pub ca_new: bool,
    /// The files made by this run, written by [`Pki::commit`] once the run's pre-flight passed.
    pub pending: Vec<PendingWrite>,
    dir: PathBuf,
}

impl Pki {
    /// Writes the files this run made (the directory made 0700 first).
    pub fn commit(&self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        if self.pending.is_empty() {
            return Ok(());
        }
        if !self.dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| miette!("cannot make {}: {e}", self.dir.display()))?;
        }
        self.pending.iter().try_for_each(PendingWrite::commit)
    }
}

/// What a host's certificate must name, and the files the inventory gives instead, if any.
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    /// DNS names and IP addresses.
    pub names: Vec<String>,
    /// The inventory's own certificate and key files for this host.
    pub given: Option<(PathBuf, PathBuf)>,
    /// The roles this host gets a certificate of its own for (letters, digits, underscores).
    pub roles: Vec<String>,
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Usage {
    /// A host's: server and client authentication.
    Host,
    /// A role's: server authentication only.
    Role,
}

/// Loads the CA and the host certificates from `dir`, making what is missing, stale or naming
/// other names: to be written (keys 0600, by [`Pki::commit`]) with `Missing::Generate`, made for
/// this run only otherwise. Half a CA (a certificate without its key, or a key alone) is a
/// refusal, never a new CA.
pub fn ensure(dir: &Path, wanted: &BTreeMap<String, Wanted>, missing: Missing) -> Result<Pki> {
    let write = missing == Missing::Generate;
    let mut pending = Vec::new();
    let (ca_cert, ca_key, ca_new) = ca(dir)?;
    if ca_new {
        pending.push(PendingWrite::new(
            dir.join("ca.key"),
            ca_key.serialize_pem().into_bytes(),
            0o600,
        ));
        pending.push(PendingWrite::new(
            dir.join("ca.crt"),
            ca_cert.clone().into_bytes(),
            0o644,
        ));
    }
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, &ca_key)
        .map_err(|e| miette!("{}: the CA certificate cannot sign: {e}", dir.join("ca.crt").display()))?;
    let signer = Signer {
        dir,
        issuer: &issuer,
        ca_new,
    };
    let mut hosts = BTreeMap::new();
    let mut roles = BTreeMap::new();
    for (host, want) in wanted {
        let cert = match &want.given {
            Some((cert, key)) => given(cert, key)?,
            None => signer.issue(&format!("host-{host}"), host, &want.names, Usage::Host, &mut pending)?,
        };
        hosts.insert(host.clone(), cert);
        let mut mine = BTreeMap::new();
        for role in &want.roles {
            let stem = format!("{role}-{host}");
            let cert = signer.issue(&stem, host, &want.names, Usage::Role, &mut pending)?;
            mine.insert(role.clone(), cert);
        }
        roles.insert(host.clone(), mine);
    }
    if !write {
        pending.clear();
    }
    Ok(Pki {
        ca_cert,
        hosts,
        roles,
        ca_new,
        pending,
        dir: dir.to_path_buf(),
    })
}

/// The CA's certificate and key, made when both are absent; whether it was made now. One
/// without the other is a refusal: the nodes trust the CA, and a new one would not be theirs.
fn ca(dir: &Path) -> Result<(String, KeyPair, bool)> {
    let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    if cert_path.exists() && key_path.exists() {
        let (_, key) = read_key(&key_path)?;
        return Ok((read(&cert_path)?, key, false));
    }
    if cert_path.exists() || key_path.exists() {
        let (have, lacks) = match cert_path.exists() {
            true => (&cert_path, &key_path),
            false => (&key_path, &cert_path),
        };
        return Err(miette!(
            "{} exists but {} is missing: hactl never makes a new CA over one the nodes may trust; restore it from a backup (nothing changed)",
            have.display(),
            lacks.display()
        ));
    }
    let key = KeyPair::generate().map_err(|e| miette!("cannot make the CA's key: {e}"))?;
    let mut params = params("hactl cluster CA", CA_DAYS);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params
        .self_signed(&key)
        .map_err(|e| miette!("cannot make the CA certificate: {e}"))?
        .pem();
    Ok((cert, key, true))
}

/// Where certificates are kept and who signs them: the CA, and whether it was made in this run
/// (every certificate is then made again).
struct Signer<'a> {
    dir: &'a Path,
    issuer: &'a Issuer<'a, &'a KeyPair>,
    ca_new: bool,
}

impl Signer<'_> {
    /// A certificate for `host` from the directory (`STEM.crt`, `STEM.key`), or a new one when
    /// absent, made by another CA, naming other names or ending soon; a new one's files are
    /// added to `pending`.
    fn issue(
        &self,
        stem: &str,
        host: &str,
        names: &[String],
        usage: Usage,
        pending: &mut Vec<PendingWrite>,
    ) -> Result<HostCert> {
        let (dir, issuer) = (self.dir, self.issuer);
        let (cert_path, key_path) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
        if !self.ca_new && cert_path.exists() && key_path.exists() {
            let cert = read(&cert_path)?;
            if current(&cert, names)? {
                return Ok(HostCert {
                    cert,
                    key: Secret::from(read(&key_path)?),
                });
            }
        }
        let key = KeyPair::generate().map_err(|e| miette!("cannot make a key for {stem}: {e}"))?;
        let mut params = params(host, HOST_DAYS);
        params.subject_alt_names = names.iter().map(|n| san(n)).collect::<Result<_>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match usage {
            Usage::Host => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Role => vec![ExtendedKeyUsagePurpose::ServerAuth],
        };
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, issuer)
            .map_err(|e| miette!("cannot sign {stem}'s certificate: {e}"))?
            .pem();
        let key = key.serialize_pem();
        pending.push(PendingWrite::new(key_path, key.clone().into_bytes(), 0o600));
        pending.push(PendingWrite::new(cert_path, cert.clone().into_bytes(), 0o644));
        Ok(HostCert {
            cert,
            key: Secret::from(key),
        })
    }
}

/// A certificate's parameters for this subject, valid from an hour ago (clock skew) for `days`.
fn params(common_name: &str, days: i64) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
    params
}

/// A subject alternative name: an IP address or a DNS name.
fn san(name: &str) -> Result<SanType> {
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => {
            Ok(SanType::DnsName(name.to_string().try_into().map_err(|e| {
                miette!("`{name}` cannot be a certificate's DNS name: {e}")
            })?))
        }
    }
}

/// Whether a certificate names exactly `names` and ends after [`RENEW_DAYS`] from now.
fn current(pem: &str, names: &[String]) -> Result<bool> {
    with_certificate(pem, "a host certificate", |cert| still_current(cert, names))
}

/// Whether a parsed certificate names exactly `names` and ends after [`RENEW_DAYS`] from now.
fn still_current(cert: &x509_parser::certificate::X509Certificate<'_>, names: &[String]) -> bool {
    let renew_at = time::OffsetDateTime::now_utc() + time::Duration::days(RENEW_DAYS);
    if cert.validity().not_after.timestamp() < renew_at.unix_timestamp() {
        return false;
    }
    let mut have: Vec<String> = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => have.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    if let Ok(octets) = <[u8; 4]>::try_from(*bytes) {
                        have.push(std::net::Ipv4Addr::from(octets).to_string());
                    } else if let Ok(octets) = <[u8; 16]>::try_from(*bytes) {
                        have.push(std::net::Ipv6Addr::from(octets).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    let mut want = names.to_vec();
    want.sort();
    have.sort();
    want == have
}

/// An inventory's own certificate and key for a host, refused unless the key is the
/// certificate's.
fn given(cert_path: &Path, key_path: &Path) -> Result<HostCert> {
    let cert = read(cert_path)?;
    let (key, pair) = read_key(key_path)?;
    let origin = cert_path.display().to_string();
    let matches = with_certificate(&cert, &origin, |x509| {
        x509.public_key().subject_public_key.data.as_ref() == pair.public_key_raw()
    })?;
    if !matches {
        return Err(miette!(
            "{} does not match its key {}: the certificate was made for another key",
            cert_path.display(),
            key_path.display()
        ));
    }
    Ok(HostCert {
        cert,
        key: Secret::from(key),
    })
}

/// `f` of a PEM certificate, parsed (the parsed form borrows the PEM's bytes); `origin` names
/// it in errors.
fn with_certificate<T>(
    pem: &str,
    origin: &str,
    f: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> T,
) -> Result<T> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| miette!("{origin}: not a PEM certificate: {e}"))?;
    let cert = parsed
        .parse_x509()
        .map_err(|e| miette!("{origin}: not an X.509 certificate: {e}"))?;
    Ok(f(&cert))
}

/// A private key file: its text and the key (PKCS#8 PEM).
fn read_key(path: &Path) -> Result<(String, KeyPair)> {
    let text = read(path)?;
    let key = KeyPair::from_pem(&text).map_err(|e| {
        miette!(
            "{}: not a PKCS#8 PEM private key (openssl pkcs8 -topk8 -nocrypt converts one): {e}",
            path.display()
        )
    })?;
    Ok((text, key))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| miette!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(names: &[&str]) -> BTreeMap<String, Wanted> {
        BTreeMap::from([(
            "node1".to_string(),
            Wanted {
                names: names.iter().map(|n| n.to_string()).collect(),
                given: None,
                roles: Vec::new(),
            },
        )])
    }

    /// Whether a certificate allows (server, client) authentication.
    fn usages(pem: &str) -> (bool, bool) {
        with_certificate(pem, "test", |cert| {
            let eku = cert.extended_key_usage().unwrap().unwrap().value;
            (eku.server_auth, eku.client_auth)
        })
        .unwrap()
    }

    #[test]
    fn a_role_gets_its_own_key_for_server_authentication_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("inv.pki");
        let mut want = wanted(&["node1", "10.0.0.1"]);
        want.get_mut("node1").unwrap().roles = vec!["api".into()];
        let pki = ensure(&pki_dir, &want, Missing::Generate).unwrap();
        pki.commit().unwrap();
        let api = &pki.roles["node1"]["api"];
        assert_ne!(api.key.expose(), pki.hosts["node1"].key.expose());
        assert_eq!(usages(&api.cert), (true, false), "server authentication only");
        assert_eq!(usages(&pki.hosts["node1"].cert), (true, true));
        assert!(current(&api.cert, &["10.0.0.1".into(), "node1".into()]).unwrap());
        let mode = std::fs::metadata(pki_dir.join("api-node1.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let again = ensure(&pki_dir, &want, Missing::Generate).unwrap();
        assert_eq!(again.roles["node1"]["api"].cert, api.cert, "kept while current");
    }

    /// `ensure` with `Missing::Generate`, its files written.
    fn generate(dir: &Path, names: &[&str]) -> Pki {
        let pki = ensure(dir, &wanted(names), Missing::Generate).unwrap();
        pki.commit().unwrap();
        pki
    }

    #[test]
    fn half_a_ca_is_a_refusal_never_a_new_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("inv.pki");
        let first = generate(&pki_dir, &["node1"]);
        assert!(first.ca_new);
        assert!(!generate(&pki_dir, &["node1"]).ca_new);
        std::fs::remove_file(pki_dir.join("ca.key")).unwrap();
        let err = ensure(&pki_dir, &wanted(&["node1"]), Missing::Generate)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ca.key is missing") && err.contains("nothing changed"),
            "{err}"
        );
        assert_eq!(read(&pki_dir.join("ca.crt")).unwrap(), first.ca_cert);
    }

    #[test]
    fn nothing_is_written_before_commit() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("inv.pki");
        let pki = ensure(&pki_dir, &wanted(&["node1"]), Missing::Generate).unwrap();
        assert!(!pki_dir.exists());
        assert_eq!(pki.pending.len(), 4);
        pki.commit().unwrap();
        assert!(pki_dir.join("host-node1.key").exists());
    }

    #[test]
    fn made_once_kept_then_remade_when_names_change() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("inv.pki");
        let first = generate(&pki_dir, &["node1", "10.0.0.1"]);
        for key in ["ca.key", "host-node1.key"] {
            let mode = std::fs::metadata(pki_dir.join(key)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{key}");
        }
        let again = generate(&pki_dir, &["10.0.0.1", "node1"]);
        assert_eq!(first.hosts["node1"].cert, again.hosts["node1"].cert);
        assert_eq!(first.ca_cert, again.ca_cert);
        let renamed = generate(&pki_dir, &["node1", "10.0.0.1", "vip"]);
        assert_ne!(first.hosts["node1"].cert, renamed.hosts["node1"].cert);
        assert!(current(
            &renamed.hosts["node1"].cert,
            &["vip".into(), "node1".into(), "10.0.0.1".into()]
        )
        .unwrap());
    }

    #[test]
    fn a_certificate_ending_within_the_renewal_window_is_made_again_by_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("inv.pki");
        let first = generate(&pki_dir, &["node1"]);
        // node1's certificate as a run would find it 369 days later: one day inside the window.
        let (ca_cert, ca_key, _) = ca(&pki_dir).unwrap();
        let issuer = Issuer::from_ca_cert_pem(&ca_cert, &ca_key).unwrap();
        let (_, key) = read_key(&pki_dir.join("host-node1.key")).unwrap();
        let mut ending = params("node1", RENEW_DAYS - 1);
        ending.subject_alt_names = vec![san("node1").unwrap()];
        let ending = ending.signed_by(&key, &issuer).unwrap().pem();
        std::fs::write(pki_dir.join("host-node1.crt"), &ending).unwrap();
        assert!(!current(&ending, &["node1".into()]).unwrap());
        let renewed = generate(&pki_dir, &["node1"]);
        assert_ne!(renewed.hosts["node1"].cert, ending);
        assert!(current(&renewed.hosts["node1"].cert, &["node1".into()]).unwrap());
        assert_eq!(renewed.ca_cert, first.ca_cert, "the same CA signs it");
        assert_eq!(
            read(&pki_dir.join("host-node1.crt")).unwrap(),
            renewed.hosts["node1"].cert
        );
    }

    #[test]
    fn preview_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("inv.pki");
        ensure(&pki_dir, &wanted(&["node1"]), Missing::Preview).unwrap();
        assert!(!pki_dir.exists());
    }

    #[test]
    fn a_given_certificate_must_match_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("inv.pki");
        generate(&pki_dir, &["node1"]);
        let other = KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("other.key"), other.serialize_pem()).unwrap();
        let err = given(&pki_dir.join("host-node1.crt"), &dir.path().join("other.key")).unwrap_err();
        assert!(err.to_string().contains("does not match its key"), "{err}");
        assert!(given(&pki_dir.join("host-node1.crt"), &pki_dir.join("host-node1.key")).is_ok());
    }
}

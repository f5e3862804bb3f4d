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
    /// The CA certificates (PEM) every node trusts: the cluster CA, or during a CA rotation the
    /// trust bundle (old and new CA) or, at its last step, the new CA alone.
    pub ca_cert: String,
    /// The CA files a node may hold before this run (besides `ca_cert`): an earlier step of a
    /// CA rotation that this run finishes there.
    pub ca_accepted: Vec<String>,
    /// Each host's certificate, by inventory name.
    pub hosts: BTreeMap<String, HostCert>,
    /// Each host's role certificates (server authentication only), by inventory name, then role.
    pub roles: BTreeMap<String, BTreeMap<String, HostCert>>,
    /// Whether the CA was made by this run (there was none).
    pub ca_new: bool,
    /// The step of a CA rotation this run does, if one is under way.
    pub rotation: Option<RotationStep>,
    /// The files made by this run, written by [`Pki::commit`] once the run's pre-flight passed.
    pub pending: Vec<PendingWrite>,
    /// The files removed by [`Pki::commit`] after the writes (the last step of a CA rotation).
    remove: Vec<PathBuf>,
    dir: PathBuf,
}

/// A step of a CA rotation, as a run does it.
#[derive(Debug, Clone)]
pub struct RotationStep {
    /// 1 (every node trusts both CAs), 2 (every certificate from the new CA) or 3 (the old CA
    /// dropped).
    pub number: u8,
    /// What this step does and what remains, for a `note:`.
    pub note: String,
    /// The record that this step is done on every node, to write once the run ended so (steps 1
    /// and 2, and only when this run writes beside the inventory): the next provision moves on.
    pub finish: Option<PendingWrite>,
}

/// What a node trusting another CA is told (hactl never replaces a CA by surprise).
pub const FOREIGN_CA: &str = "the cluster CA (not the CA the node trusts: hactl never replaces it)";
/// The name `--rotate` takes for a CA rotation.
pub const ROTATE_CA: &str = "ca";
/// The step of a CA rotation finished on every node (`1` or `2`), in the pki directory.
const ROTATION_FILE: &str = "ca-rotation";
/// The stem of the new CA's files during a rotation.
const NEXT: &str = "ca-next";
/// The stem of the CA's files a rotation replaced (kept: a backup, and to recognise nodes that
/// missed the last step).
const PREVIOUS: &str = "ca-previous";

impl Pki {
    /// Writes the files this run made (the directory made 0700 first), then removes the ones
    /// the last step of a CA rotation replaced.
    pub fn commit(&self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        if self.pending.is_empty() && self.remove.is_empty() {
            return Ok(());
        }
        if !self.dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| miette!("cannot make {}: {e}", self.dir.display()))?;
        }
        self.pending.iter().try_for_each(PendingWrite::commit)?;
        for path in &self.remove {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(miette!("cannot remove {}: {e}", path.display()))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Why a node holding the CA file `theirs` cannot take this run, if it cannot: it trusts
    /// another CA, or (step 2 of a CA rotation) not yet the new one.
    pub fn refuses_node_ca(&self, theirs: &str) -> Option<String> {
        let theirs = theirs.trim();
        if !self.ca_new
            && std::iter::once(&self.ca_cert)
                .chain(&self.ca_accepted)
                .any(|ca| ca.trim() == theirs)
        {
            return None;
        }
        Some(match &self.rotation {
            Some(step) if step.number == 2 => format!(
                "the cluster CA (CA rotation step 2 gives every certificate from the new CA, but the node does not hold \
                 the trust bundle of step 1; to repeat step 1, remove {})",
                self.dir.join(ROTATION_FILE).display()
            ),
            _ => FOREIGN_CA.to_string(),
        })
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

/// A CA: its certificate (PEM) and key.
struct Ca {
    cert: String,
    key: KeyPair,
}

/// What a run signs with and what the nodes trust.
struct CaPlan {
    /// The CA that signs every certificate this run makes.
    signing: Ca,
    /// The CA file every node gets.
    trust: String,
    /// The CA files a node may hold before this run, besides `trust`.
    accepted: Vec<String>,
    /// The step of a CA rotation, if one is under way.
    step: Option<RotationStep>,
    /// The files the commit removes.
    remove: Vec<PathBuf>,
}

/// Loads the CA and the host certificates from `dir`, making what is missing, stale, made by
/// another CA or naming other names: to be written (keys 0600, by [`Pki::commit`]) with
/// `Missing::Generate`, made for this run only otherwise. Half a CA (a certificate without its
/// key, or a key alone) is a refusal, never a new CA. `rotate_ca` starts a CA rotation (step 1);
/// a rotation under way moves one step a run (see [`rotation_step`]).
pub fn ensure(dir: &Path, wanted: &BTreeMap<String, Wanted>, missing: Missing, rotate_ca: bool) -> Result<Pki> {
    let write = missing == Missing::Generate;
    let mut pending = Vec::new();
    let (current, ca_new) = match load_ca(dir, "ca")? {
        Some(ca) => (ca, false),
        None => {
            let ca = make_ca("hactl cluster CA")?;
            push_ca(dir, "ca", &ca, &mut pending);
            (ca, true)
        }
    };
    let step = rotation_step(dir, rotate_ca)?;
    if ca_new && step.is_some() {
        return Err(miette!(
            "there is no cluster CA in {} (ca.crt, ca.key): a CA rotation needs one (the first provision makes it; \
             restore a lost one from a backup); nothing changed",
            dir.display()
        ));
    }
    let plan = match step {
        None => settled(dir, current)?,
        Some(number) => rotating(dir, wanted, number, current, write, &mut pending)?,
    };
    let issuer = Issuer::from_ca_cert_pem(&plan.signing.cert, &plan.signing.key)
        .map_err(|e| miette!("{}: the CA certificate cannot sign: {e}", dir.display()))?;
    let signer = Signer {
        dir,
        issuer: &issuer,
        ca_cert: &plan.signing.cert,
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
        ca_cert: plan.trust,
        ca_accepted: plan.accepted,
        hosts,
        roles,
        ca_new,
        rotation: plan.step,
        pending,
        remove: if write { plan.remove } else { Vec::new() },
        dir: dir.to_path_buf(),
    })
}

/// No rotation under way: `current` signs and is trusted; a node may still hold the trust
/// bundle of the rotation that made it (it missed that rotation's last step).
fn settled(dir: &Path, current: Ca) -> Result<CaPlan> {
    let previous = dir.join(format!("{PREVIOUS}.crt"));
    let accepted = match previous.exists() {
        true => vec![bundle(&read(&previous)?, &current.cert)],
        false => Vec::new(),
    };
    Ok(CaPlan {
        trust: current.cert.clone(),
        signing: current,
        accepted,
        step: None,
        remove: Vec::new(),
    })
}

/// Step `number` of a CA rotation from `current` to the new CA (`ca-next.*`, made now at step
/// 1): 1 trusts both and signs with the old; 2 trusts both and signs with the new; 3 trusts the
/// new alone, which becomes `ca.*` (the old kept as `ca-previous.*`).
fn rotating(
    dir: &Path,
    wanted: &BTreeMap<String, Wanted>,
    number: u8,
    current: Ca,
    write: bool,
    pending: &mut Vec<PendingWrite>,
) -> Result<CaPlan> {
    refuse_given(wanted)?;
    let next = match load_ca(dir, NEXT)? {
        Some(ca) => ca,
        None => {
            let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
            let ca = make_ca(&format!("hactl cluster CA {stamp}"))?;
            push_ca(dir, NEXT, &ca, pending);
            ca
        }
    };
    let both = bundle(&current.cert, &next.cert);
    let finish = (write && number < 3)
        .then(|| PendingWrite::new(dir.join(ROTATION_FILE), format!("{number}\n").into_bytes(), 0o644));
    let step = Some(RotationStep {
        number,
        note: step_note(number, dir),
        finish,
    });
    let old = current.cert.clone();
    Ok(match number {
        1 => CaPlan {
            signing: current,
            trust: both,
            accepted: vec![old],
            step,
            remove: Vec::new(),
        },
        2 => CaPlan {
            signing: next,
            trust: both,
            accepted: Vec::new(),
            step,
            remove: Vec::new(),
        },
        _ => {
            // Unless an interrupted commit of this step already made the new CA ca.*.
            if current.cert != next.cert {
                push_ca(dir, PREVIOUS, &current, pending);
                push_ca(dir, "ca", &next, pending);
            }
            CaPlan {
                trust: next.cert.clone(),
                signing: next,
                accepted: vec![both],
                step,
                remove: vec![
                    dir.join(format!("{NEXT}.crt")),
                    dir.join(format!("{NEXT}.key")),
                    dir.join(ROTATION_FILE),
                ],
            }
        }
    })
}

/// What step `number` of a CA rotation does and what remains.
fn step_note(number: u8, dir: &Path) -> String {
    match number {
        1 => "CA rotation step 1 of 3: every node gets a trust bundle of the old and the new CA (certificates stay \
              the old CA's); once a provision of every stage ends with every node done, the next provision does step 2 \
              (every certificate from the new CA)"
            .to_string(),
        2 => "CA rotation step 2 of 3: every certificate made again by the new CA (every node trusts both); once a \
              provision of every stage ends with every node done, the next provision does step 3 (the old CA dropped)"
            .to_string(),
        _ => format!(
            "CA rotation step 3 of 3: every node trusts the new CA alone, now {}/ca.crt and ca.key (the old CA kept as \
             ca-previous.crt and ca-previous.key); the rotation ends with this run",
            dir.display()
        ),
    }
}

/// The step of a CA rotation this run does, from the pki directory: none without a rotation
/// (and without `rotate_ca`); step 1 when `rotate_ca` starts one, or while step 1 is not done on
/// every node (`ca-next.*` without `ca-rotation`); then the step after the one `ca-rotation`
/// records. `rotate_ca` during a rotation whose step 1 is done is a refusal naming the step.
fn rotation_step(dir: &Path, rotate_ca: bool) -> Result<Option<u8>> {
    let next = dir.join(format!("{NEXT}.crt")).exists() || dir.join(format!("{NEXT}.key")).exists();
    let record = dir.join(ROTATION_FILE);
    let done = match record.exists() {
        false => None,
        true => match read(&record)?.trim() {
            "1" => Some(1),
            "2" => Some(2),
            other => {
                return Err(miette!(
                    "{}: `{other}` is not a step of a CA rotation (1 or 2)",
                    record.display()
                ))
            }
        },
    };
    match (next, done, rotate_ca) {
        (false, None, false) => Ok(None),
        (false, Some(_), _) => Err(miette!(
            "{} records a CA rotation but the new CA ({NEXT}.crt, {NEXT}.key) is missing: restore it from a backup (nothing changed)",
            record.display()
        )),
        (_, None, _) => Ok(Some(1)),
        (true, Some(done), false) => Ok(Some(done + 1)),
        (true, Some(done), true) => Err(miette!(
            "--rotate {ROTATE_CA}: refused, a CA rotation is under way (step {done} of 3 done on every node): \
             run provision without --rotate {ROTATE_CA} to do step {}; nothing changed",
            done + 1
        )),
    }
}

/// A CA rotation re-issues every certificate: one a host's `tls_cert_file` gives is not
/// hactl's to re-issue (refused, naming the hosts).
fn refuse_given(wanted: &BTreeMap<String, Wanted>) -> Result<()> {
    let hosts: Vec<&str> = wanted
        .iter()
        .filter(|(_, w)| w.given.is_some())
        .map(|(h, _)| h.as_str())
        .collect();
    if hosts.is_empty() {
        return Ok(());
    }
    Err(miette!(
        "--rotate {ROTATE_CA}: refused, {} use certificates of their own (tls_cert_file), which hactl cannot \
         re-issue from a new CA: rotate the CA by hand (docs/operations.md) or drop them; nothing changed",
        hosts.join(", ")
    ))
}

/// Two CA certificates, one PEM file (a trust bundle).
fn bundle(first: &str, second: &str) -> String {
    format!("{}\n{}\n", first.trim_end(), second.trim_end())
}

/// `STEM.crt` and `STEM.key` of this CA, to write.
fn push_ca(dir: &Path, stem: &str, ca: &Ca, pending: &mut Vec<PendingWrite>) {
    pending.push(PendingWrite::new(
        dir.join(format!("{stem}.key")),
        ca.key.serialize_pem().into_bytes(),
        0o600,
    ));
    pending.push(PendingWrite::new(
        dir.join(format!("{stem}.crt")),
        ca.cert.clone().into_bytes(),
        0o644,
    ));
}

/// The CA in `STEM.crt` and `STEM.key`, if both are there. One without the other is a refusal:
/// the nodes trust the CA, and a new one would not be theirs.
fn load_ca(dir: &Path, stem: &str) -> Result<Option<Ca>> {
    let (cert_path, key_path) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
    if cert_path.exists() && key_path.exists() {
        let (_, key) = read_key(&key_path)?;
        let cert = read(&cert_path)?;
        if !is_key_of(&cert, &cert_path, &key)? {
            return Err(miette!(
                "{} does not match {}: restore both from a backup (nothing changed)",
                cert_path.display(),
                key_path.display()
            ));
        }
        return Ok(Some(Ca { cert, key }));
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
    Ok(None)
}

/// A new CA named `common_name`.
fn make_ca(common_name: &str) -> Result<Ca> {
    let key = KeyPair::generate().map_err(|e| miette!("cannot make the CA's key: {e}"))?;
    let mut params = params(common_name, CA_DAYS);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params
        .self_signed(&key)
        .map_err(|e| miette!("cannot make the CA certificate: {e}"))?
        .pem();
    Ok(Ca { cert, key })
}

/// Where certificates are kept and who signs them: the CA, and whether it was made in this run
/// (every certificate is then made again).
struct Signer<'a> {
    dir: &'a Path,
    issuer: &'a Issuer<'a, &'a KeyPair>,
    ca_cert: &'a str,
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
            if current(&cert, names)? && issued_by(&cert, self.ca_cert)? {
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

/// Whether the CA `ca` made certificate `cert`: its issuer is the CA's subject and, where both
/// name one, its authority key identifier is the CA's subject key identifier.
fn issued_by(cert: &str, ca: &str) -> Result<bool> {
    let (issuer, authority) = with_certificate(cert, "a host certificate", |c| {
        (c.issuer().as_raw().to_vec(), key_id(c, true))
    })?;
    let (subject, own) = with_certificate(ca, "the CA certificate", |c| {
        (c.subject().as_raw().to_vec(), key_id(c, false))
    })?;
    Ok(issuer == subject && (authority.is_none() || own.is_none() || authority == own))
}

/// A certificate's authority key identifier (`authority`) or subject key identifier.
fn key_id(cert: &x509_parser::certificate::X509Certificate<'_>, authority: bool) -> Option<Vec<u8>> {
    use x509_parser::extensions::ParsedExtension;
    cert.extensions()
        .iter()
        .find_map(|ext| match (ext.parsed_extension(), authority) {
            (ParsedExtension::AuthorityKeyIdentifier(aki), true) => aki.key_identifier.as_ref().map(|k| k.0.to_vec()),
            (ParsedExtension::SubjectKeyIdentifier(ski), false) => Some(ski.0.to_vec()),
            _ => None,
        })
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

/// Whether `key` is the key of the PEM certificate `cert` (read from `cert_path`).
fn is_key_of(cert: &str, cert_path: &Path, key: &KeyPair) -> Result<bool> {
    with_certificate(cert, &cert_path.display().to_string(), |x509| {
        x509.public_key().subject_public_key.data.as_ref() == key.public_key_raw()
    })
}

/// An inventory's own certificate and key for a host, refused unless the key is the
/// certificate's.
fn given(cert_path: &Path, key_path: &Path) -> Result<HostCert> {
    let cert = read(cert_path)?;
    let (key, pair) = read_key(key_path)?;
    if !is_key_of(&cert, cert_path, &pair)? {
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
        let pki = ensure(&pki_dir, &want, Missing::Generate, false).unwrap();
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
        let again = ensure(&pki_dir, &want, Missing::Generate, false).unwrap();
        assert_eq!(again.roles["node1"]["api"].cert, api.cert, "kept while current");
    }

    /// `ensure` with `Missing::Generate`, its files written.
    fn generate(dir: &Path, names: &[&str]) -> Pki {
        let pki = ensure(dir, &wanted(names), Missing::Generate, false).unwrap();
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
        std::fs::copy(pki_dir.join("host-node1.key"), pki_dir.join("ca.key")).unwrap();
        let err = run(&pki_dir, false).unwrap_err().to_string();
        assert!(
            err.contains("does not match") && err.contains("nothing changed"),
            "{err}"
        );
        std::fs::remove_file(pki_dir.join("ca.key")).unwrap();
        let err = ensure(&pki_dir, &wanted(&["node1"]), Missing::Generate, false)
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
        let pki = ensure(&pki_dir, &wanted(&["node1"]), Missing::Generate, false).unwrap();
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
        let ca = load_ca(&pki_dir, "ca").unwrap().unwrap();
        let issuer = Issuer::from_ca_cert_pem(&ca.cert, &ca.key).unwrap();
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
        ensure(&pki_dir, &wanted(&["node1"]), Missing::Preview, false).unwrap();
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

    /// `ensure` for node1, rotating the CA or not, with `Missing::Generate` (not committed).
    fn run(dir: &Path, rotate_ca: bool) -> Result<Pki> {
        ensure(dir, &wanted(&["node1"]), Missing::Generate, rotate_ca)
    }

    /// Commits a run and records its rotation step done, as a provision that reached every node.
    fn finish(pki: &Pki) {
        pki.commit().unwrap();
        pki.rotation
            .as_ref()
            .and_then(|s| s.finish.as_ref())
            .unwrap()
            .commit()
            .unwrap();
    }

    #[test]
    fn a_ca_rotation_moves_one_step_a_provision_each_written_only_at_commit() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("inv.pki");
        let first = generate(&pki_dir, &["node1"]);
        let old = first.ca_cert.clone();
        // Step 1: a new CA beside the old one, both trusted, certificates still the old CA's.
        let one = run(&pki_dir, true).unwrap();
        assert_eq!(one.rotation.as_ref().unwrap().number, 1);
        assert!(!pki_dir.join("ca-next.crt").exists(), "nothing written before commit");
        let new = read_pem_after_commit(&one, &pki_dir.join("ca-next.crt"));
        assert_eq!(one.ca_cert, bundle(&old, &new));
        assert_eq!(one.hosts["node1"].cert, first.hosts["node1"].cert);
        assert!(
            !pki_dir.join(ROTATION_FILE).exists(),
            "recorded only once every node has it"
        );
        // Step 1 again until it is done on every node, with --rotate ca or without: no change.
        for rotate in [false, true] {
            let again = run(&pki_dir, rotate).unwrap();
            assert_eq!(again.rotation.as_ref().unwrap().number, 1);
            assert!(again.pending.is_empty() && again.ca_cert == one.ca_cert);
        }
        finish(&one);
        let err = run(&pki_dir, true).unwrap_err().to_string();
        assert!(err.contains("step 1 of 3 done") && err.contains("step 2"), "{err}");
        // Step 2: every certificate from the new CA, both still trusted.
        let two = run(&pki_dir, false).unwrap();
        assert_eq!(two.rotation.as_ref().unwrap().number, 2);
        assert_eq!(two.ca_cert, one.ca_cert);
        assert!(issued_by(&two.hosts["node1"].cert, &new).unwrap());
        assert!(!issued_by(&two.hosts["node1"].cert, &old).unwrap());
        two.commit().unwrap();
        let again = run(&pki_dir, false).unwrap();
        assert_eq!(again.rotation.as_ref().unwrap().number, 2, "until recorded done");
        assert!(again.pending.is_empty(), "a re-run of step 2 changes nothing");
        assert_eq!(again.hosts["node1"].cert, two.hosts["node1"].cert);
        finish(&two);
        // Step 3: the new CA alone; it becomes ca.*, the old one ca-previous.*.
        let three = run(&pki_dir, false).unwrap();
        assert_eq!(three.rotation.as_ref().unwrap().number, 3);
        assert!(three.rotation.as_ref().unwrap().finish.is_none());
        assert_eq!(three.ca_cert, new);
        assert_eq!(
            read(&pki_dir.join("ca.crt")).unwrap(),
            old,
            "nothing written before commit"
        );
        three.commit().unwrap();
        assert_eq!(read(&pki_dir.join("ca.crt")).unwrap(), new);
        assert_eq!(read(&pki_dir.join("ca-previous.crt")).unwrap(), old);
        for gone in ["ca-next.crt", "ca-next.key", ROTATION_FILE] {
            assert!(!pki_dir.join(gone).exists(), "{gone}");
        }
        // A commit of step 3 interrupted before its removals: the repeat keeps ca-previous.*.
        std::fs::write(pki_dir.join("ca-next.crt"), &new).unwrap();
        std::fs::copy(pki_dir.join("ca.key"), pki_dir.join("ca-next.key")).unwrap();
        std::fs::write(pki_dir.join(ROTATION_FILE), "2\n").unwrap();
        run(&pki_dir, false).unwrap().commit().unwrap();
        assert_eq!(read(&pki_dir.join("ca-previous.crt")).unwrap(), old);
        assert!(!pki_dir.join("ca-next.crt").exists() && !pki_dir.join(ROTATION_FILE).exists());
        // Done: nothing moves, and a node that missed step 3 (the bundle) is behind, not foreign.
        let after = run(&pki_dir, false).unwrap();
        assert!(after.rotation.is_none() && after.pending.is_empty());
        assert_eq!(after.hosts["node1"].cert, two.hosts["node1"].cert);
        assert!(after.refuses_node_ca(&one.ca_cert).is_none());
        assert!(after.refuses_node_ca(&old).is_some());
    }

    /// Commits `pki` and reads `path`.
    fn read_pem_after_commit(pki: &Pki, path: &Path) -> String {
        pki.commit().unwrap();
        read(path).unwrap()
    }

    #[test]
    fn each_step_accepts_the_ca_files_of_the_one_before_only() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("inv.pki");
        let old = generate(&pki_dir, &["node1"]).ca_cert;
        let one = run(&pki_dir, true).unwrap();
        assert!(one.refuses_node_ca(&old).is_none() && one.refuses_node_ca(&one.ca_cert).is_none());
        assert!(one.refuses_node_ca("ANOTHER CA").unwrap().contains("never replaces"));
        finish(&one);
        let two = run(&pki_dir, false).unwrap();
        assert!(two.refuses_node_ca(&one.ca_cert).is_none());
        let missed = two.refuses_node_ca(&old).unwrap();
        assert!(missed.contains("step 2") && missed.contains("ca-rotation"), "{missed}");
    }

    #[test]
    fn a_ca_rotation_is_refused_without_a_ca_with_given_certificates_or_a_lost_new_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("inv.pki");
        let err = run(&pki_dir, true).unwrap_err().to_string();
        assert!(err.contains("no cluster CA"), "{err}");
        assert!(!pki_dir.exists());
        generate(&pki_dir, &["node1"]);
        let mut want = wanted(&["node1"]);
        want.get_mut("node1").unwrap().given = Some((pki_dir.join("host-node1.crt"), pki_dir.join("host-node1.key")));
        let err = ensure(&pki_dir, &want, Missing::Generate, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("node1 use certificates of their own"), "{err}");
        let one = run(&pki_dir, true).unwrap();
        finish(&one);
        std::fs::remove_file(pki_dir.join("ca-next.key")).unwrap();
        let err = run(&pki_dir, false).unwrap_err().to_string();
        assert!(err.contains("ca-next.key is missing"), "{err}");
        std::fs::remove_file(pki_dir.join("ca-next.crt")).unwrap();
        let err = run(&pki_dir, false).unwrap_err().to_string();
        assert!(err.contains("the new CA") && err.contains("missing"), "{err}");
    }

    #[test]
    fn a_previewed_rotation_writes_nothing_and_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("inv.pki");
        generate(&pki_dir, &["node1"]);
        let preview = ensure(&pki_dir, &wanted(&["node1"]), Missing::Preview, true).unwrap();
        let step = preview.rotation.as_ref().unwrap();
        assert!(step.number == 1 && step.finish.is_none() && preview.pending.is_empty());
        assert!(step.note.contains("step 1 of 3"), "{}", step.note);
        preview.commit().unwrap();
        assert!(!pki_dir.join("ca-next.crt").exists());
    }
}

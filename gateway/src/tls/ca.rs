//! The node CA: loaded from PEM files or generated, and the leaf minting.
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{
    CertificateDer, DnsName, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime,
};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use tracing::{info, warn};

use super::{der, ring_provider, TlsError};

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start this long before "now": a workload whose clock runs a
/// little behind the node's must not see a not-yet-valid certificate.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);
/// X.520 ub-common-name. Longer names go in the SAN only (which is what
/// clients check anyway).
const MAX_CN_LEN: usize = 64;
/// A loaded CA that expires sooner than this is logged at warn.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);
/// The name the start-up self-check mints a leaf for; `.invalid` never resolves.
const SELF_CHECK_NAME: &str = "trigate-self-check.invalid";

/// The node CA: signs leaf certificates for intercepted hosts.
pub struct NodeCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    not_after: SystemTime,
    /// Whether leaves carry an authorityKeyIdentifier. Only when the CA has
    /// a subjectKeyIdentifier to match: OpenSSL rejects a chain whose AKI
    /// differs from the issuer's SKI, and accepts a leaf without one.
    leaf_aki: bool,
}

impl fmt::Debug for NodeCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The issuer's Debug already elides the key; say so anyway.
        f.debug_struct("NodeCa")
            .field("issuer", &self.issuer)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A validated leaf name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LeafName {
    Dns(String),
    Ip(IpAddr),
}

impl LeafName {
    /// Parses a DNS name (case and one trailing dot normalised away, as
    /// rustls does for SNI) or an IP address literal.
    pub(super) fn parse(raw: &str) -> Result<LeafName, TlsError> {
        let invalid = |reason| TlsError::InvalidName {
            name: raw.to_string(),
            reason,
        };
        let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
        if name.is_empty() {
            return Err(invalid("the name is empty"));
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(LeafName::Ip(ip));
        }
        if DnsName::try_from(name.as_str()).is_err() {
            return Err(invalid("not a valid DNS name or IP address"));
        }
        Ok(LeafName::Dns(name))
    }

    /// The canonical text, used as the cache key.
    pub(super) fn key(&self) -> String {
        match self {
            LeafName::Dns(name) => name.clone(),
            LeafName::Ip(ip) => ip.to_string(),
        }
    }
}

impl NodeCa {
    /// Loads cert+key PEM files; when both are missing and `generate` is true, creates an
    /// ECDSA P-256 CA ("trigate node CA <hostname>", valid 10 years, basicConstraints CA:true pathlen 0,
    /// keyUsage keyCertSign+cRLSign) and writes them (key file mode 0600, parent dirs created).
    /// One file present without the other is an error naming both paths.
    pub fn load_or_generate(cert: &Path, key: &Path, generate: bool) -> Result<NodeCa, TlsError> {
        if cert == key {
            return Err(TlsError::SameFile {
                path: cert.to_path_buf(),
            });
        }
        match (exists(cert)?, exists(key)?) {
            (true, true) => Self::load(cert, key),
            (true, false) => Err(TlsError::PartialCa {
                present: cert.to_path_buf(),
                missing: key.to_path_buf(),
            }),
            (false, true) => Err(TlsError::PartialCa {
                present: key.to_path_buf(),
                missing: cert.to_path_buf(),
            }),
            (false, false) if !generate => Err(TlsError::CaMissing {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            }),
            (false, false) => {
                let (ca, key_pem) =
                    Self::generate(&format!("generated CA for {}", cert.display()))?;
                // Key first: a crash in between leaves a key without a
                // certificate, which the next start reports (naming both)
                // instead of silently pairing a certificate with no key.
                write_new_file(key, key_pem.as_bytes(), 0o600)?;
                if let Err(e) = write_new_file(cert, ca.cert_pem.as_bytes(), 0o644) {
                    // Back to "both missing", so a retry generates afresh.
                    let _ = fs::remove_file(key);
                    return Err(e);
                }
                info!(
                    cert = %cert.display(),
                    key = %key.display(),
                    "generated a new node CA; workloads must trust its certificate"
                );
                Ok(ca)
            }
        }
    }

    /// Generated in memory only (tests, ephemeral use).
    pub fn generate_in_memory() -> Result<NodeCa, TlsError> {
        Self::generate("in-memory generated CA").map(|(ca, _key_pem)| ca)
    }

    /// What pods must trust (published by the DaemonSet later).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// A fresh CA and its private key in PEM.
    fn generate(origin: &str) -> Result<(NodeCa, String), TlsError> {
        let provider = ring_provider();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
            TlsError::Rcgen {
                what: "generating the node CA key",
                source,
            }
        })?;
        let now = SystemTime::now();
        let not_after = now + CA_VALIDITY;
        let serial = random_serial(&provider)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "trigate");
        // Each generation gets its own subject: a regenerated CA (or another
        // node's CA on a host with the same name) must not share a name with
        // the old one, or clients that trust both pick an issuer by name and
        // fail on the signature instead of reporting an unknown issuer.
        let generation: String = serial.to_bytes()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        params.distinguished_name.push(
            DnType::OrganizationalUnitName,
            format!("generation {generation}"),
        );
        params
            .distinguished_name
            .push(DnType::CommonName, ca_common_name(&hostname()));
        set_validity(
            &mut params,
            now.checked_sub(CLOCK_SKEW).unwrap_or(now),
            not_after,
        )?;
        params.serial_number = Some(serial);
        // pathlen 0: the node CA signs leaves only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).map_err(|source| TlsError::Rcgen {
            what: "self-signing the node CA certificate",
            source,
        })?;
        let key_pem = key.serialize_pem();
        let ca = NodeCa {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            not_after,
            // rcgen wrote the SKI with params.key_identifier_method, and
            // derives leaves' AKI with the same method from the same key.
            leaf_aki: true,
            issuer: Issuer::new(params, key),
        };
        ca.self_check(origin, &provider)?;
        Ok((ca, key_pem))
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<NodeCa, TlsError> {
        let origin = format!("the certificate in {}", cert_path.display());
        let unusable = |problem: String| TlsError::CaUnusable {
            origin: origin.clone(),
            problem,
        };
        let cert_der = read_ca_cert(cert_path)?;
        let key = read_ca_key(key_path)?;
        let fields = der::parse_ca_cert(&cert_der).map_err(&unusable)?;
        if !fields.is_ca {
            return Err(unusable(
                "it is not a CA certificate (basicConstraints CA:true is missing)".to_string(),
            ));
        }
        if fields.public_key != key.der_bytes() {
            return Err(TlsError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            });
        }
        let now = SystemTime::now();
        if fields.not_after <= now {
            return Err(unusable(format!(
                "it expired {} days ago; replace both files (or remove them to have a new CA generated)",
                days(now.duration_since(fields.not_after).unwrap_or_default())
            )));
        }
        if fields.not_before > now {
            return Err(unusable(
                "it is not valid yet; check the node's clock".to_string(),
            ));
        }
        let remaining = fields.not_after.duration_since(now).unwrap_or_default();
        if remaining < EXPIRY_WARNING {
            warn!(
                cert = %cert_path.display(),
                days_left = days(remaining),
                "the node CA expires soon; rotate it"
            );
        }
        warn_if_key_exposed(key_path);

        let mut params = CertificateParams::default();
        params.distinguished_name = der::distinguished_name(fields.subject).map_err(&unusable)?;
        // Leaves name this CA by its subject (byte for byte, re-encoded
        // above) and, when it has one, by its SKI as found in the file, not
        // recomputed: other tools derive SKIs differently (SHA-1).
        let leaf_aki = fields.subject_key_id.is_some();
        if let Some(ski) = fields.subject_key_id {
            params.key_identifier_method = KeyIdMethod::PreSpecified(ski.to_vec());
        }
        let not_after = fields.not_after;
        let ca = NodeCa {
            cert_pem: pem_encode("CERTIFICATE", &cert_der),
            cert_der,
            not_after,
            leaf_aki,
            issuer: Issuer::new(params, key),
        };
        ca.self_check(&origin, &ring_provider())?;
        Ok(ca)
    }

    /// Mints one leaf and verifies it against this CA the way a client
    /// would, so a CA that cannot issue usable leaves (subject that does not
    /// re-encode, key that does not sign, missing keyCertSign) fails at start
    /// rather than on every handshake.
    fn self_check(&self, origin: &str, provider: &Arc<CryptoProvider>) -> Result<(), TlsError> {
        let unusable = |problem: String| TlsError::CaUnusable {
            origin: origin.to_string(),
            problem,
        };
        let leaf = self.mint_leaf(
            &LeafName::Dns(SELF_CHECK_NAME.to_string()),
            SystemTime::now(),
            Duration::from_secs(3600),
            provider,
        )?;
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert_der())
            .map_err(|e| unusable(format!("it is not a usable trust anchor: {e}")))?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| unusable(format!("cannot build a verifier for it: {e}")))?;
        let name = ServerName::try_from(SELF_CHECK_NAME)
            .map_err(|e| unusable(format!("self-check name: {e}")))?;
        verifier
            .verify_server_cert(&leaf.cert[0], &leaf.cert[1..], &name, &[], UnixTime::now())
            .map_err(|e| {
                unusable(format!(
                    "a leaf it signed does not verify ({e}); check that the certificate is a CA \
                     allowed to sign certificates (keyUsage keyCertSign) and that the key belongs to it"
                ))
            })?;
        Ok(())
    }

    /// A leaf for `name`: fresh ECDSA P-256 key, SAN and CN = the name, EKU
    /// serverAuth, valid from `now` − 1 h to `now` + `validity`; chain
    /// [leaf, CA].
    pub(super) fn mint_leaf(
        &self,
        name: &LeafName,
        now: SystemTime,
        validity: Duration,
        provider: &CryptoProvider,
    ) -> Result<CertifiedKey, TlsError> {
        // A key per leaf rather than one shared by all: P-256 key generation
        // costs about what the certificate signature costs, minting happens
        // once per name per validity period, and a per-leaf key keeps every
        // leaf independent (and LeafCache::new infallible). Serials are
        // random regardless, so they stay unique either way.
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
            TlsError::Rcgen {
                what: "generating a leaf key",
                source,
            }
        })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        match name {
            LeafName::Dns(dns) => {
                if dns.len() <= MAX_CN_LEN {
                    params
                        .distinguished_name
                        .push(DnType::CommonName, dns.as_str());
                }
                let san = Ia5String::try_from(dns.as_str()).map_err(|source| TlsError::Rcgen {
                    what: "encoding the leaf's DNS name",
                    source,
                })?;
                params.subject_alt_names = vec![SanType::DnsName(san)];
            }
            LeafName::Ip(ip) => {
                params
                    .distinguished_name
                    .push(DnType::CommonName, ip.to_string());
                params.subject_alt_names = vec![SanType::IpAddress(*ip)];
            }
        }
        let not_after = now.checked_add(validity).ok_or(TlsError::InvalidName {
            name: name.key(),
            reason: "the leaf validity runs past the representable time range",
        })?;
        set_validity(
            &mut params,
            now.checked_sub(CLOCK_SKEW).unwrap_or(now),
            not_after,
        )?;
        params.serial_number = Some(random_serial(provider)?);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = self.leaf_aki;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| TlsError::Rcgen {
                what: "signing a leaf certificate",
                source,
            })?;
        let signing_key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            )))
            .map_err(|source| TlsError::Rustls {
                what: "loading a leaf key into rustls",
                source,
            })?;
        Ok(CertifiedKey::new(
            vec![cert.der().clone(), self.cert_der.clone()],
            signing_key,
        ))
    }
}

/// "trigate node CA <hostname>", within the 64-character CN limit.
fn ca_common_name(hostname: &str) -> String {
    let mut cn = String::from("trigate node CA ");
    for c in hostname.chars() {
        if cn.len() + c.len_utf8() > MAX_CN_LEN {
            break;
        }
        cn.push(c);
    }
    cn.trim_end().to_string()
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// Sets notBefore/notAfter from `SystemTime`s. rcgen takes `time`'s
/// `OffsetDateTime`, built here as epoch + duration so this crate needs no
/// `time` dependency of its own.
fn set_validity(
    params: &mut CertificateParams,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<(), TlsError> {
    // GeneralizedTime ends at 9999-12-31T23:59:59Z; `time` panics past it.
    const MAX_SECS: u64 = 253_402_300_799;
    let since_epoch = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .ok()
            .filter(|d| d.as_secs() <= MAX_SECS)
            .ok_or(TlsError::CaUnusable {
                origin: "the system clock".to_string(),
                problem: "the certificate validity falls outside 1970..9999; check the clock and the configured validity".to_string(),
            })
    };
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + since_epoch(not_before)?;
    params.not_after = epoch + since_epoch(not_after)?;
    Ok(())
}

/// 16 random bytes, positive and with a fixed length (top bits 01).
fn random_serial(provider: &CryptoProvider) -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    provider
        .secure_random
        .fill(&mut bytes)
        .map_err(|e| TlsError::Rustls {
            what: "generating a certificate serial number",
            source: e.into(),
        })?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn days(d: Duration) -> u64 {
    d.as_secs() / 86_400
}

fn exists(path: &Path) -> Result<bool, TlsError> {
    path.try_exists().map_err(|source| TlsError::Io {
        action: "checking whether this exists:",
        path: path.to_path_buf(),
        source,
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })
}

fn read_ca_cert(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    let pem_error = |problem: String| TlsError::Pem {
        path: path.to_path_buf(),
        problem,
    };
    let bytes = read_file(path)?;
    let mut certs = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            pem_error(format!(
                "invalid PEM ({e}); the file must hold the node CA certificate in PEM"
            ))
        })?;
    match certs.len() {
        1 => Ok(certs.remove(0)),
        0 => Err(pem_error(
            "no PEM CERTIFICATE block found; the file must hold the node CA certificate in PEM"
                .to_string(),
        )),
        n => Err(pem_error(format!(
            "{n} certificates found; the file must hold only the node CA certificate (chains are not supported)"
        ))),
    }
}

fn read_ca_key(path: &Path) -> Result<KeyPair, TlsError> {
    let pem_error = |problem: &str| TlsError::Pem {
        path: path.to_path_buf(),
        problem: problem.to_string(),
    };
    let bytes = read_file(path)?;
    let key = rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| {
            pem_error(&format!(
                "invalid PEM ({e}); the file must hold the node CA private key"
            ))
        })?
        .ok_or_else(|| {
            pem_error("no PEM private key block found; the file must hold the node CA private key")
        })?;
    match key {
        PrivateKeyDer::Pkcs8(_) => {}
        // ring reads PKCS#8 only.
        _ => {
            return Err(pem_error(
                "the key is in PKCS#1/SEC1 form (BEGIN RSA/EC PRIVATE KEY); convert it to PKCS#8 \
                 with `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pkcs8`",
            ))
        }
    }
    KeyPair::try_from(&key).map_err(|e| {
        pem_error(&format!(
            "cannot use the private key ({e}); supported: ECDSA P-256/P-384, Ed25519, RSA, in PKCS#8"
        ))
    })
}

fn warn_if_key_exposed(path: &Path) {
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warn!(
                key = %path.display(),
                mode = format!("{mode:o}"),
                "the node CA key is readable by group or others; chmod 600 it"
            );
        }
    }
}

/// Creates `path` with `contents` atomically and without replacing an
/// existing file: written under a temporary name, then hard-linked into
/// place (link fails if the name exists, where rename would replace it).
/// Two daemons generating at once therefore cannot end up with one's
/// certificate next to the other's key.
fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let io_error = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io {
            action,
            path,
            source,
        }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_error("creating directory", parent))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    // A leftover from a crash of an earlier run with the same pid.
    let _ = fs::remove_file(&tmp);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .map_err(io_error("writing", &tmp))
        .and_then(|()| fs::hard_link(&tmp, path).map_err(io_error("creating", path)));
    let _ = fs::remove_file(&tmp);
    written
}

/// PEM with 64-column base64 lines, as rcgen writes it, so a loaded CA
/// publishes the same text it was generated with.
fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            b64.push(if i <= chunk.len() {
                ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]
            } else {
                b'='
            });
        }
    }
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        // The alphabet is ASCII.
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A unique directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "trigate-tls-{name}-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.0.join(rel)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Verifies a leaf minted by `signer` against `trusted` as a client would.
    fn verify(trusted: &NodeCa, signer: &NodeCa, name: &str) -> Result<(), rustls::Error> {
        let provider = ring_provider();
        let leaf = signer
            .mint_leaf(
                &LeafName::parse(name).unwrap(),
                SystemTime::now(),
                Duration::from_secs(3600),
                &provider,
            )
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(trusted.cert_der()).unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        verifier
            .verify_server_cert(
                &leaf.cert[0],
                &leaf.cert[1..],
                &ServerName::try_from(name).unwrap(),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    /// Writes a CA built from `params` (self-signed with `key`) as PEM files.
    fn write_ca(dir: &TempDir, params: &CertificateParams, key: &KeyPair) -> (PathBuf, PathBuf) {
        let (cert_path, key_path) = (dir.path("ca.crt"), dir.path("ca.key"));
        fs::write(&cert_path, params.self_signed(key).unwrap().pem()).unwrap();
        fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    #[test]
    fn generated_ca_fields() {
        let ca = NodeCa::generate_in_memory().unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert_eq!(ca.cert_pem(), pem_encode("CERTIFICATE", &ca.cert_der()));
        let der = ca.cert_der();
        let fields = der::parse_ca_cert(&der).unwrap();
        assert!(fields.is_ca);
        assert!(fields.subject_key_id.is_some());
        assert_eq!(fields.public_key, ca.issuer.key().der_bytes());
        let ten_years = fields.not_after.duration_since(fields.not_before).unwrap();
        assert_eq!(ten_years, CA_VALIDITY + CLOCK_SKEW);
        let dn = der::distinguished_name(fields.subject).unwrap();
        match dn.get(&DnType::CommonName) {
            Some(rcgen::DnValue::Utf8String(cn)) => {
                assert!(cn.starts_with("trigate node CA "), "{cn}")
            }
            other => panic!("unexpected CN {other:?}"),
        }
        verify(&ca, &ca, "api.example.test").unwrap();
    }

    #[test]
    fn common_name_fits() {
        assert_eq!(ca_common_name("node-1"), "trigate node CA node-1");
        let long = "n".repeat(100);
        assert_eq!(ca_common_name(&long).len(), MAX_CN_LEN);
    }

    #[test]
    fn pem_encoding_matches_rfc4648() {
        let pem = |data: &[u8]| pem_encode("X", data);
        assert_eq!(pem(b""), "-----BEGIN X-----\n-----END X-----\n");
        assert_eq!(pem(b"f"), "-----BEGIN X-----\nZg==\n-----END X-----\n");
        assert_eq!(pem(b"fo"), "-----BEGIN X-----\nZm8=\n-----END X-----\n");
        assert_eq!(
            pem(b"foobar"),
            "-----BEGIN X-----\nZm9vYmFy\n-----END X-----\n"
        );
        let long = pem(&[0xff; 49]);
        let lines: Vec<_> = long.lines().collect();
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2], "/w==");
    }

    #[test]
    fn leaf_names() {
        assert_eq!(
            LeafName::parse("API.Example.Test.").unwrap(),
            LeafName::Dns("api.example.test".to_string())
        );
        assert_eq!(
            LeafName::parse("10.1.2.3").unwrap(),
            LeafName::Ip("10.1.2.3".parse().unwrap())
        );
        assert_eq!(LeafName::parse("::0001").unwrap().key(), "::1");
        for bad in ["", ".", "has space.example", "a..b", "-", "[::1]"] {
            assert!(
                matches!(LeafName::parse(bad), Err(TlsError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn generate_then_load() {
        let dir = TempDir::new("gen");
        let (cert, key) = (dir.path("a/b/ca.crt"), dir.path("secret/ca.key"));
        let generated = NodeCa::load_or_generate(&cert, &key, true).unwrap();
        assert_eq!(fs::read_to_string(&cert).unwrap(), generated.cert_pem());
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "key mode {mode:o}");
        let leftovers: Vec<_> = fs::read_dir(dir.path("secret")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary files left behind");

        let loaded = NodeCa::load_or_generate(&cert, &key, true).unwrap();
        assert_eq!(loaded.cert_pem(), generated.cert_pem());
        assert_eq!(loaded.cert_der(), generated.cert_der());
        // The loaded CA signs leaves that chain to the published certificate.
        verify(&generated, &loaded, "api.example.test").unwrap();
        // And not to another CA.
        let other = NodeCa::generate_in_memory().unwrap();
        assert!(verify(&other, &loaded, "api.example.test").is_err());
    }

    #[test]
    fn one_file_without_the_other_names_both() {
        let dir = TempDir::new("partial");
        let (cert, key) = (dir.path("ca.crt"), dir.path("ca.key"));
        NodeCa::load_or_generate(&cert, &key, true).unwrap();

        let key_pem = fs::read(&key).unwrap();
        fs::remove_file(&key).unwrap();
        let err = NodeCa::load_or_generate(&cert, &key, true).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, TlsError::PartialCa { .. }), "{msg}");
        assert!(
            msg.contains(&*cert.to_string_lossy()) && msg.contains(&*key.to_string_lossy()),
            "{msg}"
        );

        fs::write(&key, key_pem).unwrap();
        fs::remove_file(&cert).unwrap();
        let msg = NodeCa::load_or_generate(&cert, &key, true)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&*cert.to_string_lossy()) && msg.contains(&*key.to_string_lossy()),
            "{msg}"
        );
        assert!(!cert.exists(), "must not generate over a lone key");
    }

    #[test]
    fn missing_without_generate() {
        let dir = TempDir::new("missing");
        let (cert, key) = (dir.path("ca.crt"), dir.path("ca.key"));
        let err = NodeCa::load_or_generate(&cert, &key, false).unwrap_err();
        assert!(matches!(err, TlsError::CaMissing { .. }), "{err}");
        assert!(!cert.exists() && !key.exists());
        let err = NodeCa::load_or_generate(&cert, &cert, true).unwrap_err();
        assert!(matches!(err, TlsError::SameFile { .. }), "{err}");
    }

    #[test]
    fn garbage_pem() {
        let dir = TempDir::new("garbage");
        let (cert, key) = (dir.path("ca.crt"), dir.path("ca.key"));
        NodeCa::load_or_generate(&cert, &key, true).unwrap();
        let good_cert = fs::read(&cert).unwrap();
        let good_key = fs::read(&key).unwrap();

        fs::write(&cert, "not a certificate\n").unwrap();
        let err = NodeCa::load_or_generate(&cert, &key, true).unwrap_err();
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");
        assert!(err.to_string().contains(&*cert.to_string_lossy()), "{err}");

        fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = NodeCa::load_or_generate(&cert, &key, true).unwrap_err();
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");

        // Valid PEM, not a certificate inside.
        fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nZm9vYmFy\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = NodeCa::load_or_generate(&cert, &key, true).unwrap_err();
        assert!(matches!(err, TlsError::CaUnusable { .. }), "{err}");

        fs::write(&cert, [&good_cert[..], &good_cert[..]].concat()).unwrap();
        let err = NodeCa::load_or_generate(&cert, &key, true).unwrap_err();
        assert!(err.to_string().contains("2 certificates"), "{err}");

        fs::write(&cert, &good_cert).unwrap();
        fs::write(&key, "garbage").unwrap();
        let err = NodeCa::load_or_generate(&cert, &key, true).unwrap_err();
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");
        assert!(err.to_string().contains(&*key.to_string_lossy()), "{err}");

        fs::write(
            &key,
            "-----BEGIN EC PRIVATE KEY-----\nZm9vYmFy\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = NodeCa::load_or_generate(&cert, &key, true).unwrap_err();
        assert!(err.to_string().contains("PKCS#8"), "{err}");

        fs::write(&key, &good_key).unwrap();
        NodeCa::load_or_generate(&cert, &key, false).unwrap();
    }

    #[test]
    fn key_from_another_ca() {
        let dir = TempDir::new("mismatch");
        let (cert, key) = (dir.path("ca.crt"), dir.path("ca.key"));
        NodeCa::load_or_generate(&cert, &key, true).unwrap();
        let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        fs::write(&key, other.serialize_pem()).unwrap();
        let err = NodeCa::load_or_generate(&cert, &key, true).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    }

    #[test]
    fn not_a_ca_or_expired() {
        let dir = TempDir::new("notca");
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let leaf = CertificateParams::new(vec!["leaf.example".to_string()]).unwrap();
        let (cert_path, key_path) = write_ca(&dir, &leaf, &key);
        let err = NodeCa::load_or_generate(&cert_path, &key_path, false).unwrap_err();
        assert!(err.to_string().contains("not a CA"), "{err}");

        let mut expired = CertificateParams::default();
        expired.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        expired.not_before = rcgen::date_time_ymd(2000, 1, 1);
        expired.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let (cert_path, key_path) = write_ca(&dir, &expired, &key);
        let err = NodeCa::load_or_generate(&cert_path, &key_path, false).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
    }

    /// A CA made elsewhere: PrintableString and custom attributes, an SKI
    /// that is not rcgen's derivation, RSA-free but P-384. Leaves must still
    /// chain to it byte for byte.
    #[test]
    fn foreign_ca_loads_and_signs() {
        let dir = TempDir::new("foreign");
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CountryName,
            rcgen::DnValue::PrintableString("DE".try_into().unwrap()),
        );
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Beispiel GmbH ü");
        params.distinguished_name.push(
            DnType::CustomDnType(vec![0, 9, 2342, 19_200_300, 100, 1, 25]),
            rcgen::DnValue::Ia5String("corp".try_into().unwrap()),
        );
        params.distinguished_name.push(
            DnType::CommonName,
            rcgen::DnValue::PrintableString("Corp Egress CA".try_into().unwrap()),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.key_identifier_method = KeyIdMethod::PreSpecified(vec![0xab; 20]);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2090, 1, 1);
        let (cert_path, key_path) = write_ca(&dir, &params, &key);
        let ca = NodeCa::load_or_generate(&cert_path, &key_path, false).unwrap();
        assert_eq!(ca.cert_pem(), fs::read_to_string(&cert_path).unwrap());
        verify(&ca, &ca, "svc.internal.example").unwrap();
        verify(&ca, &ca, "192.0.2.7").unwrap();
    }
}

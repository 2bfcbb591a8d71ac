//! The certificate authority: istiod's self-signed root, kept in the cluster, issuing the
//! certificates pilotfish serves with.
//!
//! Today it issues server certificates (the webhook's); the workload CA of the next step issues
//! SPIFFE certificates from the same [`Authority`]. The root is what istiod generates
//! (`O=<trust domain>`, CA, 10 years) and is persisted where istiod keeps it ([`secret`]), so
//! pilotfish and istiod can take over from each other without re-rooting the mesh.

mod der;
pub mod secret;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use secret::{load_or_create, LoadOptions};

/// istiod's default trust domain, written as the root's organization.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// Lifetime of a generated root: istiod's default (`CITADEL_SELF_SIGNED_CA_CERT_TTL`, 10 years).
pub const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start this much in the past, so a peer whose clock is a little behind does not
/// see them as not yet valid.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Why an authority could not be built or could not issue. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("ca-cert.pem: {0}")]
    Certificate(String),
    #[error("ca-key.pem: {0}")]
    Key(String),
    #[error("ca-key.pem does not belong to the certificate in ca-cert.pem (their public keys differ)")]
    KeyMismatch,
    #[error("signing a certificate: {0}")]
    Signing(#[from] rcgen::Error),
    #[error("issuing a certificate: {0}")]
    Request(String),
}

/// A root certificate and its key.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    root_pem: String,
    root_der: Vec<u8>,
    /// PKCS#8 PEM of the key, kept only to persist it.
    key_pem: String,
    not_after: SystemTime,
}

/// A certificate issued by the authority, with its fresh key.
#[derive(Clone)]
pub struct Issued {
    /// The leaf first, then the root: what a TLS server sends.
    pub cert_chain_pem: String,
    pub key_pem: String,
    pub not_after: SystemTime,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued").field("not_after", &self.not_after).field("key_pem", &"<redacted>").finish()
    }
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority").field("not_after", &self.not_after).field("key", &"<redacted>").finish()
    }
}

/// Sets a certificate's validity to whole seconds (what a certificate holds), so the times
/// reported by [`Issued`] are exactly the certificate's.
fn set_validity(params: &mut CertificateParams, from: SystemTime, to: SystemTime) -> Result<SystemTime, CaError> {
    let secs = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).map_err(|_| CaError::Request("a time before 1970".into()))
    };
    let (from, to) = (secs(from)?, secs(to)?);
    // rcgen's times are `time::OffsetDateTime`, built from its own epoch date so pilotfish
    // need not depend on `time`.
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(from);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(to);
    Ok(UNIX_EPOCH + Duration::from_secs(to))
}

impl Authority {
    /// A new self-signed root as istiod makes it: `O=<org>` (the trust domain), CA, 10 years;
    /// the key is ECDSA P-256.
    pub fn generate(org: &str) -> Result<Authority, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, org);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = SystemTime::now();
        set_validity(&mut params, now - BACKDATE, now + ROOT_TTL)?;
        let cert = params.self_signed(&key)?;
        // One path for generated and loaded roots: what is persisted is what is read back.
        Authority::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// A root read back from PEM (istiod's `ca-cert.pem` and `ca-key.pem`): the certificate must
    /// be a self-signed, unexpired CA, and the key (PKCS#8, PKCS#1 RSA or SEC1 EC) its own.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, CaError> {
        let cert = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .next()
            .ok_or_else(|| CaError::Certificate("no CERTIFICATE block".into()))?
            .map_err(|e| CaError::Certificate(format!("not PEM: {e}")))?;
        let info = der::certificate(&cert).map_err(|e| CaError::Certificate(e.to_string()))?;
        if !info.is_ca {
            return Err(CaError::Certificate("not a CA certificate (basicConstraints CA:TRUE is missing)".into()));
        }
        if info.issuer_raw != info.subject_raw {
            return Err(CaError::Certificate(
                "not self-signed; a CA under another root (istiod's `cacerts`) is not supported yet".into(),
            ));
        }
        if info.not_after <= SystemTime::now() {
            return Err(CaError::Certificate(format!("expired at {}", der::format_time(info.not_after))));
        }
        let key = key_pair(key_pem)?;
        if key.der_bytes() != info.public_key.as_slice() {
            return Err(CaError::KeyMismatch);
        }
        let params = issuer_params(&info)?;
        // The issuer name of every certificate issued must equal the root's subject byte for
        // byte, or chains do not verify: check the re-encoding once, here.
        let probe = params.self_signed(&key)?;
        if der::issuer_raw(probe.der()).ok().as_deref() != Some(info.subject_raw.as_slice()) {
            return Err(CaError::Certificate("the subject uses an encoding pilotfish cannot reproduce".into()));
        }
        let key_pem = key.serialize_pem();
        Ok(Authority {
            issuer: Issuer::new(params, key),
            root_pem: first_pem_block(cert_pem).unwrap_or_default(),
            root_der: cert.to_vec(),
            key_pem,
            not_after: info.not_after,
        })
    }

    /// The root certificate, PEM: what clients trust (the webhook's `caBundle`).
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The key as PKCS#8 PEM, to persist the authority.
    pub(crate) fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A TLS server certificate for `dns_names` (a fresh ECDSA P-256 key), valid for `ttl` but
    /// never past the root, with the chain a server sends.
    pub fn issue_server_cert(&self, dns_names: &[String], ttl: Duration) -> Result<Issued, CaError> {
        if dns_names.is_empty() {
            return Err(CaError::Request("a server certificate needs at least one DNS name".into()));
        }
        if ttl.is_zero() {
            return Err(CaError::Request("the certificate lifetime must be positive".into()));
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(dns_names.to_vec())?;
        // As istiod's DNS certificates: no subject, the names are in the (then critical) SAN.
        params.distinguished_name = DistinguishedName::new();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let now = SystemTime::now();
        let not_after = set_validity(&mut params, now - BACKDATE, (now + ttl).min(self.not_after))?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_chain_pem: format!("{}{}", cert.pem(), self.root_pem), key_pem: key.serialize_pem(), not_after })
    }
}

/// The key in any of the PEM forms istiod writes, as the PKCS#8 rcgen reads.
fn key_pair(key_pem: &str) -> Result<KeyPair, CaError> {
    // The parser's own errors may quote a line of the input: only say which kind of failure.
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| CaError::Key("no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block".into()))?;
    let pkcs8 = match &key {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        PrivateKeyDer::Pkcs1(k) => der::pkcs8_from_pkcs1(k.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(k) => der::pkcs8_from_sec1(k.secret_sec1_der()).map_err(|e| CaError::Key(e.to_string()))?,
        _ => return Err(CaError::Key("unsupported key format".into())),
    };
    KeyPair::try_from(pkcs8.as_slice()).map_err(|e| CaError::Key(format!("unsupported or malformed key: {e}")))
}

/// What rcgen needs to sign as this root: its subject, attribute by attribute, in the string
/// types it was written with.
fn issuer_params(info: &der::CertInfo) -> Result<CertificateParams, CaError> {
    let mut name = DistinguishedName::new();
    let mut seen = Vec::new();
    for attribute in &info.subject {
        let ty = DnType::from_oid(&attribute.oid);
        if seen.contains(&ty) {
            return Err(CaError::Certificate(format!("subject repeats attribute {:?}, which is not supported", attribute.oid)));
        }
        seen.push(ty.clone());
        let text = String::from_utf8(attribute.value.clone())
            .map_err(|_| CaError::Certificate(format!("subject attribute {:?} is not text", attribute.oid)))?;
        let unsupported = |_| CaError::Certificate(format!("subject attribute {:?} is malformed", attribute.oid));
        let value = match attribute.tag {
            0x0c => DnValue::Utf8String(text),
            0x13 => DnValue::PrintableString(text.as_str().try_into().map_err(unsupported)?),
            0x16 => DnValue::Ia5String(text.as_str().try_into().map_err(unsupported)?),
            tag => {
                return Err(CaError::Certificate(format!(
                    "subject attribute {:?} uses string type 0x{tag:02x}, which is not supported",
                    attribute.oid
                )));
            }
        };
        name.push(ty, value);
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// The text of the first `CERTIFICATE` block, markers included.
fn first_pem_block(pem: &str) -> Option<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find(BEGIN)?;
    let end = start + pem[start..].find(END)? + END.len();
    Some(format!("{}\n", &pem[start..end]))
}

#[cfg(test)]
mod tests;

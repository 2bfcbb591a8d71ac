//! The certificate authority: istiod's self-signed root, kept in the cluster, issuing the
//! certificates pilotfish serves with.
//!
//! It issues server certificates (the webhook's) and signs workloads' CSRs with their SPIFFE
//! identity ([`workload`]), from the same [`Authority`]. The root is what istiod generates
//! (`O=<trust domain>`, CA, 10 years) and is persisted where istiod keeps it ([`secret`]), so
//! pilotfish and istiod can take over from each other without re-rooting the mesh. An operator
//! may instead plug in an intermediate under their own root ([`plugged`]), and without a
//! cluster the root is kept in files ([`file`]).

mod csr;
pub mod file;
pub mod plugged;
pub mod root_cert;
pub mod secret;
pub mod serving;
pub mod spiffe;
pub mod workload;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::asn1_rs::{
    self, FromDer, Null, OctetString, Oid, Sequence, TaggedExplicit, ToDer,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION};

pub use secret::{LoadOptions, load_or_create};
pub use spiffe::{SpiffeId, SpiffeIdError};
pub use workload::{DEFAULT_WORKLOAD_CERT_TTL, MAX_WORKLOAD_CERT_TTL, WorkloadCert};

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
    #[error(
        "ca-key.pem does not belong to the certificate in ca-cert.pem (their public keys differ)"
    )]
    KeyMismatch,
    #[error("cert-chain.pem: {0}")]
    Chain(String),
    #[error("root-cert.pem: {0}")]
    Root(String),
    #[error("signing a certificate: {0}")]
    Signing(#[from] rcgen::Error),
    #[error("issuing a certificate: {0}")]
    Request(String),
    #[error("workload CSR: {0}")]
    Csr(String),
}

/// A signing certificate and its key: a self-signed root, or an intermediate under a mesh root.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// `ca-cert.pem`: the certificate signed with (the root itself when self-signed).
    cert_pem: String,
    /// What follows a leaf: the signing certificate, its issuers, the root last.
    chain: Vec<String>,
    /// Every root proxies trust (`root-cert.pem` may hold more than one during a rotation).
    root_pem: String,
    /// The root the chain ends at.
    root_der: Vec<u8>,
    /// PKCS#8 PEM of the key, kept only to persist it.
    key_pem: String,
    not_after: SystemTime,
    /// Longest workload certificate signed, whatever the request.
    max_workload_ttl: Duration,
}

/// A certificate issued by the authority, with its fresh key.
#[derive(Clone)]
pub struct Issued {
    /// The leaf first, then any intermediates, the root last: what a TLS server sends.
    pub cert_chain_pem: String,
    pub key_pem: String,
    pub not_after: SystemTime,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("not_after", &self.not_after)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("not_after", &self.not_after)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Sets a certificate's validity to whole seconds (what a certificate holds), so the times
/// reported by [`Issued`] are exactly the certificate's.
fn set_validity(
    params: &mut CertificateParams,
    from: SystemTime,
    to: SystemTime,
) -> Result<SystemTime, CaError> {
    let secs = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .map_err(|_| CaError::Request("a time before 1970".into()))
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
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        set_validity(&mut params, now - BACKDATE, now + ROOT_TTL)?;
        let cert = params.self_signed(&key)?;
        // One path for generated and loaded roots: what is persisted is what is read back.
        Authority::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// A root read back from PEM (istiod's `ca-cert.pem` and `ca-key.pem`): the certificate must
    /// be a self-signed, unexpired CA, and the key (PKCS#8, PKCS#1 RSA or SEC1 EC) its own.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, CaError> {
        let signer = Signer::new(cert_pem, key_pem)?;
        if !signer.self_signed {
            return Err(CaError::Certificate(
                "not self-signed; an intermediate CA is plugged in with its chain (`cacerts`, see ca::plugged)".into(),
            ));
        }
        let root = signer.cert.clone();
        let not_after = signer.not_after;
        Ok(signer.into_authority(vec![root.clone()], root.pem.clone(), root.der, not_after))
    }

    /// The root certificate, PEM: what clients trust (the webhook's `caBundle`).
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// Every root of [`Authority::root_pem`] for rustls: what a TLS peer of the mesh is checked
    /// against, server side or client side.
    pub fn root_store(&self) -> Result<rustls::RootCertStore, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(self.root_pem.as_bytes()) {
            roots.add(der.map_err(|e| rustls::Error::General(format!("the CA roots: {e}")))?)?;
        }
        Ok(roots)
    }

    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The certificate signed with (`ca-cert.pem`), PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The key as PKCS#8 PEM, to persist the authority.
    pub(crate) fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A TLS server certificate for `dns_names` (a fresh ECDSA P-256 key), valid for `ttl` but
    /// never past the root, with the chain a server sends.
    pub fn issue_server_cert(
        &self,
        dns_names: &[String],
        ttl: Duration,
    ) -> Result<Issued, CaError> {
        if dns_names.is_empty() {
            return Err(CaError::Request(
                "a server certificate needs at least one DNS name".into(),
            ));
        }
        if ttl.is_zero() {
            return Err(CaError::Request(
                "the certificate lifetime must be positive".into(),
            ));
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(dns_names.to_vec())?;
        // As istiod's DNS certificates: no subject, the names are in the (then critical) SAN.
        params.distinguished_name = DistinguishedName::new();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = SystemTime::now();
        let not_after = set_validity(&mut params, now - BACKDATE, (now + ttl).min(self.not_after))?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert_chain_pem = format!("{}{}", cert.pem(), self.chain.concat());
        Ok(Issued {
            cert_chain_pem,
            key_pem: key.serialize_pem(),
            not_after,
        })
    }
}

/// One certificate, as DER and as the PEM block it was read from.
#[derive(Clone)]
struct PemCert {
    der: Vec<u8>,
    pem: String,
}

/// Every `CERTIFICATE` block of `pem`, in order; `err` names the file in the error.
fn certificates(pem: &str, err: fn(String) -> CaError) -> Result<Vec<PemCert>, CaError> {
    let ders: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("not PEM: {e}")))?;
    let blocks = pem_blocks(pem);
    if blocks.len() != ders.len() {
        return Err(err("a CERTIFICATE block is not terminated".into()));
    }
    Ok(ders
        .into_iter()
        .zip(blocks)
        .map(|(der, pem)| PemCert {
            der: der.to_vec(),
            pem,
        })
        .collect())
}

/// `ca-cert.pem` and `ca-key.pem` checked as a pair that can sign, whoever issued the certificate.
struct Signer {
    issuer: Issuer<'static, KeyPair>,
    cert: PemCert,
    key_pem: String,
    not_after: SystemTime,
    self_signed: bool,
}

impl Signer {
    /// The first certificate of `cert_pem` must be an unexpired CA whose subject rcgen can write
    /// back, and the key (PKCS#8, PKCS#1 RSA or SEC1 EC) its own.
    fn new(cert_pem: &str, key_pem: &str) -> Result<Signer, CaError> {
        let cert = certificates(cert_pem, CaError::Certificate)?
            .into_iter()
            .next()
            .ok_or_else(|| CaError::Certificate("no CERTIFICATE block".into()))?;
        let (_, x509) = X509Certificate::from_der(&cert.der)
            .map_err(|e| CaError::Certificate(format!("not an X.509 certificate: {e}")))?;
        if !x509.is_ca() {
            return Err(CaError::Certificate(
                "not a CA certificate (basicConstraints CA:TRUE is missing)".into(),
            ));
        }
        let not_after = unexpired(&x509).map_err(CaError::Certificate)?;
        let key = key_pair(key_pem)?;
        if key.der_bytes() != &*x509.public_key().subject_public_key.data {
            return Err(CaError::KeyMismatch);
        }
        let key_pem = key.serialize_pem();
        // rcgen takes the subject, key usages and key identifier from the certificate itself.
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(cert.der.as_slice()), key)
            .map_err(|e| CaError::Certificate(format!("rcgen cannot sign as this CA: {e}")))?;
        // The issuer name of every certificate issued must equal the CA's subject byte for
        // byte, or chains do not verify; rcgen re-encodes it (one attribute per type, its own
        // order): check that once, here.
        let subject = x509.subject().as_raw();
        let probe = CertificateParams::default().signed_by(issuer.key(), &issuer)?;
        let probe_issuer = X509Certificate::from_der(probe.der())
            .map(|(_, probe)| probe.issuer().as_raw().to_vec());
        if probe_issuer.ok().as_deref() != Some(subject) {
            return Err(CaError::Certificate(
                "the subject uses an encoding pilotfish cannot reproduce".into(),
            ));
        }
        let self_signed = x509.issuer().as_raw() == subject;
        Ok(Signer {
            issuer,
            cert,
            key_pem,
            not_after,
            self_signed,
        })
    }

    /// `chain` follows every leaf; `root_pem` is what proxies trust, `root_der` the chain's end.
    fn into_authority(
        self,
        chain: Vec<PemCert>,
        root_pem: String,
        root_der: Vec<u8>,
        not_after: SystemTime,
    ) -> Authority {
        Authority {
            issuer: self.issuer,
            cert_pem: self.cert.pem,
            chain: chain.into_iter().map(|c| c.pem).collect(),
            root_pem,
            root_der,
            key_pem: self.key_pem,
            not_after,
            max_workload_ttl: MAX_WORKLOAD_CERT_TTL,
        }
    }
}

/// The certificate's notAfter, if it is still ahead.
fn unexpired(x509: &X509Certificate<'_>) -> Result<SystemTime, String> {
    let not_after = x509.validity().not_after;
    if not_after.timestamp() <= unix_seconds(SystemTime::now()) {
        return Err(format!("expired at {}", format_time(&not_after)));
    }
    u64::try_from(not_after.timestamp())
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
        .map_err(|_| "notAfter is before 1970".into())
}

/// The key in any of the PEM forms istiod writes, as the PKCS#8 rcgen reads: rcgen on ring
/// takes only PKCS#8, so PKCS#1 and SEC1 keys are put in its envelope.
fn key_pair(key_pem: &str) -> Result<KeyPair, CaError> {
    // The parser's own errors may quote a line of the input: only say which kind of failure.
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| {
        CaError::Key("no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block".into())
    })?;
    let wrap_err =
        |e: asn1_rs::SerializeError| CaError::Key(format!("cannot wrap the key as PKCS#8: {e}"));
    let pkcs8 = match &key {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        PrivateKeyDer::Pkcs1(k) => pkcs8(
            &OID_PKCS1_RSAENCRYPTION,
            Null {}.to_der_vec().map_err(wrap_err)?,
            k.secret_pkcs1_der(),
        )
        .map_err(wrap_err)?,
        PrivateKeyDer::Sec1(k) => {
            let curve = sec1_curve(k.secret_sec1_der())?;
            pkcs8(
                &OID_KEY_TYPE_EC_PUBLIC_KEY,
                curve.to_der_vec().map_err(wrap_err)?,
                k.secret_sec1_der(),
            )
            .map_err(wrap_err)?
        }
        _ => return Err(CaError::Key("unsupported key format".into())),
    };
    KeyPair::try_from(&PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8)))
        .map_err(|e| CaError::Key(format!("unsupported or malformed key: {e}")))
}

/// A PKCS#8 `PrivateKeyInfo`: version 0, the algorithm and its parameters, the key.
fn pkcs8(
    algorithm: &Oid<'_>,
    parameters: Vec<u8>,
    key: &[u8],
) -> Result<Vec<u8>, asn1_rs::SerializeError> {
    let algorithm = Sequence::new([algorithm.to_der_vec()?, parameters].concat().into());
    let info = [
        0u32.to_der_vec()?,
        algorithm.to_der_vec()?,
        OctetString::new(key).to_der_vec()?,
    ]
    .concat();
    Sequence::new(info.into()).to_der_vec()
}

/// The named curve of a SEC1 `ECPrivateKey` (RFC 5915), from its `[0] parameters`: PKCS#8
/// names the curve in the algorithm instead.
fn sec1_curve(sec1: &[u8]) -> Result<Oid<'_>, CaError> {
    Sequence::from_der_and_then(sec1, |fields| {
        let (fields, _version) = u32::from_der(fields)?;
        let (fields, _private_key) = OctetString::from_der(fields)?;
        let (fields, curve) = TaggedExplicit::<Oid, asn1_rs::Error, 0>::from_der(fields)?;
        Ok((fields, curve.into_inner()))
    })
    .map(|(_, curve)| curve)
    // The parser's errors carry no key bytes, but say only what was expected anyway.
    .map_err(|_| {
        CaError::Key("EC PRIVATE KEY: expected version, key and the [0] named curve".into())
    })
}

/// Whole seconds since 1970 (0 before), to compare with a certificate's times.
fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A certificate time as `2035-01-01T00:00:00Z`, for messages.
fn format_time(t: &x509_parser::time::ASN1Time) -> String {
    let t = t.to_datetime();
    let (month, day, hour, minute, second) = (
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    );
    format!(
        "{:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z",
        t.year()
    )
}

/// The text of each `CERTIFICATE` block, markers included, each ending in a newline.
fn pem_blocks(pem: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut blocks = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        blocks.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    blocks
}

#[cfg(test)]
mod tests;

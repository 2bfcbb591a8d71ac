//! Workload certificates, as istiod's CA signs them: the CSR gives only the key; the identity is
//! the SPIFFE id pilotfish authenticated, the only name in the certificate.

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    PublicKeyData, SanType, SerialNumber,
};

use super::spiffe::SpiffeId;
use super::{Authority, BACKDATE, CaError, csr, set_validity};

/// The longest workload certificate signed by default: istiod's `MAX_WORKLOAD_CERT_TTL`.
pub const MAX_WORKLOAD_CERT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// The lifetime of a request that asks for none: istiod's `DEFAULT_WORKLOAD_CERT_TTL`.
pub const DEFAULT_WORKLOAD_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// A signed workload certificate. No key: it never left the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadCert {
    /// PEM certificates, the leaf first, then any intermediates, the root last: what the workload
    /// presents.
    pub cert_chain: Vec<String>,
    pub not_after: SystemTime,
}

impl Authority {
    /// Caps the lifetime of the workload certificates this authority signs.
    pub fn with_max_workload_ttl(mut self, max: Duration) -> Authority {
        self.max_workload_ttl = max;
        self
    }

    pub fn max_workload_ttl(&self) -> Duration {
        self.max_workload_ttl
    }

    /// Signs the key of `csr_pem` (P-256 or RSA 2048+, signature checked) for `id`, valid for
    /// `ttl` but never past the root. As istiod: a zero `ttl` means
    /// [`DEFAULT_WORKLOAD_CERT_TTL`], and one over [`Authority::max_workload_ttl`] is refused
    /// rather than shortened, so a client learns why it got less than it asked.
    pub fn sign_workload(
        &self,
        csr_pem: &[u8],
        id: &SpiffeId,
        ttl: Duration,
    ) -> Result<WorkloadCert, CaError> {
        self.sign_workload_key(&csr::from_pem(csr_pem)?, id, ttl)
    }

    /// [`Authority::sign_workload`] for a key already checked: one pilotfish generated for a
    /// proxy that cannot make a CSR itself (stock Envoy over SDS).
    pub fn sign_workload_key(
        &self,
        key: &impl PublicKeyData,
        id: &SpiffeId,
        ttl: Duration,
    ) -> Result<WorkloadCert, CaError> {
        let ttl = if ttl.is_zero() {
            DEFAULT_WORKLOAD_CERT_TTL
        } else {
            ttl
        };
        if ttl > self.max_workload_ttl {
            return Err(CaError::Request(format!(
                "requested TTL {}s is greater than the max allowed TTL {}s",
                ttl.as_secs(),
                self.max_workload_ttl.as_secs()
            )));
        }
        let now = SystemTime::now();
        let until = (now + ttl).min(self.not_after);
        if until <= now {
            return Err(CaError::Request(
                "the CA has expired or the maximum lifetime is zero".into(),
            ));
        }
        let mut params = CertificateParams::default();
        // As istiod: no subject; the identity is the only SAN (then critical).
        params.distinguished_name = DistinguishedName::new();
        let uri = id
            .to_string()
            .try_into()
            .map_err(|e| CaError::Request(format!("SPIFFE id {id}: {e}")))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        // rcgen's default serial is a hash of the key: the same CSR signed twice would give two
        // certificates with one serial. istiod uses 128 random bits.
        params.serial_number = Some(random_serial()?);
        let not_after = set_validity(&mut params, now - BACKDATE, until)?;
        let leaf = params.signed_by(key, &self.issuer)?;
        let cert_chain = std::iter::once(leaf.pem())
            .chain(self.chain.iter().cloned())
            .collect();
        Ok(WorkloadCert {
            cert_chain,
            not_after,
        })
    }
}

/// 128 random bits, positive.
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| CaError::Request("no randomness for a serial number".into()))?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests;

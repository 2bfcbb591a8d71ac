//! A workload's certificate signing request, reduced to the one thing the CA takes from it: the
//! public key, once the request's signature proves the workload holds the private half.
//!
//! Everything else a CSR says (subject, SANs, extensions) is ignored: the identity comes from
//! authentication, never from the request.

use rcgen::{PublicKeyData, SignatureAlgorithm};
use rustls::pki_types::CertificateSigningRequestDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION};
use x509_parser::prelude::FromDer;

use super::CaError;

/// Larger PEM is refused before it is parsed; a real CSR is under 2 KiB.
pub const MAX_CSR_PEM_BYTES: usize = 64 * 1024;
/// Smaller RSA keys are refused, as by every current TLS policy.
pub const MIN_RSA_BITS: usize = 2048;

/// The verified public key of a CSR, as rcgen writes it into a certificate.
#[derive(Debug, Clone)]
pub struct CsrKey {
    /// The subjectPublicKey bits (an EC point or an RSAPublicKey).
    key: Vec<u8>,
    /// Chosen for how rcgen writes the key's algorithm: ecPublicKey + P-256, or rsaEncryption.
    algorithm: &'static SignatureAlgorithm,
}

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

fn csr_err(msg: impl Into<String>) -> CaError {
    CaError::Csr(msg.into())
}

/// The key of a PEM `CERTIFICATE REQUEST`, bounded in size, of a supported type, and signed by
/// its own key.
pub fn from_pem(pem: &[u8]) -> Result<CsrKey, CaError> {
    if pem.len() > MAX_CSR_PEM_BYTES {
        return Err(csr_err(format!(
            "{} bytes, more than the {MAX_CSR_PEM_BYTES} accepted",
            pem.len()
        )));
    }
    let der = CertificateSigningRequestDer::from_pem_slice(pem)
        .map_err(|_| csr_err("no PEM CERTIFICATE REQUEST block"))?;
    from_der(&der)
}

pub fn from_der(der: &[u8]) -> Result<CsrKey, CaError> {
    let (rest, csr) = X509CertificationRequest::from_der(der)
        .map_err(|e| csr_err(format!("not a PKCS#10 certificate request: {e}")))?;
    if !rest.is_empty() {
        return Err(csr_err(format!("{} bytes after the request", rest.len())));
    }
    let spki = &csr.certification_request_info.subject_pki;
    let algorithm = key_algorithm(spki)?;
    // Checked after the key type, so an unsupported key is named as such rather than reported
    // as a signature ring cannot check.
    csr.verify_signature().map_err(|e| {
        csr_err(format!(
            "the signature does not verify with its own key: {e}"
        ))
    })?;
    Ok(CsrKey {
        key: spki.subject_public_key.data.to_vec(),
        algorithm,
    })
}

/// P-256 ECDSA or RSA of at least [`MIN_RSA_BITS`]: what istio-agent and Envoy generate.
fn key_algorithm(
    spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
) -> Result<&'static SignatureAlgorithm, CaError> {
    const SUPPORTED: &str = "only ECDSA P-256 and RSA of 2048 bits or more are accepted";
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(curve) if curve == OID_EC_P256 => Ok(&rcgen::PKCS_ECDSA_P256_SHA256),
            Some(curve) => Err(csr_err(format!(
                "an ECDSA key on curve {curve}; {SUPPORTED}"
            ))),
            None => Err(csr_err(format!(
                "an ECDSA key without a named curve; {SUPPORTED}"
            ))),
        };
    }
    if *oid == OID_PKCS1_RSAENCRYPTION {
        let bits = match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => modulus_bits(rsa.modulus),
            _ => return Err(csr_err("a malformed RSA public key")),
        };
        if bits < MIN_RSA_BITS {
            return Err(csr_err(format!("an RSA key of {bits} bits; {SUPPORTED}")));
        }
        return Ok(&rcgen::PKCS_RSA_SHA256);
    }
    Err(csr_err(format!(
        "a public key of algorithm {oid}; {SUPPORTED}"
    )))
}

/// The bit length of a big-endian unsigned integer (x509-parser's `key_size` assumes a
/// leading zero byte).
fn modulus_bits(modulus: &[u8]) -> usize {
    match modulus.iter().position(|b| *b != 0) {
        Some(i) => (modulus.len() - i) * 8 - modulus[i].leading_zeros() as usize,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_bits_ignores_leading_zeros() {
        assert_eq!(modulus_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(modulus_bits(&[0x7f, 0xff]), 15);
        assert_eq!(modulus_bits(&[0x00, 0x00]), 0);
        assert_eq!(modulus_bits(&[0x01]), 1);
    }
}

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType, SignatureAlgorithm,
};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::super::{Authority, BACKDATE, CaError, csr, set_validity, unix_seconds};
use super::*;

/// Made with openssl: `O=evil, CN=admin`, SANs `spiffe://cluster.local/ns/istio-system/sa/istiod`
/// and `DNS:evil.example`.
const RSA_2048_CSR: &str = include_str!("../testdata/workload-rsa2048.csr");
const RSA_1024_CSR: &str = include_str!("../testdata/workload-rsa1024.csr");
const HOUR: Duration = Duration::from_secs(3600);

fn id() -> SpiffeId {
    SpiffeId::new("cluster.local", "default", "bookinfo-productpage").unwrap()
}

/// A CSR asking for more than it may have: another identity, a DNS name, a subject, CA rights.
fn greedy_csr(alg: &'static SignatureAlgorithm) -> String {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
    let istiod = "spiffe://cluster.local/ns/istio-system/sa/istiod".to_string();
    params
        .subject_alt_names
        .push(SanType::URI(istiod.try_into().unwrap()));
    params.distinguished_name.push(DnType::CommonName, "admin");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

fn csr_der(pem: &str) -> Vec<u8> {
    CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

fn csr_err(ca: &Authority, pem: &[u8]) -> String {
    ca.sign_workload(pem, &id(), HOUR).unwrap_err().to_string()
}

/// Verifies the chain as a TLS server checking a client certificate would (chain to `root`,
/// validity, key usage, EKU clientAuth, critical extensions understood).
fn verify_as_client_cert(root: &Authority, cert: &WorkloadCert) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(root.root_der().to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    let chain: Vec<CertificateDer> = cert
        .cert_chain
        .iter()
        .map(|pem| CertificateDer::from(der(pem)))
        .collect();
    verifier
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .map(|_| ())
}

#[test]
fn the_certificate_carries_only_the_authenticated_identity() {
    let ca = Authority::generate("cluster.local").unwrap();
    let csr_pem = greedy_csr(&rcgen::PKCS_ECDSA_P256_SHA256);
    let cert = ca.sign_workload(csr_pem.as_bytes(), &id(), HOUR).unwrap();
    assert_eq!(cert.cert_chain.len(), 2);
    assert_eq!(cert.cert_chain[1], ca.root_pem(), "root last");
    let leaf_der = der(&cert.cert_chain[0]);
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    assert_eq!(
        leaf.subject().iter_attributes().count(),
        0,
        "no subject: {}",
        leaf.subject()
    );
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(
        san.critical,
        "a SAN must be critical when the subject is empty"
    );
    let expected = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
    assert_eq!(san.value.general_names, vec![GeneralName::URI(expected)]);
    assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
    let usage = leaf.key_usage().unwrap().unwrap().value;
    assert!(
        usage.digital_signature() && usage.key_encipherment() && usage.flags.count_ones() == 2,
        "{usage:?}"
    );
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(
        eku.server_auth && eku.client_auth && !eku.any && !eku.code_signing && eku.other.is_empty(),
        "{eku:?}"
    );
    // The workload's key, byte for byte.
    let csr_der = csr_der(&csr_pem);
    let (_, request) = X509CertificationRequest::from_der(&csr_der).unwrap();
    assert_eq!(
        leaf.public_key().raw,
        request.certification_request_info.subject_pki.raw
    );
    verify_as_client_cert(&ca, &cert).unwrap();
}

#[test]
fn the_leaf_chains_to_its_root_only() {
    let ca = Authority::generate("cluster.local").unwrap();
    let cert = ca
        .sign_workload(
            greedy_csr(&rcgen::PKCS_ECDSA_P256_SHA256).as_bytes(),
            &id(),
            HOUR,
        )
        .unwrap();
    let (leaf_der, root_der) = (der(&cert.cert_chain[0]), der(&cert.cert_chain[1]));
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    let (_, root) = X509Certificate::from_der(&root_der).unwrap();
    leaf.verify_signature(Some(root.public_key())).unwrap();
    assert_eq!(leaf.issuer().as_raw(), root.subject().as_raw());
    let other = Authority::generate("cluster.local").unwrap();
    let (_, other_root) = X509Certificate::from_der(other.root_der()).unwrap();
    assert!(
        leaf.verify_signature(Some(other_root.public_key()))
            .is_err()
    );
    assert!(verify_as_client_cert(&other, &cert).is_err());
}

#[test]
fn two_signatures_of_one_csr_have_different_serials() {
    let ca = Authority::generate("cluster.local").unwrap();
    let csr_pem = greedy_csr(&rcgen::PKCS_ECDSA_P256_SHA256);
    let serial = |cert: &WorkloadCert| {
        let der = der(&cert.cert_chain[0]);
        X509Certificate::from_der(&der)
            .unwrap()
            .1
            .raw_serial()
            .to_vec()
    };
    let a = serial(&ca.sign_workload(csr_pem.as_bytes(), &id(), HOUR).unwrap());
    let b = serial(&ca.sign_workload(csr_pem.as_bytes(), &id(), HOUR).unwrap());
    assert_ne!(a, b);
    assert!(a.len() >= 15 && a[0] & 0x80 == 0, "{a:?}");
}

#[test]
fn lifetimes_are_the_request_within_the_maximum_and_capped_by_the_root() {
    let csr_pem = greedy_csr(&rcgen::PKCS_ECDSA_P256_SHA256);
    let lifetime = |ca: &Authority, ttl: Duration| {
        let cert = ca.sign_workload(csr_pem.as_bytes(), &id(), ttl).unwrap();
        let der = der(&cert.cert_chain[0]);
        let (_, leaf) = X509Certificate::from_der(&der).unwrap();
        let validity = leaf.validity();
        assert_eq!(
            validity.not_after.timestamp(),
            unix_seconds(cert.not_after),
            "reported exactly"
        );
        let now = unix_seconds(SystemTime::now());
        let backdate = now - validity.not_before.timestamp();
        assert!(
            (BACKDATE.as_secs() as i64..BACKDATE.as_secs() as i64 + 5).contains(&backdate),
            "{backdate}"
        );
        validity.not_after.timestamp() - now
    };
    let within = |secs: i64, expected: Duration| {
        (expected.as_secs() as i64 - 5..=expected.as_secs() as i64).contains(&secs)
    };
    let ca = Authority::generate("cluster.local").unwrap();
    assert_eq!(ca.max_workload_ttl(), MAX_WORKLOAD_CERT_TTL);
    let day = Duration::from_secs(24 * 3600);
    let got = lifetime(&ca, day);
    assert!(within(got, day), "{got}");
    let got = lifetime(&ca, MAX_WORKLOAD_CERT_TTL);
    assert!(within(got, MAX_WORKLOAD_CERT_TTL), "{got}");
    let got = lifetime(&ca, Duration::ZERO);
    assert!(
        within(got, DEFAULT_WORKLOAD_CERT_TTL),
        "no lifetime asked: istiod's default, {got}"
    );
    let err = ca
        .sign_workload(csr_pem.as_bytes(), &id(), 365 * day)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "issuing a certificate: requested TTL 31536000s is greater than the max allowed TTL 7776000s"
    );
    let ca = ca.with_max_workload_ttl(Duration::from_secs(600));
    assert!(ca.sign_workload(csr_pem.as_bytes(), &id(), day).is_err());
    let got = lifetime(&ca, Duration::from_secs(600));
    assert!(within(got, Duration::from_secs(600)), "{got}");

    // A root with two hours left caps a day-long request.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "cluster.local");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let now = SystemTime::now();
    set_validity(&mut params, now - BACKDATE, now + 2 * HOUR).unwrap();
    let root = params.self_signed(&key).unwrap();
    let short = Authority::from_pem(&root.pem(), &key.serialize_pem()).unwrap();
    let cert = short.sign_workload(csr_pem.as_bytes(), &id(), day).unwrap();
    assert_eq!(cert.not_after, short.not_after());

    let zero_max = Authority::generate("cluster.local")
        .unwrap()
        .with_max_workload_ttl(Duration::ZERO);
    assert!(
        zero_max
            .sign_workload(csr_pem.as_bytes(), &id(), day)
            .is_err()
    );
}

#[test]
fn garbage_oversized_and_other_pem_are_refused() {
    let ca = Authority::generate("cluster.local").unwrap();
    let err = csr_err(&ca, b"hello");
    assert_eq!(err, "workload CSR: no PEM CERTIFICATE REQUEST block");
    let err = csr_err(&ca, ca.root_pem().as_bytes());
    assert_eq!(err, "workload CSR: no PEM CERTIFICATE REQUEST block");
    // A valid CSR padded past the limit is refused for its size alone.
    let mut big = greedy_csr(&rcgen::PKCS_ECDSA_P256_SHA256);
    big.push_str(&" ".repeat(csr::MAX_CSR_PEM_BYTES));
    let err = csr_err(&ca, big.as_bytes());
    assert!(err.contains("more than the 65536 accepted"), "{err}");
    assert!(!err.contains("MII"), "{err}");
    let err = csr::from_der(&[0x30, 0x03, 0x02, 0x01, 0x00])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("workload CSR: not a PKCS#10 certificate request"),
        "{err}"
    );
    let mut trailing = csr_der(&greedy_csr(&rcgen::PKCS_ECDSA_P256_SHA256));
    trailing.push(0);
    assert_eq!(
        csr::from_der(&trailing).unwrap_err().to_string(),
        "workload CSR: 1 bytes after the request"
    );
}

#[test]
fn a_csr_whose_signature_does_not_match_is_refused() {
    let good = csr_der(&greedy_csr(&rcgen::PKCS_ECDSA_P256_SHA256));
    assert!(csr::from_der(&good).is_ok());
    // The request altered after signing: `evil.example` becomes `evim.example`.
    let at = good.windows(4).position(|w| w == b"evil").unwrap();
    let mut altered = good.clone();
    altered[at + 3] = b'm';
    // The signature altered: the last byte of the ECDSA `s`.
    let mut resigned = good.clone();
    *resigned.last_mut().unwrap() ^= 0x01;
    for tampered in [altered, resigned] {
        let err = csr::from_der(&tampered).unwrap_err();
        assert!(matches!(err, CaError::Csr(_)), "{err:?}");
        assert!(
            err.to_string().contains("the signature does not verify"),
            "{err}"
        );
    }
    let rsa = csr_der(RSA_2048_CSR);
    assert!(csr::from_der(&rsa).is_ok());
    let mut altered = rsa.clone();
    let at = rsa.windows(4).position(|w| w == b"evil").unwrap();
    altered[at] = b'E';
    assert!(
        csr::from_der(&altered)
            .unwrap_err()
            .to_string()
            .contains("the signature does not verify")
    );
}

#[test]
fn rsa_2048_is_signed_and_other_keys_are_refused_by_name() {
    let ca = Authority::generate("cluster.local").unwrap();
    let cert = ca
        .sign_workload(RSA_2048_CSR.as_bytes(), &id(), HOUR)
        .unwrap();
    verify_as_client_cert(&ca, &cert).unwrap();
    let der = der(&cert.cert_chain[0]);
    let (_, leaf) = X509Certificate::from_der(&der).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(
        san.general_names,
        vec![GeneralName::URI(
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
        )]
    );
    assert_eq!(leaf.subject().iter_attributes().count(), 0);

    let err = csr_err(&ca, RSA_1024_CSR.as_bytes());
    assert!(
        err.contains("an RSA key of 1024 bits; only ECDSA P-256 and RSA"),
        "{err}"
    );
    let err = csr_err(&ca, greedy_csr(&rcgen::PKCS_ECDSA_P384_SHA384).as_bytes());
    assert!(err.contains("an ECDSA key on curve 1.3.132.0.34"), "{err}");
    let err = csr_err(&ca, greedy_csr(&rcgen::PKCS_ED25519).as_bytes());
    assert!(
        err.contains("a public key of algorithm 1.3.101.112"),
        "{err}"
    );
}

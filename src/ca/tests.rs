use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::oid_registry::OID_X509_ORGANIZATION_NAME;

use super::*;

// Made with openssl as istiod makes its root: `O=cluster.local` as a PrintableString, RSA 2048
// with the key as PKCS#1 (`RSA PRIVATE KEY`); and an EC root with a SEC1 key. Valid to 2126.
const RSA_ROOT: &str = include_str!("testdata/istiod-rsa-root.pem");
const RSA_KEY: &str = include_str!("testdata/istiod-rsa-root-key.pem");
const EC_ROOT: &str = include_str!("testdata/ec-root.pem");
const EC_KEY: &str = include_str!("testdata/ec-root-key.pem");
// `O=cluster.local, O=second.org`: a subject rcgen cannot write back (one attribute per type).
const TWO_ORGS_ROOT: &str = include_str!("testdata/two-orgs-root.pem");
const TWO_ORGS_KEY: &str = include_str!("testdata/two-orgs-root-key.pem");

fn names() -> Vec<String> {
    ["istiod", "istiod.istio-system", "istiod.istio-system.svc"]
        .map(String::from)
        .to_vec()
}

/// Verifies `issued` as a TLS client trusting only `root` would, for `name`.
fn verify(root: &Authority, issued: &Issued, name: &str) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(root.root_der().to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    let chain: Vec<CertificateDer> =
        CertificateDer::pem_slice_iter(issued.cert_chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
        .map(|_| ())
}

#[test]
fn a_generated_root_issues_server_certificates_for_exactly_its_names() {
    let ca = Authority::generate("cluster.local").unwrap();
    let issued = ca
        .issue_server_cert(&names(), Duration::from_secs(3600))
        .unwrap();
    for name in names() {
        verify(&ca, &issued, &name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let err = verify(&ca, &issued, "istiod.other-ns.svc").unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");
    let other = Authority::generate("cluster.local").unwrap();
    assert!(
        verify(&other, &issued, "istiod").is_err(),
        "a different root must not verify it"
    );
    // Leaf, then root.
    assert_eq!(
        CertificateDer::pem_slice_iter(issued.cert_chain_pem.as_bytes()).count(),
        2
    );
    assert!(issued.cert_chain_pem.ends_with(ca.root_pem()));
}

#[test]
fn generated_roots_are_istiods_shape() {
    let ca = Authority::generate("example.org").unwrap();
    let (_, root) = X509Certificate::from_der(ca.root_der()).unwrap();
    assert!(root.is_ca());
    let subject: Vec<_> = root.subject().iter_attributes().collect();
    assert_eq!(subject.len(), 1);
    assert_eq!(subject[0].attr_type(), &OID_X509_ORGANIZATION_NAME);
    assert_eq!(subject[0].as_str().unwrap(), "example.org");
    let years = ca
        .not_after()
        .duration_since(SystemTime::now())
        .unwrap()
        .as_secs()
        / (365 * 24 * 3600);
    assert_eq!(
        years, 9,
        "ten years, minus the part of a year already begun"
    );
}

#[test]
fn lifetimes_are_capped_by_the_root_and_reported_exactly() {
    let ca = Authority::generate("cluster.local").unwrap();
    let issued = ca
        .issue_server_cert(&names(), Duration::from_secs(600))
        .unwrap();
    let left = issued.not_after.duration_since(SystemTime::now()).unwrap();
    assert!(
        left <= Duration::from_secs(600) && left > Duration::from_secs(590),
        "{left:?}"
    );
    let chain: Vec<_> = CertificateDer::pem_slice_iter(issued.cert_chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    assert_eq!(
        leaf.validity().not_after.timestamp(),
        unix_seconds(issued.not_after)
    );
    let forever = ca
        .issue_server_cert(&names(), Duration::from_secs(100 * 365 * 24 * 3600))
        .unwrap();
    assert_eq!(forever.not_after, ca.not_after());
}

#[test]
fn a_root_round_trips_through_pem() {
    let ca = Authority::generate("cluster.local").unwrap();
    let again = Authority::from_pem(ca.root_pem(), ca.key_pem()).unwrap();
    assert_eq!(again.root_der(), ca.root_der());
    let issued = again
        .issue_server_cert(&names(), Duration::from_secs(60))
        .unwrap();
    verify(&ca, &issued, "istiod").unwrap();
}

#[test]
fn istiods_rsa_root_with_a_pkcs1_key_and_printable_subject_signs_verifiable_chains() {
    let ca = Authority::from_pem(RSA_ROOT, RSA_KEY).unwrap();
    let issued = ca
        .issue_server_cert(&names(), Duration::from_secs(60))
        .unwrap();
    verify(&ca, &issued, "istiod.istio-system.svc").unwrap();
    assert!(
        ca.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"),
        "persisted as PKCS#8"
    );
}

#[test]
fn an_ec_root_with_a_sec1_key_signs_verifiable_chains() {
    let ca = Authority::from_pem(EC_ROOT, EC_KEY).unwrap();
    let issued = ca
        .issue_server_cert(&names(), Duration::from_secs(60))
        .unwrap();
    verify(&ca, &issued, "istiod").unwrap();
    assert!(
        ca.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"),
        "persisted as PKCS#8"
    );
    let again = Authority::from_pem(ca.root_pem(), ca.key_pem()).unwrap();
    assert_eq!(again.root_der(), ca.root_der());
}

#[test]
fn an_expired_root_is_refused_with_its_date() {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2024, 2, 29);
    let cert = params.self_signed(&key).unwrap();
    let err = Authority::from_pem(&cert.pem(), &key.serialize_pem())
        .unwrap_err()
        .to_string();
    assert_eq!(err, "ca-cert.pem: expired at 2024-02-29T00:00:00Z");
}

#[test]
fn bad_input_is_named_and_keys_never_appear() {
    let ca = Authority::generate("cluster.local").unwrap();
    let other = Authority::generate("cluster.local").unwrap();
    let cases: Vec<(String, String, &str)> = vec![
        (
            "garbage".into(),
            ca.key_pem().into(),
            "ca-cert.pem: no CERTIFICATE block",
        ),
        (
            ca.root_pem().into(),
            "garbage".into(),
            "ca-key.pem: no PRIVATE KEY",
        ),
        (
            ca.root_pem().into(),
            other.key_pem().into(),
            "public keys differ",
        ),
        (RSA_ROOT.into(), EC_KEY.into(), "public keys differ"),
        (EC_ROOT.into(), RSA_KEY.into(), "public keys differ"),
        (
            TWO_ORGS_ROOT.into(),
            TWO_ORGS_KEY.into(),
            "the subject uses an encoding pilotfish cannot reproduce",
        ),
    ];
    // A line of base64 from the middle of a key: none of it may leak into messages.
    let secret = |pem: &str| pem.lines().nth(1).unwrap().to_string();
    for (cert, key, expected) in cases {
        let err = Authority::from_pem(&cert, &key).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
        assert!(
            !key.contains("BEGIN") || !err.contains(&secret(&key)),
            "{err}"
        );
    }
    let leaf = ca
        .issue_server_cert(&names(), Duration::from_secs(60))
        .unwrap();
    let err = Authority::from_pem(&leaf.cert_chain_pem, &leaf.key_pem)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a CA certificate"), "{err}");
    let debug = format!("{ca:?} {leaf:?}");
    assert!(debug.matches("<redacted>").count() == 2, "{debug}");
    assert!(
        !debug.contains(&secret(ca.key_pem())) && !debug.contains(&secret(&leaf.key_pem)),
        "{debug}"
    );
}

#[test]
fn a_server_certificate_needs_names_and_time() {
    let ca = Authority::generate("cluster.local").unwrap();
    assert!(
        ca.issue_server_cert(&[], Duration::from_secs(60))
            .unwrap_err()
            .to_string()
            .contains("at least one DNS name")
    );
    assert!(
        ca.issue_server_cert(&names(), Duration::ZERO)
            .unwrap_err()
            .to_string()
            .contains("positive")
    );
}

#[test]
fn a_sec1_key_names_its_curve_or_is_refused() {
    use rustls::pki_types::PrivateSec1KeyDer;
    use x509_parser::oid_registry::OID_EC_P256;
    let key = PrivateSec1KeyDer::from_pem_slice(EC_KEY.as_bytes()).unwrap();
    let der = key.secret_sec1_der();
    assert_eq!(sec1_curve(der).unwrap(), OID_EC_P256);
    // SEQUENCE { INTEGER 1, OCTET STRING (32 bytes), [0] { OID prime256v1 }, [1] { point } }:
    // without the optional [0], the curve is unknown.
    let curve_at = 2 + 3 + 2 + 32;
    assert_eq!(&der[curve_at..curve_at + 2], &[0xa0, 0x0a]);
    let mut cut = [&der[..curve_at], &der[curve_at + 12..]].concat();
    cut[1] -= 12;
    let err = sec1_curve(&cut).unwrap_err().to_string();
    assert_eq!(
        err,
        "ca-key.pem: EC PRIVATE KEY: expected version, key and the [0] named curve"
    );
}

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;

use super::super::{BACKDATE, set_validity, unix_seconds};
use super::*;
use crate::ca::SpiffeId;

const HOUR: Duration = Duration::from_secs(3600);

/// A CA made in the test: its certificate, its key, and rcgen's issuer to sign below it.
struct TestCa {
    pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate named `O=cluster.local, CN=<name>`, a CA when `ca`, signed by `parent` (self-signed
/// without), valid for `ttl`.
fn make(name: &str, parent: Option<&TestCa>, ca: bool, ttl: Duration) -> TestCa {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "cluster.local");
    params.distinguished_name.push(DnType::CommonName, name);
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
    } else {
        params.is_ca = IsCa::ExplicitNoCa;
    }
    let now = SystemTime::now();
    set_validity(&mut params, now - BACKDATE, now + ttl).unwrap();
    let cert = match parent {
        Some(parent) => params.signed_by(&key, &parent.issuer).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    TestCa {
        pem: cert.pem(),
        key_pem: key.serialize_pem(),
        issuer: Issuer::new(params, key),
    }
}

fn ca(name: &str, parent: Option<&TestCa>) -> TestCa {
    make(name, parent, true, 365 * 24 * HOUR)
}

/// A root and an intermediate under it.
fn hierarchy() -> (TestCa, TestCa) {
    let root = ca("root", None);
    let intermediate = ca("intermediate", Some(&root));
    (root, intermediate)
}

fn csr() -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

fn id() -> SpiffeId {
    SpiffeId::new("cluster.local", "default", "reviews").unwrap()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// Checks that each certificate of `chain` names the next as issuer and carries its signature.
fn assert_linked(chain: &[String]) {
    for pair in chain.windows(2) {
        let (child, parent) = (der(&pair[0]), der(&pair[1]));
        let (_, child) = X509Certificate::from_der(&child).unwrap();
        let (_, parent) = X509Certificate::from_der(&parent).unwrap();
        assert_eq!(
            child.issuer().as_raw(),
            parent.subject().as_raw(),
            "{} / {}",
            child.issuer(),
            parent.subject()
        );
        child.verify_signature(Some(parent.public_key())).unwrap();
    }
}

fn trusting(root_pem: &str) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(der(root_pem))).unwrap();
    Arc::new(roots)
}

fn chain_ders(chain: &[String]) -> Vec<CertificateDer<'static>> {
    chain
        .iter()
        .map(|pem| CertificateDer::from(der(pem)))
        .collect()
}

#[test]
fn an_intermediate_signs_chains_that_verify_link_by_link_to_the_root() {
    let (root, intermediate) = hierarchy();
    let chain = format!("{}{}", intermediate.pem, root.pem);
    let authority =
        Authority::from_plugged(&intermediate.pem, &intermediate.key_pem, &chain, &root.pem)
            .unwrap();
    assert_eq!(
        authority.root_pem(),
        root.pem,
        "proxies trust the mesh root"
    );
    assert_eq!(authority.root_der(), der(&root.pem));
    assert_eq!(authority.cert_pem(), intermediate.pem);

    let cert = authority
        .sign_workload(csr().as_bytes(), &id(), HOUR)
        .unwrap();
    assert_eq!(cert.cert_chain.len(), 3);
    assert_eq!(
        cert.cert_chain[1..],
        [intermediate.pem.clone(), root.pem.clone()]
    );
    assert_linked(&cert.cert_chain);
    // As a peer trusting only the root sees it, and not one trusting another root.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(trusting(&root.pem), provider.clone())
            .build()
            .unwrap();
    let ders = chain_ders(&cert.cert_chain);
    verifier
        .verify_client_cert(&ders[0], &ders[1..], UnixTime::now())
        .unwrap();
    let other = ca("root", None);
    let verifier =
        WebPkiClientVerifier::builder_with_provider(trusting(&other.pem), provider.clone())
            .build()
            .unwrap();
    assert!(
        verifier
            .verify_client_cert(&ders[0], &ders[1..], UnixTime::now())
            .is_err()
    );

    let issued = authority
        .issue_server_cert(&["istiod.istio-system.svc".to_string()], HOUR)
        .unwrap();
    let pems: Vec<String> = super::super::pem_blocks(&issued.cert_chain_pem);
    assert_eq!(pems[1..], [intermediate.pem.clone(), root.pem.clone()]);
    assert_linked(&pems);
    let verifier = WebPkiServerVerifier::builder_with_provider(trusting(&root.pem), provider)
        .build()
        .unwrap();
    let ders = chain_ders(&pems);
    let name = ServerName::try_from("istiod.istio-system.svc").unwrap();
    verifier
        .verify_server_cert(&ders[0], &ders[1..], &name, &[], UnixTime::now())
        .unwrap();
}

#[test]
fn a_chain_may_stop_below_the_root_and_may_be_deeper() {
    let root = ca("root", None);
    let middle = ca("middle", Some(&root));
    let issuing = ca("issuing", Some(&middle));
    // cert-chain.pem without the root: the root is taken from root-cert.pem.
    let chain = format!("{}{}", issuing.pem, middle.pem);
    let authority =
        Authority::from_plugged(&issuing.pem, &issuing.key_pem, &chain, &root.pem).unwrap();
    let cert = authority
        .sign_workload(csr().as_bytes(), &id(), HOUR)
        .unwrap();
    assert_eq!(
        cert.cert_chain[1..],
        [issuing.pem.clone(), middle.pem.clone(), root.pem.clone()]
    );
    assert_linked(&cert.cert_chain);
    // root-cert.pem with two roots (a rotation): both are trusted, the chain ends at its own.
    let other = ca("next-root", None);
    let bundle = format!("{}{}", other.pem, root.pem);
    let authority =
        Authority::from_plugged(&issuing.pem, &issuing.key_pem, &chain, &bundle).unwrap();
    assert_eq!(authority.root_pem(), bundle);
    let cert = authority
        .sign_workload(csr().as_bytes(), &id(), HOUR)
        .unwrap();
    assert_eq!(cert.cert_chain.last(), Some(&root.pem));
}

#[test]
fn an_empty_chain_means_ca_cert_is_the_root() {
    let (root, intermediate) = hierarchy();
    let authority = Authority::from_plugged(&root.pem, &root.key_pem, "", &root.pem).unwrap();
    let cert = authority
        .sign_workload(csr().as_bytes(), &id(), HOUR)
        .unwrap();
    assert_eq!(cert.cert_chain.len(), 2);
    assert_eq!(cert.cert_chain[1], root.pem);
    assert_linked(&cert.cert_chain);
    let err = Authority::from_plugged(&intermediate.pem, &intermediate.key_pem, "\n", &root.pem)
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cert-chain.pem: empty, so ca-cert.pem must be the root"),
        "{err}"
    );
}

#[test]
fn a_chain_that_does_not_lead_to_root_cert_is_refused() {
    let (root, intermediate) = hierarchy();
    let chain = format!("{}{}", intermediate.pem, root.pem);
    let plug = |chain: &str, roots: &str| {
        Authority::from_plugged(&intermediate.pem, &intermediate.key_pem, chain, roots)
            .unwrap_err()
            .to_string()
    };
    // Another root altogether.
    let other = ca("other-root", None);
    let err = plug(&intermediate.pem, &other.pem);
    assert!(
        err.starts_with("cert-chain.pem: does not lead to root-cert.pem"),
        "{err}"
    );
    assert!(
        err.contains("CN=root") && err.contains("CN=other-root"),
        "{err}"
    );
    // cert-chain.pem ends at a root that root-cert.pem does not hold.
    let err = plug(&chain, &other.pem);
    assert!(
        err.starts_with("cert-chain.pem: does not lead to root-cert.pem"),
        "{err}"
    );
    // A root of the same name but another key: only the signature tells them apart.
    let impostor = ca("root", None);
    let err = plug(&intermediate.pem, &impostor.pem);
    assert!(
        err.starts_with("cert-chain.pem: does not lead to root-cert.pem"),
        "{err}"
    );
    assert!(err.contains("does not verify"), "{err}");
    let err = plug(
        &format!("{}{}", intermediate.pem, impostor.pem),
        &impostor.pem,
    );
    assert!(
        err.starts_with("cert-chain.pem: certificate 1: has a signature the key of"),
        "{err}"
    );
    // A chain that does not begin with ca-cert.
    let err = plug(&root.pem, &root.pem);
    assert_eq!(
        err,
        "cert-chain.pem: its first certificate must be the one of ca-cert.pem"
    );
    // Nothing to trust.
    assert_eq!(plug(&chain, ""), "root-cert.pem: no CERTIFICATE block");
    let err = plug(&chain[..chain.len() - 10], &root.pem);
    assert!(err.starts_with("cert-chain.pem: "), "{err}");
}

#[test]
fn a_key_that_is_not_ca_certs_and_a_non_ca_ca_cert_are_refused() {
    let (root, intermediate) = hierarchy();
    let chain = format!("{}{}", intermediate.pem, root.pem);
    let other = ca("intermediate", Some(&root));
    let err = Authority::from_plugged(&intermediate.pem, &other.key_pem, &chain, &root.pem)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("ca-key.pem does not belong to the certificate in ca-cert.pem"),
        "{err}"
    );
    let key_line = other.key_pem.lines().nth(1).unwrap();
    assert!(!err.contains(key_line), "{err}");

    let leaf = make("workload", Some(&root), false, HOUR);
    let chain = format!("{}{}", leaf.pem, root.pem);
    let err = Authority::from_plugged(&leaf.pem, &leaf.key_pem, &chain, &root.pem)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("ca-cert.pem: not a CA certificate"),
        "{err}"
    );
    // A CA above ca-cert that is not a CA: the chain is refused too.
    let not_ca = make("not-a-ca", None, false, HOUR);
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "below-a-leaf");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let below = params.signed_by(&key, &not_ca.issuer).unwrap().pem();
    let err = Authority::from_plugged(
        &below,
        &key.serialize_pem(),
        &format!("{below}{}", not_ca.pem),
        &not_ca.pem,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("which is not a CA"), "{err}");
}

#[test]
fn nothing_signed_outlives_the_earliest_expiry_of_the_chain() {
    let root = make("root", None, true, 2 * HOUR);
    let intermediate = ca("intermediate", Some(&root));
    let chain = format!("{}{}", intermediate.pem, root.pem);
    let authority =
        Authority::from_plugged(&intermediate.pem, &intermediate.key_pem, &chain, &root.pem)
            .unwrap();
    let (_, x509) = X509Certificate::from_der(authority.root_der()).unwrap();
    assert_eq!(
        unix_seconds(authority.not_after()),
        x509.validity().not_after.timestamp()
    );
    let cert = authority
        .sign_workload(csr().as_bytes(), &id(), 24 * HOUR)
        .unwrap();
    assert_eq!(cert.not_after, authority.not_after());
}

fn write_all(dir: &Path, root: &TestCa, intermediate: &TestCa) {
    std::fs::write(dir.join(CA_CERT), &intermediate.pem).unwrap();
    std::fs::write(dir.join(CA_KEY), &intermediate.key_pem).unwrap();
    std::fs::write(
        dir.join(CERT_CHAIN),
        format!("{}{}", intermediate.pem, root.pem),
    )
    .unwrap();
    std::fs::write(dir.join(ROOT_CERT), &root.pem).unwrap();
}

#[test]
fn from_dir_reads_all_four_files_or_none() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        from_dir(dir.path()).unwrap().is_none(),
        "an empty directory: no plugged-in CA"
    );
    assert!(from_dir(&dir.path().join("absent")).unwrap().is_none());

    let (root, intermediate) = hierarchy();
    write_all(dir.path(), &root, &intermediate);
    let authority = from_dir(dir.path()).unwrap().unwrap();
    assert_eq!(authority.cert_pem(), intermediate.pem);
    assert_eq!(authority.root_pem(), root.pem);

    std::fs::remove_file(dir.path().join(CERT_CHAIN)).unwrap();
    let err = from_dir(dir.path()).unwrap_err().to_string();
    let expected = format!("{}: cert-chain.pem is missing", dir.path().display());
    assert!(err.starts_with(&expected), "{err}");
    // ca-cert.pem absent but the others there: still an error, not "no CA".
    write_all(dir.path(), &root, &intermediate);
    std::fs::remove_file(dir.path().join(CA_CERT)).unwrap();
    assert!(
        from_dir(dir.path())
            .unwrap_err()
            .to_string()
            .contains("ca-cert.pem is missing")
    );

    write_all(dir.path(), &root, &intermediate);
    std::fs::write(dir.path().join(ROOT_CERT), ca("other", None).pem).unwrap();
    let err = from_dir(dir.path()).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{}: cert-chain.pem: does not lead",
            dir.path().display()
        )),
        "{err}"
    );
}

#[test]
fn from_secret_reads_the_cacerts_keys() {
    let (root, intermediate) = hierarchy();
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let data = BTreeMap::from([
        (CA_CERT.to_string(), bytes(&intermediate.pem)),
        (CA_KEY.to_string(), bytes(&intermediate.key_pem)),
        (
            CERT_CHAIN.to_string(),
            bytes(&format!("{}{}", intermediate.pem, root.pem)),
        ),
        (ROOT_CERT.to_string(), bytes(&root.pem)),
    ]);
    let mut secret = Secret {
        data: Some(data),
        ..Secret::default()
    };
    let authority = from_secret(&secret, "istio-system").unwrap();
    assert_eq!(authority.cert_pem(), intermediate.pem);
    secret.data.as_mut().unwrap().remove(ROOT_CERT);
    let err = from_secret(&secret, "istio-system")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "Secret istio-system/cacerts: data.root-cert.pem is missing"
    );
    secret
        .data
        .as_mut()
        .unwrap()
        .insert(ROOT_CERT.into(), bytes(&ca("other", None).pem));
    let err = from_secret(&secret, "istio-system")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("Secret istio-system/cacerts: cert-chain.pem: "),
        "{err}"
    );
}

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use rcgen::{CertificateParams, KeyPair};

use super::*;

/// A self-signed certificate for `host` and its key, PEM.
pub(crate) struct TestCert {
    pub cert: String,
    pub key: String,
}

pub(crate) fn test_cert(host: &str) -> TestCert {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = CertificateParams::new(vec![host.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    TestCert {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// A Secret manifest with these `stringData` keys.
pub(crate) fn secret_yaml(namespace: &str, name: &str, data: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\nstringData:\n"
    );
    for (key, value) in data {
        if value.is_empty() {
            yaml += &format!("  {key}: \"\"\n");
            continue;
        }
        yaml += &format!("  {key}: |\n");
        for line in value.lines() {
            yaml += &format!("    {line}\n");
        }
    }
    yaml
}

/// The index of these manifests, which must parse without errors.
pub(crate) fn index_of(manifests: &[String]) -> Index {
    Index::from_yaml(&manifests.join("---\n"))
}

fn credential(name: &str) -> CredentialRef {
    CredentialRef::parse(name, "edge").unwrap()
}

fn decoded(resource: &Resource) -> Secret {
    resource.decode::<Secret>().unwrap()
}

fn bytes(source: Option<&DataSource>) -> &[u8] {
    match source.and_then(|s| s.specifier.as_ref()) {
        Some(Specifier::InlineBytes(b)) => b,
        other => panic!("not inline bytes: {other:?}"),
    }
}

#[test]
fn credential_names_resolve_in_the_proxy_namespace_only() {
    let plain = CredentialRef::parse("web", "edge").unwrap();
    assert_eq!(
        (
            plain.sds_name.as_str(),
            plain.namespace.as_str(),
            plain.name.as_str()
        ),
        ("kubernetes://web", "edge", "web")
    );
    assert_eq!(plain.ca_sds_name(), "kubernetes://web-cacert");
    let prefixed = CredentialRef::parse("kubernetes://edge/web", "edge").unwrap();
    assert_eq!(
        (prefixed.sds_name.as_str(), prefixed.name.as_str()),
        ("kubernetes://edge/web", "web")
    );
    assert_eq!(
        CredentialRef::parse("shop/web", "edge"),
        Err(CredentialError::OtherNamespace {
            namespace: "shop".into(),
            name: "web".into(),
            proxy_namespace: "edge".into()
        })
    );
    for unsupported in ["sds://web", "builtin://", "a/b/c", "", "kubernetes://"] {
        assert_eq!(
            CredentialRef::parse(unsupported, "edge"),
            Err(CredentialError::Unsupported(unsupported.into())),
            "{unsupported}"
        );
    }
}

#[test]
fn a_tls_secret_becomes_a_tls_certificate_with_its_ocsp_staple() {
    let pki = test_cert("web.example.com");
    let index = index_of(&[secret_yaml(
        "edge",
        "web",
        &[
            ("tls.crt", &pki.cert),
            ("tls.key", &pki.key),
            ("tls.ocsp-staple", "STAPLE"),
        ],
    )]);
    let resource = certificate(&index, &credential("web")).unwrap();
    assert_eq!(resource.name, "kubernetes://web");
    let secret = decoded(&resource);
    assert_eq!(secret.name, "kubernetes://web");
    let Some(secret::Type::TlsCertificate(tls)) = &secret.r#type else {
        panic!("{:?}", secret.r#type)
    };
    assert_eq!(bytes(tls.certificate_chain.as_ref()), pki.cert.as_bytes());
    assert_eq!(bytes(tls.private_key.as_ref()), pki.key.as_bytes());
    assert_eq!(bytes(tls.ocsp_staple.as_ref()), b"STAPLE\n");
}

#[test]
fn generic_keys_win_over_tls_keys_as_in_istiod() {
    let (generic, tls) = (
        test_cert("generic.example.com"),
        test_cert("tls.example.com"),
    );
    let index = index_of(&[secret_yaml(
        "edge",
        "web",
        &[
            ("cert", &generic.cert),
            ("key", &generic.key),
            ("tls.crt", &tls.cert),
            ("tls.key", &tls.key),
        ],
    )]);
    let secret = decoded(&certificate(&index, &credential("web")).unwrap());
    let Some(secret::Type::TlsCertificate(cert)) = &secret.r#type else {
        panic!()
    };
    assert_eq!(
        bytes(cert.certificate_chain.as_ref()),
        generic.cert.as_bytes()
    );
}

#[test]
fn the_ca_comes_from_the_cacert_secret_else_from_the_credential_itself() {
    let (server, client_ca, other_ca) = (
        test_cert("web.example.com"),
        test_cert("ca"),
        test_cert("other-ca"),
    );
    let same = index_of(&[secret_yaml(
        "edge",
        "web",
        &[
            ("tls.crt", &server.cert),
            ("tls.key", &server.key),
            ("ca.crt", &client_ca.cert),
        ],
    )]);
    let resource = ca_certificate(&same, &credential("web")).unwrap();
    assert_eq!(resource.name, "kubernetes://web-cacert");
    let secret = decoded(&resource);
    let Some(secret::Type::ValidationContext(v)) = &secret.r#type else {
        panic!("{:?}", secret.r#type)
    };
    assert_eq!(bytes(v.trusted_ca.as_ref()), client_ca.cert.as_bytes());
    assert!(v.crl.is_none());

    let separate = index_of(&[
        secret_yaml(
            "edge",
            "web",
            &[
                ("tls.crt", &server.cert),
                ("tls.key", &server.key),
                ("ca.crt", &other_ca.cert),
            ],
        ),
        secret_yaml("edge", "web-cacert", &[("cacert", &client_ca.cert)]),
    ]);
    let secret = decoded(&ca_certificate(&separate, &credential("web")).unwrap());
    let Some(secret::Type::ValidationContext(v)) = &secret.r#type else {
        panic!()
    };
    assert_eq!(
        bytes(v.trusted_ca.as_ref()),
        client_ca.cert.as_bytes(),
        "the -cacert Secret wins"
    );

    // A -cacert Secret without a CA is not passed over for the credential's own.
    let empty = index_of(&[
        secret_yaml(
            "edge",
            "web",
            &[
                ("tls.crt", &server.cert),
                ("tls.key", &server.key),
                ("ca.crt", &other_ca.cert),
            ],
        ),
        secret_yaml("edge", "web-cacert", &[("tls.crt", &server.cert)]),
    ]);
    let err = ca_certificate(&empty, &credential("web")).unwrap_err();
    assert_eq!(
        err,
        CredentialError::MissingKeys {
            namespace: "edge".into(),
            name: "web-cacert".into(),
            expected: "cacert or ca.crt",
            found: "tls.crt".into()
        }
    );
}

#[test]
fn missing_and_malformed_credentials_name_the_secret_and_key() {
    let (pki, other) = (test_cert("web.example.com"), test_cert("other.example.com"));
    let index = index_of(&[
        secret_yaml(
            "edge",
            "empty-key",
            &[("tls.crt", &pki.cert), ("tls.key", "")],
        ),
        secret_yaml(
            "edge",
            "mismatch",
            &[("tls.crt", &pki.cert), ("tls.key", &other.key)],
        ),
        secret_yaml(
            "edge",
            "garbage",
            &[("tls.crt", "not a certificate"), ("tls.key", &pki.key)],
        ),
        secret_yaml(
            "edge",
            "bad-key",
            &[
                ("cert", &pki.cert),
                (
                    "key",
                    "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
                ),
            ],
        ),
        secret_yaml(
            "edge",
            "bad-crl",
            &[
                ("tls.crt", &pki.cert),
                ("tls.key", &pki.key),
                ("ca.crt", &pki.cert),
                ("ca.crl", "not a CRL"),
            ],
        ),
        secret_yaml(
            "other",
            "web",
            &[("tls.crt", &pki.cert), ("tls.key", &pki.key)],
        ),
    ]);
    assert_eq!(
        certificate(&index, &credential("web")).unwrap_err(),
        CredentialError::NotFound {
            namespace: "edge".into(),
            name: "web".into()
        },
        "a Secret of another namespace is not found"
    );
    assert_eq!(
        certificate(&index, &credential("empty-key")).unwrap_err(),
        CredentialError::MissingKeys {
            namespace: "edge".into(),
            name: "empty-key".into(),
            expected: "cert and key, or tls.crt and tls.key",
            found: "tls.crt, tls.key (empty)".into()
        }
    );
    let malformed = |name: &str| match certificate(&index, &credential(name)) {
        Err(CredentialError::Malformed {
            name: n,
            key,
            problem,
            ..
        }) => {
            assert_eq!(n, name);
            (key, problem)
        }
        other => panic!("{name}: {other:?}"),
    };
    let (key, problem) = malformed("mismatch");
    assert_eq!(key, "tls.key");
    assert!(problem.contains("does not belong"), "{problem}");
    assert_eq!(malformed("garbage").0, "tls.crt");
    assert_eq!(malformed("bad-key").0, "key");
    assert_eq!(
        ca_certificate(&index, &credential("mismatch")).unwrap_err(),
        CredentialError::NoCa {
            namespace: "edge".into(),
            name: "mismatch".into(),
            found: "tls.crt, tls.key".into()
        }
    );
    match ca_certificate(&index, &credential("bad-crl")) {
        Err(CredentialError::Malformed { key: "ca.crl", .. }) => {}
        other => panic!("{other:?}"),
    }
    // No message quotes key material.
    for name in ["mismatch", "bad-key"] {
        let message = certificate(&index, &credential(name))
            .unwrap_err()
            .to_string();
        assert!(
            !message.contains("AAAA") && !message.contains(other.key.lines().nth(1).unwrap()),
            "{message}"
        );
    }
}

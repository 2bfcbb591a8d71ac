//! Gateway credentials: the Kubernetes Secret a Gateway server's `credentialName` names, as the
//! Envoy `Secret`s istiod's credential controller serves for it.
//!
//! - `kubernetes://<name>`: a `TlsCertificate` from `cert`/`key`, else `tls.crt`/`tls.key`
//!   (with `tls.ocsp-staple` when present);
//! - `kubernetes://<name>-cacert` (MUTUAL): a `ValidationContext` from `cacert`, else `ca.crt`
//!   (with `ca.crl` when present), read from the Secret `<name>-cacert` when it exists, else from
//!   `<name>` itself.
//!
//! Secrets are looked up in the gateway proxy's namespace only, as istiod does: a Gateway in
//! another namespace cannot hand a proxy someone else's key. The key material is inlined and
//! checked here (PEM that parses, a key that belongs to the certificate), because Envoy would
//! reject a bad one and keep every listener that refers to it warming.

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use super::security::{CA_CERT_SUFFIX, KUBERNETES_SECRET_PREFIX};
use crate::config::kube;
use crate::index::Index;
use crate::xds::Resource;

/// Why a credential cannot be served. Names the Secret and the key, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "credentialName {0:?} is not a Kubernetes Secret name (only `name`, `namespace/name` and `kubernetes://` are served)"
    )]
    Unsupported(String),
    #[error(
        "Secret {namespace}/{name} is outside the gateway proxy's namespace {proxy_namespace}; \
         gateways read credentials from their own namespace only"
    )]
    OtherNamespace {
        namespace: String,
        name: String,
        proxy_namespace: String,
    },
    #[error("Secret {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("Secret {namespace}/{name} has no {expected} (it has: {found})")]
    MissingKeys {
        namespace: String,
        name: String,
        expected: &'static str,
        found: String,
    },
    #[error(
        "no CA certificate (cacert or ca.crt) in Secret {namespace}/{name}, and no Secret {namespace}/{name}-cacert (it has: {found})"
    )]
    NoCa {
        namespace: String,
        name: String,
        found: String,
    },
    #[error("Secret {namespace}/{name}: {key} {problem}")]
    Malformed {
        namespace: String,
        name: String,
        key: &'static str,
        problem: String,
    },
}

/// Where a `credentialName` points: the SDS name Envoy asks for and the Secret it is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRef {
    /// `kubernetes://<credentialName>`, istiod's resource name.
    pub sds_name: String,
    pub namespace: String,
    pub name: String,
}

impl CredentialRef {
    /// `name`, `namespace/name` or either with `kubernetes://`, resolved for a proxy in
    /// `proxy_namespace` (istiod's `ToResourceName` and `ParseResourceName`).
    pub fn parse(
        credential_name: &str,
        proxy_namespace: &str,
    ) -> Result<CredentialRef, CredentialError> {
        let bare = credential_name
            .strip_prefix(KUBERNETES_SECRET_PREFIX)
            .unwrap_or(credential_name);
        if bare.is_empty() || bare.contains("://") {
            return Err(CredentialError::Unsupported(credential_name.to_string()));
        }
        let (namespace, name) = match bare.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                (ns, name)
            }
            Some(_) => return Err(CredentialError::Unsupported(credential_name.to_string())),
            None => (proxy_namespace, bare),
        };
        if namespace != proxy_namespace {
            return Err(CredentialError::OtherNamespace {
                namespace: namespace.to_string(),
                name: name.to_string(),
                proxy_namespace: proxy_namespace.to_string(),
            });
        }
        Ok(CredentialRef {
            sds_name: format!("{KUBERNETES_SECRET_PREFIX}{bare}"),
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    /// The SDS name of the credential's CA certificate: `<sds_name>-cacert`.
    pub fn ca_sds_name(&self) -> String {
        format!("{}{CA_CERT_SUFFIX}", self.sds_name)
    }
}

/// The certificate and key of a credential, as the `Secret` named [`CredentialRef::sds_name`].
pub fn certificate(index: &Index, credential: &CredentialRef) -> Result<Resource, CredentialError> {
    let (ns, name) = (credential.namespace.as_str(), credential.name.as_str());
    let secret = index.secret(ns, name).ok_or_else(|| not_found(ns, name))?;
    // istiod prefers the generic keys when both forms are there.
    let (cert_key, key_key) = if has_values(secret, &["cert", "key"]) {
        ("cert", "key")
    } else if has_values(secret, &["tls.crt", "tls.key"]) {
        ("tls.crt", "tls.key")
    } else {
        return Err(missing(
            ns,
            name,
            secret,
            "cert and key, or tls.crt and tls.key",
        ));
    };
    let (chain, key) = (&secret.data[cert_key], &secret.data[key_key]);
    check_key_pair(chain, key).map_err(|(key, problem)| {
        let key = if key == Pem::Key { key_key } else { cert_key };
        malformed(ns, name, key, problem)
    })?;
    let tls = TlsCertificate {
        certificate_chain: Some(inline(chain)),
        private_key: Some(inline(key)),
        ocsp_staple: value(secret, "tls.ocsp-staple").map(inline),
        ..Default::default()
    };
    let message = Secret {
        name: credential.sds_name.clone(),
        r#type: Some(secret::Type::TlsCertificate(tls)),
    };
    Ok(Resource::encode(credential.sds_name.clone(), &message))
}

/// The CA certificate clients are verified with, as the `Secret` named
/// [`CredentialRef::ca_sds_name`]: from the Secret `<name>-cacert` when it exists (and then only
/// from it, as istiod reads it), else from the credential's own Secret.
pub fn ca_certificate(
    index: &Index,
    credential: &CredentialRef,
) -> Result<Resource, CredentialError> {
    let ns = credential.namespace.as_str();
    let ca_name = format!("{}{CA_CERT_SUFFIX}", credential.name);
    let (name, secret) = match index.secret(ns, &ca_name) {
        Some(s) => (ca_name.as_str(), s),
        None => (
            credential.name.as_str(),
            index
                .secret(ns, &credential.name)
                .ok_or_else(|| not_found(ns, &ca_name))?,
        ),
    };
    let (key, ca) = match (value(secret, "cacert"), value(secret, "ca.crt")) {
        (Some(ca), _) => ("cacert", ca),
        (None, Some(ca)) => ("ca.crt", ca),
        (None, None) if name == ca_name => {
            return Err(missing(ns, name, secret, "cacert or ca.crt"));
        }
        (None, None) => {
            let found = key_names(secret);
            return Err(CredentialError::NoCa {
                namespace: ns.to_string(),
                name: name.to_string(),
                found,
            });
        }
    };
    check_certificates(ca).map_err(|problem| malformed(ns, name, key, problem))?;
    let crl = value(secret, "ca.crl");
    if let Some(crl) = crl {
        check_crl(crl).map_err(|problem| malformed(ns, name, "ca.crl", problem))?;
    }
    let validation = CertificateValidationContext {
        trusted_ca: Some(inline(ca)),
        crl: crl.map(inline),
        ..Default::default()
    };
    let sds_name = credential.ca_sds_name();
    let message = Secret {
        name: sds_name.clone(),
        r#type: Some(secret::Type::ValidationContext(validation)),
    };
    Ok(Resource::encode(sds_name, &message))
}

fn value<'a>(secret: &'a kube::Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .get(key)
        .map(Vec::as_slice)
        .filter(|v| !v.is_empty())
}

fn has_values(secret: &kube::Secret, keys: &[&str]) -> bool {
    keys.iter().all(|k| value(secret, k).is_some())
}

fn inline(bytes: &[u8]) -> DataSource {
    DataSource {
        specifier: Some(Specifier::InlineBytes(bytes.to_vec())),
        ..Default::default()
    }
}

fn not_found(namespace: &str, name: &str) -> CredentialError {
    CredentialError::NotFound {
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

fn missing(
    namespace: &str,
    name: &str,
    secret: &kube::Secret,
    expected: &'static str,
) -> CredentialError {
    CredentialError::MissingKeys {
        namespace: namespace.to_string(),
        name: name.to_string(),
        expected,
        found: key_names(secret),
    }
}

/// The Secret's key names (empty ones marked), the only thing about its data a message shows.
fn key_names(secret: &kube::Secret) -> String {
    let found: Vec<String> = secret
        .data
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                format!("{k} (empty)")
            } else {
                k.clone()
            }
        })
        .collect();
    if found.is_empty() {
        "no credential keys".to_string()
    } else {
        found.join(", ")
    }
}

fn malformed(namespace: &str, name: &str, key: &'static str, problem: String) -> CredentialError {
    CredentialError::Malformed {
        namespace: namespace.to_string(),
        name: name.to_string(),
        key,
        problem,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pem {
    Chain,
    Key,
}

/// A PEM certificate chain and the private key of its first certificate, as Envoy loads them.
fn check_key_pair(chain: &[u8], key: &[u8]) -> Result<(), (Pem, String)> {
    let certs = check_certificates(chain).map_err(|p| (Pem::Chain, p))?;
    // No detail from the PEM parser: it could quote the key's bytes.
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|_| (Pem::Key, "is not a PEM private key".to_string()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| (Pem::Key, format!("is not a usable private key (RSA of 2048 bits or more, ECDSA P-256/P-384, Ed25519): {e}")))?;
    rustls::sign::CertifiedKey::new(certs, signer)
        .keys_match()
        .map_err(|e| {
            (
                Pem::Key,
                format!("does not belong to the first certificate of the chain: {e}"),
            )
        })
}

/// PEM certificates, at least one, each a parseable X.509 certificate.
fn check_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM CERTIFICATE".into());
    }
    for (i, cert) in certs.iter().enumerate() {
        x509_parser::parse_x509_certificate(cert)
            .map_err(|e| format!("certificate {i} does not parse: {e}"))?;
    }
    Ok(certs)
}

/// PEM certificate revocation lists, at least one, each parseable.
fn check_crl(pem: &[u8]) -> Result<(), String> {
    let crls: Vec<CertificateRevocationListDer<'static>> =
        CertificateRevocationListDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("is not PEM: {e}"))?;
    if crls.is_empty() {
        return Err("holds no PEM X509 CRL".into());
    }
    for (i, crl) in crls.iter().enumerate() {
        x509_parser::parse_x509_crl(crl).map_err(|e| format!("CRL {i} does not parse: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "credentials_tests.rs"]
pub(crate) mod tests;

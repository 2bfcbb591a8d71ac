//! A CA plugged in by the operator, as istiod takes it (`cacerts`): an intermediate
//! (`ca-cert.pem`, `ca-key.pem`) under the mesh root (`root-cert.pem`), with the chain between
//! them (`cert-chain.pem`: ca-cert first, then each issuer). Lets several clusters share one
//! root, each signing with its own intermediate.
//!
//! istiod reads it from files mounted at `/etc/cacerts` or from the Secret `cacerts`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Secret;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::secret::{CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT, data_text};
use super::{Authority, CaError, PemCert, Signer, certificates, unexpired};

/// The Secret istiod reads a plugged-in CA from.
pub const SECRET_NAME: &str = "cacerts";
/// Where istiod's pod mounts it.
pub const DEFAULT_DIR: &str = "/etc/cacerts";
/// The four files, all required once any is there (`cert-chain.pem` may be empty).
pub const FILES: [&str; 4] = [CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT];

#[derive(Debug, thiserror::Error)]
pub enum PluggedError {
    #[error("{}: {source}", dir.display())]
    Invalid { dir: PathBuf, source: CaError },
    #[error("{}: {file} is missing; a plugged-in CA needs all of {}", dir.display(), FILES.join(", "))]
    MissingFile { dir: PathBuf, file: &'static str },
    #[error("{}: reading {file}: {source}", dir.display())]
    Read {
        dir: PathBuf,
        file: &'static str,
        source: io::Error,
    },
    #[error("Secret {namespace}/{SECRET_NAME}: {source}")]
    InvalidSecret { namespace: String, source: CaError },
    #[error("Secret {namespace}/{SECRET_NAME}: data.{key} is missing")]
    MissingKey {
        namespace: String,
        key: &'static str,
    },
}

impl Authority {
    /// An intermediate CA under the mesh root, checked as istiod checks `cacerts`: ca-cert is an
    /// unexpired CA with ca-key as its key, and each certificate of cert-chain is signed by the
    /// next, the last being a root of root-cert.pem or signed by one. An empty cert-chain means
    /// ca-cert is itself a root of root-cert.pem. Leaves are then sent with the chain up to that
    /// root; [`Authority::root_pem`] is root-cert.pem, what proxies trust.
    pub fn from_plugged(
        ca_cert_pem: &str,
        ca_key_pem: &str,
        cert_chain_pem: &str,
        root_cert_pem: &str,
    ) -> Result<Authority, CaError> {
        let signer = Signer::new(ca_cert_pem, ca_key_pem)?;
        let roots = certificates(root_cert_pem, CaError::Root)?;
        if roots.is_empty() {
            return Err(CaError::Root("no CERTIFICATE block".into()));
        }
        let mut chain = certificates(cert_chain_pem, CaError::Chain)?;
        if chain.is_empty() {
            if !roots.iter().any(|root| root.der == signer.cert.der) {
                return Err(CaError::Chain(
                    "empty, so ca-cert.pem must be the root, but root-cert.pem does not hold it"
                        .into(),
                ));
            }
            chain.push(signer.cert.clone());
        } else if chain[0].der != signer.cert.der {
            return Err(CaError::Chain(
                "its first certificate must be the one of ca-cert.pem".into(),
            ));
        }
        for (i, pair) in chain.windows(2).enumerate() {
            signed_by(&pair[0], &pair[1])
                .map_err(|e| CaError::Chain(format!("certificate {}: {e}", i + 1)))?;
        }
        // Not empty: it holds at least ca-cert.
        let last = chain[chain.len() - 1].clone();
        let root = match roots.iter().find(|root| root.der == last.der) {
            Some(root) => root.clone(),
            None => {
                let root = roots
                    .iter()
                    .find(|root| signed_by(&last, root).is_ok())
                    .cloned()
                    .ok_or_else(|| {
                        let why = signed_by(&last, &roots[0]).err().unwrap_or_default();
                        CaError::Chain(format!(
                            "does not lead to root-cert.pem: its last certificate {why}"
                        ))
                    })?;
                chain.push(root.clone());
                root
            }
        };
        let not_after = chain_not_after(&chain, signer.not_after)?;
        let root_pem = roots.iter().map(|r| r.pem.as_str()).collect();
        Ok(signer.into_authority(chain, root_pem, root.der, not_after))
    }
}

/// Why `child` is not a certificate issued by the CA `parent`, if it is not.
fn signed_by(child: &PemCert, parent: &PemCert) -> Result<(), String> {
    let (child, parent) = (parse(child)?, parse(parent)?);
    if child.issuer().as_raw() != parent.subject().as_raw() {
        return Err(format!(
            "is issued by \"{}\", not by \"{}\"",
            child.issuer(),
            parent.subject()
        ));
    }
    if !parent.is_ca() {
        return Err(format!(
            "is issued by \"{}\", which is not a CA",
            parent.subject()
        ));
    }
    child
        .verify_signature(Some(parent.public_key()))
        .map_err(|e| {
            format!(
                "has a signature the key of \"{}\" does not verify: {e}",
                parent.subject()
            )
        })
}

fn parse(cert: &PemCert) -> Result<X509Certificate<'_>, String> {
    X509Certificate::from_der(&cert.der)
        .map(|(_, x509)| x509)
        .map_err(|e| format!("not an X.509 certificate: {e}"))
}

/// When the first certificate of the chain expires: nothing signed may outlive it. Refuses a
/// chain with an expired certificate, as istiod's verification does.
fn chain_not_after(chain: &[PemCert], signer_not_after: SystemTime) -> Result<SystemTime, CaError> {
    chain
        .iter()
        .enumerate()
        .try_fold(signer_not_after, |earliest, (i, cert)| {
            let not_after = parse(cert).and_then(|x509| unexpired(&x509));
            let not_after =
                not_after.map_err(|e| CaError::Chain(format!("certificate {}: {e}", i + 1)))?;
            Ok(earliest.min(not_after))
        })
}

/// The plugged-in CA of `dir` (istiod's `/etc/cacerts`); `None` when none of its files is there
/// (no `cacerts` mounted), an error when only some are.
pub fn from_dir(dir: &Path) -> Result<Option<Authority>, PluggedError> {
    let mut texts: [Option<String>; 4] = Default::default();
    for (text, file) in texts.iter_mut().zip(FILES) {
        *text = match std::fs::read_to_string(dir.join(file)) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(PluggedError::Read {
                    dir: dir.to_path_buf(),
                    file,
                    source,
                });
            }
        };
    }
    if texts.iter().all(Option::is_none) {
        return Ok(None);
    }
    let [ca_cert, ca_key, chain, root] = files(texts, |i| PluggedError::MissingFile {
        dir: dir.to_path_buf(),
        file: FILES[i],
    })?;
    Authority::from_plugged(&ca_cert, &ca_key, &chain, &root)
        .map(Some)
        .map_err(|source| PluggedError::Invalid {
            dir: dir.to_path_buf(),
            source,
        })
}

/// The plugged-in CA of Secret `cacerts` (its data keys are the file names).
pub fn from_secret(secret: &Secret, namespace: &str) -> Result<Authority, PluggedError> {
    let texts = FILES.map(|key| data_text(secret, key));
    let [ca_cert, ca_key, chain, root] = files(texts, |i| PluggedError::MissingKey {
        namespace: namespace.to_string(),
        key: FILES[i],
    })?;
    Authority::from_plugged(&ca_cert, &ca_key, &chain, &root).map_err(|source| {
        PluggedError::InvalidSecret {
            namespace: namespace.to_string(),
            source,
        }
    })
}

/// The four texts in [`FILES`] order, or `missing(index)` of the first absent one.
fn files(
    texts: [Option<String>; 4],
    missing: impl Fn(usize) -> PluggedError,
) -> Result<[String; 4], PluggedError> {
    if let Some(i) = texts.iter().position(Option::is_none) {
        return Err(missing(i));
    }
    Ok(texts.map(Option::unwrap_or_default))
}

#[cfg(test)]
mod tests;

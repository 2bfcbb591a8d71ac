//! The root persisted as istiod persists it: Secret `istio-ca-secret` in the control plane's
//! namespace, type `istio.io/ca-root`, keys `ca-cert.pem` and `ca-key.pem` (plus
//! `root-cert.pem`, the same root, and the empty `cert-chain.pem` and `key.pem` istiod writes).
//!
//! Every replica must serve under the same root, so only the leader generates one, and a
//! replica that finds none waits for it to appear. A Secret that exists but cannot be read is
//! an error, never overwritten: replacing a root would break every certificate issued under it.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

use super::{Authority, CaError};

pub const SECRET_NAME: &str = "istio-ca-secret";
/// istiod's type for it.
pub const SECRET_TYPE: &str = "istio.io/ca-root";
pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const ROOT_CERT: &str = "root-cert.pem";
pub const CERT_CHAIN: &str = "cert-chain.pem";
pub const PRIVATE_KEY: &str = "key.pem";

/// Where the root lives and how long to wait between looks.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The control plane's namespace (`istio-system`).
    pub namespace: String,
    /// Written as the organization of a generated root.
    pub trust_domain: String,
    /// Pause between attempts while the Secret is missing or the API fails.
    pub retry: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            namespace: "istio-system".into(),
            trust_domain: super::DEFAULT_TRUST_DOMAIN.into(),
            retry: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("Secret {namespace}/{SECRET_NAME}: {source}")]
    Invalid { namespace: String, source: CaError },
    #[error("Secret {namespace}/{SECRET_NAME}: data.{key} is missing")]
    Missing {
        namespace: String,
        key: &'static str,
    },
    #[error("generating a root for Secret {namespace}/{SECRET_NAME}: {source}")]
    Generate { namespace: String, source: CaError },
}

/// The root of `Secret <namespace>/istio-ca-secret`: read if it exists; if not, generated and
/// created by the leader (a replica that loses the race to create it reads the winner's),
/// waited for by the others. API errors are retried; only a Secret that exists and is wrong
/// fails.
pub async fn load_or_create(
    client: kube::Client,
    options: &LoadOptions,
    is_leader: impl Fn() -> bool,
) -> Result<Authority, SecretError> {
    let api: Api<Secret> = Api::namespaced(client, &options.namespace);
    let ns = &options.namespace;
    let mut waiting_logged = false;
    loop {
        match api.get_opt(SECRET_NAME).await {
            Ok(Some(secret)) => {
                let authority = from_secret(&secret, ns)?;
                tracing::info!("using the CA root of Secret {ns}/{SECRET_NAME}");
                return Ok(authority);
            }
            Ok(None) if is_leader() => {
                let authority = Authority::generate(&options.trust_domain).map_err(|source| {
                    SecretError::Generate {
                        namespace: ns.clone(),
                        source,
                    }
                })?;
                match api
                    .create(&PostParams::default(), &to_secret(&authority, ns))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(
                            "generated a CA root (O={}) in Secret {ns}/{SECRET_NAME}",
                            options.trust_domain
                        );
                        return Ok(authority);
                    }
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        tracing::info!(
                            "another replica created Secret {ns}/{SECRET_NAME} first; using its root"
                        );
                        continue;
                    }
                    Err(e) => tracing::warn!("creating Secret {ns}/{SECRET_NAME}: {e}; retrying"),
                }
            }
            Ok(None) => {
                if !waiting_logged {
                    tracing::info!(
                        "Secret {ns}/{SECRET_NAME} does not exist yet; waiting for the leader to create it"
                    );
                    waiting_logged = true;
                }
            }
            Err(e) => tracing::warn!("reading Secret {ns}/{SECRET_NAME}: {e}; retrying"),
        }
        tokio::time::sleep(options.retry).await;
    }
}

/// Reads the authority out of istiod's Secret layout.
pub fn from_secret(secret: &Secret, namespace: &str) -> Result<Authority, SecretError> {
    let text = |key: &'static str| -> Result<String, SecretError> {
        data_text(secret, key)
            .filter(|text| !text.is_empty())
            .ok_or(SecretError::Missing {
                namespace: namespace.to_string(),
                key,
            })
    };
    Authority::from_pem(&text(CA_CERT)?, &text(CA_KEY)?).map_err(|source| SecretError::Invalid {
        namespace: namespace.to_string(),
        source,
    })
}

/// `data.<key>` of a Secret as text (PEM is ASCII), `None` when the key is absent.
pub(crate) fn data_text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    Some(String::from_utf8_lossy(&bytes.0).into_owned())
}

/// The Secret istiod would write for this authority.
pub fn to_secret(authority: &Authority, namespace: &str) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let data = BTreeMap::from([
        (CA_CERT.to_string(), bytes(authority.cert_pem())),
        (CA_KEY.to_string(), bytes(authority.key_pem())),
        (ROOT_CERT.to_string(), bytes(authority.root_pem())),
        (CERT_CHAIN.to_string(), bytes("")),
        (PRIVATE_KEY.to_string(), bytes("")),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(SECRET_NAME.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        type_: Some(SECRET_TYPE.into()),
        data: Some(data),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_istiods_layout_and_reads_back() {
        let ca = Authority::generate("cluster.local").unwrap();
        let secret = to_secret(&ca, "istio-system");
        assert_eq!(secret.type_.as_deref(), Some(SECRET_TYPE));
        let data = secret.data.as_ref().unwrap();
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(keys, [CA_CERT, CA_KEY, CERT_CHAIN, PRIVATE_KEY, ROOT_CERT]);
        assert_eq!(data[ROOT_CERT], data[CA_CERT]);
        assert!(data[CERT_CHAIN].0.is_empty() && data[PRIVATE_KEY].0.is_empty());
        assert_eq!(
            from_secret(&secret, "istio-system").unwrap().root_der(),
            ca.root_der()
        );
    }

    #[test]
    fn a_wrong_secret_names_itself_and_the_key() {
        let ca = Authority::generate("cluster.local").unwrap();
        let mut secret = to_secret(&ca, "istio-system");
        secret.data.as_mut().unwrap().remove(CA_KEY);
        let err = from_secret(&secret, "istio-system")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "Secret istio-system/istio-ca-secret: data.ca-key.pem is missing"
        );
        let mut secret = to_secret(&ca, "istio-system");
        secret
            .data
            .as_mut()
            .unwrap()
            .insert(CA_CERT.into(), ByteString(b"junk".to_vec()));
        let err = from_secret(&secret, "istio-system")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("Secret istio-system/istio-ca-secret: ca-cert.pem: "),
            "{err}"
        );
    }
}

//! The keys of RequestAuthentication `jwksUri`s, fetched by the control plane as istiod fetches
//! them (its default `PILOT_JWT_ENABLE_REMOTE_JWKS=false`), so the generator can inline them and
//! Envoy needs no cluster to, nor egress to, the key server.
//!
//! [`Jwks::refresh`] makes a set of sources the wanted one and fetches those new to it;
//! [`Jwks::spawn_refresher`] fetches every wanted source again each 20 minutes (istiod's
//! `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`), after a failure in 1 minute, then doubling up to an
//! hour. A failed fetch keeps the last good keys; a source never fetched has none, and the
//! generator inlines keys no token verifies against. [`Jwks::subscribe`] tells when keys
//! changed, so the caller can push.

use crate::model::jwks::JwksKeys;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::sync::watch;

use crate::generate::security::jwt::{JwksLookup, JwksSource};

mod fetch;
#[cfg(test)]
mod tests;

/// Appended to an issuer to find its OpenID discovery document.
const OPENID_DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

#[derive(Debug, Clone)]
pub struct Settings {
    /// How often every source is fetched again.
    pub refresh_interval: Duration,
    /// The first wait after a round with failures; doubled while rounds keep failing…
    pub retry_interval: Duration,
    /// …up to this.
    pub max_retry_interval: Duration,
    /// A larger response is an error: a JWKS is a few kilobytes.
    pub max_body_bytes: usize,
    /// Trusted for HTTPS besides the platform's roots (istiod's `/cacerts/extra.pem`).
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            refresh_interval: Duration::from_secs(20 * 60),
            retry_interval: Duration::from_secs(60),
            max_retry_interval: Duration::from_secs(60 * 60),
            max_body_bytes: 1 << 20,
            extra_roots: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("jwksUri {uri:?}: {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error("GET {uri}: {reason}")]
    Io { uri: String, reason: String },
    #[error("GET {uri}: no response within {after:?}")]
    Timeout { uri: String, after: Duration },
    #[error("GET {uri}: status {status}: {body}")]
    Status {
        uri: String,
        status: u16,
        body: String,
    },
    #[error("GET {uri}: response larger than {limit} bytes")]
    TooLarge { uri: String, limit: usize },
    #[error("GET {uri}: too many redirects")]
    TooManyRedirects { uri: String },
    #[error("GET {uri}: {reason}")]
    Invalid { uri: String, reason: String },
}

/// The fetched keys, shared: clones are handles on one cache.
#[derive(Clone)]
pub struct Jwks {
    shared: Arc<Shared>,
}

struct Shared {
    entries: RwLock<BTreeMap<JwksSource, Entry>>,
    /// Bumped when any source's keys change.
    changes: watch::Sender<u64>,
    settings: Settings,
    /// Loaded at the first HTTPS fetch: reading the platform's roots is slow.
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

struct Entry {
    keys: Option<Arc<str>>,
    timeout: Duration,
}

impl Jwks {
    pub fn new(settings: Settings) -> Jwks {
        let shared = Shared {
            entries: RwLock::default(),
            changes: watch::channel(0).0,
            settings,
            tls: OnceLock::new(),
        };
        Jwks {
            shared: Arc::new(shared),
        }
    }

    /// A counter that moves whenever fetched keys change (not on an unchanged refetch).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// Makes `wanted` (each source with its fetch timeout, see `jwt::jwks_sources`) the sources
    /// kept, forgets the others, and fetches the new ones. A source that failed before is left to
    /// the refresher, so a dead key server is not asked again at every config change.
    pub async fn refresh(&self, wanted: BTreeMap<JwksSource, Duration>) -> Vec<JwksError> {
        let mut new = Vec::new();
        {
            let mut entries = self
                .shared
                .entries
                .write()
                .unwrap_or_else(|e| e.into_inner());
            entries.retain(|source, _| wanted.contains_key(source));
            for (source, timeout) in wanted {
                match entries.get_mut(&source) {
                    Some(entry) => entry.timeout = timeout,
                    None => {
                        entries.insert(
                            source.clone(),
                            Entry {
                                keys: None,
                                timeout,
                            },
                        );
                        new.push((source, timeout));
                    }
                }
            }
        }
        self.fetch_all(new).await
    }

    /// Fetches every wanted source again; the errors of those that failed.
    pub async fn refetch(&self) -> Vec<JwksError> {
        let all: Vec<(JwksSource, Duration)> = {
            let entries = self
                .shared
                .entries
                .read()
                .unwrap_or_else(|e| e.into_inner());
            entries
                .iter()
                .map(|(s, e)| (s.clone(), e.timeout))
                .collect()
        };
        self.fetch_all(all).await
    }

    /// Refetches on istiod's schedule until every handle on this cache is dropped.
    pub fn spawn_refresher(&self) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        let settings = self.shared.settings.clone();
        tokio::spawn(async move {
            let mut wait = settings.refresh_interval;
            let mut failed_before = false;
            loop {
                tokio::time::sleep(wait).await;
                let Some(shared) = weak.upgrade() else { return };
                let failed = !Jwks { shared }.refetch().await.is_empty();
                wait = next_wait(&settings, wait, failed, failed_before);
                failed_before = failed;
            }
        })
    }

    async fn fetch_all(&self, sources: Vec<(JwksSource, Duration)>) -> Vec<JwksError> {
        let results = futures_util::future::join_all(sources.into_iter().map(
            |(source, timeout)| async move {
                let result = self.fetch(&source, timeout).await;
                (source, result)
            },
        ))
        .await;

        let mut errors = Vec::new();
        let mut changed = false;
        {
            let mut entries = self
                .shared
                .entries
                .write()
                .unwrap_or_else(|e| e.into_inner());
            for (source, result) in results {
                // Forgotten while fetching: a newer `refresh` no longer wants it.
                let Some(entry) = entries.get_mut(&source) else {
                    continue;
                };
                match result {
                    Ok(keys) => {
                        if entry
                            .keys
                            .as_deref()
                            .is_none_or(|old| !same_keys(old, &keys))
                        {
                            tracing::info!(source = %source, "JWKS updated");
                            entry.keys = Some(keys.into());
                            changed = true;
                        }
                    }
                    Err(error) => {
                        let keeping = if entry.keys.is_some() {
                            "keeping the last keys"
                        } else {
                            "its tokens are rejected"
                        };
                        tracing::warn!(source = %source, %error, "JWKS fetch failed; {keeping}");
                        errors.push(error);
                    }
                }
            }
        }
        if changed {
            self.shared.changes.send_modify(|v| *v += 1);
        }
        errors
    }

    /// A source's keys, checked to be a JWKS.
    async fn fetch(&self, source: &JwksSource, timeout: Duration) -> Result<String, JwksError> {
        let client = fetch::Client {
            timeout,
            max_body_bytes: self.shared.settings.max_body_bytes,
            tls: &self.shared.tls,
            extra_roots: &self.shared.settings.extra_roots,
        };
        let uri = match source {
            JwksSource::Uri(uri) => uri.clone(),
            JwksSource::Discovery { issuer } => {
                let at = format!("{}{OPENID_DISCOVERY_PATH}", issuer.trim_end_matches('/'));
                let document = client.get(&at).await?;
                jwks_uri_of(&document).map_err(|reason| JwksError::Invalid { uri: at, reason })?
            }
        };
        let keys = client.get(&uri).await?;
        check_jwks(&keys).map_err(|reason| JwksError::Invalid { uri, reason })?;
        Ok(keys)
    }
}

impl Jwks {
    /// Every key set fetched so far: the input one revision's generation inlines.
    pub fn keys(&self) -> JwksKeys {
        let entries = self
            .shared
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .filter_map(|(source, e)| Some((source.clone(), e.keys.clone()?)))
            .collect()
    }
}

impl JwksLookup for Jwks {
    fn jwks(&self, source: &JwksSource) -> Option<Arc<str>> {
        let entries = self
            .shared
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner());
        entries.get(source)?.keys.clone()
    }
}

/// istiod's schedule: the regular interval after a good round; after a failed one the retry
/// interval, doubled while failures continue, capped.
fn next_wait(
    settings: &Settings,
    current: Duration,
    failed: bool,
    failed_before: bool,
) -> Duration {
    match (failed, failed_before) {
        (false, _) => settings.refresh_interval,
        (true, false) => settings.retry_interval,
        (true, true) => (current * 2).min(settings.max_retry_interval),
    }
}

/// A key set Envoy can load: a JSON object whose `keys` is a non-empty array of objects with a
/// `kty`. Anything else (an HTML error page served with 200) must not replace good keys.
pub fn check_jwks(text: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not a JWKS: not JSON: {e}"))?;
    let Some(keys) = value.get("keys").and_then(serde_json::Value::as_array) else {
        return Err("not a JWKS: no \"keys\" array".into());
    };
    if keys.is_empty() {
        return Err("not a JWKS: no keys".into());
    }
    for (i, key) in keys.iter().enumerate() {
        if key
            .get("kty")
            .and_then(serde_json::Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(format!("not a JWKS: key {i} has no \"kty\""));
        }
    }
    Ok(())
}

/// Whether two key sets hold the same keys, whatever their order or formatting: a server that
/// reorders its keys must not cause a push to every proxy.
fn same_keys(a: &str, b: &str) -> bool {
    let canonical = |text: &str| -> Option<Vec<String>> {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        // serde_json's maps are sorted, so equal keys print equal.
        let mut keys: Vec<String> = value
            .get("keys")?
            .as_array()?
            .iter()
            .map(|k| k.to_string())
            .collect();
        keys.sort();
        Some(keys)
    };
    a == b || matches!((canonical(a), canonical(b)), (Some(x), Some(y)) if x == y)
}

fn jwks_uri_of(discovery_document: &str) -> Result<String, String> {
    let value: serde_json::Value = serde_json::from_str(discovery_document)
        .map_err(|e| format!("OpenID discovery document: not JSON: {e}"))?;
    match value.get("jwks_uri").and_then(serde_json::Value::as_str) {
        Some(uri) if !uri.is_empty() => Ok(uri.to_string()),
        _ => Err("OpenID discovery document has no \"jwks_uri\"".into()),
    }
}

fn tls_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "loading the platform's trusted roots for JWKS fetches");
    }
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    for root in extra_roots {
        roots
            .add(root.clone())
            .map_err(|e| format!("extra root certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no trusted root certificates to check HTTPS key servers with".into());
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

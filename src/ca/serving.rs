//! A TLS server's own certificate from the CA (the webhook's, the TLS xDS port's), renewed while
//! the listener runs: handshakes after a renewal get the new one, open connections keep theirs.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Authority, CaError, Issued};

/// Wait before retrying a failed renewal (the current certificate stays in use meanwhile).
const RENEW_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error("issuing the {0} certificate: {1}")]
    Certificate(&'static str, CaError),
    #[error("loading the {0} certificate into TLS: {1}")]
    Tls(&'static str, rustls::Error),
}

/// The crypto every pilotfish TLS server uses (ring, as kube's client does).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The serving certificate, swapped in place when renewed.
#[derive(Debug)]
pub struct RotatingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for RotatingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock still holds a complete certificate: keep serving it.
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

impl RotatingCert {
    fn replace(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
    }
}

/// Issues a certificate for `dns_names` and renews it, two thirds into its life, until `stop`
/// turns true. `what` names the server in errors and logs.
pub fn start(
    authority: Arc<Authority>,
    dns_names: Vec<String>,
    ttl: Duration,
    what: &'static str,
    stop: watch::Receiver<bool>,
) -> Result<(Arc<RotatingCert>, JoinHandle<()>), ServingError> {
    let provider = provider();
    let issued = authority
        .issue_server_cert(&dns_names, ttl)
        .map_err(|e| ServingError::Certificate(what, e))?;
    let cert = Arc::new(RotatingCert {
        current: RwLock::new(Arc::new(certified_key(&issued, &provider, what)?)),
    });
    let renewal = tokio::spawn(renew(
        authority,
        dns_names,
        ttl,
        issued,
        cert.clone(),
        provider,
        what,
        stop,
    ));
    Ok((cert, renewal))
}

fn certified_key(
    issued: &Issued,
    provider: &CryptoProvider,
    what: &'static str,
) -> Result<CertifiedKey, ServingError> {
    let tls = |e| ServingError::Tls(what, e);
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(issued.cert_chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| tls(rustls::Error::General(format!("certificate chain: {e}"))))?;
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())
        .map_err(|_| tls(rustls::Error::General("the issued key is not PEM".into())))?;
    CertifiedKey::from_der(chain, key, provider).map_err(tls)
}

/// How long until a certificate should be replaced: two thirds of its remaining life.
fn renew_after(issued: &Issued) -> Duration {
    let left = issued
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    (left * 2 / 3).max(Duration::from_secs(1))
}

#[allow(clippy::too_many_arguments)]
async fn renew(
    authority: Arc<Authority>,
    dns_names: Vec<String>,
    ttl: Duration,
    mut issued: Issued,
    cert: Arc<RotatingCert>,
    provider: Arc<CryptoProvider>,
    what: &'static str,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let wait = renew_after(&issued);
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(wait) => {}
        }
        let renewed = authority
            .issue_server_cert(&dns_names, ttl)
            .map_err(|e| ServingError::Certificate(what, e))
            .and_then(|next| Ok((certified_key(&next, &provider, what)?, next)));
        match renewed {
            Ok((key, next)) => {
                cert.replace(key);
                issued = next;
                tracing::debug!("renewed the {what} certificate");
            }
            Err(e) => {
                tracing::warn!("renewing: {e}; retrying in {RENEW_RETRY:?}");
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    () = tokio::time::sleep(RENEW_RETRY) => {}
                }
            }
        }
    }
}

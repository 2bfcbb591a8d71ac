//! `pilotfish serve`: a config source (a directory, or the Kubernetes API), the store, the push
//! pipeline, the xDS server and the status endpoints, wired together. The binary, the
//! benchmarks and the end-to-end tests all run this.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::ca::{Authority, file, plugged};
use crate::model::MeshConfig;
use crate::operator::{Operator, OperatorOptions};
use crate::security::Authenticator;
use crate::security::tls_port::{self, TlsPort};
use crate::security::token_review::TokenReviewer;
use crate::source::jwks::{Jwks, Settings as JwksSettings};
use crate::source::kubernetes::{KubeOptions, KubeSource};
use crate::source::{self, Directory};
use crate::store::Store;
use crate::xds::{self, Connections, Snapshot};

/// Where config comes from.
#[derive(Clone)]
pub enum ConfigSource {
    /// A directory of YAML, followed with inotify.
    Directory(PathBuf),
    /// The Kubernetes API; the replica also takes part in leader election and serves the
    /// validating webhook (`operator.rs`).
    Kubernetes {
        client: kube::Client,
        options: KubeOptions,
        operator: OperatorOptions,
    },
}

#[derive(Clone)]
pub struct ServeOptions {
    pub source: ConfigSource,
    pub debounce: Duration,
    pub mesh: MeshConfig,
    pub ca: CaOptions,
    /// Answer the status port's `/debug/*` endpoints for every client, not only loopback ones
    /// (istiod's `ENABLE_DEBUG_ON_HTTP`).
    pub debug_remote: bool,
}

impl ServeOptions {
    /// `source` with the command line's defaults for the rest: a 100 ms debounce, istiod's
    /// mesh config and CA settings, debug endpoints for loopback clients only.
    pub fn new(source: ConfigSource) -> ServeOptions {
        ServeOptions {
            source,
            debounce: Duration::from_millis(100),
            mesh: MeshConfig::default(),
            ca: CaOptions::default(),
            debug_remote: false,
        }
    }
}

/// Where the CA's signing certificate comes from and what it signs, for the TLS port.
#[derive(Clone, Debug)]
pub struct CaOptions {
    /// istiod's plugged-in intermediate (`cacerts`: `ca-cert.pem`, `ca-key.pem`,
    /// `cert-chain.pem`, `root-cert.pem`); used when present, in either mode.
    pub cacerts_dir: PathBuf,
    /// Without a cluster: where the self-signed root is kept (generated on first use).
    pub root_dir: Option<PathBuf>,
    /// Lifetime of the certificates proxies get over SDS.
    pub workload_ttl: Duration,
    /// The longest certificate the CA API signs.
    pub max_workload_ttl: Duration,
    /// The names of the TLS port's certificate.
    pub dns_names: Vec<String>,
}

impl Default for CaOptions {
    fn default() -> Self {
        CaOptions {
            cacerts_dir: PathBuf::from(crate::ca::plugged::DEFAULT_DIR),
            root_dir: None,
            workload_ttl: crate::ca::DEFAULT_WORKLOAD_CERT_TTL,
            max_workload_ttl: crate::ca::MAX_WORKLOAD_CERT_TTL,
            dns_names: crate::security::tls_port::dns_names(
                "istiod",
                "istio-system",
                "cluster.local",
            ),
        }
    }
}

/// The sockets `serve` answers on, bound by the caller (so tests can bind port 0).
pub struct Listeners {
    /// Plaintext ADS (istiod's 15010).
    pub xds: TcpListener,
    /// ADS for authenticated proxies, with their certificates, and the CA API (istiod's 15012).
    pub secure_xds: Option<TcpListener>,
    /// `/ready`, `/version`, `/metrics` and `/debug/*` (istiod's 8080).
    pub status: Option<TcpListener>,
    /// `/metrics` alone (istiod's monitoring port, 15014).
    pub monitoring: Option<TcpListener>,
    /// The validating webhook (istiod's 15017); Kubernetes only.
    pub webhook: Option<TcpListener>,
}

impl Listeners {
    /// Plaintext ADS alone; add the other listeners with struct update syntax.
    pub fn new(xds: TcpListener) -> Listeners {
        Listeners {
            xds,
            secure_xds: None,
            status: None,
            monitoring: None,
            webhook: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Source(#[from] source::watch::WatchError),
    #[error(transparent)]
    Xds(#[from] xds::XdsError),
    #[error("the CA for the TLS xDS port: {0}")]
    Ca(String),
}

/// The running source, and in a cluster the election and webhook.
enum Following {
    Directory(tokio::task::JoinHandle<()>),
    Kubernetes(KubeSource, Operator),
}

impl Following {
    /// The CA once the operator has loaded it; never in file mode, where the CA is local.
    fn authority(&self) -> watch::Receiver<Option<Arc<Authority>>> {
        match self {
            Following::Directory(_) => watch::channel(None).1,
            Following::Kubernetes(_, operator) => operator.authority(),
        }
    }

    /// Stops following; in a cluster, lets the leader hand its Lease over first.
    async fn stop(self) {
        match self {
            Following::Directory(task) => task.abort(),
            Following::Kubernetes(source, operator) => {
                drop(source);
                operator.finish().await;
            }
        }
    }
}

/// Loads the config, then serves ADS until `shutdown` completes, then drains: `/ready` turns
/// false and every stream ends, so proxies reconnect to another replica. No proxy is answered
/// before the whole config has been read (the directory, or every kind listed from the API);
/// until then connections wait in the listener's backlog.
pub async fn serve(
    options: ServeOptions,
    listeners: Listeners,
    connections: Arc<Connections>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let (ready, ready_rx) = watch::channel(false);
    let (stop, mut stop_rx) = watch::channel(false);
    let (draining, draining_rx) = watch::channel(false);
    let store = Arc::new(Mutex::new(Store::new()));
    let (pushes, pushes_rx) = watch::channel(None);
    let status = listeners.status.map(|listener| {
        let stopped = async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        };
        let debug = crate::debug::http::Sources {
            store: store.lock().unwrap_or_else(|p| p.into_inner()).subscribe(),
            pushes: pushes_rx,
            connections: connections.clone(),
            remote: options.debug_remote,
        };
        tokio::spawn(crate::status::serve_with_debug(
            listener, ready_rx, debug, stopped,
        ))
    });
    let monitoring = listeners.monitoring.map(|listener| {
        let mut stop_rx = stop.subscribe();
        let stopped = async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        };
        tokio::spawn(crate::status::serve_monitoring(listener, stopped))
    });
    let drain = async {
        shutdown.await;
        tracing::info!("draining: not ready, closing every xDS stream");
        ready.send_replace(false);
        draining.send_replace(true);
    };
    tokio::pin!(drain);

    let tokens = match &options.source {
        ConfigSource::Kubernetes { client, .. } => {
            Some(Arc::new(TokenReviewer::new(client.clone())))
        }
        ConfigSource::Directory(_) => None,
    };
    // Without a cluster the CA is local and known before anything is served.
    let local_ca = match (&listeners.secure_xds, &options.source) {
        (Some(_), ConfigSource::Directory(_)) => {
            Some(local_authority(&options.ca, &options.mesh.trust_domain)?)
        }
        _ => None,
    };
    let stopping = draining_rx.clone();
    let mut following = tokio::select! {
        following = load(options.source, &store, listeners.webhook, draining_rx) => following?,
        () = &mut drain => {
            stop.send_replace(true);
            return Ok(());
        }
    };
    if let Following::Kubernetes(_, operator) = &mut following {
        operator.report_rejections(connections.subscribe_rejections());
    }
    let (store_rx, snapshot) = {
        let store = store.lock().unwrap_or_else(|p| p.into_inner());
        (store.subscribe(), store.snapshot())
    };
    let first = crate::push::Pushed::build(&snapshot, &options.mesh, None);
    let context = first.context.clone();
    pushes.send_replace(Some(first));
    tracing::info!(objects = snapshot.len(), "config loaded");

    let (snapshot_tx, snapshot_rx) = watch::channel::<Arc<dyn Snapshot>>(context.clone());
    let jwks = Arc::new(Jwks::new(JwksSettings::default()));
    let refresher = jwks.spawn_refresher();
    let pipeline = tokio::spawn(crate::push::run(
        store_rx,
        options.mesh.clone(),
        options.debounce,
        crate::push::Publish {
            snapshots: snapshot_tx,
            pushes,
        },
        context,
        jwks,
    ));
    let secure = listeners.secure_xds.map(|listener| {
        let authority = match local_ca {
            Some(local) => watch::channel(Some(local)).1,
            None => following.authority(),
        };
        let port = SecurePort {
            ca: options.ca.clone(),
            trust_domain: options.mesh.trust_domain.clone(),
            tokens,
        };
        tokio::spawn(serve_secure(
            listener,
            authority,
            port,
            snapshot_rx.clone(),
            connections.clone(),
            stopping,
        ))
    });
    ready.send_replace(true);
    let result = xds::serve(listeners.xds, snapshot_rx, connections, drain).await;
    stop.send_replace(true);
    if let Some(secure) = secure {
        let _ = secure.await;
    }
    pipeline.abort();
    refresher.abort();
    following.stop().await;
    for server in [status, monitoring].into_iter().flatten() {
        let _ = server.await;
    }
    Ok(result?)
}

/// What the TLS port needs beside its listener and CA.
struct SecurePort {
    ca: CaOptions,
    trust_domain: String,
    tokens: Option<Arc<TokenReviewer>>,
}

/// Serves the TLS port once the CA is known (in a cluster, once the leader has created or
/// loaded it), until draining begins.
async fn serve_secure(
    listener: TcpListener,
    mut authority: watch::Receiver<Option<Arc<Authority>>>,
    port: SecurePort,
    snapshots: xds::SnapshotRx,
    connections: Arc<Connections>,
    mut stopping: watch::Receiver<bool>,
) {
    let found = tokio::select! {
        found = async { authority.wait_for(Option::is_some).await.ok().and_then(|a| a.clone()) } => found,
        _ = stopping.wait_for(|s| *s) => None,
    };
    let Some(authority) = found else { return };
    let authenticator = Arc::new(Authenticator::new(port.trust_domain, port.tokens));
    let tls = TlsPort {
        authority,
        authenticator,
        dns_names: port.ca.dns_names,
        workload_ttl: port.ca.workload_ttl,
    };
    let shutdown = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    if let Err(e) = tls_port::serve(listener, tls, snapshots, connections, shutdown).await {
        tracing::error!("{e}; proxies cannot connect over TLS");
    }
}

/// The CA without a cluster: `cacerts` if present, else the root kept in `root_dir`.
fn local_authority(ca: &CaOptions, trust_domain: &str) -> Result<Arc<Authority>, ServeError> {
    let authority = match plugged::from_dir(&ca.cacerts_dir)
        .map_err(|e| ServeError::Ca(e.to_string()))?
    {
        Some(plugged) => plugged,
        None => {
            let dir = ca.root_dir.as_ref().ok_or_else(|| {
                ServeError::Ca(format!(
                    "no {} and no CA directory: the TLS xDS port needs --ca-dir (where the root is kept) without a cluster",
                    ca.cacerts_dir.display()
                ))
            })?;
            file::load_or_create(dir, trust_domain).map_err(|e| ServeError::Ca(e.to_string()))?
        }
    };
    Ok(Arc::new(
        authority.with_max_workload_ttl(ca.max_workload_ttl),
    ))
}

/// Reads the whole config into the store, then keeps following it.
async fn load(
    source: ConfigSource,
    store: &Arc<Mutex<Store>>,
    webhook: Option<TcpListener>,
    draining: watch::Receiver<bool>,
) -> Result<Following, ServeError> {
    match source {
        ConfigSource::Directory(path) => {
            let mut directory = Directory::new(&path);
            let diagnostics = source::watch::load(&mut directory, store)?;
            tracing::info!(dir = %path.display(), "config directory read");
            let (diagnostics_tx, _) = watch::channel(Arc::new(diagnostics));
            let store = store.clone();
            Ok(Following::Directory(tokio::spawn(async move {
                if let Err(e) = source::watch::run(directory, store, diagnostics_tx).await {
                    tracing::error!("{e}; config changes are no longer followed");
                }
            })))
        }
        ConfigSource::Kubernetes {
            client,
            options,
            operator,
        } => {
            // The election and the webhook need no config: they start while the cluster is listed.
            let config = store.lock().unwrap_or_else(|p| p.into_inner()).subscribe();
            let operator = Operator::start(client.clone(), operator, webhook, config, draining);
            let mut kube = KubeSource::start(client, store.clone(), options);
            tracing::info!("listing config from the Kubernetes API");
            kube.synced().await;
            Ok(Following::Kubernetes(kube, operator))
        }
    }
}

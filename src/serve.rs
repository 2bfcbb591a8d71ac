//! `pilotfish serve`: a config source (a directory, or the Kubernetes API), the store, the push
//! pipeline, the xDS server and the status endpoints, wired together. The binary, the
//! benchmarks and the end-to-end tests all run this.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::model::MeshConfig;
use crate::operator::{Operator, OperatorOptions};
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
    Kubernetes { client: kube::Client, options: KubeOptions, operator: OperatorOptions },
}

#[derive(Clone)]
pub struct ServeOptions {
    pub source: ConfigSource,
    pub debounce: Duration,
    pub mesh: MeshConfig,
}

/// The sockets `serve` answers on, bound by the caller (so tests can bind port 0).
pub struct Listeners {
    /// Plaintext ADS (istiod's 15010).
    pub xds: TcpListener,
    /// `/ready` and `/version` (istiod's 8080).
    pub status: Option<TcpListener>,
    /// The validating webhook (istiod's 15017); Kubernetes only.
    pub webhook: Option<TcpListener>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Source(#[from] source::watch::WatchError),
    #[error(transparent)]
    Xds(#[from] xds::XdsError),
}

/// The running source, and in a cluster the election and webhook.
enum Following {
    Directory(tokio::task::JoinHandle<()>),
    Kubernetes(KubeSource, Operator),
}

impl Following {
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
    let status = listeners.status.map(|listener| {
        let stopped = async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        };
        tokio::spawn(crate::status::serve(listener, ready_rx, stopped))
    });
    let drain = async {
        shutdown.await;
        tracing::info!("draining: not ready, closing every xDS stream");
        ready.send_replace(false);
        draining.send_replace(true);
    };
    tokio::pin!(drain);

    let store = Arc::new(Mutex::new(Store::new()));
    let following = tokio::select! {
        following = load(options.source, &store, listeners.webhook, draining_rx) => following?,
        () = &mut drain => {
            stop.send_replace(true);
            return Ok(());
        }
    };
    let (store_rx, snapshot) = {
        let store = store.lock().unwrap_or_else(|p| p.into_inner());
        (store.subscribe(), store.snapshot())
    };
    let context = crate::push::build(&snapshot, &options.mesh, None);
    tracing::info!(objects = snapshot.len(), "config loaded");

    let (snapshot_tx, snapshot_rx) = watch::channel::<Arc<dyn Snapshot>>(context.clone());
    let pipeline = tokio::spawn(crate::push::run(store_rx, options.mesh.clone(), options.debounce, snapshot_tx, context));
    ready.send_replace(true);
    let result = xds::serve(listeners.xds, snapshot_rx, connections, drain).await;
    stop.send_replace(true);
    pipeline.abort();
    following.stop().await;
    if let Some(status) = status {
        let _ = status.await;
    }
    Ok(result?)
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
        ConfigSource::Kubernetes { client, options, operator } => {
            // The election and the webhook need no config: they start while the cluster is listed.
            let operator = Operator::start(client.clone(), operator, webhook, draining);
            let mut kube = KubeSource::start(client, store.clone(), options);
            tracing::info!("listing config from the Kubernetes API");
            kube.synced().await;
            Ok(Following::Kubernetes(kube, operator))
        }
    }
}

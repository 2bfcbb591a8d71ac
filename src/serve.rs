//! `pilotfish serve`: a directory source, the store, the push pipeline and the xDS server,
//! wired together. The binary, the benchmarks and the end-to-end tests all run this.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::model::MeshConfig;
use crate::source::{self, Directory};
use crate::store::Store;
use crate::xds::{self, Connections, Snapshot};

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config_dir: PathBuf,
    pub debounce: Duration,
    pub mesh: MeshConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Source(#[from] source::watch::WatchError),
    #[error(transparent)]
    Xds(#[from] xds::XdsError),
}

/// Loads the directory, then serves ADS on `listener` until `shutdown` completes. The
/// directory is read fully before the first proxy is answered.
pub async fn serve(
    options: ServeOptions,
    listener: TcpListener,
    connections: Arc<Connections>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let store = Arc::new(Mutex::new(Store::new()));
    let mut directory = Directory::new(&options.config_dir);
    let diagnostics = source::watch::load(&mut directory, &store)?;
    let (store_rx, snapshot) = {
        let store = store.lock().unwrap_or_else(|p| p.into_inner());
        (store.subscribe(), store.snapshot())
    };
    let context = crate::push::build(&snapshot, &options.mesh, None);
    tracing::info!(dir = %options.config_dir.display(), objects = snapshot.len(), "config loaded");

    let (snapshot_tx, snapshot_rx) = watch::channel::<Arc<dyn Snapshot>>(context.clone());
    let pipeline = tokio::spawn(crate::push::run(store_rx, options.mesh.clone(), options.debounce, snapshot_tx, context));
    let (diag_tx, _diag_rx) = watch::channel(Arc::new(diagnostics));
    let watcher = tokio::spawn(async move {
        if let Err(e) = source::watch::run(directory, store, diag_tx).await {
            tracing::error!("{e}; config changes are no longer followed");
        }
    });
    let result = xds::serve(listener, snapshot_rx, connections, shutdown).await;
    watcher.abort();
    pipeline.abort();
    Ok(result?)
}

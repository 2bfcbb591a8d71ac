//! From store changes to published snapshots: index, then hand the new `PushContext` to the
//! xDS server. The first change after a quiet period is pushed at once; changes that follow
//! within the debounce window are coalesced into one push at its end.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::generate::PushContext;
use crate::index::Index;
use crate::model::MeshConfig;
use crate::store;
use crate::xds::Snapshot;

/// Builds the context for a store snapshot, logging cross-object problems that are new.
pub fn build(snapshot: &store::Snapshot, mesh: &MeshConfig, previous: Option<&Index>) -> Arc<PushContext> {
    let index = Index::build(snapshot, mesh);
    for d in &index.diagnostics {
        if previous.is_none_or(|p| !p.diagnostics.contains(d)) {
            tracing::warn!("{d}");
        }
    }
    Arc::new(PushContext::new(Arc::new(index)))
}

/// Runs until the store goes away: every store revision becomes a published snapshot.
pub async fn run(
    mut store: watch::Receiver<Arc<store::Snapshot>>,
    mesh: MeshConfig,
    debounce: Duration,
    publish: watch::Sender<Arc<dyn Snapshot>>,
    mut current: Arc<PushContext>,
) {
    loop {
        // Quiet: wait for a change and push it at once.
        if store.changed().await.is_err() {
            return;
        }
        current = push(&mut store, &mesh, &publish, &current);
        // A burst may follow: coalesce whatever arrives within each window.
        loop {
            tokio::time::sleep(debounce).await;
            match store.has_changed() {
                Ok(true) => current = push(&mut store, &mesh, &publish, &current),
                Ok(false) => break,
                Err(_) => return,
            }
        }
    }
}

fn push(
    store: &mut watch::Receiver<Arc<store::Snapshot>>,
    mesh: &MeshConfig,
    publish: &watch::Sender<Arc<dyn Snapshot>>,
    previous: &Arc<PushContext>,
) -> Arc<PushContext> {
    let snapshot = store.borrow_and_update().clone();
    let started = std::time::Instant::now();
    let context = build(&snapshot, mesh, Some(previous.index()));
    tracing::info!(revision = snapshot.revision, objects = snapshot.len(), elapsed = ?started.elapsed(), "config indexed; pushing");
    publish.send_replace(context.clone());
    context
}

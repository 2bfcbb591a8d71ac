//! From store changes to published snapshots: index, then hand the new `PushContext` to the
//! xDS server. The first change after a quiet period is pushed at once; changes that follow
//! within the debounce window are coalesced into one push at its end.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{kube, mesh_config};
use crate::generate::PushContext;
use crate::index::Index;
use crate::model::MeshConfig;
use crate::store;
use crate::xds::Snapshot;

/// Builds the context for a store snapshot, logging cross-object problems that are new. With
/// the previous context, unchanged resources keep their `Arc`s (see `PushContext::after`).
pub fn build(snapshot: &store::Snapshot, mesh: &MeshConfig, previous: Option<&Arc<PushContext>>) -> Arc<PushContext> {
    let mesh = effective_mesh(snapshot, mesh);
    let index = match previous {
        Some(p) => Index::build_after(snapshot, &mesh, p.index()),
        None => Index::build(snapshot, &mesh),
    };
    let seen: std::collections::HashSet<&crate::diagnostic::Diagnostic> =
        previous.map(|p| p.index().diagnostics.iter().collect()).unwrap_or_default();
    for d in index.diagnostics.iter().filter(|d| !seen.contains(d)) {
        tracing::warn!("{d}");
    }
    Arc::new(PushContext::after(Arc::new(index), previous.cloned()))
}

/// `base` (the command line's settings and istiod's defaults) with the `mesh` of ConfigMap
/// `istio` in the root namespace applied, when the store has one. Validation rejects a
/// ConfigMap whose mesh does not apply, so the store keeps the last one that did.
pub fn effective_mesh(snapshot: &store::Snapshot, base: &MeshConfig) -> MeshConfig {
    let Some(entry) = snapshot.get(&mesh_config::config_map_key(&base.root_namespace)) else { return base.clone() };
    let Some(config_map) = entry.object.spec::<kube::ConfigMap>() else { return base.clone() };
    mesh_config::from_config_map(&entry.object.meta, config_map, base).unwrap_or_else(|e| {
        tracing::warn!("{e}; using the defaults");
        base.clone()
    })
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
    let context = build(&snapshot, mesh, Some(previous));
    tracing::info!(revision = snapshot.revision, objects = snapshot.len(), elapsed = ?started.elapsed(), "config indexed; pushing");
    publish.send_replace(context.clone());
    context
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::watch;
    use tokio::time::Instant;

    use super::*;
    use crate::config::{Meta, Object, Spec};
    use crate::store::{Change, Entry, SourceId, Store};

    fn namespace(store: &mut Store, name: &str) {
        let object = Object { meta: Meta { name: name.into(), ..Default::default() }, spec: Spec::Namespace };
        store.apply(Change::Upsert(Entry { object: Arc::new(object), origin: None, source: SourceId::Files }));
        store.publish();
    }

    /// Records every revision the pipeline publishes, with when (in paused, virtual time).
    fn record(mut rx: watch::Receiver<Arc<dyn Snapshot>>) -> Arc<std::sync::Mutex<Vec<(u64, Instant)>>> {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = seen.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let revision = rx.borrow_and_update().revision();
                out.lock().unwrap().push((revision, Instant::now()));
            }
        });
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_change_is_pushed_at_once_and_a_burst_is_coalesced() {
        let mut store = Store::new();
        let mesh = MeshConfig::default();
        let initial = build(&store.snapshot(), &mesh, None);
        let (tx, rx) = watch::channel::<Arc<dyn Snapshot>>(initial.clone());
        let seen = record(rx);
        tokio::spawn(run(store.subscribe(), mesh, Duration::from_millis(100), tx, initial));
        tokio::task::yield_now().await;

        let start = Instant::now();
        namespace(&mut store, "a");
        tokio::time::sleep(Duration::from_millis(1)).await;
        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 1, "the first change is pushed without waiting for the window");
            assert_eq!(seen[0].0, 1);
            assert!(seen[0].1 - start < Duration::from_millis(1));
        }

        // A burst inside the window: one more push, at its end, with the last revision.
        for name in ["b", "c", "d", "e"] {
            namespace(&mut store, name);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 2, "{seen:?}");
            assert_eq!(seen[1].0, 5);
            assert!(seen[1].1 - start >= Duration::from_millis(100));
        }

        // Quiet again: the next lone change goes out at once too.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let later = Instant::now();
        namespace(&mut store, "f");
        tokio::time::sleep(Duration::from_millis(1)).await;
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(seen[2].1 - later < Duration::from_millis(1));
    }
}

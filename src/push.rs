//! From store changes to published snapshots: index, then hand the new `PushContext` to the
//! xDS server. The first change after a quiet period is pushed at once; changes that follow
//! within the debounce window are coalesced into one push at its end.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use std::collections::BTreeMap;

use crate::config::istio::RequestAuthentication;
use crate::config::{kube, mesh_config};
use crate::generate::PushContext;
use crate::generate::security::jwt;
use crate::index::Index;
use crate::model::MeshConfig;
use crate::model::jwks::{JwksKeys, JwksSource};
use crate::source::jwks::Jwks;
use crate::store;
use crate::xds::Snapshot;

/// One published push, for the debug endpoints (`/debug/push_status` and the views of the
/// index): the context the xDS server got, when, and how long building it took.
#[derive(Clone)]
pub struct Pushed {
    pub context: Arc<PushContext>,
    pub at: std::time::SystemTime,
    pub took: Duration,
}

impl Pushed {
    /// Builds a context as [`build`] does, timed.
    pub fn build(
        snapshot: &store::Snapshot,
        mesh: &MeshConfig,
        previous: Option<&Arc<PushContext>>,
    ) -> Pushed {
        build_with(snapshot, mesh, previous, None)
    }
}

/// Builds the context for a store snapshot, logging cross-object problems that are new. With
/// the previous context, unchanged resources keep their `Arc`s (see `PushContext::after`).
pub fn build(
    snapshot: &store::Snapshot,
    mesh: &MeshConfig,
    previous: Option<&Arc<PushContext>>,
) -> Arc<PushContext> {
    build_with(snapshot, mesh, previous, None).context
}

/// [`build`] with the JWKS fetched so far (`None`: the previous revision's), timed.
fn build_with(
    snapshot: &store::Snapshot,
    mesh: &MeshConfig,
    previous: Option<&Arc<PushContext>>,
    jwks: Option<JwksKeys>,
) -> Pushed {
    let started = std::time::Instant::now();
    let mesh = effective_mesh(snapshot, mesh);
    let mut index = match previous {
        Some(p) => Index::build_after(snapshot, &mesh, p.index()),
        None => Index::build(snapshot, &mesh),
    };
    // Kept as the previous `Arc` when equal: generation compares it by pointer.
    index.jwks = match (jwks, previous) {
        (Some(keys), Some(p)) if *p.index().jwks == keys => p.index().jwks.clone(),
        (Some(keys), _) => Arc::new(keys),
        (None, Some(p)) => p.index().jwks.clone(),
        (None, None) => Arc::default(),
    };
    let seen: std::collections::HashSet<&crate::diagnostic::Diagnostic> = previous
        .map(|p| p.index().diagnostics.iter().collect())
        .unwrap_or_default();
    for d in index.diagnostics.iter().filter(|d| !seen.contains(d)) {
        tracing::warn!("{d}");
    }
    let (services, virtual_services) = (index.services.len(), index.virtual_services.len());
    let context = Arc::new(PushContext::after(Arc::new(index), previous.cloned()));
    let took = started.elapsed();
    crate::metrics::global().pushed(took, services, virtual_services);
    Pushed {
        context,
        at: std::time::SystemTime::now(),
        took,
    }
}

/// `base` (the command line's settings and istiod's defaults) with the `mesh` of ConfigMap
/// `istio` in the root namespace applied, when the store has one. Validation rejects a
/// ConfigMap whose mesh does not apply, so the store keeps the last one that did.
pub fn effective_mesh(snapshot: &store::Snapshot, base: &MeshConfig) -> MeshConfig {
    let Some(entry) = snapshot.get(&mesh_config::config_map_key(&base.root_namespace)) else {
        return base.clone();
    };
    let Some(config_map) = entry.object.spec::<kube::ConfigMap>() else {
        return base.clone();
    };
    mesh_config::from_config_map(&entry.object.meta, config_map, base).unwrap_or_else(|e| {
        tracing::warn!("{e}; using the defaults");
        base.clone()
    })
}

/// Where [`run`] publishes: the xDS server's snapshots, and the same context typed, with its
/// timing, for the debug endpoints.
pub struct Publish {
    pub snapshots: watch::Sender<Arc<dyn Snapshot>>,
    pub pushes: watch::Sender<Option<Pushed>>,
}

/// Runs until the store goes away: every store revision becomes a published snapshot, and so
/// does every change of the JWKS fetched for RequestAuthentications.
pub async fn run(
    mut store: watch::Receiver<Arc<store::Snapshot>>,
    mesh: MeshConfig,
    debounce: Duration,
    publish: Publish,
    mut current: Arc<PushContext>,
    jwks: Arc<Jwks>,
) {
    let mut keys = jwks.subscribe();
    let mut pipeline = Pipeline {
        mesh,
        publish,
        jwks,
        wanted: BTreeMap::new(),
    };
    pipeline.fetch(&store.borrow().clone());
    loop {
        // Quiet: wait for a change and push it at once.
        tokio::select! {
            changed = store.changed() => if changed.is_err() { return },
            changed = keys.changed() => if changed.is_err() { return },
        }
        keys.borrow_and_update();
        crate::metrics::global().debounce.observe(0.0);
        current = pipeline.push(&mut store, &current);
        // A burst may follow: coalesce whatever arrives within each window, and push it at the
        // window's end.
        loop {
            let end = tokio::time::Instant::now() + debounce;
            let first = tokio::select! {
                changed = store.changed() => changed.map(|()| tokio::time::Instant::now()),
                changed = keys.changed() => changed.map(|()| tokio::time::Instant::now()),
                () = tokio::time::sleep_until(end) => break,
            };
            let Ok(first) = first else { return };
            tokio::time::sleep_until(end).await;
            keys.borrow_and_update();
            crate::metrics::global()
                .debounce
                .observe(first.elapsed().as_secs_f64());
            current = pipeline.push(&mut store, &current);
        }
    }
}

struct Pipeline {
    mesh: MeshConfig,
    publish: Publish,
    jwks: Arc<Jwks>,
    /// The JWKS sources last asked for.
    wanted: BTreeMap<JwksSource, Duration>,
}

impl Pipeline {
    fn push(
        &mut self,
        store: &mut watch::Receiver<Arc<store::Snapshot>>,
        previous: &Arc<PushContext>,
    ) -> Arc<PushContext> {
        let snapshot = store.borrow_and_update().clone();
        let pushed = build_with(
            &snapshot,
            &self.mesh,
            Some(previous),
            Some(self.jwks.keys()),
        );
        tracing::info!(revision = snapshot.revision, objects = snapshot.len(), elapsed = ?pushed.took, "config indexed; pushing");
        let context = pushed.context.clone();
        self.publish.snapshots.send_replace(context.clone());
        self.publish.pushes.send_replace(Some(pushed));
        self.fetch(&snapshot);
        context
    }

    /// Starts fetching the keys of `jwksUri`s that appeared; a fetch that changes keys wakes
    /// [`run`], which pushes them.
    fn fetch(&mut self, snapshot: &store::Snapshot) {
        let wanted = jwt::jwks_sources(
            snapshot
                .typed::<RequestAuthentication>()
                .flat_map(|(_, ra)| &ra.jwt_rules),
        );
        if wanted == self.wanted {
            return;
        }
        self.wanted = wanted.clone();
        let jwks = self.jwks.clone();
        // Failures are logged by the fetcher, which keeps retrying them.
        tokio::spawn(async move {
            jwks.refresh(wanted).await;
        });
    }
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
        let object = Object {
            meta: Meta {
                name: name.into(),
                ..Default::default()
            },
            spec: Spec::Namespace,
        };
        store.apply(Change::Upsert(Entry {
            object: Arc::new(object),
            origin: None,
            source: SourceId::Files,
        }));
        store.publish();
    }

    /// Records every revision the pipeline publishes, with when (in paused, virtual time).
    fn record(
        mut rx: watch::Receiver<Arc<dyn Snapshot>>,
    ) -> Arc<std::sync::Mutex<Vec<(u64, Instant)>>> {
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
        let (pushes, pushed) = watch::channel(None);
        let seen = record(rx);
        tokio::spawn(run(
            store.subscribe(),
            mesh,
            Duration::from_millis(100),
            Publish {
                snapshots: tx,
                pushes,
            },
            initial,
            Arc::new(Jwks::new(Default::default())),
        ));
        tokio::task::yield_now().await;
        let debounce = &crate::metrics::global().debounce;
        let (count, sum) = (debounce.count(), debounce.sum());

        let start = Instant::now();
        namespace(&mut store, "a");
        tokio::time::sleep(Duration::from_millis(1)).await;
        {
            let seen = seen.lock().unwrap();
            assert_eq!(
                seen.len(),
                1,
                "the first change is pushed without waiting for the window"
            );
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
        // pilot_debounce_time: nothing for the lone change, the wait of the burst's first.
        assert_eq!(debounce.count() - count, 2);
        let waited = debounce.sum() - sum;
        assert!((0.098..=0.1).contains(&waited), "{waited}");

        // Quiet again: the next lone change goes out at once too.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let later = Instant::now();
        namespace(&mut store, "f");
        tokio::time::sleep(Duration::from_millis(1)).await;
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(seen[2].1 - later < Duration::from_millis(1));
        let last = pushed.borrow().clone().unwrap();
        assert_eq!(
            last.context.index().revision,
            seen[2].0,
            "the typed publication follows the snapshots"
        );
    }
}

//! Keeps the store in sync with a Kubernetes API server.
//!
//! One kube-runtime watcher per kind (list in pages, then watch with bookmarks; a `410 Gone`
//! re-lists; errors back off) converts objects to store entries where it runs; one task applies
//! every watcher's events to the store ([`apply`]). Nothing is published until every kind has
//! been listed once, so the first revision — and so the first xDS response — is the whole
//! cluster, never a half-listed one. Istio kinds are found by discovery at their most stable
//! served version; a kind whose CRD is not installed holds nothing and is looked for again
//! until it appears.

mod apply;
mod convert;
mod kinds;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Kind;
use crate::store::Store;

pub use apply::Event;

/// How the source reaches and reads the cluster.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// Namespace of istiod's mesh config: the ConfigMap `istio` is read from here only.
    pub mesh_namespace: String,
    /// How long to wait before looking again for a CRD that is not installed.
    pub missing_crd_retry: Duration,
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions {
            mesh_namespace: "istio-system".into(),
            missing_crd_retry: Duration::from_secs(10),
        }
    }
}

/// The running source: its tasks, and whether every kind has been listed.
pub struct KubeSource {
    ready: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Events a watcher may have in flight before it waits for the store to catch up. Large
/// enough that a page of a list never waits; small enough to bound memory during a re-list.
const EVENT_BUFFER: usize = 4096;

impl KubeSource {
    /// Starts a watcher per kind and the task that feeds the store.
    pub fn start(
        client: kube::Client,
        store: Arc<Mutex<Store>>,
        options: KubeOptions,
    ) -> KubeSource {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let (ready_tx, ready) = watch::channel(false);
        let mut tasks: Vec<JoinHandle<()>> = Kind::ALL
            .into_iter()
            .map(|kind| {
                tokio::spawn(kinds::watch(
                    kind,
                    client.clone(),
                    options.clone(),
                    tx.clone(),
                ))
            })
            .collect();
        drop(tx);
        tasks.push(tokio::spawn(apply::run(rx, store, ready_tx)));
        KubeSource { ready, tasks }
    }

    /// Whether every kind has been listed (or found not installed) at least once.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    /// Waits until every kind has been listed once; the store has then published the cluster.
    pub async fn synced(&mut self) {
        // Err means the apply task ended, which happens only when the runtime shuts down.
        let _ = self.ready.wait_for(|ready| *ready).await;
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

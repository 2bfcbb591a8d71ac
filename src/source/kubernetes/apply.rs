//! The one task that applies every watcher's events to the store.
//!
//! A burst of events (a page of a list, a rollout's EndpointSlice updates) becomes one store
//! revision. A (re)list replaces the kind's objects as a whole when it completes, so a re-list
//! after `410 Gone` neither loses an object deleted meanwhile nor duplicates one, and an
//! unchanged object compares equal and publishes nothing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use super::convert::Converted;
use crate::config::{Kind, ObjectKey};
use crate::diagnostic::Diagnostic;
use crate::store::{Change, Entry, SourceId, Store};

/// What a watcher tells the store.
#[derive(Debug)]
pub enum Event {
    /// A (re)list of the kind begins: what follows until `ListDone` is its complete set.
    Listing(Kind),
    Listed(Converted),
    /// The list is complete: the kind's objects become exactly those listed.
    ListDone(Kind),
    Upsert(Converted),
    Delete(ObjectKey),
    /// The kind's CRD is not installed: it has no objects, and does not hold up readiness.
    Missing(Kind),
}

/// Events applied under one lock of the store, and so at most in one revision; the rest of a
/// longer burst goes into the next.
const MAX_BATCH: usize = 16_384;

/// Applies events until every watcher has gone. Publishes nothing until every kind has been
/// listed once; then `ready` turns true, and every batch after that is published.
pub async fn run(
    mut rx: mpsc::Receiver<Event>,
    store: Arc<Mutex<Store>>,
    ready: watch::Sender<bool>,
) {
    let mut applier = Applier::default();
    while let Some(first) = rx.recv().await {
        let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
        applier.apply(&mut store, first);
        for _ in 1..MAX_BATCH {
            match rx.try_recv() {
                Ok(event) => applier.apply(&mut store, event),
                Err(_) => break,
            }
        }
        if *ready.borrow() {
            store.publish();
        } else if applier.synced.len() == Kind::ALL.len() {
            store.publish();
            tracing::info!(
                objects = store.snapshot().len(),
                "listed every kind from the Kubernetes API"
            );
            ready.send_replace(true);
        }
    }
}

#[derive(Default)]
struct Applier {
    /// Kinds being (re)listed: the entries listed so far, and every key seen (rejected ones too).
    listing: HashMap<Kind, (Vec<Entry>, HashSet<ObjectKey>)>,
    /// Kinds listed at least once, or found not installed.
    synced: HashSet<Kind>,
    /// Each object's current diagnostics, so each is logged once, when it appears.
    diagnostics: HashMap<ObjectKey, Vec<Diagnostic>>,
}

impl Applier {
    fn apply(&mut self, store: &mut Store, event: Event) {
        match event {
            Event::Listing(kind) => {
                self.listing.insert(kind, Default::default());
            }
            Event::Listed(converted) => {
                let key = converted.key.clone();
                let entry = self.accept(store, converted);
                let (entries, seen) = self.listing.entry(key.kind).or_default();
                entries.extend(entry);
                seen.insert(key);
            }
            Event::ListDone(kind) => {
                let (entries, seen) = self.listing.remove(&kind).unwrap_or_default();
                self.diagnostics
                    .retain(|key, _| key.kind != kind || seen.contains(key));
                store.replace_kind(SourceId::Kubernetes, kind, entries);
                self.synced.insert(kind);
            }
            Event::Upsert(converted) => {
                if let Some(entry) = self.accept(store, converted) {
                    store.apply(Change::Upsert(entry));
                }
            }
            Event::Delete(key) => {
                self.diagnostics.remove(&key);
                store.apply(Change::Delete(key));
            }
            Event::Missing(kind) => {
                self.listing.remove(&kind);
                self.diagnostics.retain(|key, _| key.kind != kind);
                store.replace_kind(SourceId::Kubernetes, kind, Vec::new());
                self.synced.insert(kind);
            }
        }
    }

    /// The entry to store for a converted object: itself when valid; when rejected, the version
    /// already stored (as the API server keeps the old object when an update is refused), or
    /// nothing. Logs the object's diagnostics that are new.
    fn accept(&mut self, store: &Store, converted: Converted) -> Option<Entry> {
        let Converted {
            key,
            object,
            mut diagnostics,
        } = converted;
        let entry = match object {
            Some(object) => Some(Entry {
                object: Arc::new(object),
                origin: None,
                source: SourceId::Kubernetes,
            }),
            None => {
                let previous = store.get(&key).map(|e| (**e).clone());
                if previous.is_some() {
                    diagnostics.push(
                        Diagnostic::warning(
                            "",
                            "rejected; the previous version keeps being served",
                        )
                        .on(&key),
                    );
                }
                previous
            }
        };
        let known = self.diagnostics.get(&key);
        for d in diagnostics
            .iter()
            .filter(|d| !known.is_some_and(|k| k.contains(d)))
        {
            if d.is_error() {
                tracing::error!("{d}");
            } else {
                tracing::warn!("{d}");
            }
        }
        if diagnostics.is_empty() {
            self.diagnostics.remove(&key);
        } else {
            self.diagnostics.insert(key, diagnostics);
        }
        entry
    }
}

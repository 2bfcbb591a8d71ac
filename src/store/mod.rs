//! One store of typed objects, fed by every source, published as cheap immutable snapshots.
//!
//! The store is a plain synchronous struct: sources call [`Store::replace_source`] (a directory
//! re-read) or [`Store::apply`] (one watch event), then [`Store::publish`]. Readers hold an
//! `Arc<Snapshot>` that never changes under them; each kind's map is shared between snapshots
//! until that kind changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

use crate::config::{Kind, KindSpec, Object, ObjectKey};
use crate::diagnostic::Origin;
use crate::sorted::{Side, merge_join};

/// Which source an object came from, so one source's reload never removes another's objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum SourceId {
    Files,
    Kubernetes,
}

/// An object as stored: the object and where it was read from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub object: Arc<Object>,
    pub origin: Option<Origin>,
    pub source: SourceId,
}

type KindMap = BTreeMap<(String, String), Arc<Entry>>;

/// An immutable view of every object at one revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub revision: u64,
    kinds: [Arc<KindMap>; Kind::ALL.len()],
}

impl Snapshot {
    /// A snapshot of exactly these entries, for code that reads config once instead of
    /// following a source (`validate`, `render`, tests, benchmarks).
    pub fn of(entries: Vec<Entry>) -> Arc<Snapshot> {
        let mut store = Store::new();
        for entry in entries {
            store.apply(Change::Upsert(entry));
        }
        store.publish();
        store.snapshot()
    }

    /// The objects of a YAML text as a directory would store them, for tests: it must parse
    /// with no error diagnostics.
    #[cfg(test)]
    pub fn from_yaml(yaml: &str) -> Arc<Snapshot> {
        let parsed = crate::config::parse::parse_text("test.yaml", yaml).expect("parses");
        assert!(
            parsed.diagnostics.iter().all(|d| !d.is_error()),
            "{:#?}",
            parsed.diagnostics
        );
        Snapshot::of(parsed.objects.into_iter().map(Entry::from_file).collect())
    }

    /// Every object of one kind, ordered by namespace then name.
    pub fn entries(&self, kind: Kind) -> impl Iterator<Item = &Arc<Entry>> {
        self.kinds[kind as usize].values()
    }

    /// Every object of a kind with its typed spec.
    pub fn typed<T: KindSpec + 'static>(&self) -> impl Iterator<Item = (&Arc<Entry>, &T)> {
        self.entries(T::KIND)
            .filter_map(|e| e.object.spec::<T>().map(|s| (e, s)))
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Arc<Entry>> {
        self.kinds[key.kind as usize].get(&(key.namespace.clone(), key.name.clone()))
    }

    /// Every object of one kind in one namespace, by name.
    pub fn in_namespace<'a>(
        &'a self,
        kind: Kind,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Entry>> {
        self.kinds[kind as usize]
            .range((namespace.to_string(), String::new())..)
            .take_while(move |((ns, _), _)| ns == namespace)
            .map(|(_, entry)| entry)
    }

    /// Whether one kind is the same in both snapshots: a kind's map is shared until it
    /// changes, so this is a pointer comparison.
    pub fn same_kind(&self, other: &Snapshot, kind: Kind) -> bool {
        Arc::ptr_eq(&self.kinds[kind as usize], &other.kinds[kind as usize])
    }

    /// The objects of one kind that differ from `before`: (before, now) per key, `None` where
    /// absent. One ordered pass over both maps, and nothing for an unchanged kind.
    pub fn changes<'a>(
        &'a self,
        before: &'a Snapshot,
        kind: Kind,
    ) -> Vec<(Option<&'a Arc<Entry>>, Option<&'a Arc<Entry>>)> {
        if self.same_kind(before, kind) {
            return Vec::new();
        }
        let mut out = Vec::new();
        merge_join(
            &before.kinds[kind as usize],
            &self.kinds[kind as usize],
            |side| match side {
                Side::Both(x, y) if Arc::ptr_eq(x, y) || x == y => {}
                Side::Both(x, y) => out.push((Some(x), Some(y))),
                Side::Old(_, x) => out.push((Some(x), None)),
                Side::New(_, y) => out.push((None, Some(y))),
            },
        );
        out
    }

    pub fn len(&self) -> usize {
        self.kinds.iter().map(|m| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Entry {
    /// An object read from a file.
    pub fn from_file(located: crate::config::parse::Located) -> Entry {
        Entry {
            object: located.object,
            origin: Some(located.origin),
            source: SourceId::Files,
        }
    }

    /// This object with another spec, same metadata, origin and source: what the index makes of
    /// it (merged DestinationRules, VirtualServices with their delegates), so diagnostics still
    /// name the file it came from.
    pub fn with_spec(&self, spec: crate::config::Spec) -> Arc<Entry> {
        Arc::new(Entry {
            object: Arc::new(crate::config::Object {
                meta: self.object.meta.clone(),
                spec,
            }),
            ..self.clone()
        })
    }
}

/// A change from a watch-style source.
#[derive(Debug, Clone)]
pub enum Change {
    Upsert(Entry),
    Delete(ObjectKey),
}

pub struct Store {
    current: Snapshot,
    dirty: bool,
    tx: watch::Sender<Arc<Snapshot>>,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    pub fn new() -> Store {
        let (tx, _) = watch::channel(Arc::new(Snapshot::default()));
        Store {
            current: Snapshot::default(),
            dirty: false,
            tx,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// Applies one change; returns whether anything changed.
    pub fn apply(&mut self, change: Change) -> bool {
        let changed = match change {
            Change::Upsert(entry) => {
                let key = entry.object.key();
                let map = &mut self.current.kinds[key.kind as usize];
                let slot = (key.namespace, key.name);
                // Unchanged files hand over the same object `Arc`: compare pointers first.
                let same = |old: &Entry| {
                    (Arc::ptr_eq(&old.object, &entry.object) || old.object == entry.object)
                        && old.origin == entry.origin
                        && old.source == entry.source
                };
                if map.get(&slot).is_some_and(|old| same(old)) {
                    false
                } else {
                    Arc::make_mut(map).insert(slot, Arc::new(entry));
                    true
                }
            }
            Change::Delete(key) => {
                let map = &mut self.current.kinds[key.kind as usize];
                let slot = (key.namespace, key.name);
                map.contains_key(&slot) && Arc::make_mut(map).remove(&slot).is_some()
            }
        };
        self.dirty |= changed;
        changed
    }

    /// Makes `entries` the complete set of objects from `source`: adds and updates them, and
    /// deletes that source's objects that are not among them. Returns whether anything changed.
    pub fn replace_source(&mut self, source: SourceId, entries: Vec<Entry>) -> bool {
        self.replace(source, entries, |_| true)
    }

    /// As [`Store::replace_source`], for one kind only: a watch source re-lists kind by kind.
    pub fn replace_kind(&mut self, source: SourceId, kind: Kind, entries: Vec<Entry>) -> bool {
        debug_assert!(entries.iter().all(|e| e.object.kind() == kind));
        self.replace(source, entries, |k| k == kind)
    }

    fn replace(
        &mut self,
        source: SourceId,
        entries: Vec<Entry>,
        replaced: impl Fn(Kind) -> bool,
    ) -> bool {
        let mut keep: std::collections::HashSet<ObjectKey> = std::collections::HashSet::new();
        let mut changed = false;
        for entry in entries {
            keep.insert(entry.object.key());
            changed |= self.apply(Change::Upsert(Entry { source, ..entry }));
        }
        let stale: Vec<ObjectKey> = Kind::ALL
            .into_iter()
            .filter(|k| replaced(*k))
            .flat_map(|k| self.current.kinds[k as usize].values())
            .filter(|e| e.source == source)
            .map(|e| e.object.key())
            .filter(|k| !keep.contains(k))
            .collect();
        for key in stale {
            changed |= self.apply(Change::Delete(key));
        }
        changed
    }

    /// The object as it stands, published or not.
    pub fn get(&self, key: &ObjectKey) -> Option<&Arc<Entry>> {
        self.current.get(key)
    }

    /// Publishes the pending changes as a new revision; a no-op when nothing changed.
    pub fn publish(&mut self) -> bool {
        if !self.dirty {
            return false;
        }
        self.dirty = false;
        self.current.revision += 1;
        let snapshot = Arc::new(self.current.clone());
        self.tx.send_replace(snapshot);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Meta, Spec};

    fn ns(name: &str) -> Entry {
        Entry {
            object: Arc::new(Object {
                meta: Meta {
                    name: name.into(),
                    ..Default::default()
                },
                spec: Spec::Namespace,
            }),
            origin: None,
            source: SourceId::Files,
        }
    }

    #[test]
    fn publishes_only_real_changes() {
        let mut store = Store::new();
        let rx = store.subscribe();
        assert!(store.replace_source(SourceId::Files, vec![ns("a"), ns("b")]));
        assert!(store.publish());
        assert_eq!(rx.borrow().revision, 1);
        assert_eq!(rx.borrow().len(), 2);

        // The same content again: nothing to publish.
        assert!(!store.replace_source(SourceId::Files, vec![ns("a"), ns("b")]));
        assert!(!store.publish());
        assert_eq!(rx.borrow().revision, 1);

        // Dropping one deletes it; other kinds' maps stay shared.
        let before = store.snapshot();
        assert!(store.replace_source(SourceId::Files, vec![ns("a")]));
        store.publish();
        let after = store.snapshot();
        assert_eq!(after.len(), 1);
        assert!(Arc::ptr_eq(
            &before.kinds[Kind::Service as usize],
            &after.kinds[Kind::Service as usize]
        ));
        assert_eq!(before.len(), 2, "old snapshots never change");
    }

    #[test]
    fn changes_between_snapshots_and_objects_by_namespace() {
        let pod = |ns: &str, name: &str, ip: &str| Entry {
            object: Arc::new(Object {
                meta: Meta {
                    name: name.into(),
                    namespace: ns.into(),
                    ..Default::default()
                },
                spec: Spec::Pod(crate::config::kube::Pod {
                    ips: vec![ip.into()],
                    ..Default::default()
                }),
            }),
            origin: None,
            source: SourceId::Kubernetes,
        };
        let mut store = Store::new();
        for (ns, name, ip) in [
            ("a", "p1", "10.0.0.1"),
            ("b", "p1", "10.0.0.2"),
            ("b", "p2", "10.0.0.3"),
            ("c", "p1", "10.0.0.4"),
        ] {
            store.apply(Change::Upsert(pod(ns, name, ip)));
        }
        store.publish();
        let before = store.snapshot();
        let names = |s: &Snapshot, ns: &str| {
            s.in_namespace(Kind::Pod, ns)
                .map(|e| e.object.meta.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&before, "b"), ["p1", "p2"]);
        assert!(names(&before, "bb").is_empty());
        assert!(before.changes(&before, Kind::Pod).is_empty());

        store.apply(Change::Delete(pod("a", "p1", "").object.key()));
        store.apply(Change::Upsert(pod("b", "p2", "10.0.0.9")));
        store.apply(Change::Upsert(pod("b", "p3", "10.0.0.5")));
        store.apply(Change::Upsert(pod("c", "p1", "10.0.0.4")));
        store.publish();
        let after = store.snapshot();
        let seen: Vec<(Option<String>, Option<String>)> = after
            .changes(&before, Kind::Pod)
            .into_iter()
            .map(|(old, new)| {
                let ip = |e: &Arc<Entry>| {
                    e.object.spec::<crate::config::kube::Pod>().unwrap().ips[0].clone()
                };
                (old.map(ip), new.map(ip))
            })
            .collect();
        let some = |s: &str| Some(s.to_string());
        assert_eq!(
            seen,
            [
                (some("10.0.0.1"), None),
                (some("10.0.0.3"), some("10.0.0.9")),
                (None, some("10.0.0.5"))
            ]
        );
        assert!(after.same_kind(&before, Kind::Service));
        assert!(!after.same_kind(&before, Kind::Pod));
    }

    #[test]
    fn one_source_does_not_remove_anothers_objects() {
        let mut store = Store::new();
        store.apply(Change::Upsert(Entry {
            source: SourceId::Kubernetes,
            ..ns("k")
        }));
        store.replace_source(SourceId::Files, vec![ns("f")]);
        store.replace_source(SourceId::Files, vec![]);
        store.publish();
        let snap = store.snapshot();
        let names: Vec<_> = snap
            .entries(Kind::Namespace)
            .map(|e| e.object.meta.name.clone())
            .collect();
        assert_eq!(names, vec!["k"]);
    }

    #[test]
    fn replacing_one_kind_leaves_the_others() {
        let mut store = Store::new();
        let kube = |e: Entry| Entry {
            source: SourceId::Kubernetes,
            ..e
        };
        store.apply(Change::Upsert(kube(ns("a"))));
        let config_map = Entry {
            object: Arc::new(Object {
                meta: Meta {
                    name: "istio".into(),
                    namespace: "istio-system".into(),
                    ..Default::default()
                },
                spec: Spec::ConfigMap(Default::default()),
            }),
            ..kube(ns("unused"))
        };
        store.apply(Change::Upsert(config_map));
        assert!(store.replace_kind(SourceId::Kubernetes, Kind::Namespace, vec![kube(ns("b"))]));
        store.publish();
        let snap = store.snapshot();
        let names: Vec<_> = snap
            .entries(Kind::Namespace)
            .map(|e| e.object.meta.name.clone())
            .collect();
        assert_eq!(names, vec!["b"]);
        assert_eq!(snap.entries(Kind::ConfigMap).count(), 1);
        assert!(
            !store.replace_kind(SourceId::Kubernetes, Kind::Namespace, vec![kube(ns("b"))]),
            "a re-list of the same set changes nothing"
        );
    }

    #[test]
    fn an_unchanged_object_keeps_its_arc_and_publishes_nothing() {
        let mut store = Store::new();
        let entry = ns("a");
        store.replace_source(SourceId::Files, vec![entry.clone()]);
        store.publish();
        // The same object again, as a fresh Arc with equal content: nothing changes either.
        let fresh = Entry {
            object: Arc::new((*entry.object).clone()),
            ..entry.clone()
        };
        assert!(!store.replace_source(SourceId::Files, vec![fresh]));
        let snap = store.snapshot();
        let kept = snap.entries(Kind::Namespace).next().unwrap();
        assert!(
            Arc::ptr_eq(&kept.object, &entry.object),
            "the first Arc is kept"
        );
    }
}

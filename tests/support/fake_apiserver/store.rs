//! The object store: one global resourceVersion as etcd has, a bounded history of changes
//! that watches replay from and exact lists are rebuilt from, and the open watches that
//! every write is dispatched to while the lock is held — so a watch never misses or
//! reorders a change.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::resources::{ResourceKey, ResourceType};
use super::select::{FieldSelector, LabelSelector};
use super::status::ApiError;

/// `(namespace or "", name)`, ordered as lists page through it.
pub type ObjectKey = (String, String);

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One write. `object` is the object as written (for a deletion, its final state with the
/// deletion's resourceVersion); `previous` what it replaced.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    resource: ResourceKey,
    key: ObjectKey,
    kind: ChangeKind,
    object: Value,
    previous: Option<Value>,
}

/// What a watch stream is sent.
/// A stored object as a list item (see [`Filter::presented`]).
struct Presented<'a> {
    object: &'a Value,
    /// `None`: leave out apiVersion and kind.
    api_version: Option<&'a str>,
}

impl serde::Serialize for Presented<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Some(fields) = self.object.as_object() else {
            return self.object.serialize(serializer);
        };
        let mut map = serializer.serialize_map(None)?;
        if let Some(api_version) = self.api_version {
            map.serialize_entry("apiVersion", api_version)?;
        }
        for (key, value) in fields {
            if key != "apiVersion" && (self.api_version.is_some() || key != "kind") {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

#[derive(Debug)]
pub enum WatchMessage {
    /// One event, already a JSON line.
    Line(String),
    /// The watch fell behind a compaction: send a 410 `ERROR` event and end.
    Gone(ApiError),
    /// End the stream cleanly (its resource was removed).
    End,
    /// Abort the connection without ending the chunked body.
    Abort,
}

/// Which objects a watch or list is about.
#[derive(Debug, Clone)]
pub struct Filter {
    pub resource: ResourceKey,
    /// apiVersion the client asked for: objects are sent in it.
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, key: &ObjectKey, object: &Value) -> bool {
        self.namespace.as_ref().is_none_or(|ns| *ns == key.0)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }

    /// `object` as a list item for this client, serialized without a copy: in the apiVersion
    /// it asked for, or without apiVersion and kind for a built-in kind.
    fn presented<'a>(&'a self, object: &'a Value, builtin: bool) -> Presented<'a> {
        Presented {
            object,
            api_version: (!builtin).then_some(self.api_version.as_str()),
        }
    }

    /// `object` as this client reads it: in the apiVersion it asked for.
    pub fn present(&self, object: &Value) -> Value {
        let mut object = object.clone();
        object["apiVersion"] = Value::String(self.api_version.clone());
        object
    }

    /// The event a watch with this filter gets for `change`, if any: a change that makes an
    /// object stop (start) matching is a deletion (an addition) for this watch.
    fn event_for(&self, change: &Change) -> Option<(&'static str, Value)> {
        if change.resource != self.resource {
            return None;
        }
        let was = change
            .previous
            .as_ref()
            .is_some_and(|p| self.matches(&change.key, p));
        let is = change.kind != ChangeKind::Deleted && self.matches(&change.key, &change.object);
        match (change.kind, was, is) {
            (ChangeKind::Deleted, true, _) => Some(("DELETED", change.object.clone())),
            (_, false, true) => Some(("ADDED", change.object.clone())),
            (_, true, true) => Some(("MODIFIED", change.object.clone())),
            (_, true, false) => {
                // Stopped matching: deleted as far as this watch knows, at this resourceVersion.
                let mut last = change.previous.clone().unwrap_or(Value::Null);
                last["metadata"]["resourceVersion"] =
                    change.object["metadata"]["resourceVersion"].clone();
                Some(("DELETED", last))
            }
            _ => None,
        }
    }

    fn line(&self, event_type: &str, object: &Value) -> String {
        json!({"type": event_type, "object": self.present(object)}).to_string()
    }
}

struct Watch {
    filter: Filter,
    tx: mpsc::UnboundedSender<WatchMessage>,
}

pub struct Store {
    rv: u64,
    /// Oldest resourceVersion a watch may resume from or an exact list may read at.
    compacted: u64,
    objects: BTreeMap<ResourceKey, BTreeMap<ObjectKey, Value>>,
    history: VecDeque<Change>,
    history_limit: usize,
    watches: Vec<Watch>,
    next_uid: u64,
}

/// How a list reads: at the newest state, or exactly at an older resourceVersion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadAt {
    Latest,
    Exact(u64),
}

pub struct Page {
    pub rv: u64,
    /// The items as a JSON array, each in the apiVersion the client asked for; serialized
    /// straight from the stored objects, as copying them made the fake slower than the
    /// client it serves at 50,000 Pods.
    pub items: Vec<u8>,
    pub continue_after: Option<ObjectKey>,
    pub remaining: usize,
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        Store {
            rv: 1,
            compacted: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit,
            watches: Vec::new(),
            next_uid: 1,
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn set_history_limit(&mut self, limit: usize) {
        self.history_limit = limit;
        self.trim();
    }

    fn trim(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(oldest) = self.history.pop_front() {
                self.compacted = oldest.rv;
            }
        }
    }

    pub fn get(&self, resource: &ResourceKey, key: &ObjectKey) -> Option<&Value> {
        self.objects
            .get(resource)
            .and_then(|objects| objects.get(key))
    }

    pub fn next_uid(&mut self) -> String {
        self.next_uid += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.next_uid)
    }

    /// Writes (or, with `None`, deletes) an object: stamps the next resourceVersion, records
    /// the change and sends it to every open watch that sees it. Returns the stored object
    /// (for a deletion, its final state).
    pub fn write(
        &mut self,
        resource: &ResourceType,
        key: ObjectKey,
        object: Option<Value>,
    ) -> Option<Value> {
        let objects = self.objects.entry(resource.key()).or_default();
        let previous = objects.get(&key).cloned();
        let (kind, mut object) = match (object, &previous) {
            (Some(o), None) => (ChangeKind::Added, o),
            (Some(o), Some(_)) => (ChangeKind::Modified, o),
            (None, Some(p)) => (ChangeKind::Deleted, p.clone()),
            (None, None) => return None,
        };
        self.rv += 1;
        object["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        if kind == ChangeKind::Deleted {
            objects.remove(&key);
        } else {
            objects.insert(key.clone(), object.clone());
        }
        let change = Change {
            rv: self.rv,
            resource: resource.key(),
            key,
            kind,
            object: object.clone(),
            previous,
        };
        self.watches.retain(|w| match w.filter.event_for(&change) {
            Some((t, o)) => w.tx.send(WatchMessage::Line(w.filter.line(t, &o))).is_ok(),
            None => !w.tx.is_closed(),
        });
        self.history.push_back(change);
        self.trim();
        Some(object)
    }

    /// The objects of `resource` as they were at `at`: the current ones, with every later
    /// change undone (copied only when there is one).
    fn snapshot(
        &self,
        resource: &ResourceKey,
        at: ReadAt,
    ) -> Result<Cow<'_, BTreeMap<ObjectKey, Value>>, ApiError> {
        let current = self.objects.get(resource);
        let unchanged = || current.map_or_else(|| Cow::Owned(BTreeMap::new()), Cow::Borrowed);
        let ReadAt::Exact(rv) = at else {
            return Ok(unchanged());
        };
        if rv > self.rv {
            return Err(ApiError::new(
                504,
                "Timeout",
                format!("Too large resource version: {rv}, current: {}", self.rv),
            ));
        }
        if rv < self.compacted {
            return Err(ApiError::expired(format!(
                "The resourceVersion for the provided list is too old (requested {rv}, oldest {})",
                self.compacted
            )));
        }
        let later: Vec<&Change> = self
            .history
            .iter()
            .rev()
            .take_while(|c| c.rv > rv)
            .filter(|c| c.resource == *resource)
            .collect();
        if later.is_empty() {
            return Ok(unchanged());
        }
        let mut objects = current.cloned().unwrap_or_default();
        for change in later {
            match &change.previous {
                Some(previous) => objects.insert(change.key.clone(), previous.clone()),
                None => objects.remove(&change.key),
            };
        }
        Ok(Cow::Owned(objects))
    }

    /// A page of the objects `filter` selects at `at`, after `after`, at most `limit`.
    /// Built-in kinds' items carry no apiVersion and kind (`builtin`), as on a real server.
    pub fn list(
        &self,
        filter: &Filter,
        at: ReadAt,
        after: Option<&ObjectKey>,
        limit: Option<usize>,
        builtin: bool,
    ) -> Result<Page, ApiError> {
        let objects = self.snapshot(&filter.resource, at)?;
        let rv = match at {
            ReadAt::Latest => self.rv,
            ReadAt::Exact(rv) => rv,
        };
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut matching = objects
            .range((start, Bound::Unbounded))
            .filter(|(k, o)| filter.matches(k, o));
        let limit = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let page: Vec<(&ObjectKey, &Value)> = matching.by_ref().take(limit).collect();
        let remaining = matching.count();
        let continue_after = if remaining > 0 {
            page.last().map(|(k, _)| (*k).clone())
        } else {
            None
        };
        let presented: Vec<Presented<'_>> = page
            .into_iter()
            .map(|(_, object)| filter.presented(object, builtin))
            .collect();
        let items = serde_json::to_vec(&presented)
            .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))?;
        Ok(Page {
            rv,
            items,
            continue_after,
            remaining,
        })
    }

    /// Opens a watch from `since` (`None`: the current objects as `ADDED` events first).
    /// Registration and replay happen under one lock, so nothing falls between them.
    pub fn watch(
        &mut self,
        filter: Filter,
        since: Option<u64>,
        initial_events_end: bool,
    ) -> Result<
        (
            mpsc::UnboundedSender<WatchMessage>,
            mpsc::UnboundedReceiver<WatchMessage>,
        ),
        ApiError,
    > {
        let (tx, rx) = mpsc::unbounded_channel();
        match since {
            None => {
                for (key, object) in self.objects.get(&filter.resource).into_iter().flatten() {
                    if filter.matches(key, object) {
                        let _ = tx.send(WatchMessage::Line(filter.line("ADDED", object)));
                    }
                }
                if initial_events_end {
                    let _ = tx.send(WatchMessage::Line(self.bookmark(&filter, true)));
                }
            }
            Some(rv) if rv < self.compacted => {
                return Err(ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    self.compacted
                )));
            }
            Some(rv) => {
                for change in self.history.iter().filter(|c| c.rv > rv) {
                    if let Some((t, o)) = filter.event_for(change) {
                        let _ = tx.send(WatchMessage::Line(filter.line(t, &o)));
                    }
                }
            }
        }
        self.watches.push(Watch {
            filter,
            tx: tx.clone(),
        });
        Ok((tx, rx))
    }

    fn bookmark(&self, filter: &Filter, initial_events_end: bool) -> String {
        let mut metadata = json!({"resourceVersion": self.rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object =
            json!({"kind": filter.kind, "apiVersion": filter.api_version, "metadata": metadata});
        json!({"type": "BOOKMARK", "object": object}).to_string()
    }

    /// Queues a bookmark at the current resourceVersion behind every change already sent.
    pub fn send_bookmark(&self, filter: &Filter, tx: &mpsc::UnboundedSender<WatchMessage>) {
        let _ = tx.send(WatchMessage::Line(self.bookmark(filter, false)));
    }

    /// Every resourceVersion before now expires: open watches get 410 and resuming fails.
    pub fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
        for watch in self.watches.drain(..) {
            let _ = watch.tx.send(WatchMessage::Gone(ApiError::expired(
                "too old resource version: watch compacted",
            )));
        }
    }

    /// Sends `message` to every open watch (of `resource`, if given) and forgets them.
    pub fn close_watches(&mut self, resource: Option<&ResourceKey>, message: fn() -> WatchMessage) {
        self.watches.retain(|w| {
            if resource.is_some_and(|r| *r != w.filter.resource) {
                return true;
            }
            let _ = w.tx.send(message());
            false
        });
    }

    pub fn open_watches(&mut self) -> usize {
        self.watches.retain(|w| !w.tx.is_closed());
        self.watches.len()
    }

    /// Every object of `resource`, as stored.
    pub fn all(&self, resource: &ResourceKey) -> Vec<(ObjectKey, Value)> {
        self.objects
            .get(resource)
            .into_iter()
            .flatten()
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect()
    }
}

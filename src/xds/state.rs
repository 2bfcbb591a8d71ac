//! Per-connection, per-type bookkeeping shared by SotW and delta: what the proxy asked for, what
//! it holds from us, and where the last response stands. Everything a "should we send?"
//! decision needs, with no transport in it.
//!
//! What the proxy holds is not a per-connection name → hash map: it is the shared map the last
//! response was computed from (`sent`), restricted to the subscription (see `held.rs`). A
//! thousand proxies holding the same clusters share one map instead of a thousand copies.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::{Instant, SystemTime};

use tracing::{info, warn};

use super::connection::{AckState, Nack, Rejection, TypeStatus, unix_ms};
use super::held::{self, Changes};
use super::resource::{MapChange, version_of};
use super::subscription::Subscription;
use super::{ProxyResources, Resource, ResourceMap, TypeUrl};
use crate::config::ObjectKey;

/// Works out the objects behind resources of a type (`Snapshot::sources_of` for the stream's
/// proxy): `(type_url, names)` in, objects out.
pub(crate) type Sources<'a> = &'a dyn Fn(&str, &[String]) -> Vec<ObjectKey>;

/// How a request's `response_nonce` relates to what we sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NonceCheck {
    /// No nonce, or nothing sent for the type on this stream (a reconnect): a fresh request.
    Fresh,
    /// Answers the last response sent: an ACK or NACK.
    Current,
    /// Answers an older response; the xDS protocol says ignore it.
    Stale,
}

/// The resources the last response carried, for the record of a NACK of it.
#[derive(Debug)]
pub(crate) enum Carried {
    /// Everything selected in `sent` (a full SotW response): not copied, it is `sent`.
    All,
    These(Vec<Arc<Resource>>),
}

static EMPTY: LazyLock<Arc<ResourceMap>> = LazyLock::new(Arc::default);

#[derive(Debug)]
pub(crate) struct TypeState {
    pub url: String,
    /// `None` for types we do not serve; they always get an empty response.
    pub ty: Option<TypeUrl>,
    pub subscription: Subscription,
    /// The map the last response was computed from: the proxy holds each of its resources the
    /// subscription covers (in delta, after its first request, what it told us it holds).
    sent: Arc<ResourceMap>,
    /// How many resources the proxy holds (the registry shows it).
    held: usize,
    pub status: TypeStatus,
    carried: Carried,
    /// When the pending response went out, for `pilot_proxy_convergence_time`.
    sent_at: Option<Instant>,
    /// The last NACK is recorded but not yet traced to its objects (see [`TypeState::trace`]).
    untraced: bool,
}

impl TypeState {
    pub fn new(url: &str) -> TypeState {
        TypeState {
            url: url.to_string(),
            ty: TypeUrl::from_url(url),
            subscription: Subscription::default(),
            sent: Arc::clone(&EMPTY),
            held: 0,
            status: TypeStatus {
                type_url: url.to_string(),
                ..Default::default()
            },
            carried: Carried::These(Vec::new()),
            sent_at: None,
            untraced: false,
        }
    }

    /// The resources of this type in `resources` (empty for unknown types).
    pub fn map<'a>(&self, resources: &'a ProxyResources) -> &'a Arc<ResourceMap> {
        match self.ty {
            Some(ty) => resources.get(ty),
            None => &EMPTY,
        }
    }

    /// The map the proxy's holdings are described against.
    pub fn sent_map(&self) -> &Arc<ResourceMap> {
        &self.sent
    }

    /// Whether the proxy holds a resource of this name from us.
    pub fn holds(&self, name: &str) -> bool {
        self.subscription.covers(name) && self.sent.contains_key(name)
    }

    /// The resources the subscription selects in `map`, in name order.
    pub fn selected<'a>(&self, map: &'a Arc<ResourceMap>) -> Vec<&'a Arc<Resource>> {
        held::selected(map, &self.subscription)
    }

    /// What the proxy lacks of `map`; see [`held::changes`]. `old` is the subscription before
    /// the request being handled changed it; `hint`, how `map` differs from its predecessor.
    pub fn changes(
        &self,
        map: &ResourceMap,
        old: Option<&Subscription>,
        hint: Option<&MapChange>,
    ) -> Changes {
        held::changes(
            &self.sent,
            map,
            old.unwrap_or(&self.subscription),
            &self.subscription,
            hint,
        )
    }

    /// The version of what the subscription selects in `map`: the shared, cached one when it
    /// selects the whole map.
    pub fn version_in(&self, resources: &ProxyResources, map: &Arc<ResourceMap>) -> String {
        match self.ty {
            Some(ty) if self.subscription.is_all_of(map) && Arc::ptr_eq(map, resources.get(ty)) => {
                resources.version(ty)
            }
            _ => version_of(self.selected(map)),
        }
    }

    /// The proxy now holds the selected resources of `map`: it was sent what it lacked, or
    /// lacked nothing. When the names did not change, a subscription to all of them follows
    /// the new map, so the old one is not kept alive.
    pub fn hold(&mut self, map: &Arc<ResourceMap>, same_names: bool) {
        if same_names {
            self.subscription.rebase(&self.sent, map);
        }
        self.sent = Arc::clone(map);
        self.recount();
    }

    /// After the subscription changed: the proxy dropped what it no longer asks for, so a later
    /// re-subscription must send it again.
    pub fn recount(&mut self) {
        self.held = held::count_selected(&self.sent, &self.subscription);
    }

    pub fn check_nonce(&self, nonce: &str) -> NonceCheck {
        match &self.status.sent_nonce {
            _ if nonce.is_empty() => NonceCheck::Fresh,
            None => NonceCheck::Fresh,
            Some(sent) if sent == nonce => NonceCheck::Current,
            Some(_) => NonceCheck::Stale,
        }
    }

    /// An ACK of the last response sent; the time since it went out is the proxy's
    /// convergence time.
    pub fn ack(&mut self, version: String) {
        if let Some(sent_at) = self.sent_at.take() {
            crate::metrics::global()
                .convergence
                .observe(sent_at.elapsed().as_secs_f64());
        }
        self.status.acked_version = Some(version);
        self.status.acked_at_unix_ms = Some(unix_ms(SystemTime::now()));
        self.status.state = AckState::Acked;
        self.status.acks += 1;
    }

    /// Records a rejection; [`TypeState::trace`] then names the objects behind it. Nothing is
    /// resent here: `sent` keeps the rejected content, so the same config goes out again only
    /// when its content or the subscription changes.
    pub fn nack(&mut self, error: String) {
        let version = self.status.sent_version.clone().unwrap_or_default();
        let resources = match &self.carried {
            Carried::All => self
                .selected(&self.sent)
                .iter()
                .map(|r| r.name.clone())
                .collect(),
            Carried::These(sent) => sent.iter().map(|r| r.name.clone()).collect(),
        };
        self.status.state = AckState::Nacked;
        self.status.nacks += 1;
        self.sent_at = None;
        if let Some(ty) = self.ty {
            crate::metrics::global().xds_type(ty).rejects.inc();
        }
        self.status.last_nack = Some(Nack {
            version,
            nonce: self.status.sent_nonce.clone().unwrap_or_default(),
            error,
            resources,
            sources: Vec::new(),
            at_unix_ms: unix_ms(SystemTime::now()),
        });
        self.untraced = true;
    }

    /// Traces the last NACK, if not done yet, to the objects its resources came from: those
    /// Envoy's error names (it usually names the failing listener, route config or cluster),
    /// else all the response carried. Logs it, counts it per object, and returns what the
    /// registry publishes.
    pub fn trace(&mut self, proxy_id: &str, sources: Sources<'_>) -> Option<Rejection> {
        if !std::mem::take(&mut self.untraced) {
            return None;
        }
        let nack = self.status.last_nack.as_mut()?;
        let objects = sources(&self.url, &named_in(&nack.error, &nack.resources));
        nack.sources = objects.iter().map(ToString::to_string).collect();
        warn!(
            proxy = proxy_id,
            type_url = %self.url,
            version = %nack.version,
            error = %nack.error,
            objects = %nack.sources.join(", "),
            "proxy rejected config (NACK)"
        );
        if let Some(ty) = self.ty {
            for object in &objects {
                crate::metrics::global().rejected_object(ty, object);
            }
        }
        Some(Rejection {
            proxy_id: proxy_id.to_string(),
            type_url: self.url.clone(),
            error: nack.error.clone(),
            sources: objects,
        })
    }

    pub fn stale(&mut self) {
        self.status.stale += 1;
    }

    /// Records a response computed from `map` about to go out, and counts it (with its size)
    /// in istiod's metrics.
    pub fn sent(
        &mut self,
        nonce: String,
        version: String,
        map: &Arc<ResourceMap>,
        carried: Carried,
        same_names: bool,
    ) {
        self.hold(map, same_names);
        let (count, bytes) = match &carried {
            Carried::All => {
                let selected = self.selected(map);
                (
                    selected.len(),
                    selected.iter().map(|r| r.any.len()).sum::<usize>(),
                )
            }
            Carried::These(sent) => (sent.len(), sent.iter().map(|r| r.any.len()).sum()),
        };
        // istiod's "LDS: PUSH for node:… resources:… size:…"; the span names the proxy.
        info!(type_url = %self.url, %version, resources = count, bytes, "push");
        if let Some(ty) = self.ty {
            let metrics = crate::metrics::global().xds_type(ty);
            metrics.pushes.inc();
            metrics.config_size.observe(bytes as f64);
        }
        self.sent_at = Some(Instant::now());
        self.status.sent_at_unix_ms = Some(unix_ms(SystemTime::now()));
        self.status.sent_nonce = Some(nonce);
        self.status.sent_version = Some(version);
        self.status.state = AckState::Pending;
        self.status.responses += 1;
        self.carried = carried;
    }

    /// The status as the registry shows it.
    pub fn snapshot(&self) -> TypeStatus {
        TypeStatus {
            subscription: self.subscription.status(),
            resources: self.held,
            ..self.status.clone()
        }
    }
}

/// Hands out nonces unique to a connection. Nonces, unlike versions, may be counters: they
/// only pair a response with its ACK on one stream.
#[derive(Debug)]
pub(crate) struct Nonces {
    prefix: u64,
    next: u64,
}

impl Nonces {
    pub fn new(connection_id: u64) -> Nonces {
        Nonces {
            prefix: connection_id,
            next: 0,
        }
    }

    pub fn next(&mut self) -> String {
        self.next += 1;
        format!("{}-{}", self.prefix, self.next)
    }
}

/// A connection's per-type state. A proxy asks for a handful of types, so they sit in a small
/// vector found by URL: a `BTreeMap` would allocate a node for eleven of them per connection.
#[derive(Debug)]
pub(crate) struct TypeStates(Vec<TypeState>);

impl Default for TypeStates {
    fn default() -> Self {
        // CDS, EDS, LDS, RDS.
        TypeStates(Vec::with_capacity(4))
    }
}

impl TypeStates {
    pub fn get(&self, url: &str) -> Option<&TypeState> {
        self.0.iter().find(|t| t.url == url)
    }

    pub fn get_mut(&mut self, url: &str) -> Option<&mut TypeState> {
        self.0.iter_mut().find(|t| t.url == url)
    }

    /// The state of `url`, created if this is its first request; and whether it was.
    pub fn entry(&mut self, url: &str) -> (&mut TypeState, bool) {
        match self.0.iter().position(|t| t.url == url) {
            Some(i) => (&mut self.0[i], false),
            None => {
                self.0.push(TypeState::new(url));
                let last = self.0.len() - 1;
                (&mut self.0[last], true)
            }
        }
    }

    /// Traces every NACK recorded since the last call; see [`TypeState::trace`].
    pub fn trace_nacks(&mut self, proxy_id: &str, sources: Sources<'_>) -> Vec<Rejection> {
        self.0
            .iter_mut()
            .filter_map(|t| t.trace(proxy_id, sources))
            .collect()
    }

    /// The registry view of a connection's types.
    pub fn statuses(&self) -> BTreeMap<String, TypeStatus> {
        self.0
            .iter()
            .map(|t| (t.url.clone(), t.snapshot()))
            .collect()
    }
}

/// The resources among `carried` that `error` names as a whole word (not as part of a longer
/// name: route config `80` is not named by listener `0.0.0.0_80`); all of them if it names none.
fn named_in(error: &str, carried: &[String]) -> Vec<String> {
    let part_of_name = |c: char| c.is_ascii_alphanumeric() || "._-|:/".contains(c);
    let named = |name: &str| {
        !name.is_empty()
            && error.match_indices(name).any(|(at, _)| {
                let before = error[..at].chars().next_back();
                let after = error[at + name.len()..].chars().next();
                // A trailing `.` or `:` ends a sentence or introduces the cause.
                before.is_none_or(|c| !part_of_name(c))
                    && after.is_none_or(|c| !part_of_name(c) || c == '.' || c == ':')
            })
    };
    let found: Vec<String> = carried.iter().filter(|n| named(n)).cloned().collect();
    if found.is_empty() {
        carried.to_vec()
    } else {
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_checks() {
        let mut s = TypeState::new(TypeUrl::Cluster.url());
        assert_eq!(s.check_nonce(""), NonceCheck::Fresh);
        assert_eq!(
            s.check_nonce("1-1"),
            NonceCheck::Fresh,
            "nothing sent on this stream yet"
        );
        let none = Arc::default();
        s.sent(
            "1-1".into(),
            "v".into(),
            &none,
            Carried::These(vec![]),
            false,
        );
        assert_eq!(s.check_nonce("1-1"), NonceCheck::Current);
        s.sent(
            "1-2".into(),
            "v2".into(),
            &none,
            Carried::These(vec![]),
            false,
        );
        assert_eq!(s.check_nonce("1-1"), NonceCheck::Stale);
        assert_eq!(s.check_nonce(""), NonceCheck::Fresh);
    }

    #[test]
    fn the_resources_envoys_error_names_are_traced_else_all() {
        let carried: Vec<String> = ["0.0.0.0_80", "0.0.0.0_8080", "80", "virtualInbound"]
            .map(String::from)
            .into();
        let named = |error: &str| named_in(error, &carried);
        assert_eq!(
            named("Error adding/updating listener(s) 0.0.0.0_80: no filter chains"),
            ["0.0.0.0_80"]
        );
        assert_eq!(
            named("listener 'virtualInbound' and 0.0.0.0_8080 are bad."),
            ["0.0.0.0_8080", "virtualInbound"]
        );
        assert_eq!(named("bad regex in some route"), carried, "names none: all");
    }

    #[test]
    fn a_nack_is_traced_once_to_the_objects_of_what_it_names() {
        let mut s = TypeState::new(TypeUrl::RouteConfiguration.url());
        let (r80, r90) = (
            crate::xds::tests::route("80", 1),
            crate::xds::tests::route("90", 2),
        );
        let map: Arc<ResourceMap> = Arc::new(
            [
                ("80".to_string(), Arc::clone(&r80)),
                ("90".to_string(), Arc::clone(&r90)),
            ]
            .into(),
        );
        s.sent(
            "1-1".into(),
            "v".into(),
            &map,
            Carried::These(vec![r80, r90]),
            false,
        );
        let vs = ObjectKey {
            kind: crate::config::Kind::VirtualService,
            namespace: "a_nack_is_traced_once".into(),
            name: "reviews".into(),
        };
        let asked = std::sync::Mutex::new(Vec::new());
        let sources = |ty: &str, names: &[String]| {
            asked.lock().unwrap().push((ty.to_string(), names.to_vec()));
            vec![vs.clone()]
        };
        assert!(s.trace("p", &sources).is_none(), "nothing rejected yet");
        s.nack("route config 90 rejected: bad regex".into());
        let rejection = s.trace("p", &sources).unwrap();
        assert_eq!(rejection.sources, std::slice::from_ref(&vs));
        assert_eq!(
            *asked.lock().unwrap(),
            [(s.url.clone(), vec!["90".to_string()])]
        );
        let nack = s.snapshot().last_nack.unwrap();
        assert_eq!(
            nack.sources,
            ["VirtualService a_nack_is_traced_once/reviews"]
        );
        assert_eq!(
            nack.detail(),
            "route config 90 rejected: bad regex (from VirtualService a_nack_is_traced_once/reviews)"
        );
        assert_eq!(
            crate::metrics::global().rejected_objects(TypeUrl::RouteConfiguration, &vs),
            1
        );
        assert!(s.trace("p", &sources).is_none(), "traced once");
    }

    #[test]
    fn nack_keeps_rejected_version_and_names() {
        let mut s = TypeState::new(TypeUrl::Listener.url());
        let l1 = crate::xds::tests::route("l1", 1);
        let map: Arc<ResourceMap> = Arc::new([("l1".to_string(), Arc::clone(&l1))].into());
        s.sent(
            "1-1".into(),
            "abc".into(),
            &map,
            Carried::These(vec![l1]),
            false,
        );
        s.nack("bad listener".into());
        let st = s.snapshot();
        assert_eq!(st.state, AckState::Nacked);
        let nack = st.last_nack.unwrap();
        assert_eq!(
            (nack.version.as_str(), nack.error.as_str()),
            ("abc", "bad listener")
        );
        assert_eq!(nack.resources, vec!["l1"]);
        s.ack("abc".into());
        assert_eq!(s.snapshot().state, AckState::Acked);
        assert!(
            s.snapshot().last_nack.is_some(),
            "the last NACK stays visible"
        );
    }
}

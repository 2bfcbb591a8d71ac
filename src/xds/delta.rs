//! Delta (incremental) ADS: responses carry only resources whose content the proxy does not
//! have, and the names of those it must drop.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use tracing::debug;

use super::codec::DeltaResponse;
use super::connection::Rejection;
use super::connection::{TypeStatus, Variant};
use super::held::Changes;
use super::state::{Carried, NonceCheck, Nonces, Sources, TypeState, TypeStates};
use super::stream::Protocol;
use super::subscription::Subscription;
use super::{ProxyResources, ResourceMap, TypeUrl};

pub(crate) struct Delta {
    proxy_id: String,
    control_plane: Arc<str>,
    nonces: Nonces,
    types: TypeStates,
}

/// Parses a version the proxy says it holds. Ours are 16 hex digits; anything else is a
/// version we never sent, recorded as hash 0 so the resource counts as held (and can be
/// removed) but never matches real content.
fn held_hash(version: &str) -> u64 {
    u64::from_str_radix(version, 16).unwrap_or(0)
}

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaResponse;
    const VARIANT: Variant = Variant::Delta;

    fn node(request: &DeltaDiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn new(proxy_id: String, connection_id: u64, control_plane: Arc<str>) -> Self {
        Delta {
            proxy_id,
            control_plane,
            nonces: Nonces::new(connection_id),
            types: TypeStates::default(),
        }
    }

    fn on_request(
        &mut self,
        request: DeltaDiscoveryRequest,
        resources: &ProxyResources,
        out: &mut Vec<DeltaResponse>,
    ) {
        let url = request.type_url;
        let (state, first) = self.types.entry(&url);
        // What a reconnecting proxy says it holds stands in for what we sent, once.
        let mut initial = None;
        if first {
            // An initial request naming nothing is a legacy wildcard subscription.
            state.subscription.wildcard = request.resource_names_subscribe.is_empty();
            let versions = request.initial_resource_versions.iter();
            initial = Some(versions.map(|(n, v)| (n.clone(), held_hash(v))).collect());
        }
        match state.check_nonce(&request.response_nonce) {
            NonceCheck::Current => match request.error_detail {
                Some(error) => state.nack(error.message),
                None => {
                    let version = state.status.sent_version.clone().unwrap_or_default();
                    state.ack(version);
                }
            },
            // The ACK half of a stale request is ignored, but never its subscription changes:
            // delta requests carry only differences, so dropping one would lose it for good.
            NonceCheck::Stale => {
                debug!(type_url = %url, nonce = %request.response_nonce, "stale nonce");
                state.stale();
            }
            NonceCheck::Fresh => {}
        }
        let map = Arc::clone(state.map(resources));
        let resubscribes = !request.resource_names_subscribe.is_empty()
            || !request.resource_names_unsubscribe.is_empty();
        // What the proxy held is described by the subscription it held it under.
        let old = resubscribes.then(|| state.subscription.clone());
        let asked = state
            .subscription
            .subscribe(request.resource_names_subscribe, &map);
        state
            .subscription
            .unsubscribe(&request.resource_names_unsubscribe, &map);
        if resubscribes {
            state.recount();
        }
        let ctx = Context {
            resources,
            nonces: &mut self.nonces,
            control_plane: &self.control_plane,
        };
        out.extend(diff(state, &map, old.as_ref(), &asked, initial, ctx, first));
    }

    fn on_push(
        &mut self,
        previous: &ProxyResources,
        resources: &ProxyResources,
        types: &[TypeUrl],
        out: &mut Vec<DeltaResponse>,
    ) {
        for &ty in types {
            let Some(state) = self.types.get_mut(ty.url()) else {
                continue;
            };
            let map = resources.get(ty);
            if Arc::ptr_eq(previous.get(ty), map) {
                continue;
            }
            let ctx = Context {
                resources,
                nonces: &mut self.nonces,
                control_plane: &self.control_plane,
            };
            out.extend(diff(state, map, None, &[], None, ctx, false));
        }
    }

    fn type_state(&self, ty: TypeUrl) -> Option<&TypeState> {
        self.types.get(ty.url())
    }

    fn status(&self) -> BTreeMap<String, TypeStatus> {
        self.types.statuses()
    }

    fn trace_nacks(&mut self, sources: Sources<'_>) -> Vec<Rejection> {
        self.types.trace_nacks(&self.proxy_id, sources)
    }
}

/// What a response is built with besides the type's state.
struct Context<'a> {
    resources: &'a ProxyResources,
    nonces: &'a mut Nonces,
    control_plane: &'a Arc<str>,
}

/// Brings the proxy up to date for one type: what it wants and lacks (by hash), and the names
/// it holds that no longer exist. `old` is the subscription before this request changed it;
/// `asked` are names just subscribed: one that does not exist is reported removed, so Envoy stops
/// waiting for it. `initial` is what a proxy's first request says it holds. `always` answers
/// even with nothing to say (a first request, so Envoy's initialization can complete).
fn diff(
    state: &mut TypeState,
    map: &Arc<ResourceMap>,
    old: Option<&Subscription>,
    asked: &[String],
    initial: Option<BTreeMap<String, u64>>,
    ctx: Context<'_>,
    always: bool,
) -> Option<DeltaResponse> {
    if old.is_none() && initial.is_none() && !always && Arc::ptr_eq(state.sent_map(), map) {
        return None;
    }
    let held_before: Box<dyn Fn(&str) -> bool + '_>;
    let Changes {
        send,
        gone,
        same_names,
    } = match &initial {
        Some(initial) => {
            held_before = Box::new(|n: &str| initial.contains_key(n));
            from_initial(state, map, initial)
        }
        None => {
            let hint = state.ty.and_then(|ty| ctx.resources.change(ty));
            let changes = state.changes(map, old, hint);
            let (sent, held_by) = (state.sent_map(), old.unwrap_or(&state.subscription));
            held_before = Box::new(move |n: &str| held_by.covers(n) && sent.contains_key(n));
            changes
        }
    };
    let mut removed = gone;
    removed.extend(
        asked
            .iter()
            .filter(|n| !map.contains_key(*n) && !held_before(n))
            .cloned(),
    );
    drop(held_before);
    if send.is_empty() && removed.is_empty() && !always {
        state.hold(map, same_names);
        return None;
    }
    if same_names {
        let previous = Arc::clone(state.sent_map());
        state.subscription.rebase(&previous, map);
    }
    let version = state.version_in(ctx.resources, map);
    let nonce = ctx.nonces.next();
    debug!(
        type_url = %state.url, %version, count = send.len(), removed = removed.len(),
        "sending delta response"
    );
    state.sent(
        nonce.clone(),
        version.clone(),
        map,
        Carried::These(send.clone()),
        false,
    );
    Some(DeltaResponse {
        system_version_info: version,
        resources: send,
        type_url: state.url.clone(),
        nonce,
        removed_resources: removed,
        control_plane: Some(Arc::clone(ctx.control_plane)),
    })
}

/// The first request's view: the proxy holds `initial` (name → hash), of which it keeps what it
/// subscribes to.
fn from_initial(
    state: &TypeState,
    map: &Arc<ResourceMap>,
    initial: &BTreeMap<String, u64>,
) -> Changes {
    let held = |name: &str, hash: u64| initial.get(name) == Some(&hash);
    let send = state
        .selected(map)
        .into_iter()
        .filter(|r| !held(&r.name, r.hash))
        .cloned()
        .collect();
    let gone = initial
        .keys()
        .filter(|n| state.subscription.covers(n) && !map.contains_key(*n))
        .cloned()
        .collect();
    Changes {
        send,
        gone,
        same_names: false,
    }
}

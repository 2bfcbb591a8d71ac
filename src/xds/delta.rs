//! Delta (incremental) ADS: responses carry only resources whose content the proxy does not
//! have, and the names of those it must drop.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use tracing::debug;

use super::codec::DeltaResponse;
use super::connection::{TypeStatus, Variant};
use super::resource::version_of;
use super::state::{NonceCheck, Nonces, TypeState, statuses};
use super::stream::Protocol;
use super::{ProxyResources, Resource, ResourceMap, TypeUrl};

const WILDCARD: &str = "*";

pub(crate) struct Delta {
    proxy_id: String,
    control_plane: Arc<str>,
    nonces: Nonces,
    types: BTreeMap<String, TypeState>,
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
            types: BTreeMap::new(),
        }
    }

    fn on_request(
        &mut self,
        request: DeltaDiscoveryRequest,
        resources: &ProxyResources,
        out: &mut Vec<DeltaResponse>,
    ) {
        let url = request.type_url;
        let first = !self.types.contains_key(&url);
        let state = self.types.entry(url.clone()).or_insert_with(|| TypeState::new(&url));
        if first {
            // An initial request naming nothing is a legacy wildcard subscription.
            state.subscription.wildcard = request.resource_names_subscribe.is_empty();
            state.held.extend(
                request.initial_resource_versions.iter().map(|(n, v)| (n.clone(), held_hash(v))),
            );
        }
        match state.check_nonce(&request.response_nonce) {
            NonceCheck::Current => match request.error_detail {
                Some(error) => state.nack(&self.proxy_id, error.message),
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
        let mut asked = Vec::new();
        for name in request.resource_names_subscribe {
            if name == WILDCARD {
                state.subscription.wildcard = true;
            } else if state.subscription.names.insert(name.clone()) {
                asked.push(name);
            }
        }
        for name in &request.resource_names_unsubscribe {
            if name == WILDCARD {
                state.subscription.wildcard = false;
            } else {
                state.subscription.names.remove(name);
            }
        }
        state.prune_unwanted();
        let map = Arc::clone(state.map(resources));
        let response = diff(state, &map, &asked, &mut self.nonces, &self.control_plane, first);
        out.extend(response);
    }

    fn on_push(
        &mut self,
        previous: &ProxyResources,
        resources: &ProxyResources,
        types: &[TypeUrl],
        out: &mut Vec<DeltaResponse>,
    ) {
        for &ty in types {
            let Some(state) = self.types.get_mut(ty.url()) else { continue };
            let map = resources.get(ty);
            if Arc::ptr_eq(previous.get(ty), map) {
                continue;
            }
            out.extend(diff(state, map, &[], &mut self.nonces, &self.control_plane, false));
        }
    }

    fn type_state(&self, ty: TypeUrl) -> Option<&TypeState> {
        self.types.get(ty.url())
    }

    fn status(&self) -> BTreeMap<String, TypeStatus> {
        statuses(self.types.values())
    }
}

/// Brings the proxy up to date for one type: what it wants and lacks (by hash), and the names
/// it holds that no longer exist. `asked` are names just subscribed: one that does not exist is
/// reported removed, so Envoy stops waiting for it. `always` answers even with nothing to say
/// (a first request, so Envoy's initialization can complete).
fn diff(
    state: &mut TypeState,
    map: &ResourceMap,
    asked: &[String],
    nonces: &mut Nonces,
    control_plane: &Arc<str>,
    always: bool,
) -> Option<DeltaResponse> {
    let selected = state.selected(map);
    let send: Vec<Arc<Resource>> = selected
        .iter()
        .filter(|r| state.held.get(&r.name) != Some(&r.hash))
        .map(|r| Arc::clone(r))
        .collect();
    let mut removed: Vec<String> =
        state.held.keys().filter(|n| !map.contains_key(*n)).cloned().collect();
    removed.extend(
        asked.iter().filter(|n| !map.contains_key(*n) && !state.held.contains_key(*n)).cloned(),
    );
    if send.is_empty() && removed.is_empty() && !always {
        return None;
    }
    for name in &removed {
        state.held.remove(name);
    }
    state.held.extend(send.iter().map(|r| (r.name.clone(), r.hash)));
    let version = version_of(selected);
    let nonce = nonces.next();
    state.sent(nonce.clone(), version.clone(), send.iter().map(|r| r.name.clone()).collect());
    debug!(
        type_url = %state.url, %version, count = send.len(), removed = removed.len(),
        "sending delta response"
    );
    Some(DeltaResponse {
        system_version_info: version,
        resources: send,
        type_url: state.url.clone(),
        nonce,
        removed_resources: removed,
        control_plane: Some(Arc::clone(control_plane)),
    })
}

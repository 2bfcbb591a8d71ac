//! State-of-the-World ADS: every response carries a version for its type; LDS and CDS carry the
//! whole set, RDS, EDS and SDS only resources that changed among those subscribed.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use tracing::debug;

use super::codec::SotwResponse;
use super::connection::{Subscription, TypeStatus, Variant};
use super::resource::version_of;
use super::state::{NonceCheck, Nonces, TypeState, statuses};
use super::stream::Protocol;
use super::{ProxyResources, Resource, TypeUrl};

pub(crate) struct Sotw {
    proxy_id: String,
    control_plane: Arc<str>,
    nonces: Nonces,
    types: BTreeMap<String, TypeState>,
}

/// SotW subscription semantics: for LDS and CDS no names (or `*`) means every resource;
/// for the other types no names means none.
fn subscription(type_url: &str, names: &[String]) -> Subscription {
    let full_state = TypeUrl::from_url(type_url).is_some_and(TypeUrl::is_full_state);
    let wildcard = (full_state && names.is_empty()) || names.iter().any(|n| n == "*");
    Subscription { wildcard, names: names.iter().filter(|n| *n != "*").cloned().collect() }
}

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = SotwResponse;
    const VARIANT: Variant = Variant::Sotw;

    fn node(request: &DiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn new(proxy_id: String, connection_id: u64, control_plane: Arc<str>) -> Self {
        Sotw { proxy_id, control_plane, nonces: Nonces::new(connection_id), types: BTreeMap::new() }
    }

    fn on_request(
        &mut self,
        request: DiscoveryRequest,
        resources: &ProxyResources,
        out: &mut Vec<SotwResponse>,
    ) {
        let url = request.type_url;
        let state = self.types.entry(url.clone()).or_insert_with(|| TypeState::new(&url));
        let check = state.check_nonce(&request.response_nonce);
        if check == NonceCheck::Stale {
            debug!(type_url = %url, nonce = %request.response_nonce, "ignoring stale request");
            return state.stale();
        }
        if check == NonceCheck::Current {
            match request.error_detail {
                Some(error) => state.nack(&self.proxy_id, error.message),
                None => state.ack(request.version_info),
            }
        }
        let wanted = subscription(&url, &request.resource_names);
        let added = match (&state.subscription, &wanted) {
            (old, new) if new.wildcard && !old.wildcard => true,
            (old, new) => !new.names.is_subset(&old.names),
        };
        let changed = wanted != state.subscription;
        state.subscription = wanted;
        state.prune_unwanted();
        // A fresh request (first on the stream, or a reconnect) always gets an answer, as does
        // a subscription that grew; an ACK or NACK of unchanged interest gets none.
        let full_state = state.ty.is_some_and(TypeUrl::is_full_state);
        if check == NonceCheck::Fresh || (changed && (added || full_state)) {
            let selected = state.selected(state.map(resources));
            let version = version_of(selected.iter().copied());
            let send = selected.into_iter().cloned().collect();
            out.push(respond(state, &mut self.nonces, &self.control_plane, version, send, true));
        }
    }

    fn on_push(
        &mut self,
        previous: &ProxyResources,
        resources: &ProxyResources,
        types: &[TypeUrl],
        out: &mut Vec<SotwResponse>,
    ) {
        for &ty in types {
            let Some(state) = self.types.get_mut(ty.url()) else { continue };
            // Nothing sent yet means the proxy's first request is still to be answered.
            if state.status.sent_nonce.is_none() || Arc::ptr_eq(previous.get(ty), resources.get(ty))
            {
                continue;
            }
            let map = resources.get(ty);
            let selected = state.selected(map);
            let version = version_of(selected.iter().copied());
            let send: Vec<Arc<Resource>> = if ty.is_full_state() {
                let same = selected.len() == state.held.len()
                    && selected.iter().all(|r| state.held.get(&r.name) == Some(&r.hash));
                if same {
                    continue;
                }
                selected.into_iter().cloned().collect()
            } else {
                // A vanished resource cannot be withdrawn in SotW; forget it so that it is
                // sent again if it comes back.
                state.held.retain(|name, _| map.contains_key(name));
                let changed = |r: &&Arc<Resource>| state.held.get(&r.name) != Some(&r.hash);
                selected.into_iter().filter(changed).cloned().collect()
            };
            if !send.is_empty() {
                let full = ty.is_full_state();
                out.push(respond(
                    state,
                    &mut self.nonces,
                    &self.control_plane,
                    version,
                    send,
                    full,
                ));
            }
        }
    }

    fn type_state(&self, ty: TypeUrl) -> Option<&TypeState> {
        self.types.get(ty.url())
    }

    fn status(&self) -> BTreeMap<String, TypeStatus> {
        statuses(self.types.values())
    }
}

/// Builds a response and records what the proxy now holds: for a full set (`replace`),
/// exactly `send`; otherwise `send` on top of what it had.
fn respond(
    state: &mut TypeState,
    nonces: &mut Nonces,
    control_plane: &Arc<str>,
    version: String,
    send: Vec<Arc<Resource>>,
    replace: bool,
) -> SotwResponse {
    if replace {
        state.held.clear();
    }
    state.held.extend(send.iter().map(|r| (r.name.clone(), r.hash)));
    let nonce = nonces.next();
    state.sent(nonce.clone(), version.clone(), send.iter().map(|r| r.name.clone()).collect());
    debug!(type_url = %state.url, %version, count = send.len(), "sending SotW response");
    SotwResponse {
        version_info: version,
        resources: send,
        type_url: state.url.clone(),
        nonce,
        control_plane: Some(Arc::clone(control_plane)),
    }
}

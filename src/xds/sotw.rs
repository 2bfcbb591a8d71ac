//! State-of-the-World ADS: every response carries a version for its type; LDS and CDS carry the
//! whole set, RDS, EDS and SDS only resources that changed among those subscribed.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use tracing::debug;

use super::codec::SotwResponse;
use super::connection::Rejection;
use super::connection::{TypeStatus, Variant};
use super::state::{Carried, NonceCheck, Nonces, Sources, TypeState, TypeStates};
use super::stream::Protocol;
use super::{ProxyResources, Resource, ResourceMap, TypeUrl};

pub(crate) struct Sotw {
    proxy_id: String,
    control_plane: Arc<str>,
    nonces: Nonces,
    types: TypeStates,
}

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = SotwResponse;
    const VARIANT: Variant = Variant::Sotw;

    fn node(request: &DiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn new(proxy_id: String, connection_id: u64, control_plane: Arc<str>) -> Self {
        Sotw {
            proxy_id,
            control_plane,
            nonces: Nonces::new(connection_id),
            types: TypeStates::default(),
        }
    }

    fn on_request(
        &mut self,
        request: DiscoveryRequest,
        resources: &ProxyResources,
        out: &mut Vec<SotwResponse>,
    ) {
        let url = request.type_url;
        let (state, _) = self.types.entry(&url);
        let check = state.check_nonce(&request.response_nonce);
        if check == NonceCheck::Stale {
            debug!(type_url = %url, nonce = %request.response_nonce, "ignoring stale request");
            return state.stale();
        }
        if check == NonceCheck::Current {
            match request.error_detail {
                Some(error) => state.nack(error.message),
                None => state.ack(request.version_info),
            }
        }
        // SotW subscription semantics: for LDS and CDS no names (or `*`) means every resource;
        // for the other types no names means none.
        let full_state = state.ty.is_some_and(TypeUrl::is_full_state);
        let names = request.resource_names;
        let wildcard = (full_state && names.is_empty()) || names.iter().any(|n| n == "*");
        let map = Arc::clone(state.map(resources));
        let (changed, added) = state.subscription.replace(wildcard, names, &map);
        if changed {
            state.recount();
        }
        // A fresh request (first on the stream, or a reconnect) always gets an answer, as does
        // a subscription that grew; an ACK or NACK of unchanged interest gets none.
        if check == NonceCheck::Fresh || (changed && (added || full_state)) {
            let send = state.selected(&map).into_iter().cloned().collect();
            let version = state.version_in(resources, &map);
            out.push(respond(
                state,
                &mut self.nonces,
                &self.control_plane,
                version,
                &map,
                send,
                true,
            ));
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
            let Some(state) = self.types.get_mut(ty.url()) else {
                continue;
            };
            let map = resources.get(ty);
            // Nothing sent yet means the proxy's first request is still to be answered. The
            // pointer checks are what make an unchanged type free for every connection.
            if state.status.sent_nonce.is_none()
                || Arc::ptr_eq(previous.get(ty), map)
                || Arc::ptr_eq(state.sent_map(), map)
            {
                continue;
            }
            let changes = state.changes(map, None, resources.change(ty));
            let full = ty.is_full_state();
            let send: Vec<Arc<Resource>> = if !full {
                // A vanished resource cannot be withdrawn in SotW; holding the new map forgets
                // it, so that it is sent again if it comes back.
                changes.send
            } else if changes.send.is_empty() && changes.gone.is_empty() {
                Vec::new()
            } else {
                state.selected(map).into_iter().cloned().collect()
            };
            if send.is_empty() {
                state.hold(map, changes.same_names);
                continue;
            }
            if changes.same_names {
                let old = Arc::clone(state.sent_map());
                state.subscription.rebase(&old, map);
            }
            let version = state.version_in(resources, map);
            out.push(respond(
                state,
                &mut self.nonces,
                &self.control_plane,
                version,
                map,
                send,
                full,
            ));
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

    fn debug_request(request: &DiscoveryRequest) -> Option<&DiscoveryRequest> {
        super::debug_types::is_debug(&request.type_url).then_some(request)
    }

    fn debug_response(response: SotwResponse) -> Option<SotwResponse> {
        Some(response)
    }
}

/// Builds a response computed from `map` and records that the proxy now holds what the
/// subscription selects of it: `send` if `full`, otherwise `send` on top of the unchanged rest.
fn respond(
    state: &mut TypeState,
    nonces: &mut Nonces,
    control_plane: &Arc<str>,
    version: String,
    map: &Arc<ResourceMap>,
    send: Vec<Arc<Resource>>,
    full: bool,
) -> SotwResponse {
    let nonce = nonces.next();
    let carried = if full {
        Carried::All
    } else {
        Carried::These(send.clone())
    };
    state.sent(nonce.clone(), version.clone(), map, carried, false);
    SotwResponse {
        version_info: version,
        resources: send,
        type_url: state.url.clone(),
        nonce,
        control_plane: Some(Arc::clone(control_plane)),
    }
}

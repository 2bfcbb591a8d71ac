//! VirtualService HTTP routes → Envoy `Route`s, as istiod's `route.BuildHTTPRoutesForVirtualService`
//! builds them for one listener port.
//!
//! Pure: the caller resolves destinations to cluster names and consistent-hash policies through
//! [`RouteContext`]; nothing here reads the index.

mod action;
mod filters;
mod headers;
mod matcher;

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::HashPolicy;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{Route, RouteMatch};
use envoy_types::util::pack_any;

use crate::config::istio::virtual_service::{Destination, HttpMatchRequest, HttpRoute};

pub use action::retry_policy;
pub use filters::{CORS_FILTER, FAULT_FILTER, HttpFilterNeeds, ROUTER_FILTER, http_filters};

/// The gateway name istiod gives sidecars, matched by `match.gateways: [mesh]`.
pub const MESH_GATEWAY: &str = "mesh";

/// What a route needs from the index and the proxy; the rest comes from the VirtualService.
pub struct RouteContext<'a> {
    /// Cluster name for a destination, or None when the host is unknown (then the route still
    /// exists but points at `BlackHoleCluster`, answering 503 as istiod's routes do).
    pub cluster_for: &'a dyn Fn(&Destination) -> Option<String>,
    /// Hash policy for a destination's consistentHash DestinationRule (may return empty).
    pub hash_policy_for: &'a dyn Fn(&Destination) -> Vec<HashPolicy>,
    /// The listener port, for matches with `port` (routes whose match.port differs are skipped)
    /// and for `derivePort: FROM_REQUEST_PORT` redirects.
    pub port: u32,
    /// Gateway names (`ns/name`) the route config is for, for `match.gateways`; empty = mesh.
    /// `match.gateways` entries are compared literally, so the caller resolves short names first.
    pub gateways: &'a [String],
    /// Labels of the proxy, for `match.sourceLabels`.
    pub proxy_labels: &'a BTreeMap<String, String>,
    /// Namespace of the proxy, for `match.sourceNamespace`.
    pub proxy_namespace: &'a str,
    /// Whether the listener terminates TLS: the default scheme of a redirect with a port.
    pub is_tls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("invalid regex {regex:?} in {field}: {reason}")]
    InvalidRegex {
        field: String,
        regex: String,
        reason: String,
    },
    #[error("{field} must not be empty")]
    Empty { field: String },
    #[error("directResponse.body.bytes is not valid base64")]
    InvalidBase64,
    #[error("directResponse.status {0} is outside 200..=599")]
    DirectResponseStatus(u32),
    #[error("redirect code {0} is not one of 301, 302, 303, 307, 308")]
    RedirectCode(u32),
    #[error("route has no destination, redirect or directResponse")]
    NoDestination,
    #[error("delegate {0} must be merged into the root VirtualService before translation")]
    Delegate(String),
    #[error("destination weight {0} is negative")]
    NegativeWeight(i32),
    #[error("all destinations have weight 0")]
    ZeroTotalWeight,
    #[error("fault.abort.httpStatus {0} is outside 200..=599")]
    FaultHttpStatus(i32),
    #[error("unknown gRPC status {0:?} in fault.abort.grpcStatus")]
    GrpcStatus(String),
    #[error(
        "header {0:?}: JWT claim routing needs Istio's authn filter, which pilotfish does not run"
    )]
    JwtClaim(String),
}

/// Istio's HTTPRoute → one Envoy route per `match` (one catch-all route when there is none).
///
/// Matches for another port, gateway or source are skipped, so the result may be empty; matches
/// after a catch-all are dropped as istiod drops them (Envoy would never reach them). Which
/// optional filters the routes use: [`HttpFilterNeeds::of_routes`].
pub fn translate_http_route(
    route: &HttpRoute,
    ctx: &RouteContext,
) -> Result<Vec<Route>, RouteError> {
    let mut routes = Vec::with_capacity(route.matches.len().max(1));
    if route.matches.is_empty() {
        routes.push(translate_one(route, None, ctx)?);
    }
    for m in &route.matches {
        if m.port != 0 && m.port != ctx.port || !source_matches(m, ctx) {
            continue;
        }
        let r = translate_one(route, Some(m), ctx)?;
        let catch_all = is_catch_all(&r);
        routes.push(r);
        if catch_all {
            break;
        }
    }
    Ok(routes)
}

/// A route every request reaches: prefix `/` or regex `.*` and nothing else to match. istiod
/// stops a VirtualService's routes after one, and sorts them last among VirtualServices.
pub fn is_catch_all(route: &Route) -> bool {
    let Some(m) = &route.r#match else {
        return false;
    };
    let path_all = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => p == "/",
        Some(PathSpecifier::PathSeparatedPrefix(p)) => p == "/",
        Some(PathSpecifier::SafeRegex(r)) => r.regex == ".*",
        _ => false,
    };
    path_all
        && m.headers.is_empty()
        && m.query_parameters.is_empty()
        && m.dynamic_metadata.is_empty()
}

/// istiod's `sourceMatchHTTP`: `gateways` replaces the label and namespace checks when present.
fn source_matches(m: &HttpMatchRequest, ctx: &RouteContext) -> bool {
    if !m.gateways.is_empty() {
        return m.gateways.iter().any(|g| {
            if ctx.gateways.is_empty() {
                g == MESH_GATEWAY
            } else {
                ctx.gateways.contains(g)
            }
        });
    }
    let labels_match = m
        .source_labels
        .iter()
        .all(|(k, v)| ctx.proxy_labels.get(k) == Some(v));
    labels_match && (m.source_namespace.is_empty() || m.source_namespace == ctx.proxy_namespace)
}

fn translate_one(
    http: &HttpRoute,
    m: Option<&HttpMatchRequest>,
    ctx: &RouteContext,
) -> Result<Route, RouteError> {
    let mut name = http.name.clone();
    if let Some(m) = m.filter(|m| !m.name.is_empty()) {
        name = format!("{name}.{}", m.name);
    }
    let mut out = Route {
        name,
        r#match: Some(matcher::translate_match(m)?),
        stat_prefix: m.map(|m| m.stat_prefix.clone()).unwrap_or_default(),
        ..Default::default()
    };
    let mut authority = None;
    if let Some(h) = &http.headers {
        let ops = headers::HeaderOps::translate(h)?;
        authority = ops.authority.clone();
        ops.apply_to_route(&mut out);
    }
    out.action = Some(if let Some(redirect) = &http.redirect {
        Action::Redirect(action::redirect(redirect, ctx.port, ctx.is_tls)?)
    } else if let Some(direct) = &http.direct_response {
        Action::DirectResponse(action::direct_response(direct)?)
    } else if let Some(d) = &http.delegate {
        return Err(RouteError::Delegate(format!("{}/{}", d.namespace, d.name)));
    } else {
        Action::Route(action::route_action(http, authority, ctx, &mut out)?)
    });
    if http.fault.is_some() || http.cors_policy.is_some() {
        out.typed_per_filter_config = filters::per_filter_config_map();
    }
    if let Some(fault) = &http.fault
        && let Some(f) = filters::translate_fault(fault)?
    {
        out.typed_per_filter_config
            .insert(FAULT_FILTER.into(), pack_any(f));
    }
    if let Some(cors) = &http.cors_policy {
        out.typed_per_filter_config
            .insert(CORS_FILTER.into(), pack_any(filters::translate_cors(cors)?));
    }
    Ok(out)
}

/// The catch-all match istiod uses when an HTTPRoute has no `match`.
fn catch_all_match() -> RouteMatch {
    RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix("/".into())),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;

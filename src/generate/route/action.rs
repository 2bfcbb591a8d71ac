//! Route actions: forward (destinations, rewrite, mirror, timeout, retries), redirect and
//! direct response, as istiod's `applyHTTPRouteDestination`, `ApplyRedirect`,
//! `ApplyDirectResponse` and `retry.ConvertPolicy`.

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::{DataSource, RuntimeFractionalPercent};
use envoy_types::pb::envoy::config::route::v3::redirect_action::{
    PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
};
use envoy_types::pb::envoy::config::route::v3::retry_policy::{
    RetryBackOff, RetryHostPredicate, RetryPriority, retry_host_predicate, retry_priority,
};
use envoy_types::pb::envoy::config::route::v3::route_action::{
    ClusterSpecifier, HostRewriteSpecifier, RequestMirrorPolicy,
};
use envoy_types::pb::envoy::config::route::v3::weighted_cluster::{ClusterWeight, cluster_weight};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, RedirectAction, RetryPolicy, Route, RouteAction, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use envoy_types::util::pack_any;

use super::headers::HeaderOps;
use super::{RouteContext, RouteError, matcher};
use crate::config::istio::Percent;
use crate::config::istio::virtual_service::{
    Destination, HttpBody, HttpDirectResponse, HttpRedirect, HttpRetry, HttpRoute,
    RedirectPortSelection,
};
use crate::generate::names::BLACKHOLE_CLUSTER;

/// istiod's default `retryOn` when a route sets no `retries` (or no `retryOn`). Since Istio 1.24
/// (`EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY`, on by default) it no longer retries an
/// application's 503, which may repeat a request that was not idempotent.
pub const DEFAULT_RETRY_ON: &str = "connect-failure,refused-stream,unavailable,cancelled";

pub(super) fn route_action(
    http: &HttpRoute,
    header_authority: Option<String>,
    ctx: &RouteContext,
    out: &mut Route,
) -> Result<RouteAction, RouteError> {
    // istiod's default is 0s (no timeout); max_grpc_timeout follows it so gRPC deadlines from
    // the client apply. The field is deprecated (Envoy logs a warning) but istiod sets it, and
    // its replacement cannot stand in: a route with `max_stream_duration` switches Envoy to its
    // "new timeouts", which ignore `timeout` (the conformance `timeout` scenario shows it).
    let timeout = http.timeout.map(|d| d.to_proto()).unwrap_or_default();
    #[allow(deprecated)]
    let mut action = RouteAction {
        timeout: Some(timeout),
        max_grpc_timeout: Some(timeout),
        ..Default::default()
    };

    let mut authority = header_authority;
    if let Some(rw) = &http.rewrite {
        if let Some(rr) = &rw.uri_regex_rewrite {
            action.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(matcher::regex_matcher(
                    &rr.pattern,
                    "rewrite.uriRegexRewrite.match",
                )?),
                substitution: rr.rewrite.clone(),
            });
        } else if !rw.uri.is_empty() {
            // For exact and regex matches Envoy swaps the whole path, so this is also the
            // full-path rewrite those matches need.
            action.prefix_rewrite = rw.uri.clone();
        }
        if !rw.authority.is_empty() {
            authority = Some(rw.authority.clone());
        }
    }
    if let Some(a) = authority {
        action.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(a));
    }

    if let Some(m) = &http.mirror
        && let Some(fraction) = mirror_fraction(http.mirror_percentage, http.mirror_percent)
    {
        action
            .request_mirror_policies
            .extend(mirror_policy(m, fraction, ctx));
    }
    for m in &http.mirrors {
        if let Some(fraction) = mirror_fraction(m.percentage, None) {
            action
                .request_mirror_policies
                .extend(mirror_policy(&m.destination, fraction, ctx));
        }
    }

    let cluster =
        |d: &Destination| (ctx.cluster_for)(d).unwrap_or_else(|| BLACKHOLE_CLUSTER.into());
    let mut consistent_hash = false;
    match http.route.as_slice() {
        [] => return Err(RouteError::NoDestination),
        [only] => {
            action.cluster_specifier = Some(ClusterSpecifier::Cluster(cluster(&only.destination)));
            if let Some(h) = &only.headers {
                let ops = HeaderOps::translate(h)?;
                // The route-level rewrite wins, so a single destination behaves like a weighted one.
                if let Some(a) = ops.authority.clone()
                    && action.host_rewrite_specifier.is_none()
                {
                    action.host_rewrite_specifier =
                        Some(HostRewriteSpecifier::HostRewriteLiteral(a));
                }
                ops.apply_to_route(out);
            }
            let hash = (ctx.hash_policy_for)(&only.destination);
            consistent_hash = !hash.is_empty();
            action.hash_policy.extend(hash);
        }
        many => {
            let mut clusters = Vec::with_capacity(many.len());
            for dst in many {
                match dst.weight {
                    w if w < 0 => return Err(RouteError::NegativeWeight(w)),
                    0 => continue,
                    _ => {}
                }
                let mut cw = ClusterWeight {
                    name: cluster(&dst.destination),
                    weight: Some(UInt32Value {
                        value: dst.weight as u32,
                    }),
                    ..Default::default()
                };
                if let Some(h) = &dst.headers {
                    let ops = HeaderOps::translate(h)?;
                    cw.host_rewrite_specifier = ops
                        .authority
                        .clone()
                        .map(cluster_weight::HostRewriteSpecifier::HostRewriteLiteral);
                    ops.apply_to_cluster_weight(&mut cw);
                }
                // Destinations of one host share its DestinationRule's hash: add it once.
                for hash in (ctx.hash_policy_for)(&dst.destination) {
                    if !action.hash_policy.contains(&hash) {
                        action.hash_policy.push(hash);
                    }
                }
                clusters.push(cw);
            }
            if clusters.is_empty() {
                return Err(RouteError::ZeroTotalWeight);
            }
            // No total_weight: deprecated, Envoy sums the weights.
            action.cluster_specifier = Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters,
                ..Default::default()
            }));
        }
    }
    action.retry_policy = retry_policy(http.retries.as_ref(), consistent_hash);
    Ok(action)
}

/// istiod's `MirrorPercent`: an explicit 0 disables the mirror, unset mirrors everything.
fn mirror_fraction(percentage: Option<Percent>, percent: Option<u32>) -> Option<FractionalPercent> {
    match (percentage, percent) {
        (Some(p), _) => (p.value > 0.0).then(|| million(p.value)),
        (None, Some(p)) => (p > 0).then(|| hundred(p)),
        (None, None) => Some(hundred(100)),
    }
}

/// Mirrors to unknown hosts are dropped: there is nothing to copy traffic to.
fn mirror_policy(
    d: &Destination,
    fraction: FractionalPercent,
    ctx: &RouteContext,
) -> Option<RequestMirrorPolicy> {
    Some(RequestMirrorPolicy {
        cluster: (ctx.cluster_for)(d)?,
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(fraction),
            runtime_key: String::new(),
        }),
        trace_sampled: Some(BoolValue { value: false }),
        ..Default::default()
    })
}

/// Istio's double percent (0–100) at Envoy's finest granularity, as istiod does.
pub(super) fn million(percent: f64) -> FractionalPercent {
    FractionalPercent {
        numerator: (percent * 10_000.0) as u32,
        denominator: DenominatorType::Million as i32,
    }
}

pub(super) fn hundred(percent: u32) -> FractionalPercent {
    FractionalPercent {
        numerator: percent,
        denominator: DenominatorType::Hundred as i32,
    }
}

/// istiod's `retry.ConvertPolicy`: `None` retries → the default policy, `attempts <= 0` → no
/// policy. With consistent hashing, retries stay on the same host (no previous_hosts predicate).
pub fn retry_policy(retries: Option<&HttpRetry>, consistent_hash: bool) -> Option<RetryPolicy> {
    let mut out = RetryPolicy {
        num_retries: Some(UInt32Value { value: 2 }),
        retry_on: DEFAULT_RETRY_ON.into(),
        host_selection_retry_max_attempts: 5,
        retry_host_predicate: if consistent_hash {
            vec![]
        } else {
            vec![previous_hosts()]
        },
        ..Default::default()
    };
    let Some(r) = retries else { return Some(out) };
    if r.attempts <= 0 {
        return None;
    }
    out.num_retries = Some(UInt32Value {
        value: r.attempts as u32,
    });
    if !r.retry_on.is_empty() {
        (out.retry_on, out.retriable_status_codes) = parse_retry_on(&r.retry_on);
    }
    out.per_try_timeout = r.per_try_timeout.map(|d| d.to_proto());
    if let Some(ignore) = r.retry_ignore_previous_hosts {
        out.retry_host_predicate = if ignore {
            vec![previous_hosts()]
        } else {
            vec![]
        };
    }
    if r.retry_remote_localities == Some(true) {
        out.retry_priority = Some(RetryPriority {
            name: "envoy.retry_priorities.previous_priorities".into(),
            config_type: Some(retry_priority::ConfigType::TypedConfig(pack_any(
                PreviousPrioritiesConfig {
                    update_frequency: 2,
                },
            ))),
        });
    }
    // Envoy requires a base interval above zero.
    if let Some(b) = r.backoff.filter(|b| !b.as_std().is_zero()) {
        out.retry_back_off = Some(RetryBackOff {
            base_interval: Some(b.to_proto()),
            max_interval: None,
        });
    }
    Some(out)
}

fn previous_hosts() -> RetryHostPredicate {
    RetryHostPredicate {
        name: "envoy.retry_host_predicates.previous_hosts".into(),
        config_type: Some(retry_host_predicate::ConfigType::TypedConfig(pack_any(
            PreviousHostsPredicate {},
        ))),
    }
}

/// Numeric parts that are known HTTP status codes go to `retriable_status_codes`, and
/// `retriable-status-codes` is added to the conditions so Envoy uses them.
fn parse_retry_on(retry_on: &str) -> (String, Vec<u32>) {
    let mut codes = Vec::new();
    let mut conditions = Vec::new();
    for part in retry_on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u32>() {
            Ok(code) if is_known_status(code) => codes.push(code),
            _ => conditions.push(part),
        }
    }
    if !codes.is_empty() && !conditions.contains(&"retriable-status-codes") {
        conditions.push("retriable-status-codes");
    }
    (conditions.join(","), codes)
}

/// The codes Go's `http.StatusText` names, which istiod uses to tell codes from conditions.
fn is_known_status(code: u32) -> bool {
    matches!(code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429
        | 431 | 451 | 500..=508 | 510 | 511)
}

pub(super) fn redirect(
    r: &HttpRedirect,
    listener_port: u32,
    is_tls: bool,
) -> Result<RedirectAction, RouteError> {
    let response_code = match r.redirect_code {
        0 | 301 => RedirectResponseCode::MovedPermanently,
        302 => RedirectResponseCode::Found,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        other => return Err(RouteError::RedirectCode(other)),
    };
    let mut out = RedirectAction {
        host_redirect: r.authority.clone(),
        response_code: response_code as i32,
        // The uri replaces the whole path whatever the match was, as in istiod.
        path_rewrite_specifier: (!r.uri.is_empty())
            .then(|| PathRewriteSpecifier::PathRedirect(r.uri.clone())),
        scheme_rewrite_specifier: (!r.scheme.is_empty())
            .then(|| SchemeRewriteSpecifier::SchemeRedirect(r.scheme.clone())),
        ..Default::default()
    };
    let port = match (r.port, r.derive_port) {
        (Some(p), _) => Some(p),
        // Envoy cannot derive the port per request, but routes are built per listener port.
        (None, Some(RedirectPortSelection::FromRequestPort)) => Some(listener_port),
        (None, Some(RedirectPortSelection::FromProtocolDefault)) => Some(0),
        (None, None) => None,
    };
    if let Some(port) = port {
        let scheme = match r.scheme.as_str() {
            "" if is_tls => "https",
            "" => "http",
            s => s,
        };
        // No explicit :80 or :443 for their own scheme.
        let default_port = (port == 80 && scheme == "http") || (port == 443 && scheme == "https");
        out.port_redirect = if default_port { 0 } else { port };
    }
    Ok(out)
}

pub(super) fn direct_response(d: &HttpDirectResponse) -> Result<DirectResponseAction, RouteError> {
    if !(200..600).contains(&d.status) {
        return Err(RouteError::DirectResponseStatus(d.status));
    }
    let body = match &d.body {
        None => None,
        Some(HttpBody::String(s)) => Some(Specifier::InlineString(s.clone())),
        Some(HttpBody::Bytes(b64)) => Some(Specifier::InlineBytes(
            crate::base64::decode(b64).ok_or(RouteError::InvalidBase64)?,
        )),
    };
    Ok(DirectResponseAction {
        status: d.status,
        body: body.map(|s| DataSource {
            specifier: Some(s),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
#[path = "action_tests.rs"]
mod tests;

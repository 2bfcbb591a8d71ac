//! One VirtualService HTTP route: istiod's `validateHTTPRoute` and the checks it calls.

use crate::config::istio::StringMatch;
use crate::config::istio::virtual_service::{
    CorsPolicy, FaultAbort, FaultDelay, GRPC_STATUS_NAMES, HeaderMatch, HttpBody,
    HttpDirectResponse, HttpFaultInjection, HttpMatchRequest, HttpRedirect, HttpRetry, HttpRewrite,
    HttpRoute,
};

use super::common::{
    Diags, is_dns1123_label, validate_duration, validate_header_name, validate_percent,
    validate_percentage, validate_port, validate_regex, validate_string_match,
};
use super::virtual_service::{
    is_authority_header, validate_destination, validate_header_operations, validate_source_match,
    validate_weights,
};

/// Policies Envoy's `x-envoy-retry-on` and `x-envoy-retry-grpc-on` understand.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// HTTP status codes Go's `http.StatusText` knows, which istiod accepts in `retryOn`.
const KNOWN_STATUS: &[u16] = &[
    100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304,
    305, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415,
    416, 417, 418, 421, 422, 423, 424, 425, 426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505,
    506, 507, 508, 510, 511,
];

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];

/// `@request.auth.claims.sub` / `@request.auth.claims[a][b]`: gateway-only JWT claim routing.
pub fn is_jwt_claim(name: &str) -> bool {
    name.strip_prefix("@request.auth.claims")
        .is_some_and(|r| r.starts_with('.') || r.starts_with('['))
}

/// `delegate` is whether the VirtualService has no hosts, i.e. is itself a delegate.
pub fn validate(at: &str, r: &HttpRoute, delegate: bool, out: &mut Diags) {
    validate_conflicts(at, r, delegate, out);
    for (j, m) in r.matches.iter().enumerate() {
        validate_match(&format!("{at}.match[{j}]"), m, out);
    }
    if let Some(h) = &r.headers {
        validate_header_operations(&format!("{at}.headers"), h, out);
    }
    if let Some(c) = &r.cors_policy {
        validate_cors(&format!("{at}.corsPolicy"), c, out);
    }
    if let Some(f) = &r.fault {
        validate_fault(&format!("{at}.fault"), f, out);
    }
    if let Some(p) = r.mirror_percent {
        if p > 100 {
            out.error(
                format!("{at}.mirrorPercent"),
                format!("mirror_percent must have a max value of 100 (it has {p})"),
            );
        }
        out.warning(
            format!("{at}.mirrorPercent"),
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        );
    }
    if let Some(p) = r.mirror_percentage
        && !(0.0..=100.0).contains(&p.value)
    {
        out.error(
            format!("{at}.mirrorPercentage.value"),
            format!("mirror percentage must be in 0..100 (it has {})", p.value),
        );
    }
    if let Some(m) = &r.mirror {
        validate_destination(&format!("{at}.mirror"), m, out);
    }
    for (i, m) in r.mirrors.iter().enumerate() {
        let mat = format!("{at}.mirrors[{i}]");
        validate_destination(&format!("{mat}.destination"), &m.destination, out);
        if let Some(p) = m.percentage
            && !(0.0..=100.0).contains(&p.value)
        {
            out.error(
                format!("{mat}.percentage.value"),
                format!("mirror percentage must be in 0..100 (it has {})", p.value),
            );
        }
    }
    if let Some(rd) = &r.redirect {
        validate_redirect(&format!("{at}.redirect"), rd, out);
    }
    if let Some(d) = &r.direct_response {
        validate_direct_response(&format!("{at}.directResponse"), d, out);
    }
    if let Some(rt) = &r.retries {
        validate_retries(&format!("{at}.retries"), rt, out);
    }
    if let Some(rw) = &r.rewrite {
        validate_rewrite(&format!("{at}.rewrite"), rw, out);
    }
    validate_authority_rewrite(at, r, out);
    for (i, d) in r.route.iter().enumerate() {
        let dat = format!("{at}.route[{i}]");
        validate_destination(&format!("{dat}.destination"), &d.destination, out);
        if let Some(h) = &d.headers {
            validate_header_operations(&format!("{dat}.headers"), h, out);
        }
    }
    validate_weights(
        &format!("{at}.route"),
        &r.route.iter().map(|d| d.weight).collect::<Vec<_>>(),
        out,
    );
    if let Some(t) = r.timeout {
        out.check(format!("{at}.timeout"), validate_duration(t));
    }
}

/// Exactly one action: `route`, `redirect`, `directResponse`, or (in a root VirtualService)
/// `delegate`. Faults and rewrites only apply to proxied requests.
fn validate_conflicts(at: &str, r: &HttpRoute, delegate: bool, out: &mut Diags) {
    if let Some(d) = &r.delegate {
        if delegate {
            out.error(
                format!("{at}.delegate"),
                "delegate HTTP route cannot contain delegate",
            );
        }
        if d.name.is_empty() {
            out.error(format!("{at}.delegate.name"), "delegate name is required");
        } else if !super::common::is_k8s_subdomain(&d.name) {
            out.error(
                format!("{at}.delegate.name"),
                format!("invalid delegate name {:?}", d.name),
            );
        }
        if !d.namespace.is_empty() && !is_dns1123_label(&d.namespace) {
            out.error(
                format!("{at}.delegate.namespace"),
                format!("invalid delegate namespace {:?}", d.namespace),
            );
        }
        for (field, set) in [
            ("redirect", r.redirect.is_some()),
            ("route", !r.route.is_empty()),
            ("directResponse", r.direct_response.is_some()),
        ] {
            if set {
                out.error(
                    format!("{at}.{field}"),
                    format!(
                        "root HTTP route {} must not specify {field} with delegate",
                        r.name
                    ),
                );
            }
        }
        return;
    }
    if r.redirect.is_some() {
        if !r.route.is_empty() {
            out.error(
                format!("{at}.redirect"),
                "HTTP route cannot contain both route and redirect",
            );
        }
        if r.fault.is_some() {
            out.error(
                format!("{at}.fault"),
                "HTTP route cannot contain both fault and redirect",
            );
        }
        if r.rewrite.is_some() {
            out.error(
                format!("{at}.rewrite"),
                "HTTP route rule cannot contain both rewrite and redirect",
            );
        }
        if r.direct_response.is_some() {
            out.error(
                format!("{at}.directResponse"),
                "HTTP route rule cannot contain both direct_response and redirect",
            );
        }
    } else if r.direct_response.is_some() {
        if !r.route.is_empty() {
            out.error(
                format!("{at}.directResponse"),
                "HTTP route cannot contain both route and direct_response",
            );
        }
        if r.fault.is_some() {
            out.error(
                format!("{at}.fault"),
                "HTTP route cannot contain both fault and direct_response",
            );
        }
        if r.rewrite.is_some() {
            out.error(
                format!("{at}.rewrite"),
                "HTTP route rule cannot contain both rewrite and direct_response",
            );
        }
    } else if r.route.is_empty() {
        out.error(
            format!("{at}.route"),
            "HTTP route, redirect or direct_response is required",
        );
    }
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        out.error(
            format!("{at}.mirrors"),
            "HTTP route cannot contain both mirror and mirrors",
        );
    }
}

fn validate_match(at: &str, m: &HttpMatchRequest, out: &mut Diags) {
    for (field, map) in [
        ("headers", &m.headers),
        ("withoutHeaders", &m.without_headers),
    ] {
        for (name, hm) in map {
            let hat = format!("{at}.{field}.{name}");
            if !is_jwt_claim(name) {
                out.check(&hat, validate_header_name(name));
                if name.bytes().any(|c| c.is_ascii_uppercase()) {
                    // Envoy compares header names case-insensitively; istiod accepts either case.
                    out.warning(&hat, format!("header name {name:?} should be lower case"));
                }
            }
            // In withoutHeaders, `regex: "*"` means "header present", not a regex.
            let presence = field == "withoutHeaders" && hm.regex.as_deref() == Some("*");
            if !presence {
                validate_header_match(&hat, hm, out);
            }
        }
    }
    for (name, qm) in &m.query_params {
        validate_header_match(&format!("{at}.queryParams.{name}"), qm, out);
    }
    for (field, sm) in [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            out.check(
                string_match_field(&format!("{at}.{field}"), sm),
                validate_string_match(sm, field == "uri"),
            );
        }
    }
    validate_source_match(
        at,
        m.port,
        &m.source_labels,
        &m.gateways,
        &m.source_namespace,
        out,
    );
}

fn string_match_field(at: &str, sm: &StringMatch) -> String {
    let kind = match sm {
        StringMatch::Exact(_) => "exact",
        StringMatch::Prefix(_) => "prefix",
        StringMatch::Regex(_) => "regex",
    };
    format!("{at}.{kind}")
}

fn validate_header_match(at: &str, hm: &HeaderMatch, out: &mut Diags) {
    if hm.fields_set() > 1 {
        out.error(at, "only one of exact, prefix or regex may be set");
        return;
    }
    if let Some(sm) = hm.as_string_match() {
        out.check(
            string_match_field(at, &sm),
            validate_string_match(&sm, false),
        );
    }
}

fn validate_cors(at: &str, c: &CorsPolicy, out: &mut Diags) {
    for (i, origin) in c.allow_origins.iter().enumerate() {
        let oat = string_match_field(&format!("{at}.allowOrigins[{i}]"), origin);
        let value = match origin {
            StringMatch::Exact(v) | StringMatch::Prefix(v) | StringMatch::Regex(v) => v,
        };
        if value.is_empty() {
            out.error(oat, "'' is not a valid match type for CORS allow origins");
        } else if let StringMatch::Regex(re) = origin {
            out.check(oat, validate_regex(re));
        }
    }
    if !c.allow_origin.is_empty() {
        out.warning(
            format!("{at}.allowOrigin"),
            "allowOrigin is deprecated, use allowOrigins",
        );
    }
    for (i, m) in c.allow_methods.iter().enumerate() {
        if !METHODS.contains(&m.as_str()) {
            out.error(
                format!("{at}.allowMethods[{i}]"),
                format!("{m:?} is not a supported HTTP method"),
            );
        }
    }
    for (field, names) in [
        ("allowHeaders", &c.allow_headers),
        ("exposeHeaders", &c.expose_headers),
    ] {
        for (i, name) in names.iter().enumerate() {
            if name != "*" {
                out.check(format!("{at}.{field}[{i}]"), validate_header_name(name));
            }
        }
    }
    if let Some(age) = c.max_age {
        out.check(format!("{at}.maxAge"), validate_duration(age));
        if age.as_std().subsec_nanos() > 0 {
            out.error(
                format!("{at}.maxAge"),
                "max_age duration is accurate only to seconds precision",
            );
        }
    }
}

fn validate_fault(at: &str, f: &HttpFaultInjection, out: &mut Diags) {
    if f.abort.is_none() && f.delay.is_none() {
        out.error(at, "HTTP fault injection must have an abort and/or a delay");
    }
    if let Some(a) = &f.abort {
        validate_abort(&format!("{at}.abort"), a, out);
    }
    if let Some(d) = &f.delay {
        validate_delay(&format!("{at}.delay"), d, out);
    }
}

fn validate_abort(at: &str, a: &FaultAbort, out: &mut Diags) {
    if let Some(p) = a.percentage {
        out.check(
            format!("{at}.percentage.value"),
            validate_percentage(p.value),
        );
    }
    let kinds = [
        a.http_status.is_some(),
        a.grpc_status.is_some(),
        a.http2_error.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() > 1 {
        out.error(
            at,
            "only one of httpStatus, grpcStatus or http2Error may be set",
        );
    }
    if let Some(s) = a.http_status {
        if !(200..=599).contains(&s) {
            out.error(
                format!("{at}.httpStatus"),
                format!("HTTP status {s} is not in range 200-599"),
            );
        }
    } else if let Some(g) = &a.grpc_status {
        if !GRPC_STATUS_NAMES.contains(&g.as_str()) {
            out.error(
                format!("{at}.grpcStatus"),
                format!("gRPC status {g:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"),
            );
        }
    } else if a.http2_error.is_some() {
        out.error(
            format!("{at}.http2Error"),
            "HTTP/2 abort fault injection not supported yet",
        );
    } else {
        out.warning(at, "abort configured, but error type not set");
    }
}

fn validate_delay(at: &str, d: &FaultDelay, out: &mut Diags) {
    if let Some(p) = d.percentage {
        out.check(
            format!("{at}.percentage.value"),
            validate_percentage(p.value),
        );
    }
    if let Some(p) = d.percent {
        out.check(format!("{at}.percent"), validate_percent(p.into()));
    }
    match (d.fixed_delay, d.exponential_delay) {
        (Some(fixed), None) => out.check(format!("{at}.fixedDelay"), validate_duration(fixed)),
        (None, Some(exp)) => {
            out.check(format!("{at}.exponentialDelay"), validate_duration(exp));
            out.error(
                format!("{at}.exponentialDelay"),
                "exponentialDelay not supported yet",
            );
        }
        (Some(_), Some(_)) => {
            out.error(at, "only one of fixedDelay or exponentialDelay may be set")
        }
        // Envoy NACKs a delay fault without a delay.
        (None, None) => out.error(
            format!("{at}.fixedDelay"),
            "delay fault requires fixedDelay",
        ),
    }
}

fn validate_redirect(at: &str, r: &HttpRedirect, out: &mut Diags) {
    if r.uri.is_empty()
        && r.authority.is_empty()
        && r.port.is_none()
        && r.derive_port.is_none()
        && r.scheme.is_empty()
    {
        out.error(at, "redirect must specify URI, authority, scheme, or port");
    }
    // Envoy's RedirectResponseCode has exactly these; istiod drops the redirect for any other.
    if r.redirect_code != 0 && ![301, 302, 303, 307, 308].contains(&r.redirect_code) {
        out.error(
            format!("{at}.redirectCode"),
            format!(
                "{} is not a valid redirect code, must be one of 301, 302, 303, 307, 308",
                r.redirect_code
            ),
        );
    }
    if !r.scheme.is_empty() && r.scheme != "http" && r.scheme != "https" {
        out.error(
            format!("{at}.scheme"),
            "invalid redirect scheme, must be \"http\" or \"https\"",
        );
    }
    if r.port.is_some() && r.derive_port.is_some() {
        out.error(
            format!("{at}.derivePort"),
            "only one of port or derivePort may be set",
        );
    }
    if let Some(p) = r.port {
        out.check(format!("{at}.port"), validate_port(p.into()));
    }
}

fn validate_direct_response(at: &str, d: &HttpDirectResponse, out: &mut Diags) {
    let size = match &d.body {
        Some(HttpBody::String(s)) => s.len(),
        Some(HttpBody::Bytes(b64)) => b64.len() / 4 * 3,
        None => 0,
    };
    if size > 1024 * 1024 {
        out.error(
            format!("{at}.body"),
            "large direct_responses may impact control plane performance, must be less than 1MB",
        );
    } else if size > 100 * 1024 {
        out.warning(
            format!("{at}.body"),
            "large direct_responses may impact control plane performance",
        );
    }
    if !(200..=599).contains(&d.status) {
        out.error(
            format!("{at}.status"),
            format!("HTTP status {} is not in range 200-599", d.status),
        );
    }
}

fn validate_retries(at: &str, r: &HttpRetry, out: &mut Diags) {
    if r.attempts < 0 {
        out.error(format!("{at}.attempts"), "attempts cannot be negative");
    }
    if r.attempts == 0
        && (r.per_try_timeout.is_some()
            || !r.retry_on.is_empty()
            || r.retry_remote_localities.is_some())
    {
        out.error(
            format!("{at}.attempts"),
            "http retry policy configured when attempts are set to 0 (disabled)",
        );
    }
    if let Some(t) = r.per_try_timeout {
        out.check(format!("{at}.perTryTimeout"), validate_duration(t));
    }
    if let Some(b) = r.backoff {
        out.check(format!("{at}.backoff"), validate_duration(b));
    }
    if !r.retry_on.is_empty() {
        for policy in r.retry_on.split(',') {
            let status_ok = policy
                .parse::<u16>()
                .is_ok_and(|c| KNOWN_STATUS.contains(&c));
            if !status_ok && !RETRY_ON.contains(&policy) {
                out.error(
                    format!("{at}.retryOn"),
                    format!("{policy:?} is not a valid retryOn policy"),
                );
            }
        }
    }
}

fn validate_rewrite(at: &str, r: &HttpRewrite, out: &mut Diags) {
    if !r.uri.is_empty() && r.uri_regex_rewrite.is_some() {
        out.error(at, "rewrite may only contain one of URI or UriRegexRewrite");
    }
    if r.uri.is_empty() && r.uri_regex_rewrite.is_none() && r.authority.is_empty() {
        out.error(
            at,
            "rewrite must specify at least one of URI, UriRegexRewrite, or authority",
        );
    }
    if let Some(rr) = &r.uri_regex_rewrite {
        let rat = format!("{at}.uriRegexRewrite");
        if rr.pattern.is_empty() || rr.rewrite.is_empty() {
            out.error(
                &rat,
                "UriRegexRewrite requires both Rewrite and Match fields to be specified",
            );
        }
        if !rr.pattern.is_empty() {
            out.check(format!("{rat}.match"), validate_regex(&rr.pattern));
        }
    }
}

/// The authority may be rewritten in one place only: `rewrite.authority` or one request header.
fn validate_authority_rewrite(at: &str, r: &HttpRoute, out: &mut Diags) {
    let mut current = r
        .rewrite
        .as_ref()
        .map(|rw| rw.authority.clone())
        .unwrap_or_default();
    let Some(request) = r.headers.as_ref().and_then(|h| h.request.as_ref()) else {
        return;
    };
    for (verb, map) in [("set", &request.set), ("add", &request.add)] {
        for (k, v) in map.iter().filter(|(k, _)| is_authority_header(k)) {
            if !current.is_empty() {
                out.error(
                    format!("{at}.headers.request.{verb}.{k}"),
                    format!("authority header cannot be set multiple times: have {current:?}, attempting to set {v:?}"),
                );
                return;
            }
            current = v.clone();
        }
    }
}

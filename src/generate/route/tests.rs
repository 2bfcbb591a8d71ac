//! Whole-route tests and the helpers the per-concern tests share.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::route::v3::route_action::{ClusterSpecifier, HashPolicy};
use envoy_types::pb::envoy::config::route::v3::{Route, RouteAction};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as EnvoyCors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use prost::Message;
use serde_json::json;

use super::*;

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// `outbound|port|subset|host` for every host but `unknown.example`.
pub(super) fn known(d: &Destination) -> Option<String> {
    (d.host != "unknown.example").then(|| {
        format!(
            "outbound|{}|{}|{}",
            d.port.map_or(80, |p| p.number),
            d.subset,
            d.host
        )
    })
}

pub(super) fn no_hash(_: &Destination) -> Vec<HashPolicy> {
    Vec::new()
}

pub(super) fn ctx() -> RouteContext<'static> {
    RouteContext {
        cluster_for: &known,
        hash_policy_for: &no_hash,
        port: 80,
        gateways: &[],
        proxy_labels: &NO_LABELS,
        proxy_namespace: "default",
        is_tls: false,
    }
}

/// An HTTPRoute from its YAML-equivalent JSON, as users write it.
pub(super) fn http(v: serde_json::Value) -> HttpRoute {
    serde_json::from_value(v).expect("valid HTTPRoute")
}

pub(super) fn one(v: serde_json::Value) -> Route {
    let mut routes = translate_http_route(&http(v), &ctx()).expect("translates");
    assert_eq!(routes.len(), 1, "{routes:?}");
    routes.remove(0)
}

pub(super) fn action(r: &Route) -> &RouteAction {
    match &r.action {
        Some(Action::Route(a)) => a,
        other => panic!("expected a route action, got {other:?}"),
    }
}

fn dest() -> serde_json::Value {
    json!([{"destination": {"host": "a.example"}}])
}

#[test]
fn one_route_per_match_named_route_dot_match() {
    let routes = translate_http_route(
        &http(json!({
            "name": "r",
            "match": [{"name": "m1", "uri": {"prefix": "/a"}}, {"uri": {"prefix": "/b"}}],
            "route": dest(),
        })),
        &ctx(),
    )
    .unwrap();
    let names: Vec<_> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["r.m1", "r"]);
    let unnamed = one(json!({"match": [{"name": "m"}], "route": dest()}));
    assert_eq!(unnamed.name, ".m");
}

#[test]
fn no_match_is_one_catch_all_route() {
    let r = one(json!({"name": "all", "route": dest()}));
    assert_eq!(r.name, "all");
    assert!(is_catch_all(&r));
    assert_eq!(
        action(&r).cluster_specifier,
        Some(ClusterSpecifier::Cluster("outbound|80||a.example".into()))
    );
}

#[test]
fn matches_after_a_catch_all_are_dropped() {
    let routes = translate_http_route(
        &http(json!({"match": [{"uri": {"prefix": "/"}}, {"uri": {"prefix": "/never"}}], "route": dest()})),
        &ctx(),
    )
    .unwrap();
    assert_eq!(routes.len(), 1);
}

#[test]
fn match_port_must_be_the_listener_port() {
    let h = http(
        json!({"match": [{"port": 8080, "uri": {"prefix": "/x"}}, {"port": 80, "uri": {"prefix": "/y"}}], "route": dest()}),
    );
    let routes = translate_http_route(&h, &ctx()).unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(
        routes[0].r#match.as_ref().unwrap().path_specifier,
        Some(PathSpecifier::Prefix("/y".into()))
    );
}

#[test]
fn match_gateways_mesh_or_named() {
    let h = http(json!({"match": [{"gateways": ["istio-system/gw"]}], "route": dest()}));
    assert!(translate_http_route(&h, &ctx()).unwrap().is_empty());
    let gws = ["istio-system/gw".to_string()];
    let gw_ctx = RouteContext {
        gateways: &gws,
        ..ctx()
    };
    assert_eq!(translate_http_route(&h, &gw_ctx).unwrap().len(), 1);
    let mesh = http(json!({"match": [{"gateways": ["mesh"]}], "route": dest()}));
    assert_eq!(translate_http_route(&mesh, &ctx()).unwrap().len(), 1);
    assert!(translate_http_route(&mesh, &gw_ctx).unwrap().is_empty());
}

#[test]
fn source_labels_and_namespace_select_the_proxy() {
    let h = http(
        json!({"match": [{"sourceLabels": {"app": "a"}, "sourceNamespace": "prod"}], "route": dest()}),
    );
    assert!(translate_http_route(&h, &ctx()).unwrap().is_empty());
    let labels = BTreeMap::from([
        ("app".to_string(), "a".to_string()),
        ("v".to_string(), "1".to_string()),
    ]);
    let wrong_ns = RouteContext {
        proxy_labels: &labels,
        ..ctx()
    };
    assert!(translate_http_route(&h, &wrong_ns).unwrap().is_empty());
    let right = RouteContext {
        proxy_labels: &labels,
        proxy_namespace: "prod",
        ..ctx()
    };
    assert_eq!(translate_http_route(&h, &right).unwrap().len(), 1);
}

#[test]
fn stat_prefix_is_copied() {
    let r = one(json!({"match": [{"statPrefix": "my_stats"}], "route": dest()}));
    assert_eq!(r.stat_prefix, "my_stats");
}

#[test]
fn fault_and_cors_are_per_route_filter_configs() {
    let r = one(json!({
        "route": dest(),
        "fault": {"abort": {"httpStatus": 418, "percentage": {"value": 50}}},
        "corsPolicy": {"allowOrigins": [{"exact": "https://x.example"}], "allowMethods": ["GET"]},
    }));
    let fault =
        HttpFault::decode(r.typed_per_filter_config[FAULT_FILTER].value.as_slice()).unwrap();
    assert_eq!(fault.abort.unwrap().percentage.unwrap().numerator, 500_000);
    assert_eq!(
        r.typed_per_filter_config[FAULT_FILTER].type_url,
        "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
    );
    let cors = EnvoyCors::decode(r.typed_per_filter_config[CORS_FILTER].value.as_slice()).unwrap();
    assert_eq!(cors.allow_methods, "GET");
    assert_eq!(
        r.typed_per_filter_config[CORS_FILTER].type_url,
        "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
    );
    let plain = one(json!({"route": dest()}));
    assert!(plain.typed_per_filter_config.is_empty());
}

#[test]
fn unsupported_fault_adds_no_filter_config() {
    let r = one(json!({"route": dest(), "fault": {"delay": {"exponentialDelay": "1s"}}}));
    assert!(r.typed_per_filter_config.is_empty());
}

#[test]
fn delegate_and_empty_routes_are_errors() {
    let d = http(json!({"delegate": {"name": "child", "namespace": "ns"}}));
    assert_eq!(
        translate_http_route(&d, &ctx()),
        Err(RouteError::Delegate("ns/child".into()))
    );
    let empty = http(json!({"name": "nothing"}));
    assert_eq!(
        translate_http_route(&empty, &ctx()),
        Err(RouteError::NoDestination)
    );
}

/// Every message this module produces survives prost encode/decode unchanged.
#[test]
fn everything_round_trips_through_prost() {
    let full = http(json!({
        "name": "full",
        "match": [{
            "name": "m", "uri": {"regex": "/api/.*"}, "ignoreUriCase": true,
            "headers": {"x-a": {"exact": "1"}, "x-p": {}}, "withoutHeaders": {"x-b": {"prefix": "z"}},
            "queryParams": {"q": {"regex": "[0-9]+"}}, "method": {"exact": "GET"},
        }],
        "route": [
            {"destination": {"host": "a.example", "subset": "v1"}, "weight": 70,
             "headers": {"request": {"set": {"x-w": "1", ":authority": "w.example"}}}},
            {"destination": {"host": "unknown.example"}, "weight": 30},
        ],
        "rewrite": {"uriRegexRewrite": {"match": "^/api/(.*)", "rewrite": "/\\1"}, "authority": "new.example"},
        "timeout": "2.5s",
        "retries": {"attempts": 3, "perTryTimeout": "1s", "retryOn": "5xx,503", "retryRemoteLocalities": true, "backoff": "25ms"},
        "fault": {"delay": {"fixedDelay": "1s", "percentage": {"value": 0.1}}},
        "mirrors": [{"destination": {"host": "m.example"}, "percentage": {"value": 5}}],
        "corsPolicy": {"allowOrigins": [{"prefix": "https://"}], "maxAge": "1h", "allowCredentials": false},
        "headers": {"request": {"add": {"x-r": "v"}, "remove": ["x-gone"]}, "response": {"set": {"x-s": "s"}}},
    }));
    let redirect = http(
        json!({"redirect": {"uri": "/new", "authority": "b.example", "port": 8443, "scheme": "https", "redirectCode": 308}}),
    );
    let direct = http(json!({"directResponse": {"status": 503, "body": {"bytes": "aGVsbG8="}}}));
    for h in [full, redirect, direct] {
        for r in translate_http_route(&h, &ctx()).unwrap() {
            let bytes = r.encode_to_vec();
            assert_eq!(Route::decode(bytes.as_slice()).unwrap(), r);
            for any in r.typed_per_filter_config.values() {
                if any.type_url.ends_with("HTTPFault") {
                    HttpFault::decode(any.value.as_slice()).unwrap();
                } else {
                    EnvoyCors::decode(any.value.as_slice()).unwrap();
                }
            }
        }
    }
    for f in http_filters(HttpFilterNeeds::ALL) {
        let bytes = f.encode_to_vec();
        assert_eq!(Message::decode(bytes.as_slice()).ok(), Some(f));
    }
}

#[test]
fn equal_routes_encode_to_equal_bytes() {
    // Fault and CORS both land in the per-filter map; its encoding order must not vary
    // between two translations of the same route, or every push would look like a change.
    let route = http(json!({
        "route": [{"destination": {"host": "a"}}],
        "fault": {"abort": {"httpStatus": 500, "percentage": {"value": 10}}},
        "corsPolicy": {"allowOrigins": [{"exact": "https://a.example"}]}
    }));
    let encode = || {
        let routes = translate_http_route(&route, &ctx()).unwrap();
        assert_eq!(routes[0].typed_per_filter_config.len(), 2);
        routes
            .iter()
            .map(Message::encode_to_vec)
            .collect::<Vec<_>>()
    };
    let first = encode();
    for _ in 0..20 {
        assert_eq!(encode(), first);
    }
}

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::HashPolicy;
use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::{
    Header, PolicySpecifier,
};
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use prost::Message;
use serde_json::json;

use super::super::tests::{action, ctx, http, known, one};
use super::super::{RouteContext, translate_http_route};
use super::*;

fn single() -> serde_json::Value {
    json!([{"destination": {"host": "a.example"}}])
}

fn weighted(r: &Route) -> &WeightedCluster {
    match &action(r).cluster_specifier {
        Some(ClusterSpecifier::WeightedClusters(w)) => w,
        other => panic!("expected weighted clusters, got {other:?}"),
    }
}

fn redirect_of(v: serde_json::Value) -> RedirectAction {
    match one(json!({ "redirect": v })).action {
        Some(Action::Redirect(r)) => r,
        other => panic!("expected a redirect, got {other:?}"),
    }
}

fn secs(seconds: i64, nanos: i32) -> PbDuration {
    PbDuration { seconds, nanos }
}

#[test]
fn single_destination_is_a_cluster_and_unknown_host_blackholes() {
    let r = one(
        json!({"route": [{"destination": {"host": "a.example", "subset": "v1", "port": {"number": 9080}}}]}),
    );
    assert_eq!(
        action(&r).cluster_specifier,
        Some(ClusterSpecifier::Cluster(
            "outbound|9080|v1|a.example".into()
        ))
    );
    let r = one(json!({"route": [{"destination": {"host": "unknown.example"}}]}));
    assert_eq!(
        action(&r).cluster_specifier,
        Some(ClusterSpecifier::Cluster(BLACKHOLE_CLUSTER.into()))
    );
}

#[test]
fn weighted_clusters_skip_zero_weights_and_omit_total_weight() {
    let r = one(json!({"route": [
        {"destination": {"host": "a.example", "subset": "v1"}, "weight": 75},
        {"destination": {"host": "a.example", "subset": "v2"}, "weight": 25},
        {"destination": {"host": "a.example", "subset": "v3"}, "weight": 0},
    ]}));
    let w = weighted(&r);
    #[allow(deprecated)]
    let total = w.total_weight;
    assert_eq!(total, None);
    let got: Vec<_> = w
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.unwrap().value))
        .collect();
    assert_eq!(
        got,
        [
            ("outbound|80|v1|a.example", 75),
            ("outbound|80|v2|a.example", 25)
        ]
    );
}

#[test]
fn weights_that_envoy_would_reject_are_errors() {
    let zero =
        http(json!({"route": [{"destination": {"host": "a"}}, {"destination": {"host": "b"}}]}));
    assert_eq!(
        translate_http_route(&zero, &ctx()),
        Err(RouteError::ZeroTotalWeight)
    );
    let negative = http(
        json!({"route": [{"destination": {"host": "a"}, "weight": -1}, {"destination": {"host": "b"}, "weight": 1}]}),
    );
    assert_eq!(
        translate_http_route(&negative, &ctx()),
        Err(RouteError::NegativeWeight(-1))
    );
}

#[test]
fn per_destination_headers_on_weighted_clusters() {
    let r = one(json!({"route": [
        {"destination": {"host": "a.example"}, "weight": 50, "headers": {
            "request": {"set": {"x-set": "1", "host": "v1.example"}, "add": {"x-add": "2"}, "remove": ["x-rm"]},
            "response": {"set": {"x-resp": "3"}, "remove": ["x-resp-rm"]}}},
        {"destination": {"host": "b.example"}, "weight": 50},
    ]}));
    let c = &weighted(&r).clusters[0];
    let req: Vec<_> = c
        .request_headers_to_add
        .iter()
        .map(|h| (h.header.as_ref().unwrap().key.as_str(), h.append_action))
        .collect();
    assert_eq!(
        req,
        [
            ("x-set", HeaderAppendAction::OverwriteIfExistsOrAdd as i32),
            ("x-add", HeaderAppendAction::AppendIfExistsOrAdd as i32)
        ]
    );
    assert_eq!(c.request_headers_to_remove, ["x-rm"]);
    assert_eq!(
        c.response_headers_to_add[0].header.as_ref().unwrap().key,
        "x-resp"
    );
    assert_eq!(c.response_headers_to_remove, ["x-resp-rm"]);
    assert_eq!(
        c.host_rewrite_specifier,
        Some(cluster_weight::HostRewriteSpecifier::HostRewriteLiteral(
            "v1.example".into()
        ))
    );
    assert!(weighted(&r).clusters[1].request_headers_to_add.is_empty());
}

#[test]
fn route_and_single_destination_headers_go_on_the_route() {
    let r = one(json!({
        "headers": {"request": {"set": {"x-route": "r"}}, "response": {"add": {"x-resp": "r"}}},
        "route": [{"destination": {"host": "a.example"}, "headers": {"request": {"set": {"x-dest": "d", ":authority": "d.example"}}}}],
    }));
    let keys: Vec<_> = r
        .request_headers_to_add
        .iter()
        .map(|h| h.header.as_ref().unwrap().key.as_str())
        .collect();
    assert_eq!(keys, ["x-route", "x-dest"]);
    assert_eq!(
        r.response_headers_to_add[0].append_action,
        HeaderAppendAction::AppendIfExistsOrAdd as i32
    );
    assert_eq!(
        action(&r).host_rewrite_specifier,
        Some(HostRewriteSpecifier::HostRewriteLiteral("d.example".into()))
    );
}

#[test]
fn rewrite_uri_is_prefix_rewrite_and_authority_host_rewrite() {
    let r = one(
        json!({"match": [{"uri": {"exact": "/old"}}], "rewrite": {"uri": "/new", "authority": "b.example"}, "route": single()}),
    );
    assert_eq!(action(&r).prefix_rewrite, "/new");
    assert_eq!(action(&r).regex_rewrite, None);
    assert_eq!(
        action(&r).host_rewrite_specifier,
        Some(HostRewriteSpecifier::HostRewriteLiteral("b.example".into()))
    );
}

#[test]
fn rewrite_authority_beats_header_authority() {
    let r = one(json!({
        "headers": {"request": {"set": {":authority": "header.example"}}},
        "rewrite": {"authority": "rewrite.example"},
        "route": single(),
    }));
    assert_eq!(
        action(&r).host_rewrite_specifier,
        Some(HostRewriteSpecifier::HostRewriteLiteral(
            "rewrite.example".into()
        ))
    );
    let r = one(
        json!({"headers": {"request": {"set": {":authority": "header.example"}}}, "route": single()}),
    );
    assert_eq!(
        action(&r).host_rewrite_specifier,
        Some(HostRewriteSpecifier::HostRewriteLiteral(
            "header.example".into()
        ))
    );
}

#[test]
fn uri_regex_rewrite_is_regex_rewrite() {
    let r = one(
        json!({"rewrite": {"uriRegexRewrite": {"match": "^/v1/(.*)$", "rewrite": "/v2/\\1"}}, "route": single()}),
    );
    let rr = action(&r).regex_rewrite.clone().unwrap();
    assert_eq!(
        rr.pattern,
        Some(RegexMatcher {
            regex: "^/v1/(.*)$".into(),
            engine_type: None
        })
    );
    assert_eq!(rr.substitution, "/v2/\\1");
    assert_eq!(action(&r).prefix_rewrite, "");
    let bad = http(
        json!({"rewrite": {"uriRegexRewrite": {"match": "(", "rewrite": "/"}}, "route": single()}),
    );
    assert!(matches!(
        translate_http_route(&bad, &ctx()),
        Err(RouteError::InvalidRegex { .. })
    ));
}

#[test]
#[allow(deprecated)]
fn timeout_defaults_to_disabled_and_is_copied() {
    let r = one(json!({"route": single()}));
    assert_eq!(action(&r).timeout, Some(secs(0, 0)));
    #[allow(deprecated)]
    let grpc = action(&r).max_grpc_timeout;
    assert_eq!(grpc, Some(secs(0, 0)));
    assert!(
        action(&r).max_stream_duration.is_none(),
        "it would make Envoy ignore `timeout`"
    );
    let r = one(json!({"route": single(), "timeout": "1.5s"}));
    assert_eq!(action(&r).timeout, Some(secs(1, 500_000_000)));
    #[allow(deprecated)]
    let grpc = action(&r).max_grpc_timeout;
    assert_eq!(grpc, Some(secs(1, 500_000_000)));
}

#[test]
fn default_retry_policy_is_istiods() {
    let p = action(&one(json!({"route": single()})))
        .retry_policy
        .clone()
        .unwrap();
    assert_eq!(p.num_retries, Some(UInt32Value { value: 2 }));
    assert_eq!(
        p.retry_on,
        "connect-failure,refused-stream,unavailable,cancelled"
    );
    assert!(
        p.retriable_status_codes.is_empty(),
        "istiod >= 1.24 does not retry an app's 503"
    );
    assert_eq!(p.host_selection_retry_max_attempts, 5);
    assert_eq!(p.retry_host_predicate.len(), 1);
    let pred = &p.retry_host_predicate[0];
    assert_eq!(pred.name, "envoy.retry_host_predicates.previous_hosts");
    let Some(retry_host_predicate::ConfigType::TypedConfig(any)) = &pred.config_type else {
        panic!()
    };
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
    );
    assert_eq!(p.per_try_timeout, None);
}

#[test]
fn retries_attempts_codes_per_try_timeout_and_options() {
    let r = one(json!({"route": single(), "retries": {
        "attempts": 4, "perTryTimeout": "2s", "retryOn": "gateway-error, 503,425,connect-failure,999",
        "retryIgnorePreviousHosts": false, "retryRemoteLocalities": true, "backoff": "50ms"}}));
    let p = action(&r).retry_policy.clone().unwrap();
    assert_eq!(p.num_retries, Some(UInt32Value { value: 4 }));
    assert_eq!(
        p.retry_on,
        "gateway-error,connect-failure,999,retriable-status-codes"
    );
    assert_eq!(p.retriable_status_codes, [503, 425]);
    assert_eq!(p.per_try_timeout, Some(secs(2, 0)));
    assert!(p.retry_host_predicate.is_empty());
    let prio = p.retry_priority.unwrap();
    assert_eq!(prio.name, "envoy.retry_priorities.previous_priorities");
    let Some(retry_priority::ConfigType::TypedConfig(any)) = prio.config_type else {
        panic!()
    };
    assert_eq!(
        PreviousPrioritiesConfig::decode(any.value.as_slice())
            .unwrap()
            .update_frequency,
        2
    );
    assert_eq!(
        p.retry_back_off.unwrap().base_interval,
        Some(secs(0, 50_000_000))
    );
}

#[test]
fn retry_on_with_the_condition_already_listed_is_not_doubled() {
    let (on, codes) = parse_retry_on("retriable-status-codes,502");
    assert_eq!(on, "retriable-status-codes");
    assert_eq!(codes, [502]);
    let (on, codes) = parse_retry_on("5xx");
    assert_eq!((on.as_str(), codes.len()), ("5xx", 0));
}

#[test]
fn zero_attempts_disable_retries() {
    let r = one(json!({"route": single(), "retries": {"attempts": 0}}));
    assert_eq!(action(&r).retry_policy, None);
}

#[test]
fn consistent_hash_destination_keeps_retries_on_the_same_host() {
    fn by_header(_: &Destination) -> Vec<HashPolicy> {
        vec![HashPolicy {
            policy_specifier: Some(PolicySpecifier::Header(Header {
                header_name: "x-user".into(),
                regex_rewrite: None,
            })),
            terminal: false,
        }]
    }
    let c = RouteContext {
        hash_policy_for: &by_header,
        ..ctx()
    };
    let r = translate_http_route(&http(json!({"route": single()})), &c)
        .unwrap()
        .remove(0);
    assert_eq!(action(&r).hash_policy, by_header(&Destination::default()));
    assert!(
        action(&r)
            .retry_policy
            .as_ref()
            .unwrap()
            .retry_host_predicate
            .is_empty()
    );
    let w = http(
        json!({"route": [{"destination": {"host": "a"}, "weight": 1}, {"destination": {"host": "b"}, "weight": 1}]}),
    );
    let r = translate_http_route(&w, &c).unwrap().remove(0);
    // The same hash from both destinations is carried once, not once per destination.
    assert_eq!(action(&r).hash_policy, by_header(&Destination::default()));
}

#[test]
fn mirror_defaults_to_100_percent_and_percentage_is_millionths() {
    let r = one(json!({"route": single(), "mirror": {"host": "m.example"}}));
    let m = &action(&r).request_mirror_policies[0];
    assert_eq!(m.cluster, "outbound|80||m.example");
    assert_eq!(
        m.runtime_fraction.as_ref().unwrap().default_value,
        Some(hundred(100))
    );
    assert_eq!(m.trace_sampled, Some(BoolValue { value: false }));
    let r = one(
        json!({"route": single(), "mirror": {"host": "m.example"}, "mirrorPercentage": {"value": 2.5}}),
    );
    let fraction = action(&r).request_mirror_policies[0]
        .runtime_fraction
        .clone()
        .unwrap()
        .default_value
        .unwrap();
    assert_eq!(
        fraction,
        FractionalPercent {
            numerator: 25_000,
            denominator: DenominatorType::Million as i32
        }
    );
    let r = one(json!({"route": single(), "mirror": {"host": "m.example"}, "mirrorPercent": 30}));
    assert_eq!(
        action(&r).request_mirror_policies[0]
            .runtime_fraction
            .clone()
            .unwrap()
            .default_value,
        Some(hundred(30))
    );
    let r = one(
        json!({"route": single(), "mirror": {"host": "m.example"}, "mirrorPercentage": {"value": 0}}),
    );
    assert!(action(&r).request_mirror_policies.is_empty());
}

#[test]
fn mirrors_list_and_unknown_mirror_dropped() {
    let r = one(json!({"route": single(), "mirrors": [
        {"destination": {"host": "m1.example"}},
        {"destination": {"host": "m2.example", "subset": "s"}, "percentage": {"value": 10}},
        {"destination": {"host": "unknown.example"}},
    ]}));
    let clusters: Vec<_> = action(&r)
        .request_mirror_policies
        .iter()
        .map(|m| m.cluster.as_str())
        .collect();
    assert_eq!(
        clusters,
        ["outbound|80||m1.example", "outbound|80|s|m2.example"]
    );
    assert_eq!(
        known(&Destination {
            host: "unknown.example".into(),
            ..Default::default()
        }),
        None
    );
}

#[test]
fn redirect_fields_and_codes() {
    let r = redirect_of(
        json!({"uri": "/new", "authority": "b.example", "scheme": "https", "port": 8443}),
    );
    assert_eq!(
        r.path_rewrite_specifier,
        Some(PathRewriteSpecifier::PathRedirect("/new".into()))
    );
    assert_eq!(r.host_redirect, "b.example");
    assert_eq!(
        r.scheme_rewrite_specifier,
        Some(SchemeRewriteSpecifier::SchemeRedirect("https".into()))
    );
    assert_eq!(r.port_redirect, 8443);
    assert_eq!(
        r.response_code,
        RedirectResponseCode::MovedPermanently as i32
    );
    for (code, want) in [
        (301, RedirectResponseCode::MovedPermanently),
        (302, RedirectResponseCode::Found),
        (303, RedirectResponseCode::SeeOther),
        (307, RedirectResponseCode::TemporaryRedirect),
        (308, RedirectResponseCode::PermanentRedirect),
    ] {
        assert_eq!(
            redirect_of(json!({"uri": "/", "redirectCode": code})).response_code,
            want as i32
        );
    }
    let bad = http(json!({"redirect": {"uri": "/", "redirectCode": 304}}));
    assert_eq!(
        translate_http_route(&bad, &ctx()),
        Err(RouteError::RedirectCode(304))
    );
}

#[test]
fn redirect_uri_replaces_whole_path_even_with_prefix_match() {
    let r = one(json!({"match": [{"uri": {"prefix": "/old"}}], "redirect": {"uri": "/new"}}));
    let Some(Action::Redirect(r)) = r.action else {
        panic!()
    };
    assert_eq!(
        r.path_rewrite_specifier,
        Some(PathRewriteSpecifier::PathRedirect("/new".into()))
    );
}

#[test]
fn redirect_derive_port_and_default_ports_dropped() {
    let c = RouteContext {
        port: 8080,
        ..ctx()
    };
    let h = http(json!({"redirect": {"authority": "b", "derivePort": "FROM_REQUEST_PORT"}}));
    let Some(Action::Redirect(r)) = translate_http_route(&h, &c).unwrap().remove(0).action else {
        panic!()
    };
    assert_eq!(r.port_redirect, 8080);
    assert_eq!(r.path_rewrite_specifier, None);
    assert_eq!(
        redirect_of(json!({"authority": "b", "derivePort": "FROM_REQUEST_PORT"})).port_redirect,
        0
    );
    assert_eq!(
        redirect_of(json!({"authority": "b", "port": 443, "scheme": "https"})).port_redirect,
        0
    );
    assert_eq!(
        redirect_of(json!({"authority": "b", "port": 443})).port_redirect,
        443
    );
    let tls = RouteContext {
        port: 443,
        is_tls: true,
        ..ctx()
    };
    let Some(Action::Redirect(r)) = translate_http_route(&h, &tls).unwrap().remove(0).action else {
        panic!()
    };
    assert_eq!(r.port_redirect, 0);
}

#[test]
fn direct_response_string_and_base64_bytes() {
    let r = one(json!({"directResponse": {"status": 418, "body": {"string": "teapot"}}}));
    let Some(Action::DirectResponse(d)) = r.action else {
        panic!()
    };
    assert_eq!(d.status, 418);
    assert_eq!(
        d.body.unwrap().specifier,
        Some(Specifier::InlineString("teapot".into()))
    );
    let r = one(json!({"directResponse": {"status": 200, "body": {"bytes": "3q2+7w=="}}}));
    let Some(Action::DirectResponse(d)) = r.action else {
        panic!()
    };
    assert_eq!(
        d.body.unwrap().specifier,
        Some(Specifier::InlineBytes(vec![0xde, 0xad, 0xbe, 0xef]))
    );
    let r = one(json!({"directResponse": {"status": 204}}));
    let Some(Action::DirectResponse(d)) = r.action else {
        panic!()
    };
    assert_eq!(d.body, None);
}

#[test]
fn direct_response_rejects_bad_base64_and_status() {
    let bad = http(json!({"directResponse": {"status": 200, "body": {"bytes": "not base64!"}}}));
    assert_eq!(
        translate_http_route(&bad, &ctx()),
        Err(RouteError::InvalidBase64)
    );
    let bad = http(json!({"directResponse": {"status": 99}}));
    assert_eq!(
        translate_http_route(&bad, &ctx()),
        Err(RouteError::DirectResponseStatus(99))
    );
}

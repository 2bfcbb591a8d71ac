use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, RegexMatcher, StringMatcher};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

use super::table::{rejections, render, rows};
use super::{MatcherError, NodeFilter, status};
use crate::model::Proxy;
use crate::xds::TypeUrl;
use crate::xds::connection::{AckState, Connections, Nack, TypeStatus, Variant};

const GW: &str = "router~10.0.0.9~gw-1.istio-system~istio-system.svc.cluster.local";
const APP: &str = "sidecar~10.0.0.1~app-1.default~default.svc.cluster.local";

fn type_status(ty: TypeUrl, state: AckState) -> TypeStatus {
    let mut s = TypeStatus {
        type_url: ty.url().into(),
        state,
        ..Default::default()
    };
    match state {
        AckState::None => {}
        AckState::Pending => s.sent_version = Some("v2".into()),
        AckState::Acked => s.acked_version = Some("v1".into()),
        AckState::Nacked => {
            s.acked_version = Some("v1".into());
            s.last_nack = Some(Nack {
                version: "v2".into(),
                nonce: "1-2".into(),
                error: "cluster 'x': bad lb_policy".into(),
                resources: vec!["x".into()],
                sources: vec![],
                at_unix_ms: 1_700_000_000_250,
            });
        }
    }
    s
}

fn proxy(id: &str) -> Arc<Proxy> {
    let mut proxy = Proxy::from_id(id).unwrap();
    proxy.metadata.istio_version = "csds-test".into();
    Arc::new(proxy)
}

fn by_url(statuses: Vec<TypeStatus>) -> BTreeMap<String, TypeStatus> {
    statuses
        .into_iter()
        .map(|s| (s.type_url.clone(), s))
        .collect()
}

fn request(matchers: Vec<StringMatcher>) -> ClientStatusRequest {
    ClientStatusRequest {
        node_matchers: matchers
            .into_iter()
            .map(|m| NodeMatcher {
                node_id: Some(m),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn matcher(p: MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(p),
        ..Default::default()
    }
}

fn ids(response: &ClientStatusResponse) -> Vec<String> {
    response
        .config
        .iter()
        .map(|c| c.node.as_ref().unwrap().id.clone())
        .collect()
}

#[test]
fn each_ack_state_maps_to_its_config_status() {
    let conns = Connections::new();
    let reg = conns.register(proxy(APP), None, Variant::Sotw);
    reg.update(by_url(vec![
        type_status(TypeUrl::Cluster, AckState::Acked),
        type_status(TypeUrl::Listener, AckState::Nacked),
        type_status(TypeUrl::RouteConfiguration, AckState::Pending),
        type_status(TypeUrl::ClusterLoadAssignment, AckState::None),
    ]));
    let response = status(&conns, None, &ClientStatusRequest::default()).unwrap();
    assert_eq!(ids(&response), [APP]);
    let get = |ty: TypeUrl| {
        response.config[0]
            .generic_xds_configs
            .iter()
            .find(|g| g.type_url == ty.url())
            .unwrap()
            .clone()
    };
    let cds = get(TypeUrl::Cluster);
    assert_eq!(
        (cds.config_status, cds.version_info.as_str()),
        (ConfigStatus::Synced as i32, "v1")
    );
    assert!(cds.error_state.is_none());
    let lds = get(TypeUrl::Listener);
    assert_eq!(lds.config_status, ConfigStatus::Error as i32);
    assert_eq!(
        lds.version_info, "v1",
        "a NACKed type still runs the ACKed version"
    );
    let err = lds.error_state.unwrap();
    assert_eq!(
        (err.details.as_str(), err.version_info.as_str()),
        ("cluster 'x': bad lb_policy", "v2")
    );
    let at = err.last_update_attempt.unwrap();
    assert_eq!((at.seconds, at.nanos), (1_700_000_000, 250_000_000));
    let rds = get(TypeUrl::RouteConfiguration);
    assert_eq!(
        (rds.config_status, rds.version_info.as_str()),
        (ConfigStatus::Stale as i32, "v2")
    );
    assert_eq!(
        get(TypeUrl::ClusterLoadAssignment).config_status,
        ConfigStatus::NotSent as i32
    );
    assert!(
        response.config[0]
            .generic_xds_configs
            .iter()
            .all(|g| g.xds_config.is_none())
    );
}

#[test]
fn an_acked_type_after_a_nack_is_synced_without_error_state() {
    let conns = Connections::new();
    let reg = conns.register(proxy(APP), None, Variant::Delta);
    let mut healed = type_status(TypeUrl::Listener, AckState::Nacked);
    healed.state = AckState::Acked;
    reg.update(by_url(vec![healed]));
    let response = status(&conns, None, &ClientStatusRequest::default()).unwrap();
    let g = &response.config[0].generic_xds_configs[0];
    assert_eq!(g.config_status, ConfigStatus::Synced as i32);
    assert!(g.error_state.is_none());
}

#[test]
fn node_matchers_filter_by_id_and_are_ored() {
    let conns = Connections::new();
    let _gw = conns.register(proxy(GW), None, Variant::Sotw);
    let _app = conns.register(proxy(APP), None, Variant::Sotw);
    let ask = |m: Vec<StringMatcher>| ids(&status(&conns, None, &request(m)).unwrap());
    assert_eq!(ask(vec![]), [GW, APP]);
    assert_eq!(ask(vec![matcher(MatchPattern::Exact(APP.into()))]), [APP]);
    assert_eq!(
        ask(vec![matcher(MatchPattern::Prefix("router~".into()))]),
        [GW]
    );
    assert_eq!(
        ask(vec![matcher(MatchPattern::Prefix("nobody".into()))]),
        Vec::<String>::new()
    );
    let both = vec![
        matcher(MatchPattern::Exact(APP.into())),
        matcher(MatchPattern::Suffix(
            "istio-system.svc.cluster.local".into(),
        )),
    ];
    assert_eq!(ask(both), [GW, APP]);
    let upper = StringMatcher {
        ignore_case: true,
        ..matcher(MatchPattern::Prefix("SIDECAR~".into()))
    };
    assert_eq!(ask(vec![upper]), [APP]);
    let re = RegexMatcher {
        regex: "sidecar~.*~app-\\d\\.default~.*".into(),
        ..Default::default()
    };
    assert_eq!(ask(vec![matcher(MatchPattern::SafeRegex(re))]), [APP]);
    let partial = RegexMatcher {
        regex: "app-1".into(),
        ..Default::default()
    };
    assert_eq!(
        ask(vec![matcher(MatchPattern::SafeRegex(partial))]),
        Vec::<String>::new(),
        "regex must match the whole id"
    );
}

#[test]
fn unsupported_matchers_are_rejected_naming_the_field() {
    let bad = RegexMatcher {
        regex: "(".into(),
        ..Default::default()
    };
    let m = [
        NodeMatcher::default(),
        NodeMatcher {
            node_id: Some(matcher(MatchPattern::SafeRegex(bad))),
            ..Default::default()
        },
    ];
    let err = NodeFilter::try_from(m.as_slice()).unwrap_err();
    assert!(matches!(err, MatcherError::Regex { index: 1, .. }));
    assert!(
        err.to_string()
            .starts_with("node_matchers[1].node_id.safe_regex"),
        "{err}"
    );
    let meta = [NodeMatcher {
        node_metadatas: vec![Default::default()],
        ..Default::default()
    }];
    assert!(matches!(
        NodeFilter::try_from(meta.as_slice()),
        Err(MatcherError::Metadata { index: 0 })
    ));
}

fn generic(ty: &str, status: ConfigStatus) -> GenericXdsConfig {
    GenericXdsConfig {
        type_url: ty.into(),
        config_status: status as i32,
        ..Default::default()
    }
}

fn node(id: &str, meta: &[(&str, &str)]) -> Node {
    let fields = meta
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                Value {
                    kind: Some(Kind::StringValue(v.to_string())),
                },
            )
        })
        .collect();
    Node {
        id: id.into(),
        metadata: Some(Struct { fields }),
        ..Default::default()
    }
}

#[test]
fn proxy_status_table_reads_like_istioctl() {
    let response = ClientStatusResponse {
        config: vec![
            ClientConfig {
                node: Some(node(
                    APP,
                    &[("CLUSTER_ID", "Kubernetes"), ("ISTIO_VERSION", "1.24.0")],
                )),
                generic_xds_configs: vec![
                    generic(TypeUrl::Cluster.url(), ConfigStatus::Synced),
                    generic(TypeUrl::Listener.url(), ConfigStatus::Error),
                    generic(TypeUrl::ClusterLoadAssignment.url(), ConfigStatus::Stale),
                    generic(TypeUrl::RouteConfiguration.url(), ConfigStatus::NotSent),
                    generic(TypeUrl::Secret.url(), ConfigStatus::Synced),
                ],
                ..Default::default()
            },
            ClientConfig {
                node: Some(node(GW, &[])),
                generic_xds_configs: vec![generic(TypeUrl::Cluster.url(), ConfigStatus::Unknown)],
                ..Default::default()
            },
        ],
    };
    let table = render(&rows(&response, "pilotfish-0"));
    let expected = [
        "NAME                  CLUSTER        CDS         LDS        EDS       RDS          ECDS     ISTIOD          VERSION",
        "app-1.default         Kubernetes     SYNCED      NACKED     STALE     NOT SENT              pilotfish-0     1.24.0",
        "gw-1.istio-system                    IGNORED                                                pilotfish-0     ",
    ];
    assert_eq!(table.lines().collect::<Vec<_>>(), expected, "\n{table}");
}

#[test]
fn a_node_id_not_in_istio_form_is_shown_whole() {
    let response = ClientStatusResponse {
        config: vec![ClientConfig {
            node: Some(node("envoy-1", &[])),
            ..Default::default()
        }],
    };
    assert_eq!(rows(&response, "x")[0].name, "envoy-1");
}

#[test]
fn proxy_status_names_what_each_nack_was_traced_to() {
    let nacked = GenericXdsConfig {
        error_state: Some(envoy_types::pb::envoy::admin::v3::UpdateFailureState {
            version_info: "v7".into(),
            details: "route: bad regex (from VirtualService default/reviews)".into(),
            ..Default::default()
        }),
        ..generic(TypeUrl::RouteConfiguration.url(), ConfigStatus::Error)
    };
    let response = ClientStatusResponse {
        config: vec![ClientConfig {
            node: Some(node(APP, &[])),
            generic_xds_configs: vec![
                generic(TypeUrl::Cluster.url(), ConfigStatus::Synced),
                nacked,
            ],
            ..Default::default()
        }],
    };
    assert_eq!(
        rejections(&response),
        [
            "app-1.default rejected RDS version v7: route: bad regex (from VirtualService default/reviews)"
        ]
    );
}

use serde_json::{Value, json};

use super::*;
use crate::xds::csds::REDACTED;

/// A `ClientConfig` JSON holding `bodies` of `kind`, all SYNCED at version `v1`.
fn config(kind: Kind, bodies: &[Value]) -> Value {
    let url = kind.type_url().url();
    let mut generic: Vec<Value> = bodies
        .iter()
        .map(|b| {
            json!({
                "type_url": url,
                "name": b["name"].clone(),
                "version_info": "v1",
                "last_updated": "2026-01-01T00:00:00Z",
                "config_status": "SYNCED",
                "xds_config": b,
            })
        })
        .collect();
    // A type with no body (another type, or excluded contents) is not a row.
    generic.push(json!({"type_url": "type.googleapis.com/other", "config_status": "SYNCED"}));
    json!({ "node": {"id": "x"}, "generic_xds_configs": generic })
}

fn table(kind: Kind, bodies: &[Value]) -> Vec<Vec<String>> {
    rows(kind, &config(kind, bodies))
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

#[test]
fn clusters_split_istio_names_and_name_their_destination_rule() {
    let rows = table(
        Kind::Clusters,
        &[
            json!({"name": "outbound|9080|v1|reviews.default.svc.cluster.local", "type": "EDS",
                   "metadata": {"filter_metadata": {"istio": {"config":
                       "/apis/networking.istio.io/v1/namespaces/default/destination-rule/reviews"}}}}),
            json!({"name": "inbound|8080||", "type": "ORIGINAL_DST"}),
            json!({"name": "BlackHoleCluster"}),
        ],
    );
    assert_eq!(
        rows,
        [
            row(&[
                "SERVICE FQDN",
                "PORT",
                "SUBSET",
                "DIRECTION",
                "TYPE",
                "DESTINATION RULE"
            ]),
            row(&["", "8080", "-", "inbound", "ORIGINAL_DST", ""]),
            row(&["BlackHoleCluster", "-", "-", "-", "STATIC", ""]),
            row(&[
                "reviews.default.svc.cluster.local",
                "9080",
                "v1",
                "outbound",
                "EDS",
                "reviews.default"
            ]),
        ]
    );
}

#[test]
fn listeners_have_a_line_per_filter_chain() {
    let hcm = |route: &str| {
        json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "rds": {"route_config_name": route}}})
    };
    let tcp = json!({"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "cluster": "outbound|3306||db.default.svc.cluster.local"}});
    let rows = table(
        Kind::Listeners,
        &[json!({
            "name": "0.0.0.0_80",
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": 80}},
            "filter_chains": [
                {"filter_chain_match": {"transport_protocol": "tls", "application_protocols": ["istio-http/1.1", "h2"]},
                 "filters": [hcm("80")]},
                {"filters": [tcp]},
                {"filters": [{"name": "envoy.filters.network.rbac"}]},
            ],
        })],
    );
    assert_eq!(
        rows,
        [
            row(&["ADDRESSES", "PORT", "MATCH", "DESTINATION"]),
            row(&[
                "0.0.0.0",
                "80",
                "ALL",
                "Cluster: outbound|3306||db.default.svc.cluster.local"
            ]),
            row(&["0.0.0.0", "80", "ALL", "Non-HTTP/Non-TCP"]),
            row(&[
                "0.0.0.0",
                "80",
                "Trans: tls; App: istio-http/1.1,h2",
                "Route: 80"
            ]),
        ]
    );
}

#[test]
fn routes_have_a_line_per_route_with_its_domains_and_match() {
    let rows = table(
        Kind::Routes,
        &[json!({"name": "80", "virtual_hosts": [
            {"name": "reviews.default.svc.cluster.local:80",
             "domains": ["reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local:80", "reviews", "reviews:80"],
             "routes": [{"match": {"prefix": "/"}}, {"match": {"path": "/health"}}]},
            {"name": "allow_any", "domains": ["*"],
             "routes": [{"match": {"prefix": "/api"}, "direct_response": {"status": 404}}]},
        ]})],
    );
    assert_eq!(
        rows,
        [
            row(&["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"]),
            row(&["80", "allow_any", "*", "/api*", "404"]),
            row(&[
                "80",
                "reviews.default.svc.cluster.local:80",
                "reviews.default.svc.cluster.local + 1 more...",
                "/*",
                ""
            ]),
            row(&[
                "80",
                "reviews.default.svc.cluster.local:80",
                "reviews.default.svc.cluster.local + 1 more...",
                "/health",
                ""
            ]),
        ]
    );
}

#[test]
fn endpoints_show_the_health_sent() {
    let rows = table(
        Kind::Endpoints,
        &[
            json!({"cluster_name": "outbound|80||a.default.svc.cluster.local", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 8080}}}},
                {"endpoint": {"address": {"socket_address": {"address": "10.0.0.2", "port_value": 8080}}}, "health_status": "DRAINING"},
            ]}]}),
        ],
    );
    assert_eq!(
        rows[1..],
        [
            row(&[
                "10.0.0.1:8080",
                "HEALTHY",
                "outbound|80||a.default.svc.cluster.local"
            ]),
            row(&[
                "10.0.0.2:8080",
                "DRAINING",
                "outbound|80||a.default.svc.cluster.local"
            ]),
        ]
    );
}

#[test]
fn secrets_show_their_certificate() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["gw.example.com".into()]).unwrap();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0a, 0xbc]));
    params.not_before = rcgen::date_time_ymd(2020, 1, 2);
    params.not_after = rcgen::date_time_ymd(2030, 3, 4);
    let pem = params.self_signed(&key).unwrap().pem();
    let secret = json!({
        "name": "kubernetes://istio-system/gw",
        "tls_certificate": {
            "certificate_chain": {"inline_bytes": crate::base64::encode(pem.as_bytes())},
            "private_key": {"inline_string": REDACTED},
        },
    });
    let rows = table(Kind::Secrets, &[secret]);
    assert_eq!(
        rows[1],
        row(&[
            "kubernetes://istio-system/gw",
            "Cert Chain",
            "ACTIVE",
            "true",
            "0abc",
            "2030-03-04T00:00:00Z",
            "2020-01-02T00:00:00Z",
        ])
    );
}

#[test]
fn config_dump_wraps_bodies_as_envoy_does() {
    let c = config(
        Kind::Listeners,
        &[json!({"name": "0.0.0.0_80", "address": {}})],
    );
    let dump = config_dump(Kind::Listeners, &c);
    assert_eq!(
        dump,
        json!({
            "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "dynamic_listeners": [{"name": "0.0.0.0_80", "active_state": {
                "version_info": "v1",
                "last_updated": "2026-01-01T00:00:00Z",
                "listener": {"name": "0.0.0.0_80", "address": {}},
            }}],
        })
    );
    let clusters = config_dump(Kind::Clusters, &c);
    assert_eq!(
        clusters["dynamic_active_clusters"],
        json!([]),
        "only bodies of the kind"
    );
}

#[test]
fn tables_are_laid_out_like_go_tabwriter() {
    let lines = vec![row(&["NAME", "PORT"]), row(&["a-long-name", "80"])];
    assert_eq!(render(&lines), "NAME            PORT\na-long-name     80\n");
}

#[test]
fn a_real_client_config_converts_to_json_with_bodies() {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
    let cluster = Cluster {
        name: "outbound|80||a.default.svc.cluster.local".into(),
        ..Default::default()
    };
    let cfg = ClientConfig {
        generic_xds_configs: vec![GenericXdsConfig {
            type_url: TypeUrl::Cluster.url().into(),
            name: cluster.name.clone(),
            xds_config: Some(envoy_types::pb::google::protobuf::Any {
                type_url: TypeUrl::Cluster.url().into(),
                value: cluster.encode_to_vec(),
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let json = client_config_json(&cfg).unwrap();
    let rows = rows(Kind::Clusters, &json);
    assert_eq!(rows[1][0], "a.default.svc.cluster.local");
    assert_eq!(
        rows[1][4], "STATIC",
        "a default enum is left out of the JSON"
    );
}

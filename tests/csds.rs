//! CSDS on the plaintext xDS port, over real gRPC: proxies that ACK, NACK and leave a response
//! unanswered, then what `FetchClientStatus`, `StreamClientStatus` and `pilotfish proxy-status`
//! report about them.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    Secret, TlsCertificate, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher};
use envoy_types::pb::google::protobuf::{Any, Struct, Value, value::Kind};
use pilotfish::model::Proxy;
use pilotfish::xds::{
    AckState, Connections, ProxyResources, Resource, RunningServer, Snapshot, TypeUrl,
};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;

#[path = "support/ads.rs"]
mod ads;
use ads::SotwProxy;
const APP: &str = "sidecar~10.0.0.1~app-1.default~default.svc.cluster.local";
const GW: &str = "router~10.0.0.9~gw-1.istio-system~istio-system.svc.cluster.local";
const WAIT: Duration = Duration::from_secs(5);
const NACK_MESSAGE: &str = "Error adding/updating listener(s) l1: no filter chains";
const GW_SECRET: &str = "kubernetes://istio-system/gw-cert";
const PRIVATE_KEY: &str = "-----BEGIN PRIVATE KEY----- not-for-your-eyes";

struct FixedSnapshot(Arc<ProxyResources>);

impl Snapshot for FixedSnapshot {
    fn revision(&self) -> u64 {
        1
    }
    fn resources_for(&self, _proxy: &Proxy) -> Arc<ProxyResources> {
        Arc::clone(&self.0)
    }
}

fn resources() -> Arc<dyn Snapshot> {
    let mut r = ProxyResources::default();
    let one = |res: Resource| {
        vec![(res.name.clone(), Arc::new(res))]
            .into_iter()
            .collect()
    };
    r.set(
        TypeUrl::Cluster,
        one(Resource::encode(
            "c1",
            &Cluster {
                name: "c1".into(),
                ..Default::default()
            },
        )),
    );
    r.set(
        TypeUrl::Listener,
        one(Resource::encode(
            "l1",
            &Listener {
                name: "l1".into(),
                ..Default::default()
            },
        )),
    );
    r.set(
        TypeUrl::RouteConfiguration,
        one(Resource::encode(
            "r1",
            &RouteConfiguration {
                name: "r1".into(),
                ..Default::default()
            },
        )),
    );
    let secret = Secret {
        name: GW_SECRET.into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(DataSource {
                specifier: Some(Specifier::InlineString("chain".into())),
                ..Default::default()
            }),
            private_key: Some(DataSource {
                specifier: Some(Specifier::InlineString(PRIVATE_KEY.into())),
                ..Default::default()
            }),
            ..Default::default()
        })),
    };
    r.set(TypeUrl::Secret, one(Resource::encode(GW_SECRET, &secret)));
    Arc::new(FixedSnapshot(Arc::new(r)))
}

/// The node metadata istio-agent sends, as `proxy-status` reads it back.
/// The app reports istio-agent's CLUSTER_ID and ISTIO_VERSION; the gateway reports none.
fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        metadata: (id == APP).then(|| metadata("Kubernetes", "1.24.0")),
        ..Default::default()
    }
}

fn metadata(cluster: &str, version: &str) -> Struct {
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.into())),
    };
    Struct {
        fields: [
            ("CLUSTER_ID".to_string(), string(cluster)),
            ("ISTIO_VERSION".to_string(), string(version)),
        ]
        .into(),
    }
}

/// A server with two proxies: the app ACKs CDS, NACKs LDS and leaves RDS unanswered; the
/// gateway ACKs CDS and its credential over SDS.
struct World {
    server: RunningServer,
    _publish: watch::Sender<Arc<dyn Snapshot>>,
    _proxies: Vec<SotwProxy>,
}

async fn world() -> World {
    let (publish, snapshots) = watch::channel(resources());
    let connections = Connections::new();
    let server = RunningServer::spawn(
        "127.0.0.1:0".parse().unwrap(),
        snapshots,
        Arc::clone(&connections),
    )
    .await
    .unwrap();
    let mut app = SotwProxy::connect(server.url(), node(APP)).await;
    let cds = app.subscribe(TypeUrl::Cluster, &[]).await;
    app.ack(&cds).await;
    let lds = app.subscribe(TypeUrl::Listener, &[]).await;
    app.nack(&lds, NACK_MESSAGE).await;
    app.subscribe(TypeUrl::RouteConfiguration, &["r1"]).await;
    let mut gw = SotwProxy::connect(server.url(), node(GW)).await;
    let gw_cds = gw.subscribe(TypeUrl::Cluster, &[]).await;
    gw.ack(&gw_cds).await;
    let gw_sds = gw.subscribe(TypeUrl::Secret, &[GW_SECRET]).await;
    gw.ack(&gw_sds).await;
    let settled = connections.wait_for(|c| {
        let state = |id: &str, ty: TypeUrl| {
            c.by_proxy(id)
                .and_then(|i| i.types.get(ty.url()).map(|t| t.state))
        };
        state(APP, TypeUrl::Cluster) == Some(AckState::Acked)
            && state(APP, TypeUrl::Listener) == Some(AckState::Nacked)
            && state(GW, TypeUrl::Cluster) == Some(AckState::Acked)
            && state(GW, TypeUrl::Secret) == Some(AckState::Acked)
    });
    timeout(WAIT, settled)
        .await
        .unwrap_or_else(|_| panic!("proxies never settled: {:#?}", connections.list()));
    World {
        server,
        _publish: publish,
        _proxies: vec![app, gw],
    }
}

async fn csds(
    server: &RunningServer,
) -> ClientStatusDiscoveryServiceClient<tonic::transport::Channel> {
    ClientStatusDiscoveryServiceClient::connect(server.url())
        .await
        .unwrap()
}

fn config_of<'a>(response: &'a ClientStatusResponse, id: &str) -> &'a ClientConfig {
    response
        .config
        .iter()
        .find(|c| c.node.as_ref().is_some_and(|n| n.id == id))
        .unwrap_or_else(|| panic!("{id} missing: {response:#?}"))
}

fn type_of(config: &ClientConfig, ty: TypeUrl) -> &GenericXdsConfig {
    config
        .generic_xds_configs
        .iter()
        .find(|g| g.type_url == ty.url())
        .unwrap_or_else(|| panic!("{ty:?} missing: {config:#?}"))
}

fn prefix(p: &str) -> ClientStatusRequest {
    let id = StringMatcher {
        match_pattern: Some(MatchPattern::Prefix(p.into())),
        ..Default::default()
    };
    ClientStatusRequest {
        node_matchers: vec![NodeMatcher {
            node_id: Some(id),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn fetch_reports_synced_error_and_stale_per_type() {
    let w = world().await;
    let response = csds(&w.server)
        .await
        .fetch_client_status(ClientStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.config.len(), 2);
    let app = config_of(&response, APP);
    let cds = type_of(app, TypeUrl::Cluster);
    assert_eq!(cds.config_status, ConfigStatus::Synced as i32);
    assert!(!cds.version_info.is_empty());
    let lds = type_of(app, TypeUrl::Listener);
    assert_eq!(lds.config_status, ConfigStatus::Error as i32);
    let error = lds.error_state.as_ref().expect("a NACK carries its error");
    assert_eq!(error.details, NACK_MESSAGE);
    assert!(
        !error.version_info.is_empty(),
        "the rejected version is named"
    );
    assert!(lds.last_updated.is_some());
    assert_eq!(
        type_of(app, TypeUrl::RouteConfiguration).config_status,
        ConfigStatus::Stale as i32
    );
    assert_eq!(
        type_of(config_of(&response, GW), TypeUrl::Cluster).config_status,
        ConfigStatus::Synced as i32
    );
    w.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn node_matchers_filter_and_bad_ones_are_invalid_argument() {
    let w = world().await;
    let mut client = csds(&w.server).await;
    let only_gw = client
        .fetch_client_status(prefix("router~"))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = only_gw
        .config
        .iter()
        .map(|c| c.node.as_ref().unwrap().id.as_str())
        .collect();
    assert_eq!(ids, [GW]);
    let meta = ClientStatusRequest {
        node_matchers: vec![NodeMatcher {
            node_metadatas: vec![Default::default()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let err = client.fetch_client_status(meta).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("node_matchers[0].node_metadatas"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn the_stream_answers_every_request() {
    let w = world().await;
    let (tx, rx) = mpsc::channel(4);
    let mut responses = csds(&w.server)
        .await
        .stream_client_status(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(prefix("sidecar~")).await.unwrap();
    let first = timeout(WAIT, responses.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.config.len(), 1);
    assert_eq!(first.config[0].node.as_ref().unwrap().id, APP);
    tx.send(ClientStatusRequest::default()).await.unwrap();
    let second = timeout(WAIT, responses.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.config.len(), 2);
}

/// The binary end to end: `pilotfish proxy-status` against the running server.
#[tokio::test]
async fn proxy_status_prints_the_table_and_json() {
    let w = world().await;
    let address = w.server.addr.to_string();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_pilotfish"))
                .args(args)
                .output()
                .unwrap()
        })
    };
    let out = run(vec![
        "proxy-status".into(),
        "--xds-address".into(),
        address.clone(),
    ])
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        lines[0],
        [
            "NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION"
        ]
    );
    assert_eq!(
        lines[1],
        [
            "app-1.default",
            "Kubernetes",
            "SYNCED",
            "NACKED",
            "STALE",
            address.as_str(),
            "1.24.0"
        ],
        "{table}"
    );
    assert_eq!(
        lines[2],
        ["gw-1.istio-system", "SYNCED", address.as_str()],
        "{table}"
    );

    let out = run(vec![
        "proxy-status".into(),
        "--xds-address".into(),
        address,
        "-o".into(),
        "json".into(),
    ])
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let configs = json["config"].as_array().unwrap();
    let app = configs.iter().find(|c| c["node"]["id"] == APP).unwrap();
    let lds = app["generic_xds_configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["type_url"] == TypeUrl::Listener.url())
        .unwrap();
    assert_eq!(lds["config_status"], "ERROR");
    assert_eq!(lds["error_state"]["details"], NACK_MESSAGE);
}

fn bodies(app: &ClientConfig, ty: TypeUrl) -> Vec<(&str, &Any)> {
    app.generic_xds_configs
        .iter()
        .filter(|g| g.type_url == ty.url())
        .filter_map(|g| g.xds_config.as_ref().map(|b| (g.name.as_str(), b)))
        .collect()
}

#[tokio::test]
async fn bodies_come_per_resource_with_secret_keys_redacted() {
    let w = world().await;
    let mut client = csds(&w.server).await;
    let with_bodies = ClientStatusRequest {
        exclude_resource_contents: false,
        ..Default::default()
    };
    let response = client
        .fetch_client_status(with_bodies)
        .await
        .unwrap()
        .into_inner();
    let app = config_of(&response, APP);
    let clusters = bodies(app, TypeUrl::Cluster);
    assert_eq!(clusters.len(), 1);
    assert_eq!(clusters[0].0, "c1");
    let cluster = Cluster::decode(clusters[0].1.value.as_slice()).unwrap();
    assert_eq!(cluster.name, "c1");
    let listeners = bodies(app, TypeUrl::Listener);
    assert_eq!(
        listeners[0].0, "l1",
        "a NACKed type still lists what it was sent"
    );
    let gw = config_of(&response, GW);
    let secrets = bodies(gw, TypeUrl::Secret);
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].0, GW_SECRET);
    let secret = Secret::decode(secrets[0].1.value.as_slice()).unwrap();
    let Some(secret::Type::TlsCertificate(cert)) = secret.r#type else {
        panic!("not a certificate: {secret:?}");
    };
    assert_eq!(
        cert.private_key.unwrap().specifier,
        Some(Specifier::InlineString(
            pilotfish::xds::csds::REDACTED.into()
        ))
    );
    assert!(cert.certificate_chain.is_some(), "the chain is no secret");
    let encoded = response.encode_to_vec();
    assert!(
        !encoded
            .windows(PRIVATE_KEY.len())
            .any(|w| w == PRIVATE_KEY.as_bytes()),
        "no private key anywhere in the response"
    );

    let cheap = client
        .fetch_client_status(pilotfish::xds::csds::client::status_request())
        .await
        .unwrap()
        .into_inner();
    let app = config_of(&cheap, APP);
    assert!(
        app.generic_xds_configs
            .iter()
            .all(|g| g.xds_config.is_none() && g.name.is_empty())
    );
    assert_eq!(
        type_of(app, TypeUrl::Cluster).config_status,
        ConfigStatus::Synced as i32
    );
}

#[tokio::test]
async fn every_sent_type_has_last_updated_and_the_node_its_metadata() {
    let w = world().await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let response = csds(&w.server)
        .await
        .fetch_client_status(ClientStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let app = config_of(&response, APP);
    for ty in [
        TypeUrl::Cluster,
        TypeUrl::Listener,
        TypeUrl::RouteConfiguration,
    ] {
        let at = type_of(app, ty)
            .last_updated
            .unwrap_or_else(|| panic!("{ty:?} has no last_updated"));
        assert!((at.seconds - before).abs() < 60, "{ty:?} updated at {at:?}");
    }
    let fields = &app.node.as_ref().unwrap().metadata.as_ref().unwrap().fields;
    let get = |k: &str| match fields.get(k).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) => s.clone(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(
        (get("CLUSTER_ID"), get("ISTIO_VERSION")),
        ("Kubernetes".into(), "1.24.0".into())
    );
}

/// istioctl's in-band debug types on the ADS stream, from a node that is no proxy.
#[tokio::test]
async fn debug_types_answer_over_ads() {
    let w = world().await;
    let node = Node {
        id: "debug~0.0.0.0~istioctl~cluster.local".into(),
        ..Default::default()
    };
    let mut istioctl = SotwProxy::connect(w.server.url(), node).await;
    let syncz = istioctl
        .request(DiscoveryRequest {
            type_url: "istio.io/debug/syncz".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(syncz.type_url, "istio.io/debug/syncz");
    let mut ids: Vec<String> = syncz
        .resources
        .iter()
        .map(|a| {
            assert_eq!(
                a.type_url,
                "type.googleapis.com/envoy.service.status.v3.ClientConfig"
            );
            ClientConfig::decode(a.value.as_slice())
                .unwrap()
                .node
                .unwrap()
                .id
        })
        .collect();
    ids.sort();
    assert_eq!(ids, [GW, APP], "the debug client itself is no proxy");
    let dump = istioctl
        .request(DiscoveryRequest {
            type_url: "istio.io/debug/config_dump".into(),
            resource_names: vec![GW.into()],
            ..Default::default()
        })
        .await;
    let types: Vec<&str> = dump.resources.iter().map(|a| a.type_url.as_str()).collect();
    assert!(
        types.contains(&"type.googleapis.com/envoy.admin.v3.SecretsConfigDump"),
        "{types:?}"
    );
    assert!(
        !dump
            .encode_to_vec()
            .windows(PRIVATE_KEY.len())
            .any(|w| w == PRIVATE_KEY.as_bytes())
    );
    assert_eq!(w.server.shutdown().await.ok(), Some(()));
}

/// `pilotfish proxy-config` end to end: CSDS with bodies, as a table and as config_dump JSON.
#[tokio::test]
async fn proxy_config_prints_clusters_and_listeners() {
    let w = world().await;
    let address = w.server.addr.to_string();
    let run = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_pilotfish"))
                .args(args)
                .output()
                .unwrap()
        })
    };
    let out = run(&["proxy-config", "clusters", APP, "--xds-address", &address])
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("SERVICE FQDN"), "{table}");
    assert!(lines[1].starts_with("c1 "), "{table}");
    let out = run(&[
        "proxy-config",
        "listeners",
        APP,
        "--xds-address",
        &address,
        "-o",
        "json",
    ])
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["@type"],
        "type.googleapis.com/envoy.admin.v3.ListenersConfigDump"
    );
    assert_eq!(json["dynamic_listeners"][0]["name"], "l1");
    assert_eq!(
        json["dynamic_listeners"][0]["active_state"]["listener"]["name"],
        "l1"
    );
    let out = run(&[
        "proxy-config",
        "clusters",
        "sidecar~1~nobody.x~x.svc",
        "--xds-address",
        &address,
    ])
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not connected"));
}

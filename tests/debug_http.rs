//! istiod's debug endpoints on the status port of a running `serve`: a directory of config, one
//! ADS client that ACKs its clusters, then each endpoint's JSON; and who may read them.

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::{Struct, Value as ProtoValue, value::Kind as ProtoKind};
use pilotfish::debug::http::access;
use pilotfish::serve::{ConfigSource, Listeners, ServeOptions};
use pilotfish::xds::{AckState, Connections, TypeUrl};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;

const APP: &str = "sidecar~10.1.0.1~web-1.default~default.svc.cluster.local";
const WEB: &str = "web.default.svc.cluster.local";
const WAIT: Duration = Duration::from_secs(10);
/// Stands for key material: it must appear in no debug output.
const KEY: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDebugSecretKey";

fn config() -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec: {{clusterIP: 10.96.0.5, selector: {{app: web}}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web-1, namespace: default, labels: {{app: web}}}}
spec: {{serviceAccountName: web, containers: [{{name: app, image: x}}]}}
status: {{podIP: 10.1.0.1}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web]
  gateways: [missing-gw]
  http: [{{route: [{{destination: {{host: web}}}}]}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: web-cred, namespace: default}}
type: kubernetes.io/tls
stringData:
  tls.crt: CERT
  tls.key: {KEY}
"#
    )
}

fn metadata(fields: &[(&str, &str)]) -> Struct {
    Struct {
        fields: fields
            .iter()
            .map(|(k, v)| {
                let value = ProtoValue {
                    kind: Some(ProtoKind::StringValue(v.to_string())),
                };
                (k.to_string(), value)
            })
            .collect(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    assert!(!body.contains(KEY), "{path} printed key material: {body}");
    (code, body)
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (code, body) = get(addr, path).await;
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

#[tokio::test]
async fn debug_endpoints_show_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), config()).unwrap();
    let xds = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let status = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (xds_addr, status_addr) = (xds.local_addr().unwrap(), status.local_addr().unwrap());
    let connections = Connections::new();
    let options = ServeOptions {
        debounce: Duration::from_millis(10),
        ..ServeOptions::new(ConfigSource::Directory(dir.path().to_path_buf()))
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(pilotfish::serve::serve(
        options,
        Listeners {
            status: Some(status),
            ..Listeners::new(xds)
        },
        connections.clone(),
        async move {
            let _ = stopped.await;
        },
    ));

    // One proxy that ACKs its clusters.
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{xds_addr}"))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: Some(Node {
            id: APP.into(),
            metadata: Some(metadata(&[
                ("ISTIO_VERSION", "1.28.0"),
                ("CLUSTER_ID", "Kubernetes"),
            ])),
            ..Default::default()
        }),
        type_url: TypeUrl::Cluster.url().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let cds = timeout(WAIT, responses.message())
        .await
        .expect("no CDS response")
        .unwrap()
        .unwrap();
    tx.send(DiscoveryRequest {
        type_url: cds.type_url.clone(),
        version_info: cds.version_info.clone(),
        response_nonce: cds.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let acked = connections.wait_for(|c| {
        c.by_proxy(APP)
            .and_then(|i| i.type_status(TypeUrl::Cluster.url()).map(|t| t.state))
            == Some(AckState::Acked)
    });
    timeout(WAIT, acked).await.expect("CDS never ACKed");

    let syncz = get_json(status_addr, "/debug/syncz").await;
    assert_eq!(syncz[0]["proxy"], APP);
    assert_eq!(syncz[0]["proxy_type"], "sidecar");
    assert_eq!(syncz[0]["istio_version"], "1.28.0");
    assert_eq!(syncz[0]["cluster_id"], "Kubernetes");
    assert_eq!(syncz[0]["cluster_sent"], cds.nonce.as_str());
    assert_eq!(syncz[0]["cluster_acked"], cds.nonce.as_str());
    assert!(syncz[0].get("listener_sent").is_none(), "{syncz}");
    let other_ns = get_json(status_addr, "/debug/syncz?namespace=other").await;
    assert_eq!(other_ns, serde_json::json!([]));

    let configz = get_json(status_addr, "/debug/configz").await;
    let kinds: Vec<&str> = configz
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["VirtualService"], "{configz}");
    assert_eq!(configz[0]["apiVersion"], "networking.istio.io/v1");
    assert_eq!(configz[0]["metadata"]["namespace"], "default");
    assert_eq!(configz[0]["spec"]["gateways"][0], "missing-gw");

    let adsz = get_json(status_addr, "/debug/adsz").await;
    assert_eq!(adsz["totalClients"], 1);
    assert_eq!(adsz["clients"][0]["proxy"], APP);
    assert_eq!(adsz["clients"][0]["types"][0]["state"], "acked");

    let registryz = get_json(status_addr, "/debug/registryz").await;
    let web = registryz
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["hostname"] == WEB)
        .unwrap_or_else(|| panic!("{registryz}"));
    assert_eq!(
        web["clusterVIPs"]["Addresses"]["Kubernetes"][0],
        "10.96.0.5"
    );
    assert_eq!(web["ports"][0]["port"], 80);
    assert_eq!(web["Attributes"]["Namespace"], "default");

    let shards = get_json(status_addr, "/debug/endpointShardz").await;
    let endpoints = &shards[WEB]["default"];
    assert_eq!(endpoints[0]["Addresses"][0], "10.1.0.1", "{shards}");
    assert_eq!(endpoints[0]["EndpointPort"], 8080);
    assert_eq!(endpoints[0]["ServiceAccount"], "web");
    assert_eq!(endpoints[0]["Labels"]["app"], "web");

    let dump = get_json(status_addr, &format!("/debug/config_dump?proxyID={APP}")).await;
    let clusters = &dump["configs"][0];
    assert_eq!(
        clusters["@type"],
        "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"
    );
    let names: Vec<&str> = clusters["dynamic_active_clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["cluster"]["name"].as_str())
        .collect();
    assert!(
        names.contains(&"outbound|80||web.default.svc.cluster.local"),
        "{names:?}"
    );
    let (code, body) = get(
        status_addr,
        "/debug/config_dump?proxyID=sidecar~1.2.3.4~x.y~y.svc.cluster.local",
    )
    .await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("not connected"), "{body}");
    let (code, body) = get(status_addr, "/debug/config_dump").await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("proxyID"), "{body}");

    let push = get_json(status_addr, "/debug/push_status").await;
    assert!(
        push["PushVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(push["connectedProxies"], 1);
    assert_eq!(
        push["ProxyStatus"]["pilotfish_config_warning"]["VirtualService default/web spec.gateways[0]"]
            ["message"],
        "gateway default/missing-gw not found",
        "{push}"
    );

    // The open endpoints stay open.
    assert_eq!(get(status_addr, "/ready").await.0, 200);

    let _ = stop.send(());
    drop(tx);
    timeout(WAIT, server).await.unwrap().unwrap().unwrap();
}

#[test]
fn remote_clients_are_refused_unless_the_flag_is_given() {
    let remote: SocketAddr = "10.0.0.7:40000".parse().unwrap();
    let refused = access::check(Some(remote), false).unwrap_err();
    assert!(refused.contains("--debug-remote"), "{refused}");
    assert!(refused.contains("10.0.0.7"), "{refused}");
    assert_eq!(access::check(Some(remote), true), Ok(()));
    let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    assert_eq!(access::check(Some(local), false), Ok(()));
}

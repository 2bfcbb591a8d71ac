//! The world the sidecar generation tests share: a small mesh (Services, Pods, DestinationRules,
//! mesh VirtualServices) served through the real `PushContext`, proxies, and decoders for what
//! they are sent.
#![allow(dead_code)] // each test file uses part of it

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::{Listener, filter::ConfigType};
use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, VirtualHost, route::Action, route_action::ClusterSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use pilotfish::generate::PushContext;
use pilotfish::model::{MeshConfig, Proxy};
use pilotfish::source::watch;
use pilotfish::xds::{ProxyResources, Snapshot, TypeUrl};
use prost::Message;

pub const PLATFORM: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {clusterIP: 10.0.0.31, selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec: {clusterIP: 10.0.0.32, selector: {app: ratings}, ports: [{name: http, port: 9080, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: other}
spec: {clusterIP: 10.0.0.33, selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: mongodb, namespace: default}
spec: {clusterIP: 10.0.0.40, selector: {app: mongodb}, ports: [{name: tcp, port: 27017}]}
---
apiVersion: v1
kind: Service
metadata: {name: legacy-db, namespace: default}
spec: {clusterIP: None, selector: {app: legacy}, ports: [{name: tcp, port: 27017}]}
---
apiVersion: v1
kind: Service
metadata: {name: tcp-echo, namespace: default}
spec: {clusterIP: None, selector: {app: echo}, ports: [{name: tcp, port: 9080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: default, labels: {app: reviews, version: v1}}
spec: {containers: [{name: app, image: x}]}
status: {phase: Running, podIP: 10.1.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: default, labels: {app: reviews, version: v2}}
spec: {containers: [{name: app, image: x}]}
status: {phase: Running, podIP: 10.1.0.6}
---
apiVersion: v1
kind: Pod
metadata: {name: ratings-v1, namespace: default, labels: {app: ratings, version: v1}}
spec: {containers: [{name: app, image: x}]}
status: {phase: Running, podIP: 10.1.0.7}
"#;

pub const ROUTING: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a-gateway-only, namespace: default}
spec:
  hosts: [reviews]
  gateways: [some-gateway]
  http: [{route: [{destination: {host: ratings}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  gateways: [mesh]
  http:
  - match: [{sourceLabels: {app: productpage}}]
    route: [{destination: {host: ratings, subset: v2}}]
  - route: [{destination: {host: ratings, subset: v1}}]
"#;

pub struct World {
    pub context: Arc<PushContext>,
}

pub fn world() -> World {
    world_with("", MeshConfig::default())
}

/// The platform and routing above, plus `extra` YAML, under `mesh`.
pub fn world_with(extra: &str, mesh: MeshConfig) -> World {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("platform.yaml"), PLATFORM).unwrap();
    std::fs::write(tmp.path().join("routing.yaml"), ROUTING).unwrap();
    std::fs::write(tmp.path().join("extra.yaml"), extra).unwrap();
    let (snapshot, diagnostics) = watch::read_once(tmp.path()).unwrap();
    assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:?}");
    World {
        context: pilotfish::push::build(&snapshot, &mesh, None),
    }
}

pub fn proxy(ip: &str, pod: &str, labels: &[(&str, &str)]) -> Proxy {
    Proxy::from_id(&format!(
        "sidecar~{ip}~{pod}.default~default.svc.cluster.local"
    ))
    .unwrap()
    .with_labels(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    )
}

pub fn reviews_proxy() -> Proxy {
    proxy(
        "10.1.0.5",
        "reviews-v1",
        &[("app", "reviews"), ("version", "v1")],
    )
}

/// Everything a sidecar is sent, as the xDS server gets it.
pub fn resources(w: &World, p: &Proxy) -> Arc<ProxyResources> {
    w.context.resources_for(p)
}

pub fn names(r: &ProxyResources, ty: TypeUrl) -> Vec<String> {
    r.get(ty).keys().cloned().collect()
}

pub fn route_config(r: &ProxyResources, name: &str) -> RouteConfiguration {
    r.get(TypeUrl::RouteConfiguration)[name].decode().unwrap()
}

pub fn listener(r: &ProxyResources, name: &str) -> Listener {
    r.get(TypeUrl::Listener)[name].decode().unwrap()
}

pub fn vhost<'a>(rc: &'a RouteConfiguration, name: &str) -> &'a VirtualHost {
    rc.virtual_hosts
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no virtual host {name} in {rc:?}"))
}

pub fn route_clusters(vh: &VirtualHost) -> Vec<String> {
    vh.routes
        .iter()
        .filter_map(|r| match &r.action {
            Some(Action::Route(a)) => match &a.cluster_specifier {
                Some(ClusterSpecifier::Cluster(c)) => Some(c.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

pub fn tcp_proxy_clusters(l: &Listener) -> Vec<String> {
    l.filter_chains
        .iter()
        .flat_map(|c| &c.filters)
        .filter_map(|f| match &f.config_type {
            Some(ConfigType::TypedConfig(any)) if any.type_url.ends_with("TcpProxy") => {
                match TcpProxy::decode(any.value.as_slice())
                    .ok()?
                    .cluster_specifier
                {
                    Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => Some(c),
                    Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => Some(
                        w.clusters
                            .iter()
                            .map(|c| format!("{}*{}", c.name, c.weight))
                            .collect::<Vec<_>>()
                            .join(" "),
                    ),
                    None => None,
                }
            }
            _ => None,
        })
        .collect()
}

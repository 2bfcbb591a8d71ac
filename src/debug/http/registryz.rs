//! `/debug/registryz`: every service of the index in istiod's `model.Service` JSON: the
//! attributes under `Attributes`, `ports`, `clusterVIPs` keyed by the cluster (istiod's default
//! cluster id `Kubernetes`), `Resolution` as istiod's number (0 client-side LB over EDS, 1 DNS,
//! 2 passthrough, 3 DNS round robin), and `hostname`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::Kind;
use crate::index::visibility::ExportTo;
use crate::index::{Resolution, Service};

/// istiod's cluster id when none is configured; its VIP maps are keyed by it.
pub const CLUSTER_ID: &str = "Kubernetes";

pub fn registryz(services: &BTreeMap<String, Arc<Service>>) -> Vec<Value> {
    services.values().map(|s| service(s)).collect()
}

fn service(s: &Service) -> Value {
    let registry = match s.origin.kind {
        Kind::ServiceEntry => "External",
        _ => "Kubernetes",
    };
    let export_to: Vec<&str> = match &s.export_to {
        ExportTo::Public => vec!["*"],
        ExportTo::Namespaces(ns) => ns.iter().map(String::as_str).collect(),
    };
    // Names as the index keeps them (the Kubernetes ServiceAccount), not istiod's SPIFFE URIs.
    let accounts: BTreeSet<&str> = s
        .endpoints
        .iter()
        .map(|e| e.service_account.as_str())
        .filter(|sa| !sa.is_empty())
        .collect();
    json!({
        "Attributes": {
            "ServiceRegistry": registry,
            "Name": s.origin.name,
            "Namespace": s.namespace,
            "ExportTo": export_to,
        },
        "ports": s.ports.iter().map(|p| json!({
            "name": p.name,
            "port": p.port,
            "protocol": p.protocol,
        })).collect::<Vec<_>>(),
        "serviceAccounts": accounts,
        "clusterVIPs": { "Addresses": { CLUSTER_ID: s.addresses } },
        "defaultAddress": s.addresses.first().map_or("0.0.0.0", String::as_str),
        "Resolution": resolution(s.resolution),
        "hostname": s.hostname,
        "MeshExternal": s.mesh_external,
    })
}

/// istiod's `model.Resolution` numbering.
fn resolution(r: Resolution) -> u8 {
    match r {
        Resolution::Eds => 0,
        Resolution::Dns => 1,
        Resolution::Passthrough => 2,
        Resolution::DnsRoundRobin => 3,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::ObjectKey;
    use crate::index::{Endpoint, ServicePort};
    use crate::model::Protocol;

    pub(crate) fn endpoint(address: &str, sa: &str, ready: bool) -> Endpoint {
        Endpoint {
            address: address.into(),
            ports: [(80, 8080)].into_iter().collect(),
            labels: Arc::new(
                [("app".to_string(), "web".to_string())]
                    .into_iter()
                    .collect(),
            ),
            ready,
            locality: "eu/west-1a/".into(),
            weight: 1,
            service_account: sa.into(),
            plaintext_ports: vec![],
        }
    }

    pub(crate) fn services() -> BTreeMap<String, Arc<Service>> {
        let web = Service {
            hostname: "web.shop.svc.cluster.local".into(),
            namespace: "shop".into(),
            origin: ObjectKey {
                kind: Kind::Service,
                namespace: "shop".into(),
                name: "web".into(),
            },
            ports: vec![ServicePort {
                name: "http".into(),
                port: 80,
                protocol: Protocol::Http,
            }],
            resolution: Resolution::Eds,
            addresses: vec!["10.96.0.5".into()],
            mesh_external: false,
            endpoints: vec![
                endpoint("10.1.0.1", "web", true),
                endpoint("10.1.0.2", "web", false),
            ],
            export_to: ExportTo::Public,
        };
        let external = Service {
            hostname: "api.example.com".into(),
            namespace: "shop".into(),
            origin: ObjectKey {
                kind: Kind::ServiceEntry,
                namespace: "shop".into(),
                name: "example".into(),
            },
            ports: vec![],
            resolution: Resolution::Dns,
            addresses: vec![],
            mesh_external: true,
            endpoints: vec![],
            export_to: ExportTo::Namespaces(["shop".to_string()].into_iter().collect()),
        };
        [web, external]
            .into_iter()
            .map(|s| (s.hostname.clone(), Arc::new(s)))
            .collect()
    }

    #[test]
    fn services_in_istiods_shape() {
        let all = registryz(&services());
        assert_eq!(all.len(), 2);
        let external = &all[0];
        assert_eq!(external["hostname"], "api.example.com");
        assert_eq!(external["Attributes"]["ServiceRegistry"], "External");
        assert_eq!(external["Attributes"]["ExportTo"], json!(["shop"]));
        assert_eq!(external["Resolution"], 1);
        assert_eq!(external["MeshExternal"], true);
        assert_eq!(external["defaultAddress"], "0.0.0.0");

        let web = &all[1];
        assert_eq!(web["Attributes"]["Name"], "web");
        assert_eq!(web["Attributes"]["Namespace"], "shop");
        assert_eq!(web["Attributes"]["ServiceRegistry"], "Kubernetes");
        assert_eq!(
            web["ports"],
            json!([{"name": "http", "port": 80, "protocol": "HTTP"}])
        );
        assert_eq!(
            web["clusterVIPs"]["Addresses"]["Kubernetes"],
            json!(["10.96.0.5"])
        );
        assert_eq!(web["defaultAddress"], "10.96.0.5");
        assert_eq!(web["serviceAccounts"], json!(["web"]));
        assert_eq!(web["Resolution"], 0);
    }
}

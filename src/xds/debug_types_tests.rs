use std::sync::Arc;

use envoy_types::pb::envoy::admin::v3::{ClustersConfigDump, SecretsConfigDump};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    Secret, TlsCertificate, secret,
};

use super::*;
use crate::model::Proxy;
use crate::xds::connection::{AckState, TypeStatus, Variant};
use crate::xds::{ProxyResources, ResourceMap};

const APP: &str = "sidecar~10.0.0.1~app-1.default~default.svc.cluster.local";
const GW: &str = "router~10.0.0.9~gw-1.istio-system~istio-system.svc.cluster.local";

struct Fixed(Arc<ProxyResources>);

impl Snapshot for Fixed {
    fn revision(&self) -> u64 {
        1
    }
    fn resources_for(&self, _proxy: &Proxy) -> Arc<ProxyResources> {
        Arc::clone(&self.0)
    }
}

fn map(resource: Resource) -> ResourceMap {
    [(resource.name.clone(), Arc::new(resource))]
        .into_iter()
        .collect()
}

fn snapshot() -> Fixed {
    let mut r = ProxyResources::default();
    let cluster = Cluster {
        name: "c1".into(),
        ..Default::default()
    };
    r.set(TypeUrl::Cluster, map(Resource::encode("c1", &cluster)));
    let secret = Secret {
        name: "kubernetes://istio-system/gw".into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            private_key: Some(DataSource {
                specifier: Some(Specifier::InlineString("SECRET-KEY".into())),
                ..Default::default()
            }),
            ..Default::default()
        })),
    };
    r.set(
        TypeUrl::Secret,
        map(Resource::encode(secret.name.clone(), &secret)),
    );
    Fixed(Arc::new(r))
}

fn synced(ty: TypeUrl) -> (String, TypeStatus) {
    let status = TypeStatus {
        type_url: ty.url().into(),
        state: AckState::Acked,
        acked_version: Some("v1".into()),
        ..Default::default()
    };
    (ty.url().to_string(), status)
}

fn request(type_url: &str, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

fn connections() -> (Arc<Connections>, Vec<impl Sized>) {
    let conns = Connections::new();
    let regs: Vec<_> = [APP, GW]
        .into_iter()
        .map(|id| {
            let reg = conns.register(Arc::new(Proxy::from_id(id).unwrap()), None, Variant::Sotw);
            reg.update([synced(TypeUrl::Cluster), synced(TypeUrl::Secret)].into());
            reg
        })
        .collect();
    (conns, regs)
}

#[test]
fn syncz_lists_a_client_config_per_proxy_in_scope() {
    let (conns, _regs) = connections();
    let snap = snapshot();
    let ask = |scope| {
        respond(&request(SYNCZ, &[]), &conns, &snap, scope, "n".into())
            .unwrap()
            .unwrap()
    };
    let all = ask(Scope::All);
    assert_eq!((all.type_url.as_str(), all.nonce.as_str()), (SYNCZ, "n"));
    let names: Vec<&str> = all.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, [APP, GW]);
    let any = Any::decode(all.resources[0].any.as_ref()).unwrap();
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.service.status.v3.ClientConfig"
    );
    let config = ClientConfig::decode(any.value.as_slice()).unwrap();
    assert_eq!(config.node.unwrap().id, APP);
    assert!(
        config
            .generic_xds_configs
            .iter()
            .all(|g| g.xds_config.is_none()),
        "no bodies"
    );
    let mine = ask(Scope::Namespace("istio-system"));
    let names: Vec<&str> = mine.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, [GW]);
}

#[test]
fn config_dump_answers_the_sections_of_one_proxy_without_keys() {
    let (conns, _regs) = connections();
    let snap = snapshot();
    let response = respond(
        &request(CONFIG_DUMP, &[APP]),
        &conns,
        &snap,
        Scope::All,
        "n".into(),
    )
    .unwrap()
    .unwrap();
    let sections: Vec<Any> = response
        .resources
        .iter()
        .map(|r| Any::decode(r.any.as_ref()).unwrap())
        .collect();
    let types: Vec<&str> = sections
        .iter()
        .map(|a| a.type_url.rsplit('.').next().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "ClustersConfigDump",
            "ListenersConfigDump",
            "RoutesConfigDump",
            "EndpointsConfigDump",
            "SecretsConfigDump"
        ]
    );
    let clusters = ClustersConfigDump::decode(sections[0].value.as_slice()).unwrap();
    assert_eq!(clusters.dynamic_active_clusters.len(), 1);
    assert_eq!(clusters.dynamic_active_clusters[0].version_info, "v1");
    let secrets = SecretsConfigDump::decode(sections[4].value.as_slice()).unwrap();
    assert_eq!(
        secrets.dynamic_active_secrets[0].name,
        "kubernetes://istio-system/gw"
    );
    assert!(
        !response
            .resources
            .iter()
            .any(|r| r.any.windows(10).any(|w| w == b"SECRET-KEY")),
        "private keys never leave"
    );
}

#[test]
fn config_dump_needs_one_connected_proxy_in_scope() {
    let (conns, _regs) = connections();
    let snap = snapshot();
    let ask = |names: &[&str], scope| {
        respond(
            &request(CONFIG_DUMP, names),
            &conns,
            &snap,
            scope,
            "n".into(),
        )
        .unwrap()
    };
    assert!(matches!(
        ask(&[], Scope::All),
        Err(DebugTypeError::ProxyIds(0))
    ));
    assert!(matches!(
        ask(&[APP, GW], Scope::All),
        Err(DebugTypeError::ProxyIds(2))
    ));
    assert!(matches!(
        ask(&["sidecar~1~x.y~y.svc"], Scope::All),
        Err(DebugTypeError::UnknownProxy(_))
    ));
    assert!(
        matches!(
            ask(&[APP], Scope::Namespace("istio-system")),
            Err(DebugTypeError::UnknownProxy(_))
        ),
        "another namespace's proxy is as good as unknown"
    );
}

#[test]
fn an_ack_of_a_debug_response_gets_no_answer() {
    let (conns, _regs) = connections();
    let mut ack = request(SYNCZ, &[]);
    ack.response_nonce = "debug-1".into();
    assert!(respond(&ack, &conns, &snapshot(), Scope::All, "n".into()).is_none());
    assert!(is_debug(SYNCZ) && is_debug(CONFIG_DUMP) && !is_debug(TypeUrl::Cluster.url()));
}

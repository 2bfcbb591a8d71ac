//! Protocol decisions tested without gRPC: requests go straight into the SotW and delta
//! handlers, and the tests assert on the responses they produce.

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::rpc::Status as RpcStatus;

use super::delta::Delta;
use super::resource::version_of;
use super::sotw::Sotw;
use super::stream::Protocol;
use super::{AckState, DeltaResponse, ProxyResources, Resource, SotwResponse, TypeUrl};

pub(super) const CDS: TypeUrl = TypeUrl::Cluster;
pub(super) const EDS: TypeUrl = TypeUrl::ClusterLoadAssignment;
pub(super) const RDS: TypeUrl = TypeUrl::RouteConfiguration;

/// A cluster whose content varies with `alt`.
pub(super) fn cluster(name: &str, alt: &str) -> Arc<Resource> {
    let c = Cluster {
        name: name.into(),
        alt_stat_name: alt.into(),
        ..Default::default()
    };
    Arc::new(Resource::encode(name, &c))
}

pub(super) fn cla(name: &str, localities: usize) -> Arc<Resource> {
    let c = ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![Default::default(); localities],
        ..Default::default()
    };
    Arc::new(Resource::encode(name, &c))
}

pub(super) fn route(name: &str, vhosts: usize) -> Arc<Resource> {
    let r = RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![Default::default(); vhosts],
        ..Default::default()
    };
    Arc::new(Resource::encode(name, &r))
}

pub(super) fn proxy_resources(by_type: &[(TypeUrl, Vec<Arc<Resource>>)]) -> ProxyResources {
    let mut res = ProxyResources::default();
    for (ty, list) in by_type {
        res.set(
            *ty,
            list.iter()
                .map(|r| (r.name.clone(), Arc::clone(r)))
                .collect(),
        );
    }
    res
}

pub(super) fn req(ty: TypeUrl, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: ty.url().into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

pub(super) fn sotw() -> Sotw {
    Sotw::new(
        "sidecar~10.0.0.1~a.default~default.svc.cluster.local".into(),
        1,
        "test".into(),
    )
}

pub(super) fn delta() -> Delta {
    Delta::new(
        "sidecar~10.0.0.1~a.default~default.svc.cluster.local".into(),
        1,
        "test".into(),
    )
}

pub(super) fn names(r: &SotwResponse) -> Vec<&str> {
    r.resources.iter().map(|r| r.name.as_str()).collect()
}

pub(super) fn on_request<P: Protocol>(
    p: &mut P,
    r: P::Request,
    res: &ProxyResources,
) -> Vec<P::Response> {
    let mut out = Vec::new();
    p.on_request(r, res, &mut out);
    out
}

pub(super) fn on_push<P: Protocol>(
    p: &mut P,
    prev: &ProxyResources,
    res: &ProxyResources,
) -> Vec<P::Response> {
    let mut out = Vec::new();
    p.on_push(prev, res, &TypeUrl::ALL, &mut out);
    out
}

#[test]
fn sotw_wildcard_cds_then_ack_then_nack_is_not_resent() {
    let (a, b) = (cluster("a", "1"), cluster("b", "1"));
    let res = proxy_resources(&[(CDS, vec![a.clone(), b.clone()]), (EDS, vec![cla("a", 1)])]);
    let mut s = sotw();
    let out = on_request(&mut s, req(CDS, &[], "", ""), &res);
    assert_eq!(out.len(), 1);
    assert_eq!(names(&out[0]), ["a", "b"]);
    assert_eq!(out[0].version_info, version_of([&a, &b]));
    let (v1, n1) = (out[0].version_info.clone(), out[0].nonce.clone());

    assert!(
        on_request(&mut s, req(CDS, &[], &v1, &n1), &res).is_empty(),
        "an ACK gets no answer"
    );
    assert_eq!(s.status()[CDS.url()].state, AckState::Acked);
    assert_eq!(
        s.status()[CDS.url()].acked_version.as_deref(),
        Some(v1.as_str())
    );

    // A change to a, rejected.
    let res2 = proxy_resources(&[
        (CDS, vec![cluster("a", "2"), b.clone()]),
        (EDS, vec![cla("a", 1)]),
    ]);
    let out = on_push(&mut s, &res, &res2);
    assert_eq!(out.len(), 1);
    let (v2, n2) = (out[0].version_info.clone(), out[0].nonce.clone());
    let mut nack = req(CDS, &[], &v1, &n2);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "bad cluster a".into(),
        details: vec![],
    });
    assert!(
        on_request(&mut s, nack, &res2).is_empty(),
        "a NACK is not answered with the same config"
    );
    let st = &s.status()[CDS.url()];
    assert_eq!(st.state, AckState::Nacked);
    let last = st.last_nack.as_ref().unwrap();
    assert_eq!(
        (last.version.as_str(), last.error.as_str()),
        (v2.as_str(), "bad cluster a")
    );
    assert_eq!(last.resources, ["a", "b"]);

    // An unrelated snapshot (EDS changed) does not resend the rejected clusters.
    let res3 = proxy_resources(&[
        (CDS, vec![cluster("a", "2"), b.clone()]),
        (EDS, vec![cla("a", 2)]),
    ]);
    assert!(
        on_push(&mut s, &res2, &res3).is_empty(),
        "EDS is not subscribed, CDS unchanged"
    );
    // A fixed cluster goes out.
    let res4 = proxy_resources(&[(CDS, vec![cluster("a", "3"), b]), (EDS, vec![cla("a", 2)])]);
    assert_eq!(on_push(&mut s, &res3, &res4).len(), 1);
}

#[test]
fn sotw_eds_carries_only_subscribed_and_changed_names() {
    let res = proxy_resources(&[(EDS, vec![cla("a", 1), cla("b", 1), cla("c", 1)])]);
    let mut s = sotw();
    let out = on_request(&mut s, req(EDS, &["a", "b"], "", ""), &res);
    assert_eq!(names(&out[0]), ["a", "b"]);
    let n1 = out[0].nonce.clone();
    on_request(
        &mut s,
        req(EDS, &["a", "b"], &out[0].version_info, &n1),
        &res,
    );

    let res2 = proxy_resources(&[(EDS, vec![cla("a", 1), cla("b", 1), cla("c", 2)])]);
    assert!(
        on_push(&mut s, &res, &res2).is_empty(),
        "only an unsubscribed name changed"
    );
    let res3 = proxy_resources(&[(EDS, vec![cla("a", 1), cla("b", 3), cla("c", 2)])]);
    let out = on_push(&mut s, &res2, &res3);
    assert_eq!(names(&out[0]), ["b"]);
    assert_eq!(
        out[0].version_info,
        version_of([&cla("a", 1), &cla("b", 3)])
    );

    // Growing the subscription answers with what is asked; shrinking it does not.
    let n = out[0].nonce.clone();
    let out = on_request(&mut s, req(EDS, &["a", "b", "c"], "", &n), &res3);
    assert_eq!(names(&out[0]), ["a", "b", "c"]);
    let n = out[0].nonce.clone();
    assert!(on_request(&mut s, req(EDS, &["a"], "", &n), &res3).is_empty());
    assert_eq!(
        s.status()[EDS.url()].resources,
        1,
        "dropped names are forgotten"
    );
}

#[test]
fn sotw_stale_nonce_is_ignored() {
    let res = proxy_resources(&[(RDS, vec![route("r", 1)])]);
    let mut s = sotw();
    let n1 = on_request(&mut s, req(RDS, &["r"], "", ""), &res)[0]
        .nonce
        .clone();
    let res2 = proxy_resources(&[(RDS, vec![route("r", 2)])]);
    let n2 = on_push(&mut s, &res, &res2)[0].nonce.clone();
    assert_ne!(n1, n2);
    // The ACK of the first response, which also asks for a new name: ignored entirely.
    assert!(on_request(&mut s, req(RDS, &["r", "x"], "v", &n1), &res2).is_empty());
    let st = &s.status()[RDS.url()];
    assert_eq!((st.stale, st.acks, st.state), (1, 0, AckState::Pending));
    assert_eq!(st.subscription.names, 1, "x was not subscribed");
}

#[test]
fn sotw_unknown_type_gets_one_empty_response() {
    let mut s = sotw();
    let url = "type.googleapis.com/envoy.service.runtime.v3.Runtime";
    let r = DiscoveryRequest {
        type_url: url.into(),
        resource_names: vec!["rt".into()],
        ..Default::default()
    };
    let out = on_request(&mut s, r.clone(), &ProxyResources::default());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].type_url, url);
    assert!(out[0].resources.is_empty());
    let ack = DiscoveryRequest {
        response_nonce: out[0].nonce.clone(),
        ..r
    };
    assert!(on_request(&mut s, ack, &ProxyResources::default()).is_empty());
}

pub(super) fn dreq(
    ty: TypeUrl,
    sub: &[&str],
    unsub: &[&str],
    nonce: &str,
) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: ty.url().into(),
        resource_names_subscribe: sub.iter().map(|n| n.to_string()).collect(),
        resource_names_unsubscribe: unsub.iter().map(|n| n.to_string()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

pub(super) fn dnames(r: &DeltaResponse) -> Vec<&str> {
    r.resources.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn delta_sends_changes_and_removals_only() {
    let res = proxy_resources(&[(CDS, vec![cluster("a", "1"), cluster("b", "1")])]);
    let mut d = delta();
    let out = on_request(&mut d, dreq(CDS, &[], &[], ""), &res);
    assert_eq!(dnames(&out[0]), ["a", "b"]);
    assert!(on_request(&mut d, dreq(CDS, &[], &[], &out[0].nonce), &res).is_empty());
    assert_eq!(d.status()[CDS.url()].state, AckState::Acked);

    let res2 = proxy_resources(&[(CDS, vec![cluster("a", "2")])]);
    let out = on_push(&mut d, &res, &res2);
    assert_eq!(dnames(&out[0]), ["a"]);
    assert_eq!(out[0].removed_resources, ["b"]);
    assert!(
        on_push(
            &mut d,
            &res2,
            &proxy_resources(&[(CDS, vec![cluster("a", "2")])])
        )
        .is_empty()
    );
}

#[test]
fn delta_initial_versions_suppress_resends_and_report_gone() {
    let (a, b) = (cluster("a", "1"), cluster("b", "1"));
    let res = proxy_resources(&[(CDS, vec![a.clone(), b.clone()])]);
    let mut d = delta();
    let mut r = dreq(CDS, &["*"], &[], "");
    r.initial_resource_versions = [
        ("a".to_string(), a.version()),
        ("b".to_string(), "stale".to_string()),
        ("gone".to_string(), "0123456789abcdef".to_string()),
    ]
    .into_iter()
    .collect();
    let out = on_request(&mut d, r, &res);
    assert_eq!(dnames(&out[0]), ["b"], "a is held at its current version");
    assert_eq!(out[0].removed_resources, ["gone"]);
}

#[test]
fn delta_named_subscriptions() {
    let res = proxy_resources(&[(EDS, vec![cla("a", 1), cla("b", 1)])]);
    let mut d = delta();
    let out = on_request(&mut d, dreq(EDS, &["a", "missing"], &[], ""), &res);
    assert_eq!(dnames(&out[0]), ["a"]);
    assert_eq!(
        out[0].removed_resources,
        ["missing"],
        "absence is reported, not waited on"
    );
    let n = out[0].nonce.clone();
    // Subscribe b while ACKing.
    let out = on_request(&mut d, dreq(EDS, &["b"], &[], &n), &res);
    assert_eq!(dnames(&out[0]), ["b"]);
    // Unsubscribe a, then a change to a is not sent; resubscribing sends it again.
    let n = out[0].nonce.clone();
    assert!(on_request(&mut d, dreq(EDS, &[], &["a"], &n), &res).is_empty());
    let res2 = proxy_resources(&[(EDS, vec![cla("a", 2), cla("b", 1)])]);
    assert!(on_push(&mut d, &res, &res2).is_empty());
    let out = on_request(&mut d, dreq(EDS, &["a"], &[], ""), &res2);
    assert_eq!(dnames(&out[0]), ["a"]);
}

#[test]
fn delta_stale_nonce_keeps_subscription_changes() {
    let res = proxy_resources(&[(RDS, vec![route("r", 1), route("s", 1)])]);
    let mut d = delta();
    let n1 = on_request(&mut d, dreq(RDS, &["r"], &[], ""), &res)[0]
        .nonce
        .clone();
    let res2 = proxy_resources(&[(RDS, vec![route("r", 2), route("s", 1)])]);
    assert_eq!(on_push(&mut d, &res, &res2).len(), 1);
    let out = on_request(&mut d, dreq(RDS, &["s"], &[], &n1), &res2);
    assert_eq!(dnames(&out[0]), ["s"]);
    let st = &d.status()[RDS.url()];
    assert_eq!((st.stale, st.acks), (1, 0));
}

#[test]
fn delta_nack_is_not_resent() {
    let res = proxy_resources(&[(CDS, vec![cluster("a", "1")])]);
    let mut d = delta();
    let n = on_request(&mut d, dreq(CDS, &[], &[], ""), &res)[0]
        .nonce
        .clone();
    let mut nack = dreq(CDS, &[], &[], &n);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "no".into(),
        details: vec![],
    });
    assert!(on_request(&mut d, nack, &res).is_empty());
    let res2 = proxy_resources(&[(CDS, vec![cluster("a", "1")]), (EDS, vec![cla("x", 1)])]);
    assert!(on_push(&mut d, &res, &res2).is_empty());
    let st = &d.status()[CDS.url()];
    assert_eq!(st.last_nack.as_ref().map(|n| n.error.as_str()), Some("no"));
}

//! `Index::build_after` must give what `Index::build` gives, for every kind of change; an
//! endpoint-only change must also keep the `Arc` of every service it did not touch.

use std::sync::Arc;

use super::Index;
use crate::config::parse::parse_text;
use crate::config::{Kind, ObjectKey};
use crate::model::MeshConfig;
use crate::store::{Change, Entry, Snapshot, Store};

pub(crate) const BASE: &str = "
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {clusterIP: 10.0.0.1, selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: reviews-abc, namespace: shop, labels: {kubernetes.io/service-name: reviews}}
addressType: IPv4
ports: [{name: http, port: 9080}]
endpoints:
- addresses: [10.1.0.1]
  conditions: {ready: true}
  targetRef: {kind: Pod, name: reviews-1, namespace: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-1, namespace: shop, labels: {app: reviews, version: v1}}
spec: {serviceAccountName: reviews, containers: [{name: app, image: x}]}
status: {podIP: 10.1.0.1}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: shop}
spec: {clusterIP: 10.0.0.2, selector: {app: ratings}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: ratings-1, namespace: shop, labels: {app: ratings}}
spec: {containers: [{name: app, image: x}]}
status: {podIP: 10.1.0.2}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: shop}
spec:
  hosts: [legacy.shop.internal]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: legacy}}
---
apiVersion: v1
kind: Pod
metadata: {name: legacy-1, namespace: shop, labels: {app: legacy}}
spec: {containers: [{name: app, image: x}]}
status: {podIP: 10.1.0.3}
---
apiVersion: v1
kind: Service
metadata: {name: details, namespace: books}
spec: {clusterIP: 10.0.0.4, selector: {app: details}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: details-1, namespace: books, labels: {app: details}}
spec: {containers: [{name: app, image: x}]}
status: {podIP: 10.1.0.4}
";

fn entries(yaml: &str) -> Vec<Entry> {
    parse_text("test.yaml", yaml)
        .unwrap()
        .objects
        .into_iter()
        .map(Entry::from_file)
        .collect()
}

fn key(kind: Kind, namespace: &str, name: &str) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// The snapshot of BASE, and the one after `upsert` and `delete`, from one store (so kinds
/// that did not change are shared, as in `serve`).
pub(crate) fn revisions(upsert: &str, delete: &[ObjectKey]) -> (Arc<Snapshot>, Arc<Snapshot>) {
    let mut store = Store::new();
    for entry in entries(BASE) {
        store.apply(Change::Upsert(entry));
    }
    store.publish();
    let before = store.snapshot();
    for entry in entries(upsert) {
        store.apply(Change::Upsert(entry));
    }
    for key in delete {
        store.apply(Change::Delete(key.clone()));
    }
    store.publish();
    (before, store.snapshot())
}

/// Builds the second revision both ways, checks they agree, and returns (previous, updated).
fn both_ways(upsert: &str, delete: &[ObjectKey]) -> (Index, Index) {
    let (before, after) = revisions(upsert, delete);
    let mesh = MeshConfig::default();
    let previous = Index::build(&before, &mesh);
    let updated = Index::build_after(&after, &mesh, &previous);
    let full = Index::build(&after, &mesh);
    assert_eq!(updated.services, full.services);
    assert_eq!(
        updated.services_by_ip.to_map(),
        full.services_by_ip.to_map()
    );
    assert_eq!(updated.diagnostics, full.diagnostics);
    assert_eq!(updated.revision, full.revision);
    (previous, updated)
}

fn kept(previous: &Index, updated: &Index, host: &str) -> bool {
    Arc::ptr_eq(&previous.services[host], &updated.services[host])
}

const REVIEWS: &str = "reviews.shop.svc.cluster.local";
const RATINGS: &str = "ratings.shop.svc.cluster.local";
const DETAILS: &str = "details.books.svc.cluster.local";
const LEGACY: &str = "legacy.shop.internal";

#[test]
fn a_slice_change_rebuilds_its_service_only() {
    let grown = BASE.split("---").nth(1).unwrap().replace(
        "endpoints:\n",
        "endpoints:\n- addresses: [10.1.0.9]\n  conditions: {ready: true}\n",
    );
    let (previous, updated) = both_ways(&grown, &[]);
    assert_eq!(updated.services[REVIEWS].endpoints.len(), 2);
    assert!(!kept(&previous, &updated, REVIEWS));
    for host in [RATINGS, DETAILS, LEGACY] {
        assert!(kept(&previous, &updated, host), "{host}");
    }
    assert_eq!(updated.services_by_ip.get("10.1.0.9").len(), 1);
}

#[test]
fn a_pod_named_by_a_slice_passes_on_its_labels() {
    let relabelled = BASE
        .split("---")
        .nth(2)
        .unwrap()
        .replace("version: v1", "version: v2");
    let (previous, updated) = both_ways(&relabelled, &[]);
    assert_eq!(
        updated.services[REVIEWS].endpoints[0]
            .labels
            .get("version")
            .map(String::as_str),
        Some("v2")
    );
    assert!(kept(&previous, &updated, RATINGS));
}

#[test]
fn pods_selected_without_slices_and_by_service_entries() {
    let added = "
apiVersion: v1
kind: Pod
metadata: {name: ratings-2, namespace: shop, labels: {app: ratings}}
spec: {containers: [{name: app, image: x}]}
status: {podIP: 10.1.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: legacy-1, namespace: shop, labels: {app: legacy}}
spec: {containers: [{name: app, image: x}]}
status: {podIP: 10.1.0.6}
";
    let (previous, updated) = both_ways(added, &[key(Kind::Pod, "books", "details-1")]);
    assert_eq!(updated.services[RATINGS].endpoints.len(), 2);
    assert_eq!(updated.services[LEGACY].endpoints[0].address, "10.1.0.6");
    assert!(updated.services[DETAILS].endpoints.is_empty());
    assert!(
        updated.services_by_ip.get("10.1.0.3").is_empty()
            && updated.services_by_ip.get("10.1.0.4").is_empty()
    );
    assert!(kept(&previous, &updated, REVIEWS));
}

#[test]
fn a_deleted_slice_falls_back_to_the_selector() {
    let (_, updated) = both_ways("", &[key(Kind::EndpointSlice, "shop", "reviews-abc")]);
    assert_eq!(
        updated.services[REVIEWS].endpoints.len(),
        1,
        "reviews-1 is still selected"
    );
}

#[test]
fn other_changes_build_everything() {
    let moved = BASE
        .split("---")
        .nth(3)
        .unwrap()
        .replace("10.0.0.2", "10.0.0.9");
    let (previous, updated) = both_ways(&moved, &[]);
    assert_eq!(updated.services[RATINGS].addresses, ["10.0.0.9"]);
    assert!(
        !kept(&previous, &updated, DETAILS),
        "a Service change is not an endpoint change"
    );
}

//! The cluster the benchmark lists: M Services over K namespaces (contiguous blocks), each with
//! a Deployment of R Pods and the EndpointSlice the endpoint controller would write for them,
//! V VirtualServices (with a DestinationRule each) routing to subsets and to a second host, and
//! optionally a Sidecar per namespace. Objects are shaped as a real cluster serves them
//! (ReplicaSet owners, istio-injected labels, conditions), without `managedFields`.
//!
//! Simulated sidecar `c` is replica 0 of one Service's Deployment, spread evenly over the
//! Services, so over the namespaces too.

use anyhow::{Result, bail};
use envoy_types::pb::envoy::config::core::v3::Node;
use serde_json::{Value, json};

use super::fake_apiserver::{FakeApiServer, ISTIO_NETWORKING};
use super::fixture;

const HTTP_PORT: u16 = 9080;
/// The Istio CRDs a cluster with Istio installed serves beside `ISTIO_NETWORKING` (pilotfish
/// watches all of them).
const SECURITY: [(&str, &str); 3] = [
    ("PeerAuthentication", "peerauthentications"),
    ("AuthorizationPolicy", "authorizationpolicies"),
    ("RequestAuthentication", "requestauthentications"),
];

/// Pod uids of the scaled-up Pods start here, above any initial Pod's number.
const SCALED_UIDS: usize = 1 << 40;

#[derive(Debug, Clone)]
pub struct Shape {
    pub services: usize,
    pub namespaces: usize,
    /// Pods (and endpoints) per Service.
    pub replicas: usize,
    pub virtual_services: usize,
    pub clients: usize,
    /// A Sidecar `default` per namespace (egress `./*`, `istio-system/*`).
    pub scoped: bool,
}

/// What was written to the fake.
#[derive(Debug, Default)]
pub struct Populated {
    pub objects: usize,
    pub pods: usize,
    pub endpoints: usize,
    /// JSON bytes of one Pod and one EndpointSlice as stored (a size reference for the lists).
    pub pod_bytes: usize,
    pub slice_bytes: usize,
}

impl Shape {
    pub fn check(&self) -> Result<()> {
        if self.services == 0 || self.namespaces == 0 || self.replicas == 0 || self.clients == 0 {
            bail!("--services, --namespaces, --replicas and --clients must be positive");
        }
        if self.namespaces > self.services || self.clients > self.services {
            bail!("need at least as many Services as namespaces and clients");
        }
        if self.virtual_services > self.services {
            bail!("--virtual-services may not exceed --services (one per routed Service)");
        }
        if self.services * self.replicas >= 250 * 65536 {
            bail!("too many Pods for the 10.1.0.0–10.250.255.255 Pod range");
        }
        Ok(())
    }

    pub fn namespace_of(&self, service: usize) -> usize {
        service * self.namespaces / self.services
    }

    /// Whether Service `i` has a VirtualService and a DestinationRule: V of the M, evenly spread.
    pub fn is_routed(&self, service: usize) -> bool {
        self.virtual_services > 0
            && (service * self.virtual_services) % self.services < self.virtual_services
    }

    /// The Service whose replica 0 is client `c`.
    pub fn service_of_client(&self, client: usize) -> usize {
        client * self.services / self.clients
    }

    /// Whether client `c` sees Service `s` (and so must be pushed its endpoint changes).
    pub fn sees(&self, client: usize, service: usize) -> bool {
        !self.scoped
            || self.namespace_of(self.service_of_client(client)) == self.namespace_of(service)
    }

    /// The Service whose endpoints change `k` adds to: spread over the namespaces, never a
    /// routed one (whose subsets would change too, so more than one assignment per proxy).
    pub fn changed_service(&self, k: usize) -> usize {
        let mut s = (k * 7919) % self.services;
        while self.is_routed(s) {
            s = (s + 1) % self.services;
        }
        s
    }

    pub fn host(&self, service: usize) -> String {
        format!(
            "svc-{service}.ns-{}.svc.cluster.local",
            self.namespace_of(service)
        )
    }

    pub fn eds_cluster(&self, service: usize) -> String {
        format!("outbound|{HTTP_PORT}||{}", self.host(service))
    }

    /// Installs the Istio CRDs and writes every object.
    pub fn populate(&self, fake: &FakeApiServer) -> Result<Populated> {
        for (kind, plural) in ISTIO_NETWORKING {
            fake.install_crd(
                "networking.istio.io",
                &["v1", "v1beta1", "v1alpha3"],
                kind,
                plural,
                true,
            );
        }
        for (kind, plural) in SECURITY {
            fake.install_crd("security.istio.io", &["v1", "v1beta1"], kind, plural, true);
        }
        fake.install_crd(
            "telemetry.istio.io",
            &["v1", "v1alpha1"],
            "Telemetry",
            "telemetries",
            true,
        );

        let mut out = Populated::default();
        let mut apply = |object: Value| -> Result<()> {
            fake.apply(object)
                .map_err(|e| anyhow::anyhow!("populating the fake API server: {e:?}"))?;
            out.objects += 1;
            Ok(())
        };
        apply(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}),
        )?;
        for ns in 0..self.namespaces {
            apply(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": format!("ns-{ns}"), "labels": {"istio-injection": "enabled"}}}))?;
            if self.scoped {
                apply(
                    json!({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
                    "metadata": {"name": "default", "namespace": format!("ns-{ns}")},
                    "spec": {"egress": [{"hosts": ["./*", "istio-system/*"]}]}}),
                )?;
            }
        }
        for s in 0..self.services {
            apply(self.service(s))?;
            for r in 0..self.replicas {
                let n = s * self.replicas + r;
                apply(self.pod(s, n, &pod_name(s, r), &pod_ip(n), version(r, self.replicas)))?;
            }
            apply(self.endpoint_slice(s, None))?;
            out.pods += self.replicas;
            out.endpoints += self.replicas;
            if self.is_routed(s) {
                apply(self.virtual_service(s))?;
                apply(self.destination_rule(s))?;
            }
        }
        out.pod_bytes = fake
            .get("v1", "Pod", Some("ns-0"), &pod_name(0, 0))
            .map_or(0, |p| p.to_string().len());
        let ns0 = "ns-0";
        out.slice_bytes = fake
            .get(
                "discovery.k8s.io/v1",
                "EndpointSlice",
                Some(ns0),
                &slice_name(0),
            )
            .map_or(0, |p| p.to_string().len());
        Ok(out)
    }

    /// Change `k`, step 1 (not timed): the scaled-up Deployment's new Pod, Running and Ready,
    /// as the kubelet reports it before the endpoint controller adds it to the slice.
    pub fn new_pod(&self, service: usize, k: usize) -> Value {
        self.pod(
            service,
            SCALED_UIDS + k,
            &scaled_pod_name(service, k),
            &scaled_pod_ip(k),
            "v1",
        )
    }

    /// Change `k`, step 2 (timed): the Service's EndpointSlice with the new Pod's endpoint added.
    pub fn grown_slice(&self, service: usize, k: usize) -> Value {
        self.endpoint_slice(service, Some(k))
    }

    pub fn scaled_pod_ip(&self, k: usize) -> String {
        scaled_pod_ip(k)
    }

    /// Sidecar of client `c`: replica 0 of its Service, as istio-agent introduces it (the
    /// Pod's IP, name and namespace in the node id, its labels, capture by iptables).
    pub fn node(&self, client: usize) -> Node {
        let s = self.service_of_client(client);
        self.pod_node(s, 0)
    }

    /// A sidecar outside the clients and the Services' Pods, in Service `s`'s namespace: what
    /// a proxy that connects after a change is served.
    pub fn probe_node(&self, s: usize) -> Node {
        let ns = format!("ns-{}", self.namespace_of(s));
        let labels = [("app", "probe")];
        fixture::node(
            format!("sidecar~10.252.0.1~probe.{ns}~{ns}.svc.cluster.local"),
            &format!("probe.{ns}"),
            &labels,
            &[
                ("NAMESPACE", &ns),
                ("INSTANCE_IPS", "10.252.0.1"),
                ("INTERCEPTION_MODE", "REDIRECT"),
            ],
        )
    }

    fn pod_node(&self, s: usize, replica: usize) -> Node {
        let ns = format!("ns-{}", self.namespace_of(s));
        let ip = pod_ip(s * self.replicas + replica);
        let pod = pod_name(s, replica);
        let labels = pod_labels(s, version(replica, self.replicas));
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        fixture::sidecar_node(&ip, &pod, &ns, &format!("svc-{s}"), &labels)
    }

    fn service(&self, s: usize) -> Value {
        let ns = format!("ns-{}", self.namespace_of(s));
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("svc-{s}"), "namespace": ns, "uid": uid(1, s),
                "labels": {"app": format!("svc-{s}"), "service": format!("svc-{s}")}},
            "spec": {"type": "ClusterIP", "clusterIP": cluster_ip(s), "clusterIPs": [cluster_ip(s)],
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
                "internalTrafficPolicy": "Cluster", "selector": {"app": format!("svc-{s}")},
                "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": HTTP_PORT, "protocol": "TCP"}]},
            "status": {"loadBalancer": {}}})
    }

    /// Pod `n` (a cluster-wide number, for its uid) of Service `s`.
    fn pod(&self, s: usize, n: usize, name: &str, ip: &str, version: &str) -> Value {
        let ns = format!("ns-{}", self.namespace_of(s));
        let labels: serde_json::Map<String, Value> = pod_labels(s, version)
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v)))
            .collect();
        let condition = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"});
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": uid(2, n), "labels": labels,
                "annotations": {"sidecar.istio.io/status": "{\"initContainers\":[\"istio-init\"],\"containers\":[\"istio-proxy\"],\"volumes\":[\"istio-envoy\",\"istio-data\",\"istio-podinfo\",\"istio-token\",\"istiod-ca-cert\"],\"imagePullSecrets\":null,\"revision\":\"default\"}",
                    "prometheus.io/port": "15020", "prometheus.io/scrape": "true"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("svc-{s}-{}", template_hash(s)),
                    "uid": uid(3, s), "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"serviceAccountName": "default", "nodeName": format!("node-{}", s % 50),
                "containers": [
                    {"name": "app", "image": "docker.io/istio/examples-bookinfo-reviews-v1:1.20.2",
                        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
                    {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.27.0",
                        "args": ["proxy", "sidecar", "--domain", format!("{ns}.svc.cluster.local"), "--proxyLogLevel=warning"],
                        "ports": [{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}],
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}}}]},
            "status": {"phase": "Running", "hostIP": format!("192.168.0.{}", s % 50 + 1), "podIP": ip, "podIPs": [{"ip": ip}],
                "startTime": "2025-01-01T00:00:00Z", "qosClass": "Burstable",
                "conditions": [condition("Initialized"), condition("Ready"), condition("ContainersReady"), condition("PodScheduled")],
                "containerStatuses": [
                    {"name": "app", "ready": true, "restartCount": 0, "image": "docker.io/istio/examples-bookinfo-reviews-v1:1.20.2",
                        "imageID": "", "started": true, "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}},
                    {"name": "istio-proxy", "ready": true, "restartCount": 0, "image": "docker.io/istio/proxyv2:1.27.0",
                        "imageID": "", "started": true, "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}}]}})
    }

    /// The slice of Service `s`: its R Pods, plus the Pod of change `k` if given.
    fn endpoint_slice(&self, s: usize, added: Option<usize>) -> Value {
        let ns = format!("ns-{}", self.namespace_of(s));
        let endpoint = |n: usize, name: String, ip: String| {
            json!({"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": format!("node-{}", s % 50), "zone": "zone-a",
                "targetRef": {"kind": "Pod", "name": name, "namespace": ns, "uid": uid(2, n)}})
        };
        let first = s * self.replicas;
        let mut endpoints: Vec<Value> = (0..self.replicas)
            .map(|r| endpoint(first + r, pod_name(s, r), pod_ip(first + r)))
            .collect();
        if let Some(k) = added {
            endpoints.push(endpoint(
                SCALED_UIDS + k,
                scaled_pod_name(s, k),
                scaled_pod_ip(k),
            ));
        }
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": slice_name(s), "namespace": ns, "uid": uid(4, s),
                "labels": {"kubernetes.io/service-name": format!("svc-{s}"),
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": format!("svc-{s}"), "uid": uid(1, s),
                    "controller": true, "blockOwnerDeletion": true}]},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": HTTP_PORT, "protocol": "TCP"}],
            "endpoints": endpoints})
    }

    /// A header match to subset v2, else 90 % to subset v1 and 10 % to the next Service.
    fn virtual_service(&self, s: usize) -> Value {
        let ns = format!("ns-{}", self.namespace_of(s));
        let other = if s + 1 < self.services && self.namespace_of(s + 1) == self.namespace_of(s) {
            s + 1
        } else {
            s
        };
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": format!("svc-{s}"), "namespace": ns},
            "spec": {"hosts": [format!("svc-{s}")], "http": [
                {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
                    "route": [{"destination": {"host": format!("svc-{s}"), "subset": "v2"}}]},
                {"route": [{"destination": {"host": format!("svc-{s}"), "subset": "v1"}, "weight": 90},
                    {"destination": {"host": format!("svc-{other}")}, "weight": 10}],
                    "timeout": "5s", "retries": {"attempts": 2, "perTryTimeout": "2s"}}]}})
    }

    fn destination_rule(&self, s: usize) -> Value {
        let ns = format!("ns-{}", self.namespace_of(s));
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": format!("svc-{s}"), "namespace": ns},
            "spec": {"host": format!("svc-{s}"), "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"}}]}})
    }
}

/// The last replica runs v2, the others v1, so both subsets have endpoints.
fn version(replica: usize, replicas: usize) -> &'static str {
    if replicas > 1 && replica == replicas - 1 {
        "v2"
    } else {
        "v1"
    }
}

fn uid(kind: u32, n: usize) -> String {
    format!("{kind:08x}-0000-4000-8000-{n:012x}")
}

/// What a ReplicaSet puts in its pods' names and labels, fixed per Deployment.
fn template_hash(service: usize) -> String {
    format!(
        "{:08x}",
        (service as u64).wrapping_mul(0x9e37_79b9) & 0xffff_ffff
    )
}

fn pod_name(service: usize, replica: usize) -> String {
    format!("svc-{service}-{}-{replica}", template_hash(service))
}

fn scaled_pod_name(service: usize, k: usize) -> String {
    format!("svc-{service}-{}-scale{k}", template_hash(service))
}

fn slice_name(service: usize) -> String {
    format!("svc-{service}-{}", &template_hash(service)[..5])
}

fn pod_labels(service: usize, version: &str) -> Vec<(&'static str, String)> {
    vec![
        ("app", format!("svc-{service}")),
        ("version", version.into()),
        ("pod-template-hash", template_hash(service)),
        ("security.istio.io/tlsMode", "istio".into()),
        ("service.istio.io/canonical-name", format!("svc-{service}")),
        ("service.istio.io/canonical-revision", version.into()),
    ]
}

/// Pod `n`'s IP, unique across the cluster (10.1.0.0 upwards).
fn pod_ip(n: usize) -> String {
    format!("10.{}.{}.{}", 1 + n / 65536, (n / 256) % 256, n % 256)
}

/// The Pod of change `k`, outside the range of the initial Pods.
fn scaled_pod_ip(k: usize) -> String {
    format!("10.251.{}.{}", (k / 250) % 250, k % 250 + 1)
}

fn cluster_ip(service: usize) -> String {
    format!("10.96.{}.{}", service / 256, service % 256)
}

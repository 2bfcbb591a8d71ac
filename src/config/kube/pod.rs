//! Pods: the store's view of one, and the slim wire type both sources read them through.
//!
//! Pods dominate a large cluster's initial sync, and most of a Pod's JSON (managed fields, env,
//! volumes, probes) is of no use here: [`SlimPod`] names only the fields the conversion reads,
//! so serde skips the rest without building it (about half the decoding time of
//! `k8s_openapi`'s Pod). Every field is optional and `null` reads as absent, as in
//! `k8s_openapi`, so a Pod either type accepts converts the same.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Deserializer, Serialize};

use super::{ConvertError, meta, port16};
use crate::config::{Object, Spec};

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Pod {
    pub ips: Vec<String>,
    pub service_account: String,
    pub node_name: String,
    pub phase: String,
    pub ready: bool,
    pub terminating: bool,
    pub container_ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerPort {
    pub name: String,
    pub port: u16,
    pub protocol: String,
}

/// A Pod with only what [`Pod`] is made of. Watched as `Api<SlimPod>` (same API path as
/// `k8s_openapi`'s Pod) and read from manifests, so there is one conversion for both sources.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SlimPod {
    /// Only the fields `kube::meta()` keeps and `deletionTimestamp`; held as an `ObjectMeta`
    /// because `kube::Resource` hands out a reference to one.
    #[serde(default, deserialize_with = "kept_meta")]
    pub metadata: ObjectMeta,
    spec: Option<PodSpec>,
    status: Option<PodStatus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeptMeta {
    name: Option<String>,
    namespace: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    resource_version: Option<String>,
    generation: Option<i64>,
    deletion_timestamp: Option<Time>,
}

fn kept_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = Option::<KeptMeta>::deserialize(d)?.unwrap_or_default();
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        labels: m.labels,
        annotations: m.annotations,
        resource_version: m.resource_version,
        generation: m.generation,
        deletion_timestamp: m.deletion_timestamp,
        ..ObjectMeta::default()
    })
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    service_account_name: Option<String>,
    node_name: Option<String>,
    containers: Option<Vec<Container>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Container {
    ports: Option<Vec<Port>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Port {
    name: Option<String>,
    container_port: Option<i32>,
    protocol: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct PodStatus {
    phase: Option<String>,
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pod_ips: Option<Vec<PodIp>>,
    conditions: Option<Vec<Condition>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct PodIp {
    ip: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    type_: Option<String>,
    status: Option<String>,
}

impl ::kube::Resource for SlimPod {
    type DynamicType = ();
    type Scope = <core::Pod as k8s_openapi::Resource>::Scope;

    fn kind(_: &()) -> Cow<'_, str> {
        <core::Pod as k8s_openapi::Resource>::KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        <core::Pod as k8s_openapi::Resource>::GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        <core::Pod as k8s_openapi::Resource>::VERSION.into()
    }
    fn api_version(_: &()) -> Cow<'_, str> {
        <core::Pod as k8s_openapi::Resource>::API_VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        <core::Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl TryFrom<SlimPod> for Object {
    type Error = ConvertError;

    fn try_from(pod: SlimPod) -> Result<Self, ConvertError> {
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let spec = pod.spec.unwrap_or_default();
        let status = pod.status.unwrap_or_default();
        let mut ips: Vec<String> = status
            .pod_ips
            .unwrap_or_default()
            .into_iter()
            .map(|ip| ip.ip.unwrap_or_default())
            .collect();
        if ips.is_empty() {
            ips.extend(status.pod_ip.filter(|ip| !ip.is_empty()));
        }
        // A Pod written by hand for file mode often has no conditions: count it ready when it
        // has an IP and is not known to be in another phase.
        let conditions = status.conditions.unwrap_or_default();
        let ready = if conditions.is_empty() {
            status.phase.as_deref().is_none_or(|p| p == "Running")
        } else {
            conditions
                .iter()
                .any(|c| c.type_.as_deref() == Some("Ready") && c.status.as_deref() == Some("True"))
        };
        let mut container_ports = Vec::new();
        for (ci, c) in spec.containers.unwrap_or_default().into_iter().enumerate() {
            for (pi, p) in c.ports.unwrap_or_default().into_iter().enumerate() {
                container_ports.push(ContainerPort {
                    name: p.name.unwrap_or_default(),
                    port: port16(
                        p.container_port.unwrap_or_default(),
                        format!("spec.containers[{ci}].ports[{pi}].containerPort"),
                    )?,
                    protocol: p.protocol.unwrap_or_else(|| "TCP".into()),
                });
            }
        }
        Ok(Object {
            meta: meta(pod.metadata),
            spec: Spec::Pod(Pod {
                ips,
                service_account: spec
                    .service_account_name
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "default".into()),
                node_name: spec.node_name.unwrap_or_default(),
                phase: status.phase.unwrap_or_default(),
                ready,
                terminating,
                container_ports,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Meta;

    /// A Pod as `kubectl get -o json` shows one after Istio's injection: dual-stack, two
    /// containers and an init container, with the managed fields, env and volumes a real one has.
    const FULL_POD: &str = r#"{
      "apiVersion": "v1", "kind": "Pod",
      "metadata": {
        "name": "reviews-v2-5b667bcbf8-x2m4k", "namespace": "bookinfo",
        "generateName": "reviews-v2-5b667bcbf8-",
        "uid": "0b4c3d1e-9f0a-4c1e-8a53-7d8e2b1f6a90", "resourceVersion": "184467", "generation": 2,
        "creationTimestamp": "2025-01-10T08:00:00Z",
        "deletionTimestamp": "2025-01-10T09:00:30Z", "deletionGracePeriodSeconds": 30,
        "labels": {"app": "reviews", "version": "v2", "security.istio.io/tlsMode": "istio",
                   "service.istio.io/canonical-name": "reviews"},
        "annotations": {"kubectl.kubernetes.io/default-container": "reviews",
                        "sidecar.istio.io/status": "{\"initContainers\":[\"istio-init\"]}"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reviews-v2-5b667bcbf8",
                             "uid": "5e0c1b7a-2d4f-4b8e-9c61-3a7f0d2e8b14", "controller": true, "blockOwnerDeletion": true}],
        "finalizers": ["example.com/keep"],
        "managedFields": [
          {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
           "time": "2025-01-10T08:00:00Z", "fieldsType": "FieldsV1",
           "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:spec": {"f:containers": {"k:{\"name\":\"reviews\"}": {".": {}}}}}},
          {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "subresource": "status",
           "time": "2025-01-10T08:00:05Z", "fieldsType": "FieldsV1",
           "fieldsV1": {"f:status": {"f:conditions": {}, "f:podIPs": {}}}}
        ]
      },
      "spec": {
        "serviceAccountName": "bookinfo-reviews", "serviceAccount": "bookinfo-reviews",
        "nodeName": "worker-3", "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
        "terminationGracePeriodSeconds": 30,
        "securityContext": {"fsGroup": 1337},
        "initContainers": [{"name": "istio-init", "image": "docker.io/istio/proxyv2:1.24.2",
                            "args": ["istio-iptables", "-p", "15001"],
                            "ports": [{"containerPort": 1, "name": "not-counted"}]}],
        "containers": [
          {"name": "reviews", "image": "docker.io/istio/examples-bookinfo-reviews-v2:1.20.2",
           "ports": [{"containerPort": 9080, "protocol": "TCP"}, {"name": "metrics", "containerPort": 9464}],
           "env": [{"name": "LOG_DIR", "value": "/tmp/logs"},
                   {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}],
           "resources": {"requests": {"cpu": "10m", "memory": "40Mi"}},
           "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]},
          {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.2",
           "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
           "ports": [{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"},
                     {"name": "dns", "containerPort": 15053, "protocol": "UDP"}],
           "env": [{"name": "ISTIO_META_CLUSTER_ID", "value": "Kubernetes"},
                   {"name": "INSTANCE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
           "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}, "periodSeconds": 15},
           "volumeMounts": [{"name": "istiod-ca-cert", "mountPath": "/var/run/secrets/istio"}]},
          {"name": "log-shipper", "image": "busybox:1.36", "ports": null}
        ],
        "volumes": [
          {"name": "tmp", "emptyDir": {}},
          {"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert", "defaultMode": 420}},
          {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}}
        ],
        "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
      },
      "status": {
        "phase": "Running", "hostIP": "10.0.0.13", "hostIPs": [{"ip": "10.0.0.13"}],
        "podIP": "10.244.2.17", "podIPs": [{"ip": "10.244.2.17"}, {"ip": "fd00:10:244:2::11"}],
        "startTime": "2025-01-10T08:00:01Z", "qosClass": "Burstable",
        "conditions": [
          {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": "2025-01-10T08:00:03Z"},
          {"type": "Initialized", "status": "True", "lastTransitionTime": "2025-01-10T08:00:04Z"},
          {"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2025-01-10T08:00:09Z"},
          {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2025-01-10T08:00:09Z"}
        ],
        "containerStatuses": [{"name": "reviews", "ready": true, "restartCount": 0, "image": "x", "imageID": "y",
                               "state": {"running": {"startedAt": "2025-01-10T08:00:06Z"}}}]
      }
    }"#;

    fn port(name: &str, port: u16, protocol: &str) -> ContainerPort {
        ContainerPort {
            name: name.into(),
            port,
            protocol: protocol.into(),
        }
    }

    fn pod(json: &str) -> Result<Object, ConvertError> {
        Object::try_from(serde_json::from_str::<SlimPod>(json).unwrap())
    }

    #[test]
    fn a_full_pod_converts_to_what_pilotfish_reads_of_it() {
        let strings = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let expected = Object {
            meta: Meta {
                name: "reviews-v2-5b667bcbf8-x2m4k".into(),
                namespace: "bookinfo".into(),
                labels: strings(&[
                    ("app", "reviews"),
                    ("version", "v2"),
                    ("security.istio.io/tlsMode", "istio"),
                    ("service.istio.io/canonical-name", "reviews"),
                ]),
                annotations: strings(&[
                    ("kubectl.kubernetes.io/default-container", "reviews"),
                    (
                        "sidecar.istio.io/status",
                        r#"{"initContainers":["istio-init"]}"#,
                    ),
                ]),
                resource_version: "184467".into(),
                generation: 2,
            },
            spec: Spec::Pod(Pod {
                ips: vec!["10.244.2.17".into(), "fd00:10:244:2::11".into()],
                service_account: "bookinfo-reviews".into(),
                node_name: "worker-3".into(),
                phase: "Running".into(),
                ready: true,
                terminating: true,
                // Init containers' ports are not the workload's.
                container_ports: vec![
                    port("", 9080, "TCP"),
                    port("metrics", 9464, "TCP"),
                    port("http-envoy-prom", 15090, "TCP"),
                    port("dns", 15053, "UDP"),
                ],
            }),
        };
        assert_eq!(pod(FULL_POD).unwrap(), expected);
    }

    #[test]
    fn kept_metadata_is_exactly_what_the_conversion_reads() {
        let slim: SlimPod = serde_json::from_str(FULL_POD).unwrap();
        let m = &slim.metadata;
        assert!(
            m.managed_fields.is_none() && m.owner_references.is_none() && m.finalizers.is_none()
        );
        assert!(m.uid.is_none() && m.creation_timestamp.is_none() && m.generate_name.is_none());
        assert!(m.deletion_timestamp.is_some());
        assert_eq!(m.resource_version.as_deref(), Some("184467"));
    }

    #[test]
    fn a_bare_pod_gets_the_defaults_kubernetes_gives() {
        let object = pod(r#"{"metadata": {"name": "p"}, "spec": {"serviceAccountName": "", "containers": [{"ports": [{"containerPort": 80}]}]}, "status": {"podIP": "10.0.0.1", "podIPs": null}}"#).unwrap();
        let expected = Pod {
            ips: vec!["10.0.0.1".into()],
            service_account: "default".into(),
            ready: true,
            container_ports: vec![port("", 80, "TCP")],
            ..Pod::default()
        };
        assert_eq!(object.spec, Spec::Pod(expected));
        let pending = pod(
            r#"{"metadata": null, "spec": null, "status": {"phase": "Pending", "conditions": []}}"#,
        )
        .unwrap();
        let Spec::Pod(pending) = pending.spec else {
            panic!("{:?}", pending.spec)
        };
        assert!(!pending.ready && pending.ips.is_empty() && !pending.terminating);
        let not_ready = pod(r#"{"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}}"#).unwrap();
        assert_eq!(
            not_ready.spec,
            Spec::Pod(Pod {
                phase: "Running".into(),
                service_account: "default".into(),
                ..Pod::default()
            })
        );
    }

    #[test]
    fn a_bad_container_port_names_its_field() {
        let err = pod(r#"{"spec": {"containers": [{"ports": [{"containerPort": 80}]}, {"ports": [{"containerPort": 80}, {"containerPort": 70000}]}]}}"#)
            .unwrap_err();
        assert_eq!(err.field, "spec.containers[1].ports[1].containerPort");
        assert_eq!(err.message, "port 70000 is not in 1-65535");
        let missing =
            pod(r#"{"spec": {"containers": [{"ports": [{"name": "http"}]}]}}"#).unwrap_err();
        assert_eq!(missing.field, "spec.containers[0].ports[0].containerPort");
    }

    #[test]
    fn a_mistyped_read_field_is_a_decoding_error_naming_it() {
        let err = serde_path_to_error::deserialize::<_, SlimPod>(
            serde_json::json!({"status": {"podIPs": [{"ip": 7}]}}),
        )
        .unwrap_err();
        assert_eq!(err.path().to_string(), "status.podIPs[0].ip");
    }

    #[test]
    fn watched_at_the_same_api_path_as_the_k8s_openapi_pod() {
        use ::kube::Resource;
        for namespace in [None, Some("bookinfo")] {
            assert_eq!(
                SlimPod::url_path(&(), namespace),
                core::Pod::url_path(&(), namespace)
            );
        }
        assert_eq!(SlimPod::api_version(&()), "v1");
        assert_eq!(SlimPod::kind(&()), "Pod");
    }
}

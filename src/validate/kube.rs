//! Light checks on the Kubernetes kinds: the names the API server would have insisted on
//! (objects read from files never went through it), and port names that must be unique.

use std::collections::BTreeSet;

use crate::config::kube::ConfigMap;
use crate::config::mesh_config::{self, CONFIG_MAP_NAME, MESH_KEY};
use crate::config::{Object, Spec};
use crate::model::MeshConfig;

use super::common::{Diags, is_ip, is_k8s_dns1035_label, is_k8s_label, is_k8s_subdomain};

pub fn validate(object: &Object, out: &mut Diags) {
    let name = object.meta.name.as_str();
    // Service names become DNS labels (`name.ns.svc`); Namespaces are labels too.
    let (ok, what) = match &object.spec {
        Spec::Service(_) => (
            is_k8s_dns1035_label(name),
            "a DNS-1035 label (lower case, starting with a letter)",
        ),
        Spec::Namespace => (is_k8s_label(name), "a DNS-1123 label"),
        _ => (is_k8s_subdomain(name), "a DNS-1123 subdomain"),
    };
    if !ok {
        out.error(
            "metadata.name",
            format!(
                "{name:?} is not a valid {} name: must be {what}",
                object.kind()
            ),
        );
    }
    match &object.spec {
        Spec::Service(svc) => {
            let mut names = BTreeSet::new();
            for (i, p) in svc.ports.iter().enumerate() {
                if svc.ports.len() > 1 && p.name.is_empty() {
                    out.error(
                        format!("spec.ports[{i}].name"),
                        "port name is required when a Service has several ports",
                    );
                }
                if !p.name.is_empty() && !names.insert(p.name.as_str()) {
                    out.error(
                        format!("spec.ports[{i}].name"),
                        format!("duplicate port name {:?}", p.name),
                    );
                }
            }
            if let Some(ip) = &svc.cluster_ip
                && !is_ip(ip)
            {
                out.error("spec.clusterIP", format!("{ip:?} is not a valid IP"));
            }
        }
        Spec::EndpointSlice(slice) => {
            if !is_k8s_dns1035_label(&slice.service_name) {
                out.error(
                    "metadata.labels.kubernetes.io/service-name",
                    format!("{:?} is not a valid Service name", slice.service_name),
                );
            }
            if slice.address_type != "FQDN" {
                for (i, e) in slice.endpoints.iter().enumerate() {
                    for (j, a) in e.addresses.iter().enumerate() {
                        if !is_ip(a) {
                            out.error(
                                format!("endpoints[{i}].addresses[{j}]"),
                                format!("{a:?} is not a valid {} address", slice.address_type),
                            );
                        }
                    }
                }
            }
        }
        Spec::ConfigMap(cm) => validate_config_map(&object.meta.name, cm, out),
        Spec::Pod(pod) => {
            for (i, ip) in pod.ips.iter().enumerate() {
                if !is_ip(ip) {
                    out.error(
                        format!("status.podIPs[{i}].ip"),
                        format!("{ip:?} is not a valid IP"),
                    );
                }
            }
        }
        _ => {}
    }
}

/// Keys as the API server allows them; and for istiod's mesh ConfigMap, a `mesh` document that
/// applies (a ConfigMap that fails keeps its previous version, so the mesh config stays good).
fn validate_config_map(name: &str, cm: &ConfigMap, out: &mut Diags) {
    for key in cm.data.keys() {
        let chars_ok = key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
        if key.is_empty() || key.len() > 253 || !chars_ok || key == "." || key.starts_with("..") {
            out.error(
                format!("data.{key}"),
                format!("{key:?} is not a valid ConfigMap key: alphanumerics, '-', '_' or '.'"),
            );
        }
    }
    if name == CONFIG_MAP_NAME
        && let Some(yaml) = cm.data.get(MESH_KEY)
        && let Err(e) = mesh_config::apply_mesh_yaml(yaml, &MeshConfig::default())
    {
        out.error(format!("data.{MESH_KEY}"), e.to_string());
    }
}

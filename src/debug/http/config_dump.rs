//! `/debug/config_dump?proxyID=`: what a connected proxy gets, in Envoy's `/config_dump`
//! shape, built by the same code as `pilotfish render` ([`crate::render::config_dump`]). That
//! dump carries clusters, listeners, routes and endpoints, not SDS secrets; any private key
//! inlined in them anyway is replaced by `[redacted]`, as Envoy's own admin endpoint prints
//! sensitive fields.

use serde_json::Value;

use super::DebugError;
use crate::xds::csds::REDACTED;
use crate::xds::{ConnectionInfo, Snapshot};

/// The dump of the connected proxy `proxy_id`, generated for the `Proxy` its stream has
/// (labels, metadata, identity), the newest connection when it has several.
pub fn config_dump(
    snapshot: &dyn Snapshot,
    proxy_id: Option<&str>,
    connected: &[ConnectionInfo],
) -> Result<Value, DebugError> {
    let proxy_id = proxy_id
        .filter(|id| !id.is_empty())
        .ok_or(DebugError::MissingProxyId)?;
    let connection = connected
        .iter()
        .rev()
        .find(|c| c.proxy_id == proxy_id)
        .ok_or_else(|| DebugError::UnknownProxy(proxy_id.to_string()))?;
    let mut dump = crate::render::config_dump(&snapshot.resources_for(&connection.proxy))?;
    redact(&mut dump);
    Ok(dump)
}

/// Replaces the inline contents of every `private_key` data source in place; a file name is
/// kept, it is no secret.
fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v.as_object_mut() {
                    Some(source) if key == "private_key" => {
                        for inline in ["inline_bytes", "inline_string"] {
                            if let Some(content) = source.get_mut(inline) {
                                *content = Value::String(REDACTED.to_string());
                            }
                        }
                    }
                    _ => redact(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use serde_json::json;

    use super::*;
    use crate::model::Proxy;
    use crate::xds::{ProxyResources, Resource, TypeUrl};

    const APP: &str = "sidecar~10.0.0.1~app-1.default~default.svc.cluster.local";

    /// Gives every proxy one cluster named after the proxy's workload and `app` label, so the
    /// dump shows it was built for the connected proxy, metadata included.
    struct PerProxy;

    impl Snapshot for PerProxy {
        fn revision(&self) -> u64 {
            1
        }
        fn resources_for(&self, proxy: &Proxy) -> Arc<ProxyResources> {
            let name = format!(
                "{}/{}",
                proxy.workload,
                proxy.labels.get("app").map_or("", String::as_str)
            );
            let cluster = Resource::encode(
                &name,
                &Cluster {
                    name: name.clone(),
                    ..Default::default()
                },
            );
            let mut r = ProxyResources::default();
            r.set(
                TypeUrl::Cluster,
                [(cluster.name.clone(), Arc::new(cluster))]
                    .into_iter()
                    .collect(),
            );
            Arc::new(r)
        }
    }

    fn connected() -> Vec<ConnectionInfo> {
        let mut c = super::super::syncz::tests::connection(APP, &[]);
        let mut proxy = Proxy::from_id(APP).unwrap();
        proxy.labels.insert("app".into(), "web".into());
        c.proxy = Arc::new(proxy);
        vec![c]
    }

    #[test]
    fn dumps_the_connected_proxys_config() {
        let dump = config_dump(&PerProxy, Some(APP), &connected()).unwrap();
        let clusters = &dump["configs"][0];
        assert_eq!(
            clusters["@type"],
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"
        );
        assert_eq!(
            clusters["dynamic_active_clusters"][0]["cluster"]["name"], "app-1.default/web",
            "generated for the connection's proxy, with its labels"
        );
    }

    #[test]
    fn missing_and_unknown_proxies_are_errors() {
        assert!(matches!(
            config_dump(&PerProxy, None, &connected()),
            Err(DebugError::MissingProxyId)
        ));
        assert!(matches!(
            config_dump(&PerProxy, Some(""), &connected()),
            Err(DebugError::MissingProxyId)
        ));
        let other = "sidecar~10.0.0.2~other.default~default.svc.cluster.local";
        match config_dump(&PerProxy, Some(other), &connected()) {
            Err(e @ DebugError::UnknownProxy(_)) => assert!(e.to_string().contains(other), "{e}"),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn private_keys_are_redacted_wherever_they_are() {
        let mut dump = json!({"configs": [{"listener": {"filter_chains": [{"tls_certificates": [{
            "certificate_chain": {"inline_string": "CERT"},
            "private_key": {"inline_bytes": "S0VZ"}
        }, {
            "certificate_chain": {"filename": "/etc/certs/cert.pem"},
            "private_key": {"filename": "/etc/certs/key.pem"}
        }]}]}}]});
        redact(&mut dump);
        let certs = &dump["configs"][0]["listener"]["filter_chains"][0]["tls_certificates"];
        assert_eq!(certs[0]["private_key"], json!({"inline_bytes": REDACTED}));
        assert_eq!(certs[0]["certificate_chain"]["inline_string"], "CERT");
        assert_eq!(certs[1]["private_key"]["filename"], "/etc/certs/key.pem");
    }
}

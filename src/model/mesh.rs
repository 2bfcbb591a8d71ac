//! Mesh-wide settings (a subset of Istio's MeshConfig).

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct MeshConfig {
    /// DNS suffix of Kubernetes service hostnames (`cluster.local`).
    pub domain_suffix: String,
    /// Namespace whose config applies mesh-wide (`istio-system`).
    pub root_namespace: String,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig { domain_suffix: "cluster.local".into(), root_namespace: "istio-system".into() }
    }
}

impl MeshConfig {
    /// Resolves a short host name (`reviews`) relative to a namespace, as istiod does; names
    /// with a dot and wildcards are taken as written (and borrowed: this is on the hot path).
    pub fn fqdn<'a>(&self, host: &'a str, namespace: &str) -> std::borrow::Cow<'a, str> {
        if host.contains('.') || host == "*" {
            std::borrow::Cow::Borrowed(host)
        } else {
            std::borrow::Cow::Owned(format!("{host}.{namespace}.svc.{}", self.domain_suffix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_in_their_namespace() {
        let mesh = MeshConfig::default();
        assert_eq!(mesh.fqdn("reviews", "bookinfo"), "reviews.bookinfo.svc.cluster.local");
        assert_eq!(mesh.fqdn("reviews.bookinfo.svc.cluster.local", "x"), "reviews.bookinfo.svc.cluster.local");
        assert_eq!(mesh.fqdn("*.example.com", "x"), "*.example.com");
        assert_eq!(mesh.fqdn("*", "x"), "*");
    }
}

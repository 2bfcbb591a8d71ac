//! Every Kubernetes API call pilotfish makes, as (group, resource, verbs, where): the list
//! `manifests/` must grant, and grant nothing beyond (tests/manifests.rs checks both ways).
//!
//! A new API use is added here with the code that makes it; the manifest test then fails until
//! the ClusterRole or Role grants it. Kinds the Kubernetes source watches come from
//! [`Kind::ALL`], so a new kind is covered without an edit here.

use crate::config::Kind;

/// Where a permission applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every namespace (a ClusterRole).
    Cluster,
    /// pilotfish's own namespace (a Role in `istio-system`).
    ControlPlane,
}

/// One kind of call pilotfish makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiUse {
    /// `""` for the core group.
    pub group: &'static str,
    /// The plural resource, as RBAC names it.
    pub resource: String,
    pub verbs: &'static [&'static str],
    pub scope: Scope,
    /// Limited to these object names (`resourceNames`); empty for any.
    pub names: &'static [&'static str],
    /// Which code makes the call.
    pub by: &'static str,
}

/// The plural resource name of a kind, as the API serves it.
pub fn resource_name(kind: Kind) -> String {
    let singular = kind.name().to_ascii_lowercase();
    // English plurals as Kubernetes' CRDs and built-in kinds spell them (policy → policies,
    // gateway → gateways).
    match singular.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'i', 'o', 'u']) => format!("{stem}ies"),
        _ if singular.ends_with('s') => format!("{singular}es"),
        _ => format!("{singular}s"),
    }
}

/// Where the Kubernetes source watches a kind (`source/kubernetes/kinds.rs`).
fn watch_scope(kind: Kind) -> Scope {
    match kind {
        // Only the mesh ConfigMap `istio`, in the control plane namespace.
        Kind::ConfigMap => Scope::ControlPlane,
        _ => Scope::Cluster,
    }
}

/// Every API call pilotfish makes.
pub fn api_uses() -> Vec<ApiUse> {
    let mut uses: Vec<ApiUse> = Kind::ALL
        .into_iter()
        .map(|kind| ApiUse {
            group: kind.group_versions().0,
            resource: resource_name(kind),
            verbs: &["list", "watch"],
            scope: watch_scope(kind),
            names: &[],
            by: "source::kubernetes (one watcher per kind)",
        })
        .collect();
    uses.extend([
        ApiUse {
            group: "",
            resource: "secrets".into(),
            verbs: &["get"],
            scope: Scope::ControlPlane,
            names: &[
                crate::ca::secret::SECRET_NAME,
                crate::ca::plugged::SECRET_NAME,
            ],
            by: "operator (the plugged-in CA `cacerts`, else the root `istio-ca-secret`)",
        },
        ApiUse {
            group: "",
            resource: "configmaps".into(),
            verbs: &["get", "create", "update"],
            scope: Scope::Cluster,
            names: &[],
            by: "ca::root_cert (the leader keeps istio-ca-root-cert in every namespace)",
        },
        ApiUse {
            group: "authentication.k8s.io",
            resource: "tokenreviews".into(),
            verbs: &["create"],
            scope: Scope::Cluster,
            names: &[],
            by: "security::token_review (service-account tokens on the TLS xDS port)",
        },
        ApiUse {
            group: "",
            resource: "secrets".into(),
            // `create` cannot be limited by name: the object does not exist yet.
            verbs: &["create"],
            scope: Scope::ControlPlane,
            names: &[],
            by: "ca::secret::load_or_create (the leader persists a new root)",
        },
        ApiUse {
            group: "admissionregistration.k8s.io",
            resource: "validatingwebhookconfigurations".into(),
            verbs: &["get", "list", "watch", "update"],
            scope: Scope::Cluster,
            names: &[crate::webhook::DEFAULT_CONFIG_NAME],
            by: "webhook::ca_bundle (caBundle and failurePolicy)",
        },
        ApiUse {
            group: "networking.istio.io",
            resource: "gateways".into(),
            verbs: &["create"],
            scope: Scope::ControlPlane,
            names: &[],
            by: "webhook::ca_bundle (dry-run of an invalid Gateway before failurePolicy Fail)",
        },
        ApiUse {
            group: "coordination.k8s.io",
            resource: "leases".into(),
            verbs: &["get", "create", "update"],
            scope: Scope::ControlPlane,
            names: &[],
            by: "leader (leader election)",
        },
        ApiUse {
            group: "",
            resource: "events".into(),
            verbs: &["create"],
            scope: Scope::Cluster,
            names: &[],
            by: "operator::rejections (the leader's ProxyRejected Events on rejected objects)",
        },
    ]);
    uses.extend(
        Kind::ALL
            .into_iter()
            .filter(|k| k.group_versions().0.ends_with(".istio.io"))
            .map(|kind| ApiUse {
                group: kind.group_versions().0,
                resource: format!("{}/status", resource_name(kind)),
                verbs: &["get", "patch"],
                scope: Scope::Cluster,
                names: &[],
                by: "operator::rejections (the leader's Reconciled condition on rejected objects)",
            }),
    );
    uses
}

#[cfg(test)]
mod tests {
    use k8s_openapi::Resource;
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::api::discovery::v1 as discovery;

    use super::*;

    #[test]
    fn plurals_are_the_apis() {
        assert_eq!(
            resource_name(Kind::Service),
            core::Service::URL_PATH_SEGMENT
        );
        assert_eq!(resource_name(Kind::Pod), core::Pod::URL_PATH_SEGMENT);
        assert_eq!(
            resource_name(Kind::Namespace),
            core::Namespace::URL_PATH_SEGMENT
        );
        assert_eq!(
            resource_name(Kind::ConfigMap),
            core::ConfigMap::URL_PATH_SEGMENT
        );
        assert_eq!(
            resource_name(Kind::EndpointSlice),
            discovery::EndpointSlice::URL_PATH_SEGMENT
        );
        // Istio's kinds, as pilotfish's CRDs name them.
        for kind in Kind::ALL
            .into_iter()
            .filter(|k| k.group_versions().0.ends_with(".istio.io"))
        {
            let crd = crate::crd::find(kind).unwrap_or_else(|| panic!("no CRD for {kind}"));
            assert_eq!(resource_name(kind), crd.plural, "{kind}");
        }
    }

    #[test]
    fn every_kind_read_is_declared() {
        let uses = api_uses();
        for kind in Kind::ALL {
            let resource = resource_name(kind);
            assert!(
                uses.iter()
                    .any(|u| u.resource == resource && u.verbs.contains(&"watch")),
                "{kind}"
            );
        }
    }
}

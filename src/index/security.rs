//! Which `security.istio.io` policies apply to a workload, as istiod picks them for a sidecar:
//! those in the root namespace and those in the workload's namespace, each either without a
//! selector or with one its labels match. Order is istiod's (creation time there; namespace and
//! name here, as files have no creation time): root namespace first, then the workload's.
//!
//! Policies bound with `targetRef(s)` apply to gateways and waypoints only, never to a sidecar.

use crate::config::KindSpec;
use crate::config::istio::common::MatchLabels;
use crate::config::istio::security::MtlsMode;
use crate::config::istio::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use crate::store::Snapshot;

use super::services::{Labels, selects};

/// The pod label istio's injector sets on workloads with a sidecar.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// Whether a workload has a sidecar to talk mTLS with.
pub fn has_sidecar(labels: &Labels) -> bool {
    labels.get(TLS_MODE_LABEL).is_some_and(|m| m == "istio")
}

/// Marks an AuthorizationPolicy to be tried out without being enforced.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// One policy that applies, with its name for diagnostics and Envoy policy names.
#[derive(Debug)]
pub struct Applied<'a, T> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub spec: &'a T,
}

// Not derived: a derive would ask `T: Copy` of the policy itself.
impl<T> Clone for Applied<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Applied<'_, T> {}

/// Who a policy is asked about: a workload's namespace and labels.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    pub namespace: &'a str,
    pub labels: &'a Labels,
}

/// The scope a PeerAuthentication has for a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerScope {
    Mesh,
    Namespace,
    Workload,
}

/// The policies of kind `T` that apply to `workload`: in the root namespace or the workload's,
/// without a selector (and without `targetRef`s) or with one its labels match.
pub fn applying<'a, T>(
    snapshot: &'a Snapshot,
    root_namespace: &str,
    workload: Workload<'_>,
) -> Vec<Applied<'a, T>>
where
    T: KindSpec + Selected + 'static,
{
    let mut namespaces = vec![root_namespace];
    if workload.namespace != root_namespace {
        namespaces.push(workload.namespace);
    }
    let mut out = Vec::new();
    for ns in namespaces {
        for entry in snapshot
            .entries(T::KIND)
            .filter(|e| e.object.meta.namespace == ns)
        {
            let Some(spec) = T::from_spec(&entry.object.spec) else {
                continue;
            };
            if !spec.targets_workloads() {
                continue;
            }
            // istiod evaluates a dry-run policy only into logs and stats (shadow rules);
            // pilotfish does not enforce it.
            if entry
                .object
                .meta
                .annotations
                .get(DRY_RUN_ANNOTATION)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            {
                continue;
            }
            if spec
                .selector()
                .is_some_and(|s| !selects(&s.match_labels, workload.labels))
            {
                continue;
            }
            out.push(Applied {
                namespace: &entry.object.meta.namespace,
                name: &entry.object.meta.name,
                spec,
            });
        }
    }
    out
}

/// The PeerAuthentications that shape a workload's inbound mTLS, each with its scope: the
/// mesh-wide one (root namespace, no selector), the namespace's (no selector), and the first
/// workload one whose selector matches. Where istiod finds several of one scope it takes the
/// oldest; here the first by name.
pub fn peer_authentications<'a>(
    snapshot: &'a Snapshot,
    root_namespace: &str,
    workload: Workload<'_>,
) -> Vec<(PeerScope, Applied<'a, PeerAuthentication>)> {
    let all: Vec<Applied<'a, PeerAuthentication>> = applying(snapshot, root_namespace, workload);
    let namespace_wide = |p: &Applied<'_, PeerAuthentication>| {
        p.spec
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty())
    };
    let mesh = all
        .iter()
        .find(|p| p.namespace == root_namespace && namespace_wide(p));
    let namespace = all
        .iter()
        .find(|p| p.namespace == workload.namespace && namespace_wide(p));
    let selected = all
        .iter()
        .find(|p| p.namespace == workload.namespace && !namespace_wide(p));
    let mut out = Vec::new();
    if let Some(m) = mesh {
        out.push((PeerScope::Mesh, *m));
    }
    if let Some(n) = namespace.filter(|_| workload.namespace != root_namespace) {
        out.push((PeerScope::Namespace, *n));
    }
    if let Some(w) = selected {
        out.push((PeerScope::Workload, *w));
    }
    out
}

/// istiod's resolution: the workload policy's `portLevelMtls` for the port, then its `mtls`,
/// then the namespace's, then the mesh's; each UNSET inherits; PERMISSIVE at the top.
pub fn mtls_mode(policies: &[(PeerScope, Applied<'_, PeerAuthentication>)], port: u16) -> MtlsMode {
    for (scope, policy) in policies.iter().rev() {
        if *scope == PeerScope::Workload
            && let Some(m) = policy
                .spec
                .port_level_mtls
                .as_ref()
                .and_then(|ports| ports.get(&u32::from(port)))
            && m.mode != MtlsMode::Unset
        {
            return m.mode;
        }
        if let Some(m) = policy.spec.mtls.filter(|m| m.mode != MtlsMode::Unset) {
            return m.mode;
        }
    }
    MtlsMode::Permissive
}

/// What [`applying`] reads of a policy.
pub trait Selected {
    fn selector(&self) -> Option<&MatchLabels>;
    /// False for policies bound with `targetRef(s)`, which apply to gateways and waypoints only.
    fn targets_workloads(&self) -> bool;
}

impl Selected for PeerAuthentication {
    fn selector(&self) -> Option<&MatchLabels> {
        self.selector.as_ref()
    }
    fn targets_workloads(&self) -> bool {
        true
    }
}

impl Selected for AuthorizationPolicy {
    fn selector(&self) -> Option<&MatchLabels> {
        self.selector.as_ref()
    }
    fn targets_workloads(&self) -> bool {
        self.target_ref.is_none() && self.target_refs.is_empty()
    }
}

impl Selected for RequestAuthentication {
    fn selector(&self) -> Option<&MatchLabels> {
        self.selector.as_ref()
    }
    fn targets_workloads(&self) -> bool {
        self.target_ref.is_none() && self.target_refs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(yaml: &str) -> std::sync::Arc<Snapshot> {
        Snapshot::from_yaml(yaml)
    }

    const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: istio-system}
spec: {action: DENY, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: b-ns, namespace: foo}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a-app, namespace: foo}
spec: {selector: {matchLabels: {app: httpbin}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-app, namespace: foo}
spec: {selector: {matchLabels: {app: sleep}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: gateway-bound, namespace: foo}
spec: {targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: trial, namespace: foo, annotations: {istio.io/dry-run: "true"}}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: elsewhere, namespace: bar}
spec: {}
"#;

    #[test]
    fn root_namespace_first_then_the_workloads_matching_selectors() {
        let snap = snapshot(POLICIES);
        let labels: Labels = [("app".to_string(), "httpbin".to_string())]
            .into_iter()
            .collect();
        let got: Vec<Applied<'_, AuthorizationPolicy>> = applying(
            &snap,
            "istio-system",
            Workload {
                namespace: "foo",
                labels: &labels,
            },
        );
        let names: Vec<String> = got
            .iter()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        assert_eq!(names, ["istio-system/mesh-wide", "foo/a-app", "foo/b-ns"]);
    }

    #[test]
    fn peer_authentication_scopes() {
        let snap = snapshot(
            r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns, namespace: foo}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: app, namespace: foo}
spec: {selector: {matchLabels: {app: a}}, mtls: {mode: DISABLE}}
"#,
        );
        let a: Labels = [("app".to_string(), "a".to_string())].into_iter().collect();
        let got = peer_authentications(
            &snap,
            "istio-system",
            Workload {
                namespace: "foo",
                labels: &a,
            },
        );
        let scopes: Vec<(PeerScope, &str)> = got.iter().map(|(s, p)| (*s, p.name)).collect();
        assert_eq!(
            scopes,
            [
                (PeerScope::Mesh, "default"),
                (PeerScope::Namespace, "ns"),
                (PeerScope::Workload, "app")
            ]
        );
        let none = Labels::new();
        let got = peer_authentications(
            &snap,
            "istio-system",
            Workload {
                namespace: "bar",
                labels: &none,
            },
        );
        assert_eq!(
            got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [PeerScope::Mesh]
        );
    }
}

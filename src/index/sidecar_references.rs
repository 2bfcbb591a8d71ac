//! Checks between Sidecars and what they select or import: two Sidecars for one workload,
//! more than one namespace-wide Sidecar, egress hosts that import nothing. Warnings: istiod
//! serves such config too, picking deterministically, and so does pilotfish (`scope::sidecar_for`).

use super::scope::sidecar_selector;
use super::services::selects;
use super::{Index, Typed};
use crate::config::istio::Sidecar;
use crate::diagnostic::Diagnostic;

/// Sidecars that apply to the same workload (found by its endpoints' labels).
pub fn check_overlaps(index: &Index) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (i, a) in index.sidecars.iter().enumerate() {
        for b in index.sidecars[i + 1..]
            .iter()
            .filter(|b| b.namespace() == a.namespace())
        {
            if let Some(problem) = overlap(index, a, b) {
                out.push(
                    Diagnostic::warning(
                        "spec.workloadSelector",
                        format!("{problem}; {} applies", a.ns_name()),
                    )
                    .on(&b.entry.object.key()),
                );
            }
        }
    }
    out
}

/// Egress hosts that import nothing.
pub fn check_egress(index: &Index) -> Vec<Diagnostic> {
    index
        .sidecars
        .iter()
        .flat_map(|s| unmatched_egress_hosts(index, s))
        .collect()
}

/// Why `b` (after `a` in name order) never applies where `a` does, if it does not.
fn overlap(index: &Index, a: &Typed<Sidecar>, b: &Typed<Sidecar>) -> Option<String> {
    match (sidecar_selector(a), sidecar_selector(b)) {
        (None, None) => Some(format!(
            "namespace {} has more than one Sidecar without a workload selector",
            a.namespace()
        )),
        (Some(sa), Some(sb)) => {
            let workload = index
                .services
                .values()
                .filter(|s| s.namespace == a.namespace())
                .flat_map(|s| &s.endpoints)
                .find(|ep| selects(sa, &ep.labels) && selects(sb, &ep.labels))?;
            Some(format!(
                "selects the workload at {} that {} selects too",
                workload.address,
                a.ns_name()
            ))
        }
        _ => None,
    }
}

fn unmatched_egress_hosts(index: &Index, sidecar: &Typed<Sidecar>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (l, listener) in sidecar.spec().egress.iter().enumerate() {
        for (h, raw) in listener.hosts.iter().enumerate() {
            let Ok(host) =
                crate::config::istio::sidecar::EgressHost::parse(raw, sidecar.namespace())
            else {
                continue;
            };
            let imports_service = index
                .services
                .values()
                .any(|s| host.matches(&s.namespace, &s.hostname));
            let imports_route = index.mesh_virtual_services.iter().any(|vs| {
                vs.hosts
                    .iter()
                    .any(|vh| host.matches_virtual_service(vs.namespace(), vh))
            });
            if !imports_service && !imports_route && !raw.ends_with("/*") {
                out.push(
                    Diagnostic::warning(
                        format!("spec.egress[{l}].hosts[{h}]"),
                        format!("{raw} matches no service or VirtualService"),
                    )
                    .on(&sidecar.entry.object.key()),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {

    use crate::index::Index;
    use crate::model::MeshConfig;
    use crate::store::Snapshot;

    fn warnings(yaml: &str) -> Vec<String> {
        let snapshot = Snapshot::from_yaml(yaml);
        Index::build(&snapshot, &MeshConfig::default())
            .diagnostics
            .iter()
            .map(|d| format!("{} {}", d.field, d.message))
            .collect()
    }

    const PLATFORM: &str = "
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: shop, labels: {app: reviews, version: v1}}
spec: {containers: [{name: app, image: x}]}
status: {podIP: 10.1.0.5}
";

    fn sidecar(name: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}, namespace: shop}}\nspec: {spec}\n"
        )
    }

    #[test]
    fn two_sidecars_for_one_workload_are_named() {
        let yaml = format!(
            "{PLATFORM}{}{}{}",
            sidecar("a", "{workloadSelector: {labels: {app: reviews}}}"),
            sidecar("b", "{workloadSelector: {labels: {version: v1}}}"),
            sidecar("c", "{workloadSelector: {labels: {app: other}}}"),
        );
        assert_eq!(
            warnings(&yaml),
            [
                "spec.workloadSelector selects the workload at 10.1.0.5 that shop/a selects too; shop/a applies"
            ]
        );
        let yaml = format!("{PLATFORM}{}{}", sidecar("a", "{}"), sidecar("b", "{}"));
        assert_eq!(
            warnings(&yaml),
            [
                "spec.workloadSelector namespace shop has more than one Sidecar without a workload selector; shop/a applies"
            ]
        );
    }

    #[test]
    fn egress_hosts_that_import_nothing_are_named() {
        let yaml = format!(
            "{PLATFORM}{}",
            sidecar(
                "a",
                "{egress: [{hosts: [./reviews.shop.svc.cluster.local, ./nothing.example.com, other/*]}]}"
            )
        );
        assert_eq!(
            warnings(&yaml),
            ["spec.egress[0].hosts[1] ./nothing.example.com matches no service or VirtualService"]
        );
    }
}

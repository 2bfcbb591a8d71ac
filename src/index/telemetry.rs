//! Which `telemetry.istio.io` Telemetry applies to a workload, and what access logging and
//! tracing they add up to, as istiod's `Telemetries` computes them: the root namespace's
//! (the first without a selector), then the workload's namespace's (likewise), then the first
//! in its namespace whose selector its labels match. Later levels override earlier ones per
//! field. Order within a namespace is namespace/name (istiod's is creation time; files have
//! none).
//!
//! Telemetries bound with `targetRef(s)` apply to gateways and waypoints by reference, never
//! by namespace or selector; they are skipped here, as security policies are in
//! [`super::security`].

use std::collections::BTreeMap;

use crate::config::KindSpec;
use crate::config::istio::Telemetry;
use crate::config::istio::telemetry::{AccessLogging, CustomTag, WorkloadMode};
use crate::model::MeshConfig;
use crate::store::Snapshot;

use super::security::{Applied, Workload};
use super::services::selects;

/// The side of the traffic a listener serves, as Telemetry's `match.mode` names it: sidecar
/// outbound and gateways are `CLIENT`, sidecar inbound `SERVER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    fn matches(self, mode: WorkloadMode) -> bool {
        match mode {
            WorkloadMode::ClientAndServer => true,
            WorkloadMode::Client => self == Side::Client,
            WorkloadMode::Server => self == Side::Server,
        }
    }
}

/// The Telemetries that apply to one workload, at most one per level.
#[derive(Debug, Clone, Copy, Default)]
pub struct Telemetries<'a> {
    pub root: Option<Applied<'a, Telemetry>>,
    pub namespace: Option<Applied<'a, Telemetry>>,
    pub workload: Option<Applied<'a, Telemetry>>,
}

/// Finds the Telemetries that apply to `workload`.
pub fn applying<'a>(
    snapshot: &'a Snapshot,
    root_namespace: &str,
    workload: Workload<'_>,
) -> Telemetries<'a> {
    let in_namespace = |ns| in_namespace(snapshot, ns);
    let namespace_wide = |t: &Applied<'_, Telemetry>| {
        t.spec
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty())
    };
    let root = in_namespace(root_namespace).find(namespace_wide);
    let namespace = (workload.namespace != root_namespace)
        .then(|| in_namespace(workload.namespace).find(namespace_wide))
        .flatten();
    let selected = in_namespace(workload.namespace).find(|t| {
        t.spec.selector.as_ref().is_some_and(|s| {
            !s.match_labels.is_empty() && selects(&s.match_labels, workload.labels)
        })
    });
    Telemetries {
        root,
        namespace,
        workload: selected,
    }
}

/// The Telemetries of `namespace` not bound by reference, in namespace/name order.
fn in_namespace<'a, 'n>(
    snapshot: &'a Snapshot,
    namespace: &'n str,
) -> impl Iterator<Item = Applied<'a, Telemetry>> + use<'a, 'n> {
    snapshot
        .entries(Telemetry::KIND)
        .filter(move |e| e.object.meta.namespace == namespace)
        .filter_map(|e| {
            let spec = Telemetry::from_spec(&e.object.spec)?;
            let by_reference = spec.target_ref.is_some() || !spec.target_refs.is_empty();
            (!by_reference).then_some(Applied {
                namespace: &e.object.meta.namespace,
                name: &e.object.meta.name,
                spec,
            })
        })
}

impl<'a> Telemetries<'a> {
    /// Root, namespace, workload: the order in which later levels override earlier ones.
    fn levels(&self) -> impl Iterator<Item = Applied<'a, Telemetry>> {
        [self.root, self.namespace, self.workload]
            .into_iter()
            .flatten()
    }

    /// `namespace/name` of the workload-selected Telemetry: all that the labels of a proxy
    /// decide here (the other two follow from its namespace).
    pub fn workload_key(&self) -> Option<String> {
        self.workload.map(|t| format!("{}/{}", t.namespace, t.name))
    }

    /// istiod's `mergeLogs`: the access log providers for `side`, each with the CEL filter its
    /// last mention set, in name order. `None` when access logging is not configured through
    /// Telemetry at all (no level has `accessLogging` and there is no default provider): the
    /// mesh's `accessLogFile` applies then.
    pub fn access_logging(
        &self,
        mesh: &MeshConfig,
        side: Side,
    ) -> Option<BTreeMap<String, Option<String>>> {
        let logs: Vec<&'a Vec<AccessLogging>> = self
            .levels()
            .map(|t| &t.spec.access_logging)
            .filter(|l| !l.is_empty())
            .collect();
        let defaults = &mesh.default_providers.access_logging;
        if logs.is_empty() && defaults.is_empty() {
            return None;
        }
        let mut providers: BTreeMap<String, Option<String>> = BTreeMap::new();
        if logs.is_empty() {
            providers.extend(defaults.iter().map(|p| (p.clone(), None)));
            return Some(providers);
        }
        // A level naming providers replaces the set in scope; its filters are per provider.
        let mut in_scope: Vec<String> = defaults.clone();
        let mut filters: BTreeMap<&str, Option<String>> = BTreeMap::new();
        for level in &logs {
            let mut named: Vec<String> = Vec::new();
            for entry in level.iter() {
                for p in &entry.providers {
                    filters.insert(&p.name, entry.filter.as_ref().map(|f| f.expression.clone()));
                    if !named.contains(&p.name) {
                        named.push(p.name.clone());
                    }
                }
            }
            if !named.is_empty() {
                in_scope = named;
            }
        }
        let mut parent: Vec<String> = defaults.clone();
        for level in &logs {
            for entry in level.iter() {
                let names: Vec<String> = if entry.providers.is_empty() {
                    parent.clone()
                } else {
                    entry.providers.iter().map(|p| p.name.clone()).collect()
                };
                parent = names.clone();
                for name in names {
                    if !in_scope.contains(&name)
                        || !side.matches(entry.matches.map(|m| m.mode).unwrap_or_default())
                    {
                        continue;
                    }
                    if entry.disabled == Some(true) {
                        providers.remove(&name);
                        continue;
                    }
                    let filter = filters.get(name.as_str()).cloned().flatten();
                    providers.insert(name, filter);
                }
            }
        }
        Some(providers)
    }

    /// istiod's `Tracing`: the tracing of client and server sides. `None` when no level has
    /// `tracing` and there is no default tracing provider.
    pub fn tracing(&self, mesh: &MeshConfig) -> Option<Tracing> {
        let entries: Vec<_> = self.levels().flat_map(|t| t.spec.tracing.iter()).collect();
        let default = mesh.default_providers.tracing.first();
        if entries.is_empty() && default.is_none() {
            return None;
        }
        let base = TracingSpec {
            provider: default.cloned(),
            ..TracingSpec::default()
        };
        let mut out = Tracing {
            client: base.clone(),
            server: base,
        };
        for entry in entries {
            let mode = entry.matches.map(|m| m.mode).unwrap_or_default();
            for (side, spec) in [
                (Side::Client, &mut out.client),
                (Side::Server, &mut out.server),
            ] {
                if !side.matches(mode) {
                    continue;
                }
                // istiod supports one provider per side: the first named.
                if let Some(p) = entry.providers.first() {
                    spec.provider = Some(p.name.clone());
                }
                if let Some(d) = entry.disable_span_reporting {
                    spec.disabled = d;
                }
                if !entry.custom_tags.is_empty() {
                    spec.custom_tags = entry.custom_tags.clone();
                }
                if let Some(pct) = entry.random_sampling_percentage {
                    spec.random_sampling_percentage = Some(pct);
                }
            }
        }
        for spec in [&mut out.client, &mut out.server] {
            if spec.provider.is_none() {
                spec.disabled = true;
            }
        }
        Some(out)
    }
}

/// Tracing per side.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    pub client: TracingSpec,
    pub server: TracingSpec,
}

impl Tracing {
    pub fn side(&self, side: Side) -> &TracingSpec {
        match side {
            Side::Client => &self.client,
            Side::Server => &self.server,
        }
    }
}

/// One side's merged tracing settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TracingSpec {
    /// The extension provider's name.
    pub provider: Option<String>,
    pub disabled: bool,
    /// Unset: istiod's default (1%).
    pub random_sampling_percentage: Option<f64>,
    pub custom_tags: BTreeMap<String, CustomTag>,
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::index::services::Labels;
    use crate::model::mesh::DefaultProviders;

    fn snapshot(yaml: &str) -> std::sync::Arc<Snapshot> {
        Snapshot::from_yaml(yaml)
    }

    fn telemetry(ns: &str, name: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}\n"
        )
    }

    fn labels(app: &str) -> Labels {
        [("app".to_string(), app.to_string())].into_iter().collect()
    }

    fn names(t: &Telemetries<'_>) -> Vec<String> {
        t.levels()
            .map(|a| format!("{}/{}", a.namespace, a.name))
            .collect()
    }

    #[test]
    fn one_per_level_root_namespace_then_selector() {
        let yaml = [
            telemetry(
                "istio-system",
                "mesh",
                "  tracing: [{randomSamplingPercentage: 1}]",
            ),
            telemetry("istio-system", "zz-second", "  tracing: [{}]"),
            telemetry("foo", "a-app", "  selector: {matchLabels: {app: a}}"),
            telemetry("foo", "b-ns", "  tracing: [{}]"),
            telemetry("foo", "c-other", "  selector: {matchLabels: {app: other}}"),
            telemetry(
                "foo",
                "d-gw",
                "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]",
            ),
        ]
        .concat();
        let snap = snapshot(&yaml);
        let a = labels("a");
        let got = applying(
            &snap,
            "istio-system",
            Workload {
                namespace: "foo",
                labels: &a,
            },
        );
        assert_eq!(names(&got), ["istio-system/mesh", "foo/b-ns", "foo/a-app"]);
        assert_eq!(got.workload_key().as_deref(), Some("foo/a-app"));
        let none = Labels::new();
        let got = applying(
            &snap,
            "istio-system",
            Workload {
                namespace: "bar",
                labels: &none,
            },
        );
        assert_eq!(names(&got), ["istio-system/mesh"]);
        assert_eq!(got.workload_key(), None);
    }

    fn applied<'a>(snap: &'a Snapshot, ns: &str, app: &'a Labels) -> Telemetries<'a> {
        applying(
            snap,
            "istio-system",
            Workload {
                namespace: ns,
                labels: app,
            },
        )
    }

    #[test]
    fn access_logging_merges_as_istiod_and_falls_back_when_unconfigured() {
        let mesh = MeshConfig::default();
        let empty = snapshot(&telemetry("foo", "t", "  tracing: [{}]"));
        let a = labels("a");
        assert_eq!(
            applied(&empty, "foo", &a).access_logging(&mesh, Side::Client),
            None
        );

        let snap = snapshot(
            &[
                telemetry("istio-system", "mesh", "  accessLogging: [{providers: [{name: envoy}]}]"),
                telemetry(
                    "foo",
                    "app",
                    "  selector: {matchLabels: {app: a}}\n  accessLogging:\n  - match: {mode: SERVER}\n    disabled: true\n  - match: {mode: CLIENT}\n    filter: {expression: 'response.code >= 400'}",
                ),
            ]
            .concat(),
        );
        let t = applied(&snap, "foo", &a);
        // The workload level names no provider: it inherits `envoy`, turns it off on the
        // server side and filters it on the client side.
        assert_eq!(t.access_logging(&mesh, Side::Server), Some(BTreeMap::new()));
        let client = t.access_logging(&mesh, Side::Client).unwrap();
        assert_eq!(client.keys().collect::<Vec<_>>(), ["envoy"]);
        assert_eq!(
            client["envoy"], None,
            "the filter goes with a provider named with it"
        );
        let other = labels("b");
        let t = applied(&snap, "foo", &other);
        assert_eq!(
            t.access_logging(&mesh, Side::Server),
            Some([("envoy".to_string(), None)].into_iter().collect())
        );

        let with_defaults = MeshConfig {
            default_providers: DefaultProviders {
                access_logging: vec!["envoy".into()],
                ..DefaultProviders::default()
            },
            ..MeshConfig::default()
        };
        let t = applied(&empty, "foo", &a);
        assert_eq!(
            t.access_logging(&with_defaults, Side::Client),
            Some([("envoy".to_string(), None)].into_iter().collect())
        );
    }

    #[test]
    fn a_filter_named_with_its_provider_applies() {
        let mesh = MeshConfig::default();
        let snap = snapshot(&telemetry(
            "foo",
            "ns",
            "  accessLogging:\n  - providers: [{name: envoy}]\n    filter: {expression: 'response.code >= 400'}",
        ));
        let a = labels("a");
        let got = applied(&snap, "foo", &a)
            .access_logging(&mesh, Side::Client)
            .unwrap();
        assert_eq!(got["envoy"].as_deref(), Some("response.code >= 400"));
    }

    #[test]
    fn tracing_overrides_per_field_and_side() {
        let mesh = MeshConfig::default();
        let snap = snapshot(
            &[
                telemetry(
                    "istio-system",
                    "mesh",
                    "  tracing: [{providers: [{name: zipkin}], randomSamplingPercentage: 10, customTags: {team: {literal: {value: core}}}}]",
                ),
                telemetry(
                    "foo",
                    "app",
                    "  selector: {matchLabels: {app: a}}\n  tracing:\n  - match: {mode: SERVER}\n    disableSpanReporting: true\n  - match: {mode: CLIENT}\n    randomSamplingPercentage: 100",
                ),
            ]
            .concat(),
        );
        let a = labels("a");
        let t = applied(&snap, "foo", &a).tracing(&mesh).unwrap();
        assert_eq!(t.client.provider.as_deref(), Some("zipkin"));
        assert_eq!(t.client.random_sampling_percentage, Some(100.0));
        assert!(!t.client.disabled);
        assert_eq!(t.client.custom_tags.keys().collect::<Vec<_>>(), ["team"]);
        assert!(t.server.disabled);
        assert_eq!(t.server.random_sampling_percentage, Some(10.0));

        let nothing = snapshot(&telemetry(
            "foo",
            "t",
            "  tracing: [{randomSamplingPercentage: 5}]",
        ));
        let t = applied(&nothing, "foo", &a).tracing(&mesh).unwrap();
        assert!(
            t.client.disabled && t.server.disabled,
            "no provider: no tracing"
        );
        let empty = snapshot(&telemetry("foo", "t", "  accessLogging: [{}]"));
        assert_eq!(applied(&empty, "foo", &a).tracing(&mesh), None);
    }
}

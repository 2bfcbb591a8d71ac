//! Which resources the fake serves, and the discovery documents that describe them.
//!
//! Built-in kinds are always served; custom resources only once their CRD is installed, so a
//! test can watch pilotfish notice a CRD that appears (or disappears) while it runs.

use std::cmp::Reverse;

use serde_json::{Value, json};

/// `(group, plural)`: a resource whatever version it is read at.
pub type ResourceKey = (String, String);

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    /// Empty for the core group.
    pub group: String,
    /// Served versions, most preferred first.
    pub versions: Vec<String>,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    /// A custom resource: has a generation and a status subresource, and lists carry
    /// apiVersion and kind on every item (built-in lists do not, as on a real server).
    pub custom: bool,
    /// What kubectl also accepts as the resource's name (`svc`, `vs`).
    pub short_names: Vec<String>,
    /// Groups of resources kubectl gets together (`kubectl get istio-io`).
    pub categories: Vec<String>,
}

impl ResourceType {
    fn builtin(group: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        ResourceType {
            group: group.into(),
            versions: vec!["v1".into()],
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            custom: false,
            short_names: Vec::new(),
            categories: Vec::new(),
        }
    }

    fn with_short_names(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    pub fn key(&self) -> ResourceKey {
        (self.group.clone(), self.plural.clone())
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// `plural.group`, the name error messages use.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn singular(&self) -> String {
        self.kind.to_lowercase()
    }
}

/// Kubernetes' version priority: GA before beta before alpha, higher numbers first.
fn version_priority(version: &str) -> (u8, u32, u32) {
    let rest = version.strip_prefix('v').unwrap_or(version);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    let (stability, minor) = if let Some(n) = tail.strip_prefix("beta") {
        (1, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (0, n.parse().unwrap_or(0))
    } else if tail.is_empty() {
        (2, 0)
    } else {
        (0, 0)
    };
    (stability, major, minor)
}

pub fn sort_versions(versions: &mut [String]) {
    versions.sort_by_key(|v| Reverse(version_priority(v)));
}

#[derive(Debug, Clone)]
pub struct Registry {
    types: Vec<ResourceType>,
}

impl Registry {
    /// The built-in kinds pilotfish reads or writes.
    pub fn builtin() -> Self {
        let types = vec![
            ResourceType::builtin("", "Namespace", "namespaces", false).with_short_names(&["ns"]),
            ResourceType::builtin("", "Pod", "pods", true).with_short_names(&["po"]),
            ResourceType::builtin("", "Service", "services", true).with_short_names(&["svc"]),
            ResourceType::builtin("", "ConfigMap", "configmaps", true).with_short_names(&["cm"]),
            ResourceType::builtin("", "Secret", "secrets", true),
            ResourceType::builtin("", "Event", "events", true).with_short_names(&["ev"]),
            ResourceType::builtin("discovery.k8s.io", "EndpointSlice", "endpointslices", true),
            ResourceType::builtin("coordination.k8s.io", "Lease", "leases", true),
            ResourceType::builtin(
                "admissionregistration.k8s.io",
                "ValidatingWebhookConfiguration",
                "validatingwebhookconfigurations",
                false,
            ),
            ResourceType::builtin(
                "admissionregistration.k8s.io",
                "MutatingWebhookConfiguration",
                "mutatingwebhookconfigurations",
                false,
            ),
            ResourceType::builtin(
                super::crds::GROUP,
                super::crds::KIND,
                super::crds::PLURAL,
                false,
            )
            .with_short_names(&["crd", "crds"]),
        ];
        Registry { types }
    }

    /// Adds a custom resource, or replaces its definition when already installed.
    pub fn install(&mut self, resource: ResourceType) {
        match self.types.iter_mut().find(|t| t.key() == resource.key()) {
            Some(existing) => *existing = resource,
            None => self.types.push(resource),
        }
    }

    pub fn remove(&mut self, group: &str, plural: &str) -> Option<ResourceType> {
        let index = self
            .types
            .iter()
            .position(|t| t.group == group && t.plural == plural)?;
        Some(self.types.remove(index))
    }

    pub fn by_plural(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.plural == plural && t.serves(version))
    }

    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.kind == kind && t.serves(version))
    }

    pub fn by_key(&self, key: &ResourceKey) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == key.0 && t.plural == key.1)
    }

    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    /// Every served (group, version), the core group's first.
    pub fn group_versions(&self) -> Vec<(String, String)> {
        let named = self
            .groups()
            .into_iter()
            .flat_map(|(group, versions)| versions.into_iter().map(move |v| (group.clone(), v)));
        std::iter::once((String::new(), "v1".to_string()))
            .chain(named)
            .collect()
    }

    /// Named groups in first-installed order, each with its versions, most preferred first.
    fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for t in self.types.iter().filter(|t| !t.group.is_empty()) {
            let index = match groups.iter().position(|(g, _)| *g == t.group) {
                Some(i) => i,
                None => {
                    groups.push((t.group.clone(), Vec::new()));
                    groups.len() - 1
                }
            };
            for v in &t.versions {
                if !groups[index].1.contains(v) {
                    groups[index].1.push(v.clone());
                }
            }
        }
        for (_, versions) in &mut groups {
            sort_versions(versions);
        }
        groups
    }

    /// `GET /api`.
    pub fn core_versions(&self, server_address: &str) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        })
    }

    fn group_document(name: &str, versions: &[String]) -> Value {
        let versions: Vec<Value> = versions
            .iter()
            .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
            .collect();
        json!({
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": name,
            "versions": versions,
            "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
        })
    }

    /// `GET /apis`.
    pub fn group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .iter()
            .map(|(name, versions)| {
                let mut group = Self::group_document(name, versions);
                if let Some(object) = group.as_object_mut() {
                    object.remove("kind");
                    object.remove("apiVersion");
                }
                group
            })
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `GET /apis/{group}`.
    pub fn group(&self, name: &str) -> Option<Value> {
        self.groups()
            .into_iter()
            .find(|(g, _)| g == name)
            .map(|(g, versions)| Self::group_document(&g, &versions))
    }

    /// `GET /api/v1` or `GET /apis/{group}/{version}`.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let served: Vec<&ResourceType> = self
            .types
            .iter()
            .filter(|t| t.group == group && t.serves(version))
            .collect();
        if served.is_empty() {
            return None;
        }
        let mut resources = Vec::new();
        for t in served {
            resources.push(json!({
                "name": t.plural,
                "singularName": t.singular(),
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": VERBS,
                "shortNames": t.short_names,
                "categories": t.categories,
            }));
            resources.push(json!({
                "name": format!("{}/status", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        let group_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
        )
    }

    /// Aggregated discovery (`apidiscovery.k8s.io/v2`) of `/api` (`core`) or `/apis`.
    pub fn aggregated(&self, core: bool) -> Value {
        let groups = if core {
            vec![(String::new(), vec!["v1".to_string()])]
        } else {
            self.groups()
        };
        let items: Vec<Value> = groups
            .iter()
            .map(|(group, versions)| {
                let versions: Vec<Value> = versions
                    .iter()
                    .map(|version| {
                        let resources: Vec<Value> = self
                            .types
                            .iter()
                            .filter(|t| t.group == *group && t.serves(version))
                            .map(|t| {
                                json!({
                                    "resource": t.plural,
                                    "responseKind": {"group": t.group, "version": version, "kind": t.kind},
                                    "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
                                    "singularResource": t.singular(),
                                    "verbs": VERBS,
                                    "shortNames": t.short_names,
                                    "categories": t.categories,
                                    "subresources": [{
                                        "subresource": "status",
                                        "responseKind": {"group": t.group, "version": version, "kind": t.kind},
                                        "verbs": ["get", "patch", "update"],
                                    }],
                                })
                            })
                            .collect();
                        json!({"version": version, "resources": resources, "freshness": "Current"})
                    })
                    .collect();
                json!({"metadata": {"name": group}, "versions": versions})
            })
            .collect();
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
    }
}

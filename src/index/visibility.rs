//! `exportTo`: which namespaces see a Service, ServiceEntry, VirtualService or
//! DestinationRule, as istiod reads it.
//!
//! Values are `*` (every namespace), `.` (the object's own namespace), `~` (none) or namespace
//! names. An object without `exportTo` takes the mesh-wide default for its kind
//! (`defaultServiceExportTo` and friends, `*` unless set). The own namespace is not implied:
//! `exportTo: [other]` hides an object from its own namespace, as in istiod.

use std::collections::BTreeSet;

use serde::Serialize;

/// Kubernetes Services carry their `exportTo` in this annotation, comma separated.
pub const SERVICE_EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum ExportTo {
    /// `*`: every namespace.
    Public,
    /// These namespaces only (`.` already resolved); empty for `~`.
    Namespaces(BTreeSet<String>),
}

impl Default for ExportTo {
    fn default() -> Self {
        ExportTo::Public
    }
}

impl ExportTo {
    /// `values` of an object in `own_namespace`, else `default` (the mesh-wide one).
    pub fn parse<S: AsRef<str>>(values: &[S], own_namespace: &str, default: &[String]) -> ExportTo {
        if values.is_empty() {
            return if default.is_empty() {
                ExportTo::Public
            } else {
                ExportTo::parse(default, own_namespace, &[])
            };
        }
        let mut namespaces = BTreeSet::new();
        for value in values.iter().map(|v| v.as_ref().trim()) {
            match value {
                "*" => return ExportTo::Public,
                "~" => {}
                "." => {
                    namespaces.insert(own_namespace.to_string());
                }
                "" => {}
                ns => {
                    namespaces.insert(ns.to_string());
                }
            }
        }
        ExportTo::Namespaces(namespaces)
    }

    /// A Kubernetes Service's annotation value (`"., istio-system"`).
    pub fn of_annotation(
        value: Option<&String>,
        own_namespace: &str,
        default: &[String],
    ) -> ExportTo {
        let values: Vec<&str> = value
            .map(|v| v.split(',').filter(|s| !s.trim().is_empty()).collect())
            .unwrap_or_default();
        ExportTo::parse(&values, own_namespace, default)
    }

    pub fn visible_to(&self, namespace: &str) -> bool {
        match self {
            ExportTo::Public => true,
            ExportTo::Namespaces(set) => set.contains(namespace),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> ExportTo {
        ExportTo::parse(values, "shop", &[])
    }

    #[test]
    fn values_as_istiod_reads_them() {
        assert_eq!(parse(&[]), ExportTo::Public);
        assert_eq!(parse(&["*"]), ExportTo::Public);
        assert!(parse(&["."]).visible_to("shop"));
        assert!(!parse(&["."]).visible_to("other"));
        assert!(!parse(&["~"]).visible_to("shop"));
        let other = parse(&["other"]);
        assert!(
            other.visible_to("other") && !other.visible_to("shop"),
            "the own namespace is not implied"
        );
        assert!(parse(&[".", "istio-system"]).visible_to("istio-system"));
    }

    #[test]
    fn the_mesh_default_applies_only_without_values() {
        let private = [".".to_string()];
        assert!(!ExportTo::parse::<&str>(&[], "shop", &private).visible_to("other"));
        assert!(ExportTo::parse(&["*"], "shop", &private).visible_to("other"));
    }

    #[test]
    fn the_service_annotation_is_comma_separated() {
        let value = ".,istio-system".to_string();
        let e = ExportTo::of_annotation(Some(&value), "shop", &[]);
        assert!(e.visible_to("shop") && e.visible_to("istio-system") && !e.visible_to("other"));
        assert_eq!(ExportTo::of_annotation(None, "shop", &[]), ExportTo::Public);
    }
}

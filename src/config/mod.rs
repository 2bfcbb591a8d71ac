//! The typed objects pilotfish serves from: Istio kinds and the Kubernetes kinds they refer to.
//!
//! Every source (a directory of YAML, the Kubernetes API) produces [`Object`]s; nothing past this
//! module knows where an object came from.

pub mod istio;
pub mod kube;
pub mod mesh_config;
pub mod parse;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// The kinds pilotfish understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    Gateway,
    VirtualService,
    DestinationRule,
    ServiceEntry,
    WorkloadEntry,
    Sidecar,
    Service,
    EndpointSlice,
    Pod,
    Namespace,
    ConfigMap,
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
    Telemetry,
    Secret,
}

impl Kind {
    /// In declaration order: the store indexes by `kind as usize`.
    pub const ALL: [Kind; 16] = [
        Kind::Gateway,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::Sidecar,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Pod,
        Kind::Namespace,
        Kind::ConfigMap,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
        Kind::Telemetry,
        Kind::Secret,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Gateway => "Gateway",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::Sidecar => "Sidecar",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::Namespace => "Namespace",
            Kind::ConfigMap => "ConfigMap",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::Telemetry => "Telemetry",
            Kind::Secret => "Secret",
        }
    }

    /// The API group and the versions of it that serve this kind.
    pub fn group_versions(self) -> (&'static str, &'static [&'static str]) {
        const ISTIO: &[&str] = &["v1", "v1beta1", "v1alpha3"];
        match self {
            Kind::Gateway | Kind::VirtualService | Kind::DestinationRule | Kind::ServiceEntry => {
                ("networking.istio.io", ISTIO)
            }
            Kind::WorkloadEntry | Kind::Sidecar => ("networking.istio.io", ISTIO),
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication => {
                ("security.istio.io", &["v1", "v1beta1"])
            }
            Kind::Telemetry => ("telemetry.istio.io", &["v1", "v1alpha1"]),
            Kind::Service | Kind::Pod | Kind::Namespace | Kind::ConfigMap | Kind::Secret => {
                ("", &["v1"])
            }
            Kind::EndpointSlice => ("discovery.k8s.io", &["v1"]),
        }
    }

    /// Resolves `apiVersion` + `kind` as written in a manifest.
    pub fn from_type_meta(api_version: &str, kind: &str) -> Option<Kind> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        Kind::ALL.into_iter().find(|k| {
            let (g, versions) = k.group_versions();
            k.name() == kind && g == group && versions.contains(&version)
        })
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        self != Kind::Namespace
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Identifies one object: kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// The parts of Kubernetes `ObjectMeta` that pilotfish uses.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Meta {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    pub generation: i64,
}

/// A kind's spec, typed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Spec {
    Gateway(istio::Gateway),
    VirtualService(istio::VirtualService),
    DestinationRule(istio::DestinationRule),
    ServiceEntry(istio::ServiceEntry),
    WorkloadEntry(istio::WorkloadEntry),
    Sidecar(istio::Sidecar),
    Service(kube::Service),
    EndpointSlice(kube::EndpointSlice),
    Pod(kube::Pod),
    Namespace,
    ConfigMap(kube::ConfigMap),
    PeerAuthentication(istio::PeerAuthentication),
    AuthorizationPolicy(istio::AuthorizationPolicy),
    RequestAuthentication(istio::RequestAuthentication),
    Telemetry(istio::Telemetry),
    Secret(kube::Secret),
}

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Gateway(_) => Kind::Gateway,
            Spec::VirtualService(_) => Kind::VirtualService,
            Spec::DestinationRule(_) => Kind::DestinationRule,
            Spec::ServiceEntry(_) => Kind::ServiceEntry,
            Spec::WorkloadEntry(_) => Kind::WorkloadEntry,
            Spec::Sidecar(_) => Kind::Sidecar,
            Spec::Service(_) => Kind::Service,
            Spec::EndpointSlice(_) => Kind::EndpointSlice,
            Spec::Pod(_) => Kind::Pod,
            Spec::Namespace => Kind::Namespace,
            Spec::ConfigMap(_) => Kind::ConfigMap,
            Spec::PeerAuthentication(_) => Kind::PeerAuthentication,
            Spec::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Spec::RequestAuthentication(_) => Kind::RequestAuthentication,
            Spec::Telemetry(_) => Kind::Telemetry,
            Spec::Secret(_) => Kind::Secret,
        }
    }
}

/// One typed object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Object {
    pub meta: Meta,
    pub spec: Spec,
}

impl Object {
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            kind: self.kind(),
            namespace: self.meta.namespace.clone(),
            name: self.meta.name.clone(),
        }
    }
}

/// Typed access to an object's spec, so the index can say `obj.spec::<VirtualService>()`.
pub trait KindSpec: Sized {
    const KIND: Kind;
    fn from_spec(spec: &Spec) -> Option<&Self>;
}

macro_rules! kind_spec {
    ($($ty:ty => $variant:ident),* $(,)?) => {$(
        impl KindSpec for $ty {
            const KIND: Kind = Kind::$variant;
            fn from_spec(spec: &Spec) -> Option<&Self> {
                match spec {
                    Spec::$variant(s) => Some(s),
                    _ => None,
                }
            }
        }
    )*};
}

kind_spec! {
    istio::Gateway => Gateway,
    istio::VirtualService => VirtualService,
    istio::DestinationRule => DestinationRule,
    istio::ServiceEntry => ServiceEntry,
    istio::WorkloadEntry => WorkloadEntry,
    istio::Sidecar => Sidecar,
    kube::Service => Service,
    kube::EndpointSlice => EndpointSlice,
    kube::Pod => Pod,
    kube::ConfigMap => ConfigMap,
    istio::PeerAuthentication => PeerAuthentication,
    istio::AuthorizationPolicy => AuthorizationPolicy,
    istio::RequestAuthentication => RequestAuthentication,
    istio::Telemetry => Telemetry,
    kube::Secret => Secret,
}

impl Object {
    pub fn spec<T: KindSpec>(&self) -> Option<&T> {
        T::from_spec(&self.spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_every_served_version() {
        for v in ["v1", "v1beta1", "v1alpha3"] {
            assert_eq!(
                Kind::from_type_meta(&format!("networking.istio.io/{v}"), "VirtualService"),
                Some(Kind::VirtualService)
            );
        }
        assert_eq!(Kind::from_type_meta("v1", "Service"), Some(Kind::Service));
        assert_eq!(
            Kind::from_type_meta("networking.istio.io/v1alpha3", "Sidecar"),
            Some(Kind::Sidecar)
        );
        assert_eq!(
            Kind::from_type_meta("v1", "ConfigMap"),
            Some(Kind::ConfigMap)
        );
        assert_eq!(
            Kind::from_type_meta("discovery.k8s.io/v1", "EndpointSlice"),
            Some(Kind::EndpointSlice)
        );
        for v in ["v1", "v1beta1"] {
            let api = format!("security.istio.io/{v}");
            assert_eq!(
                Kind::from_type_meta(&api, "PeerAuthentication"),
                Some(Kind::PeerAuthentication)
            );
            assert_eq!(
                Kind::from_type_meta(&api, "AuthorizationPolicy"),
                Some(Kind::AuthorizationPolicy)
            );
            assert_eq!(
                Kind::from_type_meta(&api, "RequestAuthentication"),
                Some(Kind::RequestAuthentication)
            );
        }
        assert_eq!(
            Kind::from_type_meta("security.istio.io/v1alpha3", "AuthorizationPolicy"),
            None
        );
        assert_eq!(
            Kind::from_type_meta("networking.istio.io/v1", "PeerAuthentication"),
            None
        );
        assert_eq!(
            Kind::from_type_meta("telemetry.istio.io/v1alpha1", "Telemetry"),
            Some(Kind::Telemetry)
        );
        assert_eq!(
            Kind::from_type_meta("telemetry.istio.io/v1", "Telemetry"),
            Some(Kind::Telemetry)
        );
        assert_eq!(
            Kind::from_type_meta("telemetry.istio.io/v1beta1", "Telemetry"),
            None
        );
        assert_eq!(Kind::from_type_meta("v1", "Secret"), Some(Kind::Secret));
        assert_eq!(
            Kind::from_type_meta("networking.istio.io/v2", "VirtualService"),
            None
        );
        assert_eq!(Kind::from_type_meta("apps/v1", "Deployment"), None);
    }

    #[test]
    fn all_is_in_declaration_order() {
        for (i, kind) in Kind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{kind}");
        }
    }
}

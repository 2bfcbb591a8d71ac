//! What each Istio kind's CustomResourceDefinition says besides its schema, as Istio's own
//! (manifests/charts/base/files/crd-all.gen.yaml) says it: a cluster may hold objects created
//! under Istio's CRDs, and `kubectl get vs`, `kubectl get istio-io` must keep working.

use schemars::{JsonSchema, Schema};

use crate::config::Kind;
use crate::config::istio;

/// One `additionalPrinterColumns` entry.
pub struct Column {
    pub name: &'static str,
    pub json_path: &'static str,
    pub type_: &'static str,
    pub description: &'static str,
}

/// An Istio kind as its CRD names it.
pub struct CrdKind {
    pub kind: Kind,
    pub plural: &'static str,
    pub short_names: &'static [&'static str],
    /// The version the API server stores; the others are served as the same schema.
    pub storage_version: &'static str,
    pub columns: &'static [Column],
    /// The `spec` description, pointing at Istio's reference page for the kind.
    pub description: &'static str,
    /// Whether an object without `spec` is refused (as Istio's CRD refuses it).
    pub spec_required: bool,
    /// The schemars schema of the kind's spec type.
    pub spec_schema: fn() -> Schema,
}

/// The kinds pilotfish serves under Istio's CRDs.
pub const KINDS: &[CrdKind] = &[
    CrdKind {
        kind: Kind::DestinationRule,
        plural: "destinationrules",
        short_names: &["dr"],
        storage_version: "v1",
        columns: &[
            column(
                "Host",
                ".spec.host",
                "The name of a service from the service registry",
            ),
            AGE_DESTINATION_RULE,
        ],
        description: "Configuration affecting load balancing, outlier detection, etc. See more details at: https://istio.io/docs/reference/config/networking/destination-rule.html",
        spec_required: false,
        spec_schema: schema_of::<istio::DestinationRule>,
    },
    CrdKind {
        kind: Kind::Gateway,
        plural: "gateways",
        short_names: &["gw"],
        storage_version: "v1",
        columns: &[],
        description: "Configuration affecting edge load balancer. See more details at: https://istio.io/docs/reference/config/networking/gateway.html",
        spec_required: false,
        spec_schema: schema_of::<istio::Gateway>,
    },
    CrdKind {
        kind: Kind::ServiceEntry,
        plural: "serviceentries",
        short_names: &["se"],
        storage_version: "v1",
        columns: &[
            column(
                "Hosts",
                ".spec.hosts",
                "The hosts associated with the ServiceEntry",
            ),
            column(
                "Location",
                ".spec.location",
                "Whether the service is external to the mesh or part of the mesh (MESH_EXTERNAL or MESH_INTERNAL)",
            ),
            column(
                "Resolution",
                ".spec.resolution",
                "Service resolution mode for the hosts (NONE, STATIC, or DNS)",
            ),
            AGE,
        ],
        description: "Configuration affecting service registry. See more details at: https://istio.io/docs/reference/config/networking/service-entry.html",
        spec_required: true,
        spec_schema: schema_of::<istio::ServiceEntry>,
    },
    CrdKind {
        kind: Kind::Sidecar,
        plural: "sidecars",
        short_names: &[],
        storage_version: "v1",
        columns: &[],
        description: "Configuration affecting network reachability of a sidecar. See more details at: https://istio.io/docs/reference/config/networking/sidecar.html",
        spec_required: false,
        spec_schema: schema_of::<istio::Sidecar>,
    },
    CrdKind {
        kind: Kind::VirtualService,
        plural: "virtualservices",
        short_names: &["vs"],
        storage_version: "v1",
        columns: &[
            column(
                "Gateways",
                ".spec.gateways",
                "The names of gateways and sidecars that should apply these routes",
            ),
            column(
                "Hosts",
                ".spec.hosts",
                "The destination hosts to which traffic is being sent",
            ),
            AGE,
        ],
        description: "Configuration affecting label/content routing, sni routing, etc. See more details at: https://istio.io/docs/reference/config/networking/virtual-service.html",
        spec_required: false,
        spec_schema: schema_of::<istio::VirtualService>,
    },
    CrdKind {
        kind: Kind::WorkloadEntry,
        plural: "workloadentries",
        short_names: &["we"],
        storage_version: "v1",
        columns: &[
            AGE,
            column(
                "Address",
                ".spec.address",
                "Address associated with the network endpoint.",
            ),
        ],
        description: "Configuration affecting VMs onboarded into the mesh. See more details at: https://istio.io/docs/reference/config/networking/workload-entry.html",
        spec_required: true,
        spec_schema: schema_of::<istio::WorkloadEntry>,
    },
    CrdKind {
        kind: Kind::AuthorizationPolicy,
        plural: "authorizationpolicies",
        short_names: &["ap"],
        storage_version: "v1",
        columns: &[
            column("Action", ".spec.action", "The operation to take."),
            AGE,
        ],
        description: "Configuration for access control on workloads. See more details at: https://istio.io/docs/reference/config/security/authorization-policy.html",
        spec_required: false,
        spec_schema: schema_of::<istio::AuthorizationPolicy>,
    },
    CrdKind {
        kind: Kind::PeerAuthentication,
        plural: "peerauthentications",
        short_names: &["pa"],
        storage_version: "v1",
        columns: &[
            column(
                "Mode",
                ".spec.mtls.mode",
                "Defines the mTLS mode used for peer authentication.",
            ),
            AGE,
        ],
        description: "Peer authentication configuration for workloads. See more details at: https://istio.io/docs/reference/config/security/peer_authentication.html",
        spec_required: false,
        spec_schema: schema_of::<istio::PeerAuthentication>,
    },
    CrdKind {
        kind: Kind::RequestAuthentication,
        plural: "requestauthentications",
        short_names: &["ra"],
        storage_version: "v1",
        columns: &[],
        description: "Request authentication configuration for workloads. See more details at: https://istio.io/docs/reference/config/security/request_authentication.html",
        spec_required: false,
        spec_schema: schema_of::<istio::RequestAuthentication>,
    },
    CrdKind {
        kind: Kind::Telemetry,
        plural: "telemetries",
        short_names: &["telemetry"],
        // Istio still stores Telemetry as v1alpha1; storing another version would strand
        // objects a cluster already holds.
        storage_version: "v1alpha1",
        columns: &[AGE],
        description: "Telemetry configuration for workloads. See more details at: https://istio.io/docs/reference/config/telemetry.html",
        spec_required: false,
        spec_schema: schema_of::<istio::Telemetry>,
    },
];

/// The kind's entry, if pilotfish has a CRD for it.
pub fn find(kind: Kind) -> Option<&'static CrdKind> {
    KINDS.iter().find(|k| k.kind == kind)
}

fn schema_of<T: JsonSchema>() -> Schema {
    schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>()
}

const fn column(name: &'static str, json_path: &'static str, description: &'static str) -> Column {
    Column {
        name,
        json_path,
        type_: "string",
        description,
    }
}

/// Kubernetes' own description of `creationTimestamp`, as most of Istio's CRDs quote it.
const AGE: Column = Column {
    name: "Age",
    json_path: ".metadata.creationTimestamp",
    type_: "date",
    description: "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC. Populated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/api-conventions.md#metadata",
};

/// DestinationRule's CRD quotes a newer wording of the same description.
const AGE_DESTINATION_RULE: Column = Column {
    description: "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC. Populated by the system. Read-only. Null for lists. For more information, see [Kubernetes API Conventions](https://github.com/kubernetes/community/blob/master/contributors/devel/sig-architecture/api-conventions.md#metadata)",
    ..AGE
};

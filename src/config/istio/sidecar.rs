//! `networking.istio.io` Sidecar: what a workload's proxy listens on and which services it sees.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Port, WorkloadSelector};
use super::destination_rule::ConnectionPoolSettings;
use super::gateway::ServerTls;
use super::virtual_service::Destination;
use crate::model::host;
use crate::model::mesh::OutboundTrafficMode;

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Sidecar {
    /// `None` (or no labels): the Sidecar applies to every workload of its namespace.
    pub workload_selector: Option<WorkloadSelector>,
    pub ingress: Vec<IngressListener>,
    /// Empty: istiod imports `*/*` on one catch-all listener.
    pub egress: Vec<EgressListener>,
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
}

impl Sidecar {
    /// The outbound mode for proxies this Sidecar applies to: its own when it has an
    /// `outboundTrafficPolicy`, else the mesh's (istiod's `SidecarScope.OutboundTrafficPolicy`).
    pub fn outbound_mode(&self, mesh: OutboundTrafficMode) -> OutboundTrafficMode {
        self.outbound_traffic_policy
            .as_ref()
            .map_or(mesh, OutboundTrafficPolicy::mode)
    }
}

/// `IstioIngressListener`: a port of the workload the proxy accepts traffic on.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct IngressListener {
    /// Required; `None` only so that its absence is reported as istiod words it.
    pub port: Option<Port>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub bind: String,
    pub capture_mode: CaptureMode,
    /// `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`, `[::]:PORT`, `:PORT` or `unix://path`;
    /// empty forwards to the port the traffic arrived on.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub default_endpoint: String,
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub tls: Option<ServerTls>,
}

/// `IstioEgressListener`: a listener for outbound traffic and the hosts it imports.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct EgressListener {
    /// `None`: the catch-all listener (it must come last).
    pub port: Option<Port>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub bind: String,
    pub capture_mode: CaptureMode,
    /// `namespace/dnsName`; see [`EgressHost`].
    pub hosts: Vec<String>,
}

impl EgressListener {
    /// The listener's hosts, parsed; hosts that do not parse are left out (validation rejects
    /// them before a Sidecar is served).
    pub fn egress_hosts(&self, own_namespace: &str) -> Vec<EgressHost> {
        self.hosts
            .iter()
            .filter_map(|h| EgressHost::parse(h, own_namespace).ok())
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    /// The proxy's own interception mode decides.
    #[default]
    Default,
    Iptables,
    /// Traffic reaches the listener's bind address directly, uncaptured.
    None,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct OutboundTrafficPolicy {
    /// Unset is the protobuf zero value, `REGISTRY_ONLY` (not the mesh's default).
    #[schemars(schema_with = "outbound_mode_schema")]
    pub mode: Option<OutboundTrafficMode>,
    /// Where ALLOW_ANY sends unknown traffic instead of its original destination.
    pub egress_proxy: Option<Destination>,
}

/// The CRD spells the mode by name (numbers are for mesh config only).
fn outbound_mode_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "enum": ["REGISTRY_ONLY", "ALLOW_ANY"] })
}

impl OutboundTrafficPolicy {
    pub fn mode(&self) -> OutboundTrafficMode {
        self.mode.unwrap_or(OutboundTrafficMode::RegistryOnly)
    }
}

/// Which namespaces' services an egress host imports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NamespaceSelector {
    /// `*`
    Any,
    /// `~`: none (a listener that imports nothing).
    Nothing,
    /// A namespace by name; `.` is the Sidecar's own.
    Named(String),
}

/// Which host names an egress host imports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `*`
    Any,
    /// `*.example.com`, kept as `.example.com`: names ending in it, not `example.com` itself.
    Suffix(String),
    /// A fully qualified name; istiod allows no short names here.
    Exact(String),
}

/// One `hosts` entry of an egress listener: `namespace/dnsName`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EgressHost {
    pub namespace: NamespaceSelector,
    pub host: HostPattern,
}

/// An egress host that is not `namespace/dnsName` as istiod accepts it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("egress host {host:?}: {reason}")]
pub struct EgressHostError {
    pub host: String,
    pub reason: &'static str,
}

impl EgressHost {
    /// Parses `ns/host`, with `.` meaning `own_namespace`, `*` any namespace and `~` none.
    /// Structure only; [`crate::validate`] checks the DNS syntax of each part.
    pub fn parse(host: &str, own_namespace: &str) -> Result<EgressHost, EgressHostError> {
        let err = |reason| EgressHostError {
            host: host.to_string(),
            reason,
        };
        let (ns, name) = host
            .split_once('/')
            .ok_or_else(|| err("host must be of form namespace/dnsName"))?;
        if ns.is_empty() || name.is_empty() {
            return Err(err(
                "config namespace and dnsName in host entry cannot be empty",
            ));
        }
        let namespace = match ns {
            "*" => NamespaceSelector::Any,
            "~" => NamespaceSelector::Nothing,
            "." => NamespaceSelector::Named(own_namespace.to_string()),
            _ if ns.contains(['*', '~', '.']) => return Err(err("invalid namespace")),
            _ => NamespaceSelector::Named(ns.to_string()),
        };
        let host = if name == "*" {
            HostPattern::Any
        } else if let Some(suffix) = name.strip_prefix('*').filter(|s| s.starts_with('.')) {
            if suffix.contains('*') || suffix.len() < 2 {
                return Err(err("partial wildcard not allowed"));
            }
            HostPattern::Suffix(suffix.to_string())
        } else if name.contains('*') {
            return Err(err("partial wildcard not allowed"));
        } else if !name.contains('.') {
            return Err(err("short names (non FQDN) are not allowed"));
        } else {
            HostPattern::Exact(name.to_string())
        };
        Ok(EgressHost { namespace, host })
    }

    fn namespace_matches(&self, namespace: &str) -> bool {
        match &self.namespace {
            NamespaceSelector::Any => true,
            NamespaceSelector::Nothing => false,
            NamespaceSelector::Named(n) => n == namespace,
        }
    }

    /// Whether this entry imports the service `hostname` of `namespace`: the service's name,
    /// itself possibly a `*.` wildcard (ServiceEntry), must fall within the pattern
    /// (istiod's `hostClassification.Matches`, `host.Name.SubsetOf`).
    pub fn matches(&self, namespace: &str, hostname: &str) -> bool {
        self.namespace_matches(namespace)
            && match &self.host {
                HostPattern::Any => true,
                HostPattern::Exact(h) => h == hostname,
                HostPattern::Suffix(s) => hostname
                    .strip_prefix('*')
                    .unwrap_or(hostname)
                    .ends_with(s.as_str()),
            }
    }

    /// Whether this entry imports a VirtualService host of `namespace`. Unlike services, either
    /// side may be the wider wildcard (`*.com` imports a route for `a.com` and the other way
    /// round): istiod's `VSMatches` for VirtualServices without gateway semantics.
    pub fn matches_virtual_service(&self, namespace: &str, vs_host: &str) -> bool {
        if !self.namespace_matches(namespace) {
            return false;
        }
        let pattern = match &self.host {
            HostPattern::Any => return true,
            HostPattern::Exact(h) => h.as_str(),
            HostPattern::Suffix(s) => return host::overlap(&format!("*{s}"), vs_host),
        };
        host::overlap(pattern, vs_host)
    }
}

/// Go's `net.SplitHostPort`, whose rules istiod applies to an ingress `defaultEndpoint`:
/// `host:port`, `[ipv6]:port` or `:port`. Validation reports its errors; the generator reads
/// endpoints that passed.
pub fn split_host_port(addr: &str) -> Result<(&str, &str), String> {
    let fail = |why: &str| Err(format!("address {addr}: {why}"));
    let Some(colon) = addr.rfind(':') else {
        return fail("missing port in address");
    };
    let (host, j, k) = if addr.starts_with('[') {
        let Some(end) = addr.find(']') else {
            return fail("missing ']' in address");
        };
        if end + 1 == addr.len() {
            return fail("missing port in address");
        }
        if end + 1 != colon {
            return if addr.as_bytes()[end + 1] == b':' {
                fail("too many colons in address")
            } else {
                fail("missing port in address")
            };
        }
        (&addr[1..end], 1, end + 1)
    } else {
        let host = &addr[..colon];
        if host.contains(':') {
            return fail("too many colons in address");
        }
        (host, 0, 0)
    };
    if addr[j..].contains('[') {
        return fail("unexpected '[' in address");
    }
    if addr[k..].contains(']') {
        return fail("unexpected ']' in address");
    }
    Ok((host, &addr[colon + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(h: &str) -> EgressHost {
        EgressHost::parse(h, "bookinfo").unwrap()
    }

    #[test]
    fn parses_namespace_and_host() {
        assert_eq!(
            parse("./*"),
            EgressHost {
                namespace: NamespaceSelector::Named("bookinfo".into()),
                host: HostPattern::Any
            }
        );
        assert_eq!(parse("*/*").namespace, NamespaceSelector::Any);
        assert_eq!(parse("~/*").namespace, NamespaceSelector::Nothing);
        assert_eq!(
            parse("istio-system/*").namespace,
            NamespaceSelector::Named("istio-system".into())
        );
        assert_eq!(
            parse("*/*.example.com").host,
            HostPattern::Suffix(".example.com".into())
        );
        assert_eq!(
            parse("*/reviews.bookinfo.svc.cluster.local").host,
            HostPattern::Exact("reviews.bookinfo.svc.cluster.local".into())
        );
    }

    #[test]
    fn rejects_what_istiod_rejects() {
        for bad in [
            "reviews.com",
            "/a.com",
            "ns/",
            "ns/reviews",
            "ns/*a.com",
            "ns/a.*.com",
            "ns/*.",
            "a.b/x.com",
            "*/**",
        ] {
            assert!(EgressHost::parse(bad, "ns").is_err(), "{bad}");
        }
        let err = EgressHost::parse("ns/reviews", "ns").unwrap_err();
        assert_eq!(
            err.to_string(),
            "egress host \"ns/reviews\": short names (non FQDN) are not allowed"
        );
    }

    #[test]
    fn matches_services_by_namespace_and_host() {
        let svc = "reviews.bookinfo.svc.cluster.local";
        assert!(parse("./*").matches("bookinfo", svc));
        assert!(!parse("./*").matches("other", svc));
        assert!(parse("*/*").matches("other", svc));
        assert!(!parse("~/*").matches("bookinfo", svc));
        assert!(parse("*/reviews.bookinfo.svc.cluster.local").matches("bookinfo", svc));
        assert!(!parse("*/ratings.bookinfo.svc.cluster.local").matches("bookinfo", svc));
        assert!(parse("*/*.svc.cluster.local").matches("bookinfo", svc));
        assert!(parse("*/*.example.com").matches("ext", "a.b.example.com"));
        assert!(!parse("*/*.example.com").matches("ext", "example.com"));
        // A wildcard ServiceEntry host is imported only by a pattern at least as wide.
        assert!(parse("*/*.example.com").matches("ext", "*.example.com"));
        assert!(parse("*/*.example.com").matches("ext", "*.api.example.com"));
        assert!(!parse("*/api.example.com").matches("ext", "*.example.com"));
        assert!(!parse("*/*.api.example.com").matches("ext", "*.example.com"));
    }

    #[test]
    fn matches_virtual_service_hosts_both_ways() {
        assert!(parse("*/api.example.com").matches_virtual_service("ns", "*.example.com"));
        assert!(parse("*/*.example.com").matches_virtual_service("ns", "api.example.com"));
        assert!(parse("*/*.api.example.com").matches_virtual_service("ns", "*.example.com"));
        assert!(!parse("*/a.example.com").matches_virtual_service("ns", "b.example.com"));
        assert!(!parse("./*").matches_virtual_service("ns", "b.example.com"));
        assert!(parse("*/*").matches_virtual_service("ns", "reviews"));
    }

    #[test]
    fn outbound_mode_defaults() {
        use OutboundTrafficMode::*;
        let sc = |yaml: &str| serde_saphyr::from_str::<Sidecar>(yaml).unwrap();
        assert_eq!(
            sc("egress: [{hosts: [\"./*\"]}]").outbound_mode(AllowAny),
            AllowAny
        );
        assert_eq!(
            sc("outboundTrafficPolicy: {}").outbound_mode(AllowAny),
            RegistryOnly
        );
        assert_eq!(
            sc("outboundTrafficPolicy: {mode: ALLOW_ANY}").outbound_mode(RegistryOnly),
            AllowAny
        );
    }

    #[test]
    fn parsed_listener_hosts_skip_invalid_entries() {
        let l = EgressListener {
            hosts: vec!["./*".into(), "bad".into()],
            ..Default::default()
        };
        assert_eq!(l.egress_hosts("ns").len(), 1);
    }

    #[test]
    fn splits_host_and_port_as_go_does() {
        assert_eq!(split_host_port("127.0.0.1:8080"), Ok(("127.0.0.1", "8080")));
        assert_eq!(split_host_port(":8080"), Ok(("", "8080")));
        assert_eq!(split_host_port("[::1]:8080"), Ok(("::1", "8080")));
        assert_eq!(split_host_port("127.0.0.1:"), Ok(("127.0.0.1", "")));
        for (bad, why) in [
            ("127.0.0.1", "missing port"),
            ("::1:8080", "too many colons"),
            ("[::1]", "missing port"),
            ("[::1", "missing ']'"),
            ("[::1]x:80", "missing port"),
            ("[::1]:80:90", "too many colons"),
            ("a]:80", "unexpected ']'"),
            ("", "missing port"),
        ] {
            let err = split_host_port(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}

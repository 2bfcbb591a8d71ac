//! ServiceEntry and WorkloadEntry: istiod's `ValidateServiceEntry` and `validateWorkloadEntry`,
//! with the CEL rules of Istio's CRDs (required hosts, unique port numbers and names).

use std::collections::BTreeSet;

use crate::config::istio::service_entry::{Resolution, ServiceEntry, WorkloadEntry};
use crate::model::Protocol;

use super::common::{
    Diags, is_ip, validate_export_to, validate_fqdn, validate_ip_subnet, validate_labels,
    validate_partial_wildcard, validate_port, validate_port_name, validate_selector_labels,
    validate_unix_address, validate_wildcard_domain,
};

const UNIX_PREFIX: &str = "unix://";

fn resolution_name(r: Resolution) -> &'static str {
    match r {
        Resolution::None => "NONE",
        Resolution::Static => "STATIC",
        Resolution::Dns => "DNS",
        Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
    }
}

pub fn validate(namespace: &str, se: &ServiceEntry, out: &mut Diags) {
    if let Some(sel) = &se.workload_selector {
        validate_selector_labels(out, "spec.workloadSelector.labels", &sel.labels);
        if sel.labels.is_empty() {
            out.warning("spec.workloadSelector", "service entry: workload selector specified without labels, will be applied to all services in namespace");
        }
        if !se.endpoints.is_empty() {
            out.error(
                "spec.workloadSelector",
                "only one of WorkloadSelector or Endpoints can be set",
            );
        }
    }

    if se.hosts.is_empty() {
        out.error("spec.hosts", "service entry must have at least one host");
    }
    for (i, host) in se.hosts.iter().enumerate() {
        let at = format!("spec.hosts[{i}]");
        if host == "*" {
            out.error(at, "hostname cannot be wildcard");
        } else {
            out.check(&at, validate_wildcard_domain(host));
            if let Err(w) = validate_partial_wildcard(host) {
                out.warning(at, w);
            }
        }
    }

    let mut cidr = false;
    for (i, address) in se.addresses.iter().enumerate() {
        cidr |= address.contains('/');
        out.check(format!("spec.addresses[{i}]"), validate_ip_subnet(address));
    }
    if cidr && !matches!(se.resolution, Resolution::None | Resolution::Static) {
        out.error(
            "spec.addresses",
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
    }

    let mut numbers = BTreeSet::new();
    let mut names = BTreeSet::new();
    for (i, port) in se.ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        if !names.insert(port.name.as_str()) {
            out.error(
                format!("{at}.name"),
                format!(
                    "Duplicate value: service entry port name {:?} already defined",
                    port.name
                ),
            );
        }
        if !numbers.insert(port.number) {
            out.error(
                format!("{at}.number"),
                format!("port number cannot be duplicated: {}", port.number),
            );
        }
        out.check(format!("{at}.name"), validate_port_name(&port.name));
        if !port.protocol.is_empty() && Protocol::parse(&port.protocol) == Protocol::Unsupported {
            out.error(
                format!("{at}.protocol"),
                format!("unsupported protocol: {}", port.protocol),
            );
        }
        out.check(format!("{at}.number"), validate_port(port.number.into()));
        if let Some(target) = port.target_port.filter(|t| *t != 0) {
            out.check(format!("{at}.targetPort"), validate_port(target.into()));
            if se.resolution == Resolution::None {
                out.warning(
                    format!("{at}.targetPort"),
                    "targetPort has no effect when resolution mode is NONE",
                );
            }
        }
        if se.addresses.is_empty() && (port.protocol.is_empty() || port.protocol == "TCP") {
            out.warning(
                format!("{at}.protocol"),
                "addresses are required for ports serving TCP (or unset) protocol when ISTIO_META_DNS_AUTO_ALLOCATE is not set on a proxy",
            );
        }
    }

    match se.resolution {
        Resolution::None => {
            if !se.endpoints.is_empty() {
                out.error("spec.endpoints", "NONE mode cannot set endpoints");
            }
            if se.workload_selector.is_some() {
                out.warning(
                    "spec.workloadSelector",
                    "workloadSelector should not be set when resolution mode is NONE",
                );
            }
        }
        Resolution::Static => {
            // Stricter than istiod, which lets STATIC go without endpoints (then nothing is served).
            if se.endpoints.is_empty() && se.workload_selector.is_none() {
                out.warning(
                    "spec.endpoints",
                    "STATIC resolution without endpoints or workloadSelector has no endpoints",
                );
            }
            for (i, ep) in se.endpoints.iter().enumerate() {
                validate_endpoint(
                    &format!("spec.endpoints[{i}]"),
                    ep,
                    Some(&names),
                    false,
                    out,
                );
            }
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            let mode = resolution_name(se.resolution);
            if se.endpoints.is_empty() {
                for (i, host) in se.hosts.iter().enumerate() {
                    if validate_fqdn(host).is_err() {
                        out.error(format!("spec.hosts[{i}]"), format!("hosts must be FQDN if no endpoints are provided for resolution mode {mode}"));
                    }
                }
            }
            if se.resolution == Resolution::DnsRoundRobin && se.endpoints.len() > 1 {
                out.error(
                    "spec.endpoints",
                    "DNS_ROUND_ROBIN mode cannot have multiple endpoints",
                );
            }
            for (i, ep) in se.endpoints.iter().enumerate() {
                validate_endpoint(&format!("spec.endpoints[{i}]"), ep, Some(&names), true, out);
            }
            if se.workload_selector.is_some() {
                out.warning(
                    "spec.workloadSelector",
                    format!("workloadSelector should not be set when resolution mode is {mode}"),
                );
            }
            let tcp = se
                .ports
                .iter()
                .any(|p| Protocol::parse(&p.protocol) == Protocol::Tcp);
            if !se.addresses.is_empty() && tcp && se.hosts.len() > 1 {
                out.warning("spec.hosts", "service entry can not have more than one host specified simultaneously with address and tcp port");
            }
        }
    }

    // Plain TCP cannot tell hosts apart (no Host header, no SNI), unless hosts are ignored.
    if se.resolution != Resolution::None && se.hosts.len() > 1 {
        let opaque = se.ports.iter().position(|p| {
            let p = Protocol::parse(&p.protocol);
            !p.is_http() && !p.is_tls()
        });
        if let Some(i) = opaque {
            out.error(
                format!("spec.ports[{i}].protocol"),
                "multiple hosts provided with non-HTTP, non-TLS ports",
            );
        }
    }
    validate_export_to(out, "spec.exportTo", namespace, &se.export_to, true);
}

pub fn validate_workload_entry(we: &WorkloadEntry, out: &mut Diags) {
    validate_endpoint("spec", we, None, true, out);
}

/// A WorkloadEntry, or a ServiceEntry endpoint (`service_ports` are then the declared port
/// names). `allow_fqdn` is false for STATIC endpoints, which Envoy is given as IPs.
fn validate_endpoint(
    at: &str,
    we: &WorkloadEntry,
    service_ports: Option<&BTreeSet<&str>>,
    allow_fqdn: bool,
    out: &mut Diags,
) {
    let addr = we.address.as_str();
    if addr.is_empty() {
        if we.network.is_empty() {
            out.error(format!("{at}.address"), "Address is required");
            return;
        }
        out.warning(
            format!("{at}.address"),
            format!("address is unset with network {:?}", we.network),
        );
    }
    let unix = addr.starts_with(UNIX_PREFIX);
    if let Some(path) = addr.strip_prefix(UNIX_PREFIX) {
        if path.ends_with('/') {
            out.error(format!("{at}.address"), "UDS may not be a dir");
        } else if !path.starts_with('/') && !path.starts_with('@') {
            out.error(
                format!("{at}.address"),
                "UDS must be an absolute path or abstract socket",
            );
        } else {
            out.check(format!("{at}.address"), validate_unix_address(path));
        }
        if !we.ports.is_empty() {
            out.error(format!("{at}.ports"), "UDS may not include ports");
        }
        if service_ports.is_some_and(|p| p.len() != 1) {
            out.error(
                format!("{at}.address"),
                "exactly 1 service port required for unix endpoints",
            );
        }
    } else if !addr.is_empty() && !is_ip(addr) {
        if !allow_fqdn {
            out.error(
                format!("{at}.address"),
                format!("endpoint address {addr:?} is not a valid IP address"),
            );
        } else if validate_fqdn(addr).is_err() {
            out.error(
                format!("{at}.address"),
                format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
            );
        }
    }
    for (name, port) in &we.ports {
        let pat = format!("{at}.ports.{name}");
        if let Some(declared) = service_ports
            && !declared.contains(name.as_str())
        {
            // istiod rejects this; served as a warning since the port is simply unused.
            out.warning(
                &pat,
                format!("endpoint port {name:?} is not defined by the service entry"),
            );
        }
        out.check(&pat, validate_port_name(name));
        if !(1..=65535).contains(port) {
            out.error(pat, format!("port must be between 1-65535 (got {port})"));
        }
    }
    out.check(format!("{at}.labels"), validate_labels(&we.labels));
    if !unix && !we.locality.is_empty() && we.locality.split('/').any(str::is_empty) {
        out.error(
            format!("{at}.locality"),
            format!(
                "locality {:?} must not contain empty region/zone/subzone",
                we.locality
            ),
        );
    }
    if !we.service_account.is_empty() && !super::common::is_k8s_subdomain(&we.service_account) {
        out.error(
            format!("{at}.serviceAccount"),
            format!("invalid service account name {:?}", we.service_account),
        );
    }
}

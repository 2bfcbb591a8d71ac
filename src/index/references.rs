//! Checks between objects: what each VirtualService and DestinationRule refers to exists;
//! Sidecars in `sidecar_references`.
//! Each finding is a warning (the object is still served, as istiod serves it) that names the
//! object and the field.

use std::collections::HashSet;

use super::{Index, Resolution, Typed, gateway_ref};
use crate::config::istio::VirtualService;
use crate::config::istio::gateway::{Server, ServerTlsMode};
use crate::config::istio::virtual_service::Destination;
use crate::diagnostic::Diagnostic;
use crate::model::Protocol;

/// The checks that read endpoints: made again for every revision, when the others
/// ([`check_routing`]) are kept for one that changed endpoints only.
pub fn check_endpoints(index: &Index) -> Vec<Diagnostic> {
    let mut out = endpoint_addresses(index);
    out.extend(super::sidecar_references::check_overlaps(index));
    out
}

/// The checks of what routing config refers to: hosts, ports, subsets, gateways, Sidecars'
/// egress hosts. They read services but not their endpoints.
pub fn check_routing(index: &Index) -> Vec<Diagnostic> {
    let mut out = unserved_gateway_servers(index);
    out.extend(super::sidecar_references::check_egress(index));
    out.extend(conflicting_mesh_virtual_services(index));
    let gateways: HashSet<String> = index.gateways.iter().map(|g| g.ns_name()).collect();
    for vs in index
        .virtual_services
        .iter()
        .filter_map(Typed::<VirtualService>::new)
    {
        let key = vs.entry.object.key();
        let spec = vs.spec();
        for (i, gw) in spec.gateways.iter().enumerate() {
            if gw != "mesh" && !gateways.contains(&gateway_ref(gw, vs.namespace())) {
                out.push(
                    Diagnostic::warning(
                        format!("spec.gateways[{i}]"),
                        format!("gateway {} not found", gateway_ref(gw, vs.namespace())),
                    )
                    .on(&key),
                );
            }
        }
        for (r, route) in spec.http.iter().enumerate() {
            for (d, dest) in route.route.iter().enumerate() {
                if let Some(problem) = destination_problem(index, &dest.destination, vs.namespace())
                {
                    out.push(
                        Diagnostic::warning(
                            format!("spec.http[{r}].route[{d}].destination"),
                            problem,
                        )
                        .on(&key),
                    );
                }
            }
            if let Some(mirror) = &route.mirror
                && let Some(problem) = destination_problem(index, mirror, vs.namespace())
            {
                out.push(Diagnostic::warning(format!("spec.http[{r}].mirror"), problem).on(&key));
            }
        }
        for (kind, routes) in [
            ("tcp", spec.tcp.iter().map(|r| &r.route).collect::<Vec<_>>()),
            ("tls", spec.tls.iter().map(|r| &r.route).collect()),
        ] {
            for (r, route) in routes.iter().enumerate() {
                for (d, dest) in route.iter().enumerate() {
                    if let Some(problem) =
                        destination_problem(index, &dest.destination, vs.namespace())
                    {
                        out.push(
                            Diagnostic::warning(
                                format!("spec.{kind}[{r}].route[{d}].destination"),
                                problem,
                            )
                            .on(&key),
                        );
                    }
                }
            }
        }
    }
    out
}

/// Why a destination cannot be routed to, if it cannot.
pub fn destination_problem(index: &Index, dest: &Destination, namespace: &str) -> Option<String> {
    let host = index.mesh.fqdn(&dest.host, namespace);
    let Some(service) = index.service(&host) else {
        return Some(format!(
            "host {host} matches no Service or ServiceEntry; requests get 503"
        ));
    };
    if let Some(port) = dest.port.map(|p| p.number)
        && !service.ports.iter().any(|p| u32::from(p.port) == port)
    {
        return Some(format!("port {port} is not a port of {host}"));
    }
    if dest.port.is_none() && service.ports.len() > 1 {
        return Some(format!(
            "{host} has {} ports and the destination names none; the listener's port is used, as istiod does",
            service.ports.len()
        ));
    }
    if !dest.subset.is_empty() {
        let defined = index
            .destination_rule(&host)
            .is_some_and(|dr| dr.spec().subsets.iter().any(|s| s.name == dest.subset));
        if !defined {
            return Some(format!(
                "subset {:?} of {host} is defined by no DestinationRule; requests get 503",
                dest.subset
            ));
        }
    }
    None
}

/// EDS carries IPs and `unix://` paths only: an endpoint named by host name is left out (Envoy
/// would reject the whole EDS response over it), and said so once, here.
fn endpoint_addresses(index: &Index) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for service in index
        .services
        .values()
        .filter(|s| s.resolution == Resolution::Eds)
    {
        for ep in &service.endpoints {
            if ep.address.starts_with("unix://") || ep.address.parse::<std::net::IpAddr>().is_ok() {
                continue;
            }
            out.push(
                Diagnostic::warning(
                    "",
                    format!("endpoint {} of {} is not an IP; it is left out (use resolution DNS for host names)", ep.address, service.hostname),
                )
                .on(&service.origin),
            );
        }
    }
    out
}

/// Gateway servers pilotfish does not serve yet: said once, here, rather than skipped quietly.
fn unserved_gateway_servers(index: &Index) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for gw in &index.gateways {
        for (i, server) in gw.spec().servers.iter().enumerate() {
            if let Some((field, why)) = unserved_gateway_server(server) {
                out.push(
                    Diagnostic::warning(
                        format!("spec.servers[{i}]{field}"),
                        format!(
                            "{why}; the server on port {} is not served",
                            server.port.number
                        ),
                    )
                    .on(&gw.entry.object.key()),
                );
            }
        }
    }
    out
}

/// Why pilotfish does not serve a Gateway server, with the field (relative to the server) that
/// says so; `None` for the servers it serves: plain HTTP (with `httpsRedirect`), TCP, HTTPS and
/// TLS terminated with `credentialName(s)` or `ISTIO_MUTUAL`, and TLS `PASSTHROUGH`.
pub fn unserved_gateway_server(server: &Server) -> Option<(&'static str, &'static str)> {
    let tls = server.tls.as_ref()?;
    if Protocol::parse(&server.port.protocol).is_http() {
        return None;
    }
    match tls.mode {
        ServerTlsMode::Passthrough | ServerTlsMode::IstioMutual => None,
        ServerTlsMode::AutoPassthrough => Some((".tls.mode", "AUTO_PASSTHROUGH is not served yet")),
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            if tls.credential_name.is_empty() && tls.credential_names.is_empty() {
                Some((
                    ".tls",
                    "certificates from files (serverCertificate/privateKey, tlsCertificates) are not served: use credentialName",
                ))
            } else if !tls.ca_cert_credential_name.is_empty() {
                Some((
                    ".tls.caCertCredentialName",
                    "caCertCredentialName is not served yet: put the CA in <credentialName>-cacert",
                ))
            } else {
                None
            }
        }
    }
}

/// Two mesh VirtualServices for one host: sidecars get only the first (istiod does not merge
/// VirtualServices for sidecars, and picks the oldest; pilotfish the first by namespace/name,
/// after its exportTo order). Said on the later one, naming the earlier.
fn conflicting_mesh_virtual_services(index: &Index) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut first_for: std::collections::HashMap<&str, &super::scope::MeshVirtualService> =
        std::collections::HashMap::new();
    for vs in &index.mesh_virtual_services {
        for (i, host) in vs.hosts.iter().enumerate() {
            match first_for.get(host.as_str()) {
                Some(first) if first.export_to == vs.export_to || first.namespace() == vs.namespace() => out.push(
                    Diagnostic::warning(
                        format!("spec.hosts[{i}]"),
                        format!(
                            "host {host} is also routed for sidecars by VirtualService {}/{}; sidecars that see both use only that one",
                            first.namespace(),
                            first.name()
                        ),
                    )
                    .on(&vs.entry.object.key()),
                ),
                Some(_) => {}
                None => {
                    first_for.insert(host, vs);
                }
            }
        }
    }
    out
}

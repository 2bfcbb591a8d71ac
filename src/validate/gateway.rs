//! Gateway: istiod's `ValidateGateway`, `validateServer` and `validateTLSOptions`.

use std::collections::BTreeSet;

use crate::config::istio::gateway::{Gateway, Server, ServerTls, ServerTlsMode};
use crate::model::Protocol;

use super::common::{
    Diags, is_dns1123_label, is_ip, validate_ip, validate_partial_wildcard, validate_port,
    validate_unix_address, validate_wildcard_domain,
};

const UNIX_PREFIX: &str = "unix://";

/// Cipher suites Envoy's BoringSSL accepts (istiod `security.IsValidCipherSuite`).
pub(crate) const CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-PSK-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-PSK-AES128-CBC-SHA",
    "AES128-GCM-SHA256",
    "AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-PSK-AES256-CBC-SHA",
    "AES256-GCM-SHA384",
    "AES256-SHA",
    "PSK-AES128-CBC-SHA",
    "PSK-AES256-CBC-SHA",
    "DES-CBC3-SHA",
];

pub fn validate(name: &str, gw: &Gateway, out: &mut Diags) {
    // A Gateway's name becomes part of route names (`http.80`, `https.443.name.gw.ns`).
    if !is_dns1123_label(name) {
        out.error(
            "metadata.name",
            format!("invalid gateway name: {name:?} (must be a DNS-1123 label, no dots)"),
        );
    }
    if gw.servers.is_empty() {
        out.error("spec.servers", "gateway must have at least one server");
    }
    let mut port_names = BTreeSet::new();
    for (i, server) in gw.servers.iter().enumerate() {
        let at = format!("spec.servers[{i}]");
        validate_server(&at, server, out);
        if !port_names.insert(server.port.name.as_str()) {
            out.error(
                format!("{at}.port.name"),
                format!(
                    "port names in servers must be unique: duplicate name {:?}",
                    server.port.name
                ),
            );
        }
        let redirect = server.tls.as_ref().is_some_and(|t| t.https_redirect);
        if redirect && !Protocol::parse(&server.port.protocol).is_http() {
            out.warning(
                format!("{at}.tls.httpsRedirect"),
                "tls.httpsRedirect should only be used with http servers",
            );
        }
    }
}

fn validate_server(at: &str, server: &Server, out: &mut Diags) {
    if server.hosts.is_empty() {
        out.error(
            format!("{at}.hosts"),
            "server config must contain at least one host",
        );
    }
    for (j, host) in server.hosts.iter().enumerate() {
        validate_gateway_host(&format!("{at}.hosts[{j}]"), host, out);
    }

    let port = &server.port;
    let errors_before = out.0.len();
    let protocol = Protocol::parse(&port.protocol);
    if protocol == Protocol::Unsupported {
        out.error(
            format!("{at}.port.protocol"),
            format!("invalid protocol {:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, HTTPS, TLS, MONGO, REDIS, MYSQL, TCP", port.protocol),
        );
    }
    let unix = server.bind.starts_with(UNIX_PREFIX);
    if port.number > 0 || !unix {
        out.check(
            format!("{at}.port.number"),
            validate_port(port.number.into()),
        );
    }
    if port.target_port.is_some_and(|p| p > 0) {
        out.error(
            format!("{at}.port.targetPort"),
            "targetPort has no impact on Gateways",
        );
    }
    if port.name.is_empty() {
        out.error(format!("{at}.port.name"), "port name must be set");
    }
    let port_ok = out.0.len() == errors_before;

    if let Some(path) = server.bind.strip_prefix(UNIX_PREFIX) {
        out.check(format!("{at}.bind"), validate_unix_address(path));
        if port.number != 0 {
            out.error(
                format!("{at}.port.number"),
                "port number must be 0 for unix domain socket",
            );
        }
    } else if !server.bind.is_empty() {
        out.check(format!("{at}.bind"), validate_ip(&server.bind));
    }

    if let Some(tls) = &server.tls {
        validate_tls(&format!("{at}.tls"), tls, out);
    }
    if port_ok {
        match &server.tls {
            None if protocol.is_tls() => out.error(
                format!("{at}.tls"),
                "server must have TLS settings for HTTPS/TLS protocols",
            ),
            Some(tls) if !protocol.is_tls() => {
                if !protocol.is_http() {
                    out.error(
                        format!("{at}.tls"),
                        "server cannot have TLS settings for non HTTPS/TLS ports",
                    );
                } else {
                    // Only `httpsRedirect` makes sense on a plain-text HTTP port.
                    let passthrough = matches!(
                        tls.mode,
                        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
                    );
                    let certs = !tls.ca_certificates.is_empty()
                        || !tls.private_key.is_empty()
                        || !tls.server_certificate.is_empty();
                    if !passthrough || certs {
                        out.error(
                            format!("{at}.tls"),
                            "server cannot have TLS settings for plain text HTTP ports",
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

/// `host`, `ns/host`, `*/host`, `./host`: the namespace part selects which namespaces'
/// VirtualServices may bind; the host part must be an FQDN, a `*` wildcard or an IP.
fn validate_gateway_host(at: &str, host: &str, out: &mut Diags) {
    let dns_name = match host.split_once('/') {
        None => host,
        Some((ns, name)) => {
            if ns.is_empty() || name.is_empty() {
                out.error(
                    at,
                    "config namespace and dnsName in host entry cannot be empty",
                );
            }
            if ns != "*" && ns != "." && !is_dns1123_label(ns) {
                out.error(at, format!("invalid namespace value {ns:?} in gateway"));
            }
            name
        }
    };
    if dns_name != "*" && !dns_name.contains('.') {
        out.error(
            at,
            format!("short names (non FQDN) are not allowed: {dns_name:?}"),
        );
    }
    if let Err(e) = validate_wildcard_domain(dns_name)
        && !is_ip(dns_name)
    {
        out.error(at, e);
    }
    out.check(at, validate_partial_wildcard(dns_name));
}

pub(super) fn validate_tls(at: &str, tls: &ServerTls, out: &mut Diags) {
    if matches!(tls.min_protocol_version.as_str(), "TLSV1_0" | "TLSV1_1")
        && tls.cipher_suites.is_empty()
    {
        out.warning(
            format!("{at}.minProtocolVersion"),
            "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, cs) in tls.cipher_suites.iter().enumerate() {
        if !CIPHER_SUITES.contains(&cs.as_str()) {
            out.warning(
                format!("{at}.cipherSuites[{i}]"),
                format!("ignoring invalid cipher suite {cs:?}"),
            );
        } else if !seen.insert(cs) {
            out.warning(
                format!("{at}.cipherSuites[{i}]"),
                format!("ignoring duplicate cipher suite {cs:?}"),
            );
        }
    }
    let has_credential = !tls.credential_name.is_empty() || !tls.credential_names.is_empty();
    if !tls.credential_name.is_empty() && !tls.credential_names.is_empty() {
        out.error(
            format!("{at}.credentialNames"),
            "only one of credentialName or credentialNames can be set",
        );
    }
    if tls.mode == ServerTlsMode::IstioMutual {
        // Istio's own certificates are used; any other source would be ignored.
        for (field, value) in [
            ("serverCertificate", &tls.server_certificate),
            ("privateKey", &tls.private_key),
            ("caCertificates", &tls.ca_certificates),
            ("credentialName", &tls.credential_name),
        ] {
            if !value.is_empty() {
                out.error(
                    format!("{at}.{field}"),
                    format!("ISTIO_MUTUAL TLS cannot have associated {field}"),
                );
            }
        }
        for (field, set) in [
            ("tlsCertificates", !tls.tls_certificates.is_empty()),
            ("credentialNames", !tls.credential_names.is_empty()),
        ] {
            if set {
                out.error(
                    format!("{at}.{field}"),
                    format!("ISTIO_MUTUAL TLS cannot have associated {field}"),
                );
            }
        }
        return;
    }
    if matches!(
        tls.mode,
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
    ) && (!tls.ca_crl.is_empty()
        || !tls.server_certificate.is_empty()
        || !tls.private_key.is_empty()
        || !tls.ca_certificates.is_empty()
        || !tls.tls_certificates.is_empty()
        || has_credential)
    {
        out.warning(
            format!("{at}.mode"),
            format!(
                "{:?} mode does not use certificates, they will be ignored",
                tls.mode
            ),
        );
    }
    let sources = [
        !tls.server_certificate.is_empty() && !tls.private_key.is_empty(),
        !tls.credential_name.is_empty(),
        !tls.credential_names.is_empty(),
        !tls.tls_certificates.is_empty(),
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        out.error(
            at,
            "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified",
        );
    }
    let terminates = matches!(
        tls.mode,
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    );
    if terminates && has_credential {
        // Certificates come from the named Secret over SDS.
        if !tls.ca_crl.is_empty() {
            out.error(format!("{at}.caCrl"), "CRL is not supported with credentialName. CRL has to be specified in the credential");
        }
        return;
    }
    let mode = if tls.mode == ServerTlsMode::Simple {
        "SIMPLE"
    } else {
        "MUTUAL"
    };
    if terminates {
        // Each certificate of `tlsCertificates`, else the inline pair, needs both halves.
        let pairs: Vec<(String, &str, &str)> = if tls.tls_certificates.is_empty() {
            vec![(
                at.to_string(),
                tls.server_certificate.as_str(),
                tls.private_key.as_str(),
            )]
        } else {
            if tls.tls_certificates.len() > 2 {
                out.warning(
                    format!("{at}.tlsCertificates"),
                    format!("{mode} TLS can support up to 2 server certificates"),
                );
            }
            tls.tls_certificates
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        format!("{at}.tlsCertificates[{i}]"),
                        c.server_certificate.as_str(),
                        c.private_key.as_str(),
                    )
                })
                .collect()
        };
        for (pat, cert, key) in pairs {
            if cert.is_empty() {
                out.error(
                    format!("{pat}.serverCertificate"),
                    format!("{mode} TLS requires a server certificate (or credentialName)"),
                );
            }
            if key.is_empty() {
                out.error(
                    format!("{pat}.privateKey"),
                    format!("{mode} TLS requires a private key (or credentialName)"),
                );
            }
        }
    }
    if matches!(
        tls.mode,
        ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    ) && tls.ca_certificates.is_empty()
    {
        out.error(
            format!("{at}.caCertificates"),
            "MUTUAL TLS requires a client CA bundle (or credentialName)",
        );
    }
    if !tls.ca_crl.is_empty() && tls.mode == ServerTlsMode::Simple {
        out.error(
            format!("{at}.caCrl"),
            "CRL is not supported with SIMPLE TLS",
        );
    }
}

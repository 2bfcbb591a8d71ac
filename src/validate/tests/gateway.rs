use super::*;

fn gw(servers: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n{servers}"
    )
}

const HTTP: &str = "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*.example.com\", \"bookinfo/reviews.example.com\", \"./a.example.com\"]\n";

#[test]
fn a_plain_gateway_is_valid() {
    assert_valid(&gw(HTTP));
    assert!(run(&gw(HTTP)).is_empty());
}

#[test]
fn name_must_be_a_label() {
    let yaml = gw(HTTP).replace("name: gw,", "name: gw.v1,");
    assert_error(&yaml, "metadata.name", "invalid gateway name");
}

#[test]
fn servers_are_required() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec: {selector: {a: b}}\n";
    assert_error(yaml, "spec.servers", "at least one server");
}

#[test]
fn hosts() {
    assert_error(
        &gw("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: []\n"),
        "spec.servers[0].hosts",
        "at least one host",
    );
    assert_error(
        &gw("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [reviews]\n"),
        "spec.servers[0].hosts[0]",
        "short names",
    );
    assert_error(
        &gw("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"Bad_NS/a.com\"]\n"),
        "spec.servers[0].hosts[0]",
        "invalid namespace value",
    );
    assert_error(
        &gw("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*a.com\"]\n"),
        "spec.servers[0].hosts[0]",
        "partial wildcard",
    );
    assert_valid(&gw(
        "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\", \"*/*\", \"10.0.0.1\"]\n",
    ));
}

#[test]
fn ports() {
    assert_error(
        &gw("  - port: {number: 0, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n"),
        "spec.servers[0].port.number",
        "1..65535",
    );
    assert_error(
        &gw("  - port: {number: 80, name: http, protocol: FTP}\n    hosts: [\"*\"]\n"),
        "spec.servers[0].port.protocol",
        "invalid protocol",
    );
    assert_error(
        &gw("  - port: {number: 80, protocol: HTTP}\n    hosts: [\"*\"]\n"),
        "spec.servers[0].port.name",
        "must be set",
    );
    assert_error(
        &gw(
            "  - port: {number: 80, name: http, protocol: HTTP, targetPort: 8080}\n    hosts: [\"*\"]\n",
        ),
        "spec.servers[0].port.targetPort",
        "no impact",
    );
    let dup =
        format!("{HTTP}  - port: {{number: 81, name: http, protocol: HTTP}}\n    hosts: [\"*\"]\n");
    assert_error(&gw(&dup), "spec.servers[1].port.name", "duplicate name");
    let distinct = format!(
        "{HTTP}  - port: {{number: 81, name: http2, protocol: HTTP}}\n    hosts: [\"*\"]\n"
    );
    assert_valid(&gw(&distinct));
}

#[test]
fn bind() {
    assert_error(
        &gw(
            "  - port: {number: 80, name: http, protocol: HTTP}\n    bind: not-an-ip\n    hosts: [\"*\"]\n",
        ),
        "spec.servers[0].bind",
        "not a valid IP",
    );
    assert_valid(&gw(
        "  - port: {number: 0, name: uds, protocol: HTTP}\n    bind: unix:///var/run/gw.sock\n    hosts: [\"*\"]\n",
    ));
}

#[test]
fn tls_modes_need_credentials() {
    let https = |tls: &str| {
        gw(&format!(
            "  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [\"*\"]\n    tls: {tls}\n"
        ))
    };
    assert_error(
        &https("{mode: SIMPLE}"),
        "spec.servers[0].tls.serverCertificate",
        "SIMPLE TLS requires a server certificate",
    );
    assert_error(
        &https("{mode: SIMPLE}"),
        "spec.servers[0].tls.privateKey",
        "private key",
    );
    assert_valid(&https("{mode: SIMPLE, credentialName: cert}"));
    assert_valid(&https(
        "{mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}",
    ));
    assert_error(
        &https("{mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}"),
        "spec.servers[0].tls.caCertificates",
        "client CA bundle",
    );
    assert_valid(&https("{mode: MUTUAL, credentialName: cert}"));
    assert_error(
        &https("{mode: ISTIO_MUTUAL, credentialName: cert}"),
        "spec.servers[0].tls.credentialName",
        "ISTIO_MUTUAL",
    );
    assert_valid(&https("{mode: PASSTHROUGH}"));
    assert_warning(
        &https("{mode: PASSTHROUGH, credentialName: x}"),
        "spec.servers[0].tls.mode",
        "does not use certificates",
    );
    assert_error(
        &https("{mode: SIMPLE, credentialName: c, caCrl: /crl}"),
        "spec.servers[0].tls.caCrl",
        "CRL",
    );
    assert_warning(
        &https("{mode: SIMPLE, credentialName: c, cipherSuites: [NOPE]}"),
        "spec.servers[0].tls.cipherSuites[0]",
        "invalid cipher",
    );
}

#[test]
fn tls_settings_must_match_the_protocol() {
    assert_error(
        &gw("  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n"),
        "spec.servers[0].tls",
        "must have TLS settings",
    );
    assert_error(
        &gw(
            "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE, credentialName: c}\n",
        ),
        "spec.servers[0].tls",
        "plain text HTTP",
    );
    assert_error(
        &gw(
            "  - port: {number: 3306, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE, credentialName: c}\n",
        ),
        "spec.servers[0].tls",
        "non HTTPS/TLS",
    );
}

#[test]
fn https_redirect_only_on_http() {
    let ok = gw(
        "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n    tls: {httpsRedirect: true}\n",
    );
    assert!(run(&ok).is_empty(), "{:?}", run(&ok));
    let tls = gw(
        "  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: [\"*\"]\n    tls: {httpsRedirect: true, mode: PASSTHROUGH}\n",
    );
    assert_warning(
        &tls,
        "spec.servers[0].tls.httpsRedirect",
        "only be used with http",
    );
}

#[test]
fn tls_certificate_sources() {
    let https = |tls: &str| {
        gw(&format!(
            "  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [\"*\"]\n    tls: {tls}\n"
        ))
    };
    assert_valid(&https(
        "{mode: SIMPLE, tlsCertificates: [{serverCertificate: /rsa.pem, privateKey: /rsa.key}, {serverCertificate: /ec.pem, privateKey: /ec.key}]}",
    ));
    assert_error(
        &https("{mode: SIMPLE, tlsCertificates: [{serverCertificate: /c.pem}]}"),
        "spec.servers[0].tls.tlsCertificates[0].privateKey",
        "private key",
    );
    assert_error(
        &https("{mode: SIMPLE, credentialName: c, serverCertificate: /c.pem, privateKey: /k.pem}"),
        "spec.servers[0].tls",
        "only one of credential_name",
    );
    assert_error(
        &https("{mode: ISTIO_MUTUAL, credentialNames: [c]}"),
        "spec.servers[0].tls.credentialNames",
        "ISTIO_MUTUAL",
    );
    assert_warning(
        &https("{mode: PASSTHROUGH, tlsCertificates: [{serverCertificate: /c, privateKey: /k}]}"),
        "spec.servers[0].tls.mode",
        "does not use certificates",
    );
}

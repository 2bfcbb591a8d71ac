//! Gateway TLS servers: chains, TLS contexts, route configs and the Secrets they refer to.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, transport_socket};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, Listener, filter::ConfigType,
};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::subject_alt_name_matcher::SanType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, Secret, common_tls_context::ValidationContextType, secret,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use super::*;
use crate::generate::credentials::tests::{TestCert, index_of, secret_yaml, test_cert};

const PROXY: &str = "router~10.0.0.1~ingress-7d8f.edge~edge.svc.cluster.local";

fn proxy() -> Proxy {
    // As on the TLS xDS port: only such a proxy is given servers that need certificates.
    let mut proxy = Proxy::from_id(PROXY).unwrap().with_labels(BTreeMap::from([(
        "istio".to_string(),
        "ingress".to_string(),
    )]));
    proxy.identity = Some(
        format!("spiffe://cluster.local/ns/{}/sa/ingress", proxy.namespace)
            .parse()
            .unwrap(),
    );
    proxy
}

fn gateway(namespace: &str, servers: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: {namespace}}}\nspec:\n  selector: {{istio: ingress}}\n  servers:\n{servers}"
    )
}

/// Services the routes go to, and a VirtualService per protocol bound to `edge/gw`.
fn backends() -> Vec<String> {
    let service = |name: &str, port: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{port}]\n"
        )
    };
    vec![
        service("web", "{name: http, port: 8080}"),
        service("db", "{name: tcp, port: 5432}"),
        service("mail", "{name: tls, port: 8443}"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web, namespace: apps}\nspec:\n  hosts: [web.example.com, admin.example.com]\n  gateways: [edge/gw]\n  http:\n  - route: [{destination: {host: web}}]\n".into(),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: db, namespace: apps}\nspec:\n  hosts: [db.example.com]\n  gateways: [edge/gw]\n  tcp:\n  - match: [{port: 5432}, {port: 15443}]\n    route: [{destination: {host: db}}]\n".into(),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: mail, namespace: apps}\nspec:\n  hosts: [mail.example.com, smtp.example.com]\n  gateways: [edge/gw]\n  tls:\n  - match: [{sniHosts: [mail.example.com]}]\n    route: [{destination: {host: mail}}]\n  - match: [{sniHosts: [smtp.example.com], port: 9999}]\n    route: [{destination: {host: mail}}]\n".into(),
    ]
}

fn tls_secret(name: &str, pki: &TestCert, ca: Option<&TestCert>) -> String {
    let mut data = vec![
        ("tls.crt", pki.cert.as_str()),
        ("tls.key", pki.key.as_str()),
    ];
    data.extend(ca.map(|ca| ("ca.crt", ca.cert.as_str())));
    secret_yaml("edge", name, &data)
}

fn build_with(manifests: Vec<String>) -> GatewayConfig {
    let index = index_of(&[backends(), manifests].concat());
    let proxy = proxy();
    build(&index, &proxy, &select(&index, &proxy))
}

fn listener(config: &GatewayConfig, name: &str) -> Listener {
    config
        .listeners
        .get(name)
        .unwrap_or_else(|| panic!("no listener {name}: {:?}", config.listeners.keys()))
        .decode()
        .unwrap()
}

fn typed<M: Message + Default>(any: Option<&Any>) -> M {
    M::decode(any.expect("a typed config").value.as_slice()).unwrap()
}

fn filter_config<M: Message + Default>(filter: &Filter) -> M {
    let Some(ConfigType::TypedConfig(any)) = &filter.config_type else {
        panic!("{filter:?}")
    };
    typed(Some(any))
}

fn tls_context(chain: &FilterChain) -> DownstreamTlsContext {
    let socket = chain.transport_socket.as_ref().expect("a TLS chain");
    assert_eq!(socket.name, "envoy.transport_sockets.tls");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else {
        panic!()
    };
    typed(Some(any))
}

fn rds_name(chain: &FilterChain) -> String {
    let hcm: HttpConnectionManager = filter_config(&chain.filters[0]);
    let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
        panic!()
    };
    rds.route_config_name
}

fn tcp_cluster(chain: &FilterChain) -> String {
    let proxy: TcpProxy = filter_config(&chain.filters[0]);
    let Some(ClusterSpecifier::Cluster(cluster)) = proxy.cluster_specifier else {
        panic!("{proxy:?}")
    };
    cluster
}

fn server_names(chain: &FilterChain) -> Vec<String> {
    chain
        .filter_chain_match
        .as_ref()
        .map(|m| m.server_names.clone())
        .unwrap_or_default()
}

fn sds_names(ctx: &DownstreamTlsContext) -> (Vec<String>, Option<String>) {
    let common = ctx.common_tls_context.as_ref().unwrap();
    let certs = common
        .tls_certificate_sds_secret_configs
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let ca = match &common.validation_context_type {
        Some(ValidationContextType::CombinedValidationContext(c)) => c
            .validation_context_sds_secret_config
            .as_ref()
            .map(|s| s.name.clone()),
        _ => None,
    };
    (certs, ca)
}

fn keys(map: &ResourceMap) -> Vec<&str> {
    map.keys().map(String::as_str).collect()
}

#[test]
fn a_proxy_on_the_plaintext_port_gets_no_server_that_needs_certificates() {
    let pki = test_cert("web.example.com");
    let servers = "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [web.example.com]\n    tls: {mode: SIMPLE, credentialName: web}\n";
    let objects = vec![gateway("edge", servers), tls_secret("web", &pki, None)];
    let mut plaintext = proxy();
    plaintext.identity = None;
    let index = index_of(&[backends(), objects].concat());
    let config = build(&index, &plaintext, &select(&index, &plaintext));
    assert_eq!(keys(&config.listeners), ["0.0.0.0_80"]);
    assert!(config.secrets.is_empty());
}

#[test]
fn simple_terminates_with_the_credential_and_routes_its_own_config() {
    let pki = test_cert("web.example.com");
    let config = build_with(vec![
        gateway(
            "edge",
            "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [apps/web.example.com]\n    tls:\n      mode: SIMPLE\n      credentialName: web\n      minProtocolVersion: TLSV1_2\n      cipherSuites: [ECDHE-RSA-AES256-GCM-SHA384, NOT-A-SUITE, ECDHE-RSA-AES256-GCM-SHA384]\n",
        ),
        tls_secret("web", &pki, None),
    ]);
    let l = listener(&config, "0.0.0.0_443");
    assert_eq!(
        l.listener_filters
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["envoy.filters.listener.tls_inspector"]
    );
    let [chain] = &l.filter_chains[..] else {
        panic!("{:?}", l.filter_chains)
    };
    assert_eq!(server_names(chain), ["web.example.com"]);
    assert_eq!(
        chain
            .transport_socket_connect_timeout
            .as_ref()
            .map(|d| d.seconds),
        Some(15)
    );
    let ctx = tls_context(chain);
    assert_eq!(ctx.require_client_certificate.map(|b| b.value), Some(false));
    assert_eq!(
        sds_names(&ctx),
        (vec!["kubernetes://web".to_string()], None)
    );
    let common = ctx.common_tls_context.as_ref().unwrap();
    assert_eq!(common.alpn_protocols, ["h2", "http/1.1"]);
    assert!(
        common.tls_certificate_sds_secret_configs[0]
            .sds_config
            .as_ref()
            .is_some_and(|c| c == &crate::generate::cluster::ads())
    );
    let params = common.tls_params.as_ref().unwrap();
    assert_eq!(params.tls_minimum_protocol_version, 3, "TLSv1_2");
    assert_eq!(
        params.cipher_suites,
        ["ECDHE-RSA-AES256-GCM-SHA384"],
        "unknown and repeated suites dropped"
    );

    assert_eq!(rds_name(chain), "https.443.https.gw.edge");
    let routes: RouteConfiguration = config.routes["https.443.https.gw.edge"].decode().unwrap();
    let [vhost] = &routes.virtual_hosts[..] else {
        panic!("{routes:?}")
    };
    assert_eq!(
        vhost.name, "web.example.com:443",
        "only the server's own host, not admin.example.com"
    );
    assert_eq!(keys(&config.secrets), ["kubernetes://web"]);
}

#[test]
fn mutual_adds_the_ca_from_the_credential_or_its_cacert_secret() {
    let (pki, ca) = (test_cert("web.example.com"), test_cert("client-ca"));
    let server = "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['*']\n    tls: {mode: MUTUAL, credentialName: web, subjectAltNames: [spiffe://td/ns/a/sa/b]}\n";
    for secrets in [
        vec![tls_secret("web", &pki, Some(&ca))],
        vec![
            tls_secret("web", &pki, None),
            secret_yaml("edge", "web-cacert", &[("cacert", &ca.cert)]),
        ],
    ] {
        let config = build_with([vec![gateway("edge", server)], secrets].concat());
        let l = listener(&config, "0.0.0.0_443");
        let [chain] = &l.filter_chains[..] else {
            panic!()
        };
        assert!(
            chain.filter_chain_match.is_none(),
            "`*` selects every SNI name"
        );
        let ctx = tls_context(chain);
        assert_eq!(ctx.require_client_certificate.map(|b| b.value), Some(true));
        assert_eq!(
            sds_names(&ctx),
            (
                vec!["kubernetes://web".to_string()],
                Some("kubernetes://web-cacert".to_string())
            )
        );
        let Some(ValidationContextType::CombinedValidationContext(v)) = &ctx
            .common_tls_context
            .as_ref()
            .unwrap()
            .validation_context_type
        else {
            panic!()
        };
        let sans = &v
            .default_validation_context
            .as_ref()
            .unwrap()
            .match_typed_subject_alt_names;
        let sans: Vec<(i32, Option<&MatchPattern>)> = sans
            .iter()
            .map(|m| {
                (
                    m.san_type,
                    m.matcher.as_ref().and_then(|m| m.match_pattern.as_ref()),
                )
            })
            .collect();
        assert_eq!(
            sans,
            [(
                SanType::Uri as i32,
                Some(&MatchPattern::Exact("spiffe://td/ns/a/sa/b".into()))
            )]
        );
        assert_eq!(
            keys(&config.secrets),
            ["kubernetes://web", "kubernetes://web-cacert"]
        );
    }
}

#[test]
fn istio_mutual_uses_the_proxys_own_certificate_and_the_mesh_roots() {
    let config = build_with(vec![gateway(
        "edge",
        "  - port: {number: 15443, name: tls-mesh, protocol: TLS}\n    hosts: ['*.example.com']\n    tls: {mode: ISTIO_MUTUAL, minProtocolVersion: TLSV1_3}\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [web.example.com]\n    tls: {mode: ISTIO_MUTUAL}\n",
    )]);
    let tls_port = listener(&config, "0.0.0.0_15443");
    let [tcp] = &tls_port.filter_chains[..] else {
        panic!()
    };
    let ctx = tls_context(tcp);
    assert_eq!(
        sds_names(&ctx),
        (vec!["default".to_string()], Some("ROOTCA".to_string()))
    );
    assert_eq!(ctx.require_client_certificate.map(|b| b.value), Some(true));
    let common = ctx.common_tls_context.as_ref().unwrap();
    assert_eq!(
        common.alpn_protocols,
        ["istio-peer-exchange", "h2", "http/1.1"]
    );
    assert!(
        common.tls_params.is_none(),
        "istiod applies no protocol settings to ISTIO_MUTUAL"
    );
    // A TLS server that terminates proxies to the first tcp route for its hosts and port.
    assert_eq!(server_names(tcp), ["*.example.com"]);
    assert_eq!(tcp_cluster(tcp), "outbound|5432||db.apps.svc.cluster.local");
    let https = listener(&config, "0.0.0.0_443");
    assert_eq!(
        sds_names(&tls_context(&https.filter_chains[0]))
            .1
            .as_deref(),
        Some("ROOTCA")
    );
    assert!(
        config.secrets.is_empty(),
        "default and ROOTCA come with the proxy's identity, not the config"
    );
}

#[test]
fn passthrough_routes_each_sni_match_to_its_destination() {
    let config = build_with(vec![gateway(
        "edge",
        "  - port: {number: 8443, name: tls, protocol: TLS}\n    hosts: ['*.example.com']\n    tls: {mode: PASSTHROUGH}\n",
    )]);
    let l = listener(&config, "0.0.0.0_8443");
    assert_eq!(l.listener_filters.len(), 1, "TLS inspector");
    // smtp's match names port 9999: not this server.
    let [chain] = &l.filter_chains[..] else {
        panic!("{:?}", l.filter_chains)
    };
    assert_eq!(server_names(chain), ["mail.example.com"]);
    assert!(chain.transport_socket.is_none(), "passed through");
    assert_eq!(
        tcp_cluster(chain),
        "outbound|8443||mail.apps.svc.cluster.local"
    );
    assert!(config.routes.is_empty() && config.secrets.is_empty());
}

#[test]
fn tcp_servers_proxy_to_their_tcp_route() {
    let config = build_with(vec![gateway(
        "edge",
        "  - port: {number: 5432, name: tcp, protocol: TCP}\n    hosts: ['*']\n",
    )]);
    let l = listener(&config, "0.0.0.0_5432");
    assert!(l.listener_filters.is_empty());
    assert_eq!(
        tcp_cluster(&l.filter_chains[0]),
        "outbound|5432||db.apps.svc.cluster.local"
    );
    let none = build_with(vec![gateway(
        "edge",
        "  - port: {number: 6000, name: tcp, protocol: TCP}\n    hosts: ['*']\n",
    )]);
    assert!(
        none.listeners.is_empty(),
        "no tcp route for port 6000: no listener"
    );
}

#[test]
fn https_redirect_hosts_redirect_without_a_virtual_service() {
    let config = build_with(vec![gateway(
        "edge",
        "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [web.example.com, login.example.com]\n    tls: {httpsRedirect: true}\n",
    )]);
    let routes: RouteConfiguration = config.routes["http.80"].decode().unwrap();
    let vhosts: Vec<(&str, i32, usize)> = routes
        .virtual_hosts
        .iter()
        .map(|v| (v.name.as_str(), v.require_tls, v.routes.len()))
        .collect();
    assert_eq!(
        vhosts,
        [("login.example.com:80", 2, 0), ("web.example.com:80", 2, 1)]
    );
    let l = listener(&config, "0.0.0.0_80");
    assert!(l.listener_filters.is_empty() && l.filter_chains[0].transport_socket.is_none());
}

#[test]
fn a_server_whose_credential_cannot_be_served_is_skipped() {
    let (pki, other) = (test_cert("web.example.com"), test_cert("other"));
    let servers = "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [web.example.com]\n    tls: {mode: SIMPLE, credentialName: web}\n  - port: {number: 443, name: https-admin, protocol: HTTPS}\n    hosts: [admin.example.com]\n    tls: {mode: MUTUAL, credentialName: admin}\n  - port: {number: 8443, name: https-alt, protocol: HTTPS}\n    hosts: [web.example.com]\n    tls: {mode: SIMPLE, credentialName: missing}\n";
    let config = build_with(vec![
        gateway("edge", servers),
        tls_secret("web", &pki, None),
        // MUTUAL without any CA: skipped too, rather than waiting for `admin-cacert`.
        tls_secret("admin", &other, None),
    ]);
    assert_eq!(
        keys(&config.listeners),
        ["0.0.0.0_443"],
        "8443's only server is skipped: no listener"
    );
    let l = listener(&config, "0.0.0.0_443");
    let [chain] = &l.filter_chains[..] else {
        panic!("{:?}", l.filter_chains)
    };
    assert_eq!(server_names(chain), ["web.example.com"]);
    assert_eq!(
        keys(&config.secrets),
        ["kubernetes://web"],
        "nothing of the skipped servers"
    );
    assert_eq!(keys(&config.routes), ["https.443.https.gw.edge"]);
}

#[test]
fn credentials_are_read_in_the_proxys_namespace_whatever_the_gateways() {
    let (edge, apps) = (test_cert("edge.example.com"), test_cert("apps.example.com"));
    let config = build_with(vec![
        gateway(
            "apps",
            "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['*']\n    tls: {mode: SIMPLE, credentialName: web}\n",
        ),
        tls_secret("web", &edge, None),
        secret_yaml(
            "apps",
            "web",
            &[("tls.crt", &apps.cert), ("tls.key", &apps.key)],
        ),
    ]);
    let secret: Secret = config.secrets["kubernetes://web"].decode().unwrap();
    let Some(secret::Type::TlsCertificate(t)) = secret.r#type else {
        panic!()
    };
    let Some(Specifier::InlineBytes(chain)) = t.certificate_chain.and_then(|c| c.specifier) else {
        panic!()
    };
    assert_eq!(
        chain,
        edge.cert.as_bytes(),
        "edge/web, the proxy's, not apps/web"
    );
}

#[test]
fn a_second_server_for_the_same_sni_name_is_skipped() {
    let pki = test_cert("web.example.com");
    let config = build_with(vec![
        gateway(
            "edge",
            "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['*/web.example.com']\n    tls: {mode: SIMPLE, credentialName: web}\n  - port: {number: 443, name: https-2, protocol: HTTPS}\n    hosts: [apps/web.example.com, admin.example.com]\n    tls: {mode: SIMPLE, credentialName: web}\n  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: ['*.example.com']\n    tls: {mode: PASSTHROUGH}\n",
        ),
        tls_secret("web", &pki, None),
    ]);
    let l = listener(&config, "0.0.0.0_443");
    let chains: Vec<Vec<String>> = l.filter_chains.iter().map(server_names).collect();
    assert_eq!(
        chains,
        [
            vec!["web.example.com".to_string()],
            vec!["mail.example.com".to_string()]
        ]
    );
}

#[test]
fn servers_pilotfish_cannot_serve_are_named_with_their_field() {
    let index = index_of(&[gateway(
        "edge",
        "  - {port: {number: 1, name: a, protocol: TLS}, hosts: ['*'], tls: {mode: AUTO_PASSTHROUGH}}\n  - {port: {number: 2, name: b, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}}\n  - {port: {number: 3, name: c, protocol: HTTPS}, hosts: ['*'], tls: {mode: MUTUAL, credentialName: web, caCertCredentialName: ca}}\n  - {port: {number: 4, name: d, protocol: HTTPS}, hosts: ['*'], tls: {mode: OPTIONAL_MUTUAL, credentialNames: [web]}}\n  - {port: {number: 5, name: e, protocol: HTTP}, hosts: ['*'], tls: {httpsRedirect: true}}\n  - {port: {number: 6, name: f, protocol: TLS}, hosts: ['*'], tls: {mode: ISTIO_MUTUAL}}\n  - {port: {number: 7, name: g, protocol: TCP}, hosts: ['*']}\n",
    )]);
    let fields: Vec<Option<&str>> = index.gateways[0]
        .spec()
        .servers
        .iter()
        .map(|s| crate::index::unserved_gateway_server(s).map(|(field, _)| field))
        .collect();
    assert_eq!(
        fields,
        [
            Some(".tls.mode"),
            Some(".tls"),
            Some(".tls.caCertCredentialName"),
            None,
            None,
            None,
            None
        ]
    );
    let warned: Vec<&str> = index
        .diagnostics
        .iter()
        .map(|d| d.field.as_str())
        .filter(|f| f.starts_with("spec.servers"))
        .collect();
    assert_eq!(
        warned,
        [
            "spec.servers[0].tls.mode",
            "spec.servers[1].tls",
            "spec.servers[2].tls.caCertCredentialName"
        ]
    );
}

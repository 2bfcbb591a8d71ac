use super::*;

#[test]
fn service_names_are_dns1035_labels() {
    let svc = |name: &str, ports: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n  selector: {{app: a}}\n  ports: {ports}\n"
        )
    };
    assert!(run(&svc("reviews", "[{name: http, port: 9080}]")).is_empty());
    assert_error(
        &svc("1reviews", "[{port: 9080}]"),
        "metadata.name",
        "DNS-1035",
    );
    assert_error(&svc("a.b", "[{port: 9080}]"), "metadata.name", "DNS-1035");
    assert_error(
        &svc(
            "reviews",
            "[{name: http, port: 80}, {name: http, port: 81}]",
        ),
        "spec.ports[1].name",
        "duplicate port name",
    );
    assert_error(
        &svc("reviews", "[{port: 80}, {name: b, port: 81}]"),
        "spec.ports[0].name",
        "required",
    );
}

#[test]
fn namespace_names_are_labels() {
    assert!(run("apiVersion: v1\nkind: Namespace\nmetadata: {name: bookinfo}\n").is_empty());
    assert_error(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: book.info}\n",
        "metadata.name",
        "DNS-1123 label",
    );
}

#[test]
fn pods_and_slices() {
    let pod = |name: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: ns}}\nspec: {{containers: [{{name: c, image: i}}]}}\nstatus: {{podIP: \"{ip}\"}}\n"
        )
    };
    assert!(run(&pod("reviews-v1-abc.x", "10.0.0.1")).is_empty());
    assert_error(
        &pod("Reviews", "10.0.0.1"),
        "metadata.name",
        "DNS-1123 subdomain",
    );
    assert_error(
        &pod("r", "10.0.0.300"),
        "status.podIPs[0].ip",
        "not a valid IP",
    );
    let slice = |addr: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: reviews-abc, namespace: ns, labels: {{kubernetes.io/service-name: reviews}}}}\naddressType: IPv4\nendpoints: [{{addresses: [\"{addr}\"]}}]\n"
        )
    };
    assert!(run(&slice("10.0.0.1")).is_empty());
    assert_error(
        &slice("nope"),
        "endpoints[0].addresses[0]",
        "not a valid IPv4 address",
    );
}

#[test]
fn config_maps_and_the_mesh_config() {
    let cm = |name: &str, data: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: istio-system}}\ndata:\n{data}"
        )
    };
    let mesh = cm(
        "istio",
        "  mesh: |\n    outboundTrafficPolicy:\n      mode: REGISTRY_ONLY\n    defaultConfig: {discoveryAddress: istiod:15012}\n  meshNetworks: 'networks: {}'\n",
    );
    assert!(run(&mesh).is_empty(), "{:?}", run(&mesh));
    let broken = cm(
        "istio",
        "  mesh: |\n    outboundTrafficPolicy:\n      mode: FOO\n",
    );
    assert_error(
        &broken,
        "data.mesh",
        "outboundTrafficPolicy.mode: unknown variant \"FOO\"",
    );
    // Only istiod's ConfigMap is read as mesh config.
    assert!(run(&cm("app-config", "  mesh: 'not: [mesh'\n")).is_empty());
    assert_error(
        &cm("a", "  \"bad key\": x\n"),
        "data.bad key",
        "not a valid ConfigMap key",
    );
    assert_error(
        &cm("A_b", "  k: v\n"),
        "metadata.name",
        "DNS-1123 subdomain",
    );
}

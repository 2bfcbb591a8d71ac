use super::*;

fn se(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: ext, namespace: ns}}\nspec:\n{spec}"
    )
}

fn we(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: vm, namespace: ns}}\nspec: {spec}\n"
    )
}

const HTTPS_PORT: &str = "  ports: [{number: 443, name: https, protocol: HTTPS}]\n";

#[test]
fn a_plain_entry_is_valid() {
    let ok = se(&format!(
        "  hosts: [api.example.com]\n{HTTPS_PORT}  resolution: DNS\n  location: MESH_EXTERNAL\n"
    ));
    assert!(run(&ok).is_empty(), "{:?}", run(&ok));
}

#[test]
fn hosts() {
    assert_error(&se(HTTPS_PORT), "spec.hosts", "at least one host");
    assert_error(
        &se("  hosts: [\"*\"]\n"),
        "spec.hosts[0]",
        "hostname cannot be wildcard",
    );
    assert_error(
        &se("  hosts: [\"bad_host.com\"]\n"),
        "spec.hosts[0]",
        "invalid",
    );
    assert_warning(
        &se("  hosts: [\"*x.com\"]\n"),
        "spec.hosts[0]",
        "partial wildcard",
    );
    assert_valid(&se("  hosts: [\"*.example.com\"]\n  resolution: NONE\n"));
}

#[test]
fn addresses() {
    assert_valid(&se(
        "  hosts: [a.com]\n  addresses: [1.2.3.4, \"2001:db8::1\", 10.0.0.0/8]\n",
    ));
    assert_error(
        &se("  hosts: [a.com]\n  addresses: [1.2.3.4/99]\n"),
        "spec.addresses[0]",
        "CIDR",
    );
    assert_error(
        &se("  hosts: [a.com]\n  addresses: [not-an-ip]\n"),
        "spec.addresses[0]",
        "not a valid IP",
    );
    assert_error(
        &se("  hosts: [a.com]\n  addresses: [1.2.3.0/24]\n  resolution: DNS\n"),
        "spec.addresses",
        "CIDR addresses are allowed only for NONE/STATIC",
    );
}

#[test]
fn ports() {
    assert_error(
        &se("  hosts: [a.com]\n  ports: [{number: 80, name: a}, {number: 81, name: a}]\n"),
        "spec.ports[1].name",
        "Duplicate value",
    );
    assert_error(
        &se("  hosts: [a.com]\n  ports: [{number: 80, name: a}, {number: 80, name: b}]\n"),
        "spec.ports[1].number",
        "cannot be duplicated",
    );
    assert_error(
        &se("  hosts: [a.com]\n  ports: [{number: 99999, name: a}]\n"),
        "spec.ports[0].number",
        "1..65535",
    );
    assert_error(
        &se("  hosts: [a.com]\n  ports: [{number: 80, name: a, targetPort: 99999}]\n"),
        "spec.ports[0].targetPort",
        "1..65535",
    );
    assert_error(
        &se("  hosts: [a.com]\n  ports: [{number: 80, name: a, protocol: FTP}]\n"),
        "spec.ports[0].protocol",
        "unsupported protocol",
    );
    assert_error(
        &se("  hosts: [a.com]\n  ports: [{number: 80, name: \"a_b\", protocol: HTTP}]\n"),
        "spec.ports[0].name",
        "invalid port name",
    );
    assert_warning(
        &se("  hosts: [a.com]\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n"),
        "spec.ports[0].protocol",
        "addresses are required",
    );
}

#[test]
fn resolution_none() {
    assert_error(
        &se("  hosts: [a.com]\n  resolution: NONE\n  endpoints: [{address: 1.2.3.4}]\n"),
        "spec.endpoints",
        "NONE mode cannot set endpoints",
    );
    assert_valid(&se("  hosts: [\"*.a.com\"]\n  resolution: NONE\n"));
}

#[test]
fn resolution_static() {
    let ok = se(
        "  hosts: [a.svc]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 10.0.0.1, ports: {http: 8080}, weight: 3}]\n",
    );
    assert!(run(&ok).is_empty(), "{:?}", run(&ok));
    assert_error(
        &se("  hosts: [a.svc]\n  resolution: STATIC\n  endpoints: [{address: a.example.com}]\n"),
        "spec.endpoints[0].address",
        "not a valid IP",
    );
    assert_warning(
        &se("  hosts: [a.svc]\n  resolution: STATIC\n"),
        "spec.endpoints",
        "no endpoints",
    );
    assert_valid(&se(
        "  hosts: [a.svc]\n  resolution: STATIC\n  workloadSelector: {labels: {app: vm}}\n",
    ));
    assert_warning(
        &se(
            "  hosts: [a.svc]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 10.0.0.1, ports: {grpc: 8080}}]\n",
        ),
        "spec.endpoints[0].ports.grpc",
        "not defined by the service entry",
    );
    assert_error(
        &se(
            "  hosts: [a.svc]\n  resolution: STATIC\n  workloadSelector: {labels: {app: vm}}\n  endpoints: [{address: 10.0.0.1}]\n",
        ),
        "spec.workloadSelector",
        "only one of WorkloadSelector or Endpoints",
    );
    assert_error(
        &se("  hosts: [a.svc]\n  resolution: STATIC\n  workloadSelector: {labels: {app: \"*\"}}\n"),
        "spec.workloadSelector.labels.app",
        "wildcard",
    );
}

#[test]
fn resolution_dns() {
    assert_valid(&se(&format!(
        "  hosts: [a.com]\n{HTTPS_PORT}  resolution: DNS\n  endpoints: [{{address: lb.example.com}}, {{address: 1.2.3.4}}]\n"
    )));
    assert_error(
        &se(&format!(
            "  hosts: [\"*.a.com\"]\n{HTTPS_PORT}  resolution: DNS\n"
        )),
        "spec.hosts[0]",
        "hosts must be FQDN",
    );
    assert_valid(&se(&format!(
        "  hosts: [\"*.a.com\"]\n{HTTPS_PORT}  resolution: DNS\n  endpoints: [{{address: lb.example.com}}]\n"
    )));
    assert_error(
        &se(&format!(
            "  hosts: [a.com]\n{HTTPS_PORT}  resolution: DNS_ROUND_ROBIN\n  endpoints: [{{address: a.example.com}}, {{address: b.example.com}}]\n"
        )),
        "spec.endpoints",
        "DNS_ROUND_ROBIN mode cannot have multiple endpoints",
    );
    assert_error(
        &se(&format!(
            "  hosts: [a.com]\n{HTTPS_PORT}  resolution: DNS\n  endpoints: [{{address: \"bad_host\"}}]\n"
        )),
        "spec.endpoints[0].address",
        "not a valid FQDN",
    );
    assert_error(
        &se(
            "  hosts: [a.com, b.com]\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n  resolution: DNS\n",
        ),
        "spec.ports[0].protocol",
        "multiple hosts provided with non-HTTP",
    );
}

#[test]
fn export_to() {
    assert_valid(&se("  hosts: [a.com]\n  exportTo: [\"~\"]\n"));
    assert_error(
        &se("  hosts: [a.com]\n  exportTo: [\"~\", other]\n"),
        "spec.exportTo",
        "no one (~) and someone",
    );
}

#[test]
fn workload_entries() {
    let ok = we(
        "{address: 1.2.3.4, serviceAccount: sa, network: net, labels: {app: app}, ports: {http: 1}, weight: 2, locality: foo/bar/baz}",
    );
    assert!(run(&ok).is_empty(), "{:?}", run(&ok));
    assert_valid(&we("{address: vm.example.com}"));
    assert_valid(&we("{address: \"unix:///var/run/app.sock\"}"));
    assert_valid(&we("{address: \"unix://@abstract\"}"));
    assert_warning(&we("{network: net}"), "spec.address", "unset with network");
    assert_error(&we("{}"), "spec.address", "Address is required");
    assert_error(
        &we("{address: \"unix:///dir/\"}"),
        "spec.address",
        "UDS may not be a dir",
    );
    assert_error(
        &we("{address: \"unix://relative\"}"),
        "spec.address",
        "absolute path or abstract socket",
    );
    assert_error(
        &we("{address: \"unix://@foo\", ports: {http: 80}}"),
        "spec.ports",
        "UDS may not include ports",
    );
    assert_error(
        &we("{address: 1.1.1.1, ports: {http: 99999}}"),
        "spec.ports.http",
        "1-65535",
    );
    assert_error(
        &we("{address: 1.1.1.1, ports: {\"@\": 80}}"),
        "spec.ports.@",
        "invalid port name",
    );
    assert_error(
        &we("{address: \"bad_host\"}"),
        "spec.address",
        "not a valid FQDN",
    );
    assert_error(
        &we("{address: 1.1.1.1, labels: {\"-a\": b}}"),
        "spec.labels",
        "invalid tag key",
    );
    assert_error(
        &we("{address: 1.1.1.1, locality: a//c}"),
        "spec.locality",
        "empty",
    );
}

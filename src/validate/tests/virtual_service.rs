use super::*;

/// A VirtualService with `spec` (YAML indented by two spaces).
fn vs(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r, namespace: ns}}\nspec:\n{spec}"
    )
}

/// A VirtualService for `reviews` with one HTTP route given as flow-style YAML fields.
fn http(route: &str) -> String {
    vs(&format!("  hosts: [reviews]\n  http:\n  - {route}\n"))
}

const DEST: &str = "route: [{destination: {host: reviews}}]";

#[test]
fn a_plain_route_is_valid() {
    let ok = http(DEST);
    assert!(run(&ok).is_empty(), "{:?}", run(&ok));
    assert_valid(&http(
        "route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}, weight: 75}, {destination: {host: reviews, subset: v2}, weight: 25}]",
    ));
}

#[test]
fn hosts() {
    assert_error(
        &vs("  hosts: [\"bad_host\"]\n  http: [{route: [{destination: {host: a}}]}]\n"),
        "spec.hosts[0]",
        "invalid",
    );
    assert_error(
        &vs("  hosts: [\"*\"]\n  http: [{route: [{destination: {host: a}}]}]\n"),
        "spec.hosts[0]",
        "wildcard host *",
    );
    assert_valid(&vs(
        "  hosts: [\"*\"]\n  gateways: [istio-system/gw]\n  http: [{route: [{destination: {host: a}}]}]\n",
    ));
    assert_error(
        &vs(
            "  hosts: [\"*\"]\n  gateways: [gw, mesh]\n  http: [{route: [{destination: {host: a}}]}]\n",
        ),
        "spec.hosts[0]",
        "mesh",
    );
    assert_error(
        &vs("  hosts: [a.foo.com, \"*.foo.com\"]\n  http: [{route: [{destination: {host: a}}]}]\n"),
        "spec.hosts[0]",
        "duplicate hosts",
    );
    assert_valid(&vs(
        "  hosts: [10.0.0.1]\n  http: [{route: [{destination: {host: a}}]}]\n",
    ));
}

#[test]
fn delegates_have_no_hosts_gateways_or_l4() {
    assert_valid(&vs("  http: [{route: [{destination: {host: a}}]}]\n"));
    assert_error(
        &vs("  gateways: [gw]\n  http: [{route: [{destination: {host: a}}]}]\n"),
        "spec.gateways",
        "delegate",
    );
    assert_error(
        &vs("  http: [{delegate: {name: other}}]\n"),
        "spec.http[0].delegate",
        "cannot contain delegate",
    );
    assert_valid(&http("delegate: {name: reviews-v1, namespace: other}"));
    assert_error(
        &http("delegate: {namespace: other}"),
        "spec.http[0].delegate.name",
        "required",
    );
    assert_error(
        &http(&format!("delegate: {{name: d}}\n    {DEST}")),
        "spec.http[0].route",
        "must not specify route",
    );
}

#[test]
fn gateway_names() {
    assert_error(
        &vs(
            "  hosts: [a.com]\n  gateways: [\"a/b/c\"]\n  http: [{route: [{destination: {host: a}}]}]\n",
        ),
        "spec.gateways[0]",
        "invalid value for gateway name",
    );
    assert_warning(
        &vs(
            "  hosts: [a.com]\n  gateways: [gw.istio-system]\n  http: [{route: [{destination: {host: a}}]}]\n",
        ),
        "spec.gateways[0]",
        "legacy",
    );
}

#[test]
fn routes_are_required() {
    assert_error(
        &vs("  hosts: [a.com]\n"),
        "spec",
        "http, tcp or tls must be provided",
    );
    assert_error(
        &http("name: empty"),
        "spec.http[0].route",
        "route, redirect or direct_response is required",
    );
}

#[test]
fn one_action_per_route() {
    assert_error(
        &http(&format!("redirect: {{uri: /x}}\n    {DEST}")),
        "spec.http[0].redirect",
        "both route and redirect",
    );
    assert_error(
        &http(&format!("directResponse: {{status: 200}}\n    {DEST}")),
        "spec.http[0].directResponse",
        "both route and direct_response",
    );
    assert_error(
        &http("redirect: {uri: /x}\n    directResponse: {status: 200}"),
        "spec.http[0].directResponse",
        "direct_response and redirect",
    );
    assert_error(
        &http("redirect: {uri: /x}\n    fault: {abort: {httpStatus: 500}}"),
        "spec.http[0].fault",
        "fault and redirect",
    );
    assert_valid(&http("redirect: {uri: /x, redirectCode: 308}"));
    assert_valid(&http(
        "directResponse: {status: 503, body: {string: unavailable}}",
    ));
}

#[test]
fn weights() {
    assert_error(
        &http(
            "route: [{destination: {host: a}, weight: 60}, {destination: {host: b}, weight: 60}]",
        ),
        "spec.http[0].route",
        "total destination weight = 120 != 100",
    );
    assert_error(
        &http("route: [{destination: {host: a}, weight: -1}]"),
        "spec.http[0].route[0].weight",
        "< 0",
    );
    assert_valid(&http(
        "route: [{destination: {host: a}, weight: 100}, {destination: {host: b}, weight: 0}]",
    ));
}

#[test]
fn destinations() {
    assert_error(
        &http("route: [{destination: {subset: v1}}]"),
        "spec.http[0].route[0].destination.host",
        "required",
    );
    assert_error(
        &http("route: [{destination: {host: \"*\"}}]"),
        "spec.http[0].route[0].destination.host",
        "invalid destination host",
    );
    assert_error(
        &http("route: [{destination: {host: a, subset: \"v_1\"}}]"),
        "spec.http[0].route[0].destination.subset",
        "subset name is invalid",
    );
    assert_error(
        &http("route: [{destination: {host: a, port: {number: 70000}}}]"),
        "spec.http[0].route[0].destination.port.number",
        "1..65535",
    );
}

#[test]
fn matches() {
    let m = |m: &str| http(&format!("match: [{m}]\n    {DEST}"));
    assert_valid(&m(
        "{uri: {prefix: \"\"}, ignoreUriCase: true, headers: {x-user: {exact: a}, x-any: {}}}",
    ));
    assert_error(
        &m("{uri: {regex: \"a(\"}}"),
        "spec.http[0].match[0].uri.regex",
        "invalid regex",
    );
    assert_error(
        &m("{scheme: {prefix: \"\"}}"),
        "spec.http[0].match[0].scheme.prefix",
        "should not be empty",
    );
    assert_error(
        &m("{method: {regex: \"[\"}}"),
        "spec.http[0].match[0].method.regex",
        "invalid regex",
    );
    assert_error(
        &m("{authority: {regex: \"(\"}}"),
        "spec.http[0].match[0].authority.regex",
        "invalid regex",
    );
    assert_error(
        &m("{headers: {\"x user\": {exact: a}}}"),
        "spec.http[0].match[0].headers.x user",
        "not a valid header name",
    );
    assert_warning(
        &m("{headers: {X-User: {exact: a}}}"),
        "spec.http[0].match[0].headers.X-User",
        "lower case",
    );
    assert_error(
        &m("{headers: {x-a: {exact: a, prefix: b}}}"),
        "spec.http[0].match[0].headers.x-a",
        "only one of",
    );
    assert_error(
        &m("{queryParams: {q: {regex: \"(\"}}}"),
        "spec.http[0].match[0].queryParams.q.regex",
        "invalid regex",
    );
    assert_valid(&m("{withoutHeaders: {x-a: {regex: \"*\"}}}"));
    assert_error(
        &m("{port: 0, sourceLabels: {\"-a\": b}}"),
        "spec.http[0].match[0].sourceLabels",
        "invalid tag key",
    );
    assert_error(
        &m("{sourceNamespace: \"Bad_Ns\"}"),
        "spec.http[0].match[0].sourceNamespace",
        "invalid",
    );
    assert_error(
        &m("{headers: {\"@request.auth.claims.sub\": {exact: a}}}"),
        "spec.http[0].match[0].headers.@request.auth.claims.sub",
        "only supported for gateway",
    );
}

#[test]
fn retries() {
    assert_valid(&http(&format!(
        "retries: {{attempts: 3, perTryTimeout: 2s, retryOn: \"5xx,gateway-error,503,retriable-status-codes\"}}\n    {DEST}"
    )));
    assert_error(
        &http(&format!("retries: {{attempts: -1}}\n    {DEST}")),
        "spec.http[0].retries.attempts",
        "negative",
    );
    assert_error(
        &http(&format!(
            "retries: {{attempts: 0, retryOn: 5xx}}\n    {DEST}"
        )),
        "spec.http[0].retries.attempts",
        "attempts are set to 0",
    );
    assert_error(
        &http(&format!(
            "retries: {{attempts: 2, perTryTimeout: 0s}}\n    {DEST}"
        )),
        "spec.http[0].retries.perTryTimeout",
        "1ms",
    );
    assert_error(
        &http(&format!(
            "retries: {{attempts: 2, retryOn: \"5xx,oops\"}}\n    {DEST}"
        )),
        "spec.http[0].retries.retryOn",
        "\"oops\" is not a valid retryOn",
    );
}

#[test]
fn faults() {
    let f = |f: &str| http(&format!("fault: {f}\n    {DEST}"));
    assert_valid(&f(
        "{delay: {fixedDelay: 5s, percentage: {value: 10}}, abort: {httpStatus: 503, percentage: {value: 0.1}}}",
    ));
    assert_error(&f("{}"), "spec.http[0].fault", "abort and/or a delay");
    assert_error(
        &f("{abort: {httpStatus: 700}}"),
        "spec.http[0].fault.abort.httpStatus",
        "200-599",
    );
    assert_error(
        &f("{abort: {httpStatus: 503, percentage: {value: 101}}}"),
        "spec.http[0].fault.abort.percentage.value",
        "percentage",
    );
    assert_error(
        &f("{abort: {grpcStatus: NOPE}}"),
        "spec.http[0].fault.abort.grpcStatus",
        "not supported",
    );
    assert_valid(&f("{abort: {grpcStatus: UNAVAILABLE}}"));
    assert_error(
        &f("{delay: {percentage: {value: 5}}}"),
        "spec.http[0].fault.delay.fixedDelay",
        "requires fixedDelay",
    );
    assert_error(
        &f("{delay: {fixedDelay: 0.5ms}}"),
        "spec.http[0].fault.delay.fixedDelay",
        "1ms",
    );
}

#[test]
fn redirects_and_rewrites() {
    assert_error(
        &http("redirect: {redirectCode: 301}"),
        "spec.http[0].redirect",
        "must specify URI",
    );
    assert_error(
        &http("redirect: {uri: /a, redirectCode: 305}"),
        "spec.http[0].redirect.redirectCode",
        "not a valid redirect code",
    );
    assert_error(
        &http("redirect: {uri: /a, port: 8080, derivePort: FROM_REQUEST_PORT}"),
        "spec.http[0].redirect.derivePort",
        "only one of",
    );
    assert_error(
        &http("redirect: {scheme: ftp}"),
        "spec.http[0].redirect.scheme",
        "invalid redirect scheme",
    );
    assert_error(
        &http(&format!(
            "rewrite: {{uri: /a, uriRegexRewrite: {{match: \"^/b\", rewrite: /c}}}}\n    {DEST}"
        )),
        "spec.http[0].rewrite",
        "only contain one of",
    );
    assert_error(
        &http(&format!(
            "rewrite: {{uriRegexRewrite: {{match: \"(\", rewrite: /c}}}}\n    {DEST}"
        )),
        "spec.http[0].rewrite.uriRegexRewrite.match",
        "invalid regex",
    );
    assert_error(
        &http(&format!("rewrite: {{}}\n    {DEST}")),
        "spec.http[0].rewrite",
        "at least one of",
    );
    assert_valid(&http(&format!(
        "rewrite: {{uriRegexRewrite: {{match: \"^/b(.*)\", rewrite: \"/c\\\\1\"}}}}\n    {DEST}"
    )));
}

#[test]
fn direct_response_status() {
    assert_error(
        &http("directResponse: {status: 100}"),
        "spec.http[0].directResponse.status",
        "200-599",
    );
}

#[test]
fn timeouts_mirrors_and_cors() {
    assert_error(
        &http(&format!("timeout: 0s\n    {DEST}")),
        "spec.http[0].timeout",
        "1ms",
    );
    assert_valid(&http(&format!(
        "timeout: 1.5s\n    mirror: {{host: shadow}}\n    mirrorPercentage: {{value: 50}}\n    {DEST}"
    )));
    assert_error(
        &http(&format!("mirror: {{host: \"bad host\"}}\n    {DEST}")),
        "spec.http[0].mirror.host",
        "invalid",
    );
    assert_error(
        &http(&format!("mirrorPercentage: {{value: 150}}\n    {DEST}")),
        "spec.http[0].mirrorPercentage.value",
        "0..100",
    );
    assert_error(
        &http(&format!(
            "mirror: {{host: a}}\n    mirrors: [{{destination: {{host: b}}}}]\n    {DEST}"
        )),
        "spec.http[0].mirrors",
        "both mirror and mirrors",
    );
    let cors = |c: &str| http(&format!("corsPolicy: {c}\n    {DEST}"));
    assert_valid(&cors(
        "{allowOrigins: [{exact: \"https://a.com\"}, {regex: \".*\\\\.a\\\\.com\"}], allowMethods: [GET, POST], allowHeaders: [\"*\", x-a], maxAge: 24h}",
    ));
    assert_error(
        &cors("{allowOrigins: [{regex: \"(\"}]}"),
        "spec.http[0].corsPolicy.allowOrigins[0].regex",
        "invalid regex",
    );
    assert_error(
        &cors("{allowMethods: [GET, FETCH]}"),
        "spec.http[0].corsPolicy.allowMethods[1]",
        "not a supported HTTP method",
    );
    assert_error(
        &cors("{maxAge: 1.5s}"),
        "spec.http[0].corsPolicy.maxAge",
        "seconds precision",
    );
    assert_error(
        &cors("{exposeHeaders: [\"bad header\"]}"),
        "spec.http[0].corsPolicy.exposeHeaders[0]",
        "not a valid header name",
    );
}

#[test]
fn header_operations() {
    let h = |h: &str| http(&format!("headers: {h}\n    {DEST}"));
    assert_valid(&h(
        "{request: {set: {x-a: \"%HOSTNAME%\", \":authority\": b.com}, remove: [x-b]}, response: {add: {x-c: d}}}",
    ));
    assert_error(
        &h("{request: {set: {\":path\": /x}}}"),
        "spec.http[0].headers.request.set.:path",
        "\":\" prefix",
    );
    assert_error(
        &h("{response: {set: {host: x}}}"),
        "spec.http[0].headers.response.set.host",
        "Host",
    );
    assert_error(
        &h("{request: {remove: [\":authority\"]}}"),
        "spec.http[0].headers.request.remove[0]",
        "\":\" prefix",
    );
    assert_error(
        &h("{request: {add: {x-a: \"50%\"}}}"),
        "spec.http[0].headers.request.add.x-a",
        "un-terminated",
    );
    let twice = http(&format!(
        "rewrite: {{authority: a.com}}\n    headers: {{request: {{set: {{host: b.com}}}}}}\n    {DEST}"
    ));
    assert_error(
        &twice,
        "spec.http[0].headers.request.set.host",
        "authority header cannot be set multiple times",
    );
    assert_error(
        &http("route: [{destination: {host: a}, headers: {request: {set: {\":method\": GET}}}}]"),
        "spec.http[0].route[0].headers.request.set.:method",
        "\":\" prefix",
    );
}

#[test]
fn tcp_and_tls_routes() {
    assert_valid(&vs(
        "  hosts: [db.svc]\n  tcp:\n  - match: [{port: 3306, destinationSubnets: [10.0.0.0/8]}]\n    route: [{destination: {host: db.svc, port: {number: 3306}}}]\n",
    ));
    assert_error(
        &vs("  hosts: [db.svc]\n  tcp: [{match: [{port: 3306}]}]\n"),
        "spec.tcp[0].route",
        "TCP route is required",
    );
    assert_error(
        &vs(
            "  hosts: [db.svc]\n  tcp: [{match: [{destinationSubnets: [10.0.0.0/99]}], route: [{destination: {host: a}}]}]\n",
        ),
        "spec.tcp[0].match[0].destinationSubnets[0]",
        "CIDR",
    );
    assert_error(
        &vs(
            "  hosts: [db.svc]\n  tcp: [{route: [{destination: {host: a}, weight: 50}, {destination: {host: b}, weight: 20}]}]\n",
        ),
        "spec.tcp[0].route",
        "total destination weight = 70",
    );
    let tls = |m: &str| {
        vs(&format!(
            "  hosts: [\"*.example.com\"]\n  gateways: [gw]\n  tls:\n  - match: [{m}]\n    route: [{{destination: {{host: a}}}}]\n"
        ))
    };
    assert_valid(&tls("{sniHosts: [a.example.com], port: 443}"));
    assert_error(
        &tls("{port: 443}"),
        "spec.tls[0].match[0].sniHosts",
        "at least one SNI host",
    );
    assert_error(
        &tls("{sniHosts: [a.other.com]}"),
        "spec.tls[0].match[0].sniHosts[0]",
        "not a compatible subset",
    );
    assert_error(
        &vs("  hosts: [a.com]\n  tls: [{route: [{destination: {host: a}}]}]\n"),
        "spec.tls[0].match",
        "at least one match",
    );
}

#[test]
fn export_to() {
    assert_error(
        &vs(
            "  hosts: [a.com]\n  exportTo: [\"*\", other]\n  http: [{route: [{destination: {host: a}}]}]\n",
        ),
        "spec.exportTo",
        "both public",
    );
}

#[test]
fn unreachable_rules_are_warnings() {
    let after_catch_all = vs(
        "  hosts: [a.com]\n  http:\n  - route: [{destination: {host: a}}]\n  - match: [{uri: {prefix: /b}}]\n    route: [{destination: {host: b}}]\n",
    );
    assert_valid(&after_catch_all);
    assert_warning(
        &after_catch_all,
        "spec.http[1]",
        "rule #1 not used (rule #0 matches all requests)",
    );
    let prefix_slash = vs(
        "  hosts: [a.com]\n  http:\n  - name: all\n    match: [{uri: {prefix: /}}]\n    route: [{destination: {host: a}}]\n  - match: [{headers: {x: {exact: v1}}}]\n    route: [{destination: {host: b}}]\n",
    );
    assert_warning(
        &prefix_slash,
        "spec.http[1]",
        "rule \"all\" matches all requests",
    );
    let two_empty = vs(
        "  hosts: [a.com]\n  http:\n  - route: [{destination: {host: a}}]\n  - route: [{destination: {host: b}}]\n",
    );
    assert_warning(
        &two_empty,
        "spec.http[1]",
        "only the last rule can have no matches",
    );
    let dup = vs(
        "  hosts: [a.com]\n  http:\n  - match: [{uri: {exact: /a}}]\n    route: [{destination: {host: a}}]\n  - match: [{name: again, uri: {exact: /a}}]\n    route: [{destination: {host: b}}]\n",
    );
    assert_warning(&dup, "spec.http[1].match[0]", "match \"again\" is not used");
    assert_warning(&dup, "spec.http[1]", "all matches used by prior rules");
    let shadowed = vs(
        "  hosts: [a.com]\n  http:\n  - match: [{uri: {prefix: /debug}}]\n    route: [{destination: {host: a}}]\n  - match: [{uri: {prefix: /debugs}}]\n    route: [{destination: {host: b}}]\n",
    );
    assert_warning(
        &shadowed,
        "spec.http[1].match[0]",
        "of prefix /debugs is not used",
    );
    let fine = vs(
        "  hosts: [a.com]\n  http:\n  - match: [{uri: {prefix: /b}}]\n    route: [{destination: {host: b}}]\n  - route: [{destination: {host: a}}]\n",
    );
    assert!(run(&fine).is_empty(), "{:?}", run(&fine));
    let tcp = vs(
        "  hosts: [a.com]\n  tcp:\n  - route: [{destination: {host: a}}]\n  - route: [{destination: {host: b}}]\n",
    );
    assert_warning(&tcp, "spec.tcp[1]", "only the last rule");
}

use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Principal, Rbac, permission, principal, rbac,
};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, header_matcher::HeaderMatchSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    MetadataMatcher, StringMatcher, ValueMatcher, list_matcher,
    metadata_matcher::path_segment::Segment, string_matcher::MatchPattern, value_matcher,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use serde_json::{Value, json};

use super::*;
use crate::config::istio::security::AuthorizationPolicy;

const TD: &str = "cluster.local";

fn spec(yaml: &str) -> AuthorizationPolicy {
    serde_saphyr::from_str(yaml).unwrap()
}

fn applied<'a>(
    namespace: &'a str,
    name: &'a str,
    spec: &'a AuthorizationPolicy,
) -> Applied<'a, AuthorizationPolicy> {
    Applied {
        namespace,
        name,
        spec,
    }
}

fn http_any(f: &HttpFilter) -> &Any {
    assert_eq!(f.name, HTTP_RBAC);
    match &f.config_type {
        Some(http_filter::ConfigType::TypedConfig(any)) => any,
        other => panic!("no typed config: {other:?}"),
    }
}

fn tcp_any(f: &Filter) -> &Any {
    assert_eq!(f.name, NETWORK_RBAC);
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => any,
        other => panic!("no typed config: {other:?}"),
    }
}

/// The filter's config decoded into envoy-types' own message, and checked against Envoy's rules.
fn http_rbac(f: &HttpFilter) -> HttpRbac {
    let any = http_any(f);
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
    );
    let rbac = HttpRbac::decode(any.value.as_slice()).unwrap();
    check_envoy_rules(rbac.rules.as_ref().unwrap());
    rbac
}

fn tcp_rbac(f: &Filter) -> NetworkRbac {
    let any = tcp_any(f);
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
    );
    let rbac = NetworkRbac::decode(any.value.as_slice()).unwrap();
    assert_eq!(rbac.stat_prefix, "tcp.", "Envoy requires a stat prefix");
    check_envoy_rules(rbac.rules.as_ref().unwrap());
    rbac
}

/// The filter as Envoy's config_dump prints it.
fn json_of(any: &Any) -> Value {
    crate::debug::json::any_to_json(&any.encode_to_vec()).unwrap()
}

/// One policy of an HTTP filter, as JSON.
fn http_policy_json(f: &HttpFilter, name: &str) -> Value {
    let json = json_of(http_any(f));
    json["rules"]["policies"][name].clone()
}

fn actions(filters: &[HttpFilter]) -> Vec<rbac::Action> {
    filters
        .iter()
        .map(|f| http_rbac(f).rules.unwrap().action())
        .collect()
}

fn names(rules: &Rbac) -> Vec<String> {
    let mut names: Vec<String> = rules.policies.keys().cloned().collect();
    names.sort();
    names
}

// ---- Envoy's proto constraints (PGV rules of rbac.proto, string.proto, metadata.proto…) ----

fn check_envoy_rules(rbac: &Rbac) {
    for (name, policy) in &rbac.policies {
        assert!(
            !policy.permissions.is_empty() && !policy.principals.is_empty(),
            "{name}: empty policy"
        );
        policy.permissions.iter().for_each(check_permission);
        policy.principals.iter().for_each(check_principal);
    }
}

fn check_permission(p: &Permission) {
    use permission::Rule;
    match p.rule.as_ref().expect("permission without rule") {
        Rule::AndRules(set) | Rule::OrRules(set) => {
            assert!(!set.rules.is_empty(), "empty permission set");
            set.rules.iter().for_each(check_permission);
        }
        Rule::NotRule(inner) => check_permission(inner),
        Rule::Any(any) => assert!(*any, "any must be true"),
        Rule::Header(h) => check_header(h),
        Rule::UrlPath(path) => match &path.rule {
            Some(envoy_types::pb::envoy::r#type::matcher::v3::path_matcher::Rule::Path(m)) => {
                check_string(m)
            }
            None => panic!("empty path matcher"),
        },
        Rule::DestinationPort(port) => assert!(*port <= 65535),
        Rule::DestinationIp(cidr) => check_cidr(cidr),
        Rule::RequestedServerName(m) => check_string(m),
        Rule::SourcedMetadata(m) => check_metadata(m.metadata_matcher.as_ref().unwrap()),
        Rule::UriTemplate(t) => {
            assert!(!t.name.is_empty());
            let config =
                UriTemplateMatchConfig::decode(t.typed_config.as_ref().unwrap().value.as_slice())
                    .unwrap();
            assert!(config.path_template.starts_with('/') && config.path_template.len() <= 256);
        }
        other => panic!("unexpected permission {other:?}"),
    }
}

fn check_principal(p: &Principal) {
    use principal::Identifier;
    match p.identifier.as_ref().expect("principal without identifier") {
        Identifier::AndIds(set) | Identifier::OrIds(set) => {
            assert!(!set.ids.is_empty(), "empty principal set");
            set.ids.iter().for_each(check_principal);
        }
        Identifier::NotId(inner) => check_principal(inner),
        Identifier::Any(any) => assert!(*any, "any must be true"),
        Identifier::Authenticated(a) => check_string(a.principal_name.as_ref().unwrap()),
        Identifier::DirectRemoteIp(c) | Identifier::RemoteIp(c) => check_cidr(c),
        Identifier::Header(h) => check_header(h),
        Identifier::SourcedMetadata(m) => check_metadata(m.metadata_matcher.as_ref().unwrap()),
        other => panic!("unexpected principal {other:?}"),
    }
}

fn check_string(m: &StringMatcher) {
    match m.match_pattern.as_ref().expect("empty string matcher") {
        MatchPattern::Prefix(s) | MatchPattern::Suffix(s) => {
            assert!(!s.is_empty(), "empty prefix/suffix")
        }
        MatchPattern::SafeRegex(r) => {
            assert!(!r.regex.is_empty());
            regex_syntax::Parser::new()
                .parse(&r.regex)
                .unwrap_or_else(|e| panic!("{}: {e}", r.regex));
        }
        MatchPattern::Exact(_) => {}
        other => panic!("unexpected string matcher {other:?}"),
    }
}

fn check_header(h: &HeaderMatcher) {
    assert!(!h.name.is_empty() && !h.name.contains(['\0', '\r', '\n']));
    match h
        .header_match_specifier
        .as_ref()
        .expect("header matcher without specifier")
    {
        HeaderMatchSpecifier::StringMatch(m) => check_string(m),
        HeaderMatchSpecifier::PresentMatch(_) => {}
        other => panic!("unexpected header matcher {other:?}"),
    }
}

fn check_cidr(c: &envoy_types::pb::envoy::config::core::v3::CidrRange) {
    let ip: std::net::IpAddr = c.address_prefix.parse().unwrap();
    let len = c.prefix_len.as_ref().unwrap().value;
    assert!(len <= if ip.is_ipv4() { 32 } else { 128 });
}

fn check_metadata(m: &MetadataMatcher) {
    assert!(!m.filter.is_empty() && !m.path.is_empty());
    for segment in &m.path {
        let Some(Segment::Key(key)) = &segment.segment else {
            panic!("segment without key")
        };
        assert!(!key.is_empty());
    }
    check_value(m.value.as_ref().expect("metadata matcher without value"));
}

fn check_value(v: &ValueMatcher) {
    match v.match_pattern.as_ref().expect("empty value matcher") {
        value_matcher::MatchPattern::StringMatch(m) => check_string(m),
        value_matcher::MatchPattern::OrMatch(or) => {
            assert!(or.value_matchers.len() >= 2, "or_match needs two matchers");
            or.value_matchers.iter().for_each(check_value);
        }
        value_matcher::MatchPattern::ListMatch(list) => match &list.match_pattern {
            Some(list_matcher::MatchPattern::OneOf(one)) => check_value(one),
            None => panic!("empty list matcher"),
        },
        other => panic!("unexpected value matcher {other:?}"),
    }
}

// ---- actions and precedence ----

#[test]
fn allow_nothing_is_an_allow_filter_whose_policy_never_matches() {
    for yaml in ["action: ALLOW", "rules: []"] {
        let p = spec(yaml);
        let filters = http_filters(&[applied("foo", "allow-none", &p)], TD);
        assert_eq!(filters.len(), 1, "{yaml}");
        let rules = http_rbac(&filters[0]).rules.unwrap();
        assert_eq!(rules.action(), rbac::Action::Allow);
        assert_eq!(
            http_policy_json(&filters[0], "ns[foo]-policy[allow-none]-rule[0]"),
            json!({"permissions": [{"not_rule": {"any": true}}], "principals": [{"not_id": {"any": true}}]}),
            "{yaml}"
        );
    }
}

#[test]
fn an_empty_rule_denies_everything_and_allows_everything() {
    let deny = spec("action: DENY\nrules: [{}]");
    let allow = spec("rules: [{}]");
    let all = json!({"permissions": [{"and_rules": {"rules": [{"any": true}]}}], "principals": [{"and_ids": {"ids": [{"any": true}]}}]});
    let filters = http_filters(&[applied("foo", "deny-all", &deny)], TD);
    assert_eq!(actions(&filters), [rbac::Action::Deny]);
    assert_eq!(
        http_policy_json(&filters[0], "ns[foo]-policy[deny-all]-rule[0]"),
        all
    );
    let filters = http_filters(&[applied("foo", "allow-all", &allow)], TD);
    assert_eq!(actions(&filters), [rbac::Action::Allow]);
    assert_eq!(
        http_policy_json(&filters[0], "ns[foo]-policy[allow-all]-rule[0]"),
        all
    );
}

#[test]
fn no_allow_policy_means_no_allow_filter() {
    assert!(http_filters(&[], TD).is_empty());
    assert!(network_filters(&[], TD).is_empty());
    let deny = spec("action: DENY\nrules: [{to: [{operation: {methods: [DELETE]}}]}]");
    assert_eq!(
        actions(&http_filters(&[applied("foo", "d", &deny)], TD)),
        [rbac::Action::Deny]
    );
}

#[test]
fn filters_come_in_istiods_order_custom_audit_deny_allow() {
    let allow = spec("rules: [{to: [{operation: {paths: [/a]}}]}]");
    let deny = spec("action: DENY\nrules: [{to: [{operation: {paths: [/d]}}]}]");
    let audit = spec("action: AUDIT\nrules: [{to: [{operation: {paths: [/l]}}]}]");
    let custom =
        spec("action: CUSTOM\nprovider: {name: opa}\nrules: [{to: [{operation: {paths: [/c]}}]}]");
    let policies = [
        applied("foo", "allow", &allow),
        applied("foo", "deny", &deny),
        applied("istio-system", "audit", &audit),
        applied("foo", "custom", &custom),
    ];
    let filters = http_filters(&policies, TD);
    assert_eq!(
        actions(&filters),
        [
            rbac::Action::Deny,
            rbac::Action::Log,
            rbac::Action::Deny,
            rbac::Action::Allow
        ]
    );
    let per_filter: Vec<Vec<String>> = filters
        .iter()
        .map(|f| names(&http_rbac(f).rules.unwrap()))
        .collect();
    assert_eq!(
        per_filter,
        [
            vec![
                "istio-ext-authz-opa-ns[foo]-policy[custom]-rule[0]-deny-due-to-bad-CUSTOM-action"
                    .to_string()
            ],
            vec!["ns[istio-system]-policy[audit]-rule[0]".to_string()],
            vec!["ns[foo]-policy[deny]-rule[0]".to_string()],
            vec!["ns[foo]-policy[allow]-rule[0]".to_string()],
        ]
    );
    let tcp: Vec<rbac::Action> = network_filters(&policies, TD)
        .iter()
        .map(|f| tcp_rbac(f).rules.unwrap().action())
        .collect();
    assert_eq!(
        tcp,
        [
            rbac::Action::Deny,
            rbac::Action::Log,
            rbac::Action::Deny,
            rbac::Action::Allow
        ]
    );
}

#[test]
fn policies_of_one_action_share_a_filter_one_policy_per_rule() {
    let a =
        spec("rules: [{to: [{operation: {ports: ['80']}}]}, {to: [{operation: {ports: ['81']}}]}]");
    let b = spec("rules: [{to: [{operation: {ports: ['82']}}]}]");
    let filters = http_filters(&[applied("foo", "a", &a), applied("bar", "b", &b)], TD);
    assert_eq!(filters.len(), 1);
    assert_eq!(
        names(&http_rbac(&filters[0]).rules.unwrap()),
        [
            "ns[bar]-policy[b]-rule[0]",
            "ns[foo]-policy[a]-rule[0]",
            "ns[foo]-policy[a]-rule[1]"
        ]
    );
}

#[test]
fn custom_fails_closed_on_http_and_tcp() {
    let custom = spec(
        "action: CUSTOM\nprovider: {name: ext}\nrules: [{to: [{operation: {paths: [/admin]}}]}]",
    );
    let policies = [applied("foo", "ext", &custom)];
    let http = http_filters(&policies, TD);
    assert_eq!(actions(&http), [rbac::Action::Deny]);
    let name = "istio-ext-authz-ext-ns[foo]-policy[ext]-rule[0]-deny-due-to-bad-CUSTOM-action";
    assert_eq!(
        http_policy_json(&http[0], name)["permissions"],
        json!([{"and_rules": {"rules": [{"or_rules": {"rules": [{"url_path": {"path": {"exact": "/admin"}}}]}}]}}])
    );
    // A TCP connection cannot be told apart by path: the whole port is denied, never allowed.
    let tcp = network_filters(&policies, TD);
    let rules = tcp_rbac(&tcp[0]).rules.unwrap();
    assert_eq!(rules.action(), rbac::Action::Deny);
    let json = json_of(tcp_any(&tcp[0]));
    assert_eq!(
        json["rules"]["policies"][name]["permissions"],
        json!([{"and_rules": {"rules": [{"any": true}]}}])
    );
}

// ---- sources ----

#[test]
fn sources_translate_as_istiod_in_its_order() {
    let p = spec(
        r#"
rules:
- from:
  - source:
      principals: ["cluster.local/ns/a/sa/b", "prefix-*", "*-suffix", "*"]
      notPrincipals: ["other.td/ns/x/sa/y"]
      namespaces: ["ns", "ns-*"]
      notNamespaces: ["*-test"]
      remoteIpBlocks: ["10.250.90.4"]
      ipBlocks: ["1.2.3.4", "5.6.0.0/16", "2001:db8::/32"]
      notIpBlocks: ["9.0.0.1"]
"#,
    );
    let filters = http_filters(&[applied("foo", "src", &p)], "example.org");
    let policy = http_policy_json(&filters[0], "ns[foo]-policy[src]-rule[0]");
    let auth = |m: Value| json!({"authenticated": {"principal_name": m}});
    let regex = |r: &str| json!({"safe_regex": {"regex": r}});
    assert_eq!(
        policy["principals"],
        json!([{"and_ids": {"ids": [
            {"or_ids": {"ids": [
                auth(json!({"exact": "spiffe://example.org/ns/a/sa/b"})),
                auth(json!({"prefix": "spiffe://prefix-"})),
                auth(regex("spiffe://.*-suffix")),
                auth(regex(".+")),
            ]}},
            {"not_id": {"or_ids": {"ids": [auth(json!({"exact": "spiffe://other.td/ns/x/sa/y"}))]}}},
            {"or_ids": {"ids": [auth(regex(".*/ns/ns/.*")), auth(regex(".*/ns/ns-.*/.*"))]}},
            {"not_id": {"or_ids": {"ids": [auth(regex(".*/ns/.*-test/.*"))]}}},
            {"or_ids": {"ids": [{"remote_ip": {"address_prefix": "10.250.90.4", "prefix_len": 32}}]}},
            {"or_ids": {"ids": [
                {"direct_remote_ip": {"address_prefix": "1.2.3.4", "prefix_len": 32}},
                {"direct_remote_ip": {"address_prefix": "5.6.0.0", "prefix_len": 16}},
                {"direct_remote_ip": {"address_prefix": "2001:db8::", "prefix_len": 32}},
            ]}},
            {"not_id": {"or_ids": {"ids": [{"direct_remote_ip": {"address_prefix": "9.0.0.1", "prefix_len": 32}}]}}},
        ]}}])
    );
    assert_eq!(
        policy["permissions"],
        json!([{"and_rules": {"rules": [{"any": true}]}}])
    );
}

#[test]
fn cluster_local_in_a_principal_means_the_mesh_trust_domain() {
    assert_eq!(
        model::local_trust_domain("cluster.local/ns/a/sa/b", "example.org"),
        "example.org/ns/a/sa/b"
    );
    assert_eq!(
        model::local_trust_domain("cluster.local/ns/a/sa/b", "cluster.local"),
        "cluster.local/ns/a/sa/b"
    );
    for kept in [
        "other/ns/a/sa/b",
        "*/ns/a/sa/b",
        "*local/ns/a/sa/b",
        "cluster.local/sa/b",
        "*",
    ] {
        assert_eq!(model::local_trust_domain(kept, "example.org"), kept);
    }
    // The `when` form is migrated too.
    let p =
        spec("rules: [{when: [{key: source.principal, notValues: [cluster.local/ns/a/sa/b]}]}]");
    let filters = http_filters(&[applied("foo", "w", &p)], "td.example");
    assert_eq!(
        http_policy_json(&filters[0], "ns[foo]-policy[w]-rule[0]")["principals"][0]["and_ids"]["ids"]
            [0],
        json!({"not_id": {"or_ids": {"ids": [{"authenticated": {"principal_name": {"exact": "spiffe://td.example/ns/a/sa/b"}}}]}}})
    );
}

#[test]
fn service_accounts_and_trust_domains_match_the_spiffe_identity() {
    let p = spec(
        "rules: [{from: [{source: {serviceAccounts: [sleep, other/a.b], trustDomains: [example.org, '*.corp']}}]}]",
    );
    let filters = http_filters(&[applied("foo", "sa", &p)], TD);
    let ids = &http_policy_json(&filters[0], "ns[foo]-policy[sa]-rule[0]")["principals"][0]["and_ids"]
        ["ids"];
    let auth = |m: Value| json!({"authenticated": {"principal_name": m}});
    assert_eq!(
        ids[0],
        json!({"or_ids": {"ids": [auth(json!({"prefix": "spiffe://example.org/"})), auth(json!({"safe_regex": {"regex": "spiffe://.*\\.corp/.*"}}))]}})
    );
    assert_eq!(
        ids[1],
        json!({"or_ids": {"ids": [
            auth(json!({"safe_regex": {"regex": "spiffe://.+/ns/foo/(.+/|)sa/sleep(/.+)?"}})),
            auth(json!({"safe_regex": {"regex": "spiffe://.+/ns/other/(.+/|)sa/a\\.b(/.+)?"}})),
        ]}})
    );
    let accounts = regex::Regex::new(&format!(
        "^(?:{})$",
        "spiffe://.+/ns/foo/(.+/|)sa/sleep(/.+)?"
    ))
    .unwrap();
    assert!(accounts.is_match("spiffe://cluster.local/ns/foo/sa/sleep"));
    assert!(!accounts.is_match("spiffe://cluster.local/ns/foo/sa/sleep-more"));
}

// ---- request principals and JWT claims, from jwt_authn's metadata ----

fn jwt_claim(path: &[&str], value: Value) -> Value {
    let mut keys = vec![json!({"key": "payload"})];
    keys.extend(path.iter().map(|k| json!({"key": k})));
    json!({"sourced_metadata": {"metadata_matcher": {"filter": "envoy.filters.http.jwt_authn", "path": keys, "value": value}}})
}

fn iss_sub(iss: Value, sub: Value) -> Value {
    json!({"and_ids": {"ids": [jwt_claim(&["iss"], json!({"string_match": iss})), jwt_claim(&["sub"], json!({"string_match": sub}))]}})
}

#[test]
fn request_principals_match_iss_and_sub_separately() {
    let any = || json!({"safe_regex": {"regex": ".+"}});
    let exact = |v: &str| json!({"exact": v});
    let cases = [
        (
            "https://issuer.example/path/subject",
            iss_sub(exact("https://issuer.example/path"), exact("subject")),
        ),
        ("*", iss_sub(any(), any())),
        ("*/sub", iss_sub(any(), exact("sub"))),
        (
            "*.example/sub",
            iss_sub(json!({"suffix": ".example"}), exact("sub")),
        ),
        ("*sub-only", iss_sub(any(), json!({"suffix": "sub-only"}))),
        ("iss/*", iss_sub(exact("iss"), any())),
        (
            "iss/user-*",
            iss_sub(exact("iss"), json!({"prefix": "user-"})),
        ),
        (
            "https://iss*",
            iss_sub(exact("https:/"), json!({"prefix": "iss"})),
        ),
        ("issuer-*", iss_sub(json!({"prefix": "issuer-"}), any())),
    ];
    for (value, want) in cases {
        let p = spec(&format!(
            "rules: [{{from: [{{source: {{requestPrincipals: ['{value}']}}}}]}}]"
        ));
        let filters = http_filters(&[applied("foo", "rp", &p)], TD);
        let ids = &http_policy_json(&filters[0], "ns[foo]-policy[rp]-rule[0]")["principals"][0]["and_ids"]
            ["ids"];
        assert_eq!(ids[0], want, "{value}");
    }
    // Several values are an OR of the pairs; `not` values are NOT that OR.
    let p = spec(
        "rules: [{from: [{source: {requestPrincipals: [a/b, c/d], notRequestPrincipals: [e/f]}}]}]",
    );
    let filters = http_filters(&[applied("foo", "rp", &p)], TD);
    let ids = &http_policy_json(&filters[0], "ns[foo]-policy[rp]-rule[0]")["principals"][0]["and_ids"]
        ["ids"];
    assert_eq!(
        ids[0],
        json!({"or_ids": {"ids": [iss_sub(exact("a"), exact("b")), iss_sub(exact("c"), exact("d"))]}})
    );
    assert_eq!(ids[1], json!({"not_id": iss_sub(exact("e"), exact("f"))}));
}

#[test]
fn jwt_conditions_read_claims_as_a_value_or_a_list() {
    let p = spec(
        r#"
rules:
- when:
  - {key: "request.auth.claims[groups]", values: [admin, "dev-*"]}
  - {key: "request.auth.claims[realm][role]", values: [ops]}
  - {key: request.auth.audiences, values: [api]}
  - {key: request.auth.presenter, notValues: [bad]}
  - {key: request.auth.principal, values: [iss/sub]}
"#,
    );
    let filters = http_filters(&[applied("foo", "jwt", &p)], TD);
    let ids = &http_policy_json(&filters[0], "ns[foo]-policy[jwt]-rule[0]")["principals"][0]["and_ids"]
        ["ids"];
    let list_or = |m: Value| json!({"or_match": {"value_matchers": [{"list_match": {"one_of": m.clone()}}, m]}});
    let admin_or_dev = json!({"or_match": {"value_matchers": [{"string_match": {"exact": "admin"}}, {"string_match": {"prefix": "dev-"}}]}});
    assert_eq!(ids[0], jwt_claim(&["groups"], list_or(admin_or_dev)));
    assert_eq!(
        ids[1],
        jwt_claim(
            &["realm", "role"],
            list_or(json!({"string_match": {"exact": "ops"}}))
        )
    );
    assert_eq!(
        ids[2],
        jwt_claim(&["aud"], list_or(json!({"string_match": {"exact": "api"}})))
    );
    assert_eq!(
        ids[3],
        json!({"not_id": jwt_claim(&["azp"], list_or(json!({"string_match": {"exact": "bad"}})))})
    );
    assert_eq!(
        ids[4],
        iss_sub(json!({"exact": "iss"}), json!({"exact": "sub"}))
    );
}

// ---- operations ----

#[test]
fn operations_translate_as_istiod_in_its_order() {
    let p = spec(
        r#"
rules:
- to:
  - operation:
      ports: ["80", "8080"]
      notPorts: ["9000"]
      paths: [/exact, /prefix/*, "*/suffix", "*"]
      notPaths: [/private/*]
      methods: [GET, "HEAD*"]
      notMethods: ["*"]
"#,
    );
    let filters = http_filters(&[applied("foo", "op", &p)], TD);
    let policy = http_policy_json(&filters[0], "ns[foo]-policy[op]-rule[0]");
    let method = |m: Value| json!({"header": {"name": ":method", "string_match": m}});
    let path = |m: Value| json!({"url_path": {"path": m}});
    assert_eq!(
        policy["permissions"],
        json!([{"and_rules": {"rules": [
            {"or_rules": {"rules": [method(json!({"exact": "GET"})), method(json!({"prefix": "HEAD"}))]}},
            {"not_rule": {"or_rules": {"rules": [{"header": {"name": ":method", "present_match": true}}]}}},
            {"or_rules": {"rules": [
                path(json!({"exact": "/exact"})),
                path(json!({"prefix": "/prefix/"})),
                path(json!({"suffix": "/suffix"})),
                path(json!({"safe_regex": {"regex": ".+"}})),
            ]}},
            {"not_rule": {"or_rules": {"rules": [path(json!({"prefix": "/private/"}))]}}},
            {"or_rules": {"rules": [{"destination_port": 80}, {"destination_port": 8080}]}},
            {"not_rule": {"or_rules": {"rules": [{"destination_port": 9000}]}}},
        ]}}])
    );
    assert_eq!(
        policy["principals"],
        json!([{"and_ids": {"ids": [{"any": true}]}}])
    );
}

#[test]
fn hosts_match_case_insensitively_with_or_without_a_port() {
    let p = spec(
        r#"rules: [{to: [{operation: {hosts: [Example.com, "*.suffix.com", "prefix.*", "*", "fixed.com:8080"], notHosts: [admin.com]}}]}]"#,
    );
    let filters = http_filters(&[applied("foo", "h", &p)], TD);
    let rules = &http_policy_json(&filters[0], "ns[foo]-policy[h]-rule[0]")["permissions"][0]["and_rules"]
        ["rules"];
    let authority = |m: Value| json!({"header": {"name": ":authority", "string_match": m}});
    assert_eq!(
        rules[0],
        json!({"or_rules": {"rules": [
            authority(json!({"exact": "Example.com", "ignore_case": true})),
            authority(json!({"prefix": "Example.com:", "ignore_case": true})),
            authority(json!({"suffix": ".suffix.com", "ignore_case": true})),
            authority(json!({"safe_regex": {"regex": "(?i).*\\.suffix\\.com:[0-9]+"}})),
            authority(json!({"prefix": "prefix.", "ignore_case": true})),
            {"header": {"name": ":authority", "present_match": true}},
            authority(json!({"exact": "fixed.com:8080", "ignore_case": true})),
        ]}})
    );
    assert_eq!(
        rules[1],
        json!({"not_rule": {"or_rules": {"rules": [
            authority(json!({"exact": "admin.com", "ignore_case": true})),
            authority(json!({"prefix": "admin.com:", "ignore_case": true})),
        ]}}})
    );
    let suffix_with_port = regex::Regex::new("^(?:(?i).*\\.suffix\\.com:[0-9]+)$").unwrap();
    assert!(
        suffix_with_port.is_match("API.Suffix.com:443")
            && !suffix_with_port.is_match("api.suffix.com.evil:443")
    );
}

fn template_of(p: &Permission) -> Option<String> {
    match &p.rule {
        Some(permission::Rule::UriTemplate(t)) => {
            assert_eq!(t.name, "uri-template");
            let any = t.typed_config.as_ref().unwrap();
            assert_eq!(
                any.type_url,
                "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig"
            );
            Some(
                UriTemplateMatchConfig::decode(any.value.as_slice())
                    .unwrap()
                    .path_template,
            )
        }
        _ => None,
    }
}

/// The permissions inside `and_rules` → `or_rules` of the first policy.
fn first_or_rules(rules: &Rbac) -> Vec<Permission> {
    let policy = rules.policies.values().next().unwrap();
    let Some(permission::Rule::AndRules(and)) = &policy.permissions[0].rule else {
        panic!("no and_rules")
    };
    let Some(permission::Rule::OrRules(or)) = &and.rules[0].rule else {
        panic!("no or_rules")
    };
    or.rules.clone()
}

#[test]
fn path_templates_become_uri_templates_and_bad_ones_are_refused() {
    let p = spec(
        r#"rules: [{to: [{operation: {paths: ["/path/template/{*}", "/{**}/path/template", "/a/{*}/b/{**}"]}}]}]"#,
    );
    let filters = http_filters(&[applied("foo", "t", &p)], TD);
    let templates: Vec<Option<String>> = first_or_rules(&http_rbac(&filters[0]).rules.unwrap())
        .iter()
        .map(template_of)
        .collect();
    assert_eq!(
        templates,
        [
            Some("/path/template/*".to_string()),
            Some("/**/path/template".to_string()),
            Some("/a/*/b/**".to_string())
        ]
    );

    // `{**}` before another operator is refused by Envoy: an ALLOW rule using it is left out…
    let bad_allow = spec(r#"rules: [{to: [{operation: {paths: ["/{**}/a/{*}", /ok]}}]}]"#);
    let filters = http_filters(&[applied("foo", "bad", &bad_allow)], TD);
    assert!(http_rbac(&filters[0]).rules.unwrap().policies.is_empty());
    // …and a DENY rule loses the whole list, so it denies more, not less.
    let bad_deny = spec(
        r#"action: DENY
rules: [{to: [{operation: {paths: ["/{**}/a/{*}", /ok], methods: [POST]}}]}]"#,
    );
    let filters = http_filters(&[applied("foo", "bad", &bad_deny)], TD);
    let or = first_or_rules(&http_rbac(&filters[0]).rules.unwrap());
    assert_eq!(or.len(), 1, "only the methods are left: {or:?}");
    assert!(matches!(&or[0].rule, Some(permission::Rule::Header(h)) if h.name == ":method"));

    for bad in ["/{**}/a/{*}", "/a{*}", "/a//{*}", "/a b/{*}"] {
        assert!(
            matches!(
                attribute::Kind::Path.permissions(bad),
                Err(AuthzError::Invalid { .. })
            ),
            "{bad}"
        );
    }
}

// ---- when conditions ----

#[test]
fn when_conditions_land_on_principals_or_permissions() {
    let p = spec(
        r#"
rules:
- to: [{operation: {methods: [GET]}}]
  when:
  - {key: "request.headers[x-token]", values: ["*"], notValues: [bad-*]}
  - {key: source.ip, values: [10.0.0.0/8]}
  - {key: remote.ip, notValues: [192.168.0.1]}
  - {key: source.namespace, values: [prod]}
  - {key: destination.ip, values: [10.1.2.3]}
  - {key: destination.port, notValues: ["8443"]}
  - {key: connection.sni, values: ["*.example.com"]}
  - {key: "experimental.envoy.filters.a.b[c]", values: [exact, "[listed]"]}
"#,
    );
    let filters = http_filters(&[applied("foo", "w", &p)], TD);
    let policy = http_policy_json(&filters[0], "ns[foo]-policy[w]-rule[0]");
    assert_eq!(
        policy["principals"][0]["and_ids"]["ids"],
        json!([
            {"or_ids": {"ids": [{"header": {"name": "x-token", "present_match": true}}]}},
            {"not_id": {"or_ids": {"ids": [{"header": {"name": "x-token", "string_match": {"prefix": "bad-"}}}]}}},
            {"or_ids": {"ids": [{"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}}]}},
            {"not_id": {"or_ids": {"ids": [{"remote_ip": {"address_prefix": "192.168.0.1", "prefix_len": 32}}]}}},
            {"or_ids": {"ids": [{"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/prod/.*"}}}}]}},
        ])
    );
    assert_eq!(
        policy["permissions"][0]["and_rules"]["rules"],
        json!([
            {"or_rules": {"rules": [{"header": {"name": ":method", "string_match": {"exact": "GET"}}}]}},
            {"or_rules": {"rules": [{"destination_ip": {"address_prefix": "10.1.2.3", "prefix_len": 32}}]}},
            {"not_rule": {"or_rules": {"rules": [{"destination_port": 8443}]}}},
            {"or_rules": {"rules": [{"requested_server_name": {"suffix": ".example.com"}}]}},
            {"sourced_metadata": {"metadata_matcher": {"filter": "envoy.filters.a.b", "path": [{"key": "c"}], "value": {"or_match": {"value_matchers": [
                {"string_match": {"exact": "exact"}},
                {"list_match": {"one_of": {"string_match": {"exact": "listed"}}}},
            ]}}}}},
        ])
    );
}

#[test]
fn several_froms_and_tos_are_alternatives_each_with_the_conditions() {
    let p = spec(
        r#"
rules:
- from: [{source: {namespaces: [a]}}, {source: {namespaces: [b]}}]
  to: [{operation: {ports: ["1"]}}, {operation: {ports: ["2"]}}]
  when: [{key: source.ip, values: [1.1.1.1]}, {key: destination.port, values: ["3"]}]
"#,
    );
    let filters = http_filters(&[applied("foo", "m", &p)], TD);
    let policy = &http_rbac(&filters[0]).rules.unwrap().policies["ns[foo]-policy[m]-rule[0]"];
    assert_eq!(policy.principals.len(), 2);
    assert_eq!(policy.permissions.len(), 2);
    for principal in &policy.principals {
        let Some(principal::Identifier::AndIds(and)) = &principal.identifier else {
            panic!()
        };
        assert_eq!(and.ids.len(), 2, "namespace, then source.ip");
        assert!(
            matches!(&and.ids[1].identifier, Some(principal::Identifier::OrIds(or)) if matches!(or.ids[0].identifier, Some(principal::Identifier::DirectRemoteIp(_))))
        );
    }
    for permission in &policy.permissions {
        let Some(permission::Rule::AndRules(and)) = &permission.rule else {
            panic!()
        };
        assert_eq!(and.rules.len(), 2, "port, then destination.port");
    }
}

// ---- TCP chains ----

#[test]
fn tcp_allow_rules_needing_http_never_match() {
    // istiod's testdata tcp/allow-both-http-tcp: only the rule without HTTP attributes is left.
    let p = spec(
        r#"
rules:
- from: [{source: {requestPrincipals: [id-1]}}]
  to: [{operation: {methods: [GET]}}]
- from: [{source: {namespaces: [ns-1]}}]
  to: [{operation: {ports: ["8080"], methods: [GET]}}]
- from: [{source: {namespaces: [ns-2], requestPrincipals: [id-2]}}]
  to: [{operation: {ports: ["9090"]}}]
- from: [{source: {namespaces: [ns-1]}}]
  to: [{operation: {ports: ["80"]}}]
"#,
    );
    let filters = network_filters(&[applied("foo", "httpbin-deny", &p)], TD);
    assert_eq!(filters.len(), 1);
    assert_eq!(
        json_of(tcp_any(&filters[0])),
        json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
            "rules": {"policies": {"ns[foo]-policy[httpbin-deny]-rule[3]": {
                "permissions": [{"and_rules": {"rules": [{"or_rules": {"rules": [{"destination_port": 80}]}}]}}],
                "principals": [{"and_ids": {"ids": [{"or_ids": {"ids": [{"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/ns-1/.*"}}}}]}}]}}],
            }}},
            "shadow_rules_stat_prefix": "istio_dry_run_allow_",
            "stat_prefix": "tcp.",
        })
    );
    // Only HTTP rules: the ALLOW filter is still there, and allows nothing.
    let http_only = spec("rules: [{to: [{operation: {paths: [/a]}}]}]");
    let filters = network_filters(&[applied("foo", "h", &http_only)], TD);
    let rules = tcp_rbac(&filters[0]).rules.unwrap();
    assert_eq!(rules.action(), rbac::Action::Allow);
    assert!(rules.policies.is_empty());
    // The same policy on an HTTP chain keeps every rule.
    assert_eq!(
        http_rbac(&http_filters(&[applied("foo", "httpbin-deny", &p)], TD)[0])
            .rules
            .unwrap()
            .policies
            .len(),
        4
    );
}

#[test]
fn tcp_deny_and_audit_rules_drop_http_attributes_and_match_more() {
    for (action, want) in [("DENY", rbac::Action::Deny), ("AUDIT", rbac::Action::Log)] {
        let p = spec(&format!(
            r#"
action: {action}
rules:
- to: [{{operation: {{methods: [GET]}}}}]
- from: [{{source: {{namespaces: [ns-1], requestPrincipals: [id]}}}}]
  to: [{{operation: {{ports: ["80"], paths: [/a]}}}}]
  when: [{{key: "request.headers[x]", values: [y]}}]
"#
        ));
        let filters = network_filters(&[applied("foo", "d", &p)], TD);
        let rules = tcp_rbac(&filters[0]).rules.unwrap();
        assert_eq!(rules.action(), want);
        let json = json_of(tcp_any(&filters[0]));
        let policies = &json["rules"]["policies"];
        let any_principal = json!([{"and_ids": {"ids": [{"any": true}]}}]);
        assert_eq!(
            policies["ns[foo]-policy[d]-rule[0]"]["permissions"],
            json!([{"and_rules": {"rules": [{"any": true}]}}]),
            "{action}"
        );
        assert_eq!(
            policies["ns[foo]-policy[d]-rule[0]"]["principals"], any_principal,
            "{action}"
        );
        assert_eq!(
            policies["ns[foo]-policy[d]-rule[1]"]["permissions"],
            json!([{"and_rules": {"rules": [{"or_rules": {"rules": [{"destination_port": 80}]}}]}}]),
            "{action}"
        );
        assert_eq!(
            policies["ns[foo]-policy[d]-rule[1]"]["principals"],
            json!([{"and_ids": {"ids": [{"or_ids": {"ids": [{"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/ns-1/.*"}}}}]}}]}}]),
            "{action}"
        );
    }
}

// ---- bytes ----

/// A policy with many rules and every kind of attribute, for the byte and constraint checks.
fn everything() -> AuthorizationPolicy {
    spec(
        r#"
action: DENY
rules:
- from:
  - source: {principals: [a/ns/b/sa/c, "*"], notNamespaces: [x], ipBlocks: [1.2.3.4], remoteIpBlocks: ["::1/128"], requestPrincipals: ["i/s"]}
  - source: {serviceAccounts: [s], notTrustDomains: [t]}
  to: [{operation: {hosts: [h.com], paths: ["/p/{*}", /q], methods: [GET], notPorts: ["1"]}}]
  when:
  - {key: "request.auth.claims[g]", values: [v]}
  - {key: connection.sni, notValues: [s]}
  - {key: "request.headers[h]", values: ["*x"]}
- {}
- to: [{operation: {ports: ["2"]}}]
- from: [{source: {namespaces: [n]}}]
- when: [{key: source.serviceAccount, values: [ns/sa]}, {key: source.trustDomain, values: ["*"]}]
"#,
    )
}

#[test]
fn equal_input_encodes_to_equal_bytes() {
    let p = everything();
    let policies = [applied("foo", "p", &p), applied("bar", "q", &p)];
    let once = http_filters(&policies, TD);
    let twice = http_filters(&policies, TD);
    assert_eq!(once, twice);
    // The same bytes as re-encoding the decoded message with its map sorted: the encoding
    // depends on the content only, not on a HashMap's order in this process.
    for f in &once {
        let any = http_any(f);
        let decoded = HttpRbac::decode(any.value.as_slice()).unwrap();
        assert_eq!(decoded.rules.as_ref().unwrap().policies.len(), 10);
        let rules = decoded.rules.unwrap();
        let sorted = encoding::HttpRbac {
            rules: Some(encoding::Rbac {
                action: rules.action,
                policies: rules.policies.into_iter().collect(),
            }),
            shadow_rules_stat_prefix: decoded.shadow_rules_stat_prefix,
        };
        assert_eq!(sorted.encode_to_vec(), any.value);
    }
}

#[test]
fn the_encoding_is_prosts_own_for_a_single_policy() {
    // With one policy a HashMap has one order, so envoy-types' message must give the same bytes.
    let p =
        spec("rules: [{from: [{source: {namespaces: [a]}}], to: [{operation: {paths: [/x]}}]}]");
    let policies = [applied("foo", "one", &p)];
    let http = http_filters(&policies, TD);
    let any = http_any(&http[0]);
    assert_eq!(
        HttpRbac::decode(any.value.as_slice())
            .unwrap()
            .encode_to_vec(),
        any.value
    );
    let tcp = network_filters(&policies, TD);
    let any = tcp_any(&tcp[0]);
    let decoded = NetworkRbac::decode(any.value.as_slice()).unwrap();
    assert_eq!(decoded.shadow_rules_stat_prefix, "istio_dry_run_allow_");
    assert_eq!(decoded.encode_to_vec(), any.value);
    let deny = spec("action: DENY\nrules: [{}]");
    let http = http_filters(&[applied("foo", "d", &deny)], TD);
    let any = http_any(&http[0]);
    let decoded = HttpRbac::decode(any.value.as_slice()).unwrap();
    assert_eq!(decoded.rules.as_ref().unwrap().action(), rbac::Action::Deny);
    assert_eq!(decoded.encode_to_vec(), any.value);
}

#[test]
fn every_generated_config_keeps_envoys_rules() {
    let p = everything();
    let mut allow = everything();
    allow.action = crate::config::istio::security::Action::Allow;
    let mut audit = everything();
    audit.action = crate::config::istio::security::Action::Audit;
    let policies = [
        applied("foo", "deny", &p),
        applied("foo", "allow", &allow),
        applied("foo", "audit", &audit),
    ];
    let http = http_filters(&policies, TD);
    assert_eq!(http.len(), 3);
    for f in &http {
        http_rbac(f);
    }
    let tcp = network_filters(&policies, TD);
    assert_eq!(tcp.len(), 3);
    for f in &tcp {
        tcp_rbac(f);
    }
}

#[test]
fn bad_input_leaves_rules_out_without_panicking() {
    let p = spec(
        r#"
rules:
- when: [{key: source.colour, values: [red]}]
- from: [{source: {ipBlocks: [not-an-ip]}}]
- to: [{operation: {ports: [http]}}]
- when: [{key: "request.headers[]", values: [x]}]
- when: [{key: "request.auth.claims[a][]", values: [x]}]
- to: [{operation: {ports: ["80"]}}]
"#,
    );
    let filters = http_filters(&[applied("foo", "bad", &p)], TD);
    assert_eq!(
        names(&http_rbac(&filters[0]).rules.unwrap()),
        ["ns[foo]-policy[bad]-rule[5]"]
    );

    // Under DENY the same rules lose what is bad and deny more.
    let mut deny = p.clone();
    deny.action = crate::config::istio::security::Action::Deny;
    let filters = http_filters(&[applied("foo", "bad", &deny)], TD);
    let rules = http_rbac(&filters[0]).rules.unwrap();
    assert_eq!(rules.policies.len(), 6);
    let json = json_of(http_any(&filters[0]));
    for i in 0..5 {
        let policy = &json["rules"]["policies"][format!("ns[foo]-policy[bad]-rule[{i}]")];
        assert_eq!(
            policy["principals"],
            json!([{"and_ids": {"ids": [{"any": true}]}}]),
            "rule {i}"
        );
        assert_eq!(
            policy["permissions"],
            json!([{"and_rules": {"rules": [{"any": true}]}}]),
            "rule {i}"
        );
    }
}

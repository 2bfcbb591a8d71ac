use super::*;
use crate::config::istio::{Duration, StringMatch};
use crate::validate::common::*;

#[test]
fn dns_names() {
    assert!(is_dns1123_label("reviews-v1"));
    assert!(!is_dns1123_label("-a") && !is_dns1123_label("a_b") && !is_dns1123_label(""));
    assert!(!is_dns1123_label(&"a".repeat(64)));
    assert!(is_k8s_subdomain("a.b-c.d") && !is_k8s_subdomain("A.b") && !is_k8s_subdomain("a..b"));
    assert!(is_k8s_dns1035_label("svc1") && !is_k8s_dns1035_label("1svc"));
}

#[test]
fn hosts_with_wildcards() {
    for ok in [
        "example.com",
        "*.example.com",
        "*",
        "*x",
        "reviews",
        "istio.io.",
        "*-foo.bar",
    ] {
        assert_eq!(validate_wildcard_domain(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "a.*.com",
        "foo_bar.com",
        "1.2.3.4",
        "example.123",
        "a..b",
    ] {
        assert!(validate_wildcard_domain(bad).is_err(), "{bad}");
    }
    assert!(validate_fqdn("*.example.com").is_err());
    assert!(validate_partial_wildcard("*x").is_err());
    assert!(validate_partial_wildcard("*.x").is_ok() && validate_partial_wildcard("*").is_ok());
}

#[test]
fn ports_ips_and_subnets() {
    assert!(validate_port(1).is_ok() && validate_port(65535).is_ok());
    assert!(validate_port(0).is_err() && validate_port(65536).is_err());
    assert!(
        validate_ip_subnet("10.0.0.0/8").is_ok() && validate_ip_subnet("2001:db8::/32").is_ok()
    );
    assert!(validate_ip_subnet("001:db8::").is_ok());
    assert!(validate_ip_subnet("1.2.3.4/99").is_err() && validate_ip_subnet("1.2.3/8").is_err());
    assert!(validate_ip_subnet("a/b/c").is_err());
}

#[test]
fn durations_need_a_whole_millisecond() {
    let d = |s: &str| Duration::parse(s).unwrap();
    assert!(validate_duration(d("1ms")).is_ok() && validate_duration(d("0.1s")).is_ok());
    assert!(validate_duration(d("0s")).is_err() && validate_duration(d("999us")).is_err());
    assert!(validate_duration(d("1.0005s")).is_err());
}

#[test]
fn percentages() {
    assert!(
        validate_percent(0).is_ok()
            && validate_percent(100).is_ok()
            && validate_percent(101).is_err()
    );
    assert!(validate_percentage(0.0).is_ok() && validate_percentage(12.5).is_ok());
    assert!(validate_percentage(-1.0).is_err() && validate_percentage(100.1).is_err());
    assert!(validate_percentage(0.00001).is_err());
}

#[test]
fn regexes_compile_or_explain() {
    assert!(validate_regex("^(.*?;)?(user=dev-123)(;.*)?").is_ok());
    let err = validate_regex("a(b").unwrap_err();
    assert!(err.contains("a(b") && err.contains("RE2"), "{err}");
    assert!(validate_regex(&"a".repeat(1025)).is_err());
    assert!(validate_string_match(&StringMatch::Prefix(String::new()), false).is_err());
    assert!(validate_string_match(&StringMatch::Prefix(String::new()), true).is_ok());
    assert!(validate_string_match(&StringMatch::Regex("[".into()), false).is_err());
}

#[test]
fn headers_and_labels() {
    assert!(validate_header_name("x-user_id").is_ok());
    assert!(validate_header_name("x user").is_err() && validate_header_name("").is_err());
    assert!(validate_header_value("%HOSTNAME% and 100%%").is_ok());
    assert!(validate_header_value("abc%123").is_err() && validate_header_value("a\nb").is_err());
    let labels = |k: &str, v: &str| [(k.to_string(), v.to_string())].into_iter().collect();
    assert!(validate_labels(&labels("app.kubernetes.io/name", "my_app.v1")).is_ok());
    assert!(validate_labels(&labels("app", "")).is_ok());
    assert!(validate_labels(&labels("-app", "x")).is_err());
    assert!(validate_labels(&labels("app", "-x")).is_err());
    assert!(validate_labels(&labels("a/b/c", "x")).is_err());
}

#[test]
fn export_to() {
    let run = |values: &[&str], se: bool| {
        let mut d = Diags::default();
        let v: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        validate_export_to(&mut d, "spec.exportTo", "ns1", &v, se);
        d.0
    };
    assert!(run(&[".", "other"], false).is_empty());
    assert!(run(&["*"], false).is_empty());
    assert!(run(&["~"], true).is_empty());
    assert!(!run(&["~"], false).is_empty());
    assert_eq!(run(&["*", "ns2"], false)[0].field, "spec.exportTo");
    assert_eq!(run(&[".", "ns1"], false)[0].field, "spec.exportTo[1]");
    assert_eq!(run(&["Bad_NS"], false)[0].field, "spec.exportTo[0]");
}

#[test]
fn metadata_names_and_annotations() {
    assert_error(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: Bad_Name}\nspec: {host: a.com}\n",
        "metadata.name",
        "not a valid name",
    );
    assert_error(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a, annotations: {istio.io/alwaysReject: \"\"}}\nspec: {host: a.com}\n",
        "metadata.annotations.istio.io/alwaysReject",
        "rejecting",
    );
    let found = run(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a, namespace: ns}\nspec: {host: a.com}\n",
    );
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn diagnostics_name_their_object() {
    let found = errors(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r, namespace: ns}\nspec: {host: \"\"}\n",
    );
    let key = found[0].object.as_ref().expect("object key");
    assert_eq!(key.to_string(), "DestinationRule ns/r");
}

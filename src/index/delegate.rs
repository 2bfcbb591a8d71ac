//! VirtualService delegation: a root VirtualService's `http[].delegate` routes are replaced by
//! the delegate's routes, merged as istiod merges them (`mergeHTTPRoutes`): each delegate match
//! must fall within a root match (a prefix within the root's prefix, the same exact value, no
//! other header value…), the merged match is the delegate's filled in with the root's, and the
//! root's rewrite, timeout, retries, fault, mirrors, CORS and headers apply where the delegate
//! sets none. A delegate route that conflicts with every root match is dropped with a warning.
//!
//! Destinations are written as FQDNs in their own VirtualService's namespace before merging,
//! so the merged routes resolve in the root's namespace as they did in the delegate's.

use std::collections::BTreeMap;

use super::visibility::ExportTo;
use crate::config::ObjectKey;
use crate::config::istio::VirtualService;
use crate::config::istio::common::StringMatch;
use crate::config::istio::virtual_service::{
    Destination, HeaderMatch, HttpMatchRequest, HttpRoute,
};
use crate::diagnostic::Diagnostic;
use crate::model::MeshConfig;

/// A VirtualService a root may delegate to.
pub struct DelegateSource<'a> {
    pub spec: &'a VirtualService,
    pub export_to: ExportTo,
}

/// `root` (in `namespace`) with every delegate route replaced by the delegate's merged routes;
/// `None` when it delegates nothing. `find(namespace, name)` looks a delegate up.
pub fn merge<'a>(
    root: &VirtualService,
    root_key: &ObjectKey,
    mesh: &MeshConfig,
    find: impl Fn(&str, &str) -> Option<DelegateSource<'a>>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<VirtualService> {
    if !root.http.iter().any(|r| r.delegate.is_some()) {
        return None;
    }
    let namespace = root_key.namespace.as_str();
    let mut merged = root.clone();
    merged.http = Vec::new();
    for (i, route) in root.http.iter().enumerate() {
        let Some(d) = &route.delegate else {
            merged.http.push(qualified(route.clone(), namespace, mesh));
            continue;
        };
        let delegate_ns = if d.namespace.is_empty() {
            namespace
        } else {
            d.namespace.as_str()
        };
        let field = format!("spec.http[{i}].delegate");
        let Some(delegate) = find(delegate_ns, &d.name) else {
            diagnostics.push(
                Diagnostic::warning(field, format!("delegate VirtualService {delegate_ns}/{} not found; its routes are left out", d.name))
                    .on(root_key),
            );
            continue;
        };
        if !delegate.spec.hosts.is_empty() {
            diagnostics.push(
                Diagnostic::warning(field, format!("{delegate_ns}/{} has hosts, so it is not a delegate; its routes are left out", d.name))
                    .on(root_key),
            );
            continue;
        }
        if !delegate.export_to.visible_to(namespace) {
            diagnostics.push(
                Diagnostic::warning(
                    field,
                    format!(
                        "delegate {delegate_ns}/{} is not exported to namespace {namespace}",
                        d.name
                    ),
                )
                .on(root_key),
            );
            continue;
        }
        for (j, sub) in delegate.spec.http.iter().enumerate() {
            match merge_route(route, qualified(sub.clone(), delegate_ns, mesh)) {
                Some(r) => merged.http.push(r),
                None => diagnostics.push(
                    Diagnostic::warning(
                        field.clone(),
                        format!("route http[{j}] of delegate {delegate_ns}/{} conflicts with every match of this route; left out", d.name),
                    )
                    .on(root_key),
                ),
            }
        }
    }
    Some(merged)
}

/// `route` with its destination hosts as FQDNs of `namespace`.
fn qualified(mut route: HttpRoute, namespace: &str, mesh: &MeshConfig) -> HttpRoute {
    let fix = |d: &mut Destination| d.host = mesh.fqdn(&d.host, namespace).into_owned();
    route.route.iter_mut().for_each(|r| fix(&mut r.destination));
    route.mirror.iter_mut().for_each(fix);
    route
        .mirrors
        .iter_mut()
        .for_each(|m| fix(&mut m.destination));
    route
}

fn merge_route(root: &HttpRoute, mut sub: HttpRoute) -> Option<HttpRoute> {
    sub.matches = merge_matches(&root.matches, &sub.matches)?;
    sub.name = joined(&root.name, &sub.name);
    sub.rewrite = sub.rewrite.or_else(|| root.rewrite.clone());
    sub.direct_response = sub.direct_response.or_else(|| root.direct_response.clone());
    sub.timeout = sub.timeout.or(root.timeout);
    sub.retries = sub.retries.or_else(|| root.retries.clone());
    sub.fault = sub.fault.or_else(|| root.fault.clone());
    sub.mirror = sub.mirror.or_else(|| root.mirror.clone());
    sub.mirror_percent = sub.mirror_percent.or(root.mirror_percent);
    sub.mirror_percentage = sub.mirror_percentage.or(root.mirror_percentage);
    sub.cors_policy = sub.cors_policy.or_else(|| root.cors_policy.clone());
    if sub.mirrors.is_empty() {
        sub.mirrors = root.mirrors.clone();
    }
    sub.headers = sub.headers.or_else(|| root.headers.clone());
    Some(sub)
}

fn joined(root: &str, sub: &str) -> String {
    match (root.is_empty(), sub.is_empty()) {
        (_, true) => root.to_string(),
        (true, false) => sub.to_string(),
        (false, false) => format!("{root}-{sub}"),
    }
}

/// Every delegate match must fall within some root match; `None` when one falls within none.
fn merge_matches(
    root: &[HttpMatchRequest],
    sub: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(sub.to_vec());
    }
    if sub.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for leaf in sub {
        let before = out.len();
        out.extend(
            root.iter()
                .filter(|r| !conflicts(r, leaf))
                .map(|r| merge_match(r, leaf)),
        );
        if out.len() == before {
            return None;
        }
    }
    Some(out)
}

fn merge_match(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = leaf.clone();
    out.name = joined(&root.name, &leaf.name);
    out.uri = out.uri.or_else(|| root.uri.clone());
    out.scheme = out.scheme.or_else(|| root.scheme.clone());
    out.method = out.method.or_else(|| root.method.clone());
    out.authority = out.authority.or_else(|| root.authority.clone());
    out.headers = merged_map(&root.headers, &leaf.headers);
    out.without_headers = merged_map(&root.without_headers, &leaf.without_headers);
    out.query_params = merged_map(&root.query_params, &leaf.query_params);
    out.source_labels = merged_map(&root.source_labels, &leaf.source_labels);
    if out.port == 0 {
        out.port = root.port;
    }
    if out.source_namespace.is_empty() {
        out.source_namespace = root.source_namespace.clone();
    }
    if out.gateways.is_empty() {
        out.gateways = root.gateways.clone();
    }
    if out.stat_prefix.is_empty() {
        out.stat_prefix = root.stat_prefix.clone();
    }
    out
}

fn merged_map<V: Clone>(
    root: &BTreeMap<String, V>,
    leaf: &BTreeMap<String, V>,
) -> BTreeMap<String, V> {
    let mut out = root.clone();
    out.extend(leaf.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// istiod's `hasConflict`: whether `leaf` asks for something `root` excludes.
fn conflicts(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .iter()
        .any(|(r, l)| string_match_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    let header_conflict = |r: &BTreeMap<String, HeaderMatch>, l: &BTreeMap<String, HeaderMatch>| {
        l.iter().any(|(k, lv)| {
            string_match_conflict(
                r.get(k).and_then(HeaderMatch::as_string_match).as_ref(),
                lv.as_string_match().as_ref(),
            )
        })
    };
    if header_conflict(&root.headers, &leaf.headers)
        || header_conflict(&root.without_headers, &leaf.without_headers)
        || header_conflict(&root.query_params, &leaf.query_params)
    {
        return true;
    }
    root.ignore_uri_case != leaf.ignore_uri_case
        || (root.port > 0 && leaf.port > 0 && root.port != leaf.port)
        || (!root.source_namespace.is_empty() && leaf.source_namespace != root.source_namespace)
        || leaf
            .source_labels
            .iter()
            .any(|(k, v)| root.source_labels.get(k).is_some_and(|rv| rv != v))
        || (!root.gateways.is_empty()
            && !leaf.gateways.is_empty()
            && !leaf.gateways.iter().all(|g| root.gateways.contains(g)))
}

/// istiod's `stringMatchConflict`: a leaf must narrow its root (an exact value equal to the
/// root's, a prefix or exact value under the root's prefix); regexes combine with nothing.
fn string_match_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    match (root, leaf) {
        (StringMatch::Regex(_), _) | (_, StringMatch::Regex(_)) => true,
        (StringMatch::Exact(r), StringMatch::Exact(l)) => r != l,
        (StringMatch::Exact(_), StringMatch::Prefix(_)) => true,
        (StringMatch::Prefix(r), StringMatch::Prefix(l) | StringMatch::Exact(l)) => {
            !l.starts_with(r.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Kind;

    fn vs(yaml: &str) -> VirtualService {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn key() -> ObjectKey {
        ObjectKey {
            kind: Kind::VirtualService,
            namespace: "front".into(),
            name: "root".into(),
        }
    }

    const ROOT: &str = "
hosts: [bookinfo.com]
http:
- name: reviews
  match: [{uri: {prefix: /reviews}}, {uri: {prefix: /api/reviews}}]
  timeout: 3s
  delegate: {name: reviews, namespace: back}
- route: [{destination: {host: productpage}}]
";

    #[test]
    fn delegate_routes_are_merged_into_the_root() {
        let delegate = vs("
http:
- name: v2
  match: [{uri: {prefix: /reviews/v2}, headers: {end-user: {exact: jason}}}]
  route: [{destination: {host: reviews, subset: v2}}]
- match: [{uri: {prefix: /other}}]
  route: [{destination: {host: reviews}}]
- route: [{destination: {host: reviews, subset: v1}}]
  timeout: 1s
");
        let mut diagnostics = Vec::new();
        let found = |ns: &str, name: &str| {
            (ns == "back" && name == "reviews").then(|| DelegateSource {
                spec: &delegate,
                export_to: ExportTo::Public,
            })
        };
        let merged = merge(
            &vs(ROOT),
            &key(),
            &MeshConfig::default(),
            found,
            &mut diagnostics,
        )
        .unwrap();
        let names: Vec<&str> = merged.http.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["reviews-v2", "reviews", ""]);
        // The narrowing match keeps the delegate's uri and adds nothing else; only the root's
        // first match contains it.
        let first = &merged.http[0];
        assert_eq!(first.matches.len(), 1);
        assert_eq!(
            first.matches[0].uri,
            Some(StringMatch::Prefix("/reviews/v2".into()))
        );
        assert!(first.matches[0].headers.contains_key("end-user"));
        assert_eq!(
            first.route[0].destination.host, "reviews.back.svc.cluster.local",
            "resolved in the delegate's namespace"
        );
        assert_eq!(
            first.timeout.map(|t| t.as_std().as_secs()),
            Some(3),
            "the root's timeout fills in"
        );
        // No match in the delegate: the root's matches, and the delegate's own timeout wins.
        let last = &merged.http[1];
        assert_eq!(last.matches.len(), 2);
        assert_eq!(last.timeout.map(|t| t.as_std().as_secs()), Some(1));
        assert_eq!(
            merged.http[2].route[0].destination.host,
            "productpage.front.svc.cluster.local"
        );
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert!(
            diagnostics[0]
                .message
                .contains("route http[1] of delegate back/reviews conflicts"),
            "{}",
            diagnostics[0].message
        );
    }

    #[test]
    fn missing_hidden_or_hosted_delegates_are_left_out_with_a_warning() {
        let hosted = vs("hosts: [x.com]\nhttp: [{route: [{destination: {host: x}}]}]\n");
        let plain = vs("http: [{route: [{destination: {host: x}}]}]\n");
        for (found, expect) in [
            (None, "not found"),
            (
                Some(DelegateSource {
                    spec: &hosted,
                    export_to: ExportTo::Public,
                }),
                "is not a delegate",
            ),
            (
                Some(DelegateSource {
                    spec: &plain,
                    export_to: ExportTo::parse(&["."], "back", &[]),
                }),
                "not exported to namespace front",
            ),
        ] {
            let mut diagnostics = Vec::new();
            let merged = merge(
                &vs(ROOT),
                &key(),
                &MeshConfig::default(),
                |_, _| {
                    found.as_ref().map(|f| DelegateSource {
                        spec: f.spec,
                        export_to: f.export_to.clone(),
                    })
                },
                &mut diagnostics,
            )
            .unwrap();
            assert_eq!(merged.http.len(), 1);
            assert!(
                diagnostics[0].message.contains(expect),
                "{}",
                diagnostics[0].message
            );
            assert_eq!(diagnostics[0].field, "spec.http[0].delegate");
        }
    }

    #[test]
    fn string_matches_must_narrow_the_root() {
        let p = |s: &str| Some(StringMatch::Prefix(s.into()));
        let e = |s: &str| Some(StringMatch::Exact(s.into()));
        assert!(!string_match_conflict(p("/a").as_ref(), p("/a/b").as_ref()));
        assert!(string_match_conflict(p("/a/b").as_ref(), p("/a").as_ref()));
        assert!(!string_match_conflict(p("/a").as_ref(), e("/a/x").as_ref()));
        assert!(string_match_conflict(e("/a").as_ref(), p("/a").as_ref()));
        assert!(!string_match_conflict(e("/a").as_ref(), e("/a").as_ref()));
        assert!(string_match_conflict(
            Some(&StringMatch::Regex(".*".into())),
            e("/a").as_ref()
        ));
        assert!(!string_match_conflict(None, e("/a").as_ref()));
    }
}

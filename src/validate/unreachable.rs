//! Warnings for VirtualService rules and matches that can never be used, because Envoy takes
//! the first route that matches: istiod's `analyzeUnreachable{HTTP,TCP,TLS}Rules`, plus rules
//! placed after a rule that matches every request.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::istio::StringMatch;
use crate::config::istio::virtual_service::{
    HeaderMatch, HttpMatchRequest, HttpRoute, VirtualService,
};

use super::common::Diags;

pub fn analyze(vs: &VirtualService, out: &mut Diags) {
    analyze_http(&vs.http, out);
    let tcp: Vec<Vec<String>> = vs
        .tcp
        .iter()
        .map(|r| r.matches.iter().map(as_json).collect())
        .collect();
    analyze_l4("tcp", &tcp, out);
    let tls: Vec<Vec<String>> = vs
        .tls
        .iter()
        .map(|r| r.matches.iter().map(as_json).collect())
        .collect();
    analyze_l4("tls", &tls, out);
}

fn as_json<T: Serialize>(m: &T) -> String {
    serde_json::to_string(m).unwrap_or_default()
}

fn route_name(r: &HttpRoute, i: usize) -> String {
    if r.name.is_empty() {
        format!("#{i}")
    } else {
        format!("{:?}", r.name)
    }
}

fn match_name(m: &HttpMatchRequest, j: usize) -> String {
    if m.name.is_empty() {
        format!("#{j}")
    } else {
        format!("{:?}", m.name)
    }
}

fn unused(out: &mut Diags, at: String, rule: &str, reason: &str) {
    out.warning(
        at,
        format!("virtualService rule {rule} not used ({reason})"),
    );
}

fn ineffective(out: &mut Diags, at: String, rule: &str, m: &str, dup: &str) {
    out.warning(at, format!("virtualService rule {rule} match {m} is not used (duplicate/overlapping match in rule {dup})"));
}

/// A match that every request satisfies: no conditions but a `/` (or empty) URI prefix.
fn matches_everything(m: &HttpMatchRequest) -> bool {
    let catch_all_uri = match &m.uri {
        None => true,
        Some(StringMatch::Prefix(p)) => p.is_empty() || p == "/",
        _ => false,
    };
    let rest = HttpMatchRequest {
        name: String::new(),
        uri: None,
        ignore_uri_case: false,
        ..m.clone()
    };
    catch_all_uri && rest == HttpMatchRequest::default()
}

fn analyze_http(routes: &[HttpRoute], out: &mut Diags) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut empty_match: Option<usize> = None;
    let mut catch_all: Option<usize> = None;
    let mut prefixes: Vec<PrefixMatch> = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let at = format!("spec.http[{i}]");
        let name = route_name(route, i);
        if route.matches.is_empty() {
            if empty_match.is_some() {
                unused(out, at, &name, "only the last rule can have no matches");
            } else if let Some(c) = catch_all {
                unused(
                    out,
                    at,
                    &name,
                    &format!("rule {} matches all requests", route_name(&routes[c], c)),
                );
            }
            empty_match = Some(i);
            if route.delegate.is_none() {
                catch_all = catch_all.or(Some(i));
            }
            continue;
        }
        if let Some(c) = catch_all {
            unused(
                out,
                at,
                &name,
                &format!("rule {} matches all requests", route_name(&routes[c], c)),
            );
            continue;
        }
        let mut duplicates = 0;
        for (j, m) in route.matches.iter().enumerate() {
            let key = as_json(&HttpMatchRequest {
                name: String::new(),
                ..m.clone()
            });
            if let Some(&dup) = seen.get(&key) {
                ineffective(
                    out,
                    format!("{at}.match[{j}]"),
                    &name,
                    &match_name(m, j),
                    &route_name(&routes[dup], dup),
                );
                duplicates += 1;
                continue;
            }
            seen.insert(key, i);
            prefixes.extend(PrefixMatch::new(route, i, m, j));
        }
        if duplicates == route.matches.len() {
            unused(out, at, &name, "all matches used by prior rules");
        }
        if route.delegate.is_none() && route.matches.iter().any(matches_everything) {
            catch_all = Some(i);
        }
    }
    for (a_idx, a) in prefixes.iter().enumerate() {
        for b in &prefixes[a_idx + 1..] {
            if a.prefix != b.prefix && a.covers(b) {
                ineffective(
                    out,
                    format!("spec.http[{}].match[{}]", b.rule, b.match_index),
                    &b.route,
                    &format!("{} of prefix {}", b.name, b.prefix),
                    &format!("{} of prefix {} on {}", a.name, a.prefix, a.route),
                );
            }
        }
    }
}

fn analyze_l4(kind: &str, routes: &[Vec<String>], out: &mut Diags) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut empty_match = false;
    for (i, matches) in routes.iter().enumerate() {
        let name = format!("#{i}");
        if matches.is_empty() {
            if empty_match {
                unused(
                    out,
                    format!("spec.{kind}[{i}]"),
                    &name,
                    "only the last rule can have no matches",
                );
            }
            empty_match = true;
            continue;
        }
        let mut duplicates = 0;
        for (j, key) in matches.iter().enumerate() {
            if let Some(&dup) = seen.get(key.as_str()) {
                ineffective(
                    out,
                    format!("spec.{kind}[{i}].match[{j}]"),
                    &name,
                    &format!("#{j}"),
                    &format!("#{dup}"),
                );
                duplicates += 1;
            } else {
                seen.insert(key, i);
            }
        }
        if duplicates == matches.len() {
            unused(
                out,
                format!("spec.{kind}[{i}]"),
                &name,
                "all matches used by prior rules",
            );
        }
    }
}

/// A URI-prefix match reduced to what istiod compares to find a later prefix match shadowed by
/// an earlier, shorter one (`/debug` before `/debugs`).
struct PrefixMatch {
    rule: usize,
    match_index: usize,
    route: String,
    name: String,
    prefix: String,
    port: u32,
    method: String,
    authority: String,
    headers: BTreeMap<String, String>,
    query_params: BTreeMap<String, String>,
    without_headers: BTreeMap<String, String>,
}

fn exact_or_prefix(m: Option<&StringMatch>) -> String {
    match m {
        Some(StringMatch::Exact(v)) if !v.is_empty() => format!("exact:{v}"),
        Some(StringMatch::Prefix(v)) if !v.is_empty() => format!("prefix:{v}"),
        _ => String::new(),
    }
}

fn header_values(map: &BTreeMap<String, HeaderMatch>) -> BTreeMap<String, String> {
    map.iter()
        .map(|(k, v)| (k.clone(), exact_or_prefix(v.as_string_match().as_ref())))
        .collect()
}

/// istiod's loose comparison: equal, or the earlier value starts with the later one.
fn loosely_covers(a: &str, b: &str) -> bool {
    a == b || a.starts_with(b)
}

impl PrefixMatch {
    fn new(route: &HttpRoute, rule: usize, m: &HttpMatchRequest, j: usize) -> Option<PrefixMatch> {
        let Some(StringMatch::Prefix(prefix)) = &m.uri else {
            return None;
        };
        if prefix.is_empty() {
            return None;
        }
        let mut method = exact_or_prefix(m.method.as_ref());
        if method.is_empty() {
            method = "exact:GET".into();
        }
        Some(PrefixMatch {
            rule,
            match_index: j,
            route: route_name(route, rule),
            name: match_name(m, j),
            prefix: prefix.clone(),
            port: m.port,
            method,
            authority: exact_or_prefix(m.authority.as_ref()),
            headers: header_values(&m.headers),
            query_params: header_values(&m.query_params),
            without_headers: header_values(&m.without_headers),
        })
    }

    /// Whether `self` (earlier) takes every request `later` would.
    fn covers(&self, later: &PrefixMatch) -> bool {
        let maps_cover = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|bv| loosely_covers(v, bv)))
        };
        later.prefix.starts_with(&self.prefix)
            && self.port == later.port
            && loosely_covers(&self.method, &later.method)
            && loosely_covers(&self.authority, &later.authority)
            && maps_cover(&self.headers, &later.headers)
            && maps_cover(&self.query_params, &later.query_params)
            && maps_cover(&self.without_headers, &later.without_headers)
    }
}

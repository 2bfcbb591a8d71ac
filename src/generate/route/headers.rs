//! `Headers` (request/response set/add/remove) → Envoy header mutations, as istiod's
//! `TranslateHeadersOperations`.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::config::route::v3::Route;
use envoy_types::pb::envoy::config::route::v3::weighted_cluster::ClusterWeight;

use super::RouteError;
use crate::config::istio::virtual_service::{HeaderOperations, Headers};

#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct HeaderOps {
    pub request_add: Vec<HeaderValueOption>,
    pub request_remove: Vec<String>,
    pub response_add: Vec<HeaderValueOption>,
    pub response_remove: Vec<String>,
    /// A request `:authority`/`host` set or add: Envoy cannot mutate it as a header, so istiod
    /// turns it into a host rewrite (`set` wins over `add`).
    pub authority: Option<String>,
}

impl HeaderOps {
    pub fn translate(h: &Headers) -> Result<Self, RouteError> {
        let empty = HeaderOperations::default();
        let req = h.request.as_ref().unwrap_or(&empty);
        let resp = h.response.as_ref().unwrap_or(&empty);
        let (mut request_add, set_authority) =
            values(&req.set, HeaderAppendAction::OverwriteIfExistsOrAdd)?;
        let (add, add_authority) = values(&req.add, HeaderAppendAction::AppendIfExistsOrAdd)?;
        request_add.extend(add);
        let (mut response_add, _) = values(&resp.set, HeaderAppendAction::OverwriteIfExistsOrAdd)?;
        response_add.extend(values(&resp.add, HeaderAppendAction::AppendIfExistsOrAdd)?.0);
        Ok(HeaderOps {
            request_add,
            request_remove: removals(&req.remove)?,
            response_add,
            response_remove: removals(&resp.remove)?,
            authority: set_authority.or(add_authority),
        })
    }

    /// Appends to the route's lists: a single destination's headers come after the route's.
    pub fn apply_to_route(self, r: &mut Route) {
        r.request_headers_to_add.extend(self.request_add);
        r.request_headers_to_remove.extend(self.request_remove);
        r.response_headers_to_add.extend(self.response_add);
        r.response_headers_to_remove.extend(self.response_remove);
    }

    pub fn apply_to_cluster_weight(self, c: &mut ClusterWeight) {
        c.request_headers_to_add.extend(self.request_add);
        c.request_headers_to_remove.extend(self.request_remove);
        c.response_headers_to_add.extend(self.response_add);
        c.response_headers_to_remove.extend(self.response_remove);
    }
}

/// Pseudo-headers and `host` cannot be mutated by Envoy (it NACKs them), so they are dropped.
fn is_internal(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

fn is_authority(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// Sorted by name (a `BTreeMap` already is), as istiod sorts them for stable output.
fn values(
    headers: &BTreeMap<String, String>,
    action: HeaderAppendAction,
) -> Result<(Vec<HeaderValueOption>, Option<String>), RouteError> {
    let mut authority = None;
    let mut out = Vec::with_capacity(headers.len());
    for (key, value) in headers {
        if key.is_empty() {
            return Err(RouteError::Empty {
                field: "headers name".into(),
            });
        }
        if is_authority(key) {
            authority = Some(value.clone());
        }
        if is_internal(key) {
            continue;
        }
        out.push(HeaderValueOption {
            header: Some(HeaderValue {
                key: key.clone(),
                value: value.clone(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        });
    }
    Ok((out, authority))
}

fn removals(names: &[String]) -> Result<Vec<String>, RouteError> {
    if names.iter().any(String::is_empty) {
        return Err(RouteError::Empty {
            field: "headers remove".into(),
        });
    }
    Ok(names.iter().filter(|n| !is_internal(n)).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]) -> HeaderOperations {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        HeaderOperations {
            set: map(set),
            add: map(add),
            remove: remove.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn pair(o: &HeaderValueOption) -> (&str, &str, i32) {
        let h = o.header.as_ref().unwrap();
        (h.key.as_str(), h.value.as_str(), o.append_action)
    }

    #[test]
    fn set_overwrites_add_appends_remove_drops_internal() {
        let h = Headers {
            request: Some(ops(
                &[("b", "2"), ("a", "1")],
                &[("c", "3")],
                &["x-drop", ":path", "Host"],
            )),
            response: Some(ops(&[("r", "1")], &[("s", "2")], &["server"])),
        };
        let o = HeaderOps::translate(&h).unwrap();
        let overwrite = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;
        let append = HeaderAppendAction::AppendIfExistsOrAdd as i32;
        let req: Vec<_> = o.request_add.iter().map(pair).collect();
        assert_eq!(
            req,
            [
                ("a", "1", overwrite),
                ("b", "2", overwrite),
                ("c", "3", append)
            ]
        );
        assert_eq!(o.request_remove, ["x-drop"]);
        let resp: Vec<_> = o.response_add.iter().map(pair).collect();
        assert_eq!(resp, [("r", "1", overwrite), ("s", "2", append)]);
        assert_eq!(o.response_remove, ["server"]);
        assert_eq!(o.authority, None);
    }

    #[test]
    fn authority_header_becomes_host_rewrite_and_set_wins() {
        let h = Headers {
            request: Some(ops(
                &[(":authority", "set.example")],
                &[("host", "add.example")],
                &[],
            )),
            response: None,
        };
        let o = HeaderOps::translate(&h).unwrap();
        assert!(o.request_add.is_empty());
        assert_eq!(o.authority.as_deref(), Some("set.example"));
    }

    #[test]
    fn empty_header_name_is_an_error() {
        let h = Headers {
            request: Some(ops(&[("", "v")], &[], &[])),
            response: None,
        };
        assert!(matches!(
            HeaderOps::translate(&h),
            Err(RouteError::Empty { .. })
        ));
    }
}

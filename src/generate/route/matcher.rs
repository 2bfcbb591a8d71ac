//! `HTTPMatchRequest` → `RouteMatch`, as istiod's `TranslateRouteMatch`.

use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::query_parameter_matcher::QueryParameterMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, QueryParameterMatcher, RouteMatch};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher};
use envoy_types::pb::google::protobuf::BoolValue;

use super::RouteError;
use crate::config::istio::StringMatch;
use crate::config::istio::virtual_service::{HeaderMatch, HttpMatchRequest};

/// Header names istiod turns into JWT-claim metadata matches rather than header matches.
const JWT_CLAIM_PREFIX: &str = "@request.auth.claims";

pub(super) fn translate_match(m: Option<&HttpMatchRequest>) -> Result<RouteMatch, RouteError> {
    let Some(m) = m else {
        return Ok(super::catch_all_match());
    };
    let mut out = super::catch_all_match();

    let mut headers = Vec::with_capacity(m.headers.len() + m.without_headers.len() + 3);
    for (name, hm) in &m.headers {
        headers.push(header_matcher(
            name,
            hm.as_string_match().as_ref(),
            "headers",
        )?);
    }
    for (name, hm) in &m.without_headers {
        let mut h = header_matcher(name, hm.as_string_match().as_ref(), "withoutHeaders")?;
        h.invert_match = true;
        // Envoy rejects treat_missing_header_as_empty together with present_match.
        h.treat_missing_header_as_empty = !is_present_match(hm);
        headers.push(h);
    }
    // istiod sorts the named headers (stable), then appends the pseudo-headers in this order.
    headers.sort_by(|a, b| a.name.cmp(&b.name));
    for (name, sm) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if let Some(sm) = sm {
            headers.push(header_matcher(name, Some(sm), name)?);
        }
    }
    out.headers = headers;

    if let Some(uri) = &m.uri {
        out.path_specifier = Some(match uri {
            StringMatch::Exact(p) => PathSpecifier::Path(p.clone()),
            StringMatch::Prefix(p) => PathSpecifier::Prefix(p.clone()),
            StringMatch::Regex(r) => PathSpecifier::SafeRegex(regex_matcher(r, "uri.regex")?),
        });
    }
    out.case_sensitive = Some(BoolValue {
        value: !m.ignore_uri_case,
    });

    for (name, hm) in &m.query_params {
        if name.is_empty() {
            return Err(RouteError::Empty {
                field: "queryParams name".into(),
            });
        }
        let spec = match hm.as_string_match().filter(|_| !is_present_match(hm)) {
            None => QueryParameterMatchSpecifier::PresentMatch(true),
            Some(sm) => {
                QueryParameterMatchSpecifier::StringMatch(string_matcher(&sm, "queryParams")?)
            }
        };
        out.query_parameters.push(QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(spec),
        });
    }
    Ok(out)
}

/// istiod's `canBeConvertedToPresentMatch`: `{}` and the non-RE2 `regex: "*"` mean "present".
fn is_present_match(hm: &HeaderMatch) -> bool {
    match hm.as_string_match() {
        None => true,
        Some(StringMatch::Regex(r)) => r == "*",
        Some(_) => false,
    }
}

fn header_matcher(
    name: &str,
    sm: Option<&StringMatch>,
    field: &str,
) -> Result<HeaderMatcher, RouteError> {
    if name.is_empty() {
        return Err(RouteError::Empty {
            field: format!("{field} name"),
        });
    }
    // A literal match on this name would never match, and inverted it would always match:
    // refuse rather than fail open.
    if name.starts_with(JWT_CLAIM_PREFIX) {
        return Err(RouteError::JwtClaim(name.into()));
    }
    let spec = match sm {
        None => HeaderMatchSpecifier::PresentMatch(true),
        Some(StringMatch::Regex(r)) if r == "*" => HeaderMatchSpecifier::PresentMatch(true),
        Some(sm) => HeaderMatchSpecifier::StringMatch(string_matcher(sm, field)?),
    };
    Ok(HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(spec),
        ..Default::default()
    })
}

/// istiod's `ConvertToEnvoyMatch`, refusing what Envoy would NACK (empty prefix or regex).
pub(super) fn string_matcher(sm: &StringMatch, field: &str) -> Result<StringMatcher, RouteError> {
    let pattern = match sm {
        StringMatch::Exact(v) => MatchPattern::Exact(v.clone()),
        StringMatch::Prefix(v) if v.is_empty() => {
            return Err(RouteError::Empty {
                field: format!("{field} prefix"),
            });
        }
        StringMatch::Prefix(v) => MatchPattern::Prefix(v.clone()),
        StringMatch::Regex(r) => MatchPattern::SafeRegex(regex_matcher(r, field)?),
    };
    Ok(StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    })
}

/// A RE2 matcher. No `engine_type`: it is deprecated and Envoy's default engine is RE2, as in
/// istiod's output. The pattern is parsed with `regex-syntax`, whose syntax is RE2's, so that a
/// bad pattern fails this route rather than the whole RDS push. Parsing only: validation has
/// compiled it once already, and compiling it again for every proxy class was a third of the
/// cost of generating routes.
pub(super) fn regex_matcher(regex: &str, field: &str) -> Result<RegexMatcher, RouteError> {
    check_regex(regex, field)?;
    Ok(RegexMatcher {
        regex: regex.into(),
        engine_type: None,
    })
}

pub(super) fn check_regex(regex: &str, field: &str) -> Result<(), RouteError> {
    if regex.is_empty() {
        return Err(RouteError::Empty {
            field: format!("{field} regex"),
        });
    }
    regex_syntax::Parser::new()
        .parse(regex)
        .map(drop)
        .map_err(|e| RouteError::InvalidRegex {
            field: field.into(),
            regex: regex.into(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn hm(exact: Option<&str>, prefix: Option<&str>, regex: Option<&str>) -> HeaderMatch {
        HeaderMatch {
            exact: exact.map(Into::into),
            prefix: prefix.map(Into::into),
            regex: regex.map(Into::into),
        }
    }

    fn string_pattern(h: &HeaderMatcher) -> &MatchPattern {
        match &h.header_match_specifier {
            Some(HeaderMatchSpecifier::StringMatch(s)) => {
                s.match_pattern.as_ref().expect("pattern")
            }
            other => panic!("expected a string match, got {other:?}"),
        }
    }

    #[test]
    fn no_match_is_catch_all_prefix_without_case_sensitivity() {
        let m = translate_match(None).unwrap();
        assert_eq!(m.path_specifier, Some(PathSpecifier::Prefix("/".into())));
        assert_eq!(m.case_sensitive, None);
    }

    #[test]
    fn uri_exact_prefix_regex() {
        let mk = |uri| HttpMatchRequest {
            uri: Some(uri),
            ..Default::default()
        };
        let m = translate_match(Some(&mk(StringMatch::Exact("/a".into())))).unwrap();
        assert_eq!(m.path_specifier, Some(PathSpecifier::Path("/a".into())));
        assert_eq!(m.case_sensitive, Some(BoolValue { value: true }));
        let m = translate_match(Some(&mk(StringMatch::Prefix("/b".into())))).unwrap();
        assert_eq!(m.path_specifier, Some(PathSpecifier::Prefix("/b".into())));
        let m = translate_match(Some(&mk(StringMatch::Regex("/c/[0-9]+".into())))).unwrap();
        assert_eq!(
            m.path_specifier,
            Some(PathSpecifier::SafeRegex(RegexMatcher {
                regex: "/c/[0-9]+".into(),
                engine_type: None
            }))
        );
    }

    #[test]
    fn ignore_uri_case_clears_case_sensitive() {
        let m = HttpMatchRequest {
            uri: Some(StringMatch::Prefix("/A".into())),
            ignore_uri_case: true,
            ..Default::default()
        };
        assert_eq!(
            translate_match(Some(&m)).unwrap().case_sensitive,
            Some(BoolValue { value: false })
        );
    }

    #[test]
    fn headers_exact_prefix_regex_and_present() {
        let m = HttpMatchRequest {
            headers: BTreeMap::from([
                ("d-present".to_string(), hm(None, None, None)),
                ("c-star".to_string(), hm(None, None, Some("*"))),
                ("b-prefix".to_string(), hm(None, Some("v"), None)),
                ("a-exact".to_string(), hm(Some("x"), None, None)),
                ("e-regex".to_string(), hm(None, None, Some("v[0-9]"))),
            ]),
            ..Default::default()
        };
        let out = translate_match(Some(&m)).unwrap();
        let names: Vec<_> = out.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            ["a-exact", "b-prefix", "c-star", "d-present", "e-regex"]
        );
        assert_eq!(
            string_pattern(&out.headers[0]),
            &MatchPattern::Exact("x".into())
        );
        assert_eq!(
            string_pattern(&out.headers[1]),
            &MatchPattern::Prefix("v".into())
        );
        assert_eq!(
            out.headers[2].header_match_specifier,
            Some(HeaderMatchSpecifier::PresentMatch(true))
        );
        assert_eq!(
            out.headers[3].header_match_specifier,
            Some(HeaderMatchSpecifier::PresentMatch(true))
        );
        assert_eq!(
            string_pattern(&out.headers[4]),
            &MatchPattern::SafeRegex(RegexMatcher {
                regex: "v[0-9]".into(),
                engine_type: None
            })
        );
        assert!(
            out.headers
                .iter()
                .all(|h| !h.invert_match && !h.treat_missing_header_as_empty)
        );
    }

    #[test]
    fn without_headers_invert_and_treat_missing_as_empty_except_present() {
        let m = HttpMatchRequest {
            without_headers: BTreeMap::from([
                ("x-exact".to_string(), hm(Some("1"), None, None)),
                ("x-present".to_string(), hm(None, None, None)),
            ]),
            ..Default::default()
        };
        let out = translate_match(Some(&m)).unwrap();
        assert_eq!(out.headers.len(), 2);
        assert!(out.headers.iter().all(|h| h.invert_match));
        assert!(out.headers[0].treat_missing_header_as_empty);
        assert_eq!(
            out.headers[1].header_match_specifier,
            Some(HeaderMatchSpecifier::PresentMatch(true))
        );
        assert!(!out.headers[1].treat_missing_header_as_empty);
    }

    #[test]
    fn method_authority_scheme_are_pseudo_headers_after_named_ones() {
        let m = HttpMatchRequest {
            method: Some(StringMatch::Exact("GET".into())),
            authority: Some(StringMatch::Prefix("api.".into())),
            scheme: Some(StringMatch::Regex("https?".into())),
            headers: BTreeMap::from([("z".to_string(), hm(Some("1"), None, None))]),
            ..Default::default()
        };
        let out = translate_match(Some(&m)).unwrap();
        let names: Vec<_> = out.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["z", ":method", ":authority", ":scheme"]);
        assert_eq!(
            string_pattern(&out.headers[1]),
            &MatchPattern::Exact("GET".into())
        );
        assert_eq!(
            string_pattern(&out.headers[2]),
            &MatchPattern::Prefix("api.".into())
        );
    }

    #[test]
    fn query_params_exact_prefix_regex_and_present() {
        let m = HttpMatchRequest {
            query_params: BTreeMap::from([
                ("a".to_string(), hm(Some("1"), None, None)),
                ("b".to_string(), hm(None, Some("p"), None)),
                ("c".to_string(), hm(None, None, Some("[a-z]+"))),
                ("d".to_string(), hm(None, None, None)),
            ]),
            ..Default::default()
        };
        let out = translate_match(Some(&m)).unwrap();
        let specs: Vec<_> = out
            .query_parameters
            .iter()
            .map(|q| q.query_parameter_match_specifier.clone().unwrap())
            .collect();
        let sm = |p| {
            QueryParameterMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(p),
                ignore_case: false,
            })
        };
        assert_eq!(specs[0], sm(MatchPattern::Exact("1".into())));
        assert_eq!(specs[1], sm(MatchPattern::Prefix("p".into())));
        assert_eq!(
            specs[2],
            sm(MatchPattern::SafeRegex(RegexMatcher {
                regex: "[a-z]+".into(),
                engine_type: None
            }))
        );
        assert_eq!(specs[3], QueryParameterMatchSpecifier::PresentMatch(true));
    }

    #[test]
    fn rejects_what_envoy_would_nack() {
        let bad_regex = HttpMatchRequest {
            uri: Some(StringMatch::Regex("(".into())),
            ..Default::default()
        };
        assert!(matches!(
            translate_match(Some(&bad_regex)),
            Err(RouteError::InvalidRegex { .. })
        ));
        let empty_prefix = HttpMatchRequest {
            headers: BTreeMap::from([("x".to_string(), hm(None, Some(""), None))]),
            ..Default::default()
        };
        assert!(matches!(
            translate_match(Some(&empty_prefix)),
            Err(RouteError::Empty { .. })
        ));
        let claim = HttpMatchRequest {
            without_headers: BTreeMap::from([(
                "@request.auth.claims.group".to_string(),
                hm(Some("a"), None, None),
            )]),
            ..Default::default()
        };
        assert!(matches!(
            translate_match(Some(&claim)),
            Err(RouteError::JwtClaim(_))
        ));
    }
}

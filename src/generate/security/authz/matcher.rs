//! Envoy matchers in the shapes istiod's `authz/matcher` package builds, so config dumps read the
//! same. Patterns follow Istio's wildcard rule: `*` alone, a leading `*` (suffix) or a trailing
//! `*` (prefix); anything else is exact.

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, header_matcher::HeaderMatchSpecifier,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    ListMatcher, MetadataMatcher, OrMatcher, RegexMatcher, StringMatcher, ValueMatcher,
    list_matcher, metadata_matcher::PathSegment, metadata_matcher::path_segment::Segment,
    string_matcher::MatchPattern, value_matcher,
};
use envoy_types::pb::google::protobuf::UInt32Value;

use super::AuthzError;

/// How an Istio pattern reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern<'a> {
    /// `*`: any value, present.
    Any,
    /// `*x`.
    Suffix(&'a str),
    /// `x*`.
    Prefix(&'a str),
    Exact(&'a str),
}

impl<'a> Pattern<'a> {
    pub fn parse(v: &'a str) -> Self {
        if v == "*" {
            Pattern::Any
        } else if let Some(rest) = v.strip_prefix('*') {
            Pattern::Suffix(rest)
        } else if let Some(rest) = v.strip_suffix('*') {
            Pattern::Prefix(rest)
        } else {
            Pattern::Exact(v)
        }
    }
}

pub fn exact(v: &str, ignore_case: bool) -> StringMatcher {
    string(MatchPattern::Exact(v.into()), ignore_case)
}

pub fn prefix(v: &str, ignore_case: bool) -> StringMatcher {
    string(MatchPattern::Prefix(v.into()), ignore_case)
}

pub fn suffix(v: &str, ignore_case: bool) -> StringMatcher {
    string(MatchPattern::Suffix(v.into()), ignore_case)
}

/// A RE2 matcher without `engine_type` (deprecated; RE2 is Envoy's default), as istiod writes it.
/// Every caller builds its pattern from [`escape`]d input, so the pattern always parses.
pub fn regex(pattern: String) -> StringMatcher {
    string(
        MatchPattern::SafeRegex(RegexMatcher {
            regex: pattern,
            engine_type: None,
        }),
        false,
    )
}

fn string(pattern: MatchPattern, ignore_case: bool) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(pattern),
        ignore_case,
    }
}

/// istiod's `StringMatcherWithPrefix`: `*` is `.+` (present and non-empty; Envoy refuses an empty
/// prefix or suffix), and `prefix` is put before the pattern.
pub fn with_prefix(v: &str, before: &str) -> StringMatcher {
    match Pattern::parse(v) {
        Pattern::Any => regex(".+".into()),
        Pattern::Suffix(s) if before.is_empty() => suffix(s, false),
        Pattern::Suffix(s) => regex(format!("{}.*{}", escape(before), escape(s))),
        Pattern::Prefix(p) => prefix(&format!("{before}{p}"), false),
        Pattern::Exact(e) => exact(&format!("{before}{e}"), false),
    }
}

/// istiod's `StringMatcher(v)`.
pub fn plain(v: &str) -> StringMatcher {
    with_prefix(v, "")
}

/// RE2 metacharacters escaped. istiod pastes values into its regexes unescaped; the values Istio
/// accepts there (namespaces, service accounts, principals) rarely hold a metacharacter, so the
/// output is the same for them, and a `.` in a name matches only a dot.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(
            c,
            '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// istiod's `HeaderMatcher(k, v)`: `*` means the header is present.
pub fn header(name: &str, v: &str) -> Result<HeaderMatcher, AuthzError> {
    check_header_name(name)?;
    let specifier = match Pattern::parse(v) {
        Pattern::Any => HeaderMatchSpecifier::PresentMatch(true),
        Pattern::Suffix(s) => HeaderMatchSpecifier::StringMatch(suffix(s, false)),
        Pattern::Prefix(p) => HeaderMatchSpecifier::StringMatch(prefix(p, false)),
        Pattern::Exact(e) => HeaderMatchSpecifier::StringMatch(exact(e, false)),
    };
    Ok(HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(specifier),
        ..Default::default()
    })
}

/// Envoy's non-strict `HTTP_HEADER_NAME` rule: not empty, no NUL, CR or LF.
fn check_header_name(name: &str) -> Result<(), AuthzError> {
    if name.is_empty() || name.contains(['\0', '\r', '\n']) {
        return Err(AuthzError::Invalid {
            value: name.into(),
            reason: "not a valid HTTP header name".into(),
        });
    }
    Ok(())
}

/// An IP or CIDR (`1.2.3.4`, `10.0.0.0/8`, `::1`) as istiod's `AddrStrToCidrRange` reads it.
pub fn cidr(v: &str) -> Result<CidrRange, AuthzError> {
    let invalid = |reason: &str| AuthzError::Invalid {
        value: v.into(),
        reason: reason.into(),
    };
    let (addr, len) = match v.split_once('/') {
        Some((addr, bits)) => (addr, Some(bits)),
        None => (v, None),
    };
    let ip: std::net::IpAddr = addr.parse().map_err(|_| invalid("not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(bits) => match bits.parse::<u32>() {
            Ok(b) if b <= max && bits.bytes().all(|c| c.is_ascii_digit()) => b,
            _ => return Err(invalid("bad prefix length")),
        },
    };
    Ok(CidrRange {
        address_prefix: ip.to_string(),
        prefix_len: Some(UInt32Value { value: len }),
    })
}

/// A port string, 0 to 65535 (istiod's `convertToPort`).
pub fn port(v: &str) -> Result<u32, AuthzError> {
    match v.parse::<u32>() {
        Ok(p) if p <= 65535 && v.bytes().all(|c| c.is_ascii_digit()) => Ok(p),
        _ => Err(AuthzError::Invalid {
            value: v.into(),
            reason: "not a port number".into(),
        }),
    }
}

pub fn string_value(m: StringMatcher) -> ValueMatcher {
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::StringMatch(m)),
    }
}

/// istiod's `OrMatcher`: one matcher stays itself, as Envoy's `or_match` wants at least two.
pub fn or_value(mut matchers: Vec<ValueMatcher>) -> ValueMatcher {
    if matchers.len() == 1
        && let Some(only) = matchers.pop()
    {
        return only;
    }
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::OrMatch(OrMatcher {
            value_matchers: matchers,
        })),
    }
}

/// istiod's `StringOrMatcher`: any of `values`, each an Istio pattern.
pub fn string_or(values: &[String]) -> ValueMatcher {
    or_value(values.iter().map(|v| string_value(plain(v))).collect())
}

/// A matcher on dynamic metadata `filter` at `path`.
pub fn metadata(filter: &str, path: &[&str], value: ValueMatcher) -> MetadataMatcher {
    MetadataMatcher {
        filter: filter.into(),
        path: path
            .iter()
            .map(|k| PathSegment {
                segment: Some(Segment::Key((*k).into())),
            })
            .collect(),
        value: Some(value),
        invert: false,
    }
}

/// istiod's `MetadataListValueMatcher` with `useExtendedJwt`: the value at `path` is either a
/// list holding a match, or itself a match (a JWT claim can be a string or a list).
pub fn list_or_value(filter: &str, path: &[&str], value: ValueMatcher) -> MetadataMatcher {
    let list = ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
            ListMatcher {
                match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(value.clone()))),
            },
        ))),
    };
    metadata(filter, path, or_value(vec![list, value]))
}

/// A list holding one value matching `m` (istiod's `MetadataListMatcher`).
pub fn list_of(m: StringMatcher) -> ValueMatcher {
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
            ListMatcher {
                match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(string_value(m)))),
            },
        ))),
    }
}

//! CSDS `node_matchers`: which proxies a request asks about. Matchers are ORed (Envoy's
//! documented semantics); no matcher means every proxy.

use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher};
use regex::Regex;

#[derive(Debug, thiserror::Error)]
pub enum MatcherError {
    #[error("node_matchers[{index}].node_id.safe_regex: {source}")]
    Regex { index: usize, source: regex::Error },
    #[error("node_matchers[{index}].node_id: {what} is not supported")]
    Unsupported { index: usize, what: &'static str },
    #[error("node_matchers[{index}].node_metadatas: matching on node metadata is not supported")]
    Metadata { index: usize },
}

/// A node-id test compiled once per request.
#[derive(Debug)]
enum IdMatch {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(Regex),
}

/// The compiled `node_matchers` of a request.
#[derive(Debug)]
pub struct NodeFilter {
    /// Each with its `ignore_case`.
    any_of: Vec<(IdMatch, bool)>,
}

impl NodeFilter {
    pub fn matches(&self, node_id: &str) -> bool {
        self.any_of.is_empty()
            || self
                .any_of
                .iter()
                .any(|(m, ignore_case)| test(m, *ignore_case, node_id))
    }
}

fn test(m: &IdMatch, ignore_case: bool, id: &str) -> bool {
    let fold = |s: &str| {
        if ignore_case {
            s.to_lowercase()
        } else {
            s.to_string()
        }
    };
    match m {
        IdMatch::Any => true,
        IdMatch::Exact(v) => fold(id) == fold(v),
        IdMatch::Prefix(v) => fold(id).starts_with(&fold(v)),
        IdMatch::Suffix(v) => fold(id).ends_with(&fold(v)),
        IdMatch::Contains(v) => fold(id).contains(&fold(v)),
        // Envoy's safe_regex must match the whole string.
        IdMatch::Regex(re) => re
            .find(id)
            .is_some_and(|m| m.start() == 0 && m.end() == id.len()),
    }
}

impl TryFrom<&[NodeMatcher]> for NodeFilter {
    type Error = MatcherError;

    fn try_from(matchers: &[NodeMatcher]) -> Result<NodeFilter, MatcherError> {
        let any_of = matchers
            .iter()
            .enumerate()
            .map(|(index, m)| {
                if !m.node_metadatas.is_empty() {
                    return Err(MatcherError::Metadata { index });
                }
                match &m.node_id {
                    None => Ok((IdMatch::Any, false)),
                    Some(s) => Ok((id_match(index, s)?, s.ignore_case)),
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(NodeFilter { any_of })
    }
}

fn id_match(index: usize, matcher: &StringMatcher) -> Result<IdMatch, MatcherError> {
    Ok(match &matcher.match_pattern {
        None => IdMatch::Any,
        Some(MatchPattern::Exact(v)) => IdMatch::Exact(v.clone()),
        Some(MatchPattern::Prefix(v)) => IdMatch::Prefix(v.clone()),
        Some(MatchPattern::Suffix(v)) => IdMatch::Suffix(v.clone()),
        Some(MatchPattern::Contains(v)) => IdMatch::Contains(v.clone()),
        Some(MatchPattern::SafeRegex(re)) => IdMatch::Regex(
            Regex::new(&re.regex).map_err(|source| MatcherError::Regex { index, source })?,
        ),
        Some(MatchPattern::Custom(_)) => {
            return Err(MatcherError::Unsupported {
                index,
                what: "a custom matcher",
            });
        }
    })
}

//! Where a RequestAuthentication's keys come from and what was fetched: a value generation
//! reads (`generate::security::jwt`) and the fetcher (`source::jwks`) fills.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Where the control plane fetches a rule's keys from: its `jwksUri`, or, without one, the
/// `jwks_uri` of the issuer's OpenID discovery document (istiod's fallback).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JwksSource {
    Uri(String),
    Discovery { issuer: String },
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::Uri(uri) => f.write_str(uri),
            JwksSource::Discovery { issuer } => write!(f, "OpenID discovery of issuer {issuer}"),
        }
    }
}

/// The fetched JWKS of a source, if any.
pub trait JwksLookup {
    fn jwks(&self, source: &JwksSource) -> Option<Arc<str>>;
}

impl JwksLookup for BTreeMap<JwksSource, Arc<str>> {
    fn jwks(&self, source: &JwksSource) -> Option<Arc<str>> {
        self.get(source).cloned()
    }
}

/// The keys fetched so far, by source: what one revision's generation inlines.
pub type JwksKeys = BTreeMap<JwksSource, Arc<str>>;

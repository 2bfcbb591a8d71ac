//! AuthorizationPolicy → Envoy RBAC filters for a workload's inbound chains, as istiod's
//! `pilot/pkg/security/authz/builder` writes them: one filter per action, in the order
//! CUSTOM, AUDIT, DENY, ALLOW; one Envoy policy per rule, named `ns[<ns>]-policy[<name>]-rule[<i>]`.
//!
//! - ALLOW: a request must match some rule of some ALLOW policy. A policy without rules is
//!   istiod's "allow nothing": a policy that never matches, so the filter denies everything. No
//!   ALLOW policy at all means no ALLOW filter.
//! - DENY: matching any rule denies; `rules: [{}]` denies everything.
//! - AUDIT: an RBAC filter with action LOG, istiod's own shape and a stock Envoy feature: it
//!   allows every request and sets the `access_log_hint` dynamic metadata on those its rules
//!   match, which access logs can filter on. It comes before DENY, as in istiod, so requests that
//!   are then denied are still marked.
//! - CUSTOM: pilotfish has no ext_authz provider support yet. A CUSTOM policy fails closed, as
//!   istiod's does when its provider is unusable: its rules become a DENY filter, first in the
//!   chain, with a warning naming the policy.
//!
//! On a TCP chain HTTP-only attributes (hosts, methods, paths, request principals, headers, JWT
//! claims) cannot match: an ALLOW rule using one is left out, a DENY rule loses it and so denies
//! more (see [`model`]).
//!
//! Input is what validation accepted; anything else is dropped rule by rule, never a panic.

mod attribute;
mod matcher;
mod model;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::config::rbac::v3::{Policy, rbac};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::google::protobuf::Any;

use crate::config::istio::security::{Action, AuthorizationPolicy};
use crate::index::security::Applied;

use model::{Context, OnError};

/// The name of Envoy's HTTP RBAC filter.
pub const HTTP_RBAC: &str = "envoy.filters.http.rbac";
/// The name of Envoy's network RBAC filter.
pub const NETWORK_RBAC: &str = "envoy.filters.network.rbac";
/// istiod's stat prefix of network RBAC filters.
const TCP_STAT_PREFIX: &str = "tcp.";
/// istiod sets the dry-run stat prefix of an ALLOW shadow on every filter, dry run or not.
const SHADOW_STAT_PREFIX: &str = "istio_dry_run_allow_";
/// How istiod names the rules of a CUSTOM policy it cannot enforce.
const BAD_CUSTOM_SUFFIX: &str = "-deny-due-to-bad-CUSTOM-action";

/// Why one attribute or rule could not be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    #[error("{0} is HTTP only and cannot match on a TCP chain")]
    HttpOnly(String),
    #[error("unknown attribute {0}")]
    UnknownAttribute(String),
    #[error("invalid value {value:?}: {reason}")]
    Invalid { value: String, reason: String },
    #[error("{0} is not supported")]
    Unsupported(String),
    #[error("{key}: {source}")]
    At {
        key: String,
        source: Box<AuthzError>,
    },
}

impl AuthzError {
    /// Names the attribute the error is about, once.
    fn at(self, key: &str) -> Self {
        match self {
            AuthzError::HttpOnly(_) | AuthzError::UnknownAttribute(_) | AuthzError::At { .. } => {
                self
            }
            other => AuthzError::At {
                key: key.into(),
                source: Box::new(other),
            },
        }
    }
}

/// HTTP RBAC filters for an inbound HTTP chain, in istiod's order: CUSTOM (as DENY), AUDIT,
/// DENY, ALLOW. `policies` are those that apply to the workload; `trust_domain` is the mesh's.
pub fn http_filters(
    policies: &[Applied<'_, AuthorizationPolicy>],
    trust_domain: &str,
) -> Vec<HttpFilter> {
    rule_sets(policies, trust_domain, false)
        .into_iter()
        .map(|rules| {
            let config = encoding::HttpRbac {
                rules: Some(rules.into()),
                shadow_rules_stat_prefix: SHADOW_STAT_PREFIX.into(),
            };
            HttpFilter {
                name: HTTP_RBAC.into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(encoding::any(
                    encoding::HTTP_RBAC_TYPE,
                    &config,
                ))),
                ..Default::default()
            }
        })
        .collect()
}

/// Network RBAC filters for an inbound TCP chain, in the same order. HTTP-only attributes are
/// handled as istiod does: an ALLOW rule that needs one never matches; a DENY rule drops it.
pub fn network_filters(
    policies: &[Applied<'_, AuthorizationPolicy>],
    trust_domain: &str,
) -> Vec<Filter> {
    rule_sets(policies, trust_domain, true)
        .into_iter()
        .map(|rules| {
            let config = encoding::NetworkRbac {
                rules: Some(rules.into()),
                stat_prefix: TCP_STAT_PREFIX.into(),
                shadow_rules_stat_prefix: SHADOW_STAT_PREFIX.into(),
            };
            Filter {
                name: NETWORK_RBAC.into(),
                config_type: Some(filter::ConfigType::TypedConfig(encoding::any(
                    encoding::NETWORK_RBAC_TYPE,
                    &config,
                ))),
            }
        })
        .collect()
}

/// One filter's rules: an action and its policies by name (sorted, so the bytes are stable).
#[derive(Debug, Clone, PartialEq)]
struct RuleSet {
    action: rbac::Action,
    policies: BTreeMap<String, Policy>,
}

fn rule_sets(
    policies: &[Applied<'_, AuthorizationPolicy>],
    trust_domain: &str,
    for_tcp: bool,
) -> Vec<RuleSet> {
    let with = |action: Action| policies.iter().filter(move |p| p.spec.action == action);
    let mut out = Vec::new();

    let custom: Vec<_> = with(Action::Custom).collect();
    for p in &custom {
        let provider = p
            .spec
            .provider
            .as_ref()
            .map(|p| p.name.as_str())
            .unwrap_or_default();
        tracing::warn!(
            policy = %format!("{}/{}", p.namespace, p.name),
            provider,
            "CUSTOM AuthorizationPolicy is not supported yet: the requests it applies to are denied"
        );
    }
    let bad_custom_name = |p: &Applied<'_, AuthorizationPolicy>, i: usize| {
        let provider = p
            .spec
            .provider
            .as_ref()
            .map(|p| p.name.as_str())
            .unwrap_or_default();
        format!(
            "istio-ext-authz-{provider}-{}{BAD_CUSTOM_SUFFIX}",
            policy_name(p, i)
        )
    };
    // CUSTOM rules are translated as istiod does, with DENY's error handling.
    out.extend(build(
        &custom,
        rbac::Action::Deny,
        OnError::Widen,
        trust_domain,
        for_tcp,
        bad_custom_name,
    ));

    for (action, rbac_action, on_error) in [
        (Action::Audit, rbac::Action::Log, OnError::Widen),
        (Action::Deny, rbac::Action::Deny, OnError::Widen),
        (Action::Allow, rbac::Action::Allow, OnError::DropRule),
    ] {
        let these: Vec<_> = with(action).collect();
        out.extend(build(
            &these,
            rbac_action,
            on_error,
            trust_domain,
            for_tcp,
            policy_name,
        ));
    }
    out
}

/// istiod's `ns[<ns>]-policy[<name>]-rule[<i>]`.
fn policy_name(p: &Applied<'_, AuthorizationPolicy>, rule: usize) -> String {
    format!("ns[{}]-policy[{}]-rule[{rule}]", p.namespace, p.name)
}

/// The rules of `policies` for one filter; `None` without policies.
fn build(
    policies: &[&Applied<'_, AuthorizationPolicy>],
    action: rbac::Action,
    on_error: OnError,
    trust_domain: &str,
    for_tcp: bool,
    name: impl Fn(&Applied<'_, AuthorizationPolicy>, usize) -> String,
) -> Option<RuleSet> {
    if policies.is_empty() {
        return None;
    }
    let mut out = BTreeMap::new();
    for p in policies {
        let rules = p.spec.rules.as_deref().unwrap_or_default();
        if rules.is_empty() {
            out.insert(name(p, 0), model::match_never());
        }
        for (i, rule) in rules.iter().enumerate() {
            let policy_name = name(p, i);
            let mut cx = Context {
                policy_namespace: p.namespace,
                trust_domain,
                for_tcp,
                on_error,
                dropped: Vec::new(),
            };
            match model::policy(rule, &mut cx) {
                Ok(policy) => {
                    out.insert(policy_name.clone(), policy);
                }
                Err(e) => report(&policy_name, "rule left out", &e),
            }
            for e in &cx.dropped {
                report(&policy_name, "attribute left out, the rule matches more", e);
            }
        }
    }
    Some(RuleSet {
        action,
        policies: out,
    })
}

/// An HTTP attribute on a TCP chain is expected (istiod logs it at debug too); anything else
/// is input validation should have refused.
fn report(policy: &str, what: &str, e: &AuthzError) {
    if matches!(e, AuthzError::HttpOnly(_)) {
        tracing::debug!(policy, error = %e, "{what}");
    } else {
        tracing::warn!(policy, error = %e, "{what}");
    }
}

/// RBAC messages written with their `policies` in key order. envoy-types makes that map a
/// `HashMap`, which prost encodes in its random iteration order, so equal policies would give
/// different bytes (and versions) from build to build and from one pilotfish process to the
/// next. These mirror the fields istiod sets, with the same tags.
mod encoding {
    use std::collections::BTreeMap;

    use envoy_types::pb::envoy::config::rbac::v3::Policy;
    use prost::Message;

    use super::{Any, RuleSet};

    pub const HTTP_RBAC_TYPE: &str =
        "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
    pub const NETWORK_RBAC_TYPE: &str =
        "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";

    /// `envoy.config.rbac.v3.RBAC`.
    #[derive(Clone, PartialEq, Message)]
    pub struct Rbac {
        #[prost(int32, tag = "1")]
        pub action: i32,
        #[prost(btree_map = "string, message", tag = "2")]
        pub policies: BTreeMap<String, Policy>,
    }

    /// `envoy.extensions.filters.http.rbac.v3.RBAC`.
    #[derive(Clone, PartialEq, Message)]
    pub struct HttpRbac {
        #[prost(message, optional, tag = "1")]
        pub rules: Option<Rbac>,
        #[prost(string, tag = "3")]
        pub shadow_rules_stat_prefix: String,
    }

    /// `envoy.extensions.filters.network.rbac.v3.RBAC`.
    #[derive(Clone, PartialEq, Message)]
    pub struct NetworkRbac {
        #[prost(message, optional, tag = "1")]
        pub rules: Option<Rbac>,
        #[prost(string, tag = "3")]
        pub stat_prefix: String,
        #[prost(string, tag = "5")]
        pub shadow_rules_stat_prefix: String,
    }

    impl From<RuleSet> for Rbac {
        fn from(r: RuleSet) -> Self {
            Rbac {
                action: r.action as i32,
                policies: r.policies,
            }
        }
    }

    pub fn any(type_url: &str, message: &impl Message) -> Any {
        Any {
            type_url: type_url.into(),
            value: message.encode_to_vec(),
        }
    }
}

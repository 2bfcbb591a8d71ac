//! One rule of an AuthorizationPolicy → one Envoy RBAC `Policy`, as istiod's
//! `authz/model/model.go`: every `from` is a principal and every `to` a permission, each the AND
//! of its attributes (the `when` conditions added to every one of them); Envoy ORs the lists.
//!
//! What cannot be translated (an HTTP attribute on a TCP chain, a value Envoy would refuse) is
//! handled as istiod's `checkError` does: an ALLOW rule is dropped (it allows less), a DENY, AUDIT
//! or CUSTOM rule loses the attribute (it matches more). Where istiod would also drop one value of
//! a positive list, which narrows a DENY, the whole positive list goes instead.

use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, permission, principal,
};

use super::AuthzError;
use super::attribute::{self, Attribute, Kind};
use crate::config::istio::security::{Operation, Rule, Source};

/// How untranslatable attributes are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// ALLOW: the whole rule is dropped.
    DropRule,
    /// DENY, AUDIT, CUSTOM: the attribute is dropped, so the rule matches more.
    Widen,
}

/// Where a rule is translated for, and what happened that was not fatal.
pub struct Context<'a> {
    pub policy_namespace: &'a str,
    pub trust_domain: &'a str,
    pub for_tcp: bool,
    pub on_error: OnError,
    /// Attributes dropped under [`OnError::Widen`].
    pub dropped: Vec<AuthzError>,
}

impl Context<'_> {
    /// `Err` under [`OnError::DropRule`]; noted and `Ok` otherwise.
    fn fail(&mut self, e: AuthzError) -> Result<(), AuthzError> {
        match self.on_error {
            OnError::DropRule => Err(e),
            OnError::Widen => {
                self.dropped.push(e);
                Ok(())
            }
        }
    }
}

/// The Envoy policy of `rule`, or why an ALLOW rule cannot be one.
pub fn policy(rule: &Rule, cx: &mut Context<'_>) -> Result<Policy, AuthzError> {
    let mut when_principal = Vec::new();
    let mut when_permission = Vec::new();
    for condition in &rule.when {
        let kind = match Kind::of_condition(&condition.key, cx.policy_namespace) {
            Ok(kind) => kind,
            Err(e) => {
                cx.fail(e)?;
                continue;
            }
        };
        let attr = attr(
            kind,
            &condition.key,
            &condition.values,
            &condition.not_values,
            cx.trust_domain,
        );
        if let Some(attr) = attr {
            if attr.kind.is_principal() {
                when_principal.push(attr);
            } else {
                when_permission.push(attr);
            }
        }
    }

    let froms: Vec<Option<&Source>> = rule
        .from
        .iter()
        .flatten()
        .map(|f| f.source.as_ref())
        .collect();
    let principal_lists: Vec<Vec<Attribute>> = if froms.is_empty() {
        vec![when_principal]
    } else {
        froms
            .iter()
            .map(|s| {
                s.map(|s| source(s, cx))
                    .unwrap_or_default()
                    .into_iter()
                    .chain(when_principal.iter().cloned())
                    .collect()
            })
            .collect()
    };
    let tos: Vec<Option<&Operation>> = rule
        .to
        .iter()
        .flatten()
        .map(|t| t.operation.as_ref())
        .collect();
    let permission_lists: Vec<Vec<Attribute>> = if tos.is_empty() {
        vec![when_permission]
    } else {
        tos.iter()
            .map(|o| {
                o.map(operation)
                    .unwrap_or_default()
                    .into_iter()
                    .chain(when_permission.iter().cloned())
                    .collect()
            })
            .collect()
    };

    let permissions = permission_lists
        .iter()
        .map(|l| and::<Permission>(l, cx))
        .collect::<Result<Vec<_>, _>>()?;
    let principals = principal_lists
        .iter()
        .map(|l| and::<Principal>(l, cx))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Policy {
        permissions,
        principals,
        ..Default::default()
    })
}

/// istiod's "match nothing" policy for a policy without rules.
pub fn match_never() -> Policy {
    let not_any_permission = Permission {
        rule: Some(permission::Rule::NotRule(Box::new(Permission {
            rule: Some(permission::Rule::Any(true)),
        }))),
    };
    let not_any_principal = Principal {
        identifier: Some(principal::Identifier::NotId(Box::new(Principal {
            identifier: Some(principal::Identifier::Any(true)),
        }))),
    };
    Policy {
        permissions: vec![not_any_permission],
        principals: vec![not_any_principal],
        ..Default::default()
    }
}

/// A source's attributes in istiod's order (its `insertFront` calls, reversed).
fn source(s: &Source, cx: &Context<'_>) -> Vec<Attribute> {
    let td = cx.trust_domain;
    let ns = cx.policy_namespace;
    [
        attr(
            Kind::Principal,
            "principals",
            &s.principals,
            &s.not_principals,
            td,
        ),
        attr(
            Kind::TrustDomain,
            "trustDomains",
            &s.trust_domains,
            &s.not_trust_domains,
            td,
        ),
        attr(
            Kind::RequestPrincipal,
            "requestPrincipals",
            &s.request_principals,
            &s.not_request_principals,
            td,
        ),
        attr(
            Kind::ServiceAccount {
                namespace: ns.into(),
            },
            "serviceAccounts",
            &s.service_accounts,
            &s.not_service_accounts,
            td,
        ),
        attr(
            Kind::Namespace,
            "namespaces",
            &s.namespaces,
            &s.not_namespaces,
            td,
        ),
        attr(
            Kind::RemoteIp,
            "remoteIpBlocks",
            &s.remote_ip_blocks,
            &s.not_remote_ip_blocks,
            td,
        ),
        attr(
            Kind::SourceIp,
            "ipBlocks",
            &s.ip_blocks,
            &s.not_ip_blocks,
            td,
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn operation(o: &Operation) -> Vec<Attribute> {
    [
        attr(Kind::Host, "hosts", &o.hosts, &o.not_hosts, ""),
        attr(Kind::Method, "methods", &o.methods, &o.not_methods, ""),
        attr(Kind::Path, "paths", &o.paths, &o.not_paths, ""),
        attr(Kind::Port, "ports", &o.ports, &o.not_ports, ""),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// An attribute, or `None` when it names no values. Peer principals are given the mesh trust
/// domain where they say `cluster.local`.
fn attr(
    kind: Kind,
    key: &str,
    values: &[String],
    not_values: &[String],
    trust_domain: &str,
) -> Option<Attribute> {
    if values.is_empty() && not_values.is_empty() {
        return None;
    }
    let fix = |list: &[String]| -> Vec<String> {
        if kind == Kind::Principal {
            list.iter()
                .map(|p| local_trust_domain(p, trust_domain))
                .collect()
        } else {
            list.to_vec()
        }
    };
    Some(Attribute {
        key: key.into(),
        values: fix(values),
        not_values: fix(not_values),
        kind,
    })
}

/// istiod's trust-domain handling without aliases: `cluster.local` in a principal
/// `<td>/ns/<ns>/sa/<sa>` stands for the mesh's own trust domain.
pub fn local_trust_domain(principal: &str, trust_domain: &str) -> String {
    const CLUSTER_LOCAL: &str = "cluster.local";
    match principal.split_once('/') {
        Some((CLUSTER_LOCAL, rest)) if rest.split('/').count() == 4 && !trust_domain.is_empty() => {
            format!("{trust_domain}/{rest}")
        }
        _ => principal.into(),
    }
}

/// The AND of a list of attributes; `any` when none is left.
fn and<T: Side>(attrs: &[Attribute], cx: &mut Context<'_>) -> Result<T, AuthzError> {
    let mut all = Vec::new();
    for a in attrs {
        matchers(a, cx, &mut all)?;
    }
    if all.is_empty() {
        all.push(T::any());
    }
    Ok(T::and(all))
}

/// An attribute's matchers: the OR of its values, then NOT the OR of its `not` values.
fn matchers<T: Side>(
    a: &Attribute,
    cx: &mut Context<'_>,
    out: &mut Vec<T>,
) -> Result<(), AuthzError> {
    if cx.for_tcp && a.kind.http_only() {
        return cx.fail(AuthzError::HttpOnly(a.key.clone()));
    }
    let at = |e: AuthzError| e.at(&a.key);
    if !a.values.is_empty() {
        match one_of::<T>(a, &a.values) {
            Ok(m) => out.push(m),
            Err(e) => cx.fail(at(e))?,
        }
    }
    if !a.not_values.is_empty() {
        if a.kind.combines_values() {
            match T::all(&a.kind, &a.not_values) {
                Ok(m) => out.push(T::not(m)),
                Err(e) => cx.fail(at(e))?,
            }
        } else {
            // Each `not` value left out only widens the match.
            let mut any_of = Vec::new();
            for v in &a.not_values {
                match T::one(&a.kind, v) {
                    Ok(m) => any_of.extend(m),
                    Err(e) => cx.fail(at(e))?,
                }
            }
            if !any_of.is_empty() {
                out.push(T::not(T::or(any_of)));
            }
        }
    }
    Ok(())
}

/// Any of `values`, or an error if one cannot be translated.
fn one_of<T: Side>(a: &Attribute, values: &[String]) -> Result<T, AuthzError> {
    if a.kind.combines_values() {
        return T::all(&a.kind, values);
    }
    let mut any_of = Vec::new();
    for v in values {
        any_of.extend(T::one(&a.kind, v)?);
    }
    Ok(T::or(any_of))
}

/// Permissions and principals are built alike; this is where they differ.
trait Side: Sized {
    fn one(kind: &Kind, value: &str) -> Result<Vec<Self>, AuthzError>;
    fn all(kind: &Kind, values: &[String]) -> Result<Self, AuthzError>;
    fn and(all: Vec<Self>) -> Self;
    fn or(any: Vec<Self>) -> Self;
    fn not(one: Self) -> Self;
    fn any() -> Self;
}

impl Side for Permission {
    fn one(kind: &Kind, value: &str) -> Result<Vec<Self>, AuthzError> {
        kind.permissions(value)
    }
    fn all(kind: &Kind, values: &[String]) -> Result<Self, AuthzError> {
        kind.permission_of(values)
    }
    fn and(rules: Vec<Self>) -> Self {
        attribute::permission(permission::Rule::AndRules(permission::Set { rules }))
    }
    fn or(rules: Vec<Self>) -> Self {
        attribute::permission(permission::Rule::OrRules(permission::Set { rules }))
    }
    fn not(one: Self) -> Self {
        attribute::permission(permission::Rule::NotRule(Box::new(one)))
    }
    fn any() -> Self {
        attribute::permission(permission::Rule::Any(true))
    }
}

impl Side for Principal {
    fn one(kind: &Kind, value: &str) -> Result<Vec<Self>, AuthzError> {
        kind.principal(value).map(|p| vec![p])
    }
    fn all(kind: &Kind, values: &[String]) -> Result<Self, AuthzError> {
        kind.principal_of(values)
    }
    fn and(ids: Vec<Self>) -> Self {
        Principal {
            identifier: Some(principal::Identifier::AndIds(principal::Set { ids })),
        }
    }
    fn or(ids: Vec<Self>) -> Self {
        attribute::or_ids(ids)
    }
    fn not(one: Self) -> Self {
        Principal {
            identifier: Some(principal::Identifier::NotId(Box::new(one))),
        }
    }
    fn any() -> Self {
        Principal {
            identifier: Some(principal::Identifier::Any(true)),
        }
    }
}

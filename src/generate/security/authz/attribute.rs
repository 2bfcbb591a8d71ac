//! One attribute of a rule (`principals`, `paths`, a `when` key…) and its Envoy matchers: istiod's
//! `authz/model/generator.go`, one generator per attribute.

use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::config::rbac::v3::{
    MetadataSource, Permission, Principal, SourcedMetadata, permission, principal,
};
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    MetadataMatcher, PathMatcher, StringMatcher, ValueMatcher, path_matcher,
};
use envoy_types::util::pack_any;

use super::AuthzError;
use super::matcher::{self, Pattern};
use crate::generate::security::{JWT_PAYLOAD_KEY, JWT_PAYLOAD_NAMESPACE};

/// What an attribute matches on. The first group are principals (who), the rest permissions
/// (what), as istiod sorts them.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Peer identity from mTLS: `source.principal`, `principals`.
    Principal,
    /// The trust domain of the peer identity: `source.trustDomain`, `trustDomains`.
    TrustDomain,
    /// `<iss>/<sub>` of the request's JWT.
    RequestPrincipal,
    /// `[<namespace>/]<name>`; a bare name is in the policy's namespace.
    ServiceAccount {
        namespace: String,
    },
    Namespace,
    /// Original client IP (`remote.ip`, `remoteIpBlocks`).
    RemoteIp,
    /// Peer IP (`source.ip`, `ipBlocks`).
    SourceIp,
    Header(String),
    Audiences,
    Presenter,
    Claims(Vec<String>),
    Host,
    Method,
    Path,
    Port,
    DestinationIp,
    Sni,
    /// `experimental.envoy.filters.<filter>[<key>]`: another filter's dynamic metadata.
    EnvoyFilter {
        filter: String,
        key: String,
    },
}

/// `values` and `not_values` of one attribute.
#[derive(Debug, Clone)]
pub struct Attribute {
    pub kind: Kind,
    /// The key as the policy names it, for messages.
    pub key: String,
    pub values: Vec<String>,
    pub not_values: Vec<String>,
}

impl Kind {
    /// A `when` key, as istiod's `model.New` dispatches it.
    pub fn of_condition(key: &str, policy_namespace: &str) -> Result<Kind, AuthzError> {
        let kind = match key {
            "destination.ip" => Kind::DestinationIp,
            "destination.port" => Kind::Port,
            "connection.sni" => Kind::Sni,
            "source.ip" => Kind::SourceIp,
            "remote.ip" => Kind::RemoteIp,
            "source.namespace" => Kind::Namespace,
            "source.serviceAccount" => Kind::ServiceAccount {
                namespace: policy_namespace.into(),
            },
            "source.principal" => Kind::Principal,
            "source.trustDomain" => Kind::TrustDomain,
            "request.auth.principal" => Kind::RequestPrincipal,
            "request.auth.audiences" => Kind::Audiences,
            "request.auth.presenter" => Kind::Presenter,
            _ if key.starts_with("request.headers") => {
                Kind::Header(in_brackets(&key["request.headers".len()..])?)
            }
            _ if key.starts_with("request.auth.claims") => {
                Kind::Claims(nested_brackets(&key["request.auth.claims".len()..])?)
            }
            _ if key.starts_with("experimental.envoy.filters.") => envoy_filter(key)?,
            _ => return Err(AuthzError::UnknownAttribute(key.into())),
        };
        Ok(kind)
    }

    pub fn is_principal(&self) -> bool {
        matches!(
            self,
            Kind::Principal
                | Kind::TrustDomain
                | Kind::RequestPrincipal
                | Kind::ServiceAccount { .. }
                | Kind::Namespace
                | Kind::RemoteIp
                | Kind::SourceIp
                | Kind::Header(_)
                | Kind::Audiences
                | Kind::Presenter
                | Kind::Claims(_)
        )
    }

    /// Needs the HTTP request (headers or the JWT), so a TCP chain cannot match it.
    pub fn http_only(&self) -> bool {
        matches!(
            self,
            Kind::RequestPrincipal
                | Kind::Header(_)
                | Kind::Audiences
                | Kind::Presenter
                | Kind::Claims(_)
                | Kind::Host
                | Kind::Method
                | Kind::Path
        )
    }

    /// istiod's "extended" generators: all values become one matcher instead of one each.
    pub fn combines_values(&self) -> bool {
        matches!(
            self,
            Kind::RequestPrincipal
                | Kind::Audiences
                | Kind::Presenter
                | Kind::Claims(_)
                | Kind::EnvoyFilter { .. }
        )
    }

    /// The principal one value means.
    pub fn principal(&self, value: &str) -> Result<Principal, AuthzError> {
        use principal::Identifier;
        let identifier = match self {
            Kind::Principal => authenticated(matcher::with_prefix(value, "spiffe://")),
            Kind::TrustDomain => authenticated(trust_domain(value)),
            Kind::ServiceAccount { namespace } => authenticated(service_account(namespace, value)),
            Kind::Namespace => authenticated(matcher::regex(format!(
                ".*/ns/{}/.*",
                wildcard_regex(value)
            ))),
            Kind::RemoteIp => Identifier::RemoteIp(matcher::cidr(value)?),
            Kind::SourceIp => Identifier::DirectRemoteIp(matcher::cidr(value)?),
            Kind::Header(name) => Identifier::Header(matcher::header(name, value)?),
            _ => return Err(AuthzError::Unsupported(format!("{self:?} as a principal"))),
        };
        Ok(Principal {
            identifier: Some(identifier),
        })
    }

    /// One principal for all `values` of a combining attribute.
    pub fn principal_of(&self, values: &[String]) -> Result<Principal, AuthzError> {
        let jwt = |claims: &[&str], values: &[String]| {
            let mut path = vec![JWT_PAYLOAD_KEY];
            path.extend_from_slice(claims);
            metadata_principal(matcher::list_or_value(
                JWT_PAYLOAD_NAMESPACE,
                &path,
                matcher::string_or(values),
            ))
        };
        match self {
            Kind::RequestPrincipal => {
                let mut any_of: Vec<Principal> =
                    values.iter().map(|v| request_principal(v)).collect();
                if any_of.len() == 1
                    && let Some(only) = any_of.pop()
                {
                    return Ok(only);
                }
                Ok(or_ids(any_of))
            }
            Kind::Audiences => Ok(jwt(&["aud"], values)),
            Kind::Presenter => Ok(jwt(&["azp"], values)),
            Kind::Claims(claims) => {
                let claims: Vec<&str> = claims.iter().map(String::as_str).collect();
                Ok(jwt(&claims, values))
            }
            _ => Err(AuthzError::Unsupported(format!("{self:?} as a principal"))),
        }
    }

    /// The permissions one value means: any of them matches.
    pub fn permissions(&self, value: &str) -> Result<Vec<Permission>, AuthzError> {
        use permission::Rule;
        let rule = match self {
            Kind::Host => {
                return Ok(host(value)
                    .into_iter()
                    .map(|h| permission(Rule::Header(h)))
                    .collect());
            }
            Kind::Method => Rule::Header(matcher::header(":method", value)?),
            Kind::Path => path(value)?,
            Kind::Port => Rule::DestinationPort(matcher::port(value)?),
            Kind::DestinationIp => Rule::DestinationIp(matcher::cidr(value)?),
            Kind::Sni => Rule::RequestedServerName(matcher::plain(value)),
            _ => return Err(AuthzError::Unsupported(format!("{self:?} as a permission"))),
        };
        Ok(vec![permission(rule)])
    }

    /// One permission for all `values` of a combining attribute.
    pub fn permission_of(&self, values: &[String]) -> Result<Permission, AuthzError> {
        match self {
            Kind::EnvoyFilter { filter, key } => {
                let one = |v: &String| match v.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
                    Some(inner) => matcher::list_of(matcher::plain(inner)),
                    None => matcher::string_value(matcher::plain(v)),
                };
                let value: ValueMatcher = matcher::or_value(values.iter().map(one).collect());
                Ok(permission(permission::Rule::SourcedMetadata(dynamic(
                    matcher::metadata(filter, &[key], value),
                ))))
            }
            _ => Err(AuthzError::Unsupported(format!("{self:?} as a permission"))),
        }
    }
}

pub fn permission(rule: permission::Rule) -> Permission {
    Permission { rule: Some(rule) }
}

pub fn or_ids(ids: Vec<Principal>) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::OrIds(principal::Set { ids })),
    }
}

fn authenticated(name: StringMatcher) -> principal::Identifier {
    principal::Identifier::Authenticated(principal::Authenticated {
        principal_name: Some(name),
    })
}

fn metadata_principal(m: MetadataMatcher) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::SourcedMetadata(dynamic(m))),
    }
}

/// Dynamic metadata, through `sourced_metadata`: istiod still writes the `metadata` field, which
/// Envoy deprecated for this one (same matching, dynamic metadata being the default source).
fn dynamic(m: MetadataMatcher) -> SourcedMetadata {
    SourcedMetadata {
        metadata_matcher: Some(m),
        metadata_source: MetadataSource::Dynamic as i32,
    }
}

/// `*` is any run of characters; the rest is literal.
fn wildcard_regex(v: &str) -> String {
    v.split('*')
        .map(matcher::escape)
        .collect::<Vec<_>>()
        .join(".*")
}

/// istiod's `serviceAccountRegex`: `spiffe://<td>/ns/<ns>/[…/]sa/<sa>[/…]`.
fn service_account(policy_namespace: &str, value: &str) -> StringMatcher {
    let (ns, sa) = value.split_once('/').unwrap_or((policy_namespace, value));
    matcher::regex(format!(
        "spiffe://.+/ns/{}/(.+/|)sa/{}(/.+)?",
        matcher::escape(ns),
        matcher::escape(sa)
    ))
}

/// A trust domain: the first segment of the SPIFFE identity.
fn trust_domain(value: &str) -> StringMatcher {
    match Pattern::parse(value) {
        Pattern::Any => matcher::regex(".+".into()),
        Pattern::Suffix(s) => matcher::regex(format!("spiffe://.*{}/.*", matcher::escape(s))),
        Pattern::Prefix(p) => matcher::prefix(&format!("spiffe://{p}"), false),
        Pattern::Exact(td) => matcher::prefix(&format!("spiffe://{td}/"), false),
    }
}

/// istiod's `requestPrincipalGenerator`: `<iss>/<sub>` split at the last `/` (an issuer is often
/// a URL), each half matched on the JWT payload `jwt_authn` leaves in the dynamic metadata.
/// `*` halves are `.+`, so they require the claim to be there.
fn request_principal(value: &str) -> Principal {
    let any = || matcher::regex(".+".into());
    let (iss, sub, split) = match value.rfind('/') {
        Some(i) => (&value[..i], &value[i + 1..], true),
        None => (value, "", false),
    };
    let (match_iss, match_sub) = if value == "*" {
        (any(), any())
    } else if let Some(tail) = value.strip_prefix('*') {
        if !split {
            (any(), matcher::suffix(tail, false))
        } else if iss == "*" {
            (any(), matcher::exact(sub, false))
        } else {
            (
                matcher::suffix(&iss[1..], false),
                matcher::exact(sub, false),
            )
        }
    } else if let Some(head) = value.strip_suffix('*') {
        if !split {
            (matcher::prefix(head, false), any())
        } else if sub == "*" {
            (matcher::exact(iss, false), any())
        } else {
            (
                matcher::exact(iss, false),
                matcher::prefix(&sub[..sub.len() - 1], false),
            )
        }
    } else {
        (matcher::exact(iss, false), matcher::exact(sub, false))
    };
    let claim = |name: &str, m: StringMatcher| {
        metadata_principal(matcher::metadata(
            JWT_PAYLOAD_NAMESPACE,
            &[JWT_PAYLOAD_KEY, name],
            matcher::string_value(m),
        ))
    };
    Principal {
        identifier: Some(principal::Identifier::AndIds(principal::Set {
            ids: vec![claim("iss", match_iss), claim("sub", match_sub)],
        })),
    }
}

/// `:authority` case-insensitively, as istiod, and tolerant of a port: `example.com` also
/// matches `example.com:8080` (istiod's does not; a DENY on a host is then not bypassed by
/// writing the port, and an ALLOW does not need `host:*` twins). A pattern that names a port,
/// or a prefix pattern (which matches any port already), is matched as written.
fn host(value: &str) -> Vec<envoy_types::pb::envoy::config::route::v3::HeaderMatcher> {
    use envoy_types::pb::envoy::config::route::v3::{
        HeaderMatcher, header_matcher::HeaderMatchSpecifier,
    };
    let authority = |spec| HeaderMatcher {
        name: ":authority".into(),
        header_match_specifier: Some(spec),
        ..Default::default()
    };
    let string = |m| authority(HeaderMatchSpecifier::StringMatch(m));
    match Pattern::parse(value) {
        Pattern::Any => vec![authority(HeaderMatchSpecifier::PresentMatch(true))],
        Pattern::Prefix(p) => vec![string(matcher::prefix(p, true))],
        Pattern::Suffix(s) if has_port(s) => vec![string(matcher::suffix(s, true))],
        Pattern::Suffix(s) => vec![
            string(matcher::suffix(s, true)),
            string(matcher::regex(format!(
                "(?i).*{}:[0-9]+",
                matcher::escape(s)
            ))),
        ],
        Pattern::Exact(h) if has_port(h) => vec![string(matcher::exact(h, true))],
        Pattern::Exact(h) => vec![
            string(matcher::exact(h, true)),
            string(matcher::prefix(&format!("{h}:"), true)),
        ],
    }
}

/// `host:port` or `[v6]:port`.
fn has_port(host: &str) -> bool {
    host.rsplit_once(':').is_some_and(|(name, port)| {
        !port.is_empty()
            && port.bytes().all(|c| c.is_ascii_digit())
            && (!name.contains(':') || name.ends_with(']'))
    })
}

/// istiod's `pathGenerator`: a path with `{*}` or `{**}` is a URI template, else an Istio pattern.
fn path(value: &str) -> Result<permission::Rule, AuthzError> {
    if !value.contains("{*}") && !value.contains("{**}") {
        return Ok(permission::Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(matcher::plain(value))),
        }));
    }
    let template = value.replace("{**}", "**").replace("{*}", "*");
    check_uri_template(&template).map_err(|reason| AuthzError::Invalid {
        value: value.into(),
        reason,
    })?;
    Ok(permission::Rule::UriTemplate(TypedExtensionConfig {
        name: "uri-template".into(),
        typed_config: Some(pack_any(UriTemplateMatchConfig {
            path_template: template,
        })),
    }))
}

/// What Envoy's `uri_template` matcher accepts of a template without variables: a leading `/`,
/// at most 256 characters, segments that are `*`, `**` or literal path characters, and `**` as
/// the last operator. Anything else is refused here rather than NACKed by Envoy.
fn check_uri_template(template: &str) -> Result<(), String> {
    let Some(rest) = template.strip_prefix('/') else {
        return Err("a path template must start with `/`".into());
    };
    if template.len() > 256 {
        return Err("a path template is at most 256 characters".into());
    }
    let literal = |c: char| c.is_ascii_alphanumeric() || "-._~%!$&'()+,;=:@".contains(c);
    let mut after_any_depth = false;
    for segment in rest.split('/') {
        match segment {
            "*" | "**" if after_any_depth => {
                return Err("`{**}` must be the last operator of a path template".into());
            }
            "**" => after_any_depth = true,
            "*" => {}
            "" => return Err("a path template has no empty segments".into()),
            s if s.chars().all(literal) => {}
            _ => {
                return Err(
                    "a path template segment is `{*}`, `{**}` or literal path characters".into(),
                );
            }
        }
    }
    Ok(())
}

/// istiod's `extractNameInBrackets`: `[name]`.
fn in_brackets(s: &str) -> Result<String, AuthzError> {
    match s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        Some(name) if !name.is_empty() => Ok(name.into()),
        _ => Err(AuthzError::Invalid {
            value: s.into(),
            reason: "expecting the format [<NAME>]".into(),
        }),
    }
}

/// istiod's `extractNameInNestedBrackets`: `[a][b]` is the path `a`, `b`; anything else is one
/// name in brackets.
fn nested_brackets(s: &str) -> Result<Vec<String>, AuthzError> {
    let mut names = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let end = rest
            .strip_prefix('[')
            .and_then(|r| r.find(['[', ']']).filter(|&i| r.as_bytes()[i] == b']'));
        let Some(end) = end else {
            return Ok(vec![in_brackets(s)?]);
        };
        names.push(rest[1..end + 1].to_string());
        rest = &rest[end + 2..];
    }
    if names.is_empty() || names.iter().any(String::is_empty) {
        return Err(AuthzError::Invalid {
            value: s.into(),
            reason: "a claim name must not be empty".into(),
        });
    }
    Ok(names)
}

/// `experimental.envoy.filters.a.b[c]`: metadata of filter `envoy.filters.a.b`, key `c`.
fn envoy_filter(key: &str) -> Result<Kind, AuthzError> {
    let name = key.strip_prefix("experimental.").unwrap_or(key);
    let name = name.strip_suffix(']').unwrap_or(name);
    match name.split_once('[') {
        Some((filter, key)) if !filter.is_empty() && !key.is_empty() => Ok(Kind::EnvoyFilter {
            filter: filter.into(),
            key: key.into(),
        }),
        _ => Err(AuthzError::Invalid {
            value: key.into(),
            reason: "expecting the format <filter>[<key>]".into(),
        }),
    }
}

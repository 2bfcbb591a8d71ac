//! The identity a workload certificate carries: `spiffe://<trust domain>/ns/<ns>/sa/<sa>`, the
//! one form istiod issues and Envoy's RBAC matches on.
//!
//! Validated once, at construction, so the CA can write it into a certificate as is: a name
//! Kubernetes would refuse could never belong to an authenticated service account.

use std::fmt;
use std::str::FromStr;

const SCHEME: &str = "spiffe://";

/// A Kubernetes workload's SPIFFE identity. The fields are private so that every value is a
/// valid one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// What is wrong with an identity; names the part and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("SPIFFE id {0:?}: does not start with spiffe://")]
    Scheme(String),
    #[error("SPIFFE id {0:?}: the path is not /ns/<namespace>/sa/<service account>")]
    Path(String),
    #[error("trust domain {0:?}: not lowercase DNS-1123 labels joined by dots")]
    TrustDomain(String),
    #[error(
        "namespace {0:?}: not a DNS-1123 label (1-63 of a-z, 0-9 and '-', alphanumeric at both ends)"
    )]
    Namespace(String),
    #[error(
        "service account {0:?}: not a DNS-1123 subdomain (at most 253 of a-z, 0-9, '-' and '.', dot-separated labels alphanumeric at both ends)"
    )]
    ServiceAccount(String),
}

impl SpiffeId {
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<SpiffeId, SpiffeIdError> {
        let (trust_domain, namespace, service_account) = (
            trust_domain.into(),
            namespace.into(),
            service_account.into(),
        );
        if !is_trust_domain(&trust_domain) {
            return Err(SpiffeIdError::TrustDomain(trust_domain));
        }
        if !is_dns1123_label(&namespace) {
            return Err(SpiffeIdError::Namespace(namespace));
        }
        if !is_dns1123_subdomain(&service_account) {
            return Err(SpiffeIdError::ServiceAccount(service_account));
        }
        Ok(SpiffeId {
            trust_domain,
            namespace,
            service_account,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    /// istiod's `ParseIdentity` (exactly five `/`-separated parts), then the name rules.
    fn from_str(s: &str) -> Result<SpiffeId, SpiffeIdError> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| SpiffeIdError::Scheme(s.to_string()))?;
        match rest.split('/').collect::<Vec<_>>()[..] {
            [trust_domain, "ns", namespace, "sa", service_account] => {
                SpiffeId::new(trust_domain, namespace, service_account)
            }
            _ => Err(SpiffeIdError::Path(s.to_string())),
        }
    }
}

/// istiod's `ValidateTrustDomain` (DNS-1123 labels joined by dots, a trailing dot allowed),
/// lower case only: the SPIFFE spec allows no upper case in a trust domain.
fn is_trust_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    let last = labels.len() - 1;
    !domain.is_empty()
        && labels
            .iter()
            .enumerate()
            .all(|(i, l)| (i == last && l.is_empty()) || is_dns1123_label(l))
}

/// Kubernetes' `IsDNS1123Label` (a namespace name).
fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && b.len() <= 63 && label_chars_ok(b)
}

/// Kubernetes' `IsDNS1123Subdomain` (a service account name): at most 253 characters, labels
/// as above but without a per-label length limit.
fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.')
            .all(|l| !l.is_empty() && label_chars_ok(l.as_bytes()))
}

fn label_chars_ok(b: &[u8]) -> bool {
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    b.first().is_some_and(ok) && b.last().is_some_and(ok) && b.iter().all(|c| ok(c) || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for s in [
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
            "spiffe://td/ns/a/sa/b",
            "spiffe://example.org./ns/istio-system/sa/istio.ingress-gw",
        ] {
            let id: SpiffeId = s.parse().unwrap();
            assert_eq!(id.to_string(), s);
        }
        let id: SpiffeId = "spiffe://cluster.local/ns/ns1/sa/sa1".parse().unwrap();
        assert_eq!(
            (id.trust_domain(), id.namespace(), id.service_account()),
            ("cluster.local", "ns1", "sa1")
        );
        assert_eq!(SpiffeId::new("cluster.local", "ns1", "sa1").unwrap(), id);
    }

    #[test]
    fn rejections_name_the_part_that_is_wrong() {
        let label63 = "a".repeat(63);
        let cases = [
            (
                "http://cluster.local/ns/a/sa/b",
                SpiffeIdError::Scheme("http://cluster.local/ns/a/sa/b".into()),
            ),
            (
                "spiffe://cluster.local/ns/a/sa/b/c",
                SpiffeIdError::Path("spiffe://cluster.local/ns/a/sa/b/c".into()),
            ),
            (
                "spiffe://cluster.local/sa/b/ns/a",
                SpiffeIdError::Path("spiffe://cluster.local/sa/b/ns/a".into()),
            ),
            (
                "spiffe://cluster.local/ns/a",
                SpiffeIdError::Path("spiffe://cluster.local/ns/a".into()),
            ),
            ("spiffe:///ns/a/sa/b", SpiffeIdError::TrustDomain("".into())),
            (
                "spiffe://Cluster.local/ns/a/sa/b",
                SpiffeIdError::TrustDomain("Cluster.local".into()),
            ),
            (
                "spiffe://a..b/ns/a/sa/b",
                SpiffeIdError::TrustDomain("a..b".into()),
            ),
            (
                "spiffe://-a.b/ns/a/sa/b",
                SpiffeIdError::TrustDomain("-a.b".into()),
            ),
            (
                "spiffe://a:80/ns/a/sa/b",
                SpiffeIdError::TrustDomain("a:80".into()),
            ),
            ("spiffe://td/ns//sa/b", SpiffeIdError::Namespace("".into())),
            (
                "spiffe://td/ns/Default/sa/b",
                SpiffeIdError::Namespace("Default".into()),
            ),
            (
                "spiffe://td/ns/a.b/sa/b",
                SpiffeIdError::Namespace("a.b".into()),
            ),
            (
                "spiffe://td/ns/a-/sa/b",
                SpiffeIdError::Namespace("a-".into()),
            ),
            (
                "spiffe://td/ns/a/sa/",
                SpiffeIdError::ServiceAccount("".into()),
            ),
            (
                "spiffe://td/ns/a/sa/b_c",
                SpiffeIdError::ServiceAccount("b_c".into()),
            ),
            (
                "spiffe://td/ns/a/sa/b..c",
                SpiffeIdError::ServiceAccount("b..c".into()),
            ),
            (
                "spiffe://td/ns/a/sa/.b",
                SpiffeIdError::ServiceAccount(".b".into()),
            ),
        ];
        for (s, expected) in cases {
            assert_eq!(s.parse::<SpiffeId>(), Err(expected), "{s}");
        }
        // Length limits: 63 for a namespace; 253 for a service account, whatever its labels.
        assert!(SpiffeId::new("td", &label63, "sa").is_ok());
        assert_eq!(
            SpiffeId::new("td", format!("{label63}a"), "sa"),
            Err(SpiffeIdError::Namespace(format!("{label63}a")))
        );
        let sa253 = format!("{}.{}", "b".repeat(126), "c".repeat(126));
        assert!(SpiffeId::new("td", "ns", &sa253).is_ok());
        assert!(SpiffeId::new("td", "ns", format!("{sa253}d")).is_err());
        assert!(SpiffeId::new(format!("{label63}a.local"), "ns", "sa").is_err());
        let err = "spiffe://td/ns/a/sa/b_c"
            .parse::<SpiffeId>()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("service account \"b_c\": not a DNS-1123 subdomain"),
            "{err}"
        );
    }
}

//! Host names and host patterns as Istio matches them: `*` and `*.example.com` are wildcards,
//! anything else an exact name.

/// The host both patterns match, the more specific of the two (istiod's hostname intersection).
pub fn intersect<'a>(a: &'a str, b: &'a str) -> Option<&'a str> {
    if a == b {
        Some(a)
    } else if a.starts_with('*') && covers(a, b) {
        Some(b)
    } else if b.starts_with('*') && covers(b, a) {
        Some(a)
    } else {
        None
    }
}

/// Whether `pattern` covers every name `host` stands for (`host` may be a pattern too).
pub fn matches(pattern: &str, host: &str) -> bool {
    intersect(pattern, host) == Some(host)
}

/// Whether two hosts (either may be a wildcard) can name the same host (istiod's
/// bidirectional `host.Name.Matches`).
pub fn overlap(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => {
            if sa.len() < sb.len() {
                sb.ends_with(sa)
            } else {
                sa.ends_with(sb)
            }
        }
        (Some(sa), None) => b.ends_with(sa),
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

/// A DNS-1123 label as istiod checks it (`labels.IsDNS1123Label`): 1-63 alphanumerics and
/// dashes, no dash at either end. Istiod accepts upper case here; Kubernetes names do not.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

fn covers(wild: &str, host: &str) -> bool {
    wild == "*"
        || wild
            .strip_prefix('*')
            .is_some_and(|suffix| host.ends_with(suffix) && host.len() > suffix.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersection_prefers_the_specific_name() {
        assert_eq!(
            intersect("a.example.com", "*.example.com"),
            Some("a.example.com")
        );
        assert_eq!(
            intersect("*.example.com", "a.example.com"),
            Some("a.example.com")
        );
        assert_eq!(intersect("*", "bookinfo.com"), Some("bookinfo.com"));
        assert_eq!(intersect("*.example.com", "*"), Some("*.example.com"));
        assert_eq!(intersect("a.example.com", "b.example.com"), None);
        assert_eq!(intersect("*.example.com", "example.com"), None);
    }

    #[test]
    fn overlap_goes_both_ways() {
        assert!(
            overlap("*.foo.com", "a.foo.com")
                && overlap("*.com", "*.foo.com")
                && overlap("a.foo.com", "*.foo.com")
        );
        assert!(!overlap("a.foo.com", "b.foo.com"));
    }

    #[test]
    fn a_pattern_matches_what_it_covers() {
        assert!(matches("*.example.com", "a.example.com"));
        assert!(matches("*", "*.example.com"));
        assert!(!matches("a.example.com", "*.example.com"));
    }
}

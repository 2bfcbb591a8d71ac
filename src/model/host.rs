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

fn covers(wild: &str, host: &str) -> bool {
    wild == "*" || wild.strip_prefix('*').is_some_and(|suffix| host.ends_with(suffix) && host.len() > suffix.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersection_prefers_the_specific_name() {
        assert_eq!(intersect("a.example.com", "*.example.com"), Some("a.example.com"));
        assert_eq!(intersect("*.example.com", "a.example.com"), Some("a.example.com"));
        assert_eq!(intersect("*", "bookinfo.com"), Some("bookinfo.com"));
        assert_eq!(intersect("*.example.com", "*"), Some("*.example.com"));
        assert_eq!(intersect("a.example.com", "b.example.com"), None);
        assert_eq!(intersect("*.example.com", "example.com"), None);
    }

    #[test]
    fn a_pattern_matches_what_it_covers() {
        assert!(matches("*.example.com", "a.example.com"));
        assert!(matches("*", "*.example.com"));
        assert!(!matches("a.example.com", "*.example.com"));
    }
}

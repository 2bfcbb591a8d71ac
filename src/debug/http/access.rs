//! Who may read the debug endpoints. They print every proxy's config and the mesh's objects, so
//! as in istiod only clients on loopback are answered unless the operator opts in with
//! `--debug-remote` (istiod's `ENABLE_DEBUG_ON_HTTP`).

use std::net::{IpAddr, SocketAddr};

/// The `pilotfish serve` flag that opens the debug endpoints to every client.
pub const REMOTE_FLAG: &str = "--debug-remote";
/// Its environment variable, istiod's name for the same knob.
pub const REMOTE_ENV: &str = "ENABLE_DEBUG_ON_HTTP";

/// Whether `peer` is on this host: 127.0.0.0/8, `::1`, or `::ffff:127.x.y.z` (a v4 client on a
/// dual-stack listener).
pub fn is_loopback(peer: IpAddr) -> bool {
    match peer {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// `Ok` when `peer` may read the debug endpoints; otherwise the reason, naming the flag.
pub fn check(peer: Option<SocketAddr>, remote_allowed: bool) -> Result<(), String> {
    if remote_allowed || peer.is_some_and(|p| is_loopback(p.ip())) {
        return Ok(());
    }
    let who = peer.map_or_else(
        || "a client of unknown address".to_string(),
        |p| p.ip().to_string(),
    );
    Err(format!(
        "the debug endpoints answer loopback clients only, and {who} is not one; \
         start `pilotfish serve` with {REMOTE_FLAG} ({REMOTE_ENV}=true) to open them to every client\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn loopback_clients_are_answered() {
        for peer in [
            "127.0.0.1:5000",
            "127.1.2.3:1",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert_eq!(check(addr(peer), false), Ok(()), "{peer}");
        }
    }

    #[test]
    fn other_clients_are_refused_naming_the_flag() {
        for peer in ["10.0.0.7:5000", "[2001:db8::1]:80", "[::ffff:10.0.0.7]:80"] {
            let refused = check(addr(peer), false).unwrap_err();
            assert!(refused.contains(REMOTE_FLAG), "{refused}");
            assert!(refused.contains(REMOTE_ENV), "{refused}");
        }
        let unknown = check(None, false).unwrap_err();
        assert!(unknown.contains("unknown address"), "{unknown}");
    }

    #[test]
    fn the_flag_opens_them_to_everyone() {
        assert_eq!(check(addr("10.0.0.7:5000"), true), Ok(()));
        assert_eq!(check(None, true), Ok(()));
    }
}

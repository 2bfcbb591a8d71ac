//! Resource names as istiod spells them; users grep their config dumps for these.

/// `outbound|<port>|<subset>|<host>`
pub fn outbound_cluster(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// The host of an `outbound|<port>|<subset>|<host>` cluster name.
pub fn outbound_cluster_host(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("outbound|")?;
    rest.splitn(3, '|').nth(2)
}

/// A cluster with no endpoints: requests to it fail with 503.
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";

/// Gateway listener for a port: `0.0.0.0_<port>`.
pub fn listener(bind: &str, port: u32) -> String {
    format!("{bind}_{port}")
}

/// Gateway route config for the plain-HTTP servers of a port: `http.<port>`.
pub fn gateway_http_routes(port: u32) -> String {
    format!("http.{port}")
}

/// Sidecar route config for the HTTP services of a port: just the port number, as istiod names it.
pub fn sidecar_http_routes(port: u16) -> String {
    port.to_string()
}

/// `inbound|<port>||`: the cluster to the workload's own port, behind the sidecar.
pub fn inbound_cluster(port: u16) -> String {
    format!("inbound|{port}||")
}

/// Where ALLOW_ANY sends traffic to unknown destinations (ORIGINAL_DST).
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";

/// Where inbound traffic to a port no service declares goes (ORIGINAL_DST, from 127.0.0.6).
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";

/// The outbound capture listener (iptables REDIRECT sends outbound traffic to 15001).
pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";

/// The inbound capture listener (iptables REDIRECT sends inbound traffic to 15006).
pub const VIRTUAL_INBOUND: &str = "virtualInbound";

/// The catch-all virtual host of sidecar route configs under ALLOW_ANY.
pub const ALLOW_ANY: &str = "allow_any";

/// The catch-all virtual host of sidecar route configs under REGISTRY_ONLY.
pub const BLOCK_ALL: &str = "block_all";

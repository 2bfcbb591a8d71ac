//! Resource names as istiod spells them; users grep their config dumps for these.

/// `outbound|<port>|<subset>|<host>`
pub fn outbound_cluster(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
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

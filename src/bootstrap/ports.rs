//! istio-proxy's data-plane ports: Prometheus stats on 15090 and readiness on 15021.
//!
//! Prometheus scrapes every proxy's `:15090/stats/prometheus` (the `prometheus.io/*` pod
//! annotations point there) and Kubernetes probes a gateway's `:15021/healthz/ready`. In
//! istio-proxy both are static listeners of the bootstrap; the admin API itself stays on
//! loopback. There is no istio-agent beside a stock Envoy, so readiness is the admin's own
//! `/ready` (200 `LIVE` once the first xDS config is in, 503 before), reached with a rewrite.

use serde_json::{Value, json};

use super::{BootstrapError, socket_address};

/// istio-proxy's Prometheus port.
pub const DEFAULT_STATS_PORT: u16 = 15090;
/// istio-proxy's health port (`status.sidecar.istio.io/port`).
pub const DEFAULT_HEALTH_PORT: u16 = 15021;

/// The cluster that reaches the admin API for `/stats/prometheus` (istio-proxy's name).
pub const STATS_CLUSTER: &str = "prometheus_stats";
/// The cluster that answers `/healthz/ready`: istio-agent in istio-proxy, the admin API here.
/// Istio's name, so its `cluster.agent.*` stats mean the same thing.
pub const HEALTH_CLUSTER: &str = "agent";

/// The path Prometheus scrapes and the one a readiness probe asks.
pub const STATS_PATH: &str = "/stats/prometheus";
pub const HEALTH_PATH: &str = "/healthz/ready";

/// Which wildcard ports the bootstrap opens besides the loopback admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPlanePorts {
    /// `0.0.0.0:<port>/stats/prometheus`; `None` is off.
    pub stats: Option<u16>,
    /// `0.0.0.0:<port>/healthz/ready`; `None` is off.
    pub health: Option<u16>,
}

impl DataPlanePorts {
    /// istio-proxy's: 15090 and 15021.
    pub const ISTIO: DataPlanePorts = DataPlanePorts {
        stats: Some(DEFAULT_STATS_PORT),
        health: Some(DEFAULT_HEALTH_PORT),
    };
    /// Neither: for Envoys that share a host's network, where only one could own each port.
    pub const OFF: DataPlanePorts = DataPlanePorts {
        stats: None,
        health: None,
    };

    /// A port number as the CLI takes it: 0 is off.
    pub fn from_flags(stats: u16, health: u16) -> DataPlanePorts {
        let on = |p: u16| (p != 0).then_some(p);
        DataPlanePorts {
            stats: on(stats),
            health: on(health),
        }
    }

    /// Rejects two listeners on one port, and an admin that cannot be reached: the routes
    /// go to the admin's fixed port, so an ephemeral admin (0) would leave them dangling.
    pub fn check(&self, admin_port: u16) -> Result<(), BootstrapError> {
        if self.stats.is_none() && self.health.is_none() {
            return Ok(());
        }
        if admin_port == 0 {
            return Err(BootstrapError::EphemeralAdmin);
        }
        let named = [
            ("admin_port", Some(admin_port)),
            ("stats_port", self.stats),
            ("health_port", self.health),
        ];
        for (i, (first, a)) in named.iter().enumerate() {
            for (second, b) in &named[i + 1..] {
                if let (Some(a), Some(b)) = (a, b)
                    && a == b
                {
                    return Err(BootstrapError::PortClash {
                        first,
                        second,
                        port: *a,
                    });
                }
            }
        }
        Ok(())
    }

    /// The static listeners for the ports that are on.
    pub fn listeners(&self) -> Vec<Value> {
        let mut listeners = Vec::new();
        if let Some(port) = self.stats {
            let route = json!({
                "match": { "prefix": STATS_PATH },
                "route": { "cluster": STATS_CLUSTER },
            });
            listeners.push(listener(STATS_CLUSTER, "stats", port, route));
        }
        if let Some(port) = self.health {
            // An exact path, so the rest of the admin API is not reachable from the pod IP.
            let route = json!({
                "match": { "path": HEALTH_PATH },
                "route": { "cluster": HEALTH_CLUSTER, "prefix_rewrite": "/ready" },
            });
            listeners.push(listener(HEALTH_CLUSTER, "agent", port, route));
        }
        listeners
    }

    /// The static clusters those listeners route to: each is the loopback admin.
    pub fn clusters(&self, admin_port: u16) -> Vec<Value> {
        let mut clusters = Vec::new();
        if self.stats.is_some() {
            clusters.push(admin_cluster(STATS_CLUSTER, admin_port));
        }
        if self.health.is_some() {
            clusters.push(admin_cluster(HEALTH_CLUSTER, admin_port));
        }
        clusters
    }
}

/// A plain-HTTP listener on `0.0.0.0:port` with one route, as istio-proxy's bootstrap has.
fn listener(name: &str, stat_prefix: &str, port: u16, route: Value) -> Value {
    json!({
        "name": name,
        "address": socket_address("0.0.0.0", port),
        "filter_chains": [{
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "codec_type": "AUTO",
                    "stat_prefix": stat_prefix,
                    "route_config": {
                        "virtual_hosts": [{ "name": "backend", "domains": ["*"], "routes": [route] }],
                    },
                    "http_filters": [{
                        "name": "envoy.filters.http.router",
                        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" },
                    }],
                },
            }],
        }],
    })
}

fn admin_cluster(name: &str, admin_port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "0.250s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{
                "lb_endpoints": [{ "endpoint": { "address": socket_address("127.0.0.1", admin_port) } }],
            }],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only_route(listener: &Value) -> &Value {
        let hcm = &listener["filter_chains"][0]["filters"][0]["typed_config"];
        let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
            .as_array()
            .unwrap();
        assert_eq!(routes.len(), 1, "{listener}");
        &routes[0]
    }

    fn port_of(v: &Value) -> &Value {
        &v["address"]["socket_address"]["port_value"]
    }

    #[test]
    fn stats_listener_sends_the_prometheus_path_to_the_admin() {
        let ports = DataPlanePorts::from_flags(19090, 0);
        let listeners = ports.listeners();
        assert_eq!(listeners.len(), 1);
        let l = &listeners[0];
        assert_eq!(l["address"]["socket_address"]["address"], "0.0.0.0");
        assert_eq!(*port_of(l), 19090);
        let route = only_route(l);
        assert_eq!(route["match"]["prefix"], STATS_PATH);
        assert_eq!(route["route"]["cluster"], STATS_CLUSTER);
        assert!(route["route"].get("prefix_rewrite").is_none());

        let clusters = ports.clusters(15123);
        assert_eq!(clusters.len(), 1);
        assert_eq!(clusters[0]["name"], STATS_CLUSTER);
        let addr = &clusters[0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"];
        assert_eq!(*addr, json!({"address": "127.0.0.1", "port_value": 15123}));
    }

    #[test]
    fn health_listener_rewrites_exactly_healthz_ready_to_admin_ready() {
        let ports = DataPlanePorts::from_flags(0, 19021);
        let listeners = ports.listeners();
        assert_eq!(listeners.len(), 1);
        assert_eq!(*port_of(&listeners[0]), 19021);
        let route = only_route(&listeners[0]);
        assert_eq!(route["match"], json!({"path": HEALTH_PATH}));
        assert_eq!(route["route"]["cluster"], HEALTH_CLUSTER);
        assert_eq!(route["route"]["prefix_rewrite"], "/ready");
        let clusters = ports.clusters(15000);
        assert_eq!(clusters.len(), 1);
        assert_eq!(clusters[0]["name"], HEALTH_CLUSTER);
    }

    #[test]
    fn zero_turns_a_port_off() {
        assert_eq!(DataPlanePorts::from_flags(0, 0), DataPlanePorts::OFF);
        assert_eq!(
            DataPlanePorts::from_flags(DEFAULT_STATS_PORT, DEFAULT_HEALTH_PORT),
            DataPlanePorts::ISTIO
        );
        assert!(DataPlanePorts::OFF.listeners().is_empty());
        assert!(DataPlanePorts::OFF.clusters(15000).is_empty());
        assert_eq!(DataPlanePorts::OFF.check(0), Ok(()));
    }

    #[test]
    fn clashing_ports_are_named() {
        let same = DataPlanePorts::from_flags(15021, 15021);
        assert_eq!(
            same.check(15000),
            Err(BootstrapError::PortClash {
                first: "stats_port",
                second: "health_port",
                port: 15021
            })
        );
        let err = DataPlanePorts::from_flags(15000, 0)
            .check(15000)
            .unwrap_err();
        assert!(
            err.to_string().contains("admin_port and stats_port"),
            "{err}"
        );
        assert_eq!(
            DataPlanePorts::ISTIO.check(0),
            Err(BootstrapError::EphemeralAdmin)
        );
        assert_eq!(DataPlanePorts::ISTIO.check(15000), Ok(()));
    }
}

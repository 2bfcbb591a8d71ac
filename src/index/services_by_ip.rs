//! The services each endpoint IP backs: what a sidecar at that IP serves.
//!
//! The map has an entry per endpoint in the mesh (50,000 in a large cluster), and an endpoint
//! change touches a few. So a revision does not copy it: changed entries go into a small overlay
//! over the previous revision's shared base, which is folded in once the overlay grows.

use std::collections::HashMap;
use std::sync::Arc;

use super::Service;

type ByIp = HashMap<String, Vec<Arc<Service>>>;

#[derive(Debug, Clone, Default)]
pub struct ServicesByIp {
    base: Arc<ByIp>,
    /// Entries that replace the base's; an empty list means none.
    overlay: ByIp,
}

impl ServicesByIp {
    /// From every service, each in the lists of its endpoints' IPs, in hostname order (the
    /// order `services` iterates in).
    pub fn build<'a>(services: impl IntoIterator<Item = &'a Arc<Service>>) -> ServicesByIp {
        let mut map = ByIp::new();
        for service in services {
            for ep in &service.endpoints {
                let backed = map.entry(ep.address.clone()).or_default();
                if !backed.last().is_some_and(|s| Arc::ptr_eq(s, service)) {
                    backed.push(service.clone());
                }
            }
        }
        ServicesByIp {
            base: Arc::new(map),
            overlay: ByIp::new(),
        }
    }

    /// The services with an endpoint at `ip`, in hostname order.
    pub fn get(&self, ip: &str) -> &[Arc<Service>] {
        self.overlay
            .get(ip)
            .or_else(|| self.base.get(ip))
            .map_or(&[], Vec::as_slice)
    }

    /// With `old` (if any) replaced by `new` (if any), both for the same hostname.
    pub fn replace(&mut self, old: Option<&Arc<Service>>, new: Option<&Arc<Service>>) {
        for ep in old.iter().flat_map(|s| &s.endpoints) {
            let mut backed = self.get(&ep.address).to_vec();
            backed.retain(|s| !old.is_some_and(|o| Arc::ptr_eq(s, o)));
            self.overlay.insert(ep.address.clone(), backed);
        }
        for (service, ep) in new
            .iter()
            .flat_map(|s| s.endpoints.iter().map(move |ep| (*s, ep)))
        {
            let mut backed = self.get(&ep.address).to_vec();
            if let Err(at) = backed.binary_search_by(|s| s.hostname.cmp(&service.hostname)) {
                backed.insert(at, service.clone());
            }
            self.overlay.insert(ep.address.clone(), backed);
        }
        // Folding costs a copy of the base: do it when the overlay is a good part of it.
        if self.overlay.len() * 8 > self.base.len() {
            let mut map = (*self.base).clone();
            for (ip, backed) in self.overlay.drain() {
                if backed.is_empty() {
                    map.remove(&ip);
                } else {
                    map.insert(ip, backed);
                }
            }
            self.base = Arc::new(map);
        }
    }

    /// Every IP with its services: the plain map, for comparing two of them.
    pub fn to_map(&self) -> ByIp {
        let mut map = (*self.base).clone();
        for (ip, backed) in &self.overlay {
            if backed.is_empty() {
                map.remove(ip);
            } else {
                map.insert(ip.clone(), backed.clone());
            }
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Endpoint;

    fn service(host: &str, ips: &[String]) -> Arc<Service> {
        Arc::new(Service {
            hostname: host.into(),
            namespace: "ns".into(),
            origin: crate::config::ObjectKey {
                kind: crate::config::Kind::Service,
                namespace: "ns".into(),
                name: host.into(),
            },
            ports: Vec::new(),
            resolution: crate::index::Resolution::Eds,
            addresses: Vec::new(),
            mesh_external: false,
            endpoints: ips
                .iter()
                .map(|ip| Endpoint {
                    address: ip.clone(),
                    ports: Default::default(),
                    labels: Default::default(),
                    ready: true,
                    locality: String::new(),
                    weight: 1,
                    service_account: String::new(),
                    plaintext_ports: Vec::new(),
                })
                .collect(),
            export_to: crate::index::visibility::ExportTo::Public,
        })
    }

    fn hosts(services: &[Arc<Service>]) -> Vec<&str> {
        services.iter().map(|s| s.hostname.as_str()).collect()
    }

    #[test]
    fn replacing_through_the_overlay_and_folding_it_in() {
        let ip = |i: usize| format!("10.0.0.{i}");
        let services: Vec<Arc<Service>> = (0..50)
            .map(|i| service(&format!("s{i:02}"), &[ip(i), ip(100)]))
            .collect();
        let mut by_ip = ServicesByIp::build(&services);
        assert_eq!(by_ip.get(&ip(100)).len(), 50);

        // s07 moves from .7 to .200; the rest stays in the base.
        let moved = service("s07", &[ip(200), ip(100)]);
        by_ip.replace(Some(&services[7]), Some(&moved));
        assert!(!by_ip.overlay.is_empty(), "one change stays in the overlay");
        assert!(by_ip.get(&ip(7)).is_empty());
        assert_eq!(hosts(by_ip.get(&ip(200))), ["s07"]);
        assert!(
            Arc::ptr_eq(&by_ip.get(&ip(100))[7], &moved),
            "in hostname order"
        );
        assert_eq!(hosts(by_ip.get(&ip(8))), ["s08"]);

        // Enough changes fold the overlay into a new base; lookups stay the same.
        let base = by_ip.base.clone();
        for gone in &services[10..20] {
            by_ip.replace(Some(gone), None);
        }
        assert!(!Arc::ptr_eq(&base, &by_ip.base), "folded into a new base");
        assert!(by_ip.overlay.len() * 8 <= by_ip.base.len());
        assert!(by_ip.get(&ip(12)).is_empty());
        assert_eq!(by_ip.get(&ip(100)).len(), 40);
        assert_eq!(by_ip.to_map().len(), 40 + 1);
    }
}

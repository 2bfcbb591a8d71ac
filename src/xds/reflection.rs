//! gRPC server reflection (v1 and v1alpha) on the xDS ports, so `grpcurl -plaintext
//! host:15010 list` and `describe` work without proto files. It serves the descriptor set
//! `build.rs` compiles for the debug JSON (one set, embedded once) and advertises only the
//! services the port really serves.

use tonic_reflection::server::{Builder, Error, v1, v1alpha};

use super::service::SERVICE_NAME as ADS;

/// `envoy.service.status.v3.ClientStatusDiscoveryService`, on both ports.
pub const CSDS: &str = "envoy.service.status.v3.ClientStatusDiscoveryService";
/// Istio's certificate service, on the TLS port only.
pub const CA: &str = "istio.v1.auth.IstioCertificateService";

/// The services of the plaintext xDS port.
pub const PLAINTEXT: &[&str] = &[ADS, CSDS];
/// The services of the TLS xDS port.
pub const TLS: &[&str] = &[ADS, CSDS, CA];

fn builder(services: &[&str]) -> Builder<'static> {
    services.iter().fold(
        Builder::configure().register_encoded_file_descriptor_set(crate::debug::json::DESCRIPTORS),
        |b, s| b.with_service_name(*s),
    )
}

/// Both reflection services advertising `services`; `None` (logged) if the embedded set does
/// not parse, a build problem that must not take the xDS port down with it.
#[allow(clippy::type_complexity)]
pub fn services(
    services: &[&str],
) -> (
    Option<v1::ServerReflectionServer<impl v1::ServerReflection>>,
    Option<v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>>,
) {
    let log = |e: Error| tracing::warn!(error = %e, "gRPC reflection disabled: the descriptor set did not load");
    (
        builder(services).build_v1().map_err(log).ok(),
        builder(services).build_v1alpha().map_err(log).ok(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use prost_reflect::DescriptorPool;

    /// Every advertised service is in the set, so reflection can describe it.
    #[test]
    fn the_set_holds_every_advertised_service() {
        let pool = DescriptorPool::decode(crate::debug::json::DESCRIPTORS).unwrap();
        for name in TLS {
            let service = pool.get_service_by_name(name);
            assert!(service.is_some(), "{name} missing from the descriptor set");
        }
        let csds = pool.get_service_by_name(CSDS).unwrap();
        assert!(csds.methods().any(|m| m.name() == "FetchClientStatus"));
        let proto = csds.parent_file().file_descriptor_proto().encode_to_vec();
        assert!(!proto.is_empty());
    }

    #[test]
    fn both_versions_build() {
        let (v1, v1alpha) = services(TLS);
        assert!(v1.is_some() && v1alpha.is_some());
    }
}

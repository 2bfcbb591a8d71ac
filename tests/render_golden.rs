//! `pilotfish render` output pinned by golden files: every field istiod's translation sets is
//! visible in review when it changes. Regenerate with `UPDATE_GOLDEN=1 cargo test --test render_golden`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pilotfish::model::{MeshConfig, Proxy};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn check(config_dir: &str, golden: &str) {
    let proxy = Proxy::from_id(
        "router~10.0.0.1~istio-ingressgateway-7d8f.istio-system~istio-system.svc.cluster.local",
    )
    .unwrap()
    .with_labels(BTreeMap::from([(
        "istio".to_string(),
        "ingressgateway".to_string(),
    )]));
    let (dump, diagnostics) =
        pilotfish::render::render_dir(&root().join(config_dir), &proxy, &MeshConfig::default())
            .unwrap();
    assert!(
        diagnostics.iter().all(|d| !d.is_error()),
        "{diagnostics:#?}"
    );
    let actual = serde_json::to_string_pretty(&dump).unwrap() + "\n";
    let path = root().join("tests/golden").join(golden);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "render of {config_dir} differs from {}; rerun with UPDATE_GOLDEN=1 and review the diff",
        path.display()
    );
}

#[test]
fn bookinfo_gateway() {
    check("examples/bookinfo", "bookinfo-gateway.json");
}

#[test]
fn gateway_features() {
    check("tests/fixtures/gateway-features", "gateway-features.json");
}

//! Structure-aware fuzzing of untrusted input, in-tree and deterministic (a seeded generator, no
//! nightly toolchain needed): the fixtures' objects are mutated — values replaced by other types,
//! fields deleted, numbers at their limits, odd strings — and pushed through the whole pipeline.
//! Nothing may panic; whatever validates must generate resources that decode and are consistent.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use pilotfish::config::parse::{parse_object, parse_text};
use pilotfish::generate::consistency;
use pilotfish::model::{MeshConfig, Proxy};
use pilotfish::store::{self, Entry, SourceId};
use pilotfish::xds::{Snapshot, TypeUrl};
use serde_json::{Value, json};

/// xorshift64*: enough randomness for mutations, and the same sequence on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn odd_value(rng: &mut Rng) -> Value {
    match rng.below(14) {
        0 => json!(null),
        1 => json!(""),
        2 => json!(-1),
        3 => json!(0),
        4 => json!(u32::MAX),
        5 => json!(i64::MIN),
        6 => json!(1e300),
        7 => json!("*"),
        8 => json!("unix:///tmp/x.sock"),
        9 => json!("[a-"),
        10 => json!({}),
        11 => json!([]),
        12 => json!("x".repeat(300)),
        _ => json!("ünïcødé/../%00"),
    }
}

/// Mutates one randomly chosen node of the tree.
fn mutate(v: &mut Value, rng: &mut Rng, depth: usize) {
    let stop = depth > 0 && rng.below(3) == 0;
    match v {
        Value::Object(map) if !map.is_empty() && !stop => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = &keys[rng.below(keys.len())];
            if depth > 0 && rng.below(6) == 0 {
                map.remove(key);
            } else if let Some(child) = map.get_mut(key) {
                mutate(child, rng, depth + 1);
            }
        }
        Value::Array(items) if !items.is_empty() && !stop => {
            let i = rng.below(items.len());
            match rng.below(5) {
                0 => {
                    let copy = items[i].clone();
                    items.push(copy);
                }
                1 => {
                    items.remove(i);
                }
                _ => mutate(&mut items[i], rng, depth + 1),
            }
        }
        _ => *v = odd_value(rng),
    }
}

fn fixture_objects() -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in [
        "examples/bookinfo",
        "tests/fixtures/gateway-features",
        "tests/fixtures/sidecar-features",
    ] {
        for file in std::fs::read_dir(root.join(dir)).unwrap() {
            let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
            for doc in text.split("\n---\n") {
                if let Ok(v) = serde_saphyr::from_str::<Value>(doc)
                    && v.is_object()
                {
                    out.push(v);
                }
            }
        }
    }
    out
}

fn proxies() -> Vec<Proxy> {
    let gateway = Proxy::from_id("router~10.0.0.1~gw.istio-system~istio-system.svc.cluster.local")
        .unwrap()
        .with_labels(BTreeMap::from([(
            "istio".to_string(),
            "ingressgateway".to_string(),
        )]));
    let sidecar = Proxy::from_id("sidecar~10.0.0.2~app.default~default.svc.cluster.local").unwrap();
    // The edge workload (10.0.0.2 is its pod): Sidecar ingress, `sourceLabels`; and without capture.
    let edge = sidecar
        .clone()
        .with_labels(BTreeMap::from([("app".to_string(), "edge".to_string())]));
    let mut uncaptured = edge.clone();
    uncaptured.metadata.interception_mode = "NONE".into();
    vec![gateway, sidecar, edge, uncaptured]
}

#[test]
fn mutated_config_never_panics_and_never_generates_garbage() {
    let originals = fixture_objects();
    assert!(originals.len() > 20, "fixtures found: {}", originals.len());
    let mesh = MeshConfig::default();
    let mut rng = Rng(0x5EED_F15E);
    let (mut accepted, mut rejected) = (0, 0);
    for round in 0..300 {
        // Each round: every fixture object, a few of them mutated a few times.
        let mut entries = Vec::new();
        for original in &originals {
            let mut object = original.clone();
            if rng.below(4) == 0 {
                for _ in 0..1 + rng.below(3) {
                    mutate(&mut object, &mut rng, 0);
                }
            }
            match parse_object(object) {
                Ok(Some((obj, _)))
                    if !pilotfish::validate::validate(&obj)
                        .iter()
                        .any(|d| d.is_error()) =>
                {
                    accepted += 1;
                    entries.push(Entry {
                        object: Arc::new(obj),
                        origin: None,
                        source: SourceId::Files,
                    });
                }
                _ => rejected += 1,
            }
        }
        // Duplicates lose to the first, as the directory source does.
        let mut seen = std::collections::HashSet::new();
        entries.retain(|e| seen.insert(e.object.key()));
        let context = pilotfish::push::build(&store::Snapshot::of(entries), &mesh, None);
        for proxy in proxies() {
            let resources = context.resources_for(&proxy);
            let problems = consistency::check(&resources);
            assert!(
                problems.is_empty(),
                "round {round}, {}: {problems:#?}",
                proxy.id
            );
            for ty in TypeUrl::ALL {
                for r in resources.get(ty).values() {
                    pilotfish::debug::json::any_to_json(&r.any).unwrap_or_else(|e| {
                        panic!("round {round}: {} {} does not decode: {e}", ty, r.name)
                    });
                }
            }
        }
    }
    assert!(
        rejected > 0 && accepted > rejected,
        "mutations should be a minority: {accepted} accepted, {rejected} rejected"
    );
}

#[test]
fn mutated_yaml_text_never_panics_the_parser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text =
        std::fs::read_to_string(root.join("tests/fixtures/gateway-features/config.yaml")).unwrap();
    let bytes = text.as_bytes();
    let mut rng = Rng(42);
    for _ in 0..2000 {
        let mut mutated = bytes.to_vec();
        for _ in 0..1 + rng.below(8) {
            if mutated.is_empty() {
                break;
            }
            let i = rng.below(mutated.len());
            match rng.below(4) {
                0 => mutated[i] = b"{}[]:-'\"&*!|>#\n\t "[rng.below(17)],
                1 => {
                    mutated.remove(i);
                }
                2 => mutated.insert(i, b"\n- ---:"[rng.below(7)]),
                _ => mutated.truncate(i),
            }
        }
        let _ = parse_text("fuzz.yaml", &String::from_utf8_lossy(&mutated));
    }
}

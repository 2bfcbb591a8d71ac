//! pilotfish's CRDs against the checked-in `crds/` and against Istio's own CRDs, whose metadata,
//! property trees and valid examples are extracted into `tests/fixtures/istio-crds/` (see its
//! `extract.py`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pilotfish::config::Kind;
use pilotfish::config::parse::parse_object;
use pilotfish::crd::{self, Crd, admission, structural};
use serde_json::Value;

/// Fields of Istio's schemas that pilotfish's types leave out or narrow, each with the reason.
/// (file, property path, reason)
const ALLOWED_GAPS: &[(&str, &str, &str)] = &[(
    "networking.istio.io_serviceentries.yaml",
    "spec.resolution=DYNAMIC_DNS",
    "pilotfish has no dynamic forward proxy: such a ServiceEntry is refused on apply rather than \
     accepted and then not served",
)];

/// Kinds whose fixtures exist but whose Rust spec types are not written yet (none now): list a
/// fixture here to land its kind later; the test fails once the CRD is generated.
const PENDING: &[&str] = &[];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/istio-crds")
}

fn generated() -> Vec<Crd> {
    crd::generate().unwrap()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn upstream() -> BTreeMap<String, Value> {
    yaml_files(&fixtures().join("upstream"))
        .into_iter()
        .map(|p| {
            (
                file_name(&p),
                serde_saphyr::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap(),
            )
        })
        .collect()
}

fn schemas(crd: &Crd) -> Vec<&Value> {
    let versions = crd.definition["spec"]["versions"].as_array().unwrap();
    versions
        .iter()
        .map(|v| &v["schema"]["openAPIV3Schema"])
        .collect()
}

/// Every property path of a schema (`spec.http[].match[].uri`, `spec.selector{}`) and its node.
fn property_paths(schema: &Value, path: &str, out: &mut BTreeMap<String, Value>) {
    out.insert(path.to_string(), schema.clone());
    for (name, sub) in schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        property_paths(sub, &format!("{path}.{name}"), out);
    }
    if let Some(items) = schema.get("items") {
        property_paths(items, &format!("{path}[]"), out);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        property_paths(values, &format!("{path}{{}}"), out);
    }
}

#[test]
fn checked_in_crds_match_the_generated_ones() {
    let dir = root().join("crds");
    let fix = "run `cargo run -- crds --out crds/` and commit the result";
    let crds = generated();
    for crd in &crds {
        let path = dir.join(&crd.file_name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == crd.to_yaml().unwrap(),
            "{} differs from the generated CRD: {fix}",
            path.display()
        );
    }
    let expected: Vec<&str> = crds.iter().map(|c| c.file_name.as_str()).collect();
    for path in yaml_files(&dir) {
        assert!(
            expected.contains(&file_name(&path).as_str()),
            "{} is not generated any more: {fix}",
            path.display()
        );
    }
}

#[test]
fn every_istio_kind_pilotfish_reads_has_a_crd() {
    for kind in Kind::ALL {
        if kind.group_versions().0.ends_with(".istio.io") {
            assert!(crd::find(kind).is_some(), "no CRD for {kind}");
        }
    }
}

#[test]
fn metadata_names_and_versions_equal_istios() {
    let crds = generated();
    for (file, fixture) in upstream() {
        let Some(ours) = crds.iter().find(|c| c.file_name == file) else {
            assert!(
                PENDING.contains(&file.as_str()),
                "no CRD generated for {file}"
            );
            continue;
        };
        assert!(
            !PENDING.contains(&file.as_str()),
            "{file} is generated now: remove it from PENDING"
        );
        let mut theirs = fixture.clone();
        let schema = theirs.as_object_mut().unwrap().remove("schema").unwrap();
        let mut mine = ours.definition.clone();
        for v in mine["spec"]["versions"].as_array_mut().unwrap() {
            v.as_object_mut().unwrap().remove("schema");
        }
        assert_eq!(
            mine, theirs,
            "{file}: metadata, names or versions differ from Istio's"
        );
        for s in schemas(ours) {
            assert_eq!(
                s.get("required").cloned().unwrap_or(Value::Array(vec![])),
                schema["required"],
                "{file}: root required"
            );
            assert_eq!(
                s["properties"]["spec"]["description"], schema["specDescription"],
                "{file}: spec description"
            );
        }
    }
}

#[test]
fn every_schema_is_structural() {
    for crd in generated() {
        for (i, schema) in schemas(&crd).into_iter().enumerate() {
            let violations: Vec<String> = structural::violations(schema)
                .iter()
                .map(ToString::to_string)
                .collect();
            assert!(
                violations.is_empty(),
                "{} version {i}: not structural:\n{}",
                crd.file_name,
                violations.join("\n")
            );
        }
    }
}

#[test]
fn every_version_has_the_same_schema() {
    for crd in generated() {
        let all = schemas(&crd);
        assert!(
            all.iter().all(|s| *s == all[0]),
            "{}: versions differ",
            crd.file_name
        );
    }
}

/// A field Istio's CRD keeps but ours lacks is pruned on `kubectl apply`: every upstream path
/// must exist in ours with the same type, and every upstream enum value must be accepted.
#[test]
fn property_tree_covers_istios() {
    let crds = generated();
    let mut gaps = Vec::new();
    for (file, fixture) in upstream() {
        let Some(ours) = crds.iter().find(|c| c.file_name == file) else {
            continue;
        };
        let mut mine = BTreeMap::new();
        property_paths(&schemas(ours)[0]["properties"]["spec"], "spec", &mut mine);
        for (path, theirs) in fixture["schema"]["properties"].as_object().unwrap() {
            let Some(node) = mine.get(path) else {
                gaps.push((file.clone(), path.clone(), "missing".to_string()));
                continue;
            };
            for flag in [
                "type",
                "x-kubernetes-int-or-string",
                "x-kubernetes-preserve-unknown-fields",
            ] {
                if theirs.get(flag) != node.get(flag) {
                    gaps.push((
                        file.clone(),
                        path.clone(),
                        format!(
                            "{flag} {:?}, Istio's {:?}",
                            node.get(flag),
                            theirs.get(flag)
                        ),
                    ));
                }
            }
            let accepted = node.get("enum").and_then(Value::as_array);
            for value in theirs
                .get("enum")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if accepted.is_some_and(|a| !a.contains(value)) {
                    gaps.push((
                        file.clone(),
                        format!("{path}={}", value.as_str().unwrap_or_default()),
                        "enum value refused".into(),
                    ));
                }
            }
        }
    }
    let unexpected: Vec<String> = gaps
        .iter()
        .filter(|(f, p, _)| !ALLOWED_GAPS.iter().any(|(af, ap, _)| af == f && ap == p))
        .map(|(f, p, why)| format!("{f}: {p}: {why}"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "fields Istio's CRDs keep and ours would prune or refuse:\n{}",
        unexpected.join("\n")
    );
    for (f, p, _) in ALLOWED_GAPS {
        assert!(
            gaps.iter().any(|(gf, gp, _)| gf == f && gp == p),
            "{f}: {p} is no gap any more: remove it from ALLOWED_GAPS"
        );
    }
}

/// Objects in Istio's examples that Istio's own CRDs refuse, with what our schema says of them.
const REFUSED_UPSTREAM: &[(&str, &str)] = &[
    (
        "rule-websocket-route.yaml",
        "VirtualService \"websocket-route\": spec.http[0].websocketUpgrade: unknown field, pruned",
    ),
    (
        "rule-websocket-route.yaml",
        "VirtualService \"websocket-route2\": spec.http[0].websocketUpgrade: unknown field, pruned",
    ),
];

/// Istio's valid examples and everyday config pass our schema whole (nothing pruned, nothing
/// refused) and type-check without unknown-field warnings.
#[test]
fn istio_examples_are_accepted_without_pruning() {
    let crds = generated();
    let mut checked = 0;
    let mut problems = Vec::new();
    for dir in ["validation", "config-corpus"] {
        for path in yaml_files(&fixtures().join("examples").join(dir)) {
            let name = file_name(&path);
            let docs: Vec<Value> =
                serde_saphyr::from_multiple(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let (mut schema_issues, mut parse_issues) = (Vec::new(), Vec::new());
            for doc in docs.into_iter().filter(|d| !d.is_null()) {
                let (api_version, kind) = (
                    doc["apiVersion"].as_str().unwrap_or_default(),
                    doc["kind"].as_str().unwrap_or_default(),
                );
                let Some(crd) = crds
                    .iter()
                    .find(|c| c.definition["spec"]["names"]["kind"] == kind)
                else {
                    continue;
                };
                let object = format!("{kind} {}", doc["metadata"]["name"]);
                let at = format!("{name}: {object}");
                let (group, version) = api_version.split_once('/').unwrap();
                assert_eq!(crd.definition["spec"]["group"], group, "{at}");
                let versions = crd.definition["spec"]["versions"].as_array().unwrap();
                let Some(served) = versions.iter().find(|v| v["name"] == version) else {
                    panic!("{at}: {api_version} is not served by our CRD");
                };
                let schema = &served["schema"]["openAPIV3Schema"];
                if let Some(spec) = doc.get("spec") {
                    schema_issues.extend(
                        admission::check(&schema["properties"]["spec"], spec, "spec")
                            .iter()
                            .map(|i| format!("{object}: {i}")),
                    );
                }
                match parse_object(doc.clone()) {
                    Ok(Some((_, warnings))) => parse_issues
                        .extend(warnings.iter().map(|w| format!("{at}: parse warning: {w}"))),
                    Ok(None) => parse_issues.push(format!("{at}: ignored by the parser")),
                    Err(e) => parse_issues.push(format!("{at}: parse error: {e}")),
                }
                checked += 1;
            }
            let expected: Vec<String> = REFUSED_UPSTREAM
                .iter()
                .filter(|(f, _)| *f == name)
                .map(|(_, p)| p.to_string())
                .collect();
            if schema_issues != expected {
                problems.push(format!(
                    "{name}: schema: {schema_issues:?}, expected {expected:?}"
                ));
            }
            if expected.is_empty() && !parse_issues.is_empty() {
                problems.extend(parse_issues);
            }
        }
    }
    assert!(
        problems.is_empty(),
        "examples our CRDs or types would change or refuse:\n{}",
        problems.join("\n")
    );
    assert!(
        checked >= 80,
        "only {checked} example objects of our kinds were checked"
    );
}

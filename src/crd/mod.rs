//! Istio-compatible CustomResourceDefinitions, generated from pilotfish's spec types.
//!
//! A cluster can run pilotfish on Istio's CRDs or on these, and switch between the two: same
//! group, names, versions, printer columns, and a structural schema built from the Rust types,
//! so that the API server keeps (does not prune) exactly the fields pilotfish understands.
//! `pilotfish crds` prints them; `crds/` holds them, pinned by `tests/crds.rs`.

pub mod admission;
mod kinds;
pub mod rewrite;
pub mod structural;

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

use crate::config::Kind;
pub use kinds::{Column, CrdKind, KINDS, find};
pub use rewrite::RewriteError;

/// Why a CRD could not be generated or written. Each names the kind or the file.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("CRD for {kind}: spec schema: {source}")]
    Schema { kind: Kind, source: RewriteError },
    #[error("CRD for {kind}: not a valid CustomResourceDefinition: {source}")]
    Malformed {
        kind: Kind,
        source: serde_json::Error,
    },
    #[error("CRD for {kind}: cannot write YAML: {message}")]
    Yaml { kind: Kind, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One generated CRD.
#[derive(Debug, Clone, PartialEq)]
pub struct Crd {
    pub kind: Kind,
    /// `<group>_<plural>.yaml`, the file `crds/` keeps it in.
    pub file_name: String,
    pub definition: Value,
}

/// The first line of every generated file.
pub const HEADER: &str =
    "# Generated from pilotfish's Rust types by `pilotfish crds --out crds/`. Do not edit.\n";

/// Every CRD, ordered by file name (group, then plural), as Istio's `crd-all.gen.yaml` orders them.
pub fn generate() -> Result<Vec<Crd>, CrdError> {
    let mut crds = KINDS.iter().map(crd).collect::<Result<Vec<_>, _>>()?;
    crds.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    Ok(crds)
}

/// The CRD of one kind.
pub fn crd(k: &CrdKind) -> Result<Crd, CrdError> {
    let (group, versions) = k.kind.group_versions();
    let raw = Value::from((k.spec_schema)());
    let mut spec = rewrite::structural(&raw).map_err(|source| CrdError::Schema {
        kind: k.kind,
        source,
    })?;
    if let Value::Object(spec) = &mut spec {
        spec.insert("description".into(), json!(k.description));
    }
    let mut root = json!({
        "type": "object",
        "properties": {
            "spec": spec,
            // pilotfish writes status the way istiod does; the API server need not check it.
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        },
    });
    if k.spec_required {
        root["required"] = json!(["spec"]);
    }
    let mut names: Vec<&str> = versions.to_vec();
    names.sort_unstable();
    let versions: Vec<Value> = names.iter().map(|v| version(k, v, &root)).collect();
    let kind = k.kind.name();
    let mut labels =
        json!({"app": "istio-pilot", "chart": "istio", "heritage": "Tiller", "release": "istio"});
    if let Some(area) = group
        .strip_suffix(".istio.io")
        .filter(|a| *a != "networking")
    {
        labels["istio"] = json!(area);
    }
    let mut names_json = json!({
        "categories": ["istio-io", group.replace('.', "-")],
        "kind": kind,
        "listKind": format!("{kind}List"),
        "plural": k.plural,
        "singular": kind.to_lowercase(),
    });
    if !k.short_names.is_empty() {
        names_json["shortNames"] = json!(k.short_names);
    }
    let definition = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            // Helm must not delete the CRDs (and with them every Istio object) on uninstall.
            "annotations": {"helm.sh/resource-policy": "keep"},
            "labels": labels,
            "name": format!("{}.{group}", k.plural),
        },
        "spec": {
            "group": group,
            "names": names_json,
            "scope": "Namespaced",
            "versions": versions,
        },
    });
    // The typed CRD of k8s-openapi refuses a misspelt or mistyped field.
    serde_json::from_value::<CustomResourceDefinition>(definition.clone()).map_err(|source| {
        CrdError::Malformed {
            kind: k.kind,
            source,
        }
    })?;
    Ok(Crd {
        kind: k.kind,
        file_name: format!("{group}_{}.yaml", k.plural),
        definition,
    })
}

fn version(k: &CrdKind, name: &str, schema: &Value) -> Value {
    let mut v = json!({
        "name": name,
        "schema": {"openAPIV3Schema": schema},
        "served": true,
        "storage": name == k.storage_version,
        "subresources": {"status": {}},
    });
    if !k.columns.is_empty() {
        let columns: Vec<Value> = k
            .columns
            .iter()
            .map(|c| json!({"description": c.description, "jsonPath": c.json_path, "name": c.name, "type": c.type_}))
            .collect();
        v["additionalPrinterColumns"] = Value::Array(columns);
    }
    v
}

impl Crd {
    /// The file's content: the header, then the CRD as YAML.
    pub fn to_yaml(&self) -> Result<String, CrdError> {
        let yaml = serde_saphyr::to_string(&self.definition).map_err(|e| CrdError::Yaml {
            kind: self.kind,
            message: e.to_string(),
        })?;
        Ok(format!("{HEADER}{yaml}"))
    }
}

/// All CRDs as one multi-document YAML stream (what `pilotfish crds` prints).
pub fn to_multi_document(crds: &[Crd]) -> Result<String, CrdError> {
    let mut out = String::new();
    for crd in crds {
        out.push_str("---\n");
        out.push_str(&crd.to_yaml()?);
    }
    Ok(out)
}

/// Writes each CRD to `dir/<file_name>`, creating `dir`; returns the paths written.
pub fn write_dir(dir: &Path, crds: &[Crd]) -> Result<Vec<PathBuf>, CrdError> {
    std::fs::create_dir_all(dir).map_err(|source| CrdError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for crd in crds {
        let path = dir.join(&crd.file_name);
        std::fs::write(&path, crd.to_yaml()?).map_err(|source| CrdError::Io {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd_of(kind: Kind) -> Crd {
        crd(find(kind).unwrap()).unwrap()
    }

    #[test]
    fn every_version_is_served_and_one_is_stored() {
        for k in KINDS {
            let c = crd(k).unwrap();
            let versions = c.definition["spec"]["versions"].as_array().unwrap();
            assert!(
                versions.iter().all(|v| v["served"] == json!(true)),
                "{}",
                c.file_name
            );
            let stored: Vec<&Value> = versions
                .iter()
                .filter(|v| v["storage"] == json!(true))
                .map(|v| &v["name"])
                .collect();
            assert_eq!(stored, [&json!(k.storage_version)], "{}", c.file_name);
        }
    }

    #[test]
    fn names_follow_istio() {
        let c = crd_of(Kind::VirtualService);
        assert_eq!(c.file_name, "networking.istio.io_virtualservices.yaml");
        assert_eq!(
            c.definition["metadata"]["name"],
            "virtualservices.networking.istio.io"
        );
        assert_eq!(c.definition["spec"]["names"]["shortNames"], json!(["vs"]));
        assert_eq!(
            c.definition["spec"]["names"]["categories"],
            json!(["istio-io", "networking-istio-io"])
        );
        assert!(c.definition["metadata"]["labels"].get("istio").is_none());
        assert!(
            crd_of(Kind::Sidecar).definition["spec"]["names"]
                .get("shortNames")
                .is_none()
        );
    }

    #[test]
    fn spec_is_typed_and_status_is_kept_whole() {
        let c = crd_of(Kind::Gateway);
        let schema = &c.definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert_eq!(
            schema["properties"]["spec"]["properties"]["selector"],
            json!({"type": "object", "additionalProperties": {"type": "string"}})
        );
        assert_eq!(
            schema["properties"]["status"]["x-kubernetes-preserve-unknown-fields"],
            json!(true)
        );
        assert!(schema.get("required").is_none());
        let se = crd_of(Kind::ServiceEntry);
        assert_eq!(
            se.definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["required"],
            json!(["spec"])
        );
    }

    #[test]
    fn yaml_reads_back_as_the_same_crd() {
        let crds = generate().unwrap();
        let text = to_multi_document(&crds).unwrap();
        assert!(text.starts_with("---\n# Generated"));
        for (doc, crd) in text.split("---\n").skip(1).zip(&crds) {
            let back: Value = serde_saphyr::from_str(doc).unwrap();
            assert_eq!(back, crd.definition, "{}", crd.file_name);
        }
    }

    #[test]
    fn writes_one_file_per_kind() {
        let dir = tempfile::tempdir().unwrap();
        let crds = generate().unwrap();
        let written = write_dir(&dir.path().join("crds"), &crds).unwrap();
        assert_eq!(written.len(), KINDS.len());
        let text = std::fs::read_to_string(&written[0]).unwrap();
        assert_eq!(text, crds[0].to_yaml().unwrap());
    }
}

//! Manifests (YAML or JSON, many documents per file, `kind: List` too) into typed objects.
//!
//! A file whose YAML does not parse fails as a whole, so the caller can keep its last good
//! objects. A document that parses but does not type-check is one rejected object; the other
//! documents of the file are still read. Unknown fields are warnings, as kubectl reports them.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Kind, Meta, Object, ObjectKey, Spec, kube};
use crate::diagnostic::{Diagnostic, Origin};

/// An object read from a file, with where it came from. Shared, so re-reading a directory
/// hands the store the same `Arc` for every object of an unchanged file.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub object: std::sync::Arc<Object>,
    pub origin: Origin,
}

/// What a file gave: its objects, and diagnostics about documents that were rejected or warned.
#[derive(Debug, Default)]
pub struct Parsed {
    pub objects: Vec<Located>,
    pub diagnostics: Vec<Diagnostic>,
}

/// The file as a whole could not be read as YAML/JSON.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct SyntaxError {
    pub origin: Origin,
    pub message: String,
}

/// Kinds that commonly sit beside Istio config (the Bookinfo manifests have Deployments and
/// ServiceAccounts) and that pilotfish does not need: skipped without a word.
const IGNORED_KINDS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "Endpoints",
];

/// Istio kinds pilotfish reads but does not serve yet: a warning, not an error.
const NOT_YET_SERVED: &[&str] = &["EnvoyFilter", "WorkloadGroup", "ProxyConfig", "WasmPlugin"];

/// Splits a stream into YAML documents at `---` lines, returning each with its first line.
/// A `---` at column 0 always ends a document in YAML, even inside a block scalar.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_marker || line.trim_end() == "..." {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
            if let Some(rest) = line
                .strip_prefix("---")
                .map(str::trim)
                .filter(|r| !r.is_empty() && is_marker)
            {
                // `--- {inline: doc}`
                current.push_str(rest);
                current.push('\n');
                start = i + 1;
            }
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((start, current));
    docs
}

/// Reads every document of a file's text. `file` only labels diagnostics.
pub fn parse_text(file: &str, text: &str) -> Result<Parsed, SyntaxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let is_json = file.ends_with(".json") || text.trim_start().starts_with('{');
    let mut values = Vec::new();
    if is_json {
        let origin = Origin {
            file: file.to_string(),
            document: 0,
            line: 1,
        };
        let v: Value = serde_json::from_str(text).map_err(|e| SyntaxError {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        values.push((origin, v));
    } else {
        let mut index = 0;
        for (line, doc) in split_documents(text) {
            if doc.lines().all(|l| {
                let t = l.trim();
                t.is_empty() || t.starts_with('#') || t.starts_with('%')
            }) {
                continue;
            }
            // Point at the first line with content, not at blank lines or comments before it.
            let skipped = doc
                .lines()
                .take_while(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
                .count();
            let origin = Origin {
                file: file.to_string(),
                document: index,
                line: line + skipped,
            };
            index += 1;
            let v: Value = serde_saphyr::from_str(&doc).map_err(|e| SyntaxError {
                origin: origin.clone(),
                message: format!("invalid YAML: {}", first_line(&e.to_string())),
            })?;
            if !v.is_null() {
                values.push((origin, v));
            }
        }
    }
    let mut parsed = Parsed::default();
    for (origin, value) in values {
        parse_document(value, &origin, &mut parsed);
    }
    Ok(parsed)
}

pub(crate) fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_string()
}

fn parse_document(value: Value, origin: &Origin, out: &mut Parsed) {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind == "List" || kind.ends_with("List") && value.get("items").is_some() {
        if let Some(Value::Array(items)) = value.get("items") {
            for item in items.clone() {
                parse_document(item, origin, out);
            }
        }
        return;
    }
    match parse_object(value) {
        Ok(None) => {}
        Ok(Some((object, warnings))) => {
            let key = object.key();
            out.diagnostics
                .extend(warnings.into_iter().map(|d| d.at(Some(origin)).on(&key)));
            out.objects.push(Located {
                object: std::sync::Arc::new(object),
                origin: origin.clone(),
            });
        }
        Err(d) => out.diagnostics.push(d.at(Some(origin))),
    }
}

/// Types one manifest. `Ok(None)` for kinds pilotfish deliberately ignores; warnings come with
/// the object (unknown fields, kinds not served yet).
pub fn parse_object(value: Value) -> Result<Option<(Object, Vec<Diagnostic>)>, Diagnostic> {
    let Value::Object(map) = &value else {
        return Err(Diagnostic::error(
            "",
            "a manifest must be a mapping with apiVersion and kind",
        ));
    };
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind_name = map.get("kind").and_then(Value::as_str).unwrap_or_default();
    if api_version.is_empty() || kind_name.is_empty() {
        return Err(Diagnostic::error(
            if api_version.is_empty() {
                "apiVersion"
            } else {
                "kind"
            },
            "is required",
        ));
    }
    let meta = parse_meta(map.get("metadata"))?;
    let Some(kind) = Kind::from_type_meta(api_version, kind_name) else {
        if IGNORED_KINDS.contains(&kind_name) {
            return Ok(None);
        }
        let key = format!("{kind_name} {}/{}", meta.namespace, meta.name);
        let served = Kind::ALL.iter().find(|k| k.name() == kind_name);
        return if let Some(k) = served {
            let (group, versions) = k.group_versions();
            let expected = versions
                .iter()
                .map(|v| api_id(group, v))
                .collect::<Vec<_>>()
                .join(", ");
            Err(Diagnostic::error(
                "apiVersion",
                format!("{key}: {api_version:?} does not serve {kind_name}; use one of {expected}"),
            ))
        } else if NOT_YET_SERVED.contains(&kind_name) && api_version.contains(".istio.io/") {
            Err(Diagnostic::warning(
                "kind",
                format!("{key}: {kind_name} is not served by pilotfish yet; ignored"),
            ))
        } else {
            Err(Diagnostic::error(
                "kind",
                format!("{key}: unknown kind {kind_name:?} ({api_version})"),
            ))
        };
    };
    let key = ObjectKey {
        kind,
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
    };
    if meta.name.is_empty() {
        return Err(Diagnostic::error(
            "metadata.name",
            format!("{kind_name}: is required"),
        ));
    }
    let mut warnings = Vec::new();
    let result = match kind {
        Kind::Gateway => istio_spec(map, &mut warnings).map(Spec::Gateway),
        Kind::VirtualService => istio_spec(map, &mut warnings).map(Spec::VirtualService),
        Kind::DestinationRule => istio_spec(map, &mut warnings).map(Spec::DestinationRule),
        Kind::ServiceEntry => istio_spec(map, &mut warnings).map(Spec::ServiceEntry),
        Kind::WorkloadEntry => istio_spec(map, &mut warnings).map(Spec::WorkloadEntry),
        Kind::Sidecar => istio_spec(map, &mut warnings).map(Spec::Sidecar),
        Kind::Service => {
            kube_object::<k8s_openapi::api::core::v1::Service>(value.clone(), &mut warnings)
        }
        Kind::EndpointSlice => kube_object::<k8s_openapi::api::discovery::v1::EndpointSlice>(
            value.clone(),
            &mut warnings,
        ),
        Kind::Pod => pod(value.clone(), &mut warnings),
        Kind::Namespace => Ok(Spec::Namespace),
        Kind::ConfigMap => {
            kube_object::<k8s_openapi::api::core::v1::ConfigMap>(value.clone(), &mut warnings)
        }
        Kind::PeerAuthentication => istio_spec(map, &mut warnings).map(Spec::PeerAuthentication),
        Kind::AuthorizationPolicy => istio_spec(map, &mut warnings).map(Spec::AuthorizationPolicy),
        Kind::RequestAuthentication => {
            istio_spec(map, &mut warnings).map(Spec::RequestAuthentication)
        }
        Kind::Telemetry => istio_spec(map, &mut warnings).map(Spec::Telemetry),
        Kind::Secret => {
            kube_object::<k8s_openapi::api::core::v1::Secret>(value.clone(), &mut warnings)
        }
    };
    let spec = result.map_err(|d| d.on(&key))?;
    let mut meta = meta;
    if !kind.is_namespaced() {
        meta.namespace.clear();
    }
    Ok(Some((Object { meta, spec }, warnings)))
}

fn api_id(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

fn parse_meta(meta: Option<&Value>) -> Result<Meta, Diagnostic> {
    let Some(meta) = meta else {
        return Err(Diagnostic::error("metadata", "is required"));
    };
    let string = |k: &str| {
        meta.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let map = |k: &str| -> Result<_, Diagnostic> {
        match meta.get(k) {
            None | Some(Value::Null) => Ok(Default::default()),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
                Diagnostic::error(
                    format!("metadata.{k}"),
                    format!("must be a map of strings: {e}"),
                )
            }),
        }
    };
    let namespace = string("namespace");
    Ok(Meta {
        name: string("name"),
        namespace: if namespace.is_empty() {
            "default".into()
        } else {
            namespace
        },
        labels: map("labels")?,
        annotations: map("annotations")?,
        resource_version: string("resourceVersion"),
        generation: meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or_default(),
    })
}

/// Deserializes `value` into `T`, reporting the path of a type error and of every unknown field.
fn typed<T: DeserializeOwned>(
    value: Value,
    prefix: &str,
    warnings: &mut Vec<Diagnostic>,
) -> Result<T, Diagnostic> {
    let mut unknown: Vec<String> = Vec::new();
    let mut track = |path: serde_ignored::Path<'_>| unknown.push(field_path(&path));
    let de = serde_ignored::Deserializer::new(value, &mut track);
    let result = serde_path_to_error::deserialize::<_, T>(de);
    let join = |p: &str| match (prefix.is_empty(), p.is_empty() || p == ".") {
        (_, true) => prefix.to_string(),
        (true, false) => p.to_string(),
        (false, false) => format!("{prefix}.{p}"),
    };
    for path in unknown {
        warnings.push(Diagnostic::warning(join(&path), "unknown field (ignored)"));
    }
    result.map_err(|e| Diagnostic::error(join(&e.path().to_string()), e.inner().to_string()))
}

/// Formats an ignored field's path as kubectl does: `http[0].colour`.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => {
            let p = field_path(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

fn istio_spec<T: DeserializeOwned>(
    map: &serde_json::Map<String, Value>,
    warnings: &mut Vec<Diagnostic>,
) -> Result<T, Diagnostic> {
    let spec = map
        .get("spec")
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    typed(spec, "spec", warnings)
}

/// Without the envelope fields that the typed structs do not carry.
fn without_envelope(mut value: Value) -> Value {
    if let Value::Object(m) = &mut value {
        m.remove("apiVersion");
        m.remove("kind");
    }
    value
}

fn kube_object<T>(value: Value, warnings: &mut Vec<Diagnostic>) -> Result<Spec, Diagnostic>
where
    T: DeserializeOwned,
    Object: TryFrom<T, Error = kube::ConvertError>,
{
    let typed_obj: T = typed(without_envelope(value), "", warnings)?;
    Object::try_from(typed_obj)
        .map(|o| o.spec)
        .map_err(|e| Diagnostic::error(e.field, e.message))
}

/// A Pod is checked against the full `k8s-openapi` Pod, so unknown and mistyped fields are
/// reported as kubectl reports them, then read as the watcher reads Pods ([`kube::SlimPod`]):
/// one conversion for both sources. The fields the slim type skips are not news, so its own
/// ignored-field warnings are dropped.
fn pod(value: Value, warnings: &mut Vec<Diagnostic>) -> Result<Spec, Diagnostic> {
    let value = without_envelope(value);
    typed::<k8s_openapi::api::core::v1::Pod>(value.clone(), "", warnings)?;
    kube_object::<kube::SlimPod>(value, &mut Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::Severity;

    const FILE: &str = r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 100
    colour: blue
---
# a comment-only document
---
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: bookinfo
spec:
  selector: {app: reviews}
  ports:
  - name: http
    port: 9080
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1}
"#;

    #[test]
    fn reads_many_documents_and_warns_on_unknown_fields() {
        let parsed = parse_text("bookinfo.yaml", FILE).unwrap();
        assert_eq!(parsed.objects.len(), 2);
        let vs = &parsed.objects[0];
        assert_eq!(
            vs.object.key().to_string(),
            "VirtualService default/reviews"
        );
        assert_eq!(vs.origin.line, 2);
        let svc = &parsed.objects[1];
        assert_eq!(svc.object.key().to_string(), "Service bookinfo/reviews");
        assert_eq!(svc.origin.document, 1);
        let [warning] = &parsed.diagnostics[..] else {
            panic!("{:?}", parsed.diagnostics)
        };
        assert_eq!(warning.severity, Severity::Warning);
        assert_eq!(warning.field, "spec.http[0].colour");
        assert!(warning.to_string().contains("bookinfo.yaml:2"), "{warning}");
    }

    #[test]
    fn a_type_error_rejects_one_object_and_names_the_field() {
        let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  http:\n  - route:\n    - weight: lots\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec: {}\n";
        let parsed = parse_text("f.yaml", text).unwrap();
        assert_eq!(parsed.objects.len(), 1);
        let [err] = &parsed.diagnostics[..] else {
            panic!("{:?}", parsed.diagnostics)
        };
        assert!(err.is_error());
        assert_eq!(err.field, "spec.http[0].route[0].weight");
        assert_eq!(err.object.as_ref().map(|k| k.name.as_str()), Some("a"));
    }

    #[test]
    fn broken_yaml_fails_the_file() {
        let err = parse_text("f.yaml", "apiVersion: v1\nkind: [unclosed\n").unwrap_err();
        assert_eq!(err.origin.file, "f.yaml");
        assert!(err.message.starts_with("invalid YAML"), "{}", err.message);
    }

    #[test]
    fn unknown_kinds_and_versions_are_errors() {
        let parsed = parse_text(
            "f.yaml",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n---\napiVersion: networking.istio.io/v2\nkind: Gateway\nmetadata: {name: g}\n",
        )
        .unwrap();
        assert!(parsed.objects.is_empty());
        assert_eq!(parsed.diagnostics.len(), 2);
        assert!(
            parsed.diagnostics[0]
                .message
                .contains("unknown kind \"Widget\"")
        );
        assert!(
            parsed.diagnostics[1]
                .message
                .contains("networking.istio.io/v1")
        );
    }

    #[test]
    fn security_and_telemetry_kinds_and_secrets_are_typed() {
        let text = concat!(
            "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n---\n",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all}\nspec: {}\n---\n",
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt}\nspec: {jwtRules: [{issuer: a}]}\n---\n",
            "apiVersion: telemetry.istio.io/v1alpha1\nkind: Telemetry\nmetadata: {name: mesh}\nspec: {accessLogging: [{providers: [{name: envoy}]}]}\n---\n",
            // "CERT" and "KEY" in base64; `password` is not a credential key and is dropped.
            "apiVersion: v1\nkind: Secret\nmetadata: {name: cert}\ntype: kubernetes.io/tls\n",
            "data: {tls.crt: Q0VSVA==, password: aHVudGVyMg==}\nstringData: {tls.key: KEY}\n",
        );
        let parsed = parse_text("f.yaml", text).unwrap();
        assert!(parsed.diagnostics.is_empty(), "{:#?}", parsed.diagnostics);
        let kinds: Vec<Kind> = parsed.objects.iter().map(|o| o.object.kind()).collect();
        assert_eq!(
            kinds,
            [
                Kind::PeerAuthentication,
                Kind::AuthorizationPolicy,
                Kind::RequestAuthentication,
                Kind::Telemetry,
                Kind::Secret
            ]
        );
        let Some(secret) = parsed.objects[4].object.spec::<kube::Secret>() else {
            panic!("not a Secret")
        };
        assert_eq!(
            secret.data.get("tls.crt").map(Vec::as_slice),
            Some(&b"CERT"[..])
        );
        assert_eq!(
            secret.data.get("tls.key").map(Vec::as_slice),
            Some(&b"KEY"[..])
        );
        assert!(!secret.data.contains_key("password"));
        let bad = parse_text(
            "f.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: c}\ndata: {tls.crt: \"not base64!\"}\n",
        )
        .unwrap();
        assert!(bad.objects.is_empty());
        assert_eq!(bad.diagnostics[0].field, "data.tls.crt");
    }

    #[test]
    fn pods_are_checked_in_full_and_read_slim() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns}\nspec:\n  containers:\n  - {name: c, image: i, env: [{name: A, value: b}], prots: []}\n  - name: d\n    ports: [{containerPort: 8080, name: http}]\nstatus: {podIP: 10.0.0.1}\n";
        let parsed = parse_text("pod.yaml", text).unwrap();
        // Only the misspelt field is news: what the slim Pod skips (image, env) is not.
        let [warning] = &parsed.diagnostics[..] else {
            panic!("{:#?}", parsed.diagnostics)
        };
        assert_eq!(
            (warning.severity, warning.field.as_str()),
            (Severity::Warning, "spec.containers[0].prots")
        );
        let Some(pod) = parsed.objects[0].object.spec::<kube::Pod>() else {
            panic!("not a Pod")
        };
        assert_eq!(pod.ips, ["10.0.0.1"]);
        assert_eq!(
            pod.container_ports,
            [kube::ContainerPort {
                name: "http".into(),
                port: 8080,
                protocol: "TCP".into()
            }]
        );

        // A field pilotfish does not read is still type-checked, and a bad port still names its field.
        for (spec, field) in [
            (
                "{containers: [{name: c, image: [i]}]}",
                "spec.containers[0].image",
            ),
            (
                "{containers: [{name: c, ports: [{containerPort: 0}]}]}",
                "spec.containers[0].ports[0].containerPort",
            ),
        ] {
            let bad = parse_text(
                "pod.yaml",
                &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec: {spec}\n"),
            )
            .unwrap();
            assert!(bad.objects.is_empty());
            let [err] = &bad.diagnostics[..] else {
                panic!("{:#?}", bad.diagnostics)
            };
            assert!(err.is_error());
            assert_eq!(err.field, field);
        }
    }

    #[test]
    fn json_and_lists() {
        let text = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"bookinfo","labels":{"a":"b"}}}]}"#;
        let parsed = parse_text("ns.json", text).unwrap();
        assert_eq!(parsed.objects.len(), 1);
        assert_eq!(
            parsed.objects[0].object.key().to_string(),
            "Namespace bookinfo"
        );
    }
}

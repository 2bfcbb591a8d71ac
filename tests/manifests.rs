//! `manifests/`: every object parses as its Kubernetes type with no unknown field; the webhook
//! covers exactly the Istio kinds pilotfish serves; the Service is istiod's; the Deployment's
//! probes and ports agree with its flags (and the flags exist); RBAC grants exactly the API
//! calls `pilotfish::rbac` declares.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use pilotfish::config::Kind;
use pilotfish::rbac::{self, Scope};
use serde::de::DeserializeOwned;
use serde_json::Value;

const NAMESPACE: &str = "istio-system";

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

/// Every object of every YAML file under manifests/ except kustomize's own, with its file.
fn objects() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests_dir().join("istiod"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in text.split("\n---\n") {
            let value: Value =
                serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if !value.is_null() {
                out.push((
                    file.file_name().unwrap().to_string_lossy().into_owned(),
                    value,
                ));
            }
        }
    }
    out
}

/// Deserializes `value` as `T`, failing on any field `T` does not have (a typo is otherwise
/// silently dropped by the API server's typed decoding, or rejected by `kubectl --validate`).
fn typed<T: DeserializeOwned>(file: &str, value: &Value) -> T {
    let mut unknown = Vec::new();
    let typed = serde_ignored::deserialize(value.clone(), |path| unknown.push(path.to_string()))
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let unknown: Vec<_> = unknown
        .into_iter()
        .filter(|p| p != "apiVersion" && p != "kind")
        .collect();
    assert!(unknown.is_empty(), "{file}: unknown fields {unknown:?}");
    typed
}

fn one<T: DeserializeOwned>(kind: &str) -> T {
    let all = all_of::<T>(kind);
    assert_eq!(all.len(), 1, "expected one {kind}");
    all.into_iter().next().unwrap()
}

fn all_of<T: DeserializeOwned>(kind: &str) -> Vec<T> {
    objects()
        .iter()
        .filter(|(_, v)| v["kind"] == kind)
        .map(|(file, v)| typed(file, v))
        .collect()
}

#[test]
fn every_object_is_a_known_kind_with_known_fields() {
    let objects = objects();
    for (file, value) in &objects {
        match value["kind"].as_str().unwrap_or_default() {
            "Namespace" => drop(typed::<Namespace>(file, value)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(file, value)),
            "ClusterRole" => drop(typed::<ClusterRole>(file, value)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(file, value)),
            "Role" => drop(typed::<Role>(file, value)),
            "RoleBinding" => drop(typed::<RoleBinding>(file, value)),
            "Deployment" => drop(typed::<Deployment>(file, value)),
            "Service" => drop(typed::<Service>(file, value)),
            "ValidatingWebhookConfiguration" => {
                drop(typed::<ValidatingWebhookConfiguration>(file, value))
            }
            other => panic!("{file}: unexpected kind {other:?}"),
        }
    }
    // The kustomization lists every file, so `-k` and `-f manifests/istiod/` install the same.
    let kustomization: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(manifests_dir().join("kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let files: BTreeSet<String> = objects.iter().map(|(f, _)| format!("istiod/{f}")).collect();
    assert_eq!(listed, files.iter().map(String::as_str).collect());
}

/// (group, plural resource) of every Istio kind pilotfish serves.
fn istio_resources() -> BTreeSet<(String, String)> {
    Kind::ALL
        .into_iter()
        .filter(|k| k.group_versions().0.ends_with(".istio.io"))
        .map(|k| (k.group_versions().0.to_string(), rbac::resource_name(k)))
        .collect()
}

#[test]
fn the_webhook_covers_exactly_pilotfishs_istio_kinds_and_starts_fail_open() {
    let config: ValidatingWebhookConfiguration = one("ValidatingWebhookConfiguration");
    assert_eq!(
        config.metadata.name.as_deref(),
        Some(pilotfish::webhook::DEFAULT_CONFIG_NAME)
    );
    let webhooks = config.webhooks.unwrap();
    let [webhook] = webhooks.as_slice() else {
        panic!("one webhook expected")
    };
    let service = webhook.client_config.service.as_ref().unwrap();
    assert_eq!(
        (service.name.as_str(), service.namespace.as_str()),
        (pilotfish::webhook::DEFAULT_SERVICE, NAMESPACE)
    );
    assert_eq!(
        (service.path.as_deref(), service.port),
        (Some("/validate"), Some(443))
    );
    assert!(
        webhook.client_config.ca_bundle.is_none(),
        "the leader patches the caBundle in"
    );
    assert_eq!(
        webhook.failure_policy.as_deref(),
        Some("Ignore"),
        "switched to Fail by the leader once served"
    );
    assert_eq!(webhook.side_effects, "None");
    assert_eq!(webhook.admission_review_versions, ["v1"]);
    let rules = webhook.rules.as_ref().unwrap();
    let mut covered = BTreeSet::new();
    for rule in rules {
        assert_eq!(
            rule.operations.as_deref(),
            Some(&["CREATE".to_string(), "UPDATE".to_string()][..])
        );
        assert_eq!(rule.api_versions.as_deref(), Some(&["*".to_string()][..]));
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                covered.insert((group.clone(), resource.clone()));
            }
        }
    }
    assert_eq!(covered, istio_resources());
}

#[test]
fn the_service_is_istiods() {
    let service: Service = one("Service");
    assert_eq!(service.metadata.name.as_deref(), Some("istiod"));
    assert_eq!(service.metadata.namespace.as_deref(), Some(NAMESPACE));
    let ports: Vec<(String, i32, Option<IntOrString>)> = service
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .map(|p| (p.name.unwrap_or_default(), p.port, p.target_port))
        .collect();
    let expected = vec![
        ("grpc-xds".to_string(), 15010, None),
        ("https-dns".to_string(), 15012, None),
        (
            "https-webhook".to_string(),
            443,
            Some(IntOrString::Int(15017)),
        ),
        ("http-monitoring".to_string(), 15014, None),
    ];
    assert_eq!(ports, expected);
}

fn container() -> (Deployment, Container) {
    let deployment: Deployment = one("Deployment");
    let spec = deployment.spec.clone().unwrap().template.spec.unwrap();
    let [container] = spec.containers.as_slice() else {
        panic!("one container expected")
    };
    (deployment, container.clone())
}

/// The port of `--<flag> HOST:PORT` in the container's args.
fn flag_port(container: &Container, flag: &str) -> i32 {
    let args = container.args.as_ref().unwrap();
    let at = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} missing from {args:?}"));
    let address: std::net::SocketAddr = args[at + 1].parse().unwrap();
    i32::from(address.port())
}

#[test]
fn the_deployment_listens_where_the_service_and_probes_point() {
    let (deployment, container) = container();
    assert_eq!(deployment.metadata.namespace.as_deref(), Some(NAMESPACE));
    let container_ports: BTreeSet<i32> = container
        .ports
        .iter()
        .flatten()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(
        container_ports,
        BTreeSet::from([8080, 15010, 15012, 15014, 15017])
    );
    let http = flag_port(&container, "--http-address");
    assert_eq!(flag_port(&container, "--xds-address"), 15010);
    assert_eq!(flag_port(&container, "--webhook-address"), 15017);
    for (which, probe) in [
        ("readiness", &container.readiness_probe),
        ("liveness", &container.liveness_probe),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("no {which} probe"));
        assert_eq!(get.port, IntOrString::Int(http), "{which} probe port");
    }
    let ready = container
        .readiness_probe
        .unwrap()
        .http_get
        .unwrap()
        .path
        .unwrap();
    assert_eq!(ready, "/ready");
    // Every Service port lands on a container port.
    let service: Service = one("Service");
    for port in service.spec.unwrap().ports.unwrap() {
        let target = match port.target_port {
            Some(IntOrString::Int(p)) => p,
            None => port.port,
            Some(other) => panic!("named target ports are not used: {other:?}"),
        };
        assert!(
            container_ports.contains(&target),
            "Service port {} → {target}",
            port.port
        );
    }
}

#[tokio::test]
async fn the_probe_paths_are_served_by_the_status_server() {
    let (_, container) = container();
    let paths: Vec<String> = [&container.readiness_probe, &container.liveness_probe]
        .into_iter()
        .map(|p| {
            p.as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .clone()
                .unwrap()
        })
        .collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (_ready, rx) = tokio::sync::watch::channel(true);
    tokio::spawn(pilotfish::status::serve(
        listener,
        rx,
        std::future::pending(),
    ));
    for path in paths {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
    }
}

#[test]
fn the_deployment_args_are_flags_of_pilotfish_serve() {
    let (_, container) = container();
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_pilotfish"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let args = container.args.unwrap();
    assert_eq!(args[0], "serve");
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(flag.as_str()),
            "`pilotfish serve` has no {flag}:\n{help}"
        );
    }
}

/// (group, resource, verb, scope, resourceNames) granted or used.
type Grant = (String, String, String, Scope, Vec<String>);

fn grants(rules: &[PolicyRule], scope: Scope) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in rules {
        let mut names = rule.resource_names.clone().unwrap_or_default();
        names.sort();
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    assert_ne!(verb, "*", "no wildcard verbs");
                    assert_ne!(resource, "*", "no wildcard resources");
                    out.insert((
                        group.clone(),
                        resource.clone(),
                        verb.clone(),
                        scope,
                        names.clone(),
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn rbac_grants_exactly_the_api_calls_pilotfish_makes() {
    let service_account: ServiceAccount = one("ServiceAccount");
    let account = (
        service_account.metadata.name.unwrap(),
        service_account.metadata.namespace.unwrap(),
    );
    let cluster_role: ClusterRole = one("ClusterRole");
    let role: Role = one("Role");
    assert_eq!(role.metadata.namespace.as_deref(), Some(NAMESPACE));
    // Both roles are bound to the Deployment's ServiceAccount.
    let (deployment, _) = container();
    let pod_account = deployment
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .service_account_name
        .unwrap();
    assert_eq!(pod_account, account.0);
    let cluster_binding: ClusterRoleBinding = one("ClusterRoleBinding");
    assert_eq!(
        cluster_binding.role_ref.name,
        cluster_role.metadata.name.clone().unwrap()
    );
    let binding: RoleBinding = one("RoleBinding");
    assert_eq!(binding.role_ref.name, role.metadata.name.clone().unwrap());
    assert_eq!(binding.metadata.namespace.as_deref(), Some(NAMESPACE));
    for subjects in [cluster_binding.subjects.unwrap(), binding.subjects.unwrap()] {
        let bound: Vec<_> = subjects
            .iter()
            .map(|s| {
                (
                    s.kind.as_str(),
                    s.name.clone(),
                    s.namespace.clone().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            bound,
            [("ServiceAccount", account.0.clone(), account.1.clone())]
        );
    }

    let mut granted = grants(
        cluster_role.rules.as_deref().unwrap_or_default(),
        Scope::Cluster,
    );
    granted.extend(grants(
        role.rules.as_deref().unwrap_or_default(),
        Scope::ControlPlane,
    ));
    let mut used = BTreeSet::new();
    for u in rbac::api_uses() {
        let mut names: Vec<String> = u.names.iter().map(|n| n.to_string()).collect();
        names.sort();
        for verb in u.verbs {
            used.insert((
                u.group.to_string(),
                u.resource.clone(),
                verb.to_string(),
                u.scope,
                names.clone(),
            ));
        }
    }
    let missing: Vec<_> = used.difference(&granted).collect();
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(
        missing.is_empty(),
        "pilotfish makes calls manifests/istiod/20-rbac.yaml does not grant: {missing:#?}"
    );
    assert!(
        unused.is_empty(),
        "manifests/istiod/20-rbac.yaml grants what pilotfish never uses: {unused:#?}"
    );
}

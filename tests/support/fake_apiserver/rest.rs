//! The HTTP surface: discovery documents, and list/watch/get/create/replace/patch/delete on
//! `/api/v1/...` and `/apis/{group}/{version}/...` paths, answered as the real server answers.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::crds;
use super::objects::{self, Part, Place};
use super::openapi;
use super::resources::ResourceType;
use super::select::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Filter, ObjectKey, ReadAt};
use super::watch::{self, WatchStream};
use super::{GoneMode, Shared, lock};

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn json_response(code: StatusCode, value: &Value, content_type: &'static str) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, content_type)],
        value.to_string(),
    )
        .into_response()
}

pub fn error_response(error: &ApiError) -> Response {
    let code = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &error.to_status(), "application/json")
}

fn ok(value: Result<Value, ApiError>, code: StatusCode) -> Response {
    match value {
        Ok(v) => json_response(code, &v, "application/json"),
        Err(e) => error_response(&e),
    }
}

fn no_such_path() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// A request's path resolved against the served resources.
struct Target {
    resource: ResourceType,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

impl Target {
    fn place(&self) -> Place<'_> {
        Place {
            resource: &self.resource,
            version: &self.version,
            namespace: self.namespace.as_deref(),
        }
    }

    fn part(&self) -> Result<Part, ApiError> {
        match self.subresource.as_deref() {
            None => Ok(Part::Main),
            Some("status") => Ok(Part::Status),
            Some(other) => Err(ApiError::new(
                404,
                "NotFound",
                format!("{} has no subresource {other:?}", self.resource.qualified()),
            )),
        }
    }
}

pub struct Request<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
}

impl Request<'_> {
    fn wants_aggregated(&self) -> bool {
        self.headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("as=APIGroupDiscoveryList"))
    }
}

pub fn respond(shared: &Shared, request: Request) -> Response {
    let path = request.uri.path();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let discovery = |value: Option<Value>| match value {
        Some(v) => json_response(StatusCode::OK, &v, "application/json"),
        None => error_response(&no_such_path()),
    };
    let registry = lock(&shared.registry).clone();
    match segments.as_slice() {
        ["api"] if request.wants_aggregated() => {
            json_response(StatusCode::OK, &registry.aggregated(true), AGGREGATED)
        }
        ["api"] => discovery(Some(registry.core_versions(&shared.address.to_string()))),
        ["api", version] => discovery(registry.resource_list("", version)),
        ["apis"] if request.wants_aggregated() => {
            json_response(StatusCode::OK, &registry.aggregated(false), AGGREGATED)
        }
        ["apis"] => discovery(Some(registry.group_list())),
        ["apis", group] => discovery(registry.group(group)),
        ["apis", group, version] => discovery(registry.resource_list(group, version)),
        ["version"] => discovery(Some(openapi::version())),
        ["openapi", "v3"] => discovery(Some(openapi::root(&registry))),
        ["openapi", "v3", "api", version] => {
            discovery(openapi::group_version(&registry, "", version))
        }
        ["openapi", "v3", "apis", group, version] => {
            discovery(openapi::group_version(&registry, group, version))
        }
        ["api", version, rest @ ..] => resolve(&registry, "", version, rest)
            .map_or_else(|e| error_response(&e), |t| serve(shared, &request, t)),
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"]
            if request.method == Method::POST =>
        {
            ok(
                parse_body(request.body).map(|review| token_review(shared, review)),
                StatusCode::CREATED,
            )
        }
        ["apis", group, version, rest @ ..] => resolve(&registry, group, version, rest)
            .map_or_else(|e| error_response(&e), |t| serve(shared, &request, t)),
        _ => error_response(&no_such_path()),
    }
}

fn resolve(
    registry: &super::resources::Registry,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Target, ApiError> {
    let namespaced_collection = |plural: &str| {
        registry
            .by_plural(group, version, plural)
            .is_some_and(|t| t.namespaced)
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, plural, rest @ ..] if namespaced_collection(plural) => (
            Some(namespace.to_string()),
            std::iter::once(*plural)
                .chain(rest.iter().copied())
                .collect::<Vec<_>>(),
        ),
        _ => (None, rest.to_vec()),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return Err(no_such_path()),
    };
    let resource = registry
        .by_plural(group, version, plural)
        .ok_or_else(no_such_path)?;
    // A namespaced object is only addressed in its namespace.
    if resource.namespaced && namespace.is_none() && name.is_some() {
        return Err(no_such_path());
    }
    Ok(Target {
        resource: resource.clone(),
        version: version.to_string(),
        namespace,
        name: name.map(str::to_string),
        subresource: subresource.map(str::to_string),
    })
}

fn serve(shared: &Shared, request: &Request, target: Target) -> Response {
    let query: HashMap<String, String> = axum::extract::Query::try_from_uri(request.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let name = target.name.clone();
    let is_crd = crds::is_crd(&target.resource);
    // A CRD written is served at once; one deleted takes its kind with it.
    let installed = |written: Result<Value, ApiError>| {
        if let Ok(crd) = &written
            && is_crd
        {
            crds::installed(shared, crd);
        }
        written
    };
    match (request.method, name) {
        (&Method::GET, None)
            if matches!(query.get("watch").map(String::as_str), Some("1" | "true")) =>
        {
            start_watch(shared, &target, &query)
        }
        (&Method::GET, None) => match list(shared, &target, &query) {
            Ok(body) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response(),
            Err(e) => error_response(&e),
        },
        (&Method::POST, None) => {
            let result = parse_body(request.body)
                .and_then(|body| objects::create(&mut lock(&shared.store), target.place(), body));
            ok(installed(result), StatusCode::CREATED)
        }
        (&Method::GET, Some(name)) => {
            let result = target.part().and_then(|_| {
                let store = lock(&shared.store);
                let object = store.get(&target.resource.key(), &target.place().key(&name));
                object
                    .map(|o| present(&target, o))
                    .ok_or_else(|| ApiError::not_found(&target.resource.qualified(), &name))
            });
            ok(result, StatusCode::OK)
        }
        (&Method::PUT, Some(name)) => {
            let result = target.part().and_then(|part| {
                let body = parse_body(request.body)?;
                objects::update(
                    &mut lock(&shared.store),
                    target.place(),
                    &name,
                    body,
                    part,
                    true,
                )
                .map(|o| present(&target, &o))
            });
            ok(installed(result), StatusCode::OK)
        }
        (&Method::PATCH, Some(name)) => {
            let content_type = request
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let result = target.part().and_then(|part| {
                objects::patch(
                    &mut lock(&shared.store),
                    target.place(),
                    &name,
                    content_type,
                    request.body,
                    part,
                )
                .map(|o| present(&target, &o))
            });
            ok(installed(result), StatusCode::OK)
        }
        (&Method::DELETE, Some(name)) if target.subresource.is_none() => {
            let options: Option<Value> = serde_json::from_slice(request.body).ok();
            let preconditions = options.as_ref().and_then(|o| o.get("preconditions"));
            let result = objects::delete(
                &mut lock(&shared.store),
                target.place(),
                &name,
                preconditions,
            );
            if let Ok(crd) = &result
                && is_crd
            {
                crds::deleted(shared, crd);
            }
            ok(result.map(|o| present(&target, &o)), StatusCode::OK)
        }
        (method, _) => error_response(&ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on this path"),
        )),
    }
}

fn present(target: &Target, object: &Value) -> Value {
    let mut object = object.clone();
    object["apiVersion"] = Value::String(target.resource.api_version(&target.version));
    object
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not JSON: {e}")))
}

fn filter(target: &Target, query: &HashMap<String, String>) -> Result<Filter, ApiError> {
    Ok(Filter {
        resource: target.resource.key(),
        api_version: target.resource.api_version(&target.version),
        kind: target.resource.kind.clone(),
        namespace: target.namespace.clone(),
        labels: query
            .get("labelSelector")
            .map(|s| LabelSelector::parse(s))
            .transpose()?
            .unwrap_or_default(),
        fields: query
            .get("fieldSelector")
            .map(|s| FieldSelector::parse(s))
            .transpose()?
            .unwrap_or_default(),
    })
}

fn parse_rv(value: &str) -> Result<u64, ApiError> {
    value.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "resourceVersion: {value:?} is not a resource version"
        ))
    })
}

/// A continue token: the resourceVersion the list reads at and the last key it returned.
fn parse_continue(token: &str) -> Result<(u64, ObjectKey), ApiError> {
    let invalid = || ApiError::bad_request(format!("continue: {token:?} is not a continue token"));
    let mut parts = token.splitn(3, '/');
    let (Some(rv), Some(namespace), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    Ok((
        rv.parse().map_err(|_| invalid())?,
        (namespace.to_string(), name.to_string()),
    ))
}

/// A list response, written around the page's pre-serialized items.
fn list(
    shared: &Shared,
    target: &Target,
    query: &HashMap<String, String>,
) -> Result<Vec<u8>, ApiError> {
    target.part()?;
    let filter = filter(target, query)?;
    let limit = match query.get("limit") {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("limit: {l:?} is not a number")))?,
        ),
        None => None,
    };
    let store = lock(&shared.store);
    let rv = query
        .get("resourceVersion")
        .map(String::as_str)
        .filter(|rv| !rv.is_empty());
    let (at, after) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rv, after) = parse_continue(token)?;
            (ReadAt::Exact(rv), Some(after))
        }
        None => {
            let at = match (rv, query.get("resourceVersionMatch").map(String::as_str)) {
                (None | Some("0"), _) => ReadAt::Latest,
                (Some(rv), Some("Exact")) => ReadAt::Exact(parse_rv(rv)?),
                // Legacy semantics: an exact read when paginating, else "not older than".
                (Some(rv), None) if limit.is_some() => ReadAt::Exact(parse_rv(rv)?),
                (Some(rv), _) if parse_rv(rv)? > store.resource_version() => {
                    return Err(ApiError::new(
                        504,
                        "Timeout",
                        format!("Too large resource version: {rv}"),
                    ));
                }
                (Some(_), _) => ReadAt::Latest,
            };
            (at, None)
        }
    };
    let page = store.list(&filter, at, after.as_ref(), limit, !target.resource.custom).map_err(|e| {
        if e.code == 410 && after.is_some() {
            ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter.",
            )
        } else {
            e
        }
    })?;
    let mut metadata = json!({"resourceVersion": page.rv.to_string()});
    if let Some((namespace, name)) = page.continue_after {
        metadata["continue"] = Value::String(format!("{}/{namespace}/{name}", page.rv));
        metadata["remainingItemCount"] = json!(page.remaining);
    }
    let head = json!({
        "kind": format!("{}List", target.resource.kind),
        "apiVersion": target.resource.api_version(&target.version),
        "metadata": metadata,
    })
    .to_string();
    // `head` is an object: reopen it to append the items.
    let mut body = Vec::with_capacity(head.len() + page.items.len() + 16);
    body.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    body.extend_from_slice(b",\"items\":");
    body.extend_from_slice(&page.items);
    body.push(b'}');
    Ok(body)
}

fn start_watch(shared: &Shared, target: &Target, query: &HashMap<String, String>) -> Response {
    let flag = |name: &str| matches!(query.get(name).map(String::as_str), Some("1" | "true"));
    let started = (|| {
        target.part()?;
        let filter = filter(target, query)?;
        let since = match query.get("resourceVersion").map(String::as_str) {
            _ if flag("sendInitialEvents") => None,
            None | Some("" | "0") => None,
            Some(rv) => Some(parse_rv(rv)?),
        };
        let initial_events_end = flag("sendInitialEvents") && flag("allowWatchBookmarks");
        let (tx, rx) = lock(&shared.store).watch(filter.clone(), since, initial_events_end)?;
        Ok::<_, ApiError>((filter, tx, rx))
    })();
    let settings = lock(&shared.settings).clone();
    let (filter, tx, rx) = match started {
        Ok(s) => s,
        Err(e) if e.code == 410 && settings.gone_mode == GoneMode::Event => {
            // The real server's answer to a watch from a compacted resourceVersion: 200, then
            // one ERROR event.
            let event = json!({"type": "ERROR", "object": e.to_status()}).to_string() + "\n";
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                event,
            )
                .into_response();
        }
        Err(e) => return error_response(&e),
    };
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs);
    let stream = WatchStream {
        store: shared.store.clone(),
        filter,
        rx,
        bookmarks: flag("allowWatchBookmarks").then_some(settings.bookmark_interval),
        timeout,
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(watch::body(stream, tx))
        .unwrap_or_else(|_| {
            error_response(&ApiError::new(
                500,
                "InternalError",
                "building the watch response",
            ))
        })
}

/// A TokenReview answered from the tokens the test registered (`FakeApiServer::add_token`): the
/// user and audiences of a known token, for the audiences asked if it has them all.
fn token_review(shared: &Shared, mut review: Value) -> Value {
    let token = review
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let asked: Vec<String> = review
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let known = lock(&shared.tokens).get(&token).cloned();
    review["status"] = match known {
        Some((user, audiences)) if asked.iter().all(|a| audiences.contains(a)) => {
            serde_json::json!({"authenticated": true, "user": {"username": user}, "audiences": asked})
        }
        Some(_) => {
            serde_json::json!({"authenticated": false, "error": "token audiences do not match"})
        }
        None => serde_json::json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    review
}

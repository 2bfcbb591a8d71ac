//! The axum side of the debug endpoints: read the current values, call the JSON builders,
//! answer. Every route is behind [`access::check`].

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::Value;

use super::push_status::PushSummary;
use super::{DebugError, Sources, access};
use crate::push::Pushed;

/// The debug routes over `sources`; merge into the status router.
pub fn router(sources: Sources) -> Router {
    let remote = sources.remote;
    Router::new()
        .route("/debug/syncz", get(syncz))
        .route("/debug/configz", get(configz))
        .route("/debug/adsz", get(adsz))
        .route("/debug/registryz", get(registryz))
        .route("/debug/endpointShardz", get(endpoint_shardz))
        .route("/debug/config_dump", get(config_dump))
        .route("/debug/push_status", get(push_status))
        .with_state(sources)
        .layer(middleware::from_fn_with_state(remote, guard))
}

/// Refuses clients [`access::check`] does not allow. The peer comes from the server's
/// `ConnectInfo`; without it (a server not set up to record it) only `--debug-remote` lets
/// requests through.
async fn guard(State(remote): State<bool>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    match access::check(peer, remote) {
        Ok(()) => next.run(request).await,
        Err(refused) => (StatusCode::FORBIDDEN, refused).into_response(),
    }
}

impl IntoResponse for DebugError {
    fn into_response(self) -> Response {
        let status = match self {
            DebugError::NotLoaded => StatusCode::SERVICE_UNAVAILABLE,
            DebugError::MissingProxyId => StatusCode::BAD_REQUEST,
            DebugError::UnknownProxy(_) => StatusCode::NOT_FOUND,
            DebugError::Json(_) | DebugError::Serialize { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, format!("{self}\n")).into_response()
    }
}

type Answer = Result<Json<Value>, DebugError>;

fn to_json(value: impl serde::Serialize, what: &str) -> Answer {
    serde_json::to_value(value)
        .map(Json)
        .map_err(|source| DebugError::Serialize {
            object: what.to_string(),
            source,
        })
}

fn pushed(sources: &Sources) -> Result<Pushed, DebugError> {
    sources.pushes.borrow().clone().ok_or(DebugError::NotLoaded)
}

async fn syncz(State(s): State<Sources>, Query(q): Query<HashMap<String, String>>) -> Answer {
    let namespace = q.get("namespace").map(String::as_str);
    to_json(
        super::syncz::syncz(&s.connections.list(), namespace),
        "syncz",
    )
}

async fn configz(State(s): State<Sources>) -> Answer {
    let snapshot = s.store.borrow().clone();
    Ok(Json(Value::Array(super::configz::configz(&snapshot)?)))
}

async fn adsz(State(s): State<Sources>) -> Answer {
    to_json(super::adsz::adsz(&s.connections.list()), "adsz")
}

async fn registryz(State(s): State<Sources>) -> Answer {
    let pushed = pushed(&s)?;
    Ok(Json(Value::Array(super::registryz::registryz(
        &pushed.context.index().services,
    ))))
}

async fn endpoint_shardz(State(s): State<Sources>) -> Answer {
    let pushed = pushed(&s)?;
    to_json(
        super::endpoint_shardz::endpoint_shardz(&pushed.context.index().services),
        "endpointShardz",
    )
}

async fn config_dump(State(s): State<Sources>, Query(q): Query<HashMap<String, String>>) -> Answer {
    let pushed = pushed(&s)?;
    let proxy_id = q.get("proxyID").map(String::as_str);
    let dump =
        super::config_dump::config_dump(pushed.context.as_ref(), proxy_id, &s.connections.list())?;
    Ok(Json(dump))
}

async fn push_status(State(s): State<Sources>) -> Answer {
    let pushed = pushed(&s)?;
    let index = pushed.context.index();
    Ok(Json(super::push_status::push_status(&PushSummary {
        revision: index.revision,
        at: pushed.at,
        took: pushed.took,
        connected_proxies: s.connections.len(),
        services: index.services.len(),
        diagnostics: &index.diagnostics,
    })))
}

//! `GET /health`: database and token status. 200 when both answer, 503 otherwise, so a
//! load balancer or monitoring can take a node out of service.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::app::App;
use crate::hsm::PoolUsage;

#[derive(Serialize)]
struct Health {
    status: &'static str,
    database: Component,
    token: TokenComponent,
}

#[derive(Serialize)]
struct Component {
    ok: bool,
    backend: crate::store::Backend,
    /// The configuration version in the database (its read is the round trip that
    /// checks the database).
    #[serde(skip_serializing_if = "Option::is_none")]
    config_version: Option<i64>,
    /// The configuration version this node acts on; behind `config_version` only for
    /// the moment a change takes to arrive (a lasting gap: the node misses changes).
    #[serde(skip_serializing_if = "Option::is_none")]
    config_version_in_force: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct TokenComponent {
    ok: bool,
    label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    logged_in: Option<bool>,
    sessions: PoolUsage,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn router() -> Router<Arc<App>> {
    Router::new().route("/health", get(health))
}

async fn health(State(app): State<Arc<App>>) -> impl IntoResponse {
    let db = app.store.config_version().await;
    let token = app.hsm.call("health", |hsm| hsm.health()).await;
    if let Err(e) = &db {
        tracing::warn!(error = %e, "health: database check failed");
    }
    if let Err(e) = &token {
        tracing::warn!(error = %e, "health: token check failed");
    }
    let healthy = db.is_ok() && token.as_ref().is_ok_and(|t| t.logged_in);
    let body = Health {
        status: if healthy { "ok" } else { "degraded" },
        database: Component {
            ok: db.is_ok(),
            backend: app.store.backend(),
            config_version: db.as_ref().ok().copied(),
            config_version_in_force: app.store.config_watch().map(|w| w.version()),
            // Only the kind of failure: internals stay in the log.
            error: db.err().map(|e| {
                if e.is_transient() {
                    "unreachable"
                } else {
                    "error"
                }
                .to_string()
            }),
        },
        token: TokenComponent {
            ok: token.as_ref().is_ok_and(|t| t.logged_in),
            label: app.hsm.token_label().to_string(),
            logged_in: token.as_ref().ok().map(|t| t.logged_in),
            sessions: app.hsm.pool_usage(),
            error: token.err().map(|e| {
                if e.is_transient() {
                    "unavailable"
                } else {
                    "error"
                }
                .to_string()
            }),
        },
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

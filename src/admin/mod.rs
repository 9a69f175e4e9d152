//! The HTTP side: on plain HTTP the health (liveness) and readiness endpoints, the
//! Prometheus metrics and what the built-in CA publishes (its certificates and CRLs);
//! on HTTPS the admin console and its API.

pub mod console;
mod health;
pub mod https;
mod metrics;
mod pki;
mod ready;
pub mod saml;

use axum::Router;

use crate::app::App;

pub fn router(
    app: std::sync::Arc<App>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> Router {
    Router::new()
        .merge(health::router())
        .merge(ready::router())
        .merge(pki::router())
        .with_state(app.clone())
        .merge(metrics::router(app, metrics))
}

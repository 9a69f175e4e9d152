//! The HTTP side: the health endpoint and what the built-in CA publishes (its
//! certificates and CRLs); the console joins it later.

mod health;
mod pki;
pub mod saml;

use axum::Router;

use crate::app::App;

pub fn router(app: std::sync::Arc<App>) -> Router {
    Router::new()
        .merge(health::router())
        .merge(pki::router())
        .with_state(app)
}

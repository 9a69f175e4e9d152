//! The HTTP side: at this stage the health endpoint; the console joins it later.

mod health;

use axum::Router;

use crate::app::App;

pub fn router(app: std::sync::Arc<App>) -> Router {
    Router::new().merge(health::router()).with_state(app)
}

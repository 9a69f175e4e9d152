//! `GET /metrics`: the gateway's metrics in the Prometheus text format
//! (`crate::metrics`), for a Prometheus server to scrape. Like `/health` it carries no
//! mail content or addresses; put the plain HTTP listener where only monitoring
//! reaches it.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::app::App;
use crate::metrics::{CONTENT_TYPE, Metrics};

#[derive(Clone)]
struct Scrape {
    app: Arc<App>,
    metrics: Arc<Metrics>,
}

pub fn router(app: Arc<App>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scrape { app, metrics })
}

async fn scrape(State(scrape): State<Scrape>) -> impl IntoResponse {
    let text = scrape.metrics.render(&scrape.app.store).await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}

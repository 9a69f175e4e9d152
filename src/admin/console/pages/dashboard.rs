//! The dashboard: token health and seats (the backend's summary adds message counts,
//! expiring certificates and next-hop errors).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::html;

use super::super::{Console, Problem, Who, layout};
use crate::ops;

pub fn viewer() -> Router<Arc<Console>> {
    Router::new().route("/", get(dashboard))
}

async fn dashboard(State(console): State<Arc<Console>>, who: Who) -> Response {
    let ops = console.ops();
    let licence = match ops::licence::show(&ops).await {
        Ok(licence) => licence,
        Err(e) => return Problem::from(e).into_response(),
    };
    let token = console.app.hsm.call("health", |hsm| hsm.health()).await;
    let body = html! {
        div.cards {
            div.card #token {
                h2 { (layout::both("Token", "Token")) }
                @match &token {
                    Ok(t) if t.logged_in => {
                        p.n { span.state.ok { "OK" } }
                        p { (t.label) " — " (t.manufacturer) " " (t.model) }
                        p { "Sessions " (t.sessions.in_use) " in use of " (t.sessions.capacity) }
                    }
                    Ok(t) => { p.n { span.state.bad { "not logged in" } } p { (t.label) } }
                    Err(e) => { p.n { span.state.bad { "unreachable" } } p { (e.to_string()) } }
                }
            }
            div.card #seats {
                h2 { (layout::both("S/MIME seats", "S/MIME-Lizenzen")) }
                p.n { (licence.smime_seats_used) " used" }
                p {
                    @match licence.smime_seats_free {
                        Some(free) => { (free) " free · frei" }
                        None => { "no licence limit" }
                    }
                    @if licence.expired { " — " span.state.bad { "licence ended" } }
                }
            }
        }
    };
    layout::page(&who, "/", "Dashboard · Übersicht", body).into_response()
}

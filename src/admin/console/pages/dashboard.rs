//! The dashboard: token health, seats, the last 24 hours' messages by direction and
//! crypto result, certificates expiring, next-hop errors.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};

use super::super::{Console, Problem, Who, layout};
use crate::ops::dashboard::MessageCounts;
use crate::ops::{self, Role};

pub fn viewer() -> Router<Arc<Console>> {
    Router::new().route("/", get(dashboard))
}

fn counts(direction: &str, c: &MessageCounts) -> Markup {
    let link = |crypto: &str, n: i64| {
        html! { a href={ "/messages?from=24h&direction=" (direction) "&crypto=" (crypto) } { (n) } }
    };
    html! {
        p.n { (c.total) }
        table {
            tr { td { (layout::both("signed", "signiert")) } td { (link("signed", c.signed)) } }
            tr { td { (layout::both("encrypted", "verschlüsselt")) } td { (link("encrypted", c.encrypted)) } }
            tr { td { (layout::both("decrypted", "entschlüsselt")) } td { (link("decrypted", c.decrypted)) } }
            tr { td { (layout::both("signature valid", "Signatur gültig")) } td { (link("signature-valid", c.signature_valid)) } }
            tr { td { (layout::both("signature invalid", "Signatur ungültig")) } td { (link("signature-invalid", c.signature_invalid)) } }
            tr { td { (layout::both("none", "keine")) } td { (link("none", c.none)) } }
        }
    }
}

async fn dashboard(State(console): State<Arc<Console>>, who: Who) -> Response {
    let summary = match ops::dashboard::summary(&console.ops()).await {
        Ok(summary) => summary,
        Err(e) => return Problem::from(e).into_response(),
    };
    let token = console.app.hsm.call("health", |hsm| hsm.health()).await;
    let body = html! {
        div.cards {
            div.card #token {
                h2 { (layout::both("Token", "Token")) }
                @match &token {
                    Ok(t) if t.logged_in => { p.n { span.state.ok { "OK" } } }
                    Ok(_) => { p.n { span.state.bad { "not logged in" } } }
                    Err(_) => { p.n { span.state.bad { "unreachable" } } }
                }
                // The token's details are the admin's (its role covers token status).
                @if who.caller.role.allows(Role::Admin) {
                    @match &token {
                        Ok(t) => {
                            p { (t.label) " — " (t.manufacturer) " " (t.model) " (serial " (t.serial) ")" }
                            p { "Sessions " (t.sessions.in_use) " in use of " (t.sessions.capacity) }
                        }
                        Err(e) => { p { (e.to_string()) } }
                    }
                }
            }
            div.card #seats {
                h2 { (layout::both("S/MIME seats", "S/MIME-Lizenzen")) }
                p.n { (summary.seats.used) " used" }
                p {
                    @match summary.seats.free {
                        Some(free) => { (free) " free · frei" }
                        None => { "no licence limit" }
                    }
                    @if summary.seats.expired { " — " span.state.bad { "licence ended" } }
                }
            }
            div.card #inbound {
                h2 { (layout::both("Inbound, 24 h", "Eingehend, 24 h")) }
                (counts("inbound", &summary.inbound))
            }
            div.card #outbound {
                h2 { (layout::both("Outbound, 24 h", "Ausgehend, 24 h")) }
                (counts("outbound", &summary.outbound))
            }
            div.card #next-hop-errors {
                h2 { (layout::both("Next-hop errors, 24 h", "Fehler beim Weiterleiten, 24 h")) }
                p.n { (summary.next_hop_errors.count) }
                @if let Some(at) = summary.next_hop_errors.last_at { p { "last " (layout::when(at)) } }
            }
        }
        h2 { (layout::both("Certificates expiring within 30 days", "Zertifikate, die in 30 Tagen ablaufen")) }
        @if summary.expiring.is_empty() {
            p { "none · keine" }
        } @else {
            table #expiring {
                thead { tr { th { "Mailbox" } th { "Source" } th { "Expires" } th { "SHA-256" } } }
                tbody {
                    @for c in &summary.expiring {
                        tr { td { (c.address) } td { (c.source) } td { (layout::when(c.not_after)) } td.mono { (c.fingerprint_sha256) } }
                    }
                }
            }
        }
    };
    layout::page(&who, "/", "Dashboard · Übersicht", body).into_response()
}

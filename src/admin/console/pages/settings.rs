//! Settings: everyone sees the smarthost, the internal networks, the licence,
//! next-hop TLS (configuration file) and whether SAML is configured; admins change
//! the smarthost, the networks and the licence.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::html;

use super::super::{Console, Who, layout};
use super::{Flash, back, form_fields, one_of};
use crate::ops::relay_settings::Source;
use crate::ops::{self, OpError, Role};

pub fn viewer() -> Router<Arc<Console>> {
    Router::new().route("/settings", get(show))
}

pub fn admin() -> Router<Arc<Console>> {
    Router::new()
        .route("/settings/smarthost", post(set_smarthost))
        .route("/settings/networks/allow", post(allow_network))
        .route("/settings/networks/remove", post(remove_network))
        .route("/settings/licence", post(set_licence))
}

fn source(source: Option<Source>) -> &'static str {
    match source {
        Some(Source::Database) => "set in the console or CLI",
        Some(Source::Configuration) => "smimegate.toml",
        None => "not set",
    }
}

async fn show(
    State(console): State<Arc<Console>>,
    who: Who,
    Query(flash): Query<Flash>,
) -> Response {
    let s = match ops::settings::show(&console.ops()).await {
        Ok(s) => s,
        Err(e) => return super::failed(e),
    };
    let admin = who.caller.role.allows(Role::Admin);
    let csrf = who.csrf();
    let licence = &s.licence;
    let body = html! {
        (layout::flash(flash.ok.as_deref(), flash.error.as_deref()))
        h2 { "Smarthost" }
        p #smarthost {
            @if let Some(hp) = &s.smarthost.host_port { strong { (hp) } } @else { "none: outbound mail is deferred" }
            " (" (source(s.smarthost.source)) ")"
        }
        @if admin {
            form method="post" action="/settings/smarthost" {
                input type="hidden" name="csrf" value=(csrf);
                input name="host_port" required placeholder="mail.example.org:25" value=(s.smarthost.host_port.as_deref().unwrap_or(""));
                " " button type="submit" id="set-smarthost" { "Set smarthost" }
            }
        }
        h2 { (layout::both("Internal networks", "Interne Netze")) }
        table #networks {
            thead { tr { th { "Network" } th { "Comment" } th { "SMTP AUTH required" } th { "Source" } @if admin { th {} } } }
            tbody {
                @for n in &s.networks {
                    tr data-cidr=(n.cidr) {
                        td.mono { (n.cidr) } td { (n.comment) }
                        td { @if n.require_auth { "yes" } @else { "no" } }
                        td { (source(Some(n.source))) }
                        @if admin {
                            td { @if n.source == Source::Database {
                                form.inline method="post" action="/settings/networks/remove" {
                                    input type="hidden" name="csrf" value=(csrf);
                                    input type="hidden" name="cidr" value=(n.cidr);
                                    button type="submit" { "Remove · Entfernen" }
                                }
                            } }
                        }
                    }
                }
            }
        }
        @if admin {
            form method="post" action="/settings/networks/allow" {
                input type="hidden" name="csrf" value=(csrf);
                fieldset {
                    legend { "Allow a network · Netz erlauben" }
                    input name="cidr" required placeholder="10.0.0.0/8"; " "
                    input name="comment" placeholder="comment"; " "
                    label { input type="checkbox" name="require_auth" value="1"; " require SMTP AUTH" } " "
                    button type="submit" id="allow-network" { "Allow" }
                }
            }
        }
        h2 { (layout::both("Licence", "Lizenz")) }
        p #licence {
            @if let Some(l) = &licence.licence {
                strong { (l.smime_seats) } " S/MIME seats, " strong { (l.mail_security_seats) } " mail-security seats"
                @if let Some(until) = l.valid_until { ", valid until " (layout::when(until)) }
                @if licence.expired { " " span.state.bad { (layout::both("Expired", "Abgelaufen")) } }
            } @else { "No licence set: no limit." }
            br; (licence.smime_seats_used) " S/MIME seats used"
            @if let Some(free) = licence.smime_seats_free { ", " (free) " free" }
        }
        @if admin {
            form method="post" action="/settings/licence" {
                input type="hidden" name="csrf" value=(csrf);
                fieldset {
                    legend { "Set the licence · Lizenz setzen" }
                    label { "S/MIME seats " input name="smime_seats" type="number" min="0" required; } " "
                    label { "Mail-security seats " input name="mail_security_seats" type="number" min="0" required; } " "
                    label { "Valid until " input name="valid_until" type="date"; } " "
                    button type="submit" id="set-licence" { "Set" }
                }
            }
        }
        h2 { "Next-hop TLS" }
        p { "Default: " strong #next-hop-tls { (s.next_hop_tls.default) } "; trusted CAs: " span.mono { (s.next_hop_tls.ca_file) }
            " (smimegate.toml, " code { "[relay]" } ")" }
        @if !s.next_hop_tls.hops.is_empty() {
            table { thead { tr { th { "Hop" } th { "TLS" } th { "Server name" } th { "Pinned SHA-256" } } }
                tbody { @for h in &s.next_hop_tls.hops { tr {
                    td { (h.hop) } td { (h.tls.as_deref().unwrap_or("default")) }
                    td { (h.server_name.as_deref().unwrap_or("—")) } td.mono { (h.pin_sha256.join(", ")) }
                } } } }
        }
        h2 { "SAML single sign-on" }
        p #saml { @if s.saml.configured { span.state.ok { "configured" } } @else { span.state.off { "not configured" } } " — " (s.saml.detail) }
    };
    layout::page(&who, "/settings", "Settings · Einstellungen", body).into_response()
}

async fn set_smarthost(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let host_port = one_of(&fields, "host_port").unwrap_or_default();
    let outcome = ops::relay_settings::set_smarthost(&console.ops(), &who.actor(), host_port)
        .await
        .map(|s| format!("smarthost {}", s.host_port.unwrap_or_default()));
    back("/settings", outcome)
}

async fn allow_network(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let input = ops::relay_settings::AllowNetwork {
        cidr: one_of(&fields, "cidr").unwrap_or_default().to_string(),
        comment: one_of(&fields, "comment").unwrap_or_default().to_string(),
        require_auth: one_of(&fields, "require_auth").is_some(),
    };
    let outcome = ops::relay_settings::allow_network(&console.ops(), &who.actor(), input)
        .await
        .map(|n| format!("{} allowed", n.cidr));
    back("/settings", outcome)
}

async fn remove_network(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let cidr = one_of(&fields, "cidr").unwrap_or_default();
    let outcome = ops::relay_settings::remove_network(&console.ops(), &who.actor(), cidr)
        .await
        .map(|cidr| format!("{cidr} removed"));
    back("/settings", outcome)
}

async fn set_licence(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let number = |name: &str| {
        one_of(&fields, name)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .ok_or_else(|| OpError::Invalid(format!("{name} is not a number")))
    };
    let outcome = match (number("smime_seats"), number("mail_security_seats")) {
        (Ok(smime_seats), Ok(mail_security_seats)) => {
            let input = ops::licence::SetLicence {
                smime_seats,
                mail_security_seats,
                valid_until: one_of(&fields, "valid_until")
                    .filter(|v| !v.is_empty())
                    .map(str::to_string),
            };
            ops::licence::set(&console.ops(), &who.actor(), input)
                .await
                .map(|l| format!("licence set: {} S/MIME seats", l.smime_seats))
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    back("/settings", outcome)
}

//! Certificates: managed (mailboxes' and the CA's), partners' (harvested and
//! imported), trust anchors; a details view; editors import and remove partners'
//! certificates, admins add and remove trust anchors. Public data only: no page
//! renders a private key or offers a PKCS#12 download.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::html;

use super::super::{Console, Who, layout};
use super::{Flash, back, form_fields, one_of};
use crate::ops::certs::{Kind, ListCertificates};
use crate::ops::{self, OpError, Role};

pub fn viewer() -> Router<Arc<Console>> {
    Router::new()
        .route("/certificates", get(list))
        .route("/certificates/{fingerprint}", get(details))
}

pub fn editor() -> Router<Arc<Console>> {
    Router::new()
        .route("/certificates/import", post(import))
        .route("/certificates/upload", post(upload))
        .route("/certificates/remove", post(remove))
}

pub fn admin() -> Router<Arc<Console>> {
    Router::new()
        .route("/trust-anchors/add", post(add_anchor))
        .route("/trust-anchors/remove", post(remove_anchor))
}

async fn list(
    State(console): State<Arc<Console>>,
    who: Who,
    Query(flash): Query<Flash>,
) -> Response {
    let ops = console.ops();
    let all = ops::certs::list(
        &ops,
        ListCertificates {
            kind: Kind::All,
            address: None,
        },
    )
    .await;
    let (all, anchors) = match (all, ops::trust::views(&ops).await) {
        (Ok(all), Ok(anchors)) => (all, anchors),
        (Err(e), _) | (_, Err(e)) => return super::failed(e),
    };
    let may_edit = who.caller.role.allows(Role::Editor);
    let is_admin = who.caller.role.allows(Role::Admin);
    let now = crate::store::unix_now();
    let table = |kind: &str| {
        html! {
            table id={ (kind) "-certificates" } {
                thead { tr { th { "Address" } th { "Subject" } th { "Source" } th { "Expires" } th { "Status" } th { "SHA-256" } } }
                tbody {
                    @for c in all.iter().filter(|c| c.kind == kind) {
                        tr data-fingerprint=(c.fingerprint) {
                            td { (c.address.as_deref().unwrap_or("—")) }
                            td { (c.subject) }
                            td { (c.source.as_str()) }
                            td { (layout::when(c.not_after)) }
                            td {
                                @if c.revoked { span.state.bad { (layout::both("Revoked", "Widerrufen")) } }
                                @else if c.not_after < now { span.state.warn { (layout::both("Expired", "Abgelaufen")) } }
                                @else { span.state.ok { (layout::both("Valid", "Gültig")) } }
                            }
                            td.mono { a href={ "/certificates/" (c.fingerprint) } { (c.fingerprint) } }
                        }
                    }
                }
            }
        }
    };
    let body = html! {
        (layout::flash(flash.ok.as_deref(), flash.error.as_deref()))
        h2 { (layout::both("Managed", "Verwaltet")) }
        (table("managed"))
        h2 { (layout::both("Partners", "Partner")) }
        (table("partner"))
        @if may_edit {
            form method="post" action="/certificates/import" {
                input type="hidden" name="csrf" value=(who.csrf());
                fieldset {
                    legend { "Import partner certificates (PEM) · Partnerzertifikate importieren" }
                    textarea name="pem" rows="6" cols="70" required placeholder="-----BEGIN CERTIFICATE-----" {}
                    br; button type="submit" id="import-certificate" { "Import" }
                }
            }
            // A file upload is multipart: the CSRF token goes into the action's query.
            form method="post" enctype="multipart/form-data" action={ "/certificates/upload?csrf=" (who.csrf()) } {
                fieldset {
                    legend { "Upload partner certificates (PEM, DER or .p7c) · Zertifikatsdatei hochladen" }
                    input name="file" type="file" accept=".pem,.crt,.cer,.der,.p7c,.p7b" required; " "
                    button type="submit" id="upload-certificate" { "Upload" }
                }
            }
        }
        h2 { (layout::both("Trust anchors", "Vertrauensanker")) }
        table #trust-anchors {
            thead { tr { th { "Subject" } th { "Vouches for" } th { "Expires" } th { "SHA-256" } @if is_admin { th {} } } }
            tbody {
                @for a in &anchors {
                    tr data-fingerprint=(a.fingerprint) {
                        td { (a.subject) }
                        td { (ops::trust::describe(&a.domains)) }
                        td { (layout::when(a.not_after)) }
                        td.mono { a href={ "/certificates/" (a.fingerprint) } { (a.fingerprint) } }
                        @if is_admin {
                            td {
                                form.inline method="post" action="/trust-anchors/remove" {
                                    input type="hidden" name="csrf" value=(who.csrf());
                                    input type="hidden" name="fingerprint" value=(a.fingerprint);
                                    button type="submit" { "Remove · Entfernen" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if is_admin {
            form method="post" action="/trust-anchors/add" {
                input type="hidden" name="csrf" value=(who.csrf());
                fieldset {
                    legend { "Add a trust anchor (PEM, CA certificates) · Vertrauensanker hinzufügen" }
                    textarea name="pem" rows="6" cols="70" required placeholder="-----BEGIN CERTIFICATE-----" {}
                    br;
                    label { "Domains it vouches for (comma-separated; empty: any except ours) "
                        input name="domains" placeholder="partner.example, *.partner.example"; }
                    " " button type="submit" id="add-trust-anchor" { "Add" }
                }
            }
        }
    };
    layout::page(&who, "/certificates", "Certificates · Zertifikate", body).into_response()
}

async fn details(
    State(console): State<Arc<Console>>,
    who: Who,
    Path(fingerprint): Path<String>,
) -> Response {
    let d = match ops::certs::details(&console.ops(), &fingerprint).await {
        Ok(d) => d,
        Err(e) => return super::failed(e),
    };
    let may_remove = d.kind == "partner" && who.caller.role.allows(Role::Editor);
    let row =
        |label: maud::Markup, value: maud::Markup| html! { tr { th { (label) } td { (value) } } };
    let list =
        |items: &[String]| html! { @if items.is_empty() { "—" } @else { (items.join(", ")) } };
    let body = html! {
        table #certificate-details {
            (row(layout::both("Kind", "Art"), html! { (d.kind) " (" (d.source.as_str()) ")" }))
            (row(layout::both("Address", "Adresse"), html! { (d.address.as_deref().unwrap_or("—")) }))
            (row(layout::both("Subject", "Inhaber"), html! { (d.subject) }))
            (row(layout::both("Alternative names", "Alternative Namen"), list(&d.alt_names)))
            (row(layout::both("Issuer", "Aussteller"), html! { (d.issuer) }))
            (row(html! { "Serial" }, html! { span.mono { (d.serial) } }))
            (row(layout::both("Valid from", "Gültig ab"), html! { (layout::when(d.not_before)) }))
            (row(layout::both("Valid until", "Gültig bis"), html! { (layout::when(d.not_after)) }))
            (row(html! { "SHA-256" }, html! { span.mono #fingerprint { (d.fingerprint_sha256) } }))
            (row(layout::both("Public key", "Öffentlicher Schlüssel"), html! { (d.public_key) }))
            (row(layout::both("Key usage", "Schlüsselverwendung"), list(&d.key_usage)))
            (row(layout::both("Extended key usage", "Erweiterte Verwendung"), list(&d.extended_key_usage)))
            (row(layout::both("Key in the token", "Schlüssel im Token"), html! { @if d.key_in_token { "yes · ja" } @else { "no · nein" } }))
            (row(layout::both("Revocation", "Widerruf"), html! {
                @if let Some(at) = d.revoked_at { span.state.bad { (layout::both("Revoked", "Widerrufen")) } " " (layout::when(at)) }
                @else { span.state.ok { (layout::both("Not revoked", "Nicht widerrufen")) } }
            }))
            @if let Some(domains) = &d.vouches_for {
                (row(layout::both("Vouches for", "Bürgt für"), html! { (ops::trust::describe(domains)) }))
            }
        }
        @if may_remove {
            form method="post" action="/certificates/remove" {
                input type="hidden" name="csrf" value=(who.csrf());
                input type="hidden" name="fingerprint" value=(d.fingerprint_sha256);
                p { button type="submit" id="remove-certificate" { "Remove this partner certificate · Entfernen" } }
            }
        }
        p { a href="/certificates" { "All certificates" } }
    };
    layout::page(&who, "/certificates", "Certificate · Zertifikat", body).into_response()
}

/// What an import did, one clause per certificate.
fn imported(outcomes: Vec<ops::certs::ImportOutcome>) -> String {
    outcomes
        .iter()
        .map(|o| format!("{} {}: {}", o.fingerprint, o.outcome, o.detail))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn import(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let pem = one_of(&fields, "pem").unwrap_or_default();
    let outcome = ops::certs::import(&console.ops(), &who.actor(), pem.as_bytes())
        .await
        .map(imported);
    back("/certificates", outcome)
}

async fn upload(
    State(console): State<Arc<Console>>,
    who: Who,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    let file = match super::multipart_fields(form).await {
        Ok(fields) => super::part(&fields, "file").unwrap_or_default().to_vec(),
        Err(e) => return back("/certificates", Err(e)),
    };
    let outcome = if file.is_empty() {
        Err(OpError::Invalid("choose a certificate file".into()))
    } else {
        ops::certs::import(&console.ops(), &who.actor(), &file)
            .await
            .map(imported)
    };
    back("/certificates", outcome)
}

async fn remove(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let fingerprint = one_of(&fields, "fingerprint").unwrap_or_default();
    let outcome = ops::certs::remove(&console.ops(), &who.actor(), fingerprint)
        .await
        .map(|c| format!("removed the certificate {}", c.fingerprint));
    back("/certificates", outcome)
}

async fn add_anchor(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let input = ops::trust::AddTrust {
        pem: one_of(&fields, "pem")
            .unwrap_or_default()
            .as_bytes()
            .to_vec(),
        domains: one_of(&fields, "domains")
            .unwrap_or_default()
            .split([',', ' '])
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect(),
    };
    let outcome = ops::trust::add(&console.ops(), &who.actor(), input)
        .await
        .map(|rows| format!("{} trust anchor(s) added", rows.len()));
    back("/certificates", outcome)
}

async fn remove_anchor(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let fingerprint = one_of(&fields, "fingerprint").unwrap_or_default();
    let outcome = ops::trust::remove(&console.ops(), &who.actor(), fingerprint)
        .await
        .map(|row| format!("trust anchor {} removed", row.certificate.record.subject));
    back("/certificates", outcome)
}

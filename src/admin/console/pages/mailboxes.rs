//! Mailboxes: the list with state, certificate expiry and source, a filter, the seat
//! counter; activate one, the selected or all; deactivate; add; a mailbox's details
//! (certificates and keys, never a private key); renew; import a PKCS#12 identity.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{Markup, html};

use super::super::{Console, Who, layout};
use super::{all_of, back, form_fields, one_of};
use crate::ops::{self, OpError, Role};
use crate::store::MailboxState;

pub fn viewer() -> Router<Arc<Console>> {
    Router::new()
        .route("/mailboxes", get(list))
        .route("/mailboxes/{address}", get(detail))
}

pub fn editor() -> Router<Arc<Console>> {
    Router::new()
        .route("/mailboxes/add", post(add))
        .route("/mailboxes/activate", post(activate))
        .route("/mailboxes/deactivate", post(deactivate))
        .route("/mailboxes/renew", post(renew))
        .route("/mailboxes/import", post(import_pkcs12))
}

/// The state as the pages show it, English and German (the FAQ's words).
pub fn state_label(state: MailboxState) -> Markup {
    let (class, en, de) = match state {
        MailboxState::Inactive => ("off", "Inactive", "Inaktiv"),
        MailboxState::Pending => ("warn", "Pending", "Ausstehend"),
        MailboxState::Active => ("ok", "Active", "Aktiv"),
        MailboxState::RevokePending => ("bad", "Revoke pending", "in Deaktivierung"),
    };
    html! { span class={ "state " (class) } { (layout::both(en, de)) } }
}

#[derive(serde::Deserialize)]
struct ListQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    ok: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

async fn list(
    State(console): State<Arc<Console>>,
    who: Who,
    Query(query): Query<ListQuery>,
) -> Response {
    let ops = console.ops();
    let (list, licence) = match (
        ops::mailboxes::list(&ops).await,
        ops::licence::show(&ops).await,
    ) {
        (Ok(list), Ok(licence)) => (list, licence),
        (Err(e), _) | (_, Err(e)) => return super::failed(e),
    };
    let wanted_state = query.state.as_deref().filter(|s| !s.is_empty());
    let needle = query.q.as_deref().unwrap_or("").trim().to_ascii_lowercase();
    let shown: Vec<_> = list
        .mailboxes
        .iter()
        .filter(|m| wanted_state.is_none_or(|s| m.mailbox.state.as_str() == s))
        .filter(|m| needle.is_empty() || m.mailbox.address.contains(&needle))
        .collect();
    let may_edit = who.caller.role.allows(Role::Editor);
    let states = [
        MailboxState::Inactive,
        MailboxState::Pending,
        MailboxState::Active,
        MailboxState::RevokePending,
    ];
    let body = html! {
        (layout::flash(query.ok.as_deref(), query.error.as_deref()))
        p #seat-counter {
            "Seats · Lizenzen: " strong { (licence.smime_seats_used) } " used"
            @if let Some(free) = licence.smime_seats_free { ", " strong { (free) } " free" }
            " — " (list.mailboxes.len()) " mailboxes known"
        }
        form method="get" action="/mailboxes" {
            label { "State " select name="state" {
                option value="" { "any" }
                @for state in states {
                    option value=(state.as_str()) selected[wanted_state == Some(state.as_str())] { (state.as_str()) }
                }
            } }
            " "
            label { "Address contains " input name="q" value=(needle); }
            " " button type="submit" { "Filter" }
        }
        form method="post" action="/mailboxes/activate" id="mailbox-list" {
            input type="hidden" name="csrf" value=(who.csrf());
            table {
                thead { tr {
                    th { "" } th { "Address" } th { "State · Status" } th { "Certificate expires" } th { "Source" }
                } }
                tbody {
                    @for m in &shown {
                        tr data-address=(m.mailbox.address) {
                            td { @if may_edit { input type="checkbox" name="address" value=(m.mailbox.address) aria-label={ "select " (m.mailbox.address) }; } }
                            td { a href={ "/mailboxes/" (m.mailbox.address) } { (m.mailbox.address) } }
                            td { (state_label(m.mailbox.state)) }
                            td { @if let Some(at) = m.certificate_expires { (layout::when(at)) } @else { "—" } }
                            td { @if let Some(source) = &m.source { (format!("{source:?}").to_lowercase()) } @else { "—" } }
                        }
                    }
                }
            }
            @if may_edit {
                p {
                    button type="submit" name="which" value="selected" id="activate-selected" { "Activate selected · Ausgewählte aktivieren" }
                    " "
                    button type="submit" formaction="/mailboxes/deactivate" id="deactivate-selected" { "Deactivate selected · Ausgewählte deaktivieren" }
                    " "
                    label { input type="checkbox" name="skip_mx_check" value="1"; " skip the MX check" }
                }
            }
        }
        @if may_edit {
            form method="post" action="/mailboxes/activate" {
                input type="hidden" name="csrf" value=(who.csrf());
                input type="hidden" name="which" value="all";
                button type="submit" id="activate-all" { "Activate all · Alle aktivieren" }
            }
            form method="post" action="/mailboxes/add" {
                input type="hidden" name="csrf" value=(who.csrf());
                fieldset {
                    legend { "Add a mailbox · Postfach hinzufügen" }
                    input name="address" type="email" placeholder="name@example.org" required;
                    " " button type="submit" id="add-mailbox" { "Add" }
                }
            }
            // A file upload is multipart: the CSRF token goes into the action's query.
            form method="post" enctype="multipart/form-data" action={ "/mailboxes/import?csrf=" (who.csrf()) } {
                fieldset {
                    legend { "Import a PKCS#12 identity · PKCS#12-Identität importieren" }
                    input name="address" type="email" placeholder="name@example.org" required; " "
                    input name="file" type="file" accept=".p12,.pfx,application/x-pkcs12" required; " "
                    input name="password" type="password" placeholder="file password" autocomplete="off"; " "
                    button type="submit" id="import-pkcs12" { "Import" }
                }
            }
        }
    };
    layout::page(&who, "/mailboxes", "Mailboxes · Postfächer", body).into_response()
}

async fn add(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let address = one_of(&fields, "address").unwrap_or_default();
    let outcome = ops::mailboxes::add(&console.ops(), &who.actor(), address)
        .await
        .map(|_| format!("{address} added"));
    back("/mailboxes", outcome)
}

async fn activate(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let all = one_of(&fields, "which") == Some("all");
    let addresses = if all {
        Vec::new()
    } else {
        all_of(&fields, "address")
    };
    if !all && addresses.is_empty() {
        return back(
            "/mailboxes",
            Err(OpError::Invalid("select the mailboxes to activate".into())),
        );
    }
    let input = ops::mailboxes::ActivateMany {
        addresses,
        domain: None,
        all,
        key: None,
        skip_mx_check: one_of(&fields, "skip_mx_check").is_some(),
    };
    let outcome = ops::mailboxes::activate_many(&console.app, &who.actor(), input)
        .await
        .map(|report| {
            let mut text = format!("{} activated", report.activated());
            if let Some(why) = &report.stopped {
                text.push_str(&format!("; stopped: {why}"));
            }
            for entry in &report.mailboxes {
                if let ops::mailboxes::ActivationOutcome::Failed { reason } = &entry.outcome {
                    text.push_str(&format!("; {}: {reason}", entry.address));
                }
            }
            text
        });
    back("/mailboxes", outcome)
}

async fn deactivate(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let addresses = all_of(&fields, "address");
    let outcome = ops::mailboxes::deactivate(&console.app, &who.actor(), &addresses)
        .await
        .map(|report| {
            let mut text = format!("{} deactivated (revoke pending)", report.mailboxes.len());
            if let Some(e) = &report.crl_error {
                text.push_str(&format!(
                    "; the CRL is signed at the next lifecycle run: {e}"
                ));
            }
            text
        });
    back("/mailboxes", outcome)
}

async fn detail(
    State(console): State<Arc<Console>>,
    who: Who,
    Path(address): Path<String>,
    Query(flash): Query<super::Flash>,
) -> Response {
    let d = match ops::mailboxes::show(&console.ops(), &address).await {
        Ok(d) => d,
        Err(e) => return super::failed(e),
    };
    let may_edit = who.caller.role.allows(Role::Editor);
    let body = html! {
        (layout::flash(flash.ok.as_deref(), flash.error.as_deref()))
        p { (state_label(d.mailbox.state)) " since " (layout::when(d.mailbox.state_changed_at))
            @if let Some(at) = d.inactive_from { "; inactive from " (layout::when(at)) } }
        h2 { (layout::both("Certificates", "Zertifikate")) }
        table #mailbox-certificates {
            thead { tr { th { "Serial" } th { "Source" } th { "Valid" } th { "Signing" } th { "Revoked" } th { "SHA-256" } } }
            tbody { @for c in &d.certificates { tr {
                td.mono { (c.certificate.record.serial) }
                td { (c.certificate.source.as_str()) }
                td { (layout::when(c.certificate.record.not_before)) " – " (layout::when(c.certificate.record.not_after)) }
                td { @if c.signing { span.state.ok { "signs now" } } }
                td { @if let Some(at) = c.certificate.revoked_at { (layout::when(at)) } @else { "—" } }
                td.mono { a href={ "/certificates/" (c.certificate.record.fingerprint_sha256) } { (c.certificate.record.fingerprint_sha256) } }
            } } }
        }
        h2 { (layout::both("Keys in the token", "Schlüssel im Token")) }
        table #mailbox-keys {
            thead { tr { th { "CKA_ID" } th { "Algorithm" } th { "Created" } th { "Retired" } } }
            tbody { @for k in &d.keys { tr {
                td.mono { (k.cka_id) } td { (format!("{:?}", k.algorithm)) }
                td { (layout::when(k.created_at)) }
                td { @if let Some(at) = k.retired_at { (layout::when(at)) } @else { "—" } }
            } } }
        }
        @if may_edit && d.mailbox.state == MailboxState::Active {
            form method="post" action="/mailboxes/renew" {
                input type="hidden" name="csrf" value=(who.csrf());
                input type="hidden" name="address" value=(d.mailbox.address);
                p { button type="submit" id="renew" { "Renew the certificate now · Jetzt erneuern" } }
            }
        }
        p { a href="/mailboxes" { "All mailboxes" } }
    };
    layout::page(&who, "/mailboxes", &d.mailbox.address, body).into_response()
}

async fn renew(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let address = one_of(&fields, "address").unwrap_or_default();
    let outcome = ops::lifecycle::renew(&console.app, &who.actor(), address)
        .await
        .map(|r| {
            format!(
                "{} renewed: serial {}",
                r.address, r.certificate.record.serial
            )
        });
    back(&format!("/mailboxes/{address}"), outcome)
}

/// The fields of the PKCS#12 form, or why they cannot be read.
async fn pkcs12_form(
    form: Result<Multipart, MultipartRejection>,
) -> Result<ops::identities::ImportPkcs12, OpError> {
    let fields = super::multipart_fields(form).await?;
    let text =
        |name| String::from_utf8_lossy(super::part(&fields, name).unwrap_or_default()).into_owned();
    let file = super::part(&fields, "file").unwrap_or_default().to_vec();
    if file.is_empty() {
        return Err(OpError::Invalid("choose a PKCS#12 file".into()));
    }
    Ok(ops::identities::ImportPkcs12 {
        address: text("address"),
        file,
        password: text("password").into(),
    })
}

async fn import_pkcs12(
    State(console): State<Arc<Console>>,
    who: Who,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    let outcome = match pkcs12_form(form).await {
        Ok(input) => ops::identities::import_pkcs12(&console.app, &who.actor(), input)
            .await
            .map(|i| {
                format!(
                    "{} imported: its mailbox is {}",
                    i.address,
                    i.state.as_str()
                )
            }),
        Err(e) => Err(e),
    };
    back("/mailboxes", outcome)
}

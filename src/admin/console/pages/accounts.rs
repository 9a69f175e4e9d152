//! Accounts and API tokens (admin only): local accounts listed, added (role,
//! password, TOTP on or off), role changed, disabled or enabled, unlocked, removed;
//! API tokens listed, created and revoked. A new TOTP secret and a new token are
//! shown once, in the answer to the POST that made them, and never again.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{Markup, html};

use super::super::{Console, Who, layout};
use super::{Flash, back, form_fields, one_of};
use crate::ops::console::{AddAccount, CreateToken};
use crate::ops::{self, OpError, Role};

pub fn admin() -> Router<Arc<Console>> {
    Router::new()
        .route("/accounts", get(list))
        .route("/accounts/add", post(add))
        .route("/accounts/role", post(set_role))
        .route("/accounts/disable", post(disable))
        .route("/accounts/enable", post(enable))
        .route("/accounts/unlock", post(unlock))
        .route("/accounts/totp", post(set_totp))
        .route("/accounts/password", post(set_password))
        .route("/accounts/remove", post(remove))
        .route("/tokens/create", post(create_token))
        .route("/tokens/revoke", post(revoke_token))
}

const ROLES: [Role; 3] = [Role::Viewer, Role::Editor, Role::Admin];

fn role_select(current: Option<Role>) -> Markup {
    html! {
        select name="role" aria-label="role" {
            @for role in ROLES { option value=(role.as_str()) selected[current == Some(role)] { (role.as_str()) } }
        }
    }
}

/// A small form posting `name` (and `csrf`) to `action`.
fn account_button(csrf: &str, action: &str, name: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="name" value=(name);
            button type="submit" { (label) }
        }
    }
}

async fn list(
    State(console): State<Arc<Console>>,
    who: Who,
    Query(flash): Query<Flash>,
) -> Response {
    let ops = console.ops();
    let (accounts, tokens) = match (
        ops::console::list_accounts(&ops).await,
        ops::console::list_tokens(&ops).await,
    ) {
        (Ok(a), Ok(t)) => (a, t),
        (Err(e), _) | (_, Err(e)) => return super::failed(e),
    };
    let csrf = who.csrf();
    let body = html! {
        (layout::flash(flash.ok.as_deref(), flash.error.as_deref()))
        h2 { (layout::both("Local accounts", "Lokale Konten")) }
        table #accounts {
            thead { tr { th { "Name" } th { "Role · Rolle" } th { "TOTP" } th { "State · Status" } th { "Last login" } th {} } }
            tbody {
                @for a in &accounts {
                    tr data-account=(a.name) {
                        td { (a.name) }
                        td {
                            form.inline method="post" action="/accounts/role" {
                                input type="hidden" name="csrf" value=(csrf);
                                input type="hidden" name="name" value=(a.name);
                                (role_select(Some(a.role))) " " button type="submit" { "Change" }
                            }
                        }
                        td {
                            @if a.totp { "on " } @else { "off " }
                            form.inline method="post" action="/accounts/totp" {
                                input type="hidden" name="csrf" value=(csrf);
                                input type="hidden" name="name" value=(a.name);
                                input type="hidden" name="on" value=(if a.totp { "0" } else { "1" });
                                button type="submit" { @if a.totp { "Turn off" } @else { "Turn on" } }
                            }
                        }
                        td {
                            @if a.disabled { span.state.off { (layout::both("Disabled", "Deaktiviert")) } }
                            @else if let Some(until) = a.locked_until { span.state.bad { "Locked until " (layout::when(until)) } }
                            @else { span.state.ok { (layout::both("Active", "Aktiv")) } }
                        }
                        td { @if let Some(at) = a.last_login_at { (layout::when(at)) } @else { "—" } }
                        td {
                            @if a.disabled { (account_button(csrf, "/accounts/enable", &a.name, "Enable")) }
                            @else { (account_button(csrf, "/accounts/disable", &a.name, "Disable")) }
                            " "
                            @if a.locked_until.is_some() { (account_button(csrf, "/accounts/unlock", &a.name, "Unlock")) " " }
                            (account_button(csrf, "/accounts/remove", &a.name, "Remove · Entfernen"))
                            details {
                                summary { "New password · Neues Passwort" }
                                form method="post" action="/accounts/password" {
                                    input type="hidden" name="csrf" value=(csrf);
                                    input type="hidden" name="name" value=(a.name);
                                    input name="password" type="password" required autocomplete="new-password" aria-label="new password";
                                    " " button type="submit" { "Set" }
                                }
                            }
                        }
                    }
                }
            }
        }
        form method="post" action="/accounts/add" {
            input type="hidden" name="csrf" value=(csrf);
            fieldset {
                legend { "Add a local account · Konto hinzufügen" }
                input name="name" required placeholder="name" autocomplete="off"; " "
                (role_select(Some(Role::Viewer))) " "
                input name="password" type="password" required placeholder="password (12+ characters)" autocomplete="new-password"; " "
                label { input type="checkbox" name="totp" value="1"; " TOTP" } " "
                button type="submit" id="add-account" { "Add" }
            }
        }
        h2 { (layout::both("API tokens", "API-Token")) }
        table #tokens {
            thead { tr { th { "Id" } th { "Account" } th { "Label" } th { "Role" } th { "Created" } th { "Last used" } th { "State" } th {} } }
            tbody {
                @for t in &tokens {
                    tr data-token=(t.id) {
                        td { (t.id) } td { (t.account) } td { (t.label) } td { (t.role) }
                        td { (layout::when(t.created_at)) }
                        td { @if let Some(at) = t.last_used_at { (layout::when(at)) } @else { "—" } }
                        td { @if let Some(at) = t.revoked_at { span.state.off { "revoked " (layout::when(at)) } } @else { span.state.ok { "valid" } } }
                        td { @if t.revoked_at.is_none() {
                            form.inline method="post" action="/tokens/revoke" {
                                input type="hidden" name="csrf" value=(csrf);
                                input type="hidden" name="id" value=(t.id);
                                button type="submit" { "Revoke · Widerrufen" }
                            }
                        } }
                    }
                }
            }
        }
        form method="post" action="/tokens/create" {
            input type="hidden" name="csrf" value=(csrf);
            fieldset {
                legend { "Create an API token · API-Token erstellen" }
                select name="account" aria-label="account" { @for a in &accounts { option value=(a.name) { (a.name) } } } " "
                input name="label" required placeholder="label"; " "
                (role_select(Some(Role::Viewer))) " "
                button type="submit" id="create-token" { "Create" }
            }
        }
    };
    layout::page(&who, "/accounts", "Accounts · Konten", body).into_response()
}

/// The role named in a form, or why there is none.
fn role_of(fields: &[(String, String)]) -> Result<Role, OpError> {
    one_of(fields, "role")
        .unwrap_or_default()
        .parse::<Role>()
        .map_err(|e| OpError::Invalid(e.to_string()))
}

/// A page showing a secret once (a TOTP secret or an API token).
fn shown_once(who: &Who, title: &str, lines: Markup) -> Response {
    let body = html! {
        p.flash.ok role="status" { (title) }
        div.card #secret { (lines) }
        p { strong { "Copy it now: it is not shown again · Jetzt kopieren: wird nicht wieder angezeigt." } }
        p { a href="/accounts" { "Back to the accounts" } }
    };
    layout::page(who, "/accounts", "Accounts · Konten", body).into_response()
}

async fn add(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let role = match role_of(&fields) {
        Ok(role) => role,
        Err(e) => return back("/accounts", Err(e)),
    };
    let input = AddAccount {
        name: one_of(&fields, "name").unwrap_or_default().to_string(),
        role,
        password: one_of(&fields, "password")
            .unwrap_or_default()
            .to_string()
            .into(),
        totp: one_of(&fields, "totp").is_some(),
    };
    match ops::console::add_account(&console.ops(), &who.actor(), input).await {
        Ok(added) => match (&added.totp_secret, &added.totp_uri) {
            (Some(secret), Some(uri)) => shown_once(
                &who,
                &format!("{} added ({})", added.account.name, added.account.role),
                html! {
                    p { "TOTP secret: " span.mono #totp-secret { (secret) } }
                    p { "Provisioning URI: " span.mono { (uri) } }
                },
            ),
            _ => back(
                "/accounts",
                Ok(format!(
                    "{} added ({})",
                    added.account.name, added.account.role
                )),
            ),
        },
        Err(e) => back("/accounts", Err(e)),
    }
}

fn name_of(fields: &[(String, String)]) -> &str {
    one_of(fields, "name").unwrap_or_default()
}

async fn set_totp(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let on = one_of(&fields, "on") == Some("1");
    match ops::console::set_totp(&console.ops(), &who.actor(), name_of(&fields), on).await {
        Ok(changed) => match (&changed.totp_secret, &changed.totp_uri) {
            (Some(secret), Some(uri)) => shown_once(
                &who,
                &format!("{} has a new TOTP secret", changed.account.name),
                html! {
                    p { "TOTP secret: " span.mono #totp-secret { (secret) } }
                    p { "Provisioning URI: " span.mono { (uri) } }
                },
            ),
            _ => back(
                "/accounts",
                Ok(format!("{} logs in without TOTP", changed.account.name)),
            ),
        },
        Err(e) => back("/accounts", Err(e)),
    }
}

async fn set_password(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let password = one_of(&fields, "password")
        .unwrap_or_default()
        .to_string()
        .into();
    let outcome =
        ops::console::set_password(&console.ops(), &who.actor(), name_of(&fields), &password)
            .await
            .map(|a| format!("{} has a new password; its sessions ended", a.name));
    back("/accounts", outcome)
}

async fn set_role(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let outcome = match role_of(&fields) {
        Ok(role) => ops::console::set_role(&console.ops(), &who.actor(), name_of(&fields), role)
            .await
            .map(|a| format!("{} is now {}", a.name, a.role)),
        Err(e) => Err(e),
    };
    back("/accounts", outcome)
}

async fn disable(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let outcome = ops::console::set_disabled(&console.ops(), &who.actor(), name_of(&fields), true)
        .await
        .map(|a| format!("{} disabled", a.name));
    back("/accounts", outcome)
}

async fn enable(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let outcome = ops::console::set_disabled(&console.ops(), &who.actor(), name_of(&fields), false)
        .await
        .map(|a| format!("{} enabled", a.name));
    back("/accounts", outcome)
}

async fn unlock(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let outcome = ops::console::unlock(&console.ops(), &who.actor(), name_of(&fields))
        .await
        .map(|a| format!("{} unlocked", a.name));
    back("/accounts", outcome)
}

async fn remove(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let outcome = ops::console::remove_account(&console.ops(), &who.actor(), name_of(&fields))
        .await
        .map(|a| format!("{} removed", a.name));
    back("/accounts", outcome)
}

async fn create_token(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let role = match role_of(&fields) {
        Ok(role) => role,
        Err(e) => return back("/accounts", Err(e)),
    };
    let input = CreateToken {
        account: one_of(&fields, "account").unwrap_or_default().to_string(),
        label: one_of(&fields, "label").unwrap_or_default().to_string(),
        role,
    };
    match ops::console::create_token(&console.ops(), &who.actor(), input).await {
        Ok(created) => shown_once(
            &who,
            &format!(
                "token {} created for {} ({})",
                created.view.id, created.view.account, created.view.role
            ),
            html! { p { "API token: " span.mono #api-token { (created.token) } } },
        ),
        Err(e) => back("/accounts", Err(e)),
    }
}

async fn revoke_token(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let outcome = match one_of(&fields, "id").and_then(|id| id.trim().parse::<i64>().ok()) {
        Some(id) => ops::console::revoke_token(&console.ops(), &who.actor(), id)
            .await
            .map(|t| format!("token {} revoked", t.id)),
        None => Err(OpError::Invalid("the form names no token id".into())),
    };
    back("/accounts", outcome)
}

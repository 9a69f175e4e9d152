//! Logging in and out: the login page (local break-glass accounts; single sign-on
//! when configured), the session cookie, logout.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use maud::html;
use secrecy::{ExposeSecret, SecretString};

use super::guard::{SESSION_COOKIE, session_cookie};
use super::{ClientIp, Console, Who, layout};
use crate::ops::console::{self, LoginAttempt, LoginError, StartedSession};

pub fn router() -> Router<Arc<Console>> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/saml/metadata", get(saml_metadata))
        .route("/saml/login", get(saml_login))
        .route("/saml/acs", axum::routing::post(saml_acs))
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    next: Option<String>,
    error: Option<String>,
}

/// Only a local path may be the target after login (no open redirect): it starts with
/// one `/` and holds only URL characters that need no escaping — no whitespace or
/// control characters (browsers drop tabs, so `/\t/host` would become `//host`), no
/// backslash, nothing a `Location` header cannot carry.
fn local_target(next: Option<&str>) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/_-.~?=&%+:@,".contains(c);
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && path.len() <= 2048
                && path.chars().all(safe) =>
        {
            path.to_string()
        }
        _ => "/".into(),
    }
}

async fn login_page(
    State(console): State<Arc<Console>>,
    Query(query): Query<LoginQuery>,
) -> impl IntoResponse {
    let next = local_target(query.next.as_deref());
    layout::bare(
        "Log in · Anmelden",
        html! {
            (layout::flash(None, query.error.as_deref()))
            @if console.saml.is_some() {
                fieldset {
                    legend { "Single sign-on" }
                    p { a id="sso" href="/saml/login" { "Log in with your organisation's identity provider · Anmeldung über den Identity Provider" } }
                }
            }
            form method="post" action="/login" {
                fieldset {
                    legend { "Local account (break-glass)" }
                    input type="hidden" name="next" value=(next);
                    p { label { "Name " input name="name" id="name" autocomplete="username" required; } }
                    p { label { "Password " input name="password" id="password" type="password" autocomplete="current-password" required; } }
                    p { label { "TOTP code (if set up) " input name="code" id="code" inputmode="numeric" autocomplete="one-time-code"; } }
                    button type="submit" id="login" { "Log in · Anmelden" }
                }
            }
        },
    )
}

#[derive(serde::Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    next: Option<String>,
}

/// The `Set-Cookie` value of a new session.
pub fn session_cookie_header(session: &StartedSession, max_age: u64) -> String {
    format!(
        "{SESSION_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}",
        session.token.expose_secret()
    )
}

/// Answers a started session: the cookie, then the target page.
pub fn logged_in(session: &StartedSession, target: &str) -> Response {
    let max_age = u64::try_from(session.expires_at - crate::store::unix_now()).unwrap_or(0);
    let mut response = Redirect::to(target).into_response();
    if let Ok(value) = session_cookie_header(session, max_age).parse() {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn login(
    State(console): State<Arc<Console>>,
    ClientIp(client): ClientIp,
    Form(form): Form<LoginForm>,
) -> Response {
    let target = local_target(form.next.as_deref());
    let attempt = LoginAttempt {
        name: form.name,
        password: SecretString::from(form.password),
        code: form.code.filter(|c| !c.trim().is_empty()),
    };
    match console::login(&console.ops(), &console.throttle, client, attempt).await {
        Ok(session) => logged_in(&session, &target),
        Err(e) => {
            let status = match &e {
                LoginError::Refused => StatusCode::UNAUTHORIZED,
                LoginError::Throttled => StatusCode::TOO_MANY_REQUESTS,
                LoginError::Gateway(op) => op.http_status(),
            };
            let text = match &e {
                LoginError::Gateway(op) if status.is_server_error() => {
                    tracing::error!(error = %op, "console: login failed");
                    "The gateway could not check the login; try again.".to_string()
                }
                other => other.to_string(),
            };
            let page = layout::bare(
                "Log in · Anmelden",
                html! {
                    p.flash.err role="alert" id="login-error" { (text) }
                    p { a href={ "/login?next=" (urlencode(&target)) } { "Try again" } }
                },
            );
            (status, page).into_response()
        }
    }
}

fn no_sso() -> Response {
    (
        StatusCode::NOT_FOUND,
        layout::error_page(
            StatusCode::NOT_FOUND,
            "Single sign-on is not configured ([saml]).",
        ),
    )
        .into_response()
}

/// `GET /saml/metadata`: our SP metadata, for the IdP's administrator.
async fn saml_metadata(State(console): State<Arc<Console>>) -> Response {
    let Some(saml) = &console.saml else {
        return no_sso();
    };
    match saml.metadata_xml() {
        Ok(xml) => (
            [(header::CONTENT_TYPE, "application/samlmetadata+xml")],
            xml,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "SAML metadata");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                layout::error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The SP metadata could not be made; the log says why.",
                ),
            )
                .into_response()
        }
    }
}

/// `GET /saml/login`: SP-initiated login, a redirect to the IdP with a fresh request.
async fn saml_login(State(console): State<Arc<Console>>, ClientIp(client): ClientIp) -> Response {
    let Some(saml) = &console.saml else {
        return no_sso();
    };
    if !console.saml_requests.admit(client) {
        tracing::warn!(%client, "SAML login requests throttled");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            layout::error_page(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many login requests from this address; try again in a minute.",
            ),
        )
            .into_response();
    }
    match saml.login_redirect(&console.ops()).await {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "SAML login request");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                layout::error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The login request could not be made; try again.",
                ),
            )
                .into_response()
        }
    }
}

#[derive(serde::Deserialize)]
struct AcsForm {
    #[serde(rename = "SAMLResponse", default)]
    saml_response: String,
    #[serde(rename = "RelayState", default)]
    relay_state: Option<String>,
}

/// `POST /saml/acs`: the IdP's answer (HTTP-POST binding). A valid response starts a
/// session with the mapped role; a refused one shows why (it is audited).
async fn saml_acs(
    State(console): State<Arc<Console>>,
    ClientIp(client): ClientIp,
    form: Result<Form<AcsForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Some(saml) = &console.saml else {
        return no_sso();
    };
    let Ok(Form(form)) = form else {
        return (
            StatusCode::BAD_REQUEST,
            layout::error_page(StatusCode::BAD_REQUEST, "The IdP's answer is not a form."),
        )
            .into_response();
    };
    let ops = console.ops();
    let login = match saml
        .consume(
            &ops,
            client,
            &form.saml_response,
            form.relay_state.as_deref(),
        )
        .await
    {
        Ok(login) => login,
        Err(refusal) => {
            let status = refusal.http_status();
            let page = layout::bare(
                "Log in · Anmelden",
                html! {
                    p.flash.err role="alert" id="login-error" { (refusal.to_string()) }
                    p { a href="/login" { "Back to the login page" } }
                },
            );
            return (status, page).into_response();
        }
    };
    match console::start_session(
        &ops,
        &login.name_id,
        login.role,
        console::SessionSource::Saml,
        client,
        login.not_on_or_after,
    )
    .await
    {
        Ok(session) => logged_in(&session, "/"),
        Err(e) => super::Problem::from(e).into_response(),
    }
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `POST /logout` (in the viewer group: any logged-in caller).
pub async fn logout(State(console): State<Arc<Console>>, who: Who, headers: HeaderMap) -> Response {
    if let Some(token) = session_cookie(&headers)
        && let Err(e) = console::logout(&console.ops(), &who.actor(), &token).await
    {
        return super::Problem::from(e).into_response();
    }
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) =
        format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0").parse()
    {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::local_target;

    #[test]
    fn only_a_plain_local_path_is_a_target_after_login() {
        assert_eq!(
            local_target(Some("/mailboxes?state=active")),
            "/mailboxes?state=active"
        );
        for hostile in [
            "//evil.example/",
            "/\\evil.example",
            "/\t/evil.example",
            "https://evil.example/",
            "/a\r\nSet-Cookie: x=y",
            "/ümlaut",
            "",
        ] {
            assert_eq!(local_target(Some(hostile)), "/", "{hostile:?}");
        }
        assert_eq!(local_target(None), "/");
    }
}

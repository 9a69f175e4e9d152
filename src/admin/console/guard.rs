//! The console's middleware: security headers, who is calling, same-origin and CSRF
//! checks, and the role gate of each route group.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq;

use super::{Console, Problem};
use crate::ops::Role;
use crate::ops::console::{self, Caller, CallerVia};

/// The session cookie. `__Host-`: the browser keeps it only when Secure, for this host
/// and path `/`, so no sibling host can plant or read it.
pub const SESSION_COOKIE: &str = "__Host-smimegate-session";
/// Largest form body read for its CSRF field.
const MAX_FORM_BYTES: usize = 1024 * 1024;
/// Largest request body the console reads: axum's own extractor limit, so every form,
/// JSON document and upload the console takes fits.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Paths a cross-site POST may reach: the IdP posts the SAML response to the ACS.
const CROSS_SITE_POSTS: &[&str] = &["/saml/acs"];
/// Paths that start a new session rather than act in the current one: they need the
/// same origin, not the current session's CSRF token.
const SESSION_STARTS: &[&str] = &["/login"];

pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: &'static str, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, "strict-transport-security", "max-age=31536000");
    set(
        headers,
        "content-security-policy",
        "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "x-frame-options", "DENY");
    // Not `no-referrer`: under it a browser sends `Origin: null` with every form POST,
    // and `same_origin` refuses the console's own forms (seen in tests/browser).
    // `same-origin` sends nothing to other sites and the true Origin to the console.
    set(headers, "referrer-policy", "same-origin");
    set(headers, "cross-origin-opener-policy", "same-origin");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, "cache-control", "no-store");
    }
    response
}

/// Reads the whole request body before anything answers, so that an early answer (401,
/// 403, 415, 422) leaves the connection usable. hyper closes a keep-alive connection
/// whose request body was still unread when the answer went out, and when it decides
/// that after the response head is written the head does not say `Connection: close`:
/// a client that reuses the connection (requests, reqwest, browsers) then gets a reset
/// instead of an answer (schemathesis saw "SSL EOF" in CI). A body over
/// [`MAX_BODY_BYTES`] is 413, one that cannot be read 400, both with `Connection: close`.
pub async fn whole_body_first(request: Request, next: Next) -> Response {
    let headers = request.headers();
    if !headers.contains_key(header::CONTENT_LENGTH)
        && !headers.contains_key(header::TRANSFER_ENCODING)
    {
        return next.run(request).await;
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return closing(too_large());
    }
    let (parts, body) = request.into_parts();
    match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) => {
            let e = e.into_inner();
            if e.is::<http_body_util::LengthLimitError>() {
                closing(too_large())
            } else {
                tracing::debug!(error = %e, path = %parts.uri.path(), "console: request body unreadable");
                closing(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                ))
            }
        }
    }
}

/// `problem` with `Connection: close`: the rest of the request is not read, so the
/// connection cannot carry another one.
fn closing(problem: Problem) -> Response {
    let mut response = problem.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The session cookie's value in `headers`, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Puts the [`Caller`] into the request's extensions when a session cookie or an API
/// token names a live one. A database failure is a 503, never "not logged in".
pub async fn identify(
    State(console): State<Arc<Console>>,
    mut request: Request,
    next: Next,
) -> Response {
    if request.uri().path().starts_with("/api/") {
        request.extensions_mut().insert(ApiRequest);
    }
    let ops = console.ops();
    let found = if let Some(token) = bearer(request.headers()) {
        console::token_caller(&ops, token).await
    } else if let Some(cookie) = session_cookie(request.headers()) {
        console::session_caller(&ops, &cookie).await
    } else {
        Ok(None)
    };
    let account = match found {
        Ok(Some(caller)) => {
            let account = caller.account.clone();
            request.extensions_mut().insert(caller);
            account
        }
        Ok(None) => String::new(),
        Err(e) => return Problem::from(e).into_response(),
    };
    let span = tracing::info_span!(
        "console",
        method = %request.method(),
        path = %request.uri().path(),
        account = %account
    );
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    span.in_scope(|| tracing::debug!(status = response.status().as_u16(), "answered"));
    response
}

/// Marks a request for the JSON API (set before nesting strips the `/api/v1`
/// prefix), so that refusals are problem details rather than pages.
#[derive(Debug, Clone, Copy)]
struct ApiRequest;

fn is_api(request: &Request) -> bool {
    request.extensions().get::<ApiRequest>().is_some()
}

/// Refuses state-changing requests from another origin, and a session's changes
/// without its CSRF token. Safe methods pass.
pub async fn same_origin(
    State(console): State<Arc<Console>>,
    request: Request,
    next: Next,
) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let path = request.uri().path().to_string();
    if CROSS_SITE_POSTS.contains(&path.as_str()) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if let Some(origin) = origin
        && origin != console.origin
    {
        tracing::warn!(%path, origin, "console: cross-origin change refused");
        return refuse(&request, "the request comes from another site");
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        tracing::warn!(%path, "console: cross-site change refused");
        return refuse(&request, "the request comes from another site");
    }
    if SESSION_STARTS.contains(&path.as_str()) {
        return next.run(request).await;
    }
    let expected = match request.extensions().get::<Caller>() {
        Some(Caller {
            via: CallerVia::Session { csrf_token, .. },
            ..
        }) => csrf_token.clone(),
        // API tokens carry no ambient authority; anonymous requests reach only the
        // login forms and are checked there.
        _ => return next.run(request).await,
    };
    let (request, sent) = match csrf_sent(request).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let matches = sent
        .as_deref()
        .is_some_and(|sent| bool::from(sent.as_bytes().ct_eq(expected.as_bytes())));
    if !matches {
        tracing::warn!(%path, "console: change without a valid CSRF token refused");
        return refuse(
            &request,
            "the CSRF token is missing or wrong; reload the page",
        );
    }
    next.run(request).await
}

fn refuse(request: &Request, detail: &str) -> Response {
    if is_api(request) {
        Problem::forbidden(detail).into_response()
    } else {
        (
            StatusCode::FORBIDDEN,
            super::layout::error_page(StatusCode::FORBIDDEN, detail),
        )
            .into_response()
    }
}

/// The CSRF token the request carries (header, query parameter or urlencoded form
/// field) and the request, its body restored when it was read.
async fn csrf_sent(request: Request) -> Result<(Request, Option<String>), Response> {
    if let Some(value) = request
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
    {
        let value = value.to_string();
        return Ok((request, Some(value)));
    }
    if let Some(query) = request.uri().query()
        && let Some((_, value)) =
            form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "csrf")
    {
        let value = value.into_owned();
        return Ok((request, Some(value)));
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Ok((request, None));
    }
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, MAX_FORM_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return Err(
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large")
                    .into_response(),
            );
        }
    };
    let sent = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned());
    Ok((Request::from_parts(parts, Body::from(bytes)), sent))
}

/// The role gate of a route group: no caller → 401 (API) or the login page; a caller
/// whose role is below `needed` → 403.
pub async fn require(State(needed): State<Role>, request: Request, next: Next) -> Response {
    match request.extensions().get::<Caller>() {
        None if is_api(&request) => Problem::unauthenticated().into_response(),
        None => {
            let back = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            let target = form_urlencoded::Serializer::new(String::new())
                .append_pair("next", &back)
                .finish();
            Redirect::to(&format!("/login?{target}")).into_response()
        }
        Some(caller) if !caller.role.allows(needed) => {
            tracing::warn!(account = %caller.account, role = %caller.role, %needed, path = %request.uri().path(), "console: role too low");
            let detail = format!(
                "this needs the {needed} role; {} has {}",
                caller.account, caller.role
            );
            refuse(&request, &detail)
        }
        Some(_) => next.run(request).await,
    }
}

/// Wraps `router` in the gate of `role`.
pub fn gate<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
    role: Role,
) -> axum::Router<S> {
    if !router.has_routes() {
        return router;
    }
    router.route_layer(axum::middleware::from_fn_with_state(role, require))
}

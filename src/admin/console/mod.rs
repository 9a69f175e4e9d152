//! The admin console (HTTPS): server-rendered pages and the JSON API under `/api/v1`,
//! both calling the operation layer (`crate::ops`) and nothing else.
//!
//! Every request passes, in order:
//! 1. [`guard::security_headers`]: HSTS, CSP, no framing, no sniffing, no referrer,
//!    no caching of authenticated answers;
//! 2. [`guard::identify`]: the caller from the session cookie or an API token
//!    (`Authorization: Bearer`), put into the request's extensions;
//! 3. [`guard::same_origin`]: a state-changing request from another origin is refused
//!    (except the SAML ACS, which the IdP posts cross-site), and a session's change
//!    must carry its CSRF token (form field `csrf`, header `X-CSRF-Token` or, for file
//!    uploads, the `csrf` query parameter);
//! 4. the role gate of the route group ([`guard::require`]): every route is in exactly
//!    one group — public, viewer, editor, admin — so none can be added without one.

pub mod api;
pub mod guard;
mod layout;
mod login;
pub(crate) mod pages;
mod problem;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

pub use problem::Problem;

use crate::app::App;
use crate::ops::Ops;
use crate::ops::console::{Caller, CallerVia, LoginThrottle};

/// What every console handler works with.
pub struct Console {
    pub app: Arc<App>,
    pub throttle: LoginThrottle,
    /// `scheme://host[:port]` browsers reach the console at (the Origin check).
    pub origin: String,
    /// Single sign-on, when `[saml]` names an IdP.
    pub saml: Option<crate::admin::saml::SamlSp>,
    /// SAML login requests per client address and minute (each is a database row
    /// until it expires).
    pub saml_requests: LoginThrottle,
}

/// SAML login requests one client address may start a minute.
const SAML_REQUESTS_PER_MINUTE: u32 = 30;

impl Console {
    /// The console of `app`; fails when `[saml]` is set but unusable (e.g. IdP metadata
    /// without a signing certificate), so a misconfigured SSO is found at start.
    pub fn new(app: Arc<App>, origin: String) -> Result<Self, crate::admin::saml::SamlConfigError> {
        let throttle = LoginThrottle::new(app.settings.config.console.failed_logins_per_minute);
        let saml = crate::admin::saml::SamlSp::from_settings(&app.settings)?;
        Ok(Console {
            app,
            throttle,
            origin,
            saml,
            saml_requests: LoginThrottle::new(SAML_REQUESTS_PER_MINUTE),
        })
    }

    pub fn ops(&self) -> Ops<'_> {
        self.app.ops()
    }
}

/// The origin browsers use: `[console].public_url`, else `https://` + the gateway's
/// host name + the port the console listens on.
pub fn origin(settings: &crate::config::Settings, bound: SocketAddr) -> String {
    let configured = settings.config.console.public_url.trim_end_matches('/');
    if !configured.is_empty() {
        // Only scheme, host and port count for an Origin.
        let rest = configured.trim_start_matches("https://");
        let authority = rest.split('/').next().unwrap_or(rest);
        return format!("https://{authority}");
    }
    let host = &settings.config.gateway.hostname;
    match bound.port() {
        443 => format!("https://{host}"),
        port => format!("https://{host}:{port}"),
    }
}

/// The whole console: pages, API, OpenAPI document, login and logout.
pub fn router(console: Arc<Console>) -> Router {
    let (api, _) = api::router().split_for_parts();
    Router::new()
        .merge(login::router())
        .merge(pages::router())
        .nest("/api/v1", api)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            in_force_at_once,
        ))
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            guard::same_origin,
        ))
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            guard::identify,
        ))
        .layer(axum::middleware::from_fn(guard::whole_body_first))
        .layer(axum::middleware::from_fn(guard::security_headers))
        .with_state(console)
}

/// After a request that may have changed something, this node reads the configuration
/// version at once, so the change counts for its next SMTP transaction (the other
/// nodes learn it by NOTIFY, or the SQLite poll, within a second).
async fn in_force_at_once(
    axum::extract::State(console): axum::extract::State<Arc<Console>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let changes = !request.method().is_safe();
    let response = next.run(request).await;
    if changes && let Err(e) = console.app.store.refresh_config_version().await {
        tracing::warn!(error = %e, "cannot read the configuration version after a change");
    }
    response
}

/// Unknown paths: problem details under `/api/`, a page elsewhere.
async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    if uri.path().starts_with("/api/") {
        Problem::new(StatusCode::NOT_FOUND, "no such API route").into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            layout::error_page(StatusCode::NOT_FOUND, "There is no such page."),
        )
            .into_response()
    }
}

/// The caller of a request that passed a role gate, with the client's address.
#[derive(Debug, Clone)]
pub struct Who {
    pub caller: Caller,
    pub client: IpAddr,
}

impl Who {
    /// The audit log's name for this caller.
    pub fn actor(&self) -> crate::ops::Actor {
        self.caller.actor(self.client)
    }

    /// The CSRF token the pages put into their forms (none for API tokens).
    pub fn csrf(&self) -> &str {
        match &self.caller.via {
            CallerVia::Session { csrf_token, .. } => csrf_token,
            CallerVia::ApiToken { .. } => "",
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Who {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let client = client_address(parts, state).await;
        let caller = parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(Problem::unauthenticated)?;
        Ok(Who { caller, client })
    }
}

/// The client's address (loopback when the connection carries none, as in unit tests).
pub async fn client_address<S: Send + Sync>(parts: &mut Parts, state: &S) -> IpAddr {
    ConnectInfo::<ClientAddr>::from_request_parts(parts, state)
        .await
        .map(|ConnectInfo(ClientAddr(addr))| addr.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// The peer address of a console connection, as axum's `ConnectInfo` carries it.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, crate::admin::https::TlsListener>,
    > for ClientAddr
{
    fn connect_info(
        stream: axum::serve::IncomingStream<'_, crate::admin::https::TlsListener>,
    ) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// The client's IP address, for handlers outside the role gates (login).
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_address(parts, state).await))
    }
}

//! The JSON API under `/api/v1`: everything the pages do, for automation (API tokens)
//! and for the pages' own scripts if they ever need one. Each handler parses, calls
//! one operation and answers its output as JSON or its error as problem details. The
//! OpenAPI 3.1 document is generated from these handlers (utoipa) and served at
//! `/api/v1/openapi.json`.

mod accounts;
mod certificates;
mod rules;
mod settings;

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Console, Problem, Who};
use crate::ops::console::{
    AccountView, AddedAccount, CallerVia, CreateToken, CreatedToken, TokenView,
};
use crate::ops::{self, Role};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "smimegate console API",
        description = "Every change the console makes, as JSON. Authenticate with \
                       `Authorization: Bearer <API token>` (admin: `smimegate admin token create`). \
                       Errors are RFC 9457 problem details."
    ),
    // Types only query parameters name: utoipa-axum collects bodies' schemas, not
    // those of parameters, and every `$ref` must resolve.
    components(schemas(Problem, crate::store::CryptoResult)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub(super) type ApiRouter = OpenApiRouter<Arc<Console>>;

/// Makes the document say what the handlers answer on errors (schemathesis checks it,
/// tests/console/schema.rs): every error response is `application/problem+json`, an
/// operation with a JSON body may answer 400 (malformed), 413 (too large), 415 (not
/// JSON) and 422 (wrong shape) from [`ApiJson`], and one with path parameters 400 from
/// [`ApiPath`]. Applied to the whole document, so routes added later are covered.
fn document_problems(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{Operation, ParameterIn};
    use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};

    const PROBLEM: &str = "application/problem+json";
    let problem = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    PROBLEM,
                    Content::new(Some(Ref::from_schema_name("Problem"))),
                )
                .build(),
        )
    };
    let fix = |operation: &mut Operation, path_parameters: bool| {
        for (status, response) in operation.responses.responses.iter_mut() {
            let RefOr::T(response) = response else {
                continue;
            };
            if status.starts_with(['4', '5'])
                && let Some(content) = response.content.shift_remove("application/json")
            {
                response.content.insert(PROBLEM.into(), content);
            }
        }
        let mut add = |status: &str, description: &str| {
            operation
                .responses
                .responses
                .entry(status.into())
                .or_insert_with(|| problem(description));
        };
        if operation.request_body.is_some() {
            add("400", "The body is not well-formed JSON");
            add("413", "The body is too large");
            add("415", "The body is not declared as application/json");
            add("422", "The body does not have the documented shape");
        }
        let has_path_parameters = path_parameters
            || operation
                .parameters
                .iter()
                .flatten()
                .any(|p| p.parameter_in == ParameterIn::Path);
        if has_path_parameters {
            add("400", "A path parameter is not of the documented type");
        }
    };
    for (_, item) in document.paths.paths.iter_mut() {
        let path_parameters = item
            .parameters
            .iter()
            .flatten()
            .any(|p| p.parameter_in == ParameterIn::Path);
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            fix(operation, path_parameters);
        }
    }
}

/// The API's routes, each behind its role's gate, with the OpenAPI document.
pub fn router() -> ApiRouter {
    let viewer = OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(list_mailboxes))
        .routes(routes!(show_mailbox))
        .routes(routes!(dashboard))
        .routes(routes!(messages))
        .routes(routes!(messages_csv))
        .routes(routes!(audit_log))
        .merge(certificates::viewer())
        .merge(rules::viewer())
        .merge(settings::viewer())
        .route_layer(axum::middleware::from_fn_with_state(
            Role::Viewer,
            super::guard::require,
        ));
    let editor = OpenApiRouter::new()
        .routes(routes!(activate_mailboxes))
        .routes(routes!(deactivate_mailboxes))
        .routes(routes!(renew_mailbox))
        .routes(routes!(import_pkcs12))
        .merge(certificates::editor())
        .merge(rules::editor())
        .route_layer(axum::middleware::from_fn_with_state(
            Role::Editor,
            super::guard::require,
        ));
    let admin = OpenApiRouter::new()
        .routes(routes!(list_accounts, add_account))
        .routes(routes!(remove_account))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .merge(accounts::admin())
        .merge(certificates::admin())
        .merge(settings::admin())
        .route_layer(axum::middleware::from_fn_with_state(
            Role::Admin,
            super::guard::require,
        ));
    let (router, mut document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(viewer)
        .merge(editor)
        .merge(admin)
        .split_for_parts();
    document.servers = Some(vec![utoipa::openapi::Server::new("/api/v1")]);
    document_problems(&mut document);
    let document = Arc::new(document);
    OpenApiRouter::from(router).route(
        "/openapi.json",
        axum::routing::get(move || {
            let document = document.clone();
            async move { Json(document.as_ref().clone()) }
        }),
    )
}

/// `Json` whose rejections (malformed body, wrong content type) are problem details.
pub struct ApiJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Problem> {
        Json::<T>::from_request(request, state)
            .await
            .map(|Json(value)| ApiJson(value))
            .map_err(|rejection| Problem::new(rejection.status(), rejection.body_text()))
    }
}

/// `Path` whose rejections are problem details.
pub struct ApiPath<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Problem> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection| Problem::new(rejection.status(), rejection.body_text()))
    }
}

/// `Query` whose rejections are problem details.
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Problem> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection| Problem::new(rejection.status(), rejection.body_text()))
    }
}

fn answer<T: serde::Serialize>(result: Result<T, ops::OpError>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(e) => Problem::from(e).into_response(),
    }
}

fn created<T: serde::Serialize>(result: Result<T, ops::OpError>) -> Response {
    match result {
        Ok(value) => (StatusCode::CREATED, Json(value)).into_response(),
        Err(e) => Problem::from(e).into_response(),
    }
}

/// Who the caller is.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Me {
    account: String,
    role: Role,
    /// `session` (browser) or `token` (API token).
    via: String,
}

#[utoipa::path(get, path = "/me", tag = "session",
    responses((status = 200, body = Me), (status = 401, body = Problem)))]
async fn me(who: Who) -> Json<Me> {
    Json(Me {
        account: who.caller.account.clone(),
        role: who.caller.role,
        via: match who.caller.via {
            CallerVia::Session { .. } => "session".into(),
            CallerVia::ApiToken { .. } => "token".into(),
        },
    })
}

/// The dashboard's figures: seats, the last 24 hours' messages by direction and crypto
/// result, certificates expiring within 30 days, next-hop errors, and the token.
#[utoipa::path(get, path = "/dashboard", tag = "dashboard",
    responses((status = 200, body = DashboardAnswer), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn dashboard(State(console): State<Arc<Console>>, who: Who) -> Response {
    let summary = match ops::dashboard::summary(&console.ops()).await {
        Ok(summary) => summary,
        Err(e) => return Problem::from(e).into_response(),
    };
    let health = console.app.hsm.call("health", |hsm| hsm.health()).await;
    let ok = health.as_ref().is_ok_and(|t| t.logged_in);
    // The token's details are the admin's; everyone sees whether it works.
    let details = who.caller.role.allows(Role::Admin).then(|| match health {
        Ok(t) => TokenDetails {
            label: t.label,
            manufacturer: t.manufacturer,
            model: t.model,
            sessions_in_use: t.sessions.in_use as u64,
            sessions_capacity: t.sessions.capacity as u64,
            error: None,
        },
        Err(e) => TokenDetails {
            label: console.app.settings.config.hsm.token_label.clone(),
            manufacturer: String::new(),
            model: String::new(),
            sessions_in_use: 0,
            sessions_capacity: 0,
            error: Some(e.to_string()),
        },
    });
    Json(DashboardAnswer {
        summary,
        token: TokenStatus { ok, details },
    })
    .into_response()
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct DashboardAnswer {
    #[serde(flatten)]
    summary: ops::dashboard::Dashboard,
    token: TokenStatus,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct TokenStatus {
    /// The token answers and the gateway is logged in.
    ok: bool,
    /// For admins only.
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<TokenDetails>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct TokenDetails {
    label: String,
    manufacturer: String,
    model: String,
    sessions_in_use: u64,
    sessions_capacity: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The email overview: the message log, newest first, filtered and paged.
#[utoipa::path(get, path = "/messages", tag = "messages", params(ops::messages::MessageQuery),
    responses((status = 200, body = ops::messages::MessagePage), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn messages(State(console): State<Arc<Console>>, RawQuery(raw): RawQuery) -> Response {
    match super::pages::messages::lenient::<ops::messages::MessageQuery>(raw.as_deref()) {
        Ok(query) => answer(ops::messages::search(&console.ops(), query).await),
        Err(p) => p.into_response(),
    }
}

/// The same messages as CSV (all pages, at most 100 000 rows).
#[utoipa::path(get, path = "/messages.csv", tag = "messages", params(ops::messages::MessageQuery),
    responses((status = 200, content_type = "text/csv", body = String), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn messages_csv(State(console): State<Arc<Console>>, RawQuery(raw): RawQuery) -> Response {
    match super::pages::messages::lenient::<ops::messages::MessageQuery>(raw.as_deref()) {
        Ok(query) => super::pages::messages::csv_answer(&console, query).await,
        Err(p) => p.into_response(),
    }
}

/// The audit log, newest first, filtered and paged.
#[utoipa::path(get, path = "/audit", tag = "audit", params(ops::audit::AuditQuery),
    responses((status = 200, body = ops::audit::AuditPage), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn audit_log(State(console): State<Arc<Console>>, RawQuery(raw): RawQuery) -> Response {
    match super::pages::messages::lenient::<ops::audit::AuditQuery>(raw.as_deref()) {
        Ok(query) => answer(ops::audit::search(&console.ops(), query).await),
        Err(p) => p.into_response(),
    }
}

/// Every known mailbox with its state, the certificate it signs with, and the seats
/// in use.
#[utoipa::path(get, path = "/mailboxes", tag = "mailboxes",
    responses((status = 200, body = ops::mailboxes::MailboxList), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_mailboxes(State(console): State<Arc<Console>>) -> Response {
    answer(ops::mailboxes::list(&console.ops()).await)
}

/// The request to activate mailboxes: exactly one of `addresses`, `domain`, `all`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
struct ActivateRequest {
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    all: bool,
    /// Activate even where the domain's MX does not point at the gateway.
    #[serde(default)]
    skip_mx_check: bool,
}

/// Activates mailboxes (one seat each): a key in the token and a certificate each.
#[utoipa::path(post, path = "/mailboxes/activate", tag = "mailboxes", request_body = ActivateRequest,
    responses((status = 200, body = ops::mailboxes::ActivationReport), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
async fn activate_mailboxes(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiJson(input): ApiJson<ActivateRequest>,
) -> Response {
    let input = ops::mailboxes::ActivateMany {
        addresses: input.addresses,
        domain: input.domain,
        all: input.all,
        key: None,
        skip_mx_check: input.skip_mx_check,
    };
    answer(ops::mailboxes::activate_many(&console.app, &who.actor(), input).await)
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
struct AddressList {
    addresses: Vec<String>,
}

/// Deactivates mailboxes: certificates revoked, keys retired, seat held while revoke
/// pending.
#[utoipa::path(post, path = "/mailboxes/deactivate", tag = "mailboxes", request_body = AddressList,
    responses((status = 200, body = ops::mailboxes::DeactivationReport), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn deactivate_mailboxes(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiJson(input): ApiJson<AddressList>,
) -> Response {
    answer(ops::mailboxes::deactivate(&console.app, &who.actor(), &input.addresses).await)
}

/// Local console accounts.
#[utoipa::path(get, path = "/accounts", tag = "accounts",
    responses((status = 200, body = Vec<AccountView>), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_accounts(State(console): State<Arc<Console>>) -> Response {
    answer(ops::console::list_accounts(&console.ops()).await)
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
struct NewAccount {
    name: String,
    role: Role,
    password: String,
    #[serde(default)]
    totp: bool,
}

/// Adds a local (break-glass) account.
#[utoipa::path(post, path = "/accounts", tag = "accounts", request_body = NewAccount,
    responses((status = 201, body = AddedAccount), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn add_account(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiJson(input): ApiJson<NewAccount>,
) -> Response {
    let input = ops::console::AddAccount {
        name: input.name,
        role: input.role,
        password: input.password.into(),
        totp: input.totp,
    };
    created(ops::console::add_account(&console.ops(), &who.actor(), input).await)
}

/// Removes a local account, ends its sessions and revokes its API tokens.
#[utoipa::path(delete, path = "/accounts/{name}", tag = "accounts",
    params(("name" = String, Path, description = "account name")),
    responses((status = 200, body = AccountView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn remove_account(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiPath(name): ApiPath<String>,
) -> Response {
    answer(ops::console::remove_account(&console.ops(), &who.actor(), &name).await)
}

/// API tokens (never their secrets).
#[utoipa::path(get, path = "/tokens", tag = "tokens",
    responses((status = 200, body = Vec<TokenView>), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_tokens(State(console): State<Arc<Console>>) -> Response {
    answer(ops::console::list_tokens(&console.ops()).await)
}

/// Creates an API token for a local account; the token is in the answer only.
#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn create_token(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiJson(input): ApiJson<CreateToken>,
) -> Response {
    created(ops::console::create_token(&console.ops(), &who.actor(), input).await)
}

/// Revokes an API token.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens",
    params(("id" = i64, Path, description = "token id")),
    responses((status = 200, body = TokenView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem)))]
async fn revoke_token(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiPath(id): ApiPath<i64>,
) -> Response {
    answer(ops::console::revoke_token(&console.ops(), &who.actor(), id).await)
}

/// One mailbox: its state, its certificates (newest first) and its keys.
#[utoipa::path(get, path = "/mailboxes/{address}", tag = "mailboxes",
    params(("address" = String, Path, description = "mailbox address")),
    responses((status = 200, body = ops::mailboxes::MailboxDetail), (status = 401, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn show_mailbox(
    State(console): State<Arc<Console>>,
    ApiPath(address): ApiPath<String>,
) -> Response {
    answer(ops::mailboxes::show(&console.ops(), &address).await)
}

/// Renews an active mailbox's certificate now: a new key in the token, a new
/// certificate from the built-in CA.
#[utoipa::path(post, path = "/mailboxes/{address}/renew", tag = "mailboxes",
    params(("address" = String, Path, description = "mailbox address")),
    responses((status = 200, body = ops::lifecycle::Renewed), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn renew_mailbox(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiPath(address): ApiPath<String>,
) -> Response {
    answer(ops::lifecycle::renew(&console.app, &who.actor(), &address).await)
}

/// A PKCS#12 identity to import for a mailbox.
#[derive(serde::Deserialize, utoipa::ToSchema)]
struct Pkcs12Request {
    /// The PKCS#12 file, base64 (standard alphabet, padded).
    pkcs12: String,
    /// The file's password.
    #[serde(default)]
    password: String,
}

/// Imports a PKCS#12 identity (key into the token, certificate and chain into the
/// database); the mailbox becomes active. The key never leaves the token again.
#[utoipa::path(post, path = "/mailboxes/{address}/pkcs12", tag = "mailboxes", request_body = Pkcs12Request,
    params(("address" = String, Path, description = "mailbox address")),
    responses((status = 201, body = ops::identities::Imported), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
async fn import_pkcs12(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiPath(address): ApiPath<String>,
    ApiJson(input): ApiJson<Pkcs12Request>,
) -> Response {
    use base64::Engine;
    let file = match base64::engine::general_purpose::STANDARD.decode(input.pkcs12.trim()) {
        Ok(file) => file,
        Err(e) => {
            return Problem::from(ops::OpError::Invalid(format!("pkcs12 is not base64: {e}")))
                .into_response();
        }
    };
    let request = ops::identities::ImportPkcs12 {
        address,
        file,
        password: input.password.into(),
    };
    created(ops::identities::import_pkcs12(&console.app, &who.actor(), request).await)
}

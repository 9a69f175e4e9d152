//! Local accounts beyond add/remove (in the parent module): role, disable/enable,
//! unlock, TOTP on/off, new password (admin).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, ApiRouter, answer};
use crate::admin::console::{Console, Problem, Who};
use crate::ops::console::{AccountView, AddedAccount};
use crate::ops::{self, Role};

pub fn admin() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(set_role))
        .routes(routes!(disable_account))
        .routes(routes!(enable_account))
        .routes(routes!(unlock_account))
        .routes(routes!(set_totp))
        .routes(routes!(set_password))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct RoleRequest {
    role: Role,
}

/// Changes an account's role.
#[utoipa::path(put, path = "/accounts/{name}/role", tag = "accounts", request_body = RoleRequest,
    params(("name" = String, Path, description = "account name")),
    responses((status = 200, body = AccountView), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn set_role(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiPath(name): ApiPath<String>,
    ApiJson(input): ApiJson<RoleRequest>,
) -> Response {
    answer(ops::console::set_role(&console.ops(), &who.actor(), &name, input.role).await)
}

/// Disables an account: it cannot log in and its sessions end.
#[utoipa::path(post, path = "/accounts/{name}/disable", tag = "accounts",
    params(("name" = String, Path, description = "account name")),
    responses((status = 200, body = AccountView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn disable_account(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiPath(name): ApiPath<String>,
) -> Response {
    answer(ops::console::set_disabled(&console.ops(), &who.actor(), &name, true).await)
}

/// Enables a disabled account.
#[utoipa::path(post, path = "/accounts/{name}/enable", tag = "accounts",
    params(("name" = String, Path, description = "account name")),
    responses((status = 200, body = AccountView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn enable_account(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiPath(name): ApiPath<String>,
) -> Response {
    answer(ops::console::set_disabled(&console.ops(), &who.actor(), &name, false).await)
}

/// Clears a lockout after failed logins.
#[utoipa::path(post, path = "/accounts/{name}/unlock", tag = "accounts",
    params(("name" = String, Path, description = "account name")),
    responses((status = 200, body = AccountView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn unlock_account(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiPath(name): ApiPath<String>,
) -> Response {
    answer(ops::console::unlock(&console.ops(), &who.actor(), &name).await)
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct TotpRequest {
    /// On: a new secret, in the answer only. Off: the account logs in without a code.
    on: bool,
}

/// Gives an account a new TOTP secret (shown once) or takes it away.
#[utoipa::path(put, path = "/accounts/{name}/totp", tag = "accounts", request_body = TotpRequest,
    params(("name" = String, Path, description = "account name")),
    responses((status = 200, body = AddedAccount), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn set_totp(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiPath(name): ApiPath<String>,
    ApiJson(input): ApiJson<TotpRequest>,
) -> Response {
    answer(ops::console::set_totp(&console.ops(), &who.actor(), &name, input.on).await)
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct PasswordRequest {
    /// At least 12 characters.
    password: String,
}

/// Sets a new password; clears a lockout and ends the account's sessions.
#[utoipa::path(put, path = "/accounts/{name}/password", tag = "accounts", request_body = PasswordRequest,
    params(("name" = String, Path, description = "account name")),
    responses((status = 200, body = AccountView), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn set_password(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiPath(name): ApiPath<String>,
    ApiJson(input): ApiJson<PasswordRequest>,
) -> Response {
    let password = input.password.into();
    answer(ops::console::set_password(&console.ops(), &who.actor(), &name, &password).await)
}

//! Settings: what is in force (viewer); smarthost, internal networks and licence
//! changed (admin).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, ApiRouter, answer, created};
use crate::admin::console::{Console, Problem, Who};
use crate::ops::relay_settings::{AllowNetwork, AllowedNetwork, Smarthost};
use crate::ops::settings::SettingsView;
use crate::ops::{self};
use crate::store::LicenceRow;

pub fn viewer() -> ApiRouter {
    ApiRouter::new().routes(routes!(show_settings))
}

pub fn admin() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(set_smarthost))
        .routes(routes!(allow_network))
        .routes(routes!(remove_network))
        .routes(routes!(set_licence))
}

/// Smarthost, internal networks, licence, next-hop TLS, SAML status.
#[utoipa::path(get, path = "/settings", tag = "settings",
    responses((status = 200, body = SettingsView), (status = 401, body = Problem)))]
async fn show_settings(State(console): State<Arc<Console>>) -> Response {
    answer(ops::settings::show(&console.ops()).await)
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct SmarthostRequest {
    /// `HOST:PORT`.
    host_port: String,
}

/// Sends outbound mail through this smarthost from the next transaction on.
#[utoipa::path(put, path = "/settings/smarthost", tag = "settings", request_body = SmarthostRequest,
    responses((status = 200, body = Smarthost), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn set_smarthost(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiJson(input): ApiJson<SmarthostRequest>,
) -> Response {
    answer(ops::relay_settings::set_smarthost(&console.ops(), &who.actor(), &input.host_port).await)
}

/// Allows an internal network to relay outbound mail.
#[utoipa::path(post, path = "/settings/networks", tag = "settings", request_body = AllowNetwork,
    responses((status = 201, body = AllowedNetwork), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn allow_network(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiJson(input): ApiJson<AllowNetwork>,
) -> Response {
    created(ops::relay_settings::allow_network(&console.ops(), &who.actor(), input).await)
}

/// Removes an allowed network set in the database (`ADDRESS/PREFIX` as two path
/// segments).
#[utoipa::path(delete, path = "/settings/networks/{address}/{prefix}", tag = "settings",
    params(("address" = String, Path, description = "network address"),
           ("prefix" = u8, Path, description = "prefix length")),
    responses((status = 200, body = String), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn remove_network(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiPath((address, prefix)): ApiPath<(String, u8)>,
) -> Response {
    let cidr = format!("{address}/{prefix}");
    answer(ops::relay_settings::remove_network(&console.ops(), &who.actor(), &cidr).await)
}

/// Sets the seat licence.
#[utoipa::path(put, path = "/settings/licence", tag = "settings", request_body = ops::licence::SetLicence,
    responses((status = 200, body = LicenceRow), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn set_licence(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiJson(input): ApiJson<ops::licence::SetLicence>,
) -> Response {
    answer(ops::licence::set(&console.ops(), &who.actor(), input).await)
}

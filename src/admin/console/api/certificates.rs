//! Certificates and trust anchors: list and details (viewer), partner import and
//! removal (editor), trust anchors added and removed (admin). Never a private key.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, ApiQuery, ApiRouter, answer, created};
use crate::admin::console::{Console, Problem, Who};
use crate::ops::certs::{CertificateDetails, CertificateView, ImportOutcome, Kind};
use crate::ops::trust::TrustAnchorView;
use crate::ops::{self};

pub fn viewer() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(list_certificates))
        .routes(routes!(certificate_details))
        .routes(routes!(list_trust_anchors))
}

pub fn editor() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(import_certificates))
        .routes(routes!(remove_certificate))
}

pub fn admin() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(add_trust_anchor))
        .routes(routes!(remove_trust_anchor))
}

/// Which certificates to list.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CertificateFilter {
    /// `all` (default), `managed` or `partner`.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    kind: Kind,
    /// Only this address's certificates.
    #[serde(default)]
    address: Option<String>,
}

/// Every certificate the gateway holds (managed, partners', trust anchors), newest
/// first.
#[utoipa::path(get, path = "/certificates", tag = "certificates", params(CertificateFilter),
    responses((status = 200, body = Vec<CertificateView>), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 422, body = Problem)))]
async fn list_certificates(
    State(console): State<Arc<Console>>,
    ApiQuery(filter): ApiQuery<CertificateFilter>,
) -> Response {
    let filter = ops::certs::ListCertificates {
        kind: filter.kind,
        address: filter.address,
    };
    answer(ops::certs::list(&console.ops(), filter).await)
}

/// One certificate's details: subject, alternative names, validity, SHA-256
/// fingerprint, key usages, revocation.
#[utoipa::path(get, path = "/certificates/{fingerprint}", tag = "certificates",
    params(("fingerprint" = String, Path, description = "SHA-256 fingerprint (hex)")),
    responses((status = 200, body = CertificateDetails), (status = 401, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn certificate_details(
    State(console): State<Arc<Console>>,
    ApiPath(fingerprint): ApiPath<String>,
) -> Response {
    answer(ops::certs::details(&console.ops(), &fingerprint).await)
}

/// Partners' certificates to import: PEM (CERTIFICATE or PKCS7 blocks).
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct ImportRequest {
    pem: String,
}

/// Imports partners' certificates, checked as harvested ones are.
#[utoipa::path(post, path = "/certificates", tag = "certificates", request_body = ImportRequest,
    responses((status = 201, body = Vec<ImportOutcome>), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn import_certificates(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiJson(input): ApiJson<ImportRequest>,
) -> Response {
    created(ops::certs::import(&console.ops(), &who.actor(), input.pem.as_bytes()).await)
}

/// Removes a partner's certificate (never a managed one or a trust anchor).
#[utoipa::path(delete, path = "/certificates/{fingerprint}", tag = "certificates",
    params(("fingerprint" = String, Path, description = "SHA-256 fingerprint (hex)")),
    responses((status = 200, body = CertificateView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn remove_certificate(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiPath(fingerprint): ApiPath<String>,
) -> Response {
    answer(ops::certs::remove(&console.ops(), &who.actor(), &fingerprint).await)
}

/// The trust anchors and the domains each vouches for.
#[utoipa::path(get, path = "/trust-anchors", tag = "certificates",
    responses((status = 200, body = Vec<TrustAnchorView>), (status = 401, body = Problem)))]
async fn list_trust_anchors(State(console): State<Arc<Console>>) -> Response {
    answer(ops::trust::views(&console.ops()).await)
}

/// A CA bundle to trust, and the domains it may vouch for.
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct AddTrustRequest {
    /// PEM, one or more CA certificates.
    pem: String,
    /// Domain patterns (`example.org`, `*.example.org`); empty: any domain except the
    /// managed ones.
    #[serde(default)]
    domains: Vec<String>,
}

/// Adds trust anchors.
#[utoipa::path(post, path = "/trust-anchors", tag = "certificates", request_body = AddTrustRequest,
    responses((status = 201, body = Vec<TrustAnchorView>), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn add_trust_anchor(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiJson(input): ApiJson<AddTrustRequest>,
) -> Response {
    let input = ops::trust::AddTrust {
        pem: input.pem.into_bytes(),
        domains: input.domains,
    };
    created(
        ops::trust::add(&console.ops(), &who.actor(), input)
            .await
            .map(|rows| {
                rows.into_iter()
                    .map(TrustAnchorView::from)
                    .collect::<Vec<_>>()
            }),
    )
}

/// Removes a trust anchor.
#[utoipa::path(delete, path = "/trust-anchors/{fingerprint}", tag = "certificates",
    params(("fingerprint" = String, Path, description = "SHA-256 fingerprint (hex)")),
    responses((status = 200, body = TrustAnchorView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn remove_trust_anchor(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiPath(fingerprint): ApiPath<String>,
) -> Response {
    answer(
        ops::trust::remove(&console.ops(), &who.actor(), &fingerprint)
            .await
            .map(TrustAnchorView::from),
    )
}

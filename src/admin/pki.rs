//! `GET /pki/…`: what the built-in CA publishes for relying parties, at the URLs
//! written into every certificate it issues ([`crate::pki::urls::PkiUrls`]): its
//! certificate (`application/pkix-cert`, DER, RFC 2585) and its newest CRL
//! (`application/pkix-crl`, DER), re-signed in the token on every revocation and
//! before nextUpdate by the lifecycle job. Plain HTTP on purpose (RFC 5280 §4.2.1.13:
//! a CRL is signed; fetching it over TLS would need the chain it belongs to).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use der::Encode;

use crate::app::App;
use crate::pki::ca::CaIdentity;
use crate::pki::urls::{
    ISSUING_CERTIFICATE_PATH, ISSUING_CRL_PATH, ROOT_CERTIFICATE_PATH, ROOT_CRL_PATH,
};

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route(ISSUING_CRL_PATH, get(issuing_crl))
        .route(ISSUING_CERTIFICATE_PATH, get(issuing_cert))
        .route(ROOT_CRL_PATH, get(root_crl))
        .route(ROOT_CERTIFICATE_PATH, get(root_cert))
}

async fn issuing_crl(State(app): State<Arc<App>>) -> Response {
    match app.ca().await {
        Ok(ca) => crl_of(&app, &ca).await,
        Err(e) => unavailable("CA", &e),
    }
}

async fn issuing_cert(State(app): State<Arc<App>>) -> Response {
    match app.ca().await {
        Ok(ca) => cert_of(&ca),
        Err(e) => unavailable("CA", &e),
    }
}

async fn root_crl(State(app): State<Arc<App>>) -> Response {
    match app.root_ca().await {
        Ok(ca) => crl_of(&app, &ca).await,
        Err(e) => unavailable("root CA", &e),
    }
}

async fn root_cert(State(app): State<Arc<App>>) -> Response {
    match app.root_ca().await {
        Ok(ca) => cert_of(&ca),
        Err(e) => unavailable("root CA", &e),
    }
}

async fn crl_of(app: &App, ca: &CaIdentity) -> Response {
    let fingerprint = match crate::ops::crl::ca_fingerprint(ca) {
        Ok(f) => f,
        Err(e) => return unavailable("CA certificate", &e),
    };
    match app.store.published_crls().latest(&fingerprint).await {
        Ok(Some(crl)) => (
            [
                (header::CONTENT_TYPE, "application/pkix-crl"),
                // Caches may keep it until the lifecycle job's next look at it.
                (header::CACHE_CONTROL, "max-age=300"),
            ],
            crl.der,
        )
            .into_response(),
        Ok(None) => {
            tracing::warn!(
                "CRL requested before the first one was signed (the lifecycle job signs it)"
            );
            (StatusCode::SERVICE_UNAVAILABLE, "no CRL signed yet\n").into_response()
        }
        Err(e) => unavailable("CRL", &e),
    }
}

fn cert_of(ca: &CaIdentity) -> Response {
    match ca.certificate.to_der() {
        Ok(der) => ([(header::CONTENT_TYPE, "application/pkix-cert")], der).into_response(),
        Err(e) => unavailable("CA certificate", &e),
    }
}

fn unavailable(what: &str, error: &dyn std::fmt::Display) -> Response {
    tracing::error!(%error, "{what} cannot be served");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{what} unavailable\n"),
    )
        .into_response()
}

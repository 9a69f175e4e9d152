//! The console's pages. Each page module has `viewer()` routes (reading) and, where it
//! changes something, `editor()` or `admin()` routes; this module puts each set
//! behind its role gate. A change is a POST of a plain HTML form that calls one
//! operation and redirects back with `?ok=` or `?error=` (post/redirect/get).

mod accounts;
mod audit;
mod certificates;
mod dashboard;
mod mailboxes;
pub(super) mod messages;
mod rules;
mod settings;

use std::sync::Arc;

use axum::Router;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;

use super::Console;
use super::guard::gate;
use crate::ops::{OpError, Role};

pub fn router() -> Router<Arc<Console>> {
    let viewer = Router::new()
        .route("/logout", post(super::login::logout))
        .merge(dashboard::viewer())
        .merge(mailboxes::viewer())
        .merge(messages::viewer())
        .merge(audit::viewer())
        .merge(certificates::viewer())
        .merge(rules::viewer())
        .merge(settings::viewer());
    let editor = Router::new()
        .merge(mailboxes::editor())
        .merge(certificates::editor())
        .merge(rules::editor());
    let admin = Router::new()
        .merge(certificates::admin())
        .merge(settings::admin())
        .merge(accounts::admin());
    Router::new()
        .merge(gate(viewer, Role::Viewer))
        .merge(gate(editor, Role::Editor))
        .merge(gate(admin, Role::Admin))
}

/// The outcome of the last change, as `back` puts it into the query.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct Flash {
    #[serde(default)]
    pub ok: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

/// Largest file a page takes (a PKCS#12 file, a certificate bundle).
pub(super) const MAX_UPLOAD_BYTES: usize = 256 * 1024;

/// The fields of a multipart form (a file upload): name and bytes, each at most
/// [`MAX_UPLOAD_BYTES`].
pub(super) async fn multipart_fields(
    form: Result<axum::extract::Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Vec<(String, Vec<u8>)>, OpError> {
    let mut form = form.map_err(|rejection| {
        tracing::warn!(%rejection, "console: an upload that is not a multipart form");
        OpError::Invalid(format!(
            "the upload is not a file form: {}",
            rejection.body_text()
        ))
    })?;
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        tracing::warn!(error = %e, "console: unreadable upload");
        OpError::Invalid(format!("the upload could not be read: {}", e.body_text()))
    };
    let mut fields = Vec::new();
    while let Some(field) = form.next_field().await.map_err(unreadable)? {
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field.bytes().await.map_err(unreadable)?;
        if bytes.len() > MAX_UPLOAD_BYTES {
            tracing::warn!(field = %name, size = bytes.len(), "console: upload too large");
            return Err(OpError::Invalid(format!(
                "the file is larger than {} KiB",
                MAX_UPLOAD_BYTES / 1024
            )));
        }
        fields.push((name, bytes.to_vec()));
    }
    Ok(fields)
}

/// The bytes of multipart field `name`, if any.
pub(super) fn part<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

/// The fields of an urlencoded form, repeated names kept (checkbox lists).
pub(super) fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Every value of field `name`.
pub(super) fn all_of(fields: &[(String, String)], name: &str) -> Vec<String> {
    fields
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

/// The first value of field `name`, if any.
pub(super) fn one_of<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A read that failed, as a page: the status and the operation's message.
pub(super) fn failed(e: OpError) -> Response {
    let problem = super::Problem::from(e);
    let status = problem.status();
    (status, super::layout::error_page(status, &problem.detail)).into_response()
}

/// Back to `path` with the outcome of a change shown on top.
pub(super) fn back(path: &str, outcome: Result<String, OpError>) -> Response {
    let (key, text) = match outcome {
        Ok(text) => ("ok", text),
        Err(e) => {
            let problem = super::Problem::from(e);
            ("error", problem.detail)
        }
    };
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair(key, &text)
        .finish();
    Redirect::to(&format!("{path}?{query}")).into_response()
}

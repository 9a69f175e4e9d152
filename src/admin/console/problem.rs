//! Errors of the API as RFC 9457 problem details (`application/problem+json`).
//! The gateway's own failures (5xx) are logged with their cause and answered with a
//! fixed text: no SQL, no token detail, no path reaches the client.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::ops::OpError;

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status code says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }

    pub fn unauthenticated() -> Self {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "log in, or send an API token as Authorization: Bearer",
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, detail)
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<OpError> for Problem {
    fn from(e: OpError) -> Self {
        let status = e.http_status();
        if status.is_server_error() {
            tracing::error!(error = %e, "console: operation failed");
            let detail = if status == StatusCode::SERVICE_UNAVAILABLE {
                "the database or the token is busy or unreachable; try again"
            } else {
                "the gateway failed; the log says why"
            };
            Problem::new(status, detail)
        } else {
            Problem::new(status, e.to_string())
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        match serde_json::to_vec(&self) {
            Ok(body) => (
                status,
                [(header::CONTENT_TYPE, "application/problem+json")],
                body,
            )
                .into_response(),
            Err(_) => status.into_response(),
        }
    }
}

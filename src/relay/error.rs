//! The relay's errors, and the one mapping from an error to what the SMTP client is
//! told. Internal detail (database, token, task) goes to the log; the reply says only
//! what the sender can act on.

use crate::smtp::Reply;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The database failed: our failure, the sender retries.
    #[error("database error: {0}")]
    Database(#[from] StoreError),
    /// Other work of ours failed (token, a task, the key directory).
    #[error("{what} failed: {detail}")]
    Gateway { what: &'static str, detail: String },
    /// The next hop's reply, or the 4xx our SMTP client made for a failure of its own
    /// (already safe to show).
    #[error("next hop: {0}")]
    NextHop(Reply),
    /// A refusal of ours, by policy or protocol, with the reply that says why.
    #[error("refused: {0}")]
    Refused(Reply),
}

impl RelayError {
    pub fn gateway(what: &'static str, detail: impl std::fmt::Display) -> RelayError {
        RelayError::Gateway {
            what,
            detail: detail.to_string(),
        }
    }

    pub fn refused(code: u16, enhanced: &str, text: impl Into<String>) -> RelayError {
        RelayError::Refused(Reply::new(code, enhanced, text))
    }
}

impl From<crate::app::AppError> for RelayError {
    fn from(e: crate::app::AppError) -> Self {
        match e {
            crate::app::AppError::Store(s) => RelayError::Database(s),
            other => RelayError::gateway("the gateway", other),
        }
    }
}

impl From<crate::policy::Rejection> for RelayError {
    fn from(r: crate::policy::Rejection) -> Self {
        RelayError::Refused(r.into())
    }
}

impl From<&RelayError> for Reply {
    fn from(e: &RelayError) -> Reply {
        match e {
            RelayError::Database(err) => {
                tracing::error!(error = %err, "database error");
                Reply::new(
                    451,
                    "4.3.0",
                    "Temporary database problem on the gateway; try again later",
                )
            }
            RelayError::Gateway { what, detail } => {
                tracing::error!(error = %detail, "{what} failed");
                Reply::new(
                    451,
                    "4.3.0",
                    format!("{what} failed on the gateway; try again later"),
                )
            }
            RelayError::NextHop(reply) | RelayError::Refused(reply) => reply.clone(),
        }
    }
}

impl From<RelayError> for Reply {
    fn from(e: RelayError) -> Reply {
        Reply::from(&e)
    }
}

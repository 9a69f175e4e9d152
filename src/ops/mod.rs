//! Operator actions, one function each: validate, write, audit. The CLI calls them
//! now; the console and the lifecycle job will call the same functions, so no caller
//! repeats a check or forgets the audit row. Each returns [`OpError`], which maps to
//! one CLI exit code (and, later, one HTTP status).

pub mod password;
pub mod submitters;
pub mod trust;

use crate::app::Actor;
use crate::store::{Store, StoreError};

/// Why an operation did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// The input is wrong: nothing was changed.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => OpError::NotFound(what),
            StoreError::Conflict(what) => OpError::Conflict(what),
            StoreError::Refused(why) => OpError::Invalid(why),
            other => OpError::Store(other),
        }
    }
}

impl OpError {
    /// The CLI's exit code: 2 for what the operator can fix in the command, 1 else.
    pub fn exit_code(&self) -> i32 {
        match self {
            OpError::Invalid(_) | OpError::NotFound(_) | OpError::Conflict(_) => 2,
            OpError::Store(_) => 1,
        }
    }
}

/// Appends the audit row of a change.
async fn audit(
    store: &Store,
    actor: &Actor,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<(), OpError> {
    store
        .audit()
        .append(&actor.name, &actor.origin, action, target, detail)
        .await
        .map_err(OpError::from)
}

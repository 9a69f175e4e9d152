//! The operation layer: every change an operator can make is one `async fn` here that
//! validates its input, writes, and appends the audit row. The CLI, the console and
//! its API, and the gateway's own jobs only call these functions, so none of them
//! repeats a check or forgets the audit row; `cli/` and the HTTP handlers hold no
//! logic of their own (parse, call, print or answer).
//!
//! # Shape
//!
//! ```text
//! pub async fn NAME(ctx: &Ops<'_>, actor: &Actor, input: Input) -> Result<Output, OpError>  // database only
//! pub async fn NAME(app: &App,     actor: &Actor, input: Input) -> Result<Output, OpError>  // needs the token
//! pub async fn NAME(ctx: &Ops<'_>, input) -> Result<Output, OpError>                         // reads: no actor, no audit
//! ```
//!
//! - **Context, two levels.** [`Ops`] (configuration and database) for everything
//!   that does not touch the token: the CLI runs `domain add` or `rule list` without
//!   opening the token, so a locked PIN or an absent HSM never stops them. [`App`]
//!   (configuration, database, token) for operations that need keys: activation now,
//!   deactivation, renewal and imports later. A caller holding an `App` (the console,
//!   `serve`, the lifecycle job) gets the `Ops` of it with [`App::ops`]. The type
//!   says which operations need the token; nothing finds out at run time.
//! - **Input**: text as an operator types it (addresses, CIDRs, matchers), parsed and
//!   checked by the operation ([`input`]); a struct deriving `Deserialize` when there
//!   is more than one field, so the console can take it as a JSON body; a single key
//!   (a name, an id) as a plain argument.
//! - **Output**: plain data (`serde::Serialize`) the CLI prints and the console
//!   returns as JSON; never a secret.
//! - **Audit**: one row per change, written by the operation after the change, naming
//!   the [`Actor`]; reads write none.
//! - **Errors**: [`OpError`]: `Invalid` (nothing changed, the input is wrong),
//!   `NotFound`, `Conflict`, and the gateway's own failures (`Store`, `Token`,
//!   `Setup`). [`OpError::exit_code`] and [`OpError::http_status`] are the one mapping
//!   for the CLI and the console.

mod actor;
pub mod audit;
pub mod backup;
pub mod certs;
pub mod console;
pub mod console_tls;
pub mod crl;
pub mod dashboard;
pub mod domains;
pub mod identities;
pub mod input;
pub mod licence;
pub mod lifecycle;
pub mod mailboxes;
pub mod messages;
pub mod password;
pub mod relay_settings;
pub mod retention;
mod role;
pub mod rules;
pub mod saml;
pub mod settings;
pub mod submitters;
pub mod totp;
pub mod trust;

pub use actor::Actor;
pub use role::{Role, UnknownRole};

use crate::app::{App, AppError};
use crate::config::Settings;
use crate::hsm::HsmError;
use crate::store::{Store, StoreError};

/// What operations that do not need the token work with: the configuration and the
/// database.
#[derive(Clone, Copy)]
pub struct Ops<'a> {
    pub settings: &'a Settings,
    pub store: &'a Store,
}

impl<'a> Ops<'a> {
    pub fn new(settings: &'a Settings, store: &'a Store) -> Self {
        Ops { settings, store }
    }
}

impl App {
    /// The database-only context of this gateway, for the operations that take [`Ops`].
    pub fn ops(&self) -> Ops<'_> {
        Ops::new(&self.settings, &self.store)
    }
}

/// Why an operation did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// The input is wrong, or the operation does not apply in the current state:
    /// nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// What the input names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// What the input would create exists already.
    #[error("{0} already exists")]
    Conflict(String),
    /// The database failed (or is busy): the operator cannot fix it in the input.
    #[error(transparent)]
    Store(StoreError),
    /// The token failed (or is busy).
    #[error(transparent)]
    Token(HsmError),
    /// The gateway lacks something `init` makes (the built-in CA).
    #[error("{0}")]
    Setup(String),
    /// No licence seat is free (or the licence ended): nothing was changed.
    #[error("{0}")]
    NoSeat(String),
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

impl From<HsmError> for OpError {
    fn from(e: HsmError) -> Self {
        OpError::Token(e)
    }
}

impl From<AppError> for OpError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Store(e) => e.into(),
            AppError::Token(e) => OpError::Token(e),
            AppError::Issue(e) => OpError::Token(HsmError::Encoding(e.to_string())),
            AppError::NoCa => OpError::Setup(AppError::NoCa.to_string()),
            AppError::Refused(why) => OpError::Invalid(why),
        }
    }
}

impl OpError {
    /// The CLI's exit code: 2 for what the operator can fix in the command, 1 else.
    pub fn exit_code(&self) -> i32 {
        match self {
            OpError::Invalid(_)
            | OpError::NotFound(_)
            | OpError::Conflict(_)
            | OpError::NoSeat(_) => 2,
            OpError::Store(_) | OpError::Token(_) | OpError::Setup(_) => 1,
        }
    }

    /// The console's and the API's answer: 4xx for what the caller can fix, 503 when
    /// the database or the token is only busy or unreachable (try again), 500 else.
    pub fn http_status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            OpError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            OpError::NotFound(_) => StatusCode::NOT_FOUND,
            OpError::Conflict(_) | OpError::NoSeat(_) => StatusCode::CONFLICT,
            OpError::Store(e) if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            OpError::Token(e) if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            OpError::Store(_) | OpError::Token(_) | OpError::Setup(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

/// A unix time as RFC 3339 (UTC), for messages and audit details.
pub(crate) fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn what_the_operator_can_fix_is_exit_2_and_a_4xx() {
        for (e, code, status) in [
            (
                OpError::Invalid("x".into()),
                2,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (OpError::NotFound("x".into()), 2, StatusCode::NOT_FOUND),
            (OpError::Conflict("x".into()), 2, StatusCode::CONFLICT),
            (
                OpError::Store(StoreError::Unavailable("x".into())),
                1,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                OpError::Store(StoreError::Corrupt("x".into())),
                1,
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                OpError::Setup("x".into()),
                1,
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ] {
            assert_eq!(e.exit_code(), code, "{e:?}");
            assert_eq!(e.http_status(), status, "{e:?}");
        }
    }

    #[test]
    fn the_console_reads_and_rule_inputs_make_an_openapi_document() {
        use utoipa::OpenApi;
        #[derive(OpenApi)]
        #[openapi(components(schemas(
            messages::MessagePage,
            messages::MessageQuery,
            audit::AuditPage,
            audit::AuditQuery,
            dashboard::Dashboard,
            rules::AddRule,
            rules::EditRule,
            rules::MoveRule,
            rules::Explain,
            crate::policy::Rule,
            crate::relay::explain::Explanation,
        )))]
        struct Doc;
        let doc = serde_json::to_value(Doc::openapi()).expect("OpenAPI JSON");
        let schemas = &doc["components"]["schemas"];
        for name in [
            "MessagePage",
            "MessageRow",
            "AuditPage",
            "Dashboard",
            "MessageCounts",
            "Explanation",
            "Selection",
            "Rule",
        ] {
            assert!(schemas[name].is_object(), "{name} missing: {schemas}");
        }
        assert_eq!(
            schemas["Dashboard"]["properties"]["inbound"]["$ref"],
            "#/components/schemas/MessageCounts"
        );
        let actions = schemas["Action"]["enum"].as_array().expect("Action enum");
        assert!(
            actions.iter().any(|a| a == "encrypt-enforced"),
            "{actions:?}"
        );
        assert_eq!(schemas["Rule"]["properties"]["sender"]["type"], "string");
        let crypto = schemas["CryptoResult"]["enum"]
            .as_array()
            .expect("CryptoResult enum");
        assert!(
            crypto.iter().any(|c| c == "signature-invalid"),
            "{crypto:?}"
        );
    }

    #[test]
    fn store_refusals_become_typed_operation_errors() {
        let refused: OpError = StoreError::Refused("busy mailbox".into()).into();
        assert!(matches!(refused, OpError::Invalid(_)));
        let missing: OpError = StoreError::NotFound("no rule 7".into()).into();
        assert!(matches!(missing, OpError::NotFound(_)));
        let taken: OpError = StoreError::Conflict("domain d".into()).into();
        assert_eq!(taken.to_string(), "domain d already exists");
    }
}

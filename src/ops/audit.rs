//! The audit log read back (issue 11 item 7): who changed what, when, from where,
//! filtered by actor, action, target and time, a page at a time. A read: no actor, no
//! audit row. The table itself is append-only (database triggers).

use super::input;
use super::{OpError, Ops, rfc3339};
use crate::store::{AuditEntry, AuditFilter};

pub use super::messages::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

/// Which audit rows to show; every field narrows, an empty one does not.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
// Unknown fields are ignored: a console form or a cache-buster may add its own.
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Exactly this actor: `cli:USER`, `console:ACCOUNT`, `job:NAME`.
    pub actor: Option<String>,
    /// Actions starting with this (`rule.` for every rule change, `rule.add` for one).
    pub action: Option<String>,
    /// Exactly this target (a rule id, an address, a domain).
    pub target: Option<String>,
    /// At or after: RFC 3339, unix seconds, or an age (`2h`, `7d`).
    pub from: Option<String>,
    /// Before (same forms).
    pub to: Option<String>,
    /// 1 is the newest page.
    pub page: Option<i64>,
    /// Rows per page, 1..=500 (default 50).
    pub page_size: Option<i64>,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// The same time as RFC 3339 (UTC).
    pub time: String,
    pub actor: String,
    /// Where from: `cli`, `job`, or `console ADDRESS`.
    pub origin: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub rows: Vec<AuditRow>,
    pub page: i64,
    pub page_size: i64,
    pub total: i64,
    pub has_more: bool,
}

impl From<AuditEntry> for AuditRow {
    fn from(e: AuditEntry) -> Self {
        AuditRow {
            id: e.id,
            time: rfc3339(e.at),
            at: e.at,
            actor: e.actor,
            origin: e.origin,
            action: e.action,
            target: e.target,
            detail: e.detail,
        }
    }
}

/// `Some(text)` when the field is given and not blank; refuses control characters
/// and overlong text.
fn given<'a>(name: &str, field: &'a Option<String>) -> Result<Option<&'a str>, OpError> {
    match field.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) if t.len() > 1000 || t.chars().any(char::is_control) => Err(OpError::Invalid(
            format!("{name}: at most 1000 characters, no control characters"),
        )),
        other => Ok(other),
    }
}

/// One page of the audit rows matching `query`, newest first, with the total count.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn search(ctx: &Ops<'_>, query: AuditQuery) -> Result<AuditPage, OpError> {
    let (page, page_size) = super::messages::paging(query.page, query.page_size)?;
    let since = given("from", &query.from)?
        .map(|t| input::time("from", t))
        .transpose()?;
    let until = given("to", &query.to)?
        .map(|t| input::time("to", t))
        .transpose()?;
    let filter = AuditFilter {
        actor: given("actor", &query.actor)?.map(str::to_string),
        action_prefix: given("action", &query.action)?.map(str::to_string),
        target: given("target", &query.target)?.map(str::to_string),
        since,
        until,
        limit: Some(page_size),
        offset: Some((page - 1) * page_size),
    };
    let audit = ctx.store.audit();
    let total = audit.count(&filter).await?;
    let rows = audit
        .search(&filter)
        .await?
        .into_iter()
        .map(AuditRow::from)
        .collect();
    Ok(AuditPage {
        rows,
        page,
        page_size,
        has_more: page * page_size < total,
        total,
    })
}

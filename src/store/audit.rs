//! The append-only audit log: who changed what, when, from where. The schema refuses
//! UPDATE and DELETE on it (triggers), so not even a bug here can rewrite history.

use sqlx::{AnyPool, Row};

use super::filter::{Bind, Where, like_literal};
use super::{Result, db, now};

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub origin: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// Which audit rows to list; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Exactly this actor (`cli:root`, a SAML NameID, a local account).
    pub actor: Option<String>,
    /// Actions starting with this text (`rule.` for every rule change).
    pub action_prefix: Option<String>,
    /// Exactly this target.
    pub target: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    pub until: Option<i64>,
    /// At most this many rows (1..=10 000; default 100).
    pub limit: Option<i64>,
    /// Skip this many rows of the newest-first order.
    pub offset: Option<i64>,
}

impl AuditFilter {
    fn conditions(&self) -> Where {
        let mut w = Where::default();
        if let Some(actor) = &self.actor {
            w.add("actor = ?", vec![Bind::Text(actor.clone())]);
        }
        if let Some(prefix) = &self.action_prefix {
            w.add(
                "action LIKE ? ESCAPE '\\'",
                vec![Bind::Text(format!("{}%", like_literal(prefix)))],
            );
        }
        if let Some(target) = &self.target {
            w.add("target = ?", vec![Bind::Text(target.clone())]);
        }
        if let Some(since) = self.since {
            w.add("at >= ?", vec![Bind::Int(since)]);
        }
        if let Some(until) = self.until {
            w.add("at < ?", vec![Bind::Int(until)]);
        }
        w
    }
}

fn row_to_entry(row: &sqlx::any::AnyRow) -> Result<AuditEntry> {
    let read = db("reading audit log");
    Ok(AuditEntry {
        id: row.try_get("id").map_err(&read)?,
        at: row.try_get("at").map_err(&read)?,
        actor: row.try_get("actor").map_err(&read)?,
        origin: row.try_get("origin").map_err(&read)?,
        action: row.try_get("action").map_err(&read)?,
        target: row.try_get("target").map_err(&read)?,
        detail: row.try_get("detail").map_err(&read)?,
    })
}

pub struct AuditLog<'a> {
    pub(super) pool: &'a AnyPool,
}

impl AuditLog<'_> {
    pub async fn append(
        &self,
        actor: &str,
        origin: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<()> {
        sqlx::query("INSERT INTO audit_log (at, actor, origin, action, target, detail) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(now())
            .bind(actor)
            .bind(origin)
            .bind(action)
            .bind(target)
            .bind(detail)
            .execute(self.pool)
            .await
            .map_err(db("writing audit log"))?;
        Ok(())
    }

    /// The newest `limit` entries, newest first.
    pub async fn recent(&self, limit: i64) -> Result<Vec<AuditEntry>> {
        self.search(&AuditFilter {
            limit: Some(limit),
            ..Default::default()
        })
        .await
    }

    /// Rows matching `filter`, newest first.
    pub async fn search(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let w = filter.conditions();
        let n = w.next_placeholder();
        let sql = format!(
            "SELECT id, at, actor, origin, action, target, detail FROM audit_log {} \
             ORDER BY id DESC LIMIT ${n} OFFSET ${}",
            w.clause(),
            n + 1
        );
        let rows = w
            .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .bind(filter.limit.unwrap_or(100).clamp(1, 10_000))
            .bind(filter.offset.unwrap_or(0).max(0))
            .fetch_all(self.pool)
            .await
            .map_err(db("reading audit log"))?;
        rows.iter().map(row_to_entry).collect()
    }

    /// How many rows match `filter` (its limit and offset ignored).
    pub async fn count(&self, filter: &AuditFilter) -> Result<i64> {
        let w = filter.conditions();
        let sql = format!("SELECT COUNT(*) FROM audit_log {}", w.clause());
        let row = w
            .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .fetch_one(self.pool)
            .await
            .map_err(db("counting audit log"))?;
        row.try_get::<i64, _>(0).map_err(db("counting audit log"))
    }
}

//! The append-only audit log: who changed what, when, from where. The schema refuses
//! UPDATE and DELETE on it (triggers), so not even a bug here can rewrite history.

use sqlx::{AnyPool, Row};

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
        let rows = sqlx::query(
            "SELECT id, at, actor, origin, action, target, detail FROM audit_log ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool)
        .await
        .map_err(db("reading audit log"))?;
        let read = db("reading audit log");
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    id: row.try_get("id").map_err(&read)?,
                    at: row.try_get("at").map_err(&read)?,
                    actor: row.try_get("actor").map_err(&read)?,
                    origin: row.try_get("origin").map_err(&read)?,
                    action: row.try_get("action").map_err(&read)?,
                    target: row.try_get("target").map_err(&read)?,
                    detail: row.try_get("detail").map_err(&read)?,
                })
            })
            .collect()
    }
}

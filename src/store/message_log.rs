//! The message log (DESIGN §6): one row per SMTP transaction with what was done to the
//! message and how the session ended.

use sqlx::{AnyPool, Row};

use super::{Result, db};
use crate::policy::Direction;

pub struct MessageLog<'a> {
    pub(super) pool: &'a AnyPool,
}

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStatus {
    /// The next hop accepted the message.
    Relayed,
    /// Refused with a 5xx: the sender's MTA bounces it.
    Rejected,
    /// Refused with a 4xx: the sender's MTA tries again.
    Deferred,
}

impl LogStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStatus::Relayed => "relayed",
            LogStatus::Rejected => "rejected",
            LogStatus::Deferred => "deferred",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "relayed" => Some(LogStatus::Relayed),
            "rejected" => Some(LogStatus::Rejected),
            "deferred" => Some(LogStatus::Deferred),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LogEntry {
    pub id: i64,
    /// Unix seconds.
    pub received_at: i64,
    pub node: String,
    pub direction: Direction,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub message_id: Option<String>,
    pub subject: Option<String>,
    pub size_bytes: i64,
    pub status: LogStatus,
    /// What was done: signed, encrypted, decrypted, signature-valid, harvested, …
    pub actions: Vec<String>,
    pub smtp_code: Option<i64>,
    pub smtp_reply: Option<String>,
    pub rule_id: Option<i64>,
    pub duration_ms: i64,
}

/// Which rows to list; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub status: Option<LogStatus>,
    pub direction: Option<Direction>,
    /// Sender or one of the recipients (exact, lower case).
    pub address: Option<String>,
    /// Unix seconds.
    pub since: Option<i64>,
    pub limit: Option<i64>,
}

async fn insert(conn: &mut sqlx::AnyConnection, entry: &LogEntry) -> Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO message_log (received_at, node, direction, mail_from, rcpt_to, \
         message_id, subject, size_bytes, status, actions, smtp_code, smtp_reply, rule_id, \
         duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         RETURNING id",
    )
    .bind(entry.received_at)
    .bind(&entry.node)
    .bind(entry.direction.as_str())
    .bind(&entry.mail_from)
    .bind(serde_json::Value::from(entry.rcpt_to.clone()).to_string())
    .bind(entry.message_id.as_deref())
    .bind(entry.subject.as_deref())
    .bind(entry.size_bytes)
    .bind(entry.status.as_str())
    .bind(serde_json::Value::from(entry.actions.clone()).to_string())
    .bind(entry.smtp_code)
    .bind(entry.smtp_reply.as_deref())
    .bind(entry.rule_id)
    .bind(entry.duration_ms)
    .fetch_one(&mut *conn)
    .await
    .map_err(db("writing the message log"))
}

const COLUMNS: &str = "id, received_at, node, direction, mail_from, rcpt_to, message_id, \
    subject, size_bytes, status, actions, smtp_code, smtp_reply, rule_id, duration_ms";

fn row_to_entry(row: &sqlx::any::AnyRow) -> std::result::Result<LogEntry, sqlx::Error> {
    let json_list = |text: String| serde_json::from_str::<Vec<String>>(&text).unwrap_or_default();
    let direction: String = row.try_get("direction")?;
    let status: String = row.try_get("status")?;
    Ok(LogEntry {
        id: row.try_get("id")?,
        received_at: row.try_get("received_at")?,
        node: row.try_get("node")?,
        direction: Direction::parse(&direction).unwrap_or(Direction::Inbound),
        mail_from: row.try_get("mail_from")?,
        rcpt_to: json_list(row.try_get("rcpt_to")?),
        message_id: row.try_get("message_id")?,
        subject: row.try_get("subject")?,
        size_bytes: row.try_get("size_bytes")?,
        status: LogStatus::parse(&status).unwrap_or(LogStatus::Deferred),
        actions: json_list(row.try_get("actions")?),
        smtp_code: row.try_get("smtp_code")?,
        smtp_reply: row.try_get("smtp_reply")?,
        rule_id: row.try_get("rule_id")?,
        duration_ms: row.try_get("duration_ms")?,
    })
}

impl MessageLog<'_> {
    /// Records one transaction; `entry.id` is ignored.
    pub async fn record(&self, entry: &LogEntry) -> Result<i64> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(db("writing the message log"))?;
        insert(&mut conn, entry).await
    }

    /// Records several transactions in one database transaction (one commit).
    pub async fn record_all(&self, entries: &[LogEntry]) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("writing the message log"))?;
        for entry in entries {
            insert(&mut tx, entry).await?;
        }
        tx.commit().await.map_err(db("writing the message log"))
    }

    /// Rows matching `filter`, newest first.
    pub async fn list(&self, filter: &LogFilter) -> Result<Vec<LogEntry>> {
        let mut conditions = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if filter.status.is_some() {
            conditions.push(format!("status = {}", next()));
        }
        if filter.direction.is_some() {
            conditions.push(format!("direction = {}", next()));
        }
        if filter.address.is_some() {
            let (a, b) = (next(), next());
            conditions.push(format!("(mail_from = {a} OR rcpt_to LIKE {b} ESCAPE '\\')"));
        }
        if filter.since.is_some() {
            conditions.push(format!("received_at >= {}", next()));
        }
        let limit = next();
        let sql = format!(
            "SELECT {COLUMNS} FROM message_log {} ORDER BY received_at DESC, id DESC LIMIT {limit}",
            if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            }
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(status) = filter.status {
            query = query.bind(status.as_str());
        }
        if let Some(direction) = filter.direction {
            query = query.bind(direction.as_str());
        }
        if let Some(address) = &filter.address {
            let address = address.to_ascii_lowercase();
            // rcpt_to is a JSON array of strings: match the quoted element.
            let quoted = serde_json::Value::from(address.clone()).to_string();
            let pattern = format!(
                "%{}%",
                quoted
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            );
            query = query.bind(address).bind(pattern);
        }
        if let Some(since) = filter.since {
            query = query.bind(since);
        }
        query = query.bind(filter.limit.unwrap_or(100).clamp(1, 100_000));
        let rows = query
            .fetch_all(self.pool)
            .await
            .map_err(db("reading the message log"))?;
        rows.iter()
            .map(row_to_entry)
            .collect::<std::result::Result<_, _>>()
            .map_err(db("reading the message log"))
    }
}

//! The message log (DESIGN §6): one row per SMTP transaction with what was done to the
//! message and how the session ended.
//!
//! What a sender controls (subject, Message-ID, addresses) is sanitised before it is
//! written, so that no row is refused for its content: every control character but
//! TAB becomes U+FFFD (PostgreSQL text cannot hold NUL; CR, LF and ESC would replay
//! header or terminal injection in whatever displays the log, and U+FFFD shows that
//! something was there), and each field is capped at a byte length on a character
//! boundary, ending in `…` when cut. A group commit whose transaction is still refused
//! is retried row by row, so only the row the database refuses is lost.

use std::borrow::Cow;

use sqlx::{AnyPool, Row};

use super::{Result, StoreError, db};
use crate::policy::Direction;

/// Byte caps of the stored text fields (a header line is at most 998 octets, RFC 5322
/// §2.1.1; a path at most 256, RFC 5321 §4.5.3.1.3, with room for SMTPUTF8).
const MAX_NODE: usize = 255;
const MAX_ADDRESS: usize = 512;
const MAX_RECIPIENTS: usize = 1000;
const MAX_HEADER_VALUE: usize = 998;
const MAX_ACTION: usize = 128;
const MAX_ACTIONS: usize = 64;
const MAX_REPLY: usize = 1000;

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

/// `text` as the log stores it: controls but TAB replaced by U+FFFD, at most `max`
/// bytes (cut on a character boundary, `…` appended).
fn clean(text: &str, max: usize) -> Cow<'_, str> {
    const ELLIPSIS: char = '…';
    let unsafe_char = |c: char| c.is_control() && c != '\t';
    if text.len() <= max && !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = if unsafe_char(c) { '\u{FFFD}' } else { c };
        if out.len() + c.len_utf8() > max {
            while !out.is_empty() && out.len() + ELLIPSIS.len_utf8() > max {
                out.pop();
            }
            if out.len() + ELLIPSIS.len_utf8() <= max {
                out.push(ELLIPSIS);
            }
            break;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// A JSON array of the cleaned `items` (at most `count` of them).
fn clean_list(items: &[String], max: usize, count: usize) -> String {
    let cleaned: Vec<serde_json::Value> = items
        .iter()
        .take(count)
        .map(|item| serde_json::Value::from(clean(item, max).into_owned()))
        .collect();
    serde_json::Value::Array(cleaned).to_string()
}

async fn insert(conn: &mut sqlx::AnyConnection, entry: &LogEntry) -> Result<i64> {
    let node = clean(&entry.node, MAX_NODE);
    let mail_from = clean(&entry.mail_from, MAX_ADDRESS);
    let message_id = entry
        .message_id
        .as_deref()
        .map(|v| clean(v, MAX_HEADER_VALUE));
    let subject = entry.subject.as_deref().map(|v| clean(v, MAX_HEADER_VALUE));
    let smtp_reply = entry.smtp_reply.as_deref().map(|v| clean(v, MAX_REPLY));
    sqlx::query_scalar(
        "INSERT INTO message_log (received_at, node, direction, mail_from, rcpt_to, \
         message_id, subject, size_bytes, status, actions, smtp_code, smtp_reply, rule_id, \
         duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         RETURNING id",
    )
    .bind(entry.received_at)
    .bind(node.as_ref())
    .bind(entry.direction.as_str())
    .bind(mail_from.as_ref())
    .bind(clean_list(&entry.rcpt_to, MAX_ADDRESS, MAX_RECIPIENTS))
    .bind(message_id.as_deref())
    .bind(subject.as_deref())
    .bind(entry.size_bytes)
    .bind(entry.status.as_str())
    .bind(clean_list(&entry.actions, MAX_ACTION, MAX_ACTIONS))
    .bind(entry.smtp_code)
    .bind(smtp_reply.as_deref())
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

    /// Records several transactions with one commit (group commit) and says for each
    /// entry, in order, its id or why it was not written. When the database refuses
    /// the group (a row it cannot take even sanitised), each row is retried on its
    /// own, so only the refused one is lost. `Err`: the database could not be used at
    /// all (unreachable, busy, statement timeout), and nothing was written.
    pub async fn record_all(&self, entries: &[LogEntry]) -> Result<Vec<Result<i64>>> {
        match self.record_together(entries).await {
            Ok(ids) => return Ok(ids.into_iter().map(Ok).collect()),
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => tracing::debug!(
                error = %e,
                rows = entries.len(),
                "the database refused a message-log group; writing its rows one by one"
            ),
        }
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut database_failed: Option<String> = None;
        for entry in entries {
            if let Some(why) = &database_failed {
                outcomes.push(Err(StoreError::Unavailable(format!(
                    "message-log row not written: {why}"
                ))));
                continue;
            }
            let outcome = self.record(entry).await;
            if let Err(e) = &outcome
                && e.is_transient()
            {
                // The database failed, not the row: do not wait out its timeout once
                // per remaining row.
                database_failed = Some(e.to_string());
            }
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// All of `entries` in one transaction, or none.
    async fn record_together(&self, entries: &[LogEntry]) -> Result<Vec<i64>> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("writing the message log"))?;
        let mut ids = Vec::with_capacity(entries.len());
        for entry in entries {
            ids.push(insert(&mut tx, entry).await?);
        }
        tx.commit().await.map_err(db("writing the message log"))?;
        Ok(ids)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_text_is_borrowed_and_dirty_text_sanitised() {
        assert!(matches!(clean("Grüße\tan alle", 100), Cow::Borrowed(_)));
        assert_eq!(
            clean("a\0b\r\nc\x1b[31m\x7f", 100),
            "a\u{FFFD}b\u{FFFD}\u{FFFD}c\u{FFFD}[31m\u{FFFD}"
        );
        // Cut on a character boundary, the ellipsis within the cap.
        let cut = clean("ääääää", 8);
        assert_eq!(cut, "ää…");
        assert!(cut.len() <= 8);
        assert_eq!(clean("abc", 3), "abc");
        assert_eq!(clean("abcd", 3), "…");
        assert_eq!(clean("abcd", 2), "");
        assert_eq!(
            clean_list(&["a\0".into(), "b".into()], 10, 1),
            "[\"a\u{FFFD}\"]"
        );
    }
}

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

use super::filter::{Bind, Where, like_literal};
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

/// A crypto result the log can be filtered and counted by (the console's and
/// `smimegate log --crypto`'s words).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum CryptoResult {
    /// The gateway signed the message (outbound).
    Signed,
    /// The gateway encrypted the message (outbound).
    Encrypted,
    /// The gateway decrypted the message (inbound).
    Decrypted,
    /// Every signature layer of the message verified (inbound).
    SignatureValid,
    /// A signature layer did not verify (bad, untrusted, expired, revoked, …; not
    /// `unchecked`, which is the gateway's own temporary failure).
    SignatureInvalid,
    /// No crypto action at all (`crypto = 0`): not signed, encrypted, decrypted or
    /// verified, and no other crypto note (kept encrypted, undecryptable, …).
    None,
}

/// Which action words a rule looks at: the row's whole list, in the relay's words.
type Words<'a> = &'a [&'a str];

/// Whether a row's words have a crypto result.
type Has = fn(Words) -> bool;

/// The `signature-VERDICT` words (one per signature layer).
fn signatures<'a>(words: Words<'a>) -> impl Iterator<Item = &'a str> + 'a {
    words
        .iter()
        .copied()
        .filter(|w| w.starts_with("signature-"))
}

/// The one mapping from the relay's action words (`relay::actions`) to the crypto
/// results: each result, its bit in the `crypto` column, and when a row's words have
/// it. The writer stores the bits ([`crypto_bits`]); the filters and counts test
/// them in SQL; the migration `0012_message_crypto.sql` backfills rows written before
/// it with the same rules in SQL (a test holds the two together).
/// [`CryptoResult::None`] is the absence of every bit, [`OTHER_CRYPTO`]'s included.
const CRYPTO: [(CryptoResult, i64, Has); 5] = [
    (CryptoResult::Signed, 1, |w| w.contains(&"signed")),
    (CryptoResult::Encrypted, 2, |w| {
        w.iter()
            .any(|w| *w == "encrypted" || w.starts_with("encrypted ("))
    }),
    (CryptoResult::Decrypted, 4, |w| {
        w.iter().any(|w| w.starts_with("decrypted ("))
    }),
    // Every signature layer valid.
    (CryptoResult::SignatureValid, 8, |w| {
        signatures(w).next().is_some() && signatures(w).all(|s| s == "signature-valid")
    }),
    // A layer with a verdict about the sender other than valid (`unchecked` is the
    // gateway's own temporary failure).
    (CryptoResult::SignatureInvalid, 16, |w| {
        signatures(w).any(|s| s != "signature-valid" && s != "signature-unchecked")
    }),
];

/// The bit of a crypto note that is no result of its own (kept encrypted,
/// undecryptable, decryption failed, weak cipher, signature unchecked): it keeps
/// such a message out of [`CryptoResult::None`].
const OTHER_CRYPTO: (i64, Has) = (32, |w| {
    w.iter().any(|w| {
        *w == "kept-encrypted"
            || w.starts_with("undecryptable:")
            || *w == "decryption-failed"
            || w.starts_with("weak-cipher ")
            || *w == "signature-unchecked"
    })
});

impl CryptoResult {
    pub const ALL: [CryptoResult; 6] = [
        CryptoResult::Signed,
        CryptoResult::Encrypted,
        CryptoResult::Decrypted,
        CryptoResult::SignatureValid,
        CryptoResult::SignatureInvalid,
        CryptoResult::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CryptoResult::Signed => "signed",
            CryptoResult::Encrypted => "encrypted",
            CryptoResult::Decrypted => "decrypted",
            CryptoResult::SignatureValid => "signature-valid",
            CryptoResult::SignatureInvalid => "signature-invalid",
            CryptoResult::None => "none",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().to_ascii_lowercase().replace([' ', '_'], "-");
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// This result's bit in the `crypto` column (0 for `None`).
    pub fn bit(self) -> i64 {
        CRYPTO
            .iter()
            .find(|(r, _, _)| *r == self)
            .map_or(0, |(_, bit, _)| *bit)
    }

    /// The results the `crypto` bits say (`None` alone for 0 bits).
    pub fn of_bits(bits: i64) -> Vec<CryptoResult> {
        if bits == 0 {
            return vec![CryptoResult::None];
        }
        CRYPTO
            .iter()
            .filter(|(_, bit, _)| bits & bit != 0)
            .map(|(r, _, _)| *r)
            .collect()
    }
}

impl std::fmt::Display for CryptoResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `crypto` bits of a row with these action words (see [`CRYPTO`]).
pub fn crypto_bits(actions: &[String]) -> i64 {
    let words: Vec<&str> = actions.iter().map(String::as_str).collect();
    CRYPTO
        .iter()
        .map(|(_, bit, has)| (*bit, *has))
        .chain([OTHER_CRYPTO])
        .filter(|(_, has)| has(&words))
        .fold(0, |bits, (bit, _)| bits | bit)
}

/// Which rows to list; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub status: Option<LogStatus>,
    pub direction: Option<Direction>,
    /// Sender or one of the recipients (exact, lower case).
    pub address: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    pub until: Option<i64>,
    pub crypto: Option<CryptoResult>,
    /// At most this many rows (1..=100 000; default 100).
    pub limit: Option<i64>,
    /// Skip this many rows of the newest-first order.
    pub offset: Option<i64>,
}

impl LogFilter {
    /// The WHERE clause of the filter, its values bound in order.
    fn conditions(&self) -> Where {
        let mut w = Where::default();
        if let Some(status) = self.status {
            w.add("status = ?", vec![Bind::Text(status.as_str().into())]);
        }
        if let Some(direction) = self.direction {
            w.add("direction = ?", vec![Bind::Text(direction.as_str().into())]);
        }
        if let Some(address) = &self.address {
            let address = address.trim().to_ascii_lowercase();
            // rcpt_to is a JSON array of strings: match the quoted element.
            let quoted = serde_json::Value::from(address.clone()).to_string();
            let pattern = format!("%{}%", like_literal(&quoted));
            w.add(
                "(mail_from = ? OR rcpt_to LIKE ? ESCAPE '\\')",
                vec![Bind::Text(address), Bind::Text(pattern)],
            );
        }
        if let Some(since) = self.since {
            w.add("received_at >= ?", vec![Bind::Int(since)]);
        }
        if let Some(until) = self.until {
            w.add("received_at < ?", vec![Bind::Int(until)]);
        }
        match self.crypto {
            Some(CryptoResult::None) => w.add("crypto = 0", vec![]),
            Some(result) => w.add("(crypto & ?) <> 0", vec![Bind::Int(result.bit())]),
            None => {}
        }
        w
    }
}

/// Messages of one direction since a time, counted by crypto result.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CryptoCounts {
    pub total: i64,
    pub signed: i64,
    pub encrypted: i64,
    pub decrypted: i64,
    pub signature_valid: i64,
    pub signature_invalid: i64,
    pub none: i64,
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

/// The columns an insert writes, in the order [`bind_entry`] binds them.
const INSERT_COLUMNS: &str = "received_at, node, direction, mail_from, rcpt_to, message_id, \
    subject, size_bytes, status, actions, smtp_code, smtp_reply, rule_id, duration_ms, crypto";
const INSERT_ARITY: usize = 15;

/// `INSERT … VALUES (…), (…) … RETURNING id` for `rows` rows.
fn insert_sql(rows: usize) -> String {
    let mut sql = format!("INSERT INTO message_log ({INSERT_COLUMNS}) VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..INSERT_ARITY {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", row * INSERT_ARITY + column + 1));
        }
        sql.push(')');
    }
    sql.push_str(" RETURNING id");
    sql
}

/// Most rows one INSERT statement carries (15 parameters each: well inside SQLite's
/// and PostgreSQL's limits). The statement for each row count up to this is prepared
/// once per connection and kept in sqlx's statement cache.
const MAX_ROWS_PER_INSERT: usize = 32;

static INSERT_SQL: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| (1..=MAX_ROWS_PER_INSERT).map(insert_sql).collect());

fn bind_entry<'q>(
    query: sqlx::query::QueryScalar<'q, sqlx::Any, i64, sqlx::any::AnyArguments>,
    entry: &LogEntry,
) -> sqlx::query::QueryScalar<'q, sqlx::Any, i64, sqlx::any::AnyArguments> {
    let node = clean(&entry.node, MAX_NODE).into_owned();
    let mail_from = clean(&entry.mail_from, MAX_ADDRESS).into_owned();
    let message_id = entry
        .message_id
        .as_deref()
        .map(|v| clean(v, MAX_HEADER_VALUE).into_owned());
    let subject = entry
        .subject
        .as_deref()
        .map(|v| clean(v, MAX_HEADER_VALUE).into_owned());
    let smtp_reply = entry
        .smtp_reply
        .as_deref()
        .map(|v| clean(v, MAX_REPLY).into_owned());
    query
        .bind(entry.received_at)
        .bind(node)
        .bind(entry.direction.as_str())
        .bind(mail_from)
        .bind(clean_list(&entry.rcpt_to, MAX_ADDRESS, MAX_RECIPIENTS))
        .bind(message_id)
        .bind(subject)
        .bind(entry.size_bytes)
        .bind(entry.status.as_str())
        .bind(clean_list(&entry.actions, MAX_ACTION, MAX_ACTIONS))
        .bind(entry.smtp_code)
        .bind(smtp_reply)
        .bind(entry.rule_id)
        .bind(entry.duration_ms)
        .bind(crypto_bits(&entry.actions))
}

/// Inserts `entries`, [`MAX_ROWS_PER_INSERT`] rows per statement; their ids in the
/// order of `entries`.
async fn insert_rows(conn: &mut sqlx::AnyConnection, entries: &[LogEntry]) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(entries.len());
    for chunk in entries.chunks(MAX_ROWS_PER_INSERT) {
        let Some(sql) = INSERT_SQL.get(chunk.len().saturating_sub(1)) else {
            // Unreachable: chunks are 1..=MAX_ROWS_PER_INSERT rows long.
            return Err(StoreError::Unavailable(format!(
                "writing the message log: no statement for {} rows",
                chunk.len()
            )));
        };
        let query = chunk
            .iter()
            .fold(sqlx::query_scalar(sql.as_str()), bind_entry);
        let mut chunk_ids: Vec<i64> = query
            .fetch_all(&mut *conn)
            .await
            .map_err(db("writing the message log"))?;
        // Ids are handed out in the order of the VALUES rows; RETURNING need not
        // list them in that order.
        chunk_ids.sort_unstable();
        ids.extend(chunk_ids);
    }
    Ok(ids)
}

/// All of `entries` or none: in one INSERT statement when they fit one (atomic by
/// itself, so without the round trips of BEGIN and COMMIT), else in a transaction.
async fn record_together(conn: &mut sqlx::AnyConnection, entries: &[LogEntry]) -> Result<Vec<i64>> {
    if entries.len() <= MAX_ROWS_PER_INSERT {
        return insert_rows(conn, entries).await;
    }
    let mut tx = sqlx::Connection::begin(conn)
        .await
        .map_err(db("writing the message log"))?;
    let ids = insert_rows(&mut tx, entries).await?;
    tx.commit().await.map_err(db("writing the message log"))?;
    Ok(ids)
}

/// A pool connection a writer keeps between its writes (see
/// [`MessageLog::record_all_on`]); empty until first used.
#[derive(Default)]
pub struct HeldConnection(Option<sqlx::pool::PoolConnection<sqlx::Any>>);

impl HeldConnection {
    async fn connection(&mut self, pool: &AnyPool) -> Result<&mut sqlx::AnyConnection> {
        let conn = match self.0.take() {
            Some(conn) => conn,
            None => pool
                .acquire()
                .await
                .map_err(db("writing the message log"))?,
        };
        Ok(&mut **self.0.insert(conn))
    }

    pub fn is_held(&self) -> bool {
        self.0.is_some()
    }

    /// Gives the connection back to the pool (if one is held).
    pub fn release(&mut self) {
        self.0 = None;
    }
}

async fn insert(conn: &mut sqlx::AnyConnection, entry: &LogEntry) -> Result<i64> {
    insert_rows(conn, std::slice::from_ref(entry))
        .await?
        .first()
        .copied()
        .ok_or_else(|| {
            StoreError::Unavailable("writing the message log: the database returned no id".into())
        })
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
    /// Deletes the rows received before `cutoff` (unix seconds), at most `batch` per
    /// statement, until none is left; returns how many. Each batch is a statement of
    /// its own, so a large backlog never holds SQLite's write lock or one PostgreSQL
    /// transaction for long: the relay's inserts go on between batches.
    pub async fn purge_before(&self, cutoff: i64, batch: i64) -> Result<u64> {
        let batch = batch.max(1);
        let mut total = 0;
        loop {
            let deleted = sqlx::query(
                "DELETE FROM message_log WHERE id IN \
                 (SELECT id FROM message_log WHERE received_at < $1 LIMIT $2)",
            )
            .bind(cutoff)
            .bind(batch)
            .execute(self.pool)
            .await
            .map_err(db("purging the message log"))?
            .rows_affected();
            total += deleted;
            if deleted < batch.unsigned_abs() {
                return Ok(total);
            }
        }
    }

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
        self.record_all_on(&mut HeldConnection::default(), entries)
            .await
    }

    /// [`Self::record_all`] on `held`'s connection, taken from the pool first if it
    /// holds none, and kept there for the next group. Every connection that goes back
    /// to sqlx's pool is pinged on the way (for SQLite a round trip to its worker
    /// thread); a writer that keeps its connection between groups saves that per
    /// group. After a failure the connection is given back, not kept.
    pub async fn record_all_on(
        &self,
        held: &mut HeldConnection,
        entries: &[LogEntry],
    ) -> Result<Vec<Result<i64>>> {
        let together = match held.connection(self.pool).await {
            Ok(conn) => record_together(conn, entries).await,
            Err(e) => Err(e),
        };
        match together {
            Ok(ids) => return Ok(ids.into_iter().map(Ok).collect()),
            Err(e) => {
                // Given back after any failure: the pool checks it (and finishes an
                // undone transaction), and the rows below take connections of their
                // own, which a pool of one connection could not give while it is held.
                held.release();
                if e.is_transient() {
                    return Err(e);
                }
                tracing::debug!(
                    error = %e,
                    rows = entries.len(),
                    "the database refused a message-log group; writing its rows one by one"
                );
            }
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

    /// Rows matching `filter`, newest first.
    pub async fn list(&self, filter: &LogFilter) -> Result<Vec<LogEntry>> {
        let w = filter.conditions();
        let n = w.next_placeholder();
        let sql = format!(
            "SELECT {COLUMNS} FROM message_log {} ORDER BY received_at DESC, id DESC \
             LIMIT ${n} OFFSET ${}",
            w.clause(),
            n + 1
        );
        let query = w
            .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .bind(filter.limit.unwrap_or(100).clamp(1, 100_000))
            .bind(filter.offset.unwrap_or(0).max(0));
        let rows = query
            .fetch_all(self.pool)
            .await
            .map_err(db("reading the message log"))?;
        rows.iter()
            .map(row_to_entry)
            .collect::<std::result::Result<_, _>>()
            .map_err(db("reading the message log"))
    }

    /// How many rows match `filter` (its limit and offset ignored).
    pub async fn count(&self, filter: &LogFilter) -> Result<i64> {
        let w = filter.conditions();
        let sql = format!("SELECT COUNT(*) FROM message_log {}", w.clause());
        let row = w
            .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .fetch_one(self.pool)
            .await
            .map_err(db("counting the message log"))?;
        row.try_get::<i64, _>(0)
            .map_err(db("counting the message log"))
    }

    /// Rows received at or after `since`, counted per direction and crypto result
    /// (one SQL).
    pub async fn crypto_counts(&self, since: i64) -> Result<Vec<(Direction, CryptoCounts)>> {
        let sum = |bit: i64| format!("SUM(CASE WHEN (crypto & {bit}) <> 0 THEN 1 ELSE 0 END)");
        let sql = format!(
            "SELECT direction, COUNT(*) AS total, {} AS signed, {} AS encrypted, \
             {} AS decrypted, {} AS signature_valid, {} AS signature_invalid, \
             SUM(CASE WHEN crypto = 0 THEN 1 ELSE 0 END) AS no_crypto \
             FROM message_log WHERE received_at >= $1 GROUP BY direction ORDER BY direction",
            sum(CryptoResult::Signed.bit()),
            sum(CryptoResult::Encrypted.bit()),
            sum(CryptoResult::Decrypted.bit()),
            sum(CryptoResult::SignatureValid.bit()),
            sum(CryptoResult::SignatureInvalid.bit()),
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(since)
            .fetch_all(self.pool)
            .await
            .map_err(db("counting the message log"))?;
        let read = db("counting the message log");
        let mut out = Vec::new();
        for row in &rows {
            let direction: String = row.try_get("direction").map_err(&read)?;
            let Ok(direction) = Direction::parse(&direction) else {
                tracing::warn!(%direction, "message log row with an unknown direction");
                continue;
            };
            let get = |name: &str| -> Result<i64> {
                // SUM over no rows is NULL on both databases.
                Ok(row
                    .try_get::<Option<i64>, _>(name)
                    .map_err(&read)?
                    .unwrap_or(0))
            };
            out.push((
                direction,
                CryptoCounts {
                    total: get("total")?,
                    signed: get("signed")?,
                    encrypted: get("encrypted")?,
                    decrypted: get("decrypted")?,
                    signature_valid: get("signature_valid")?,
                    signature_invalid: get("signature_invalid")?,
                    none: get("no_crypto")?,
                },
            ));
        }
        Ok(out)
    }

    /// Deferred rows received at or after `since` whose reply is ours for a failed
    /// next hop (`smtp::client::UNAVAILABLE`): how many, and the newest's time.
    pub async fn next_hop_errors(&self, since: i64) -> Result<(i64, Option<i64>)> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MAX(received_at) AS last FROM message_log \
             WHERE status = 'deferred' AND received_at >= $1 AND smtp_reply LIKE $2",
        )
        .bind(since)
        .bind(format!("%{}%", crate::smtp::client::UNAVAILABLE))
        .fetch_one(self.pool)
        .await
        .map_err(db("counting next-hop errors"))?;
        let read = db("counting next-hop errors");
        Ok((
            row.try_get::<i64, _>("n").map_err(&read)?,
            row.try_get::<Option<i64>, _>("last").map_err(&read)?,
        ))
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

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|w| w.to_string()).collect()
    }

    fn results(list: &[&str]) -> Vec<&'static str> {
        CryptoResult::of_bits(crypto_bits(&words(list)))
            .into_iter()
            .map(CryptoResult::as_str)
            .collect()
    }

    #[test]
    fn each_crypto_result_maps_from_exactly_the_relays_action_words() {
        assert_eq!(results(&["signed"]), ["signed"]);
        assert_eq!(results(&["signed", "encrypted"]), ["signed", "encrypted"]);
        assert_eq!(results(&["encrypted (3 copies for Bcc)"]), ["encrypted"]);
        assert_eq!(
            results(&[
                "decrypted (aes256-gcm, rsa-oaep)",
                "signature-valid",
                "signer a@b valid: ok"
            ]),
            ["decrypted", "signature-valid"]
        );
        assert_eq!(results(&["signature-bad-signature"]), ["signature-invalid"]);
        assert_eq!(results(&["signature-revoked"]), ["signature-invalid"]);
        // Two layers, one valid and one not: invalid, not valid.
        assert_eq!(
            results(&["signature-valid", "signature-untrusted"]),
            ["signature-invalid"]
        );
        // The gateway's own failure to check says nothing about the sender, but it is
        // a crypto note: neither valid, invalid nor none.
        assert!(results(&["signature-unchecked"]).is_empty());
        assert!(results(&["kept-encrypted"]).is_empty());
        assert!(results(&["decryption-failed", "kept-encrypted"]).is_empty());
        assert!(results(&["undecryptable: no key", "kept-encrypted"]).is_empty());
        // No crypto action: plain relaying, policy notes, refusals, not signing.
        assert_eq!(results(&[]), ["none"]);
        assert_eq!(
            results(&["not signed: no certificate", "refused"]),
            ["none"]
        );
        assert_eq!(results(&["harvested"]), ["none"]);
        // Words that merely contain a result's word do not count.
        assert_eq!(
            results(&["kept-encrypted-note", "unsigned", "decryption-failed"]),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn crypto_results_parse_as_operators_type_them_and_have_distinct_bits() {
        for r in CryptoResult::ALL {
            assert_eq!(CryptoResult::parse(r.as_str()), Some(r));
        }
        assert_eq!(
            CryptoResult::parse(" Signature Valid "),
            Some(CryptoResult::SignatureValid)
        );
        assert_eq!(
            CryptoResult::parse("signature_invalid"),
            Some(CryptoResult::SignatureInvalid)
        );
        assert_eq!(CryptoResult::parse("sealed"), None);
        let bits: Vec<i64> = CRYPTO.iter().map(|(_, b, _)| *b).collect();
        for (i, b) in bits.iter().enumerate() {
            assert_eq!(b.count_ones(), 1);
            assert_eq!(b & OTHER_CRYPTO.0, 0);
            assert!(!bits[i + 1..].contains(b));
        }
        assert_eq!(CryptoResult::None.bit(), 0);
    }
}

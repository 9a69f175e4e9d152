//! The email overview (issue 11): the message log searched by time range, direction,
//! status, crypto result and address, a page at a time, and exported as CSV. Reads
//! only: no actor, no audit row.
//!
//! The filters are text as an operator types them (the console takes
//! [`MessageQuery`] as its query string, `smimegate log` builds it from flags); each
//! is checked here, so a wrong one is an [`OpError::Invalid`] naming it.

use std::io::Write;

use super::input::{self, invalid};
use super::{OpError, Ops, rfc3339};
use crate::policy::Direction;
use crate::store::{CryptoResult, LogEntry, LogFilter, LogStatus, crypto_bits};

/// The largest page.
pub const MAX_PAGE_SIZE: i64 = 500;
/// The page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// The page and page size asked for (defaults 1 and [`DEFAULT_PAGE_SIZE`]), or why
/// they are out of range; shared by every paged read.
pub(super) fn paging(page: Option<i64>, page_size: Option<i64>) -> Result<(i64, i64), OpError> {
    let page_size = page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(OpError::Invalid(format!(
            "page_size must be 1 to {MAX_PAGE_SIZE}"
        )));
    }
    let page = page.unwrap_or(1);
    if !(1..=1_000_000).contains(&page) {
        return Err(OpError::Invalid("page must be 1 or more".into()));
    }
    Ok((page, page_size))
}

/// The most rows one CSV export holds (narrow the filter for more).
pub const MAX_CSV_ROWS: i64 = 100_000;

/// Which messages to show; every field narrows, an empty one does not.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
// Unknown fields are ignored: a console form or a cache-buster may add its own.
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct MessageQuery {
    /// Received at or after: RFC 3339, unix seconds, or an age (`2h`, `7d`).
    pub from: Option<String>,
    /// Received before (same forms).
    pub to: Option<String>,
    /// `inbound` or `outbound`.
    pub direction: Option<String>,
    /// `relayed`, `rejected` or `deferred`.
    pub status: Option<String>,
    /// `signed`, `encrypted`, `decrypted`, `signature-valid`, `signature-invalid` or
    /// `none`.
    #[schema(value_type = Option<CryptoResult>)]
    #[param(value_type = Option<CryptoResult>)]
    pub crypto: Option<String>,
    /// The sender or one of the recipients (exact).
    pub address: Option<String>,
    /// 1 is the newest page.
    pub page: Option<i64>,
    /// Rows per page, 1..=500 (default 50).
    pub page_size: Option<i64>,
}

/// One logged transaction as the overview shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct MessageRow {
    pub id: i64,
    /// Unix seconds.
    pub received_at: i64,
    /// The same time as RFC 3339 (UTC).
    pub received: String,
    pub node: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub message_id: Option<String>,
    /// Decoded (RFC 2047); absent when `[log] subjects = false`.
    pub subject: Option<String>,
    pub size_bytes: i64,
    /// `relayed`, `rejected` or `deferred`.
    pub status: String,
    /// The crypto results (see [`MessageQuery::crypto`]); an empty list for a crypto
    /// note only (kept encrypted, signature unchecked, …).
    pub crypto: Vec<String>,
    /// Everything that was done, in the relay's words.
    pub actions: Vec<String>,
    pub smtp_code: Option<i64>,
    pub smtp_reply: Option<String>,
    pub rule_id: Option<i64>,
    pub duration_ms: i64,
}

/// One page of the overview, newest first.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct MessagePage {
    pub rows: Vec<MessageRow>,
    pub page: i64,
    pub page_size: i64,
    /// Rows matching the filters on all pages.
    pub total: i64,
    pub has_more: bool,
}

impl From<LogEntry> for MessageRow {
    fn from(e: LogEntry) -> Self {
        MessageRow {
            crypto: CryptoResult::of_bits(crypto_bits(&e.actions))
                .into_iter()
                .map(|r| r.as_str().to_string())
                .collect(),
            id: e.id,
            received: rfc3339(e.received_at),
            received_at: e.received_at,
            node: e.node,
            direction: e.direction.as_str().to_string(),
            mail_from: e.mail_from,
            rcpt_to: e.rcpt_to,
            message_id: e.message_id,
            subject: e.subject,
            size_bytes: e.size_bytes,
            status: e.status.as_str().to_string(),
            actions: e.actions,
            smtp_code: e.smtp_code,
            smtp_reply: e.smtp_reply,
            rule_id: e.rule_id,
            duration_ms: e.duration_ms,
        }
    }
}

/// `Some(text)` when the field is given and not blank.
fn given(field: &Option<String>) -> Option<&str> {
    field.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

/// The store filter of a query (its paging aside), each field checked.
pub fn filter(query: &MessageQuery) -> Result<LogFilter, OpError> {
    let status = given(&query.status)
        .map(|s| {
            LogStatus::parse(s).ok_or_else(|| {
                OpError::Invalid(format!(
                    "unknown status '{s}' (relayed, rejected, deferred)"
                ))
            })
        })
        .transpose()?;
    let crypto = given(&query.crypto)
        .map(|c| {
            CryptoResult::parse(c).ok_or_else(|| {
                let known: Vec<&str> = CryptoResult::ALL.iter().map(|r| r.as_str()).collect();
                OpError::Invalid(format!(
                    "unknown crypto result '{c}' ({})",
                    known.join(", ")
                ))
            })
        })
        .transpose()?;
    let address = given(&query.address)
        .map(|a| {
            if a.len() > 512 || a.chars().any(char::is_control) {
                Err(OpError::Invalid(
                    "address: at most 512 characters, no control characters".into(),
                ))
            } else {
                Ok(a.to_string())
            }
        })
        .transpose()?;
    let since = given(&query.from)
        .map(|t| input::time("from", t))
        .transpose()?;
    let until = given(&query.to).map(|t| input::time("to", t)).transpose()?;
    if let (Some(since), Some(until)) = (since, until)
        && until <= since
    {
        return Err(OpError::Invalid(
            "the time range ends before it starts ('to' must be after 'from')".into(),
        ));
    }
    Ok(LogFilter {
        status,
        direction: given(&query.direction)
            .map(Direction::parse)
            .transpose()
            .map_err(invalid)?,
        address,
        since,
        until,
        crypto,
        limit: None,
        offset: None,
    })
}

/// One page of the messages matching `query`, newest first, with the total count.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn search(ctx: &Ops<'_>, query: MessageQuery) -> Result<MessagePage, OpError> {
    let mut filter = filter(&query)?;
    let (page, page_size) = paging(query.page, query.page_size)?;
    filter.limit = Some(page_size);
    filter.offset = Some((page - 1) * page_size);
    let log = ctx.store.message_log();
    let total = log.count(&filter).await?;
    let rows: Vec<MessageRow> = log
        .list(&filter)
        .await?
        .into_iter()
        .map(MessageRow::from)
        .collect();
    Ok(MessagePage {
        has_more: page * page_size < total,
        rows,
        page,
        page_size,
        total,
    })
}

/// The CSV header line's columns.
const CSV_COLUMNS: [&str; 16] = [
    "id",
    "received",
    "direction",
    "status",
    "from",
    "to",
    "subject",
    "message_id",
    "crypto",
    "actions",
    "smtp_code",
    "smtp_reply",
    "size_bytes",
    "duration_ms",
    "rule_id",
    "node",
];

/// One CSV cell (RFC 4180): a cell a spreadsheet would read as a formula (starting
/// with `=`, `+`, `-`, `@`, TAB or CR) gets a leading `'`; a cell with a quote, a
/// comma, CR or LF is quoted, its quotes doubled.
pub fn csv_cell(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains(['"', ',', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn csv_line(out: &mut impl Write, cells: &[String]) -> std::io::Result<()> {
    let line: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
    out.write_all(line.join(",").as_bytes())?;
    out.write_all(b"\r\n")
}

/// Writes the messages matching `query` (all pages, newest first, at most
/// [`MAX_CSV_ROWS`]; its paging ignored) to `out` as CSV with a header line, and
/// says how many rows it wrote.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn csv(
    ctx: &Ops<'_>,
    query: MessageQuery,
    out: &mut impl Write,
) -> Result<usize, OpError> {
    let mut filter = filter(&query)?;
    filter.limit = Some(MAX_CSV_ROWS);
    let rows = ctx.store.message_log().list(&filter).await?;
    let write_failed = |e: std::io::Error| OpError::Invalid(format!("writing the CSV: {e}"));
    let header: Vec<String> = CSV_COLUMNS.iter().map(|c| c.to_string()).collect();
    csv_line(out, &header).map_err(write_failed)?;
    let count = rows.len();
    for entry in rows {
        let r = MessageRow::from(entry);
        let opt = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
        csv_line(
            out,
            &[
                r.id.to_string(),
                r.received,
                r.direction,
                r.status,
                r.mail_from,
                r.rcpt_to.join(" "),
                r.subject.unwrap_or_default(),
                r.message_id.unwrap_or_default(),
                r.crypto.join(" "),
                r.actions.join("; "),
                opt(r.smtp_code),
                r.smtp_reply.unwrap_or_default(),
                r.size_bytes.to_string(),
                r.duration_ms.to_string(),
                opt(r.rule_id),
                r.node,
            ],
        )
        .map_err(write_failed)?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_as_rfc_4180_says() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell(""), "");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("two\r\nlines"), "\"two\r\nlines\"");
        assert_eq!(csv_cell("Grüße"), "Grüße");
    }

    #[test]
    fn csv_cells_a_spreadsheet_would_run_as_formulas_are_neutralised() {
        assert_eq!(
            csv_cell("=HYPERLINK(\"http://x\")"),
            "\"'=HYPERLINK(\"\"http://x\"\")\""
        );
        assert_eq!(csv_cell("+1+1"), "'+1+1");
        assert_eq!(csv_cell("-2"), "'-2");
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("\tcmd"), "'\tcmd");
        assert_eq!(csv_cell("\rcmd"), "\"'\rcmd\"");
        // Only at the start.
        assert_eq!(csv_cell("a=b"), "a=b");
    }

    #[test]
    fn query_filters_are_checked_and_name_what_is_wrong() {
        let wrong = |q: MessageQuery| filter(&q).unwrap_err().to_string();
        assert!(
            wrong(MessageQuery {
                crypto: Some("sealed".into()),
                ..Default::default()
            })
            .contains("unknown crypto result 'sealed'")
        );
        assert!(
            wrong(MessageQuery {
                status: Some("lost".into()),
                ..Default::default()
            })
            .contains("unknown status")
        );
        assert!(
            wrong(MessageQuery {
                from: Some("yesterday".into()),
                ..Default::default()
            })
            .starts_with("from 'yesterday'")
        );
        assert!(
            wrong(MessageQuery {
                from: Some("2026-11-28T10:00:00Z".into()),
                to: Some("2026-11-28T09:00:00Z".into()),
                ..Default::default()
            })
            .contains("ends before it starts")
        );
        assert!(
            wrong(MessageQuery {
                address: Some("a\u{0}b".into()),
                ..Default::default()
            })
            .contains("control")
        );
        let ok = filter(&MessageQuery {
            crypto: Some("Signature-Invalid".into()),
            direction: Some("in".into()),
            status: Some(" ".into()),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(ok.crypto, Some(CryptoResult::SignatureInvalid));
        assert_eq!(ok.direction, Some(Direction::Inbound));
        assert_eq!(ok.status, None, "a blank field does not filter");
    }
}

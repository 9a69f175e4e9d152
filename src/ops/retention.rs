//! Message-log retention: the rows of messages received more than `[log].keep_days`
//! ago are deleted (0 keeps them forever). The lifecycle job runs it on each run; it
//! deletes in bounded batches so the relay's own writes go on meanwhile, and writes
//! one audit row saying how many went.

use super::{Actor, OpError, Ops, audit, rfc3339};

/// Rows one DELETE statement removes at most.
pub const BATCH: i64 = 5_000;

/// What one purge did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    /// `[log].keep_days` in force (0: nothing is ever deleted).
    pub keep_days: u32,
    /// Rows received before this instant (unix seconds) were deleted; `None` when
    /// retention is off.
    pub cutoff: Option<i64>,
    pub deleted: u64,
}

/// Deletes the message-log rows older than `[log].keep_days` before `at` (unix
/// seconds), `batch` rows per statement.
pub async fn purge_message_log(
    ctx: &Ops<'_>,
    actor: &Actor,
    at: i64,
    batch: i64,
) -> Result<Purged, OpError> {
    let keep_days = ctx.settings.config.log.keep_days;
    if keep_days == 0 {
        return Ok(Purged {
            keep_days,
            cutoff: None,
            deleted: 0,
        });
    }
    let cutoff = at.saturating_sub(i64::from(keep_days) * 86_400);
    let deleted = ctx.store.message_log().purge_before(cutoff, batch).await?;
    if deleted > 0 {
        audit(
            ctx.store,
            actor,
            "message_log.purge",
            "message_log",
            &format!(
                "{deleted} rows received before {} deleted (keep_days = {keep_days})",
                rfc3339(cutoff)
            ),
        )
        .await?;
        tracing::info!(
            deleted,
            keep_days,
            cutoff = %rfc3339(cutoff),
            "message log: rows past retention deleted"
        );
    }
    Ok(Purged {
        keep_days,
        cutoff: Some(cutoff),
        deleted,
    })
}

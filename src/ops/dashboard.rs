//! The console's dashboard, from the database alone (the console adds the token's
//! health from its `App`): seats, the last 24 hours of mail by direction and crypto
//! result, managed certificates expiring within 30 days, next-hop errors. A read: no
//! actor, no audit row.

use super::{OpError, Ops, rfc3339};
use crate::policy::Direction;
use crate::store::CryptoCounts;

/// The window of the message counts and the next-hop errors.
pub const RECENT_SECS: i64 = 24 * 3600;
/// How far ahead expiring certificates are shown.
pub const EXPIRING_SECS: i64 = 30 * 86400;
/// The most expiring certificates listed.
const MAX_EXPIRING: i64 = 100;

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Dashboard {
    /// Unix seconds the summary was made at.
    pub at: i64,
    pub seats: Seats,
    /// Messages received in the last 24 hours.
    pub inbound: MessageCounts,
    pub outbound: MessageCounts,
    /// Current certificates of managed mailboxes expiring within 30 days, soonest
    /// first.
    pub expiring: Vec<ExpiringCertificate>,
    pub next_hop_errors: NextHopErrors,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Seats {
    /// S/MIME seats held (pending, active, revoke pending).
    pub used: i64,
    /// None: no licence limit.
    pub free: Option<i64>,
    /// None: no licence limit.
    pub licensed: Option<i64>,
    /// The licence has ended: no new seats.
    pub expired: bool,
}

/// Messages of one direction by crypto result (a message can count under several:
/// signed and encrypted).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct MessageCounts {
    pub total: i64,
    pub signed: i64,
    pub encrypted: i64,
    pub decrypted: i64,
    pub signature_valid: i64,
    pub signature_invalid: i64,
    /// No crypto action.
    pub none: i64,
}

impl From<CryptoCounts> for MessageCounts {
    fn from(c: CryptoCounts) -> Self {
        MessageCounts {
            total: c.total,
            signed: c.signed,
            encrypted: c.encrypted,
            decrypted: c.decrypted,
            signature_valid: c.signature_valid,
            signature_invalid: c.signature_invalid,
            none: c.none,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ExpiringCertificate {
    pub address: String,
    /// `issued` or `uploaded`.
    pub source: String,
    /// Unix seconds.
    pub not_after: i64,
    /// The same time as RFC 3339 (UTC).
    pub expires: String,
    pub fingerprint_sha256: String,
}

/// Transactions deferred in the last 24 hours because a next hop failed.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct NextHopErrors {
    pub count: i64,
    /// Unix seconds of the newest.
    pub last_at: Option<i64>,
}

#[tracing::instrument(level = "debug", skip_all)]
pub async fn summary(ctx: &Ops<'_>) -> Result<Dashboard, OpError> {
    let now = crate::store::unix_now();
    let licence = super::licence::show(ctx).await?;
    let log = ctx.store.message_log();
    let (mut inbound, mut outbound) = (MessageCounts::default(), MessageCounts::default());
    for (direction, counts) in log.crypto_counts(now - RECENT_SECS).await? {
        match direction {
            Direction::Inbound => inbound = counts.into(),
            Direction::Outbound => outbound = counts.into(),
        }
    }
    let expiring = ctx
        .store
        .certificates()
        .managed_expiring(now, now + EXPIRING_SECS, MAX_EXPIRING)
        .await?
        .into_iter()
        .map(|c| ExpiringCertificate {
            address: c.owner_address.unwrap_or_default(),
            source: c.source.as_str().to_string(),
            not_after: c.record.not_after,
            expires: rfc3339(c.record.not_after),
            fingerprint_sha256: c.record.fingerprint_sha256,
        })
        .collect();
    let (count, last_at) = log.next_hop_errors(now - RECENT_SECS).await?;
    Ok(Dashboard {
        at: now,
        seats: Seats {
            used: licence.smime_seats_used,
            free: licence.smime_seats_free,
            licensed: licence.licence.as_ref().map(|l| l.smime_seats),
            expired: licence.expired,
        },
        inbound,
        outbound,
        expiring,
        next_hop_errors: NextHopErrors { count, last_at },
    })
}

//! The seat licence: `licence set` and `licence show`, and the seat check that
//! activation and uploads go through.
//!
//! Pending, active and revoke-pending mailboxes hold an S/MIME seat, uploaded
//! identities included (their mailbox is active). A fresh install has no licence and
//! so no limit until `licence set`. After `valid_until` no new seat is handed out;
//! what holds a seat keeps it, and renewals go on (they take no seat).

use super::{Actor, OpError, Ops, audit};
use crate::store::{LicenceRow, SeatUsage};

/// `licence set`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
pub struct SetLicence {
    pub smime_seats: i64,
    pub mail_security_seats: i64,
    /// The last day of the licence, `YYYY-MM-DD` (UTC, inclusive); none: no end.
    #[serde(default)]
    pub valid_until: Option<String>,
}

/// `licence show`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LicenceStatus {
    /// None: no licence set, no limit.
    pub licence: Option<LicenceRow>,
    /// S/MIME seats held, by state and source.
    pub usage: SeatUsage,
    pub smime_seats_used: i64,
    /// None: no limit.
    pub smime_seats_free: Option<i64>,
    /// Known mailboxes (every one uses the gateway's mail security).
    pub mail_security_used: i64,
    /// The licence ended: no new seats.
    pub expired: bool,
}

pub async fn set(ctx: &Ops<'_>, actor: &Actor, input: SetLicence) -> Result<LicenceRow, OpError> {
    if input.smime_seats < 0 || input.mail_security_seats < 0 {
        return Err(OpError::Invalid("seat counts cannot be negative".into()));
    }
    if input.smime_seats > input.mail_security_seats {
        return Err(OpError::Invalid(format!(
            "S/MIME seats ({}) may not exceed mail-security seats ({})",
            input.smime_seats, input.mail_security_seats
        )));
    }
    let valid_until = input.valid_until.as_deref().map(end_of_day).transpose()?;
    let row = ctx
        .store
        .licence()
        .set(input.smime_seats, input.mail_security_seats, valid_until)
        .await?;
    let used = ctx.store.licence().usage().await?.total();
    let mut detail = format!(
        "smime_seats={} mail_security_seats={} valid_until={}",
        row.smime_seats,
        row.mail_security_seats,
        input.valid_until.as_deref().unwrap_or("none")
    );
    if used > row.smime_seats {
        // Nothing already holding a seat is taken away; no new seat until below.
        detail.push_str(&format!("; {used} seats in use exceed it"));
        tracing::warn!(
            used,
            seats = row.smime_seats,
            "licence set below the seats in use"
        );
    }
    audit(ctx.store, actor, "licence.set", "licence", &detail).await?;
    Ok(row)
}

pub async fn show(ctx: &Ops<'_>) -> Result<LicenceStatus, OpError> {
    let licence = ctx.store.licence().get().await?;
    let usage = ctx.store.licence().usage().await?;
    let used = usage.total();
    let now = crate::store::unix_now();
    Ok(LicenceStatus {
        smime_seats_free: licence.as_ref().map(|l| (l.smime_seats - used).max(0)),
        expired: licence
            .as_ref()
            .and_then(|l| l.valid_until)
            .is_some_and(|end| now > end),
        mail_security_used: ctx.store.mailboxes().list().await?.len() as i64,
        smime_seats_used: used,
        usage,
        licence,
    })
}

/// How many seats may be held in all for a new one to be taken now: None when there
/// is no licence (no limit); a refusal when the licence has ended.
pub(crate) async fn seat_limit(ctx: &Ops<'_>) -> Result<Option<i64>, OpError> {
    let Some(licence) = ctx.store.licence().get().await? else {
        return Ok(None);
    };
    if let Some(end) = licence.valid_until
        && crate::store::unix_now() > end
    {
        return Err(OpError::NoSeat(format!(
            "the licence ended on {}: no seat can be taken; renew it with `smimegate licence set`",
            date(end)
        )));
    }
    Ok(Some(licence.smime_seats))
}

/// The message for a refusal for want of a seat.
pub(crate) fn no_seat_message(limit: i64) -> String {
    format!(
        "no S/MIME seat is free (all {limit} in use); raise the licence with `smimegate licence set` \
         or deactivate a mailbox (its seat is free once it leaves revoke-pending)"
    )
}

/// The UTC day of a unix time, `YYYY-MM-DD`.
pub(crate) fn date(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| t.date().to_string())
        .unwrap_or_else(|_| unix.to_string())
}

/// `YYYY-MM-DD` as the last second of that day, UTC.
fn end_of_day(text: &str) -> Result<i64, OpError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text.trim(), &format)
        .map_err(|_| OpError::Invalid(format!("'{text}' is not a date; write it as YYYY-MM-DD")))?;
    Ok(date.midnight().assume_utc().unix_timestamp() + 86_399)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_licence_date_is_its_last_second() {
        assert_eq!(end_of_day("1970-01-01").ok(), Some(86_399));
        assert!(matches!(end_of_day("31.12.2027"), Err(OpError::Invalid(_))));
    }
}

//! The seat licence: how many mailboxes may hold an S/MIME certificate (and how many
//! may use the gateway at all). No row: no limit yet (a fresh install).

use sqlx::{AnyPool, Row};

use super::{Result, StoreError, db, now};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct LicenceRow {
    pub smime_seats: i64,
    pub mail_security_seats: i64,
    /// Unix seconds after which no further seat is handed out.
    pub valid_until: Option<i64>,
    pub updated_at: i64,
}

/// Seats held, by what holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SeatUsage {
    pub pending: i64,
    pub active_issued: i64,
    pub active_uploaded: i64,
    pub revoke_pending: i64,
}

impl SeatUsage {
    pub fn total(&self) -> i64 {
        self.pending + self.active_issued + self.active_uploaded + self.revoke_pending
    }
}

pub struct Licence<'a> {
    pub(super) pool: &'a AnyPool,
}

impl Licence<'_> {
    pub async fn get(&self) -> Result<Option<LicenceRow>> {
        let row = sqlx::query(
            "SELECT smime_seats, mail_security_seats, valid_until, updated_at FROM licence WHERE id = 1",
        )
        .fetch_optional(self.pool)
        .await
        .map_err(db("reading the licence"))?;
        let Some(row) = row else { return Ok(None) };
        let read = db("reading the licence");
        Ok(Some(LicenceRow {
            smime_seats: row.try_get("smime_seats").map_err(&read)?,
            mail_security_seats: row.try_get("mail_security_seats").map_err(&read)?,
            valid_until: row.try_get("valid_until").map_err(&read)?,
            updated_at: row.try_get("updated_at").map_err(&read)?,
        }))
    }

    /// Replaces the licence (the table's CHECK keeps S/MIME seats within mail-security
    /// seats).
    pub async fn set(
        &self,
        smime_seats: i64,
        mail_security_seats: i64,
        valid_until: Option<i64>,
    ) -> Result<LicenceRow> {
        sqlx::query(
            "INSERT INTO licence (id, smime_seats, mail_security_seats, valid_until, updated_at) \
             VALUES (1, $1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET smime_seats = excluded.smime_seats, \
             mail_security_seats = excluded.mail_security_seats, valid_until = excluded.valid_until, \
             updated_at = excluded.updated_at",
        )
        .bind(smime_seats)
        .bind(mail_security_seats)
        .bind(valid_until)
        .bind(now())
        .execute(self.pool)
        .await
        .map_err(db("writing the licence"))?;
        self.get()
            .await?
            .ok_or_else(|| StoreError::Corrupt("the licence just written is missing".into()))
    }

    /// The seats held now: pending, active (by the source of the mailbox's newest
    /// certificate with a key: issued by us or uploaded) and revoke-pending mailboxes.
    pub async fn usage(&self) -> Result<SeatUsage> {
        let rows = sqlx::query(
            "SELECT m.state AS state, \
                    (SELECT c.source FROM certificates c JOIN keys k ON k.id = c.key_id \
                     WHERE k.mailbox_id = m.id ORDER BY c.not_after DESC, c.id DESC LIMIT 1) AS source \
             FROM mailboxes m WHERE m.state <> 'inactive'",
        )
        .fetch_all(self.pool)
        .await
        .map_err(db("counting seats"))?;
        let mut usage = SeatUsage::default();
        for row in rows {
            let read = db("counting seats");
            let state: String = row.try_get("state").map_err(&read)?;
            let source: Option<String> = row.try_get("source").map_err(&read)?;
            match state.as_str() {
                "pending" => usage.pending += 1,
                "revoke-pending" => usage.revoke_pending += 1,
                _ if source.as_deref() == Some("uploaded") => usage.active_uploaded += 1,
                _ => usage.active_issued += 1,
            }
        }
        Ok(usage)
    }
}

//! Managed mailboxes and their S/MIME state.

use sqlx::{AnyPool, AssertSqlSafe, Row};

use super::{Result, StoreError, db, now, query_error};
use crate::pki::address::Address;

/// `inactive → pending → active → revoke-pending → inactive` (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MailboxState {
    Inactive,
    Pending,
    Active,
    RevokePending,
}

impl MailboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            MailboxState::Inactive => "inactive",
            MailboxState::Pending => "pending",
            MailboxState::Active => "active",
            MailboxState::RevokePending => "revoke-pending",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "inactive" => Some(MailboxState::Inactive),
            "pending" => Some(MailboxState::Pending),
            "active" => Some(MailboxState::Active),
            "revoke-pending" => Some(MailboxState::RevokePending),
            _ => None,
        }
    }

    /// Whether this state holds a licence seat.
    pub fn holds_seat(self) -> bool {
        !matches!(self, MailboxState::Inactive)
    }
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct MailboxRow {
    pub id: i64,
    pub address: String,
    pub domain: String,
    /// `inactive`, `pending`, `active` or `revoke-pending`.
    #[schema(value_type = String)]
    pub state: MailboxState,
    pub state_changed_at: i64,
    /// When deactivation began (the mailbox went revoke-pending).
    pub revoke_requested_at: Option<i64>,
    pub created_at: i64,
}

pub struct Mailboxes<'a> {
    pub(super) pool: &'a AnyPool,
}

const SELECT: &str = "SELECT m.id, m.address, d.name AS domain, m.state, m.state_changed_at, m.revoke_requested_at, m.created_at \
                      FROM mailboxes m JOIN domains d ON d.id = m.domain_id";

fn row_to_mailbox(row: &sqlx::any::AnyRow) -> Result<MailboxRow> {
    let read = |source| StoreError::Query {
        operation: "reading mailbox",
        source,
    };
    let state: String = row.try_get("state").map_err(read)?;
    Ok(MailboxRow {
        id: row.try_get("id").map_err(read)?,
        address: row.try_get("address").map_err(read)?,
        domain: row.try_get("domain").map_err(read)?,
        state: MailboxState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown mailbox state '{state}'")))?,
        state_changed_at: row.try_get("state_changed_at").map_err(read)?,
        revoke_requested_at: row.try_get("revoke_requested_at").map_err(read)?,
        created_at: row.try_get("created_at").map_err(read)?,
    })
}

impl Mailboxes<'_> {
    /// Adds a known mailbox to its managed domain's inbound route.
    pub async fn add(&self, address: &Address) -> Result<MailboxRow> {
        let domain_id: Option<i64> = sqlx::query_scalar("SELECT id FROM domains WHERE name = $1")
            .bind(address.domain())
            .fetch_optional(self.pool)
            .await
            .map_err(db("finding domain"))?;
        let domain_id = domain_id.ok_or_else(|| {
            StoreError::NotFound(format!(
                "{} is not a managed domain; add it with `smimegate domain add {}`",
                address.domain(),
                address.domain()
            ))
        })?;
        let at = now();
        sqlx::query(
            "INSERT INTO mailboxes (address, domain_id, state, state_changed_at, created_at) \
             VALUES ($1, $2, 'inactive', $3, $4)",
        )
        .bind(address.as_str())
        .bind(domain_id)
        .bind(at)
        .bind(at)
        .execute(self.pool)
        .await
        .map_err(query_error("adding mailbox", || {
            format!("mailbox {address}")
        }))?;
        self.require(address).await
    }

    pub async fn get(&self, address: &Address) -> Result<Option<MailboxRow>> {
        let row = sqlx::query(AssertSqlSafe(format!("{SELECT} WHERE m.address = $1")))
            .bind(address.as_str())
            .fetch_optional(self.pool)
            .await
            .map_err(db("reading mailbox"))?;
        row.as_ref().map(row_to_mailbox).transpose()
    }

    pub async fn require(&self, address: &Address) -> Result<MailboxRow> {
        self.get(address)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no managed mailbox {address}")))
    }

    pub async fn list(&self) -> Result<Vec<MailboxRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!("{SELECT} ORDER BY m.address")))
            .fetch_all(self.pool)
            .await
            .map_err(db("listing mailboxes"))?;
        rows.iter().map(row_to_mailbox).collect()
    }

    /// Moves a mailbox from `from` to `to`; refuses when it is not in `from` (another
    /// node or command got there first).
    pub async fn transition(
        &self,
        address: &Address,
        from: MailboxState,
        to: MailboxState,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE mailboxes SET state = $1, state_changed_at = $2, \
             revoke_requested_at = CASE WHEN $1 = 'revoke-pending' THEN $2 ELSE revoke_requested_at END \
             WHERE address = $3 AND state = $4",
        )
        .bind(to.as_str())
        .bind(now())
        .bind(address.as_str())
        .bind(from.as_str())
        .execute(self.pool)
        .await
        .map_err(db("changing mailbox state"))?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        let current = self.require(address).await?;
        Err(StoreError::Refused(format!(
            "mailbox {address} is {}, not {}",
            current.state.as_str(),
            from.as_str()
        )))
    }

    /// Moves an inactive mailbox to pending when a seat is free: fewer than `seats`
    /// mailboxes hold one (none: no limit). Checked in the statement that takes the
    /// seat, in a transaction that first locks the licence row. Ok(false): no seat was free; a mailbox that is not inactive is refused.
    pub async fn take_seat(&self, address: &Address, seats: Option<i64>) -> Result<bool> {
        let at = now();
        let mut tx = self.pool.begin().await.map_err(db("taking a seat"))?;
        let done = match seats {
            None => sqlx::query(
                "UPDATE mailboxes SET state = 'pending', state_changed_at = $1 \
                 WHERE address = $2 AND state = 'inactive'",
            )
            .bind(at)
            .bind(address.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db("taking a seat"))?,
            Some(limit) => {
                // Seat takers queue on the licence row (PostgreSQL row lock; SQLite
                // has one writer anyway), so two nodes cannot both take the last seat.
                sqlx::query("UPDATE licence SET updated_at = updated_at WHERE id = 1")
                    .execute(&mut *tx)
                    .await
                    .map_err(db("taking a seat"))?;
                sqlx::query(
                    "UPDATE mailboxes SET state = 'pending', state_changed_at = $1 \
                     WHERE address = $2 AND state = 'inactive' \
                     AND (SELECT COUNT(*) FROM mailboxes WHERE state <> 'inactive') < $3",
                )
                .bind(at)
                .bind(address.as_str())
                .bind(limit)
                .execute(&mut *tx)
                .await
                .map_err(db("taking a seat"))?
            }
        };
        tx.commit().await.map_err(db("taking a seat"))?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        let current = self.require(address).await?;
        if current.state != MailboxState::Inactive {
            return Err(StoreError::Refused(format!(
                "mailbox {address} is {}, not inactive",
                current.state.as_str()
            )));
        }
        Ok(false)
    }

    /// Revoke-pending mailboxes whose deactivation began at or before `before`.
    pub async fn revoke_pending_since(&self, before: i64) -> Result<Vec<MailboxRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{SELECT} WHERE m.state = 'revoke-pending' AND m.revoke_requested_at <= $1 ORDER BY m.address"
        )))
        .bind(before)
        .fetch_all(self.pool)
        .await
        .map_err(db("listing revoke-pending mailboxes"))?;
        rows.iter().map(row_to_mailbox).collect()
    }

    /// Mailboxes in `state`, by address.
    pub async fn in_state(&self, state: MailboxState) -> Result<Vec<MailboxRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{SELECT} WHERE m.state = $1 ORDER BY m.address"
        )))
        .bind(state.as_str())
        .fetch_all(self.pool)
        .await
        .map_err(db("listing mailboxes"))?;
        rows.iter().map(row_to_mailbox).collect()
    }

    /// Removes an inactive mailbox. Its keys stay in the token and in the key table
    /// (unlinked) so that old mail to it can still be decrypted.
    pub async fn remove(&self, address: &Address) -> Result<()> {
        let current = self.require(address).await?;
        if current.state != MailboxState::Inactive {
            return Err(StoreError::Refused(format!(
                "mailbox {address} is {}; deactivate it before removing it",
                current.state.as_str()
            )));
        }
        sqlx::query("DELETE FROM mailboxes WHERE id = $1 AND state = 'inactive'")
            .bind(current.id)
            .execute(self.pool)
            .await
            .map_err(db("removing mailbox"))?;
        Ok(())
    }

    /// Mailboxes holding a seat (pending, active, revoke-pending).
    pub async fn seats_in_use(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM mailboxes WHERE state <> 'inactive'")
            .fetch_one(self.pool)
            .await
            .map_err(db("counting seats"))
    }
}

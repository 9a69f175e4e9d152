//! SMTP AUTH submitters: the accounts that may authenticate on the submission listener.
//! The repository stores what it is given (a name already normalised, an argon2id PHC
//! string already computed, addresses already validated); hashing and checking live in
//! `ops::submitters`, so no password ever reaches this module.

use sqlx::{AnyPool, Row};

use super::{Result, StoreError, db, now, query_error};

/// A submitter as the relay reads it (without its password hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Submitter {
    pub id: i64,
    /// The SASL authentication identity, lower-case.
    pub name: String,
    /// Addresses this submitter may send as (lower-case). Empty: it may relay, but
    /// vouches for no address.
    pub may_send_as: Vec<String>,
    pub comment: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last password change (the creation, at first).
    pub password_changed_at: i64,
    /// A disabled submitter never authenticates; its row stays for the audit trail.
    pub disabled: bool,
}

impl Submitter {
    /// True when `address` (canonical, lower-case) is one this submitter may send as.
    pub fn may_send_as(&self, address: &str) -> bool {
        self.may_send_as.iter().any(|a| a == address)
    }
}

/// A submitter with its stored argon2id PHC string, for verification only. Its
/// `Debug` leaves the hash out: a hash in a log is an offline-guessing target.
#[derive(Clone)]
pub struct SubmitterCredentials {
    pub submitter: Submitter,
    pub password_hash: String,
}

impl std::fmt::Debug for SubmitterCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmitterCredentials")
            .field("submitter", &self.submitter)
            .field("password_hash", &"<redacted>")
            .finish()
    }
}

/// What `add` writes; every field already validated by the caller.
pub struct NewSubmitter<'a> {
    pub name: &'a str,
    pub password_hash: &'a str,
    pub may_send_as: &'a [String],
    pub comment: &'a str,
}

pub struct Submitters<'a> {
    pub(super) pool: &'a AnyPool,
}

const COLUMNS: &str = "id, name, may_send_as, comment, created_at, password_changed_at, disabled";

fn row_to_submitter(row: &sqlx::any::AnyRow) -> Result<Submitter> {
    let read = db("reading submitter");
    let list: String = row.try_get("may_send_as").map_err(&read)?;
    let name: String = row.try_get("name").map_err(&read)?;
    let may_send_as = serde_json::from_str::<Vec<String>>(&list).map_err(|e| {
        StoreError::Corrupt(format!(
            "may_send_as of submitter {name} is not a list: {e}"
        ))
    })?;
    Ok(Submitter {
        id: row.try_get("id").map_err(&read)?,
        name,
        may_send_as,
        comment: row.try_get("comment").map_err(&read)?,
        created_at: row.try_get("created_at").map_err(&read)?,
        password_changed_at: row.try_get("password_changed_at").map_err(&read)?,
        disabled: row.try_get::<i64, _>("disabled").map_err(&read)? != 0,
    })
}

fn not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("no submitter {name}"))
}

impl Submitters<'_> {
    pub async fn add(&self, new: &NewSubmitter<'_>) -> Result<Submitter> {
        let at = now();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO submitters (name, password_hash, may_send_as, comment, created_at, \
             password_changed_at, disabled) VALUES ($1, $2, $3, $4, $5, $6, 0) RETURNING {COLUMNS}"
        )))
        .bind(new.name)
        .bind(new.password_hash)
        .bind(serde_json::Value::from(new.may_send_as.to_vec()).to_string())
        .bind(new.comment)
        .bind(at)
        .bind(at)
        .fetch_one(self.pool)
        .await
        .map_err(query_error("adding submitter", || {
            format!("submitter {}", new.name)
        }))?;
        row_to_submitter(&row)
    }

    pub async fn get(&self, name: &str) -> Result<Option<Submitter>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM submitters WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(self.pool)
        .await
        .map_err(db("reading submitter"))?;
        row.as_ref().map(row_to_submitter).transpose()
    }

    /// The submitter and its password hash, for verification.
    pub async fn credentials(&self, name: &str) -> Result<Option<SubmitterCredentials>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS}, password_hash FROM submitters WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(self.pool)
        .await
        .map_err(db("reading submitter credentials"))?;
        row.as_ref()
            .map(|row| {
                Ok(SubmitterCredentials {
                    submitter: row_to_submitter(row)?,
                    password_hash: row
                        .try_get("password_hash")
                        .map_err(db("reading submitter credentials"))?,
                })
            })
            .transpose()
    }

    /// Every submitter, by name.
    pub async fn list(&self) -> Result<Vec<Submitter>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM submitters ORDER BY name"
        )))
        .fetch_all(self.pool)
        .await
        .map_err(db("listing submitters"))?;
        rows.iter().map(row_to_submitter).collect()
    }

    /// Removes a submitter; returns what it was.
    pub async fn remove(&self, name: &str) -> Result<Submitter> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM submitters WHERE name = $1 RETURNING {COLUMNS}"
        )))
        .bind(name)
        .fetch_optional(self.pool)
        .await
        .map_err(db("removing submitter"))?;
        row.as_ref()
            .map(row_to_submitter)
            .transpose()?
            .ok_or_else(|| not_found(name))
    }

    /// Replaces the password hash (and stamps the change).
    pub async fn set_password_hash(&self, name: &str, password_hash: &str) -> Result<Submitter> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE submitters SET password_hash = $1, password_changed_at = $2 WHERE name = $3 \
             RETURNING {COLUMNS}"
        )))
        .bind(password_hash)
        .bind(now())
        .bind(name)
        .fetch_optional(self.pool)
        .await
        .map_err(db("changing submitter password"))?;
        row.as_ref()
            .map(row_to_submitter)
            .transpose()?
            .ok_or_else(|| not_found(name))
    }

    pub async fn set_disabled(&self, name: &str, disabled: bool) -> Result<Submitter> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE submitters SET disabled = $1 WHERE name = $2 RETURNING {COLUMNS}"
        )))
        .bind(i64::from(disabled))
        .bind(name)
        .fetch_optional(self.pool)
        .await
        .map_err(db("changing submitter"))?;
        row.as_ref()
            .map(row_to_submitter)
            .transpose()?
            .ok_or_else(|| not_found(name))
    }
}

//! References to keys held in the token. The database never holds a key: only its
//! `CKA_ID`, algorithm and what it is for.

use sqlx::{AnyPool, AssertSqlSafe, Row};

use super::{Result, StoreError, db, now, query_error};
use crate::hsm::{KeyAlgorithm, KeyId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyPurpose {
    Ca,
    Mailbox,
    Imported,
}

impl KeyPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Ca => "ca",
            KeyPurpose::Mailbox => "mailbox",
            KeyPurpose::Imported => "imported",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "ca" => Some(KeyPurpose::Ca),
            "mailbox" => Some(KeyPurpose::Mailbox),
            "imported" => Some(KeyPurpose::Imported),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyRow {
    pub id: i64,
    pub cka_id: String,
    pub algorithm: KeyAlgorithm,
    pub purpose: KeyPurpose,
    pub mailbox_id: Option<i64>,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

impl KeyRow {
    pub fn key_id(&self) -> Result<KeyId> {
        KeyId::from_hex(&self.cka_id)
            .ok_or_else(|| StoreError::Corrupt(format!("bad CKA_ID '{}'", self.cka_id)))
    }
}

pub struct Keys<'a> {
    pub(super) pool: &'a AnyPool,
}

const SELECT: &str =
    "SELECT id, cka_id, algorithm, purpose, mailbox_id, created_at, retired_at FROM keys";

fn row_to_key(row: &sqlx::any::AnyRow) -> Result<KeyRow> {
    let read = db("reading key");
    let algorithm: String = row.try_get("algorithm").map_err(&read)?;
    let purpose: String = row.try_get("purpose").map_err(&read)?;
    Ok(KeyRow {
        id: row.try_get("id").map_err(&read)?,
        cka_id: row.try_get("cka_id").map_err(&read)?,
        algorithm: KeyAlgorithm::parse(&algorithm)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown key algorithm '{algorithm}'")))?,
        purpose: KeyPurpose::parse(&purpose)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown key purpose '{purpose}'")))?,
        mailbox_id: row.try_get("mailbox_id").map_err(&read)?,
        created_at: row.try_get("created_at").map_err(&read)?,
        retired_at: row.try_get("retired_at").map_err(&read)?,
    })
}

impl Keys<'_> {
    pub async fn insert(
        &self,
        id: &KeyId,
        algorithm: KeyAlgorithm,
        purpose: KeyPurpose,
        mailbox_id: Option<i64>,
    ) -> Result<KeyRow> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO keys (cka_id, algorithm, purpose, mailbox_id, created_at) VALUES ($1, $2, $3, $4, $5) \
             RETURNING {}",
            &SELECT["SELECT ".len()..SELECT.len() - " FROM keys".len()]
        )))
        .bind(id.to_hex())
        .bind(algorithm.as_str())
        .bind(purpose.as_str())
        .bind(mailbox_id)
        .bind(now())
        .fetch_one(self.pool)
        .await
        .map_err(query_error("recording key", || format!("key {id}")))?;
        row_to_key(&row)
    }

    /// The CA key in use (not retired), if the CA exists.
    pub async fn current_ca(&self) -> Result<Option<KeyRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "{SELECT} WHERE purpose = 'ca' AND retired_at IS NULL ORDER BY id DESC LIMIT 1"
        )))
        .fetch_optional(self.pool)
        .await
        .map_err(db("reading CA key"))?;
        row.as_ref().map(row_to_key).transpose()
    }

    pub async fn get(&self, id: i64) -> Result<Option<KeyRow>> {
        let row = sqlx::query(AssertSqlSafe(format!("{SELECT} WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.pool)
            .await
            .map_err(db("reading key"))?;
        row.as_ref().map(row_to_key).transpose()
    }

    pub async fn for_mailbox(&self, mailbox_id: i64) -> Result<Vec<KeyRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{SELECT} WHERE mailbox_id = $1 ORDER BY id"
        )))
        .bind(mailbox_id)
        .fetch_all(self.pool)
        .await
        .map_err(db("listing mailbox keys"))?;
        rows.iter().map(row_to_key).collect()
    }

    pub async fn list(&self) -> Result<Vec<KeyRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!("{SELECT} ORDER BY id")))
            .fetch_all(self.pool)
            .await
            .map_err(db("listing keys"))?;
        rows.iter().map(row_to_key).collect()
    }

    /// Marks a key as no longer used for new certificates or signatures. It stays in
    /// the token: old mail encrypted to it must remain readable.
    pub async fn retire(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE keys SET retired_at = $1 WHERE id = $2 AND retired_at IS NULL")
            .bind(now())
            .bind(id)
            .execute(self.pool)
            .await
            .map_err(db("retiring key"))?;
        Ok(())
    }

    /// Retires every key of a mailbox (deactivation): none signs again, all stay in
    /// the token and keep decrypting.
    pub async fn retire_for_mailbox(&self, mailbox_id: i64) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE keys SET retired_at = $1 WHERE mailbox_id = $2 AND retired_at IS NULL",
        )
        .bind(now())
        .bind(mailbox_id)
        .execute(self.pool)
        .await
        .map_err(db("retiring mailbox keys"))?;
        Ok(done.rows_affected())
    }
}

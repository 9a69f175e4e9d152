//! CRLs the built-in CA published (signed in the token), newest served over HTTP.

use sqlx::{AnyPool, Row};

use super::{Result, db, now, query_error};

#[derive(Debug, Clone, serde::Serialize)]
pub struct PublishedCrl {
    pub issuer_fingerprint: String,
    pub crl_number: i64,
    #[serde(skip)]
    pub der: Vec<u8>,
    pub this_update: i64,
    pub next_update: i64,
    pub entries: i64,
}

pub struct PublishedCrls<'a> {
    pub(super) pool: &'a AnyPool,
}

fn row_to_crl(row: &sqlx::any::AnyRow) -> Result<PublishedCrl> {
    let read = db("reading a published CRL");
    Ok(PublishedCrl {
        issuer_fingerprint: row.try_get("issuer_fingerprint").map_err(&read)?,
        crl_number: row.try_get("crl_number").map_err(&read)?,
        der: row.try_get("der").map_err(&read)?,
        this_update: row.try_get("this_update").map_err(&read)?,
        next_update: row.try_get("next_update").map_err(&read)?,
        entries: row.try_get("entries").map_err(&read)?,
    })
}

impl PublishedCrls<'_> {
    /// The newest CRL of the CA whose certificate has this SHA-256 fingerprint.
    pub async fn latest(&self, issuer_fingerprint: &str) -> Result<Option<PublishedCrl>> {
        let row = sqlx::query(
            "SELECT issuer_fingerprint, crl_number, der, this_update, next_update, entries \
             FROM published_crls WHERE issuer_fingerprint = $1 ORDER BY crl_number DESC LIMIT 1",
        )
        .bind(issuer_fingerprint)
        .fetch_optional(self.pool)
        .await
        .map_err(db("reading the published CRL"))?;
        row.as_ref().map(row_to_crl).transpose()
    }

    /// The CRL number the next CRL of this CA gets.
    pub async fn next_number(&self, issuer_fingerprint: &str) -> Result<i64> {
        let max: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(crl_number) FROM published_crls WHERE issuer_fingerprint = $1",
        )
        .bind(issuer_fingerprint)
        .fetch_one(self.pool)
        .await
        .map_err(db("reading CRL numbers"))?;
        Ok(max.unwrap_or(0) + 1)
    }

    /// Records a CRL just signed. A number taken meanwhile by another node is a
    /// conflict: the caller signs again with the next number.
    pub async fn insert(&self, crl: &PublishedCrl) -> Result<()> {
        sqlx::query(
            "INSERT INTO published_crls (issuer_fingerprint, crl_number, der, this_update, next_update, \
             entries, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&crl.issuer_fingerprint)
        .bind(crl.crl_number)
        .bind(crl.der.clone())
        .bind(crl.this_update)
        .bind(crl.next_update)
        .bind(crl.entries)
        .bind(now())
        .execute(self.pool)
        .await
        .map_err(query_error("recording a CRL", || {
            format!("CRL number {}", crl.crl_number)
        }))?;
        Ok(())
    }
}

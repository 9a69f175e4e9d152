//! Revocation data of partner certificates: the CRLs fetched from their distribution
//! points (shared by every node), the CA certificates seen on their verified paths,
//! and our own certificates' revocation as the certificates table records it.

use sqlx::{AnyPool, Row};

use super::{Result, db, now};

/// A CRL as cached: the DER as downloaded and the times read from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedCrl {
    pub url: String,
    pub der: Vec<u8>,
    pub issuer: String,
    pub this_update: i64,
    pub next_update: Option<i64>,
    pub fetched_at: i64,
}

/// One of our own certificates (issued by the built-in CA, or a CA certificate of
/// ours), as far as revocation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnCertificate {
    pub revoked_at: Option<i64>,
}

pub struct Crls<'a> {
    pub(super) pool: &'a AnyPool,
}

fn cached(row: &sqlx::any::AnyRow) -> Result<CachedCrl> {
    let read = db("reading a cached CRL");
    Ok(CachedCrl {
        url: row.try_get("url").map_err(&read)?,
        der: row.try_get("der").map_err(&read)?,
        issuer: row.try_get("issuer").map_err(&read)?,
        this_update: row.try_get("this_update").map_err(&read)?,
        next_update: row.try_get("next_update").map_err(&read)?,
        fetched_at: row.try_get("fetched_at").map_err(&read)?,
    })
}

impl Crls<'_> {
    /// The cached CRL of `url`.
    pub async fn get(&self, url: &str) -> Result<Option<CachedCrl>> {
        let row = sqlx::query(
            "SELECT url, der, issuer, this_update, next_update, fetched_at FROM partner_crls WHERE url = $1",
        )
        .bind(url)
        .fetch_optional(self.pool)
        .await
        .map_err(db("reading a cached CRL"))?;
        row.as_ref().map(cached).transpose()
    }

    /// Every cached CRL's URL and when it was fetched (for the background refresh).
    pub async fn list(&self) -> Result<Vec<(String, i64, Option<i64>)>> {
        let rows =
            sqlx::query("SELECT url, fetched_at, next_update FROM partner_crls ORDER BY url")
                .fetch_all(self.pool)
                .await
                .map_err(db("listing cached CRLs"))?;
        let read = db("listing cached CRLs");
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("url").map_err(&read)?,
                    r.try_get("fetched_at").map_err(&read)?,
                    r.try_get("next_update").map_err(&read)?,
                ))
            })
            .collect()
    }

    /// Stores a freshly downloaded CRL for its URL, replacing what was cached (one
    /// statement: nodes that download at once do not collide).
    pub async fn put(&self, crl: &CachedCrl) -> Result<()> {
        sqlx::query(
            "INSERT INTO partner_crls (url, der, issuer, this_update, next_update, fetched_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (url) DO UPDATE SET der = excluded.der, \
             issuer = excluded.issuer, this_update = excluded.this_update, \
             next_update = excluded.next_update, fetched_at = excluded.fetched_at",
        )
        .bind(&crl.url)
        .bind(crl.der.clone())
        .bind(&crl.issuer)
        .bind(crl.this_update)
        .bind(crl.next_update)
        .bind(crl.fetched_at)
        .execute(self.pool)
        .await
        .map_err(db("caching a CRL"))?;
        Ok(())
    }

    /// Remembers a CA certificate seen on a verified path (idempotent).
    pub async fn remember_ca(&self, fingerprint: &str, subject: &str, der: &[u8]) -> Result<()> {
        let known = sqlx::query(
            "SELECT fingerprint_sha256 FROM partner_ca_certificates WHERE fingerprint_sha256 = $1",
        )
        .bind(fingerprint)
        .fetch_optional(self.pool)
        .await
        .map_err(db("reading partner CA certificates"))?;
        if known.is_some() {
            return Ok(());
        }
        let inserted = sqlx::query(
            "INSERT INTO partner_ca_certificates (fingerprint_sha256, subject, der, seen_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(fingerprint)
        .bind(subject)
        .bind(der.to_vec())
        .bind(now())
        .execute(self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            // Another session stored it a moment ago.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(()),
            Err(e) => Err(db("storing a partner CA certificate")(e)),
        }
    }

    /// Every CA certificate seen on a verified partner path (DER).
    pub async fn ca_certificates(&self) -> Result<Vec<Vec<u8>>> {
        let rows = sqlx::query("SELECT der FROM partner_ca_certificates ORDER BY seen_at")
            .fetch_all(self.pool)
            .await
            .map_err(db("reading partner CA certificates"))?;
        let read = db("reading partner CA certificates");
        rows.iter()
            .map(|r| r.try_get("der").map_err(&read))
            .collect()
    }

    /// The DER of every partner certificate (harvested or uploaded) that is valid now
    /// and not revoked by us: the background refresh keeps their CRLs current.
    pub async fn partner_certificates(&self) -> Result<Vec<Vec<u8>>> {
        let at = now();
        let rows = sqlx::query(
            "SELECT der FROM certificates WHERE source IN ('harvested', 'uploaded') \
             AND revoked_at IS NULL AND not_before <= $1 AND not_after > $1",
        )
        .bind(at)
        .fetch_all(self.pool)
        .await
        .map_err(db("listing partner certificates"))?;
        let read = db("listing partner certificates");
        rows.iter()
            .map(|r| r.try_get("der").map_err(&read))
            .collect()
    }

    /// The certificate with this SHA-256 fingerprint when our database decides its
    /// revocation: one the built-in CA issued (or the CA's own), or an uploaded identity
    /// of one of our mailboxes (its key in the token) that we revoked at deactivation.
    /// An uploaded identity we did not revoke is left to its own CA's CRL (`None`).
    pub async fn own_certificate(&self, fingerprint: &str) -> Result<Option<OwnCertificate>> {
        let row = sqlx::query(
            "SELECT source, key_id, revoked_at FROM certificates WHERE fingerprint_sha256 = $1",
        )
        .bind(fingerprint)
        .fetch_optional(self.pool)
        .await
        .map_err(db("reading our certificate"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let read = db("reading our certificate");
        let source: String = row.try_get("source").map_err(&read)?;
        let key_id: Option<i64> = row.try_get("key_id").map_err(&read)?;
        let revoked_at: Option<i64> = row.try_get("revoked_at").map_err(&read)?;
        let ours = match source.as_str() {
            "issued" | "ca" => true,
            "uploaded" => key_id.is_some() && revoked_at.is_some(),
            _ => false,
        };
        Ok(ours.then_some(OwnCertificate { revoked_at }))
    }
}

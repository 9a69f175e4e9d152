//! Trust anchors: the certificates signatures are verified against (source
//! `trust-anchor` in the certificates table) and the domain patterns each may vouch
//! for (`trust_anchor_domains`; none: any domain except the managed ones).

use sqlx::{AnyPool, AssertSqlSafe, Row};
use x509_cert::certificate::Certificate;

use super::certificates::{COLUMNS, row_to_certificate};
use super::{CertificateRecord, Result, StoreError, StoredCertificate, db, now, query_error};

/// A trust anchor and its domain patterns (empty: any foreign domain).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrustAnchorRow {
    #[serde(flatten)]
    pub certificate: StoredCertificate,
    pub domains: Vec<String>,
}

pub struct TrustAnchorStore<'a> {
    pub(super) pool: &'a AnyPool,
}

impl TrustAnchorStore<'_> {
    /// Adds `cert` as a trust anchor for `domains` (patterns, already validated).
    pub async fn add(&self, cert: &Certificate, domains: &[String]) -> Result<TrustAnchorRow> {
        let record = CertificateRecord::from_certificate(cert)?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting transaction"))?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO certificates (der, subject, issuer, serial, not_before, not_after, \
             fingerprint_sha256, source, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'trust-anchor', $8) RETURNING {COLUMNS}"
        )))
        .bind(record.der.clone())
        .bind(record.subject.clone())
        .bind(record.issuer.clone())
        .bind(record.serial.clone())
        .bind(record.not_before)
        .bind(record.not_after)
        .bind(record.fingerprint_sha256.clone())
        .bind(now())
        .fetch_one(&mut *tx)
        .await
        .map_err(query_error("storing trust anchor", || {
            format!(
                "certificate {} (sha-256 {})",
                record.subject, record.fingerprint_sha256
            )
        }))?;
        let certificate = row_to_certificate(&row)?;
        for pattern in domains {
            sqlx::query(
                "INSERT INTO trust_anchor_domains (certificate_id, pattern) VALUES ($1, $2)",
            )
            .bind(certificate.id)
            .bind(pattern)
            .execute(&mut *tx)
            .await
            .map_err(query_error("storing trust anchor domain", || {
                format!("domain {pattern} of this anchor")
            }))?;
        }
        tx.commit().await.map_err(db("committing trust anchor"))?;
        Ok(TrustAnchorRow {
            certificate,
            domains: domains.to_vec(),
        })
    }

    /// Every trust anchor with its domains, newest first.
    pub async fn list(&self) -> Result<Vec<TrustAnchorRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM certificates WHERE source = 'trust-anchor' ORDER BY id DESC"
        )))
        .fetch_all(self.pool)
        .await
        .map_err(db("listing trust anchors"))?;
        let scopes = sqlx::query(
            "SELECT certificate_id, pattern FROM trust_anchor_domains ORDER BY pattern",
        )
        .fetch_all(self.pool)
        .await
        .map_err(db("listing trust anchor domains"))?;
        let read = db("reading trust anchor domains");
        let mut patterns: Vec<(i64, String)> = Vec::with_capacity(scopes.len());
        for row in &scopes {
            patterns.push((
                row.try_get("certificate_id").map_err(&read)?,
                row.try_get("pattern").map_err(&read)?,
            ));
        }
        rows.iter()
            .map(|row| {
                let certificate = row_to_certificate(row)?;
                let domains = patterns
                    .iter()
                    .filter(|(id, _)| *id == certificate.id)
                    .map(|(_, p)| p.clone())
                    .collect();
                Ok(TrustAnchorRow {
                    certificate,
                    domains,
                })
            })
            .collect()
    }

    /// Removes the trust anchor whose SHA-256 fingerprint (hex) is `fingerprint`.
    pub async fn remove(&self, fingerprint: &str) -> Result<TrustAnchorRow> {
        let fingerprint = fingerprint.trim().to_ascii_lowercase().replace(':', "");
        let anchor = self
            .list()
            .await?
            .into_iter()
            .find(|a| a.certificate.record.fingerprint_sha256 == fingerprint)
            .ok_or_else(|| {
                StoreError::NotFound(format!("no trust anchor with fingerprint {fingerprint}"))
            })?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting transaction"))?;
        sqlx::query("DELETE FROM trust_anchor_domains WHERE certificate_id = $1")
            .bind(anchor.certificate.id)
            .execute(&mut *tx)
            .await
            .map_err(db("removing trust anchor domains"))?;
        sqlx::query("DELETE FROM certificates WHERE id = $1 AND source = 'trust-anchor'")
            .bind(anchor.certificate.id)
            .execute(&mut *tx)
            .await
            .map_err(db("removing trust anchor"))?;
        tx.commit()
            .await
            .map_err(db("committing trust anchor removal"))?;
        Ok(anchor)
    }
}

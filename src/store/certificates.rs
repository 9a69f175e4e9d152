//! Certificates: our CA's, the ones it issued, uploaded and harvested ones, trust
//! anchors. Public data only.

use der::Encode;
use sha2::Digest;
use sqlx::{AnyPool, AssertSqlSafe, Row};
use x509_cert::certificate::Certificate;

use super::{Result, StoreError, db, now, query_error};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertificateSource {
    Ca,
    Issued,
    Uploaded,
    Harvested,
    TrustAnchor,
}

impl CertificateSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateSource::Ca => "ca",
            CertificateSource::Issued => "issued",
            CertificateSource::Uploaded => "uploaded",
            CertificateSource::Harvested => "harvested",
            CertificateSource::TrustAnchor => "trust-anchor",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "ca" => Some(CertificateSource::Ca),
            "issued" => Some(CertificateSource::Issued),
            "uploaded" => Some(CertificateSource::Uploaded),
            "harvested" => Some(CertificateSource::Harvested),
            "trust-anchor" => Some(CertificateSource::TrustAnchor),
            _ => None,
        }
    }
}

/// The searchable facts of a certificate, derived from its DER.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertificateRecord {
    #[serde(skip)]
    pub der: Vec<u8>,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    pub fingerprint_sha256: String,
}

impl CertificateRecord {
    pub fn from_certificate(cert: &Certificate) -> Result<Self> {
        let der = cert
            .to_der()
            .map_err(|e| StoreError::Corrupt(format!("certificate does not encode: {e}")))?;
        let tbs = cert.tbs_certificate();
        let unix = |t: &x509_cert::time::Time| {
            t.to_unix_duration()
                .as_secs()
                .try_into()
                .unwrap_or(i64::MAX)
        };
        Ok(CertificateRecord {
            fingerprint_sha256: hex::encode(sha2::Sha256::digest(&der)),
            subject: tbs.subject().to_string(),
            issuer: tbs.issuer().to_string(),
            serial: hex::encode(tbs.serial_number().as_bytes()),
            not_before: unix(&tbs.validity().not_before),
            not_after: unix(&tbs.validity().not_after),
            der,
        })
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredCertificate {
    pub id: i64,
    #[serde(flatten)]
    pub record: CertificateRecord,
    pub source: CertificateSource,
    pub owner_address: Option<String>,
    pub key_id: Option<i64>,
    pub revoked_at: Option<i64>,
    pub created_at: i64,
}

/// A partner certificate as the relay chooses among them.
#[derive(Debug, Clone)]
pub struct PartnerRow {
    pub certificate: StoredCertificate,
    /// DER SMIMECapabilities, when known.
    pub capabilities: Option<Vec<u8>>,
    /// SHA-256 fingerprint of the anchor that vouched for a harvested certificate.
    pub vouched_by: Option<String>,
}

pub struct Certificates<'a> {
    pub(super) pool: &'a AnyPool,
}

pub(super) const COLUMNS: &str = "id, der, subject, issuer, serial, not_before, not_after, fingerprint_sha256, source, \
                       owner_address, key_id, revoked_at, created_at";

pub(super) fn row_to_certificate(row: &sqlx::any::AnyRow) -> Result<StoredCertificate> {
    let read = db("reading certificate");
    let source: String = row.try_get("source").map_err(&read)?;
    Ok(StoredCertificate {
        id: row.try_get("id").map_err(&read)?,
        record: CertificateRecord {
            der: row.try_get("der").map_err(&read)?,
            subject: row.try_get("subject").map_err(&read)?,
            issuer: row.try_get("issuer").map_err(&read)?,
            serial: row.try_get("serial").map_err(&read)?,
            not_before: row.try_get("not_before").map_err(&read)?,
            not_after: row.try_get("not_after").map_err(&read)?,
            fingerprint_sha256: row.try_get("fingerprint_sha256").map_err(&read)?,
        },
        source: CertificateSource::parse(&source)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown certificate source '{source}'")))?,
        owner_address: row.try_get("owner_address").map_err(&read)?,
        key_id: row.try_get("key_id").map_err(&read)?,
        revoked_at: row.try_get("revoked_at").map_err(&read)?,
        created_at: row.try_get("created_at").map_err(&read)?,
    })
}

impl Certificates<'_> {
    pub async fn insert(
        &self,
        cert: &Certificate,
        source: CertificateSource,
        owner_address: Option<&str>,
        key_id: Option<i64>,
    ) -> Result<StoredCertificate> {
        let record = CertificateRecord::from_certificate(cert)?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO certificates (der, subject, issuer, serial, not_before, not_after, fingerprint_sha256, \
             source, owner_address, key_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             RETURNING {COLUMNS}"
        )))
        .bind(record.der.clone())
        .bind(record.subject.clone())
        .bind(record.issuer.clone())
        .bind(record.serial.clone())
        .bind(record.not_before)
        .bind(record.not_after)
        .bind(record.fingerprint_sha256.clone())
        .bind(source.as_str())
        .bind(owner_address)
        .bind(key_id)
        .bind(now())
        .fetch_one(self.pool)
        .await
        .map_err(query_error("storing certificate", || {
            format!("certificate {}", record.fingerprint_sha256)
        }))?;
        row_to_certificate(&row)
    }

    /// The certificate of the CA key `key_id`.
    pub async fn for_key(&self, key_id: i64) -> Result<Option<StoredCertificate>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM certificates WHERE key_id = $1 ORDER BY not_after DESC, id DESC LIMIT 1"
        )))
        .bind(key_id)
        .fetch_optional(self.pool)
        .await
        .map_err(db("reading certificate"))?;
        row.as_ref().map(row_to_certificate).transpose()
    }

    /// The certificate with this issuer (RFC 4514 text) and serial (hex).
    pub async fn by_issuer_serial(
        &self,
        issuer: &str,
        serial_hex: &str,
    ) -> Result<Option<StoredCertificate>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM certificates WHERE issuer = $1 AND serial = $2"
        )))
        .bind(issuer)
        .bind(serial_hex)
        .fetch_optional(self.pool)
        .await
        .map_err(db("reading certificate"))?;
        row.as_ref().map(row_to_certificate).transpose()
    }

    /// Every certificate that names a key in the token (issued, uploaded, the CA's).
    pub async fn with_keys(&self) -> Result<Vec<StoredCertificate>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM certificates WHERE key_id IS NOT NULL ORDER BY id"
        )))
        .fetch_all(self.pool)
        .await
        .map_err(db("listing certificates"))?;
        rows.iter().map(row_to_certificate).collect()
    }

    /// The current certificates of managed mailboxes (issued or uploaded, not revoked,
    /// no later one for the same address) that expire in `[from, until)`, soonest
    /// first, at most `limit`.
    pub async fn managed_expiring(
        &self,
        from: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<StoredCertificate>> {
        let columns = COLUMNS
            .split(", ")
            .map(|c| format!("c.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {columns} FROM certificates c \
             WHERE c.source IN ('issued', 'uploaded') AND c.owner_address IS NOT NULL \
             AND c.revoked_at IS NULL AND c.not_after >= $1 AND c.not_after < $2 \
             AND NOT EXISTS (SELECT 1 FROM certificates n \
                 WHERE n.owner_address = c.owner_address AND n.source IN ('issued', 'uploaded') \
                 AND n.revoked_at IS NULL AND n.not_after > c.not_after) \
             ORDER BY c.not_after, c.id LIMIT $3"
        )))
        .bind(from)
        .bind(until)
        .bind(limit)
        .fetch_all(self.pool)
        .await
        .map_err(db("listing expiring certificates"))?;
        rows.iter().map(row_to_certificate).collect()
    }

    /// How many certificates [`Certificates::managed_expiring`] would list without a
    /// limit (one count, for the metrics).
    pub async fn count_managed_expiring(&self, from: i64, until: i64) -> Result<i64> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM certificates c \
             WHERE c.source IN ('issued', 'uploaded') AND c.owner_address IS NOT NULL \
             AND c.revoked_at IS NULL AND c.not_after >= $1 AND c.not_after < $2 \
             AND NOT EXISTS (SELECT 1 FROM certificates n \
                 WHERE n.owner_address = c.owner_address AND n.source IN ('issued', 'uploaded') \
                 AND n.revoked_at IS NULL AND n.not_after > c.not_after)",
        )
        .bind(from)
        .bind(until)
        .fetch_one(self.pool)
        .await
        .map_err(db("counting expiring certificates"))
    }

    /// Every certificate from `source`, newest first.
    pub async fn by_source(&self, source: CertificateSource) -> Result<Vec<StoredCertificate>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM certificates WHERE source = $1 ORDER BY id DESC"
        )))
        .bind(source.as_str())
        .fetch_all(self.pool)
        .await
        .map_err(db("listing certificates"))?;
        rows.iter().map(row_to_certificate).collect()
    }

    /// Every certificate naming `address` as owner, newest first.
    pub async fn for_owner(&self, address: &str) -> Result<Vec<StoredCertificate>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM certificates WHERE owner_address = $1 ORDER BY not_after DESC, id DESC"
        )))
        .bind(address)
        .fetch_all(self.pool)
        .await
        .map_err(db("listing certificates"))?;
        rows.iter().map(row_to_certificate).collect()
    }

    /// The newest unrevoked certificate of `source` for `address` that is valid now.
    pub async fn current(
        &self,
        address: &str,
        source: CertificateSource,
    ) -> Result<Option<StoredCertificate>> {
        let at = now();
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM certificates WHERE owner_address = $1 AND source = $2 \
             AND revoked_at IS NULL AND not_before <= $3 AND not_after > $3 \
             ORDER BY not_after DESC, id DESC LIMIT 1"
        )))
        .bind(address)
        .bind(source.as_str())
        .bind(at)
        .fetch_optional(self.pool)
        .await
        .map_err(db("reading certificate"))?;
        row.as_ref().map(row_to_certificate).transpose()
    }

    /// Partner certificates for `address` (harvested or uploaded) that are unrevoked and
    /// valid at `at`, newest first (by notBefore), each with its SMIMECapabilities DER
    /// and, for a harvested one, the anchor that vouched for it.
    pub async fn for_partner(&self, address: &str, at: i64) -> Result<Vec<PartnerRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS}, smime_capabilities, vouched_by FROM certificates WHERE owner_address = $1 \
             AND source IN ('harvested', 'uploaded') AND revoked_at IS NULL \
             AND not_before <= $2 AND not_after > $2 ORDER BY not_before DESC, id DESC"
        )))
        .bind(address)
        .bind(at)
        .fetch_all(self.pool)
        .await
        .map_err(db("reading partner certificates"))?;
        rows.iter()
            .map(|row| {
                let read = db("reading partner certificates");
                Ok(PartnerRow {
                    capabilities: row.try_get("smime_capabilities").map_err(&read)?,
                    vouched_by: row.try_get("vouched_by").map_err(&read)?,
                    certificate: row_to_certificate(row)?,
                })
            })
            .collect()
    }

    /// Stores a partner's certificate learnt from a validly signed message, with the
    /// SMIMECapabilities that message advertised and its signingTime. For a certificate
    /// known already, the capabilities are replaced only by those of a newer message
    /// (RFC 8551 §2.5.2: the most recent signingTime wins), so replaying an old message
    /// cannot downgrade what we encrypt with. Capabilities without a signingTime never
    /// replace dated ones; a signingTime in the future counts as now. `vouched_by` is
    /// the SHA-256 fingerprint of the anchor that vouched for it this time. Returns
    /// true when the certificate is new.
    pub async fn harvest(
        &self,
        cert: &Certificate,
        owner_address: &str,
        capabilities: Option<&[u8]>,
        signed_at: Option<i64>,
        vouched_by: &str,
    ) -> Result<bool> {
        let record = CertificateRecord::from_certificate(cert)?;
        let signed_at = signed_at.map(|t| t.min(now()));
        let known =
            sqlx::query("SELECT id, source FROM certificates WHERE fingerprint_sha256 = $1")
                .bind(&record.fingerprint_sha256)
                .fetch_optional(self.pool)
                .await
                .map_err(db("looking up a harvested certificate"))?;
        if let Some(row) = known {
            let read = db("looking up a harvested certificate");
            let id: i64 = row.try_get("id").map_err(&read)?;
            let source: String = row.try_get("source").map_err(&read)?;
            // Ours, uploaded or an anchor already: a signed message changes nothing.
            if source == CertificateSource::Harvested.as_str() {
                self.refresh(id, capabilities, signed_at, vouched_by)
                    .await?;
            }
            return Ok(false);
        }
        let stored = match self
            .insert(
                cert,
                CertificateSource::Harvested,
                Some(owner_address),
                None,
            )
            .await
        {
            Ok(stored) => stored,
            // Another session harvested it a moment ago.
            Err(StoreError::Conflict(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        self.refresh(stored.id, capabilities, signed_at, vouched_by)
            .await?;
        Ok(true)
    }

    /// Replaces the capabilities of certificate `id` when none are stored, or when
    /// these are dated and newer than the stored ones; records the vouching anchor.
    /// Decided here and written only on a change: every write bumps the configuration
    /// version, which makes every node reload.
    async fn refresh(
        &self,
        id: i64,
        capabilities: Option<&[u8]>,
        signed_at: Option<i64>,
        vouched_by: &str,
    ) -> Result<()> {
        let row = sqlx::query(
            "SELECT smime_capabilities, capabilities_signed_at, vouched_by FROM certificates WHERE id = $1",
        )
        .bind(id)
        .fetch_one(self.pool)
        .await
        .map_err(db("reading capabilities"))?;
        let read = db("reading capabilities");
        let stored: Option<Vec<u8>> = row.try_get("smime_capabilities").map_err(&read)?;
        let stored_at: Option<i64> = row.try_get("capabilities_signed_at").map_err(&read)?;
        let stored_anchor: Option<String> = row.try_get("vouched_by").map_err(&read)?;
        let newer = match (stored.as_ref(), stored_at, signed_at) {
            (None, _, _) => true,
            (Some(_), None, Some(_)) => true,
            (Some(_), Some(old), Some(new)) => new > old,
            (Some(_), _, None) => false,
        };
        let replace = capabilities.is_some()
            && newer
            && (stored.as_deref() != capabilities || stored_at != signed_at);
        if replace {
            sqlx::query(
                "UPDATE certificates SET smime_capabilities = $1, capabilities_signed_at = $2 WHERE id = $3",
            )
            .bind(capabilities.map(<[u8]>::to_vec))
            .bind(signed_at)
            .bind(id)
            .execute(self.pool)
            .await
            .map_err(db("storing capabilities"))?;
        }
        if stored_anchor.as_deref() != Some(vouched_by) {
            sqlx::query("UPDATE certificates SET vouched_by = $1 WHERE id = $2")
                .bind(vouched_by)
                .bind(id)
                .execute(self.pool)
                .await
                .map_err(db("storing the vouching anchor"))?;
        }
        Ok(())
    }

    /// The certificate a mailbox signs with at `at`: the newest unrevoked certificate
    /// valid then whose key is in the token and not retired, issued by us or uploaded.
    pub async fn signing(&self, address: &str, at: i64) -> Result<Option<StoredCertificate>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM certificates WHERE owner_address = $1 \
             AND source IN ('issued', 'uploaded') AND revoked_at IS NULL \
             AND not_before <= $2 AND not_after > $2 \
             AND key_id IN (SELECT id FROM keys WHERE retired_at IS NULL) \
             ORDER BY not_after DESC, id DESC LIMIT 1"
        )))
        .bind(address)
        .bind(at)
        .fetch_optional(self.pool)
        .await
        .map_err(db("reading the signing certificate"))?;
        row.as_ref().map(row_to_certificate).transpose()
    }

    /// Marks every unrevoked certificate with a key of mailbox `mailbox_id` as revoked
    /// at `at` for `reason` (an RFC 5280 reason name). Returns those certificates.
    pub async fn revoke_for_mailbox(
        &self,
        mailbox_id: i64,
        at: i64,
        reason: &str,
    ) -> Result<Vec<StoredCertificate>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE certificates SET revoked_at = $1, revocation_reason = $2 \
             WHERE revoked_at IS NULL AND source IN ('issued', 'uploaded') \
             AND key_id IN (SELECT id FROM keys WHERE mailbox_id = $3) RETURNING {COLUMNS}"
        )))
        .bind(at)
        .bind(reason)
        .bind(mailbox_id)
        .fetch_all(self.pool)
        .await
        .map_err(db("revoking certificates"))?;
        rows.iter().map(row_to_certificate).collect()
    }

    /// Certificates issued by the CA named `issuer` (RFC 4514 text) that are revoked,
    /// with their reason, oldest first: what that CA's CRL lists.
    pub async fn revoked_by_issuer(
        &self,
        issuer: &str,
    ) -> Result<Vec<(StoredCertificate, Option<String>)>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS}, revocation_reason FROM certificates WHERE issuer = $1 \
             AND revoked_at IS NOT NULL AND source IN ('issued', 'ca') ORDER BY revoked_at, id"
        )))
        .bind(issuer)
        .fetch_all(self.pool)
        .await
        .map_err(db("listing revoked certificates"))?;
        rows.iter()
            .map(|row| {
                let reason: Option<String> = row
                    .try_get("revocation_reason")
                    .map_err(db("listing revoked certificates"))?;
                Ok((row_to_certificate(row)?, reason))
            })
            .collect()
    }
}

/// A managed identity to record in one transaction (`mailbox import`): its key (new
/// row, or one recorded when its CSR was made), its certificate, the chain that came
/// with it, and the mailbox's state change.
pub struct NewIdentity<'a> {
    pub mailbox_id: i64,
    pub address: &'a str,
    pub key: IdentityKey<'a>,
    pub certificate: &'a Certificate,
    pub source: CertificateSource,
    /// CA certificates sent with it, nearest first (kept with it, sent in signed mail).
    pub chain: &'a [Certificate],
    /// The mailbox must be in `from`; it ends in `to` (may be the same). Every other
    /// key of the mailbox is retired from signing (it keeps decrypting).
    pub from: super::MailboxState,
    pub to: super::MailboxState,
}

/// The key of a [`NewIdentity`].
pub enum IdentityKey<'a> {
    /// Imported into the token just now: a new `keys` row.
    New {
        id: &'a crate::hsm::KeyId,
        algorithm: crate::hsm::KeyAlgorithm,
        purpose: super::KeyPurpose,
    },
    /// Recorded already (a key made for a CSR): its row id.
    Recorded(i64),
}

impl Certificates<'_> {
    /// Records a managed identity (see [`NewIdentity`]) all at once: on any failure
    /// nothing of it is written.
    pub async fn record_identity(&self, identity: NewIdentity<'_>) -> Result<StoredCertificate> {
        let record = CertificateRecord::from_certificate(identity.certificate)?;
        let at = now();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting transaction"))?;
        let key_row_id = match identity.key {
            IdentityKey::Recorded(id) => id,
            IdentityKey::New {
                id,
                algorithm,
                purpose,
            } => sqlx::query_scalar(
                "INSERT INTO keys (cka_id, algorithm, purpose, mailbox_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(id.to_hex())
            .bind(algorithm.as_str())
            .bind(purpose.as_str())
            .bind(identity.mailbox_id)
            .bind(at)
            .fetch_one(&mut *tx)
            .await
            .map_err(query_error("recording key", || format!("key {id}")))?,
        };
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO certificates (der, subject, issuer, serial, not_before, not_after, fingerprint_sha256, \
             source, owner_address, key_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             RETURNING {COLUMNS}"
        )))
        .bind(record.der.clone())
        .bind(record.subject.clone())
        .bind(record.issuer.clone())
        .bind(record.serial.clone())
        .bind(record.not_before)
        .bind(record.not_after)
        .bind(record.fingerprint_sha256.clone())
        .bind(identity.source.as_str())
        .bind(identity.address)
        .bind(key_row_id)
        .bind(at)
        .fetch_one(&mut *tx)
        .await
        .map_err(query_error("storing certificate", || {
            format!("certificate {}", record.fingerprint_sha256)
        }))?;
        let stored = row_to_certificate(&row)?;
        if !identity.chain.is_empty() {
            let chain = identity
                .chain
                .to_vec()
                .to_der()
                .map_err(|e| StoreError::Corrupt(format!("chain does not encode: {e}")))?;
            sqlx::query("UPDATE certificates SET chain = $1 WHERE id = $2")
                .bind(chain)
                .bind(stored.id)
                .execute(&mut *tx)
                .await
                .map_err(db("storing the chain"))?;
        }
        // Only the new identity signs from now on; older keys stay for old mail.
        sqlx::query(
            "UPDATE keys SET retired_at = $1 WHERE mailbox_id = $2 AND id <> $3 AND retired_at IS NULL",
        )
        .bind(at)
        .bind(identity.mailbox_id)
        .bind(key_row_id)
        .execute(&mut *tx)
        .await
        .map_err(db("retiring older keys"))?;
        let moved = sqlx::query(
            "UPDATE mailboxes SET state = $1, \
             state_changed_at = CASE WHEN state = $1 THEN state_changed_at ELSE $2 END \
             WHERE id = $3 AND state = $4",
        )
        .bind(identity.to.as_str())
        .bind(at)
        .bind(identity.mailbox_id)
        .bind(identity.from.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db("changing mailbox state"))?;
        if moved.rows_affected() != 1 {
            return Err(StoreError::Refused(format!(
                "mailbox {} is no longer {}",
                identity.address,
                identity.from.as_str()
            )));
        }
        tx.commit().await.map_err(db("committing identity"))?;
        Ok(stored)
    }

    /// Records a key made in the token for a certificate request of mailbox
    /// `mailbox_id`, moving the mailbox from `from` to `to`, in one transaction.
    pub async fn record_request_key(
        &self,
        mailbox_id: i64,
        id: &crate::hsm::KeyId,
        algorithm: crate::hsm::KeyAlgorithm,
        from: super::MailboxState,
        to: super::MailboxState,
    ) -> Result<i64> {
        let at = now();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting transaction"))?;
        let key_row_id: i64 = sqlx::query_scalar(
            "INSERT INTO keys (cka_id, algorithm, purpose, mailbox_id, created_at) \
             VALUES ($1, $2, 'mailbox', $3, $4) RETURNING id",
        )
        .bind(id.to_hex())
        .bind(algorithm.as_str())
        .bind(mailbox_id)
        .bind(at)
        .fetch_one(&mut *tx)
        .await
        .map_err(query_error("recording key", || format!("key {id}")))?;
        let moved = sqlx::query(
            "UPDATE mailboxes SET state = $1, \
             state_changed_at = CASE WHEN state = $1 THEN state_changed_at ELSE $2 END \
             WHERE id = $3 AND state = $4",
        )
        .bind(to.as_str())
        .bind(at)
        .bind(mailbox_id)
        .bind(from.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db("changing mailbox state"))?;
        if moved.rows_affected() != 1 {
            return Err(StoreError::Refused(format!(
                "the mailbox is no longer {}",
                from.as_str()
            )));
        }
        tx.commit().await.map_err(db("committing key"))?;
        Ok(key_row_id)
    }

    /// The CA certificates uploaded with identity `cert`, nearest first (none for
    /// issued certificates and partners').
    pub async fn chain_of(&self, cert: &StoredCertificate) -> Result<Vec<Certificate>> {
        use der::Decode;
        let chain: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT chain FROM certificates WHERE id = $1")
                .bind(cert.id)
                .fetch_optional(self.pool)
                .await
                .map_err(db("reading the chain"))?
                .flatten();
        match chain {
            None => Ok(Vec::new()),
            Some(der) => Vec::<Certificate>::from_der(&der)
                .map_err(|e| StoreError::Corrupt(format!("chain of certificate {}: {e}", cert.id))),
        }
    }

    /// The certificate with this SHA-256 fingerprint (hex, lower case).
    pub async fn by_fingerprint(&self, fingerprint: &str) -> Result<Option<StoredCertificate>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM certificates WHERE fingerprint_sha256 = $1"
        )))
        .bind(fingerprint)
        .fetch_optional(self.pool)
        .await
        .map_err(db("reading certificate"))?;
        row.as_ref().map(row_to_certificate).transpose()
    }

    /// Every certificate, optionally only those naming `owner`, newest first.
    pub async fn list_all(&self, owner: Option<&str>) -> Result<Vec<StoredCertificate>> {
        let rows =
            match owner {
                Some(owner) => sqlx::query(AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM certificates WHERE owner_address = $1 ORDER BY id DESC"
                )))
                .bind(owner)
                .fetch_all(self.pool)
                .await,
                None => {
                    sqlx::query(AssertSqlSafe(format!(
                        "SELECT {COLUMNS} FROM certificates ORDER BY id DESC"
                    )))
                    .fetch_all(self.pool)
                    .await
                }
            }
            .map_err(db("listing certificates"))?;
        rows.iter().map(row_to_certificate).collect()
    }

    /// Stores a partner's certificate an operator imported (source `uploaded`, no key)
    /// for `owner`, with the anchor that vouched for it.
    pub async fn insert_partner(
        &self,
        cert: &Certificate,
        owner: &str,
        vouched_by: &str,
    ) -> Result<StoredCertificate> {
        let record = CertificateRecord::from_certificate(cert)?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO certificates (der, subject, issuer, serial, not_before, not_after, fingerprint_sha256, \
             source, owner_address, vouched_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'uploaded', $8, $9, $10) RETURNING {COLUMNS}"
        )))
        .bind(record.der.clone())
        .bind(record.subject.clone())
        .bind(record.issuer.clone())
        .bind(record.serial.clone())
        .bind(record.not_before)
        .bind(record.not_after)
        .bind(record.fingerprint_sha256.clone())
        .bind(owner)
        .bind(vouched_by)
        .bind(now())
        .fetch_one(self.pool)
        .await
        .map_err(query_error("storing certificate", || {
            format!("certificate {}", record.fingerprint_sha256)
        }))?;
        row_to_certificate(&row)
    }

    /// Deletes a partner's certificate (harvested or uploaded, with an owner and no
    /// key); refuses any other.
    pub async fn remove_partner(&self, id: i64) -> Result<()> {
        let done = sqlx::query(
            "DELETE FROM certificates WHERE id = $1 AND key_id IS NULL \
             AND owner_address IS NOT NULL AND source IN ('harvested', 'uploaded')",
        )
        .bind(id)
        .execute(self.pool)
        .await
        .map_err(db("removing certificate"))?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::Refused(format!(
                "certificate {id} is not a partner's certificate"
            )))
        }
    }
}

//! The built-in CA's certificate revocation list: signed in the token, stored, and
//! served over plain HTTP at the URL written into every certificate
//! ([`crate::pki::urls::PkiUrls`]). It is re-signed on every revocation
//! (deactivation) and by the lifecycle job once less than half of its validity is
//! left, so a relying party never meets an expired CRL while the gateway runs.

use std::time::{Duration, SystemTime};

use der::Encode;
use sha2::Digest;

use super::{Actor, OpError, audit};
use crate::app::App;
use crate::hsm::HsmError;
use crate::pki::ca::CaIdentity;
use crate::pki::crl::{self, Revocation};
use crate::store::{PublishedCrl, StoreError};

/// The SHA-256 fingerprint (hex) of a CA's certificate: what its CRLs are filed under.
pub fn ca_fingerprint(ca: &CaIdentity) -> Result<String, OpError> {
    let der = ca
        .certificate
        .to_der()
        .map_err(|e| OpError::Store(StoreError::Corrupt(format!("CA certificate: {e}"))))?;
    Ok(hex::encode(sha2::Sha256::digest(&der)))
}

/// Signs and stores a new CRL of `ca` listing every certificate it issued that is
/// revoked; `why` goes to the audit row (e.g. "revocation", "refresh").
pub async fn publish(
    app: &App,
    actor: &Actor,
    ca: &CaIdentity,
    why: &str,
) -> Result<PublishedCrl, OpError> {
    let fingerprint = ca_fingerprint(ca)?;
    let issuer = ca.certificate.tbs_certificate().subject().to_string();
    let revoked = app
        .store
        .certificates()
        .revoked_by_issuer(&issuer)
        .await?
        .into_iter()
        .map(|(cert, reason)| {
            Ok(Revocation {
                serial: hex::decode(&cert.record.serial).map_err(|e| {
                    StoreError::Corrupt(format!("serial of certificate {}: {e}", cert.id))
                })?,
                revoked_at: SystemTime::UNIX_EPOCH
                    + Duration::from_secs(cert.revoked_at.unwrap_or(0).max(0) as u64),
                reason: reason.as_deref().and_then(crl::reason_from_name),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let validity =
        Duration::from_secs(u64::from(app.settings.config.lifecycle.crl_validity_days) * 86_400);
    // Two nodes may sign at once: the loser of a CRL number signs again with the next.
    for _ in 0..3 {
        let number = app.store.published_crls().next_number(&fingerprint).await?;
        let this_update = SystemTime::now();
        let next_update = this_update + validity;
        let (ca_task, revoked_task) = (ca.clone(), revoked.clone());
        let der = app
            .hsm
            .call("sign CRL", move |hsm| {
                crl::build_crl_between(
                    hsm,
                    &ca_task,
                    number as u64,
                    &revoked_task,
                    this_update,
                    next_update,
                )
                .map_err(|e| match e {
                    crate::pki::ca::IssueError::Token(h) => h,
                    other => HsmError::Encoding(other.to_string()),
                })
            })
            .await?;
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        };
        let published = PublishedCrl {
            issuer_fingerprint: fingerprint.clone(),
            crl_number: number,
            der,
            this_update: unix(this_update),
            next_update: unix(next_update),
            entries: revoked.len() as i64,
        };
        match app.store.published_crls().insert(&published).await {
            Ok(()) => {
                tracing::info!(
                    crl_number = number,
                    entries = published.entries,
                    why,
                    "CRL of the built-in CA signed"
                );
                let detail = format!(
                    "number {number}, {} revoked, next update {}; {why}",
                    published.entries,
                    super::rfc3339(published.next_update)
                );
                audit(&app.store, actor, "crl.publish", &issuer, &detail).await?;
                return Ok(published);
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(OpError::Store(StoreError::Unavailable(
        "another node kept taking the next CRL number".into(),
    )))
}

/// Publishes a CRL of `ca` when none exists or less than half of the newest one's
/// validity is left at `at` (unix seconds). Returns the CRL signed, if any.
pub async fn refresh_if_due(
    app: &App,
    actor: &Actor,
    ca: &CaIdentity,
    at: i64,
) -> Result<Option<PublishedCrl>, OpError> {
    let latest = app
        .store
        .published_crls()
        .latest(&ca_fingerprint(ca)?)
        .await?;
    let issuer = ca.certificate.tbs_certificate().subject().to_string();
    let revoked = app
        .store
        .certificates()
        .revoked_by_issuer(&issuer)
        .await?
        .len() as i64;
    let due = match &latest {
        None => true,
        // A revocation the newest CRL does not list (its signing failed earlier).
        Some(crl) if crl.entries != revoked => true,
        Some(crl) => at >= crl.this_update + (crl.next_update - crl.this_update) / 2,
    };
    if !due {
        return Ok(None);
    }
    publish(
        app,
        actor,
        ca,
        if latest.is_none() {
            "first CRL"
        } else {
            "refresh before nextUpdate"
        },
    )
    .await
    .map(Some)
}

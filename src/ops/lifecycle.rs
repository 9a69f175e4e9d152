//! The certificate lifecycle job and renewal.
//!
//! One run, at a decision time `at` (now, except in tests that move the clock):
//! 1. revoke-pending mailboxes whose `[lifecycle].revoke_pending_days` have passed
//!    become inactive (their seat is free);
//! 2. active mailboxes whose signing certificate expires within
//!    `[lifecycle].renew_before_days` of `at` (or has expired, or is missing) are
//!    renewed: a new key in the token and a new certificate, at no extra seat; the
//!    older keys are retired from signing and stay in the token, so mail encrypted to
//!    any earlier certificate still decrypts. Uploaded identities are not ours to
//!    renew: they are reported (and logged at WARN) as their expiry approaches;
//! 3. message-log rows older than `[log].keep_days` are deleted
//!    ([`super::retention`]);
//! 4. the built-in CA's CRL is re-signed when a revocation is newer than it or less
//!    than half of its validity is left.
//!
//! `serve` runs it at start and every `[lifecycle].interval_secs`; `smimegate
//! lifecycle run` runs it once (cron). Only one node at a time runs it: the run takes
//! a lease in the database and a run that cannot take it does nothing. Every change
//! goes through the same operations as an operator's, with the actor `job:lifecycle`
//! (or the CLI user), and so lands in the audit log.

use std::time::{Duration, SystemTime};

use tracing::Instrument;

use super::{Actor, OpError, audit, mailboxes};
use crate::app::App;
use crate::pki::address::Address;
use crate::store::{CertificateSource, MailboxState, StoredCertificate};

/// The lease's name, and how long a run may hold it before another node may take over.
const LEASE: &str = "lifecycle";
const LEASE_SECS: i64 = 15 * 60;
/// The PostgreSQL advisory lock key of the lifecycle job ("smimegat" in ASCII).
pub const ADVISORY_LOCK_KEY: i64 = 0x736d_696d_6567_6174;

/// A mailbox whose certificate was renewed.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Renewed {
    pub address: String,
    /// Serial of the certificate it signed with before, if it had one.
    pub previous_serial: Option<String>,
    #[schema(value_type = Object)]
    pub certificate: StoredCertificate,
}

/// An uploaded identity nearing (or past) its expiry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExpiringUpload {
    pub address: String,
    pub serial: String,
    pub not_after: i64,
}

/// A CRL a run signed: whose, and its number.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignedCrl {
    /// The signing CA's subject.
    pub ca: String,
    pub crl_number: i64,
}

/// What one run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LifecycleReport {
    /// Another node holds the lease: this run did nothing.
    pub skipped: bool,
    /// Revoke-pending mailboxes that became inactive.
    pub released: Vec<String>,
    pub renewed: Vec<Renewed>,
    /// Renewals that failed, with the reason (retried at the next run).
    pub failed: Vec<(String, String)>,
    pub expiring_uploads: Vec<ExpiringUpload>,
    /// CRLs signed.
    pub crls_signed: Vec<SignedCrl>,
    /// Things the operator should act on (e.g. the licence ended).
    pub warnings: Vec<String>,
    /// Message-log rows deleted as older than `[log].keep_days`.
    pub message_log_purged: u64,
}

/// Renews `address`'s certificate now: a new key in the token, a new certificate from
/// the built-in CA; the mailbox signs with it from now on and every older key keeps
/// decrypting. The mailbox must be active; an uploaded identity is refused.
pub async fn renew(app: &App, actor: &Actor, address: &str) -> Result<Renewed, OpError> {
    let address = super::input::address(address)?;
    let mailbox = app.store.mailboxes().require(&address).await?;
    if mailbox.state != MailboxState::Active {
        return Err(OpError::Invalid(format!(
            "mailbox {address} is {}: only an active mailbox is renewed",
            mailbox.state.as_str()
        )));
    }
    let previous = newest_with_key(app, &address).await?;
    if let Some(prev) = &previous
        && prev.source == CertificateSource::Uploaded
    {
        return Err(OpError::Invalid(format!(
            "mailbox {address} signs with an uploaded certificate: its issuer renews it; \
             import the new one with `smimegate mailbox import`"
        )));
    }
    let algorithm = match &previous {
        Some(prev) => match prev.key_id {
            Some(id) => app.store.keys().get(id).await?.map(|k| k.algorithm),
            None => None,
        },
        None => None,
    }
    .unwrap_or(app.settings.config.ca.mailbox_key);
    let ca = app.ca().await?;
    let certificate = mailboxes::issue(app, &address, mailbox.id, algorithm, &ca).await?;
    // Older keys stop signing; they stay in the token to decrypt old mail.
    for key in app.store.keys().for_mailbox(mailbox.id).await? {
        if Some(key.id) != certificate.key_id && key.retired_at.is_none() {
            app.store.keys().retire(key.id).await?;
        }
    }
    let previous_serial = previous.map(|p| p.record.serial);
    let detail = format!(
        "{algorithm}; certificate serial {} valid until {}{}",
        certificate.record.serial,
        super::rfc3339(certificate.record.not_after),
        previous_serial
            .as_deref()
            .map(|s| format!("; replaces {s} (its key keeps decrypting)"))
            .unwrap_or_default()
    );
    audit(
        &app.store,
        actor,
        "mailbox.renew",
        address.as_str(),
        &detail,
    )
    .await?;
    tracing::info!(%address, serial = %certificate.record.serial, "mailbox certificate renewed");
    Ok(Renewed {
        address: address.to_string(),
        previous_serial,
        certificate,
    })
}

/// The mailbox's newest certificate with a key of ours, valid or not, unrevoked.
async fn newest_with_key(
    app: &App,
    address: &Address,
) -> Result<Option<StoredCertificate>, OpError> {
    Ok(app
        .store
        .certificates()
        .for_owner(address.as_str())
        .await?
        .into_iter()
        .find(|c| {
            c.key_id.is_some()
                && c.revoked_at.is_none()
                && matches!(
                    c.source,
                    CertificateSource::Issued | CertificateSource::Uploaded
                )
        }))
}

/// One run of the lifecycle job as of `at` (see the module documentation).
pub async fn run(app: &App, actor: &Actor, at: SystemTime) -> Result<LifecycleReport, OpError> {
    let at = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let holder = format!(
        "{}:{}",
        app.settings.config.gateway.node_name,
        std::process::id()
    );
    let now = crate::store::unix_now();
    let leases = app.store.leases();
    let skipped = || {
        tracing::info!("lifecycle job: another node runs it now; nothing done");
        Ok(LifecycleReport {
            skipped: true,
            ..LifecycleReport::default()
        })
    };
    // Several nodes share PostgreSQL: an advisory lock, freed the moment its holder's
    // connection ends (a node killed mid-run does not block the job). One node on
    // SQLite: a lease row (against a `smimegate lifecycle run` beside `serve`).
    if app.store.backend() == crate::store::Backend::Postgres {
        let Some(lock) = leases.try_advisory_lock(ADVISORY_LOCK_KEY).await? else {
            return skipped();
        };
        let result = run_locked(app, actor, at).await;
        lock.release().await;
        return result;
    }
    if !leases
        .acquire(LEASE, &holder, now, now + LEASE_SECS)
        .await?
    {
        return skipped();
    }
    let result = run_locked(app, actor, at).await;
    if let Err(e) = leases.release(LEASE, &holder).await {
        tracing::warn!(error = %e, "lifecycle lease not given back; it runs out by itself");
    }
    result
}

async fn run_locked(app: &App, actor: &Actor, at: i64) -> Result<LifecycleReport, OpError> {
    let config = &app.settings.config.lifecycle;
    let mut report = LifecycleReport::default();

    let hold = i64::from(config.revoke_pending_days) * 86_400;
    for mailbox in app
        .store
        .mailboxes()
        .revoke_pending_since(at - hold)
        .await?
    {
        let address = super::input::address(&mailbox.address)?;
        app.store
            .mailboxes()
            .transition(
                &address,
                MailboxState::RevokePending,
                MailboxState::Inactive,
            )
            .await?;
        audit(
            &app.store,
            actor,
            "mailbox.release",
            address.as_str(),
            &format!(
                "revoke-pending for {} days: inactive, seat free",
                config.revoke_pending_days
            ),
        )
        .await?;
        tracing::info!(%address, "revoke-pending mailbox is inactive; its seat is free");
        report.released.push(mailbox.address);
    }

    // Ended console sessions (idle or past their end) are deleted here; a request
    // with one is refused either way.
    match super::console::prune_sessions(&app.ops()).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(sessions = n, "ended console sessions deleted"),
        Err(e) => tracing::warn!(error = %e, "ended console sessions not deleted"),
    }

    // The message log keeps `[log].keep_days`; a failure here stops nothing else.
    match super::retention::purge_message_log(&app.ops(), actor, at, super::retention::BATCH).await
    {
        Ok(purged) => report.message_log_purged = purged.deleted,
        Err(e) => tracing::warn!(error = %e, "message log not purged; next run tries again"),
    }

    let window = i64::from(config.renew_before_days) * 86_400;
    for mailbox in app.store.mailboxes().in_state(MailboxState::Active).await? {
        let address = super::input::address(&mailbox.address)?;
        let newest = newest_with_key(app, &address).await?;
        match newest {
            Some(cert) if cert.record.not_after - window > at => {}
            Some(cert) if cert.source == CertificateSource::Uploaded => {
                tracing::warn!(
                    %address,
                    serial = %cert.record.serial,
                    not_after = %super::rfc3339(cert.record.not_after),
                    "uploaded certificate expires soon: import its successor"
                );
                report.expiring_uploads.push(ExpiringUpload {
                    address: mailbox.address.clone(),
                    serial: cert.record.serial,
                    not_after: cert.record.not_after,
                });
            }
            _ => match renew(app, actor, address.as_str()).await {
                Ok(renewed) => report.renewed.push(renewed),
                Err(e) => {
                    tracing::error!(%address, error = %e, "renewal failed; retried at the next run");
                    report.failed.push((mailbox.address.clone(), e.to_string()));
                }
            },
        }
    }

    if let Some(licence) = app.store.licence().get().await?
        && let Some(end) = licence.valid_until
        && at > end
    {
        let warning = format!(
            "the licence ended on {}: no new seats; renewals go on so that no mailbox stops signing",
            super::licence::date(end)
        );
        tracing::warn!("{warning}");
        report.warnings.push(warning);
    }

    let ca = app.ca().await?;
    if let Some(crl) = super::crl::refresh_if_due(app, actor, &ca, at).await? {
        report.crls_signed.push(SignedCrl {
            ca: ca.certificate.tbs_certificate().subject().to_string(),
            crl_number: crl.crl_number,
        });
    }
    // The two-tier CA: the root's CRL (covering the issuing CA) is kept fresh too.
    let root = app.root_ca().await?;
    if root.certificate != ca.certificate
        && let Some(crl) = super::crl::refresh_if_due(app, actor, &root, at).await?
    {
        report.crls_signed.push(SignedCrl {
            ca: root.certificate.tbs_certificate().subject().to_string(),
            crl_number: crl.crl_number,
        });
    }
    Ok(report)
}

/// Runs the job at start and then every `[lifecycle].interval_secs` until `stop`
/// says so; a failed run is logged and the next one tries again.
pub async fn run_periodically(
    app: std::sync::Arc<App>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let interval = Duration::from_secs(app.settings.config.lifecycle.interval_secs);
    let actor = Actor::job("lifecycle");
    loop {
        let run = run(&app, &actor, SystemTime::now())
            .instrument(tracing::info_span!("lifecycle"))
            .await;
        match run {
            Ok(report) if !report.skipped => tracing::info!(
                released = report.released.len(),
                renewed = report.renewed.len(),
                failed = report.failed.len(),
                expiring_uploads = report.expiring_uploads.len(),
                crls_signed = report.crls_signed.len(),
                message_log_purged = report.message_log_purged,
                "lifecycle run done"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "lifecycle run failed; next try in {interval:?}"),
        }
        // What the run changed (renewed certificates, released mailboxes) counts on this
        // node from its next transaction on.
        if let Err(e) = app.store.refresh_config_version().await {
            tracing::warn!(error = %e, "cannot read the configuration version");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}

//! Managed mailboxes: add, remove, list, show, activate (a key in the token and a
//! certificate from the built-in CA; one, several, a domain's or all, one licence
//! seat each) and deactivate (revocation, then revoke-pending until the seat is
//! free). States: `inactive → pending → active → revoke-pending → inactive`.

use super::{Actor, OpError, Ops, audit, input};
use crate::app::App;
use crate::hsm::{HsmError, KeyAlgorithm, KeyRole};
use crate::pki::address::Address;
use crate::pki::ca::{self, CaIdentity, IssueError};
use crate::store::{
    CertificateSource, KeyPurpose, KeyRow, MailboxRow, MailboxState, StoredCertificate,
};

/// A mailbox just added.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AddedMailbox {
    #[serde(flatten)]
    pub mailbox: MailboxRow,
    /// Its domain accepts any local part: only listed mailboxes can be activated.
    pub wildcard_domain: bool,
}

/// The mailboxes and the licence seats they hold.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct MailboxList {
    pub mailboxes: Vec<MailboxSummary>,
    /// Mailboxes in a state that holds a seat (pending, active, revoke-pending).
    pub seats_in_use: i64,
}

/// One line of `mailbox list`: the mailbox and the certificate it signs with.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct MailboxSummary {
    #[serde(flatten)]
    pub mailbox: MailboxRow,
    /// Expiry (unix seconds) of the certificate it signs with; none when it cannot sign.
    pub certificate_expires: Option<i64>,
    /// Where that certificate comes from: issued by us or uploaded.
    #[schema(value_type = Option<String>)]
    pub source: Option<CertificateSource>,
}

impl std::ops::Deref for MailboxSummary {
    type Target = MailboxRow;
    fn deref(&self) -> &MailboxRow {
        &self.mailbox
    }
}

/// `mailbox activate`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Activate {
    pub address: String,
    /// The key type; none: `[ca].mailbox_key`.
    #[serde(default)]
    pub key: Option<KeyAlgorithm>,
    /// Activate even when the domain's MX does not point at the gateway.
    #[serde(default)]
    pub skip_mx_check: bool,
}

/// A mailbox just activated: its new key and certificate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Activated {
    pub address: String,
    pub key: KeyAlgorithm,
    pub certificate: StoredCertificate,
    /// The label of the token holding the key.
    pub token: String,
}

/// Adds a known mailbox of a managed domain (inactive).
pub async fn add(ctx: &Ops<'_>, actor: &Actor, address: &str) -> Result<AddedMailbox, OpError> {
    let address = input::address(address)?;
    let domain = ctx
        .store
        .domains()
        .get(&input::domain(address.domain())?)
        .await?;
    let mailbox = ctx.store.mailboxes().add(&address).await?;
    audit(ctx.store, actor, "mailbox.add", address.as_str(), "").await?;
    Ok(AddedMailbox {
        mailbox,
        wildcard_domain: domain.is_some_and(|d| d.wildcard),
    })
}

/// Removes an inactive mailbox; its keys stay in the token for old mail.
pub async fn remove(ctx: &Ops<'_>, actor: &Actor, address: &str) -> Result<MailboxRow, OpError> {
    let address = input::address(address)?;
    let row = ctx.store.mailboxes().require(&address).await?;
    ctx.store.mailboxes().remove(&address).await?;
    audit(ctx.store, actor, "mailbox.remove", address.as_str(), "").await?;
    Ok(row)
}

/// Every mailbox, by address, and the seats in use.
pub async fn list(ctx: &Ops<'_>) -> Result<MailboxList, OpError> {
    let now = crate::store::unix_now();
    let mut mailboxes = Vec::new();
    for mailbox in ctx.store.mailboxes().list().await? {
        let signing = if mailbox.state == MailboxState::Active {
            ctx.store
                .certificates()
                .signing(&mailbox.address, now)
                .await?
        } else {
            None
        };
        mailboxes.push(MailboxSummary {
            certificate_expires: signing.as_ref().map(|c| c.record.not_after),
            source: signing.map(|c| c.source),
            mailbox,
        });
    }
    Ok(MailboxList {
        mailboxes,
        seats_in_use: ctx.store.mailboxes().seats_in_use().await?,
    })
}

/// Generates the mailbox's key in the token and issues its certificate:
/// `inactive → pending → active`, taking a licence seat (refused with
/// [`OpError::NoSeat`] when none is free). A revoke-pending mailbox (deactivated, still
/// holding its seat) can be activated again the same way. Refuses a mailbox whose
/// domain has no inbound route. On failure the mailbox returns to where it was and a
/// key already generated is recorded as retired (it stays traceable).
pub async fn activate(app: &App, actor: &Actor, input: Activate) -> Result<Activated, OpError> {
    let address = input::address(&input.address)?;
    let mailbox = app.store.mailboxes().require(&address).await?;
    require_inbound_route(app, &mailbox).await?;
    // (A pending or active mailbox is refused below, with its reason.)
    if !input.skip_mx_check
        && matches!(
            mailbox.state,
            MailboxState::Inactive | MailboxState::RevokePending
        )
    {
        super::domains::require_mx(&app.ops(), &mailbox.domain).await?;
    }
    let ca = app.ca().await?;
    let algorithm = input.key.unwrap_or(app.settings.config.ca.mailbox_key);
    let mailboxes = app.store.mailboxes();
    let was = take_pending(app, &address, mailbox.state).await?;
    let certificate = match issue(app, &address, mailbox.id, algorithm, &ca).await {
        Ok(certificate) => certificate,
        Err(e) => {
            tracing::error!(%address, error = %e, "activation failed");
            if let Err(revert) = mailboxes
                .transition(&address, MailboxState::Pending, was)
                .await
            {
                tracing::error!(%address, error = %revert, "could not return mailbox to its state");
            }
            return Err(e);
        }
    };
    // Keys of an earlier activation stay for old mail; only the new one signs.
    retire_other_keys(app, mailbox.id, certificate.key_id).await?;
    mailboxes
        .transition(&address, MailboxState::Pending, MailboxState::Active)
        .await?;
    let detail = format!(
        "{algorithm}; certificate serial {} valid until {}",
        certificate.record.serial,
        super::rfc3339(certificate.record.not_after)
    );
    audit(
        &app.store,
        actor,
        "mailbox.activate",
        address.as_str(),
        &detail,
    )
    .await?;
    Ok(Activated {
        address: address.to_string(),
        key: algorithm,
        certificate,
        token: app.hsm.token_label().to_string(),
    })
}

/// Moves a mailbox to pending: from inactive when a seat is free, from
/// revoke-pending on its own seat. Returns the state it came from.
async fn take_pending(
    app: &App,
    address: &Address,
    state: MailboxState,
) -> Result<MailboxState, OpError> {
    let mailboxes = app.store.mailboxes();
    match state {
        MailboxState::Inactive => {
            let limit = super::licence::seat_limit(&app.ops()).await?;
            if mailboxes.take_seat(address, limit).await? {
                Ok(MailboxState::Inactive)
            } else {
                Err(OpError::NoSeat(super::licence::no_seat_message(
                    limit.unwrap_or(0),
                )))
            }
        }
        MailboxState::RevokePending => {
            mailboxes
                .transition(address, MailboxState::RevokePending, MailboxState::Pending)
                .await?;
            Ok(MailboxState::RevokePending)
        }
        MailboxState::Pending | MailboxState::Active => Err(OpError::Invalid(format!(
            "mailbox {address} is {} already",
            state.as_str()
        ))),
    }
}

/// Retires every key of the mailbox but `keep` (the certificate row's key id).
async fn retire_other_keys(app: &App, mailbox_id: i64, keep: Option<i64>) -> Result<(), OpError> {
    for key in app.store.keys().for_mailbox(mailbox_id).await? {
        if Some(key.id) != keep && key.retired_at.is_none() {
            app.store.keys().retire(key.id).await?;
        }
    }
    Ok(())
}

/// `mailbox activate` for several mailboxes: listed addresses, every known mailbox of
/// a domain, or every known mailbox of every domain with an inbound route.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ActivateMany {
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub key: Option<KeyAlgorithm>,
    /// Activate even where the domain's MX does not point at the gateway.
    #[serde(default)]
    pub skip_mx_check: bool,
}

/// What happened to one mailbox of a batch.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum ActivationOutcome {
    Activated {
        serial: String,
        not_after: i64,
    },
    /// Pending or active already: nothing done.
    Skipped {
        state: MailboxState,
    },
    Failed {
        reason: String,
    },
    /// The batch stopped before this mailbox (no seat left).
    NotAttempted,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct BatchEntry {
    pub address: String,
    /// `outcome` (`activated`, `skipped`, `failed`, `not-attempted`) and its fields.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub outcome: ActivationOutcome,
}

/// The outcome of every mailbox of a batch, in order.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ActivationReport {
    pub mailboxes: Vec<BatchEntry>,
    /// Why the batch stopped early (no seat left), if it did.
    pub stopped: Option<String>,
}

impl ActivationReport {
    pub fn activated(&self) -> usize {
        self.mailboxes
            .iter()
            .filter(|e| matches!(e.outcome, ActivationOutcome::Activated { .. }))
            .count()
    }

    /// Every mailbox asked for is active now.
    pub fn complete(&self) -> bool {
        self.stopped.is_none()
            && self
                .mailboxes
                .iter()
                .all(|e| !matches!(e.outcome, ActivationOutcome::Failed { .. }))
    }
}

/// Activates each selected mailbox in turn (one seat each); reports each outcome.
/// Stops when no seat is left, saying which were activated; any other failure is
/// that mailbox's outcome and the batch goes on.
pub async fn activate_many(
    app: &App,
    actor: &Actor,
    input: ActivateMany,
) -> Result<ActivationReport, OpError> {
    let selectors = usize::from(!input.addresses.is_empty())
        + usize::from(input.domain.is_some())
        + usize::from(input.all);
    if selectors != 1 {
        return Err(OpError::Invalid(
            "name the mailboxes: addresses, --domain D or --all (exactly one of them)".into(),
        ));
    }
    let selected = select(app, &input).await?;
    let mut report = ActivationReport {
        mailboxes: Vec::with_capacity(selected.len()),
        stopped: None,
    };
    for mailbox in selected {
        if report.stopped.is_some() {
            report.mailboxes.push(BatchEntry {
                address: mailbox.address,
                outcome: ActivationOutcome::NotAttempted,
            });
            continue;
        }
        if matches!(mailbox.state, MailboxState::Pending | MailboxState::Active) {
            report.mailboxes.push(BatchEntry {
                address: mailbox.address,
                outcome: ActivationOutcome::Skipped {
                    state: mailbox.state,
                },
            });
            continue;
        }
        let one = Activate {
            address: mailbox.address.clone(),
            key: input.key,
            skip_mx_check: input.skip_mx_check,
        };
        let outcome = match activate(app, actor, one).await {
            Ok(done) => ActivationOutcome::Activated {
                serial: done.certificate.record.serial,
                not_after: done.certificate.record.not_after,
            },
            Err(OpError::NoSeat(why)) => {
                report.stopped = Some(why);
                ActivationOutcome::NotAttempted
            }
            // The gateway's own failure stops the batch: the next one would fail alike.
            Err(e @ (OpError::Store(_) | OpError::Token(_) | OpError::Setup(_))) => {
                report.stopped = Some(e.to_string());
                ActivationOutcome::Failed {
                    reason: e.to_string(),
                }
            }
            Err(e) => ActivationOutcome::Failed {
                reason: e.to_string(),
            },
        };
        report.mailboxes.push(BatchEntry {
            address: mailbox.address,
            outcome,
        });
    }
    Ok(report)
}

/// The mailboxes a batch names, by address. Listed addresses must all exist.
async fn select(app: &App, input: &ActivateMany) -> Result<Vec<MailboxRow>, OpError> {
    let mailboxes = app.store.mailboxes();
    if !input.addresses.is_empty() {
        let mut rows = Vec::with_capacity(input.addresses.len());
        for text in &input.addresses {
            let address = input::address(text)?;
            let row = mailboxes.require(&address).await?;
            if !rows.iter().any(|r: &MailboxRow| r.id == row.id) {
                rows.push(row);
            }
        }
        return Ok(rows);
    }
    let domains = app.store.domains().list().await?;
    let routed = |name: &str| {
        domains
            .iter()
            .any(|d| d.name == name && d.next_hop.is_some())
    };
    if let Some(domain) = &input.domain {
        let domain = input::domain(domain)?;
        let row = domains
            .iter()
            .find(|d| d.name == domain.as_str())
            .ok_or_else(|| OpError::NotFound(format!("{domain} is not a managed domain")))?;
        if row.next_hop.is_none() {
            return Err(OpError::Invalid(format!(
                "domain {domain} has no inbound route (next hop); set one with `smimegate domain set {domain} --next-hop HOST:PORT`"
            )));
        }
        return Ok(mailboxes
            .list()
            .await?
            .into_iter()
            .filter(|m| m.domain == domain.as_str())
            .collect());
    }
    // --all: the known mailboxes of every routed domain. A wildcard domain's listed
    // mailboxes are known; the addresses its wildcard merely accepts are not.
    Ok(mailboxes
        .list()
        .await?
        .into_iter()
        .filter(|m| routed(&m.domain))
        .collect())
}

/// A mailbox just deactivated.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Deactivated {
    pub address: String,
    /// Serials (hex) of the certificates revoked.
    pub revoked: Vec<String>,
    /// When it becomes inactive and its seat is free (unix seconds).
    pub inactive_from: i64,
}

/// `mailbox deactivate`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeactivationReport {
    pub mailboxes: Vec<Deactivated>,
    /// The CRL listing the revocations could not be signed now (the lifecycle job
    /// signs it at its next run); the revocations are recorded.
    pub crl_error: Option<String>,
}

/// Deactivates mailboxes: each one's certificates are revoked at once (reason
/// cessationOfOperation) and listed in a new CRL of the built-in CA, its keys retired
/// (they never sign again, and stay in the token to decrypt mail sent to them), and
/// it is revoke-pending, holding its seat for `[lifecycle].revoke_pending_days`; the
/// lifecycle job then makes it inactive. Every address is checked before any changes.
pub async fn deactivate(
    app: &App,
    actor: &Actor,
    addresses: &[String],
) -> Result<DeactivationReport, OpError> {
    if addresses.is_empty() {
        return Err(OpError::Invalid("name the mailboxes to deactivate".into()));
    }
    let mut rows = Vec::with_capacity(addresses.len());
    for text in addresses {
        let address = input::address(text)?;
        let row = app.store.mailboxes().require(&address).await?;
        if !matches!(row.state, MailboxState::Active | MailboxState::Pending) {
            return Err(OpError::Invalid(format!(
                "mailbox {address} is {}: only an active or pending mailbox can be deactivated",
                row.state.as_str()
            )));
        }
        if !rows
            .iter()
            .any(|(_, r): &(Address, MailboxRow)| r.id == row.id)
        {
            rows.push((address, row));
        }
    }
    let hold = i64::from(app.settings.config.lifecycle.revoke_pending_days) * 86_400;
    let mut report = DeactivationReport {
        mailboxes: Vec::with_capacity(rows.len()),
        crl_error: None,
    };
    let mut revoked_ours = false;
    for (address, row) in rows {
        app.store
            .mailboxes()
            .transition(&address, row.state, MailboxState::RevokePending)
            .await?;
        let at = crate::store::unix_now();
        let revoked = app
            .store
            .certificates()
            .revoke_for_mailbox(row.id, at, "cessationOfOperation")
            .await?;
        app.store.keys().retire_for_mailbox(row.id).await?;
        revoked_ours |= revoked
            .iter()
            .any(|c| c.source == CertificateSource::Issued);
        let serials: Vec<String> = revoked.iter().map(|c| c.record.serial.clone()).collect();
        let detail = if serials.is_empty() {
            "no certificate to revoke".to_string()
        } else {
            format!("revoked certificate(s) {}", serials.join(", "))
        };
        audit(
            &app.store,
            actor,
            "mailbox.deactivate",
            address.as_str(),
            &detail,
        )
        .await?;
        tracing::info!(%address, revoked = serials.len(), "mailbox deactivated");
        report.mailboxes.push(Deactivated {
            address: address.to_string(),
            revoked: serials,
            inactive_from: at + hold,
        });
    }
    if revoked_ours {
        let published = match app.ca().await {
            Ok(ca) => super::crl::publish(app, actor, &ca, "revocation").await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = published {
            tracing::error!(error = %e, "CRL not re-signed after a revocation; the lifecycle job will retry");
            report.crl_error = Some(e.to_string());
        }
    }
    Ok(report)
}

/// One certificate in a mailbox's history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertificateHistory {
    #[serde(flatten)]
    pub certificate: StoredCertificate,
    /// The key behind it (in the token), if it is one of ours.
    pub key: Option<KeyRow>,
    /// The certificate the mailbox signs with now.
    pub signing: bool,
}

/// `mailbox show`: the mailbox, its certificates (newest first) and its keys.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct MailboxDetail {
    #[serde(flatten)]
    pub mailbox: MailboxRow,
    #[schema(value_type = Vec<Object>)]
    pub certificates: Vec<CertificateHistory>,
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<KeyRow>,
    /// For a revoke-pending mailbox: when it becomes inactive.
    pub inactive_from: Option<i64>,
}

pub async fn show(ctx: &Ops<'_>, address: &str) -> Result<MailboxDetail, OpError> {
    let address = input::address(address)?;
    let mailbox = ctx.store.mailboxes().require(&address).await?;
    let keys = ctx.store.keys().for_mailbox(mailbox.id).await?;
    let signing = ctx
        .store
        .certificates()
        .signing(address.as_str(), crate::store::unix_now())
        .await?
        .map(|c| c.id);
    let certificates = ctx
        .store
        .certificates()
        .for_owner(address.as_str())
        .await?
        .into_iter()
        .filter(|c| {
            matches!(
                c.source,
                CertificateSource::Issued | CertificateSource::Uploaded
            )
        })
        .map(|c| CertificateHistory {
            key: c
                .key_id
                .and_then(|id| keys.iter().find(|k| k.id == id).cloned()),
            signing: Some(c.id) == signing && mailbox.state == MailboxState::Active,
            certificate: c,
        })
        .collect();
    let hold = i64::from(ctx.settings.config.lifecycle.revoke_pending_days) * 86_400;
    Ok(MailboxDetail {
        inactive_from: (mailbox.state == MailboxState::RevokePending)
            .then(|| mailbox.revoke_requested_at.map(|at| at + hold))
            .flatten(),
        mailbox,
        certificates,
        keys,
    })
}

/// Refuses a mailbox of a domain without a next hop: mail to it could not be delivered.
pub(crate) async fn require_inbound_route(app: &App, mailbox: &MailboxRow) -> Result<(), OpError> {
    let domain = input::domain(&mailbox.domain)?;
    let route = app.store.domains().get(&domain).await?;
    if route.is_some_and(|d| d.next_hop.is_none()) {
        return Err(OpError::Invalid(format!(
            "domain {domain} has no inbound route (next hop); set one with `smimegate domain add {domain} --next-hop HOST:PORT`"
        )));
    }
    Ok(())
}

/// A new key for `address` in the token and its certificate from `ca`, both recorded.
/// When issuing fails the key is recorded as retired. Activation's step now, renewal's
/// later.
pub(crate) async fn issue(
    app: &App,
    address: &Address,
    mailbox_id: i64,
    algorithm: KeyAlgorithm,
    ca: &CaIdentity,
) -> Result<StoredCertificate, OpError> {
    let label = address.to_string();
    let key = app
        .hsm
        .call_keygen(move |hsm| hsm.generate_key_pair(algorithm, KeyRole::Mailbox, &label))
        .await?;
    let key_row = app
        .store
        .keys()
        .insert(&key.id, algorithm, KeyPurpose::Mailbox, Some(mailbox_id))
        .await?;
    let ca_config = app.settings.config.ca.clone();
    let urls = crate::pki::urls::PkiUrls::new(&ca_config.public_url)
        .map_err(|e| OpError::Invalid(format!("[ca].public_url: {e}")))?;
    let (ca, address_for_task) = (ca.clone(), address.clone());
    let issued = app
        .hsm
        .call("issue certificate", move |hsm| {
            ca::issue_published_mailbox_certificate(
                hsm,
                &ca,
                &address_for_task,
                &key,
                ca_config.mailbox_validity_days,
                &urls,
            )
            .map_err(|e| match e {
                IssueError::Token(h) => h,
                other => HsmError::Encoding(other.to_string()),
            })
        })
        .await;
    let cert = match issued {
        Ok(cert) => cert,
        Err(e) => {
            app.store.keys().retire(key_row.id).await?;
            return Err(e.into());
        }
    };
    let stored = app
        .store
        .certificates()
        .insert(
            &cert,
            CertificateSource::Issued,
            Some(address.as_str()),
            Some(key_row.id),
        )
        .await?;
    Ok(stored)
}

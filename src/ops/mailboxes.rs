//! Managed mailboxes: add, remove, list, and activate (a key in the token and a
//! certificate from the built-in CA). States: `inactive → pending → active`
//! (`revoke-pending` comes with deactivation).

use super::{Actor, OpError, Ops, audit, input};
use crate::app::App;
use crate::hsm::{HsmError, KeyAlgorithm, KeyRole};
use crate::pki::address::Address;
use crate::pki::ca::{self, CaIdentity, IssueError};
use crate::store::{CertificateSource, KeyPurpose, MailboxRow, MailboxState, StoredCertificate};

/// A mailbox just added.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AddedMailbox {
    #[serde(flatten)]
    pub mailbox: MailboxRow,
    /// Its domain accepts any local part: only listed mailboxes can be activated.
    pub wildcard_domain: bool,
}

/// The mailboxes and the licence seats they hold.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MailboxList {
    pub mailboxes: Vec<MailboxRow>,
    /// Mailboxes in a state that holds a seat (pending, active, revoke-pending).
    pub seats_in_use: i64,
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
    Ok(MailboxList {
        mailboxes: ctx.store.mailboxes().list().await?,
        seats_in_use: ctx.store.mailboxes().seats_in_use().await?,
    })
}

/// Generates the mailbox's key in the token and issues its certificate:
/// `inactive → pending → active`. Refuses a mailbox whose domain has no inbound route.
/// On failure the mailbox returns to `inactive` and a key already generated is
/// recorded as retired (it stays traceable).
pub async fn activate(app: &App, actor: &Actor, input: Activate) -> Result<Activated, OpError> {
    let address = input::address(&input.address)?;
    let mailbox = app.store.mailboxes().require(&address).await?;
    require_inbound_route(app, &mailbox).await?;
    // (A mailbox not inactive is refused by the transition below, with its reason.)
    if !input.skip_mx_check && mailbox.state == MailboxState::Inactive {
        super::domains::require_mx(&app.ops(), &mailbox.domain).await?;
    }
    let ca = app.ca().await?;
    let algorithm = input.key.unwrap_or(app.settings.config.ca.mailbox_key);
    let mailboxes = app.store.mailboxes();
    mailboxes
        .transition(&address, MailboxState::Inactive, MailboxState::Pending)
        .await?;
    let certificate = match issue(app, &address, mailbox.id, algorithm, &ca).await {
        Ok(certificate) => certificate,
        Err(e) => {
            tracing::error!(%address, error = %e, "activation failed");
            if let Err(revert) = mailboxes
                .transition(&address, MailboxState::Pending, MailboxState::Inactive)
                .await
            {
                tracing::error!(%address, error = %revert, "could not return mailbox to inactive");
            }
            return Err(e);
        }
    };
    mailboxes
        .transition(&address, MailboxState::Pending, MailboxState::Active)
        .await?;
    let detail = format!(
        "{algorithm}; certificate serial {}",
        certificate.record.serial
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

/// Refuses a mailbox of a domain without a next hop: mail to it could not be delivered.
async fn require_inbound_route(app: &App, mailbox: &MailboxRow) -> Result<(), OpError> {
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

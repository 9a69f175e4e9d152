//! `smimegate mailbox …`: managed mailboxes and their activation (`ops::mailboxes`).

use anyhow::Result;
use clap::Subcommand;

use super::certs::format_time;
use super::exit_status_1;
use crate::app::{self, App};
use crate::config::Settings;
use crate::hsm::KeyAlgorithm;
use crate::ops::mailboxes::{self, ActivateMany, ActivationOutcome};
use crate::ops::{Actor, Ops, input};

#[derive(Subcommand, Debug)]
pub enum MailboxCommand {
    /// Add a known mailbox of a managed domain.
    Add { address: String },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove an inactive mailbox (its keys stay in the token for old mail).
    Remove { address: String },
    /// The mailbox, the history of its certificates and keys, and when a
    /// revoke-pending mailbox becomes inactive.
    Show {
        address: String,
        #[arg(long)]
        json: bool,
    },
    /// Generate each mailbox's key in the token and issue its certificate (one seat
    /// each). Stops when no seat is left and says which were activated.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["addresses", "domain", "all"])))]
    Activate {
        /// The mailboxes to activate.
        addresses: Vec<String>,
        /// Every known mailbox of this domain.
        #[arg(long)]
        domain: Option<String>,
        /// Every known mailbox of every domain with an inbound route.
        #[arg(long)]
        all: bool,
        /// Key type; default from [ca].mailbox_key.
        #[arg(long, value_enum)]
        key: Option<KeyAlgorithm>,
        /// Activate even when the domain's MX does not point at [gateway].hostname.
        #[arg(long)]
        skip_mx_check: bool,
        #[arg(long)]
        json: bool,
    },
    /// Revoke each mailbox's certificate now (listed in the CRL at once); the mailbox
    /// is revoke-pending, holding its seat for [lifecycle].revoke_pending_days, then
    /// inactive. Its keys stay in the token: mail encrypted to it still decrypts.
    Deactivate {
        #[arg(required = true)]
        addresses: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Renew a mailbox's certificate now (new key in the token; older keys keep
    /// decrypting). The lifecycle job does this by itself before expiry.
    Renew { address: String },
    /// Import an existing identity: a PKCS#12 file (key into the token, never
    /// extractable), or the certificate an external CA issued for `mailbox csr`.
    Import {
        address: String,
        /// PKCS#12 file (.p12/.pfx); its password is prompted for (no echo), read as
        /// one line of stdin, or read from --password-file.
        #[arg(
            long,
            required_unless_present = "certificate",
            conflicts_with = "certificate"
        )]
        pkcs12: Option<std::path::PathBuf>,
        /// The certificate (PEM or DER; extra PEM blocks: its chain) for the key
        /// `mailbox csr` made.
        #[arg(long)]
        certificate: Option<std::path::PathBuf>,
        /// A file holding the PKCS#12 password (mode 0600 or stricter; one line).
        #[arg(long, requires = "pkcs12")]
        password_file: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Make a key in the token and print a certificate request (PEM) for an
    /// external CA; the mailbox is pending until `mailbox import --certificate`.
    Csr {
        address: String,
        /// Key type; default from [ca].mailbox_key.
        #[arg(long, value_enum)]
        key: Option<KeyAlgorithm>,
    },
}

pub async fn run(cmd: MailboxCommand, settings: Settings) -> Result<()> {
    match cmd {
        MailboxCommand::Add { address } => add(&settings, &address).await.map_err(exit_status_1),
        MailboxCommand::List { json } => list(&settings, json).await.map_err(exit_status_1),
        MailboxCommand::Remove { address } => {
            remove(&settings, &address).await.map_err(exit_status_1)
        }
        MailboxCommand::Show { address, json } => show(&settings, &address, json).await,
        MailboxCommand::Activate {
            addresses,
            domain,
            all,
            key,
            skip_mx_check,
            json,
        } => {
            let request = ActivateMany {
                addresses,
                domain,
                all,
                key,
                skip_mx_check,
            };
            activate(settings, request, json)
                .await
                .map_err(exit_status_1)
        }
        MailboxCommand::Deactivate { addresses, json } => {
            deactivate(settings, &addresses, json).await
        }
        MailboxCommand::Renew { address } => renew(settings, &address).await,
        MailboxCommand::Import {
            address,
            pkcs12,
            certificate,
            password_file,
            json,
        } => {
            super::identities::import(settings, address, pkcs12, certificate, password_file, json)
                .await
        }
        MailboxCommand::Csr { address, key } => {
            super::identities::csr(settings, address, key).await
        }
    }
}

async fn add(settings: &Settings, address: &str) -> Result<()> {
    let store = app::open_store(settings).await?;
    let added = mailboxes::add(&Ops::new(settings, &store), &Actor::cli(), address).await?;
    let mailbox = &added.mailbox;
    outln!(
        "added mailbox {} ({})",
        mailbox.address,
        mailbox.state.as_str()
    );
    if added.wildcard_domain {
        outln!(
            "note: {} is wildcard-routed; listed mailboxes can be activated",
            mailbox.domain
        );
    }
    Ok(())
}

async fn list(settings: &Settings, json: bool) -> Result<()> {
    let store = app::open_store(settings).await?;
    let list = mailboxes::list(&Ops::new(settings, &store)).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&list.mailboxes)?);
        return Ok(());
    }
    outln!(
        "{:<40} {:<15} {:<9} CERTIFICATE EXPIRES",
        "MAILBOX",
        "STATE",
        "SOURCE"
    );
    for m in &list.mailboxes {
        outln!(
            "{:<40} {:<15} {:<9} {}",
            m.address,
            m.state.as_str(),
            m.source.map(|s| s.as_str()).unwrap_or("-"),
            m.certificate_expires
                .map(format_time)
                .unwrap_or_else(|| "-".into())
        );
    }
    outln!(
        "{} mailbox(es), {} holding a seat",
        list.mailboxes.len(),
        list.seats_in_use
    );
    Ok(())
}

async fn show(settings: &Settings, address: &str, json: bool) -> Result<()> {
    let store = app::open_store(settings).await?;
    let detail = mailboxes::show(&Ops::new(settings, &store), address).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&detail)?);
        return Ok(());
    }
    outln!("mailbox  {}", detail.mailbox.address);
    outln!(
        "state    {} since {}",
        detail.mailbox.state.as_str(),
        format_time(detail.mailbox.state_changed_at)
    );
    if let Some(at) = detail.inactive_from {
        outln!("inactive from {} (its seat is free then)", format_time(at));
    }
    outln!("certificates (newest first):");
    if detail.certificates.is_empty() {
        outln!("  none");
    }
    for c in &detail.certificates {
        let status = if c.signing {
            "signing".to_string()
        } else if let Some(at) = c.certificate.revoked_at {
            format!("revoked {}", format_time(at))
        } else if c.certificate.record.not_after <= crate::store::unix_now() {
            "expired".to_string()
        } else {
            "superseded".to_string()
        };
        let key = c
            .key
            .as_ref()
            .map(|k| {
                let use_ = if k.retired_at.is_some() {
                    "decrypt only"
                } else {
                    "sign+decrypt"
                };
                format!("key {} {} ({use_})", k.cka_id, k.algorithm)
            })
            .unwrap_or_else(|| "no key".into());
        outln!(
            "  serial {}  {}  {} .. {}  {}  {}",
            c.certificate.record.serial,
            c.certificate.source.as_str(),
            format_time(c.certificate.record.not_before),
            format_time(c.certificate.record.not_after),
            status,
            key
        );
    }
    outln!(
        "keys in the token: {} ({} retired from signing, all decrypt)",
        detail.keys.len(),
        detail
            .keys
            .iter()
            .filter(|k| k.retired_at.is_some())
            .count()
    );
    Ok(())
}

async fn remove(settings: &Settings, address: &str) -> Result<()> {
    let store = app::open_store(settings).await?;
    let removed = mailboxes::remove(&Ops::new(settings, &store), &Actor::cli(), address).await?;
    outln!("removed mailbox {}", removed.address);
    Ok(())
}

async fn activate(settings: Settings, request: ActivateMany, json: bool) -> Result<()> {
    // A mistyped address is refused before the token is opened.
    for address in &request.addresses {
        input::address(address)?;
    }
    let app = App::open(settings).await?;
    let report = mailboxes::activate_many(&app, &Actor::cli(), request).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for entry in &report.mailboxes {
            match &entry.outcome {
                ActivationOutcome::Activated { serial, not_after } => outln!(
                    "activated {}: certificate serial {serial} valid until {}, key in token '{}'",
                    entry.address,
                    format_time(*not_after),
                    app.hsm.token_label()
                ),
                ActivationOutcome::Skipped { state } => {
                    outln!("skipped {}: {} already", entry.address, state.as_str())
                }
                ActivationOutcome::Failed { reason } => {
                    outln!("failed {}: {reason}", entry.address)
                }
                ActivationOutcome::NotAttempted => {
                    outln!("not activated {}: stopped before it", entry.address)
                }
            }
        }
    }
    if let Some(why) = &report.stopped {
        anyhow::bail!(
            "stopped after activating {} mailbox(es): {why}",
            report.activated()
        );
    }
    if !report.complete() {
        anyhow::bail!(
            "{} mailbox(es) activated; the others failed (see above)",
            report.activated()
        );
    }
    Ok(())
}

async fn deactivate(settings: Settings, addresses: &[String], json: bool) -> Result<()> {
    for address in addresses {
        input::address(address)?;
    }
    let app = App::open(settings).await?;
    let report = mailboxes::deactivate(&app, &Actor::cli(), addresses).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for m in &report.mailboxes {
            let revoked = if m.revoked.is_empty() {
                "no certificate to revoke".to_string()
            } else {
                format!("revoked certificate(s) {}", m.revoked.join(", "))
            };
            outln!(
                "deactivated {}: {revoked}; revoke-pending until {}, then inactive",
                m.address,
                format_time(m.inactive_from)
            );
        }
    }
    if let Some(e) = &report.crl_error {
        eprintln!(
            "smimegate: warning: the CRL was not re-signed ({e}); the lifecycle job signs it at its next run"
        );
    }
    Ok(())
}

async fn renew(settings: Settings, address: &str) -> Result<()> {
    input::address(address)?;
    let app = App::open(settings).await?;
    let renewed = crate::ops::lifecycle::renew(&app, &Actor::cli(), address).await?;
    outln!(
        "renewed {}: certificate serial {} valid until {}{}",
        renewed.address,
        renewed.certificate.record.serial,
        format_time(renewed.certificate.record.not_after),
        renewed
            .previous_serial
            .map(|s| format!(" (replaces {s}; its key keeps decrypting)"))
            .unwrap_or_default()
    );
    Ok(())
}

//! `smimegate mailbox …`: managed mailboxes and their activation (`ops::mailboxes`).

use anyhow::Result;
use clap::Subcommand;

use super::certs::format_time;
use super::exit_status_1;
use crate::app::{self, App};
use crate::config::Settings;
use crate::hsm::KeyAlgorithm;
use crate::ops::mailboxes::{self, Activate};
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
    /// Generate the mailbox key in the token and issue its certificate.
    Activate {
        address: String,
        /// Key type; default from [ca].mailbox_key.
        #[arg(long, value_enum)]
        key: Option<KeyAlgorithm>,
        /// Activate even when the domain's MX does not point at [gateway].hostname.
        #[arg(long)]
        skip_mx_check: bool,
    },
}

pub async fn run(cmd: MailboxCommand, settings: Settings) -> Result<()> {
    match cmd {
        MailboxCommand::Add { address } => add(&settings, &address).await.map_err(exit_status_1),
        MailboxCommand::List { json } => list(&settings, json).await.map_err(exit_status_1),
        MailboxCommand::Remove { address } => {
            remove(&settings, &address).await.map_err(exit_status_1)
        }
        MailboxCommand::Activate {
            address,
            key,
            skip_mx_check,
        } => activate(
            settings,
            Activate {
                address,
                key,
                skip_mx_check,
            },
        )
        .await
        .map_err(exit_status_1),
    }
}

async fn add(settings: &Settings, address: &str) -> Result<()> {
    let store = app::open_store(settings).await?;
    let added = mailboxes::add(&Ops::new(settings, &store), &Actor::cli(), address).await?;
    let mailbox = &added.mailbox;
    println!(
        "added mailbox {} ({})",
        mailbox.address,
        mailbox.state.as_str()
    );
    if added.wildcard_domain {
        println!(
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
        println!("{}", serde_json::to_string_pretty(&list.mailboxes)?);
        return Ok(());
    }
    println!("{:<48} STATE", "MAILBOX");
    for m in &list.mailboxes {
        println!("{:<48} {}", m.address, m.state.as_str());
    }
    println!(
        "{} mailbox(es), {} holding a seat",
        list.mailboxes.len(),
        list.seats_in_use
    );
    Ok(())
}

async fn remove(settings: &Settings, address: &str) -> Result<()> {
    let store = app::open_store(settings).await?;
    let removed = mailboxes::remove(&Ops::new(settings, &store), &Actor::cli(), address).await?;
    println!("removed mailbox {}", removed.address);
    Ok(())
}

async fn activate(settings: Settings, request: Activate) -> Result<()> {
    // A mistyped address is refused before the token is opened.
    input::address(&request.address)?;
    let app = App::open(settings).await?;
    let done = mailboxes::activate(&app, &Actor::cli(), request).await?;
    println!(
        "activated {}: certificate serial {} valid until {}, key in token '{}'",
        done.address,
        done.certificate.record.serial,
        format_time(done.certificate.record.not_after),
        done.token
    );
    Ok(())
}

//! `smimegate domain …`: managed domains and their inbound routes (`ops::domains`).

use anyhow::Result;
use clap::Subcommand;

use super::exit_status_1;
use crate::app;
use crate::config::Settings;
use crate::ops::domains::{self, AddDomain};
use crate::ops::{Actor, Ops};
use crate::store::DomainRow;

#[derive(Subcommand, Debug)]
pub enum DomainCommand {
    /// Add a managed domain with its inbound route.
    Add {
        domain: String,
        /// Internal mail server for this domain.
        #[arg(long, value_name = "HOST:PORT")]
        next_hop: Option<String>,
        /// Accept any local part (such addresses cannot be activated for S/MIME).
        #[arg(long)]
        wildcard: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a domain that has no mailboxes left.
    Remove { domain: String },
}

pub async fn run(cmd: DomainCommand, settings: &Settings) -> Result<()> {
    let store = app::open_store(settings).await?;
    let ctx = Ops::new(settings, &store);
    match cmd {
        DomainCommand::Add {
            domain,
            next_hop,
            wildcard,
        } => {
            let input = AddDomain {
                name: domain,
                next_hop,
                wildcard,
            };
            add(&ctx, input).await.map_err(exit_status_1)
        }
        DomainCommand::List { json } => list(&ctx, json).await.map_err(exit_status_1),
        DomainCommand::Remove { domain } => remove(&ctx, &domain).await.map_err(exit_status_1),
    }
}

async fn add(ctx: &Ops<'_>, input: AddDomain) -> Result<()> {
    let row = domains::add(ctx, &Actor::cli(), input).await?;
    println!(
        "added domain {} (next hop {}, {})",
        row.name,
        row.next_hop.as_deref().unwrap_or("none"),
        if row.wildcard {
            "wildcard"
        } else {
            "known mailboxes only"
        }
    );
    Ok(())
}

async fn list(ctx: &Ops<'_>, json: bool) -> Result<()> {
    let rows = domains::list(ctx).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&rows);
    }
    Ok(())
}

async fn remove(ctx: &Ops<'_>, domain: &str) -> Result<()> {
    let removed = domains::remove(ctx, &Actor::cli(), domain).await?;
    println!("removed domain {}", removed.name);
    Ok(())
}

fn print_table(rows: &[DomainRow]) {
    println!("{:<40} {:<28} ROUTE", "DOMAIN", "NEXT HOP");
    for d in rows {
        println!(
            "{:<40} {:<28} {}",
            d.name,
            d.next_hop.as_deref().unwrap_or("-"),
            if d.wildcard {
                "wildcard"
            } else {
                "known mailboxes"
            }
        );
    }
}

//! `smimegate domain …`: managed domains and their inbound routes (`ops::domains`).

use anyhow::Result;
use clap::Subcommand;

use super::exit_status_1;
use crate::app;
use crate::config::Settings;
use crate::ops::domains::{self, AddDomain, SetDomain};
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
    /// Change a domain's inbound route or wildcard flag.
    Set {
        domain: String,
        /// New internal mail server for this domain.
        #[arg(long, value_name = "HOST:PORT", conflicts_with = "no_next_hop")]
        next_hop: Option<String>,
        /// Remove the inbound route (refused while a mailbox holds a certificate).
        #[arg(long)]
        no_next_hop: bool,
        /// Accept any local part.
        #[arg(long, conflicts_with = "no_wildcard")]
        wildcard: bool,
        /// Accept known mailboxes only.
        #[arg(long)]
        no_wildcard: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Check that the domain's MX points at `[gateway].hostname` (exit status 1 when
    /// it does not).
    Check {
        domain: String,
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
        DomainCommand::Set {
            domain,
            next_hop,
            no_next_hop,
            wildcard,
            no_wildcard,
        } => {
            let input = SetDomain {
                name: domain,
                next_hop,
                clear_next_hop: no_next_hop,
                wildcard: match (wildcard, no_wildcard) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
            };
            set(&ctx, input).await.map_err(exit_status_1)
        }
        DomainCommand::Check { domain, json } => {
            check(&ctx, &domain, json).await.map_err(exit_status_1)
        }
        DomainCommand::List { json } => list(&ctx, json).await.map_err(exit_status_1),
        DomainCommand::Remove { domain } => remove(&ctx, &domain).await.map_err(exit_status_1),
    }
}

async fn add(ctx: &Ops<'_>, input: AddDomain) -> Result<()> {
    let row = domains::add(ctx, &Actor::cli(), input).await?;
    outln!(
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

async fn set(ctx: &Ops<'_>, input: SetDomain) -> Result<()> {
    let change = domains::set(ctx, &Actor::cli(), input).await?;
    let describe = |row: &DomainRow| {
        format!(
            "next hop {}, {}",
            row.next_hop.as_deref().unwrap_or("none"),
            if row.wildcard {
                "wildcard"
            } else {
                "known mailboxes only"
            }
        )
    };
    if change.changed() {
        outln!(
            "changed domain {}: {} (was {})",
            change.after.name,
            describe(&change.after),
            describe(&change.before)
        );
    } else {
        outln!(
            "domain {} unchanged: {}",
            change.after.name,
            describe(&change.after)
        );
    }
    Ok(())
}

async fn check(ctx: &Ops<'_>, domain: &str, json: bool) -> Result<()> {
    let report = domains::check(ctx, domain).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for mx in &report.mx {
            outln!(
                "MX {:<5} {:<40} {:<4} {}",
                mx.preference,
                mx.exchange,
                if mx.points_here { "here" } else { "-" },
                mx.addresses
                    .iter()
                    .map(std::net::IpAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }
    if report.ok() {
        if !json {
            outln!("{}", report.message);
        }
        Ok(())
    } else {
        anyhow::bail!("{}", report.message)
    }
}

async fn list(ctx: &Ops<'_>, json: bool) -> Result<()> {
    let rows = domains::list(ctx).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&rows);
    }
    Ok(())
}

async fn remove(ctx: &Ops<'_>, domain: &str) -> Result<()> {
    let removed = domains::remove(ctx, &Actor::cli(), domain).await?;
    outln!("removed domain {}", removed.name);
    Ok(())
}

fn print_table(rows: &[DomainRow]) {
    outln!("{:<40} {:<28} ROUTE", "DOMAIN", "NEXT HOP");
    for d in rows {
        outln!(
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

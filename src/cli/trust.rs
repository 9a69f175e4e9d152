//! `smimegate trust …`: trust anchors for verifying partners' signatures
//! (`ops::trust`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

use super::certs::format_time;
use crate::app;
use crate::config::Settings;
use crate::ops::trust::{self, AddTrust};
use crate::ops::{Actor, Ops};

#[derive(Subcommand, Debug)]
pub enum TrustCommand {
    /// Add every certificate of a PEM file as a trust anchor (a partner's CA).
    Add {
        file: PathBuf,
        /// A mail domain the anchor may vouch for (repeat for several; `.example.org`
        /// for every subdomain). Default: any domain except the managed ones.
        #[arg(long = "domain")]
        domains: Vec<String>,
    },
    /// Remove a trust anchor by its SHA-256 fingerprint (as `trust list` shows it).
    Remove { fingerprint: String },
    /// List the trust anchors and the domains each vouches for.
    List,
}

pub async fn run(cmd: TrustCommand, settings: &Settings) -> Result<()> {
    let store = app::open_store(settings).await?;
    let ctx = Ops::new(settings, &store);
    match cmd {
        TrustCommand::Add { file, domains } => add(&ctx, file, domains).await,
        TrustCommand::Remove { fingerprint } => {
            let row = trust::remove(&ctx, &Actor::cli(), &fingerprint).await?;
            outln!(
                "removed trust anchor {} (sha-256 {})",
                row.certificate.record.subject,
                row.certificate.record.fingerprint_sha256
            );
            Ok(())
        }
        TrustCommand::List => {
            for row in trust::list(&ctx).await? {
                outln!(
                    "{}  {}  until {}  vouches for {}",
                    row.certificate.record.fingerprint_sha256,
                    row.certificate.record.subject,
                    format_time(row.certificate.record.not_after),
                    trust::describe(&row.domains)
                );
            }
            Ok(())
        }
    }
}

async fn add(ctx: &Ops<'_>, file: PathBuf, domains: Vec<String>) -> Result<()> {
    let pem = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let added = trust::add(ctx, &Actor::cli(), AddTrust { pem, domains })
        .await
        .with_context(|| format!("trust add {}", file.display()))?;
    for row in added {
        outln!(
            "trusted {} (sha-256 {}) for {}",
            row.certificate.record.subject,
            row.certificate.record.fingerprint_sha256,
            trust::describe(&row.domains)
        );
    }
    Ok(())
}

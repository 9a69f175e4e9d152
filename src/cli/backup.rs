//! `smimegate backup …`: the database and configuration in one archive, and back
//! (`ops::backup`). Never keys, PINs or token files.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::app;
use crate::config::Settings;
use crate::ops::backup::{self, BackupSummary};
use crate::ops::{Actor, Ops};

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Write a consistent snapshot of the database and the configuration to FILE
    /// (mode 0600; a new file). The token's keys are not in it: back the token up
    /// as its kind says (docs/operations.md).
    Create {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Replace the database and the configuration with FILE's. The gateway must be
    /// stopped, and the token present.
    Restore {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: BackupCommand, settings: &Settings) -> Result<()> {
    let (verb, summary, json) = match cmd {
        BackupCommand::Create { file, json } => {
            let store = app::open_store(settings).await?;
            let summary = backup::create(&Ops::new(settings, &store), &Actor::cli(), &file).await;
            store.close().await;
            ("backup written to", summary?, json)
        }
        BackupCommand::Restore { file, json } => (
            "restored from",
            backup::restore(settings, &Actor::cli(), &file).await?,
            json,
        ),
    };
    print(verb, &summary, json)
}

fn print(verb: &str, s: &BackupSummary, json: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    let m = &s.manifest;
    outln!(
        "{verb} {}: {:?} database of schema {} ({} bytes) and the configuration, made {} on {} by smimegate {}",
        s.file.display(),
        m.backend,
        m.schema,
        s.database_bytes,
        m.created_at,
        m.node,
        m.smimegate
    );
    Ok(())
}

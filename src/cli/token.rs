//! `smimegate token status|custody|bench`.

use anyhow::{Result, bail};

use super::TokenCommand;
use crate::app;
use crate::config::Settings;

pub async fn run(cmd: TokenCommand, settings: Settings) -> Result<()> {
    let hsm = app::open_hsm(&settings).await?;
    match cmd {
        TokenCommand::Status { json } => {
            let health = hsm.call("health", |h| h.health()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&health)?);
                return Ok(());
            }
            println!("module:       {}", health.module);
            println!(
                "library:      {} {}",
                health.library, health.library_version
            );
            println!("slot:         {}", health.slot);
            println!(
                "token:        {} ({} {}, serial {})",
                health.label, health.manufacturer, health.model, health.serial
            );
            println!(
                "logged in:    {}",
                if health.logged_in { "yes" } else { "no" }
            );
            println!(
                "sessions:     {} in use, {} idle, {} open of {} allowed",
                health.sessions.in_use,
                health.sessions.idle,
                health.sessions.open,
                health.sessions.capacity
            );
            if health.pin_locked {
                println!("PIN:          LOCKED");
            } else if health.pin_count_low {
                println!("PIN:          a wrong PIN was entered recently");
            }
            println!("mechanisms:");
            for m in &health.mechanisms {
                println!(
                    "  {:<28} {:<8} {}",
                    m.name,
                    if m.offered { "offered" } else { "MISSING" },
                    m.used_for
                );
            }
        }
        TokenCommand::Custody { json } => {
            let reports = hsm.call("custody", |h| h.custody_reports()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                for r in &reports {
                    println!(
                        "{} {:<32} sensitive={} always_sensitive={} extractable={} never_extractable={} local={}",
                        r.id,
                        r.label,
                        r.sensitive,
                        r.always_sensitive,
                        r.extractable,
                        r.never_extractable,
                        r.local
                    );
                    println!(
                        "    read secret: {:?}; wrap: {:?}; set extractable: {:?}; clear sensitive: {:?}",
                        r.read_secret, r.wrap, r.set_extractable, r.clear_sensitive
                    );
                }
                println!("{} key(s) checked", reports.len());
            }
            let exposed: Vec<&str> = reports
                .iter()
                .filter(|r| !r.key_cannot_leave())
                .map(|r| r.id.as_str())
                .collect();
            if !exposed.is_empty() {
                bail!(
                    "key(s) not protected against export: {}",
                    exposed.join(", ")
                );
            }
        }
        TokenCommand::Bench(args) => super::bench::run(hsm, &settings, args).await?,
    }
    Ok(())
}

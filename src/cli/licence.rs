//! `smimegate licence …`: the seat licence (`ops::licence`).

use anyhow::Result;
use clap::Subcommand;

use crate::app;
use crate::config::Settings;
use crate::ops::licence::{self, SetLicence};
use crate::ops::{Actor, Ops};

#[derive(Subcommand, Debug)]
pub enum LicenceCommand {
    /// Set the seats (S/MIME seats may not exceed mail-security seats).
    Set {
        #[arg(long)]
        smime_seats: i64,
        #[arg(long)]
        mail_security_seats: i64,
        /// Last day of the licence, YYYY-MM-DD (UTC).
        #[arg(long)]
        valid_until: Option<String>,
    },
    /// The licence and the seats used and free, by state and source.
    Show {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: LicenceCommand, settings: &Settings) -> Result<()> {
    let store = app::open_store(settings).await?;
    let ctx = Ops::new(settings, &store);
    match cmd {
        LicenceCommand::Set {
            smime_seats,
            mail_security_seats,
            valid_until,
        } => {
            let row = licence::set(
                &ctx,
                &Actor::cli(),
                SetLicence {
                    smime_seats,
                    mail_security_seats,
                    valid_until,
                },
            )
            .await?;
            outln!(
                "licence: {} S/MIME seats, {} mail-security seats, {}",
                row.smime_seats,
                row.mail_security_seats,
                row.valid_until
                    .map(|t| format!("valid until {}", licence::date(t)))
                    .unwrap_or_else(|| "no end date".into())
            );
        }
        LicenceCommand::Show { json } => {
            let status = licence::show(&ctx).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(());
            }
            match &status.licence {
                None => outln!("licence: none set (no seat limit until `smimegate licence set`)"),
                Some(l) => outln!(
                    "licence: {} S/MIME seats, {} mail-security seats, {}{}",
                    l.smime_seats,
                    l.mail_security_seats,
                    l.valid_until
                        .map(|t| format!("valid until {}", licence::date(t)))
                        .unwrap_or_else(|| "no end date".into()),
                    if status.expired {
                        " (ENDED: no new seats)"
                    } else {
                        ""
                    }
                ),
            }
            let u = &status.usage;
            outln!(
                "S/MIME seats used: {} (pending {}, active issued {}, active uploaded {}, revoke-pending {}); free: {}",
                status.smime_seats_used,
                u.pending,
                u.active_issued,
                u.active_uploaded,
                u.revoke_pending,
                status
                    .smime_seats_free
                    .map(|f| f.to_string())
                    .unwrap_or_else(|| "no limit".into())
            );
            outln!(
                "mail-security: {} known mailbox(es){}",
                status.mail_security_used,
                status
                    .licence
                    .as_ref()
                    .map(|l| format!(" of {} seats", l.mail_security_seats))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

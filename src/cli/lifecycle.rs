//! `smimegate lifecycle run`: one run of the certificate lifecycle job (for cron; the
//! gateway's `serve` runs it by itself).

use anyhow::Result;
use clap::Subcommand;

use super::certs::format_time;
use crate::app::App;
use crate::config::Settings;
use crate::ops::Actor;
use crate::ops::lifecycle;

#[derive(Subcommand, Debug)]
pub enum LifecycleCommand {
    /// Renew certificates due, end revoke-pending periods, re-sign the CRL when due.
    Run {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: LifecycleCommand, settings: Settings) -> Result<()> {
    let LifecycleCommand::Run { json } = cmd;
    let app = App::open(settings).await?;
    let report = lifecycle::run(&app, &Actor::cli(), std::time::SystemTime::now()).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.skipped {
        outln!("another node is running the lifecycle job; nothing done");
    } else {
        for address in &report.released {
            outln!("inactive {address}: revoke-pending period over, seat free");
        }
        for r in &report.renewed {
            outln!(
                "renewed {}: certificate serial {} valid until {}{}",
                r.address,
                r.certificate.record.serial,
                format_time(r.certificate.record.not_after),
                r.previous_serial
                    .as_deref()
                    .map(|s| format!(" (replaces {s}; its key keeps decrypting)"))
                    .unwrap_or_default()
            );
        }
        for u in &report.expiring_uploads {
            outln!(
                "warning {}: uploaded certificate {} expires {}; import its successor",
                u.address,
                u.serial,
                format_time(u.not_after)
            );
        }
        for crl in &report.crls_signed {
            outln!("signed CRL number {} of {}", crl.crl_number, crl.ca);
        }
        for (address, why) in &report.failed {
            outln!("failed {address}: {why}");
        }
        for warning in &report.warnings {
            outln!("warning: {warning}");
        }
        if report.message_log_purged > 0 {
            outln!(
                "deleted {} message-log rows past [log].keep_days",
                report.message_log_purged
            );
        }
        if report.released.is_empty()
            && report.renewed.is_empty()
            && report.expiring_uploads.is_empty()
            && report.crls_signed.is_empty()
            && report.failed.is_empty()
            && report.warnings.is_empty()
            && report.message_log_purged == 0
        {
            outln!("nothing due");
        }
    }
    if !report.failed.is_empty() {
        anyhow::bail!("{} renewal(s) failed", report.failed.len());
    }
    Ok(())
}

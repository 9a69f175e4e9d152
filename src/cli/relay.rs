//! `smimegate log`, `smarthost`, `network`: the message log and the relay settings
//! (`ops::relay_settings`).

use anyhow::Result;
use clap::{Args, Subcommand};

use super::exit_status_1;
use crate::app;
use crate::config::Settings;
use crate::ops::relay_settings::{self, AllowNetwork, Source};
use crate::ops::{Actor, Ops};
use crate::policy::Direction;
use crate::store::{LogFilter, LogStatus};

#[derive(Args, Debug)]
pub struct LogArgs {
    /// relayed, rejected or deferred.
    #[arg(long)]
    pub status: Option<String>,
    /// inbound or outbound.
    #[arg(long)]
    pub direction: Option<String>,
    /// Sender or recipient.
    #[arg(long)]
    pub address: Option<String>,
    /// Only since this time: RFC 3339 (2026-11-28T09:00:00Z), unix seconds, or an
    /// age such as 30m, 2h, 7d.
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum SmarthostCommand {
    /// Send outbound mail through HOST:PORT.
    Set { host_port: String },
    /// Show the smarthost in force.
    Show,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Allow a network (CIDR) to relay outbound mail through the gateway.
    Allow {
        cidr: String,
        #[arg(long, default_value = "")]
        comment: String,
        /// Clients on this network must still authenticate (SMTP AUTH) to submit.
        #[arg(long)]
        require_auth: bool,
    },
    /// List the allowed networks.
    List,
    /// Remove an allowed network.
    Remove { cidr: String },
}

pub async fn log(args: LogArgs, settings: &Settings) -> Result<()> {
    let store = app::open_store(settings).await?;
    let filter = LogFilter {
        status: match &args.status {
            Some(s) => Some(LogStatus::parse(s).ok_or_else(|| {
                anyhow::anyhow!("unknown status '{s}' (relayed, rejected, deferred)")
            })?),
            None => None,
        },
        direction: args
            .direction
            .as_deref()
            .map(Direction::parse)
            .transpose()?,
        address: args.address.clone(),
        since: args.since.as_deref().map(parse_since).transpose()?,
        limit: Some(args.limit),
    };
    let rows = store.message_log().list(&filter).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<8} {:<8} {:<30} {:<30} {:<28} REPLY",
        "TIME (UTC)", "DIR", "STATUS", "FROM", "TO", "ACTIONS"
    );
    for r in rows {
        let time = time::OffsetDateTime::from_unix_timestamp(r.received_at)
            .ok()
            .and_then(|t| {
                t.format(time::macros::format_description!(
                    "[year]-[month]-[day] [hour]:[minute]:[second]"
                ))
                .ok()
            })
            .unwrap_or_else(|| r.received_at.to_string());
        println!(
            "{:<20} {:<8} {:<8} {:<30} {:<30} {:<28} {}",
            time,
            r.direction.as_str(),
            r.status.as_str(),
            r.mail_from,
            r.rcpt_to.join(","),
            r.actions.join(","),
            r.smtp_reply.unwrap_or_default()
        );
    }
    Ok(())
}

/// Unix seconds from RFC 3339, plain seconds, or an age (30m, 2h, 7d).
fn parse_since(text: &str) -> Result<i64> {
    let text = text.trim();
    if let Ok(t) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    {
        return Ok(t.unix_timestamp());
    }
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number.parse().map_err(|_| {
        anyhow::anyhow!("--since '{text}': use RFC 3339, unix seconds, or 30m/2h/7d")
    })?;
    let unit_seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => anyhow::bail!("--since '{text}': unit must be s, m, h or d"),
    };
    Ok(crate::store::unix_now() - n.saturating_mul(unit_seconds))
}

pub async fn smarthost(cmd: SmarthostCommand, settings: &Settings) -> Result<()> {
    let store = app::open_store(settings).await?;
    let ctx = Ops::new(settings, &store);
    match cmd {
        SmarthostCommand::Set { host_port } => {
            set_smarthost(&ctx, &host_port).await.map_err(exit_status_1)
        }
        SmarthostCommand::Show => show_smarthost(&ctx).await.map_err(exit_status_1),
    }
}

async fn set_smarthost(ctx: &Ops<'_>, host_port: &str) -> Result<()> {
    let set = relay_settings::set_smarthost(ctx, &Actor::cli(), host_port).await?;
    println!(
        "outbound mail now goes to {}",
        set.host_port.as_deref().unwrap_or(host_port)
    );
    Ok(())
}

async fn show_smarthost(ctx: &Ops<'_>) -> Result<()> {
    let shown = relay_settings::smarthost(ctx).await?;
    match (shown.host_port, shown.source) {
        (Some(host), Some(Source::Configuration)) => {
            println!("{host} (from the configuration file)")
        }
        (Some(host), _) => println!("{host}"),
        (None, _) => println!("no smarthost: outbound mail is deferred until one is set"),
    }
    Ok(())
}

pub async fn network(cmd: NetworkCommand, settings: &Settings) -> Result<()> {
    let store = app::open_store(settings).await?;
    let ctx = Ops::new(settings, &store);
    match cmd {
        NetworkCommand::Allow {
            cidr,
            comment,
            require_auth,
        } => {
            let input = AllowNetwork {
                cidr,
                comment,
                require_auth,
            };
            allow_network(&ctx, input).await.map_err(exit_status_1)
        }
        NetworkCommand::List => list_networks(&ctx).await.map_err(exit_status_1),
        NetworkCommand::Remove { cidr } => remove_network(&ctx, &cidr).await.map_err(exit_status_1),
    }
}

async fn allow_network(ctx: &Ops<'_>, input: AllowNetwork) -> Result<()> {
    let allowed = relay_settings::allow_network(ctx, &Actor::cli(), input).await?;
    if allowed.require_auth {
        println!(
            "{} may now submit outbound mail as an authenticated submitter",
            allowed.cidr
        );
    } else {
        println!("{} may now relay outbound mail", allowed.cidr);
    }
    Ok(())
}

async fn list_networks(ctx: &Ops<'_>) -> Result<()> {
    for n in relay_settings::networks(ctx).await? {
        match n.source {
            Source::Database => {
                let auth = if n.require_auth {
                    "  (authentication required)"
                } else {
                    ""
                };
                println!("{:<40} {}{auth}", n.cidr, n.comment);
            }
            Source::Configuration => println!("{:<40} (from the configuration file)", n.cidr),
        }
    }
    Ok(())
}

async fn remove_network(ctx: &Ops<'_>, cidr: &str) -> Result<()> {
    let removed = relay_settings::remove_network(ctx, &Actor::cli(), cidr).await?;
    println!("{removed} removed");
    Ok(())
}

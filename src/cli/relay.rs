//! `smimegate log`, `smarthost`, `network`: the message log and the relay settings.

use anyhow::Result;
use clap::{Args, Subcommand};

use super::{audit, validate_host_port};
use crate::app::{self, Actor};
use crate::config::Settings;
use crate::policy::Direction;
use crate::relay::network::Network;
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
    match cmd {
        SmarthostCommand::Set { host_port } => {
            validate_host_port(&host_port)?;
            store.relay_settings().set_smarthost(&host_port).await?;
            audit(&store, &Actor::cli(), "smarthost.set", &host_port, "").await?;
            println!("outbound mail now goes to {host_port}");
        }
        SmarthostCommand::Show => match store.relay_settings().smarthost().await? {
            Some(host) => println!("{host}"),
            None if !settings.config.relay.smarthost.is_empty() => println!(
                "{} (from the configuration file)",
                settings.config.relay.smarthost
            ),
            None => println!("no smarthost: outbound mail is deferred until one is set"),
        },
    }
    Ok(())
}

pub async fn network(cmd: NetworkCommand, settings: &Settings) -> Result<()> {
    let store = app::open_store(settings).await?;
    match cmd {
        NetworkCommand::Allow {
            cidr,
            comment,
            require_auth,
        } => {
            let network = Network::parse(&cidr)?;
            store
                .relay_settings()
                .allow_network(&network.to_string(), &comment, require_auth)
                .await?;
            audit(
                &store,
                &Actor::cli(),
                "network.allow",
                &network.to_string(),
                &format!(
                    "{comment}{}",
                    if require_auth {
                        " (authentication required)"
                    } else {
                        ""
                    }
                ),
            )
            .await?;
            if require_auth {
                println!("{network} may now submit outbound mail as an authenticated submitter");
            } else {
                println!("{network} may now relay outbound mail");
            }
        }
        NetworkCommand::List => {
            for n in store.relay_settings().networks().await? {
                let auth = if n.require_auth {
                    "  (authentication required)"
                } else {
                    ""
                };
                println!("{:<40} {}{auth}", n.cidr, n.comment);
            }
            for n in &settings.config.relay.internal_networks {
                println!("{n:<40} (from the configuration file)");
            }
        }
        NetworkCommand::Remove { cidr } => {
            let network = Network::parse(&cidr)?;
            store
                .relay_settings()
                .remove_network(&network.to_string())
                .await?;
            audit(
                &store,
                &Actor::cli(),
                "network.remove",
                &network.to_string(),
                "",
            )
            .await?;
            println!("{network} removed");
        }
    }
    Ok(())
}

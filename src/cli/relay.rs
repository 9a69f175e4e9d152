//! `smimegate log`, `audit`, `smarthost`, `network`: the message log
//! (`ops::messages`), the audit log (`ops::audit`) and the relay settings
//! (`ops::relay_settings`).

use std::io::Write;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::exit_status_1;
use crate::app;
use crate::config::Settings;
use crate::ops::audit::AuditQuery;
use crate::ops::messages::{self, MessageQuery};
use crate::ops::relay_settings::{self, AllowNetwork, Source};
use crate::ops::{Actor, Ops};

#[derive(Args, Debug)]
pub struct LogArgs {
    /// Received at or after: RFC 3339 (2026-11-28T09:00:00Z), unix seconds, or an age
    /// such as 30m, 2h, 7d.
    #[arg(long, visible_alias = "since")]
    pub from: Option<String>,
    /// Received before (same forms).
    #[arg(long)]
    pub to: Option<String>,
    /// relayed, rejected or deferred.
    #[arg(long)]
    pub status: Option<String>,
    /// inbound or outbound.
    #[arg(long)]
    pub direction: Option<String>,
    /// signed, encrypted, decrypted, signature-valid, signature-invalid or none.
    #[arg(long)]
    pub crypto: Option<String>,
    /// Sender or recipient.
    #[arg(long)]
    pub address: Option<String>,
    /// Which page of --limit rows (1 is the newest).
    #[arg(long, default_value_t = 1)]
    pub page: i64,
    /// Rows per page (at most 500).
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
    /// JSON: the page, its total and whether more follow.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// CSV of every matching row (all pages, at most 100 000), for a spreadsheet.
    #[arg(long)]
    pub csv: bool,
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

/// `smimegate log`: one page of `ops::messages::search`, or its CSV.
pub async fn log(args: LogArgs, settings: &Settings) -> Result<()> {
    let store = app::open_store(settings).await?;
    let ctx = Ops::new(settings, &store);
    let query = MessageQuery {
        from: args.from,
        to: args.to,
        direction: args.direction,
        status: args.status,
        crypto: args.crypto,
        address: args.address,
        page: Some(args.page),
        page_size: Some(args.limit),
    };
    if args.csv {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        messages::csv(&ctx, query, &mut out).await?;
        out.flush()?;
        return Ok(());
    }
    let page = messages::search(&ctx, query).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    outln!(
        "{:<20} {:<8} {:<8} {:<30} {:<30} {:<28} REPLY",
        "TIME (UTC)",
        "DIR",
        "STATUS",
        "FROM",
        "TO",
        "ACTIONS"
    );
    for r in &page.rows {
        outln!(
            "{:<20} {:<8} {:<8} {:<30} {:<30} {:<28} {}",
            r.received.trim_end_matches('Z').replace('T', " "),
            r.direction,
            r.status,
            r.mail_from,
            r.rcpt_to.join(","),
            r.actions.join(","),
            r.smtp_reply.as_deref().unwrap_or_default()
        );
    }
    if page.has_more {
        eprintln!(
            "page {} of {} rows; --page {} for more",
            page.page,
            page.total,
            page.page + 1
        );
    }
    Ok(())
}

/// `smimegate audit`.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Exactly this actor (cli:USER, console:ACCOUNT, job:NAME).
    #[arg(long)]
    pub actor: Option<String>,
    /// Actions starting with this (rule. for every rule change).
    #[arg(long)]
    pub action: Option<String>,
    /// Exactly this target (a rule id, an address, a domain).
    #[arg(long)]
    pub target: Option<String>,
    /// At or after: RFC 3339, unix seconds, or an age such as 30m, 2h, 7d.
    #[arg(long, visible_alias = "from")]
    pub since: Option<String>,
    /// Before (same forms).
    #[arg(long)]
    pub until: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub page: i64,
    /// Rows per page (at most 500).
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
    #[arg(long)]
    pub json: bool,
}

/// `smimegate audit`: one page of `ops::audit::search`, newest first.
pub async fn audit(args: AuditArgs, settings: &Settings) -> Result<()> {
    let store = app::open_store(settings).await?;
    let ctx = Ops::new(settings, &store);
    let query = AuditQuery {
        actor: args.actor,
        action: args.action,
        target: args.target,
        from: args.since,
        to: args.until,
        page: Some(args.page),
        page_size: Some(args.limit),
    };
    let page = crate::ops::audit::search(&ctx, query).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    outln!(
        "{:<20} {:<24} {:<20} {:<22} {:<28} DETAIL",
        "TIME (UTC)",
        "ACTOR",
        "ORIGIN",
        "ACTION",
        "TARGET"
    );
    for r in &page.rows {
        outln!(
            "{:<20} {:<24} {:<20} {:<22} {:<28} {}",
            r.time.trim_end_matches('Z').replace('T', " "),
            r.actor,
            r.origin,
            r.action,
            r.target,
            r.detail
        );
    }
    if page.has_more {
        eprintln!(
            "page {} of {} rows; --page {} for more",
            page.page,
            page.total,
            page.page + 1
        );
    }
    Ok(())
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
    outln!(
        "outbound mail now goes to {}",
        set.host_port.as_deref().unwrap_or(host_port)
    );
    Ok(())
}

async fn show_smarthost(ctx: &Ops<'_>) -> Result<()> {
    let shown = relay_settings::smarthost(ctx).await?;
    match (shown.host_port, shown.source) {
        (Some(host), Some(Source::Configuration)) => {
            outln!("{host} (from the configuration file)")
        }
        (Some(host), _) => outln!("{host}"),
        (None, _) => outln!("no smarthost: outbound mail is deferred until one is set"),
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
        outln!(
            "{} may now submit outbound mail as an authenticated submitter",
            allowed.cidr
        );
    } else {
        outln!("{} may now relay outbound mail", allowed.cidr);
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
                outln!("{:<40} {}{auth}", n.cidr, n.comment);
            }
            Source::Configuration => outln!("{:<40} (from the configuration file)", n.cidr),
        }
    }
    Ok(())
}

async fn remove_network(ctx: &Ops<'_>, cidr: &str) -> Result<()> {
    let removed = relay_settings::remove_network(ctx, &Actor::cli(), cidr).await?;
    outln!("{removed} removed");
    Ok(())
}

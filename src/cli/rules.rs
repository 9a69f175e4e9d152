//! `smimegate rule …`: the policy rules, and `rule explain`.

use anyhow::{Context, Result};
use clap::Subcommand;

use super::audit;
use crate::app::{self, Actor};
use crate::config::Settings;
use crate::pki::address::Address;
use crate::policy::{Action, Direction, Matcher};
use crate::store::{NewRule, Store};

#[derive(Subcommand, Debug)]
pub enum RuleCommand {
    /// Add a rule at priority 1 (the others move down one).
    Add {
        #[arg(long)]
        direction: String,
        /// Sender matcher: anyone, managed, mailbox:ADDRESS, address:ADDRESS, domain:DOMAIN.
        #[arg(long)]
        from: String,
        /// Recipient matcher (same forms).
        #[arg(long)]
        to: String,
        /// Outbound: undefined, none, sign, encrypt-optional, encrypt-enforced.
        /// Inbound: undefined, no-decrypt, decrypt-optional, decrypt-always, decrypt-enforced.
        #[arg(long)]
        action: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// List the rules, highest priority first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Move a rule to another priority (1 is highest).
    Move {
        id: i64,
        #[arg(long)]
        priority: i64,
    },
    /// Remove a rule.
    Remove { id: i64 },
    /// Enable a rule.
    Enable { id: i64 },
    /// Disable a rule (kept, but skipped).
    Disable { id: i64 },
    /// Which rule decides for FROM → TO, what happens and why.
    Explain {
        from: String,
        to: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: RuleCommand, settings: &Settings) -> Result<()> {
    let store = app::open_store(settings).await?;
    let actor = Actor::cli();
    match cmd {
        RuleCommand::Add {
            direction,
            from,
            to,
            action,
            comment,
        } => {
            let direction = Direction::parse(&direction)?;
            let rule = NewRule {
                direction,
                sender: matcher(&store, &from).await?,
                recipient: matcher(&store, &to).await?,
                action: Action::parse(&action, direction)?,
                comment,
            };
            let added = store.rules().add(&rule).await?;
            audit(
                &store,
                &actor,
                "rule.add",
                &added.id.to_string(),
                &describe(&added),
            )
            .await?;
            println!(
                "added rule {} at priority 1: {}",
                added.id,
                describe(&added)
            );
        }
        RuleCommand::List { json } => {
            let rules = store.rules().list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rules)?);
            } else {
                println!(
                    "{:>4} {:>4} {:<9} {:<32} {:<32} {:<17} {:<3} COMMENT",
                    "PRIO", "ID", "DIRECTION", "FROM", "TO", "ACTION", "ON"
                );
                for r in rules {
                    println!(
                        "{:>4} {:>4} {:<9} {:<32} {:<32} {:<17} {:<3} {}",
                        r.priority,
                        r.id,
                        r.direction.as_str(),
                        r.sender.to_string(),
                        r.recipient.to_string(),
                        r.action.as_str(),
                        if r.enabled { "yes" } else { "no" },
                        r.comment
                    );
                }
            }
        }
        RuleCommand::Move { id, priority } => {
            let moved = store.rules().move_to(id, priority).await?;
            audit(
                &store,
                &actor,
                "rule.move",
                &id.to_string(),
                &format!("priority={}", moved.priority),
            )
            .await?;
            println!("rule {id} is now at priority {}", moved.priority);
        }
        RuleCommand::Remove { id } => {
            let removed = store.rules().remove(id).await?;
            audit(
                &store,
                &actor,
                "rule.remove",
                &id.to_string(),
                &describe(&removed),
            )
            .await?;
            println!("removed rule {id}");
        }
        RuleCommand::Enable { id } | RuleCommand::Disable { id } => {
            let enable = matches!(cmd, RuleCommand::Enable { .. });
            store.rules().set_enabled(id, enable).await?;
            let what = if enable {
                "rule.enable"
            } else {
                "rule.disable"
            };
            audit(&store, &actor, what, &id.to_string(), "").await?;
            println!("rule {id} {}", if enable { "enabled" } else { "disabled" });
        }
        RuleCommand::Explain { from, to, json } => {
            let sender = Address::parse(&from)?;
            let recipient = Address::parse(&to)?;
            let e = crate::relay::explain::explain(&store, &sender, &recipient).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&e)?);
                return Ok(());
            }
            let yes_no = |b: Option<bool>| match b {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            };
            println!(
                "direction: {} ({} {} a managed domain)",
                e.direction,
                e.recipient,
                if e.direction == Direction::Inbound {
                    "is in"
                } else {
                    "is not in"
                }
            );
            println!(
                "sender:    {} ({}{})",
                e.sender,
                if e.sender_managed {
                    "managed mailbox"
                } else {
                    "not a managed mailbox"
                },
                match e.sender_can_sign {
                    Some(_) => format!(", active certificate: {}", yes_no(e.sender_can_sign)),
                    None => String::new(),
                }
            );
            println!(
                "recipient: {} ({}{})",
                e.recipient,
                if e.recipient_managed {
                    "managed mailbox"
                } else {
                    "not a managed mailbox"
                },
                match e.recipient_has_certificate {
                    Some(_) => format!(
                        ", valid certificate known: {}",
                        yes_no(e.recipient_has_certificate)
                    ),
                    None => String::new(),
                }
            );
            println!("rules walked ({}):", e.direction);
            if e.selection.considered.is_empty() {
                println!("  (no {} rules)", e.direction);
            }
            for c in &e.selection.considered {
                println!(
                    "  priority {:>3}, rule {:>4}: {}",
                    c.priority, c.rule_id, c.outcome
                );
            }
            match e.selection.rule_id {
                Some(id) => println!("action:    {} (rule {id})", e.selection.action),
                None => println!(
                    "action:    {} (default: no rule decided)",
                    e.selection.action
                ),
            }
            for outcome in &e.outcomes {
                println!("outcome:   {outcome}");
            }
            for note in &e.notes {
                println!("note:      {note}");
            }
        }
    }
    Ok(())
}

/// A matcher from the command line; a bare address means the managed mailbox when
/// there is one, else the external address.
async fn matcher(store: &Store, text: &str) -> Result<Matcher> {
    if !text.contains(':') && text.contains('@') && !text.starts_with('@') {
        let address = Address::parse(text)?;
        let managed = store.mailboxes().get(&address).await?.is_some();
        return Ok(if managed {
            Matcher::Mailbox(address)
        } else {
            Matcher::Address(address)
        });
    }
    let matcher = Matcher::parse(text)?;
    if let Matcher::Mailbox(address) = &matcher {
        store.mailboxes().get(address).await?.with_context(|| {
            format!(
                "{address} is not a managed mailbox; use address:{address} for an external address"
            )
        })?;
    }
    Ok(matcher)
}

fn describe(rule: &crate::policy::Rule) -> String {
    format!(
        "{} from {} to {}: {}{}",
        rule.direction,
        rule.sender,
        rule.recipient,
        rule.action,
        if rule.comment.is_empty() {
            String::new()
        } else {
            format!(" ({})", rule.comment)
        }
    )
}

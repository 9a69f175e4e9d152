//! `smimegate rule …`: the policy rules, and `rule explain` (`ops::rules`).

use anyhow::Result;
use clap::Subcommand;

use super::exit_status_1;
use crate::app;
use crate::config::Settings;
use crate::ops::rules::{self, AddRule, EditRule, Explain, MoveRule};
use crate::ops::{Actor, Ops};
use crate::policy::{Direction, Rule};
use crate::relay::explain::Explanation;

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
    /// Change a rule's direction, matchers, action or comment (what is not given stays).
    Edit {
        id: i64,
        /// inbound or outbound (give --action too when the old one is of the other
        /// direction).
        #[arg(long)]
        direction: Option<String>,
        /// Sender matcher (the forms of `rule add --from`).
        #[arg(long, visible_alias = "sender")]
        from: Option<String>,
        /// Recipient matcher.
        #[arg(long, visible_alias = "recipient")]
        to: Option<String>,
        /// An action of the rule's direction (see `rule add`).
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        comment: Option<String>,
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
    let ctx = Ops::new(settings, &store);
    let actor = Actor::cli();
    match cmd {
        RuleCommand::Add {
            direction,
            from,
            to,
            action,
            comment,
        } => {
            let input = AddRule {
                direction,
                from,
                to,
                action,
                comment,
            };
            add(&ctx, &actor, input).await.map_err(exit_status_1)
        }
        // A command added after the operation layer: exit 2 for the operator's mistakes.
        RuleCommand::Edit {
            id,
            direction,
            from,
            to,
            action,
            comment,
        } => {
            let input = EditRule {
                direction,
                from,
                to,
                action,
                comment,
            };
            let edited = rules::edit(&ctx, &actor, id, input).await?;
            outln!("edited rule {}: {}", edited.id, rules::describe(&edited));
            Ok(())
        }
        RuleCommand::List { json } => list(&ctx, json).await.map_err(exit_status_1),
        RuleCommand::Move { id, priority } => move_to(&ctx, &actor, MoveRule { id, priority })
            .await
            .map_err(exit_status_1),
        RuleCommand::Remove { id } => remove(&ctx, &actor, id).await.map_err(exit_status_1),
        RuleCommand::Enable { id } => set_enabled(&ctx, &actor, id, true)
            .await
            .map_err(exit_status_1),
        RuleCommand::Disable { id } => set_enabled(&ctx, &actor, id, false)
            .await
            .map_err(exit_status_1),
        RuleCommand::Explain { from, to, json } => explain(&ctx, Explain { from, to }, json)
            .await
            .map_err(exit_status_1),
    }
}

async fn add(ctx: &Ops<'_>, actor: &Actor, input: AddRule) -> Result<()> {
    let added = rules::add(ctx, actor, input).await?;
    outln!(
        "added rule {} at priority 1: {}",
        added.id,
        rules::describe(&added)
    );
    Ok(())
}

async fn list(ctx: &Ops<'_>, json: bool) -> Result<()> {
    let rules = rules::list(ctx).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&rules)?);
    } else {
        print_table(&rules);
    }
    Ok(())
}

fn print_table(rules: &[Rule]) {
    outln!(
        "{:>4} {:>4} {:<9} {:<32} {:<32} {:<17} {:<3} COMMENT",
        "PRIO",
        "ID",
        "DIRECTION",
        "FROM",
        "TO",
        "ACTION",
        "ON"
    );
    for r in rules {
        outln!(
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

async fn move_to(ctx: &Ops<'_>, actor: &Actor, input: MoveRule) -> Result<()> {
    let moved = rules::move_to(ctx, actor, input).await?;
    outln!("rule {} is now at priority {}", moved.id, moved.priority);
    Ok(())
}

async fn remove(ctx: &Ops<'_>, actor: &Actor, id: i64) -> Result<()> {
    let removed = rules::remove(ctx, actor, id).await?;
    outln!("removed rule {}", removed.id);
    Ok(())
}

async fn set_enabled(ctx: &Ops<'_>, actor: &Actor, id: i64, enable: bool) -> Result<()> {
    let rule = if enable {
        rules::enable(ctx, actor, id).await?
    } else {
        rules::disable(ctx, actor, id).await?
    };
    let state = if rule.enabled { "enabled" } else { "disabled" };
    outln!("rule {} {state}", rule.id);
    Ok(())
}

async fn explain(ctx: &Ops<'_>, input: Explain, json: bool) -> Result<()> {
    let e = rules::explain(ctx, input).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print_explanation(&e);
    }
    Ok(())
}

fn print_explanation(e: &Explanation) {
    let yes_no = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    };
    outln!(
        "direction: {} ({} {} a managed domain)",
        e.direction,
        e.recipient,
        if e.direction == Direction::Inbound {
            "is in"
        } else {
            "is not in"
        }
    );
    outln!(
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
    outln!(
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
    print_walk(e);
}

fn print_walk(e: &Explanation) {
    outln!("rules walked ({}):", e.direction);
    if e.selection.considered.is_empty() {
        outln!("  (no {} rules)", e.direction);
    }
    for c in &e.selection.considered {
        outln!(
            "  priority {:>3}, rule {:>4}: {}",
            c.priority,
            c.rule_id,
            c.outcome
        );
    }
    match e.selection.rule_id {
        Some(id) => outln!("action:    {} (rule {id})", e.selection.action),
        None => outln!(
            "action:    {} (default: no rule decided)",
            e.selection.action
        ),
    }
    for outcome in &e.outcomes {
        outln!("outcome:   {outcome}");
    }
    for note in &e.notes {
        outln!("note:      {note}");
    }
}

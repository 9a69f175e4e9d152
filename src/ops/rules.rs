//! Policy rules (DESIGN §3): add (at priority 1), edit, move, remove, enable, disable,
//! list, and `explain` (read only: which rule decides for a sender and a recipient,
//! and why).

use super::input::{self, invalid};
use super::{Actor, OpError, Ops, audit};
use crate::policy::{Action, Direction, Matcher, Rule};
use crate::relay::explain::Explanation;
use crate::store::{NewRule, Store};

/// `rule add`: the matchers and the action as an operator writes them.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
pub struct AddRule {
    /// `inbound` or `outbound`.
    pub direction: String,
    /// Sender matcher: `anyone`, `managed`, `mailbox:ADDRESS`, `address:ADDRESS`,
    /// `domain:DOMAIN`; a bare address is the managed mailbox when there is one, else
    /// the external address.
    pub from: String,
    /// Recipient matcher (same forms).
    pub to: String,
    /// An action of the direction (or `undefined`).
    pub action: String,
    #[serde(default)]
    pub comment: String,
}

/// `rule edit`: the fields to change, each as `rule add` takes it; an absent one
/// stays as it is.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EditRule {
    /// `inbound` or `outbound`; the action must be one of the new direction (give the
    /// action too when changing it).
    pub direction: Option<String>,
    /// Sender matcher (the forms of `rule add`).
    pub from: Option<String>,
    /// Recipient matcher.
    pub to: Option<String>,
    pub action: Option<String>,
    pub comment: Option<String>,
}

/// `rule move`.
#[derive(Debug, Clone, Copy, serde::Deserialize, utoipa::ToSchema)]
pub struct MoveRule {
    pub id: i64,
    /// 1 is the highest; beyond the last rule means last.
    pub priority: i64,
}

/// `rule explain`.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
pub struct Explain {
    pub from: String,
    pub to: String,
}

/// Adds a rule at priority 1 (the others move down one). Refuses an unknown
/// direction or action, an action of the other direction, a matcher that does not
/// parse, and `mailbox:` naming an address that is not a managed mailbox.
pub async fn add(ctx: &Ops<'_>, actor: &Actor, input: AddRule) -> Result<Rule, OpError> {
    let direction = Direction::parse(&input.direction).map_err(invalid)?;
    let rule = NewRule {
        direction,
        sender: matcher(ctx.store, &input.from).await?,
        recipient: matcher(ctx.store, &input.to).await?,
        action: Action::parse(&input.action, direction).map_err(invalid)?,
        comment: input.comment,
    };
    let added = ctx.store.rules().add(&rule).await?;
    audit(
        ctx.store,
        actor,
        "rule.add",
        &added.id.to_string(),
        &describe(&added),
    )
    .await?;
    Ok(added)
}

/// Changes any of a rule's direction, matchers, action and comment in one audited
/// change (the audit detail shows the rule before and after). The checks are those
/// of [`add`]; nothing is changed when one fails, or when the edit changes nothing.
#[tracing::instrument(level = "debug", skip(ctx, input), fields(actor = %actor.name))]
pub async fn edit(ctx: &Ops<'_>, actor: &Actor, id: i64, input: EditRule) -> Result<Rule, OpError> {
    let before = ctx.store.rules().get(id).await?;
    let direction = match &input.direction {
        Some(d) => Direction::parse(d).map_err(invalid)?,
        None => before.direction,
    };
    let sender = match &input.from {
        Some(text) => matcher(ctx.store, text).await?,
        None => before.sender.clone(),
    };
    let recipient = match &input.to {
        Some(text) => matcher(ctx.store, text).await?,
        None => before.recipient.clone(),
    };
    let action = match &input.action {
        Some(text) => Action::parse(text, direction).map_err(invalid)?,
        None if before.action == Action::Undefined
            || before.action.direction() == Some(direction) =>
        {
            before.action
        }
        None => {
            return Err(OpError::Invalid(format!(
                "action {} is not an {direction} action: give the new action too",
                before.action
            )));
        }
    };
    let rule = NewRule {
        direction,
        sender,
        recipient,
        action,
        comment: input.comment.unwrap_or_else(|| before.comment.clone()),
    };
    if rule.direction == before.direction
        && rule.sender == before.sender
        && rule.recipient == before.recipient
        && rule.action == before.action
        && rule.comment == before.comment
    {
        return Err(OpError::Invalid(format!(
            "the edit leaves rule {id} as it is"
        )));
    }
    let edited = ctx.store.rules().update(id, &rule).await?;
    let detail = format!("{} -> {}", describe(&before), describe(&edited));
    audit(ctx.store, actor, "rule.edit", &id.to_string(), &detail).await?;
    Ok(edited)
}

/// Moves a rule to another priority (clamped to 1..=number of rules).
pub async fn move_to(ctx: &Ops<'_>, actor: &Actor, input: MoveRule) -> Result<Rule, OpError> {
    let moved = ctx.store.rules().move_to(input.id, input.priority).await?;
    let detail = format!("priority={}", moved.priority);
    audit(
        ctx.store,
        actor,
        "rule.move",
        &moved.id.to_string(),
        &detail,
    )
    .await?;
    Ok(moved)
}

/// Removes a rule; the lower ones move up one.
pub async fn remove(ctx: &Ops<'_>, actor: &Actor, id: i64) -> Result<Rule, OpError> {
    let removed = ctx.store.rules().remove(id).await?;
    audit(
        ctx.store,
        actor,
        "rule.remove",
        &id.to_string(),
        &describe(&removed),
    )
    .await?;
    Ok(removed)
}

/// Puts a disabled rule back in force.
pub async fn enable(ctx: &Ops<'_>, actor: &Actor, id: i64) -> Result<Rule, OpError> {
    set_enabled(ctx, actor, id, true).await
}

/// Keeps a rule but skips it.
pub async fn disable(ctx: &Ops<'_>, actor: &Actor, id: i64) -> Result<Rule, OpError> {
    set_enabled(ctx, actor, id, false).await
}

async fn set_enabled(
    ctx: &Ops<'_>,
    actor: &Actor,
    id: i64,
    enabled: bool,
) -> Result<Rule, OpError> {
    let rule = ctx.store.rules().set_enabled(id, enabled).await?;
    let action = if enabled {
        "rule.enable"
    } else {
        "rule.disable"
    };
    audit(ctx.store, actor, action, &id.to_string(), "").await?;
    Ok(rule)
}

/// Every rule, highest priority first.
pub async fn list(ctx: &Ops<'_>) -> Result<Vec<Rule>, OpError> {
    Ok(ctx.store.rules().list().await?)
}

/// Which rule decides for `from → to`, what happens and why, from the data and code
/// the relay uses.
pub async fn explain(ctx: &Ops<'_>, input: Explain) -> Result<Explanation, OpError> {
    let sender = input::address(&input.from)?;
    let recipient = input::address(&input.to)?;
    let revocation = crate::pki::revocation::Revocations::new(
        ctx.store.clone(),
        (&ctx.settings.config.revocation).into(),
    );
    Ok(
        crate::relay::explain::explain_with(ctx.store, Some(revocation), &sender, &recipient)
            .await?,
    )
}

/// A rule in one line, as the audit log and the CLI show it.
pub fn describe(rule: &Rule) -> String {
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

/// A matcher as an operator writes it; a bare address means the managed mailbox when
/// there is one, else the external address.
async fn matcher(store: &Store, text: &str) -> Result<Matcher, OpError> {
    if !text.contains(':') && text.contains('@') && !text.starts_with('@') {
        let address = input::address(text)?;
        let managed = store.mailboxes().get(&address).await?.is_some();
        return Ok(if managed {
            Matcher::Mailbox(address)
        } else {
            Matcher::Address(address)
        });
    }
    let matcher = Matcher::parse(text).map_err(invalid)?;
    if let Matcher::Mailbox(address) = &matcher
        && store.mailboxes().get(address).await?.is_none()
    {
        return Err(OpError::Invalid(format!(
            "{address} is not a managed mailbox; use address:{address} for an external address"
        )));
    }
    Ok(matcher)
}

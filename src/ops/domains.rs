//! Managed domains: add (with the inbound route), change, remove, list; the MX check
//! that activation requires.

use super::{Actor, OpError, Ops, audit, input};
use crate::store::DomainRow;

/// `domain add`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct AddDomain {
    pub name: String,
    /// The internal mail server for the domain, `HOST:PORT`; none: no inbound route
    /// yet (its mailboxes cannot be activated).
    #[serde(default)]
    pub next_hop: Option<String>,
    /// Accept any local part (such addresses cannot be activated for S/MIME).
    #[serde(default)]
    pub wildcard: bool,
}

/// Adds a managed domain. Refuses an invalid name or next hop; a domain already
/// managed is a conflict.
pub async fn add(ctx: &Ops<'_>, actor: &Actor, input: AddDomain) -> Result<DomainRow, OpError> {
    let domain = input::domain(&input.name)?;
    let next_hop = input
        .next_hop
        .as_deref()
        .map(input::host_port)
        .transpose()?;
    let row = ctx
        .store
        .domains()
        .add(&domain, next_hop, input.wildcard)
        .await?;
    audit(
        ctx.store,
        actor,
        "domain.add",
        &row.name,
        &format!("next_hop={next_hop:?} wildcard={}", input.wildcard),
    )
    .await?;
    Ok(row)
}

/// `domain set`: what to change; a field left out stays as it is.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct SetDomain {
    pub name: String,
    /// The new next hop, `HOST:PORT`.
    #[serde(default)]
    pub next_hop: Option<String>,
    /// Remove the next hop (the domain then has no inbound route). Refused while a
    /// mailbox of the domain holds a seat: mail to it could no longer be delivered.
    #[serde(default)]
    pub clear_next_hop: bool,
    /// Accept any local part (`true`) or known mailboxes only (`false`).
    #[serde(default)]
    pub wildcard: Option<bool>,
}

/// A domain before and after `domain set`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DomainChange {
    pub before: DomainRow,
    pub after: DomainRow,
}

impl DomainChange {
    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        self.before.next_hop != self.after.next_hop || self.before.wildcard != self.after.wildcard
    }
}

/// Changes a managed domain's next hop or wildcard flag. The relay picks the change up
/// at its next transaction (the domains trigger bumps the configuration version). A
/// change that changes nothing writes no audit row.
pub async fn set(ctx: &Ops<'_>, actor: &Actor, input: SetDomain) -> Result<DomainChange, OpError> {
    let domain = input::domain(&input.name)?;
    if input.next_hop.is_some() && input.clear_next_hop {
        return Err(OpError::Invalid(
            "give either a new next hop or clear it, not both".into(),
        ));
    }
    if input.next_hop.is_none() && !input.clear_next_hop && input.wildcard.is_none() {
        return Err(OpError::Invalid(format!(
            "nothing to change for domain {domain}: give --next-hop HOST:PORT, --no-next-hop, --wildcard or --no-wildcard"
        )));
    }
    let next_hop = input
        .next_hop
        .as_deref()
        .map(input::host_port)
        .transpose()?;
    let before = ctx
        .store
        .domains()
        .get(&domain)
        .await?
        .ok_or_else(|| OpError::NotFound(format!("no managed domain {domain}")))?;
    if input.clear_next_hop {
        let in_use = ctx.store.domains().mailboxes_in_use(&domain).await?;
        if in_use > 0 {
            return Err(OpError::Invalid(format!(
                "domain {domain} has {in_use} mailbox(es) holding a certificate; mail to them needs the next hop: deactivate them first or give a new --next-hop"
            )));
        }
    }
    let new_hop = if input.clear_next_hop {
        Some(None)
    } else {
        next_hop.map(Some)
    };
    let after = ctx
        .store
        .domains()
        .update(&domain, new_hop, input.wildcard)
        .await?;
    let change = DomainChange { before, after };
    if change.changed() {
        audit(
            ctx.store,
            actor,
            "domain.set",
            &change.after.name,
            &format!(
                "next_hop={:?}->{:?} wildcard={}->{}",
                change.before.next_hop,
                change.after.next_hop,
                change.before.wildcard,
                change.after.wildcard
            ),
        )
        .await?;
    }
    Ok(change)
}

/// Removes a managed domain that has no mailboxes left.
pub async fn remove(ctx: &Ops<'_>, actor: &Actor, name: &str) -> Result<DomainRow, OpError> {
    let domain = input::domain(name)?;
    let row = ctx
        .store
        .domains()
        .get(&domain)
        .await?
        .ok_or_else(|| OpError::NotFound(format!("no managed domain {domain}")))?;
    ctx.store.domains().remove(&domain).await?;
    audit(ctx.store, actor, "domain.remove", &row.name, "").await?;
    Ok(row)
}

/// Every managed domain, by name.
pub async fn list(ctx: &Ops<'_>) -> Result<Vec<DomainRow>, OpError> {
    Ok(ctx.store.domains().list().await?)
}

/// `domain check`: whether the domain's MX points at `[gateway].hostname`, asked of
/// the resolver in `[dns]`. A read: no audit row. The domain need not be managed yet
/// (an operator checks the DNS before adding it).
pub async fn check(ctx: &Ops<'_>, name: &str) -> Result<crate::dns::MxReport, OpError> {
    let domain = input::domain(name)?;
    Ok(crate::dns::check_mx(
        &ctx.settings.config.dns,
        domain.as_str(),
        &ctx.settings.config.gateway.hostname,
    )
    .await)
}

/// Refuses what needs mail for `domain` to arrive here (activating its mailboxes)
/// unless its MX points at the gateway; the message says what the DNS says and how
/// to proceed anyway (`--skip-mx-check`, `skip_mx_check`).
pub async fn require_mx(ctx: &Ops<'_>, domain: &str) -> Result<(), OpError> {
    let report = check(ctx, domain).await?;
    if report.ok() {
        return Ok(());
    }
    Err(OpError::Invalid(format!(
        "MX check failed: {}; fix the DNS (`smimegate domain check {}` shows it) or pass --skip-mx-check",
        report.message, report.domain
    )))
}

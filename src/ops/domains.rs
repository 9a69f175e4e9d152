//! Managed domains: add (with the inbound route), remove, list.

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

//! Relay settings changed at run time: the smarthost outbound mail goes to, and the
//! internal networks allowed to relay outbound. The database's values come first;
//! the configuration file's (`[relay]`) apply beside them and are shown as such.

use super::input;
use super::{Actor, OpError, Ops, audit};

/// Where a setting in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Set with the CLI or the console.
    Database,
    /// `smimegate.toml`; changed only by editing the file.
    Configuration,
}

/// The smarthost in force.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Smarthost {
    /// `HOST:PORT`; none: outbound mail is deferred until one is set.
    pub host_port: Option<String>,
    pub source: Option<Source>,
}

/// `network allow`.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
pub struct AllowNetwork {
    /// `ADDRESS/PREFIX` or one address; host bits are cleared.
    pub cidr: String,
    #[serde(default)]
    pub comment: String,
    /// Clients there must still authenticate (SMTP AUTH) to submit.
    #[serde(default)]
    pub require_auth: bool,
}

/// An allowed network.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AllowedNetwork {
    /// Canonical CIDR.
    pub cidr: String,
    pub comment: String,
    pub require_auth: bool,
    pub source: Source,
}

/// Sends outbound mail through `host_port` from the next transaction on.
pub async fn set_smarthost(
    ctx: &Ops<'_>,
    actor: &Actor,
    host_port: &str,
) -> Result<Smarthost, OpError> {
    let host_port = input::host_port(host_port)?;
    ctx.store.relay_settings().set_smarthost(host_port).await?;
    audit(ctx.store, actor, "smarthost.set", host_port, "").await?;
    Ok(Smarthost {
        host_port: Some(host_port.to_string()),
        source: Some(Source::Database),
    })
}

/// The smarthost in force: the database's, else the configuration file's, else none.
pub async fn smarthost(ctx: &Ops<'_>) -> Result<Smarthost, OpError> {
    if let Some(host_port) = ctx.store.relay_settings().smarthost().await? {
        return Ok(Smarthost {
            host_port: Some(host_port),
            source: Some(Source::Database),
        });
    }
    let configured = &ctx.settings.config.relay.smarthost;
    Ok(if configured.is_empty() {
        Smarthost {
            host_port: None,
            source: None,
        }
    } else {
        Smarthost {
            host_port: Some(configured.clone()),
            source: Some(Source::Configuration),
        }
    })
}

/// Allows a network to relay outbound mail (or, with `require_auth`, to submit as an
/// authenticated submitter). A network already allowed is a conflict.
pub async fn allow_network(
    ctx: &Ops<'_>,
    actor: &Actor,
    input: AllowNetwork,
) -> Result<AllowedNetwork, OpError> {
    let cidr = input::network(&input.cidr)?.to_string();
    ctx.store
        .relay_settings()
        .allow_network(&cidr, &input.comment, input.require_auth)
        .await?;
    let detail = format!(
        "{}{}",
        input.comment,
        if input.require_auth {
            " (authentication required)"
        } else {
            ""
        }
    );
    audit(ctx.store, actor, "network.allow", &cidr, &detail).await?;
    Ok(AllowedNetwork {
        cidr,
        comment: input.comment,
        require_auth: input.require_auth,
        source: Source::Database,
    })
}

/// The allowed networks: the database's, then the configuration file's.
pub async fn networks(ctx: &Ops<'_>) -> Result<Vec<AllowedNetwork>, OpError> {
    let stored = ctx.store.relay_settings().networks().await?;
    let stored = stored.into_iter().map(|n| AllowedNetwork {
        cidr: n.cidr,
        comment: n.comment,
        require_auth: n.require_auth,
        source: Source::Database,
    });
    let configured = ctx
        .settings
        .config
        .relay
        .internal_networks
        .iter()
        .map(|cidr| AllowedNetwork {
            cidr: cidr.clone(),
            comment: String::new(),
            require_auth: false,
            source: Source::Configuration,
        });
    Ok(stored.chain(configured).collect())
}

/// Removes an allowed network (one set in the database; the configuration file's
/// are changed in the file).
pub async fn remove_network(ctx: &Ops<'_>, actor: &Actor, cidr: &str) -> Result<String, OpError> {
    let cidr = input::network(cidr)?.to_string();
    ctx.store.relay_settings().remove_network(&cidr).await?;
    audit(ctx.store, actor, "network.remove", &cidr, "").await?;
    Ok(cidr)
}

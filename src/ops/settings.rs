//! The settings page's read: the smarthost and internal networks in force (database
//! and configuration file), the licence, next-hop TLS from the configuration, and
//! whether SAML single sign-on is configured. Changes go through
//! [`super::relay_settings`] and [`super::licence`].

use super::{OpError, Ops, licence, relay_settings};

/// TLS towards one next hop, as `[relay.hop."…"]` sets it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct HopTls {
    /// `HOST:PORT` or `HOST`.
    pub hop: String,
    /// `off`, `opportunistic`, `required`, `verify` or `pin`; none: the default.
    pub tls: Option<String>,
    pub server_name: Option<String>,
    /// Pinned SHA-256 fingerprints (public data).
    pub pin_sha256: Vec<String>,
}

/// Next-hop TLS (configuration file only; changed by editing `smimegate.toml`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct NextHopTlsView {
    /// The default for every next hop.
    pub default: String,
    pub ca_file: String,
    pub hops: Vec<HopTls>,
}

/// SAML single sign-on: configured or not (set in the configuration file).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SamlStatus {
    pub configured: bool,
    pub detail: String,
}

/// Everything the settings page shows; no secret.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SettingsView {
    pub smarthost: relay_settings::Smarthost,
    pub networks: Vec<relay_settings::AllowedNetwork>,
    #[schema(value_type = Object)]
    pub licence: licence::LicenceStatus,
    pub next_hop_tls: NextHopTlsView,
    pub saml: SamlStatus,
}

pub async fn show(ctx: &Ops<'_>) -> Result<SettingsView, OpError> {
    let relay = &ctx.settings.config.relay;
    let hops = relay
        .hop
        .iter()
        .map(|(hop, c)| HopTls {
            hop: hop.clone(),
            tls: c.tls.map(|t| t.as_str().to_string()),
            server_name: c.server_name.clone(),
            pin_sha256: c.pin_sha256.clone(),
        })
        .collect();
    Ok(SettingsView {
        smarthost: relay_settings::smarthost(ctx).await?,
        networks: relay_settings::networks(ctx).await?,
        licence: licence::show(ctx).await?,
        next_hop_tls: NextHopTlsView {
            default: relay.next_hop_tls.as_str().to_string(),
            ca_file: relay.next_hop_ca_file.display().to_string(),
            hops,
        },
        saml: saml_status(ctx),
    })
}

/// This build reads no `[saml]` section yet: single sign-on is not configured and
/// only local accounts log in.
fn saml_status(_ctx: &Ops<'_>) -> SamlStatus {
    SamlStatus {
        configured: false,
        detail: "not configured: only local accounts log in".into(),
    }
}

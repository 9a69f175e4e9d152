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
        saml: saml_status(&ctx.settings.config),
    })
}

/// Whether `[saml]` names IdP metadata, with the entity ID, the role attribute and
/// how many values map to roles (no secret: the IdP's certificate is public too).
fn saml_status(config: &crate::config::Config) -> SamlStatus {
    let saml = &config.saml;
    if saml.idp_metadata.as_os_str().is_empty() {
        return SamlStatus {
            configured: false,
            detail: "not configured: only local accounts log in".into(),
        };
    }
    let entity_id = if saml.sp_entity_id.is_empty() {
        format!("{}/saml/metadata", config.console_url())
    } else {
        saml.sp_entity_id.clone()
    };
    SamlStatus {
        configured: true,
        detail: format!(
            "IdP metadata {}; our entity ID {entity_id}; attribute '{}' maps {} value(s) to roles",
            saml.idp_metadata.display(),
            saml.role_attribute,
            saml.roles.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn saml_is_shown_as_configured_only_when_idp_metadata_is_named() {
        let mut config = Config::default();
        let off = saml_status(&config);
        assert!(!off.configured);
        assert!(off.detail.contains("only local accounts"), "{}", off.detail);

        config.saml.idp_metadata = "idp-metadata.xml".into();
        config
            .saml
            .roles
            .insert("gateway-admins".into(), crate::ops::Role::Admin);
        config.console.public_url = "https://gw.corp.example:8443".into();
        let on = saml_status(&config);
        assert!(on.configured);
        for part in [
            "idp-metadata.xml",
            "https://gw.corp.example:8443/saml/metadata",
            "'groups'",
            "1 value(s)",
        ] {
            assert!(on.detail.contains(part), "{part} missing: {}", on.detail);
        }
    }
}

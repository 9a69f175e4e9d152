//! Token health: what the module, slot and token say about themselves, the session
//! pool's use, and which of the mechanisms the gateway relies on are offered.

use cryptoki::mechanism::MechanismType;

use super::Hsm;
use super::error::{HsmError, Result};
use super::pool::PoolUsage;

#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenHealth {
    pub module: String,
    pub library: String,
    pub library_version: String,
    pub slot: u64,
    pub label: String,
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
    pub logged_in: bool,
    pub sessions: PoolUsage,
    pub pin_count_low: bool,
    pub pin_locked: bool,
    pub mechanisms: Vec<MechanismSupport>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct MechanismSupport {
    pub name: &'static str,
    pub offered: bool,
    pub used_for: &'static str,
}

/// The mechanisms smimegate uses, and for what.
const REQUIRED: &[(MechanismType, &str, &str)] = &[
    (
        MechanismType::RSA_PKCS_KEY_PAIR_GEN,
        "CKM_RSA_PKCS_KEY_PAIR_GEN",
        "RSA key generation",
    ),
    (
        MechanismType::ECC_KEY_PAIR_GEN,
        "CKM_EC_KEY_PAIR_GEN",
        "EC key generation",
    ),
    (
        MechanismType::SHA256_RSA_PKCS,
        "CKM_SHA256_RSA_PKCS",
        "RSA signatures",
    ),
    (
        MechanismType::SHA256_RSA_PKCS_PSS,
        "CKM_SHA256_RSA_PKCS_PSS",
        "RSASSA-PSS signatures",
    ),
    (MechanismType::ECDSA, "CKM_ECDSA", "ECDSA signatures"),
    (
        MechanismType::RSA_PKCS,
        "CKM_RSA_PKCS",
        "RSA key transport (PKCS#1 v1.5)",
    ),
    (
        MechanismType::RSA_PKCS_OAEP,
        "CKM_RSA_PKCS_OAEP",
        "RSA key transport (OAEP)",
    ),
    (
        MechanismType::ECDH1_DERIVE,
        "CKM_ECDH1_DERIVE",
        "ECDH key agreement",
    ),
];

impl Hsm {
    pub fn health(&self) -> Result<TokenHealth> {
        let inner = &self.inner;
        let library = inner
            .ctx
            .get_library_info()
            .map_err(|e| HsmError::token("get library info", e))?;
        let token = inner
            .ctx
            .get_token_info(inner.slot)
            .map_err(|e| HsmError::token("get token info", e))?;
        let offered = inner
            .ctx
            .get_mechanism_list(inner.slot)
            .map_err(|e| HsmError::token("list mechanisms", e))?;
        let logged_in = self.with_session(|session| {
            let info = session
                .get_session_info()
                .map_err(|e| HsmError::token("get session info", e))?;
            Ok(matches!(
                info.session_state(),
                cryptoki::session::SessionState::RwUser | cryptoki::session::SessionState::RoUser
            ))
        })?;
        let version = library.library_version();
        Ok(TokenHealth {
            module: inner.module.display().to_string(),
            library: library.library_description().trim_end().to_string(),
            library_version: format!("{}.{}", version.major(), version.minor()),
            slot: inner.slot.id(),
            label: token.label().trim_end().to_string(),
            manufacturer: token.manufacturer_id().trim_end().to_string(),
            model: token.model().trim_end().to_string(),
            serial: token.serial_number().trim_end().to_string(),
            logged_in,
            sessions: self.pool_usage(),
            pin_count_low: token.user_pin_count_low(),
            pin_locked: token.user_pin_locked(),
            mechanisms: REQUIRED
                .iter()
                .map(|(mechanism, name, used_for)| MechanismSupport {
                    name,
                    offered: offered.contains(mechanism),
                    used_for,
                })
                .collect(),
        })
    }
}

//! Creating a token, for the embedded default (SoftHSM2) and for tests. A production
//! HSM's token is created by its own tools; smimegate only logs in to it.

use std::path::Path;

use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use secrecy::SecretString;

use super::error::{HsmError, Result};
use super::{find_token, load_module};

/// What [`init_token`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenInit {
    Created,
    AlreadyPresent,
}

/// The SoftHSM2 configuration that keeps the token's files under `token_dir`.
pub fn softhsm2_conf_text(token_dir: &Path) -> String {
    format!(
        "# SoftHSM2 configuration written by `smimegate init`.\n\
         directories.tokendir = {}\n\
         objectstore.backend = file\n\
         log.level = ERROR\n\
         slots.removable = false\n",
        token_dir.display()
    )
}

/// A fresh random PIN: 32 characters from a 62-letter alphabet (about 190 bits).
pub fn random_pin() -> Result<SecretString> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut pin = String::with_capacity(32);
    let mut buf = [0u8; 1];
    while pin.len() < 32 {
        getrandom::fill(&mut buf).map_err(|e| HsmError::Library {
            operation: "random PIN",
            reason: e.to_string(),
        })?;
        // Reject 248..=255 so every letter is equally likely.
        if usize::from(buf[0]) < ALPHABET.len() * 4 {
            pin.push(char::from(ALPHABET[usize::from(buf[0]) % ALPHABET.len()]));
        }
    }
    Ok(SecretString::from(pin))
}

/// Initialises a token labelled `label` in the first free slot of `module` and sets
/// its user PIN. Does nothing when a token with that label exists already.
pub fn init_token(
    module: &Path,
    label: &str,
    so_pin: &AuthPin,
    user_pin: &AuthPin,
) -> Result<TokenInit> {
    let ctx = load_module(module)?;
    match find_token(&ctx, module, label) {
        Ok(_) => return Ok(TokenInit::AlreadyPresent),
        Err(HsmError::TokenNotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| HsmError::token("list slots", e))?;
    let mut free = None;
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| HsmError::token("get token info", e))?;
        if !info.token_initialized() {
            free = Some(slot);
            break;
        }
    }
    let slot = free.ok_or_else(|| HsmError::Library {
        operation: "init token",
        reason: "the module has no slot with an uninitialised token".into(),
    })?;
    ctx.init_token(slot, so_pin, label)
        .map_err(|e| HsmError::token("init token", e))?;
    // SoftHSM2 renumbers its slots once a token is initialised: look it up again.
    let slot = find_token(&ctx, module, label)?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(|e| HsmError::token("open session", e))?;
    session
        .login(UserType::So, Some(so_pin))
        .map_err(|e| HsmError::token("security officer login", e))?;
    session
        .init_pin(user_pin)
        .map_err(|e| HsmError::token("set user PIN", e))?;
    session.logout().map_err(|e| HsmError::token("logout", e))?;
    tracing::info!(label, module = %module.display(), "token initialised");
    Ok(TokenInit::Created)
}

/// Points SoftHSM2 at `conf` by exporting `SOFTHSM2_CONF`, which SoftHSM2 reads when the
/// module is initialised.
///
/// # Safety
/// Changes the process environment: call it before any other thread exists (at the top
/// of `main`, before the async runtime starts) and before the module is loaded.
#[allow(unsafe_code)]
pub unsafe fn export_softhsm2_conf(conf: &Path) {
    // SAFETY: the caller guarantees no other thread reads or writes the environment.
    unsafe { std::env::set_var("SOFTHSM2_CONF", conf) };
}

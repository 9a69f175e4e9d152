//! argon2id password hashes (RFC 9106) for the accounts the gateway checks itself:
//! SMTP AUTH submitters now, the console's break-glass accounts later.
//!
//! Parameters: the OWASP Password Storage Cheat Sheet's argon2id configuration —
//! m = 19456 KiB (19 MiB), t = 2 passes, p = 1 lane, a 16-byte random salt, a 32-byte
//! tag — stored as a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$tag`), so a
//! later change of parameters keeps old hashes verifiable. One hash costs about 19 MiB
//! and some tens of milliseconds of one core; it always runs on the blocking pool
//! (never on the async runtime), and at most [`slots`] run at once, so a flood of AUTH
//! attempts costs bounded memory and cannot starve the relay.
//!
//! Verification takes the same path whether or not the account exists: an unknown
//! name (or an unreadable stored hash) is checked against [`DUMMY_HASH`], which has
//! the same parameters, so the answer's timing does not tell which names exist.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use argon2::{Algorithm, Argon2, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::store::StoreError;

/// Memory cost in KiB (OWASP: 19 MiB).
pub const M_COST_KIB: u32 = 19 * 1024;
/// Passes over the memory (OWASP: 2).
pub const T_COST: u32 = 2;
/// Lanes (OWASP: 1).
pub const P_COST: u32 = 1;

/// Longest password accepted (bytes). Longer input is still hashed (up to this
/// length) so that it costs the same, and then refused.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Costs a stored hash may ask for; beyond them it is treated as unreadable rather
/// than computed (a corrupt or planted row must not allocate gigabytes per attempt).
const MAX_STORED_M_COST_KIB: u32 = 1024 * 1024;
const MAX_STORED_T_COST: u32 = 64;
const MAX_STORED_P_COST: u32 = 16;

/// How long a check waits for a free hashing slot before answering "try later".
const SLOT_WAIT: Duration = Duration::from_secs(10);

/// What an unknown name is verified against: the parameters above with a random salt
/// and a random tag (from the OS's generator), so no known password matches it and
/// checking it costs exactly what checking a real hash costs. A unit test proves its
/// parameters equal the ones new hashes get.
pub(crate) const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$L0D2Itdl6SujzNJ62UhrXA$h7y1ZNwkeAAxBfzwcq2bjtm1EH9OyOXXjmX10wRRljs";

fn hasher() -> Argon2<'static> {
    let params = argon2::Params::new(M_COST_KIB, T_COST, P_COST, Some(32))
        .expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashing slots: the cores there are, at most 8 (8 × 19 MiB).
fn slots() -> Arc<Semaphore> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    SLOTS
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Arc::new(Semaphore::new(cores.clamp(1, 8)))
        })
        .clone()
}

/// Runs `work` on the blocking pool once a hashing slot is free. The slot goes with
/// the work, so a caller that gives up early (a dropped SMTP session) does not free
/// it while the hash is still being computed.
async fn in_slot<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StoreError> {
    let slot = tokio::time::timeout(SLOT_WAIT, slots().acquire_owned())
        .await
        .map_err(|_| StoreError::Unavailable("every password-hashing slot is busy".into()))?
        .map_err(|_| StoreError::Unavailable("password hashing has stopped".into()))?;
    tokio::task::spawn_blocking(move || {
        let result = work();
        drop(slot);
        result
    })
    .await
    .map_err(|_| StoreError::Unavailable("the password-hashing task did not finish".into()))
}

/// A new argon2id PHC string for `password` (fresh random salt).
pub async fn hash(password: Zeroizing<Vec<u8>>) -> Result<String, StoreError> {
    in_slot(move || {
        hasher()
            .hash_password(&password)
            .map(|h| h.to_string())
            .map_err(|e| StoreError::Unavailable(format!("cannot hash the password: {e}")))
    })
    .await?
}

/// What one verification did, besides its answer: the unit tests compare these to
/// prove that an unknown name and a wrong password take the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trace {
    /// argon2 computations made (always exactly 1).
    pub argon2_runs: u32,
    /// (m KiB, t, p) of the hash computed.
    pub cost: (u32, u32, u32),
}

/// Whether `password` matches `stored` (None: the account does not exist). Always
/// computes one argon2id hash, against the stored one or the dummy.
pub(crate) async fn verify(
    stored: Option<String>,
    password: Zeroizing<Vec<u8>>,
) -> Result<(bool, Trace), StoreError> {
    in_slot(move || verify_blocking(stored.as_deref(), &password)).await
}

fn verify_blocking(stored: Option<&str>, password: &[u8]) -> (bool, Trace) {
    let real = stored.and_then(|s| match acceptable(s) {
        Ok(hash) => Some(hash),
        Err(why) => {
            tracing::warn!(%why, "a stored password hash is unreadable; that account cannot authenticate");
            None
        }
    });
    let exists = real.is_some();
    let target = match real {
        Some(hash) => hash,
        None => PasswordHash::new(DUMMY_HASH).expect("the dummy hash parses"),
    };
    let fits = password.len() <= MAX_PASSWORD_BYTES;
    let input = &password[..password.len().min(MAX_PASSWORD_BYTES)];
    let cost = argon2::Params::try_from(&target)
        .map(|p| (p.m_cost(), p.t_cost(), p.p_cost()))
        .unwrap_or_default();
    let matched = hasher().verify_password(input, &target).is_ok();
    (
        matched && exists && fits,
        Trace {
            argon2_runs: 1,
            cost,
        },
    )
}

/// A stored PHC string we are willing to compute: argon2id, bounded costs.
fn acceptable(stored: &str) -> Result<PasswordHash, String> {
    let hash = PasswordHash::new(stored).map_err(|e| format!("not a PHC string ({e})"))?;
    if hash.algorithm.as_str() != "argon2id" {
        return Err(format!("algorithm {} is not argon2id", hash.algorithm));
    }
    let params = argon2::Params::try_from(&hash).map_err(|e| format!("parameters: {e}"))?;
    if params.m_cost() > MAX_STORED_M_COST_KIB
        || params.t_cost() > MAX_STORED_T_COST
        || params.p_cost() > MAX_STORED_P_COST
    {
        return Err("costs beyond the accepted bounds".into());
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err("no salt or no tag".into());
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(s.as_bytes().to_vec())
    }

    #[tokio::test]
    async fn new_hashes_are_argon2id_with_the_documented_costs_and_verify() {
        let phc = hash(bytes("correct horse battery")).await.expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let (ok, _) = verify(Some(phc.clone()), bytes("correct horse battery"))
            .await
            .expect("verify");
        assert!(ok);
        let (ok, _) = verify(Some(phc), bytes("correct horse batterz"))
            .await
            .expect("verify");
        assert!(!ok);
    }

    #[test]
    fn the_dummy_hash_has_the_costs_of_new_hashes() {
        let dummy = acceptable(DUMMY_HASH).expect("dummy parses");
        let params = argon2::Params::try_from(&dummy).expect("params");
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (M_COST_KIB, T_COST, P_COST)
        );
        assert_eq!(params.output_len(), Some(32));
        // Nothing (not even the empty password) matches it as a real account.
        assert!(!verify_blocking(None, b"").0);
    }

    #[test]
    fn unreadable_and_costly_stored_hashes_never_match_and_cost_the_same() {
        let planted = "$argon2id$v=19$m=4194304,t=2,p=1$Z3pBgQR8yhDOHbr1Y2jgbg$iQ1/VtXxWbdj47A0Yaqkj5+dYH9RO39B3hZ3u+V4D9s";
        for stored in [
            "garbage",
            "$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
            planted,
        ] {
            let (ok, trace) = verify_blocking(Some(stored), b"anything");
            assert!(!ok, "{stored}");
            assert_eq!(trace.cost, (M_COST_KIB, T_COST, P_COST), "{stored}");
        }
    }

    #[test]
    fn an_overlong_password_is_hashed_and_refused() {
        let phc = hasher()
            .hash_password(&[b'a'; MAX_PASSWORD_BYTES])
            .expect("hash")
            .to_string();
        let (ok, _) = verify_blocking(Some(&phc), &[b'a'; MAX_PASSWORD_BYTES + 1]);
        assert!(!ok);
        let (ok, _) = verify_blocking(Some(&phc), &[b'a'; MAX_PASSWORD_BYTES]);
        assert!(ok);
    }
}

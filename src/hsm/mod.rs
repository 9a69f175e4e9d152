//! The only module that talks to the PKCS#11 token (see docs/architecture.md).
//!
//! It loads the module named in the configuration, finds the token by label, logs in
//! once, and lends pooled sessions to each operation. Its operations sign, recover
//! content-encryption keys, generate and import keys and report health; none of them
//! returns private key bytes, because the keys are created `CKA_SENSITIVE` and not
//! `CKA_EXTRACTABLE` and no code here asks for their values.
//!
//! Every function on [`Hsm`] blocks; async callers go through [`Hsm::call`], which runs
//! the work on the blocking pool under a timeout.

mod bench;
mod custody;
mod error;
mod health;
mod keys;
mod ops;
pub mod pin;
mod pool;
pub mod provision;
mod signer;
#[cfg(test)]
mod testing;
mod workers;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::ObjectHandle;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Limit, Slot};
use cryptoki::types::AuthPin;
use secrecy::SecretString;

pub use custody::{CustodyCheck, CustodyReport, Findings, KeyKind, Refusal, TokenProbe};
pub use error::{HsmError, Result};
pub use health::{MechanismSupport, TokenHealth};
pub use keys::{GeneratedKey, KeyAlgorithm, KeyId, KeyInfo, KeyRole, KeyUsage};
pub use ops::{ContentKey, KeyTransport, OaepHash, OaepParams, SignatureScheme, oaep_decode_fixed};
pub use pool::PoolUsage;
pub use signer::{TokenSignature, TokenSigner, signature_algorithm};

use error::poisons_session;
use pool::SessionPool;

/// How to reach the token. Built from the configuration by the caller.
pub struct HsmConfig {
    pub module: PathBuf,
    pub token_label: String,
    pub pin: SecretString,
    pub max_sessions: usize,
    pub operation_timeout: Duration,
    pub acquire_timeout: Duration,
}

/// A logged-in token with a session pool. Cheap to clone.
#[derive(Clone)]
pub struct Hsm {
    inner: Arc<Inner>,
}

struct Inner {
    module: PathBuf,
    label: String,
    slot: Slot,
    ctx: Pkcs11,
    pin: AuthPin,
    pool: SessionPool,
    /// One thread per pooled session; async callers queue their work here.
    workers: workers::Workers,
    operation_timeout: Duration,
    acquire_timeout: Duration,
    /// Private key handles by CKA_ID. Handles are valid in every session of this
    /// application; a handle the token no longer accepts is looked up again.
    handles: Mutex<HashMap<KeyId, ObjectHandle>>,
    /// Where operations, errors and pool waits are counted (`serve` attaches it).
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
}

/// Key generation is slow on software tokens (RSA-3072 takes seconds): it gets at
/// least this long whatever the per-operation timeout says.
const KEYGEN_MIN_TIMEOUT: Duration = Duration::from_secs(120);

impl Hsm {
    /// Loads the module, finds the token, logs in and opens the first pooled session.
    pub fn open(config: HsmConfig) -> Result<Hsm> {
        let ctx = load_module(&config.module)?;
        let slot = find_token(&ctx, &config.module, &config.token_label)?;
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| HsmError::token("get token info", e))?;
        let token_limit = match info.max_rw_session_count() {
            Limit::Max(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
            _ => usize::MAX,
        };
        let capacity = config.max_sessions.min(token_limit).max(1);
        let pin = config.pin;
        let first = ctx
            .open_rw_session(slot)
            .map_err(|e| HsmError::token("open session", e))?;
        login(&first, &pin, &config.token_label)?;
        tracing::info!(
            module = %config.module.display(),
            token = %config.token_label,
            slot = slot.id(),
            sessions = capacity,
            "token opened"
        );
        Ok(Hsm {
            inner: Arc::new(Inner {
                module: config.module,
                label: config.token_label,
                slot,
                pool: SessionPool::new(ctx.clone(), slot, capacity, first),
                workers: workers::Workers::start(capacity)?,
                ctx,
                pin,
                operation_timeout: config.operation_timeout,
                acquire_timeout: config.acquire_timeout,
                handles: Mutex::new(HashMap::new()),
                metrics: std::sync::OnceLock::new(),
            }),
        })
    }

    pub fn token_label(&self) -> &str {
        &self.inner.label
    }

    /// Counts this token's operations, errors and pool waits in `metrics` from now on
    /// (once; a second call is ignored).
    pub fn attach_metrics(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.inner.metrics.set(metrics);
    }

    pub fn pool_usage(&self) -> PoolUsage {
        self.inner.pool.usage()
    }

    /// Runs `work` on one of the token's worker threads (one per pooled session),
    /// bounded by the acquire and operation timeouts. A timed-out operation keeps its
    /// session until the token returns; the caller gets [`HsmError::Timeout`] (or
    /// [`HsmError::Busy`] if no worker took it in time), both transient.
    pub async fn call<T, F>(&self, operation: &'static str, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Hsm) -> Result<T> + Send + 'static,
    {
        self.call_within(operation, self.inner.operation_timeout, work)
            .await
    }

    /// Like [`Hsm::call`] with the longer key-generation timeout.
    pub async fn call_keygen<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Hsm) -> Result<T> + Send + 'static,
    {
        let timeout = self.inner.operation_timeout.max(KEYGEN_MIN_TIMEOUT);
        self.call_within("generate key pair", timeout, work).await
    }

    async fn call_within<T, F>(
        &self,
        operation: &'static str,
        timeout: Duration,
        work: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Hsm) -> Result<T> + Send + 'static,
    {
        let hsm = self.clone();
        let Some(metrics) = self.inner.metrics.get().cloned() else {
            return self
                .inner
                .workers
                .run(operation, self.inner.acquire_timeout, timeout, move || {
                    work(&hsm)
                })
                .await;
        };
        let queued = std::time::Instant::now();
        let on_worker = metrics.clone();
        let result = self
            .inner
            .workers
            .run(operation, self.inner.acquire_timeout, timeout, move || {
                on_worker.token_wait(queued.elapsed());
                work(&hsm)
            })
            .await;
        let error = match &result {
            Ok(_) => None,
            Err(HsmError::Busy { .. }) => Some("busy"),
            Err(HsmError::Timeout { .. }) => Some("timeout"),
            Err(_) => Some("error"),
        };
        metrics.token_operation(operation, queued.elapsed(), error);
        result
    }

    /// Borrows a session for `work`. A session that failed at the session level is
    /// closed and the work retried once on another; a lost login is restored once.
    /// Only for work that may safely run twice (reads, signatures, decryption):
    /// anything that creates objects in the token goes through
    /// [`Hsm::with_session_once`].
    pub(crate) fn with_session<T>(&self, work: impl Fn(&Session) -> Result<T>) -> Result<T> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut session = self.inner.pool.acquire(self.inner.acquire_timeout)?;
            let err = match work(&session) {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let Some(rv) = err.rv() else { return Err(err) };
            if poisons_session(rv) {
                session.mark_broken();
            }
            if attempt > 1 {
                return Err(err);
            }
            if rv == RvError::UserNotLoggedIn {
                tracing::warn!("token login lost; logging in again");
                login(&session, &self.inner.pin, &self.inner.label)?;
            } else if !poisons_session(rv) {
                return Err(err);
            }
        }
    }

    /// Borrows a session for work that must not run twice: key generation, import,
    /// object creation. A session that fails after the token has already created
    /// something would otherwise make a second key pair and orphan the first; here the
    /// caller gets the error (a broken session is still closed) and removes what was
    /// created.
    pub(crate) fn with_session_once<T>(
        &self,
        work: impl FnOnce(&Session) -> Result<T>,
    ) -> Result<T> {
        let mut session = self.inner.pool.acquire(self.inner.acquire_timeout)?;
        let result = work(&session);
        if let Err(err) = &result
            && err.rv().is_some_and(poisons_session)
        {
            session.mark_broken();
        }
        result
    }

    /// Logs `session` in unless the application is logged in already.
    pub(crate) fn ensure_logged_in(&self, session: &Session) -> Result<()> {
        login(session, &self.inner.pin, &self.inner.label)
    }
}

impl Hsm {
    /// Runs `op` with the handle of the private key `id`: from the cache when known,
    /// else found by `CKA_ID` (one `C_FindObjects` per key, not per operation). A handle
    /// the token rejects is evicted, found again and the operation retried once.
    pub(crate) fn with_private_key<T>(
        &self,
        session: &Session,
        id: &KeyId,
        op: impl Fn(ObjectHandle) -> Result<T>,
    ) -> Result<T> {
        let cached = self.handles().get(id).copied();
        let handle = match cached {
            Some(handle) => handle,
            None => self.find_and_cache(session, id)?,
        };
        match op(handle) {
            Err(err)
                if cached.is_some()
                    && matches!(
                        err.rv(),
                        Some(RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid)
                    ) =>
            {
                self.forget_key(id);
                let handle = self.find_and_cache(session, id)?;
                op(handle)
            }
            result => result,
        }
    }

    fn find_and_cache(&self, session: &Session, id: &KeyId) -> Result<ObjectHandle> {
        let handle = keys::require_private_key(session, id)?;
        self.handles().insert(id.clone(), handle);
        Ok(handle)
    }

    pub(crate) fn forget_key(&self, id: &KeyId) {
        self.handles().remove(id);
    }

    fn handles(&self) -> std::sync::MutexGuard<'_, HashMap<KeyId, ObjectHandle>> {
        // The map holds plain values; a panic elsewhere cannot leave it half-updated.
        self.inner
            .handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// How long [`finalize_modules`] waits for the token's worker threads to stop.
const FINALIZE_WAIT: Duration = Duration::from_secs(10);

/// The modules this process loaded, each initialised once (see [`load_module`]).
static LOADED: std::sync::OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = std::sync::OnceLock::new();

/// Calls `C_Finalize` on every module this process loaded, once it is done with the
/// token: call it last, when no `Hsm` is in use any more (the end of `main`). Without
/// it, SoftHSM2's static state is torn down by the C++ runtime at `exit`, in an order
/// against OpenSSL's own `atexit` clean-up that can end in "double free or
/// corruption". A module finalised here answers `CKR_CRYPTOKI_NOT_INITIALIZED` to any
/// straggler instead of crashing. The token's worker threads are joined first: a
/// thread still exiting frees its OpenSSL state inside the module. If one is still
/// inside the token after [`FINALIZE_WAIT`], the module is left as it is.
pub fn finalize_modules() {
    let Some(loaded) = LOADED.get() else { return };
    if !workers::join_all(FINALIZE_WAIT) {
        tracing::warn!(
            seconds = FINALIZE_WAIT.as_secs(),
            "a token worker is still busy in the token; its module is not finalised"
        );
        return;
    }
    let Ok(mut loaded) = loaded.lock() else {
        return;
    };
    for (path, ctx) in loaded.drain() {
        if let Err(e) = ctx.finalize() {
            tracing::debug!(module = %path.display(), error = %e, "C_Finalize failed");
        }
    }
}

/// The module at `path`, loaded and initialised once per process. Every `Hsm` and the
/// provisioning code share that one context, and it is never dropped: when the last
/// `Pkcs11` handle of a module goes away the library is unloaded (`dlclose`) without
/// `C_Finalize`, SoftHSM2's static state is destroyed under whatever the next handle
/// loads again, and the process can die with a double free — `smimegate init` opens the
/// token more than once. Keeping the context for the life of the process avoids both the
/// unload and a `C_Finalize` on some unrelated thread; [`finalize_modules`] ends it
/// when the process is done.
fn load_module(path: &Path) -> Result<Pkcs11> {
    let loaded = LOADED.get_or_init(|| Mutex::new(HashMap::new()));
    let mut loaded = loaded.lock().map_err(|_| HsmError::Library {
        operation: "load module",
        reason: "the module table is poisoned".into(),
    })?;
    if let Some(ctx) = loaded.get(path) {
        return Ok(ctx.clone());
    }
    if !path.exists() {
        return Err(HsmError::ModuleLoad {
            path: path.to_path_buf(),
            reason: "file not found".into(),
        });
    }
    let ctx = Pkcs11::new(path).map_err(|e| HsmError::ModuleLoad {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
            loaded.insert(path.to_path_buf(), ctx.clone());
            Ok(ctx)
        }
        Err(e) => Err(HsmError::ModuleLoad {
            path: path.to_path_buf(),
            reason: format!("C_Initialize failed: {}", describe(&e)),
        }),
    }
}

fn find_token(ctx: &Pkcs11, module: &Path, label: &str) -> Result<Slot> {
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(|e| HsmError::token("list slots", e))?;
    let mut present = Vec::new();
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| HsmError::token("get token info", e))?;
        if info.label().trim_end() == label {
            return Ok(slot);
        }
        present.push(format!("'{}'", info.label().trim_end()));
    }
    Err(HsmError::TokenNotFound {
        label: label.to_string(),
        module: module.to_path_buf(),
        present: if present.is_empty() {
            "none".into()
        } else {
            present.join(", ")
        },
    })
}

fn login(session: &Session, pin: &AuthPin, label: &str) -> Result<()> {
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(
            RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
            _,
        )) => Err(HsmError::WrongPin {
            label: label.to_string(),
        }),
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(HsmError::PinLocked {
            label: label.to_string(),
        }),
        Err(e) => Err(HsmError::token("login", e)),
    }
}

/// `CKR_ATTRIBUTE_SENSITIVE` style name of a return value, for messages and reports.
pub fn ckr_name(rv: RvError) -> String {
    let debug = format!("{rv:?}");
    let mut name = String::from("CKR");
    for ch in debug.chars() {
        if ch.is_ascii_uppercase() {
            name.push('_');
        }
        name.push(ch.to_ascii_uppercase());
    }
    name
}

fn describe(err: &CkError) -> String {
    match err {
        CkError::Pkcs11(rv, _) => ckr_name(*rv),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_values_get_their_specification_names() {
        assert_eq!(
            ckr_name(RvError::AttributeSensitive),
            "CKR_ATTRIBUTE_SENSITIVE"
        );
        assert_eq!(ckr_name(RvError::KeyUnextractable), "CKR_KEY_UNEXTRACTABLE");
        assert_eq!(
            ckr_name(RvError::AttributeReadOnly),
            "CKR_ATTRIBUTE_READ_ONLY"
        );
    }
}

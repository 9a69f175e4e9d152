//! Measurement helpers for `smimegate token bench`: a bare signing loop on one session
//! (the baseline the pool is compared against), and disposal of the throwaway key.

use std::time::{Duration, Instant};

use super::error::{HsmError, Result};
use super::keys::{KeyId, require_private_key};
use super::{Hsm, SignatureScheme};

impl Hsm {
    /// Signs `data` in a tight loop on a single borrowed session for `duration`, with
    /// no pool round trip and no thread hand-off per signature. Returns the count.
    pub fn bare_sign_loop(
        &self,
        id: &KeyId,
        scheme: SignatureScheme,
        data: &[u8],
        duration: Duration,
    ) -> Result<u64> {
        let session = self.inner.pool.acquire(self.inner.acquire_timeout)?;
        let key = require_private_key(&session, id)?;
        let deadline = Instant::now() + duration;
        let mut count = 0u64;
        while Instant::now() < deadline {
            // Same work per signature as `Hsm::sign`, minus the pool.
            let input = if scheme.is_ecdsa() {
                use sha2::Digest;
                sha2::Sha256::digest(data).to_vec()
            } else {
                data.to_vec()
            };
            let mechanism = if scheme.is_ecdsa() {
                cryptoki::mechanism::Mechanism::Ecdsa
            } else {
                cryptoki::mechanism::Mechanism::Sha256RsaPkcs
            };
            session
                .sign(&mechanism, key, &input)
                .map_err(|e| HsmError::token("sign", e))?;
            count += 1;
        }
        Ok(count)
    }

    /// Destroys both halves of a key pair. Only for the benchmark's own throwaway key:
    /// mailbox keys are never destroyed, so old mail stays readable.
    pub(crate) fn destroy_bench_key(&self, id: &KeyId) -> Result<()> {
        self.forget_key(id);
        self.with_session(|session| {
            let handles = session
                .find_objects(&[cryptoki::object::Attribute::Id(id.as_bytes().to_vec())])
                .map_err(|e| HsmError::token("find bench key", e))?;
            for handle in handles {
                session
                    .destroy_object(handle)
                    .map_err(|e| HsmError::token("destroy bench key", e))?;
            }
            Ok(())
        })
    }
}

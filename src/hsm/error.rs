//! Errors of the token layer, classified as transient (the caller retries or answers
//! `4xx`) or permanent (configuration or input is wrong; retrying will not help).

use std::path::PathBuf;

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    #[error("cannot load PKCS#11 module {path}: {reason}")]
    ModuleLoad { path: PathBuf, reason: String },
    #[error("no token labelled '{label}' in module {module} (tokens present: {present})")]
    TokenNotFound {
        label: String,
        module: PathBuf,
        present: String,
    },
    #[error("the token refused the PIN (wrong PIN for token '{label}')")]
    WrongPin { label: String },
    #[error("the user PIN of token '{label}' is locked")]
    PinLocked { label: String },
    #[error("no token PIN: {0}")]
    PinSource(String),
    #[error(
        "the PIN file {} may be read or changed by group or others (mode {mode:04o}): run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    PinFileMode { path: PathBuf, mode: u32 },
    #[error("no key with CKA_ID {id} in the token")]
    KeyNotFound { id: String },
    #[error("the token refused mechanism {mechanism}: {reason}")]
    MechanismRefused {
        mechanism: &'static str,
        reason: String,
    },
    #[error("token operation '{operation}' failed: {}", super::ckr_name(*rv))]
    Token {
        operation: &'static str,
        rv: RvError,
    },
    #[error("token operation '{operation}' failed: {reason}")]
    Library {
        operation: &'static str,
        reason: String,
    },
    #[error("token operation '{operation}' timed out after {seconds}s")]
    Timeout {
        operation: &'static str,
        seconds: u64,
    },
    #[error("no free token session within {seconds}s (all {capacity} in use)")]
    Busy { seconds: u64, capacity: usize },
    #[error("invalid key material: {0}")]
    InvalidKey(String),
    #[error("encoding error: {0}")]
    Encoding(String),
    #[error("token task failed: {0}")]
    Task(String),
}

impl HsmError {
    /// True when the same operation may succeed later: the caller should answer `4xx`
    /// (or retry), never a permanent failure.
    pub fn is_transient(&self) -> bool {
        match self {
            HsmError::Timeout { .. } | HsmError::Busy { .. } | HsmError::Task(_) => true,
            HsmError::Token { rv, .. } => is_transient_rv(*rv),
            _ => false,
        }
    }

    pub(crate) fn token(operation: &'static str, err: CkError) -> Self {
        match err {
            CkError::Pkcs11(rv, _) => HsmError::Token { operation, rv },
            other => HsmError::Library {
                operation,
                reason: other.to_string(),
            },
        }
    }

    /// The PKCS#11 return value behind this error, if any.
    pub fn rv(&self) -> Option<RvError> {
        match self {
            HsmError::Token { rv, .. } => Some(*rv),
            _ => None,
        }
    }
}

/// Return values that describe a state of the device or session rather than a fault of
/// the request.
pub(crate) fn is_transient_rv(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::DeviceError
            | RvError::DeviceMemory
            | RvError::DeviceRemoved
            | RvError::HostMemory
            | RvError::SessionClosed
            | RvError::SessionHandleInvalid
            | RvError::SessionCount
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::UserNotLoggedIn
            | RvError::FunctionCanceled
            | RvError::CryptokiNotInitialized
    )
}

/// Whether a failed `function` with return value `rv` says that the ciphertext it was
/// given does not decrypt (a bad padding, a value out of range, the wrong length).
/// Only these belong to the sender's message: RFC 3218 §2.3 has the caller continue
/// with a random key so that they all look alike. Every other answer is about the
/// token, the session or the login (wrong or locked PIN, device removed, library not
/// initialised, key not there) and is the gateway's own failure, never a verdict on
/// the message.
///
/// `CKR_GENERAL_ERROR` and `CKR_FUNCTION_FAILED` count as data errors only when they
/// come from `C_Decrypt` itself, after `C_DecryptInit` accepted key and mechanism:
/// SoftHSM2 answers every RSA decryption that fails, bad PKCS#1 v1.5 or OAEP padding
/// included, with `CKR_GENERAL_ERROR` (SoftHSM.cpp, `AsymDecrypt`). Reading that as
/// the gateway's failure would answer a Bleichenbacher probe with `4xx` and a
/// well-padded block with `250`: the oracle RFC 3218 exists to remove.
pub(crate) fn describes_ciphertext(rv: RvError, function: Function) -> bool {
    match rv {
        RvError::EncryptedDataInvalid
        | RvError::EncryptedDataLenRange
        | RvError::DataInvalid
        | RvError::DataLenRange => true,
        RvError::GeneralError | RvError::FunctionFailed => matches!(function, Function::Decrypt),
        _ => false,
    }
}

/// Session-level failures after which the session must not go back into the pool.
pub(crate) fn poisons_session(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionClosed
            | RvError::SessionHandleInvalid
            | RvError::DeviceError
            | RvError::DeviceRemoved
            | RvError::TokenNotPresent
            | RvError::OperationActive
    )
}

pub type Result<T> = std::result::Result<T, HsmError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_values_about_the_ciphertext_describe_it() {
        for rv in [
            RvError::EncryptedDataInvalid,
            RvError::EncryptedDataLenRange,
            RvError::DataInvalid,
            RvError::DataLenRange,
        ] {
            assert!(describes_ciphertext(rv, Function::Decrypt), "{rv:?}");
            assert!(describes_ciphertext(rv, Function::DecryptInit), "{rv:?}");
        }
        // SoftHSM2's answer to a bad padding, but only from C_Decrypt itself.
        for rv in [RvError::GeneralError, RvError::FunctionFailed] {
            assert!(describes_ciphertext(rv, Function::Decrypt), "{rv:?}");
            assert!(!describes_ciphertext(rv, Function::DecryptInit), "{rv:?}");
            assert!(!describes_ciphertext(rv, Function::Login), "{rv:?}");
            assert!(!describes_ciphertext(rv, Function::FindObjects), "{rv:?}");
        }
        for rv in [
            RvError::PinIncorrect,
            RvError::PinLocked,
            RvError::PinExpired,
            RvError::UserNotLoggedIn,
            RvError::DeviceRemoved,
            RvError::DeviceError,
            RvError::DeviceMemory,
            RvError::CryptokiNotInitialized,
            RvError::SessionHandleInvalid,
            RvError::SessionClosed,
            RvError::TokenNotPresent,
            RvError::KeyHandleInvalid,
            RvError::ObjectHandleInvalid,
            RvError::OperationActive,
            RvError::OperationNotInitialized,
            RvError::HostMemory,
            RvError::FunctionCanceled,
        ] {
            for function in [Function::Decrypt, Function::DecryptInit] {
                assert!(!describes_ciphertext(rv, function), "{rv:?} {function:?}");
            }
        }
    }
}

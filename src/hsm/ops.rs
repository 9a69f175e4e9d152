//! Private-key operations, performed by the token: signatures and recovery of
//! content-encryption keys. The host supplies data and receives results; the key never
//! leaves the token.

use cryptoki::error::RvError;
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use sha2::Digest;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use subtle::{Choice, ConditionallySelectable};
use zeroize::Zeroizing;

use super::Hsm;
use super::error::{HsmError, Result, describes_ciphertext};
use super::keys::KeyId;

mod oaep;

/// Signature algorithms the token is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureScheme {
    RsaPkcs1Sha256,
    RsaPkcs1Sha384,
    RsaPkcs1Sha512,
    RsaPssSha256,
    RsaPssSha384,
    RsaPssSha512,
    EcdsaSha256,
    EcdsaSha384,
    EcdsaSha512,
}

impl SignatureScheme {
    pub fn is_ecdsa(self) -> bool {
        matches!(
            self,
            SignatureScheme::EcdsaSha256
                | SignatureScheme::EcdsaSha384
                | SignatureScheme::EcdsaSha512
        )
    }

    /// Output length of the digest this scheme uses, in bytes.
    pub fn digest_len(self) -> usize {
        use SignatureScheme::*;
        match self {
            RsaPkcs1Sha256 | RsaPssSha256 | EcdsaSha256 => 32,
            RsaPkcs1Sha384 | RsaPssSha384 | EcdsaSha384 => 48,
            RsaPkcs1Sha512 | RsaPssSha512 | EcdsaSha512 => 64,
        }
    }

    fn pss_params(self) -> PkcsPssParams {
        let (hash_alg, mgf) = match self.digest_len() {
            32 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
            48 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
            _ => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
        };
        PkcsPssParams {
            hash_alg,
            mgf,
            s_len: (self.digest_len() as u64).into(),
        }
    }

    fn mechanism_name(self) -> &'static str {
        use SignatureScheme::*;
        match self {
            RsaPkcs1Sha256 => "CKM_SHA256_RSA_PKCS",
            RsaPkcs1Sha384 => "CKM_SHA384_RSA_PKCS",
            RsaPkcs1Sha512 => "CKM_SHA512_RSA_PKCS",
            RsaPssSha256 => "CKM_SHA256_RSA_PKCS_PSS",
            RsaPssSha384 => "CKM_SHA384_RSA_PKCS_PSS",
            RsaPssSha512 => "CKM_SHA512_RSA_PKCS_PSS",
            EcdsaSha256 | EcdsaSha384 | EcdsaSha512 => "CKM_ECDSA",
        }
    }
}

/// Hash functions RSAES-OAEP may name, for the label hash and for MGF1 (RFC 8017
/// Appendix A.2.1, RFC 4055 §4.1). RFC 8551 §2.3 recommends SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OaepHash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl OaepHash {
    pub fn name(self) -> &'static str {
        match self {
            OaepHash::Sha1 => "sha1",
            OaepHash::Sha224 => "sha224",
            OaepHash::Sha256 => "sha256",
            OaepHash::Sha384 => "sha384",
            OaepHash::Sha512 => "sha512",
        }
    }

    fn mechanism(self) -> MechanismType {
        match self {
            OaepHash::Sha1 => MechanismType::SHA1,
            OaepHash::Sha224 => MechanismType::SHA224,
            OaepHash::Sha256 => MechanismType::SHA256,
            OaepHash::Sha384 => MechanismType::SHA384,
            OaepHash::Sha512 => MechanismType::SHA512,
        }
    }

    fn mgf(self) -> PkcsMgfType {
        match self {
            OaepHash::Sha1 => PkcsMgfType::MGF1_SHA1,
            OaepHash::Sha224 => PkcsMgfType::MGF1_SHA224,
            OaepHash::Sha256 => PkcsMgfType::MGF1_SHA256,
            OaepHash::Sha384 => PkcsMgfType::MGF1_SHA384,
            OaepHash::Sha512 => PkcsMgfType::MGF1_SHA512,
        }
    }
}

/// RSAES-OAEP-params (RFC 8017 Appendix A.2.1): the label hash, the MGF1 hash (they may
/// differ) and the label from pSourceFunc (empty unless given).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OaepParams {
    pub hash: OaepHash,
    pub mgf1_hash: OaepHash,
    pub label: Vec<u8>,
}

impl std::fmt::Debug for OaepParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OaepParams")
            .field("hash", &self.hash)
            .field("mgf1_hash", &self.mgf1_hash)
            .field("label_len", &self.label.len())
            .finish()
    }
}

/// How a content-encryption key was protected for an RSA recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyTransport {
    RsaPkcs1v15,
    RsaOaep(OaepParams),
}

impl KeyTransport {
    /// RSAES-OAEP with `hash` for the label and MGF1 and an empty label.
    pub fn oaep(hash: OaepHash) -> KeyTransport {
        KeyTransport::RsaOaep(OaepParams {
            hash,
            mgf1_hash: hash,
            label: Vec::new(),
        })
    }

    fn mechanism_name(&self) -> &'static str {
        match self {
            KeyTransport::RsaPkcs1v15 => "CKM_RSA_PKCS",
            KeyTransport::RsaOaep(p) => match p.hash {
                OaepHash::Sha1 => "CKM_RSA_PKCS_OAEP (SHA-1)",
                OaepHash::Sha224 => "CKM_RSA_PKCS_OAEP (SHA-224)",
                OaepHash::Sha256 => "CKM_RSA_PKCS_OAEP (SHA-256)",
                OaepHash::Sha384 => "CKM_RSA_PKCS_OAEP (SHA-384)",
                OaepHash::Sha512 => "CKM_RSA_PKCS_OAEP (SHA-512)",
            },
        }
    }
}

/// EME-OAEP decoding on the host (RFC 8017 §7.1.2), as used after a raw RSA
/// decryption in the token: the content-encryption key of length `len` and whether the
/// encoding was valid, without branching on the encoded message.
pub fn oaep_decode_fixed(em: &[u8], p: &OaepParams, len: usize) -> (Zeroizing<Vec<u8>>, Choice) {
    oaep::decode_fixed(em, p, len)
}

/// A content-encryption key recovered for one message, or a random stand-in of the
/// same length when recovery failed (RFC 3218 §2.3). The caller runs the content
/// decryption with it either way and looks at [`ContentKey::genuine`] only at the end,
/// so a bad padding, a key of the wrong length and a corrupted content all take the
/// same path and end in the same error.
pub struct ContentKey {
    key: Zeroizing<Vec<u8>>,
    genuine: Choice,
}

impl ContentKey {
    /// `candidate` when `genuine` is set and it has `len` bytes, else `len` random
    /// bytes. The selection does not branch on `genuine`.
    pub fn select(candidate: &[u8], genuine: Choice, len: usize) -> Result<ContentKey> {
        let mut key = Zeroizing::new(vec![0u8; len]);
        getrandom::fill(&mut key).map_err(|e| HsmError::Library {
            operation: "random content key",
            reason: e.to_string(),
        })?;
        let genuine = genuine & Choice::from(u8::from(candidate.len() == len));
        for (i, byte) in key.iter_mut().enumerate() {
            byte.conditional_assign(&candidate.get(i).copied().unwrap_or(0), genuine);
        }
        Ok(ContentKey { key, genuine })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.key
    }

    /// Set when the key is the one the sender encrypted, clear for a stand-in.
    pub fn genuine(&self) -> Choice {
        self.genuine
    }

    fn from_token(outcome: Unwrapped, len: usize) -> Result<ContentKey> {
        match outcome {
            Unwrapped::Plain(key) => ContentKey::select(&key, Choice::from(1), len),
            Unwrapped::Rejected => ContentKey::select(&[], Choice::from(0), len),
        }
    }
}

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentKey(..)")
    }
}

/// What the token made of an encrypted key: the plaintext, or a refusal that describes
/// the ciphertext (bad padding, out of range), which RFC 3218 treats like any other
/// failure to recover the key.
enum Unwrapped {
    Plain(Zeroizing<Vec<u8>>),
    Rejected,
}

/// Sorts the token's answer to `C_Decrypt`: data errors are [`Unwrapped::Rejected`],
/// mechanism refusals [`HsmError::MechanismRefused`], everything else (login, session,
/// device, library) a token error that the caller reports as the gateway's own failure.
fn unwrapped(
    result: std::result::Result<Vec<u8>, cryptoki::error::Error>,
    mechanism: &'static str,
) -> Result<Unwrapped> {
    match result {
        Ok(plain) => Ok(Unwrapped::Plain(Zeroizing::new(plain))),
        Err(cryptoki::error::Error::Pkcs11(rv, function)) if describes_ciphertext(rv, function) => {
            Ok(Unwrapped::Rejected)
        }
        Err(e) => Err(refused_or_token(mechanism, "decrypt key", e)),
    }
}

/// OAEP hash pairs a token refused, by module and token label: asked once per process,
/// then decoded on the host straight away.
static OAEP_REFUSED: Mutex<Vec<RefusalKey>> = Mutex::new(Vec::new());

type RefusalKey = (PathBuf, String, OaepHash, OaepHash);

fn refusal_key(hsm: &Hsm, p: &OaepParams) -> RefusalKey {
    (
        hsm.inner.module.clone(),
        hsm.inner.label.clone(),
        p.hash,
        p.mgf1_hash,
    )
}

/// Return values by which a token says "not this mechanism or these parameters".
fn is_mechanism_refusal(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::MechanismInvalid
            | RvError::MechanismParamInvalid
            | RvError::ArgumentsBad
            | RvError::FunctionNotSupported
            | RvError::KeyFunctionNotPermitted
            | RvError::KeyTypeInconsistent
    )
}

fn refused_or_token(
    mechanism: &'static str,
    operation: &'static str,
    err: cryptoki::error::Error,
) -> HsmError {
    match err {
        cryptoki::error::Error::Pkcs11(rv, _) if is_mechanism_refusal(rv) => {
            HsmError::MechanismRefused {
                mechanism,
                reason: super::ckr_name(rv),
            }
        }
        other => HsmError::token(operation, other),
    }
}

impl Hsm {
    /// Signs `data` with the key `id`. RSA schemes hash inside the token; ECDSA hashes
    /// on the host (SoftHSM offers only raw `CKM_ECDSA`) and the raw r‖s result is
    /// returned DER-encoded (`ECDSA-Sig-Value`), as X.509 and CMS expect.
    pub fn sign(&self, id: &KeyId, scheme: SignatureScheme, data: &[u8]) -> Result<Vec<u8>> {
        let digest = scheme.is_ecdsa().then(|| host_digest(scheme, data));
        let raw = self.with_session(|session| {
            let pss;
            let mechanism = match scheme {
                SignatureScheme::RsaPkcs1Sha256 => Mechanism::Sha256RsaPkcs,
                SignatureScheme::RsaPkcs1Sha384 => Mechanism::Sha384RsaPkcs,
                SignatureScheme::RsaPkcs1Sha512 => Mechanism::Sha512RsaPkcs,
                SignatureScheme::RsaPssSha256 => {
                    pss = scheme.pss_params();
                    Mechanism::Sha256RsaPkcsPss(pss)
                }
                SignatureScheme::RsaPssSha384 => {
                    pss = scheme.pss_params();
                    Mechanism::Sha384RsaPkcsPss(pss)
                }
                SignatureScheme::RsaPssSha512 => {
                    pss = scheme.pss_params();
                    Mechanism::Sha512RsaPkcsPss(pss)
                }
                SignatureScheme::EcdsaSha256
                | SignatureScheme::EcdsaSha384
                | SignatureScheme::EcdsaSha512 => Mechanism::Ecdsa,
            };
            let input = digest.as_deref().unwrap_or(data);
            self.with_private_key(session, id, |key| {
                session
                    .sign(&mechanism, key, input)
                    .map_err(|e| refused_or_token(scheme.mechanism_name(), "sign", e))
            })
        })?;
        if scheme.is_ecdsa() {
            let sig = p256::ecdsa::Signature::from_slice(&raw)
                .map_err(|e| HsmError::Encoding(format!("ECDSA signature from token: {e}")))?;
            Ok(sig.to_der().as_bytes().to_vec())
        } else {
            Ok(raw)
        }
    }

    /// Recovers a content-encryption key that was encrypted to the RSA key `id`, of any
    /// length. When the token refuses the OAEP parameters (SoftHSM refuses every hash but
    /// SHA-1), or the OAEP label is not empty, the token does raw RSA and the host
    /// decodes OAEP. A key that does not
    /// decrypt is `CKR_ENCRYPTED_DATA_INVALID`; a mechanism the token refuses outright
    /// is [`HsmError::MechanismRefused`]. For messages use
    /// [`Hsm::recover_content_key`], which keeps every failure alike (RFC 3218).
    pub fn decrypt_key_transport(
        &self,
        id: &KeyId,
        transport: KeyTransport,
        encrypted_key: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let rejected = || HsmError::Token {
            operation: "decrypt key",
            rv: RvError::EncryptedDataInvalid,
        };
        let outcome = match &transport {
            KeyTransport::RsaPkcs1v15 => self.token_unwrap(id, &transport, encrypted_key)?,
            KeyTransport::RsaOaep(p) => match self.oaep_in_token(id, &transport, encrypted_key)? {
                Some(outcome) => outcome,
                None => match self.raw_rsa(id, encrypted_key)? {
                    Some(em) => match oaep::decode(&em, p) {
                        Some(key) => Unwrapped::Plain(key),
                        None => Unwrapped::Rejected,
                    },
                    None => Unwrapped::Rejected,
                },
            },
        };
        match outcome {
            Unwrapped::Plain(key) => Ok(key),
            Unwrapped::Rejected => Err(rejected()),
        }
    }

    /// Recovers the content-encryption key of one message, expected to be `len` bytes,
    /// as RFC 3218 §2.3 asks: any failure that is about the encrypted key (bad PKCS#1
    /// or OAEP padding, a value out of range, a key of the wrong length) yields a random
    /// key of `len` bytes marked not genuine, with no branch on which it was. `Err` is
    /// left for failures of the token itself (login, session, device, a key that is not
    /// there) and for a mechanism it refuses with no fallback.
    pub fn recover_content_key(
        &self,
        id: &KeyId,
        transport: &KeyTransport,
        encrypted_key: &[u8],
        len: usize,
    ) -> Result<ContentKey> {
        match transport {
            KeyTransport::RsaPkcs1v15 => {
                ContentKey::from_token(self.token_unwrap(id, transport, encrypted_key)?, len)
            }
            KeyTransport::RsaOaep(p) => {
                if let Some(outcome) = self.oaep_in_token(id, transport, encrypted_key)? {
                    return ContentKey::from_token(outcome, len);
                }
                match self.raw_rsa(id, encrypted_key)? {
                    Some(em) => {
                        let (key, genuine) = oaep::decode_fixed(&em, p, len);
                        ContentKey::select(&key, genuine, len)
                    }
                    None => ContentKey::select(&[], Choice::from(0), len),
                }
            }
        }
    }

    /// `C_Decrypt` with the mechanism `transport` names.
    fn token_unwrap(
        &self,
        id: &KeyId,
        transport: &KeyTransport,
        encrypted_key: &[u8],
    ) -> Result<Unwrapped> {
        let name = transport.mechanism_name();
        self.with_session(|session| {
            let mechanism = match transport {
                KeyTransport::RsaPkcs1v15 => Mechanism::RsaPkcs,
                KeyTransport::RsaOaep(p) => Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
                    p.hash.mechanism(),
                    p.mgf1_hash.mgf(),
                    if p.label.is_empty() {
                        PkcsOaepSource::empty()
                    } else {
                        PkcsOaepSource::data_specified(&p.label)
                    },
                )),
            };
            self.with_private_key(session, id, |key| {
                unwrapped(session.decrypt(&mechanism, key, encrypted_key), name)
            })
        })
    }

    /// OAEP in the token, unless this token refused these parameters before. `None`
    /// when it refuses them (remembered): the caller decodes on the host.
    fn oaep_in_token(
        &self,
        id: &KeyId,
        transport: &KeyTransport,
        encrypted_key: &[u8],
    ) -> Result<Option<Unwrapped>> {
        let KeyTransport::RsaOaep(p) = transport else {
            return self.token_unwrap(id, transport, encrypted_key).map(Some);
        };
        // A label goes to the host decoder straight away: SoftHSM2 checks the hashes of
        // CK_RSA_PKCS_OAEP_PARAMS but ignores pSourceData, so its OAEP decodes with an
        // empty label and fails every labelled message as if it were corrupted.
        if !p.label.is_empty() {
            return Ok(None);
        }
        let key = refusal_key(self, p);
        let refused = || OAEP_REFUSED.lock().unwrap_or_else(PoisonError::into_inner);
        if refused().contains(&key) {
            return Ok(None);
        }
        match self.token_unwrap(id, transport, encrypted_key) {
            Err(HsmError::MechanismRefused { mechanism, reason }) => {
                tracing::info!(
                    mechanism,
                    reason,
                    mgf1 = p.mgf1_hash.name(),
                    "the token refuses these OAEP parameters; decoding OAEP on the host \
                     after raw RSA in the token from now on"
                );
                refused().push(key);
                Ok(None)
            }
            other => other.map(Some),
        }
    }

    /// Raw RSA (`CKM_RSA_X_509`) in the token: the encoded message EM, left-padded to
    /// the modulus length k (RFC 8017 §7.1.2 step 2c: I2OSP(m, k)), or `None` when the
    /// token says the ciphertext is out of range. The private key stays in the token.
    fn raw_rsa(&self, id: &KeyId, encrypted_key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>> {
        self.with_session(|session| {
            self.with_private_key(session, id, |key| {
                let k = modulus_len(session, key)?;
                let raw = session.decrypt(&Mechanism::RsaX509, key, encrypted_key);
                match unwrapped(raw, "CKM_RSA_X_509")? {
                    Unwrapped::Plain(m) if m.len() <= k => {
                        let mut em = Zeroizing::new(vec![0u8; k]);
                        em[k - m.len()..].copy_from_slice(&m);
                        Ok(Some(em))
                    }
                    Unwrapped::Plain(_) | Unwrapped::Rejected => Ok(None),
                }
            })
        })
    }

    /// ECDH with the EC key `id` and the peer's uncompressed point: returns the shared
    /// secret Z (RFC 5753 feeds it to the X9.63 KDF). The private key stays in the token;
    /// Z is derived as a session object, read once and destroyed.
    pub fn ecdh_shared_secret(&self, id: &KeyId, peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.with_session(|session| {
            let params = Ecdh1DeriveParams::new(EcKdf::null(), peer_point);
            let template = [
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Token(false),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::ValueLen(32u64.into()),
            ];
            let derived = self.with_private_key(session, id, |key| {
                session
                    .derive_key(&Mechanism::Ecdh1Derive(params), key, &template)
                    .map_err(|e| refused_or_token("CKM_ECDH1_DERIVE", "derive shared secret", e))
            })?;
            let value = session
                .get_attributes(derived, &[cryptoki::object::AttributeType::Value])
                .map_err(|e| HsmError::token("read shared secret", e));
            let destroyed = session.destroy_object(derived);
            let secret = value?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::Value(v) => Some(Zeroizing::new(v)),
                    _ => None,
                })
                .ok_or_else(|| HsmError::Encoding("token returned no shared secret".into()))?;
            destroyed.map_err(|e| HsmError::token("destroy shared secret", e))?;
            Ok(secret)
        })
    }
}

/// The modulus length k in bytes of the RSA key `key` (its public `CKA_MODULUS`).
fn modulus_len(session: &Session, key: ObjectHandle) -> Result<usize> {
    let modulus = session
        .get_attributes(key, &[AttributeType::Modulus])
        .map_err(|e| HsmError::token("read modulus", e))?
        .into_iter()
        .find_map(|a| match a {
            Attribute::Modulus(m) => Some(m),
            _ => None,
        })
        .ok_or_else(|| HsmError::Encoding("the token gave no RSA modulus".into()))?;
    let leading = modulus.iter().take_while(|&&b| b == 0).count();
    Ok(modulus.len() - leading)
}

fn host_digest(scheme: SignatureScheme, data: &[u8]) -> Vec<u8> {
    match scheme.digest_len() {
        32 => sha2::Sha256::digest(data).to_vec(),
        48 => sha2::Sha384::digest(data).to_vec(),
        _ => sha2::Sha512::digest(data).to_vec(),
    }
}

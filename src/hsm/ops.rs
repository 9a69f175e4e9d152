//! Private-key operations, performed by the token: signatures and recovery of
//! content-encryption keys. The host supplies data and receives results; the key never
//! leaves the token.

use cryptoki::error::RvError;
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use sha2::Digest;
use zeroize::Zeroizing;

use super::Hsm;
use super::error::{HsmError, Result};
use super::keys::KeyId;

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

/// How a content-encryption key was protected for an RSA recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTransport {
    RsaPkcs1v15,
    RsaOaepSha1,
    RsaOaepSha256,
}

impl KeyTransport {
    fn mechanism_name(self) -> &'static str {
        match self {
            KeyTransport::RsaPkcs1v15 => "CKM_RSA_PKCS",
            KeyTransport::RsaOaepSha1 => "CKM_RSA_PKCS_OAEP (SHA-1)",
            KeyTransport::RsaOaepSha256 => "CKM_RSA_PKCS_OAEP (SHA-256)",
        }
    }
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

    /// Recovers a content-encryption key that was encrypted to the RSA key `id`.
    /// A mechanism the token refuses (SoftHSM refuses OAEP with SHA-256) is reported as
    /// [`HsmError::MechanismRefused`].
    pub fn decrypt_key_transport(
        &self,
        id: &KeyId,
        transport: KeyTransport,
        encrypted_key: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.with_session(|session| {
            let mechanism = match transport {
                KeyTransport::RsaPkcs1v15 => Mechanism::RsaPkcs,
                KeyTransport::RsaOaepSha1 => Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
                    MechanismType::SHA1,
                    PkcsMgfType::MGF1_SHA1,
                    PkcsOaepSource::empty(),
                )),
                KeyTransport::RsaOaepSha256 => Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
                    MechanismType::SHA256,
                    PkcsMgfType::MGF1_SHA256,
                    PkcsOaepSource::empty(),
                )),
            };
            self.with_private_key(session, id, |key| {
                session
                    .decrypt(&mechanism, key, encrypted_key)
                    .map(Zeroizing::new)
                    .map_err(|e| refused_or_token(transport.mechanism_name(), "decrypt key", e))
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

fn host_digest(scheme: SignatureScheme, data: &[u8]) -> Vec<u8> {
    match scheme.digest_len() {
        32 => sha2::Sha256::digest(data).to_vec(),
        48 => sha2::Sha384::digest(data).to_vec(),
        _ => sha2::Sha512::digest(data).to_vec(),
    }
}

//! Key pairs in the token: generation, import from PKCS#8, lookup by `CKA_ID`.
//!
//! Private keys are always created with `CKA_TOKEN`, `CKA_PRIVATE` and `CKA_SENSITIVE`
//! true and `CKA_EXTRACTABLE` false. Their `CKA_ID` is the subject key identifier of
//! the public key (SHA-1 of the subjectPublicKey bits, RFC 5280 §4.2.1.2 method 1), so
//! a certificate's SKI names its key.

use std::fmt;

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5912::{ID_EC_PUBLIC_KEY, RSA_ENCRYPTION, SECP_256_R_1};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use der::asn1::{BitString, OctetString, UintRef};
use der::referenced::OwnedToRef;
use der::{Decode, Encode};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use zeroize::{Zeroize, Zeroizing};

use super::Hsm;
use super::error::{HsmError, Result};

/// Key kinds the gateway creates.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum KeyAlgorithm {
    Rsa2048,
    Rsa3072,
    P256,
}

impl KeyAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa2048 => "rsa2048",
            KeyAlgorithm::Rsa3072 => "rsa3072",
            KeyAlgorithm::P256 => "p256",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "rsa2048" => Some(KeyAlgorithm::Rsa2048),
            "rsa3072" => Some(KeyAlgorithm::Rsa3072),
            "p256" => Some(KeyAlgorithm::P256),
            _ => None,
        }
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072)
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a key pair is for; decides which operations the token will allow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// Signs certificates and CRLs only.
    CertificateAuthority,
    /// Signs mail, and recovers content keys (RSA: decrypt/unwrap; EC: derive).
    Mailbox,
    /// Signs TLS handshakes of the SMTP listeners only.
    TlsServer,
}

/// A key's `CKA_ID`: the subject key identifier of its public key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyId(Vec<u8>);

impl KeyId {
    pub fn new(bytes: Vec<u8>) -> Self {
        KeyId(bytes)
    }

    pub fn from_hex(hex_id: &str) -> Option<Self> {
        hex::decode(hex_id)
            .ok()
            .filter(|b| !b.is_empty())
            .map(KeyId)
    }

    /// The subject key identifier of `spki`, which is the `CKA_ID` we give its key.
    pub fn for_public_key(spki: &SubjectPublicKeyInfoOwned) -> Result<Self> {
        let ski = SubjectKeyIdentifier::try_from(spki.owned_to_ref())
            .map_err(|e| HsmError::Encoding(format!("subject key identifier: {e}")))?;
        Ok(KeyId(ski.0.as_bytes().to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.to_hex())
    }
}

/// A freshly generated key pair: its id and public key. Nothing private.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    pub id: KeyId,
    pub algorithm: KeyAlgorithm,
    pub public_key: SubjectPublicKeyInfoOwned,
}

/// What the token says about one private key. Nothing private.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub label: String,
    pub algorithm: Option<KeyAlgorithm>,
    pub key_type: String,
}

impl Hsm {
    /// Generates a key pair inside the token. The private half is sensitive and
    /// non-extractable; `label` is stored as `CKA_LABEL` on both halves.
    pub fn generate_key_pair(
        &self,
        algorithm: KeyAlgorithm,
        role: KeyRole,
        label: &str,
    ) -> Result<GeneratedKey> {
        self.with_session(|session| {
            // A provisional id; replaced by the SKI once the public key is known.
            let provisional = random_id()?;
            let (public_template, private_template, mechanism) =
                keygen_templates(algorithm, role, label, &provisional)?;
            let (public, private) = session
                .generate_key_pair(&mechanism, &public_template, &private_template)
                .map_err(|e| HsmError::token("generate key pair", e))?;
            let public_key = read_public_key(session, public, algorithm)?;
            let id = KeyId::for_public_key(&public_key)?;
            for handle in [public, private] {
                session
                    .update_attributes(handle, &[Attribute::Id(id.0.clone())])
                    .map_err(|e| HsmError::token("set key id", e))?;
            }
            tracing::info!(key_id = %id, %algorithm, label, "generated key pair in token");
            Ok(GeneratedKey {
                id: id.clone(),
                algorithm,
                public_key,
            })
        })
    }

    /// Imports a private key given as PKCS#8 DER into the token as sensitive and
    /// non-extractable (used for uploaded PKCS#12). The plaintext buffers are zeroised
    /// before this returns, whatever the outcome.
    pub fn import_pkcs8(&self, pkcs8_der: Zeroizing<Vec<u8>>, label: &str) -> Result<GeneratedKey> {
        let parsed = pkcs8::PrivateKeyInfoRef::from_der(&pkcs8_der)
            .map_err(|e| HsmError::InvalidKey(format!("not a PKCS#8 private key: {e}")))?;
        let oid = parsed.algorithm.oid;
        let (algorithm, public_key, mut private_template, public_template) =
            if oid == RSA_ENCRYPTION {
                rsa_import_templates(parsed.private_key.as_bytes())?
            } else if oid == ID_EC_PUBLIC_KEY {
                let curve: Option<ObjectIdentifier> = parsed
                    .algorithm
                    .parameters
                    .map(|p| p.decode_as())
                    .transpose()
                    .map_err(|e| HsmError::InvalidKey(format!("EC parameters: {e}")))?;
                ec_import_templates(parsed.private_key.as_bytes(), curve)?
            } else {
                return Err(HsmError::InvalidKey(format!(
                    "unsupported key algorithm {oid}"
                )));
            };
        let id = KeyId::for_public_key(&public_key)?;
        let common = [
            Attribute::Token(true),
            Attribute::Id(id.0.clone()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        private_template.extend(common.iter().cloned());
        private_template.extend([
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
        ]);
        let mut public = public_template;
        public.extend(common.iter().cloned());
        public.extend([
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Private(false),
            Attribute::Verify(true),
        ]);
        let result = self.with_session(|session| {
            session
                .create_object(&private_template)
                .map_err(|e| HsmError::token("import private key", e))?;
            session
                .create_object(&public)
                .map_err(|e| HsmError::token("import public key", e))?;
            Ok(())
        });
        zeroize_template(&mut private_template);
        drop(pkcs8_der);
        result?;
        tracing::info!(key_id = %id, %algorithm, label, "imported private key into token");
        Ok(GeneratedKey {
            id,
            algorithm,
            public_key,
        })
    }

    /// The private key with this `CKA_ID`, if the token holds one.
    pub fn find_key(&self, id: &KeyId) -> Result<Option<KeyInfo>> {
        self.with_session(|session| match find_private_key(session, id)? {
            Some(handle) => Ok(Some(describe_key(session, handle)?)),
            None => Ok(None),
        })
    }

    /// Every private key in the token.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        self.with_session(|session| {
            let handles = session
                .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
                .map_err(|e| HsmError::token("list keys", e))?;
            handles
                .into_iter()
                .map(|h| describe_key(session, h))
                .collect()
        })
    }

    /// The public key stored beside the private key with this id.
    pub fn public_key(&self, id: &KeyId) -> Result<SubjectPublicKeyInfoOwned> {
        self.with_session(|session| {
            let handle = session
                .find_objects(&[
                    Attribute::Class(ObjectClass::PUBLIC_KEY),
                    Attribute::Id(id.0.clone()),
                ])
                .map_err(|e| HsmError::token("find public key", e))?
                .into_iter()
                .next()
                .ok_or_else(|| HsmError::KeyNotFound { id: id.to_hex() })?;
            let algorithm = key_algorithm(session, handle)?
                .ok_or_else(|| HsmError::InvalidKey("unsupported public key type".into()))?;
            read_public_key(session, handle, algorithm)
        })
    }
}

pub(crate) fn find_private_key(session: &Session, id: &KeyId) -> Result<Option<ObjectHandle>> {
    let handles = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(id.0.clone()),
        ])
        .map_err(|e| HsmError::token("find key", e))?;
    Ok(handles.into_iter().next())
}

pub(crate) fn require_private_key(session: &Session, id: &KeyId) -> Result<ObjectHandle> {
    find_private_key(session, id)?.ok_or_else(|| HsmError::KeyNotFound { id: id.to_hex() })
}

fn describe_key(session: &Session, handle: ObjectHandle) -> Result<KeyInfo> {
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::Id,
                AttributeType::Label,
                AttributeType::KeyType,
            ],
        )
        .map_err(|e| HsmError::token("read key attributes", e))?;
    let mut info = KeyInfo {
        id: String::new(),
        label: String::new(),
        algorithm: None,
        key_type: "unknown".into(),
    };
    for attr in attrs {
        match attr {
            Attribute::Id(id) => info.id = hex::encode(id),
            Attribute::Label(label) => info.label = String::from_utf8_lossy(&label).into_owned(),
            Attribute::KeyType(kt) => info.key_type = kt.to_string(),
            _ => {}
        }
    }
    info.algorithm = key_algorithm(session, handle)?;
    Ok(info)
}

/// Which of our algorithms a key object is, if any.
pub(crate) fn key_algorithm(
    session: &Session,
    handle: ObjectHandle,
) -> Result<Option<KeyAlgorithm>> {
    let attrs = session
        .get_attributes(handle, &[AttributeType::KeyType])
        .map_err(|e| HsmError::token("read key type", e))?;
    let key_type = attrs.into_iter().find_map(|a| match a {
        Attribute::KeyType(kt) => Some(kt),
        _ => None,
    });
    match key_type {
        Some(kt) if kt == KeyType::RSA => {
            let bits = session
                .get_attributes(handle, &[AttributeType::Modulus])
                .map_err(|e| HsmError::token("read modulus", e))?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::Modulus(m) => Some(significant_bits(&m)),
                    _ => None,
                });
            Ok(match bits {
                Some(2048) => Some(KeyAlgorithm::Rsa2048),
                Some(3072) => Some(KeyAlgorithm::Rsa3072),
                _ => None,
            })
        }
        Some(kt) if kt == KeyType::EC => {
            let params = session
                .get_attributes(handle, &[AttributeType::EcParams])
                .map_err(|e| HsmError::token("read EC parameters", e))?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::EcParams(p) => Some(p),
                    _ => None,
                });
            let p256 = p256_params()?;
            Ok(params.filter(|p| *p == p256).map(|_| KeyAlgorithm::P256))
        }
        _ => Ok(None),
    }
}

fn significant_bits(be: &[u8]) -> usize {
    let trimmed: &[u8] = match be.iter().position(|&b| b != 0) {
        Some(i) => &be[i..],
        None => return 0,
    };
    trimmed.len() * 8 - trimmed[0].leading_zeros() as usize
}

fn random_id() -> Result<Vec<u8>> {
    let mut id = vec![0u8; 20];
    getrandom::fill(&mut id).map_err(|e| HsmError::Library {
        operation: "random id",
        reason: e.to_string(),
    })?;
    Ok(id)
}

fn p256_params() -> Result<Vec<u8>> {
    SECP_256_R_1
        .to_der()
        .map_err(|e| HsmError::Encoding(e.to_string()))
}

type KeygenTemplates = (
    Vec<Attribute>,
    Vec<Attribute>,
    cryptoki::mechanism::Mechanism<'static>,
);

fn keygen_templates(
    algorithm: KeyAlgorithm,
    role: KeyRole,
    label: &str,
    id: &[u8],
) -> Result<KeygenTemplates> {
    let recovers_keys = role == KeyRole::Mailbox;
    use cryptoki::mechanism::Mechanism;
    let label = label.as_bytes().to_vec();
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.clone()),
    ];
    let mut private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label),
    ];
    let mechanism = match algorithm {
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 => {
            let bits: u64 = if algorithm == KeyAlgorithm::Rsa2048 {
                2048
            } else {
                3072
            };
            public.extend([
                Attribute::ModulusBits(bits.into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                Attribute::Encrypt(recovers_keys),
                Attribute::Wrap(recovers_keys),
            ]);
            private.extend([
                Attribute::Decrypt(recovers_keys),
                Attribute::Unwrap(recovers_keys),
                Attribute::Derive(false),
            ]);
            Mechanism::RsaPkcsKeyPairGen
        }
        KeyAlgorithm::P256 => {
            public.push(Attribute::EcParams(p256_params()?));
            private.extend([
                Attribute::Derive(recovers_keys),
                Attribute::Decrypt(false),
                Attribute::Unwrap(false),
            ]);
            Mechanism::EccKeyPairGen
        }
    };
    Ok((public, private, mechanism))
}

/// Builds the SubjectPublicKeyInfo from a public key object.
fn read_public_key(
    session: &Session,
    public: ObjectHandle,
    algorithm: KeyAlgorithm,
) -> Result<SubjectPublicKeyInfoOwned> {
    if algorithm.is_rsa() {
        let attrs = session
            .get_attributes(
                public,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )
            .map_err(|e| HsmError::token("read public key", e))?;
        let mut modulus = None;
        let mut exponent = None;
        for attr in attrs {
            match attr {
                Attribute::Modulus(m) => modulus = Some(m),
                Attribute::PublicExponent(e) => exponent = Some(e),
                _ => {}
            }
        }
        let (Some(n), Some(e)) = (modulus, exponent) else {
            return Err(HsmError::InvalidKey(
                "public key lacks modulus or exponent".into(),
            ));
        };
        rsa_spki(&n, &e)
    } else {
        let point = session
            .get_attributes(public, &[AttributeType::EcPoint])
            .map_err(|e| HsmError::token("read public key", e))?
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(p) => Some(p),
                _ => None,
            })
            .ok_or_else(|| HsmError::InvalidKey("public key lacks CKA_EC_POINT".into()))?;
        // PKCS#11 says DER OCTET STRING; some modules return the raw point.
        let raw = match OctetString::from_der(&point) {
            Ok(os) => os.into_bytes().into_vec(),
            Err(_) => point,
        };
        ec_spki(&raw)
    }
}

fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Result<SubjectPublicKeyInfoOwned> {
    let enc = |e: der::Error| HsmError::Encoding(e.to_string());
    let key = rsa::pkcs1::RsaPublicKey {
        modulus: UintRef::new(modulus).map_err(enc)?,
        public_exponent: UintRef::new(exponent).map_err(enc)?,
    };
    let der = key.to_der().map_err(enc)?;
    Ok(SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: RSA_ENCRYPTION,
            parameters: Some(der::asn1::Null.into()),
        },
        subject_public_key: BitString::from_bytes(&der).map_err(enc)?,
    })
}

fn ec_spki(point: &[u8]) -> Result<SubjectPublicKeyInfoOwned> {
    let enc = |e: der::Error| HsmError::Encoding(e.to_string());
    if point.len() != 65 || point[0] != 0x04 {
        return Err(HsmError::InvalidKey(
            "EC point is not an uncompressed P-256 point".into(),
        ));
    }
    Ok(SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: ID_EC_PUBLIC_KEY,
            parameters: Some((&SECP_256_R_1).into()),
        },
        subject_public_key: BitString::from_bytes(point).map_err(enc)?,
    })
}

type ImportTemplates = (
    KeyAlgorithm,
    SubjectPublicKeyInfoOwned,
    Vec<Attribute>,
    Vec<Attribute>,
);

fn rsa_import_templates(pkcs1: &[u8]) -> Result<ImportTemplates> {
    let key = rsa::pkcs1::RsaPrivateKeyRef::from_der(pkcs1)
        .map_err(|e| HsmError::InvalidKey(format!("RSA private key: {e}")))?;
    let n = key.modulus.as_bytes();
    let algorithm = match significant_bits(n) {
        2048 => KeyAlgorithm::Rsa2048,
        3072 => KeyAlgorithm::Rsa3072,
        bits => {
            return Err(HsmError::InvalidKey(format!(
                "RSA-{bits} is not accepted (RSA-2048 or RSA-3072)"
            )));
        }
    };
    let public_key = rsa_spki(n, key.public_exponent.as_bytes())?;
    let private = vec![
        Attribute::KeyType(KeyType::RSA),
        Attribute::Modulus(n.to_vec()),
        Attribute::PublicExponent(key.public_exponent.as_bytes().to_vec()),
        Attribute::PrivateExponent(key.private_exponent.as_bytes().to_vec()),
        Attribute::Prime1(key.prime1.as_bytes().to_vec()),
        Attribute::Prime2(key.prime2.as_bytes().to_vec()),
        Attribute::Exponent1(key.exponent1.as_bytes().to_vec()),
        Attribute::Exponent2(key.exponent2.as_bytes().to_vec()),
        Attribute::Coefficient(key.coefficient.as_bytes().to_vec()),
        Attribute::Decrypt(true),
        Attribute::Unwrap(true),
    ];
    let public = vec![
        Attribute::KeyType(KeyType::RSA),
        Attribute::Modulus(n.to_vec()),
        Attribute::PublicExponent(key.public_exponent.as_bytes().to_vec()),
        Attribute::Encrypt(true),
        Attribute::Wrap(true),
    ];
    Ok((algorithm, public_key, private, public))
}

fn ec_import_templates(sec1: &[u8], curve: Option<ObjectIdentifier>) -> Result<ImportTemplates> {
    let key = sec1::EcPrivateKey::from_der(sec1)
        .map_err(|e| HsmError::InvalidKey(format!("EC private key: {e}")))?;
    let curve = curve.or(key.parameters.and_then(|p| p.named_curve()));
    if curve != Some(SECP_256_R_1) {
        return Err(HsmError::InvalidKey(
            "only P-256 EC keys are accepted".into(),
        ));
    }
    let secret = p256::SecretKey::from_slice(key.private_key)
        .map_err(|_| HsmError::InvalidKey("invalid P-256 private scalar".into()))?;
    let point = secret.public_key().to_sec1_bytes().into_vec();
    let public_key = ec_spki(&point)?;
    let params = p256_params()?;
    let private = vec![
        Attribute::KeyType(KeyType::EC),
        Attribute::EcParams(params.clone()),
        Attribute::Value(key.private_key.to_vec()),
        Attribute::Derive(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
    ];
    let public = vec![
        Attribute::KeyType(KeyType::EC),
        Attribute::EcParams(params),
        Attribute::EcPoint(
            OctetString::new(point.to_vec())
                .and_then(|o| o.to_der())
                .map_err(|e| HsmError::Encoding(e.to_string()))?,
        ),
    ];
    Ok((KeyAlgorithm::P256, public_key, private, public))
}

fn zeroize_template(template: &mut [Attribute]) {
    for attr in template.iter_mut() {
        match attr {
            Attribute::PrivateExponent(v)
            | Attribute::Prime1(v)
            | Attribute::Prime2(v)
            | Attribute::Exponent1(v)
            | Attribute::Exponent2(v)
            | Attribute::Coefficient(v)
            | Attribute::Value(v) => v.zeroize(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_length_ignores_leading_zeros() {
        assert_eq!(significant_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(significant_bits(&[0x01]), 1);
        assert_eq!(significant_bits(&[0, 0]), 0);
    }

    #[test]
    fn key_ids_round_trip_through_hex() {
        let id = KeyId::new(vec![0xde, 0xad]);
        assert_eq!(KeyId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(KeyId::from_hex("zz"), None);
        assert_eq!(KeyId::from_hex(""), None);
    }
}

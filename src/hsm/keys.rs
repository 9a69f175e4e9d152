//! Key pairs in the token: generation, import from PKCS#8, lookup by `CKA_ID`.
//!
//! Private keys are always created with `CKA_TOKEN`, `CKA_PRIVATE` and `CKA_SENSITIVE`
//! true and `CKA_EXTRACTABLE` false. Their `CKA_ID` is the subject key identifier of
//! the public key (SHA-1 of the subjectPublicKey bits, RFC 5280 §4.2.1.2 method 1), so
//! a certificate's SKI names its key.

use std::cell::{Cell, RefCell};
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

/// What the token lets a private key do (`CKA_SIGN`, `CKA_DECRYPT`, `CKA_UNWRAP`,
/// `CKA_DERIVE`). Set from the key's [`KeyRole`] when it is generated or imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct KeyUsage {
    pub sign: bool,
    pub decrypt: bool,
    pub unwrap: bool,
    pub derive: bool,
}

impl KeyUsage {
    /// Every key signs. A mailbox key also recovers content keys: RSA by decrypt and
    /// unwrap (key transport), EC by derive (ECDH). CA and TLS keys only sign.
    pub fn for_role(role: KeyRole, rsa: bool) -> Self {
        let recovers_keys = role == KeyRole::Mailbox;
        KeyUsage {
            sign: true,
            decrypt: recovers_keys && rsa,
            unwrap: recovers_keys && rsa,
            derive: recovers_keys && !rsa,
        }
    }

    fn private_attributes(self) -> [Attribute; 4] {
        [
            Attribute::Sign(self.sign),
            Attribute::Decrypt(self.decrypt),
            Attribute::Unwrap(self.unwrap),
            Attribute::Derive(self.derive),
        ]
    }

    /// The matching public-key usages: verify, and for RSA key transport encrypt/wrap.
    fn public_attributes(self, rsa: bool) -> Vec<Attribute> {
        let mut attributes = vec![Attribute::Verify(self.sign)];
        if rsa {
            attributes.extend([
                Attribute::Encrypt(self.decrypt),
                Attribute::Wrap(self.unwrap),
            ]);
        }
        attributes
    }
}

impl fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.sign, "sign"),
            (self.decrypt, "decrypt"),
            (self.unwrap, "unwrap"),
            (self.derive, "derive"),
        ];
        let set: Vec<&str> = names
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        if set.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&set.join(","))
        }
    }
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
    /// What the token lets the key do.
    pub usage: KeyUsage,
}

impl Hsm {
    /// Generates a key pair inside the token. The private half is sensitive and
    /// non-extractable, with the usages of `role`; `label` is stored as `CKA_LABEL` on
    /// both halves. Never retried: if the token fails after `C_GenerateKeyPair`, what it
    /// made is destroyed and the error returned, so no orphan is left and no second
    /// pair made.
    pub fn generate_key_pair(
        &self,
        algorithm: KeyAlgorithm,
        role: KeyRole,
        label: &str,
    ) -> Result<GeneratedKey> {
        // A provisional id marks what this call created until the SKI is known.
        let provisional = random_id()?;
        let (public_template, private_template, mechanism) =
            keygen_templates(algorithm, role, label, &provisional)?;
        let final_id = RefCell::new(None);
        let outcome = self.with_session_once(|session| {
            faults::attempt();
            let (public, private) = session
                .generate_key_pair(&mechanism, &public_template, &private_template)
                .map_err(|e| HsmError::token("generate key pair", e))?;
            faults::after_create(session)?;
            let public_key = read_public_key(session, public, algorithm)?;
            let id = KeyId::for_public_key(&public_key)?;
            *final_id.borrow_mut() = Some(id.clone());
            set_key_id(session, public, private, &id)?;
            Ok(GeneratedKey {
                id,
                algorithm,
                public_key,
            })
        });
        if outcome.is_err() {
            self.discard_partial_key(&provisional, final_id.borrow().as_ref());
        }
        let key = outcome?;
        tracing::info!(key_id = %key.id, %algorithm, label, "generated key pair in token");
        Ok(key)
    }

    /// Imports a private key given as PKCS#8 DER into the token as sensitive and
    /// non-extractable (used for uploaded PKCS#12), with the usages of `role`. The
    /// plaintext buffers are zeroised before this returns, whatever the outcome. Never
    /// retried; a half-done import is removed.
    pub fn import_pkcs8(
        &self,
        pkcs8_der: Zeroizing<Vec<u8>>,
        role: KeyRole,
        label: &str,
    ) -> Result<GeneratedKey> {
        let provisional = random_id()?;
        let import = ImportTemplates::from_pkcs8(&pkcs8_der, role, label, &provisional)?;
        drop(pkcs8_der);
        let renaming = Cell::new(false);
        let outcome = self.with_session_once(|session| {
            faults::attempt();
            let private = session
                .create_object(import.private.attributes())
                .map_err(|e| HsmError::token("import private key", e))?;
            faults::after_create(session)?;
            let public = session
                .create_object(&import.public)
                .map_err(|e| HsmError::token("import public key", e))?;
            renaming.set(true);
            set_key_id(session, public, private, &import.key.id)
        });
        let ImportTemplates { key, private, .. } = import;
        drop(private);
        if outcome.is_err() {
            let final_id = renaming.get().then_some(&key.id);
            self.discard_partial_key(&provisional, final_id);
        }
        outcome?;
        tracing::info!(key_id = %key.id, algorithm = %key.algorithm, label, "imported private key into token");
        Ok(key)
    }

    /// Removes what a failed generation or import created: every object still carrying
    /// the `provisional` id, and — when the failure came while the final id was being
    /// set — a public half already given `final_id` whose private half was not (a key
    /// pair that has both is left alone). Best effort: a failure
    /// is logged, never returned, so the caller reports the original error.
    fn discard_partial_key(&self, provisional: &[u8], final_id: Option<&KeyId>) {
        let outcome = self.with_session(|session| {
            // Logged in, or the token hides private objects from the search.
            self.ensure_logged_in(session)?;
            let mut leftovers = find_all(session, &[Attribute::Id(provisional.to_vec())])?;
            if let Some(id) = final_id
                && find_private_key(session, id)?.is_none()
            {
                leftovers.extend(find_all(
                    session,
                    &[
                        Attribute::Class(ObjectClass::PUBLIC_KEY),
                        Attribute::Id(id.0.clone()),
                    ],
                )?);
            }
            for handle in &leftovers {
                session
                    .destroy_object(*handle)
                    .map_err(|e| HsmError::token("destroy partly created key", e))?;
            }
            Ok(leftovers.len())
        });
        match outcome {
            Ok(0) => {}
            Ok(removed) => tracing::warn!(removed, "removed a partly created key from the token"),
            Err(error) => tracing::error!(
                %error,
                provisional_id = %hex::encode(provisional),
                "could not remove a partly created key from the token; it has no certificate and may be deleted with pkcs11-tool"
            ),
        }
    }

    /// Destroys both halves of a key pair that was made or imported moments ago and
    /// could not be recorded in the database: no certificate names it and nothing was
    /// ever encrypted to it, so nothing is lost. Recorded keys are never destroyed
    /// (old mail must stay readable). Best effort: a failure is logged, never
    /// returned, so the caller reports its original error.
    pub fn discard_unrecorded_key(&self, id: &KeyId) {
        self.forget_key(id);
        let outcome = self.with_session(|session| {
            self.ensure_logged_in(session)?;
            let handles = find_all(session, &[Attribute::Id(id.0.clone())])?;
            for handle in &handles {
                session
                    .destroy_object(*handle)
                    .map_err(|e| HsmError::token("destroy unrecorded key", e))?;
            }
            Ok(handles.len())
        });
        match outcome {
            Ok(removed) => {
                tracing::warn!(key_id = %id, removed, "removed a key that could not be recorded")
            }
            Err(error) => tracing::error!(
                %error,
                key_id = %id,
                "could not remove an unrecorded key from the token; it has no certificate and may be deleted with pkcs11-tool"
            ),
        }
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
        usage: read_usage(session, handle)?,
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

/// The usage attributes of a private key object; an absent attribute counts as false.
pub(crate) fn read_usage(session: &Session, handle: ObjectHandle) -> Result<KeyUsage> {
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::Sign,
                AttributeType::Decrypt,
                AttributeType::Unwrap,
                AttributeType::Derive,
            ],
        )
        .map_err(|e| HsmError::token("read key usage", e))?;
    let mut usage = KeyUsage {
        sign: false,
        decrypt: false,
        unwrap: false,
        derive: false,
    };
    for attr in attrs {
        match attr {
            Attribute::Sign(v) => usage.sign = v,
            Attribute::Decrypt(v) => usage.decrypt = v,
            Attribute::Unwrap(v) => usage.unwrap = v,
            Attribute::Derive(v) => usage.derive = v,
            _ => {}
        }
    }
    Ok(usage)
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

pub(crate) fn random_id() -> Result<Vec<u8>> {
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

/// The attributes every private key gets, generated or imported: a private token
/// object the token will not reveal or let be wrapped.
fn protected_private_attributes(id: &[u8], label: &str) -> [Attribute; 6] {
    [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// The public and private templates and the mechanism for generating a key pair of
/// `algorithm` for `role`. The custody probe uses them too (as session objects), so
/// what it learns about the token holds for the production keys.
pub(crate) fn keygen_templates(
    algorithm: KeyAlgorithm,
    role: KeyRole,
    label: &str,
    id: &[u8],
) -> Result<KeygenTemplates> {
    use cryptoki::mechanism::Mechanism;
    let usage = KeyUsage::for_role(role, algorithm.is_rsa());
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    public.extend(usage.public_attributes(algorithm.is_rsa()));
    let mut private = protected_private_attributes(id, label).to_vec();
    private.extend(usage.private_attributes());
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
            ]);
            Mechanism::RsaPkcsKeyPairGen
        }
        KeyAlgorithm::P256 => {
            public.push(Attribute::EcParams(p256_params()?));
            Mechanism::EccKeyPairGen
        }
    };
    Ok((public, private, mechanism))
}

/// Gives both halves of a new key pair their final `CKA_ID`: the public half first,
/// so that a failure in between leaves the private half findable by its provisional id.
fn set_key_id(
    session: &Session,
    public: ObjectHandle,
    private: ObjectHandle,
    id: &KeyId,
) -> Result<()> {
    for handle in [public, private] {
        session
            .update_attributes(handle, &[Attribute::Id(id.0.clone())])
            .map_err(|e| HsmError::token("set key id", e))?;
    }
    Ok(())
}

fn find_all(session: &Session, template: &[Attribute]) -> Result<Vec<ObjectHandle>> {
    session
        .find_objects(template)
        .map_err(|e| HsmError::token("find objects", e))
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

/// A template that carries private key material. Its secret values are zeroised when
/// it is dropped — after success, on every early return and while unwinding — so no
/// way out of an import leaves key bytes in host memory.
pub(crate) struct SecretTemplate(Vec<Attribute>);

impl SecretTemplate {
    fn new(attributes: Vec<Attribute>) -> Self {
        let mut template = SecretTemplate(Vec::with_capacity(attributes.len() + 16));
        template.extend(attributes);
        template
    }

    fn extend(&mut self, more: impl IntoIterator<Item = Attribute>) {
        self.0.extend(more);
    }

    fn attributes(&self) -> &[Attribute] {
        &self.0
    }

    /// Zeroises every attribute value that is private key material.
    fn wipe(&mut self) {
        for attr in self.0.iter_mut() {
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
        faults::wiped();
    }
}

impl Drop for SecretTemplate {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl fmt::Debug for SecretTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretTemplate({} attributes, redacted)", self.0.len())
    }
}

/// Everything an import creates in the token, built from PKCS#8 before the token is
/// touched.
struct ImportTemplates {
    key: GeneratedKey,
    private: SecretTemplate,
    public: Vec<Attribute>,
}

/// (algorithm, public key, private template with the key material, public template).
type KeyParts = (
    KeyAlgorithm,
    SubjectPublicKeyInfoOwned,
    SecretTemplate,
    Vec<Attribute>,
);

impl ImportTemplates {
    /// The templates for importing `pkcs8_der` for `role`, both halves carrying the
    /// `provisional` id until the import is complete.
    fn from_pkcs8(
        pkcs8_der: &[u8],
        role: KeyRole,
        label: &str,
        provisional: &[u8],
    ) -> Result<Self> {
        let parsed = pkcs8::PrivateKeyInfoRef::from_der(pkcs8_der)
            .map_err(|e| HsmError::InvalidKey(format!("not a PKCS#8 private key: {e}")))?;
        let oid = parsed.algorithm.oid;
        let (algorithm, public_key, mut private, mut public) = if oid == RSA_ENCRYPTION {
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
        // From here on `private` holds key material: any `?` below still zeroises it.
        let id = KeyId::for_public_key(&public_key)?;
        let usage = KeyUsage::for_role(role, algorithm.is_rsa());
        private.extend([Attribute::Class(ObjectClass::PRIVATE_KEY)]);
        private.extend(protected_private_attributes(provisional, label));
        private.extend(usage.private_attributes());
        public.extend([
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Id(provisional.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ]);
        public.extend(usage.public_attributes(algorithm.is_rsa()));
        Ok(ImportTemplates {
            key: GeneratedKey {
                id,
                algorithm,
                public_key,
            },
            private,
            public,
        })
    }
}

fn rsa_import_templates(pkcs1: &[u8]) -> Result<KeyParts> {
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
    let private = SecretTemplate::new(vec![
        Attribute::KeyType(KeyType::RSA),
        Attribute::Modulus(n.to_vec()),
        Attribute::PublicExponent(key.public_exponent.as_bytes().to_vec()),
        Attribute::PrivateExponent(key.private_exponent.as_bytes().to_vec()),
        Attribute::Prime1(key.prime1.as_bytes().to_vec()),
        Attribute::Prime2(key.prime2.as_bytes().to_vec()),
        Attribute::Exponent1(key.exponent1.as_bytes().to_vec()),
        Attribute::Exponent2(key.exponent2.as_bytes().to_vec()),
        Attribute::Coefficient(key.coefficient.as_bytes().to_vec()),
    ]);
    let public = vec![
        Attribute::KeyType(KeyType::RSA),
        Attribute::Modulus(n.to_vec()),
        Attribute::PublicExponent(key.public_exponent.as_bytes().to_vec()),
    ];
    Ok((algorithm, public_key, private, public))
}

fn ec_import_templates(sec1: &[u8], curve: Option<ObjectIdentifier>) -> Result<KeyParts> {
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
    let params = p256_params()?;
    let private = SecretTemplate::new(vec![
        Attribute::KeyType(KeyType::EC),
        Attribute::EcParams(params.clone()),
        Attribute::Value(key.private_key.to_vec()),
    ]);
    let public_key = ec_spki(&point)?;
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

/// Test-only fault injection: counts attempts at creating objects, lets a test make
/// the token fail right after it created something, and counts template wipes.
/// Compiled to nothing outside `cfg(test)`.
mod faults {
    use cryptoki::session::Session;

    use super::Result;

    #[cfg(test)]
    pub(crate) type Hook = Box<dyn Fn(&Session) -> Result<()>>;

    #[cfg(test)]
    thread_local! {
        pub(crate) static ATTEMPTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        pub(crate) static WIPES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        pub(crate) static AFTER_CREATE: std::cell::RefCell<Option<Hook>> =
            const { std::cell::RefCell::new(None) };
    }

    /// An attempt at creating objects (key generation or import) begins.
    pub(super) fn attempt() {
        #[cfg(test)]
        ATTEMPTS.with(|n| n.set(n.get() + 1));
    }

    /// The token has just created an object; a test may fail here.
    #[cfg(test)]
    pub(super) fn after_create(session: &Session) -> Result<()> {
        AFTER_CREATE.with(|hook| hook.borrow().as_ref().map_or(Ok(()), |f| f(session)))
    }

    #[cfg(not(test))]
    pub(super) fn after_create(_session: &Session) -> Result<()> {
        Ok(())
    }

    /// A [`super::SecretTemplate`] was wiped.
    pub(super) fn wiped() {
        #[cfg(test)]
        WIPES.with(|n| n.set(n.get() + 1));
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
    use cryptoki::error::RvError;
    use p256::pkcs8::EncodePrivateKey;

    use crate::hsm::testing;

    /// How many objects (of any class, private ones included) carry `label`.
    fn objects_labelled(hsm: &Hsm, label: &str) -> usize {
        hsm.with_session(|session| {
            hsm.ensure_logged_in(session)?;
            session
                .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
                .map(|found| found.len())
                .map_err(|e| HsmError::token("find objects", e))
        })
        .expect("count objects")
    }

    fn set_after_create(hook: Option<faults::Hook>) {
        faults::AFTER_CREATE.with(|h| *h.borrow_mut() = hook);
        faults::ATTEMPTS.with(|n| n.set(0));
    }

    fn attempts() -> usize {
        faults::ATTEMPTS.with(|n| n.get())
    }

    fn p256_pkcs8() -> Zeroizing<Vec<u8>> {
        let secret = p256::SecretKey::from_slice(&[0x17; 32]).expect("scalar");
        Zeroizing::new(secret.to_pkcs8_der().expect("PKCS#8").as_bytes().to_vec())
    }

    #[test]
    fn a_keygen_that_loses_its_login_after_generating_is_not_repeated_and_leaves_nothing() {
        let hsm = testing::hsm();
        let label = "keygen lost login";
        // The token made the pair; then the login is gone (as after a token reset),
        // so giving the private key its CKA_ID fails with CKR_USER_NOT_LOGGED_IN.
        set_after_create(Some(Box::new(|session: &Session| {
            session
                .logout()
                .map_err(|e| HsmError::token("injected logout", e))
        })));
        let result = hsm.generate_key_pair(KeyAlgorithm::P256, KeyRole::Mailbox, label);
        let tries = attempts();
        set_after_create(None);
        // SoftHSM then answers CKR_OBJECT_HANDLE_INVALID for the hidden private key.
        assert!(result.is_err());
        assert_eq!(tries, 1, "C_GenerateKeyPair was attempted {tries} times");
        assert_eq!(objects_labelled(hsm, label), 0, "orphaned key objects left");
        // The token is usable again afterwards.
        hsm.generate_key_pair(KeyAlgorithm::P256, KeyRole::Mailbox, "after")
            .expect("keygen after recovery");
    }

    #[test]
    fn a_keygen_whose_session_breaks_after_generating_is_not_repeated_and_leaves_nothing() {
        let hsm = testing::hsm();
        let label = "keygen broken session";
        set_after_create(Some(Box::new(|_: &Session| {
            Err(HsmError::Token {
                operation: "injected",
                rv: RvError::SessionHandleInvalid,
            })
        })));
        let result = hsm.generate_key_pair(KeyAlgorithm::P256, KeyRole::Mailbox, label);
        let tries = attempts();
        set_after_create(None);
        assert!(result.is_err());
        assert_eq!(tries, 1, "C_GenerateKeyPair was attempted {tries} times");
        assert_eq!(objects_labelled(hsm, label), 0, "orphaned key objects left");
    }

    #[test]
    fn an_import_whose_session_breaks_after_the_private_key_is_not_repeated_and_leaves_nothing() {
        let hsm = testing::hsm();
        let label = "import broken session";
        set_after_create(Some(Box::new(|_: &Session| {
            Err(HsmError::Token {
                operation: "injected",
                rv: RvError::SessionHandleInvalid,
            })
        })));
        let wipes_before = faults::WIPES.with(|n| n.get());
        let result = hsm.import_pkcs8(p256_pkcs8(), KeyRole::Mailbox, label);
        let tries = attempts();
        set_after_create(None);
        assert!(result.is_err());
        assert_eq!(tries, 1, "the import was attempted {tries} times");
        assert_eq!(objects_labelled(hsm, label), 0, "orphaned key objects left");
        assert_eq!(faults::WIPES.with(|n| n.get()), wipes_before + 1);
    }

    fn secret_template() -> SecretTemplate {
        SecretTemplate::new(vec![
            Attribute::KeyType(KeyType::RSA),
            Attribute::Modulus(vec![0xc3; 256]),
            Attribute::PrivateExponent(vec![0x5a; 256]),
            Attribute::Prime1(vec![0x5b; 128]),
            Attribute::Prime2(vec![0x5c; 128]),
            Attribute::Exponent1(vec![0x5d; 128]),
            Attribute::Exponent2(vec![0x5e; 128]),
            Attribute::Coefficient(vec![0x5f; 128]),
            Attribute::Value(vec![0x60; 32]),
            Attribute::Label(b"label".to_vec()),
        ])
    }

    #[test]
    fn wiping_a_secret_template_clears_the_key_material_and_keeps_the_rest() {
        let mut template = secret_template();
        template.wipe();
        for attr in template.attributes() {
            match attr {
                Attribute::PrivateExponent(v)
                | Attribute::Prime1(v)
                | Attribute::Prime2(v)
                | Attribute::Exponent1(v)
                | Attribute::Exponent2(v)
                | Attribute::Coefficient(v)
                | Attribute::Value(v) => assert!(v.is_empty(), "{attr:?} not wiped"),
                Attribute::Modulus(v) => assert_eq!(v, &vec![0xc3; 256]),
                Attribute::Label(v) => assert_eq!(v, b"label"),
                _ => {}
            }
        }
        assert!(!format!("{template:?}").contains("5a"), "{template:?}");
    }

    fn wipes() -> usize {
        faults::WIPES.with(|n| n.get())
    }

    fn fails_after_building_a_template() -> Result<()> {
        let _template = secret_template();
        Err(HsmError::InvalidKey("a later step failed".into()))?;
        Ok(())
    }

    #[test]
    fn a_secret_template_is_wiped_on_every_way_out() {
        let before = wipes();
        // Each template is wiped once, when it goes out of scope.
        drop(secret_template());
        assert_eq!(wipes(), before + 1, "dropped");
        assert!(fails_after_building_a_template().is_err());
        assert_eq!(wipes(), before + 2, "early return");
        let unwound = std::panic::catch_unwind(|| {
            let _template = secret_template();
            panic!("injected");
        });
        assert!(unwound.is_err());
        assert_eq!(wipes(), before + 3, "unwinding");
        // The import's own templates, built and dropped without a token.
        let import = ImportTemplates::from_pkcs8(&p256_pkcs8(), KeyRole::Mailbox, "x", &[1; 20])
            .expect("templates");
        drop(import);
        assert_eq!(wipes(), before + 4, "import templates");
    }

    #[test]
    fn usages_follow_the_role() {
        let mailbox_rsa = KeyUsage::for_role(KeyRole::Mailbox, true);
        assert!(mailbox_rsa.sign && mailbox_rsa.decrypt && mailbox_rsa.unwrap);
        assert!(!mailbox_rsa.derive);
        let mailbox_ec = KeyUsage::for_role(KeyRole::Mailbox, false);
        assert_eq!(mailbox_ec.to_string(), "sign,derive");
        for role in [KeyRole::CertificateAuthority, KeyRole::TlsServer] {
            for rsa in [true, false] {
                assert_eq!(KeyUsage::for_role(role, rsa).to_string(), "sign");
            }
        }
    }
}

//! Proof that a key cannot leave the token. The report is read from the token itself:
//! the protection attributes, and the token's answer to each way of getting the key
//! out (reading the secret attribute, wrapping it, relaxing its attributes).
//! `smimegate token custody` prints it for every key; the tests assert on it.

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::Session;

use super::error::{HsmError, Result};
use super::keys::{KeyId, require_private_key};
use super::{Hsm, ckr_name};

/// The token's answer to one attempt at getting a key out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", content = "code", rename_all = "lowercase")]
pub enum Refusal {
    /// The token refused with this return value (e.g. `CKR_KEY_UNEXTRACTABLE`).
    Refused(String),
    /// The token did what was asked: the key is not protected against this.
    Allowed,
}

impl Refusal {
    pub fn is_refused_with(&self, code: &str) -> bool {
        matches!(self, Refusal::Refused(c) if c == code)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CustodyReport {
    pub id: String,
    pub label: String,
    pub token: bool,
    pub private: bool,
    pub sensitive: bool,
    pub always_sensitive: bool,
    pub extractable: bool,
    pub never_extractable: bool,
    pub local: bool,
    /// Reading CKA_PRIVATE_EXPONENT (RSA) or CKA_VALUE (EC).
    pub read_secret: Refusal,
    /// C_WrapKey under a fresh AES session key.
    pub wrap: Refusal,
    /// C_SetAttributeValue CKA_EXTRACTABLE = true.
    pub set_extractable: Refusal,
    /// C_SetAttributeValue CKA_SENSITIVE = false.
    pub clear_sensitive: Refusal,
}

impl CustodyReport {
    /// True when every attribute and every attempt says the key stays in the token.
    /// (Imported keys are not `always_sensitive`/`never_extractable`, by definition,
    /// but are otherwise held the same way.)
    pub fn key_cannot_leave(&self) -> bool {
        self.token
            && self.private
            && self.sensitive
            && !self.extractable
            && matches!(self.read_secret, Refusal::Refused(_))
            && matches!(self.wrap, Refusal::Refused(_))
            && matches!(self.set_extractable, Refusal::Refused(_))
            && matches!(self.clear_sensitive, Refusal::Refused(_))
    }

    /// True for a key generated in the token and never exposed since.
    pub fn generated_in_token(&self) -> bool {
        self.key_cannot_leave() && self.always_sensitive && self.never_extractable && self.local
    }
}

impl Hsm {
    /// Reads the protection attributes of key `id` and tries each way out.
    pub fn custody_report(&self, id: &KeyId) -> Result<CustodyReport> {
        self.with_session(|session| {
            let key = require_private_key(session, id)?;
            probe(session, key, id)
        })
    }

    /// [`Hsm::custody_report`] for every private key in the token.
    pub fn custody_reports(&self) -> Result<Vec<CustodyReport>> {
        let keys = self.list_keys()?;
        keys.iter()
            .filter_map(|k| KeyId::from_hex(&k.id))
            .map(|id| self.custody_report(&id))
            .collect()
    }
}

fn probe(session: &Session, key: ObjectHandle, id: &KeyId) -> Result<CustodyReport> {
    let attrs = session
        .get_attributes(
            key,
            &[
                AttributeType::Label,
                AttributeType::KeyType,
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::Sensitive,
                AttributeType::AlwaysSensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::Local,
            ],
        )
        .map_err(|e| HsmError::token("read key attributes", e))?;
    let mut report = CustodyReport {
        id: id.to_hex(),
        label: String::new(),
        token: false,
        private: false,
        sensitive: false,
        always_sensitive: false,
        // Absent attributes count against the key.
        extractable: true,
        never_extractable: false,
        local: false,
        read_secret: Refusal::Allowed,
        wrap: Refusal::Allowed,
        set_extractable: Refusal::Allowed,
        clear_sensitive: Refusal::Allowed,
    };
    let mut secret_attribute = AttributeType::Value;
    for attr in attrs {
        match attr {
            Attribute::Label(l) => report.label = String::from_utf8_lossy(&l).into_owned(),
            Attribute::KeyType(kt) if kt == KeyType::RSA => {
                secret_attribute = AttributeType::PrivateExponent
            }
            Attribute::Token(v) => report.token = v,
            Attribute::Private(v) => report.private = v,
            Attribute::Sensitive(v) => report.sensitive = v,
            Attribute::AlwaysSensitive(v) => report.always_sensitive = v,
            Attribute::Extractable(v) => report.extractable = v,
            Attribute::NeverExtractable(v) => report.never_extractable = v,
            Attribute::Local(v) => report.local = v,
            _ => {}
        }
    }

    // `get_attributes` silently drops sensitive attributes; `get_attribute_info` tells.
    let info = session
        .get_attribute_info(key, &[secret_attribute])
        .map_err(|e| HsmError::token("probe secret attribute", e))?;
    report.read_secret = match info.first() {
        Some(AttributeInfo::Sensitive) => Refusal::Refused("CKR_ATTRIBUTE_SENSITIVE".into()),
        Some(AttributeInfo::TypeInvalid) => Refusal::Refused("CKR_ATTRIBUTE_TYPE_INVALID".into()),
        _ => Refusal::Allowed,
    };

    report.wrap = try_wrap(session, key)?;
    report.set_extractable =
        refusal(session.update_attributes(key, &[Attribute::Extractable(true)]))?;
    report.clear_sensitive =
        refusal(session.update_attributes(key, &[Attribute::Sensitive(false)]))?;
    Ok(report)
}

fn try_wrap(session: &Session, key: ObjectHandle) -> Result<Refusal> {
    let wrapping = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::ValueLen(32u64.into()),
                Attribute::Wrap(true),
                Attribute::Encrypt(true),
            ],
        )
        .map_err(|e| HsmError::token("generate probe wrapping key", e))?;
    let outcome = session.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, key);
    let destroyed = session.destroy_object(wrapping);
    let result = refusal(outcome.map(|_wrapped| ()));
    destroyed.map_err(|e| HsmError::token("destroy probe wrapping key", e))?;
    result
}

fn refusal(outcome: std::result::Result<(), CkError>) -> Result<Refusal> {
    match outcome {
        Ok(()) => Ok(Refusal::Allowed),
        Err(CkError::Pkcs11(rv, _)) => Ok(Refusal::Refused(ckr_name(rv))),
        Err(other) => Err(HsmError::token("custody probe", other)),
    }
}

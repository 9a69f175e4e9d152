//! Proof that a key cannot leave the token, made without ever putting a production key
//! at risk.
//!
//! Per key the report only reads: the protection attributes, the usages, and the
//! token's answer to reading the secret value (`C_GetAttributeValue` with no buffer,
//! which returns a length or a refusal, never key bytes). The active attempts to get a
//! key out — wrapping it, setting `CKA_EXTRACTABLE` true, setting `CKA_SENSITIVE` false —
//! are made on a throwaway session key of each kind (RSA, EC), generated with the
//! template production keys get and destroyed afterwards: on a token that does not
//! refuse, trying them on a real key would weaken it for good.
//!
//! Only the return values that mean "refused" count as a refusal:
//! - wrapping: `CKR_KEY_UNEXTRACTABLE` ("cannot be wrapped because its
//!   CKA_EXTRACTABLE attribute is set to CK_FALSE"). `CKR_KEY_NOT_WRAPPABLE` says the
//!   opposite — the key is extractable, just not this way — so, like a refused
//!   mechanism, it sends the probe on to the next wrapping mechanism;
//! - relaxing an attribute: `CKR_ATTRIBUTE_READ_ONLY` (PKCS#11: CKA_SENSITIVE may only
//!   be changed to true, CKA_EXTRACTABLE only to false; "attempts to make other
//!   changes … should return CKR_ATTRIBUTE_READ_ONLY") and `CKR_ACTION_PROHIBITED`
//!   (the object may not be modified at all). `CKR_ATTRIBUTE_VALUE_INVALID` means a
//!   malformed value, not a policy, and proves nothing;
//! - reading: `CKR_ATTRIBUTE_SENSITIVE`.
//!
//! Success is [`Refusal::Allowed`]; any other answer (`CKR_MECHANISM_INVALID`,
//! `CKR_FUNCTION_NOT_SUPPORTED`, `CKR_ARGUMENTS_BAD`, …) is [`Refusal::Inconclusive`].
//! `smimegate token custody` prints the report and fails unless every key is proven.

use std::fmt;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::MechanismType;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::Session;
use zeroize::Zeroizing;

use super::error::{HsmError, Result};
use super::keys::{
    KeyAlgorithm, KeyId, KeyRole, KeyUsage, keygen_templates, random_id, read_usage,
    require_private_key,
};
use super::{Hsm, ckr_name};

/// The token's answer to one attempt at getting a key out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "lowercase")]
pub enum Refusal {
    /// The token refused with a return value that means refusal (e.g.
    /// `CKR_KEY_UNEXTRACTABLE`).
    Refused(String),
    /// The token did what was asked: keys of this kind are not protected against it.
    Allowed,
    /// The token answered something that is neither (e.g. `CKR_MECHANISM_INVALID`):
    /// nothing is proven either way. The detail says what it answered.
    Inconclusive(String),
}

impl Refusal {
    pub fn is_refused(&self) -> bool {
        matches!(self, Refusal::Refused(_))
    }

    pub fn is_refused_with(&self, code: &str) -> bool {
        matches!(self, Refusal::Refused(c) if c == code)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Refused(code) => write!(f, "refused ({code})"),
            Refusal::Allowed => f.write_str("ALLOWED"),
            Refusal::Inconclusive(detail) => write!(f, "inconclusive ({detail})"),
        }
    }
}

/// The two kinds of private key the gateway holds; the token is probed once per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    Rsa,
    Ec,
}

impl KeyKind {
    pub const ALL: [KeyKind; 2] = [KeyKind::Rsa, KeyKind::Ec];

    fn probe_algorithm(self) -> KeyAlgorithm {
        match self {
            KeyKind::Rsa => KeyAlgorithm::Rsa2048,
            KeyKind::Ec => KeyAlgorithm::P256,
        }
    }

    /// The attribute that holds the private value: reading it must be refused.
    fn secret_attribute(self) -> AttributeType {
        match self {
            KeyKind::Rsa => AttributeType::PrivateExponent,
            KeyKind::Ec => AttributeType::Value,
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Rsa => "RSA",
            KeyKind::Ec => "EC",
        })
    }
}

/// How the token treats a key of one kind when asked to give it out, learnt on a
/// throwaway key — never on a production key.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenProbe {
    pub kind: KeyKind,
    /// What the attempts were made on.
    pub probed_on: String,
    /// `C_WrapKey`, trying each wrapping mechanism until one gives an answer.
    pub wrap: Refusal,
    /// The wrapping mechanism whose answer `wrap` is, if one answered.
    pub wrap_mechanism: Option<&'static str>,
    /// `C_SetAttributeValue` `CKA_EXTRACTABLE = true`.
    pub set_extractable: Refusal,
    /// `C_SetAttributeValue` `CKA_SENSITIVE = false`.
    pub clear_sensitive: Refusal,
}

impl TokenProbe {
    fn answers(&self) -> [(&'static str, &Refusal); 3] {
        [
            ("wrapping", &self.wrap),
            ("setting CKA_EXTRACTABLE=true", &self.set_extractable),
            ("setting CKA_SENSITIVE=false", &self.clear_sensitive),
        ]
    }
}

/// One private key: what its attributes say, read without changing anything, and the
/// probe of its kind.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CustodyReport {
    pub id: String,
    pub label: String,
    /// `None` for a key type the gateway does not make (then nothing is proven).
    pub kind: Option<KeyKind>,
    pub token: bool,
    pub private: bool,
    pub sensitive: bool,
    pub always_sensitive: bool,
    pub extractable: bool,
    pub never_extractable: bool,
    pub local: bool,
    pub usage: KeyUsage,
    /// Reading CKA_PRIVATE_EXPONENT (RSA) or CKA_VALUE (EC) of this key.
    pub read_secret: Refusal,
    /// The token's behaviour towards a throwaway key of this kind; listed once per
    /// kind in [`CustodyCheck::probes`], so not repeated per key in JSON.
    #[serde(skip)]
    pub probe: Option<TokenProbe>,
}

/// What is wrong with a key's custody, split by certainty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// The key is not protected: an attribute or an answer says it can get out.
    pub exposed: Vec<String>,
    /// Nothing says it can get out, but the token's refusal was not established.
    pub unproven: Vec<String>,
}

impl CustodyReport {
    pub fn findings(&self) -> Findings {
        let mut findings = Findings::default();
        let attributes = [
            (!self.token, "CKA_TOKEN is false"),
            (!self.private, "CKA_PRIVATE is false"),
            (!self.sensitive, "CKA_SENSITIVE is false"),
            (self.extractable, "CKA_EXTRACTABLE is true"),
        ];
        for (wrong, what) in attributes {
            if wrong {
                findings.exposed.push(what.into());
            }
        }
        findings.add("reading the secret value", &self.read_secret, "this key");
        match (&self.probe, self.kind) {
            (Some(probe), _) => {
                let on = format!("a throwaway {} key", probe.kind);
                for (what, answer) in probe.answers() {
                    findings.add(what, answer, &on);
                }
            }
            (None, Some(kind)) => findings
                .unproven
                .push(format!("the token was not probed with a {kind} key")),
            (None, None) => findings
                .unproven
                .push("a key type the gateway does not make".into()),
        }
        findings
    }

    /// True when every attribute and every answer says the key stays in the token.
    /// (Imported keys are not `always_sensitive`/`never_extractable`, by definition,
    /// but are otherwise held the same way.)
    pub fn key_cannot_leave(&self) -> bool {
        self.findings() == Findings::default()
    }

    /// True for a key generated in the token and never exposed since.
    pub fn generated_in_token(&self) -> bool {
        self.key_cannot_leave() && self.always_sensitive && self.never_extractable && self.local
    }
}

impl Findings {
    fn add(&mut self, what: &str, answer: &Refusal, on: &str) {
        match answer {
            Refusal::Refused(_) => {}
            Refusal::Allowed => self.exposed.push(format!("{what} is allowed on {on}")),
            Refusal::Inconclusive(detail) => self
                .unproven
                .push(format!("{what} on {on}: the token answered {detail}")),
        }
    }
}

/// `smimegate token custody`: the probes of the token, and every key's report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CustodyCheck {
    pub probes: Vec<TokenProbe>,
    pub keys: Vec<CustodyReport>,
}

impl Hsm {
    /// The custody report of key `id`, with the token probed on a throwaway key of
    /// its kind. The key itself is only read.
    pub fn custody_report(&self, id: &KeyId) -> Result<CustodyReport> {
        let mut report = self.with_session(|session| {
            let key = require_private_key(session, id)?;
            read_report(session, key, id)
        })?;
        report.probe = report.kind.map(|kind| self.probe_token(kind)).transpose()?;
        Ok(report)
    }

    /// Probes the token with a throwaway key of each kind, then reads the report of
    /// every private key in the token.
    pub fn custody_reports(&self) -> Result<CustodyCheck> {
        let probes = KeyKind::ALL
            .iter()
            .map(|&kind| self.probe_token(kind))
            .collect::<Result<Vec<_>>>()?;
        let mut keys = Vec::new();
        for info in self.list_keys()? {
            let Some(id) = KeyId::from_hex(&info.id) else {
                continue;
            };
            let mut report = self.with_session(|session| {
                let key = require_private_key(session, &id)?;
                read_report(session, key, &id)
            })?;
            report.probe = probes.iter().find(|p| Some(p.kind) == report.kind).cloned();
            keys.push(report);
        }
        Ok(CustodyCheck { probes, keys })
    }

    /// Makes a throwaway session key of `kind` with the production template, tries
    /// each way of getting it out, and destroys it (and any wrapping key) again.
    pub fn probe_token(&self, kind: KeyKind) -> Result<TokenProbe> {
        self.with_session(|session| {
            let throwaway = Transient::key_pair(session, kind.probe_algorithm())?;
            let target = throwaway.private()?;
            let (wrap, wrap_mechanism) = probe_wrap(session, target)?;
            let set_extractable = attribute_change_outcome(
                session.update_attributes(target, &[Attribute::Extractable(true)]),
            );
            let clear_sensitive = attribute_change_outcome(
                session.update_attributes(target, &[Attribute::Sensitive(false)]),
            );
            throwaway.destroy()?;
            Ok(TokenProbe {
                kind,
                probed_on: format!(
                    "a throwaway {} session key with the production template, destroyed afterwards",
                    kind.probe_algorithm()
                ),
                wrap,
                wrap_mechanism,
                set_extractable,
                clear_sensitive,
            })
        })
    }
}

/// Reads, never writes: the protection attributes, the usages and the token's answer
/// to a read of the secret value.
fn read_report(session: &Session, key: ObjectHandle, id: &KeyId) -> Result<CustodyReport> {
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
        kind: None,
        token: false,
        private: false,
        sensitive: false,
        always_sensitive: false,
        // Absent attributes count against the key.
        extractable: true,
        never_extractable: false,
        local: false,
        usage: read_usage(session, key)?,
        read_secret: Refusal::Inconclusive("not tried".into()),
        probe: None,
    };
    for attr in attrs {
        match attr {
            Attribute::Label(l) => report.label = String::from_utf8_lossy(&l).into_owned(),
            Attribute::KeyType(kt) if kt == KeyType::RSA => report.kind = Some(KeyKind::Rsa),
            Attribute::KeyType(kt) if kt == KeyType::EC => report.kind = Some(KeyKind::Ec),
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
    if let Some(kind) = report.kind {
        // `get_attributes` silently drops sensitive attributes; `get_attribute_info`
        // asks for the length only and tells.
        let info = session
            .get_attribute_info(key, &[kind.secret_attribute()])
            .map_err(|e| HsmError::token("probe secret attribute", e))?;
        report.read_secret = read_outcome(info.first());
    }
    Ok(report)
}

/// The wrapping mechanisms tried in turn, until one gets an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WrapMechanism {
    AesKeyWrapPad,
    AesKeyWrap,
    AesCbcPad,
    RsaOaep,
}

impl WrapMechanism {
    const ORDER: [WrapMechanism; 4] = [
        WrapMechanism::AesKeyWrapPad,
        WrapMechanism::AesKeyWrap,
        WrapMechanism::AesCbcPad,
        WrapMechanism::RsaOaep,
    ];

    fn name(self) -> &'static str {
        match self {
            WrapMechanism::AesKeyWrapPad => "CKM_AES_KEY_WRAP_PAD",
            WrapMechanism::AesKeyWrap => "CKM_AES_KEY_WRAP",
            WrapMechanism::AesCbcPad => "CKM_AES_CBC_PAD",
            WrapMechanism::RsaOaep => "CKM_RSA_PKCS_OAEP",
        }
    }

    fn mechanism(self) -> Mechanism<'static> {
        match self {
            WrapMechanism::AesKeyWrapPad => Mechanism::AesKeyWrapPad,
            WrapMechanism::AesKeyWrap => Mechanism::AesKeyWrap,
            WrapMechanism::AesCbcPad => Mechanism::AesCbcPad([0; 16]),
            WrapMechanism::RsaOaep => Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
                MechanismType::SHA1,
                PkcsMgfType::MGF1_SHA1,
                PkcsOaepSource::empty(),
            )),
        }
    }
}

/// One wrapping attempt's result: a final answer, or none (try the next mechanism).
#[derive(Debug, Clone, PartialEq, Eq)]
enum WrapAnswer {
    Final(Refusal),
    NoAnswer(String),
}

/// `C_WrapKey`'s result: success is an export, `CKR_KEY_UNEXTRACTABLE` a refusal,
/// anything else no answer about the key.
fn wrap_outcome(result: std::result::Result<(), CkError>) -> WrapAnswer {
    match result {
        Ok(()) => WrapAnswer::Final(Refusal::Allowed),
        Err(CkError::Pkcs11(rv @ RvError::KeyUnextractable, _)) => {
            WrapAnswer::Final(Refusal::Refused(ckr_name(rv)))
        }
        Err(other) => WrapAnswer::NoAnswer(describe(&other)),
    }
}

/// Tries the mechanisms in order; the first final answer is the result. If none gave
/// one, the result is inconclusive and lists every mechanism's answer.
fn wrap_sequence(
    mut attempt: impl FnMut(WrapMechanism) -> WrapAnswer,
) -> (Refusal, Option<&'static str>) {
    let mut tried = Vec::new();
    for mechanism in WrapMechanism::ORDER {
        match attempt(mechanism) {
            WrapAnswer::Final(answer) => return (answer, Some(mechanism.name())),
            WrapAnswer::NoAnswer(detail) => tried.push(format!("{}: {detail}", mechanism.name())),
        }
    }
    (Refusal::Inconclusive(tried.join("; ")), None)
}

/// `C_SetAttributeValue`'s result when asked to relax `CKA_EXTRACTABLE` or
/// `CKA_SENSITIVE`.
fn attribute_change_outcome(result: std::result::Result<(), CkError>) -> Refusal {
    match result {
        Ok(()) => Refusal::Allowed,
        Err(CkError::Pkcs11(rv @ (RvError::AttributeReadOnly | RvError::ActionProhibited), _)) => {
            Refusal::Refused(ckr_name(rv))
        }
        Err(other) => Refusal::Inconclusive(describe(&other)),
    }
}

/// `C_GetAttributeValue`'s answer about the secret value's length.
fn read_outcome(info: Option<&AttributeInfo>) -> Refusal {
    match info {
        Some(AttributeInfo::Sensitive) => Refusal::Refused(ckr_name(RvError::AttributeSensitive)),
        Some(AttributeInfo::Available(_)) => Refusal::Allowed,
        Some(AttributeInfo::TypeInvalid) => {
            Refusal::Inconclusive(ckr_name(RvError::AttributeTypeInvalid))
        }
        Some(AttributeInfo::Unavailable) => {
            Refusal::Inconclusive("CK_UNAVAILABLE_INFORMATION without a return value".into())
        }
        None => Refusal::Inconclusive("no answer".into()),
    }
}

fn describe(err: &CkError) -> String {
    match err {
        CkError::Pkcs11(rv, _) => ckr_name(*rv),
        other => other.to_string(),
    }
}

/// Wraps `target` under each wrapping mechanism until the token answers; the wrapping
/// keys are session keys made on demand and destroyed before this returns.
fn probe_wrap(session: &Session, target: ObjectHandle) -> Result<(Refusal, Option<&'static str>)> {
    let mut aes: Option<Transient<'_>> = None;
    let mut rsa: Option<Transient<'_>> = None;
    let outcome = wrap_sequence(|mechanism| {
        let slot = if mechanism == WrapMechanism::RsaOaep {
            &mut rsa
        } else {
            &mut aes
        };
        let wrapping = match wrapping_key(session, mechanism, slot) {
            Ok(handle) => handle,
            Err(detail) => return WrapAnswer::NoAnswer(detail),
        };
        let result = session
            .wrap_key(&mechanism.mechanism(), wrapping, target)
            .map(|wrapped| drop(Zeroizing::new(wrapped)));
        wrap_outcome(result)
    });
    for keys in [aes, rsa].into_iter().flatten() {
        keys.destroy()?;
    }
    Ok(outcome)
}

/// The wrapping key for `mechanism`, made into `slot` on first use: an AES-256 secret
/// key, or the public half of an RSA-2048 pair for OAEP.
fn wrapping_key<'s>(
    session: &'s Session,
    mechanism: WrapMechanism,
    slot: &mut Option<Transient<'s>>,
) -> std::result::Result<ObjectHandle, String> {
    if slot.is_none() {
        let made = if mechanism == WrapMechanism::RsaOaep {
            Transient::rsa_wrapping_pair(session)
        } else {
            Transient::aes_wrapping_key(session)
        };
        *slot = Some(made.map_err(|e| format!("no wrapping key ({e})"))?);
    }
    match slot {
        Some(keys) => Ok(keys.handles[0]),
        None => Err("no wrapping key".into()),
    }
}

/// Session objects made for a probe; destroyed by [`Transient::destroy`], or on drop
/// if an error cut the probe short.
struct Transient<'s> {
    session: &'s Session,
    /// Public (or secret) key first, private key second.
    handles: Vec<ObjectHandle>,
}

impl<'s> Transient<'s> {
    /// A key pair with the production template of `algorithm` (mailbox role, the one
    /// with most usages), as a session object.
    fn key_pair(session: &'s Session, algorithm: KeyAlgorithm) -> Result<Self> {
        let id = random_id()?;
        let (public, private, mechanism) =
            keygen_templates(algorithm, KeyRole::Mailbox, PROBE_LABEL, &id)?;
        let (public, private) = (session_object(public), session_object(private));
        let (public, private) = session
            .generate_key_pair(&mechanism, &public, &private)
            .map_err(|e| HsmError::token("generate throwaway key pair", e))?;
        Ok(Transient {
            session,
            handles: vec![public, private],
        })
    }

    fn aes_wrapping_key(session: &'s Session) -> Result<Self> {
        let key = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Token(false),
                    Attribute::ValueLen(32u64.into()),
                    Attribute::Wrap(true),
                    Attribute::Encrypt(true),
                    Attribute::Label(PROBE_LABEL.as_bytes().to_vec()),
                ],
            )
            .map_err(|e| HsmError::token("generate probe wrapping key", e))?;
        Ok(Transient {
            session,
            handles: vec![key],
        })
    }

    fn rsa_wrapping_pair(session: &'s Session) -> Result<Self> {
        let label = Attribute::Label(PROBE_LABEL.as_bytes().to_vec());
        let (public, private) = session
            .generate_key_pair(
                &Mechanism::RsaPkcsKeyPairGen,
                &[
                    Attribute::Token(false),
                    Attribute::ModulusBits(2048u64.into()),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                    Attribute::Wrap(true),
                    label.clone(),
                ],
                &[Attribute::Token(false), Attribute::Unwrap(true), label],
            )
            .map_err(|e| HsmError::token("generate probe wrapping key pair", e))?;
        Ok(Transient {
            session,
            handles: vec![public, private],
        })
    }

    fn private(&self) -> Result<ObjectHandle> {
        self.handles.get(1).copied().ok_or(HsmError::Library {
            operation: "custody probe",
            reason: "throwaway key pair without a private key".into(),
        })
    }

    fn destroy(mut self) -> Result<()> {
        for handle in std::mem::take(&mut self.handles) {
            self.session
                .destroy_object(handle)
                .map_err(|e| HsmError::token("destroy throwaway key", e))?;
        }
        Ok(())
    }
}

impl Drop for Transient<'_> {
    fn drop(&mut self) {
        for handle in self.handles.drain(..) {
            if let Err(error) = self.session.destroy_object(handle) {
                tracing::warn!(%error, "could not destroy a custody probe's session key");
            }
        }
    }
}

/// Label of every object a probe makes (all session objects, gone with the session).
const PROBE_LABEL: &str = "smimegate custody probe (throwaway)";

/// `template` as a session object: `CKA_TOKEN` false, everything else unchanged.
fn session_object(template: Vec<Attribute>) -> Vec<Attribute> {
    template
        .into_iter()
        .map(|attr| match attr {
            Attribute::Token(_) => Attribute::Token(false),
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rv(rv: RvError) -> std::result::Result<(), CkError> {
        Err(CkError::Pkcs11(rv, cryptoki::context::Function::WrapKey))
    }

    #[test]
    fn only_key_unextractable_is_a_refusal_to_wrap() {
        assert_eq!(
            wrap_outcome(rv(RvError::KeyUnextractable)),
            WrapAnswer::Final(Refusal::Refused("CKR_KEY_UNEXTRACTABLE".into()))
        );
        assert_eq!(wrap_outcome(Ok(())), WrapAnswer::Final(Refusal::Allowed));
        for other in [
            RvError::MechanismInvalid,
            RvError::MechanismParamInvalid,
            RvError::KeyNotWrappable,
            RvError::WrappingKeyTypeInconsistent,
            RvError::FunctionNotSupported,
            RvError::ArgumentsBad,
            RvError::GeneralError,
        ] {
            assert!(
                matches!(wrap_outcome(rv(other)), WrapAnswer::NoAnswer(_)),
                "{other:?} must not count as a refusal"
            );
        }
    }

    #[test]
    fn a_refused_mechanism_sends_the_probe_on_to_the_next() {
        let mut tried = Vec::new();
        let (answer, mechanism) = wrap_sequence(|m| {
            tried.push(m);
            match m {
                WrapMechanism::AesKeyWrapPad => wrap_outcome(rv(RvError::MechanismInvalid)),
                _ => wrap_outcome(rv(RvError::KeyUnextractable)),
            }
        });
        assert_eq!(answer, Refusal::Refused("CKR_KEY_UNEXTRACTABLE".into()));
        assert_eq!(mechanism, Some("CKM_AES_KEY_WRAP"));
        assert_eq!(
            tried,
            [WrapMechanism::AesKeyWrapPad, WrapMechanism::AesKeyWrap]
        );
    }

    #[test]
    fn no_mechanism_answering_is_inconclusive_not_a_refusal() {
        let (answer, mechanism) = wrap_sequence(|m| match m {
            WrapMechanism::RsaOaep => wrap_outcome(rv(RvError::KeyNotWrappable)),
            _ => wrap_outcome(rv(RvError::MechanismInvalid)),
        });
        assert_eq!(mechanism, None);
        let Refusal::Inconclusive(detail) = answer else {
            panic!("expected inconclusive, got {answer:?}")
        };
        assert!(
            detail.contains("CKM_AES_KEY_WRAP_PAD: CKR_MECHANISM_INVALID"),
            "{detail}"
        );
        assert!(
            detail.contains("CKM_RSA_PKCS_OAEP: CKR_KEY_NOT_WRAPPABLE"),
            "{detail}"
        );
    }

    #[test]
    fn a_successful_wrap_stops_the_probe_as_allowed() {
        let (answer, mechanism) = wrap_sequence(|_| wrap_outcome(Ok(())));
        assert_eq!(answer, Refusal::Allowed);
        assert_eq!(mechanism, Some("CKM_AES_KEY_WRAP_PAD"));
    }

    #[test]
    fn read_only_and_action_prohibited_refuse_an_attribute_change_nothing_else_does() {
        for refusal in [RvError::AttributeReadOnly, RvError::ActionProhibited] {
            assert!(
                attribute_change_outcome(rv(refusal)).is_refused(),
                "{refusal:?}"
            );
        }
        assert_eq!(attribute_change_outcome(Ok(())), Refusal::Allowed);
        for other in [
            RvError::AttributeValueInvalid,
            RvError::FunctionNotSupported,
            RvError::ArgumentsBad,
            RvError::TemplateInconsistent,
            RvError::SessionReadOnly,
        ] {
            assert!(
                matches!(
                    attribute_change_outcome(rv(other)),
                    Refusal::Inconclusive(_)
                ),
                "{other:?} must not count as a refusal"
            );
        }
    }

    #[test]
    fn only_attribute_sensitive_refuses_a_read() {
        assert!(
            read_outcome(Some(&AttributeInfo::Sensitive))
                .is_refused_with("CKR_ATTRIBUTE_SENSITIVE")
        );
        assert_eq!(
            read_outcome(Some(&AttributeInfo::Available(256))),
            Refusal::Allowed
        );
        for other in [
            Some(&AttributeInfo::TypeInvalid),
            Some(&AttributeInfo::Unavailable),
            None,
        ] {
            assert!(
                matches!(read_outcome(other), Refusal::Inconclusive(_)),
                "{other:?}"
            );
        }
    }

    fn protected_report(probe: Option<TokenProbe>) -> CustodyReport {
        CustodyReport {
            id: "01".into(),
            label: "k".into(),
            kind: Some(KeyKind::Rsa),
            token: true,
            private: true,
            sensitive: true,
            always_sensitive: true,
            extractable: false,
            never_extractable: true,
            local: true,
            usage: KeyUsage::for_role(KeyRole::Mailbox, true),
            read_secret: Refusal::Refused("CKR_ATTRIBUTE_SENSITIVE".into()),
            probe,
        }
    }

    fn probe(wrap: Refusal) -> TokenProbe {
        TokenProbe {
            kind: KeyKind::Rsa,
            probed_on: "throwaway".into(),
            wrap,
            wrap_mechanism: None,
            set_extractable: Refusal::Refused("CKR_ATTRIBUTE_READ_ONLY".into()),
            clear_sensitive: Refusal::Refused("CKR_ATTRIBUTE_READ_ONLY".into()),
        }
    }

    #[test]
    fn a_key_is_proven_only_when_every_answer_is_a_refusal() {
        let proven = protected_report(Some(probe(Refusal::Refused(
            "CKR_KEY_UNEXTRACTABLE".into(),
        ))));
        assert!(proven.key_cannot_leave(), "{:?}", proven.findings());

        let inconclusive = protected_report(Some(probe(Refusal::Inconclusive(
            "CKR_MECHANISM_INVALID".into(),
        ))));
        let findings = inconclusive.findings();
        assert!(!inconclusive.key_cannot_leave());
        assert!(findings.exposed.is_empty(), "{findings:?}");
        assert_eq!(findings.unproven.len(), 1, "{findings:?}");

        let allowed = protected_report(Some(probe(Refusal::Allowed)));
        assert_eq!(allowed.findings().exposed.len(), 1);

        let unprobed = protected_report(None);
        assert!(!unprobed.key_cannot_leave());
        assert_eq!(unprobed.findings().unproven.len(), 1);
    }
}

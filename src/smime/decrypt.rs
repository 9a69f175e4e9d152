//! Decrypting `application/pkcs7-mime` enveloped-data and authEnveloped-data
//! (RFC 8551 §3.3, RFC 5652 §6, RFC 5083/5084). The content-encryption key is recovered
//! in the token by whichever held key a RecipientInfo names; the content is decrypted
//! on the host with that per-message key.
//!
//! Every failure has a [`FailureClass`]. The structure (algorithms, parameters, the
//! sender's ECDH point) is judged before a key of ours is used; after that, RFC 3218
//! §2.3: whatever goes wrong ends the same way, at the same point, with one error.

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, BlockSizeUser, KeyInit};
use cbc::cipher::{BlockModeDecrypt, KeyIvInit};
use cms::enveloped_data::{
    EncryptedContentInfo, KeyAgreeRecipientIdentifier, OriginatorIdentifierOrKey,
    RecipientIdentifier, RecipientInfo, RecipientInfos,
};
use const_oid::ObjectIdentifier;
use der::asn1::OctetString;
use der::{Decode, Encode, Tagged};
use subtle::Choice;
use x509_cert::certificate::Certificate;

use super::{ber, ecdh};
use crate::hsm::{ContentKey, Hsm, HsmError, KeyId, KeyTransport, OaepHash, OaepParams};
use crate::mime::{self, Limits, MimeError};

const ID_ENVELOPED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
const ID_AUTH_ENVELOPED_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.23");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const RSAES_OAEP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");
const ID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
const ID_P_SPECIFIED: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.9");
const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA224: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.4");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const AES128_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.2");
const AES192_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.22");
const AES256_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.42");
const AES128_GCM: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.6");
const AES192_GCM: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.26");
const AES256_GCM: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.46");
const DES_EDE3_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.3.7");

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecryptError {
    #[error("not an S/MIME encrypted message: {0}")]
    NotEncrypted(&'static str),
    #[error("malformed CMS: {0}")]
    Malformed(String),
    #[error(transparent)]
    Mime(#[from] MimeError),
    #[error("encrypted to no key this gateway holds ({recipients} recipient(s))")]
    NoKey { recipients: usize },
    /// The message names no key of `0`, a recipient it is to be delivered to: it is
    /// not decrypted for anybody, lest one recipient read what was sealed for another.
    #[error("not encrypted to {0}, a recipient of this transaction")]
    NotForRecipient(String),
    #[error("unsupported algorithm {0}")]
    Unsupported(String),
    /// Always [`INTEGRITY_FAILURE`], whatever the cause (RFC 3218).
    #[error("decryption failed: {0}")]
    Integrity(&'static str),
    #[error(transparent)]
    Token(#[from] HsmError),
}

/// What a decryption failure means for the message, which is what the relay answers
/// by: policy for [`FailureClass::Structure`], delivery still encrypted (with a stamp)
/// for [`FailureClass::Integrity`], `4xx` for [`FailureClass::Gateway`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Decided before any key of ours was used: not S/MIME encrypted, malformed
    /// structure, unsupported algorithm, too many recipients, encrypted to no key we hold.
    Structure,
    /// After a key of ours was used: the content could not be decrypted. Every cause
    /// looks the same (RFC 3218).
    Integrity,
    /// The gateway's own failure (token busy/unreachable, wrong or locked PIN, library
    /// gone): temporary, the sender retries.
    Gateway,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Structure => "structure",
            FailureClass::Integrity => "integrity",
            FailureClass::Gateway => "gateway",
        }
    }
}

/// The one text of every [`DecryptError::Integrity`]: after a key of ours was used,
/// a bad padding, a wrong key length, a failed key unwrap and a wrong tag all read the
/// same (RFC 3218 §2.3).
pub const INTEGRITY_FAILURE: &str = "wrong key, or the message was corrupted or tampered with";

impl DecryptError {
    fn integrity() -> DecryptError {
        DecryptError::Integrity(INTEGRITY_FAILURE)
    }

    /// Which kind of failure this is (see [`FailureClass`]).
    pub fn class(&self) -> FailureClass {
        match self {
            DecryptError::NotEncrypted(_)
            | DecryptError::Malformed(_)
            | DecryptError::Mime(_)
            | DecryptError::NoKey { .. }
            | DecryptError::NotForRecipient(_)
            | DecryptError::Unsupported(_) => FailureClass::Structure,
            DecryptError::Integrity(_) => FailureClass::Integrity,
            DecryptError::Token(_) => FailureClass::Gateway,
        }
    }

    /// True when the same message may decrypt later: the gateway's own failure
    /// ([`FailureClass::Gateway`]), which the relay answers with `4xx`.
    pub fn is_transient(&self) -> bool {
        self.class() == FailureClass::Gateway
    }
}

/// How a recipient is named in a RecipientInfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientId {
    /// DER of the issuer Name, and the serial's content octets.
    IssuerSerial {
        issuer: Vec<u8>,
        serial: Vec<u8>,
    },
    SubjectKeyId(Vec<u8>),
}

impl RecipientId {
    /// Both ways a sender may name `cert`: issuer and serial, and subject key identifier.
    pub fn for_certificate(cert: &Certificate) -> Vec<RecipientId> {
        let tbs = cert.tbs_certificate();
        let mut ids = Vec::new();
        if let Ok(issuer) = tbs.issuer().to_der() {
            ids.push(RecipientId::IssuerSerial {
                issuer,
                serial: tbs.serial_number().as_bytes().to_vec(),
            });
        }
        if let Ok(Some((_, ski))) =
            tbs.get_extension::<x509_cert::ext::pkix::SubjectKeyIdentifier>()
        {
            ids.push(RecipientId::SubjectKeyId(ski.0.as_bytes().to_vec()));
        }
        ids
    }

    /// Whether `cert` is the certificate this id names.
    pub fn names(&self, cert: &Certificate) -> bool {
        let tbs = cert.tbs_certificate();
        match self {
            RecipientId::IssuerSerial { issuer, serial } => {
                tbs.issuer().to_der().is_ok_and(|d| &d == issuer)
                    && tbs.serial_number().as_bytes() == serial.as_slice()
            }
            RecipientId::SubjectKeyId(ski) => tbs
                .get_extension::<x509_cert::ext::pkix::SubjectKeyIdentifier>()
                .ok()
                .flatten()
                .is_some_and(|(_, s)| s.0.as_bytes() == ski.as_slice()),
        }
    }
}

/// What was decrypted, and how.
#[derive(Debug)]
pub struct Decrypted {
    /// The inner MIME entity, byte for byte as it was encrypted.
    pub entity: Vec<u8>,
    pub content_algorithm: &'static str,
    pub key_transport: &'static str,
    pub key: KeyId,
    /// 3DES: accepted for decryption only, and reported.
    pub weak: bool,
}

/// The CMS ContentInfo (DER) carried by an application/pkcs7-mime message or entity:
/// base64 or binary body, `application/pkcs7-mime` or `application/x-pkcs7-mime`.
pub fn cms_from_message(message: &[u8], limits: &Limits) -> Result<Vec<u8>, DecryptError> {
    if message.len() > limits.max_size {
        return Err(MimeError::TooLarge {
            size: message.len(),
            limit: limits.max_size,
        }
        .into());
    }
    let (headers, body_start) = mime::split_raw_headers(message)?;
    let ct = mime::Message::content_type_of(&headers);
    if ct.kind != "application" || !(ct.subtype == "pkcs7-mime" || ct.subtype == "x-pkcs7-mime") {
        return Err(DecryptError::NotEncrypted(
            "Content-Type is not application/pkcs7-mime",
        ));
    }
    if let Some(kind) = ct.param("smime-type") {
        let kind = kind.to_ascii_lowercase();
        if kind != "enveloped-data" && kind != "authenveloped-data" {
            return Err(DecryptError::NotEncrypted(
                "smime-type is not (auth)enveloped-data",
            ));
        }
    }
    let cte = headers
        .iter()
        .find(|h| h.is("content-transfer-encoding"))
        .map(|h| h.value().to_ascii_lowercase())
        .unwrap_or_else(|| "7bit".into());
    let body = &message[body_start..];
    let mut raw = if cte == "base64" {
        mime::base64_decode_lines(body)
            .map_err(|_| DecryptError::Malformed("body is not valid base64".into()))?
    } else {
        body.to_vec()
    };
    // DER already (what we and openssl write without -stream): kept as it is.
    let der_len = match ber::to_der(&raw, 64).map_err(|e| DecryptError::Malformed(e.to_string()))? {
        std::borrow::Cow::Owned(converted) => return Ok(converted),
        std::borrow::Cow::Borrowed(der) => der.len(),
    };
    raw.truncate(der_len);
    Ok(raw)
}

/// The recipients named in a CMS (auth)enveloped-data, in order.
pub fn recipients(cms_der: &[u8]) -> Result<Vec<RecipientId>, DecryptError> {
    let parsed = parse(cms_der)?;
    Ok(parsed
        .recipient_infos
        .0
        .iter()
        .flat_map(|ri| match ri {
            RecipientInfo::Ktri(k) => recipient_id(&k.rid).into_iter().collect::<Vec<_>>(),
            RecipientInfo::Kari(k) => k
                .recipient_enc_keys
                .iter()
                .filter_map(|rek| kari_recipient_id(&rek.rid))
                .collect(),
            _ => Vec::new(),
        })
        .collect())
}

fn recipient_id(rid: &RecipientIdentifier) -> Option<RecipientId> {
    match rid {
        RecipientIdentifier::IssuerAndSerialNumber(ias) => Some(RecipientId::IssuerSerial {
            issuer: ias.issuer.to_der().ok()?,
            serial: ias.serial_number.as_bytes().to_vec(),
        }),
        RecipientIdentifier::SubjectKeyIdentifier(ski) => {
            Some(RecipientId::SubjectKeyId(ski.0.as_bytes().to_vec()))
        }
    }
}

fn kari_recipient_id(rid: &KeyAgreeRecipientIdentifier) -> Option<RecipientId> {
    match rid {
        KeyAgreeRecipientIdentifier::IssuerAndSerialNumber(ias) => {
            Some(RecipientId::IssuerSerial {
                issuer: ias.issuer.to_der().ok()?,
                serial: ias.serial_number.as_bytes().to_vec(),
            })
        }
        KeyAgreeRecipientIdentifier::RKeyId(r) => Some(RecipientId::SubjectKeyId(
            r.subject_key_identifier.0.as_bytes().to_vec(),
        )),
    }
}

struct Parsed {
    recipient_infos: RecipientInfos,
    content: EncryptedContentInfo,
    /// AuthEnvelopedData: (DER of authAttrs as a SET, or empty) and the tag.
    auth: Option<(Vec<u8>, Vec<u8>)>,
}

/// `ContentInfo` with its content borrowed (a large envelope is not copied to be
/// looked at).
#[derive(der::Sequence)]
struct ContentInfoRef<'a> {
    content_type: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    content: der::asn1::AnyRef<'a>,
}

fn parse(cms_der: &[u8]) -> Result<Parsed, DecryptError> {
    let malformed = |e: der::Error| DecryptError::Malformed(e.to_string());
    let ci = ContentInfoRef::from_der(cms_der).map_err(malformed)?;
    if ci.content_type == ID_ENVELOPED_DATA {
        let env: cms::enveloped_data::EnvelopedData = ci.content.decode_as().map_err(malformed)?;
        Ok(Parsed {
            recipient_infos: env.recip_infos,
            content: env.encrypted_content,
            auth: None,
        })
    } else if ci.content_type == ID_AUTH_ENVELOPED_DATA {
        let env: cms::authenveloped_data::AuthEnvelopedData =
            ci.content.decode_as().map_err(malformed)?;
        let aad = match &env.auth_attrs {
            Some(attrs) => attrs.to_der().map_err(malformed)?,
            None => Vec::new(),
        };
        Ok(Parsed {
            recipient_infos: env.recip_infos,
            content: env.auth_encrypted_content_info,
            auth: Some((aad, env.mac.as_bytes().to_vec())),
        })
    } else {
        Err(DecryptError::NotEncrypted(
            "CMS content is not (auth)enveloped-data",
        ))
    }
}

/// Decrypts `cms_der` with the first RecipientInfo whose recipient is in `held`
/// (recipient id → key in the token).
/// The private-key operations decryption needs. The token does them ([`Hsm`]); the
/// fuzz targets put a fake in its place to reach the content decryption.
pub trait KeyOps {
    /// The content-encryption key RSA key transport protected for `key`, or a random
    /// stand-in when it cannot be recovered (RFC 3218 §2.3).
    fn recover_content_key(
        &self,
        key: &KeyId,
        transport: &KeyTransport,
        encrypted_key: &[u8],
        cek_len: usize,
    ) -> Result<ContentKey, HsmError>;

    /// ECDH of `key` with the (validated, uncompressed) peer point: the shared secret Z.
    fn ecdh_shared_secret(
        &self,
        key: &KeyId,
        peer_point: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, HsmError>;
}

impl KeyOps for Hsm {
    fn recover_content_key(
        &self,
        key: &KeyId,
        transport: &KeyTransport,
        encrypted_key: &[u8],
        cek_len: usize,
    ) -> Result<ContentKey, HsmError> {
        Hsm::recover_content_key(self, key, transport, encrypted_key, cek_len)
    }

    fn ecdh_shared_secret(
        &self,
        key: &KeyId,
        peer_point: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, HsmError> {
        Hsm::ecdh_shared_secret(self, key, peer_point)
    }
}

pub fn decrypt(
    hsm: &Hsm,
    cms_der: &[u8],
    held: &[(RecipientId, KeyId)],
) -> Result<Decrypted, DecryptError> {
    decrypt_within(hsm, cms_der, held, &Limits::default())
}

/// [`decrypt`] with explicit limits (recipient count).
///
/// Everything about the message's structure is checked before a key of ours is used
/// ([`FailureClass::Structure`]). After that, as RFC 3218 §2.3 asks, nothing that goes
/// wrong with the content-encryption key is acted on at once (bad PKCS#1 v1.5 or OAEP
/// padding, a key of the wrong length, a failed AES key unwrap): a random key of the
/// right length stands in for it, the content is decrypted with it all the same, and
/// only then is one verdict made, the same [`DecryptError::Integrity`] for every cause,
/// a bad CBC padding or GCM tag included.
pub fn decrypt_within<K: KeyOps + ?Sized>(
    hsm: &K,
    cms_der: &[u8],
    held: &[(RecipientId, KeyId)],
    limits: &Limits,
) -> Result<Decrypted, DecryptError> {
    let parsed = parse(cms_der)?;
    let total = parsed.recipient_infos.0.len();
    if total > limits.max_recipients {
        return Err(DecryptError::Malformed(format!(
            "{total} recipients, more than the limit of {}",
            limits.max_recipients
        )));
    }
    let (cipher, mut buffer) = ContentCipher::from_parsed(parsed.content, parsed.auth)?;
    let recovered = recover(
        hsm,
        &parsed.recipient_infos,
        held,
        cipher.algorithm.key_len(),
    )?;
    let plain_len = cipher.open(recovered.cek.as_bytes(), &mut buffer);
    let opened = Choice::from(u8::from(plain_len.is_some()));
    if !bool::from(recovered.cek.genuine() & opened) {
        // Unauthenticated or garbage plaintext is never returned, nor left lying about.
        zeroize::Zeroize::zeroize(&mut buffer);
        return Err(DecryptError::integrity());
    }
    buffer.truncate(plain_len.unwrap_or(0));
    Ok(Decrypted {
        entity: buffer,
        content_algorithm: cipher.algorithm.name(),
        key_transport: recovered.transport,
        key: recovered.key,
        weak: cipher.algorithm == Algorithm::DesEde3Cbc,
    })
}

/// The content-encryption key for the message (or its random stand-in), and how.
struct Recovered {
    cek: ContentKey,
    key: KeyId,
    transport: &'static str,
}

/// Recovers the content-encryption key with the first RecipientInfo that names a key
/// we hold and can be used. One whose structure we cannot use, or whose key the token
/// cannot reach for reasons of its own, is passed over for the next; once a key of ours
/// has been used, its result stands (RFC 3218: no second try after a failure).
fn recover<K: KeyOps + ?Sized>(
    hsm: &K,
    infos: &RecipientInfos,
    held: &[(RecipientId, KeyId)],
    cek_len: usize,
) -> Result<Recovered, DecryptError> {
    let mut deferred: Option<DecryptError> = None;
    for ri in infos.0.iter() {
        let attempt = match ri {
            RecipientInfo::Ktri(ktri) => recover_transported(hsm, ktri, held, cek_len),
            RecipientInfo::Kari(kari) => recover_agreed(hsm, kari, held, cek_len),
            _ => Ok(None),
        };
        match attempt {
            Ok(Some(recovered)) => return Ok(recovered),
            Ok(None) => {}
            // Busy or timed out: the next key would wait the same.
            Err(DecryptError::Token(e)) if e.is_transient() => return Err(e.into()),
            // When nothing works, the gateway's own failure outranks a structural one.
            Err(e) => {
                if deferred
                    .as_ref()
                    .is_none_or(|d| d.class() != FailureClass::Gateway)
                {
                    deferred = Some(e);
                }
            }
        }
    }
    Err(deferred.unwrap_or(DecryptError::NoKey {
        recipients: infos.0.len(),
    }))
}

fn held_key<'a>(held: &'a [(RecipientId, KeyId)], rid: &RecipientId) -> Option<&'a KeyId> {
    held.iter().find(|(id, _)| id == rid).map(|(_, key)| key)
}

/// Key transport: the token decrypts the content key with the recipient's RSA key.
fn recover_transported<K: KeyOps + ?Sized>(
    hsm: &K,
    ktri: &cms::enveloped_data::KeyTransRecipientInfo,
    held: &[(RecipientId, KeyId)],
    cek_len: usize,
) -> Result<Option<Recovered>, DecryptError> {
    let Some(key) = recipient_id(&ktri.rid).and_then(|rid| held_key(held, &rid)) else {
        return Ok(None);
    };
    let (transport, name) = key_transport(&ktri.key_enc_alg)?;
    let cek = hsm
        .recover_content_key(key, &transport, ktri.enc_key.as_bytes(), cek_len)
        .map_err(token_failure)?;
    Ok(Some(Recovered {
        cek,
        key: key.clone(),
        transport: name,
    }))
}

/// Key agreement (RFC 5753): the token computes ECDH with the sender's ephemeral key,
/// which the host has checked first; the host derives the key-encryption key and
/// unwraps the content key.
fn recover_agreed<K: KeyOps + ?Sized>(
    hsm: &K,
    kari: &cms::enveloped_data::KeyAgreeRecipientInfo,
    held: &[(RecipientId, KeyId)],
    cek_len: usize,
) -> Result<Option<Recovered>, DecryptError> {
    let Some((rek, key)) = kari.recipient_enc_keys.iter().find_map(|rek| {
        let rid = kari_recipient_id(&rek.rid)?;
        held_key(held, &rid).map(|key| (rek, key))
    }) else {
        return Ok(None);
    };
    let OriginatorIdentifierOrKey::OriginatorKey(originator) = &kari.originator else {
        return Err(DecryptError::Unsupported(
            "static-static ECDH (originator named by certificate)".into(),
        ));
    };
    let scheme =
        ecdh::Scheme::from_algorithm(&kari.key_enc_alg).map_err(DecryptError::Unsupported)?;
    // SEC1 §3.2.2.1: the peer's point is validated before our key meets it.
    let point = ecdh::peer_point(originator).map_err(DecryptError::Malformed)?;
    let wrapped = rek.enc_key.as_bytes();
    if wrapped.len() != cek_len + 8 {
        return Err(DecryptError::Malformed(
            "the wrapped content key does not fit the content cipher".into(),
        ));
    }
    let info = ecdh::shared_info(&scheme, kari.ukm.as_ref().map(|u| u.as_bytes()))
        .map_err(DecryptError::Malformed)?;
    // Everything public is checked; from here on our key is used.
    let z = hsm.ecdh_shared_secret(key, &point).map_err(token_failure)?;
    let kek = ecdh::kek_from(&scheme, &z, &info);
    // RFC 3218 §2.3 for key agreement too: a failed unwrap gets a random stand-in.
    let unwrapped = ecdh::unwrap(&scheme, &kek, wrapped);
    let (candidate, genuine): (&[u8], u8) = match &unwrapped {
        Ok(cek) => (cek, 1),
        Err(_) => (&[], 0),
    };
    let cek =
        ContentKey::select(candidate, Choice::from(genuine), cek_len).map_err(token_failure)?;
    Ok(Some(Recovered {
        cek,
        key: key.clone(),
        transport: "ecdh-p256",
    }))
}

/// A token error met while recovering a key. A mechanism the token refuses is a limit
/// on what this gateway can decrypt, as final as an unsupported algorithm; everything
/// else is the gateway's own failure ([`FailureClass::Gateway`]).
fn token_failure(e: HsmError) -> DecryptError {
    match e {
        HsmError::MechanismRefused { mechanism, reason } => {
            DecryptError::Unsupported(format!("{mechanism}, which the token refuses ({reason})"))
        }
        HsmError::KeyNotFound { id } => {
            tracing::warn!(
                key = %id,
                "the key directory names a key the token does not show (removed, or the \
                 token's login was lost)"
            );
            DecryptError::Token(HsmError::KeyNotFound { id })
        }
        other => DecryptError::Token(other),
    }
}

fn key_transport(
    alg: &spki::AlgorithmIdentifierOwned,
) -> Result<(KeyTransport, &'static str), DecryptError> {
    if alg.oid == RSA_ENCRYPTION {
        return Ok((KeyTransport::RsaPkcs1v15, "rsa-pkcs1v15"));
    }
    if alg.oid == RSAES_OAEP {
        let params = oaep_params(alg)?;
        let name = oaep_name(&params);
        return Ok((KeyTransport::RsaOaep(params), name));
    }
    Err(DecryptError::Unsupported(format!(
        "key transport {}",
        alg.oid
    )))
}

/// RSAES-OAEP-params (RFC 8017 Appendix A.2.1, RFC 4055 §4.1); absent or NULL means
/// every default (SHA-1, MGF1 with SHA-1, empty label).
fn oaep_params(alg: &spki::AlgorithmIdentifierOwned) -> Result<OaepParams, DecryptError> {
    let malformed = |e: der::Error| DecryptError::Malformed(format!("RSAES-OAEP parameters: {e}"));
    let params: rsa::pkcs1::RsaOaepParams<der::Any> = match &alg.parameters {
        Some(any) if any.tag() != der::Tag::Null => any.decode_as().map_err(malformed)?,
        _ => {
            return Ok(OaepParams {
                hash: OaepHash::Sha1,
                mgf1_hash: OaepHash::Sha1,
                label: Vec::new(),
            });
        }
    };
    if params.mask_gen.oid != ID_MGF1 {
        return Err(DecryptError::Unsupported(format!(
            "RSAES-OAEP with mask generation {}",
            params.mask_gen.oid
        )));
    }
    let mgf1_hash = params
        .mask_gen
        .parameters
        .as_ref()
        .ok_or_else(|| DecryptError::Malformed("MGF1 without its hash".into()))?
        .oid;
    if params.p_source.oid != ID_P_SPECIFIED {
        return Err(DecryptError::Unsupported(format!(
            "RSAES-OAEP with label source {}",
            params.p_source.oid
        )));
    }
    let label = match &params.p_source.parameters {
        Some(any) => any
            .decode_as::<OctetString>()
            .map_err(malformed)?
            .into_bytes()
            .into_vec(),
        None => Vec::new(),
    };
    Ok(OaepParams {
        hash: oaep_hash(&params.hash.oid)?,
        mgf1_hash: oaep_hash(&mgf1_hash)?,
        label,
    })
}

fn oaep_hash(oid: &ObjectIdentifier) -> Result<OaepHash, DecryptError> {
    match *oid {
        SHA1 => Ok(OaepHash::Sha1),
        SHA224 => Ok(OaepHash::Sha224),
        SHA256 => Ok(OaepHash::Sha256),
        SHA384 => Ok(OaepHash::Sha384),
        SHA512 => Ok(OaepHash::Sha512),
        other => Err(DecryptError::Unsupported(format!(
            "RSAES-OAEP with hash {other}"
        ))),
    }
}

/// The name we report: the OAEP hash, and the MGF1 hash where it differs.
fn oaep_name(p: &OaepParams) -> &'static str {
    const NAMES: [[&str; 5]; 5] = [
        [
            "rsaes-oaep-sha1",
            "rsaes-oaep-sha1-mgf1-sha224",
            "rsaes-oaep-sha1-mgf1-sha256",
            "rsaes-oaep-sha1-mgf1-sha384",
            "rsaes-oaep-sha1-mgf1-sha512",
        ],
        [
            "rsaes-oaep-sha224-mgf1-sha1",
            "rsaes-oaep-sha224",
            "rsaes-oaep-sha224-mgf1-sha256",
            "rsaes-oaep-sha224-mgf1-sha384",
            "rsaes-oaep-sha224-mgf1-sha512",
        ],
        [
            "rsaes-oaep-sha256-mgf1-sha1",
            "rsaes-oaep-sha256-mgf1-sha224",
            "rsaes-oaep-sha256",
            "rsaes-oaep-sha256-mgf1-sha384",
            "rsaes-oaep-sha256-mgf1-sha512",
        ],
        [
            "rsaes-oaep-sha384-mgf1-sha1",
            "rsaes-oaep-sha384-mgf1-sha224",
            "rsaes-oaep-sha384-mgf1-sha256",
            "rsaes-oaep-sha384",
            "rsaes-oaep-sha384-mgf1-sha512",
        ],
        [
            "rsaes-oaep-sha512-mgf1-sha1",
            "rsaes-oaep-sha512-mgf1-sha224",
            "rsaes-oaep-sha512-mgf1-sha256",
            "rsaes-oaep-sha512-mgf1-sha384",
            "rsaes-oaep-sha512",
        ],
    ];
    let index = |h: OaepHash| match h {
        OaepHash::Sha1 => 0,
        OaepHash::Sha224 => 1,
        OaepHash::Sha256 => 2,
        OaepHash::Sha384 => 3,
        OaepHash::Sha512 => 4,
    };
    NAMES[index(p.hash)][index(p.mgf1_hash)]
}

/// Content-encryption algorithms we decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Aes128Cbc,
    Aes192Cbc,
    Aes256Cbc,
    /// 3DES: accepted for decryption only, and reported as weak.
    DesEde3Cbc,
    Aes128Gcm,
    Aes192Gcm,
    Aes256Gcm,
}

impl Algorithm {
    fn from_oid(oid: &ObjectIdentifier) -> Result<Algorithm, DecryptError> {
        match *oid {
            AES128_CBC => Ok(Algorithm::Aes128Cbc),
            AES192_CBC => Ok(Algorithm::Aes192Cbc),
            AES256_CBC => Ok(Algorithm::Aes256Cbc),
            DES_EDE3_CBC => Ok(Algorithm::DesEde3Cbc),
            AES128_GCM => Ok(Algorithm::Aes128Gcm),
            AES192_GCM => Ok(Algorithm::Aes192Gcm),
            AES256_GCM => Ok(Algorithm::Aes256Gcm),
            other => Err(DecryptError::Unsupported(format!(
                "content encryption {other}"
            ))),
        }
    }

    fn key_len(self) -> usize {
        match self {
            Algorithm::Aes128Cbc | Algorithm::Aes128Gcm => 16,
            Algorithm::Aes192Cbc | Algorithm::Aes192Gcm | Algorithm::DesEde3Cbc => 24,
            Algorithm::Aes256Cbc | Algorithm::Aes256Gcm => 32,
        }
    }

    fn is_gcm(self) -> bool {
        matches!(
            self,
            Algorithm::Aes128Gcm | Algorithm::Aes192Gcm | Algorithm::Aes256Gcm
        )
    }

    /// The CBC block (and IV) length.
    fn block_len(self) -> usize {
        if self == Algorithm::DesEde3Cbc { 8 } else { 16 }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::Aes128Cbc => "aes128-cbc",
            Algorithm::Aes192Cbc => "aes192-cbc",
            Algorithm::Aes256Cbc => "aes256-cbc",
            Algorithm::DesEde3Cbc => "des-ede3-cbc",
            Algorithm::Aes128Gcm => "aes128-gcm",
            Algorithm::Aes192Gcm => "aes192-gcm",
            Algorithm::Aes256Gcm => "aes256-gcm",
        }
    }
}

/// The content encryption and its parameters, all checked before a key is used.
struct ContentCipher {
    algorithm: Algorithm,
    /// CBC: the IV. GCM: the nonce.
    iv: Vec<u8>,
    /// AuthEnvelopedData: the DER of the authenticated attributes (or nothing), and the
    /// tag (the ICV).
    aad: Vec<u8>,
    tag: Vec<u8>,
}

impl ContentCipher {
    /// The cipher and the ciphertext, which becomes the plaintext where it lies.
    fn from_parsed(
        content: EncryptedContentInfo,
        auth: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(ContentCipher, Vec<u8>), DecryptError> {
        let algorithm = Algorithm::from_oid(&content.content_enc_alg.oid)?;
        let buffer = content
            .encrypted_content
            .ok_or(DecryptError::Malformed(
                "no encrypted content (detached content is not supported)".into(),
            ))?
            .into_bytes()
            .into_vec();
        let params = content.content_enc_alg.parameters.as_ref().ok_or_else(|| {
            DecryptError::Malformed("content encryption without parameters".into())
        })?;
        let cipher = match (auth, algorithm.is_gcm()) {
            (Some((aad, tag)), true) => ContentCipher {
                algorithm,
                iv: gcm_nonce(params, tag.len())?,
                aad,
                tag,
            },
            (None, false) => {
                let iv = cbc_iv(params, algorithm.block_len())?;
                if buffer.is_empty() || !buffer.len().is_multiple_of(algorithm.block_len()) {
                    return Err(DecryptError::Malformed(
                        "CBC ciphertext is not a whole number of blocks".into(),
                    ));
                }
                ContentCipher {
                    algorithm,
                    iv,
                    aad: Vec::new(),
                    tag: Vec::new(),
                }
            }
            (Some(_), false) => {
                return Err(DecryptError::Unsupported(format!(
                    "authenticated encryption {}",
                    algorithm.name()
                )));
            }
            (None, true) => {
                return Err(DecryptError::Unsupported(
                    "AES-GCM outside AuthEnvelopedData (RFC 5084 §1)".into(),
                ));
            }
        };
        Ok((cipher, buffer))
    }

    /// Decrypts `buffer` in place with `key`: the plaintext length, or `None` when the
    /// CBC padding or the GCM tag is wrong. Run whether or not the key is genuine.
    fn open(&self, key: &[u8], buffer: &mut [u8]) -> Option<usize> {
        let len = buffer.len();
        let gcm = |opened: bool| opened.then_some(len);
        match self.algorithm {
            Algorithm::Aes128Cbc => cbc_open::<aes::Aes128>(key, &self.iv, buffer),
            Algorithm::Aes192Cbc => cbc_open::<aes::Aes192>(key, &self.iv, buffer),
            Algorithm::Aes256Cbc => cbc_open::<aes::Aes256>(key, &self.iv, buffer),
            Algorithm::DesEde3Cbc => cbc_open::<des::TdesEde3>(key, &self.iv, buffer),
            Algorithm::Aes128Gcm => gcm(gcm_open::<aes::Aes128>(key, self, buffer)),
            Algorithm::Aes192Gcm => gcm(gcm_open::<aes::Aes192>(key, self, buffer)),
            Algorithm::Aes256Gcm => gcm(gcm_open::<aes::Aes256>(key, self, buffer)),
        }
    }
}

fn cbc_iv(params: &der::Any, block_len: usize) -> Result<Vec<u8>, DecryptError> {
    let iv: OctetString = params
        .decode_as()
        .map_err(|e| DecryptError::Malformed(format!("CBC IV: {e}")))?;
    if iv.as_bytes().len() != block_len {
        return Err(DecryptError::Malformed("CBC IV of the wrong length".into()));
    }
    Ok(iv.into_bytes().into_vec())
}

/// The GCM nonce, after checking GCMParameters (RFC 5084 §3.2) against the tag:
/// aes-ICVlen is 12 to 16 and DEFAULT 12, and the tag must be that long.
fn gcm_nonce(params: &der::Any, tag_len: usize) -> Result<Vec<u8>, DecryptError> {
    let gcm: GcmParameters = params
        .decode_as()
        .map_err(|e| DecryptError::Malformed(format!("GCM parameters: {e}")))?;
    let icv_len = usize::from(gcm.icv_len.unwrap_or(12));
    if !(12..=16).contains(&icv_len) {
        return Err(DecryptError::Malformed(format!(
            "GCM ICV length {icv_len} (RFC 5084 allows 12 to 16)"
        )));
    }
    if tag_len != icv_len {
        return Err(DecryptError::Malformed(format!(
            "GCM tag of {tag_len} bytes where the parameters say {icv_len}"
        )));
    }
    if gcm.nonce.as_bytes().len() != 12 {
        return Err(DecryptError::Unsupported(
            "AES-GCM with a nonce other than 12 bytes".into(),
        ));
    }
    Ok(gcm.nonce.into_bytes().into_vec())
}

fn cbc_open<C>(key: &[u8], iv: &[u8], buffer: &mut [u8]) -> Option<usize>
where
    C: BlockCipherDecrypt,
    cbc::Decryptor<C>: KeyIvInit + BlockModeDecrypt,
{
    use cbc::cipher::block_padding::Pkcs7;
    cbc::Decryptor::<C>::new_from_slices(key, iv)
        .ok()?
        .decrypt_padded::<Pkcs7>(buffer)
        .ok()
        .map(<[u8]>::len)
}

fn gcm_open<A>(key: &[u8], cipher: &ContentCipher, buffer: &mut [u8]) -> bool
where
    A: BlockSizeUser<BlockSize = aes_gcm::aead::consts::U16> + BlockCipherEncrypt + KeyInit,
{
    use aes_gcm::aead::consts::{U12, U13, U14, U15, U16};
    match cipher.tag.len() {
        12 => gcm_open_with::<A, U12>(key, cipher, buffer),
        13 => gcm_open_with::<A, U13>(key, cipher, buffer),
        14 => gcm_open_with::<A, U14>(key, cipher, buffer),
        15 => gcm_open_with::<A, U15>(key, cipher, buffer),
        _ => gcm_open_with::<A, U16>(key, cipher, buffer),
    }
}

fn gcm_open_with<A, T>(key: &[u8], cipher: &ContentCipher, buffer: &mut [u8]) -> bool
where
    A: BlockSizeUser<BlockSize = aes_gcm::aead::consts::U16> + BlockCipherEncrypt + KeyInit,
    T: aes_gcm::TagSize,
{
    use aes_gcm::aead::AeadInOut;
    type Gcm<A, T> = aes_gcm::AesGcm<A, aes_gcm::aead::consts::U12, T>;
    let Ok(gcm) = <Gcm<A, T> as KeyInit>::new_from_slice(key) else {
        return false;
    };
    let (Ok(nonce), Ok(tag)) = (
        aes_gcm::Nonce::<aes_gcm::aead::consts::U12>::try_from(&cipher.iv[..]),
        aes_gcm::Tag::<T>::try_from(&cipher.tag[..]),
    ) else {
        return false;
    };
    gcm.decrypt_inout_detached(&nonce, &cipher.aad, buffer.into(), &tag)
        .is_ok()
}

/// GCMParameters (RFC 5084 §3.2): nonce and ICV length (default 12).
#[derive(Clone, Debug, der::Sequence)]
struct GcmParameters {
    nonce: OctetString,
    #[asn1(optional = "true")]
    icv_len: Option<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::error::RvError;

    #[test]
    fn every_failure_has_its_class() {
        use FailureClass::*;
        let cases = [
            (DecryptError::NotEncrypted("plain text"), Structure),
            (DecryptError::Malformed("truncated".into()), Structure),
            (
                DecryptError::Mime(MimeError::TooLarge { size: 2, limit: 1 }),
                Structure,
            ),
            (DecryptError::NoKey { recipients: 3 }, Structure),
            (DecryptError::Unsupported("rc2".into()), Structure),
            (DecryptError::Integrity("x"), Integrity),
            (
                DecryptError::Token(HsmError::Busy {
                    seconds: 5,
                    capacity: 4,
                }),
                Gateway,
            ),
            (
                DecryptError::Token(HsmError::Timeout {
                    operation: "decrypt message",
                    seconds: 30,
                }),
                Gateway,
            ),
            (
                DecryptError::Token(HsmError::WrongPin { label: "t".into() }),
                Gateway,
            ),
            (
                DecryptError::Token(HsmError::PinLocked { label: "t".into() }),
                Gateway,
            ),
            (
                DecryptError::Token(HsmError::KeyNotFound { id: "ab".into() }),
                Gateway,
            ),
            (
                DecryptError::Token(HsmError::Token {
                    operation: "decrypt key",
                    rv: RvError::DeviceRemoved,
                }),
                Gateway,
            ),
        ];
        for (err, class) in cases {
            assert_eq!(err.class(), class, "{err}");
            assert_eq!(err.is_transient(), class == Gateway, "{err}");
        }
    }
}

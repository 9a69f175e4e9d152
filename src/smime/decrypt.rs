//! Decrypting `application/pkcs7-mime` enveloped-data and authEnveloped-data
//! (RFC 8551 §3.3, RFC 5652 §6, RFC 5083/5084). The content-encryption key is recovered
//! in the token by whichever held key a RecipientInfo names; the content is decrypted
//! on the host with that per-message key.

use aes_gcm::aead::KeyInit;
use cbc::cipher::{BlockModeDecrypt, KeyIvInit};
use cms::enveloped_data::{
    EncryptedContentInfo, KeyAgreeRecipientIdentifier, OriginatorIdentifierOrKey,
    RecipientIdentifier, RecipientInfo, RecipientInfos,
};
use const_oid::ObjectIdentifier;
use der::asn1::OctetString;
use der::{Decode, Encode};
use x509_cert::certificate::Certificate;
use zeroize::Zeroizing;

use super::{ber, ecdh};
use crate::hsm::{Hsm, HsmError, KeyId, KeyTransport};
use crate::mime::{self, Limits, MimeError};

const ID_ENVELOPED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
const ID_AUTH_ENVELOPED_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.23");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const RSAES_OAEP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");
const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const AES128_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.2");
const AES192_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.22");
const AES256_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.42");
const AES128_GCM: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.6");
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
    #[error("unsupported algorithm {0}")]
    Unsupported(String),
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

impl DecryptError {
    /// Which kind of failure this is (see [`FailureClass`]).
    pub fn class(&self) -> FailureClass {
        match self {
            DecryptError::NotEncrypted(_)
            | DecryptError::Malformed(_)
            | DecryptError::Mime(_)
            | DecryptError::NoKey { .. }
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
/// (recipient id → key in the token). Keys that fail are skipped.
pub fn decrypt(
    hsm: &Hsm,
    cms_der: &[u8],
    held: &[(RecipientId, KeyId)],
) -> Result<Decrypted, DecryptError> {
    decrypt_within(hsm, cms_der, held, &Limits::default())
}

/// [`decrypt`] with explicit limits (recipient count).
pub fn decrypt_within(
    hsm: &Hsm,
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
    let cek_len = content_key_len(&parsed.content.content_enc_alg.oid)?;
    let mut last_token_error = None;
    let mut found = None;
    for ri in parsed.recipient_infos.0.iter() {
        let recovered = match ri {
            RecipientInfo::Ktri(ktri) => recover_transported(hsm, ktri, held, cek_len),
            RecipientInfo::Kari(kari) => recover_agreed(hsm, kari, held),
            _ => Ok(None),
        };
        let (cek, key, key_transport) = match recovered {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(DecryptError::Token(e)) if !e.is_transient() => {
                last_token_error = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        if cek.len() != cek_len {
            return Err(DecryptError::Integrity(
                "content-encryption key of the wrong length",
            ));
        }
        found = Some((cek, key, key_transport));
        break;
    }
    let Some((cek, key, key_transport)) = found else {
        return match last_token_error {
            Some(e) => Err(e.into()),
            None => Err(DecryptError::NoKey { recipients: total }),
        };
    };
    let (entity, content_algorithm, weak) = decrypt_content(parsed, &cek)?;
    Ok(Decrypted {
        entity,
        content_algorithm,
        key_transport,
        key,
        weak,
    })
}

type Recovered = Option<(Zeroizing<Vec<u8>>, KeyId, &'static str)>;

/// Key transport: the token decrypts the content key with the recipient's RSA key.
fn recover_transported(
    hsm: &Hsm,
    ktri: &cms::enveloped_data::KeyTransRecipientInfo,
    held: &[(RecipientId, KeyId)],
    cek_len: usize,
) -> Result<Recovered, DecryptError> {
    let Some(rid) = recipient_id(&ktri.rid) else {
        return Ok(None);
    };
    let Some((_, key)) = held.iter().find(|(id, _)| *id == rid) else {
        return Ok(None);
    };
    let (transport, name) = key_transport(&ktri.key_enc_alg)?;
    let cek = match hsm.decrypt_key_transport(key, transport, ktri.enc_key.as_bytes()) {
        Ok(cek) => cek,
        // RFC 3218 §2.3: on a PKCS#1 v1.5 failure continue with a random key, so a
        // padding oracle learns nothing; the content decryption then fails.
        Err(HsmError::Token { rv, .. })
            if transport == KeyTransport::RsaPkcs1v15
                && matches!(
                    rv,
                    cryptoki::error::RvError::EncryptedDataInvalid
                        | cryptoki::error::RvError::EncryptedDataLenRange
                        | cryptoki::error::RvError::DataInvalid
                ) =>
        {
            random_key(cek_len)?
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Some((cek, key.clone(), name)))
}

/// Key agreement (RFC 5753): the token computes ECDH with the sender's ephemeral key;
/// the host derives the key-encryption key and unwraps the content key.
fn recover_agreed(
    hsm: &Hsm,
    kari: &cms::enveloped_data::KeyAgreeRecipientInfo,
    held: &[(RecipientId, KeyId)],
) -> Result<Recovered, DecryptError> {
    let Some((rek, key)) = kari.recipient_enc_keys.iter().find_map(|rek| {
        let rid = kari_recipient_id(&rek.rid)?;
        held.iter()
            .find(|(id, _)| *id == rid)
            .map(|(_, key)| (rek, key))
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
    let point = originator
        .public_key
        .as_bytes()
        .ok_or_else(|| DecryptError::Malformed("originator key is not whole bytes".into()))?;
    let z = hsm.ecdh_shared_secret(key, point)?;
    let kek = ecdh::kek(&scheme, &z, kari.ukm.as_ref().map(|u| u.as_bytes()))
        .map_err(DecryptError::Malformed)?;
    let cek = ecdh::unwrap(&scheme, &kek, rek.enc_key.as_bytes()).map_err(|_| {
        DecryptError::Integrity("AES key unwrap failed (wrong key or corrupted message)")
    })?;
    Ok(Some((cek, key.clone(), "ecdh-p256")))
}

fn key_transport(
    alg: &spki::AlgorithmIdentifierOwned,
) -> Result<(KeyTransport, &'static str), DecryptError> {
    if alg.oid == RSA_ENCRYPTION {
        return Ok((KeyTransport::RsaPkcs1v15, "rsa-pkcs1v15"));
    }
    if alg.oid == RSAES_OAEP {
        let hash = match &alg.parameters {
            None => SHA1,
            Some(params) => {
                let params: rsa::pkcs1::RsaOaepParams<der::Any> = params
                    .decode_as()
                    .map_err(|e| DecryptError::Malformed(format!("RSAES-OAEP parameters: {e}")))?;
                params.hash.oid
            }
        };
        return if hash == SHA1 {
            Ok((KeyTransport::RsaOaepSha1, "rsaes-oaep-sha1"))
        } else if hash == SHA256 {
            Ok((KeyTransport::RsaOaepSha256, "rsaes-oaep-sha256"))
        } else {
            Err(DecryptError::Unsupported(format!(
                "RSAES-OAEP with hash {hash}"
            )))
        };
    }
    Err(DecryptError::Unsupported(format!(
        "key transport {}",
        alg.oid
    )))
}

fn content_key_len(oid: &ObjectIdentifier) -> Result<usize, DecryptError> {
    match *oid {
        AES128_CBC | AES128_GCM => Ok(16),
        AES192_CBC | DES_EDE3_CBC => Ok(24),
        AES256_CBC | AES256_GCM => Ok(32),
        other => Err(DecryptError::Unsupported(format!(
            "content encryption {other}"
        ))),
    }
}

fn random_key(len: usize) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
    let mut key = Zeroizing::new(vec![0u8; len]);
    getrandom::fill(&mut key).map_err(|e| HsmError::Library {
        operation: "random key",
        reason: e.to_string(),
    })?;
    Ok(key)
}

/// Decrypts the content where it lies: the parsed ciphertext becomes the plaintext.
fn decrypt_content(
    parsed: Parsed,
    cek: &[u8],
) -> Result<(Vec<u8>, &'static str, bool), DecryptError> {
    use aes_gcm::aead::AeadInOut;
    use cbc::cipher::block_padding::Pkcs7;
    let alg = parsed.content.content_enc_alg;
    let mut buffer = parsed
        .content
        .encrypted_content
        .ok_or(DecryptError::Malformed(
            "no encrypted content (detached content is not supported)".into(),
        ))?
        .into_bytes()
        .into_vec();
    let params = alg
        .parameters
        .as_ref()
        .ok_or_else(|| DecryptError::Malformed("content encryption without parameters".into()))?;
    if let Some((aad, tag)) = &parsed.auth {
        let gcm: GcmParameters = params
            .decode_as()
            .map_err(|e| DecryptError::Malformed(format!("GCM parameters: {e}")))?;
        if gcm.nonce.as_bytes().len() != 12 || tag.len() != 16 || gcm.icv_len.unwrap_or(12) != 16 {
            return Err(DecryptError::Unsupported(
                "AES-GCM with a nonce other than 12 or a tag other than 16 bytes".into(),
            ));
        }
        let nonce = aes_gcm::Nonce::try_from(gcm.nonce.as_bytes())
            .map_err(|_| DecryptError::Malformed("GCM nonce of the wrong length".into()))?;
        let tag = aes_gcm::Tag::try_from(&tag[..])
            .map_err(|_| DecryptError::Malformed("GCM tag of the wrong length".into()))?;
        let bad_key = |_| DecryptError::Integrity("bad key length");
        let opened = match alg.oid {
            AES128_GCM => aes_gcm::Aes128Gcm::new_from_slice(cek)
                .map_err(bad_key)?
                .decrypt_inout_detached(&nonce, aad, buffer.as_mut_slice().into(), &tag),
            AES256_GCM => aes_gcm::Aes256Gcm::new_from_slice(cek)
                .map_err(bad_key)?
                .decrypt_inout_detached(&nonce, aad, buffer.as_mut_slice().into(), &tag),
            other => {
                return Err(DecryptError::Unsupported(format!(
                    "authenticated encryption {other}"
                )));
            }
        };
        if opened.is_err() {
            // Unauthenticated plaintext is never returned, nor left lying about.
            zeroize::Zeroize::zeroize(&mut buffer);
            return Err(DecryptError::Integrity(
                "AES-GCM authentication tag mismatch",
            ));
        }
        let name = if alg.oid == AES128_GCM {
            "aes128-gcm"
        } else {
            "aes256-gcm"
        };
        return Ok((buffer, name, false));
    }
    let iv: OctetString = params
        .decode_as()
        .map_err(|e| DecryptError::Malformed(format!("CBC IV: {e}")))?;
    let iv = iv.as_bytes();
    let padding = |_| DecryptError::Integrity("bad CBC padding (wrong key or corrupted content)");
    let bad_iv = |_| DecryptError::Malformed("CBC IV of the wrong length".into());
    let (plain_len, name, weak) = match alg.oid {
        AES128_CBC => (
            cbc::Decryptor::<aes::Aes128>::new_from_slices(cek, iv)
                .map_err(bad_iv)?
                .decrypt_padded::<Pkcs7>(&mut buffer)
                .map_err(padding)?
                .len(),
            "aes128-cbc",
            false,
        ),
        AES192_CBC => (
            cbc::Decryptor::<aes::Aes192>::new_from_slices(cek, iv)
                .map_err(bad_iv)?
                .decrypt_padded::<Pkcs7>(&mut buffer)
                .map_err(padding)?
                .len(),
            "aes192-cbc",
            false,
        ),
        AES256_CBC => (
            cbc::Decryptor::<aes::Aes256>::new_from_slices(cek, iv)
                .map_err(bad_iv)?
                .decrypt_padded::<Pkcs7>(&mut buffer)
                .map_err(padding)?
                .len(),
            "aes256-cbc",
            false,
        ),
        DES_EDE3_CBC => (
            cbc::Decryptor::<des::TdesEde3>::new_from_slices(cek, iv)
                .map_err(bad_iv)?
                .decrypt_padded::<Pkcs7>(&mut buffer)
                .map_err(padding)?
                .len(),
            "des-ede3-cbc",
            true,
        ),
        other => {
            return Err(DecryptError::Unsupported(format!(
                "content encryption {other}"
            )));
        }
    };
    buffer.truncate(plain_len);
    Ok((buffer, name, weak))
}

/// GCMParameters (RFC 5084): nonce and ICV length (default 12).
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
                DecryptError::Token(HsmError::WrongPin {
                    label: "t".into(),
                }),
                Gateway,
            ),
            (
                DecryptError::Token(HsmError::PinLocked {
                    label: "t".into(),
                }),
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

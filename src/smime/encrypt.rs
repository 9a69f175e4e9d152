//! Encrypting a message to recipient certificates (RFC 8551 §3.3, RFC 5652 §6,
//! RFC 5083/5084 for AES-GCM, RFC 3560 for RSA-OAEP). Public-key work only: the
//! per-message content key is made and used on the host and wrapped to each recipient.
//! Never 3DES, RC2 or DES.

use aes_gcm::aead::KeyInit;
use cbc::cipher::{BlockModeEncrypt, KeyIvInit};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::CmsVersion;
use cms::enveloped_data::{
    KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo, RecipientInfos,
};
use const_oid::ObjectIdentifier;
use der::asn1::{OctetString, SetOfVec};
use der::{Any, Encode};
use spki::AlgorithmIdentifierOwned;
use x509_cert::certificate::Certificate;
use zeroize::Zeroizing;

use super::ecdh;
use crate::mime::{self, Header, Limits, MimeError};

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_ENVELOPED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
const ID_AUTH_ENVELOPED_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.23");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const RSAES_OAEP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");
const AES128_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.2");
const AES256_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.42");
const AES128_GCM: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.6");
const AES256_GCM: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.46");

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptError {
    #[error(transparent)]
    Mime(#[from] MimeError),
    #[error("no recipients")]
    NoRecipients,
    #[error("recipient {subject}: {reason}")]
    Recipient { subject: String, reason: String },
    #[error("encryption failed: {0}")]
    Crypto(String),
}

/// Content encryption. AES-256-CBC is the default; GCM (AuthEnvelopedData) when every
/// recipient is known to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentCipher {
    Aes128Cbc,
    Aes256Cbc,
    Aes128Gcm,
    Aes256Gcm,
}

impl ContentCipher {
    fn key_len(self) -> usize {
        match self {
            ContentCipher::Aes128Cbc | ContentCipher::Aes128Gcm => 16,
            ContentCipher::Aes256Cbc | ContentCipher::Aes256Gcm => 32,
        }
    }

    fn is_gcm(self) -> bool {
        matches!(self, ContentCipher::Aes128Gcm | ContentCipher::Aes256Gcm)
    }

    pub fn smime_type(self) -> &'static str {
        if self.is_gcm() {
            "authEnveloped-data"
        } else {
            "enveloped-data"
        }
    }
}

/// How the content key reaches an RSA recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTransportChoice {
    RsaPkcs1v15,
    /// RSAES-OAEP with the default parameters (SHA-1, MGF1-SHA-1): what a recipient
    /// advertising rsaesOAEP without parameters reads.
    RsaOaep,
}

#[derive(Debug, Clone)]
pub struct Recipient {
    pub certificate: Certificate,
    pub transport: KeyTransportChoice,
}

fn crypto<E: std::fmt::Display>(e: E) -> EncryptError {
    EncryptError::Crypto(e.to_string())
}

fn random(len: usize) -> Result<Zeroizing<Vec<u8>>, EncryptError> {
    let mut buf = Zeroizing::new(vec![0u8; len]);
    getrandom::fill(&mut buf).map_err(crypto)?;
    Ok(buf)
}

/// Encrypts `entity` (a MIME entity) to every recipient; returns the DER ContentInfo.
pub fn encrypt_entity(
    entity: &[u8],
    recipients: &[Recipient],
    cipher: ContentCipher,
) -> Result<Vec<u8>, EncryptError> {
    let sealed = seal(entity.to_vec(), recipients, cipher)?;
    Ok([&sealed.prefix[..], &sealed.ciphertext, &sealed.suffix].concat())
}

/// A DER ContentInfo in three pieces, so that the (large) ciphertext is encrypted in
/// place and never copied into an encoder: `prefix ‖ ciphertext ‖ suffix`.
struct Sealed {
    prefix: Vec<u8>,
    ciphertext: Vec<u8>,
    suffix: Vec<u8>,
}

/// Encrypts the entity in its own buffer and encodes the envelope around it.
fn seal(
    mut entity: Vec<u8>,
    recipients: &[Recipient],
    cipher: ContentCipher,
) -> Result<Sealed, EncryptError> {
    use aes_gcm::aead::AeadInOut;
    use cbc::cipher::block_padding::Pkcs7;
    if recipients.is_empty() {
        return Err(EncryptError::NoRecipients);
    }
    let cek = random(cipher.key_len())?;
    let infos: Vec<RecipientInfo> = recipients
        .iter()
        .map(|r| recipient_info(r, &cek))
        .collect::<Result<_, _>>()?;
    let all_ktri = infos.iter().all(|ri| matches!(ri, RecipientInfo::Ktri(_)));
    let recip_infos = RecipientInfos(SetOfVec::try_from(infos).map_err(crypto)?)
        .to_der()
        .map_err(crypto)?;
    let (content_type, version, algorithm, suffix) = if cipher.is_gcm() {
        let nonce = random(12)?;
        let nonce_array = aes_gcm::Nonce::try_from(&nonce[..]).map_err(crypto)?;
        let gcm_failed = |_| EncryptError::Crypto("AES-GCM failed".into());
        let tag = match cipher {
            ContentCipher::Aes128Gcm => aes_gcm::Aes128Gcm::new_from_slice(&cek)
                .map_err(crypto)?
                .encrypt_inout_detached(&nonce_array, b"", entity.as_mut_slice().into())
                .map_err(gcm_failed)?
                .to_vec(),
            _ => aes_gcm::Aes256Gcm::new_from_slice(&cek)
                .map_err(crypto)?
                .encrypt_inout_detached(&nonce_array, b"", entity.as_mut_slice().into())
                .map_err(gcm_failed)?
                .to_vec(),
        };
        let params = GcmParameters {
            nonce: OctetString::new(nonce.to_vec()).map_err(crypto)?,
            icv_len: 16,
        };
        let oid = if cipher == ContentCipher::Aes128Gcm {
            AES128_GCM
        } else {
            AES256_GCM
        };
        let algorithm = AlgorithmIdentifierOwned {
            oid,
            parameters: Some(Any::encode_from(&params).map_err(crypto)?),
        };
        // AuthEnvelopedData (RFC 5083): no authAttrs; the MAC follows the content.
        let mac = OctetString::new(tag)
            .map_err(crypto)?
            .to_der()
            .map_err(crypto)?;
        (ID_AUTH_ENVELOPED_DATA, CmsVersion::V0, algorithm, mac)
    } else {
        let iv = random(16)?;
        let len = entity.len();
        // PKCS#7 padding adds 1 to 16 bytes.
        entity.resize(len + 16, 0);
        let padded = match cipher {
            ContentCipher::Aes128Cbc => cbc::Encryptor::<aes::Aes128>::new_from_slices(&cek, &iv)
                .map_err(crypto)?
                .encrypt_padded::<Pkcs7>(&mut entity, len)
                .map_err(crypto)?
                .len(),
            _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(&cek, &iv)
                .map_err(crypto)?
                .encrypt_padded::<Pkcs7>(&mut entity, len)
                .map_err(crypto)?
                .len(),
        };
        entity.truncate(padded);
        let oid = if cipher == ContentCipher::Aes128Cbc {
            AES128_CBC
        } else {
            AES256_CBC
        };
        let algorithm = AlgorithmIdentifierOwned {
            oid,
            parameters: Some(
                Any::encode_from(&OctetString::new(iv.to_vec()).map_err(crypto)?)
                    .map_err(crypto)?,
            ),
        };
        // RFC 5652 §6.1: version 2 as soon as a RecipientInfo is not version 0.
        let version = if all_ktri {
            CmsVersion::V0
        } else {
            CmsVersion::V2
        };
        (ID_ENVELOPED_DATA, version, algorithm, Vec::new())
    };
    let ciphertext = entity;
    // EncryptedContentInfo ::= SEQUENCE { contentType, contentEncryptionAlgorithm,
    //   encryptedContent [0] IMPLICIT OCTET STRING }
    let data_oid = ID_DATA.to_der().map_err(crypto)?;
    let algorithm = algorithm.to_der().map_err(crypto)?;
    let content_header = der_header(0x80, ciphertext.len());
    let eci_len = data_oid.len() + algorithm.len() + content_header.len() + ciphertext.len();
    let eci_header = der_header(0x30, eci_len);
    // (Auth)EnvelopedData ::= SEQUENCE { version, recipientInfos,
    //   (auth)encryptedContentInfo [, mac] }: no originatorInfo, no attributes.
    let version = version.to_der().map_err(crypto)?;
    let envelope_len =
        version.len() + recip_infos.len() + eci_header.len() + eci_len + suffix.len();
    let envelope_header = der_header(0x30, envelope_len);
    // ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT content }
    let type_oid = content_type.to_der().map_err(crypto)?;
    let explicit = der_header(0xa0, envelope_header.len() + envelope_len);
    let info_len = type_oid.len() + explicit.len() + envelope_header.len() + envelope_len;
    let prefix = [
        &der_header(0x30, info_len)[..],
        &type_oid,
        &explicit,
        &envelope_header,
        &version,
        &recip_infos,
        &eci_header,
        &data_oid,
        &algorithm,
        &content_header,
    ]
    .concat();
    Ok(Sealed {
        prefix,
        ciphertext,
        suffix,
    })
}

fn der_header(tag: u8, len: usize) -> Vec<u8> {
    let mut header = vec![tag];
    if len < 0x80 {
        header.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        header.push(0x80 | (bytes.len() - skip) as u8);
        header.extend_from_slice(&bytes[skip..]);
    }
    header
}

fn recipient_info(recipient: &Recipient, cek: &[u8]) -> Result<RecipientInfo, EncryptError> {
    use rsa::pkcs8::DecodePublicKey;
    let tbs = recipient.certificate.tbs_certificate();
    let fail = |reason: String| EncryptError::Recipient {
        subject: tbs.subject().to_string(),
        reason,
    };
    let spki = tbs.subject_public_key_info();
    if let Some(problem) = recipient_key_problem(&recipient.certificate) {
        return Err(fail(problem));
    }
    if spki.algorithm.oid == ecdh::EC_PUBLIC_KEY {
        return key_agree_info(recipient, cek).map_err(fail);
    }
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Err(fail(format!(
            "unsupported public key algorithm {}",
            spki.algorithm.oid
        )));
    }
    let key = rsa::PublicKey::from_public_key_der(&spki.to_der().map_err(|e| fail(e.to_string()))?)
        .map_err(|e| fail(format!("public key: {e}")))?;
    let mut rng = getrandom::SysRng;
    let (encrypted, key_enc_alg) = match recipient.transport {
        KeyTransportChoice::RsaPkcs1v15 => (
            key.encrypt(&mut rng, rsa::Pkcs1v15Encrypt, cek),
            AlgorithmIdentifierOwned {
                oid: RSA_ENCRYPTION,
                parameters: Some(der::asn1::Null.into()),
            },
        ),
        KeyTransportChoice::RsaOaep => (
            key.encrypt(&mut rng, rsa::Oaep::<sha1::Sha1>::new(), cek),
            AlgorithmIdentifierOwned {
                oid: RSAES_OAEP,
                // RSAES-OAEP-params with every field at its default (SHA-1, MGF1-SHA-1).
                parameters: Some(
                    Any::new(der::Tag::Sequence, Vec::new()).map_err(|e| fail(e.to_string()))?,
                ),
            },
        ),
    };
    let encrypted = encrypted.map_err(|e| fail(format!("key transport: {e}")))?;
    Ok(RecipientInfo::Ktri(KeyTransRecipientInfo {
        version: CmsVersion::V0,
        rid: RecipientIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer().clone(),
            serial_number: tbs.serial_number().clone(),
        }),
        key_enc_alg,
        enc_key: OctetString::new(encrypted).map_err(|e| fail(e.to_string()))?,
    }))
}

/// The smallest RSA key mail is encrypted to.
const MIN_RSA_BITS: u32 = 2048;

/// Why mail cannot be encrypted to `cert`'s key, if it cannot: the key usage must
/// allow what we do with the key (RFC 8550 §4.4.2: keyEncipherment for RSA key
/// transport, keyAgreement for ECDH; no extension allows both), an RSA key must have
/// at least 2048 bits, an EC key must be on P-256.
pub fn recipient_key_problem(cert: &Certificate) -> Option<String> {
    use rsa::pkcs8::DecodePublicKey;
    use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
    let spki = cert.tbs_certificate().subject_public_key_info();
    let ec = spki.algorithm.oid == ecdh::EC_PUBLIC_KEY;
    let usage = match cert.tbs_certificate().get_extension::<KeyUsage>() {
        Ok(found) => found.map(|(_, ku)| ku.0),
        Err(e) => return Some(format!("key usage extension: {e}")),
    };
    let (needed, name) = if ec {
        (KeyUsages::KeyAgreement, "keyAgreement")
    } else {
        (KeyUsages::KeyEncipherment, "keyEncipherment")
    };
    if usage.is_some_and(|ku| !ku.contains(needed)) {
        return Some(format!(
            "the certificate's key usage does not allow {name}: it is not for encryption"
        ));
    }
    if ec {
        let point = spki.subject_public_key.raw_bytes();
        return p256::PublicKey::from_sec1_bytes(point)
            .is_err()
            .then(|| "not a P-256 public key".to_string());
    }
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Some(format!(
            "unsupported public key algorithm {}",
            spki.algorithm.oid
        ));
    }
    let key = match spki
        .to_der()
        .ok()
        .and_then(|der| rsa::PublicKey::from_public_key_der(&der).ok())
    {
        Some(key) => key,
        None => return Some("the RSA public key does not parse".into()),
    };
    let bits = rsa::traits::PublicKeyParts::n(&key).bit_width();
    (bits < MIN_RSA_BITS).then(|| {
        format!("RSA key of {bits} bits; at least {MIN_RSA_BITS} are required (RFC 8551 §2.3)")
    })
}

/// ECDH ephemeral-static to a P-256 recipient (RFC 5753): X9.63 KDF with SHA-256,
/// AES-256 key wrap.
fn key_agree_info(recipient: &Recipient, cek: &[u8]) -> Result<RecipientInfo, String> {
    use cms::enveloped_data::{
        KeyAgreeRecipientIdentifier, KeyAgreeRecipientInfo, OriginatorIdentifierOrKey,
        OriginatorPublicKey, RecipientEncryptedKey,
    };
    use p256::elliptic_curve::Generate;
    let tbs = recipient.certificate.tbs_certificate();
    let point = tbs.subject_public_key_info().subject_public_key.raw_bytes();
    let their_key = p256::PublicKey::from_sec1_bytes(point)
        .map_err(|_| "not a P-256 public key".to_string())?;
    let ephemeral = p256::ecdh::EphemeralSecret::generate();
    let shared = ephemeral.diffie_hellman(&their_key);
    let scheme = ecdh::Scheme {
        kdf: ecdh::STD_DH_SHA256KDF,
        wrap: ecdh::AES256_WRAP,
    };
    let kek = ecdh::kek(&scheme, shared.raw_secret_bytes().as_slice(), None)?;
    let wrapped = ecdh::wrap(&scheme, &kek, cek)?;
    let ours = ephemeral.public_key().to_sec1_bytes();
    Ok(RecipientInfo::Kari(KeyAgreeRecipientInfo {
        version: CmsVersion::V3,
        originator: OriginatorIdentifierOrKey::OriginatorKey(OriginatorPublicKey {
            algorithm: AlgorithmIdentifierOwned {
                oid: ecdh::EC_PUBLIC_KEY,
                parameters: None,
            },
            public_key: der::asn1::BitString::from_bytes(&ours).map_err(|e| e.to_string())?,
        }),
        ukm: None,
        key_enc_alg: scheme.algorithm().map_err(|e| e.to_string())?,
        recipient_enc_keys: vec![RecipientEncryptedKey {
            rid: KeyAgreeRecipientIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: tbs.issuer().clone(),
                serial_number: tbs.serial_number().clone(),
            }),
            enc_key: OctetString::new(wrapped).map_err(|e| e.to_string())?,
        }],
    }))
}

/// Encrypts a whole message: its Content-* headers and body become the encrypted
/// entity; the other header fields stay outside.
pub fn encrypt_message(
    message: &[u8],
    recipients: &[Recipient],
    cipher: ContentCipher,
    limits: &Limits,
) -> Result<Vec<u8>, EncryptError> {
    check(message, recipients, limits)?;
    let canonical = mime::to_crlf(message);
    let (headers, body_start) = mime::split_headers(&canonical)?;
    let (entity_head, outer) = partition(headers);
    let body = &canonical[body_start..];
    // Room for the CBC padding, so that the entity is encrypted where it lies.
    let mut entity = Vec::with_capacity(entity_head.len() + body.len() + 16);
    entity.extend_from_slice(&entity_head);
    entity.extend_from_slice(body);
    finish(&outer, entity, recipients, cipher)
}

/// [`encrypt_message`] for a message the caller gives away (a message just signed):
/// its buffer becomes the entity and then the ciphertext, so a large message is not
/// held twice.
pub fn encrypt_message_owned(
    mut message: Vec<u8>,
    recipients: &[Recipient],
    cipher: ContentCipher,
    limits: &Limits,
) -> Result<Vec<u8>, EncryptError> {
    check(&message, recipients, limits)?;
    if let std::borrow::Cow::Owned(canonical) = mime::to_crlf(&message) {
        message = canonical;
    }
    let (headers, body_start) = mime::split_headers(&message)?;
    let (entity_head, outer) = partition(headers);
    // The entity is the content header fields and the body: it replaces the header
    // block in place.
    message.splice(0..body_start, entity_head);
    finish(&outer, message, recipients, cipher)
}

fn check(message: &[u8], recipients: &[Recipient], limits: &Limits) -> Result<(), EncryptError> {
    if message.len() > limits.max_size {
        return Err(MimeError::TooLarge {
            size: message.len(),
            limit: limits.max_size,
        }
        .into());
    }
    if recipients.len() > limits.max_recipients {
        return Err(EncryptError::Recipient {
            subject: format!("{} recipients", recipients.len()),
            reason: format!("more than the limit of {}", limits.max_recipients),
        });
    }
    Ok(())
}

/// The entity's header block (Content-* fields but MIME-Version, then the empty line)
/// and the header fields that stay outside.
fn partition(headers: Vec<Header>) -> (Vec<u8>, Vec<Header>) {
    let (content, outer): (Vec<Header>, Vec<Header>) =
        headers.into_iter().partition(|h| h.is_content_header());
    let mut head = Vec::new();
    for h in content.iter().filter(|h| !h.is("mime-version")) {
        head.extend_from_slice(&h.raw);
    }
    head.extend_from_slice(b"\r\n");
    (head, outer)
}

fn finish(
    outer: &[Header],
    entity: Vec<u8>,
    recipients: &[Recipient],
    cipher: ContentCipher,
) -> Result<Vec<u8>, EncryptError> {
    let sealed = seal(entity, recipients, cipher)?;
    let der_len = sealed.prefix.len() + sealed.ciphertext.len() + sealed.suffix.len();
    let mut out = Vec::with_capacity(der_len / 57 * 78 + 2048);
    for h in outer {
        out.extend_from_slice(&h.raw);
    }
    out.extend_from_slice(
        format!(
            "MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type={}; name=\"smime.p7m\"\r\n\
             Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n",
            cipher.smime_type()
        )
        .as_bytes(),
    );
    mime::base64_lines_of_parts(
        &[&sealed.prefix, &sealed.ciphertext, &sealed.suffix],
        &mut out,
    );
    Ok(out)
}

#[derive(Clone, Debug, der::Sequence)]
struct GcmParameters {
    nonce: OctetString,
    icv_len: u8,
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Decode;

    /// A throwaway RSA certificate made by openssl (only its public key is used).
    fn recipient() -> Recipient {
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "/dev/null",
            ])
            .args(["-subj", "/CN=test", "-days", "1", "-outform", "DER"])
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Recipient {
            certificate: Certificate::from_der(&out.stdout).expect("certificate"),
            transport: KeyTransportChoice::RsaPkcs1v15,
        }
    }

    /// The envelope written around the in-place ciphertext is exactly what the DER
    /// encoder writes for the same structure, for short and long (multi-byte length)
    /// contents, CBC and GCM.
    #[test]
    fn hand_written_envelope_matches_the_der_encoder() {
        let to = [recipient()];
        for cipher in [ContentCipher::Aes128Cbc, ContentCipher::Aes256Gcm] {
            for len in [0usize, 5, 100, 200, 70_000] {
                let ours = encrypt_entity(&vec![0x42; len], &to, cipher).expect("encrypt");
                let parsed = cms::content_info::ContentInfo::from_der(&ours).expect("parses");
                assert_eq!(
                    parsed.to_der().expect("re-encodes"),
                    ours,
                    "{cipher:?} {len}"
                );
                let inner = parsed.content.to_der().expect("inner");
                if cipher.is_gcm() {
                    let env = cms::authenveloped_data::AuthEnvelopedData::from_der(&inner)
                        .expect("AuthEnvelopedData");
                    assert_eq!(env.mac.as_bytes().len(), 16);
                    let content = env.auth_encrypted_content_info.encrypted_content;
                    assert_eq!(content.expect("content").as_bytes().len(), len);
                } else {
                    let env = cms::enveloped_data::EnvelopedData::from_der(&inner)
                        .expect("EnvelopedData");
                    let content = env.encrypted_content.encrypted_content;
                    assert_eq!(
                        content.expect("content").as_bytes().len(),
                        len / 16 * 16 + 16
                    );
                }
            }
        }
    }
}

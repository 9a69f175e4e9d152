//! Encrypting a message to recipient certificates (RFC 8551 §3.3, RFC 5652 §6,
//! RFC 5083/5084 for AES-GCM, RFC 3560 for RSA-OAEP). Public-key work only: the
//! per-message content key is made and used on the host and wrapped to each recipient.
//! Never 3DES, RC2 or DES.

use aes_gcm::aead::{Aead, KeyInit};
use cbc::cipher::{BlockModeEncrypt, KeyIvInit};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::CmsVersion;
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo,
    RecipientInfos,
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
    if recipients.is_empty() {
        return Err(EncryptError::NoRecipients);
    }
    let cek = random(cipher.key_len())?;
    let infos: Vec<RecipientInfo> = recipients
        .iter()
        .map(|r| recipient_info(r, &cek))
        .collect::<Result<_, _>>()?;
    // RFC 5652 §6.1: version 2 as soon as a RecipientInfo is not version 0.
    let enveloped_version = if infos.iter().all(|ri| matches!(ri, RecipientInfo::Ktri(_))) {
        CmsVersion::V0
    } else {
        CmsVersion::V2
    };
    let recip_infos = RecipientInfos(SetOfVec::try_from(infos).map_err(crypto)?);
    let (content_type, content) = if cipher.is_gcm() {
        let nonce = random(12)?;
        let sealed = match cipher {
            ContentCipher::Aes128Gcm => aes_gcm::Aes128Gcm::new_from_slice(&cek)
                .map_err(crypto)?
                .encrypt(
                    &aes_gcm::Nonce::try_from(&nonce[..]).map_err(crypto)?,
                    entity,
                ),
            _ => aes_gcm::Aes256Gcm::new_from_slice(&cek)
                .map_err(crypto)?
                .encrypt(
                    &aes_gcm::Nonce::try_from(&nonce[..]).map_err(crypto)?,
                    entity,
                ),
        }
        .map_err(|_| EncryptError::Crypto("AES-GCM failed".into()))?;
        let mut ciphertext = sealed;
        let tag = ciphertext.split_off(ciphertext.len() - 16);
        let params = GcmParameters {
            nonce: OctetString::new(nonce.to_vec()).map_err(crypto)?,
            icv_len: 16,
        };
        let oid = if cipher == ContentCipher::Aes128Gcm {
            AES128_GCM
        } else {
            AES256_GCM
        };
        let env = cms::authenveloped_data::AuthEnvelopedData {
            version: CmsVersion::V0,
            originator_info: None,
            recip_infos,
            auth_encrypted_content_info: EncryptedContentInfo {
                content_type: ID_DATA,
                content_enc_alg: AlgorithmIdentifierOwned {
                    oid,
                    parameters: Some(Any::encode_from(&params).map_err(crypto)?),
                },
                encrypted_content: Some(OctetString::new(ciphertext).map_err(crypto)?),
            },
            auth_attrs: None,
            mac: OctetString::new(tag).map_err(crypto)?,
            unauth_attrs: None,
        };
        (ID_AUTH_ENVELOPED_DATA, env.to_der().map_err(crypto)?)
    } else {
        let iv = random(16)?;
        let ciphertext = match cipher {
            ContentCipher::Aes128Cbc => cbc::Encryptor::<aes::Aes128>::new_from_slices(&cek, &iv)
                .map_err(crypto)?
                .encrypt_padded_vec::<cbc::cipher::block_padding::Pkcs7>(entity),
            _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(&cek, &iv)
                .map_err(crypto)?
                .encrypt_padded_vec::<cbc::cipher::block_padding::Pkcs7>(entity),
        };
        let oid = if cipher == ContentCipher::Aes128Cbc {
            AES128_CBC
        } else {
            AES256_CBC
        };
        let env = EnvelopedData {
            version: enveloped_version,
            originator_info: None,
            recip_infos,
            encrypted_content: EncryptedContentInfo {
                content_type: ID_DATA,
                content_enc_alg: AlgorithmIdentifierOwned {
                    oid,
                    parameters: Some(
                        Any::encode_from(&OctetString::new(iv.to_vec()).map_err(crypto)?)
                            .map_err(crypto)?,
                    ),
                },
                encrypted_content: Some(OctetString::new(ciphertext).map_err(crypto)?),
            },
            unprotected_attrs: None,
        };
        (ID_ENVELOPED_DATA, env.to_der().map_err(crypto)?)
    };
    content_info(content_type, content).map_err(crypto)
}

/// `ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT content }` around already
/// encoded content, written once (a large message is not copied through `Any`).
fn content_info(content_type: ObjectIdentifier, content: Vec<u8>) -> der::Result<Vec<u8>> {
    let oid = content_type.to_der()?;
    let explicit = der_header(0xa0, content.len());
    let inner = oid.len() + explicit.len() + content.len();
    let outer = der_header(0x30, inner);
    let mut out = Vec::with_capacity(outer.len() + inner);
    out.extend_from_slice(&outer);
    out.extend_from_slice(&oid);
    out.extend_from_slice(&explicit);
    out.extend_from_slice(&content);
    Ok(out)
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
    if message.len() > limits.max_size {
        return Err(MimeError::TooLarge {
            size: message.len(),
            limit: limits.max_size,
        }
        .into());
    }
    let parsed = mime::split_message(&mime::to_crlf(message))?;
    let (content, outer): (Vec<Header>, Vec<Header>) = parsed
        .headers
        .into_iter()
        .partition(|h| h.is_content_header());
    let entity = mime::Message {
        headers: content
            .into_iter()
            .filter(|h| !h.is("mime-version"))
            .collect(),
        body: parsed.body,
    }
    .to_bytes();
    if recipients.len() > limits.max_recipients {
        return Err(EncryptError::Recipient {
            subject: format!("{} recipients", recipients.len()),
            reason: format!("more than the limit of {}", limits.max_recipients),
        });
    }
    let der = encrypt_entity(&entity, recipients, cipher)?;
    let mut out = Vec::with_capacity(der.len() * 4 / 3 + 1024);
    for h in &outer {
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
    mime::base64_lines_into(&der, &mut out);
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

    #[test]
    fn hand_written_content_info_matches_the_der_encoder() {
        for len in [0usize, 5, 127, 128, 255, 256, 70_000] {
            let inner = OctetString::new(vec![0x42; len])
                .expect("octets")
                .to_der()
                .expect("der");
            let ours = content_info(ID_DATA, inner.clone()).expect("ours");
            let theirs = cms::content_info::ContentInfo {
                content_type: ID_DATA,
                content: der::Any::from_der(&inner).expect("any"),
            }
            .to_der()
            .expect("theirs");
            assert_eq!(ours, theirs, "length {len}");
        }
    }
}

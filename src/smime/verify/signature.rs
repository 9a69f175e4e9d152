//! One SignerInfo's signature (RFC 5652 §5.4, §5.6): the content digest, the signed
//! attributes (each security-relevant one present once, with one value, §11), and
//! the signature over them with the signer's public key: RSA PKCS#1 v1.5, RSASSA-PSS
//! (RFC 4056) and ECDSA on P-256 and P-384 with SHA-256/384/512 (RFC 5753).

use cms::signed_data::{SignedData, SignerInfo};
use const_oid::ObjectIdentifier;
use der::Encode;
use rustls_pki_types::CertificateDer;
use sha2::Digest;
use x509_cert::certificate::Certificate;

use super::{Failure, Verdict};

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
pub(super) const ID_SIGNING_TIME: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");
pub(super) const SMIME_CAPABILITIES: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.15");
pub(super) const ENCRYPTION_KEY_PREFERENCE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.11");
/// Microsoft's older spelling of the encryption key preference (Outlook sends both).
pub(super) const MS_ENCRYPTION_KEY_PREFERENCE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.16.4");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA256_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

fn malformed(detail: impl Into<String>) -> Failure {
    (Verdict::Malformed, detail.into())
}

fn unsupported(detail: impl Into<String>) -> Failure {
    (Verdict::Unsupported, detail.into())
}

fn bad_signature() -> Failure {
    (
        Verdict::BadSignature,
        "the signature does not match the signer's key".into(),
    )
}

#[derive(Clone, Copy)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn from_oid(oid: ObjectIdentifier) -> Result<Hash, Failure> {
        match oid {
            SHA256 => Ok(Hash::Sha256),
            SHA384 => Ok(Hash::Sha384),
            SHA512 => Ok(Hash::Sha512),
            other => Err(unsupported(format!(
                "digest algorithm {other} (SHA-256, SHA-384 and SHA-512 are accepted)"
            ))),
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

/// The single value of the signed attribute `oid`: `Ok(None)` when absent, malformed
/// when it occurs twice or with other than one value (RFC 5652 §11, RFC 8551 §2.5).
pub(super) fn single_attribute(
    info: &SignerInfo,
    oid: ObjectIdentifier,
) -> Result<Option<&der::Any>, Failure> {
    let Some(attrs) = &info.signed_attrs else {
        return Ok(None);
    };
    let mut found = attrs.iter().filter(|a| a.oid == oid);
    let Some(attr) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() || attr.values.len() != 1 {
        return Err(malformed(format!(
            "signed attribute {oid} occurs more than once or has several values"
        )));
    }
    Ok(attr.values.iter().next())
}

/// Checks the signature of `info` over `content` with `signer`'s key. `raw_attrs` are
/// the signed attributes as the signer encoded them (the signature covers those
/// bytes; the decoder re-sorts a SET OF).
pub(super) fn check(
    info: &SignerInfo,
    sd: &SignedData,
    content: &[u8],
    signer: &Certificate,
    raw_attrs: Option<&[u8]>,
) -> Result<(), Failure> {
    let hash = Hash::from_oid(info.digest_alg.oid)?;
    let content_digest = hash.digest(content);
    let econtent_type = sd.encap_content_info.econtent_type;
    let signed_message: std::borrow::Cow<'_, [u8]> = match &info.signed_attrs {
        Some(attrs) => {
            let md = single_attribute(info, ID_MESSAGE_DIGEST)?
                .ok_or_else(|| malformed("signed attributes without messageDigest"))?
                .decode_as::<der::asn1::OctetString>()
                .map_err(|_| malformed("messageDigest is not an OCTET STRING"))?;
            let ct = single_attribute(info, ID_CONTENT_TYPE)?
                .ok_or_else(|| malformed("signed attributes without contentType"))?
                .decode_as::<ObjectIdentifier>()
                .map_err(|_| malformed("contentType is not an OID"))?;
            for oid in [
                ID_SIGNING_TIME,
                SMIME_CAPABILITIES,
                ENCRYPTION_KEY_PREFERENCE,
                MS_ENCRYPTION_KEY_PREFERENCE,
            ] {
                single_attribute(info, oid)?;
            }
            if ct != econtent_type {
                return Err((
                    Verdict::BadSignature,
                    "contentType attribute does not match the content".into(),
                ));
            }
            if md.as_bytes() != content_digest.as_slice() {
                return Err((
                    Verdict::BadSignature,
                    "message digest mismatch: the content was changed".into(),
                ));
            }
            match raw_attrs {
                Some(raw) => raw.into(),
                None => attrs
                    .to_der()
                    .map_err(|_| malformed("signed attributes do not encode"))?
                    .into(),
            }
        }
        // RFC 5652 §5.3: other content than id-data must be signed with attributes.
        None if econtent_type != ID_DATA => {
            return Err(malformed(
                "content other than id-data signed without signed attributes",
            ));
        }
        None => content.into(),
    };
    let algorithm = info.signature_algorithm.oid;
    let key_algorithm = signer
        .tbs_certificate()
        .subject_public_key_info()
        .algorithm
        .oid;
    match (algorithm, key_algorithm) {
        (RSASSA_PSS, RSA_ENCRYPTION | RSASSA_PSS) => {
            verify_pss(info, info.digest_alg.oid, signer, &signed_message)
        }
        (RSA_ENCRYPTION | SHA256_RSA | SHA384_RSA | SHA512_RSA, RSA_ENCRYPTION) => {
            verify_pkcs1(algorithm, info, signer, &signed_message)
        }
        (ECDSA_SHA256 | ECDSA_SHA384 | ECDSA_SHA512 | EC_PUBLIC_KEY, EC_PUBLIC_KEY) => {
            let signature_hash = match algorithm {
                ECDSA_SHA256 => Hash::Sha256,
                ECDSA_SHA384 => Hash::Sha384,
                ECDSA_SHA512 => Hash::Sha512,
                _ => hash,
            };
            if std::mem::discriminant(&signature_hash) != std::mem::discriminant(&hash) {
                return Err(malformed(
                    "the ECDSA signature algorithm names another digest than the SignerInfo",
                ));
            }
            let digest = hash.digest(&signed_message);
            verify_ecdsa(signer, &digest, info.signature.as_bytes())
        }
        (sig, key) => Err(unsupported(format!(
            "signature algorithm {sig} with a {key} key"
        ))),
    }
}

/// RSA PKCS#1 v1.5 with 2048 to 8192-bit keys (webpki's set).
fn verify_pkcs1(
    algorithm: ObjectIdentifier,
    info: &SignerInfo,
    signer: &Certificate,
    message: &[u8],
) -> Result<(), Failure> {
    use webpki::ring as algs;
    let scheme = match (algorithm, info.digest_alg.oid) {
        (RSA_ENCRYPTION | SHA256_RSA, SHA256) => algs::RSA_PKCS1_2048_8192_SHA256,
        (RSA_ENCRYPTION | SHA384_RSA, SHA384) => algs::RSA_PKCS1_2048_8192_SHA384,
        (RSA_ENCRYPTION | SHA512_RSA, SHA512) => algs::RSA_PKCS1_2048_8192_SHA512,
        _ => {
            return Err(malformed(
                "the RSA signature algorithm names another digest than the SignerInfo",
            ));
        }
    };
    let bits = rsa_bits(signer)?;
    if !(2048..=8192).contains(&bits) {
        return Err(unsupported(format!(
            "an RSA signature with a {bits}-bit key"
        )));
    }
    let cert_der = signer
        .to_der()
        .map_err(|_| malformed("signer certificate does not encode"))?;
    let cert_der = CertificateDer::from(cert_der);
    let ee = webpki::EndEntityCert::try_from(&cert_der)
        .map_err(|e| malformed(format!("signer certificate: {e}")))?;
    ee.verify_signature(scheme, message, info.signature.as_bytes())
        .map_err(|e| match e {
            webpki::Error::InvalidSignatureForPublicKey => bad_signature(),
            other => unsupported(format!("the signer's RSA key: {other}")),
        })
}

/// The size of the signer's RSA modulus.
fn rsa_bits(signer: &Certificate) -> Result<u32, Failure> {
    use rsa::pkcs8::DecodePublicKey;
    let spki = signer
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| malformed(e.to_string()))?;
    let key = rsa::PublicKey::from_public_key_der(&spki)
        .map_err(|e| malformed(format!("signer key: {e}")))?;
    Ok(rsa::traits::PublicKeyParts::n(&key).bit_width())
}

/// RSASSA-PSS with the salt length the signer chose (openssl uses the maximum by
/// default; ring accepts only the digest length, so this uses the rsa crate).
fn verify_pss(
    info: &SignerInfo,
    digest: ObjectIdentifier,
    signer: &Certificate,
    message: &[u8],
) -> Result<(), Failure> {
    use rsa::pkcs8::DecodePublicKey;
    use signature::Verifier;
    let params: rsa::pkcs1::RsaPssParams<der::Any> = info
        .signature_algorithm
        .parameters
        .as_ref()
        .ok_or_else(|| malformed("RSASSA-PSS without parameters"))?
        .decode_as()
        .map_err(|e| malformed(format!("RSASSA-PSS parameters: {e}")))?;
    if params.hash.oid != digest {
        return Err(malformed(
            "RSASSA-PSS hash differs from the digest algorithm",
        ));
    }
    if params
        .mask_gen
        .parameters
        .as_ref()
        .is_some_and(|h| h.oid != digest)
    {
        return Err(unsupported(
            "RSASSA-PSS with an MGF1 hash other than the digest",
        ));
    }
    let spki = signer
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| malformed(e.to_string()))?;
    let key = rsa::PublicKey::from_public_key_der(&spki)
        .map_err(|e| malformed(format!("signer key: {e}")))?;
    // The same bounds as for PKCS#1 v1.5 signatures (webpki's 2048 to 8192 bits).
    let bits = rsa::traits::PublicKeyParts::n(&key).bit_width();
    if !(2048..=8192).contains(&bits) {
        return Err(unsupported(format!("RSASSA-PSS with a {bits}-bit key")));
    }
    let signature =
        rsa::pss::Signature::try_from(info.signature.as_bytes()).map_err(|_| bad_signature())?;
    let salt = usize::from(params.salt_len);
    let verified = match digest {
        SHA256 => rsa::pss::VerifyingKey::<sha2::Sha256>::new_with_salt_len(key, salt)
            .verify(message, &signature),
        SHA384 => rsa::pss::VerifyingKey::<sha2::Sha384>::new_with_salt_len(key, salt)
            .verify(message, &signature),
        SHA512 => rsa::pss::VerifyingKey::<sha2::Sha512>::new_with_salt_len(key, salt)
            .verify(message, &signature),
        other => return Err(unsupported(format!("RSASSA-PSS with digest {other}"))),
    };
    verified.map_err(|_| bad_signature())
}

/// ECDSA over a digest the host computed (RFC 5753 §2.1.1: ECDSA-Sig-Value in DER),
/// on the curve the signer's key names.
fn verify_ecdsa(signer: &Certificate, digest: &[u8], signature: &[u8]) -> Result<(), Failure> {
    use signature::hazmat::PrehashVerifier;
    let spki = signer.tbs_certificate().subject_public_key_info();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
        .ok_or_else(|| malformed("EC key without a named curve"))?;
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| malformed("EC public key is not whole bytes"))?;
    let bad_key = |_| malformed("the signer's EC public key is not a point on its curve");
    match curve {
        SECP256R1 => {
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(bad_key)?;
            let sig = p256::ecdsa::Signature::from_der(signature).map_err(|_| bad_signature())?;
            key.verify_prehash(digest, &sig)
                .map_err(|_| bad_signature())
        }
        SECP384R1 => {
            let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(bad_key)?;
            let sig = p384::ecdsa::Signature::from_der(signature).map_err(|_| bad_signature())?;
            key.verify_prehash(digest, &sig)
                .map_err(|_| bad_signature())
        }
        other => Err(unsupported(format!("ECDSA on curve {other}"))),
    }
}

/// One DER element: (tag, content, whole element).
type Element<'a> = (u8, &'a [u8], &'a [u8]);

/// The DER element at the start of `bytes`. Definite lengths only (the input went
/// through BER→DER already).
pub(super) fn tlv(bytes: &[u8]) -> Option<Element<'_>> {
    let tag = *bytes.first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let first = usize::from(*bytes.get(1)?);
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*bytes.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((tag, bytes.get(header..end)?, bytes.get(..end)?))
}

/// The elements inside a constructed element's content.
pub(super) fn elements(mut content: &[u8]) -> Option<Vec<Element<'_>>> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let element = tlv(content)?;
        content = &content[element.2.len()..];
        out.push(element);
    }
    Some(out)
}

/// A SignerInfo's DER, and its signed attributes as the SET OF the signature covers.
pub(super) type RawSignerInfo = (Vec<u8>, Option<Vec<u8>>);

/// The signed attributes of every SignerInfo exactly as they are in `cms_der`, in
/// order, re-tagged as the SET OF the signature covers (RFC 5652 §5.4). The parsed
/// form cannot give them: the decoder sorts a SET OF, and a signer that did not is
/// still to be verified. Each entry pairs the SignerInfo's DER with its attributes.
pub(super) fn raw_signer_infos(cms_der: &[u8]) -> Option<Vec<RawSignerInfo>> {
    let (_, content_info, _) = tlv(cms_der)?;
    let explicit = elements(content_info)?.into_iter().find(|e| e.0 == 0xa0)?;
    let (_, signed_data, _) = tlv(explicit.1)?;
    // signerInfos is the last element of SignedData.
    let (tag, signer_infos, _) = *elements(signed_data)?.last()?;
    if tag != 0x31 {
        return None;
    }
    elements(signer_infos)?
        .into_iter()
        .map(|(_, fields, whole)| {
            let attrs = elements(fields)?
                .into_iter()
                .find(|e| e.0 == 0xa0)
                .map(|(_, _, attrs)| {
                    let mut set = attrs.to_vec();
                    set[0] = 0x31;
                    set
                });
            Some((whole.to_vec(), attrs))
        })
        .collect()
}

//! Verifying S/MIME signatures (RFC 8551 §3.5, RFC 5652 §5.6, RFC 8550 for the signer
//! certificate): detached `multipart/signed` and opaque `application/pkcs7-mime;
//! smime-type=signed-data`. Public-key work only; no token involved.

use std::time::SystemTime;

use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use sha2::Digest;
use x509_cert::certificate::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{KeyUsage, KeyUsages, SubjectAltName};

use super::ber;
use crate::mime::{self, Limits};

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const SMIME_CAPABILITIES: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.15");
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
/// id-kp-emailProtection, content octets.
const EMAIL_PROTECTION: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x04];

/// What a signature check concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Valid,
    BadSignature,
    Untrusted,
    Expired,
    NotYetValid,
    WrongUsage,
    AddressMismatch,
    Revoked,
    Malformed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::BadSignature => "bad-signature",
            Verdict::Untrusted => "untrusted",
            Verdict::Expired => "expired",
            Verdict::NotYetValid => "not-yet-valid",
            Verdict::WrongUsage => "wrong-usage",
            Verdict::AddressMismatch => "address-mismatch",
            Verdict::Revoked => "revoked",
            Verdict::Malformed => "malformed",
        }
    }
}

/// The verdict with what an operator and the harvester need.
#[derive(Debug, Clone)]
pub struct Verification {
    pub verdict: Verdict,
    pub detail: String,
    pub signer: Option<Certificate>,
    /// Certificates the message carried (the signer's chain, as sent).
    pub certificates: Vec<Certificate>,
    /// DER of the signer's SMIMECapabilities attribute value, when present.
    pub capabilities: Option<Vec<u8>>,
    /// The signed entity: the first part of multipart/signed, or the encapsulated
    /// content of an opaque signature.
    pub content: Option<Vec<u8>>,
}

impl Verification {
    fn fail(verdict: Verdict, detail: impl Into<String>) -> Self {
        Verification {
            verdict,
            detail: detail.into(),
            signer: None,
            certificates: Vec::new(),
            capabilities: None,
            content: None,
        }
    }
}

/// Verifies a signed message. `from` is the message's From address (checked against
/// the signer certificate's rfc822Name); `anchors` are the trusted roots.
pub fn verify(
    message: &[u8],
    from: Option<&str>,
    anchors: &[Certificate],
    now: SystemTime,
    limits: &Limits,
) -> Verification {
    verify_with_crls(message, from, anchors, &[], now, limits)
}

/// [`verify`], also checking the signer's certificate against `crls` (DER): a listed
/// certificate gives [`Verdict::Revoked`]; a certificate no CRL covers is accepted.
pub fn verify_with_crls(
    message: &[u8],
    from: Option<&str>,
    anchors: &[Certificate],
    crls: &[Vec<u8>],
    now: SystemTime,
    limits: &Limits,
) -> Verification {
    if message.len() > limits.max_size {
        return Verification::fail(
            Verdict::Malformed,
            format!("message larger than {} bytes", limits.max_size),
        );
    }
    let (signed_content, cms_der) = match extract(message, limits) {
        Ok(parts) => parts,
        Err(detail) => return Verification::fail(Verdict::Malformed, detail),
    };
    let mut result = check(signed_content, &cms_der, from, anchors, crls, now);
    if result.verdict == Verdict::Malformed && result.detail.is_empty() {
        result.detail = "unreadable signature".into();
    }
    result
}

/// (detached content if any, CMS DER).
fn extract(message: &[u8], limits: &Limits) -> Result<(Option<Vec<u8>>, Vec<u8>), String> {
    let canonical = mime::to_crlf(message);
    let parsed = mime::split_message(&canonical).map_err(|e| e.to_string())?;
    let ct = parsed.content_type();
    let decode = |headers: &[mime::Header], body: &[u8]| -> Result<Vec<u8>, String> {
        let cte = headers
            .iter()
            .find(|h| h.is("content-transfer-encoding"))
            .map(|h| h.value().to_ascii_lowercase())
            .unwrap_or_default();
        let decoded;
        let raw = if cte == "base64" {
            decoded = mime::base64_decode_lines(body)
                .map_err(|_| "signature is not valid base64".to_string())?;
            &decoded[..]
        } else {
            body
        };
        ber::to_der(raw, limits.max_depth * 4)
            .map(std::borrow::Cow::into_owned)
            .map_err(|e| e.to_string())
    };
    if ct.kind == "multipart" && ct.subtype == "signed" {
        let boundary = ct
            .param("boundary")
            .ok_or("multipart/signed without boundary")?;
        let delimiter = format!("--{boundary}");
        let body = &parsed.body;
        let starts: Vec<usize> = find_lines(body, delimiter.as_bytes());
        if starts.len() < 3 {
            return Err("multipart/signed needs two parts".into());
        }
        let first_line_end = line_end(body, starts[0]);
        // The CRLF before the second delimiter belongs to it.
        let content = body
            .get(first_line_end..starts[1].saturating_sub(2))
            .ok_or("empty signed part")?
            .to_vec();
        let sig_part_start = line_end(body, starts[1]);
        let sig_part = body
            .get(sig_part_start..starts[2].saturating_sub(2))
            .ok_or("empty signature part")?;
        let sig = mime::split_message(sig_part).map_err(|e| e.to_string())?;
        let sig_ct = sig.content_type();
        if sig_ct.kind != "application"
            || !(sig_ct.subtype == "pkcs7-signature" || sig_ct.subtype == "x-pkcs7-signature")
        {
            return Err("second part is not application/pkcs7-signature".into());
        }
        return Ok((Some(content), decode(&sig.headers, &sig.body)?));
    }
    if ct.kind == "application" && (ct.subtype == "pkcs7-mime" || ct.subtype == "x-pkcs7-mime") {
        return Ok((None, decode(&parsed.headers, &parsed.body)?));
    }
    Err("not a signed message".into())
}

fn find_lines(body: &[u8], delimiter: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(p) = body[at..]
        .windows(delimiter.len())
        .position(|w| w == delimiter)
        .map(|p| p + at)
    {
        if p == 0 || body[..p].ends_with(b"\r\n") {
            out.push(p);
        }
        at = p + delimiter.len();
    }
    out
}

fn line_end(body: &[u8], from: usize) -> usize {
    body[from..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| from + p + 2)
        .unwrap_or(body.len())
}

fn check(
    detached: Option<Vec<u8>>,
    cms_der: &[u8],
    from: Option<&str>,
    anchors: &[Certificate],
    crls: &[Vec<u8>],
    now: SystemTime,
) -> Verification {
    let signed_data = match ContentInfo::from_der(cms_der)
        .map_err(|e| e.to_string())
        .and_then(|ci| {
            if ci.content_type != ID_SIGNED_DATA {
                return Err("CMS content is not signed-data".to_string());
            }
            ci.content
                .decode_as::<SignedData>()
                .map_err(|e| e.to_string())
        }) {
        Ok(sd) => sd,
        Err(e) => return Verification::fail(Verdict::Malformed, e),
    };
    let certificates: Vec<Certificate> = signed_data
        .certificates
        .as_ref()
        .map(|set| {
            set.0
                .iter()
                .filter_map(|c| match c {
                    cms::cert::CertificateChoices::Certificate(cert) => Some(cert.clone()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let content = match (detached, &signed_data.encap_content_info.econtent) {
        (Some(content), _) => content,
        (None, Some(econtent)) => match econtent.decode_as::<der::asn1::OctetString>() {
            Ok(os) => os.into_bytes().into_vec(),
            Err(e) => {
                return Verification::fail(
                    Verdict::Malformed,
                    format!("encapsulated content: {e}"),
                );
            }
        },
        (None, None) => return Verification::fail(Verdict::Malformed, "no content to verify"),
    };
    let Some(signer_info) = signed_data.signer_infos.0.iter().next() else {
        return Verification::fail(Verdict::Malformed, "no SignerInfo");
    };
    let mut result = Verification {
        verdict: Verdict::Malformed,
        detail: String::new(),
        signer: None,
        certificates: certificates.clone(),
        capabilities: capabilities(signer_info),
        content: Some(content.clone()),
    };
    let Some(signer) = certificates
        .iter()
        .find(|c| names(&signer_info.sid, c))
        .cloned()
    else {
        result.verdict = Verdict::Untrusted;
        result.detail = "the signer's certificate is not in the message".into();
        return result;
    };
    result.signer = Some(signer.clone());
    let raw_attrs = raw_signed_attrs(cms_der, signer_info);
    if let Err((verdict, detail)) = check_signature(
        signer_info,
        &signed_data,
        &content,
        &signer,
        raw_attrs.as_deref(),
    ) {
        result.verdict = verdict;
        result.detail = detail;
        return result;
    }
    if let Err((verdict, detail)) =
        check_certificate(&signer, &certificates, anchors, crls, from, now)
    {
        result.verdict = verdict;
        result.detail = detail;
        return result;
    }
    result.verdict = Verdict::Valid;
    result.detail = format!("signed by {}", signer.tbs_certificate().subject());
    result
}

/// One DER element: (tag, content, whole element).
type Element<'a> = (u8, &'a [u8], &'a [u8]);

/// The DER element at the start of `bytes`. Definite lengths only (the input went
/// through BER→DER already).
fn tlv(bytes: &[u8]) -> Option<Element<'_>> {
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
fn elements(mut content: &[u8]) -> Option<Vec<Element<'_>>> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let element = tlv(content)?;
        content = &content[element.2.len()..];
        out.push(element);
    }
    Some(out)
}

/// The signed attributes of `info` exactly as they are in `cms_der`, re-tagged as the
/// SET OF the signature covers (RFC 5652 §5.4). The parsed form cannot give them: the
/// decoder sorts a SET OF, and a signer that did not is still to be verified.
fn raw_signed_attrs(cms_der: &[u8], info: &SignerInfo) -> Option<Vec<u8>> {
    let (_, content_info, _) = tlv(cms_der)?;
    let explicit = elements(content_info)?.into_iter().find(|e| e.0 == 0xa0)?;
    let (_, signed_data, _) = tlv(explicit.1)?;
    // signerInfos is the last element of SignedData.
    let (tag, signer_infos, _) = *elements(signed_data)?.last()?;
    if tag != 0x31 {
        return None;
    }
    for (_, fields, whole) in elements(signer_infos)? {
        if SignerInfo::from_der(whole).ok().as_ref() != Some(info) {
            continue;
        }
        let (_, _, attrs) = elements(fields)?.into_iter().find(|e| e.0 == 0xa0)?;
        let mut set = attrs.to_vec();
        set[0] = 0x31;
        return Some(set);
    }
    None
}

fn names(sid: &SignerIdentifier, cert: &Certificate) -> bool {
    let tbs = cert.tbs_certificate();
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(ias) => {
            ias.issuer == *tbs.issuer() && ias.serial_number == *tbs.serial_number()
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => tbs
            .get_extension::<x509_cert::ext::pkix::SubjectKeyIdentifier>()
            .ok()
            .flatten()
            .is_some_and(|(_, s)| s.0 == ski.0),
    }
}

fn capabilities(info: &SignerInfo) -> Option<Vec<u8>> {
    let attrs = info.signed_attrs.as_ref()?;
    let attr = attrs.iter().find(|a| a.oid == SMIME_CAPABILITIES)?;
    attr.values.iter().next()?.to_der().ok()
}

type Failure = (Verdict, String);

fn check_signature(
    info: &SignerInfo,
    sd: &SignedData,
    content: &[u8],
    signer: &Certificate,
    raw_attrs: Option<&[u8]>,
) -> Result<(), Failure> {
    let malformed = |d: &str| (Verdict::Malformed, d.to_string());
    let digest_oid = info.digest_alg.oid;
    let digest = match digest_oid {
        SHA256 => sha2::Sha256::digest(content).to_vec(),
        SHA384 => sha2::Sha384::digest(content).to_vec(),
        SHA512 => sha2::Sha512::digest(content).to_vec(),
        other => return Err((Verdict::Malformed, format!("unsupported digest {other}"))),
    };
    let signed_message = match &info.signed_attrs {
        Some(attrs) => {
            let value_of = |oid| {
                attrs
                    .iter()
                    .find(|a| a.oid == oid)
                    .and_then(|a| a.values.iter().next())
            };
            let md = value_of(ID_MESSAGE_DIGEST)
                .ok_or_else(|| malformed("signed attributes without messageDigest"))?
                .decode_as::<der::asn1::OctetString>()
                .map_err(|_| malformed("messageDigest is not an OCTET STRING"))?;
            let ct = value_of(ID_CONTENT_TYPE)
                .ok_or_else(|| malformed("signed attributes without contentType"))?
                .decode_as::<ObjectIdentifier>()
                .map_err(|_| malformed("contentType is not an OID"))?;
            if ct != sd.encap_content_info.econtent_type {
                return Err((
                    Verdict::BadSignature,
                    "contentType attribute does not match the content".into(),
                ));
            }
            if md.as_bytes() != digest.as_slice() {
                return Err((
                    Verdict::BadSignature,
                    "message digest mismatch: the content was changed".into(),
                ));
            }
            // The signature covers the attributes as the signer encoded them; a signer
            // that did not sort the SET (DER asks it to) is still read correctly.
            match raw_attrs {
                Some(raw) => raw.to_vec(),
                None => attrs
                    .to_der()
                    .map_err(|_| malformed("signed attributes do not encode"))?,
            }
        }
        None => content.to_vec(),
    };
    if info.signature_algorithm.oid == RSASSA_PSS {
        return verify_pss(info, digest_oid, signer, &signed_message);
    }
    let algorithm =
        signature_algorithm(&info.signature_algorithm, digest_oid, signer).ok_or_else(|| {
            (
                Verdict::Malformed,
                format!(
                    "unsupported signature algorithm {}",
                    info.signature_algorithm.oid
                ),
            )
        })?;
    let cert_der = signer
        .to_der()
        .map_err(|_| malformed("signer certificate does not encode"))?;
    let cert_der = CertificateDer::from(cert_der);
    let ee = webpki::EndEntityCert::try_from(&cert_der)
        .map_err(|e| (Verdict::Malformed, format!("signer certificate: {e}")))?;
    ee.verify_signature(algorithm, &signed_message, info.signature.as_bytes())
        .map_err(|_| {
            (
                Verdict::BadSignature,
                "the signature does not match the signer's key".to_string(),
            )
        })
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
    let malformed = |d: String| (Verdict::Malformed, d);
    let params: rsa::pkcs1::RsaPssParams<der::Any> = info
        .signature_algorithm
        .parameters
        .as_ref()
        .ok_or_else(|| malformed("RSASSA-PSS without parameters".into()))?
        .decode_as()
        .map_err(|e| malformed(format!("RSASSA-PSS parameters: {e}")))?;
    if params.hash.oid != digest {
        return Err(malformed(
            "RSASSA-PSS hash differs from the digest algorithm".into(),
        ));
    }
    let spki = signer
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| malformed(e.to_string()))?;
    let key = rsa::PublicKey::from_public_key_der(&spki)
        .map_err(|e| malformed(format!("signer key: {e}")))?;
    let signature = rsa::pss::Signature::try_from(info.signature.as_bytes()).map_err(|_| {
        (
            Verdict::BadSignature,
            "RSASSA-PSS signature of the wrong size".to_string(),
        )
    })?;
    let salt = usize::from(params.salt_len);
    let verified = match digest {
        SHA256 => rsa::pss::VerifyingKey::<sha2::Sha256>::new_with_salt_len(key, salt)
            .verify(message, &signature),
        SHA384 => rsa::pss::VerifyingKey::<sha2::Sha384>::new_with_salt_len(key, salt)
            .verify(message, &signature),
        SHA512 => rsa::pss::VerifyingKey::<sha2::Sha512>::new_with_salt_len(key, salt)
            .verify(message, &signature),
        other => return Err(malformed(format!("RSASSA-PSS with digest {other}"))),
    };
    verified.map_err(|_| {
        (
            Verdict::BadSignature,
            "the signature does not match the signer's key".to_string(),
        )
    })
}

fn signature_algorithm(
    alg: &spki::AlgorithmIdentifierOwned,
    digest: ObjectIdentifier,
    signer: &Certificate,
) -> Option<&'static dyn SignatureVerificationAlgorithm> {
    use webpki::ring as algs;
    let key = signer
        .tbs_certificate()
        .subject_public_key_info()
        .algorithm
        .oid;
    match (alg.oid, digest) {
        (RSA_ENCRYPTION | SHA256_RSA, SHA256) if key == RSA_ENCRYPTION => {
            Some(algs::RSA_PKCS1_2048_8192_SHA256)
        }
        (RSA_ENCRYPTION | SHA384_RSA, SHA384) if key == RSA_ENCRYPTION => {
            Some(algs::RSA_PKCS1_2048_8192_SHA384)
        }
        (RSA_ENCRYPTION | SHA512_RSA, SHA512) if key == RSA_ENCRYPTION => {
            Some(algs::RSA_PKCS1_2048_8192_SHA512)
        }
        (ECDSA_SHA256 | EC_PUBLIC_KEY, SHA256) if key == EC_PUBLIC_KEY => {
            Some(algs::ECDSA_P256_SHA256)
        }
        (ECDSA_SHA384 | EC_PUBLIC_KEY, SHA384) if key == EC_PUBLIC_KEY => {
            Some(algs::ECDSA_P256_SHA384)
        }
        _ => None,
    }
}

fn check_certificate(
    signer: &Certificate,
    carried: &[Certificate],
    anchors: &[Certificate],
    crls: &[Vec<u8>],
    from: Option<&str>,
    now: SystemTime,
) -> Result<(), Failure> {
    let parsed_crls: Vec<webpki::CertRevocationList<'static>> = crls
        .iter()
        .filter_map(|der| {
            webpki::OwnedCertRevocationList::from_der(der)
                .ok()
                .map(webpki::CertRevocationList::Owned)
        })
        .collect();
    if parsed_crls.len() != crls.len() {
        return Err((Verdict::Malformed, "a configured CRL cannot be read".into()));
    }
    let crl_refs: Vec<&webpki::CertRevocationList<'_>> = parsed_crls.iter().collect();
    let revocation = webpki::RevocationOptionsBuilder::new(&crl_refs)
        .ok()
        .map(|b| {
            b.with_depth(webpki::RevocationCheckDepth::Chain)
                .with_status_policy(webpki::UnknownStatusPolicy::Allow)
                .with_expiration_policy(webpki::ExpirationPolicy::Ignore)
                .build()
        });
    let encode = |c: &Certificate| c.to_der().map(CertificateDer::from).ok();
    let signer_der = encode(signer).ok_or((
        Verdict::Malformed,
        "signer certificate does not encode".to_string(),
    ))?;
    let anchor_ders: Vec<CertificateDer<'static>> = anchors.iter().filter_map(encode).collect();
    let trust_anchors: Vec<_> = anchor_ders
        .iter()
        .filter_map(|d| webpki::anchor_from_trusted_cert(d).ok())
        .collect();
    let intermediates: Vec<CertificateDer<'static>> = carried
        .iter()
        .filter(|c| *c != signer)
        .filter_map(encode)
        .collect();
    let ee = webpki::EndEntityCert::try_from(&signer_der)
        .map_err(|e| (Verdict::Malformed, format!("signer certificate: {e}")))?;
    let time = UnixTime::since_unix_epoch(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &trust_anchors,
        &intermediates,
        time,
        webpki::KeyUsage::required_if_present(EMAIL_PROTECTION),
        revocation,
        None,
    )
    .map_err(|e| match e {
        webpki::Error::CertRevoked => (
            Verdict::Revoked,
            "the signer's certificate is revoked".to_string(),
        ),
        webpki::Error::CertExpired { .. } => (
            Verdict::Expired,
            "the signer's certificate has expired".to_string(),
        ),
        webpki::Error::CertNotValidYet { .. } => (
            Verdict::NotYetValid,
            "the signer's certificate is not valid yet".to_string(),
        ),
        webpki::Error::RequiredEkuNotFoundContext(_) => (
            Verdict::WrongUsage,
            "the signer's certificate is not for email protection".to_string(),
        ),
        #[allow(deprecated)]
        webpki::Error::RequiredEkuNotFound => (
            Verdict::WrongUsage,
            "the signer's certificate is not for email protection".to_string(),
        ),
        other => (
            Verdict::Untrusted,
            format!("no trusted chain for the signer's certificate ({other})"),
        ),
    })?;
    let tbs = signer.tbs_certificate();
    let key_usage = tbs
        .get_extension::<KeyUsage>()
        .ok()
        .flatten()
        .map(|(_, ku)| ku.0);
    if key_usage.is_some_and(|ku| {
        !(ku.contains(KeyUsages::DigitalSignature) || ku.contains(KeyUsages::NonRepudiation))
    }) {
        return Err((
            Verdict::WrongUsage,
            "the signer's certificate does not allow digital signatures".into(),
        ));
    }
    if let Some(from) = from {
        let emails: Vec<String> = tbs
            .get_extension::<SubjectAltName>()
            .ok()
            .flatten()
            .map(|(_, san)| {
                san.0
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::Rfc822Name(e) => Some(e.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !emails.iter().any(|e| same_address(e, from)) {
            return Err((
                Verdict::AddressMismatch,
                format!(
                    "From <{from}> is not among the certificate's addresses ({})",
                    emails.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Addresses compare with the domain case-insensitive; the local part too, as every
/// system the gateway fronts treats it so.
fn same_address(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

//! Verifying S/MIME signatures (RFC 8551 §3.5, RFC 5652 §5.6, RFC 8550 for the signer
//! certificate): detached `multipart/signed` and opaque `application/pkcs7-mime;
//! smime-type=signed-data`. Public-key work only; no token involved.
//!
//! The verdict is what users trust instead of checking signatures themselves, so it is
//! strict: the signed part is found the way a standard MIME parser finds it
//! ([`extract`]); every SignerInfo is judged on its own ([`signature`], [`chain`]);
//! the message is *valid* only when a signer whose certificate carries the message's
//! single From address verifies; and a check the gateway itself could not make is
//! [`Verdict::Unchecked`], never a verdict about the sender.

mod chain;
mod extract;
mod signature;

use std::time::SystemTime;

use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use x509_cert::certificate::Certificate;

pub use self::chain::certified_addresses;
use self::extract::{ExtractError, Extracted};
use crate::config::RevocationMode;
use crate::mime::{self, Limits};
pub use crate::pki::revocation::CrlSource;
pub use crate::pki::trust::TrustAnchors;

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
/// More SignerInfos than this in one message is hostile, not a co-signature.
const MAX_SIGNERS: usize = 16;
/// More certificates than this in one signature is hostile, not a chain: each one is
/// a candidate in every path search.
const MAX_CERTIFICATES: usize = 32;

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
    /// The message has no single readable From address to bind a signer to.
    NoFrom,
    Revoked,
    /// The signer's certificate is otherwise valid, but whether it is revoked cannot be
    /// learnt (its CRL is unreachable, expired or badly signed). Under
    /// `[revocation] mode = "soft-fail"` the signer still counts (harvested, bound to
    /// From) and only the message's verdict says so; under "hard-fail" it is not valid.
    RevocationUnknown,
    Malformed,
    /// An algorithm we do not accept (SHA-1, RSA under 2048 bits, an unknown curve).
    Unsupported,
    /// The gateway could not check (its own configuration, database or token failed):
    /// a temporary result that says nothing about the sender.
    Unchecked,
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
            Verdict::NoFrom => "no-from",
            Verdict::Revoked => "revoked",
            Verdict::RevocationUnknown => "revocation-unknown",
            Verdict::Malformed => "malformed",
            Verdict::Unsupported => "unsupported-algorithm",
            Verdict::Unchecked => "unchecked",
        }
    }

    /// True for the gateway's own failure to check: retry later, say nothing.
    pub fn is_temporary(self) -> bool {
        self == Verdict::Unchecked
    }
}

type Failure = (Verdict, String);

/// The From field of a message, as the verdict binds it (RFC 8550 §3: the signer's
/// certificate must carry the From address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromField {
    /// Exactly one address, lower-cased.
    One(String),
    /// No From field.
    Missing,
    /// Several From fields, or a From field with several addresses.
    Several,
    /// A From field that is not an address list, or holds no address.
    Unreadable,
}

impl FromField {
    /// The From field of `message`'s header section.
    pub fn of_message(message: &[u8]) -> FromField {
        let Ok((headers, _)) = mime::split_raw_headers(message) else {
            return FromField::Unreadable;
        };
        let mut fields = headers.iter().filter(|h| h.is("from"));
        let Some(field) = fields.next() else {
            return FromField::Missing;
        };
        if fields.next().is_some() {
            return FromField::Several;
        }
        match mime::parse_address_list(&field.value()).as_deref() {
            Ok([one]) => FromField::One(one.to_ascii_lowercase()),
            Ok([_, _, ..]) => FromField::Several,
            Ok([]) | Err(_) => FromField::Unreadable,
        }
    }

    /// An address given by the operator (`smime verify --from`).
    pub fn given(address: &str) -> FromField {
        FromField::One(address.trim().to_ascii_lowercase())
    }

    pub fn address(&self) -> Option<&str> {
        match self {
            FromField::One(a) => Some(a),
            _ => None,
        }
    }

    fn problem(&self) -> &'static str {
        match self {
            FromField::One(_) => "",
            FromField::Missing => "the message has no From field",
            FromField::Several => "the message names several From addresses",
            FromField::Unreadable => "the message's From field is not one readable address",
        }
    }
}

/// What verification is checked against.
#[derive(Clone, Copy)]
pub struct VerifyContext<'a> {
    pub trust: &'a TrustAnchors,
    /// CRLs (DER) given explicitly (`smime verify --crl`), used besides those of the
    /// certificates' distribution points. An expired or badly signed one makes the
    /// status unknown, never good ([`crate::pki::revocation::check`]).
    pub crls: &'a [Vec<u8>],
    /// Where the CRLs of the certificates' distribution points come from, and the
    /// revocation mode. `None`: only `crls` are checked (and nothing when empty).
    pub revocation: Option<&'a dyn CrlSource>,
    pub now: SystemTime,
    pub limits: &'a Limits,
}

impl std::fmt::Debug for VerifyContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyContext")
            .field("trust", &self.trust)
            .field("crls", &self.crls.len())
            .field("revocation", &self.revocation.map(|r| r.mode()))
            .field("now", &self.now)
            .finish()
    }
}

impl VerifyContext<'_> {
    /// The revocation mode in force (soft-fail without a source).
    pub fn revocation_mode(&self) -> RevocationMode {
        self.revocation
            .map_or(RevocationMode::SoftFail, |r| r.mode())
    }
}

/// A certificate to encrypt to, and the trust anchor (SHA-256 fingerprint) that
/// vouched for it: it stays usable only while that anchor does.
#[derive(Debug, Clone, PartialEq)]
pub struct EncryptionCertificate {
    pub certificate: Certificate,
    pub anchor: String,
    /// The CA certificates (DER) between it and the anchor, in path order: whose
    /// CRLs are checked before encrypting to it later.
    pub intermediates: Vec<Vec<u8>>,
}

/// One SignerInfo's verdict and what the harvester needs of it.
#[derive(Debug, Clone)]
pub struct SignerReport {
    pub verdict: Verdict,
    pub detail: String,
    pub certificate: Option<Certificate>,
    /// The addresses the certificate certifies.
    pub addresses: Vec<String>,
    /// DER of the signer's SMIMECapabilities attribute value, when present.
    pub capabilities: Option<Vec<u8>>,
    /// The signingTime attribute, seconds since the epoch.
    pub signing_time: Option<i64>,
    /// The certificate the signer prefers to receive encrypted mail with (RFC 8551
    /// §2.5.3), when named, carried, and valid for encryption to the From address.
    pub encryption_certificate: Option<EncryptionCertificate>,
    /// The From address, when this signer's certificate carries it.
    pub author: Option<String>,
    /// Why the revocation status of a valid signer's certificate is unknown (soft-fail:
    /// the signer counts; the message's verdict says `revocation-unknown`).
    pub revocation_unknown: Option<String>,
}

impl SignerReport {
    fn failed(verdict: Verdict, detail: impl Into<String>) -> Self {
        SignerReport {
            verdict,
            detail: detail.into(),
            certificate: None,
            addresses: Vec::new(),
            capabilities: None,
            signing_time: None,
            encryption_certificate: None,
            author: None,
            revocation_unknown: None,
        }
    }

    /// The signer as the stamp and the log name it: an address a trust anchor vouched
    /// for (the From address for the author), or `unverified-signer`. Nothing the
    /// sender wrote into a certificate no one vouched for is ever shown, and only
    /// characters of an addr-spec are.
    pub fn name(&self) -> String {
        let address = match (&self.author, self.verdict) {
            (Some(author), Verdict::Valid) => author.as_str(),
            (None, Verdict::Valid) => match self.addresses.first() {
                Some(a) => a.as_str(),
                None => return "unverified-signer".into(),
            },
            _ => return "unverified-signer".into(),
        };
        address
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || ".!#$%&'*+/=?^_`{|}~@-".contains(c) {
                    c
                } else {
                    '?'
                }
            })
            .collect()
    }
}

/// The verdict on a signed message, and each signer's.
#[derive(Debug, Clone)]
pub struct Verification {
    pub verdict: Verdict,
    pub detail: String,
    /// Every SignerInfo, in the order the message carries them.
    pub signers: Vec<SignerReport>,
    /// The signer the verdict is about (the valid one matching From, when valid).
    pub chosen: Option<usize>,
    /// Certificates the message carried (the signers' chains, as sent).
    pub certificates: Vec<Certificate>,
    /// The signed entity: the first part of multipart/signed, or the encapsulated
    /// content of an opaque signature.
    pub content: Option<Vec<u8>>,
}

impl Verification {
    fn fail(verdict: Verdict, detail: impl Into<String>) -> Self {
        Verification {
            verdict,
            detail: detail.into(),
            signers: Vec::new(),
            chosen: None,
            certificates: Vec::new(),
            content: None,
        }
    }

    /// The report of the signer the verdict is about.
    pub fn signer(&self) -> Option<&SignerReport> {
        self.chosen.and_then(|i| self.signers.get(i))
    }

    /// Every signer's verdict, for the stamp and the log: `name verdict, …`.
    pub fn signer_summary(&self) -> String {
        summary(&self.signers)
    }
}

/// Whether `message` claims to be signed (top-level multipart/signed or opaque
/// signed-data); it may still turn out malformed.
pub fn claims_signed(message: &[u8]) -> bool {
    !matches!(
        extract::extract(message, &Limits::default()),
        Err(ExtractError::NotSigned)
    )
}

/// Verifies a signed message, binding it to `from` (the message's From field).
pub fn verify(message: &[u8], from: &FromField, ctx: &VerifyContext<'_>) -> Verification {
    if message.len() > ctx.limits.max_size {
        return Verification::fail(
            Verdict::Malformed,
            format!("message larger than {} bytes", ctx.limits.max_size),
        );
    }
    let (detached, cms_der) = match extract::extract(message, ctx.limits) {
        Ok(Extracted::Detached { content, cms }) => (Some(content), cms),
        Ok(Extracted::Opaque { cms }) => (None, cms),
        Err(ExtractError::NotSigned) => {
            return Verification::fail(Verdict::Malformed, "not a signed message");
        }
        Err(ExtractError::Malformed(detail)) => {
            return Verification::fail(Verdict::Malformed, detail);
        }
    };
    check_cms(detached, &cms_der, from, ctx)
}

fn parse_signed_data(cms_der: &[u8]) -> Result<SignedData, String> {
    let ci = ContentInfo::from_der(cms_der).map_err(|e| e.to_string())?;
    if ci.content_type != ID_SIGNED_DATA {
        return Err("CMS content is not signed-data".into());
    }
    ci.content
        .decode_as::<SignedData>()
        .map_err(|e| e.to_string())
}

fn check_cms(
    detached: Option<Vec<u8>>,
    cms_der: &[u8],
    from: &FromField,
    ctx: &VerifyContext<'_>,
) -> Verification {
    let signed_data = match parse_signed_data(cms_der) {
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
    if certificates.len() > MAX_CERTIFICATES {
        return Verification::fail(
            Verdict::Malformed,
            format!(
                "{} certificates in the signature, more than {MAX_CERTIFICATES}",
                certificates.len()
            ),
        );
    }
    let content = match (detached, &signed_data.encap_content_info.econtent) {
        (Some(_), Some(_)) => {
            return Verification::fail(
                Verdict::Malformed,
                "multipart/signed whose signature carries content too",
            );
        }
        (Some(content), None) => content,
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
    let infos = &signed_data.signer_infos.0;
    if infos.is_empty() {
        return Verification::fail(Verdict::Malformed, "no SignerInfo");
    }
    if infos.len() > MAX_SIGNERS {
        return Verification::fail(
            Verdict::Malformed,
            format!("{} SignerInfos, more than {MAX_SIGNERS}", infos.len()),
        );
    }
    let raw = signature::raw_signer_infos(cms_der).unwrap_or_default();
    let signers: Vec<SignerReport> = infos
        .iter()
        .map(|info| {
            let raw_attrs = raw_attributes_of(&raw, info);
            judge_signer(
                info,
                &signed_data,
                &content,
                &certificates,
                raw_attrs,
                from,
                ctx,
            )
        })
        .collect();
    let (mut verdict, mut detail, chosen) = overall(&signers, from);
    // Soft-fail: a valid signer whose revocation status is unknown still counts, and
    // the message's verdict says so.
    if verdict == Verdict::Valid
        && let Some(why) = chosen
            .and_then(|i| signers.get(i))
            .and_then(|s| s.revocation_unknown.as_ref())
    {
        verdict = Verdict::RevocationUnknown;
        detail = format!("{detail}; revocation status unknown: {why}");
    }
    Verification {
        verdict,
        detail,
        signers,
        chosen,
        certificates,
        content: Some(content),
    }
}

/// The raw signed attributes of `info`, found by its encoding among the raw ones.
fn raw_attributes_of<'a>(
    raw: &'a [signature::RawSignerInfo],
    info: &SignerInfo,
) -> Option<&'a [u8]> {
    raw.iter()
        .find(|(whole, _)| SignerInfo::from_der(whole).ok().as_ref() == Some(info))
        .and_then(|(_, attrs)| attrs.as_deref())
}

/// The message's verdict from its signers': valid when a valid signer's certificate
/// carries the From address (RFC 8550 §3); when none does, the verdict of the signer
/// that carries it, else address-mismatch if another signer is valid, else the first
/// signer's. Our own failure to check wins over any verdict about the sender.
fn overall(signers: &[SignerReport], from: &FromField) -> (Verdict, String, Option<usize>) {
    if let Some(i) = signers.iter().position(|s| s.verdict.is_temporary()) {
        return (Verdict::Unchecked, signers[i].detail.clone(), Some(i));
    }
    let Some(address) = from.address() else {
        return match signers.iter().position(|s| s.verdict == Verdict::Valid) {
            Some(i) => (Verdict::NoFrom, from.problem().to_string(), Some(i)),
            None => (signers[0].verdict, signers[0].detail.clone(), Some(0)),
        };
    };
    let carries = |s: &SignerReport| s.addresses.iter().any(|a| chain::same_address(a, address));
    if let Some(i) = signers
        .iter()
        .position(|s| s.verdict == Verdict::Valid && carries(s))
    {
        let mut detail = format!("signed by {address}");
        if signers.len() > 1 {
            detail.push_str(&format!("; signers: {}", summary(signers)));
        }
        return (Verdict::Valid, detail, Some(i));
    }
    if let Some(i) = signers.iter().position(carries) {
        return (signers[i].verdict, signers[i].detail.clone(), Some(i));
    }
    if let Some(i) = signers.iter().position(|s| s.verdict == Verdict::Valid) {
        return (
            Verdict::AddressMismatch,
            format!(
                "From <{address}> is not among the signer's addresses ({})",
                signers[i].addresses.join(", ")
            ),
            Some(i),
        );
    }
    (signers[0].verdict, signers[0].detail.clone(), Some(0))
}

fn summary(signers: &[SignerReport]) -> String {
    signers
        .iter()
        .map(|s| format!("{} {}", s.name(), s.verdict.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One SignerInfo: its certificate, its signature, and the certificate's path and
/// usage, for the From address when the certificate carries it (else for its own
/// addresses: a co-signer need not be the author). Binding to From is the message's
/// verdict ([`overall`]).
fn judge_signer(
    info: &SignerInfo,
    signed_data: &SignedData,
    content: &[u8],
    certificates: &[Certificate],
    raw_attrs: Option<&[u8]>,
    from: &FromField,
    ctx: &VerifyContext<'_>,
) -> SignerReport {
    let Some(cert) = certificates.iter().find(|c| names(&info.sid, c)).cloned() else {
        return SignerReport::failed(
            Verdict::Untrusted,
            "the signer's certificate is not in the message",
        );
    };
    let mut report = SignerReport::failed(Verdict::Malformed, "");
    report.addresses = certified_addresses(&cert);
    report.certificate = Some(cert.clone());
    let author = from
        .address()
        .filter(|a| report.addresses.iter().any(|c| chain::same_address(c, a)));
    report.author = author.map(str::to_string);
    let outcome = signature::check(info, signed_data, content, &cert, raw_attrs)
        .and_then(|()| chain::check(&cert, certificates, author, chain::Purpose::Signing, ctx));
    match outcome {
        Ok(checked) => {
            report.revocation_unknown = checked.revocation_unknown;
            report.verdict = Verdict::Valid;
            report.detail = format!("signed by {}", report.name());
            report.capabilities = capabilities(info);
            report.signing_time = signing_time(info);
            if author.is_some() {
                report.encryption_certificate =
                    encryption_certificate(info, &cert, certificates, from, ctx);
            }
        }
        Err((verdict, detail)) => {
            report.verdict = verdict;
            report.detail = detail;
        }
    }
    report
}

fn names(sid: &SignerIdentifier, cert: &Certificate) -> bool {
    let tbs = cert.tbs_certificate();
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(ias) => {
            ias.issuer == *tbs.issuer() && ias.serial_number == *tbs.serial_number()
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => has_ski(cert, ski.0.as_bytes()),
    }
}

fn has_ski(cert: &Certificate, ski: &[u8]) -> bool {
    cert.tbs_certificate()
        .get_extension::<x509_cert::ext::pkix::SubjectKeyIdentifier>()
        .ok()
        .flatten()
        .is_some_and(|(_, s)| s.0.as_bytes() == ski)
}

fn capabilities(info: &SignerInfo) -> Option<Vec<u8>> {
    signature::single_attribute(info, signature::SMIME_CAPABILITIES)
        .ok()
        .flatten()?
        .to_der()
        .ok()
}

fn signing_time(info: &SignerInfo) -> Option<i64> {
    let value = signature::single_attribute(info, signature::ID_SIGNING_TIME)
        .ok()
        .flatten()?;
    let time: x509_cert::time::Time = value.decode_as().ok()?;
    i64::try_from(time.to_unix_duration().as_secs()).ok()
}

/// The certificate an SMIMEEncryptionKeyPreference (RFC 8551 §2.5.3; or Microsoft's
/// attribute) names, when the message carries it and it is valid for encryption to
/// the From address. Without the attribute, the signer's own certificate when it may
/// be used for encryption.
fn encryption_certificate(
    info: &SignerInfo,
    signer: &Certificate,
    carried: &[Certificate],
    from: &FromField,
    ctx: &VerifyContext<'_>,
) -> Option<EncryptionCertificate> {
    let preferred = [
        signature::ENCRYPTION_KEY_PREFERENCE,
        signature::MS_ENCRYPTION_KEY_PREFERENCE,
    ]
    .into_iter()
    .find_map(|oid| {
        let value = signature::single_attribute(info, oid).ok().flatten()?;
        Some(
            value
                .to_der()
                .ok()
                .and_then(|der| preferred_certificate(&der, oid, carried)),
        )
    });
    let candidate = match preferred {
        // Named but not carried or unreadable: the signer asked for another key.
        Some(None) => return None,
        Some(Some(cert)) => cert,
        None => signer.clone(),
    };
    chain::check(
        &candidate,
        carried,
        from.address(),
        chain::Purpose::Encryption,
        ctx,
    )
    .ok()
    .map(|checked| EncryptionCertificate {
        certificate: candidate,
        anchor: checked.anchor,
        intermediates: checked.intermediates,
    })
}

/// Resolves an encryption key preference value (DER of the attribute value) among
/// the carried certificates. RFC 8551's CHOICE is IMPLICIT: `[0]`
/// IssuerAndSerialNumber, `[1]` RecipientKeyIdentifier, `[2]` SubjectKeyIdentifier;
/// Microsoft's attribute is a plain IssuerAndSerialNumber.
fn preferred_certificate(
    der: &[u8],
    oid: ObjectIdentifier,
    carried: &[Certificate],
) -> Option<Certificate> {
    let (tag, content, whole) = signature::tlv(der)?;
    let by_issuer_serial = |bytes: &[u8]| {
        let ias = cms::cert::IssuerAndSerialNumber::from_der(bytes).ok()?;
        carried
            .iter()
            .find(|c| {
                *c.tbs_certificate().issuer() == ias.issuer
                    && *c.tbs_certificate().serial_number() == ias.serial_number
            })
            .cloned()
    };
    let retagged = |bytes: &[u8]| {
        let mut v = bytes.to_vec();
        v[0] = 0x30;
        v
    };
    let by_ski = |ski: &[u8]| carried.iter().find(|c| has_ski(c, ski)).cloned();
    if oid == signature::MS_ENCRYPTION_KEY_PREFERENCE {
        return by_issuer_serial(whole);
    }
    match tag {
        0xa0 => by_issuer_serial(&retagged(whole)),
        0xa1 => {
            let seq = retagged(whole);
            let (_, fields, _) = signature::tlv(&seq)?;
            let (ski_tag, ski, _) = signature::tlv(fields)?;
            (ski_tag == 0x04).then(|| by_ski(ski)).flatten()
        }
        0x82 => by_ski(content),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_from_field_is_one_address_or_says_why_not() {
        let of = |head: &str| FromField::of_message(format!("{head}\r\n\r\nbody").as_bytes());
        assert_eq!(
            of("From: Bob <Bob@Partner.Example>"),
            FromField::One("bob@partner.example".into())
        );
        assert_eq!(of("Subject: x"), FromField::Missing);
        assert_eq!(
            of("From: a@x.example\r\nFrom: b@x.example"),
            FromField::Several
        );
        assert_eq!(of("From: a@x.example, b@x.example"), FromField::Several);
        assert_eq!(of("From: not an address"), FromField::Unreadable);
        assert_eq!(of("From: undisclosed:;"), FromField::Unreadable);
        assert_eq!(
            of("FROM: <a@x.example>"),
            FromField::One("a@x.example".into())
        );
    }
}

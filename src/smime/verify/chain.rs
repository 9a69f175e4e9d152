//! The signer's certificate (RFC 8550): a path to a trust anchor that may vouch for
//! the address in question (scoped anchors, [`crate::pki::trust`]), validity,
//! revocation by the CRLs given, emailProtection, a key usage that allows signatures,
//! and the addresses it certifies (subjectAltName rfc822Name, and the legacy
//! emailAddress in the subject, RFC 8550 §3).

use std::time::SystemTime;

use const_oid::ObjectIdentifier;
use der::Encode;
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::Digest;
use x509_cert::certificate::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{KeyUsage, KeyUsages, SubjectAltName};

use super::{Failure, Verdict, VerifyContext};
use crate::config::RevocationMode;
use crate::pki::revocation::{Status, check::path_status};

/// id-kp-emailProtection, content octets.
const EMAIL_PROTECTION: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x04];
/// PKCS #9 emailAddress (RFC 2985), in a subject DN.
const EMAIL_ADDRESS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.1");

/// What a certificate is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// Signing mail: digitalSignature or nonRepudiation.
    Signing,
    /// Receiving encrypted mail: keyEncipherment (RSA) or keyAgreement (EC).
    Encryption,
}

/// The mail addresses a certificate certifies, lower-cased: its subjectAltName
/// rfc822Names, or, only when it has none, the legacy emailAddress attributes of its
/// subject (RFC 8550 §3; RFC 5280 §4.2.1.10 applies rfc822Name constraints to those
/// in that case only).
pub fn certified_addresses(cert: &Certificate) -> Vec<String> {
    let tbs = cert.tbs_certificate();
    let mut out: Vec<String> = tbs
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
    if out.is_empty() {
        // Name::iter walks every AttributeTypeAndValue of every RDN.
        for atv in tbs.subject().iter() {
            if atv.oid == EMAIL_ADDRESS
                && let Ok(ia5) = atv.value.decode_as::<der::asn1::Ia5String>()
            {
                out.push(ia5.to_string());
            }
        }
    }
    let mut out: Vec<String> = out
        .into_iter()
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Addresses compare case-insensitively, the local part too, as every system the
/// gateway fronts treats it so.
pub(super) fn same_address(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

/// A certificate that passed [`check`].
#[derive(Debug, Clone)]
pub(super) struct Checked {
    /// SHA-256 fingerprint (hex) of the anchor that vouched.
    pub anchor: String,
    /// The CA certificates (DER) between the certificate and the anchor, path order.
    pub intermediates: Vec<Vec<u8>>,
    /// Soft-fail: why its revocation status is unknown.
    pub revocation_unknown: Option<String>,
}

/// Checks `cert` for `purpose`. The chain must end at an anchor that may vouch for
/// every address the certificate carries — as a name constraint would: a CA that
/// certifies an address outside its domains is not trusted for the certificate at all.
/// `address` (the From address) must be among them when given. A revoked certificate
/// (or CA on its path) fails as [`Verdict::Revoked`]; one whose status cannot be learnt
/// fails as [`Verdict::RevocationUnknown`] under hard-fail and passes, saying why,
/// under soft-fail.
pub(super) fn check(
    cert: &Certificate,
    carried: &[Certificate],
    address: Option<&str>,
    purpose: Purpose,
    ctx: &VerifyContext<'_>,
) -> Result<Checked, Failure> {
    let addresses = certified_addresses(cert);
    let anchors: Vec<&Certificate> = ctx
        .trust
        .anchors
        .iter()
        .filter(|a| {
            !addresses.is_empty()
                && addresses
                    .iter()
                    .all(|address| ctx.trust.allows(&a.scope, domain_of(address)))
        })
        .map(|a| &a.certificate)
        .collect();
    let (anchor, intermediates, status) = match path(cert, carried, &anchors, ctx) {
        Err((Verdict::Untrusted, detail)) if anchors.len() != ctx.trust.anchors.len() => {
            // Would another anchor have vouched? Then say that it may not.
            if path(cert, carried, &ctx.trust.all(), ctx).is_ok() {
                let mut domains: Vec<&str> = addresses.iter().map(|a| domain_of(a)).collect();
                domains.dedup();
                return Err((
                    Verdict::Untrusted,
                    if domains.is_empty() {
                        "the certificate carries no mail address a CA could vouch for".into()
                    } else {
                        format!(
                            "the certificate's CA is not trusted for {}",
                            domains.join(", ")
                        )
                    },
                ));
            }
            return Err((Verdict::Untrusted, detail));
        }
        other => other?,
    };
    check_key_usage(cert, purpose)?;
    if let Some(address) = address
        && !addresses.iter().any(|a| same_address(a, address))
    {
        return Err((
            Verdict::AddressMismatch,
            format!(
                "From <{address}> is not among the certificate's addresses ({})",
                addresses.join(", ")
            ),
        ));
    }
    let revocation_unknown = match status {
        Status::Good | Status::NotChecked => None,
        Status::Revoked(why) => return Err((Verdict::Revoked, why)),
        Status::Unknown(why) => match ctx.revocation_mode() {
            RevocationMode::HardFail => {
                return Err((
                    Verdict::RevocationUnknown,
                    format!("its revocation status cannot be learnt: {why}"),
                ));
            }
            RevocationMode::SoftFail => Some(why),
        },
    };
    Ok(Checked {
        anchor,
        intermediates,
        revocation_unknown,
    })
}

fn check_key_usage(cert: &Certificate, purpose: Purpose) -> Result<(), Failure> {
    let key_usage = cert
        .tbs_certificate()
        .get_extension::<KeyUsage>()
        .ok()
        .flatten()
        .map(|(_, ku)| ku.0);
    let Some(ku) = key_usage else {
        return Ok(());
    };
    let ec = cert
        .tbs_certificate()
        .subject_public_key_info()
        .algorithm
        .oid
        == ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    let (allowed, what) = match purpose {
        Purpose::Signing => (
            ku.contains(KeyUsages::DigitalSignature) || ku.contains(KeyUsages::NonRepudiation),
            "digital signatures",
        ),
        Purpose::Encryption if ec => (ku.contains(KeyUsages::KeyAgreement), "key agreement"),
        Purpose::Encryption => (ku.contains(KeyUsages::KeyEncipherment), "key encipherment"),
    };
    if allowed {
        Ok(())
    } else {
        Err((
            Verdict::WrongUsage,
            format!("the certificate's key usage does not allow {what}"),
        ))
    }
}

/// A path from `cert` through the `carried` certificates to one of `anchors`, valid
/// at `ctx.now`, for emailProtection, and its revocation status
/// ([`crate::pki::revocation::check`]: the CRLs of its distribution points and
/// `ctx.crls`). Returns the SHA-256 fingerprint (hex) of the anchor it ends at and the
/// path's CA certificates (DER).
fn path(
    cert: &Certificate,
    carried: &[Certificate],
    anchors: &[&Certificate],
    ctx: &VerifyContext<'_>,
) -> Result<(String, Vec<Vec<u8>>, Status), Failure> {
    if ctx
        .crls
        .iter()
        .any(|der| webpki::BorrowedCertRevocationList::from_der(der).is_err())
    {
        // Our configuration, not the sender's certificate: we could not check.
        return Err((Verdict::Unchecked, "a configured CRL cannot be read".into()));
    }
    let encode = |c: &Certificate| c.to_der().map(CertificateDer::from).ok();
    let cert_der = encode(cert).ok_or((
        Verdict::Malformed,
        "the certificate does not encode".to_string(),
    ))?;
    // (the anchor's DER, webpki's view of it), for the anchors that parse
    let anchor_ders: Vec<CertificateDer<'static>> =
        anchors.iter().filter_map(|c| encode(c)).collect();
    let parsed: Vec<(&CertificateDer<'static>, _)> = anchor_ders
        .iter()
        .filter_map(|d| webpki::anchor_from_trusted_cert(d).ok().map(|a| (d, a)))
        .collect();
    let trust_anchors: Vec<_> = parsed.iter().map(|(_, a)| a.clone()).collect();
    let intermediates: Vec<CertificateDer<'static>> = carried
        .iter()
        .filter(|c| *c != cert)
        .filter_map(encode)
        .collect();
    let ee = webpki::EndEntityCert::try_from(&cert_der)
        .map_err(|e| (Verdict::Malformed, format!("certificate: {e}")))?;
    let time = UnixTime::since_unix_epoch(
        ctx.now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &trust_anchors,
        &intermediates,
        time,
        webpki::KeyUsage::required_if_present(EMAIL_PROTECTION),
        None,
        None,
    )
    .map(|verified| {
        // The anchor the path ends at, by its SHA-256 fingerprint (as stored).
        let used = verified.anchor();
        let fingerprint = trust_anchors
            .iter()
            .position(|a| {
                a.subject == used.subject
                    && a.subject_public_key_info == used.subject_public_key_info
            })
            .and_then(|i| parsed.get(i))
            .map(|(der, _)| hex::encode(sha2::Sha256::digest(der.as_ref())))
            .unwrap_or_default();
        let path_cas: Vec<CertificateDer<'_>> = verified
            .intermediate_certificates()
            .map(|c| c.der())
            .collect();
        let status = if ctx.revocation.is_some() || !ctx.crls.is_empty() {
            path_status(&cert_der, &path_cas, used, time, ctx.crls, ctx.revocation)
        } else {
            Status::NotChecked
        };
        (
            fingerprint,
            path_cas.iter().map(|c| c.as_ref().to_vec()).collect(),
            status,
        )
    })
    .map_err(|e| match e {
        webpki::Error::CertRevoked => (Verdict::Revoked, "the certificate is revoked".to_string()),
        webpki::Error::CertExpired { .. } => {
            (Verdict::Expired, "the certificate has expired".to_string())
        }
        webpki::Error::CertNotValidYet { .. } => (
            Verdict::NotYetValid,
            "the certificate is not valid yet".to_string(),
        ),
        webpki::Error::RequiredEkuNotFoundContext(_) => (
            Verdict::WrongUsage,
            "the certificate is not for email protection".to_string(),
        ),
        #[allow(deprecated)]
        webpki::Error::RequiredEkuNotFound => (
            Verdict::WrongUsage,
            "the certificate is not for email protection".to_string(),
        ),
        other => (
            Verdict::Untrusted,
            format!("no trusted chain for the certificate ({other})"),
        ),
    })
}

//! Whether a certificate on a verified path is revoked (RFC 5280 §6.3), from the CRLs
//! of its distribution points (and any given explicitly). rustls-webpki judges each
//! CRL: its signature must verify with the key of the certificate's issuer on the path
//! (which must allow cRLSign), its nextUpdate must be in the future, it must be
//! authoritative for the certificate (same issuer; an issuing distribution point that
//! covers it), and a critical extension it does not understand — a delta CRL, an
//! indirect CRL, reason partitions, any unknown critical CRL or entry extension — makes
//! the CRL unusable (RFC 5280 §5.2, §5.3), never "good".
//!
//! Scope: every certificate on the path that names an http:// distribution point (or
//! whose issuer has an explicitly given CRL) is checked — the end entity and, when
//! every intermediate can be checked, the intermediates too. A certificate whose CA
//! publishes no distribution point cannot be checked ([`Status::NotChecked`]). Our own
//! certificates (issued by the built-in CA) are checked against our database.

use std::sync::Arc;

use der::{Decode, Encode};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_cert::certificate::Certificate;
use x509_cert::ext::pkix::CrlDistributionPoints;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};

use crate::config::RevocationMode;

/// id-kp-emailProtection, content octets.
const EMAIL_PROTECTION: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x04];

/// What the checker learnt about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Every certificate in scope is covered by a current, correctly signed CRL that
    /// does not list it (or, for our own, our database says it is not revoked).
    Good,
    /// No revocation information is published for it (no distribution point).
    NotChecked,
    /// It (or a CA certificate on its path) is revoked; why, for the log and reply.
    Revoked(String),
    /// The status cannot be learnt (CRL unreachable, expired, badly signed, unusable).
    Unknown(String),
}

/// Where CRLs come from during a check. Calls may block for a bounded time (the first
/// download of a CRL): call it from a blocking thread, never from async code.
pub trait CrlSource: Send + Sync {
    fn mode(&self) -> RevocationMode;
    /// The CRL published at `url` (DER), or why there is none.
    fn crl(&self, url: &str) -> Result<Arc<Vec<u8>>, String>;
    /// Whether the certificate (DER) is one of ours and, if so, whether our database
    /// records it revoked.
    fn own_certificate(&self, der: &[u8]) -> Option<bool>;
}

/// The http:// URLs among a certificate's CRL distribution points (full names only;
/// points for an indirect CRL or for some reasons only are not ours to use).
pub fn distribution_points(cert: &Certificate) -> Vec<String> {
    let Ok(Some((_, dps))) = cert
        .tbs_certificate()
        .get_extension::<CrlDistributionPoints>()
    else {
        return Vec::new();
    };
    let mut urls = Vec::new();
    for DistributionPoint {
        distribution_point,
        reasons,
        crl_issuer,
    } in &dps.0
    {
        if reasons.is_some() || crl_issuer.is_some() {
            continue;
        }
        if let Some(DistributionPointName::FullName(names)) = distribution_point {
            for name in names {
                if let GeneralName::UniformResourceIdentifier(uri) = name {
                    let uri = uri.to_string();
                    if uri.len() > 7 && uri[..7].eq_ignore_ascii_case("http://") {
                        urls.push(uri);
                    }
                }
            }
        }
    }
    urls.dedup();
    urls
}

/// One certificate of the path as the checker needs it.
struct Node {
    issuer: Vec<u8>,
    serial: Vec<u8>,
    urls: Vec<String>,
}

fn node(der: &CertificateDer<'_>) -> Option<Node> {
    let parsed = webpki::EndEntityCert::try_from(der).ok()?;
    let cert = Certificate::from_der(der.as_ref()).ok()?;
    Some(Node {
        issuer: parsed.issuer().to_vec(),
        serial: parsed.serial().to_vec(),
        urls: distribution_points(&cert),
    })
}

fn when(t: UnixTime) -> String {
    let secs = i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

fn reason_word(reason: webpki::RevocationReason) -> &'static str {
    use webpki::RevocationReason as R;
    match reason {
        R::Unspecified => "unspecified",
        R::KeyCompromise => "keyCompromise",
        R::CaCompromise => "cACompromise",
        R::AffiliationChanged => "affiliationChanged",
        R::Superseded => "superseded",
        R::CessationOfOperation => "cessationOfOperation",
        R::CertificateHold => "certificateHold",
        R::RemoveFromCrl => "removeFromCRL",
        R::PrivilegeWithdrawn => "privilegeWithdrawn",
        R::AaCompromise => "aACompromise",
    }
}

/// The revocation status of `end_entity` on the verified path through `intermediates`
/// (in path order) to `anchor`, at `now`. `explicit` CRLs (DER) are used besides the
/// distribution points'; `source` fetches those (without it, only `explicit` count).
pub fn path_status(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    anchor: &TrustAnchor<'_>,
    now: UnixTime,
    explicit: &[Vec<u8>],
    source: Option<&dyn CrlSource>,
) -> Status {
    if let Some(revoked) = source.and_then(|s| s.own_certificate(end_entity.as_ref())) {
        return if revoked {
            Status::Revoked("the certificate was revoked by this gateway's CA".into())
        } else {
            Status::Good
        };
    }
    let Some(ee) = node(end_entity) else {
        return Status::Unknown("the certificate cannot be read".into());
    };
    let chain: Vec<Node> = intermediates.iter().filter_map(node).collect();
    if chain.len() != intermediates.len() {
        return Status::Unknown("a CA certificate on its path cannot be read".into());
    }
    let explicit_issuers: Vec<Vec<u8>> = explicit
        .iter()
        .filter_map(|der| {
            webpki::BorrowedCertRevocationList::from_der(der)
                .ok()
                .map(|crl| webpki::CertRevocationList::from(crl).issuer().to_vec())
        })
        .collect();
    let covered = |n: &Node| !n.urls.is_empty() || explicit_issuers.contains(&n.issuer);
    if !covered(&ee) {
        return Status::NotChecked;
    }
    let whole_chain = chain.iter().all(covered);
    let depth = if whole_chain {
        webpki::RevocationCheckDepth::Chain
    } else {
        webpki::RevocationCheckDepth::EndEntity
    };
    let in_scope: Vec<&Node> = if whole_chain {
        std::iter::once(&ee).chain(chain.iter()).collect()
    } else {
        vec![&ee]
    };
    // The CRLs: explicit ones, then each distribution point's.
    let mut problems: Vec<String> = Vec::new();
    let mut ders: Vec<(Option<String>, Arc<Vec<u8>>)> = explicit
        .iter()
        .map(|d| (None, Arc::new(d.clone())))
        .collect();
    for n in &in_scope {
        for url in &n.urls {
            if ders.iter().any(|(u, _)| u.as_deref() == Some(url.as_str())) {
                continue;
            }
            match source {
                Some(s) => match s.crl(url) {
                    Ok(der) => ders.push((Some(url.clone()), der)),
                    Err(why) => problems.push(format!("the CRL at {url} is not available: {why}")),
                },
                None => problems.push(format!("the CRL at {url} was not fetched")),
            }
        }
    }
    let mut crls: Vec<webpki::CertRevocationList<'_>> = Vec::new();
    for (url, der) in &ders {
        match webpki::BorrowedCertRevocationList::from_der(der) {
            Ok(crl) => crls.push(crl.into()),
            Err(e) => problems.push(format!(
                "the CRL {} is not usable ({e:?})",
                url.as_deref()
                    .map_or("given".to_string(), |u| format!("at {u}"))
            )),
        }
    }
    let unknown = |fallback: String| {
        if problems.is_empty() {
            Status::Unknown(fallback)
        } else {
            Status::Unknown(problems.join("; "))
        }
    };
    let refs: Vec<&webpki::CertRevocationList<'_>> = crls.iter().collect();
    let Ok(builder) = webpki::RevocationOptionsBuilder::new(&refs) else {
        return unknown("no CRL could be read".into());
    };
    let options = builder
        .with_depth(depth)
        .with_status_policy(webpki::UnknownStatusPolicy::Deny)
        .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
        .build();
    let Ok(ee_cert) = webpki::EndEntityCert::try_from(end_entity) else {
        return Status::Unknown("the certificate cannot be read".into());
    };
    let result = ee_cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        std::slice::from_ref(anchor),
        intermediates,
        now,
        webpki::KeyUsage::required_if_present(EMAIL_PROTECTION),
        Some(options),
        None,
    );
    match result {
        Ok(_) => Status::Good,
        Err(webpki::Error::CertRevoked) => {
            let entry = crls.iter().find_map(|crl| {
                (crl.issuer() == ee.issuer.as_slice())
                    .then(|| crl.find_serial(&ee.serial).ok().flatten())
                    .flatten()
            });
            Status::Revoked(match entry {
                Some(entry) => format!(
                    "the certificate was revoked on {}{}",
                    when(entry.revocation_date),
                    entry
                        .reason_code
                        .map(|r| format!(" ({})", reason_word(r)))
                        .unwrap_or_default()
                ),
                None => "a CA certificate on its path is revoked".to_string(),
            })
        }
        Err(webpki::Error::CrlExpired { next_update, .. }) => Status::Unknown(format!(
            "the CRL covering it expired at {} (nextUpdate)",
            when(next_update)
        )),
        Err(webpki::Error::InvalidCrlSignatureForPublicKey) => {
            Status::Unknown("the CRL's signature does not verify with its issuer's key".into())
        }
        Err(webpki::Error::IssuerNotCrlSigner) => {
            Status::Unknown("the CRL's issuer may not sign CRLs".into())
        }
        Err(webpki::Error::UnknownRevocationStatus) => {
            unknown("no CRL from its distribution points covers it".into())
        }
        Err(other) => unknown(format!("its CRL could not be checked ({other})")),
    }
}

/// The status of a certificate to encrypt to, outside any message: a path to one of
/// `anchors` through `cas` (CA certificates known from earlier signatures) when there is
/// one, else to its issuer among `cas` and `anchors` by name (a CRL needs its issuer's
/// key, not a trusted path). Nothing to check it against: [`Status::Unknown`] when it
/// names a distribution point, else [`Status::NotChecked`].
pub fn certificate_status(
    cert: &Certificate,
    cas: &[Certificate],
    anchors: &[Certificate],
    now: UnixTime,
    source: &dyn CrlSource,
) -> Status {
    let Ok(der) = cert.to_der().map(CertificateDer::from) else {
        return Status::Unknown("the certificate does not encode".into());
    };
    if let Some(revoked) = source.own_certificate(der.as_ref()) {
        return if revoked {
            Status::Revoked("the certificate was revoked by this gateway's CA".into())
        } else {
            Status::Good
        };
    }
    let encode = |c: &Certificate| c.to_der().ok().map(CertificateDer::from);
    let ca_ders: Vec<CertificateDer<'static>> = cas.iter().filter_map(encode).collect();
    let anchor_ders: Vec<CertificateDer<'static>> = anchors.iter().filter_map(encode).collect();
    let Ok(ee) = webpki::EndEntityCert::try_from(&der) else {
        return Status::Unknown("the certificate cannot be read".into());
    };
    let trusted: Vec<TrustAnchor<'_>> = anchor_ders
        .iter()
        .filter_map(|d| webpki::anchor_from_trusted_cert(d).ok())
        .collect();
    let verified = ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &trusted,
        &ca_ders,
        now,
        webpki::KeyUsage::required_if_present(EMAIL_PROTECTION),
        None,
        None,
    );
    if let Ok(path) = verified {
        let intermediates: Vec<CertificateDer<'_>> =
            path.intermediate_certificates().map(|c| c.der()).collect();
        let anchor = path.anchor().clone();
        return path_status(&der, &intermediates, &anchor, now, &[], Some(source));
    }
    // No trusted path (an uploaded certificate of a CA nobody trusts here): its issuer
    // alone, by name, still verifies its CRL.
    let issuer_name = cert.tbs_certificate().issuer();
    let issuer = cas
        .iter()
        .chain(anchors)
        .filter(|c| c.tbs_certificate().subject() == issuer_name)
        .filter_map(encode)
        .find_map(|d| {
            let anchor = webpki::anchor_from_trusted_cert(&d).ok()?.to_owned();
            let issued = ee
                .verify_for_usage(
                    webpki::ALL_VERIFICATION_ALGS,
                    std::slice::from_ref(&anchor),
                    &[],
                    now,
                    webpki::KeyUsage::required_if_present(EMAIL_PROTECTION),
                    None,
                    None,
                )
                .is_ok();
            issued.then_some(anchor)
        });
    match issuer {
        Some(anchor) => path_status(&der, &[], &anchor, now, &[], Some(source)),
        None if distribution_points(cert).is_empty() => Status::NotChecked,
        None => Status::Unknown(
            "its issuer's certificate is not known here, so its CRL cannot be verified".into(),
        ),
    }
}

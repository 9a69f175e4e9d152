//! Certificates as the operator manages them: partners' public certificates imported
//! by hand (`cert import`), the list of every certificate the gateway holds (`cert
//! list`), and removing a partner's certificate (`cert remove`). Public data only: no
//! command here, or anywhere, hands out a private key.
//!
//! An imported partner certificate is checked as a harvested one is: a path to a
//! trust anchor whose scope covers every address it certifies, valid now,
//! emailProtection when it names extended usages, a key the gateway can encrypt to,
//! and never for an address of a managed domain. It is stored with source `uploaded`
//! for its first certified address, so the relay encrypts to it like to a harvested
//! one.

use std::time::SystemTime;

use der::{Decode, DecodePem};
use x509_cert::certificate::Certificate;

use super::{Actor, OpError, Ops, audit, input};
use crate::pki::trust::Scope;
use crate::smime::verify::{TrustAnchors, VerifyContext, certified_addresses};
use crate::store::{CertificateRecord, CertificateSource, StoredCertificate};

/// Which certificates `cert list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Every one.
    #[default]
    All,
    /// Ours: the CA's, managed mailboxes' (issued or uploaded, with a key in the
    /// token).
    Managed,
    /// Partners': harvested from signed mail or imported with `cert import`.
    Partner,
}

/// `cert list`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ListCertificates {
    #[serde(default)]
    pub kind: Kind,
    #[serde(default)]
    pub address: Option<String>,
}

/// One certificate as `cert list` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct CertificateView {
    pub fingerprint: String,
    pub address: Option<String>,
    #[schema(value_type = String)]
    pub source: CertificateSource,
    /// `managed`, `partner` or `trust-anchor`.
    #[schema(value_type = String)]
    pub kind: &'static str,
    pub subject: String,
    pub issuer: String,
    pub not_after: i64,
    pub revoked: bool,
}

/// What `cert import` did with each certificate of the file.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ImportOutcome {
    pub fingerprint: String,
    pub subject: String,
    /// `imported`, `known` (held already), `skipped` (a CA certificate) or `refused`.
    #[schema(value_type = String)]
    pub outcome: &'static str,
    pub address: Option<String>,
    pub detail: String,
}

/// The kind of a stored certificate.
fn kind_of(cert: &StoredCertificate) -> &'static str {
    match cert.source {
        CertificateSource::TrustAnchor => "trust-anchor",
        CertificateSource::Ca | CertificateSource::Issued => "managed",
        _ if cert.key_id.is_some() => "managed",
        _ => "partner",
    }
}

/// Every certificate the gateway holds, newest first, filtered.
pub async fn list(
    ctx: &Ops<'_>,
    filter: ListCertificates,
) -> Result<Vec<CertificateView>, OpError> {
    let address = filter.address.as_deref().map(input::address).transpose()?;
    let rows = ctx
        .store
        .certificates()
        .list_all(address.as_ref().map(|a| a.as_str()))
        .await?;
    Ok(rows
        .into_iter()
        .filter(|c| match filter.kind {
            Kind::All => true,
            Kind::Managed => kind_of(c) == "managed",
            Kind::Partner => kind_of(c) == "partner",
        })
        .map(|c| CertificateView {
            kind: kind_of(&c),
            fingerprint: c.record.fingerprint_sha256,
            address: c.owner_address,
            source: c.source,
            subject: c.record.subject,
            issuer: c.record.issuer,
            not_after: c.record.not_after,
            revoked: c.revoked_at.is_some(),
        })
        .collect())
}

/// Imports partners' certificates from a file: PEM (CERTIFICATE or PKCS7 blocks), a
/// DER certificate, or a DER PKCS#7 certs-only bundle (.p7c). CA certificates in the
/// file serve as intermediates and are not stored. Refuses the whole call only when
/// nothing could be imported and something was refused.
pub async fn import(
    ctx: &Ops<'_>,
    actor: &Actor,
    file: &[u8],
) -> Result<Vec<ImportOutcome>, OpError> {
    let certificates = read_bundle(file)?;
    let trust = crate::app::trust_anchors(ctx.store).await?;
    // Checked as the harvester checks: on a blocking thread, with the CRLs of the
    // certificates' distribution points ([revocation] decides about unknown status).
    let revocation = crate::pki::revocation::Revocations::new(
        ctx.store.clone(),
        (&ctx.settings.config.revocation).into(),
    );
    let source = revocation.blocking(tokio::runtime::Handle::current());
    let checks = tokio::task::spawn_blocking(move || {
        let limits = crate::mime::Limits::default();
        let verify = VerifyContext {
            trust: &trust,
            crls: &[],
            revocation: Some(&source),
            now: SystemTime::now(),
            limits: &limits,
        };
        let checks: Vec<Option<PartnerCheck>> = certificates
            .iter()
            .map(|cert| (!is_ca(cert)).then(|| check_partner(cert, &certificates, &trust, &verify)))
            .collect();
        (certificates, checks)
    })
    .await
    .map_err(|e| {
        OpError::Store(crate::store::StoreError::Unavailable(format!(
            "the certificate check did not finish: {e}"
        )))
    })?;
    let (certificates, checks) = checks;
    let mut outcomes = Vec::new();
    for (cert, check) in certificates.iter().zip(checks) {
        let record = CertificateRecord::from_certificate(cert)?;
        let mut outcome = ImportOutcome {
            fingerprint: record.fingerprint_sha256.clone(),
            subject: record.subject.clone(),
            outcome: "refused",
            address: None,
            detail: String::new(),
        };
        match check {
            None => {
                outcome.outcome = "skipped";
                outcome.detail =
                    "a CA certificate (used as an intermediate; `trust add` makes it an anchor)"
                        .into();
            }
            Some(Err(why)) => outcome.detail = why,
            Some(Ok((owner, anchor, unknown))) => {
                outcome.address = Some(owner.clone());
                if ctx
                    .store
                    .certificates()
                    .by_fingerprint(&record.fingerprint_sha256)
                    .await?
                    .is_some()
                {
                    outcome.outcome = "known";
                    outcome.detail = "held already".into();
                } else {
                    let stored = ctx
                        .store
                        .certificates()
                        .insert_partner(cert, &owner, &anchor)
                        .await?;
                    audit(
                        ctx.store,
                        actor,
                        "cert.import",
                        &stored.record.fingerprint_sha256,
                        &format!("partner {owner}; {}", stored.record.subject),
                    )
                    .await?;
                    outcome.outcome = "imported";
                    outcome.detail = match unknown {
                        None => format!("vouched for by anchor {anchor}"),
                        Some(why) => {
                            format!("vouched for by anchor {anchor}; revocation-unknown: {why}")
                        }
                    };
                }
            }
        }
        outcomes.push(outcome);
    }
    let refused: Vec<&ImportOutcome> = outcomes.iter().filter(|o| o.outcome == "refused").collect();
    if !refused.is_empty()
        && !outcomes
            .iter()
            .any(|o| matches!(o.outcome, "imported" | "known"))
    {
        let reasons: Vec<String> = refused
            .iter()
            .map(|o| format!("{}: {}", o.subject, o.detail))
            .collect();
        return Err(OpError::Invalid(format!(
            "no certificate imported: {}",
            reasons.join("; ")
        )));
    }
    if outcomes.is_empty() || outcomes.iter().all(|o| o.outcome == "skipped") {
        return Err(OpError::Invalid(
            "the file holds no end-entity certificate to import".into(),
        ));
    }
    Ok(outcomes)
}

/// (owner address, anchor fingerprint, why its revocation status is unknown under
/// soft-fail), or why a partner's certificate may not be imported.
type PartnerCheck = Result<(String, String, Option<String>), String>;

/// Checks a partner's certificate for [`import`].
fn check_partner(
    cert: &Certificate,
    bundle: &[Certificate],
    trust: &TrustAnchors,
    verify: &VerifyContext<'_>,
) -> PartnerCheck {
    let addresses = certified_addresses(cert);
    let Some(owner) = addresses.first().cloned() else {
        return Err("the certificate carries no mail address".into());
    };
    if let Some(managed) = addresses.iter().find(|a| {
        let domain = a.rsplit_once('@').map_or("", |(_, d)| d);
        !trust.allows(&Scope::AnyForeign, domain)
    }) {
        return Err(format!(
            "{managed} is an address of a managed domain: its certificates are the gateway's own"
        ));
    }
    if let Some(problem) = crate::smime::encrypt::recipient_key_problem(cert) {
        return Err(problem);
    }
    let (anchor, unknown) =
        crate::smime::verify::check_partner_certificate(cert, bundle, verify)
            .map_err(|(verdict, detail)| format!("{}: {detail}", verdict.as_str()))?;
    Ok((owner, anchor, unknown))
}

/// Removes a partner's certificate by its SHA-256 fingerprint (hex; colons and case
/// ignored). Never one of ours or a trust anchor.
pub async fn remove(
    ctx: &Ops<'_>,
    actor: &Actor,
    fingerprint: &str,
) -> Result<CertificateView, OpError> {
    let wanted = fingerprint_hex(fingerprint)?;
    let cert = ctx
        .store
        .certificates()
        .by_fingerprint(&wanted)
        .await?
        .ok_or_else(|| OpError::NotFound(format!("no certificate with fingerprint {wanted}")))?;
    let kind = kind_of(&cert);
    if kind != "partner" {
        return Err(OpError::Invalid(format!(
            "certificate {wanted} is a {kind} certificate ({}); only partners' certificates can be removed",
            cert.source.as_str()
        )));
    }
    ctx.store.certificates().remove_partner(cert.id).await?;
    audit(
        ctx.store,
        actor,
        "cert.remove",
        &wanted,
        &format!(
            "partner {}; {}",
            cert.owner_address.as_deref().unwrap_or("-"),
            cert.source.as_str()
        ),
    )
    .await?;
    Ok(CertificateView {
        kind,
        fingerprint: cert.record.fingerprint_sha256,
        address: cert.owner_address,
        source: cert.source,
        subject: cert.record.subject,
        issuer: cert.record.issuer,
        not_after: cert.record.not_after,
        revoked: cert.revoked_at.is_some(),
    })
}

fn is_ca(cert: &Certificate) -> bool {
    cert.tbs_certificate()
        .get_extension::<x509_cert::ext::pkix::BasicConstraints>()
        .ok()
        .flatten()
        .is_some_and(|(_, bc)| bc.ca)
}

/// The certificates of a file: PEM blocks (CERTIFICATE, PKCS7), a DER certificate or a
/// DER PKCS#7 SignedData (certs-only, BER accepted).
pub(crate) fn read_bundle(file: &[u8]) -> Result<Vec<Certificate>, OpError> {
    let text = std::str::from_utf8(file)
        .ok()
        .filter(|t| t.contains("-----BEGIN "));
    let Some(text) = text else {
        if let Ok(cert) = Certificate::from_der(file) {
            return Ok(vec![cert]);
        }
        return pkcs7_certificates(file);
    };
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let label_end = block[11..]
            .find("-----")
            .map(|i| i + 11)
            .ok_or_else(|| OpError::Invalid("a PEM block has no label".into()))?;
        let label = &block[11..label_end];
        let end_marker = format!("-----END {label}-----");
        let end = block
            .find(&end_marker)
            .ok_or_else(|| OpError::Invalid(format!("the PEM block {label} has no end")))?
            + end_marker.len();
        let pem = &block[..end];
        match label {
            "CERTIFICATE" => {
                out.push(Certificate::from_pem(pem).map_err(|e| {
                    OpError::Invalid(format!("a PEM certificate does not parse: {e}"))
                })?)
            }
            "PKCS7" | "CMS" => {
                let (_, der) = der::pem::decode_vec(pem.as_bytes())
                    .map_err(|e| OpError::Invalid(format!("the PEM block {label}: {e}")))?;
                out.extend(pkcs7_certificates(&der)?);
            }
            other => {
                return Err(OpError::Invalid(format!(
                    "the file holds a {other} block; only public certificates are imported"
                )));
            }
        }
        rest = &block[end..];
    }
    if out.is_empty() {
        return Err(OpError::Invalid("the file holds no certificate".into()));
    }
    Ok(out)
}

/// The certificates of a PKCS#7 / CMS SignedData (a .p7c bundle).
fn pkcs7_certificates(der_bytes: &[u8]) -> Result<Vec<Certificate>, OpError> {
    use cms::cert::CertificateChoices;
    use cms::content_info::ContentInfo;
    use cms::signed_data::SignedData;
    let not = |e: &dyn std::fmt::Display| {
        OpError::Invalid(format!(
            "not a certificate or PKCS#7 bundle (PEM, DER or .p7c): {e}"
        ))
    };
    let normalised = crate::smime::ber::to_der(der_bytes, 32).map_err(|e| not(&e))?;
    let info = ContentInfo::from_der(&normalised).map_err(|e| not(&e))?;
    if info.content_type != const_oid::db::rfc5911::ID_SIGNED_DATA {
        return Err(OpError::Invalid(format!(
            "the PKCS#7 file is {}, not a certificate bundle (signed-data)",
            info.content_type
        )));
    }
    let signed: SignedData = info.content.decode_as().map_err(|e| not(&e))?;
    let certificates: Vec<Certificate> = signed
        .certificates
        .map(|set| {
            set.0
                .into_vec()
                .into_iter()
                .filter_map(|c| match c {
                    CertificateChoices::Certificate(c) => Some(c),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if certificates.is_empty() {
        return Err(OpError::Invalid(
            "the PKCS#7 bundle holds no certificate".into(),
        ));
    }
    Ok(certificates)
}

/// A certificate's details as the console's details view shows them (public data
/// only: nothing here reads or offers a private key).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct CertificateDetails {
    pub fingerprint_sha256: String,
    /// `managed`, `partner` or `trust-anchor`.
    pub kind: String,
    #[schema(value_type = String)]
    pub source: CertificateSource,
    pub address: Option<String>,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    /// `email:…`, `dns:…` entries of the subjectAltName.
    pub alt_names: Vec<String>,
    /// The public key's algorithm.
    pub public_key: String,
    /// keyUsage bits (e.g. `DigitalSignature`, `KeyEncipherment`).
    pub key_usage: Vec<String>,
    /// extendedKeyUsage purposes (e.g. `id-kp-emailProtection`).
    pub extended_key_usage: Vec<String>,
    /// The key is in the gateway's token (a managed mailbox's certificate).
    pub key_in_token: bool,
    /// Unix seconds when the gateway recorded it revoked, if it did.
    pub revoked_at: Option<i64>,
    /// For a trust anchor: the domains it vouches for (empty: any but the managed).
    pub vouches_for: Option<Vec<String>>,
}

/// The details of the certificate with this SHA-256 fingerprint (hex, colons and
/// case ignored): any certificate the gateway holds, ours, partners' or an anchor.
pub async fn details(ctx: &Ops<'_>, fingerprint: &str) -> Result<CertificateDetails, OpError> {
    use const_oid::db::DB;
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage, SubjectAltName};

    let wanted = fingerprint_hex(fingerprint)?;
    let cert = ctx
        .store
        .certificates()
        .by_fingerprint(&wanted)
        .await?
        .ok_or_else(|| OpError::NotFound(format!("no certificate with fingerprint {wanted}")))?;
    let parsed = Certificate::from_der(&cert.record.der).map_err(|e| {
        OpError::Store(crate::store::StoreError::Corrupt(format!(
            "stored certificate {wanted} does not parse: {e}"
        )))
    })?;
    let tbs = parsed.tbs_certificate();
    let corrupt = |e: der::Error| {
        OpError::Store(crate::store::StoreError::Corrupt(format!(
            "certificate {wanted}: {e}"
        )))
    };
    let alt_names = tbs
        .get_extension::<SubjectAltName>()
        .map_err(corrupt)?
        .map(|(_, san)| {
            san.0
                .iter()
                .map(|n| match n {
                    GeneralName::Rfc822Name(e) => format!("email:{e}"),
                    GeneralName::DnsName(d) => format!("dns:{d}"),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .unwrap_or_default();
    let key_usage = tbs
        .get_extension::<KeyUsage>()
        .map_err(corrupt)?
        .map(|(_, ku)| ku.0.into_iter().map(|u| format!("{u:?}")).collect())
        .unwrap_or_default();
    let extended_key_usage = tbs
        .get_extension::<ExtendedKeyUsage>()
        .map_err(corrupt)?
        .map(|(_, eku)| {
            eku.0
                .iter()
                .map(|o| DB.by_oid(o).map(str::to_string).unwrap_or(o.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let key_oid = &tbs.subject_public_key_info().algorithm.oid;
    let vouches_for = if cert.source == CertificateSource::TrustAnchor {
        ctx.store
            .trust_anchors()
            .list()
            .await?
            .into_iter()
            .find(|a| a.certificate.id == cert.id)
            .map(|a| a.domains)
    } else {
        None
    };
    Ok(CertificateDetails {
        kind: kind_of(&cert).to_string(),
        fingerprint_sha256: cert.record.fingerprint_sha256.clone(),
        source: cert.source,
        address: cert.owner_address.clone(),
        subject: cert.record.subject.clone(),
        issuer: cert.record.issuer.clone(),
        serial: cert.record.serial.clone(),
        not_before: cert.record.not_before,
        not_after: cert.record.not_after,
        alt_names,
        public_key: DB
            .by_oid(key_oid)
            .map(str::to_string)
            .unwrap_or(key_oid.to_string()),
        key_usage,
        extended_key_usage,
        key_in_token: cert.key_id.is_some(),
        revoked_at: cert.revoked_at,
        vouches_for,
    })
}

/// A SHA-256 fingerprint as the store keeps it (lower-case hex), or why it is not one.
fn fingerprint_hex(fingerprint: &str) -> Result<String, OpError> {
    let wanted: String = fingerprint
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if wanted.len() != 64 || !wanted.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(OpError::Invalid(format!(
            "'{}' is not a SHA-256 fingerprint (64 hex digits, as `cert list` shows)",
            fingerprint
                .chars()
                .take(80)
                .collect::<String>()
                .escape_default()
        )));
    }
    Ok(wanted)
}

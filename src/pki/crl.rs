//! Certificate revocation lists of the built-in CA, signed in the token.

use std::time::{Duration, SystemTime};

use der::Encode;
use x509_cert::builder::{Builder, CrlBuilder};
use x509_cert::crl::RevokedCert;
use x509_cert::ext::pkix::{CrlNumber, CrlReason};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;

use super::ca::{CaIdentity, IssueError, default_scheme};
use crate::hsm::{Hsm, TokenSignature, TokenSigner};

/// One revoked certificate: its serial (content octets), when it was revoked and,
/// when known, why (the CRL entry's reasonCode).
#[derive(Debug, Clone)]
pub struct Revocation {
    pub serial: Vec<u8>,
    pub revoked_at: SystemTime,
    pub reason: Option<CrlReason>,
}

/// The RFC 5280 reason code named by its ASN.1 identifier (`cessationOfOperation`).
pub fn reason_from_name(name: &str) -> Option<CrlReason> {
    Some(match name {
        "unspecified" => CrlReason::Unspecified,
        "keyCompromise" => CrlReason::KeyCompromise,
        "cACompromise" => CrlReason::CaCompromise,
        "affiliationChanged" => CrlReason::AffiliationChanged,
        "superseded" => CrlReason::Superseded,
        "cessationOfOperation" => CrlReason::CessationOfOperation,
        "certificateHold" => CrlReason::CertificateHold,
        "privilegeWithdrawn" => CrlReason::PrivilegeWithdrawn,
        _ => return None,
    })
}

/// A CRL (DER) listing `revoked`, valid from now until `valid_for` from now.
pub fn build_crl(
    hsm: &Hsm,
    ca: &CaIdentity,
    number: u64,
    revoked: &[Revocation],
    valid_for: Duration,
) -> Result<Vec<u8>, IssueError> {
    let now = SystemTime::now();
    build_crl_between(hsm, ca, number, revoked, now, now + valid_for)
}

/// A CRL (DER) listing `revoked` with thisUpdate `this_update` and nextUpdate
/// `next_update`, signed by `ca` in the token.
pub fn build_crl_between(
    hsm: &Hsm,
    ca: &CaIdentity,
    number: u64,
    revoked: &[Revocation],
    this_update: SystemTime,
    next_update: SystemTime,
) -> Result<Vec<u8>, IssueError> {
    let build = |e: &dyn std::fmt::Display| IssueError::Build(e.to_string());
    let time = |t: SystemTime| Time::try_from(t).map_err(|e| build(&e));
    let entries = revoked
        .iter()
        .map(|r| {
            Ok(RevokedCert {
                serial_number: SerialNumber::<x509_cert::certificate::Rfc5280>::new(&r.serial)
                    .map_err(|e| build(&e))?,
                revocation_date: time(r.revoked_at)?,
                crl_entry_extensions: r.reason.map(reason_extension).transpose()?,
            })
        })
        .collect::<Result<Vec<_>, IssueError>>()?;
    let number = der::asn1::Uint::new(&number.to_be_bytes()).map_err(|e| build(&e))?;
    let builder =
        CrlBuilder::new_with_this_update(&ca.certificate, CrlNumber(number), time(this_update)?)
            .map_err(|e| build(&e))?
            .with_next_update(Some(time(next_update)?))
            .with_certificates(entries.into_iter());
    let signer = TokenSigner::new(
        hsm.clone(),
        ca.key_id.clone(),
        default_scheme(ca.algorithm),
        ca.public_key(),
    );
    let crl = builder
        .build::<_, TokenSignature>(&signer)
        .map_err(|e| build(&e))?;
    crl.to_der().map_err(|e| build(&e))
}

/// The reasonCode CRL entry extension (RFC 5280 §5.3.1, never critical).
fn reason_extension(reason: CrlReason) -> Result<Vec<Extension>, IssueError> {
    let issuer = x509_cert::name::Name::default();
    reason
        .to_extension(&issuer, &[])
        .map(|e| vec![e])
        .map_err(|e| IssueError::Build(format!("CRL reason: {e}")))
}

//! Certificate revocation lists of the built-in CA, signed in the token.

use std::time::{Duration, SystemTime};

use der::Encode;
use x509_cert::builder::{Builder, CrlBuilder};
use x509_cert::crl::RevokedCert;
use x509_cert::ext::pkix::CrlNumber;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;

use super::ca::{CaIdentity, IssueError, default_scheme};
use crate::hsm::{Hsm, TokenSignature, TokenSigner};

/// One revoked certificate: its serial (content octets) and when it was revoked.
#[derive(Debug, Clone)]
pub struct Revocation {
    pub serial: Vec<u8>,
    pub revoked_at: SystemTime,
}

/// A CRL (DER) listing `revoked`, valid until `valid_for` from now.
pub fn build_crl(
    hsm: &Hsm,
    ca: &CaIdentity,
    number: u64,
    revoked: &[Revocation],
    valid_for: Duration,
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
                crl_entry_extensions: None,
            })
        })
        .collect::<Result<Vec<_>, IssueError>>()?;
    let number = der::asn1::Uint::new(&number.to_be_bytes()).map_err(|e| build(&e))?;
    let builder = CrlBuilder::new(&ca.certificate, CrlNumber(number))
        .map_err(|e| build(&e))?
        .with_next_update(Some(time(SystemTime::now() + valid_for)?))
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

//! Certificate revocation lists of the built-in CA, signed in the token.

use std::time::{Duration, SystemTime};

use der::Encode;
use der::asn1::{BitString, OctetString};
use spki::{DynSignatureAlgorithmIdentifier, EncodePublicKey};
use x509_cert::builder::Builder;
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, CrlNumber, CrlReason, SubjectKeyIdentifier};
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

/// A CRL (DER) of `ca` (any CA identity: the issuing CA for mailbox certificates, the
/// root for the issuing CA) listing `revoked`, valid from now until `valid_for` from now.
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
    let issuer = ca.certificate.tbs_certificate().subject().clone();
    let mut extensions = Vec::new();
    let crl_number = CrlNumber(number)
        .to_extension(&issuer, &extensions)
        .map_err(|e| build(&e))?;
    extensions.push(crl_number);
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(key_identifier(ca).map_err(|e| build(&e))?),
        ..Default::default()
    }
    .to_extension(&issuer, &extensions)
    .map_err(|e| build(&e))?;
    extensions.push(aki);
    let builder = CrlTbs(TbsCertList {
        version: x509_cert::Version::V2,
        // Replaced by the signer's algorithm in `finalize`.
        signature: spki::AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
            parameters: None,
        },
        issuer,
        this_update: time(this_update)?,
        next_update: Some(time(next_update)?),
        revoked_certificates: (!entries.is_empty()).then_some(entries),
        crl_extensions: Some(extensions),
    });
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

/// The key identifier CRLs of `ca` name (authority key identifier): its certificate's
/// subject key identifier, else the one derived from its key as our profiles derive it.
///
/// `x509_cert::builder::CrlBuilder` 0.3.0 copies the issuer certificate's own
/// *authority* key identifier instead, which names the issuer's issuer: right only for
/// a self-signed CA. For the issuing CA openssl then finds no CRL for its
/// certificates ("unable to get certificate CRL"), so the CRL is built here.
fn key_identifier(ca: &CaIdentity) -> der::Result<OctetString> {
    if let Some((_, ski)) = ca
        .certificate
        .tbs_certificate()
        .get_extension::<SubjectKeyIdentifier>()?
    {
        return Ok(ski.0);
    }
    Ok(
        SubjectKeyIdentifier::try_from(der::referenced::OwnedToRef::owned_to_ref(
            &ca.public_key(),
        ))?
        .0,
    )
}

/// A CRL's to-be-signed part, signed through [`Builder`].
struct CrlTbs(TbsCertList);

impl Builder for CrlTbs {
    type Output = CertificateList;

    fn finalize<S>(&mut self, signer: &S) -> x509_cert::builder::Result<Vec<u8>>
    where
        S: signature::Keypair + DynSignatureAlgorithmIdentifier,
        S::VerifyingKey: EncodePublicKey,
    {
        self.0.signature = signer.signature_algorithm_identifier()?;
        Ok(self.0.to_der()?)
    }

    fn assemble<S>(
        self,
        signature: BitString,
        _signer: &S,
    ) -> x509_cert::builder::Result<Self::Output>
    where
        S: signature::Keypair + DynSignatureAlgorithmIdentifier,
        S::VerifyingKey: EncodePublicKey,
    {
        let signature_algorithm = self.0.signature.clone();
        Ok(CertificateList {
            tbs_cert_list: self.0,
            signature_algorithm,
            signature,
        })
    }
}

/// The root CA's CRL (DER): it covers the one certificate the root signs, the issuing
/// CA's, and lists it when revoked (`revoked`, normally empty). Signed by the root key
/// in the token; published at [`super::urls::ROOT_CRL_PATH`], the CRL distribution
/// point of the issuing CA certificate.
pub fn build_root_crl(
    hsm: &Hsm,
    root: &CaIdentity,
    number: u64,
    revoked: &[Revocation],
    valid_for: Duration,
) -> Result<Vec<u8>, IssueError> {
    if !root.is_root() {
        return Err(IssueError::Build(
            "the root CRL must be signed by the (self-signed) root CA".into(),
        ));
    }
    build_crl(hsm, root, number, revoked, valid_for)
}

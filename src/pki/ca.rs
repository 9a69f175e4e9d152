//! The built-in CA: a self-signed root, the issuing CA it certifies, and the mailbox
//! certificates the issuing CA issues (S/MIME BR: the root signs only the issuing CA
//! and CRLs). Every signature is made in the token through [`TokenSigner`]; these
//! functions block and are meant to run inside [`Hsm::call`].

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use der::{Decode, Encode};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::Certificate;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

use super::address::Address;
use super::profile::{CaProfile, IssuingCaProfile, MAX_MAILBOX_VALIDITY_DAYS, MailboxProfile};
use super::urls::PkiUrls;
use crate::hsm::{
    GeneratedKey, Hsm, HsmError, KeyAlgorithm, KeyId, SignatureScheme, TokenSignature, TokenSigner,
};

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(transparent)]
    Token(#[from] HsmError),
    #[error("invalid CA subject '{subject}': {reason}")]
    Subject { subject: String, reason: String },
    #[error("certificate building failed: {0}")]
    Build(String),
}

/// Clock skew tolerated by relying parties: certificates start this long in the past.
const BACKDATE: Duration = Duration::from_secs(300);

/// The signature scheme a key of this kind signs certificates and mail with.
pub fn default_scheme(algorithm: KeyAlgorithm) -> SignatureScheme {
    if algorithm.is_rsa() {
        SignatureScheme::RsaPkcs1Sha256
    } else {
        SignatureScheme::EcdsaSha256
    }
}

/// The CA key in the token and its certificate.
#[derive(Clone)]
pub struct CaIdentity {
    pub key_id: KeyId,
    pub algorithm: KeyAlgorithm,
    pub certificate: Certificate,
}

impl CaIdentity {
    /// Whether the certificate is self-signed (a root; before the two-tier CA, the one
    /// CA was both root and issuer).
    pub fn is_root(&self) -> bool {
        let tbs = self.certificate.tbs_certificate();
        tbs.issuer() == tbs.subject()
    }

    pub fn public_key(&self) -> SubjectPublicKeyInfoOwned {
        self.certificate
            .tbs_certificate()
            .subject_public_key_info()
            .clone()
    }
}

fn ca_name(subject: &str) -> Result<Name, IssueError> {
    let name = Name::from_str(subject).map_err(|e| IssueError::Subject {
        subject: subject.to_string(),
        reason: e.to_string(),
    })?;
    if name.as_ref().is_empty() {
        return Err(IssueError::Subject {
            subject: subject.to_string(),
            reason: "empty".into(),
        });
    }
    Ok(name)
}

/// Self-signs a root CA certificate for `key` (already generated in the token).
pub fn create_ca_certificate(
    hsm: &Hsm,
    key: &GeneratedKey,
    subject: &str,
    validity_days: u32,
) -> Result<Certificate, IssueError> {
    let name = ca_name(subject)?;
    let builder = CertificateBuilder::new(
        CaProfile { subject: name },
        random_serial()?,
        validity(validity_days)?,
        key.public_key.clone(),
    )
    .map_err(|e| IssueError::Build(e.to_string()))?;
    let signer = TokenSigner::new(
        hsm.clone(),
        key.id.clone(),
        default_scheme(key.algorithm),
        key.public_key.clone(),
    );
    build(builder, &signer)
}

/// Certifies the issuing CA's `key` (in the token) with the root: path length 0,
/// emailProtection, the root's CRL and certificate URLs. It expires no later than
/// the root.
pub fn create_issuing_ca_certificate(
    hsm: &Hsm,
    root: &CaIdentity,
    key: &GeneratedKey,
    subject: &str,
    validity_days: u32,
    urls: &PkiUrls,
) -> Result<Certificate, IssueError> {
    let name = ca_name(subject)?;
    let root_subject = root.certificate.tbs_certificate().subject();
    if &name == root_subject {
        return Err(IssueError::Subject {
            subject: subject.to_string(),
            reason: "the issuing CA needs a name of its own, not the root's".into(),
        });
    }
    let mut validity = validity(validity_days)?;
    let root_end = root.certificate.tbs_certificate().validity().not_after;
    if root_end.to_unix_duration() < validity.not_after.to_unix_duration() {
        validity.not_after = root_end;
    }
    let profile = IssuingCaProfile {
        issuer: root_subject.clone(),
        subject: name,
        crl_url: urls.root_crl(),
        ca_issuers_url: urls.root_certificate(),
    };
    let builder =
        CertificateBuilder::new(profile, random_serial()?, validity, key.public_key.clone())
            .map_err(|e| IssueError::Build(e.to_string()))?;
    let signer = TokenSigner::new(
        hsm.clone(),
        root.key_id.clone(),
        default_scheme(root.algorithm),
        root.public_key(),
    );
    build(builder, &signer)
}

/// Issues a mailbox certificate for `subject_key` (a key in the token) signed by the CA,
/// naming `crl_url` as its CRL distribution point and no issuer URL (tests with
/// throwaway CAs); the gateway issues with [`issue_published_mailbox_certificate`].
pub fn issue_mailbox_certificate(
    hsm: &Hsm,
    ca: &CaIdentity,
    address: &Address,
    subject_key: &GeneratedKey,
    validity_days: u32,
    crl_url: &str,
) -> Result<Certificate, IssueError> {
    issue_mailbox(hsm, ca, address, subject_key, validity_days, crl_url, None)
}

/// Issues a mailbox certificate as the S/MIME BR strict profile wants it: validity at
/// most 825 days (backdating included), the issuing CA's CRL and certificate URLs
/// under `[ca].public_url`, no common name for addresses over 64 characters.
pub fn issue_published_mailbox_certificate(
    hsm: &Hsm,
    ca: &CaIdentity,
    address: &Address,
    subject_key: &GeneratedKey,
    validity_days: u32,
    urls: &PkiUrls,
) -> Result<Certificate, IssueError> {
    issue_mailbox(
        hsm,
        ca,
        address,
        subject_key,
        validity_days,
        &urls.issuing_crl(),
        Some(urls.issuing_certificate()),
    )
}

fn issue_mailbox(
    hsm: &Hsm,
    ca: &CaIdentity,
    address: &Address,
    subject_key: &GeneratedKey,
    validity_days: u32,
    crl_url: &str,
    ca_issuers_url: Option<String>,
) -> Result<Certificate, IssueError> {
    if validity_days > MAX_MAILBOX_VALIDITY_DAYS {
        return Err(IssueError::Build(format!(
            "a mailbox certificate may be valid {MAX_MAILBOX_VALIDITY_DAYS} days at most (S/MIME Baseline Requirements), not {validity_days}"
        )));
    }
    let profile = MailboxProfile {
        issuer: ca.certificate.tbs_certificate().subject().clone(),
        address: address.as_str().to_string(),
        algorithm: subject_key.algorithm,
        crl_url: crl_url.to_string(),
        ca_issuers_url,
    };
    super::profile::mailbox_subject(address.as_str())
        .map_err(|e| IssueError::Build(e.to_string()))?;
    let builder = CertificateBuilder::new(
        profile,
        random_serial()?,
        validity(validity_days)?,
        subject_key.public_key.clone(),
    )
    .map_err(|e| IssueError::Build(e.to_string()))?;
    let signer = TokenSigner::new(
        hsm.clone(),
        ca.key_id.clone(),
        default_scheme(ca.algorithm),
        ca.public_key(),
    );
    build(builder, &signer)
}

/// Issues the SMTP listeners' TLS server certificate for `hostnames` to a key in the
/// token (signed by the built-in CA in the token).
pub fn issue_tls_certificate(
    hsm: &Hsm,
    ca: &CaIdentity,
    hostnames: &[String],
    subject_key: &GeneratedKey,
    validity_days: u32,
) -> Result<Certificate, IssueError> {
    let profile = super::profile::TlsServerProfile {
        issuer: ca.certificate.tbs_certificate().subject().clone(),
        hostnames: hostnames.to_vec(),
    };
    let builder = CertificateBuilder::new(
        profile,
        random_serial()?,
        validity(validity_days)?,
        subject_key.public_key.clone(),
    )
    .map_err(|e| IssueError::Build(e.to_string()))?;
    let signer = TokenSigner::new(
        hsm.clone(),
        ca.key_id.clone(),
        default_scheme(ca.algorithm),
        ca.public_key(),
    );
    build(builder, &signer)
}

fn build<P: x509_cert::builder::profile::BuilderProfile>(
    builder: CertificateBuilder<P>,
    signer: &TokenSigner,
) -> Result<Certificate, IssueError> {
    let cert =
        builder
            .build::<_, TokenSignature>(signer)
            .map_err(|e| match find_hsm_error(&e) {
                Some(msg) => IssueError::Build(format!("token signature failed: {msg}")),
                None => IssueError::Build(e.to_string()),
            })?;
    // Round-trip through DER so what we store is exactly what parsers will see.
    let der = cert
        .to_der()
        .map_err(|e| IssueError::Build(e.to_string()))?;
    Certificate::from_der(&der).map_err(|e| IssueError::Build(e.to_string()))
}

fn find_hsm_error(err: &x509_cert::builder::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(h) = e.downcast_ref::<HsmError>() {
            return Some(h.to_string());
        }
        source = e.source();
    }
    None
}

/// A positive 127-bit serial from the OS CSPRNG (the BRs ask for ≥ 64 random bits).
fn random_serial() -> Result<SerialNumber, IssueError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| IssueError::Build(format!("random serial: {e}")))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x40; // keep it 16 bytes long and positive
    SerialNumber::new(&bytes).map_err(|e| IssueError::Build(e.to_string()))
}

/// `days` long from a start `BACKDATE` in the past: the backdating counts against the
/// validity (notAfter − notBefore is exactly `days`), as the BR maximum requires.
fn validity(days: u32) -> Result<Validity, IssueError> {
    let now = SystemTime::now();
    let start = now.checked_sub(BACKDATE).unwrap_or(now);
    let end = start + Duration::from_secs(u64::from(days) * 86_400);
    let time = |t: SystemTime| Time::try_from(t).map_err(|e| IssueError::Build(e.to_string()));
    Ok(Validity::new(time(start)?, time(end)?))
}

//! The built-in CA: its self-signed certificate and the mailbox certificates it
//! issues. Every signature is made in the token through [`TokenSigner`]; these
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
use super::profile::{CaProfile, MailboxProfile};
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
    pub fn public_key(&self) -> SubjectPublicKeyInfoOwned {
        self.certificate
            .tbs_certificate()
            .subject_public_key_info()
            .clone()
    }
}

/// Self-signs a CA certificate for `key` (already generated in the token).
pub fn create_ca_certificate(
    hsm: &Hsm,
    key: &GeneratedKey,
    subject: &str,
    validity_days: u32,
) -> Result<Certificate, IssueError> {
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

/// Issues a mailbox certificate for `subject_key` (a key in the token) signed by the CA.
pub fn issue_mailbox_certificate(
    hsm: &Hsm,
    ca: &CaIdentity,
    address: &Address,
    subject_key: &GeneratedKey,
    validity_days: u32,
    crl_url: &str,
) -> Result<Certificate, IssueError> {
    let profile = MailboxProfile {
        issuer: ca.certificate.tbs_certificate().subject().clone(),
        address: address.as_str().to_string(),
        algorithm: subject_key.algorithm,
        crl_url: crl_url.to_string(),
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

fn validity(days: u32) -> Result<Validity, IssueError> {
    let now = SystemTime::now();
    let start = now.checked_sub(BACKDATE).unwrap_or(now);
    let end = now + Duration::from_secs(u64::from(days) * 86_400);
    let time = |t: SystemTime| Time::try_from(t).map_err(|e| IssueError::Build(e.to_string()));
    Ok(Validity::new(time(start)?, time(end)?))
}

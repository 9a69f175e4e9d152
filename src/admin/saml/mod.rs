//! SAML 2.0 single sign-on to the console, as a service provider (samael with
//! xmlsec). Exposure: [`SamlSp::consume`] reads what any browser posts to the ACS, so
//! everything in a response is hostile until its signature proves otherwise.
//!
//! Flow (SP-initiated only; IdP-initiated login is off):
//! 1. [`SamlSp::login_redirect`] makes an AuthnRequest with a random ID, records the
//!    ID server-side (table `saml_requests`, `[saml].request_ttl_secs`), and sends the
//!    browser to the IdP (HTTP-Redirect binding) with the ID as RelayState: the IdP's
//!    cross-site POST back then needs no cookie.
//! 2. [`SamlSp::consume`] checks the response strictly and answers who logged in with
//!    which role. samael's defaults are not strict, so this module adds:
//!    - IdP metadata without a signing certificate is refused when loading
//!      ([`SamlSp::from_settings`]): samael would skip signature checking;
//!    - only RSA-SHA256/384/512 and ECDSA-SHA256/384 signatures (SHA-256 or better
//!      digests) are accepted;
//!    - samael's reduce mode stays `ValidateAndMarkNoAncestors` (only signed content
//!      is read) and a response with more than one assertion is refused outright
//!      (XML signature wrapping);
//!    - the envelope's Destination (when present), Status and InResponseTo are ours
//!      to check (samael skips the envelope when only the assertion is signed);
//!    - InResponseTo must name a request we made that is pending: it is taken (single
//!      use) from the table; an AudienceRestriction naming our entity ID is required
//!      (samael checks it only when present); a used assertion ID is remembered until
//!      it expires (table `saml_assertions`) and a replay refused;
//!    - the configured attribute must map to a role, else the user is refused.
//!
//!    Every refusal writes an audit row (`saml.login-refused`, our own reason text,
//!    never the response's XML) and a WARN log line; a login writes `saml.login`.

mod envelope;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use samael::metadata::{
    EntityDescriptor, HTTP_POST_BINDING, HTTP_REDIRECT_BINDING, IndexedEndpoint, SpSsoDescriptor,
};
use samael::schema::Assertion;
use samael::service_provider::{Error as SpError, ServiceProvider};
use samael::traits::ToXml;
use tracing::Instrument;

use crate::config::Settings;
use crate::ops::{self, OpError, Ops, Role};

/// Largest SAMLResponse form field accepted (base64 text).
const MAX_RESPONSE_FIELD: usize = 512 * 1024;
/// Longest NameID accepted.
const MAX_NAME_ID: usize = 256;
/// How long after its IssueInstant a response is still taken (plus the skew).
const MAX_ISSUE_DELAY_SECS: i64 = 90;

/// The service provider, built once from `[saml]` and the IdP's metadata.
pub struct SamlSp {
    sp: Arc<ServiceProvider>,
    idp_entity_id: String,
    sso_url: String,
    entity_id: String,
    acs_url: String,
    role_attribute: String,
    roles: BTreeMap<String, Role>,
    clock_skew_secs: i64,
    request_ttl_secs: i64,
}

/// Who logged in through the IdP.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SamlLogin {
    pub name_id: String,
    pub role: Role,
    /// The IdP's SessionNotOnOrAfter (unix seconds): the console session must end no
    /// later than this, when set.
    pub not_on_or_after: Option<i64>,
}

/// `[saml]` or the IdP's metadata cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SamlConfigError {
    #[error("cannot read the IdP metadata {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the IdP metadata {path} is not usable SAML metadata: {message}")]
    Metadata { path: PathBuf, message: String },
    #[error(
        "the IdP metadata {path} has no signing certificate: without one no response signature could be checked, so SSO is refused"
    )]
    NoSigningCertificate { path: PathBuf },
    #[error(
        "the IdP metadata {path} offers no single sign-on service with the HTTP-Redirect binding"
    )]
    NoRedirectSso { path: PathBuf },
}

/// Making our metadata or a login request failed.
#[derive(Debug, thiserror::Error)]
pub enum SamlError {
    #[error("cannot build the SAML message: {0}")]
    Build(String),
    #[error(transparent)]
    Op(#[from] OpError),
}

/// Why a SAML response was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SamlRefusal {
    /// The response is refused (the audit row is written): tell the user the reason.
    #[error("SAML login refused: {0}")]
    Refused(Reason),
    /// The database failed, so the response could not be checked (or the audit row
    /// not written): nobody is logged in; try again later.
    #[error("SAML login could not be completed: {0}")]
    Unavailable(OpError),
}

impl SamlRefusal {
    /// The ACS's answer: 403 for a refused response, 503 when the database failed.
    pub fn http_status(&self) -> axum::http::StatusCode {
        match self {
            SamlRefusal::Refused(_) => axum::http::StatusCode::FORBIDDEN,
            SamlRefusal::Unavailable(e) => match e.http_status() {
                axum::http::StatusCode::SERVICE_UNAVAILABLE => {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                }
                _ => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }
}

/// The reason a response is refused: our own words, never the response's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    #[error("the SAMLResponse field is missing, too large or not base64")]
    Encoding,
    #[error("the SAML response is not well-formed XML")]
    Malformed,
    #[error("the SAML response carries a DTD (refused: entity expansion)")]
    DocType,
    #[error(
        "the SAML response contains XML comments or processing instructions (refused: they can split signed text)"
    )]
    Comment,
    #[error("the message is not a SAML 2.0 Response")]
    NotAResponse,
    #[error("the IdP reports the login as failed (status is not Success)")]
    StatusNotSuccess,
    #[error(
        "the response carries an encrypted assertion; this service provider accepts signed, unencrypted assertions"
    )]
    Encrypted,
    #[error(
        "the response carries {0} assertions; exactly one is accepted (an extra unsigned assertion is XML signature wrapping)"
    )]
    AssertionCount(usize),
    #[error("the response is not signed; the IdP must sign the assertion (or the response)")]
    Unsigned,
    #[error(
        "the signature uses {0}; only RSA-SHA256/384/512 and ECDSA-SHA256/384 with SHA-256 or better digests are accepted"
    )]
    WeakAlgorithm(&'static str),
    #[error(
        "the signature does not verify with the IdP's signing certificate from its metadata (another key, or changed content)"
    )]
    BadSignature,
    #[error(
        "unsolicited (IdP-initiated) response: it answers no login request of ours; start the login at the console"
    )]
    Unsolicited,
    #[error("the response comes without RelayState, so it names no login request of ours")]
    NoRelayState,
    #[error("the response answers another login request than the one its RelayState names")]
    RequestMismatch,
    #[error(
        "the login request it answers is unknown, already used or expired; start the login again"
    )]
    UnknownRequest,
    #[error("the response is addressed to another service (Destination is not our ACS URL)")]
    WrongDestination,
    #[error("the assertion is addressed to another service (Recipient is not our ACS URL)")]
    WrongRecipient,
    #[error("the response or assertion was issued by another entity than the IdP of the metadata")]
    WrongIssuer,
    #[error("the assertion has no AudienceRestriction; one naming our entity ID is required")]
    NoAudience,
    #[error(
        "the assertion is meant for another service (its AudienceRestriction does not name our entity ID)"
    )]
    WrongAudience,
    #[error("the assertion has expired (NotOnOrAfter has passed, allowing for clock skew)")]
    Expired,
    #[error("the assertion is not valid yet (NotBefore is ahead, allowing for clock skew)")]
    NotYetValid,
    #[error("the response was issued too long ago (IssueInstant)")]
    IssuedTooLongAgo,
    #[error("the assertion has no bearer SubjectConfirmation with NotOnOrAfter")]
    NoBearer,
    #[error("the assertion names no usable subject (NameID missing, too long or not printable)")]
    NoNameId,
    #[error("the assertion was already used to log in (replay)")]
    Replayed,
    #[error("the user has no console role: no value of attribute '{0}' is mapped in [saml.roles]")]
    NoRole(String),
    #[error("the response does not pass SAML validation")]
    Invalid,
}

/// Why a check stopped: a refusal (with the NameID once the signature vouches for
/// it) or the database.
enum Failure {
    Refused {
        name_id: Option<String>,
        reason: Reason,
    },
    Store(OpError),
}

impl From<Reason> for Failure {
    fn from(reason: Reason) -> Self {
        Failure::Refused {
            name_id: None,
            reason,
        }
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        Failure::Store(e.into())
    }
}

impl SamlSp {
    /// None when `[saml]` is not configured (no `idp_metadata`). Refuses IdP metadata
    /// without a signing certificate or without an HTTP-Redirect SSO endpoint.
    pub fn from_settings(settings: &Settings) -> Result<Option<SamlSp>, SamlConfigError> {
        let config = &settings.config.saml;
        if !config.enabled() {
            return Ok(None);
        }
        let path = settings.path(&config.idp_metadata);
        let text = std::fs::read_to_string(&path).map_err(|source| SamlConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let metadata = |message: String| SamlConfigError::Metadata {
            path: path.clone(),
            message,
        };
        let idp: EntityDescriptor = text.parse().map_err(|e| {
            metadata(format!(
                "expected one EntityDescriptor with an IDPSSODescriptor ({e})"
            ))
        })?;
        let idp_entity_id = idp
            .entity_id
            .clone()
            .filter(|id| !id.trim().is_empty())
            .ok_or_else(|| metadata("the EntityDescriptor has no entityID".into()))?;
        if idp.idp_sso_descriptors.as_ref().is_none_or(Vec::is_empty) {
            return Err(metadata("it has no IDPSSODescriptor".into()));
        }
        let console_url = settings.config.console_url();
        let entity_id = config.entity_id(&console_url);
        let acs_url = config.acs(&console_url);
        let skew = i64::try_from(config.allowed_clock_skew_secs).unwrap_or(i64::MAX / 4);
        let sp = ServiceProvider {
            entity_id: Some(entity_id.clone()),
            acs_url: Some(acs_url.clone()),
            metadata_url: None,
            slo_url: None,
            idp_metadata: idp,
            allow_idp_initiated: false,
            max_clock_skew: chrono::Duration::seconds(skew),
            max_issue_delay: chrono::Duration::seconds(MAX_ISSUE_DELAY_SECS + skew),
            allowed_signature_algorithms: Some(
                envelope::ALLOWED_SIGNATURES
                    .iter()
                    .map(|(_, algorithm)| *algorithm)
                    .collect(),
            ),
            ..ServiceProvider::default()
        };
        let certificates = sp
            .idp_signing_certs()
            .map_err(|_| metadata("a signing certificate is not base64".into()))?
            .ok_or_else(|| SamlConfigError::NoSigningCertificate { path: path.clone() })?;
        for certificate in &certificates {
            use der::Decode;
            x509_cert::Certificate::from_der(certificate.der_data()).map_err(|e| {
                metadata(format!(
                    "a signing certificate is not an X.509 certificate: {e}"
                ))
            })?;
        }
        let sso_url = sp
            .sso_binding_location(HTTP_REDIRECT_BINDING)
            .ok_or_else(|| SamlConfigError::NoRedirectSso { path: path.clone() })?;
        tracing::info!(idp = %idp_entity_id, sp = %entity_id, acs = %acs_url, "SAML single sign-on configured");
        Ok(Some(SamlSp {
            sp: Arc::new(sp),
            idp_entity_id,
            sso_url,
            entity_id,
            acs_url,
            role_attribute: config.role_attribute.clone(),
            roles: config.roles.clone(),
            clock_skew_secs: skew,
            request_ttl_secs: i64::try_from(config.request_ttl_secs).unwrap_or(300),
        }))
    }

    /// Our entity ID (also the URL of our metadata by default).
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    /// Our assertion consumer service URL.
    pub fn acs_url(&self) -> &str {
        &self.acs_url
    }

    /// The IdP's entity ID, as its metadata says.
    pub fn idp_entity_id(&self) -> &str {
        &self.idp_entity_id
    }

    /// Our SP metadata: entity ID, the ACS with the HTTP-POST binding, unsigned
    /// AuthnRequests, signed assertions wanted. No single logout service.
    pub fn metadata_xml(&self) -> Result<String, SamlError> {
        let descriptor = EntityDescriptor {
            entity_id: Some(self.entity_id.clone()),
            sp_sso_descriptors: Some(vec![SpSsoDescriptor {
                protocol_support_enumeration: Some(
                    "urn:oasis:names:tc:SAML:2.0:protocol".to_string(),
                ),
                authn_requests_signed: Some(false),
                want_assertions_signed: Some(true),
                assertion_consumer_services: vec![IndexedEndpoint {
                    binding: HTTP_POST_BINDING.to_string(),
                    location: self.acs_url.clone(),
                    index: 0,
                    is_default: Some(true),
                    ..IndexedEndpoint::default()
                }],
                ..SpSsoDescriptor::default()
            }]),
            ..EntityDescriptor::default()
        };
        descriptor
            .to_string()
            .map_err(|e| SamlError::Build(format!("{e:?}")))
    }

    /// SP-initiated login: records a fresh request ID (single use, for
    /// `[saml].request_ttl_secs`) and answers the IdP URL to redirect the browser to
    /// (HTTP-Redirect binding; RelayState = the request ID).
    pub async fn login_redirect(&self, ops: &Ops<'_>) -> Result<String, SamlError> {
        let mut request = self
            .sp
            .make_authentication_request(&self.sso_url)
            .map_err(|e| SamlError::Build(e.to_string()))?;
        request.id = new_request_id()?;
        let now = crate::store::unix_now();
        ops.store
            .saml()
            .add_request(&request.id, now, now + self.request_ttl_secs)
            .await
            .map_err(OpError::from)?;
        let url = request
            .redirect(&request.id)
            .map_err(|e| SamlError::Build(e.to_string()))?
            .ok_or_else(|| SamlError::Build("the AuthnRequest has no destination".into()))?;
        tracing::debug!(request = %request.id, "SAML login request sent to the IdP");
        Ok(url.to_string())
    }

    /// The ACS: checks a SAMLResponse (the HTTP-POST form's base64 field) and its
    /// RelayState, and answers who logged in with which role. Every refusal writes one
    /// `saml.login-refused` audit row and a WARN line; a login writes `saml.login`.
    pub async fn consume(
        &self,
        ops: &Ops<'_>,
        client: IpAddr,
        saml_response: &str,
        relay_state: Option<&str>,
    ) -> Result<SamlLogin, SamlRefusal> {
        let span = tracing::info_span!("saml_acs", %client);
        async move {
            match self.check(ops, saml_response, relay_state).await {
                Ok(login) => {
                    ops::saml::login(ops, client, &self.idp_entity_id, &login.name_id, login.role)
                        .await
                        .map_err(SamlRefusal::Unavailable)?;
                    tracing::info!(name_id = %login.name_id, role = %login.role, "SAML login");
                    Ok(login)
                }
                Err(Failure::Refused { name_id, reason }) => {
                    tracing::warn!(name_id = name_id.as_deref().unwrap_or("unknown"), %reason, "SAML login refused");
                    ops::saml::login_refused(
                        ops,
                        client,
                        &self.idp_entity_id,
                        name_id.as_deref(),
                        &reason.to_string(),
                    )
                    .await
                    .map_err(SamlRefusal::Unavailable)?;
                    Err(SamlRefusal::Refused(reason))
                }
                Err(Failure::Store(e)) => {
                    tracing::error!(error = %e, "SAML response could not be checked");
                    Err(SamlRefusal::Unavailable(e))
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn check(
        &self,
        ops: &Ops<'_>,
        saml_response: &str,
        relay_state: Option<&str>,
    ) -> Result<SamlLogin, Failure> {
        let xml = decode(saml_response)?;
        let envelope = envelope::read(&xml)?;
        if !envelope.status_is_success() {
            return Err(Reason::StatusNotSuccess.into());
        }
        if envelope.encrypted_assertions > 0 {
            return Err(Reason::Encrypted.into());
        }
        if envelope.assertions != 1 {
            return Err(Reason::AssertionCount(envelope.assertions).into());
        }
        if envelope.signatures == 0 {
            return Err(Reason::Unsigned.into());
        }
        envelope::check_algorithms(&envelope)?;
        let request_id = envelope.in_response_to.ok_or(Reason::Unsolicited)?;
        if envelope
            .destination
            .is_some_and(|destination| destination != self.acs_url)
        {
            return Err(Reason::WrongDestination.into());
        }
        let relay_state = relay_state.ok_or(Reason::NoRelayState)?;
        if relay_state != request_id {
            return Err(Reason::RequestMismatch.into());
        }
        let now = crate::store::unix_now();
        if !ops.store.saml().take_request(&request_id, now).await? {
            return Err(Reason::UnknownRequest.into());
        }
        let assertion = self.verify(xml, request_id).await?;
        self.accept(ops, &assertion, now).await
    }

    /// samael's signature and SAML checks (CPU work: off the runtime).
    async fn verify(&self, xml: String, request_id: String) -> Result<Assertion, Reason> {
        let sp = Arc::clone(&self.sp);
        tokio::task::spawn_blocking(move || {
            sp.parse_xml_response(&xml, Some(&[request_id.as_str()]))
                .map_err(|e| reason_of(&e))
        })
        .await
        .map_err(|_| Reason::Invalid)?
    }

    /// Our checks on the verified assertion: audience, subject, replay, role.
    async fn accept(
        &self,
        ops: &Ops<'_>,
        assertion: &Assertion,
        now: i64,
    ) -> Result<SamlLogin, Failure> {
        let conditions = assertion.conditions.as_ref().ok_or(Reason::NoAudience)?;
        let restrictions = conditions
            .audience_restrictions
            .as_deref()
            .filter(|r| !r.is_empty())
            .ok_or(Reason::NoAudience)?;
        // Every restriction must be met (SAML core §2.5.1.4).
        if !restrictions
            .iter()
            .all(|r| r.audience.contains(&self.entity_id))
        {
            return Err(Reason::WrongAudience.into());
        }
        let name_id = assertion
            .subject
            .as_ref()
            .and_then(|s| s.name_id.as_ref())
            .map(|n| n.value.trim().to_string())
            .filter(|n| valid_name_id(n))
            .ok_or(Reason::NoNameId)?;
        let trusted = |reason: Reason| Failure::Refused {
            name_id: Some(name_id.clone()),
            reason,
        };
        let ends = expiry(assertion).ok_or_else(|| trusted(Reason::NoBearer))?;
        let remembered = ops
            .store
            .saml()
            .remember_assertion(&assertion.id, &name_id, now, ends + self.clock_skew_secs)
            .await?;
        if !remembered {
            return Err(trusted(Reason::Replayed));
        }
        let role = role_of(assertion, &self.role_attribute, &self.roles)
            .ok_or_else(|| trusted(Reason::NoRole(self.role_attribute.clone())))?;
        let not_on_or_after = assertion
            .authn_statements
            .iter()
            .flatten()
            .filter_map(|s| s.session_not_on_or_after)
            .map(|t| t.timestamp())
            .min();
        Ok(SamlLogin {
            name_id,
            role,
            not_on_or_after,
        })
    }
}

/// 128 random bits as an XML ID (which must not start with a digit).
fn new_request_id() -> Result<String, SamlError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| SamlError::Build(format!("the system's random source failed: {e}")))?;
    Ok(format!("id-{}", hex::encode(bytes)))
}

/// The SAMLResponse form field as XML text.
fn decode(field: &str) -> Result<String, Reason> {
    use base64::Engine as _;
    if field.is_empty() || field.len() > MAX_RESPONSE_FIELD {
        return Err(Reason::Encoding);
    }
    let compact: Vec<u8> = field.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| Reason::Encoding)?;
    String::from_utf8(bytes).map_err(|_| Reason::Malformed)
}

fn valid_name_id(name_id: &str) -> bool {
    !name_id.is_empty()
        && name_id.chars().count() <= MAX_NAME_ID
        && !name_id.chars().any(char::is_control)
}

/// When the assertion stops being usable (unix seconds): the latest of its
/// Conditions' and bearer confirmations' NotOnOrAfter; None without a bearer
/// confirmation that has one.
fn expiry(assertion: &Assertion) -> Option<i64> {
    let bearer = assertion
        .subject
        .as_ref()
        .and_then(|s| s.subject_confirmations.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.method.as_deref() == Some("urn:oasis:names:tc:SAML:2.0:cm:bearer"))
        .filter_map(|c| c.subject_confirmation_data.as_ref()?.not_on_or_after)
        .map(|t| t.timestamp())
        .max()?;
    let conditions = assertion
        .conditions
        .as_ref()
        .and_then(|c| c.not_on_or_after)
        .map(|t| t.timestamp());
    Some(conditions.map_or(bearer, |c| c.max(bearer)))
}

/// The highest role any value of `attribute` (its Name or FriendlyName) maps to.
fn role_of(assertion: &Assertion, attribute: &str, roles: &BTreeMap<String, Role>) -> Option<Role> {
    assertion
        .attribute_statements
        .iter()
        .flatten()
        .flat_map(|statement| &statement.attributes)
        .filter(|a| {
            a.name.as_deref() == Some(attribute) || a.friendly_name.as_deref() == Some(attribute)
        })
        .flat_map(|a| &a.values)
        .filter_map(|v| v.value.as_deref())
        .filter_map(|v| roles.get(v.trim()).copied())
        .max()
}

/// samael's verdict in our words (its texts can echo the response's values).
fn reason_of(e: &SpError) -> Reason {
    match e {
        SpError::FailedToValidateSignature => Reason::BadSignature,
        SpError::DestinationValidationError { .. } => Reason::WrongDestination,
        SpError::AssertionRecipientMismatch { .. } => Reason::WrongRecipient,
        SpError::AssertionExpired { .. } | SpError::ResponseExpired { .. } => {
            Reason::IssuedTooLongAgo
        }
        SpError::AssertionConditionExpired { .. }
        | SpError::AssertionSubjectConfirmationExpired { .. } => Reason::Expired,
        SpError::AssertionConditionExpiredBefore { .. }
        | SpError::AssertionSubjectConfirmationExpiredBefore { .. } => Reason::NotYetValid,
        SpError::AssertionConditionAudienceRestrictionFailed { .. } => Reason::WrongAudience,
        SpError::AssertionIssuerMismatch { .. } | SpError::ResponseIssuerMismatch { .. } => {
            Reason::WrongIssuer
        }
        SpError::AssertionInResponseToInvalid { .. }
        | SpError::ResponseInResponseToInvalid { .. } => Reason::RequestMismatch,
        SpError::ResponseBadStatusCode { .. } => Reason::StatusNotSuccess,
        SpError::AssertionBearerSubjectConfirmationMissing
        | SpError::AssertionSubjectConfirmationMissing => Reason::NoBearer,
        SpError::EncryptedAssertionsNotYetSupported
        | SpError::EncryptedAssertionInvalid
        | SpError::FailedToDecryptAssertion
        | SpError::MissingPrivateKeySP => Reason::Encrypted,
        SpError::FailedToParseSamlResponse(_)
        | SpError::FailedToParseSamlAssertion(_)
        | SpError::CryptoXmlError(_) => Reason::Malformed,
        _ => Reason::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assertion(xml: &str) -> Assertion {
        xml.parse().expect("assertion parses")
    }

    const ASSERTION: &str = r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="a1" IssueInstant="2026-01-01T00:00:00Z" Version="2.0">
<saml:Issuer>idp</saml:Issuer>
<saml:Subject><saml:NameID>alice</saml:NameID>
<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData NotOnOrAfter="2026-01-01T00:05:00Z" Recipient="acs" InResponseTo="id-1"/></saml:SubjectConfirmation></saml:Subject>
<saml:Conditions NotBefore="2026-01-01T00:00:00Z" NotOnOrAfter="2026-01-01T00:10:00Z"><saml:AudienceRestriction><saml:Audience>sp</saml:Audience></saml:AudienceRestriction></saml:Conditions>
<saml:AuthnStatement AuthnInstant="2026-01-01T00:00:00Z" SessionNotOnOrAfter="2026-01-01T08:00:00Z"/>
<saml:AttributeStatement><saml:Attribute Name="urn:x:groups" FriendlyName="groups"><saml:AttributeValue>staff</saml:AttributeValue><saml:AttributeValue>smimegate-editors</saml:AttributeValue></saml:Attribute></saml:AttributeStatement>
</saml:Assertion>"#;

    #[test]
    fn the_highest_mapped_group_gives_the_role() {
        let a = assertion(ASSERTION);
        let mut roles = BTreeMap::from([
            ("staff".to_string(), Role::Viewer),
            ("smimegate-editors".to_string(), Role::Editor),
        ]);
        assert_eq!(role_of(&a, "groups", &roles), Some(Role::Editor));
        assert_eq!(role_of(&a, "urn:x:groups", &roles), Some(Role::Editor));
        assert_eq!(role_of(&a, "memberOf", &roles), None);
        roles.clear();
        assert_eq!(role_of(&a, "groups", &roles), None);
    }

    #[test]
    fn an_assertion_is_remembered_until_its_latest_not_on_or_after() {
        let a = assertion(ASSERTION);
        // 2026-01-01T00:10:00Z, the Conditions' end (later than the bearer's).
        assert_eq!(expiry(&a), Some(1_767_226_200));
        let no_bearer = assertion(&ASSERTION.replace("cm:bearer", "cm:holder-of-key"));
        assert_eq!(expiry(&no_bearer), None);
    }

    #[test]
    fn request_ids_are_random_xml_ids() {
        let (a, b) = (
            new_request_id().expect("random"),
            new_request_id().expect("random"),
        );
        assert_ne!(a, b);
        assert!(a.starts_with("id-") && a.len() == 35, "{a}");
    }

    #[test]
    fn a_name_id_with_control_characters_is_not_used() {
        assert!(valid_name_id("alice@example.org"));
        assert!(!valid_name_id("alice\nadmin"));
        assert!(!valid_name_id(""));
        assert!(!valid_name_id(&"x".repeat(MAX_NAME_ID + 1)));
    }

    #[test]
    fn a_field_that_is_not_base64_is_refused() {
        assert_eq!(decode("%%%"), Err(Reason::Encoding));
        assert_eq!(decode(""), Err(Reason::Encoding));
        assert_eq!(decode("PHg+\r\nPC94Pg=="), Ok("<x></x>".to_string()));
    }
}

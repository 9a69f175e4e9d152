//! Identities a mailbox brings from elsewhere: a PKCS#12 file (`mailbox import
//! --pkcs12`), or a certificate from an external CA for a key we made in the token
//! and a request we signed there (`mailbox csr`, then `mailbox import --certificate`).
//!
//! The certificate must be valid now, carry the extended key usage emailProtection
//! (RFC 8550 §4.4 and the S/MIME Baseline Requirements want it; a certificate
//! without any extended key usage is refused too), name the address as a
//! subjectAltName rfc822Name, and match the private key. The key is checked and the
//! certificate read before the token is touched; the key then goes into the token
//! through the PKCS#8 import (sensitive, never extractable), and the key, the
//! certificate, its chain and the mailbox's new state are written in one
//! transaction. When that fails the key just imported is destroyed again: a refused
//! import leaves no key and no row behind.
//!
//! The identity then signs and decrypts as an issued one does: the signing
//! certificate is the newest valid one with a key, issued or uploaded
//! ([`crate::app::App::signer_for`]); the key directory holds every certificate with
//! a key.

use std::time::SystemTime;

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5912::{ID_EC_PUBLIC_KEY, RSA_ENCRYPTION, SECP_256_R_1};
use der::{Decode, EncodePem};
use secrecy::SecretString;
use x509_cert::certificate::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
};
use zeroize::Zeroizing;

use super::{Actor, OpError, audit, input};
use crate::app::App;
use crate::hsm::{HsmError, KeyAlgorithm, KeyId, KeyRole, TokenSignature, TokenSigner};
use crate::pki::address::Address;
use crate::pki::pkcs12;
use crate::store::{
    CertificateSource, IdentityKey, KeyPurpose, MailboxRow, MailboxState, NewIdentity,
    StoredCertificate,
};

/// id-kp-emailProtection.
const EMAIL_PROTECTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4");

/// `mailbox import ADDRESS --pkcs12 FILE`: the file's bytes and its password.
pub struct ImportPkcs12 {
    pub address: String,
    pub file: Vec<u8>,
    pub password: SecretString,
}

/// `mailbox import ADDRESS --certificate FILE`: PEM (the certificate, then any chain
/// certificates) or DER.
pub struct ImportCertificate {
    pub address: String,
    pub file: Vec<u8>,
}

/// An identity just imported.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Imported {
    pub address: String,
    #[schema(value_type = Object)]
    pub certificate: StoredCertificate,
    #[schema(value_type = String)]
    pub key: KeyAlgorithm,
    /// The key's CKA_ID (hex).
    pub key_id: String,
    /// Chain certificates that came with it.
    pub chain: usize,
    #[schema(value_type = String)]
    pub state: MailboxState,
    /// The label of the token holding the key.
    pub token: String,
}

/// `mailbox csr ADDRESS`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct RequestCertificate {
    pub address: String,
    /// The key type; none: `[ca].mailbox_key`.
    #[serde(default)]
    pub key: Option<KeyAlgorithm>,
}

/// A certificate request signed in the token.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertificateRequest {
    pub address: String,
    pub key: KeyAlgorithm,
    pub key_id: String,
    pub state: MailboxState,
    /// PKCS#10, PEM.
    pub pem: String,
}

/// A mailbox on its way to an identity from elsewhere: where it was, and where it is
/// while the identity is made (pending, holding a seat; or active, keeping its own).
#[derive(Debug, Clone, Copy)]
struct Claim {
    was: MailboxState,
    now: MailboxState,
}

/// Refuses, before anything is read or changed, a mailbox that cannot get an identity:
/// like activation, one of a domain without an inbound route.
async fn check_mailbox(app: &App, mailbox: &MailboxRow) -> Result<(), OpError> {
    super::mailboxes::require_inbound_route(app, mailbox).await
}

/// The one place the imports and the request change the mailbox's state before the
/// token is touched: an inactive mailbox takes a licence seat and becomes pending
/// ([`OpError::NoSeat`] when none is free), a revoke-pending one becomes pending on
/// its own seat, a pending or active one stays as it is. [`undo`] returns it when
/// what follows fails; the final state is written with the identity.
async fn claim(app: &App, address: &Address, state: MailboxState) -> Result<Claim, OpError> {
    let mailboxes = app.store.mailboxes();
    match state {
        MailboxState::Inactive => {
            let limit = super::licence::seat_limit(&app.ops()).await?;
            if !mailboxes.take_seat(address, limit).await? {
                return Err(OpError::NoSeat(super::licence::no_seat_message(
                    limit.unwrap_or(0),
                )));
            }
        }
        MailboxState::RevokePending => {
            mailboxes
                .transition(address, MailboxState::RevokePending, MailboxState::Pending)
                .await?;
        }
        MailboxState::Pending | MailboxState::Active => {}
    }
    let now = match state {
        MailboxState::Active => MailboxState::Active,
        _ => MailboxState::Pending,
    };
    Ok(Claim { was: state, now })
}

/// Returns a mailbox to the state it had before [`claim`] (its seat is free again).
async fn undo(app: &App, address: &Address, claim: Claim) {
    if claim.now == claim.was {
        return;
    }
    if let Err(error) = app
        .store
        .mailboxes()
        .transition(address, claim.now, claim.was)
        .await
    {
        tracing::error!(%address, %error, "could not return the mailbox to its state");
    }
}

/// Imports the identity in a PKCS#12 file: its key into the token, its certificate
/// and chain into the database; the mailbox becomes active. Nothing is left behind
/// when anything is refused.
pub async fn import_pkcs12(
    app: &App,
    actor: &Actor,
    request: ImportPkcs12,
) -> Result<Imported, OpError> {
    let address = input::address(&request.address)?;
    let mailbox = app.store.mailboxes().require(&address).await?;
    check_mailbox(app, &mailbox).await?;
    let contents = pkcs12::parse(&request.file, &request.password)
        .map_err(|e| OpError::Invalid(e.to_string()))?;
    drop(request.file);
    let pkcs12::Pkcs12Contents { key, certificates } = contents;
    let leaf_index = certificates
        .iter()
        .position(|c| key_matches(&key, c).unwrap_or(false))
        .ok_or_else(|| {
            OpError::Invalid(if certificates.is_empty() {
                "the PKCS#12 file holds no certificate".into()
            } else {
                "no certificate in the PKCS#12 file matches its private key".into()
            })
        })?;
    let mut certificates = certificates;
    let leaf = certificates.remove(leaf_index);
    let chain: Vec<Certificate> = certificates.into_iter().filter(is_ca).collect();
    let algorithm = check_identity_certificate(&leaf, &address)?;
    let key_id = KeyId::for_public_key(leaf.tbs_certificate().subject_public_key_info())?;
    refuse_known(app, &leaf, &key_id).await?;

    let claim = claim(app, &address, mailbox.state).await?;
    let (from, to) = (claim.now, MailboxState::Active);
    let label = address.to_string();
    let imported = app
        .hsm
        .call("import key", move |hsm| {
            hsm.import_pkcs8(key, KeyRole::Mailbox, &label)
        })
        .await
        .map_err(|e| match e {
            HsmError::InvalidKey(why) => OpError::Invalid(format!("the private key: {why}")),
            other => OpError::Token(other),
        });
    let imported = match imported {
        Ok(imported) => imported,
        Err(e) => {
            undo(app, &address, claim).await;
            return Err(e);
        }
    };
    if imported.id != key_id {
        discard(app, &imported.id).await;
        undo(app, &address, claim).await;
        return Err(OpError::Invalid(
            "the private key does not match the certificate".into(),
        ));
    }
    let recorded = app
        .store
        .certificates()
        .record_identity(NewIdentity {
            mailbox_id: mailbox.id,
            address: address.as_str(),
            key: IdentityKey::New {
                id: &key_id,
                algorithm,
                purpose: KeyPurpose::Imported,
            },
            certificate: &leaf,
            source: CertificateSource::Uploaded,
            chain: &chain,
            from,
            to,
        })
        .await;
    let certificate = match recorded {
        Ok(certificate) => certificate,
        Err(e) => {
            discard(app, &key_id).await;
            undo(app, &address, claim).await;
            return Err(e.into());
        }
    };
    let detail = format!(
        "pkcs12; {algorithm}; certificate {} serial {} from {}; {} chain certificate(s); {} -> {}",
        certificate.record.fingerprint_sha256,
        certificate.record.serial,
        certificate.record.issuer,
        chain.len(),
        claim.was.as_str(),
        to.as_str()
    );
    audit(
        &app.store,
        actor,
        "mailbox.import",
        address.as_str(),
        &detail,
    )
    .await?;
    Ok(Imported {
        address: address.to_string(),
        certificate,
        key: algorithm,
        key_id: key_id.to_hex(),
        chain: chain.len(),
        state: to,
        token: app.hsm.token_label().to_string(),
    })
}

/// Makes a new key in the token for `address` and a PKCS#10 request for it, signed in
/// the token, for an external CA. The mailbox becomes pending (or stays as it is when
/// pending or active) until the certificate is imported.
pub async fn request_certificate(
    app: &App,
    actor: &Actor,
    request: RequestCertificate,
) -> Result<CertificateRequest, OpError> {
    let address = input::address(&request.address)?;
    let mailbox = app.store.mailboxes().require(&address).await?;
    check_mailbox(app, &mailbox).await?;
    let algorithm = request.key.unwrap_or(app.settings.config.ca.mailbox_key);
    let claim = claim(app, &address, mailbox.state).await?;
    // Pending until the certificate comes; an active mailbox keeps signing meanwhile.
    let (from, to) = (claim.now, claim.now);
    let label = address.to_string();
    let key = match app
        .hsm
        .call_keygen(move |hsm| hsm.generate_key_pair(algorithm, KeyRole::Mailbox, &label))
        .await
    {
        Ok(key) => key,
        Err(e) => {
            undo(app, &address, claim).await;
            return Err(e.into());
        }
    };
    let (key_for_task, address_for_task) = (key.clone(), address.clone());
    let built = app
        .hsm
        .call("sign certificate request", move |hsm| {
            build_request(hsm, &key_for_task, &address_for_task)
        })
        .await;
    let pem = match built {
        Ok(pem) => pem,
        Err(e) => {
            discard(app, &key.id).await;
            undo(app, &address, claim).await;
            return Err(e.into());
        }
    };
    if let Err(e) = app
        .store
        .certificates()
        .record_request_key(mailbox.id, &key.id, algorithm, from, to)
        .await
    {
        discard(app, &key.id).await;
        undo(app, &address, claim).await;
        return Err(e.into());
    }
    let detail = format!(
        "{algorithm}; key {}; {} -> {}",
        key.id,
        claim.was.as_str(),
        to.as_str()
    );
    audit(&app.store, actor, "mailbox.csr", address.as_str(), &detail).await?;
    Ok(CertificateRequest {
        address: address.to_string(),
        key: algorithm,
        key_id: key.id.to_hex(),
        state: to,
        pem,
    })
}

/// The PKCS#10 request for `key`: subject CN and emailAddress = the address, a
/// subjectAltName rfc822Name, and the extended key usage emailProtection requested;
/// signed by the key itself in the token.
fn build_request(
    hsm: &crate::hsm::Hsm,
    key: &crate::hsm::GeneratedKey,
    address: &Address,
) -> Result<String, HsmError> {
    use x509_cert::builder::{Builder, RequestBuilder};
    let encoding =
        |e: &dyn std::fmt::Display| HsmError::Encoding(format!("certificate request: {e}"));
    let subject =
        crate::pki::profile::mailbox_subject(address.as_str()).map_err(|e| encoding(&e))?;
    let mut builder = RequestBuilder::new(subject).map_err(|e| encoding(&e))?;
    let email = der::asn1::Ia5String::new(address.as_str()).map_err(|e| encoding(&e))?;
    builder
        .add_extension(&SubjectAltName(vec![GeneralName::Rfc822Name(email)]))
        .map_err(|e| encoding(&e))?;
    builder
        .add_extension(&ExtendedKeyUsage(vec![EMAIL_PROTECTION]))
        .map_err(|e| encoding(&e))?;
    let signer = TokenSigner::new(
        hsm.clone(),
        key.id.clone(),
        crate::pki::ca::default_scheme(key.algorithm),
        key.public_key.clone(),
    );
    let request = builder
        .build::<_, TokenSignature>(&signer)
        .map_err(|e| encoding(&e))?;
    request
        .to_pem(der::pem::LineEnding::LF)
        .map_err(|e| encoding(&e))
}

/// Imports the certificate an external CA issued for a request made by
/// [`request_certificate`]: it must match a key made for this mailbox that has no
/// certificate yet. Extra PEM blocks are its chain. The mailbox becomes active.
pub async fn import_certificate(
    app: &App,
    actor: &Actor,
    request: ImportCertificate,
) -> Result<Imported, OpError> {
    let address = input::address(&request.address)?;
    let mailbox = app.store.mailboxes().require(&address).await?;
    check_mailbox(app, &mailbox).await?;
    let mut certificates = super::certs::read_bundle(&request.file)?;
    let keys = app.store.keys().for_mailbox(mailbox.id).await?;
    let with_certificates: Vec<i64> = app
        .store
        .certificates()
        .for_owner(address.as_str())
        .await?
        .into_iter()
        .filter_map(|c| c.key_id)
        .collect();
    let waiting: Vec<_> = keys
        .into_iter()
        .filter(|k| k.retired_at.is_none() && !with_certificates.contains(&k.id))
        .collect();
    if waiting.is_empty() {
        return Err(OpError::Invalid(format!(
            "no certificate request is waiting for {address}: run `smimegate mailbox csr {address}` first"
        )));
    }
    let mut found = None;
    for (index, cert) in certificates.iter().enumerate() {
        let id = KeyId::for_public_key(cert.tbs_certificate().subject_public_key_info())?;
        if let Some(key) = waiting.iter().find(|k| k.cka_id == id.to_hex()) {
            found = Some((index, key.clone(), id));
            break;
        }
    }
    let Some((index, key, key_id)) = found else {
        return Err(OpError::Invalid(format!(
            "the certificate does not match a key requested for {address} (`mailbox csr`)"
        )));
    };
    let leaf = certificates.remove(index);
    let chain: Vec<Certificate> = certificates.into_iter().filter(is_ca).collect();
    let algorithm = check_identity_certificate(&leaf, &address)?;
    if algorithm != key.algorithm {
        return Err(OpError::Invalid(format!(
            "the certificate's key is {algorithm}, the requested key {}",
            key.algorithm
        )));
    }
    let fingerprint = crate::store::CertificateRecord::from_certificate(&leaf)?.fingerprint_sha256;
    if app
        .store
        .certificates()
        .by_fingerprint(&fingerprint)
        .await?
        .is_some()
    {
        return Err(OpError::Conflict(format!("certificate {fingerprint}")));
    }
    let claim = claim(app, &address, mailbox.state).await?;
    let (from, to) = (claim.now, MailboxState::Active);
    let recorded = app
        .store
        .certificates()
        .record_identity(NewIdentity {
            mailbox_id: mailbox.id,
            address: address.as_str(),
            key: IdentityKey::Recorded(key.id),
            certificate: &leaf,
            source: CertificateSource::Uploaded,
            chain: &chain,
            from,
            to,
        })
        .await;
    let certificate = match recorded {
        Ok(certificate) => certificate,
        Err(e) => {
            undo(app, &address, claim).await;
            return Err(e.into());
        }
    };
    let detail = format!(
        "certificate for key {key_id}; {} serial {} from {}; {} chain certificate(s); {} -> {}",
        certificate.record.fingerprint_sha256,
        certificate.record.serial,
        certificate.record.issuer,
        chain.len(),
        claim.was.as_str(),
        to.as_str()
    );
    audit(
        &app.store,
        actor,
        "mailbox.import",
        address.as_str(),
        &detail,
    )
    .await?;
    Ok(Imported {
        address: address.to_string(),
        certificate,
        key: algorithm,
        key_id: key_id.to_hex(),
        chain: chain.len(),
        state: to,
        token: app.hsm.token_label().to_string(),
    })
}

/// Destroys a key just made or imported that will not be recorded.
async fn discard(app: &App, id: &KeyId) {
    let id = id.clone();
    let outcome = app
        .hsm
        .call("discard key", move |hsm| {
            hsm.discard_unrecorded_key(&id);
            Ok(())
        })
        .await;
    if let Err(error) = outcome {
        tracing::error!(%error, "could not remove an unrecorded key from the token");
    }
}

/// Refuses a certificate or key the gateway holds already.
async fn refuse_known(app: &App, leaf: &Certificate, key_id: &KeyId) -> Result<(), OpError> {
    let record = crate::store::CertificateRecord::from_certificate(leaf)?;
    if app
        .store
        .certificates()
        .by_fingerprint(&record.fingerprint_sha256)
        .await?
        .is_some()
    {
        return Err(OpError::Conflict(format!(
            "certificate {}",
            record.fingerprint_sha256
        )));
    }
    let id = key_id.clone();
    if app
        .hsm
        .call("find key", move |hsm| hsm.find_key(&id))
        .await?
        .is_some()
    {
        return Err(OpError::Conflict(format!("key {key_id} in the token")));
    }
    Ok(())
}

/// A CA certificate (basicConstraints cA), which may belong in a chain.
fn is_ca(cert: &Certificate) -> bool {
    cert.tbs_certificate()
        .get_extension::<BasicConstraints>()
        .ok()
        .flatten()
        .is_some_and(|(_, bc)| bc.ca)
}

/// What a certificate for a managed identity must be: valid now, for emailProtection,
/// naming `address` as subjectAltName rfc822Name, for signing when it limits its key
/// usage, and with a key the token takes (RSA-2048/3072, P-256). Returns the key type.
pub(crate) fn check_identity_certificate(
    cert: &Certificate,
    address: &Address,
) -> Result<KeyAlgorithm, OpError> {
    let tbs = cert.tbs_certificate();
    let now = SystemTime::now();
    let validity = tbs.validity();
    if validity.not_before.to_system_time() > now {
        return Err(OpError::Invalid(format!(
            "the certificate is not valid before {}",
            validity.not_before
        )));
    }
    if validity.not_after.to_system_time() <= now {
        return Err(OpError::Invalid(format!(
            "the certificate expired on {}",
            validity.not_after
        )));
    }
    let eku = tbs
        .get_extension::<ExtendedKeyUsage>()
        .map_err(|e| OpError::Invalid(format!("the certificate's extended key usage: {e}")))?;
    if !eku.is_some_and(|(_, eku)| eku.0.contains(&EMAIL_PROTECTION)) {
        return Err(OpError::Invalid(
            "the certificate is not for email protection (no extended key usage emailProtection)"
                .into(),
        ));
    }
    let names: Vec<String> = tbs
        .get_extension::<SubjectAltName>()
        .map_err(|e| OpError::Invalid(format!("the certificate's subjectAltName: {e}")))?
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
    if !names
        .iter()
        .any(|n| n.trim().eq_ignore_ascii_case(address.as_str()))
    {
        return Err(OpError::Invalid(format!(
            "the certificate is not for {address} (its addresses: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )));
    }
    if let Some((_, ku)) = tbs
        .get_extension::<KeyUsage>()
        .map_err(|e| OpError::Invalid(format!("the certificate's key usage: {e}")))?
        && !(ku.0.contains(KeyUsages::DigitalSignature) || ku.0.contains(KeyUsages::NonRepudiation))
    {
        return Err(OpError::Invalid(
            "the certificate's key usage does not allow signatures".into(),
        ));
    }
    key_algorithm(cert)
}

/// The token's name for the certificate's key type, or why it is not supported.
fn key_algorithm(cert: &Certificate) -> Result<KeyAlgorithm, OpError> {
    let spki = cert.tbs_certificate().subject_public_key_info();
    if spki.algorithm.oid == RSA_ENCRYPTION {
        let key = rsa::pkcs1::RsaPublicKeyRef::from_der(spki.subject_public_key.raw_bytes())
            .map_err(|e| OpError::Invalid(format!("the certificate's RSA key: {e}")))?;
        let n = key.modulus.as_bytes();
        let bits = n.len() * 8 - n.first().map_or(0, |b| b.leading_zeros() as usize);
        return match bits {
            2048 => Ok(KeyAlgorithm::Rsa2048),
            3072 => Ok(KeyAlgorithm::Rsa3072),
            other => Err(OpError::Invalid(format!(
                "RSA-{other} keys are not supported (RSA-2048, RSA-3072, P-256 are)"
            ))),
        };
    }
    if spki.algorithm.oid == ID_EC_PUBLIC_KEY {
        let curve: Option<ObjectIdentifier> = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as().ok());
        if curve == Some(SECP_256_R_1) {
            return Ok(KeyAlgorithm::P256);
        }
        return Err(OpError::Invalid("only P-256 EC keys are supported".into()));
    }
    Err(OpError::Invalid(format!(
        "keys of type {} are not supported",
        spki.algorithm.oid
    )))
}

/// Whether the PKCS#8 private key `pkcs8` is the one behind `cert`'s public key;
/// computed on the host before the token is touched.
fn key_matches(pkcs8: &Zeroizing<Vec<u8>>, cert: &Certificate) -> Result<bool, OpError> {
    let info = pkcs8::PrivateKeyInfoRef::from_der(pkcs8)
        .map_err(|e| OpError::Invalid(format!("the private key is not PKCS#8: {e}")))?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    if info.algorithm.oid != spki.algorithm.oid {
        return Ok(false);
    }
    let bits = spki.subject_public_key.raw_bytes();
    if info.algorithm.oid == RSA_ENCRYPTION {
        let private = rsa::pkcs1::RsaPrivateKeyRef::from_der(info.private_key.as_bytes())
            .map_err(|e| OpError::Invalid(format!("the RSA private key: {e}")))?;
        let public = rsa::pkcs1::RsaPublicKeyRef::from_der(bits)
            .map_err(|e| OpError::Invalid(format!("the certificate's RSA key: {e}")))?;
        return Ok(private.modulus.as_bytes() == public.modulus.as_bytes()
            && private.public_exponent.as_bytes() == public.public_exponent.as_bytes());
    }
    if info.algorithm.oid == ID_EC_PUBLIC_KEY {
        use p256::pkcs8::DecodePrivateKey;
        let Ok(secret) = p256::SecretKey::from_pkcs8_der(pkcs8) else {
            return Ok(false);
        };
        let Ok(public) = p256::PublicKey::from_sec1_bytes(bits) else {
            return Ok(false);
        };
        return Ok(secret.public_key() == public);
    }
    Ok(false)
}

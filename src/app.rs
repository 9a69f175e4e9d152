//! The running gateway's handles (configuration, database, token) and what the relay
//! and the operations read through more than one of them: the CA, a mailbox's signing
//! identity, the key directory, the trust anchors. Operator actions live in `ops`.

use std::time::Duration;

use der::Decode;
use secrecy::SecretString;
use x509_cert::certificate::Certificate;

use crate::config::Settings;
use crate::hsm::{Hsm, HsmConfig, HsmError};
use crate::pki::address::Address;
use crate::pki::ca::{self, CaIdentity, IssueError};
use crate::pki::trust::{DomainPattern, Scope, TrustAnchor, TrustAnchors};
use crate::store::{CertificateSource, KeyPurpose, MailboxState, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] HsmError),
    #[error(transparent)]
    Issue(#[from] IssueError),
    #[error("the built-in CA is missing: run `smimegate init`")]
    NoCa,
    #[error("{0}")]
    Refused(String),
}

/// Reads the user PIN: the environment variable named in the configuration wins, else
/// the PIN file, which must not be open to group or others. Never from the
/// configuration file itself; never held in a plain `String`.
pub fn read_pin(settings: &Settings) -> Result<SecretString, HsmError> {
    let hsm = &settings.config.hsm;
    if let Some(pin) = crate::hsm::pin::read_pin_env(&hsm.pin_env) {
        return Ok(pin);
    }
    let path = settings.path(&hsm.pin_file);
    crate::hsm::pin::read_pin_file(&path).map_err(|e| match e {
        HsmError::PinSource(reason) if !hsm.pin_env.is_empty() => {
            HsmError::PinSource(format!("{} is unset and {reason}", hsm.pin_env))
        }
        other => other,
    })
}

pub fn hsm_config(settings: &Settings) -> Result<HsmConfig, HsmError> {
    let hsm = &settings.config.hsm;
    Ok(HsmConfig {
        module: hsm.module.clone(),
        token_label: hsm.token_label.clone(),
        pin: read_pin(settings)?,
        max_sessions: hsm.max_sessions,
        operation_timeout: settings.operation_timeout(),
        acquire_timeout: settings.acquire_timeout(),
    })
}

pub async fn open_store(settings: &Settings) -> Result<Store, StoreError> {
    Store::connect_with(&settings.database_url(), &connect_options(settings)).await
}

/// How the configuration says to connect to the database.
pub fn connect_options(settings: &Settings) -> crate::store::ConnectOptions {
    let db = &settings.config.database;
    crate::store::ConnectOptions {
        max_connections: db.max_connections,
        acquire_timeout: Duration::from_secs(db.connect_timeout_secs),
        statement_timeout: Some(Duration::from_secs(db.statement_timeout_secs)),
    }
}

pub async fn open_hsm(settings: &Settings) -> Result<Hsm, HsmError> {
    let config = hsm_config(settings)?;
    tokio::task::spawn_blocking(move || Hsm::open(config))
        .await
        .map_err(|e| HsmError::Task(e.to_string()))?
}

pub struct App {
    pub settings: Settings,
    pub store: Store,
    pub hsm: Hsm,
}

impl App {
    pub async fn open(settings: Settings) -> Result<App, AppError> {
        let store = open_store(&settings).await?;
        let hsm = open_hsm(&settings).await?;
        Ok(App {
            settings,
            store,
            hsm,
        })
    }

    /// The issuing CA (key reference and certificate): it signs mailbox certificates
    /// and their CRL. On an install from before the two-tier CA, the one CA.
    pub async fn ca(&self) -> Result<CaIdentity, AppError> {
        load_ca(&self.store).await?.ok_or(AppError::NoCa)
    }

    /// The root CA: it signs the issuing CA and the root CRL, and is the trust anchor
    /// of the managed domains. On an install from before the two-tier CA, the one CA
    /// (root and issuer at once).
    pub async fn root_ca(&self) -> Result<CaIdentity, AppError> {
        load_root_ca(&self.store).await?.ok_or(AppError::NoCa)
    }
}

impl App {
    /// The signing identity of an active mailbox: its current certificate (the newest
    /// valid one with a key in the token, issued by our CA or uploaded), the key behind
    /// it and its chain.
    pub async fn signer_for(
        &self,
        address: &Address,
    ) -> Result<crate::smime::SignerIdentity, AppError> {
        let mailbox = self.store.mailboxes().require(address).await?;
        if mailbox.state != MailboxState::Active {
            return Err(AppError::Refused(format!(
                "mailbox {address} is {}: it has no active certificate to sign with",
                mailbox.state.as_str()
            )));
        }
        let cert = self
            .store
            .certificates()
            .signing(address.as_str(), crate::store::unix_now())
            .await?
            .ok_or_else(|| {
                AppError::Refused(format!("mailbox {address} has no valid certificate"))
            })?;
        let key_row_id = cert
            .key_id
            .ok_or_else(|| StoreError::Corrupt(format!("certificate of {address} names no key")))?;
        let key = self
            .store
            .keys()
            .get(key_row_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("key of {address} is not recorded")))?;
        let certificate = Certificate::from_der(&cert.record.der)
            .map_err(|e| StoreError::Corrupt(format!("certificate of {address}: {e}")))?;
        // Issued: our CA. Uploaded: the chain that came with it.
        let chain = if cert.source == CertificateSource::Issued {
            vec![self.ca().await?.certificate]
        } else {
            self.store.certificates().chain_of(&cert).await?
        };
        Ok(crate::smime::SignerIdentity {
            key_id: key.key_id()?,
            key_algorithm: key.algorithm,
            scheme: ca::default_scheme(key.algorithm),
            certificate,
            chain,
        })
    }
}

impl App {
    /// Every key the token holds for mail, by the ways a sender may name it: built from
    /// the certificates we issued or imported (retired keys included, so old mail stays
    /// readable).
    pub async fn key_directory(&self) -> Result<crate::smime::layers::KeyDirectory, AppError> {
        let mut directory = crate::smime::layers::KeyDirectory::default();
        let keys = self.store.keys().list().await?;
        for stored in self.store.certificates().with_keys().await? {
            let Some(key) = stored
                .key_id
                .and_then(|id| keys.iter().find(|k| k.id == id))
            else {
                continue;
            };
            if key.purpose == KeyPurpose::Ca {
                continue;
            }
            let cert = Certificate::from_der(&stored.record.der)
                .map_err(|e| StoreError::Corrupt(format!("certificate {}: {e}", stored.id)))?;
            directory.add_owned(&cert, key.key_id()?, stored.owner_address.as_deref());
        }
        Ok(directory)
    }
}

/// The certificates signatures are verified against, each with the domains it may
/// vouch for: the built-in root CA for the managed domains (mail signed here carries
/// the issuing CA, the path's intermediate), every configured trust anchor
/// (`smimegate trust add`) for the domains it was given or else any foreign domain.
/// An anchor that cannot be read is an error, never a silently smaller set: a missing
/// anchor would turn valid signatures into "untrusted" verdicts about their senders.
pub async fn trust_anchors(store: &Store) -> Result<TrustAnchors, AppError> {
    let mut anchors = Vec::new();
    if let Some(ca) = load_root_ca(store).await? {
        anchors.push(TrustAnchor {
            certificate: ca.certificate,
            scope: Scope::Managed,
        });
    }
    for row in store.trust_anchors().list().await? {
        let certificate = Certificate::from_der(&row.certificate.record.der).map_err(|e| {
            StoreError::Corrupt(format!("trust anchor {}: {e}", row.certificate.id))
        })?;
        let scope = if row.domains.is_empty() {
            Scope::AnyForeign
        } else {
            Scope::Domains(
                row.domains
                    .iter()
                    .map(|d| {
                        DomainPattern::parse(d).map_err(|e| {
                            StoreError::Corrupt(format!(
                                "trust anchor {} domain: {e}",
                                row.certificate.id
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?,
            )
        };
        anchors.push(TrustAnchor { certificate, scope });
    }
    let managed = store
        .domains()
        .list()
        .await?
        .into_iter()
        .map(|d| d.name)
        .collect();
    Ok(TrustAnchors { anchors, managed })
}

/// The issuing CA as recorded in the database, if `init` has created it: the newest CA
/// key in use (`init` records the root first, then the issuing CA).
pub async fn load_ca(store: &Store) -> Result<Option<CaIdentity>, AppError> {
    let Some(key) = store.keys().current_ca().await? else {
        return Ok(None);
    };
    ca_identity(store, &key).await.map(Some)
}

/// The root CA as recorded in the database: the CA that certified the issuing CA
/// (its issuer, among the CA keys in use); the issuing CA itself when it is
/// self-signed (an install from before the two-tier CA).
pub async fn load_root_ca(store: &Store) -> Result<Option<CaIdentity>, AppError> {
    let Some(issuing) = load_ca(store).await? else {
        return Ok(None);
    };
    if issuing.is_root() {
        return Ok(Some(issuing));
    }
    let issuer = issuing.certificate.tbs_certificate().issuer();
    for key in store.keys().list().await?.iter().rev() {
        if key.purpose != KeyPurpose::Ca || key.retired_at.is_some() {
            continue;
        }
        let candidate = ca_identity(store, key).await?;
        if candidate.is_root() && candidate.certificate.tbs_certificate().subject() == issuer {
            return Ok(Some(candidate));
        }
    }
    Err(StoreError::Corrupt(format!(
        "the root CA ({issuer}) of the issuing CA is not recorded"
    ))
    .into())
}

async fn ca_identity(store: &Store, key: &crate::store::KeyRow) -> Result<CaIdentity, AppError> {
    let cert = store
        .certificates()
        .for_key(key.id)
        .await?
        .ok_or_else(|| StoreError::Corrupt("CA key without certificate".into()))?;
    let certificate = Certificate::from_der(&cert.record.der)
        .map_err(|e| StoreError::Corrupt(format!("CA certificate: {e}")))?;
    Ok(CaIdentity {
        key_id: key.key_id()?,
        algorithm: key.algorithm,
        certificate,
    })
}

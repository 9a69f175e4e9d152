//! The running gateway's handles (configuration, database, token) and the operations
//! that need more than one of them: loading the CA, activating a mailbox.

use std::time::Duration;

use der::Decode;
use secrecy::SecretString;
use x509_cert::certificate::Certificate;

use crate::config::Settings;
use crate::hsm::{Hsm, HsmConfig, HsmError, KeyAlgorithm, KeyRole};
use crate::pki::address::Address;
use crate::pki::ca::{self, CaIdentity, IssueError};
use crate::pki::trust::{DomainPattern, Scope, TrustAnchor, TrustAnchors};
use crate::store::{
    CertificateSource, KeyPurpose, MailboxState, Store, StoreError, StoredCertificate,
};

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
    let db = &settings.config.database;
    Store::connect_with(
        &settings.database_url(),
        &crate::store::ConnectOptions {
            max_connections: db.max_connections,
            acquire_timeout: Duration::from_secs(db.connect_timeout_secs),
            statement_timeout: Some(Duration::from_secs(db.statement_timeout_secs)),
        },
    )
    .await
}

pub async fn open_hsm(settings: &Settings) -> Result<Hsm, HsmError> {
    let config = hsm_config(settings)?;
    tokio::task::spawn_blocking(move || Hsm::open(config))
        .await
        .map_err(|e| HsmError::Task(e.to_string()))?
}

/// Who did something, for the audit log.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub origin: String,
}

impl Actor {
    /// The local user running a CLI command.
    pub fn cli() -> Self {
        let user = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "unknown".into());
        Actor {
            name: format!("cli:{user}"),
            origin: "cli".into(),
        }
    }
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

    /// The CA key reference and certificate from the database.
    pub async fn ca(&self) -> Result<CaIdentity, AppError> {
        load_ca(&self.store).await?.ok_or(AppError::NoCa)
    }

    /// Generates a key for `address` in the token and issues its certificate:
    /// `inactive → pending → active`. On failure the mailbox returns to `inactive`
    /// and any key already generated is recorded as retired (it stays traceable).
    pub async fn activate_mailbox(
        &self,
        address: &Address,
        algorithm: Option<KeyAlgorithm>,
        actor: &Actor,
    ) -> Result<StoredCertificate, AppError> {
        let mailbox = self.store.mailboxes().require(address).await?;
        let domain = self
            .store
            .domains()
            .list()
            .await?
            .into_iter()
            .find(|d| d.name == mailbox.domain);
        if domain.as_ref().is_some_and(|d| d.next_hop.is_none()) {
            return Err(AppError::Refused(format!(
                "domain {} has no inbound route (next hop); set one with `smimegate domain add {} --next-hop HOST:PORT`",
                mailbox.domain, mailbox.domain
            )));
        }
        let ca = self.ca().await?;
        let algorithm = algorithm.unwrap_or(self.settings.config.ca.mailbox_key);
        self.store
            .mailboxes()
            .transition(address, MailboxState::Inactive, MailboxState::Pending)
            .await?;
        match self.issue(address, mailbox.id, algorithm, &ca).await {
            Ok(cert) => {
                self.store
                    .mailboxes()
                    .transition(address, MailboxState::Pending, MailboxState::Active)
                    .await?;
                self.store
                    .audit()
                    .append(
                        &actor.name,
                        &actor.origin,
                        "mailbox.activate",
                        address.as_str(),
                        &format!("{algorithm}; certificate serial {}", cert.record.serial),
                    )
                    .await?;
                Ok(cert)
            }
            Err(e) => {
                tracing::error!(%address, error = %e, "activation failed");
                if let Err(revert) = self
                    .store
                    .mailboxes()
                    .transition(address, MailboxState::Pending, MailboxState::Inactive)
                    .await
                {
                    tracing::error!(%address, error = %revert, "could not return mailbox to inactive");
                }
                Err(e)
            }
        }
    }

    async fn issue(
        &self,
        address: &Address,
        mailbox_id: i64,
        algorithm: KeyAlgorithm,
        ca: &CaIdentity,
    ) -> Result<StoredCertificate, AppError> {
        let label = address.to_string();
        let key = self
            .hsm
            .call_keygen(move |hsm| hsm.generate_key_pair(algorithm, KeyRole::Mailbox, &label))
            .await?;
        let key_row = self
            .store
            .keys()
            .insert(&key.id, algorithm, KeyPurpose::Mailbox, Some(mailbox_id))
            .await?;
        let ca_config = self.settings.config.ca.clone();
        let (ca_for_task, address_for_task, key_for_task) =
            (ca.clone(), address.clone(), key.clone());
        let issued = self
            .hsm
            .call("issue certificate", move |hsm| {
                ca::issue_mailbox_certificate(
                    hsm,
                    &ca_for_task,
                    &address_for_task,
                    &key_for_task,
                    ca_config.mailbox_validity_days,
                    &ca_config.crl_url,
                )
                .map_err(|e| match e {
                    IssueError::Token(h) => h,
                    other => HsmError::Encoding(other.to_string()),
                })
            })
            .await;
        let cert = match issued {
            Ok(cert) => cert,
            Err(e) => {
                self.store.keys().retire(key_row.id).await?;
                return Err(e.into());
            }
        };
        Ok(self
            .store
            .certificates()
            .insert(
                &cert,
                CertificateSource::Issued,
                Some(address.as_str()),
                Some(key_row.id),
            )
            .await?)
    }
}

impl App {
    /// The signing identity of an active mailbox: its current certificate, the key
    /// behind it and the CA chain.
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
            .current(address.as_str(), CertificateSource::Issued)
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
        let ca = self.ca().await?;
        Ok(crate::smime::SignerIdentity {
            key_id: key.key_id()?,
            key_algorithm: key.algorithm,
            scheme: ca::default_scheme(key.algorithm),
            certificate,
            chain: vec![ca.certificate],
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
/// vouch for: the built-in CA for the managed domains, every configured trust anchor
/// (`smimegate trust add`) for the domains it was given or else any foreign domain.
/// An anchor that cannot be read is an error, never a silently smaller set: a missing
/// anchor would turn valid signatures into "untrusted" verdicts about their senders.
pub async fn trust_anchors(store: &Store) -> Result<TrustAnchors, AppError> {
    let mut anchors = Vec::new();
    if let Some(ca) = load_ca(store).await? {
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

/// The CA as recorded in the database, if `init` has created it.
pub async fn load_ca(store: &Store) -> Result<Option<CaIdentity>, AppError> {
    let Some(key) = store.keys().current_ca().await? else {
        return Ok(None);
    };
    let cert = store
        .certificates()
        .for_key(key.id)
        .await?
        .ok_or_else(|| StoreError::Corrupt("CA key without certificate".into()))?;
    let certificate = Certificate::from_der(&cert.record.der)
        .map_err(|e| StoreError::Corrupt(format!("CA certificate: {e}")))?;
    Ok(Some(CaIdentity {
        key_id: key.key_id()?,
        algorithm: key.algorithm,
        certificate,
    }))
}

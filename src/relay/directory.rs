//! What the relay needs to know about an address: is it in a managed domain (and where
//! does its mail go), is it a managed mailbox, can it sign, which partner certificate
//! encrypts to it; and the rules, networks and smarthost. All of it is held in memory
//! as a [`Snapshot`] and reloaded when the database's configuration version changes
//! (every write to those tables bumps it, by trigger, on every node). A serving
//! gateway learns the version in the background (`store::ConfigWatch`: PostgreSQL
//! LISTEN/NOTIFY, a poll on SQLite), so a transaction reads an atomic, not the
//! database, and a change made on any node is in force within a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use der::Decode;
use x509_cert::certificate::Certificate;

use crate::pki::address::{Address, Domain};
use crate::policy::{Direction, OutboundFacts, Party, Rule};
use crate::smime::capabilities::Capabilities;
use crate::store::{CertificateSource, DomainRow, MailboxRow, MailboxState, Store, StoreError};

use super::network::Network;

/// Where mail to an address goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A managed domain: to its next hop (the internal server).
    Inbound {
        next_hop: Option<String>,
        /// The address is a known mailbox of the domain.
        known_mailbox: bool,
        /// The domain accepts any local part.
        wildcard: bool,
    },
    /// Anywhere else: out through the smarthost.
    Outbound,
}

impl Route {
    pub fn direction(&self) -> Direction {
        match self {
            Route::Inbound { .. } => Direction::Inbound,
            Route::Outbound => Direction::Outbound,
        }
    }
}

/// A certificate to encrypt to, with what its owner said it can read.
#[derive(Debug, Clone)]
pub struct PartnerCertificate {
    pub certificate: Certificate,
    pub capabilities: Option<Capabilities>,
}

/// Facts that depend on the clock (certificate validity) are re-read at least this
/// often even when nothing changed.
const MAX_AGE: Duration = Duration::from_secs(60);

/// The relay's view of the configuration at one version.
pub struct Snapshot {
    version: i64,
    loaded: Instant,
    pub rules: Vec<Rule>,
    domains: HashMap<String, DomainRow>,
    mailboxes: HashMap<String, MailboxRow>,
    /// Networks that may submit, and whether each still requires SMTP AUTH.
    pub networks: Vec<(Network, bool)>,
    pub smarthost: Option<String>,
    /// What inbound signatures are verified against, and each anchor's domains.
    pub trust: Arc<crate::pki::trust::TrustAnchors>,
    /// Enabled SMTP AUTH submitters and the addresses each may send as.
    submitters: HashMap<String, Vec<String>>,
    /// Filled on first use: which keys the token holds for which recipient ids.
    keys: tokio::sync::OnceCell<Arc<crate::smime::layers::KeyDirectory>>,
    /// Filled on first use: whether a mailbox can sign.
    signing: Mutex<HashMap<String, bool>>,
    /// Filled on first use: a partner's valid, trusted certificates, newest first
    /// (their revocation status is asked each time: it changes with the CRLs).
    partners: Mutex<HashMap<String, Vec<PartnerCertificate>>>,
    /// Filled on first use: a mailbox's signing identity.
    signers: Mutex<HashMap<String, Arc<crate::smime::SignerIdentity>>>,
}

impl Snapshot {
    async fn load(store: &Store, version: i64) -> Result<Snapshot, StoreError> {
        let networks = store
            .relay_settings()
            .networks()
            .await?
            .into_iter()
            .filter_map(|n| match Network::parse(&n.cidr) {
                Ok(net) => Some((net, n.require_auth)),
                Err(e) => {
                    tracing::warn!(error = %e, "stored network ignored");
                    None
                }
            })
            .collect();
        Ok(Snapshot {
            version,
            loaded: Instant::now(),
            rules: store.rules().list().await?,
            domains: store
                .domains()
                .list()
                .await?
                .into_iter()
                .map(|d| (d.name.clone(), d))
                .collect(),
            mailboxes: store
                .mailboxes()
                .list()
                .await?
                .into_iter()
                .map(|m| (m.address.clone(), m))
                .collect(),
            networks,
            smarthost: store.relay_settings().smarthost().await?,
            trust: Arc::new(
                crate::app::trust_anchors(store)
                    .await
                    .map_err(|e| match e {
                        crate::app::AppError::Store(e) => e,
                        other => StoreError::Corrupt(format!("trust anchors: {other}")),
                    })?,
            ),
            submitters: store
                .submitters()
                .list()
                .await?
                .into_iter()
                .filter(|s| !s.disabled)
                .map(|s| (s.name.to_ascii_lowercase(), s.may_send_as))
                .collect(),
            keys: tokio::sync::OnceCell::new(),
            signing: Mutex::new(HashMap::new()),
            partners: Mutex::new(HashMap::new()),
            signers: Mutex::new(HashMap::new()),
        })
    }

    /// The addresses submitter `name` may send as (none for an unknown or disabled
    /// submitter: it vouches for nobody).
    pub fn submitter_may_send_as(&self, name: &str) -> Vec<String> {
        self.submitters
            .get(&name.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default()
    }

    /// Whether `domain` is one of ours (has an inbound route).
    pub fn is_managed_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(&domain.to_ascii_lowercase())
    }

    /// The keys the token holds for mail, read once per snapshot (keys and
    /// certificates are part of the configuration version).
    pub async fn key_directory(
        &self,
        app: &crate::app::App,
    ) -> Result<Arc<crate::smime::layers::KeyDirectory>, crate::app::AppError> {
        self.keys
            .get_or_try_init(|| async { app.key_directory().await.map(Arc::new) })
            .await
            .cloned()
    }

    /// The signing identity of `address`, read once per snapshot.
    pub async fn signer(
        &self,
        app: &crate::app::App,
        address: &Address,
    ) -> Result<Arc<crate::smime::SignerIdentity>, crate::app::AppError> {
        if let Some(known) = self
            .signers
            .lock()
            .ok()
            .and_then(|m| m.get(address.as_str()).cloned())
        {
            return Ok(known);
        }
        // Shared, not copied per message: the certificate chain is parsed structures.
        let signer = Arc::new(app.signer_for(address).await?);
        if let Ok(mut m) = self.signers.lock() {
            m.insert(address.to_string(), signer.clone());
        }
        Ok(signer)
    }
}

/// Keeps the current [`Snapshot`].
pub struct SnapshotCache {
    store: Store,
    current: Mutex<Option<Arc<Snapshot>>>,
}

impl SnapshotCache {
    pub fn new(store: Store) -> Self {
        SnapshotCache {
            store,
            current: Mutex::new(None),
        }
    }

    /// The snapshot for the configuration version in force (in a serving gateway an
    /// atomic kept current by the store's watch: no query per transaction).
    pub async fn get(&self) -> Result<Arc<Snapshot>, StoreError> {
        let version = self.store.config_version_in_force().await?;
        let cached = self
            .current
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .filter(|s| s.version == version && s.loaded.elapsed() < MAX_AGE);
        if let Some(snapshot) = cached {
            return Ok(snapshot);
        }
        let fresh = Arc::new(Snapshot::load(&self.store, version).await?);
        if let Ok(mut current) = self.current.lock() {
            *current = Some(fresh.clone());
        }
        Ok(fresh)
    }
}

/// What is known about encrypting to a partner.
#[derive(Debug, Clone)]
pub enum PartnerLookup {
    /// A certificate to encrypt to; under soft-fail, why its revocation status is
    /// unknown.
    Usable(Box<PartnerCertificate>, Option<String>),
    /// No valid certificate is known.
    None,
    /// Every valid certificate known is revoked: why, for the newest.
    Revoked(String),
    /// Hard-fail: no certificate known is usable, and the revocation status of one of
    /// them cannot be learnt now (a temporary condition).
    Unknown(String),
}

impl PartnerLookup {
    pub fn certificate(&self) -> Option<&PartnerCertificate> {
        match self {
            PartnerLookup::Usable(c, _) => Some(c),
            _ => None,
        }
    }
}

/// The outbound decision once revocation is known: a refusal for want of a certificate
/// names the revocation when that is the reason; under hard-fail, a recipient whose
/// certificate's status cannot be learnt is refused for now (4.7.0) wherever the rule
/// would encrypt to it, never sent in clear instead. `with_certificate` is the
/// decision the rule makes when the recipient has a certificate.
pub fn apply_revocation(
    mut decision: crate::policy::OutboundDecision,
    with_certificate: &crate::policy::OutboundDecision,
    lookup: &PartnerLookup,
    recipient: &Address,
) -> crate::policy::OutboundDecision {
    let would_encrypt = matches!(&with_certificate.outcome, Ok(t) if t.encrypts());
    match lookup {
        PartnerLookup::Usable(_, Some(why)) => {
            if matches!(&decision.outcome, Ok(t) if t.encrypts()) {
                decision.notes.push(format!(
                    "revocation-unknown: encrypted to {recipient} although the revocation                      status of its certificate cannot be learnt ({why})"
                ));
            }
        }
        PartnerLookup::Revoked(why) => match &mut decision.outcome {
            Err(rejection) if would_encrypt => {
                rejection.text = format!(
                    "{}; the certificate known for it is revoked ({why})",
                    rejection.text
                );
            }
            Ok(t) if !t.encrypts() && would_encrypt => decision.notes.push(format!(
                "sent unencrypted: the certificate known for {recipient} is revoked ({why})"
            )),
            _ => {}
        },
        PartnerLookup::Unknown(why) if would_encrypt => {
            decision.outcome = Err(crate::policy::Rejection {
                code: 451,
                enhanced: "4.7.0",
                text: format!(
                    "<{recipient}>: the revocation status of the recipient's certificate                      cannot be learnt now ({why}); try again later"
                ),
            });
        }
        _ => {}
    }
    decision
}

/// Lookups against one snapshot (and the database for what it fills lazily).
pub struct Directory<'a> {
    store: &'a Store,
    pub snapshot: Arc<Snapshot>,
    /// Revocation checks of partner certificates (none: not checked).
    revocation: Option<Arc<crate::pki::revocation::Revocations>>,
}

impl<'a> Directory<'a> {
    pub fn new(store: &'a Store, snapshot: Arc<Snapshot>) -> Self {
        Directory {
            store,
            snapshot,
            revocation: None,
        }
    }

    /// A directory on a snapshot read now (for one-shot users such as `rule explain`).
    pub async fn current(store: &'a Store) -> Result<Directory<'a>, StoreError> {
        let version = store.config_version().await?;
        Ok(Directory {
            store,
            snapshot: Arc::new(Snapshot::load(store, version).await?),
            revocation: None,
        })
    }

    /// Checks partner certificates for revocation before they are used.
    pub fn with_revocation(
        mut self,
        revocation: Option<Arc<crate::pki::revocation::Revocations>>,
    ) -> Self {
        self.revocation = revocation;
        self
    }

    pub fn route(&self, address: &Address) -> Route {
        // A domain that is not a DNS name in ASCII (an SMTPUTF8 domain) is never one
        // of ours: managed domains are ASCII.
        let Ok(domain) = Domain::parse(address.domain()) else {
            return Route::Outbound;
        };
        match self.snapshot.domains.get(domain.as_str()) {
            Some(row) => Route::Inbound {
                next_hop: row.next_hop.clone(),
                known_mailbox: self.is_managed(address),
                wildcard: row.wildcard,
            },
            None => Route::Outbound,
        }
    }

    /// A known mailbox of a managed domain (what the rules call a managed mailbox).
    pub fn is_managed(&self, address: &Address) -> bool {
        self.snapshot.mailboxes.contains_key(address.as_str())
    }

    /// The mailbox is active and has a valid certificate of ours.
    pub async fn can_sign(&self, address: &Address) -> Result<bool, StoreError> {
        let Some(mailbox) = self.snapshot.mailboxes.get(address.as_str()) else {
            return Ok(false);
        };
        if mailbox.state != MailboxState::Active {
            return Ok(false);
        }
        if let Some(known) = self
            .snapshot
            .signing
            .lock()
            .ok()
            .and_then(|m| m.get(address.as_str()).copied())
        {
            return Ok(known);
        }
        let can = self
            .store
            .certificates()
            .signing(address.as_str(), crate::store::unix_now())
            .await?
            .is_some();
        if let Ok(mut m) = self.snapshot.signing.lock() {
            m.insert(address.to_string(), can);
        }
        Ok(can)
    }

    /// The newest valid partner certificate for `address` (harvested or uploaded) that
    /// is not revoked (see [`Self::partner_lookup`]).
    pub async fn partner_certificate(
        &self,
        address: &Address,
    ) -> Result<Option<PartnerCertificate>, StoreError> {
        Ok(self.partner_lookup(address).await?.certificate().cloned())
    }

    /// The newest valid partner certificate for `address` whose revocation status
    /// allows encrypting to it, or why there is none.
    pub async fn partner_lookup(&self, address: &Address) -> Result<PartnerLookup, StoreError> {
        use crate::config::RevocationMode;
        use crate::pki::revocation::Status;
        let candidates = self.partner_candidates(address).await?;
        let Some(revocation) = &self.revocation else {
            return Ok(candidates
                .into_iter()
                .next()
                .map_or(PartnerLookup::None, |c| {
                    PartnerLookup::Usable(Box::new(c), None)
                }));
        };
        let anchors: Vec<Certificate> = self.snapshot.trust.all().into_iter().cloned().collect();
        let mut revoked = None;
        let mut unknown = None;
        for candidate in candidates {
            match revocation
                .encryption_status(&candidate.certificate, anchors.clone())
                .await
            {
                Status::Good | Status::NotChecked => {
                    return Ok(PartnerLookup::Usable(Box::new(candidate), None));
                }
                Status::Unknown(why) if revocation.mode() == RevocationMode::SoftFail => {
                    tracing::info!(%address, reason = %why, "revocation-unknown: partner certificate used (soft-fail)");
                    return Ok(PartnerLookup::Usable(Box::new(candidate), Some(why)));
                }
                Status::Unknown(why) => {
                    tracing::info!(%address, reason = %why, "revocation-unknown: partner certificate not used (hard-fail)");
                    unknown.get_or_insert(why);
                }
                Status::Revoked(why) => {
                    tracing::info!(%address, reason = %why, "partner certificate revoked; not used");
                    revoked.get_or_insert(why);
                }
            }
        }
        Ok(match (unknown, revoked) {
            (Some(why), _) => PartnerLookup::Unknown(why),
            (None, Some(why)) => PartnerLookup::Revoked(why),
            (None, None) => PartnerLookup::None,
        })
    }

    /// Every valid partner certificate for `address` that can be encrypted to and is
    /// still vouched for, newest first; read once per snapshot.
    async fn partner_candidates(
        &self,
        address: &Address,
    ) -> Result<Vec<PartnerCertificate>, StoreError> {
        if let Some(known) = self
            .snapshot
            .partners
            .lock()
            .ok()
            .and_then(|m| m.get(address.as_str()).cloned())
        {
            return Ok(known);
        }
        let now = crate::store::unix_now();
        let mut found = Vec::new();
        for row in self
            .store
            .certificates()
            .for_partner(address.as_str(), now)
            .await?
        {
            let stored = &row.certificate;
            match Certificate::from_der(&stored.record.der) {
                Ok(certificate) => {
                    if let Some(problem) =
                        crate::smime::encrypt::recipient_key_problem(&certificate)
                    {
                        tracing::warn!(certificate = stored.id, %problem, "stored partner certificate cannot be encrypted to; skipped");
                        continue;
                    }
                    // A harvested certificate counts only while the anchor that
                    // vouched for it is trusted for every address it carries.
                    if stored.source == CertificateSource::Harvested
                        && !self.snapshot.trust.still_vouches(
                            row.vouched_by.as_deref(),
                            &crate::smime::verify::certified_addresses(&certificate),
                        )
                    {
                        tracing::info!(
                            certificate = stored.id,
                            "harvested certificate no longer vouched for by a trust anchor; skipped"
                        );
                        continue;
                    }
                    found.push(PartnerCertificate {
                        certificate,
                        capabilities: row.capabilities.as_deref().and_then(Capabilities::parse),
                    });
                }
                Err(e) => {
                    tracing::warn!(certificate = stored.id, error = %e, "stored partner certificate does not parse; skipped");
                }
            }
        }
        if let Ok(mut m) = self.snapshot.partners.lock() {
            m.insert(address.to_string(), found.clone());
        }
        Ok(found)
    }

    /// Sender and recipient as the policy sees them, with the outbound facts. The null
    /// sender of a bounce is [`NULL_SENDER`], never managed.
    pub async fn outbound_facts(
        &self,
        sender: &Address,
        recipient: &Address,
    ) -> Result<(bool, bool, OutboundFacts), StoreError> {
        let (sender_managed, recipient_managed, facts, _) =
            self.outbound_lookup(sender, recipient).await?;
        Ok((sender_managed, recipient_managed, facts))
    }

    /// [`Self::outbound_facts`] and what is known about the recipient's certificate.
    pub async fn outbound_lookup(
        &self,
        sender: &Address,
        recipient: &Address,
    ) -> Result<(bool, bool, OutboundFacts, PartnerLookup), StoreError> {
        let null_sender = sender.as_str() == NULL_SENDER;
        let sender_managed = !null_sender && self.is_managed(sender);
        let recipient_managed = self.is_managed(recipient);
        let lookup = self.partner_lookup(recipient).await?;
        let facts = OutboundFacts {
            sender_can_sign: sender_managed && self.can_sign(sender).await?,
            recipient_has_certificate: lookup.certificate().is_some(),
            null_sender,
        };
        Ok((sender_managed, recipient_managed, facts, lookup))
    }
}

/// How the policy names the null sender (`MAIL FROM:<>`) of a bounce.
pub const NULL_SENDER: &str = "mailer-daemon@invalid";

/// A [`Party`] for the policy.
pub fn party(address: &Address, managed: bool) -> Party<'_> {
    Party { address, managed }
}

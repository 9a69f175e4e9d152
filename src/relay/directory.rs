//! What the relay needs to know about an address, from the database: is it in a
//! managed domain (and where does its mail go), is it a managed mailbox, can it sign,
//! which partner certificate encrypts to it. Read per transaction, so changes made
//! in the console or the CLI count at once.

use der::Decode;
use x509_cert::certificate::Certificate;

use crate::pki::address::{Address, Domain};
use crate::policy::{Direction, OutboundFacts, Party};
use crate::smime::capabilities::Capabilities;
use crate::store::{CertificateSource, MailboxState, Store, StoreError};

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

pub struct Directory<'a> {
    store: &'a Store,
}

impl<'a> Directory<'a> {
    pub fn new(store: &'a Store) -> Self {
        Directory { store }
    }

    pub async fn route(&self, address: &Address) -> Result<Route, StoreError> {
        // A domain that is not a DNS name in ASCII (an SMTPUTF8 domain) is never one
        // of ours: managed domains are ASCII.
        let Ok(domain) = Domain::parse(address.domain()) else {
            return Ok(Route::Outbound);
        };
        let Some(row) = self.store.domains().get(&domain).await? else {
            return Ok(Route::Outbound);
        };
        let known_mailbox = self.store.mailboxes().get(address).await?.is_some();
        Ok(Route::Inbound {
            next_hop: row.next_hop,
            known_mailbox,
            wildcard: row.wildcard,
        })
    }

    /// A known mailbox of a managed domain (what the rules call a managed mailbox).
    pub async fn is_managed(&self, address: &Address) -> Result<bool, StoreError> {
        Ok(self.store.mailboxes().get(address).await?.is_some())
    }

    /// The mailbox is active and has a valid certificate of ours.
    pub async fn can_sign(&self, address: &Address) -> Result<bool, StoreError> {
        let Some(mailbox) = self.store.mailboxes().get(address).await? else {
            return Ok(false);
        };
        if mailbox.state != MailboxState::Active {
            return Ok(false);
        }
        Ok(self
            .store
            .certificates()
            .current(address.as_str(), CertificateSource::Issued)
            .await?
            .is_some())
    }

    /// The newest valid partner certificate for `address` (harvested or uploaded).
    pub async fn partner_certificate(
        &self,
        address: &Address,
    ) -> Result<Option<PartnerCertificate>, StoreError> {
        let now = crate::store::unix_now();
        let known = self
            .store
            .certificates()
            .for_partner(address.as_str(), now)
            .await?;
        for (stored, capabilities) in known {
            match Certificate::from_der(&stored.record.der) {
                Ok(certificate) => {
                    return Ok(Some(PartnerCertificate {
                        certificate,
                        capabilities: capabilities.as_deref().and_then(Capabilities::parse),
                    }));
                }
                Err(e) => {
                    tracing::warn!(certificate = stored.id, error = %e, "stored partner certificate does not parse; skipped");
                }
            }
        }
        Ok(None)
    }

    /// Sender and recipient as the policy sees them, with the outbound facts.
    pub async fn outbound_facts(
        &self,
        sender: &Address,
        recipient: &Address,
    ) -> Result<(bool, bool, OutboundFacts), StoreError> {
        let sender_managed = self.is_managed(sender).await?;
        let recipient_managed = self.is_managed(recipient).await?;
        let facts = OutboundFacts {
            sender_can_sign: sender_managed && self.can_sign(sender).await?,
            recipient_has_certificate: self.partner_certificate(recipient).await?.is_some(),
        };
        Ok((sender_managed, recipient_managed, facts))
    }
}

/// A [`Party`] for the policy.
pub fn party(address: &Address, managed: bool) -> Party<'_> {
    Party { address, managed }
}

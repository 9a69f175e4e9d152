//! One SMTP transaction through the relay, its states as types: [`State::Open`] after
//! MAIL (the sender, its configuration snapshot, no recipient yet) and
//! [`State::Routed`] once the next hop accepted a first recipient (the class every
//! later recipient must share, the policy selection, and the link to the next hop that
//! carries every accepted recipient). A recipient the hop refuses leaves the state as
//! it was: no connection is kept for a recipient nobody accepted, so no later
//! recipient of another class can go down it.

use std::sync::Arc;
use std::time::Instant;

use crate::pki::address::Address;
use crate::policy::{Direction, Selection, Transform};
use crate::smtp::Reply;
use crate::smtp::client::{ClientConfig, Connection};
use crate::smtp::command::{MailParams, RcptParams};

use super::actions::LogAction;
use super::directory::{PartnerCertificate, Snapshot};
use super::hops::{Envelope, HopPool};

/// What every recipient of one transaction shares (DESIGN §2: transactions stay
/// homogeneous, so one post-DATA verdict fits them all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    Outbound { hop: String, transform: Transform },
    Inbound { hop: String },
}

impl Class {
    pub fn hop(&self) -> &str {
        match self {
            Class::Outbound { hop, .. } | Class::Inbound { hop } => hop,
        }
    }

    pub fn direction(&self) -> Direction {
        match self {
            Class::Outbound { .. } => Direction::Outbound,
            Class::Inbound { .. } => Direction::Inbound,
        }
    }
}

pub struct AcceptedRecipient {
    pub envelope: String,
    pub address: Address,
    pub params: RcptParams,
    pub partner: Option<PartnerCertificate>,
}

/// What MAIL fixed: the sender and the configuration the transaction is decided by.
pub struct Mail {
    pub started: Instant,
    pub received_at: i64,
    /// As given (empty for the null sender).
    pub from: String,
    /// `None` for the null sender.
    pub sender: Option<Address>,
    pub params: MailParams,
    pub snapshot: Arc<Snapshot>,
    /// Transaction id for the Received field and the log.
    pub id: String,
}

pub struct Routed {
    pub class: Class,
    pub selection: Selection,
    pub link: HopLink,
    /// Never empty: Routed is made with its first recipient.
    pub recipients: Vec<AcceptedRecipient>,
}

pub enum State {
    Open,
    Routed(Box<Routed>),
}

pub struct Transaction {
    pub mail: Mail,
    pub state: State,
    /// Recipients refused at RCPT, with the reply each got (for the log).
    pub refused: Vec<(String, Reply)>,
    /// Policy notes for the log.
    pub notes: Vec<LogAction>,
    /// The direction of the last recipient looked at (for logging refusals).
    pub direction: Option<Direction>,
    /// Size of the message as received (0 before DATA).
    pub size: usize,
}

/// The size a next hop is announced: the transformed message may be larger.
pub fn announced_size(params: &MailParams, class: &Class) -> Option<u64> {
    params.size.map(|s| match class {
        Class::Outbound { transform, .. } if transform.encrypts() => s * 14 / 10 + 65536,
        _ => s + 65536,
    })
}

/// The link to the next hop that carries the transaction's accepted recipients: the
/// connection (when alive) and the envelope the hop was told, so that a dead connection
/// is replaced and the whole envelope replayed ([`HopPool`] does both) — the final
/// reply stays true for every accepted recipient, and a hop that no longer accepts one
/// of them turns the transaction into a 4xx.
pub struct HopLink {
    pub hop: String,
    connection: Option<Connection>,
    pub envelope: Envelope,
}

impl HopLink {
    /// A link over `connection`, on which the hop accepted MAIL and the envelope's
    /// recipients.
    pub fn new(connection: Connection, hop: &str, envelope: Envelope) -> HopLink {
        HopLink {
            hop: hop.to_string(),
            connection: Some(connection),
            envelope,
        }
    }

    /// One more recipient (replaying the envelope on a fresh connection when the
    /// connection was lost).
    pub async fn rcpt(
        &mut self,
        pool: &HopPool,
        client: &ClientConfig,
        to: &str,
        params: &RcptParams,
    ) -> Reply {
        let result = match self.connection.take() {
            Some(conn) => {
                pool.add_recipient(client, &self.hop, conn, &self.envelope, to, params)
                    .await
            }
            None => match pool.replay(client, &self.hop, &self.envelope).await {
                Ok(conn) => {
                    pool.add_recipient(client, &self.hop, conn, &self.envelope, to, params)
                        .await
                }
                Err(reply) => Err(reply),
            },
        };
        match result {
            Ok((conn, reply)) => {
                self.connection = Some(conn);
                if reply.is_positive() {
                    self.envelope
                        .recipients
                        .push((to.to_string(), params.clone()));
                }
                reply
            }
            Err(reply) => reply,
        }
    }

    /// DATA with `message` for every accepted recipient (replayed once on a fresh
    /// connection when the old one died before the message was handed over).
    pub async fn data(&mut self, pool: &HopPool, client: &ClientConfig, message: &[u8]) -> Reply {
        let conn = self.connection.take();
        let mut envelope = self.envelope.clone();
        envelope.size = Some(message.len() as u64).max(envelope.size);
        let (reply, conn) = pool
            .send_message(client, &self.hop, conn, &envelope, message)
            .await;
        self.connection = conn;
        reply
    }

    /// Another transaction with its own envelope on the link's connection (a Bcc copy).
    pub async fn copy(
        &mut self,
        pool: &HopPool,
        client: &ClientConfig,
        envelope: &Envelope,
        message: &[u8],
    ) -> Reply {
        let conn = self.connection.take();
        let (reply, conn) = pool
            .send_transaction(client, &self.hop, conn, envelope, message)
            .await;
        self.connection = conn;
        reply
    }

    /// Ends the link: whatever connection is left goes back to the pool (which resets
    /// or drops it as its state asks).
    pub async fn finish(mut self, pool: &HopPool) {
        if let Some(conn) = self.connection.take() {
            pool.put_back(conn).await;
        }
    }
}

/// The recipients to announce to the next hop in a Bcc group.
pub fn group_recipients<'a>(
    recipients: &'a [AcceptedRecipient],
    group: &'a [usize],
) -> impl Iterator<Item = &'a AcceptedRecipient> {
    group.iter().filter_map(|&i| recipients.get(i))
}

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

use super::HopPool;
use super::actions::LogAction;
use super::directory::{PartnerCertificate, Snapshot};

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
pub struct Envelope {
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
    pub envelope: Envelope,
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

/// The connection to the next hop that carries the transaction's accepted recipients.
/// When the connection dies (the hop restarted, idled it out during a slow DATA), it
/// is opened again and the envelope replayed — MAIL and every accepted recipient — so
/// the final reply stays true for each of them; a hop that no longer accepts one of
/// them turns the transaction into a 4xx.
pub struct HopLink {
    pub hop: String,
    connection: Option<Connection>,
    pub from: String,
    pub params: MailParams,
    size: Option<u64>,
    accepted: Vec<(String, RcptParams)>,
}

impl HopLink {
    /// A link over `connection`, on which the hop accepted MAIL and `first`.
    pub fn new(
        connection: Connection,
        from: &str,
        params: &MailParams,
        size: Option<u64>,
        first: (&str, &RcptParams),
    ) -> HopLink {
        HopLink {
            hop: connection.hop.clone(),
            connection: Some(connection),
            from: from.to_string(),
            params: params.clone(),
            size,
            accepted: vec![(first.0.to_string(), first.1.clone())],
        }
    }

    /// A fresh connection carrying the envelope so far. Err: a 4xx for the sender.
    async fn replay(&mut self, client: &ClientConfig) -> Result<(), Reply> {
        let mut conn = Connection::open(client, &self.hop).await?;
        let mail = conn.mail(&self.from, &self.params, self.size).await?;
        if !mail.is_positive() {
            conn.quit().await;
            return Err(lost(&self.hop, "refused the sender on a new connection"));
        }
        for (to, params) in &self.accepted {
            let reply = conn.rcpt(to, params).await?;
            if !reply.is_positive() {
                tracing::warn!(hop = %self.hop, recipient = %to, reply = %reply, "next hop refused an accepted recipient on a new connection");
                conn.quit().await;
                return Err(lost(&self.hop, "no longer accepts every recipient"));
            }
        }
        tracing::info!(hop = %self.hop, recipients = self.accepted.len(), "next-hop connection re-established and envelope replayed");
        self.connection = Some(conn);
        Ok(())
    }

    /// One more recipient on the link. A dead connection is replaced (the envelope
    /// replayed) once.
    pub async fn rcpt(&mut self, client: &ClientConfig, to: &str, params: &RcptParams) -> Reply {
        for attempt in 0..2 {
            if self.connection.is_none()
                && let Err(reply) = self.replay(client).await
            {
                return reply;
            }
            let Some(conn) = self.connection.as_mut() else {
                continue;
            };
            match conn.rcpt(to, params).await {
                Ok(reply) => {
                    if reply.is_positive() {
                        self.accepted.push((to.to_string(), params.clone()));
                    }
                    return reply;
                }
                Err(failure) => {
                    tracing::warn!(hop = %self.hop, attempt, reply = %failure, "next-hop connection lost at RCPT");
                    self.connection = None;
                }
            }
        }
        lost(&self.hop, "keeps dropping the connection")
    }

    /// DATA with `message` for every accepted recipient. A connection found dead before
    /// the hop took the DATA command is replaced (the envelope replayed) once; once the
    /// message is being sent, a lost connection is a 4xx (the hop may have it: a retry
    /// may duplicate, never lose). A hop that answers DATA with anything but 354 or a
    /// refusal is out of step: a 4xx.
    pub async fn data(&mut self, client: &ClientConfig, message: &[u8]) -> Reply {
        for attempt in 0..2 {
            if self.connection.is_none()
                && let Err(reply) = self.replay(client).await
            {
                return reply;
            }
            let Some(conn) = self.connection.as_mut() else {
                continue;
            };
            let go = match conn.command("DATA").await {
                Ok(go) => go,
                Err(failure) => {
                    tracing::warn!(hop = %self.hop, attempt, reply = %failure, "next-hop connection lost before DATA");
                    self.connection = None;
                    continue;
                }
            };
            if go.code != 354 {
                if go.is_positive() {
                    tracing::warn!(hop = %self.hop, reply = %go, "next hop answered DATA out of sequence");
                    self.connection = None;
                    return lost(&self.hop, "answered DATA out of sequence");
                }
                return go;
            }
            return match conn.message(message).await {
                Ok(reply) => reply,
                Err(failure) => {
                    tracing::warn!(hop = %self.hop, reply = %failure, "next-hop connection lost while the message was sent; its state is unknown");
                    self.connection = None;
                    failure
                }
            };
        }
        lost(&self.hop, "keeps dropping the connection")
    }

    /// Ends the link: the connection goes back to the pool (after a positive final
    /// reply it is between transactions already) or is reset first.
    pub async fn finish(mut self, pool: &HopPool, completed: bool) {
        if let Some(conn) = self.connection.take() {
            if completed {
                pool.keep(conn);
            } else {
                pool.put_back(conn).await;
            }
        }
    }

    /// The connection, for further transactions on it (Bcc copies).
    pub fn take_connection(&mut self) -> Option<Connection> {
        self.connection.take()
    }

    pub fn restore_connection(&mut self, conn: Connection) {
        self.connection = Some(conn);
    }
}

fn lost(hop: &str, what: &str) -> Reply {
    tracing::warn!(%hop, "next hop {what}");
    Reply::new(
        451,
        "4.4.1",
        "Connection to the next hop lost; try again later",
    )
}

/// The recipients to announce to the next hop in a Bcc group.
pub fn group_recipients<'a>(
    recipients: &'a [AcceptedRecipient],
    group: &'a [usize],
) -> impl Iterator<Item = &'a AcceptedRecipient> {
    group.iter().filter_map(|&i| recipients.get(i))
}

/// MAIL as the next hop gets it.
#[derive(Clone, Copy)]
pub struct MailCommand<'a> {
    pub from: &'a str,
    pub params: &'a MailParams,
    pub size: Option<u64>,
}

/// Opens (or reuses) a connection for the first recipient of a transaction: MAIL and
/// RCPT, pipelined when the hop offers it. A pooled connection the hop closed
/// meanwhile is replaced by a fresh one, once. Ok: the connection and the RCPT reply
/// (the connection is returned to the pool by the caller when the RCPT was refused).
pub async fn begin(
    pool: &HopPool,
    client: &ClientConfig,
    hop: &str,
    mail: &MailCommand<'_>,
    to: &str,
    rcpt_params: &RcptParams,
) -> Result<(Connection, Reply), Reply> {
    let MailCommand { from, params, size } = *mail;
    let mut fresh_tried = false;
    loop {
        let (mut conn, reused) = match pool.take(hop) {
            Some(conn) => (conn, true),
            None => (Connection::open(client, hop).await?, false),
        };
        match conn
            .mail_and_rcpt(from, params, size, to, rcpt_params)
            .await
        {
            Ok((mail, Some(rcpt))) if mail.is_positive() => return Ok((conn, rcpt)),
            Ok((mail, _)) => {
                pool.put_back(conn).await;
                return Err(mail);
            }
            Err(_) if reused && !fresh_tried => fresh_tried = true,
            Err(reply) => return Err(reply),
        }
    }
}

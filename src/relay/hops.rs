//! Next-hop connections for the relay: idle connections pooled per hop, a transaction
//! begun at the first RCPT, and the envelope replayed on a fresh connection when the
//! old one is found dead before the message was handed over.
//!
//! The rule this module keeps (DESIGN §2): a `250` after DATA is true for every
//! recipient the sender was told was accepted, and nothing is lost.
//! - A pooled connection may have been closed by the hop meanwhile (restart, idle
//!   timeout). It is probed before use; one that still turns out dead before the hop
//!   answered anything is replaced by a **fresh** connection, once, invisibly.
//! - A connection that dies before the hop accepted the message (before its `354`, or
//!   before the final `.` went out) is replaced: the whole envelope (MAIL and every
//!   accepted recipient) is replayed on a fresh connection and the message sent once
//!   more. If the hop no longer accepts every recipient, the answer is a `4xx`.
//! - A connection that dies after the final `.` went out leaves the delivery state
//!   unknown: a `4xx` (the sender's retry may duplicate the message, never lose it).
//!
//! How the relay uses it:
//! - at the first RCPT of a transaction: [`HopPool::begin`] (or at a later RCPT after
//!   the connection was lost: [`HopPool::add_recipient`] does that for you);
//! - at later RCPTs: [`HopPool::add_recipient`];
//! - at the end of DATA: [`HopPool::send_message`] (DATA with one replay), and for
//!   each further Bcc copy with its own envelope: [`HopPool::send_transaction`];
//! - when the transaction ends: [`HopPool::put_back`] with whatever connection is left.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::smtp::Reply;
use crate::smtp::client::{
    ClientConfig, Connection, DataError, HopError, Stage, UNAVAILABLE, XforwardAttrs,
};
use crate::smtp::command::{MailParams, RcptParams};

/// What a next hop has been told about one transaction, so it can be told again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    pub from: String,
    pub params: MailParams,
    /// SIZE to announce: the size of what will be sent (the transformed message may be
    /// larger than the original).
    pub size: Option<u64>,
    /// The recipients the hop has accepted so far, in order.
    pub recipients: Vec<(String, RcptParams)>,
    /// The original client, for a hop that offers XFORWARD (a Postfix behind us).
    pub xforward: Option<XforwardAttrs>,
}

/// Idle connections per hop, reused while younger than `max_idle`.
pub struct HopPool {
    idle: Mutex<HashMap<String, Vec<(Connection, Instant)>>>,
    max_idle: Duration,
    max_per_hop: usize,
}

impl Default for HopPool {
    fn default() -> Self {
        HopPool::new(Self::DEFAULT_MAX_IDLE, Self::DEFAULT_MAX_PER_HOP)
    }
}

/// The reply when the hop will not take back what it had accepted (the envelope
/// replayed on a new connection): temporary, so the sender retries the transaction.
fn envelope_changed() -> Reply {
    Reply::new(451, "4.4.2", UNAVAILABLE)
}

impl HopPool {
    /// Kept below the usual idle timeouts of next hops (Postfix: 300 s).
    pub const DEFAULT_MAX_IDLE: Duration = Duration::from_secs(20);
    pub const DEFAULT_MAX_PER_HOP: usize = 64;

    pub fn new(max_idle: Duration, max_per_hop: usize) -> Self {
        HopPool {
            idle: Mutex::new(HashMap::new()),
            max_idle,
            max_per_hop,
        }
    }

    /// How many idle connections to `hop` are pooled (for tests and metrics).
    pub fn idle_count(&self, hop: &str) -> usize {
        self.idle
            .lock()
            .map(|idle| idle.get(hop).map_or(0, Vec::len))
            .unwrap_or(0)
    }

    /// The youngest pooled connection to `hop` that is not expired and still looks
    /// alive (nothing unasked to read, no EOF).
    async fn take_alive(&self, hop: &str) -> Option<Connection> {
        loop {
            let (mut conn, since) = {
                let mut idle = self.idle.lock().ok()?;
                idle.get_mut(hop)?.pop()?
            };
            if since.elapsed() >= self.max_idle {
                tokio::spawn(conn.quit());
                continue;
            }
            match conn.probe(Stage::Idle).await {
                Ok(()) => return Some(conn),
                Err(e) => {
                    tracing::debug!(error = %e, "pooled connection is gone; dropped");
                }
            }
        }
    }

    /// Starts a transaction at its first RCPT, or restarts it on a new connection
    /// after the old one was lost: MAIL, every recipient of `envelope_so_far` (the
    /// recipients the hop accepted before; usually none), and `rcpt`, pipelined when
    /// the hop offers PIPELINING (RFC 2920).
    ///
    /// Uses a pooled connection when one is alive; a pooled connection that turns out
    /// dead before the hop answered is replaced by a fresh one, once, without the
    /// sender noticing.
    ///
    /// `Ok((connection, reply))`: `reply` is the hop's answer to `rcpt` (pass it on as
    /// it is; if it refuses and `envelope_so_far` is empty, the connection holds a
    /// transaction without recipients: use it for the next recipient of the same hop
    /// or [`HopPool::put_back`] it). `Err(reply)`: the hop refused MAIL (its verdict,
    /// pass it on), or a failure of ours or a recipient of `envelope_so_far` no longer
    /// accepted (a safe `4xx`, details logged at WARN); no connection is left.
    pub async fn begin(
        &self,
        config: &ClientConfig,
        hop: &str,
        envelope_so_far: &Envelope,
        rcpt: &str,
        rcpt_params: &RcptParams,
    ) -> Result<(Connection, Reply), Reply> {
        let span = tracing::info_span!("hop", hop = %hop);
        async {
            let mut recipients: Vec<(&str, &RcptParams)> = envelope_so_far
                .recipients
                .iter()
                .map(|(to, p)| (to.as_str(), p))
                .collect();
            recipients.push((rcpt, rcpt_params));
            let mut replaced = false;
            loop {
                let pooled = if replaced {
                    None
                } else {
                    self.take_alive(hop).await
                };
                let is_pooled = pooled.is_some();
                let mut conn = match pooled {
                    Some(conn) => conn,
                    None => Connection::connect(config, hop).await.map_err(Reply::from)?,
                };
                let replies = match send_envelope(&mut conn, envelope_so_far, &recipients).await {
                    Ok(replies) => replies,
                    Err(e) if is_pooled && e.is_connection_lost() => {
                        // The hop closed it while it was idle: a fresh one, once.
                        tracing::info!(error = %e, "pooled connection was closed by the hop; opening a fresh one");
                        replaced = true;
                        continue;
                    }
                    Err(e) => return Err(Reply::from(&e)),
                };
                if replies.mail.code / 100 != 2 {
                    self.put_back(conn).await;
                    return Err(replies.mail);
                }
                let Some((last, earlier)) = replies.rcpts.split_last() else {
                    tracing::warn!("next hop answered MAIL but no RCPT");
                    return Err(envelope_changed());
                };
                if let Some(((to, _), refusal)) = recipients
                    .iter()
                    .zip(earlier)
                    .find(|(_, r)| r.code / 100 != 2)
                {
                    tracing::warn!(recipient = %to, reply = %refusal, "next hop no longer accepts a recipient it accepted before");
                    self.put_back(conn).await;
                    return Err(envelope_changed());
                }
                return Ok((conn, last.clone()));
            }
        }
        .instrument(span)
        .await
    }

    /// A further recipient on the transaction's connection. When the connection turns
    /// out lost before the hop answered, the transaction is restarted on a new one with
    /// every recipient of `envelope_so_far` and this one ([`HopPool::begin`]), once.
    ///
    /// `Ok((connection, reply))`: the connection to keep for the transaction and the
    /// hop's answer to `rcpt`. `Err(reply)`: a safe `4xx` for this recipient; the
    /// transaction then has no connection, and [`HopPool::replay`] (or
    /// [`HopPool::send_message`] after it) re-establishes one at DATA.
    pub async fn add_recipient(
        &self,
        config: &ClientConfig,
        hop: &str,
        mut conn: Connection,
        envelope_so_far: &Envelope,
        rcpt: &str,
        rcpt_params: &RcptParams,
    ) -> Result<(Connection, Reply), Reply> {
        match conn.send_rcpt(rcpt, rcpt_params).await {
            Ok(reply) => Ok((conn, reply)),
            Err(e) if e.is_connection_lost() => {
                tracing::info!(hop = %hop, error = %e, "connection lost at RCPT; restarting the transaction");
                drop(conn);
                self.begin(config, hop, envelope_so_far, rcpt, rcpt_params)
                    .await
            }
            Err(e) => Err(Reply::from(&e)),
        }
    }

    /// A fresh connection carrying MAIL and every recipient of `envelope` again (for
    /// a connection found dead before the message was handed over). `Err` is a safe
    /// `4xx` when the hop cannot be reached or no longer accepts MAIL or every one of
    /// the recipients: a `250` after DATA must be true for each of them.
    pub async fn replay(
        &self,
        config: &ClientConfig,
        hop: &str,
        envelope: &Envelope,
    ) -> Result<Connection, Reply> {
        let span = tracing::info_span!("hop", hop = %hop);
        async {
            if envelope.recipients.is_empty() {
                tracing::warn!("an envelope without recipients cannot be replayed");
                return Err(envelope_changed());
            }
            let recipients: Vec<(&str, &RcptParams)> = envelope
                .recipients
                .iter()
                .map(|(to, p)| (to.as_str(), p))
                .collect();
            let mut conn = Connection::connect(config, hop)
                .await
                .map_err(Reply::from)?;
            let replies = send_envelope(&mut conn, envelope, &recipients)
                .await
                .map_err(|e| Reply::from(&e))?;
            let refusal = std::iter::once(&replies.mail)
                .chain(&replies.rcpts)
                .find(|r| r.code / 100 != 2);
            if let Some(refusal) = refusal {
                tracing::warn!(reply = %refusal, "next hop refused the replayed envelope");
                self.put_back(conn).await;
                return Err(envelope_changed());
            }
            if replies.rcpts.len() != recipients.len() {
                tracing::warn!("next hop did not answer every replayed recipient");
                return Err(envelope_changed());
            }
            tracing::info!(
                recipients = recipients.len(),
                "envelope replayed on a fresh connection"
            );
            Ok(conn)
        }
        .instrument(span)
        .await
    }

    /// DATA on the transaction's connection (`None` when it was lost at RCPT), with
    /// one replay: when the connection is found dead before the message was handed
    /// over (write fails, EOF or `421` before the `354`, or before the final `.` went
    /// out), the envelope is replayed on a fresh connection ([`HopPool::replay`]) and
    /// the message sent once more.
    ///
    /// Returns the reply for the sender — the hop's own answer, or a safe `4xx`
    /// (delivery state unknown, protocol violation, replay refused) — and the
    /// connection left, for [`HopPool::put_back`].
    pub async fn send_message(
        &self,
        config: &ClientConfig,
        hop: &str,
        conn: Option<Connection>,
        envelope: &Envelope,
        message: &[u8],
    ) -> (Reply, Option<Connection>) {
        let span = tracing::info_span!("hop", hop = %hop);
        async {
            if let Some(mut conn) = conn {
                match conn.send_data(message).await {
                    Ok(reply) => return (reply, Some(conn)),
                    Err(DataError::NotHandedOver(e)) => {
                        tracing::info!(error = %e, "connection lost before the message was handed over; replaying the envelope");
                    }
                    Err(e) => return (Reply::from(&e), None),
                }
            }
            let mut fresh = match self.replay(config, hop, envelope).await {
                Ok(conn) => conn,
                Err(reply) => return (reply, None),
            };
            match fresh.send_data(message).await {
                Ok(reply) => (reply, Some(fresh)),
                Err(e) => (Reply::from(&e), None),
            }
        }
        .instrument(span)
        .await
    }

    /// One more whole transaction (the envelope, then the message) for `hop`: for the
    /// Bcc copies of one message, each with its own envelope, after the first was
    /// delivered on `conn`. Uses `conn` when it is usable (RSET first if it is inside a
    /// transaction), else a pooled or fresh connection, and the replay rules of
    /// [`HopPool::send_message`]. Every recipient of `envelope` must be accepted, or
    /// the answer is a safe `4xx` and nothing is sent.
    ///
    /// Returns the reply (the hop's, or a safe `4xx`) and the connection left, for
    /// the next copy or [`HopPool::put_back`].
    pub async fn send_transaction(
        &self,
        config: &ClientConfig,
        hop: &str,
        conn: Option<Connection>,
        envelope: &Envelope,
        message: &[u8],
    ) -> (Reply, Option<Connection>) {
        let usable = match conn {
            Some(mut c) if !c.is_broken() => {
                if c.is_idle() || c.reset().await.is_ok() {
                    Some(c)
                } else {
                    None
                }
            }
            _ => None,
        };
        let conn = match usable {
            Some(c) => Some(c),
            None => self.take_alive(hop).await,
        };
        let recipients: Vec<(&str, &RcptParams)> = envelope
            .recipients
            .iter()
            .map(|(to, p)| (to.as_str(), p))
            .collect();
        let conn = match conn {
            None => None,
            Some(mut c) => match send_envelope(&mut c, envelope, &recipients).await {
                Ok(replies) => {
                    let refusal = std::iter::once(&replies.mail)
                        .chain(&replies.rcpts)
                        .find(|r| r.code / 100 != 2);
                    if let Some(refusal) = refusal {
                        tracing::warn!(hop = %hop, reply = %refusal, "next hop refused a copy's envelope");
                        self.put_back(c).await;
                        return (envelope_changed(), None);
                    }
                    Some(c)
                }
                // Lost before anything was handed over: send_message replays.
                Err(e) if e.is_connection_lost() => None,
                Err(e) => return (Reply::from(&e), None),
            },
        };
        self.send_message(config, hop, conn, envelope, message)
            .await
    }

    /// Keeps a connection that is between transactions (after the hop's final reply to
    /// the message). One inside a transaction or broken is not kept (use
    /// [`HopPool::put_back`], which can RSET).
    pub fn keep(&self, conn: Connection) {
        if !conn.is_idle() {
            tracing::debug!(hop = %conn.hop, "connection not between transactions: not pooled");
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(conn.hop.clone()).or_default();
            list.retain(|(_, since)| since.elapsed() < self.max_idle);
            if list.len() < self.max_per_hop {
                list.push((conn, Instant::now()));
            }
        }
    }

    /// Ends whatever the connection is in and pools it: kept as it is between
    /// transactions, after RSET (RFC 5321 §4.1.1.5) inside one if the hop agrees,
    /// closed with QUIT otherwise; a broken connection is dropped.
    pub async fn put_back(&self, mut conn: Connection) {
        if conn.is_broken() {
            return;
        }
        if conn.is_idle() {
            self.keep(conn);
            return;
        }
        match conn.reset().await {
            Ok(()) => self.keep(conn),
            Err(e) => {
                tracing::debug!(error = %e, "RSET failed; connection closed");
                conn.quit().await;
            }
        }
    }
}

/// MAIL (with XFORWARD before it when offered) and the recipients, on one connection.
async fn send_envelope(
    conn: &mut Connection,
    envelope: &Envelope,
    recipients: &[(&str, &RcptParams)],
) -> Result<crate::smtp::client::EnvelopeReplies, HopError> {
    conn.envelope(
        envelope.xforward.as_ref(),
        &envelope.from,
        &envelope.params,
        envelope.size,
        recipients,
    )
    .await
}

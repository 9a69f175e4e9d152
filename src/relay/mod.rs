//! The relay: SMTP in → policy → S/MIME → SMTP out, within the sender's session
//! (DESIGN §2). Nothing is queued: each recipient is decided at RCPT (and forwarded to
//! the next hop at once, whose answer becomes ours), and the end of DATA is answered
//! only with the next hop's answer to the transformed message. Any failure of our own
//! (token, database, next hop unreachable) is a 4xx, so the sender keeps the message.

pub mod directory;
pub mod explain;
pub mod headers;
pub mod inbound;
pub mod log_writer;
pub mod network;
pub mod outbound;

use std::sync::Arc;
use std::time::Instant;

use crate::app::App;
use crate::pki::address::Address;
use crate::policy::{self, Action, Direction, Selection, Transform};
use crate::smtp::Reply;
use crate::smtp::client::{ClientConfig, Connection};
use crate::smtp::command::{MailParams, RcptParams};
use crate::smtp::server::{Handler, SessionInfo};
use crate::store::{LogEntry, LogStatus, StoreError};

use directory::{Directory, PartnerCertificate, Route, Snapshot, SnapshotCache, party};
use network::Network;

pub struct Relay {
    pub app: Arc<App>,
    /// Message-log rows, written with group commit.
    pub log_writer: log_writer::LogWriter,
    /// Idle connections to next hops, reused across transactions.
    pub hops: HopPool,
    /// The configuration the relay reads per transaction, in memory while unchanged.
    pub snapshots: SnapshotCache,
    pub client: ClientConfig,
    pub node: String,
    pub limits: crate::mime::Limits,
    /// Networks from the configuration file (the database adds more).
    pub config_networks: Vec<Network>,
    /// Smarthost from the configuration file (the database's takes precedence).
    pub config_smarthost: Option<String>,
}

/// What every recipient of one transaction shares (DESIGN §2: transactions stay
/// homogeneous, so one post-DATA verdict fits them all).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Class {
    Outbound { hop: String, transform: Transform },
    Inbound { hop: String, action: Action },
}

struct AcceptedRecipient {
    envelope: String,
    address: Address,
    params: RcptParams,
    partner: Option<PartnerCertificate>,
}

pub struct Transaction {
    started: Instant,
    received_at: i64,
    from: String,
    from_address: Option<Address>,
    params: MailParams,
    class: Option<Class>,
    selection: Option<Selection>,
    recipients: Vec<AcceptedRecipient>,
    refused: Vec<(String, Reply)>,
    connection: Option<Connection>,
    notes: Vec<String>,
    /// Size of the message as received (0 before DATA).
    size: usize,
    /// The direction of the last recipient looked at (for logging refusals).
    direction: Option<Direction>,
    /// The configuration this transaction is decided by (read at its first RCPT).
    snapshot: Option<Arc<Snapshot>>,
}

fn database_trouble(e: StoreError) -> Reply {
    tracing::error!(error = %e, "database error");
    Reply::new(
        451,
        "4.3.0",
        "Temporary database problem on the gateway; try again later",
    )
}

impl Relay {
    fn relay_allowed(&self, session: &SessionInfo, snapshot: &Snapshot) -> bool {
        let ip = session.peer.ip();
        self.config_networks.iter().any(|n| n.contains(ip))
            || snapshot.networks.iter().any(|n| n.contains(ip))
    }

    /// The class of one recipient, or the reply refusing it.
    async fn classify(
        &self,
        session: &SessionInfo,
        tx: &mut Transaction,
        recipient: &Address,
    ) -> Result<(Class, Option<PartnerCertificate>, Option<Selection>), Reply> {
        // One configuration per transaction: the first recipient fixes it.
        let snapshot = match &tx.snapshot {
            Some(s) => s.clone(),
            None => {
                let s = self.snapshots.get().await.map_err(database_trouble)?;
                tx.snapshot = Some(s.clone());
                s
            }
        };
        let directory = Directory::new(&self.app.store, snapshot.clone());
        let route = directory.route(recipient);
        tx.direction = Some(route.direction());
        let rules = &snapshot.rules;
        let sender = tx.from_address.clone();
        match route {
            Route::Inbound {
                next_hop,
                known_mailbox,
                wildcard,
            } => {
                if !known_mailbox && !wildcard {
                    return Err(Reply::new(
                        550,
                        "5.1.1",
                        format!("<{recipient}>: no such mailbox here"),
                    ));
                }
                let Some(hop) = next_hop else {
                    return Err(Reply::new(
                        451,
                        "4.3.0",
                        format!("<{recipient}>: no route to the internal server is configured"),
                    ));
                };
                let sender_managed = sender.as_ref().is_some_and(|s| directory.is_managed(s));
                let null_sender = Address::from_envelope("mailer-daemon@invalid")
                    .map_err(|_| Reply::new(451, "4.3.0", "internal error"))?;
                let sender_ref = sender.as_ref().unwrap_or(&null_sender);
                let selection = policy::select(
                    rules,
                    Direction::Inbound,
                    party(sender_ref, sender_managed),
                    party(recipient, known_mailbox),
                );
                Ok((
                    Class::Inbound {
                        hop,
                        action: selection.action,
                    },
                    None,
                    Some(selection),
                ))
            }
            Route::Outbound => {
                if !self.relay_allowed(session, &snapshot) {
                    return Err(Reply::new(
                        554,
                        "5.7.1",
                        format!(
                            "<{recipient}>: relaying denied: {} is not an internal network",
                            session.peer.ip()
                        ),
                    ));
                }
                let Some(hop) = snapshot
                    .smarthost
                    .clone()
                    .or_else(|| self.config_smarthost.clone())
                else {
                    return Err(Reply::new(
                        451,
                        "4.3.0",
                        "No smarthost is configured for outbound mail (smimegate smarthost set)",
                    ));
                };
                let null_sender = Address::from_envelope("mailer-daemon@invalid")
                    .map_err(|_| Reply::new(451, "4.3.0", "internal error"))?;
                let sender_ref = sender.as_ref().unwrap_or(&null_sender);
                let (sender_managed, recipient_managed, facts) = directory
                    .outbound_facts(sender_ref, recipient)
                    .await
                    .map_err(database_trouble)?;
                let decision = policy::decide_outbound(
                    rules,
                    party(sender_ref, sender_managed),
                    party(recipient, recipient_managed),
                    facts,
                );
                tx.notes.extend(decision.notes.iter().cloned());
                let transform = decision.outcome.map_err(Reply::from)?;
                let partner = if transform.encrypts() {
                    directory
                        .partner_certificate(recipient)
                        .await
                        .map_err(database_trouble)?
                } else {
                    None
                };
                Ok((
                    Class::Outbound { hop, transform },
                    partner,
                    Some(decision.selection),
                ))
            }
        }
    }

    async fn log(
        &self,
        tx: &Transaction,
        status: LogStatus,
        reply: &Reply,
        actions: Vec<String>,
        message: Option<&[u8]>,
    ) {
        let direction = match (&tx.class, tx.direction) {
            (Some(Class::Inbound { .. }), _) => Direction::Inbound,
            (Some(Class::Outbound { .. }), _) => Direction::Outbound,
            (None, Some(direction)) => direction,
            (None, None) => return,
        };
        let mut rcpt_to: Vec<String> = tx.recipients.iter().map(|r| r.envelope.clone()).collect();
        rcpt_to.extend(tx.refused.iter().map(|(r, _)| r.clone()));
        let entry = LogEntry {
            id: 0,
            received_at: tx.received_at,
            node: self.node.clone(),
            direction,
            mail_from: tx.from.clone(),
            rcpt_to,
            message_id: message.and_then(|m| headers::value(m, "Message-ID")),
            subject: message.and_then(|m| headers::value(m, "Subject")),
            size_bytes: tx.size as i64,
            status,
            actions,
            smtp_code: Some(i64::from(reply.code)),
            smtp_reply: Some(reply.to_string()),
            rule_id: tx.selection.as_ref().and_then(|s| s.rule_id),
            duration_ms: tx.started.elapsed().as_millis() as i64,
        };
        self.log_writer.record(entry).await;
    }
}

/// Idle next-hop connections, per hop, reused while younger than [`HopPool::MAX_IDLE`].
#[derive(Default)]
pub struct HopPool {
    idle: std::sync::Mutex<std::collections::HashMap<String, Vec<(Connection, Instant)>>>,
}

impl HopPool {
    const MAX_IDLE: std::time::Duration = std::time::Duration::from_secs(20);
    const MAX_PER_HOP: usize = 64;

    fn take(&self, hop: &str) -> Option<Connection> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(hop)?;
        while let Some((conn, since)) = list.pop() {
            if since.elapsed() < Self::MAX_IDLE {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a connection that is between transactions.
    fn keep(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(conn.hop.clone()).or_default();
            list.retain(|(_, since)| since.elapsed() < Self::MAX_IDLE);
            if list.len() < Self::MAX_PER_HOP {
                list.push((conn, Instant::now()));
            }
        }
    }

    /// Ends the transaction on a connection (RSET) and keeps it if the hop agrees.
    async fn put_back(&self, mut conn: Connection) {
        if conn.rset().await {
            self.keep(conn);
        } else {
            conn.quit().await;
        }
    }
}

fn status_of(reply: &Reply) -> LogStatus {
    if reply.is_positive() {
        LogStatus::Relayed
    } else if reply.is_transient() {
        LogStatus::Deferred
    } else {
        LogStatus::Rejected
    }
}

impl Handler for Relay {
    type Transaction = Transaction;

    async fn mail(
        &self,
        _session: &SessionInfo,
        from: &str,
        params: &MailParams,
    ) -> Result<Transaction, Reply> {
        let from_address = if from.is_empty() {
            None
        } else {
            Some(Address::from_envelope(from).map_err(|e| {
                Reply::new(
                    553,
                    "5.1.7",
                    format!("Invalid sender address: {}", e.reason),
                )
            })?)
        };
        Ok(Transaction {
            started: Instant::now(),
            received_at: crate::store::unix_now(),
            from: from.to_string(),
            from_address,
            params: params.clone(),
            class: None,
            selection: None,
            recipients: Vec::new(),
            refused: Vec::new(),
            connection: None,
            notes: Vec::new(),
            size: 0,
            direction: None,
            snapshot: None,
        })
    }

    async fn rcpt(
        &self,
        session: &SessionInfo,
        tx: &mut Transaction,
        to: &str,
        params: &RcptParams,
    ) -> Reply {
        let reply = self.rcpt_inner(session, tx, to, params).await;
        if !reply.is_positive() {
            tracing::info!(recipient = %to, reply = %reply, "recipient refused");
            tx.refused.push((to.to_string(), reply.clone()));
        }
        reply
    }

    async fn data(&self, _session: &SessionInfo, mut tx: Transaction, message: Vec<u8>) -> Reply {
        use tracing::Instrument;
        let span = tracing::info_span!("message", from = %tx.from, recipients = tx.recipients.len(), size = message.len());
        tx.size = message.len();
        let (reply, actions, logged) = self
            .deliver(&mut tx, message)
            .instrument(span.clone())
            .await;
        tracing::info!(parent: &span, reply = %reply, actions = ?actions, "transaction done");
        self.log(&tx, status_of(&reply), &reply, actions, logged.as_deref())
            .await;
        if let Some(conn) = tx.connection.take() {
            if reply.is_positive() {
                // After a final reply to DATA the connection is ready for the next
                // transaction.
                self.hops.keep(conn);
            } else {
                self.hops.put_back(conn).await;
            }
        }
        reply
    }

    /// SMTP AUTH: refused until the submitter store is wired in (issue 9, item 10).
    async fn authenticate(
        &self,
        _session: &SessionInfo,
        _user: &str,
        _password: &secrecy::SecretString,
    ) -> Result<String, Reply> {
        Err(crate::smtp::server::invalid_credentials())
    }

    async fn abandon(&self, _session: &SessionInfo, mut tx: Transaction, reply: Option<&Reply>) {
        if let Some(conn) = tx.connection.take() {
            self.hops.put_back(conn).await;
        }
        match reply {
            Some(reply) => {
                self.log(&tx, status_of(reply), reply, vec!["refused".into()], None)
                    .await
            }
            None if tx.recipients.is_empty() && !tx.refused.is_empty() => {
                let (_, last) = &tx.refused[tx.refused.len() - 1];
                let last = last.clone();
                self.log(
                    &tx,
                    status_of(&last),
                    &last,
                    vec!["refused at RCPT".into()],
                    None,
                )
                .await;
            }
            None => {}
        }
    }
}

impl Relay {
    async fn rcpt_inner(
        &self,
        session: &SessionInfo,
        tx: &mut Transaction,
        to: &str,
        params: &RcptParams,
    ) -> Reply {
        let address = match Address::from_envelope(to) {
            Ok(a) => a,
            Err(e) => {
                return Reply::new(
                    553,
                    "5.1.3",
                    format!("Invalid recipient address: {}", e.reason),
                );
            }
        };
        let (class, partner, selection) = match self.classify(session, tx, &address).await {
            Ok(x) => x,
            Err(reply) => return reply,
        };
        if let Some(first) = &tx.class
            && *first != class
        {
            // RFC 5321 §4.5.3.1.10: the client sends this recipient in a later
            // transaction, so every transaction has one next hop and one treatment.
            return Reply::new(
                452,
                "4.5.3",
                format!("<{address}>: send this recipient in a separate transaction"),
            );
        }
        let hop = match &class {
            Class::Inbound { hop, .. } | Class::Outbound { hop, .. } => hop.clone(),
        };
        let reply = if tx.connection.is_none() {
            let size = tx.params.size.map(|s| match &class {
                Class::Outbound { transform, .. } if transform.encrypts() => s * 14 / 10 + 65536,
                _ => s + 65536,
            });
            // A pooled connection may have been closed by the hop meanwhile: then one
            // fresh connection is tried.
            let mut fresh_tried = false;
            loop {
                let (mut conn, reused) = match self.hops.take(&hop) {
                    Some(conn) => (conn, true),
                    None => match Connection::open(&self.client, &hop).await {
                        Ok(c) => (c, false),
                        Err(reply) => return reply,
                    },
                };
                match conn
                    .mail_and_rcpt(&tx.from, &tx.params, size, to, params)
                    .await
                {
                    Ok((mail, Some(rcpt))) if mail.is_positive() => {
                        tx.connection = Some(conn);
                        break rcpt;
                    }
                    Ok((mail, _)) => {
                        self.hops.put_back(conn).await;
                        return mail;
                    }
                    Err(_) if reused && !fresh_tried => {
                        fresh_tried = true;
                        continue;
                    }
                    Err(r) => return r,
                }
            }
        } else {
            let Some(conn) = tx.connection.as_mut() else {
                return Reply::new(451, "4.3.0", "internal error");
            };
            match conn.rcpt(to, params).await {
                Ok(r) => r,
                Err(r) => {
                    tx.connection = None;
                    return r;
                }
            }
        };
        if reply.is_positive() {
            tx.class = Some(class);
            if tx.selection.is_none() {
                tx.selection = selection;
            }
            tx.recipients.push(AcceptedRecipient {
                envelope: to.to_string(),
                address,
                params: params.clone(),
                partner,
            });
        }
        reply
    }

    /// Transforms and hands over; returns the reply, the log actions and the message
    /// as logged (its headers give Message-ID and Subject).
    async fn deliver(
        &self,
        tx: &mut Transaction,
        message: Vec<u8>,
    ) -> (Reply, Vec<String>, Option<Vec<u8>>) {
        let message = headers::strip(headers::canonical_header(message), headers::STAMP);
        let summary: Vec<u8> = summary_headers(&message);
        let Some(class) = tx.class.clone() else {
            return (
                Reply::new(554, "5.5.1", "No valid recipients"),
                Vec::new(),
                Some(summary),
            );
        };
        let mut actions: Vec<String> = tx.notes.clone();
        match class {
            Class::Inbound { .. } => {
                let Some(selection) = tx.selection.clone() else {
                    return (
                        Reply::new(451, "4.3.0", "internal error"),
                        actions,
                        Some(summary),
                    );
                };
                let snapshot = match &tx.snapshot {
                    Some(s) => s.clone(),
                    None => match self.snapshots.get().await {
                        Ok(s) => s,
                        Err(e) => return (database_trouble(e), actions, Some(summary)),
                    },
                };
                let recipients: Vec<Address> =
                    tx.recipients.iter().map(|r| r.address.clone()).collect();
                match inbound::process(
                    self.app.clone(),
                    snapshot,
                    &self.limits,
                    &selection,
                    &recipients,
                    message,
                )
                .await
                {
                    Ok(processed) => {
                        actions.extend(processed.actions);
                        let reply = self.send(tx, &processed.message).await;
                        (reply, actions, Some(summary))
                    }
                    Err(reply) => {
                        actions.push("refused".into());
                        (reply, actions, Some(summary))
                    }
                }
            }
            Class::Outbound { transform, .. } => {
                let Some(from) = tx.from_address.clone() else {
                    if transform != Transform::Plain {
                        return (
                            Reply::new(
                                550,
                                "5.7.1",
                                "A message with a null sender cannot be signed or encrypted",
                            ),
                            actions,
                            Some(summary),
                        );
                    }
                    let reply = self.send(tx, &message).await;
                    return (reply, actions, Some(summary));
                };
                // Bcc recipients (in the envelope, not in To/Cc) get their own copy when
                // encrypting, so no RecipientInfo reveals them.
                let visible: Vec<String> = ["To", "Cc"]
                    .iter()
                    .flat_map(|h| headers::values(&message, h))
                    .flat_map(|v| headers::addresses(&v))
                    .map(|a| a.to_lowercase())
                    .collect();
                let groups: Vec<Vec<usize>> = if transform.encrypts() {
                    let (shown, hidden): (Vec<usize>, Vec<usize>) = (0..tx.recipients.len())
                        .partition(|&i| visible.contains(&tx.recipients[i].address.to_string()));
                    let mut groups = Vec::new();
                    if !shown.is_empty() {
                        groups.push(shown);
                    }
                    groups.extend(hidden.into_iter().map(|i| vec![i]));
                    groups
                } else {
                    vec![(0..tx.recipients.len()).collect()]
                };
                let certs: Vec<Vec<PartnerCertificate>> = groups
                    .iter()
                    .map(|g| {
                        g.iter()
                            .filter_map(|&i| tx.recipients[i].partner.clone())
                            .collect()
                    })
                    .collect();
                if transform.encrypts()
                    && certs.iter().zip(&groups).any(|(c, g)| c.len() != g.len())
                {
                    return (
                        Reply::new(
                            451,
                            "4.7.5",
                            "A recipient certificate is no longer available; try again later",
                        ),
                        actions,
                        Some(summary),
                    );
                }
                let snapshot = match &tx.snapshot {
                    Some(s) => s.clone(),
                    None => match self.snapshots.get().await {
                        Ok(s) => s,
                        Err(e) => return (database_trouble(e), actions, Some(summary)),
                    },
                };
                let outputs = match outbound::transform(
                    &self.app,
                    &snapshot,
                    &self.limits,
                    &from,
                    transform,
                    &certs,
                    message,
                )
                .await
                {
                    Ok(o) => o,
                    Err(reply) => return (reply, actions, Some(summary)),
                };
                if transform.signs() {
                    actions.push("signed".into());
                }
                if transform.encrypts() {
                    actions.push(format!(
                        "encrypted{}",
                        if groups.len() > 1 {
                            format!(" ({} copies for Bcc)", groups.len())
                        } else {
                            String::new()
                        }
                    ));
                }
                let reply = if groups.len() == 1 {
                    match outputs.first() {
                        Some(only) => self.send(tx, only).await,
                        None => Reply::new(451, "4.3.0", "internal error"),
                    }
                } else {
                    self.send_groups(tx, &groups, &outputs).await
                };
                (reply, actions, Some(summary))
            }
        }
    }

    /// DATA on the connection opened at RCPT: the next hop's reply is ours.
    async fn send(&self, tx: &mut Transaction, message: &[u8]) -> Reply {
        let Some(conn) = tx.connection.as_mut() else {
            return Reply::new(
                451,
                "4.4.1",
                "Connection to the next hop lost; try again later",
            );
        };
        match conn.data(message).await {
            Ok(reply) => reply,
            Err(reply) => {
                tx.connection = None;
                reply
            }
        }
    }

    /// One transaction per group on the same connection (Bcc copies). The first
    /// failure is the answer; groups sent before it are delivered, so a retry may
    /// duplicate them (never lose them).
    async fn send_groups(
        &self,
        tx: &mut Transaction,
        groups: &[Vec<usize>],
        outputs: &[Vec<u8>],
    ) -> Reply {
        let Some(mut conn) = tx.connection.take() else {
            return Reply::new(
                451,
                "4.4.1",
                "Connection to the next hop lost; try again later",
            );
        };
        if !conn.rset().await {
            return Reply::new(
                451,
                "4.4.1",
                "Next hop refused to reset the transaction; try again later",
            );
        }
        let mut last = Reply::new(451, "4.3.0", "nothing sent");
        for (group, output) in groups.iter().zip(outputs) {
            let size = Some(output.len() as u64);
            match conn.mail(&tx.from, &tx.params, size).await {
                Ok(r) if r.is_positive() => {}
                Ok(r) | Err(r) => return r,
            }
            for &i in group {
                let r = &tx.recipients[i];
                match conn.rcpt(&r.envelope, &r.params).await {
                    Ok(reply) if reply.is_positive() => {}
                    Ok(reply) | Err(reply) => return reply,
                }
            }
            match conn.data(output).await {
                Ok(reply) if reply.is_positive() => last = reply,
                Ok(reply) | Err(reply) => return reply,
            }
        }
        tx.connection = Some(conn);
        last
    }
}

/// The header fields the log reads (Message-ID, Subject), without the body.
fn summary_headers(message: &[u8]) -> Vec<u8> {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |i| i + 4);
    message[..end].to_vec()
}

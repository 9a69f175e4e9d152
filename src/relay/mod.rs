//! The relay: SMTP in → policy → S/MIME → SMTP out, within the sender's session
//! (DESIGN §2). Nothing is queued: each recipient is decided at RCPT (and forwarded to
//! the next hop at once, whose answer becomes ours), and the end of DATA is answered
//! only with the next hop's answer to the transformed message. Any failure of our own
//! (token, database, next hop unreachable) is a 4xx, so the sender keeps the message.
//!
//! The pieces: [`transaction`] (the states of a transaction and its link to the next
//! hop), [`rcpt`] (routing and policy per recipient), [`deliver`] (after DATA),
//! [`inbound`] / [`outbound`] (the S/MIME work), [`error`] (the one mapping from
//! errors to replies), [`actions`] (what the log says), [`received`] (trace fields).

pub mod actions;
mod deliver;
pub mod directory;
pub mod error;
pub mod explain;
pub mod headers;
pub mod hops;
pub mod inbound;
pub mod log_writer;
pub mod network;
pub mod outbound;
mod rcpt;
pub mod received;
pub mod transaction;

use std::sync::Arc;
use std::time::Instant;

pub use hops::HopPool;

use crate::app::App;
use crate::pki::address::Address;
use crate::smtp::Reply;
use crate::smtp::client::ClientConfig;
use crate::smtp::command::{MailParams, RcptParams};
use crate::smtp::server::{Handler, Listener, SessionInfo};
use crate::store::{LogEntry, LogStatus};

use actions::LogAction;
use directory::{Snapshot, SnapshotCache};
use error::RelayError;
use network::Network;
use transaction::{Mail, State, Transaction};

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
    /// This gateway's name in Received fields.
    pub hostname: String,
    pub limits: crate::mime::Limits,
    /// Networks from the configuration file (the database adds more).
    pub config_networks: Vec<Network>,
    /// Smarthost from the configuration file (the database's takes precedence).
    pub config_smarthost: Option<String>,
    /// Revocation checks of partner certificates (CRL cache and downloads).
    pub revocation: Arc<crate::pki::revocation::Revocations>,
    /// Counters and latencies for `GET /metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
}

fn transaction_id() -> String {
    let mut random = [0u8; 8];
    let _ = getrandom::fill(&mut random);
    hex::encode(random)
}

impl Relay {
    /// The addresses the session's authenticated submitter may send as; `None` when
    /// the session did not authenticate (a client of an internal network).
    fn may_send_as(&self, session: &SessionInfo, snapshot: &Snapshot) -> Option<Vec<String>> {
        session
            .authenticated
            .as_deref()
            .map(|name| snapshot.submitter_may_send_as(name))
    }

    async fn log(
        &self,
        tx: &Transaction,
        status: LogStatus,
        reply: &Reply,
        actions: &[LogAction],
        header: Option<&[u8]>,
    ) {
        let (direction, mut rcpt_to, rule_id) = match &tx.state {
            State::Routed(r) => (
                r.class.direction(),
                r.recipients.iter().map(|a| a.envelope.clone()).collect(),
                r.selection.rule_id,
            ),
            State::Open => match tx.direction {
                Some(direction) => (direction, Vec::new(), None),
                None => return,
            },
        };
        rcpt_to.extend(tx.refused.iter().map(|(r, _)| r.clone()));
        let entry = LogEntry {
            id: 0,
            received_at: tx.mail.received_at,
            node: self.node.clone(),
            direction,
            mail_from: tx.mail.from.clone(),
            rcpt_to,
            message_id: header.and_then(|m| headers::value(m, "Message-ID")),
            subject: header
                .filter(|_| self.app.settings.config.log.subjects)
                .and_then(headers::subject),
            size_bytes: tx.size as i64,
            status,
            actions: actions::words(actions),
            smtp_code: Some(i64::from(reply.code)),
            smtp_reply: Some(reply.to_string()),
            rule_id,
            duration_ms: tx.mail.started.elapsed().as_millis() as i64,
        };
        self.metrics
            .message(direction.as_str(), status, &entry.actions);
        self.log_writer.record(entry).await;
    }

    /// Ends the transaction's link to the next hop.
    async fn finish(&self, tx: Transaction) {
        if let State::Routed(routed) = tx.state {
            routed.link.finish(&self.hops).await;
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
        session: &SessionInfo,
        from: &str,
        params: &MailParams,
    ) -> Result<Transaction, Reply> {
        let sender = if from.is_empty() {
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
        // One configuration per transaction, fixed at MAIL.
        let snapshot = self
            .snapshots
            .get()
            .await
            .map_err(|e| Reply::from(RelayError::Database(e)))?;
        if session.listener == Listener::Submission && !self.may_submit(session, &snapshot) {
            tracing::info!(
                "submission from outside the internal networks without authentication: refused"
            );
            return Err(Reply::new(530, "5.7.0", "Authentication required"));
        }
        Ok(Transaction {
            mail: Mail {
                started: Instant::now(),
                received_at: crate::store::unix_now(),
                from: from.to_string(),
                sender,
                params: params.clone(),
                snapshot,
                id: transaction_id(),
            },
            state: State::Open,
            refused: Vec::new(),
            notes: Vec::new(),
            direction: None,
            size: 0,
        })
    }

    async fn rcpt(
        &self,
        session: &SessionInfo,
        tx: &mut Transaction,
        to: &str,
        params: &RcptParams,
    ) -> Reply {
        let reply = match self.accept(session, tx, to, params).await {
            Ok(reply) => reply,
            Err(e) => Reply::from(&e),
        };
        if !reply.is_positive() {
            tracing::info!(recipient = %to, reply = %reply, "recipient refused");
            tx.refused.push((to.to_string(), reply.clone()));
        }
        reply
    }

    async fn data(&self, session: &SessionInfo, mut tx: Transaction, message: Vec<u8>) -> Reply {
        use tracing::Instrument;
        let recipients = match &tx.state {
            State::Routed(r) => r.recipients.len(),
            State::Open => 0,
        };
        self.metrics
            .stage(crate::metrics::Stage::Receive, tx.mail.started.elapsed());
        let span = tracing::info_span!("message", id = %tx.mail.id, from = %tx.mail.from, recipients, size = message.len());
        tx.size = message.len();
        let outcome = self
            .deliver(session, &mut tx, message)
            .instrument(span.clone())
            .await;
        tracing::info!(parent: &span, reply = %outcome.reply, actions = ?actions::words(&outcome.actions), "transaction done");
        self.log(
            &tx,
            status_of(&outcome.reply),
            &outcome.reply,
            &outcome.actions,
            Some(&outcome.header),
        )
        .await;
        self.finish(tx).await;
        outcome.reply
    }

    /// SMTP AUTH (RFC 4954): a submitter's name and password, checked against the
    /// submitter store (argon2id, as long for an unknown name as for a known one).
    /// A database failure is a 454 (try later), never a verdict on the credentials.
    async fn authenticate(
        &self,
        _session: &SessionInfo,
        user: &str,
        password: &secrecy::SecretString,
    ) -> Result<String, Reply> {
        match crate::ops::submitters::verify(&self.app.store, user, password).await {
            Ok(Some(submitter)) => Ok(submitter.name),
            Ok(None) => Err(crate::smtp::server::invalid_credentials()),
            Err(e) => {
                tracing::error!(error = %e, "checking credentials failed");
                Err(Reply::new(
                    454,
                    "4.7.0",
                    "Temporary authentication failure; try again later",
                ))
            }
        }
    }

    fn replied(&self, session: &SessionInfo, reply: &Reply) {
        self.metrics
            .smtp_reply(session.listener.as_str(), reply.code);
    }

    async fn abandon(&self, _session: &SessionInfo, tx: Transaction, reply: Option<&Reply>) {
        match reply {
            Some(reply) => {
                self.log(&tx, status_of(reply), reply, &[LogAction::Refused], None)
                    .await
            }
            None if matches!(tx.state, State::Open) && !tx.refused.is_empty() => {
                let (_, last) = &tx.refused[tx.refused.len() - 1];
                let last = last.clone();
                self.log(
                    &tx,
                    status_of(&last),
                    &last,
                    &[LogAction::RefusedAtRcpt],
                    None,
                )
                .await;
            }
            None => {}
        }
        self.finish(tx).await;
    }
}

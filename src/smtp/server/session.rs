//! The protocol state of one session (RFC 5321 §4.1.4) and one handler per command.
//! Handlers only queue replies and say what the driver should read next; they never
//! touch the stream, so they can be reasoned about (and fuzzed) without I/O.
//! Exposure: every command line a client sends arrives here, parsed.

use super::auth::SaslStep;
use super::budget::Held;
use super::control::Control;
use super::data::{DataOutcome, DataReader};
use super::io::Line;
use super::{Handler, Limits, ServerConfig, SessionInfo};
use crate::smtp::command::{self, Command, MailParams, RcptParams};
use crate::smtp::reply::Reply;

/// Where a session is in the protocol.
pub(crate) enum State<T> {
    /// Connected (or TLS just established): waiting for EHLO/HELO.
    Connected,
    /// Greeted, no transaction.
    Greeted,
    /// MAIL accepted.
    Mail(Envelope<T>),
}

/// One transaction between MAIL and the end of DATA.
pub(crate) struct Envelope<T> {
    pub(crate) tx: T,
    /// SIZE declared at MAIL (RFC 1870).
    size: Option<u64>,
    accepted: usize,
    refused: usize,
}

/// What the driver reads next.
pub(crate) enum Next<T> {
    Command,
    /// 354 is queued: read the message of this transaction.
    Data(Envelope<T>, DataReader),
    /// A SASL challenge is queued: read the client's response line.
    Auth(SaslStep),
    /// 220 is queued: flush, drop buffered plaintext, hand the stream to TLS.
    StartTls,
    /// Flush and close.
    Close,
}

pub(crate) struct Session<'a, H: Handler> {
    pub(crate) info: SessionInfo,
    pub(crate) config: &'a ServerConfig,
    pub(crate) limits: &'a Limits,
    control: &'a Control,
    pub(crate) handler: &'a H,
    pub(crate) state: State<H::Transaction>,
    errors: u32,
    pub(crate) auth_failures: u32,
    out: Vec<u8>,
    /// The budget of a message whose reply is queued: given back once it is sent.
    delivered: Option<Held>,
}

impl<'a, H: Handler> Session<'a, H> {
    pub(crate) fn new(
        info: SessionInfo,
        config: &'a ServerConfig,
        limits: &'a Limits,
        control: &'a Control,
        handler: &'a H,
    ) -> Self {
        Session {
            info,
            config,
            limits,
            control,
            handler,
            state: State::Connected,
            errors: 0,
            auth_failures: 0,
            out: Vec::new(),
            delivered: None,
        }
    }

    pub(crate) fn queue(&mut self, reply: &Reply) {
        self.handler.replied(&self.info, reply);
        self.out.extend_from_slice(&reply.to_wire());
    }

    /// Replies queued since the last call.
    pub(crate) fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// The replies were written: release the budget of a delivered message.
    pub(crate) fn sent(&mut self) {
        self.delivered = None;
    }

    pub(crate) fn in_transaction(&self) -> bool {
        matches!(self.state, State::Mail(_))
    }

    pub(crate) fn greet(&mut self) {
        let banner = format!("{} ESMTP smimegate", self.config.hostname);
        self.queue(&Reply::new(220, "", banner));
    }

    /// One command line.
    pub(crate) async fn command(&mut self, line: Line) -> Next<H::Transaction> {
        let bytes = match line {
            Line::Text(bytes) => bytes,
            Line::TooLong => return self.error(Reply::new(500, "5.5.2", "Line too long")),
            Line::Eof => return Next::Close,
        };
        let Ok(mut text) = String::from_utf8(bytes) else {
            return self.error(Reply::new(500, "5.5.2", "Command is not UTF-8"));
        };
        let command = command::parse(&text);
        // An AUTH line carries credentials: gone from memory once parsed.
        zeroize::Zeroize::zeroize(&mut text);
        tracing::debug!(command = command.verb(), "command");
        match command {
            Command::Ehlo(domain) => self.ehlo(domain, true).await,
            Command::Helo(domain) => self.ehlo(domain, false).await,
            Command::StartTls => self.starttls(),
            Command::Auth { mechanism, initial } => self.auth(&mechanism, initial).await,
            Command::Mail { from, params } => self.mail(&from, &params).await,
            Command::Rcpt { to, params } => self.rcpt(&to, &params).await,
            Command::Data => self.data().await,
            Command::Rset => self.rset().await,
            Command::Noop => self.reply(Reply::new(250, "2.0.0", "OK")),
            Command::Vrfy => self.reply(Reply::new(
                252,
                "2.5.0",
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Command::Help => self.reply(Reply::new(
                214,
                "2.0.0",
                "smimegate: EHLO MAIL RCPT DATA RSET NOOP QUIT STARTTLS AUTH",
            )),
            Command::Quit => self.quit().await,
            Command::Invalid(why) => {
                self.error(Reply::new(501, "5.5.4", format!("Syntax error: {why}")))
            }
            Command::Unknown => self.error(Reply::new(500, "5.5.1", "Command not recognised")),
        }
    }

    pub(crate) fn reply(&mut self, reply: Reply) -> Next<H::Transaction> {
        self.queue(&reply);
        Next::Command
    }

    /// A client error; too many end the session.
    pub(crate) fn error(&mut self, reply: Reply) -> Next<H::Transaction> {
        self.errors += 1;
        self.queue(&reply);
        if self.errors > self.limits.max_errors {
            tracing::info!(errors = self.errors, "too many errors: closing");
            self.queue(&Reply::new(421, "4.7.0", "Too many errors, closing"));
            return Next::Close;
        }
        Next::Command
    }

    /// Ends a transaction that will not reach DATA, for the handler's log.
    pub(crate) async fn abandon(&mut self, reply: Option<&Reply>) {
        let greeted = !matches!(self.state, State::Connected);
        let state = std::mem::replace(
            &mut self.state,
            if greeted {
                State::Greeted
            } else {
                State::Connected
            },
        );
        if let State::Mail(envelope) = state {
            self.handler.abandon(&self.info, envelope.tx, reply).await;
        }
    }

    async fn ehlo(&mut self, domain: String, extended: bool) -> Next<H::Transaction> {
        self.abandon(None).await;
        self.state = State::Greeted;
        self.info.helo = domain;
        let reply = if extended {
            self.ehlo_reply()
        } else {
            Reply::new(250, "", self.config.hostname.clone())
        };
        self.reply(reply)
    }

    fn ehlo_reply(&self) -> Reply {
        let mut lines = vec![
            self.config.hostname.clone(),
            "PIPELINING".into(),
            format!("SIZE {}", self.limits.max_message_bytes),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "DSN".into(),
        ];
        if self.config.tls.is_some() && !self.info.tls {
            lines.push("STARTTLS".into());
        }
        // RFC 4954 §4 and §14: never offered over a connection in the clear.
        if self.config.auth && self.info.tls && self.info.authenticated.is_none() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        Reply::multiline(250, "", lines)
    }

    fn starttls(&mut self) -> Next<H::Transaction> {
        if self.config.tls.is_none() || self.info.tls {
            return self.reply(Reply::new(502, "5.5.1", "STARTTLS not available"));
        }
        if self.in_transaction() {
            return self.reply(Reply::new(503, "5.5.1", "STARTTLS inside a transaction"));
        }
        self.queue(&Reply::new(220, "2.0.0", "Ready to start TLS"));
        Next::StartTls
    }

    /// TLS is up: the session starts over (RFC 3207 §4.2); the client greets again.
    pub(crate) fn tls_established(&mut self) {
        self.info.tls = true;
        self.info.helo.clear();
        self.info.authenticated = None;
        self.state = State::Connected;
    }

    async fn mail(&mut self, from: &str, params: &MailParams) -> Next<H::Transaction> {
        match self.state {
            State::Connected => {
                return self.reply(Reply::new(503, "5.5.1", "Say EHLO first"));
            }
            State::Mail(_) => return self.reply(Reply::new(503, "5.5.1", "Nested MAIL command")),
            State::Greeted => {}
        }
        if params
            .size
            .is_some_and(|s| s > self.limits.max_message_bytes as u64)
        {
            return self.reply(self.too_large());
        }
        match self.handler.mail(&self.info, from, params).await {
            Ok(tx) => {
                self.state = State::Mail(Envelope {
                    tx,
                    size: params.size,
                    accepted: 0,
                    refused: 0,
                });
                self.reply(Reply::new(250, "2.1.0", "Sender OK"))
            }
            Err(reply) => self.reply(reply),
        }
    }

    async fn rcpt(&mut self, to: &str, params: &RcptParams) -> Next<H::Transaction> {
        let State::Mail(envelope) = &mut self.state else {
            return self.reply(Reply::new(503, "5.5.1", "Need MAIL before RCPT"));
        };
        let reply = if envelope.accepted >= self.limits.max_recipients {
            Reply::new(452, "4.5.3", "Too many recipients")
        } else {
            self.handler
                .rcpt(&self.info, &mut envelope.tx, to, params)
                .await
        };
        if reply.is_positive() {
            envelope.accepted += 1;
            return self.reply(reply);
        }
        envelope.refused += 1;
        if envelope.refused > self.limits.max_refused_recipients {
            tracing::info!(
                refused = envelope.refused,
                "too many refused recipients: closing"
            );
            let closing = Reply::new(421, "4.7.0", "Too many refused recipients, closing");
            self.abandon(Some(&closing)).await;
            self.queue(&closing);
            return Next::Close;
        }
        self.reply(reply)
    }

    async fn data(&mut self) -> Next<H::Transaction> {
        let envelope = match std::mem::replace(&mut self.state, State::Greeted) {
            State::Mail(envelope) => envelope,
            other => {
                self.state = other;
                return self.reply(Reply::new(503, "5.5.1", "Need MAIL and RCPT before DATA"));
            }
        };
        if envelope.accepted == 0 {
            self.state = State::Mail(envelope);
            self.abandon(None).await;
            return self.reply(Reply::new(554, "5.5.1", "No valid recipients"));
        }
        let started = DataReader::start(
            self.control.budget(),
            envelope.size,
            self.limits.max_message_bytes,
            self.limits.max_header_bytes,
        );
        match started {
            Ok(reader) => {
                self.queue(&Reply::new(354, "", "End data with <CR><LF>.<CR><LF>"));
                Next::Data(envelope, reader)
            }
            Err(_) => {
                tracing::warn!(
                    in_flight = self.control.budget().used(),
                    "message byte budget exhausted: DATA refused"
                );
                self.state = State::Mail(envelope);
                let reply = insufficient_storage();
                self.abandon(Some(&reply)).await;
                self.reply(reply)
            }
        }
    }

    /// The message was read to its end.
    pub(crate) async fn message(
        &mut self,
        envelope: Envelope<H::Transaction>,
        outcome: DataOutcome,
    ) -> Next<H::Transaction> {
        let refusal = match outcome {
            DataOutcome::Message { message, held } => {
                let reply = self.handler.data(&self.info, envelope.tx, message).await;
                self.delivered = Some(held);
                return self.reply(reply);
            }
            DataOutcome::TooLarge => self.too_large(),
            DataOutcome::HeaderTooLarge => Reply::new(
                552,
                "5.3.4",
                format!(
                    "Message header exceeds the limit of {} bytes",
                    self.limits.max_header_bytes
                ),
            ),
            DataOutcome::BareCr => {
                tracing::warn!("message with a bare CR refused");
                Reply::new(
                    550,
                    "5.6.0",
                    "Message contains a bare CR (RFC 5321 §2.3.8): refused",
                )
            }
            DataOutcome::NoBudget => {
                tracing::warn!(
                    in_flight = self.control.budget().used(),
                    "message byte budget exhausted while reading: message refused"
                );
                insufficient_storage()
            }
        };
        self.handler
            .abandon(&self.info, envelope.tx, Some(&refusal))
            .await;
        self.reply(refusal)
    }

    /// The stream ended or failed while a message was read.
    pub(crate) async fn message_lost(&mut self, envelope: Envelope<H::Transaction>) {
        tracing::info!("connection lost during DATA: nothing relayed");
        self.handler.abandon(&self.info, envelope.tx, None).await;
    }

    fn too_large(&self) -> Reply {
        Reply::new(
            552,
            "5.3.4",
            format!(
                "Message size exceeds the limit of {} bytes",
                self.limits.max_message_bytes
            ),
        )
    }

    async fn rset(&mut self) -> Next<H::Transaction> {
        self.abandon(None).await;
        self.reply(Reply::new(250, "2.0.0", "OK"))
    }

    async fn quit(&mut self) -> Next<H::Transaction> {
        self.abandon(None).await;
        let bye = format!("{} closing", self.config.hostname);
        self.queue(&Reply::new(221, "2.0.0", bye));
        Next::Close
    }

    /// The client was silent too long.
    pub(crate) async fn timed_out(&mut self) -> Next<H::Transaction> {
        tracing::info!("timeout: closing");
        self.abandon(None).await;
        let text = format!("{} Timeout, closing", self.config.hostname);
        self.queue(&Reply::new(421, "4.4.2", text));
        Next::Close
    }

    /// The process is shutting down (RFC 5321 §3.8).
    pub(crate) async fn shutting_down(&mut self) -> Next<H::Transaction> {
        let reply = Reply::new(
            421,
            "4.3.2",
            format!("{} shutting down", self.config.hostname),
        );
        self.abandon(Some(&reply)).await;
        self.queue(&reply);
        Next::Close
    }
}

/// `452 4.3.1` (RFC 3463): the byte budget cannot hold the message now.
fn insufficient_storage() -> Reply {
    Reply::new(452, "4.3.1", "Insufficient system storage, try again later")
}

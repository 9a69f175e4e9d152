//! The SMTP server side (RFC 5321) with PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
//! ENHANCEDSTATUSCODES, DSN, STARTTLS (RFC 3207) and AUTH PLAIN/LOGIN (RFC 4954) on
//! listeners that offer it. **Exposure: talks to the outside world** — every byte it
//! reads comes from an untrusted client, so everything a client controls is limited:
//! line length, header and message size, recipients, refused recipients, errors,
//! failed authentications, time per command (reading and writing), time per session,
//! sessions at once and per client address, and message bytes in flight overall.
//!
//! Layout (one concern per file):
//! - [`session`]: the protocol state machine; one handler per command, which only
//!   queues replies and says what to read next (no I/O);
//! - `auth`: the AUTH command and its SASL exchanges;
//! - `data`: the DATA reader (only `<CRLF>.<CRLF>` ends a message);
//! - `io`: reading and writing with limits and timeouts;
//! - `driver`: one session: [`io`] drives [`session`], STARTTLS swaps the stream;
//! - `listener`: accepting connections, per-address and per-listener limits;
//! - `control`: what all listeners share: limits (reloadable), the byte budget, the
//!   shutdown phase, the session count.
//!
//! What to do with a transaction is the [`Handler`]'s business. The reply to the end
//! of DATA is whatever the handler returns, and the handler returns only once the
//! message has been dealt with, so a session that dies before that reply has handed
//! nothing over (no custody).

mod auth;
mod budget;
mod control;
mod data;
mod driver;
#[doc(hidden)]
pub mod fuzzing;
mod io;
mod listener;
mod session;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use super::command::{MailParams, RcptParams};
use super::reply::Reply;
use crate::relay::network::Network;

pub use budget::{Budget, Held, PROCESSING_MULTIPLE};
pub use control::{Control, Phase};

/// Which listener a session came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Listener {
    /// Mail from the internet.
    Inbound,
    /// Mail from the internal servers.
    Submission,
}

impl Listener {
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Inbound => "inbound",
            Listener::Submission => "submission",
        }
    }
}

/// What one listener is: fixed for the life of the process.
#[derive(Clone)]
pub struct ServerConfig {
    pub hostname: String,
    pub listener: Listener,
    /// STARTTLS is offered when set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// AUTH PLAIN LOGIN is offered, after STARTTLS only (RFC 4954 §4, §14).
    pub auth: bool,
}

/// Limits of every session; the process may change them at run time (SIGHUP), and a
/// session keeps the ones it started with.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Sessions at once on one listener; more get `421 4.3.2`.
    pub max_connections: usize,
    /// Sessions at once from one client address; more get `421 4.7.0`.
    pub max_connections_per_ip: usize,
    /// Clients the per-address limit does not apply to (Postfix's
    /// `smtpd_client_event_limit_exceptions = $mynetworks`).
    pub per_ip_exempt: Vec<Network>,
    pub max_line_bytes: usize,
    pub max_header_bytes: usize,
    pub max_message_bytes: usize,
    /// Accepted recipients per transaction; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Refused recipients per transaction; past it the session ends with `421 4.7.0`.
    pub max_refused_recipients: usize,
    /// Syntax errors and unknown commands per session; past it `421 4.7.0`.
    pub max_errors: u32,
    /// Failed AUTH attempts per session; past it `421 4.7.0`.
    pub max_auth_failures: u32,
    /// For one command, one chunk of message data, and one write of replies.
    pub command_timeout: Duration,
    pub session_deadline: Duration,
    /// Memory all sessions' messages may reserve together (each [`PROCESSING_MULTIPLE`]
    /// times its size); past it `452 4.3.1`.
    pub message_budget_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            max_connections_per_ip: 20,
            per_ip_exempt: Vec::new(),
            max_line_bytes: 4096,
            max_header_bytes: 1024 * 1024,
            max_message_bytes: 50 * 1024 * 1024,
            max_recipients: 100,
            max_refused_recipients: 20,
            max_errors: 10,
            max_auth_failures: 3,
            command_timeout: Duration::from_secs(300),
            session_deadline: Duration::from_secs(1800),
            message_budget_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// Whether the per-address limit counts this client.
    pub fn counts_per_ip(&self, ip: std::net::IpAddr) -> bool {
        !self.per_ip_exempt.iter().any(|n| n.contains(ip))
    }
}

/// What the handler knows about the session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: String,
    pub peer: SocketAddr,
    pub listener: Listener,
    pub helo: String,
    pub tls: bool,
    /// The identity the handler returned for a successful AUTH; cleared when
    /// STARTTLS resets the session (RFC 3207 §4.2).
    pub authenticated: Option<String>,
}

/// The relay behind the protocol.
pub trait Handler: Send + Sync + 'static {
    /// Per-transaction state, made at MAIL and given back at DATA.
    type Transaction: Send;

    fn mail(
        &self,
        session: &SessionInfo,
        from: &str,
        params: &MailParams,
    ) -> impl Future<Output = Result<Self::Transaction, Reply>> + Send;

    /// Decides on one recipient; a positive reply means the handler has recorded it.
    fn rcpt(
        &self,
        session: &SessionInfo,
        transaction: &mut Self::Transaction,
        to: &str,
        params: &RcptParams,
    ) -> impl Future<Output = Reply> + Send;

    /// The whole message (dot-unstuffed, CRLF lines, no bare CR). The reply is the
    /// answer to the end of DATA.
    fn data(
        &self,
        session: &SessionInfo,
        transaction: Self::Transaction,
        message: Vec<u8>,
    ) -> impl Future<Output = Reply> + Send;

    /// A reply was queued for the client (for counting; must be cheap and not block).
    fn replied(&self, _session: &SessionInfo, _reply: &Reply) {}

    /// A transaction that ended without DATA (RSET, a new MAIL, QUIT, a dropped
    /// connection, a message refused as too large, a shutdown): for the log.
    fn abandon(
        &self,
        session: &SessionInfo,
        transaction: Self::Transaction,
        reply: Option<&Reply>,
    ) -> impl Future<Output = ()> + Send;

    /// Checks SMTP AUTH credentials (RFC 4954); `Ok` carries the authenticated
    /// identity. The server never checks credentials itself. The default refuses
    /// every attempt with `535 5.7.8`.
    fn authenticate(
        &self,
        session: &SessionInfo,
        user: &str,
        password: &SecretString,
    ) -> impl Future<Output = Result<String, Reply>> + Send {
        let _ = (session, user, password);
        async { Err(invalid_credentials()) }
    }
}

/// `535 5.7.8` (RFC 4954 §6): the same words whatever was wrong.
pub fn invalid_credentials() -> Reply {
    Reply::new(535, "5.7.8", "Authentication credentials invalid")
}

/// One listener's sessions: its configuration, the shared [`Control`], the handler.
pub struct Server<H> {
    config: Arc<ServerConfig>,
    control: Arc<Control>,
    handler: Arc<H>,
}

impl<H> Clone for Server<H> {
    fn clone(&self) -> Self {
        Server {
            config: self.config.clone(),
            control: self.control.clone(),
            handler: self.handler.clone(),
        }
    }
}

impl<H: Handler> Server<H> {
    pub fn new(config: ServerConfig, control: Arc<Control>, handler: Arc<H>) -> Self {
        Server {
            config: Arc::new(config),
            control,
            handler,
        }
    }

    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }
}

fn session_id() -> String {
    let mut random = [0u8; 6];
    let _ = getrandom::fill(&mut random);
    hex::encode(random)
}

//! What can go wrong with a next hop, typed by what it means for the message, and the
//! one mapping from such a failure to the reply our sender sees.
//!
//! Three outcomes must never be confused (DESIGN §2: a `250` is true, nothing is lost):
//! - the hop's own reply (its verdict, passed on as it is): not an error here;
//! - the connection failed **before** the message was handed over (no final `.` went
//!   out, RFC 5321 §4.1.1.4): nothing was delivered, the envelope may be replayed on a
//!   fresh connection and the message sent again ([`DataError::NotHandedOver`]);
//! - the connection failed **after** the final `.` went out and before the hop's reply:
//!   the hop may or may not have the message ([`DataError::Unknown`]). The sender gets a
//!   `4xx`; its retry may duplicate the message, never lose it.
//!
//! Replies we make up for our own failures say only what is safe to tell the internet
//! ("Next hop unavailable, try again later" with an RFC 3463 code): the hop's name, its
//! address and the OS error go to the log at WARN, never into the reply (issue 9, 8).

use std::fmt;
use std::net::SocketAddr;

use crate::smtp::Reply;

/// Where in the conversation with the hop a failure happened (RFC 5321 §4.1.1 order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Greeting,
    Ehlo,
    StartTls,
    Xforward,
    Mail,
    Rcpt,
    /// The DATA command, before the hop's `354`.
    Data,
    /// Writing the message after the `354`, before the final `.` is out.
    Message,
    /// Waiting for the reply to the final `.`.
    EndOfData,
    Rset,
    /// A pooled connection between transactions.
    Idle,
    Quit,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Greeting => "greeting",
            Stage::Ehlo => "EHLO",
            Stage::StartTls => "STARTTLS",
            Stage::Xforward => "XFORWARD",
            Stage::Mail => "MAIL",
            Stage::Rcpt => "RCPT",
            Stage::Data => "DATA",
            Stage::Message => "message",
            Stage::EndOfData => "end of data",
            Stage::Rset => "RSET",
            Stage::Idle => "idle",
            Stage::Quit => "QUIT",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The hop broke the protocol: its replies cannot be trusted to mean anything.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A line that is not `CODE[ -]text` with a code of 2xx..5xx (RFC 5321 §4.2).
    #[error("malformed reply line {line:?}")]
    Malformed { line: String },
    /// A multi-line reply whose lines carry different codes (RFC 5321 §4.2.1).
    #[error("multi-line reply mixes codes {first} and {then}")]
    MixedCodes { first: u16, then: u16 },
    #[error("reply line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("reply of more than {limit} lines")]
    TooManyLines { limit: usize },
    /// Data arrived when no reply was due: a reply to a command never sent, or text
    /// after a reply (for STARTTLS: plaintext that would be injected into TLS).
    #[error("unsolicited reply {reply:?}")]
    Unsolicited { reply: String },
    /// A reply of the wrong kind for the command: `2xx` to DATA instead of `354`, `3xx`
    /// to MAIL or RCPT, `354` to the final `.`, a greeting other than `220`.
    #[error("{reply} is no answer to {command}")]
    OutOfSequence { command: &'static str, reply: Reply },
}

/// Why a next-hop connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HopErrorKind {
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("no answer in time")]
    Timeout,
    #[error("connection closed by the hop")]
    Closed,
    #[error("connection failed: {0}")]
    Io(#[source] std::io::Error),
    /// `421`: the hop is closing the connection (RFC 5321 §3.8; Postfix says it when
    /// it idles a connection out).
    #[error("hop is closing the connection: {0}")]
    ServiceClosing(Reply),
    /// The hop refused to talk to us at all (greeting, EHLO and HELO, STARTTLS): about
    /// our connection, not about the message, so never passed on as a verdict.
    #[error("hop refused the session: {0}")]
    Refused(Reply),
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("STARTTLS is required ({level}) but the hop does not offer it")]
    TlsNotOffered { level: &'static str },
    #[error("the hop's host cannot be used as a TLS name")]
    TlsName,
    /// The handshake failed: for `verify` and `pin`, among other things, a certificate
    /// that is not trusted, not for the hop's name, or not the pinned one.
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
}

/// A failure talking to one next hop, with everything the log needs.
#[derive(Debug)]
pub struct HopError {
    /// The hop as configured (`host:port`).
    pub hop: String,
    /// The address connected to, once known.
    pub addr: Option<SocketAddr>,
    pub stage: Stage,
    /// Boxed: errors travel in `Result`s on every command.
    pub kind: Box<HopErrorKind>,
}

impl fmt::Display for HopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(addr) => write!(
                f,
                "next hop {} ({addr}) at {}: {}",
                self.hop, self.stage, self.kind
            ),
            None => write!(f, "next hop {} at {}: {}", self.hop, self.stage, self.kind),
        }
    }
}

impl std::error::Error for HopError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.kind.as_ref())
    }
}

/// The text of every reply we make up for a next-hop failure of ours.
pub const UNAVAILABLE: &str = "Next hop unavailable, try again later";

impl HopError {
    /// The connection is gone (closed, reset, timed out, or the hop said `421`): the
    /// hop answered nothing more, so a fresh connection may be tried.
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            *self.kind,
            HopErrorKind::Closed
                | HopErrorKind::Io(_)
                | HopErrorKind::Timeout
                | HopErrorKind::ServiceClosing(_)
        )
    }

    /// The reply for our sender, without any internal detail. Pure: see
    /// `From<&HopError> for Reply`, which also logs.
    pub fn safe_reply(&self) -> Reply {
        let enhanced = match self.kind.as_ref() {
            // RFC 3463: X.4.1 no answer from host, X.4.2 bad connection.
            HopErrorKind::Connect(_) | HopErrorKind::Refused(_) => "4.4.1",
            HopErrorKind::Timeout if self.stage == Stage::Connect => "4.4.1",
            HopErrorKind::Timeout
            | HopErrorKind::Closed
            | HopErrorKind::Io(_)
            | HopErrorKind::ServiceClosing(_) => "4.4.2",
            // X.5.0: other or undefined protocol status.
            HopErrorKind::Protocol(_) => "4.5.0",
            // X.7.4 security features not supported, X.7.5 cryptographic failure.
            HopErrorKind::TlsNotOffered { .. } => "4.7.4",
            HopErrorKind::TlsName | HopErrorKind::Tls(_) => "4.7.5",
        };
        Reply::new(451, enhanced, UNAVAILABLE)
    }

    /// Logs the failure at WARN with the hop, its address and the cause (OS error,
    /// the hop's own text).
    pub fn log(&self) {
        tracing::warn!(
            hop = %self.hop,
            addr = ?self.addr,
            stage = %self.stage,
            error = %self.kind,
            "next hop failure"
        );
    }
}

/// The one mapping from a next-hop failure to what our sender is told: always a `4xx`
/// (the sender keeps the message), never a name, address or OS error. Logs the
/// details at WARN.
impl From<&HopError> for Reply {
    fn from(e: &HopError) -> Reply {
        e.log();
        e.safe_reply()
    }
}

impl From<HopError> for Reply {
    fn from(e: HopError) -> Reply {
        Reply::from(&e)
    }
}

/// How sending a message (DATA, the message, the final `.`) failed. A reply of the
/// hop's is not an error: it is returned as `Ok` and passed on.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The connection was dead before the message was handed over: the DATA command
    /// failed (write error, EOF, timeout or `421` before the `354`), or the connection
    /// broke while the message was written and the final `.` never went out. Nothing
    /// was delivered (RFC 5321 §4.1.1.4: only the `.` completes the message): replay
    /// the envelope on a fresh connection and send once more.
    #[error("not handed over: {0}")]
    NotHandedOver(HopError),
    /// The final `.` went out and no reply came (EOF, reset, timeout): the hop may have
    /// the message. Answer `4xx` and never resend on our own; the sender's retry may
    /// duplicate it, which is better than losing it.
    #[error("delivery state unknown: {0}")]
    Unknown(HopError),
    /// The hop broke the protocol (a `2xx` to DATA, a `3xx` after the `.`, a garbled
    /// reply): `4xx`, close the connection, do not resend.
    #[error("protocol violation: {0}")]
    Protocol(HopError),
}

impl DataError {
    pub fn hop_error(&self) -> &HopError {
        match self {
            DataError::NotHandedOver(e) | DataError::Unknown(e) | DataError::Protocol(e) => e,
        }
    }
}

/// The reply for our sender (always `4xx`, nothing internal); logs the details.
impl From<&DataError> for Reply {
    fn from(e: &DataError) -> Reply {
        match e {
            DataError::Unknown(inner) => {
                inner.log();
                tracing::warn!(
                    hop = %inner.hop,
                    "connection lost after the message was sent: the hop may have it; \
                     the sender's retry may duplicate it"
                );
                Reply::new(
                    451,
                    "4.4.2",
                    "Connection to the next hop lost after the message was sent; \
                     try again later",
                )
            }
            DataError::NotHandedOver(inner) | DataError::Protocol(inner) => Reply::from(inner),
        }
    }
}

impl From<DataError> for Reply {
    fn from(e: DataError) -> Reply {
        Reply::from(&e)
    }
}

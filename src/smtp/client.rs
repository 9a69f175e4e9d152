//! The SMTP client side: one connection to a next hop (the internal server inbound,
//! the smarthost outbound), with STARTTLS at the hop's level (`tls`), the ESMTP
//! parameters passed on when the hop offers them, PIPELINING (RFC 2920) for the
//! envelope, and XFORWARD for a Postfix hop.
//!
//! The hop's replies are kept as they are (its 4xx stays 4xx, its 5xx stays 5xx: they
//! are its verdict), only sanitised (`wire`). Everything else — a failed connection,
//! a reply out of sequence, an unsolicited line, a TLS level not met — is a typed
//! [`HopError`] / [`DataError`] whose one mapping to a [`Reply`] is a `4xx` that names
//! nothing internal (`error`). A [`Connection`] knows whether it is between
//! transactions, inside one, or broken, so the pool never reuses a broken one.
//!
//! The connection pool and the envelope replay that use this are in
//! [`crate::relay::hops`].

mod error;
mod legacy;
pub mod tls;
mod wire;
mod xforward;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
    ReadBuf,
};
use tokio::net::TcpStream;

pub use error::{DataError, HopError, HopErrorKind, ProtocolError, Stage, UNAVAILABLE};
pub use tls::{HopTls, TlsConfigError, TlsPolicies};
pub use xforward::XforwardAttrs;

use super::command::{MailParams, RcptParams};
use super::reply::Reply;
use crate::config::{NextHopTls, RelayConfig};

/// How to reach next hops: our EHLO name, timeouts, and each hop's TLS settings.
#[derive(Clone)]
pub struct ClientConfig {
    /// Name sent in EHLO.
    pub hostname: String,
    pub connect_timeout: Duration,
    /// For each reply, and for each 64 KiB of a message written.
    pub reply_timeout: Duration,
    tls: Arc<TlsPolicies>,
}

impl ClientConfig {
    /// One TLS level for every hop (`verify` trusts Debian's system roots). For
    /// per-hop settings use [`ClientConfig::from_relay_config`].
    pub fn new(
        hostname: String,
        connect_timeout: Duration,
        reply_timeout: Duration,
        tls: NextHopTls,
    ) -> Result<Self, TlsConfigError> {
        let defaults = RelayConfig::default();
        Ok(ClientConfig {
            hostname,
            connect_timeout,
            reply_timeout,
            tls: Arc::new(TlsPolicies::uniform(tls, &defaults.next_hop_ca_file)?),
        })
    }

    /// From `[relay]`: timeouts, `next_hop_tls`, `next_hop_ca_file` and every
    /// `[relay.hop."…"]` section. Relative CA paths resolve against `data_dir`. A CA
    /// file that cannot be read is an error here, at start-up, not per message.
    pub fn from_relay_config(
        hostname: String,
        relay: &RelayConfig,
        data_dir: &Path,
    ) -> Result<Self, TlsConfigError> {
        let resolve = |p: &Path| -> PathBuf {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                data_dir.join(p)
            }
        };
        Ok(ClientConfig {
            hostname,
            connect_timeout: Duration::from_secs(relay.connect_timeout_secs),
            reply_timeout: Duration::from_secs(relay.reply_timeout_secs),
            tls: Arc::new(TlsPolicies::from_config(relay, &resolve)?),
        })
    }

    /// The TLS settings that apply to `hop`.
    pub fn tls_for(&self, hop: &str) -> &HopTls {
        self.tls.for_hop(hop)
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What the next hop offered in its EHLO reply (RFC 5321 §4.1.1.1).
#[derive(Debug, Clone, Default)]
pub struct Extensions {
    pub pipelining: bool,
    pub size: Option<u64>,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub starttls: bool,
    /// The attributes offered after XFORWARD (upper case); empty: not offered.
    pub xforward: Vec<String>,
}

impl Extensions {
    fn parse(reply: &Reply) -> Self {
        let mut ext = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let keyword = words.next().unwrap_or("").to_ascii_uppercase();
            match keyword.as_str() {
                "PIPELINING" => ext.pipelining = true,
                "SIZE" => ext.size = words.next().and_then(|n| n.parse().ok()).filter(|n| *n > 0),
                "8BITMIME" => ext.eight_bit_mime = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "DSN" => ext.dsn = true,
                "STARTTLS" => ext.starttls = true,
                "XFORWARD" => ext.xforward = words.map(|w| w.to_ascii_uppercase()).collect(),
                _ => {}
            }
        }
        ext
    }
}

/// Where a connection stands (RFC 5321 §3.3: a transaction runs from MAIL to the
/// reply to the final `.`, or to RSET).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Greeted, between transactions: may be reused.
    Idle,
    /// After an accepted MAIL: needs the end of data or RSET before reuse.
    InTransaction,
    /// A failure left it in an unknown state: only to be dropped.
    Broken,
}

/// Replies to one envelope sent with [`Connection::envelope`].
#[derive(Debug, Clone)]
pub struct EnvelopeReplies {
    /// The reply to MAIL (or our own refusal when the hop lacks SMTPUTF8).
    pub mail: Reply,
    /// One reply per recipient, in order; empty when MAIL was refused and the
    /// recipients were not sent.
    pub rcpts: Vec<Reply>,
}

/// Bytes written per timed write: a hop that stops reading fails within one reply
/// timeout per chunk, and a large message is not bound by one timeout in all.
const WRITE_CHUNK: usize = 64 * 1024;

/// An open, greeted connection to a next hop.
pub struct Connection {
    io: BufReader<Stream>,
    /// The hop as configured (`host:port`).
    pub hop: String,
    /// The address connected to.
    pub addr: SocketAddr,
    pub extensions: Extensions,
    /// STARTTLS is in force.
    pub tls: bool,
    reply_timeout: Duration,
    phase: Phase,
}

impl Connection {
    /// Connects, reads the greeting (RFC 5321 §3.1), says EHLO (HELO when refused),
    /// and starts TLS at the hop's level (RFC 3207), then says EHLO again.
    pub async fn connect(config: &ClientConfig, hop: &str) -> Result<Connection, HopError> {
        let fail = |kind| HopError {
            hop: hop.to_string(),
            addr: None,
            stage: Stage::Connect,
            kind: Box::new(kind),
        };
        let tcp = tokio::time::timeout(config.connect_timeout, TcpStream::connect(hop))
            .await
            .map_err(|_| fail(HopErrorKind::Timeout))?
            .map_err(|e| fail(HopErrorKind::Connect(e)))?;
        let _ = tcp.set_nodelay(true);
        let addr = tcp
            .peer_addr()
            .map_err(|e| fail(HopErrorKind::Connect(e)))?;
        let mut conn = Connection {
            io: BufReader::new(Stream::Plain(tcp)),
            hop: hop.to_string(),
            addr,
            extensions: Extensions::default(),
            tls: false,
            reply_timeout: config.reply_timeout,
            phase: Phase::Idle,
        };
        let greeting = conn.read_reply(Stage::Greeting).await?;
        match greeting.code {
            220 => {}
            421 => return Err(conn.fail(Stage::Greeting, HopErrorKind::ServiceClosing(greeting))),
            // RFC 5321 §3.1: 554 means "no service here" (for us, not for the message).
            400..600 => return Err(conn.fail(Stage::Greeting, HopErrorKind::Refused(greeting))),
            _ => return Err(conn.out_of_sequence(Stage::Greeting, "the greeting", greeting)),
        }
        conn.ensure_quiet(Stage::Greeting)?;
        conn.ehlo(&config.hostname).await?;
        let tls = config.tls_for(hop);
        let want_tls = match tls.level {
            NextHopTls::Off => false,
            NextHopTls::Opportunistic => conn.extensions.starttls,
            level @ (NextHopTls::Required | NextHopTls::Verify | NextHopTls::Pin) => {
                if !conn.extensions.starttls {
                    return Err(conn.fail(
                        Stage::StartTls,
                        HopErrorKind::TlsNotOffered {
                            level: level.as_str(),
                        },
                    ));
                }
                true
            }
        };
        if want_tls {
            conn = conn.start_tls(config, tls).await?;
            conn.ehlo(&config.hostname).await?;
        }
        tracing::debug!(hop = %conn.hop, addr = %conn.addr, tls = conn.tls, "next hop connected");
        Ok(conn)
    }

    async fn start_tls(mut self, config: &ClientConfig, tls: &HopTls) -> Result<Self, HopError> {
        let reply = self.command(Stage::StartTls, "STARTTLS").await?;
        if reply.code != 220 {
            return Err(self.fail(Stage::StartTls, HopErrorKind::Refused(reply)));
        }
        // Anything after the 220 would be read as if it came over TLS (RFC 3207 §4.2
        // discards it; we drop the connection: plaintext injection).
        self.ensure_quiet(Stage::StartTls)?;
        let Some(name) = tls::server_name(&self.hop, tls) else {
            return Err(self.fail(Stage::StartTls, HopErrorKind::TlsName));
        };
        let (hop, addr) = (self.hop.clone(), self.addr);
        let fail = |kind| HopError {
            hop: hop.clone(),
            addr: Some(addr),
            stage: Stage::StartTls,
            kind: Box::new(kind),
        };
        let Stream::Plain(tcp) = self.io.into_inner() else {
            return Err(fail(HopErrorKind::Refused(reply)));
        };
        let connector = tokio_rustls::TlsConnector::from(tls.rustls());
        let stream = tokio::time::timeout(config.connect_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| fail(HopErrorKind::Timeout))?
            .map_err(|e| fail(HopErrorKind::Tls(e)))?;
        Ok(Connection {
            io: BufReader::new(Stream::Tls(Box::new(stream))),
            hop: self.hop,
            addr,
            extensions: Extensions::default(),
            tls: true,
            reply_timeout: self.reply_timeout,
            phase: Phase::Idle,
        })
    }

    async fn ehlo(&mut self, hostname: &str) -> Result<(), HopError> {
        let reply = self
            .command(Stage::Ehlo, &format!("EHLO {hostname}"))
            .await?;
        match reply.code {
            250 => {
                self.extensions = Extensions::parse(&reply);
                return Ok(());
            }
            421 => return Err(self.fail(Stage::Ehlo, HopErrorKind::ServiceClosing(reply))),
            400..600 => {}
            _ => return Err(self.out_of_sequence(Stage::Ehlo, "EHLO", reply)),
        }
        // RFC 5321 §3.2: a server that does not know EHLO gets HELO.
        let reply = self
            .command(Stage::Ehlo, &format!("HELO {hostname}"))
            .await?;
        match reply.code {
            250 => {
                self.extensions = Extensions::default();
                Ok(())
            }
            421 => Err(self.fail(Stage::Ehlo, HopErrorKind::ServiceClosing(reply))),
            400..600 => Err(self.fail(Stage::Ehlo, HopErrorKind::Refused(reply))),
            _ => Err(self.out_of_sequence(Stage::Ehlo, "HELO", reply)),
        }
    }

    /// Marks the connection broken and makes the error.
    fn fail(&mut self, stage: Stage, kind: HopErrorKind) -> HopError {
        self.phase = Phase::Broken;
        HopError {
            hop: self.hop.clone(),
            addr: Some(self.addr),
            stage,
            kind: Box::new(kind),
        }
    }

    fn out_of_sequence(&mut self, stage: Stage, command: &'static str, reply: Reply) -> HopError {
        self.fail(
            stage,
            HopErrorKind::Protocol(ProtocolError::OutOfSequence { command, reply }),
        )
    }

    /// True between transactions, when the connection may go back to the pool.
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// True when a failure left the connection unusable.
    pub fn is_broken(&self) -> bool {
        self.phase == Phase::Broken
    }

    /// Nothing must have been read beyond the replies asked for: more means the hop
    /// answered a command never sent (or injected text before TLS).
    fn ensure_quiet(&mut self, stage: Stage) -> Result<(), HopError> {
        if self.io.buffer().is_empty() {
            return Ok(());
        }
        let reply = wire::clean_text(&self.io.buffer()[..self.io.buffer().len().min(80)]);
        Err(self.fail(
            stage,
            HopErrorKind::Protocol(ProtocolError::Unsolicited { reply }),
        ))
    }

    /// Checks, without waiting, that the hop sent nothing since its last reply. An idle
    /// connection the hop has closed shows EOF here, or a `421` it sent before
    /// closing (Postfix: "421 4.4.2 … Error: timeout exceeded"); any other input is a
    /// reply to a command never sent. Use before reusing a pooled connection.
    pub async fn probe(&mut self, stage: Stage) -> Result<(), HopError> {
        if self.phase == Phase::Broken {
            return Err(self.fail(stage, HopErrorKind::Closed));
        }
        let ready = std::future::poll_fn(|cx| {
            Poll::Ready(match Pin::new(&mut self.io).poll_fill_buf(cx) {
                Poll::Ready(Ok(buf)) => Some(Ok(buf.len())),
                Poll::Ready(Err(e)) => Some(Err(e)),
                Poll::Pending => None,
            })
        })
        .await;
        match ready {
            None => Ok(()),
            Some(Ok(0)) => Err(self.fail(stage, HopErrorKind::Closed)),
            Some(Err(e)) => Err(self.fail(stage, HopErrorKind::Io(e))),
            Some(Ok(_)) => {
                let reply = self.read_reply(stage).await?;
                if reply.code == 421 {
                    return Err(self.fail(stage, HopErrorKind::ServiceClosing(reply)));
                }
                Err(self.fail(
                    stage,
                    HopErrorKind::Protocol(ProtocolError::Unsolicited {
                        reply: reply.to_string(),
                    }),
                ))
            }
        }
    }

    async fn write(&mut self, stage: Stage, bytes: &[u8]) -> Result<(), HopError> {
        self.write_unflushed(stage, bytes).await?;
        self.flush(stage).await
    }

    /// Writes `bytes` in pieces of at most [`WRITE_CHUNK`], each under the reply timeout.
    async fn write_unflushed(&mut self, stage: Stage, bytes: &[u8]) -> Result<(), HopError> {
        let timeout = self.reply_timeout;
        for chunk in bytes.chunks(WRITE_CHUNK) {
            let stream = self.io.get_mut();
            let written = tokio::time::timeout(timeout, stream.write_all(chunk)).await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(self.fail(stage, HopErrorKind::Io(e))),
                Err(_) => return Err(self.fail(stage, HopErrorKind::Timeout)),
            }
        }
        Ok(())
    }

    async fn flush(&mut self, stage: Stage) -> Result<(), HopError> {
        let timeout = self.reply_timeout;
        let stream = self.io.get_mut();
        match tokio::time::timeout(timeout, stream.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.fail(stage, HopErrorKind::Io(e))),
            Err(_) => Err(self.fail(stage, HopErrorKind::Timeout)),
        }
    }

    /// The message dot-stuffed and terminated, written piece by piece: never a second
    /// copy of a large message (a piece is about [`WRITE_CHUNK`] bytes).
    async fn write_message(&mut self, message: &[u8]) -> Result<(), HopError> {
        let mut stuffed = DotStuffed::new(message);
        let mut piece = Vec::with_capacity(WRITE_CHUNK + 1024);
        loop {
            piece.clear();
            if !stuffed.fill(&mut piece, WRITE_CHUNK) {
                break;
            }
            self.write_unflushed(Stage::Message, &piece).await?;
        }
        self.flush(Stage::Message).await
    }

    /// Reads one (possibly multi-line) reply, strictly and sanitised (`wire`).
    async fn read_reply(&mut self, stage: Stage) -> Result<Reply, HopError> {
        let mut parser = wire::ReplyParser::default();
        let mut line = Vec::with_capacity(128);
        loop {
            line.clear();
            let timeout = self.reply_timeout;
            let read = tokio::time::timeout(timeout, async {
                let mut limited = (&mut self.io).take(wire::MAX_LINE as u64);
                limited.read_until(b'\n', &mut line).await
            })
            .await;
            match read {
                Err(_) => return Err(self.fail(stage, HopErrorKind::Timeout)),
                Ok(Err(e)) => return Err(self.fail(stage, HopErrorKind::Io(e))),
                Ok(Ok(0)) => return Err(self.fail(stage, HopErrorKind::Closed)),
                Ok(Ok(_)) if line.last() != Some(&b'\n') => {
                    // Cut off by the limit, or by the end of the connection.
                    let kind = if line.len() >= wire::MAX_LINE {
                        HopErrorKind::Protocol(ProtocolError::LineTooLong {
                            limit: wire::MAX_LINE,
                        })
                    } else {
                        HopErrorKind::Closed
                    };
                    return Err(self.fail(stage, kind));
                }
                Ok(Ok(_)) => {}
            }
            match parser.push(&line) {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(e) => return Err(self.fail(stage, HopErrorKind::Protocol(e))),
            }
        }
    }

    /// Sends one command line and reads its reply, after checking that the hop sent
    /// nothing unasked ([`Connection::probe`]).
    async fn command(&mut self, stage: Stage, line: &str) -> Result<Reply, HopError> {
        self.probe(stage).await?;
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.write(stage, &bytes).await?;
        self.read_reply(stage).await
    }

    /// A reply to MAIL, RCPT, RSET or XFORWARD: `2xx`, `4xx` or `5xx` (RFC 5321
    /// §4.3.2). `421` means the hop is closing; `3xx` is out of sequence.
    fn completion(&mut self, stage: Stage, reply: Reply) -> Result<Reply, HopError> {
        match reply.code {
            421 => Err(self.fail(stage, HopErrorKind::ServiceClosing(reply))),
            300..400 => Err(self.out_of_sequence(stage, stage.as_str(), reply)),
            _ => Ok(reply),
        }
    }

    /// XFORWARD with the attributes the hop offers (before MAIL, never inside a
    /// transaction). `Ok(None)` when the hop offers no XFORWARD; a refusal is
    /// returned, not an error (the attributes only inform the hop's logs and checks).
    pub async fn xforward(&mut self, attrs: &XforwardAttrs) -> Result<Option<Reply>, HopError> {
        let mut last = None;
        for line in attrs.commands(&self.extensions.xforward) {
            let reply = self.command(Stage::Xforward, &line).await?;
            let reply = self.completion(Stage::Xforward, reply)?;
            if reply.code != 250 {
                tracing::info!(hop = %self.hop, reply = %reply, "next hop refused XFORWARD");
                return Ok(Some(reply));
            }
            last = Some(reply);
        }
        Ok(last)
    }

    /// The envelope in one go: XFORWARD (when given and offered), MAIL, and each
    /// recipient, pipelined when the hop offers PIPELINING (RFC 2920: one round trip),
    /// otherwise one command at a time (no RCPT after a refused MAIL). `size` is the
    /// size of what will be sent (the transformed message may be larger).
    pub async fn envelope(
        &mut self,
        xforward: Option<&XforwardAttrs>,
        from: &str,
        params: &MailParams,
        size: Option<u64>,
        recipients: &[(&str, &RcptParams)],
    ) -> Result<EnvelopeReplies, HopError> {
        let mail = match self.mail_line(from, params, size) {
            Ok(line) => line,
            Err(refusal) => {
                return Ok(EnvelopeReplies {
                    mail: refusal,
                    rcpts: Vec::new(),
                });
            }
        };
        let xforward = xforward
            .map(|x| x.commands(&self.extensions.xforward))
            .unwrap_or_default();
        let rcpts: Vec<String> = recipients
            .iter()
            .map(|(to, p)| self.rcpt_line(to, p))
            .collect();
        if !self.extensions.pipelining {
            for line in &xforward {
                let reply = self.command(Stage::Xforward, line).await?;
                self.completion(Stage::Xforward, reply)?;
            }
            let mail = self.command(Stage::Mail, &mail).await?;
            let mail = self.mail_reply(mail)?;
            let mut replies = Vec::new();
            if mail.code / 100 == 2 {
                for line in &rcpts {
                    let reply = self.command(Stage::Rcpt, line).await?;
                    replies.push(self.completion(Stage::Rcpt, reply)?);
                }
            }
            return Ok(EnvelopeReplies {
                mail,
                rcpts: replies,
            });
        }
        self.probe(Stage::Mail).await?;
        let mut group = String::new();
        for line in xforward.iter().chain([&mail]).chain(&rcpts) {
            group.push_str(line);
            group.push_str("\r\n");
        }
        self.write(Stage::Mail, group.as_bytes()).await?;
        for _ in &xforward {
            let reply = self.read_reply(Stage::Xforward).await?;
            let reply = self.completion(Stage::Xforward, reply)?;
            if reply.code != 250 {
                tracing::info!(hop = %self.hop, reply = %reply, "next hop refused XFORWARD");
            }
        }
        let mail = self.read_reply(Stage::Mail).await?;
        let mail = self.mail_reply(mail)?;
        let mut replies = Vec::with_capacity(rcpts.len());
        for _ in &rcpts {
            let reply = self.read_reply(Stage::Rcpt).await?;
            replies.push(self.completion(Stage::Rcpt, reply)?);
        }
        self.ensure_quiet(Stage::Rcpt)?;
        Ok(EnvelopeReplies {
            mail,
            rcpts: replies,
        })
    }

    fn mail_reply(&mut self, reply: Reply) -> Result<Reply, HopError> {
        let reply = self.completion(Stage::Mail, reply)?;
        if reply.code / 100 == 2 {
            self.phase = Phase::InTransaction;
        }
        Ok(reply)
    }

    /// MAIL FROM with the parameters the hop understands (RFC 5321 §4.1.1.2). A refusal
    /// is `Ok`: the hop's reply, or ours when the hop lacks SMTPUTF8 (RFC 6531 §3.4).
    pub async fn send_mail(
        &mut self,
        from: &str,
        params: &MailParams,
        size: Option<u64>,
    ) -> Result<Reply, HopError> {
        match self.mail_line(from, params, size) {
            Ok(line) => {
                let reply = self.command(Stage::Mail, &line).await?;
                self.mail_reply(reply)
            }
            Err(refusal) => Ok(refusal),
        }
    }

    /// RCPT TO with the DSN parameters when offered (RFC 5321 §4.1.1.3, RFC 3461). A
    /// refusal is `Ok` (the hop's verdict on this recipient).
    pub async fn send_rcpt(&mut self, to: &str, params: &RcptParams) -> Result<Reply, HopError> {
        let line = self.rcpt_line(to, params);
        let reply = self.command(Stage::Rcpt, &line).await?;
        self.completion(Stage::Rcpt, reply)
    }

    fn mail_line(
        &self,
        from: &str,
        params: &MailParams,
        size: Option<u64>,
    ) -> Result<String, Reply> {
        let mut line = format!("MAIL FROM:<{from}>");
        if let (Some(size), Some(_)) = (size, self.extensions.size) {
            line.push_str(&format!(" SIZE={size}"));
        }
        if let Some(body) = &params.body
            && self.extensions.eight_bit_mime
        {
            line.push_str(&format!(" BODY={body}"));
        }
        if params.smtputf8 {
            if !self.extensions.smtputf8 {
                return Err(Reply::new(
                    553,
                    "5.6.7",
                    "The next hop does not support SMTPUTF8, which this message needs",
                ));
            }
            line.push_str(" SMTPUTF8");
        }
        if self.extensions.dsn {
            if let Some(ret) = &params.ret {
                line.push_str(&format!(" RET={ret}"));
            }
            if let Some(envid) = &params.envid {
                line.push_str(&format!(" ENVID={envid}"));
            }
        }
        Ok(line)
    }

    fn rcpt_line(&self, to: &str, params: &RcptParams) -> String {
        let mut line = format!("RCPT TO:<{to}>");
        if self.extensions.dsn {
            if let Some(notify) = &params.notify {
                line.push_str(&format!(" NOTIFY={notify}"));
            }
            if let Some(orcpt) = &params.orcpt {
                line.push_str(&format!(" ORCPT={orcpt}"));
            }
        }
        line
    }

    /// DATA, the message (dot-stuffed, CRLF lines, RFC 5321 §4.5.2), and the final
    /// reply (RFC 5321 §4.1.1.4).
    ///
    /// `Ok(reply)` is the hop's verdict: its refusal of DATA (`4xx`/`5xx`, the
    /// transaction still open) or its final reply to the message (the transaction
    /// over). A `421` after the `.` (not accepted, the hop is closing) comes back as a
    /// `451` with the hop's text, since our session is not closing. Failures say
    /// whether the message may have been handed over ([`DataError`]).
    pub async fn send_data(&mut self, message: &[u8]) -> Result<Reply, DataError> {
        let lost_before = |e: HopError| {
            if e.is_connection_lost() {
                DataError::NotHandedOver(e)
            } else {
                DataError::Protocol(e)
            }
        };
        let go = self
            .command(Stage::Data, "DATA")
            .await
            .map_err(lost_before)?;
        match go.code {
            354 => {}
            421 => {
                let e = self.fail(Stage::Data, HopErrorKind::ServiceClosing(go));
                return Err(DataError::NotHandedOver(e));
            }
            400..600 => return Ok(go),
            // A 2xx here would claim a message that was never sent (issue 9, 4).
            _ => {
                return Err(DataError::Protocol(self.out_of_sequence(
                    Stage::Data,
                    "DATA",
                    go,
                )));
            }
        }
        if let Err(e) = self.ensure_quiet(Stage::Data) {
            return Err(DataError::Protocol(e));
        }
        // The final "." is in the last bytes written: if any write fails, it did not
        // go out, and the hop must not deliver an unterminated message.
        self.write_message(message)
            .await
            .map_err(DataError::NotHandedOver)?;
        let reply = match self.read_reply(Stage::EndOfData).await {
            Ok(reply) => reply,
            Err(e) if e.is_connection_lost() => return Err(DataError::Unknown(e)),
            Err(e) => return Err(DataError::Protocol(e)),
        };
        match reply.code {
            421 => {
                self.phase = Phase::Broken;
                tracing::warn!(hop = %self.hop, addr = %self.addr, reply = %reply, "next hop closed at the end of data");
                Ok(Reply {
                    code: 451,
                    enhanced: if reply.enhanced.is_empty() {
                        "4.4.2".into()
                    } else {
                        reply.enhanced
                    },
                    lines: reply.lines,
                })
            }
            300..400 => Err(DataError::Protocol(self.out_of_sequence(
                Stage::EndOfData,
                "the end of data",
                reply,
            ))),
            _ => {
                self.phase = Phase::Idle;
                if !self.io.buffer().is_empty() {
                    // More than the one reply: answer with it, but never reuse.
                    let _ = self.ensure_quiet(Stage::EndOfData);
                }
                Ok(reply)
            }
        }
    }

    /// RSET (RFC 5321 §4.1.1.5): ends a transaction so the connection can be reused.
    pub async fn reset(&mut self) -> Result<(), HopError> {
        let reply = self.command(Stage::Rset, "RSET").await?;
        let reply = self.completion(Stage::Rset, reply)?;
        if reply.code != 250 {
            // Still connected: the caller may QUIT politely.
            return Err(HopError {
                hop: self.hop.clone(),
                addr: Some(self.addr),
                stage: Stage::Rset,
                kind: Box::new(HopErrorKind::Refused(reply)),
            });
        }
        self.phase = Phase::Idle;
        Ok(())
    }

    /// QUIT (RFC 5321 §4.1.1.10) when the connection is usable, then closes it.
    pub async fn quit(mut self) {
        if self.phase != Phase::Broken {
            let _ = self.command(Stage::Quit, "QUIT").await;
        }
        let _ = self.io.get_mut().shutdown().await;
    }
}

/// The message as DATA carries it: CRLF line ends, a leading "." doubled (RFC 5321
/// §4.5.2), and the terminating `.` line — produced in pieces, so a large message is
/// not copied whole.
struct DotStuffed<'a> {
    rest: &'a [u8],
    ended: bool,
}

impl<'a> DotStuffed<'a> {
    fn new(message: &'a [u8]) -> Self {
        DotStuffed {
            rest: message,
            ended: false,
        }
    }

    /// Appends the next lines to `out` until it holds at least `want` bytes or the
    /// terminating `.` line was added. False once everything was given.
    fn fill(&mut self, out: &mut Vec<u8>, want: usize) -> bool {
        if self.ended {
            return false;
        }
        while out.len() < want {
            if self.rest.is_empty() {
                out.extend_from_slice(b".\r\n");
                self.ended = true;
                break;
            }
            let end = memchr::memchr(b'\n', self.rest).map_or(self.rest.len(), |i| i + 1);
            let (line, rest) = self.rest.split_at(end);
            self.rest = rest;
            let content = line
                .strip_suffix(b"\n")
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .unwrap_or(line);
            if content.first() == Some(&b'.') {
                out.push(b'.');
            }
            out.extend_from_slice(content);
            out.extend_from_slice(b"\r\n");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_and_line_ends() {
        fn dot_stuff(message: &[u8], want: usize) -> Vec<u8> {
            let mut stuffed = DotStuffed::new(message);
            let mut out = Vec::new();
            let mut piece = Vec::new();
            while {
                piece.clear();
                stuffed.fill(&mut piece, want)
            } {
                assert!(!piece.is_empty());
                out.extend_from_slice(&piece);
            }
            out
        }
        for want in [1, 3, 1000] {
            assert_eq!(
                dot_stuff(b"a\n.b\r\n..c", want),
                b"a\r\n..b\r\n...c\r\n.\r\n"
            );
            assert_eq!(dot_stuff(b"", want), b".\r\n");
            assert_eq!(dot_stuff(b"x\r\n", want), b"x\r\n.\r\n");
        }
    }

    #[test]
    fn xforward_attributes_are_read_from_ehlo() {
        let reply = Reply::multiline(
            250,
            "",
            vec![
                "mx".into(),
                "XFORWARD NAME addr PROTO HELO".into(),
                "PIPELINING".into(),
            ],
        );
        let ext = Extensions::parse(&reply);
        assert!(ext.pipelining);
        assert_eq!(ext.xforward, ["NAME", "ADDR", "PROTO", "HELO"]);
    }
}

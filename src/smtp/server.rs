//! The SMTP server side: one explicit state machine per session (RFC 5321), with
//! PIPELINING, SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, DSN and STARTTLS, and
//! limits on everything a client controls: line length, header size, message size,
//! recipients, time per command, time per session, sessions at once.
//!
//! What to do with a transaction is the [`Handler`]'s business; this module only
//! speaks the protocol. The reply to the end of DATA is whatever the handler returns,
//! and the handler returns only once the message has been dealt with, so a session
//! that dies before that reply has handed nothing over (no custody).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

use super::command::{self, Command, MailParams, RcptParams};
use super::reply::Reply;

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

#[derive(Clone)]
pub struct ServerConfig {
    pub hostname: String,
    pub listener: Listener,
    pub max_connections: usize,
    pub max_line_bytes: usize,
    pub max_header_bytes: usize,
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    pub command_timeout: Duration,
    pub session_deadline: Duration,
    /// STARTTLS is offered when set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// What the handler knows about the session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: String,
    pub peer: SocketAddr,
    pub listener: Listener,
    pub helo: String,
    pub tls: bool,
    /// The submitter authenticated with SMTP AUTH, if any.
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

    /// The whole message (dot-unstuffed, CRLF lines). The reply is the answer to the
    /// end of DATA.
    fn data(
        &self,
        session: &SessionInfo,
        transaction: Self::Transaction,
        message: Vec<u8>,
    ) -> impl Future<Output = Reply> + Send;

    /// A transaction that ended without DATA (RSET, a new MAIL, QUIT, a dropped
    /// connection, a message refused as too large): for the log.
    fn abandon(
        &self,
        session: &SessionInfo,
        transaction: Self::Transaction,
        reply: Option<&Reply>,
    ) -> impl Future<Output = ()> + Send;
}

/// Accepts sessions until `shutdown` turns true; each runs in its own task.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    config: ServerConfig,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let config = Arc::new(config);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let id = session_id();
        let span = tracing::info_span!("smtp", session = %id, peer = %peer, listener = config.listener.as_str());
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let mut stream = stream;
            tokio::spawn(
                async move {
                    tracing::warn!("too many sessions: refused");
                    let reply = Reply::new(421, "4.3.2", "Too many connections, try again later");
                    let _ = stream.write_all(&reply.to_wire()).await;
                    let _ = stream.shutdown().await;
                }
                .instrument(span),
            );
            continue;
        };
        let config = config.clone();
        let handler = handler.clone();
        tokio::spawn(
            async move {
                let info = SessionInfo {
                    id,
                    peer,
                    listener: config.listener,
                    helo: String::new(),
                    tls: false,
                    authenticated: None,
                };
                run_session(stream, info, &config, handler.as_ref()).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

fn session_id() -> String {
    let mut random = [0u8; 6];
    let _ = getrandom::fill(&mut random);
    hex::encode(random)
}

/// How one pass of the loop ended.
enum Ended<S> {
    Closed,
    StartTls(S),
}

/// Runs a session over any stream (a socket, or TLS over it after STARTTLS).
pub async fn run_session<S, H>(stream: S, mut info: SessionInfo, config: &ServerConfig, handler: &H)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let deadline = Instant::now() + config.session_deadline;
    tracing::info!("session opened");
    let mut io = Io::new(stream, config, deadline);
    io.queue(&Reply::new(
        220,
        "",
        format!("{} ESMTP smimegate", config.hostname),
    ));
    match session_loop(io, &mut info, config, handler).await {
        Ended::Closed => {}
        Ended::StartTls(raw) => {
            let Some(tls) = &config.tls else { return };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
            let handshake =
                tokio::time::timeout(config.command_timeout, acceptor.accept(raw)).await;
            match handshake {
                Ok(Ok(tls_stream)) => {
                    info.tls = true;
                    info.helo.clear();
                    tracing::info!("TLS established");
                    let io = Io::new(tls_stream, config, deadline);
                    // The client must greet again (RFC 3207 §4.2); no new banner.
                    let _ = Box::pin(session_loop(io, &mut info, config, handler)).await;
                }
                Ok(Err(e)) => tracing::info!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::info!("TLS handshake timed out"),
            }
        }
    }
    tracing::info!("session closed");
}

/// The protocol state of a session (RFC 5321 §4.1.4).
enum State<T> {
    /// Waiting for EHLO/HELO.
    Greeted,
    /// EHLO done, no transaction.
    Ready,
    /// MAIL accepted; recipients so far.
    Transaction { tx: T, recipients: usize },
}

async fn session_loop<S, H>(
    mut io: Io<S>,
    info: &mut SessionInfo,
    config: &ServerConfig,
    handler: &H,
) -> Ended<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: Handler,
{
    let mut state: State<H::Transaction> = State::Greeted;
    let mut bad_commands = 0u32;
    loop {
        let line = match io.read_command().await {
            Ok(Line::Text(line)) => line,
            Ok(Line::TooLong) => {
                io.queue(&Reply::new(500, "5.5.2", "Line too long"));
                bad_commands += 1;
                if bad_commands > 10 {
                    break;
                }
                continue;
            }
            Ok(Line::Eof) => break,
            Err(ReadError::Timeout) => {
                io.queue(&Reply::new(
                    421,
                    "4.4.2",
                    format!("{} Timeout, closing", config.hostname),
                ));
                break;
            }
            Err(ReadError::Io(e)) => {
                tracing::info!(error = %e, "connection lost");
                break;
            }
        };
        let Ok(text) = std::str::from_utf8(&line) else {
            io.queue(&Reply::new(500, "5.5.2", "Command is not UTF-8"));
            continue;
        };
        let command = command::parse(text);
        tracing::debug!(command = %text.split(':').next().unwrap_or(""), "command");
        match command {
            Command::Ehlo(domain) | Command::Helo(domain) => {
                let ehlo = text.len() >= 4 && text[..4].eq_ignore_ascii_case("EHLO");
                if let State::Transaction { tx, .. } = std::mem::replace(&mut state, State::Ready) {
                    handler.abandon(info, tx, None).await;
                }
                info.helo = domain;
                io.queue(&if ehlo {
                    ehlo_reply(config, info.tls)
                } else {
                    Reply::new(250, "", config.hostname.clone())
                });
            }
            Command::StartTls => {
                if config.tls.is_none() || info.tls {
                    io.queue(&Reply::new(502, "5.5.1", "STARTTLS not available"));
                } else if !matches!(state, State::Ready | State::Greeted) {
                    io.queue(&Reply::new(503, "5.5.1", "STARTTLS inside a transaction"));
                } else {
                    io.queue(&Reply::new(220, "2.0.0", "Ready to start TLS"));
                    if io.flush().await.is_err() {
                        break;
                    }
                    if io.has_buffered_input() {
                        // RFC 3207 §5: anything pipelined after STARTTLS is an attack.
                        tracing::warn!("plaintext pipelined after STARTTLS: discarded");
                    }
                    return Ended::StartTls(io.into_inner());
                }
            }
            Command::Mail { from, params } => match state {
                State::Greeted => io.queue(&Reply::new(503, "5.5.1", "Say EHLO first")),
                State::Transaction { .. } => {
                    io.queue(&Reply::new(503, "5.5.1", "Nested MAIL command"))
                }
                State::Ready => {
                    if params
                        .size
                        .is_some_and(|s| s > config.max_message_bytes as u64)
                    {
                        io.queue(&Reply::new(
                            552,
                            "5.3.4",
                            format!(
                                "Message size exceeds the limit of {} bytes",
                                config.max_message_bytes
                            ),
                        ));
                    } else {
                        match handler.mail(info, &from, &params).await {
                            Ok(tx) => {
                                io.queue(&Reply::new(250, "2.1.0", "Sender OK"));
                                state = State::Transaction { tx, recipients: 0 };
                            }
                            Err(reply) => io.queue(&reply),
                        }
                    }
                }
            },
            Command::Rcpt { to, params } => match &mut state {
                State::Transaction { tx, recipients } => {
                    if *recipients >= config.max_recipients {
                        io.queue(&Reply::new(452, "4.5.3", "Too many recipients"));
                    } else {
                        let reply = handler.rcpt(info, tx, &to, &params).await;
                        if reply.is_positive() {
                            *recipients += 1;
                        }
                        io.queue(&reply);
                    }
                }
                _ => io.queue(&Reply::new(503, "5.5.1", "Need MAIL before RCPT")),
            },
            Command::Data => {
                let State::Transaction { tx, recipients } =
                    std::mem::replace(&mut state, State::Ready)
                else {
                    io.queue(&Reply::new(503, "5.5.1", "Need MAIL and RCPT before DATA"));
                    continue;
                };
                if recipients == 0 {
                    io.queue(&Reply::new(554, "5.5.1", "No valid recipients"));
                    handler.abandon(info, tx, None).await;
                    continue;
                }
                io.queue(&Reply::new(354, "", "End data with <CR><LF>.<CR><LF>"));
                match io.read_data().await {
                    Ok(Data::Message(message)) => {
                        let reply = handler.data(info, tx, message).await;
                        io.queue(&reply);
                    }
                    Ok(Data::TooLarge) => {
                        let reply = Reply::new(
                            552,
                            "5.3.4",
                            format!(
                                "Message size exceeds the limit of {} bytes",
                                config.max_message_bytes
                            ),
                        );
                        handler.abandon(info, tx, Some(&reply)).await;
                        io.queue(&reply);
                    }
                    Ok(Data::HeaderTooLarge) => {
                        let reply = Reply::new(
                            552,
                            "5.3.4",
                            format!(
                                "Message header exceeds the limit of {} bytes",
                                config.max_header_bytes
                            ),
                        );
                        handler.abandon(info, tx, Some(&reply)).await;
                        io.queue(&reply);
                    }
                    Ok(Data::Eof) | Err(ReadError::Io(_)) => {
                        tracing::info!("connection lost during DATA: nothing relayed");
                        handler.abandon(info, tx, None).await;
                        break;
                    }
                    Err(ReadError::Timeout) => {
                        tracing::info!("timeout during DATA: nothing relayed");
                        handler.abandon(info, tx, None).await;
                        io.queue(&Reply::new(
                            421,
                            "4.4.2",
                            format!("{} Timeout, closing", config.hostname),
                        ));
                        break;
                    }
                }
            }
            Command::Rset => {
                if let State::Transaction { tx, .. } = std::mem::replace(&mut state, State::Ready) {
                    handler.abandon(info, tx, None).await;
                }
                if info.helo.is_empty() {
                    state = State::Greeted;
                }
                io.queue(&Reply::new(250, "2.0.0", "OK"));
            }
            Command::Noop => io.queue(&Reply::new(250, "2.0.0", "OK")),
            Command::Vrfy => io.queue(&Reply::new(
                252,
                "2.5.0",
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Command::Help => io.queue(&Reply::new(
                214,
                "2.0.0",
                "smimegate: EHLO MAIL RCPT DATA RSET NOOP QUIT STARTTLS",
            )),
            Command::Quit => {
                if let State::Transaction { tx, .. } = std::mem::replace(&mut state, State::Ready) {
                    handler.abandon(info, tx, None).await;
                }
                io.queue(&Reply::new(
                    221,
                    "2.0.0",
                    format!("{} closing", config.hostname),
                ));
                let _ = io.flush().await;
                let _ = io.shutdown().await;
                return Ended::Closed;
            }
            Command::Invalid(why) => {
                bad_commands += 1;
                io.queue(&Reply::new(501, "5.5.4", format!("Syntax error: {why}")));
            }
            Command::Unknown => {
                bad_commands += 1;
                io.queue(&Reply::new(500, "5.5.1", "Command not recognised"));
            }
        }
        if bad_commands > 10 {
            io.queue(&Reply::new(421, "4.7.0", "Too many errors, closing"));
            break;
        }
    }
    if let State::Transaction { tx, .. } = state {
        handler.abandon(info, tx, None).await;
    }
    let _ = io.flush().await;
    let _ = io.shutdown().await;
    Ended::Closed
}

fn ehlo_reply(config: &ServerConfig, tls: bool) -> Reply {
    let mut lines = vec![
        config.hostname.clone(),
        "PIPELINING".into(),
        format!("SIZE {}", config.max_message_bytes),
        "8BITMIME".into(),
        "SMTPUTF8".into(),
        "ENHANCEDSTATUSCODES".into(),
        "DSN".into(),
    ];
    if config.tls.is_some() && !tls {
        lines.push("STARTTLS".into());
    }
    Reply::multiline(250, "", lines)
}

enum Line {
    Text(Vec<u8>),
    TooLong,
    Eof,
}

enum Data {
    Message(Vec<u8>),
    TooLarge,
    HeaderTooLarge,
    Eof,
}

enum ReadError {
    Timeout,
    Io(std::io::Error),
}

/// The session's byte stream: buffered reading with limits and timeouts, replies
/// queued and flushed only when the client waits for them (PIPELINING).
struct Io<S> {
    reader: BufReader<S>,
    out: Vec<u8>,
    max_line: usize,
    max_header: usize,
    max_message: usize,
    command_timeout: Duration,
    deadline: Instant,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    fn new(stream: S, config: &ServerConfig, deadline: Instant) -> Self {
        Io {
            reader: BufReader::with_capacity(64 * 1024, stream),
            out: Vec::new(),
            max_line: config.max_line_bytes,
            max_header: config.max_header_bytes,
            max_message: config.max_message_bytes,
            command_timeout: config.command_timeout,
            deadline,
        }
    }

    fn queue(&mut self, reply: &Reply) {
        self.out.extend_from_slice(&reply.to_wire());
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            let out = std::mem::take(&mut self.out);
            let stream = self.reader.get_mut();
            stream.write_all(&out).await?;
            stream.flush().await?;
        }
        Ok(())
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        self.reader.get_mut().shutdown().await
    }

    fn has_buffered_input(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    fn into_inner(self) -> S {
        self.reader.into_inner()
    }

    fn timeout(&self) -> Duration {
        self.command_timeout
            .min(self.deadline.saturating_duration_since(Instant::now()))
    }

    /// Replies are sent before the session would wait for input.
    async fn fill(&mut self) -> Result<usize, ReadError> {
        if self.reader.buffer().is_empty() {
            self.flush().await.map_err(ReadError::Io)?;
        }
        let timeout = self.timeout();
        match tokio::time::timeout(timeout, self.reader.fill_buf()).await {
            Ok(Ok(buf)) => Ok(buf.len()),
            Ok(Err(e)) => Err(ReadError::Io(e)),
            Err(_) => Err(ReadError::Timeout),
        }
    }

    /// One line up to LF, at most `max` bytes kept; longer lines are consumed whole
    /// and reported as too long.
    async fn read_line(
        &mut self,
        max: usize,
        line: &mut Vec<u8>,
    ) -> Result<Option<bool>, ReadError> {
        line.clear();
        let mut too_long = false;
        loop {
            if self.fill().await? == 0 {
                return Ok(None);
            }
            let buf = self.reader.buffer();
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if !too_long {
                if line.len() + take > max {
                    too_long = true;
                    line.clear();
                } else {
                    line.extend_from_slice(&buf[..take]);
                }
            }
            self.reader.consume(take);
            if done {
                return Ok(Some(too_long));
            }
        }
    }

    async fn read_command(&mut self) -> Result<Line, ReadError> {
        let mut line = Vec::new();
        match self.read_line(self.max_line, &mut line).await? {
            None => Ok(Line::Eof),
            Some(true) => Ok(Line::TooLong),
            Some(false) => {
                while matches!(line.last(), Some(b'\n' | b'\r')) {
                    line.pop();
                }
                Ok(Line::Text(line))
            }
        }
    }

    /// The message after 354, up to `<CRLF>.<CRLF>` (only that ends it: a bare-LF dot
    /// line is data, so no message can be smuggled behind another). Dot-stuffing is
    /// undone; every line is stored with CRLF. Beyond the limits the rest is read and
    /// discarded, so the session stays in step.
    async fn read_data(&mut self) -> Result<Data, ReadError> {
        let mut message = Vec::new();
        let mut line = Vec::new();
        let mut in_header = true;
        let mut header_bytes = 0usize;
        let mut too_large = false;
        let mut header_too_large = false;
        // A data line may be long; the message limit bounds it.
        let line_cap = self.max_message.saturating_add(2);
        loop {
            let Some(overlong) = self.read_line(line_cap, &mut line).await? else {
                return Ok(Data::Eof);
            };
            if overlong {
                too_large = true;
                continue;
            }
            let crlf = line.ends_with(b"\r\n");
            let content_end = if crlf {
                line.len() - 2
            } else if line.ends_with(b"\n") {
                line.len() - 1
            } else {
                line.len()
            };
            let content = &line[..content_end];
            if crlf && content == b"." {
                break;
            }
            let content = content.strip_prefix(b".").unwrap_or(content);
            if in_header {
                header_bytes += content.len() + 2;
                if content.is_empty() {
                    in_header = false;
                } else if header_bytes > self.max_header {
                    header_too_large = true;
                }
            }
            if too_large || header_too_large {
                continue;
            }
            if message.len() + content.len() + 2 > self.max_message {
                too_large = true;
                message = Vec::new();
                continue;
            }
            message.extend_from_slice(content);
            message.extend_from_slice(b"\r\n");
        }
        Ok(if header_too_large {
            Data::HeaderTooLarge
        } else if too_large {
            Data::TooLarge
        } else {
            Data::Message(message)
        })
    }
}

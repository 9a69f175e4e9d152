//! The SMTP client side: one connection to a next hop (the internal server inbound,
//! the smarthost outbound), with STARTTLS (opportunistic or required), the ESMTP
//! parameters passed on when the hop offers them, and its replies kept as they are so
//! the relay can hand them back to the sender (its 4xx stays 4xx, its 5xx stays 5xx).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
};
use tokio::net::TcpStream;

use super::command::{MailParams, RcptParams};
use super::reply::Reply;
use crate::config::NextHopTls;

#[derive(Clone)]
pub struct ClientConfig {
    /// Name sent in EHLO.
    pub hostname: String,
    pub connect_timeout: Duration,
    pub reply_timeout: Duration,
    pub tls: NextHopTls,
    pub tls_config: Arc<rustls::ClientConfig>,
}

impl ClientConfig {
    /// TLS towards next hops encrypts but does not authenticate the hop (RFC 7435
    /// opportunistic security; "required" requires encryption): internal servers and
    /// smarthosts commonly present self-signed certificates.
    pub fn new(
        hostname: String,
        connect_timeout: Duration,
        reply_timeout: Duration,
        tls: NextHopTls,
    ) -> Result<Self, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls_config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(OpportunisticVerifier(provider)))
            .with_no_client_auth();
        Ok(ClientConfig {
            hostname,
            connect_timeout,
            reply_timeout,
            tls,
            tls_config: Arc::new(tls_config),
        })
    }
}

/// Accepts any server certificate (opportunistic STARTTLS, RFC 7435) but checks the
/// handshake signatures, so the session is at least encrypted to whoever answered.
#[derive(Debug)]
struct OpportunisticVerifier(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for OpportunisticVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
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

/// What the next hop offered in its EHLO reply.
#[derive(Debug, Clone, Default)]
pub struct Extensions {
    pub pipelining: bool,
    pub size: Option<u64>,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub starttls: bool,
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
                _ => {}
            }
        }
        ext
    }
}

/// An open, greeted connection to a next hop.
pub struct Connection {
    io: BufReader<Stream>,
    pub hop: String,
    pub extensions: Extensions,
    pub tls: bool,
    reply_timeout: Duration,
}

/// A reply made up by us for a failure to talk to the next hop: always temporary, so
/// the sender keeps the message and retries.
fn hop_failure(hop: &str, what: &str) -> Reply {
    Reply::new(
        451,
        "4.4.1",
        format!("Next hop {hop} {what}; try again later"),
    )
}

impl Connection {
    /// Connects, reads the greeting, says EHLO, and starts TLS as configured.
    pub async fn open(config: &ClientConfig, hop: &str) -> Result<Connection, Reply> {
        let tcp = tokio::time::timeout(config.connect_timeout, TcpStream::connect(hop))
            .await
            .map_err(|_| hop_failure(hop, "did not answer in time"))?
            .map_err(|e| hop_failure(hop, &format!("is unreachable ({e})")))?;
        let _ = tcp.set_nodelay(true);
        let mut conn = Connection {
            io: BufReader::new(Stream::Plain(tcp)),
            hop: hop.to_string(),
            extensions: Extensions::default(),
            tls: false,
            reply_timeout: config.reply_timeout,
        };
        let greeting = conn.read_reply().await?;
        if greeting.code != 220 {
            return Err(greeting);
        }
        conn.ehlo(&config.hostname).await?;
        let want_tls = match config.tls {
            NextHopTls::Off => false,
            NextHopTls::Opportunistic => conn.extensions.starttls,
            NextHopTls::Required => {
                if !conn.extensions.starttls {
                    return Err(hop_failure(
                        hop,
                        "does not offer STARTTLS, which is required",
                    ));
                }
                true
            }
        };
        if want_tls {
            let reply = conn.command("STARTTLS").await?;
            if reply.code != 220 {
                return Err(hop_failure(hop, &format!("refused STARTTLS ({reply})")));
            }
            let Stream::Plain(tcp) = conn.io.into_inner() else {
                return Err(hop_failure(hop, "is in TLS already"));
            };
            let host = hop.rsplit_once(':').map_or(hop, |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = rustls_pki_types::ServerName::try_from(host.to_string())
                .map_err(|_| hop_failure(hop, "has a name TLS cannot use"))?;
            let connector = tokio_rustls::TlsConnector::from(config.tls_config.clone());
            let tls = tokio::time::timeout(config.connect_timeout, connector.connect(name, tcp))
                .await
                .map_err(|_| hop_failure(hop, "TLS handshake timed out"))?
                .map_err(|e| hop_failure(hop, &format!("TLS handshake failed ({e})")))?;
            conn = Connection {
                io: BufReader::new(Stream::Tls(Box::new(tls))),
                hop: hop.to_string(),
                extensions: Extensions::default(),
                tls: true,
                reply_timeout: config.reply_timeout,
            };
            conn.ehlo(&config.hostname).await?;
        }
        Ok(conn)
    }

    async fn ehlo(&mut self, hostname: &str) -> Result<(), Reply> {
        let reply = self.command(&format!("EHLO {hostname}")).await?;
        if reply.code == 250 {
            self.extensions = Extensions::parse(&reply);
            return Ok(());
        }
        let reply = self.command(&format!("HELO {hostname}")).await?;
        if reply.code != 250 {
            return Err(reply);
        }
        self.extensions = Extensions::default();
        Ok(())
    }

    /// Sends one command line and reads its reply. An I/O failure is a made-up 451.
    pub async fn command(&mut self, line: &str) -> Result<Reply, Reply> {
        let mut bytes = line.as_bytes().to_vec();
        bytes.extend_from_slice(b"\r\n");
        self.write(&bytes).await?;
        self.read_reply().await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Reply> {
        let hop = self.hop.clone();
        let stream = self.io.get_mut();
        tokio::time::timeout(self.reply_timeout, async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await
        .map_err(|_| hop_failure(&hop, "stopped reading"))?
        .map_err(|e| hop_failure(&hop, &format!("connection failed ({e})")))
    }

    /// Reads one (possibly multi-line) reply.
    pub async fn read_reply(&mut self) -> Result<Reply, Reply> {
        let mut lines = Vec::new();
        let mut code = 0u16;
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = tokio::time::timeout(self.reply_timeout, async {
                let mut limited = (&mut self.io).take(4096);
                limited.read_until(b'\n', &mut line).await
            })
            .await
            .map_err(|_| hop_failure(&self.hop, "did not reply in time"))?
            .map_err(|e| hop_failure(&self.hop, &format!("connection failed ({e})")))?;
            if read == 0 {
                return Err(hop_failure(&self.hop, "closed the connection"));
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            let this_code: u16 = text
                .get(..3)
                .and_then(|c| c.parse().ok())
                .filter(|c| (200..600).contains(c))
                .ok_or_else(|| hop_failure(&self.hop, "sent a malformed reply"))?;
            if code != 0 && this_code != code {
                return Err(hop_failure(&self.hop, "sent a malformed reply"));
            }
            code = this_code;
            let more = text.as_bytes().get(3) == Some(&b'-');
            lines.push(text.get(4..).unwrap_or("").to_string());
            if !more {
                break;
            }
            if lines.len() > 200 {
                return Err(hop_failure(&self.hop, "sent an endless reply"));
            }
        }
        // Split off an enhanced status code at the start of the first line.
        let enhanced = lines
            .first()
            .and_then(|l| l.split_whitespace().next())
            .filter(|w| {
                let parts: Vec<&str> = w.split('.').collect();
                parts.len() == 3
                    && parts
                        .iter()
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(str::to_string)
            .unwrap_or_default();
        if !enhanced.is_empty() {
            for l in lines.iter_mut() {
                if let Some(rest) = l.strip_prefix(&enhanced) {
                    *l = rest.trim_start().to_string();
                }
            }
        }
        Ok(Reply {
            code,
            enhanced,
            lines,
        })
    }

    /// MAIL FROM with the parameters the hop understands. `size` is the size of what
    /// will be sent (the transformed message may be larger than the original).
    pub async fn mail(
        &mut self,
        from: &str,
        params: &MailParams,
        size: Option<u64>,
    ) -> Result<Reply, Reply> {
        match self.mail_line(from, params, size) {
            Ok(line) => self.command(&line).await,
            Err(refusal) => Ok(refusal),
        }
    }

    /// MAIL FROM and the first RCPT TO, in one write when the hop offers PIPELINING
    /// (RFC 2920): one round trip instead of two. Both replies are returned.
    pub async fn mail_and_rcpt(
        &mut self,
        from: &str,
        params: &MailParams,
        size: Option<u64>,
        to: &str,
        rcpt_params: &RcptParams,
    ) -> Result<(Reply, Option<Reply>), Reply> {
        let mail = match self.mail_line(from, params, size) {
            Ok(line) => line,
            Err(refusal) => return Ok((refusal, None)),
        };
        let rcpt = self.rcpt_line(to, rcpt_params);
        if !self.extensions.pipelining {
            let mail_reply = self.command(&mail).await?;
            if !mail_reply.is_positive() {
                return Ok((mail_reply, None));
            }
            let rcpt_reply = self.command(&rcpt).await?;
            return Ok((mail_reply, Some(rcpt_reply)));
        }
        self.write(format!("{mail}\r\n{rcpt}\r\n").as_bytes())
            .await?;
        let mail_reply = self.read_reply().await?;
        let rcpt_reply = self.read_reply().await?;
        Ok((mail_reply, Some(rcpt_reply)))
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
                    format!(
                        "Next hop {} does not support SMTPUTF8, which this message needs",
                        self.hop
                    ),
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

    pub async fn rcpt(&mut self, to: &str, params: &RcptParams) -> Result<Reply, Reply> {
        let line = self.rcpt_line(to, params);
        self.command(&line).await
    }

    /// DATA, the message (dot-stuffed, CRLF lines), and the final reply.
    pub async fn data(&mut self, message: &[u8]) -> Result<Reply, Reply> {
        let go = self.command("DATA").await?;
        if go.code != 354 {
            return Ok(go);
        }
        self.message(message).await
    }

    /// After the hop's 354: the message (dot-stuffed, CRLF lines), the end marker, and
    /// the final reply.
    pub async fn message(&mut self, message: &[u8]) -> Result<Reply, Reply> {
        let mut out = Vec::with_capacity(message.len() + message.len() / 50 + 5);
        for line in message.split_inclusive(|&b| b == b'\n') {
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
        out.extend_from_slice(b".\r\n");
        self.write(&out).await?;
        self.read_reply().await
    }

    /// Ends a transaction so the connection can be used again.
    pub async fn rset(&mut self) -> bool {
        matches!(self.command("RSET").await, Ok(r) if r.code == 250)
    }

    pub async fn quit(mut self) {
        let _ = self.command("QUIT").await;
        let _ = self.io.get_mut().shutdown().await;
    }
}

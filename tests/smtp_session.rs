//! The SMTP server in process: sessions driven over `tokio::io::duplex` (and a real
//! loopback socket where the per-address limit needs one) against a recording
//! handler, so every protocol rule is checked without a token, a database or a next
//! hop: pipelining, limits, STARTTLS (plaintext injected before the handshake is
//! discarded), AUTH, abandoned transactions, the smuggling variants, the byte budget,
//! write timeouts, and the shutdown phases.

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use smimegate::smtp::Reply;
use smimegate::smtp::command::{MailParams, RcptParams};
use smimegate::smtp::server::{
    Control, Handler, Limits, Listener, Phase, Server, ServerConfig, SessionInfo,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

const PASSWORD: &str = "s3cret-Pa55";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Mail {
        from: String,
        tls: bool,
        authenticated: Option<String>,
    },
    Rcpt(String),
    Data(Vec<u8>),
    Abandon(Option<String>),
}

/// Accepts every sender, refuses recipients whose local part starts with "no", takes
/// every message; AUTH succeeds for alice with [`PASSWORD`], fails temporarily for
/// "tempfail", and is refused otherwise.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    fn events(&self) -> Vec<Event> {
        self.events.lock().expect("events").clone()
    }

    fn push(&self, event: Event) {
        self.events.lock().expect("events").push(event);
    }

    fn messages(&self) -> Vec<Vec<u8>> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Data(m) => Some(m),
                _ => None,
            })
            .collect()
    }
}

impl Handler for Recorder {
    type Transaction = ();

    async fn mail(&self, s: &SessionInfo, from: &str, _: &MailParams) -> Result<(), Reply> {
        self.push(Event::Mail {
            from: from.into(),
            tls: s.tls,
            authenticated: s.authenticated.clone(),
        });
        Ok(())
    }

    async fn rcpt(&self, _: &SessionInfo, _: &mut (), to: &str, _: &RcptParams) -> Reply {
        if to.starts_with("no") {
            return Reply::new(550, "5.1.1", "No such mailbox");
        }
        self.push(Event::Rcpt(to.into()));
        Reply::new(250, "2.1.5", "OK")
    }

    async fn data(&self, _: &SessionInfo, _: (), message: Vec<u8>) -> Reply {
        self.push(Event::Data(message));
        Reply::new(250, "2.0.0", "Delivered")
    }

    async fn abandon(&self, _: &SessionInfo, _: (), reply: Option<&Reply>) {
        self.push(Event::Abandon(reply.map(|r| r.to_string())));
    }

    async fn authenticate(
        &self,
        _: &SessionInfo,
        user: &str,
        password: &SecretString,
    ) -> Result<String, Reply> {
        match (user, password.expose_secret()) {
            ("alice", PASSWORD) => Ok("alice".into()),
            ("tempfail", _) => Err(Reply::new(454, "4.7.0", "Temporary authentication failure")),
            _ => Err(Reply::new(
                535,
                "5.7.8",
                "Authentication credentials invalid",
            )),
        }
    }
}

fn limits() -> Limits {
    Limits {
        max_line_bytes: 512,
        max_header_bytes: 2000,
        max_message_bytes: 10_000,
        max_recipients: 3,
        max_refused_recipients: 2,
        max_errors: 3,
        max_auth_failures: 2,
        command_timeout: Duration::from_secs(10),
        session_deadline: Duration::from_secs(60),
        message_budget_bytes: 100_000,
        ..Limits::default()
    }
}

fn config(listener: Listener, tls: Option<Arc<rustls::ServerConfig>>) -> ServerConfig {
    ServerConfig {
        hostname: "gw.test".into(),
        listener,
        tls,
        auth: listener == Listener::Submission,
    }
}

struct Harness {
    server: Server<Recorder>,
    recorder: Arc<Recorder>,
    control: Arc<Control>,
}

impl Harness {
    fn new(listener: Listener, tls: Option<Arc<rustls::ServerConfig>>, limits: Limits) -> Self {
        let recorder = Arc::new(Recorder::default());
        let control = Control::new(limits);
        Harness {
            server: Server::new(config(listener, tls), control.clone(), recorder.clone()),
            recorder,
            control,
        }
    }

    /// A session over an in-memory pipe of `buffer` bytes; the task ends with it.
    fn connect(
        &self,
        buffer: usize,
    ) -> (Client<tokio::io::DuplexStream>, tokio::task::JoinHandle<()>) {
        let (client, server_side) = tokio::io::duplex(buffer);
        let server = self.server.clone();
        let peer: SocketAddr = "192.0.2.7:40000".parse().expect("peer");
        let task = tokio::spawn(async move { server.session(server_side, peer).await });
        (Client::new(client), task)
    }
}

struct Client<S> {
    stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(stream: S) -> Self {
        Client {
            stream: BufReader::new(stream),
        }
    }

    /// One reply: (code, lines joined by newlines); None at the end of the stream.
    async fn try_reply(&mut self) -> Option<(u16, String)> {
        let mut text = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(20), self.stream.read_line(&mut line))
                .await
                .expect("a reply in time")
                .ok()?;
            if n == 0 {
                return None;
            }
            let code: u16 = line[..3].parse().expect("reply code");
            text.push(line[4..].trim_end().to_string());
            if line.as_bytes()[3] == b' ' {
                return Some((code, text.join("\n")));
            }
        }
    }

    async fn reply(&mut self) -> (u16, String) {
        self.try_reply()
            .await
            .expect("connection closed while waiting for a reply")
    }

    async fn send(&mut self, bytes: &[u8]) {
        let stream = self.stream.get_mut();
        stream.write_all(bytes).await.expect("write");
        stream.flush().await.expect("flush");
    }

    /// Sends a command and checks the reply code; returns the text.
    async fn cmd(&mut self, line: &str, code: u16) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        let (got, text) = self.reply().await;
        assert_eq!(got, code, "{line}: {text}");
        text
    }

    async fn greeted(&mut self) -> String {
        assert_eq!(self.reply().await.0, 220);
        self.cmd("EHLO client.test", 250).await
    }

    /// The peer has closed: nothing more to read.
    async fn closed(&mut self) -> bool {
        self.try_reply().await.is_none()
    }
}

#[tokio::test]
async fn pipelined_commands_get_their_replies_in_order_and_the_message_arrives() {
    let h = Harness::new(Listener::Inbound, None, limits());
    let (mut c, task) = h.connect(64 * 1024);
    let ehlo = c.greeted().await;
    assert!(
        ehlo.contains("PIPELINING") && ehlo.contains("SIZE 10000"),
        "{ehlo}"
    );
    assert!(
        !ehlo.contains("AUTH") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    c.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<nobody@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n")
        .await;
    let codes: Vec<u16> = [(); 5].iter().map(|_| 0).collect();
    let mut got = Vec::new();
    for _ in codes {
        got.push(c.reply().await.0);
    }
    assert_eq!(got, [250, 250, 550, 250, 354]);
    c.send(b"Subject: hi\r\n\r\n..dot\r\n.\r\nNOOP\r\nQUIT\r\n")
        .await;
    assert_eq!(c.reply().await, (250, "2.0.0 Delivered".into()));
    assert_eq!(c.reply().await.0, 250);
    assert_eq!(c.reply().await.0, 221);
    assert!(c.closed().await);
    task.await.expect("session");
    assert_eq!(
        h.recorder.messages(),
        [b"Subject: hi\r\n\r\n.dot\r\n".to_vec()]
    );
    assert_eq!(h.control.sessions(), 0);
}

/// Every smuggling variant (CVE-2023-51764): exactly one message reaches the handler,
/// and the next command is read as a command only once DATA really ended.
#[tokio::test]
async fn only_crlf_dot_crlf_ends_data_in_every_variant() {
    const SMUGGLED: &str = "MAIL FROM:<ceo@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nSubject: smuggled\r\n\r\n.\r\n";
    let cases: [(&str, Option<u16>); 7] = [
        ("\n.\r\n", Some(250)),
        ("\r.\r\n", Some(550)),
        ("\r\n.\n", Some(250)),
        ("\n.\n", Some(250)),
        ("\n..\r\n", Some(250)),
        ("\rmid\r\n", Some(550)),
        ("\r\n.\r\n", None),
    ];
    let h = Harness::new(Listener::Inbound, None, limits());
    let (mut c, _task) = h.connect(64 * 1024);
    c.greeted().await;
    for (variant, refused) in cases {
        let before = h.recorder.messages().len();
        c.cmd("MAIL FROM:<a@x.test>", 250).await;
        c.cmd("RCPT TO:<b@y.test>", 250).await;
        c.cmd("DATA", 354).await;
        c.send(format!("Subject: v\r\n\r\nbody{variant}{SMUGGLED}").as_bytes())
            .await;
        let (code, text) = c.reply().await;
        match refused {
            // The text after the variant is data: one message, ending at the last dot.
            Some(550) => assert!(
                code == 550 && text.starts_with("5.6.0"),
                "{variant:?}: {text}"
            ),
            Some(expected) => assert_eq!(code, expected, "{variant:?}: {text}"),
            // "\r\n.\r\n" is a real end: the smuggled transaction is a real one (the client's
            // own commands), as it must be.
            None => {
                assert_eq!(code, 250);
                for expected in [250, 250, 354, 250] {
                    assert_eq!(c.reply().await.0, expected);
                }
            }
        }
        assert_eq!(
            c.cmd("NOOP", 250).await,
            "2.0.0 OK",
            "{variant:?}: read as a command"
        );
        let messages = h.recorder.messages();
        let delivered = &messages[before..];
        match refused {
            Some(550) => assert!(
                delivered.is_empty(),
                "{variant:?}: a bare CR is never handed on"
            ),
            Some(_) => {
                assert_eq!(delivered.len(), 1, "{variant:?}: exactly one message");
                let text = String::from_utf8_lossy(&delivered[0]).into_owned();
                assert!(
                    text.contains("MAIL FROM:<ceo@x.test>\r\n"),
                    "{variant:?}: {text:?}"
                );
                assert!(!text.replace("\r\n", "").contains(['\r', '\n']), "{text:?}");
            }
            None => assert_eq!(delivered.len(), 2),
        }
    }
    // A dot at the very start ends an empty message.
    c.cmd("MAIL FROM:<a@x.test>", 250).await;
    c.cmd("RCPT TO:<b@y.test>", 250).await;
    c.cmd("DATA", 354).await;
    c.send(b".\r\nNOOP\r\n").await;
    assert_eq!(c.reply().await.0, 250);
    assert_eq!(c.reply().await, (250, "2.0.0 OK".into()));
    assert_eq!(h.recorder.messages().last().map(Vec::len), Some(0));
}

#[tokio::test]
async fn limits_end_the_session_with_clear_replies() {
    let h = Harness::new(Listener::Inbound, None, limits());
    let (mut c, _task) = h.connect(64 * 1024);
    c.greeted().await;
    assert!(
        c.cmd(&format!("NOOP {}", "x".repeat(600)), 500)
            .await
            .contains("5.5.2")
    );
    assert!(
        c.cmd("MAIL FROM:<a@x.test> SIZE=20000", 552)
            .await
            .contains("5.3.4")
    );
    c.cmd("MAIL FROM:<a@x.test>", 250).await;
    for r in ["r1", "r2", "r3"] {
        c.cmd(&format!("RCPT TO:<{r}@y.test>"), 250).await;
    }
    assert!(c.cmd("RCPT TO:<r4@y.test>", 452).await.contains("4.5.3"));
    c.cmd("DATA", 354).await;
    c.send(format!("Subject: big\r\n\r\n{}\r\n.\r\n", "y".repeat(12_000)).as_bytes())
        .await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 552, "{text}");
    c.cmd("MAIL FROM:<a@x.test>", 250).await;
    c.cmd("DATA", 554).await;
    // Refused recipients: two are answered, the third ends the session.
    c.cmd("MAIL FROM:<a@x.test>", 250).await;
    c.cmd("RCPT TO:<no1@y.test>", 550).await;
    c.cmd("RCPT TO:<no2@y.test>", 550).await;
    assert!(
        c.cmd("RCPT TO:<no3@y.test>", 421)
            .await
            .starts_with("4.7.0")
    );
    assert!(c.closed().await);
    let events = h.recorder.events();
    assert!(
        matches!(events.last(), Some(Event::Abandon(Some(r))) if r.starts_with("421 4.7.0")),
        "{events:?}"
    );
    assert!(h.recorder.messages().is_empty());
    // Errors: max_errors (3) are answered, the fourth closes.
    let (mut c, _task) = h.connect(64 * 1024);
    c.greeted().await;
    for _ in 0..3 {
        c.cmd("XYZZY", 500).await;
    }
    c.send(b"XYZZY\r\n").await;
    assert_eq!(c.reply().await.0, 500);
    assert_eq!(c.reply().await.0, 421);
    assert!(c.closed().await);
}

#[tokio::test]
async fn abandoned_transactions_are_reported_on_rset_quit_ehlo_and_a_dropped_connection() {
    let h = Harness::new(Listener::Inbound, None, limits());
    let (mut c, task) = h.connect(64 * 1024);
    c.greeted().await;
    for end in ["RSET", "EHLO again.test"] {
        c.cmd("MAIL FROM:<a@x.test>", 250).await;
        c.cmd(end, 250).await;
    }
    c.cmd("MAIL FROM:<a@x.test>", 250).await;
    c.cmd("QUIT", 221).await;
    task.await.expect("session");
    let (mut c, task) = h.connect(64 * 1024);
    c.greeted().await;
    c.cmd("MAIL FROM:<a@x.test>", 250).await;
    c.cmd("RCPT TO:<b@y.test>", 250).await;
    c.cmd("DATA", 354).await;
    c.send(b"Subject: half\r\n\r\nhalf a mess").await;
    drop(c);
    task.await.expect("session");
    let abandons = h
        .recorder
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Abandon(None)))
        .count();
    assert_eq!(abandons, 4);
    assert!(
        h.recorder.messages().is_empty(),
        "half a message is never handed on"
    );
}

#[tokio::test]
async fn the_byte_budget_refuses_at_data_or_after_the_message_and_is_given_back() {
    // A message reserves what processing it may cost: PROCESSING_MULTIPLE times its size.
    let per_byte = smimegate::smtp::server::PROCESSING_MULTIPLE;
    let budget = 200_000 * per_byte;
    let h = Harness::new(
        Listener::Inbound,
        None,
        Limits {
            max_message_bytes: 200_000,
            message_budget_bytes: budget,
            ..limits()
        },
    );
    let (mut c, _task) = h.connect(64 * 1024);
    c.greeted().await;
    // Exhausted by others: refused at DATA, nothing read.
    let others = h.control.budget().hold(budget).expect("everything");
    c.cmd("MAIL FROM:<a@x.test>", 250).await;
    c.cmd("RCPT TO:<b@y.test>", 250).await;
    assert_eq!(
        c.cmd("DATA", 452).await,
        "4.3.1 Insufficient system storage, try again later"
    );
    drop(others);
    // Runs out while reading (a first piece of 64 KiB fits, 100 kB do not): the rest
    // is read and discarded, 452 after the message, and the session stays in step.
    let others = h
        .control
        .budget()
        .hold(budget - 70_000 * per_byte)
        .expect("most");
    c.cmd("MAIL FROM:<a@x.test>", 250).await;
    c.cmd("RCPT TO:<b@y.test>", 250).await;
    c.cmd("DATA", 354).await;
    let big = format!("Subject: x\r\n\r\n{}\r\n.\r\n", "z".repeat(100_000));
    c.send(big.as_bytes()).await;
    assert!(c.reply().await.1.starts_with("4.3.1"));
    assert_eq!(c.cmd("NOOP", 250).await, "2.0.0 OK");
    assert_eq!(
        h.control.budget().used(),
        budget - 70_000 * per_byte,
        "nothing kept"
    );
    // Declared (SIZE) larger than the budget can give: refused at DATA.
    c.cmd("MAIL FROM:<a@x.test> SIZE=90000", 250).await;
    c.cmd("RCPT TO:<b@y.test>", 250).await;
    c.cmd("DATA", 452).await;
    drop(others);
    // With room: delivered, and the budget is given back once the reply is sent.
    c.cmd("MAIL FROM:<a@x.test> SIZE=110000", 250).await;
    c.cmd("RCPT TO:<b@y.test>", 250).await;
    c.cmd("DATA", 354).await;
    c.send(big.as_bytes()).await;
    assert_eq!(c.reply().await.0, 250);
    assert_eq!(h.control.budget().used(), 0);
    assert_eq!(h.recorder.messages().len(), 1);
    assert_eq!(h.recorder.messages()[0].len(), 100_016);
}

#[tokio::test]
async fn a_client_that_never_reads_its_replies_is_dropped_after_the_command_timeout() {
    let h = Harness::new(
        Listener::Inbound,
        None,
        Limits {
            command_timeout: Duration::from_millis(300),
            ..limits()
        },
    );
    let (c, task) = h.connect(256);
    let mut stream = c.stream.into_inner();
    // Pipelined NOOPs whose replies fill the pipe; the client never reads.
    let writer = tokio::spawn(async move {
        for _ in 0..10_000 {
            if stream.write_all(b"NOOP\r\n").await.is_err() {
                return true;
            }
        }
        false
    });
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the session ended by itself")
        .expect("session");
    assert!(writer.await.expect("writer"), "the server went away");
    assert_eq!(h.control.sessions(), 0);
}

#[tokio::test]
async fn shutdown_tells_idle_sessions_at_once_and_lets_a_transaction_finish() {
    let h = Harness::new(Listener::Inbound, None, limits());
    let (mut idle, idle_task) = h.connect(64 * 1024);
    idle.greeted().await;
    let (mut busy, busy_task) = h.connect(64 * 1024);
    busy.greeted().await;
    busy.cmd("MAIL FROM:<a@x.test>", 250).await;
    busy.cmd("RCPT TO:<b@y.test>", 250).await;
    h.control.advance(Phase::Draining);
    let (code, text) = idle.reply().await;
    assert_eq!((code, text.as_str()), (421, "4.3.2 gw.test shutting down"));
    assert!(idle.closed().await);
    idle_task.await.expect("idle session");
    // The transaction in flight finishes; then it is told too.
    busy.cmd("DATA", 354).await;
    busy.send(b"Subject: last\r\n\r\nx\r\n.\r\n").await;
    assert_eq!(busy.reply().await.0, 250);
    // Between transactions now: told at once, without waiting for a command.
    assert_eq!(
        busy.reply().await,
        (421, "4.3.2 gw.test shutting down".into())
    );
    busy_task.await.expect("busy session");
    assert_eq!(h.recorder.messages().len(), 1);
    // Past the grace time a transaction still open is told and abandoned.
    let h = Harness::new(Listener::Inbound, None, limits());
    let (mut slow, slow_task) = h.connect(64 * 1024);
    slow.greeted().await;
    slow.cmd("MAIL FROM:<a@x.test>", 250).await;
    h.control.advance(Phase::Draining);
    slow.cmd("RCPT TO:<b@y.test>", 250).await;
    slow.cmd("DATA", 354).await;
    slow.send(b"Subject: slow\r\n\r\n").await;
    h.control.advance(Phase::Closing);
    assert_eq!(slow.reply().await.0, 421);
    slow_task.await.expect("slow session");
    assert!(h.recorder.messages().is_empty());
    assert!(matches!(
        h.recorder.events().last(),
        Some(Event::Abandon(_))
    ));
}

/// A self-signed certificate for "localhost" made by openssl, as a rustls server
/// configuration (key in a file) and the client configuration that trusts it.
fn tls_pair(dir: &std::path::Path) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server =
        smimegate::smtp::tls::server_config(&cert, smimegate::smtp::tls::TlsKey::File(&key))
            .expect("server TLS");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&cert).expect("cert"))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (server, Arc::new(client))
}

async fn starttls(
    c: Client<tokio::io::DuplexStream>,
    client: Arc<rustls::ClientConfig>,
) -> Client<tokio_rustls::client::TlsStream<tokio::io::DuplexStream>> {
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    assert!(c.stream.buffer().is_empty());
    let tls = tokio_rustls::TlsConnector::from(client)
        .connect(name, c.stream.into_inner())
        .await
        .expect("handshake");
    Client::new(tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_pipelined_after_starttls_is_discarded() {
    let dir = tempfile::tempdir().expect("dir");
    let (server_tls, client_tls) = tls_pair(dir.path());
    let h = Harness::new(Listener::Inbound, Some(server_tls), limits());
    let (mut c, _task) = h.connect(64 * 1024);
    assert!(c.greeted().await.contains("STARTTLS"));
    // The injected commands arrive in the same packet as STARTTLS.
    c.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\nRCPT TO:<b@y.test>\r\n")
        .await;
    assert_eq!(c.reply().await.0, 220);
    let mut c = starttls(c, client_tls).await;
    // The session starts over: no EHLO yet, and nothing injected was taken.
    c.cmd("MAIL FROM:<a@x.test>", 503).await;
    let ehlo = c.cmd("EHLO client.test", 250).await;
    assert!(
        !ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    c.cmd("STARTTLS", 502).await;
    c.cmd("MAIL FROM:<a@x.test>", 250).await;
    let events = h.recorder.events();
    assert_eq!(
        events,
        [Event::Mail {
            from: "a@x.test".into(),
            tls: true,
            authenticated: None
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_after_starttls_only_once_outside_transactions_with_a_failure_limit() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let dir = tempfile::tempdir().expect("dir");
    let (server_tls, client_tls) = tls_pair(dir.path());
    // Every log line of the session is captured: the password must be in none.
    let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = CaptureWriter(logs.clone());
    // Each test is its own process under nextest: the global subscriber is ours.
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .expect("subscriber");
    // The inbound listener never offers AUTH.
    let inbound = Harness::new(Listener::Inbound, Some(server_tls.clone()), limits());
    let (mut c, _task) = inbound.connect(64 * 1024);
    c.greeted().await;
    c.cmd("STARTTLS", 220).await;
    let mut c = starttls(c, client_tls.clone()).await;
    assert!(!c.cmd("EHLO client.test", 250).await.contains("AUTH"));
    assert!(c.cmd("AUTH PLAIN", 502).await.starts_with("5.5.1"));

    let h = Harness::new(Listener::Submission, Some(server_tls), limits());
    let (mut c, _task) = h.connect(64 * 1024);
    assert!(
        !c.greeted().await.contains("AUTH"),
        "never offered in the clear"
    );
    let plain = b64(&format!("\0alice\0{PASSWORD}"));
    assert!(
        c.cmd(&format!("AUTH PLAIN {plain}"), 538)
            .await
            .starts_with("5.7.11")
    );
    c.cmd("STARTTLS", 220).await;
    let mut c = starttls(c, client_tls.clone()).await;
    c.cmd("AUTH PLAIN", 503).await; // before EHLO
    assert!(
        c.cmd("EHLO client.test", 250)
            .await
            .contains("AUTH PLAIN LOGIN")
    );
    c.cmd("AUTH CRAM-MD5", 504).await;
    c.cmd("MAIL FROM:<a@x.test>", 250).await;
    c.cmd("AUTH PLAIN", 503).await; // inside a transaction
    c.cmd("RSET", 250).await;
    // Wrong password, then a cancelled exchange: two failures, still allowed.
    let wrong = b64("\0alice\0wrong");
    assert!(
        c.cmd(&format!("AUTH PLAIN {wrong}"), 535)
            .await
            .starts_with("5.7.8")
    );
    c.cmd("AUTH LOGIN", 334).await;
    assert!(c.cmd("*", 501).await.starts_with("5.0.0"));
    // A temporary failure of the checker is not the client's.
    assert!(
        c.cmd(&format!("AUTH PLAIN {}", b64("\0tempfail\0x")), 454)
            .await
            .starts_with("4.7.0")
    );
    // PLAIN without an initial response: an empty challenge, then success.
    assert_eq!(c.cmd("AUTH PLAIN", 334).await, "");
    assert!(c.cmd(&plain, 235).await.starts_with("2.7.0"));
    c.cmd(&format!("AUTH PLAIN {plain}"), 503).await; // once per session
    assert!(!c.cmd("EHLO client.test", 250).await.contains("AUTH"));
    c.cmd("MAIL FROM:<alice@x.test>", 250).await;
    assert_eq!(
        h.recorder.events().last(),
        Some(&Event::Mail {
            from: "alice@x.test".into(),
            tls: true,
            authenticated: Some("alice".into())
        })
    );
    // LOGIN, and the failure limit: the third failure ends the session.
    let (mut c, task) = h.connect(64 * 1024);
    c.greeted().await;
    c.cmd("STARTTLS", 220).await;
    let mut c = starttls(c, client_tls).await;
    c.cmd("EHLO client.test", 250).await;
    assert_eq!(c.cmd("AUTH LOGIN", 334).await, "VXNlcm5hbWU6");
    assert_eq!(c.cmd(&b64("alice"), 334).await, "UGFzc3dvcmQ6");
    c.cmd(&b64("nope"), 535).await;
    c.cmd(&format!("AUTH LOGIN {}", b64("alice")), 334).await;
    c.cmd("not base64!", 501).await;
    c.cmd(&format!("AUTH PLAIN {wrong}"), 421).await;
    assert!(c.closed().await);
    task.await.expect("session");
    let logs = String::from_utf8_lossy(&logs.lock().expect("logs")).into_owned();
    assert!(logs.contains("authenticated"), "{logs}");
    for secret in [PASSWORD, plain.as_str(), "wrong", "nope"] {
        assert!(!logs.contains(secret), "{secret} in the log: {logs}");
    }
}

#[derive(Clone)]
struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The per-address limit over real loopback sockets: the client past the limit gets
/// `421 4.7.0`, a client from another address is still served, and an exempt network
/// is not counted.
#[tokio::test]
async fn the_per_address_limit_refuses_only_that_client() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let h = Harness::new(
        Listener::Inbound,
        None,
        Limits {
            max_connections_per_ip: 3,
            per_ip_exempt: vec![
                smimegate::relay::network::Network::parse("127.0.0.3/32").expect("net"),
            ],
            ..limits()
        },
    );
    let server = h.server.clone();
    tokio::spawn(async move { server.serve(listener).await });
    let connect = |from: &'static str| async move {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(format!("{from}:0").parse().expect("addr"))
            .expect("bind source");
        let stream = socket
            .connect(format!("127.0.0.1:{port}").parse().expect("addr"))
            .await
            .expect("connect");
        let mut c = Client::new(stream);
        let greeting = c.reply().await;
        (c, greeting)
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        let (c, greeting) = connect("127.0.0.2").await;
        assert_eq!(greeting.0, 220);
        held.push(c);
    }
    let (mut refused, greeting) = connect("127.0.0.2").await;
    assert_eq!(greeting.0, 421);
    assert!(greeting.1.starts_with("4.7.0"), "{greeting:?}");
    assert!(refused.closed().await);
    let (_, other) = connect("127.0.0.1").await;
    assert_eq!(other.0, 220, "another address is served");
    for _ in 0..4 {
        let (c, exempt) = connect("127.0.0.3").await;
        assert_eq!(exempt.0, 220, "an exempt network is not counted");
        held.push(c);
    }
    // A session that ends gives its place back.
    let mut first = held.remove(0);
    first.cmd("QUIT", 221).await;
    assert!(first.closed().await);
    let ip = "127.0.0.2".parse().expect("ip");
    for _ in 0..50 {
        if h.control.connections_from(ip) < 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, again) = connect("127.0.0.2").await;
    assert_eq!(again.0, 220);
}

/// A certificate chain for a P-256 key in this process's test token (CA in the token
/// too), as a server configuration signing with the token, and a client trusting it.
fn token_tls(dir: &std::path::Path) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    use smimegate::hsm::{KeyAlgorithm, KeyRole};
    use smimegate::pki::ca::{self, CaIdentity};
    let hsm = &common::token().hsm;
    let ca_key = hsm
        .generate_key_pair(
            KeyAlgorithm::P256,
            KeyRole::CertificateAuthority,
            "tls-test CA",
        )
        .expect("CA key");
    let ca = CaIdentity {
        key_id: ca_key.id.clone(),
        algorithm: KeyAlgorithm::P256,
        certificate: ca::create_ca_certificate(hsm, &ca_key, "CN=tls test CA", 2)
            .expect("CA certificate"),
    };
    let key = hsm
        .generate_key_pair(KeyAlgorithm::P256, KeyRole::TlsServer, "tls-test")
        .expect("TLS key");
    let leaf = ca::issue_tls_certificate(hsm, &ca, &["localhost".into()], &key, 2)
        .expect("TLS certificate");
    let pem = |c: &x509_cert::Certificate| {
        der::EncodePem::to_pem(c, der::pem::LineEnding::LF).expect("PEM")
    };
    let chain = dir.join("chain.pem");
    std::fs::write(&chain, format!("{}{}", pem(&leaf), pem(&ca.certificate))).expect("write");
    let server =
        smimegate::smtp::tls::server_config(&chain, smimegate::smtp::tls::TlsKey::Token(hsm))
            .expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(
            der::Encode::to_der(&ca.certificate).expect("DER"),
        ))
        .expect("root");
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    (server, Arc::new(client))
}

/// The STARTTLS handshake signature is a job in the token's worker queue
/// (`Hsm::call`, with its limits and timeouts): while every worker is busy the
/// handshake waits, and once one is free it completes. (Signing beside the queue, as
/// the former `block_in_place` did, finishes at once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The held std mutex is the point: it keeps the token's worker threads busy.
#[allow(clippy::await_holding_lock)]
async fn starttls_handshake_signatures_wait_in_the_token_worker_queue() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, client) = token_tls(dir.path());
    let hsm = common::token().hsm.clone();
    let gate = Arc::new(Mutex::new(()));
    let closed = gate.lock().expect("gate");
    let mut blockers = Vec::new();
    // The test token has eight sessions, so eight workers.
    for _ in 0..8 {
        let gate = gate.clone();
        let hsm = hsm.clone();
        blockers.push(tokio::spawn(async move {
            hsm.call("occupy a worker", move |_| {
                drop(gate.lock());
                Ok(())
            })
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let h = Harness::new(Listener::Submission, Some(server), limits());
    let (mut c, _task) = h.connect(64 * 1024);
    c.greeted().await;
    c.cmd("STARTTLS", 220).await;
    let handshake = tokio::spawn(starttls(c, client));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !handshake.is_finished(),
        "the signature did not wait for the token's workers"
    );
    drop(closed);
    let mut c = tokio::time::timeout(Duration::from_secs(20), handshake)
        .await
        .expect("handshake in time")
        .expect("task");
    assert!(
        c.cmd("EHLO client.test", 250)
            .await
            .contains("AUTH PLAIN LOGIN")
    );
    for blocker in blockers {
        blocker.await.expect("task").expect("blocker");
    }
    // A token key in a handshake not run by smtp::tls::accept fails rather than
    // blocking a runtime worker.
    let (server, client) = token_tls(dir.path());
    let (client_side, server_side) = tokio::io::duplex(16 * 1024);
    let connected = tokio::spawn(async move {
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        tokio_rustls::TlsConnector::from(client)
            .connect(name, client_side)
            .await
    });
    assert!(
        tokio_rustls::TlsAcceptor::from(server)
            .accept(server_side)
            .await
            .is_err()
    );
    assert!(connected.await.expect("task").is_err());
}

//! The entry point of the `smtp_session` fuzz target: one whole session driven by
//! arbitrary bytes as the client's stream (over `tokio::io::duplex`), through the
//! command parser, the per-command handlers, the SASL exchanges and the DATA reader,
//! with small limits so every limit is reachable. No sleeping: the client's stream
//! ends after the input, so no timeout ever fires. Checks what must always hold: a
//! message handed on has CRLF lines only and fits the limit, and every byte of the
//! budget comes back. Exposure: none (test support).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::control::Control;
use super::driver::drive;
use super::io::Io;
use super::session::Session;
use super::{Handler, Limits, Listener, ServerConfig, SessionInfo};
use crate::smtp::command::{MailParams, RcptParams};
use crate::smtp::reply::Reply;

const MAX_MESSAGE: usize = 8 * 1024;

fn limits() -> Limits {
    Limits {
        max_line_bytes: 512,
        max_header_bytes: 1024,
        max_message_bytes: MAX_MESSAGE,
        max_recipients: 4,
        max_refused_recipients: 3,
        max_errors: 8,
        max_auth_failures: 2,
        command_timeout: Duration::from_secs(30),
        session_deadline: Duration::from_secs(60),
        message_budget_bytes: 64 * 1024,
        ..Limits::default()
    }
}

/// Accepts everything except recipients starting with "no" and passwords "bad".
struct Accepting;

impl Handler for Accepting {
    type Transaction = ();

    async fn mail(&self, _: &SessionInfo, _: &str, _: &MailParams) -> Result<(), Reply> {
        Ok(())
    }

    async fn rcpt(&self, _: &SessionInfo, _: &mut (), to: &str, _: &RcptParams) -> Reply {
        if to.starts_with("no") {
            Reply::new(550, "5.1.1", "no")
        } else {
            Reply::new(250, "2.1.5", "ok")
        }
    }

    async fn data(&self, _: &SessionInfo, _: (), message: Vec<u8>) -> Reply {
        assert!(message.len() <= MAX_MESSAGE, "{} bytes", message.len());
        for (i, &b) in message.iter().enumerate() {
            let lf_after = message.get(i + 1) == Some(&b'\n');
            let cr_before = i > 0 && message[i - 1] == b'\r';
            assert!(b != b'\r' || lf_after, "bare CR handed on at {i}");
            assert!(b != b'\n' || cr_before, "bare LF handed on at {i}");
        }
        Reply::new(250, "2.0.0", "ok")
    }

    async fn abandon(&self, _: &SessionInfo, _: (), _: Option<&Reply>) {}

    async fn authenticate(
        &self,
        _: &SessionInfo,
        user: &str,
        password: &SecretString,
    ) -> Result<String, Reply> {
        use secrecy::ExposeSecret;
        if password.expose_secret() == "bad" {
            Err(super::invalid_credentials())
        } else {
            Ok(user.to_string())
        }
    }
}

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Runs one session on `input`: its first byte's low bit says whether the session
/// counts as under TLS already (so AUTH is offered), the rest is the client stream.
#[doc(hidden)]
pub fn session(input: &[u8]) {
    let (flags, bytes) = input.split_first().unwrap_or((&0, &[]));
    let tls = flags & 1 == 1;
    RUNTIME.with(|cell| {
        let mut cell = cell.borrow_mut();
        let runtime = cell.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a runtime for the fuzz target")
        });
        runtime.block_on(run(bytes, tls));
    });
}

async fn run(bytes: &[u8], tls: bool) {
    let config = ServerConfig {
        hostname: "fuzz.test".into(),
        listener: Listener::Submission,
        tls: None,
        auth: true,
    };
    let limits = limits();
    let control = Control::new(limits.clone());
    let info = SessionInfo {
        id: "fuzz".into(),
        peer: SocketAddr::from(([192, 0, 2, 1], 25)),
        listener: Listener::Submission,
        helo: String::new(),
        tls,
        authenticated: None,
    };
    let (client, server) = tokio::io::duplex(4096);
    let (mut from_server, mut to_server) = tokio::io::split(client);
    let serve = async {
        let mut session = Session::new(info, &config, &limits, &control, &Accepting);
        session.greet();
        let io = Io::new(
            server,
            limits.command_timeout,
            Instant::now() + limits.session_deadline,
        );
        let mut phase = control.subscribe();
        let _ = drive(io, &mut session, &mut phase).await;
        session.abandon(None).await;
    };
    let send = async {
        let _ = to_server.write_all(bytes).await;
        let _ = to_server.shutdown().await;
    };
    let receive = async {
        let mut replies = Vec::new();
        let _ = from_server.read_to_end(&mut replies).await;
    };
    tokio::join!(serve, send, receive);
    assert_eq!(control.budget().used(), 0, "message budget not given back");
}

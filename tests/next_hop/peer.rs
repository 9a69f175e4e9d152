//! A scripted SMTP peer on loopback: a plain next hop by default (PIPELINING, SIZE,
//! 8BITMIME), made to misbehave by a hook that sees every command line (and "." at the
//! end of data) with the connection's counters and may answer otherwise or close.
//! It can idle connections out with a `421` like Postfix, be stopped (every connection
//! dropped) and started again on the same address, and it counts what it delivered.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where a connection stands when the hook is asked.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ctx {
    /// 1 for the first connection the peer accepted.
    pub connection: usize,
    /// MAIL commands seen on this connection, this one included.
    pub transaction: usize,
    /// RCPT commands seen in this transaction, this one included.
    pub rcpts: usize,
}

/// What the hook makes the peer do instead of its default.
#[derive(Debug, Clone)]
pub enum Act {
    /// Write this raw text (CRLF included). After DATA, a text starting "354" reads
    /// the message; after ".", a text starting "2" counts it as delivered.
    Reply(String),
    /// Close without a word (for "." the message is not delivered).
    Close,
    ReplyAndClose(String),
    /// Only for ".": deliver the message, then close without replying.
    StoreAndClose,
}

pub type Hook = Arc<dyn Fn(&Ctx, &str) -> Option<Act> + Send + Sync>;

pub fn hook(f: impl Fn(&Ctx, &str) -> Option<Act> + Send + Sync + 'static) -> Option<Hook> {
    Some(Arc::new(f))
}

#[derive(Clone)]
pub struct Script {
    pub greeting: String,
    pub pipelining: bool,
    pub ehlo_extra: Vec<String>,
    /// After this long without a command: "421 4.4.2 … timeout exceeded", close.
    pub idle_timeout: Option<Duration>,
    pub hook: Option<Hook>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            greeting: "220 peer.test ESMTP scripted\r\n".into(),
            pipelining: true,
            ehlo_extra: Vec::new(),
            idle_timeout: None,
            hook: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Delivered {
    pub from: String,
    pub rcpts: Vec<String>,
    pub body: Vec<u8>,
}

#[derive(Default)]
struct Seen {
    connections: usize,
    commands: Vec<String>,
    messages: Vec<Delivered>,
}

pub struct Peer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: watch::Sender<bool>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: Option<JoinHandle<()>>,
}

impl Peer {
    pub async fn start(script: Script) -> Peer {
        Peer::start_on("127.0.0.1:0".parse().expect("addr"), script).await
    }

    /// A peer on `addr` (again, after [`Peer::stop`]: a restarted hop).
    pub async fn start_on(addr: SocketAddr, script: Script) -> Peer {
        let listener = TcpListener::bind(addr).await.expect("bind peer");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop, stopped) = watch::channel(false);
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (seen, tasks, script) = (seen.clone(), tasks.clone(), script.clone());
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                loop {
                    let stream = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => stream,
                            Err(_) => continue,
                        },
                        _ = stopped.changed() => return,
                    };
                    let n = {
                        let mut seen = seen.lock().expect("lock");
                        seen.connections += 1;
                        seen.connections
                    };
                    let task = tokio::spawn(serve(
                        stream,
                        n,
                        script.clone(),
                        seen.clone(),
                        stopped.clone(),
                    ));
                    tasks.lock().expect("lock").push(task);
                }
            })
        };
        Peer {
            addr,
            seen,
            stop,
            tasks,
            accept: Some(accept),
        }
    }

    pub fn hop(&self) -> String {
        self.addr.to_string()
    }

    /// Stops listening and drops every connection (a hop going down).
    pub async fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock().expect("lock"));
        for task in tasks {
            let _ = task.await;
        }
    }

    pub fn connections(&self) -> usize {
        self.seen.lock().expect("lock").connections
    }

    pub fn commands(&self) -> Vec<String> {
        self.seen.lock().expect("lock").commands.clone()
    }

    pub fn messages(&self) -> Vec<Delivered> {
        self.seen.lock().expect("lock").messages.clone()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn serve(
    stream: TcpStream,
    connection: usize,
    script: Script,
    seen: Arc<Mutex<Seen>>,
    mut stopped: watch::Receiver<bool>,
) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    if write.write_all(script.greeting.as_bytes()).await.is_err()
        || !script.greeting.starts_with("220")
    {
        return;
    }
    let mut ctx = Ctx {
        connection,
        ..Ctx::default()
    };
    let mut from = String::new();
    let mut rcpts: Vec<String> = Vec::new();
    loop {
        let mut line = String::new();
        let idle = script.idle_timeout.unwrap_or(Duration::from_secs(3600));
        let read_line = tokio::time::timeout(idle, read.read_line(&mut line));
        let result = tokio::select! {
            r = read_line => r,
            _ = stopped.changed() => return,
        };
        match result {
            Err(_) => {
                let _ = write
                    .write_all(b"421 4.4.2 peer.test Error: timeout exceeded\r\n")
                    .await;
                return;
            }
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        seen.lock().expect("lock").commands.push(line.clone());
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match verb.as_str() {
            "MAIL" => {
                ctx.transaction += 1;
                ctx.rcpts = 0;
            }
            "RCPT" => ctx.rcpts += 1,
            _ => {}
        }
        let act = script.hook.as_ref().and_then(|h| h(&ctx, &line));
        let reply = match act {
            Some(Act::Close) | Some(Act::StoreAndClose) => return,
            Some(Act::ReplyAndClose(text)) => {
                let _ = write.write_all(text.as_bytes()).await;
                return;
            }
            Some(Act::Reply(text)) => text,
            None => match verb.as_str() {
                "EHLO" => {
                    let mut lines = vec!["peer.test".to_string()];
                    if script.pipelining {
                        lines.push("PIPELINING".into());
                    }
                    lines.extend(["SIZE 10000000".into(), "8BITMIME".into()]);
                    lines.extend(script.ehlo_extra.iter().cloned());
                    let last = lines.len() - 1;
                    lines
                        .iter()
                        .enumerate()
                        .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
                        .collect()
                }
                "HELO" | "NOOP" | "XFORWARD" => "250 2.0.0 Ok\r\n".into(),
                "MAIL" => "250 2.1.0 Ok\r\n".into(),
                "RCPT" => "250 2.1.5 Ok\r\n".into(),
                "DATA" => "354 End data with <CR><LF>.<CR><LF>\r\n".into(),
                "RSET" => "250 2.0.0 Ok\r\n".into(),
                "QUIT" => {
                    let _ = write.write_all(b"221 2.0.0 Bye\r\n").await;
                    return;
                }
                _ => "502 5.5.2 Error: command not recognized\r\n".into(),
            },
        };
        if verb == "MAIL" && reply.starts_with('2') {
            from = line.clone();
            rcpts.clear();
        }
        if verb == "RCPT" && reply.starts_with('2') {
            let to = line
                .split('<')
                .nth(1)
                .and_then(|r| r.split('>').next())
                .unwrap_or("")
                .to_string();
            rcpts.push(to);
        }
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
        if verb != "DATA" || !reply.starts_with("354") {
            continue;
        }
        // The message, until "." alone on a line; dot-stuffing undone.
        let mut body = Vec::new();
        loop {
            let mut raw = Vec::new();
            let r = tokio::select! {
                r = read.read_until(b'\n', &mut raw) => r,
                _ = stopped.changed() => return,
            };
            match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if raw == b".\r\n" {
                break;
            }
            let content = raw.strip_prefix(b".").unwrap_or(&raw);
            body.extend_from_slice(content);
        }
        let delivered = Delivered {
            from: from.clone(),
            rcpts: std::mem::take(&mut rcpts),
            body,
        };
        let act = script.hook.as_ref().and_then(|h| h(&ctx, "."));
        let (reply, store, close) = match act {
            None => ("250 2.0.0 Ok: queued\r\n".to_string(), true, false),
            Some(Act::Reply(text)) => {
                let store = text.starts_with('2');
                (text, store, false)
            }
            Some(Act::ReplyAndClose(text)) => {
                let store = text.starts_with('2');
                (text, store, true)
            }
            Some(Act::StoreAndClose) => (String::new(), true, true),
            Some(Act::Close) => (String::new(), false, true),
        };
        if store {
            seen.lock().expect("lock").messages.push(delivered);
        }
        if !reply.is_empty() && write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
        if close {
            return;
        }
    }
}

/// Log lines written while the returned guard lives (this thread's subscriber; the
/// tests run on a current-thread runtime, so every task logs here).
pub struct CapturedLog {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl CapturedLog {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().expect("lock")).into_owned()
    }
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn capture_log() -> CapturedLog {
    let buffer: Arc<Mutex<Vec<u8>>> = Arc::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || Sink(writer.clone()))
        .finish();
    CapturedLog {
        buffer,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

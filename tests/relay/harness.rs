//! A gateway under test: its own data directory and token (`smimegate init`), the
//! real `smimegate serve` and `smimegate sink` processes on loopback ports, a plain
//! SMTP client that records every reply, and partners whose keys and certificates
//! openssl makes.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{run_ok, smimegate_ok};

pub const CORP: &str = "corp.example";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running sink: `smimegate sink` writing to a Maildir.
pub struct Sink {
    pub port: u16,
    pub maildir: PathBuf,
    child: Option<Child>,
    /// Kept open so the process can still write to its stdout.
    _stdout: Option<BufReader<std::process::ChildStdout>>,
}

/// The first line a started process prints on stdout (its bound addresses).
fn first_line(child: &mut Child, what: &str) -> (String, BufReader<std::process::ChildStdout>) {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    let n = reader.read_line(&mut line).expect("read stdout");
    if n == 0 {
        let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
        panic!("{what} exited before it was listening: {status}");
    }
    (line.trim().to_string(), reader)
}

impl Sink {
    /// A sink on `port` (0: any free port).
    pub fn start(maildir: PathBuf, port: u16) -> Sink {
        Sink::start_with(maildir, port, &[])
    }

    /// A sink offering STARTTLS with an openssl-made certificate.
    pub fn start_tls(maildir: PathBuf, port: u16, dir: &Path) -> Sink {
        let cert = dir.join("sink-cert.pem").display().to_string();
        let key = dir.join("sink-key.pem").display().to_string();
        run_ok(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &cert,
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
            ],
        );
        Sink::start_with(maildir, port, &["--tls-cert", &cert, "--tls-key", &key])
    }

    /// A sink that refuses `unknown` at RCPT (550 5.1.1), like a mail server that does
    /// not know that mailbox.
    pub fn start_refusing(maildir: PathBuf, port: u16, unknown: &[&str]) -> Sink {
        let args: Vec<String> = unknown
            .iter()
            .flat_map(|a| ["--unknown-recipient".to_string(), a.to_string()])
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Sink::start_with(maildir, port, &args)
    }

    /// Starts the sink on `port` (0: any free port; the sink says which).
    fn start_with(maildir: PathBuf, port: u16, extra: &[&str]) -> Sink {
        let mut child = Command::new(env!("CARGO_BIN_EXE_smimegate"))
            .args([
                "sink",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--maildir",
            ])
            .arg(&maildir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sink");
        // "smimegate sink: SMTP on 127.0.0.1:PORT, writing to …"
        let (line, stdout) = first_line(&mut child, "sink");
        let port = line
            .split("SMTP on ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("sink said: {line}"));
        wait_for_port(port, &mut child, "sink");
        Sink {
            port,
            maildir,
            child: Some(child),
            _stdout: Some(stdout),
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Delivered> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.maildir.join("new"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files.iter().map(|f| Delivered::read(f)).collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A message as the next hop received it.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The gateway delivered over TLS.
    pub tls: bool,
    pub envelope_to: Vec<String>,
    pub envelope_params: String,
    /// The message itself, without the sink's envelope fields.
    pub message: Vec<u8>,
}

impl Delivered {
    fn read(path: &Path) -> Delivered {
        let raw = std::fs::read(path).expect("read delivered");
        let mut rest = &raw[..];
        let mut envelope_to = Vec::new();
        let mut envelope_params = String::new();
        let mut tls = false;
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n").expect("line") + 2;
            let line = String::from_utf8_lossy(&rest[..end]).trim_end().to_string();
            if let Some(to) = line.strip_prefix("X-Envelope-To: ") {
                envelope_to.push(to.to_string());
            } else if let Some(p) = line.strip_prefix("X-Envelope-Params: ") {
                envelope_params = p.to_string();
            } else if line == "X-Sink-TLS: yes" {
                tls = true;
            } else if !line.starts_with("Return-Path: ") {
                break;
            }
            rest = &rest[end..];
        }
        Delivered {
            tls,
            envelope_to,
            envelope_params,
            message: rest.to_vec(),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.message).into_owned()
    }

    /// Writes the message to a file (for openssl).
    pub fn save(&self, path: &Path) -> String {
        std::fs::write(path, &self.message).expect("save");
        path.display().to_string()
    }
}

/// `smimegate init` for a gateway under test. Known defect, open: about one `init` in
/// several hundred dies of heap corruption inside the token library (glibc's "free():
/// invalid pointer" / "double free or corruption", an abort, no exit code), seen only
/// under CI load and not yet explained. `init` is idempotent, so here, where it only
/// prepares the relay under test, such a death is shown on stderr and `init` run once
/// more; any other failure, or a second death, fails the test. tests/cli.rs tests
/// `init` itself without this.
/// Which database the relay suite's gateways use: SQLite in the data directory, or,
/// with `SMIMEGATE_TEST_RELAY_DB=postgres` (./scripts/test runs the suite both ways),
/// a fresh PostgreSQL database per gateway on `TEST_DATABASE_URL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

impl Db {
    /// The database the suite runs on.
    pub fn for_suite() -> Db {
        match std::env::var("SMIMEGATE_TEST_RELAY_DB").as_deref() {
            Ok("postgres") => Db::Postgres,
            Ok("sqlite") | Ok("") | Err(_) => Db::Sqlite,
            Ok(other) => panic!("SMIMEGATE_TEST_RELAY_DB={other}: say sqlite or postgres"),
        }
    }
}

/// A PostgreSQL database of one gateway (several nodes share it), dropped with it.
pub struct PgDatabase {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl PgDatabase {
    pub fn create() -> PgDatabase {
        let admin_url = super::common::postgres_base_url();
        let mut suffix = [0u8; 6];
        getrandom::fill(&mut suffix).expect("random");
        let name = format!("smimegate_relay_{}", hex::encode(suffix));
        run_ok(
            "psql",
            &[
                &admin_url,
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                &format!("CREATE DATABASE {name}"),
            ],
        );
        PgDatabase {
            url: super::common::replace_database(&admin_url, &name),
            name,
            admin_url,
        }
    }

    /// Runs one SQL statement on it.
    pub fn sql(&self, statement: &str) -> String {
        run_ok(
            "psql",
            &[
                &self.url,
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                statement,
            ],
        )
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &self.admin_url,
                "-q",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// A data directory whose configuration names `url` as its database (before `init`,
/// which then keeps it).
pub fn configure_database(data: &Path, url: &str) {
    const TEMPLATE: &str = include_str!("../../src/config/template.toml");
    const DEFAULT: &str = "url = \"sqlite:smimegate.db\"";
    assert!(
        TEMPLATE.contains(DEFAULT),
        "the template's database line changed"
    );
    std::fs::create_dir_all(data).expect("data directory");
    std::fs::write(
        data.join("smimegate.toml"),
        TEMPLATE.replace(DEFAULT, &format!("url = \"{url}\"")),
    )
    .expect("configuration");
}

fn init_data_dir(data: &Path) {
    let first = super::common::smimegate(data, &["init"]);
    if first.status.success() {
        return;
    }
    assert!(
        first.status.code().is_none(),
        "smimegate init failed: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    eprintln!(
        "KNOWN DEFECT: smimegate init died ({}): {}; running it once more",
        first.status,
        String::from_utf8_lossy(&first.stderr).trim()
    );
    smimegate_ok(data, &["init"]);
}

/// A running `smimegate serve` and the ports it bound.
pub struct Served {
    pub child: Child,
    pub stdout: BufReader<std::process::ChildStdout>,
    pub inbound: u16,
    pub submission: u16,
    pub http: u16,
    pub console: u16,
}

/// Starts `smimegate serve` on `data` on free ports (it says which ones it bound),
/// logging to `serve.log` there.
pub fn spawn_serve(data: &Path, console_port: u16) -> Served {
    let log = std::fs::File::create(data.join("serve.log")).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_smimegate"))
        .arg("--data-dir")
        .arg(data)
        .args([
            "serve",
            "--inbound",
            "127.0.0.1:0",
            "--submission",
            "127.0.0.1:0",
        ])
        .args(["--http", "127.0.0.1:0", "--console"])
        .arg(format!("127.0.0.1:{}", console_port))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start gateway");
    // "smimegate serving: SMTP inbound A, SMTP submission B, http://C/health"
    let (line, stdout) = first_line(&mut child, "gateway");
    let port_after = |label: &str| -> u16 {
        line.split(label)
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|addr| addr.trim().rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("gateway said: {line}"))
    };
    let inbound = port_after("SMTP inbound ");
    let submission = port_after("SMTP submission ");
    let http = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("gateway said: {line}"));
    // "…, console https://127.0.0.1:P/ (https://localhost:P)"
    let console = line
        .split("console https://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("gateway said no console: {line}"));
    wait_for_port(submission, &mut child, "gateway");
    Served {
        child,
        stdout,
        inbound,
        submission,
        http,
        console,
    }
}

/// The gateway under test.
/// The gateway under test, placed as in production: mail from the internet comes from
/// 127.0.0.2, the internal mail server's address is 127.0.0.1, the only internal
/// network is 127.0.0.1/32, and the two next hops are two different sinks: `internal`
/// (corp.example's inbound route) and `smarthost` (outbound). A message that reaches
/// the wrong one was misrouted.
pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub inbound: u16,
    pub submission: u16,
    /// The HTTP endpoint (health, the CA's certificates and CRLs).
    pub http: u16,
    /// The HTTPS console (`https://localhost:PORT/`).
    pub console: u16,
    /// The internal mail server: the inbound route of corp.example.
    pub internal: Sink,
    /// The smarthost outbound mail goes to.
    pub smarthost: Sink,
    /// The port the console is to listen on (0: any free one).
    console_port: u16,
    /// The PostgreSQL database, when the gateway runs on one.
    pub postgres: Option<PgDatabase>,
    child: Option<Child>,
    _stdout: Option<BufReader<std::process::ChildStdout>>,
}

/// Where internet clients connect from; only 127.0.0.1/32 is internal.
pub const INTERNET_CLIENT: &str = "127.0.0.2";

impl Gateway {
    /// Initialises a data directory with the managed domain corp.example, its inbound
    /// route and the smarthost (two sinks), 127.0.0.1/32 as the only internal network,
    /// runs `prepare` on it, and starts serving.
    pub fn start(prepare: impl FnOnce(&Path)) -> Gateway {
        Gateway::start_with_console_port(0, prepare)
    }

    /// As [`Gateway::start`], with the console on `console_port` (0: any free one),
    /// for a configuration that must name the console's URL before it starts (SAML).
    pub fn start_with_console_port(console_port: u16, prepare: impl FnOnce(&Path)) -> Gateway {
        Gateway::start_with(Db::for_suite(), console_port, prepare)
    }

    /// As [`Gateway::start`], on SQLite whatever the suite runs on (for what only
    /// SQLite has: its files).
    pub fn start_on_sqlite(prepare: impl FnOnce(&Path)) -> Gateway {
        Gateway::start_with(Db::Sqlite, 0, prepare)
    }

    /// As [`Gateway::start`], on a fresh PostgreSQL database whatever the suite runs on.
    pub fn start_on_postgres(prepare: impl FnOnce(&Path)) -> Gateway {
        Gateway::start_with(Db::Postgres, 0, prepare)
    }

    fn start_with(db: Db, console_port: u16, prepare: impl FnOnce(&Path)) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path();
        let postgres = (db == Db::Postgres).then(PgDatabase::create);
        if let Some(pg) = &postgres {
            configure_database(data, &pg.url);
        }
        init_data_dir(data);
        let config = data.join("smimegate.toml");
        let text = std::fs::read_to_string(&config).expect("configuration");
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("internal_networks") {
                    "internal_networks = [\"127.0.0.1/32\"]".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(text.contains("internal_networks = [\"127.0.0.1/32\"]"));
        std::fs::write(&config, text).expect("configuration");
        let internal = Sink::start(data.join("internal"), 0);
        let smarthost = Sink::start(data.join("smarthost"), 0);
        smimegate_ok(
            data,
            &[
                "domain",
                "add",
                CORP,
                "--next-hop",
                &format!("127.0.0.1:{}", internal.port),
            ],
        );
        smimegate_ok(
            data,
            &["smarthost", "set", &format!("127.0.0.1:{}", smarthost.port)],
        );
        prepare(data);
        let mut gateway = Gateway {
            inbound: 0,
            submission: 0,
            http: 0,
            console: 0,
            console_port,
            postgres,
            internal,
            smarthost,
            child: None,
            _stdout: None,
            dir,
        };
        gateway.serve();
        gateway
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `smimegate serve` on free ports (it says which ones it bound).
    pub fn serve(&mut self) {
        let served = spawn_serve(self.data(), self.console_port);
        self.inbound = served.inbound;
        self.submission = served.submission;
        self.http = served.http;
        self.console = served.console;
        self.child = Some(served.child);
        self._stdout = Some(served.stdout);
        super::common::register_serving(self.data(), self.http);
    }

    /// Runs one SQL statement on the gateway's database, SQLite or PostgreSQL (to
    /// damage it the way a test needs).
    pub fn sql(&self, statement: &str) -> String {
        let out = match &self.postgres {
            Some(pg) => pg.sql(statement),
            None => run_ok(
                "python3",
                &[
                    "-c",
                    "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nc.execute(sys.argv[2])\nc.commit()",
                    &self.data().join("smimegate.db").display().to_string(),
                    statement,
                ],
            ),
        };
        if self.child.is_some() {
            super::common::wait_config_in_force(self.http, Duration::from_secs(5));
        }
        out
    }

    pub fn kill(&mut self) {
        super::common::unregister_serving(self.data());
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `smimegate rule add`; returns the new rule's id.
    pub fn add_rule(&self, direction: &str, from: &str, to: &str, action: &str) -> String {
        let out = self.cli(&[
            "rule",
            "add",
            "--direction",
            direction,
            "--from",
            from,
            "--to",
            to,
            "--action",
            action,
        ]);
        // "added rule ID at priority 1: …"
        out.split_whitespace()
            .nth(2)
            .map(str::to_string)
            .unwrap_or_else(|| panic!("rule add said: {out}"))
    }

    pub fn cli(&self, args: &[&str]) -> String {
        smimegate_ok(self.data(), args)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data().join("serve.log")).unwrap_or_default()
    }

    /// The built-in CA certificate as a PEM file (for openssl -CAfile).
    pub fn ca_pem(&self, mailbox: &str) -> String {
        let pem = self.cli(&["cert", "show", mailbox, "--pem"]);
        let start = pem[1..]
            .find("-----BEGIN")
            .map(|i| i + 1)
            .expect("CA after the leaf");
        let path = self.data().join("ca.pem");
        std::fs::write(&path, &pem[start..]).expect("write CA");
        path.display().to_string()
    }

    /// `GET path` on the gateway's HTTP endpoint: the status code and the body.
    pub fn http_get(&self, path: &str) -> (u16, Vec<u8>) {
        use std::io::{Read, Write};
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", self.http)).expect("connect HTTP");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .expect("request");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).expect("response");
        let end = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("end of the header");
        let head = String::from_utf8_lossy(&response[..end]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        assert!(
            !head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{head}"
        );
        (status, response[end + 4..].to_vec())
    }

    /// A mailbox's certificate (leaf only) as a PEM file.
    pub fn mailbox_pem(&self, mailbox: &str) -> String {
        let pem = self.cli(&["cert", "show", mailbox, "--pem"]);
        let end = pem.find("-----END CERTIFICATE-----").expect("leaf") + 25;
        let path = self.data().join(format!("{mailbox}.pem"));
        std::fs::write(&path, &pem[..end]).expect("write leaf");
        path.display().to_string()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Adds and activates a managed mailbox.
pub fn mailbox(data: &Path, address: &str) {
    smimegate_ok(data, &["mailbox", "add", address]);
    smimegate_ok(data, &["mailbox", "activate", address, "--skip-mx-check"]);
}

/// A partner outside: its own CA (trusted by the gateway when `trust` says so) and
/// an S/MIME certificate and key made by openssl.
pub struct Partner {
    pub address: String,
    pub ca: String,
    pub cert: String,
    pub key: String,
    /// The partner's CA, to certify more people with it.
    pub authority: super::common::OpensslCa,
}

/// The extensions of a partner's S/MIME certificate for `address`.
fn partner_extensions(address: &str) -> String {
    format!(
        "basicConstraints=CA:false\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=emailProtection\nsubjectAltName=email:{address}\n"
    )
}

impl Partner {
    pub fn new(dir: &Path, address: &str) -> Partner {
        let name = address.replace(['@', '.'], "_");
        let authority = super::common::OpensslCa::new(dir, &name);
        let (key, cert) = authority.issue(&name, "rsa:2048", &partner_extensions(address));
        Partner {
            address: address.to_string(),
            ca: authority.cert.clone(),
            cert,
            key,
            authority,
        }
    }

    /// Someone else certified by this partner's CA (its own key and certificate):
    /// a colleague, or an address the CA should not vouch for.
    pub fn certify(&self, address: &str) -> Partner {
        let name = address.replace(['@', '.'], "_");
        let (key, cert) = self
            .authority
            .issue(&name, "rsa:2048", &partner_extensions(address));
        Partner {
            address: address.to_string(),
            ca: self.ca.clone(),
            cert,
            key,
            authority: self.authority.clone(),
        }
    }

    /// A message signed by the partner with openssl (detached, multipart/signed), the
    /// way a mail client does it: From/To/Subject outside, the entity signed.
    pub fn sign(&self, dir: &Path, message: &str) -> Vec<u8> {
        let (head, body) = message.split_once("\r\n\r\n").expect("header and body");
        let mut outer = String::new();
        let mut entity = String::new();
        for line in head.split("\r\n") {
            if line.to_ascii_lowercase().starts_with("content-") {
                entity.push_str(line);
                entity.push_str("\r\n");
            } else {
                outer.push_str(line);
                outer.push_str("\r\n");
            }
        }
        entity.push_str("\r\n");
        entity.push_str(body);
        let input = dir.join("to-sign.eml");
        let output = dir.join("signed.eml");
        std::fs::write(&input, entity).expect("write");
        run_ok(
            "openssl",
            &[
                "cms",
                "-sign",
                "-in",
                &input.display().to_string(),
                "-signer",
                &self.cert,
                "-inkey",
                &self.key,
                "-out",
                &output.display().to_string(),
                "-crlfeol",
            ],
        );
        let signed = std::fs::read(&output).expect("read signed");
        [outer.into_bytes(), signed].concat()
    }
}

impl Gateway {
    /// Makes `partner` known the way the product learns partners: its CA becomes a
    /// trust anchor and it sends `to` a signed message, whose certificate is harvested.
    pub fn introduce(&self, partner: &Partner, to: &str) {
        self.cli(&["trust", "add", &partner.ca]);
        let text = format!(
            "From: {0}\r\nTo: {to}\r\nSubject: hello\r\nContent-Type: text/plain\r\n\r\nmy certificate\r\n",
            partner.address
        );
        let signed = partner.sign(self.data(), &text);
        let t = Client::connect(self.inbound).send(&partner.address, &[to], &signed);
        assert_eq!(t.data.as_ref().map(|d| d.0), Some(250), "{t:?}");
        let explained = self.cli(&["rule", "explain", to, &partner.address]);
        assert!(
            explained.contains("valid certificate known: yes"),
            "not harvested: {explained}"
        );
    }
}

/// Result of one SMTP transaction as the client saw it.
#[derive(Debug)]
pub struct Transcript {
    pub mail: (u16, String),
    pub rcpts: Vec<(u16, String)>,
    pub data: Option<(u16, String)>,
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address `source`.
pub fn connect_from(source: &str, port: u16) -> TcpStream {
    let source: std::net::IpAddr = source.parse().expect("source address");
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&std::net::SocketAddr::new(source, 0).into())
        .expect("bind the client's source address");
    socket
        .connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .expect("connect");
    socket.into()
}

/// A plain SMTP client over std::net that records replies.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    pub ehlo: String,
}

impl Client {
    /// A client on the internet (from 127.0.0.2, not an internal network).
    pub fn connect(port: u16) -> Client {
        Client::connect_from(INTERNET_CLIENT, port)
    }

    /// A client on the internal network (the internal mail server, 127.0.0.1).
    pub fn internal(port: u16) -> Client {
        Client::connect_from("127.0.0.1", port)
    }

    /// A client whose connection comes from `source` (a loopback address).
    pub fn connect_from(source: &str, port: u16) -> Client {
        let stream = connect_from(source, port);
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let writer = stream.try_clone().expect("clone");
        let mut client = Client {
            reader: BufReader::new(stream),
            writer,
            ehlo: String::new(),
        };
        let (code, _) = client.reply();
        assert_eq!(code, 220);
        let (code, text) = client.command("EHLO client.test");
        assert_eq!(code, 250);
        client.ehlo = text;
        client
    }

    /// Reads one reply: (code, all lines' text joined by newlines).
    pub fn reply(&mut self) -> (u16, String) {
        let mut text = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read reply");
            assert!(n > 0, "connection closed while waiting for a reply");
            let code: u16 = line[..3].parse().expect("reply code");
            text.push(line[4..].trim_end().to_string());
            if line.as_bytes()[3] == b' ' {
                return (code, text.join("\n"));
            }
        }
    }

    /// The socket, for reading what is left after the protocol.
    pub fn into_stream(self) -> TcpStream {
        self.writer
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    /// Writes, ignoring a peer that has gone away.
    pub fn try_send_raw(&mut self, bytes: &[u8]) {
        let _ = self.writer.write_all(bytes);
    }

    pub fn command(&mut self, line: &str) -> (u16, String) {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// One transaction; DATA only when a recipient was accepted.
    pub fn send(&mut self, from: &str, rcpts: &[&str], message: &[u8]) -> Transcript {
        self.send_with(
            &format!("MAIL FROM:<{from}>"),
            &rcpts
                .iter()
                .map(|r| format!("RCPT TO:<{r}>"))
                .collect::<Vec<_>>(),
            message,
        )
    }

    pub fn send_with(&mut self, mail: &str, rcpts: &[String], message: &[u8]) -> Transcript {
        let mail = self.command(mail);
        let rcpts: Vec<(u16, String)> = rcpts.iter().map(|r| self.command(r)).collect();
        let data = if rcpts.iter().any(|(c, _)| *c == 250) {
            let (code, text) = self.command("DATA");
            assert_eq!(code, 354, "{text}");
            self.send_raw(&dot_stuff(message));
            Some(self.reply())
        } else {
            let _ = self.command("RSET");
            None
        };
        Transcript { mail, rcpts, data }
    }
}

pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// `openssl cms -verify` against `ca`; returns the signed content.
pub fn openssl_verify(dir: &Path, message: &Delivered, ca: &str) -> Vec<u8> {
    let input = message.save(&dir.join("verify-in.eml"));
    let out = dir.join("verify-out.eml");
    run_ok(
        "openssl",
        &[
            "cms",
            "-verify",
            "-in",
            &input,
            "-CAfile",
            ca,
            "-purpose",
            "smimesign",
            "-out",
            &out.display().to_string(),
        ],
    );
    std::fs::read(&out).expect("verified content")
}

/// `openssl cms -decrypt` with a partner's key; returns the decrypted entity.
pub fn openssl_decrypt(dir: &Path, message: &[u8], partner: &Partner) -> Vec<u8> {
    let input = dir.join("decrypt-in.eml");
    std::fs::write(&input, message).expect("write");
    let out = dir.join("decrypt-out.eml");
    run_ok(
        "openssl",
        &[
            "cms",
            "-decrypt",
            "-in",
            &input.display().to_string(),
            "-recip",
            &partner.cert,
            "-inkey",
            &partner.key,
            "-out",
            &out.display().to_string(),
        ],
    );
    std::fs::read(&out).expect("decrypted")
}

/// Another node of a gateway on PostgreSQL: its own data directory and `serve`, the
/// same database and the same token (SoftHSM2's token directory shared on one host
/// stands in for a network HSM partition), and so the same next hops.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub inbound: u16,
    pub submission: u16,
    pub http: u16,
    child: Option<Child>,
    _stdout: Option<BufReader<std::process::ChildStdout>>,
}

impl Node {
    /// Joins `first` (which must run on PostgreSQL) as node `name`.
    pub fn join(first: &Gateway, name: &str) -> Node {
        assert!(first.postgres.is_some(), "several nodes need PostgreSQL");
        let dir = tempfile::tempdir().expect("temp dir");
        // Configuration, SoftHSM2 configuration (it names the shared token directory),
        // PIN files, TLS certificates: everything but the first node's own log, lock
        // and mail.
        for entry in std::fs::read_dir(first.data()).expect("first node's data") {
            let entry = entry.expect("entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep = entry.file_type().is_ok_and(|t| t.is_file())
                && !name.ends_with(".log")
                && !name.contains(".lock")
                && !name.starts_with("smimegate.db");
            if keep {
                std::fs::copy(entry.path(), dir.path().join(&name)).expect("copy");
            }
        }
        let config = dir.path().join("smimegate.toml");
        let text = std::fs::read_to_string(&config).expect("configuration");
        assert!(text.contains("node_name = \"node1\""));
        std::fs::write(
            &config,
            text.replace("node_name = \"node1\"", &format!("node_name = \"{name}\"")),
        )
        .expect("configuration");
        let mut node = Node {
            dir,
            inbound: 0,
            submission: 0,
            http: 0,
            child: None,
            _stdout: None,
        };
        node.serve();
        node
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    pub fn serve(&mut self) {
        let served = spawn_serve(self.data(), 0);
        self.inbound = served.inbound;
        self.submission = served.submission;
        self.http = served.http;
        self.child = Some(served.child);
        self._stdout = Some(served.stdout);
        super::common::register_serving(self.data(), self.http);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data().join("serve.log")).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        super::common::unregister_serving(self.data());
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

//! Shared fixtures: a throwaway SoftHSM2 token per test process, databases (SQLite file
//! and PostgreSQL), the smimegate binary on a fresh data directory, and openssl.
#![allow(dead_code)]

pub mod crl;
pub mod gpgsm;
pub mod saml;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use secrecy::SecretString;
use smimegate::hsm::provision::{self, TokenInit};
use smimegate::hsm::{Hsm, HsmConfig};
use smimegate::store::Store;

pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const LABEL: &str = "smimegate-test";

pub struct TestToken {
    pub dir: tempfile::TempDir,
    pub user_pin: String,
    pub hsm: Hsm,
}

/// The module under test: `SMIMEGATE_TEST_PKCS11_MODULE`, else Debian's SoftHSM2.
pub fn module() -> PathBuf {
    std::env::var_os("SMIMEGATE_TEST_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SOFTHSM_MODULE))
}

/// This process's token: created on first use in a temporary directory, with random
/// PINs. Each test process (nextest runs one per test) gets its own.
pub fn token() -> &'static TestToken {
    static TOKEN: OnceLock<TestToken> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let token_dir = dir.path().join("tokens");
        std::fs::create_dir(&token_dir).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(&conf, provision::softhsm2_conf_text(&token_dir)).expect("softhsm2.conf");
        // SAFETY: runs once, before this process loads the module; the test harness
        // threads do not touch the environment.
        unsafe { provision::export_softhsm2_conf(&conf) };
        let user_pin = format!("user-{}", std::process::id());
        let so_pin = SecretString::from(format!("so-{}", std::process::id()));
        let outcome = provision::init_token(
            &module(),
            LABEL,
            &so_pin,
            &SecretString::from(user_pin.clone()),
        )
        .expect("initialise test token");
        assert_eq!(outcome, TokenInit::Created);
        let hsm = open_hsm(&user_pin, 8);
        TestToken { dir, user_pin, hsm }
    })
}

/// Another handle on this process's token with its own session pool.
pub fn hsm_with_sessions(max_sessions: usize) -> Hsm {
    let token = token();
    open_hsm(&token.user_pin, max_sessions)
}

fn open_hsm(pin: &str, max_sessions: usize) -> Hsm {
    Hsm::open(HsmConfig {
        module: module(),
        token_label: LABEL.into(),
        pin: SecretString::from(pin.to_string()),
        max_sessions,
        operation_timeout: Duration::from_secs(30),
        acquire_timeout: Duration::from_secs(30),
    })
    .expect("open test token")
}

/// A fresh SQLite database in a temporary directory.
pub async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = Store::connect(&url, 4, Duration::from_secs(10))
        .await
        .expect("SQLite store");
    (store, dir)
}

/// The PostgreSQL server for tests: `TEST_DATABASE_URL`, else the local one CI has.
pub fn postgres_base_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh PostgreSQL database of its own, dropped by [`PgDatabase::drop_database`].
pub struct PgDatabase {
    pub store: Store,
    name: String,
    admin_url: String,
}

pub async fn postgres_store() -> PgDatabase {
    use sqlx::Connection;
    let admin_url = postgres_base_url();
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {admin_url} is required for the store suite (set TEST_DATABASE_URL, \
             or run ./scripts/test, which starts one): {e}"
            )
        });
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).expect("random");
    let name = format!("smimegate_test_{}", hex::encode(suffix));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create test database");
    admin.close().await.ok();
    let url = replace_database(&admin_url, &name);
    let store = Store::connect(&url, 4, Duration::from_secs(10))
        .await
        .expect("PostgreSQL store");
    PgDatabase {
        store,
        name,
        admin_url,
    }
}

impl PgDatabase {
    /// The URL of this database (to open another store on it).
    pub fn url(&self) -> String {
        replace_database(&self.admin_url, &self.name)
    }

    pub async fn drop_database(self) {
        use sqlx::Connection;
        self.store.close().await;
        if let Ok(mut admin) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {}",
                self.name
            )))
            .execute(&mut admin)
            .await;
        }
    }
}

pub fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..host_end], name);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Runs the smimegate binary.
pub fn smimegate(data_dir: &Path, args: &[&str]) -> Output {
    smimegate_env(data_dir, args, &[])
}

/// The binary on `data_dir` with `args`, without the caller's PIN or log filter.
pub fn smimegate_command(data_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smimegate"));
    cmd.arg("--data-dir").arg(data_dir).args(args);
    cmd.env_remove("SMIMEGATE_HSM_PIN").env_remove("RUST_LOG");
    cmd
}

pub fn smimegate_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = smimegate_command(data_dir, args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run smimegate");
    // A gateway serving from this data directory learns a change in the background
    // (NOTIFY on PostgreSQL, a poll on SQLite): wait until it acts on it, as an
    // operator reading /health would, so the next step of a test sees it in force.
    let http = serving().lock().ok().and_then(|s| {
        s.iter()
            .find(|(dir, _)| dir.as_path() == data_dir)
            .map(|(_, port)| *port)
    });
    if let Some(port) = http {
        wait_config_in_force(port, Duration::from_secs(5));
    }
    out
}

/// Data directories with a serving gateway, and its HTTP port.
fn serving() -> &'static std::sync::Mutex<Vec<(PathBuf, u16)>> {
    static SERVING: OnceLock<std::sync::Mutex<Vec<(PathBuf, u16)>>> = OnceLock::new();
    SERVING.get_or_init(|| std::sync::Mutex::new(Vec::new()))
}

/// A gateway now serves from `data_dir` with its health endpoint on `http_port`.
pub fn register_serving(data_dir: &Path, http_port: u16) {
    if let Ok(mut s) = serving().lock() {
        s.retain(|(dir, _)| dir.as_path() != data_dir);
        s.push((data_dir.to_path_buf(), http_port));
    }
}

/// The gateway serving from `data_dir` stopped.
pub fn unregister_serving(data_dir: &Path) {
    if let Ok(mut s) = serving().lock() {
        s.retain(|(dir, _)| dir.as_path() != data_dir);
    }
}

/// The configuration versions `/health` reports: (in the database, in force here).
pub fn config_versions(http_port: u16) -> Option<(i64, i64)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", http_port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let start = response.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let body: serde_json::Value = serde_json::from_slice(&response[start..]).ok()?;
    let database = &body["database"];
    Some((
        database["config_version"].as_i64()?,
        database["config_version_in_force"].as_i64()?,
    ))
}

/// Waits (at most `limit`) until the gateway on `http_port` acts on the database's
/// configuration version; true when it does.
pub fn wait_config_in_force(http_port: u16, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some((database, in_force)) = config_versions(http_port)
            && in_force >= database
        {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs smimegate and insists on success; returns stdout.
pub fn smimegate_ok(data_dir: &Path, args: &[&str]) -> String {
    let out = smimegate(data_dir, args);
    assert!(
        out.status.success(),
        "smimegate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a program; returns (success, stdout, stderr).
pub fn run(program: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (run ./scripts/test, which installs it): {e}")
        });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn run_ok(program: &str, args: &[&str]) -> String {
    let (ok, stdout, stderr) = run(program, args);
    assert!(ok, "{program} {args:?} failed: {stderr}{stdout}");
    stdout
}

/// A CA whose P-256 key is in this process's token.
pub fn token_ca(subject: &str) -> smimegate::pki::ca::CaIdentity {
    use smimegate::hsm::{KeyAlgorithm, KeyRole};
    let hsm = &token().hsm;
    let key = hsm
        .generate_key_pair(KeyAlgorithm::P256, KeyRole::CertificateAuthority, subject)
        .expect("CA key");
    let certificate =
        smimegate::pki::ca::create_ca_certificate(hsm, &key, subject, 30).expect("CA certificate");
    smimegate::pki::ca::CaIdentity {
        key_id: key.id,
        algorithm: key.algorithm,
        certificate,
    }
}

/// A mailbox `local@corp.example` whose key is in the token, certified by `ca`.
pub fn token_mailbox(
    ca: &smimegate::pki::ca::CaIdentity,
    local: &str,
    algorithm: smimegate::hsm::KeyAlgorithm,
) -> (smimegate::hsm::GeneratedKey, x509_cert::Certificate) {
    let hsm = &token().hsm;
    let key = hsm
        .generate_key_pair(algorithm, smimegate::hsm::KeyRole::Mailbox, local)
        .expect("mailbox key");
    let address =
        smimegate::pki::address::Address::parse(&format!("{local}@corp.example")).expect("address");
    let cert = smimegate::pki::ca::issue_mailbox_certificate(
        hsm,
        ca,
        &address,
        &key,
        365,
        "http://crl.example/ca.crl",
    )
    .expect("mailbox certificate");
    (key, cert)
}

/// Every recipient id naming `cert`, mapped to `key`.
pub fn held_for(
    cert: &x509_cert::Certificate,
    key: &smimegate::hsm::KeyId,
) -> Vec<(
    smimegate::smime::decrypt::RecipientId,
    smimegate::hsm::KeyId,
)> {
    smimegate::smime::decrypt::RecipientId::for_certificate(cert)
        .into_iter()
        .map(|id| (id, key.clone()))
        .collect()
}

/// A partner's CA made by openssl (RSA-2048, files on disk), for certificates the
/// gateway does not issue: partners, forged and broken signers.
#[derive(Clone)]
pub struct OpensslCa {
    pub cert: String,
    pub key: String,
    dir: PathBuf,
}

impl OpensslCa {
    /// `DIR/{name}-ca.pem` and its key, subject `CN=CA of {name}`.
    pub fn new(dir: &Path, name: &str) -> OpensslCa {
        let cert = dir.join(format!("{name}-ca.pem")).display().to_string();
        let key = dir.join(format!("{name}-ca.key")).display().to_string();
        run_ok(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &cert,
                "-days",
                "30",
                "-subj",
                &format!("/CN=CA of {name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        OpensslCa {
            cert,
            key,
            dir: dir.to_path_buf(),
        }
    }

    /// A certificate for `name` with a new key (an openssl `-newkey` spec) and the
    /// extensions `ext` (openssl extfile syntax), valid 10 days. Returns (key, cert).
    pub fn issue(&self, name: &str, key_spec: &str, ext: &str) -> (String, String) {
        let p = |suffix: &str| {
            self.dir
                .join(format!("{name}.{suffix}"))
                .display()
                .to_string()
        };
        let (key, csr, cert, cnf) = (p("key"), p("csr"), p("pem"), p("cnf"));
        std::fs::write(&cnf, ext).expect("extensions file");
        run_ok(
            "openssl",
            &[
                "req",
                "-new",
                "-newkey",
                key_spec,
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        run_ok(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &self.cert,
                "-CAkey",
                &self.key,
                "-CAcreateserial",
                "-days",
                "10",
                "-out",
                &cert,
                "-extfile",
                &cnf,
            ],
        );
        (key, cert)
    }
}

/// Verifies with unscoped anchors (any domain) at `now`, binding the verdict to
/// `from` (`None`: the message's own From field).
pub fn verify_signature(
    message: &[u8],
    from: Option<&str>,
    anchors: &[x509_cert::Certificate],
    now: std::time::SystemTime,
) -> smimegate::smime::verify::Verification {
    verify_signature_with_crls(message, from, anchors, &[], now)
}

/// [`verify_signature`] with CRLs (DER).
pub fn verify_signature_with_crls(
    message: &[u8],
    from: Option<&str>,
    anchors: &[x509_cert::Certificate],
    crls: &[Vec<u8>],
    now: std::time::SystemTime,
) -> smimegate::smime::verify::Verification {
    use smimegate::smime::verify::{FromField, TrustAnchors, VerifyContext, verify};
    let trust = TrustAnchors::unscoped(anchors);
    let from = match from {
        Some(address) => FromField::given(address),
        None => FromField::of_message(message),
    };
    verify(
        message,
        &from,
        &VerifyContext {
            trust: &trust,
            crls,
            revocation: None,
            now,
            limits: &smimegate::mime::Limits::default(),
        },
    )
}

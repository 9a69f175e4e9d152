//! Next-hop TLS levels against `smimegate sink` offering STARTTLS with a certificate
//! openssl made for `mail.corp.example` (and `localhost`) under a test CA: `verify`
//! passes with that CA and name and fails with another name or CA (or the system
//! roots), `pin` passes with the leaf's fingerprint and fails with another; a failure
//! is a `4xx` and the message is not sent.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use smimegate::config::Config;
use smimegate::relay::hops::HopPool;
use smimegate::smtp::Reply;
use smimegate::smtp::client::ClientConfig;

use super::transaction_with;

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a leaf for mail.corp.example and localhost under it, and another CA.
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = |name: &str| dir.path().join(name).display().to_string();
        for ca in ["ca", "other-ca"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &p(&format!("{ca}.key")),
                "-out",
                &p(&format!("{ca}.pem")),
                "-days",
                "2",
                "-subj",
                &format!("/CN=Next hop test {ca}"),
            ]);
        }
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &p("leaf.key"),
            "-out",
            &p("leaf.csr"),
            "-subj",
            "/CN=mail.corp.example",
        ]);
        std::fs::write(
            dir.path().join("ext.cnf"),
            "subjectAltName=DNS:mail.corp.example,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &p("leaf.csr"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-out",
            &p("leaf.pem"),
            "-days",
            "2",
            "-extfile",
            &p("ext.cnf"),
        ]);
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// As openssl prints it: "sha256 Fingerprint=AB:CD:…".
    fn leaf_fingerprint(&self) -> String {
        let leaf = self.path("leaf.pem").display().to_string();
        openssl(&["x509", "-in", &leaf, "-noout", "-fingerprint", "-sha256"])
            .trim()
            .to_string()
    }
}

/// `smimegate sink` on a free loopback port, killed on drop.
struct Sink {
    port: u16,
    maildir: PathBuf,
    child: Child,
}

impl Sink {
    fn start(dir: &Path, tls: Option<&Pki>) -> Sink {
        static SINKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SINKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let maildir = dir.join(format!("maildir-{n}"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_smimegate"));
        command
            .args(["sink", "--listen", "127.0.0.1:0", "--maildir"])
            .arg(&maildir);
        if let Some(pki) = tls {
            command
                .arg("--tls-cert")
                .arg(pki.path("leaf.pem"))
                .arg("--tls-key")
                .arg(pki.path("leaf.key"));
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sink");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("sink line");
        // "smimegate sink: SMTP on 127.0.0.1:PORT, writing to …"
        let port = line
            .split("SMTP on ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("sink said: {line}"));
        Sink {
            port,
            maildir,
            child,
        }
    }

    fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.maildir.join("new"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).expect("read message"))
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client configured from TOML, as `serve` does it.
fn client_for(toml: &str, data_dir: &Path) -> ClientConfig {
    let config = Config::parse(toml, Path::new("test.toml")).expect("configuration parses");
    ClientConfig::from_relay_config("gw.test".into(), &config.relay, data_dir)
        .expect("next-hop TLS settings")
}

async fn send(config: &ClientConfig, hop: &str) -> Reply {
    let pool = HopPool::default();
    transaction_with(&pool, config, hop, &["bob@corp.example"])
        .await
        .0
}

fn section(hop: &str, body: &str) -> String {
    format!("[relay]\nnext_hop_tls = \"opportunistic\"\n\n[relay.hop.\"{hop}\"]\n{body}\n")
}

#[tokio::test]
async fn verify_accepts_the_right_ca_and_name() {
    let pki = Pki::new();
    let sink = Sink::start(pki.dir.path(), Some(&pki));
    // Written as an address: the name to check is configured.
    let hop = format!("127.0.0.1:{}", sink.port);
    let toml = section(
        &hop,
        "tls = \"verify\"\nca_file = \"ca.pem\"\nserver_name = \"mail.corp.example\"",
    );
    let reply = send(&client_for(&toml, pki.dir.path()), &hop).await;
    assert_eq!(reply.code, 250, "{reply}");
    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].contains("X-Sink-TLS: yes"));
    // Written as a name: the hop's own host name is checked.
    let hop = format!("localhost:{}", sink.port);
    let toml = section(&hop, "tls = \"verify\"\nca_file = \"ca.pem\"");
    let reply = send(&client_for(&toml, pki.dir.path()), &hop).await;
    assert_eq!(reply.code, 250, "{reply}");
    assert_eq!(sink.messages().len(), 2);
}

#[tokio::test]
async fn verify_refuses_the_wrong_name_or_ca_with_a_4xx_and_sends_nothing() {
    let pki = Pki::new();
    let sink = Sink::start(pki.dir.path(), Some(&pki));
    let hop = format!("127.0.0.1:{}", sink.port);
    let cases = [
        "tls = \"verify\"\nca_file = \"ca.pem\"\nserver_name = \"other.example\"",
        "tls = \"verify\"\nca_file = \"other-ca.pem\"\nserver_name = \"mail.corp.example\"",
        // The system roots do not know the test CA.
        "tls = \"verify\"\nserver_name = \"mail.corp.example\"",
        // The hop written as an address the certificate does not name.
        "tls = \"verify\"\nca_file = \"ca.pem\"",
    ];
    for case in cases {
        let reply = send(&client_for(&section(&hop, case), pki.dir.path()), &hop).await;
        assert_eq!(
            reply.to_string(),
            "451 4.7.5 Next hop unavailable, try again later",
            "{case}"
        );
    }
    assert!(sink.messages().is_empty(), "nothing may be sent unverified");
}

#[tokio::test]
async fn pin_accepts_the_pinned_certificate_and_refuses_another() {
    let pki = Pki::new();
    let sink = Sink::start(pki.dir.path(), Some(&pki));
    let hop = format!("127.0.0.1:{}", sink.port);
    let pinned = pki.leaf_fingerprint();
    let toml = section(
        &hop,
        &format!(
            "tls = \"pin\"\npin_sha256 = [\"{}\", \"{}\"]",
            "00".repeat(32),
            pinned
        ),
    );
    let reply = send(&client_for(&toml, pki.dir.path()), &hop).await;
    assert_eq!(reply.code, 250, "{reply}");
    assert_eq!(sink.messages().len(), 1);
    let toml = section(
        &hop,
        &format!("tls = \"pin\"\npin_sha256 = [\"{}\"]", "ab".repeat(32)),
    );
    let log = super::peer::capture_log();
    let reply = send(&client_for(&toml, pki.dir.path()), &hop).await;
    assert_eq!(
        reply.to_string(),
        "451 4.7.5 Next hop unavailable, try again later"
    );
    assert_eq!(
        sink.messages().len(),
        1,
        "nothing sent to an unpinned certificate"
    );
    // The log shows the fingerprint presented, so the operator can compare.
    let presented: String = pinned
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .replace(':', "");
    assert!(log.text().contains(&presented), "{}", log.text());
}

#[tokio::test]
async fn a_hop_without_starttls_gets_nothing_under_required_verify_or_pin() {
    let pki = Pki::new();
    let sink = Sink::start(pki.dir.path(), None);
    let hop = format!("127.0.0.1:{}", sink.port);
    for level in [
        "tls = \"required\"".to_string(),
        "tls = \"verify\"\nca_file = \"ca.pem\"".to_string(),
        format!("tls = \"pin\"\npin_sha256 = [\"{}\"]", "ab".repeat(32)),
    ] {
        let reply = send(&client_for(&section(&hop, &level), pki.dir.path()), &hop).await;
        assert_eq!(
            reply.to_string(),
            "451 4.7.4 Next hop unavailable, try again later",
            "{level}"
        );
    }
    assert!(sink.messages().is_empty());
    // Opportunistic sends in plaintext.
    let reply = send(&client_for("", pki.dir.path()), &hop).await;
    assert_eq!(reply.code, 250, "{reply}");
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn hop_sections_are_validated_when_the_configuration_is_read() {
    for (toml, complaint) in [
        ("[relay]\nnext_hop_tls = \"pin\"\n", "per hop"),
        ("[relay.hop.\"h:25\"]\ntls = \"pin\"\n", "needs pin_sha256"),
        (
            "[relay.hop.\"h:25\"]\ntls = \"pin\"\npin_sha256 = [\"12:34\"]\n",
            "not a SHA-256",
        ),
        (
            "[relay.hop.\"h:25\"]\ntls = \"verify\"\npin_sha256 = [\"ab\"]\n",
            "not a SHA-256",
        ),
        ("[relay.hop.\"h:0\"]\ntls = \"verify\"\n", "HOST:PORT"),
        (
            "[relay.hop.\"h:25\"]\ntls = \"sometimes\"\n",
            "unknown variant",
        ),
        (
            "[relay.hop.\"h:25\"]\nserver_name = \"bad name\"\n",
            "server_name",
        ),
    ] {
        let err = Config::parse(toml, Path::new("t.toml"))
            .err()
            .unwrap_or_else(|| panic!("accepted: {toml}"));
        assert!(err.to_string().contains(complaint), "{toml}: {err}");
    }
}

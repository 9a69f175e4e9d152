//! Operating the gateway (issue 12 item 7): plain logs off a terminal, a wrong log
//! filter refused, readiness with the next hops, and upgrades from the previous
//! release's schema.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{smimegate, smimegate_env, smimegate_ok};

fn initialised_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = smimegate_ok(&dir.path().join("var"), &["init"]);
    assert!(out.contains("created SoftHSM2 token"), "{out}");
    dir
}

fn set_config(data: &Path, from: &str, to: &str) {
    let path = data.join("smimegate.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    assert!(text.contains(from), "config lacks {from}");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write config");
}

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    probe.local_addr().expect("addr").port()
}

/// Kills the process when the test ends, passed or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(data: &Path, args: &[&str]) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_smimegate"))
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start smimegate"),
    )
}

fn wait_for_port(port: u16) {
    let until = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP GET: the status code and the body.
fn get(port: u16, path: &str) -> (u16, String) {
    wait_for_port(port);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let code = response
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn logs_off_a_terminal_carry_no_colour_codes() {
    let dir = initialised_dir();
    let data = dir.path().join("var");
    let out = smimegate_env(&data, &["domain", "list"], &[("RUST_LOG", "debug")]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().count() > 0, "RUST_LOG=debug logged nothing");
    assert!(!stderr.contains('\u{1b}'), "ANSI escape in: {stderr}");
    // One line per event: each starts with its timestamp.
    for line in stderr.lines() {
        assert!(
            line.starts_with(|c: char| c.is_ascii_digit()),
            "a log line that is not an event of its own: {line}"
        );
    }
}

#[test]
fn a_misspelt_log_filter_is_refused_at_start_naming_the_key() {
    let dir = initialised_dir();
    let data = dir.path().join("var");
    set_config(&data, "filter = \"info\"", "filter = \"inof\"");
    for args in [
        &["domain", "list"][..],
        &["serve", "--http", &format!("127.0.0.1:{}", free_port())][..],
    ] {
        let out = smimegate(&data, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("log.filter"), "{stderr}");
        assert!(stderr.contains("\"inof\" is not a level"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    set_config(&data, "filter = \"inof\"", "filter = \"smimegate=verbose\"");
    let out = smimegate(&data, &["domain", "list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("log.filter"), "{stderr}");
}

#[test]
fn serve_is_ready_only_when_every_next_hop_greets() {
    let dir = initialised_dir();
    let data = dir.path().join("var");
    let (smarthost, route, http) = (free_port(), free_port(), free_port());
    for (key, port) in [
        ("inbound_listen = \"127.0.0.1:2525\"", free_port()),
        ("submission_listen = \"127.0.0.1:2587\"", free_port()),
    ] {
        let (name, _) = key.split_once(" = ").expect("key");
        set_config(&data, key, &format!("{name} = \"127.0.0.1:{port}\""));
    }
    set_config(
        &data,
        "listen = \"127.0.0.1:8443\"",
        &format!("listen = \"127.0.0.1:{}\"", free_port()),
    );
    let maildir = dir.path().join("maildir");
    let maildir = maildir.display().to_string();
    let sink_at = |port: u16| {
        let listen = format!("127.0.0.1:{port}");
        let sink = spawn(
            &data,
            &[
                "sink",
                "--listen",
                &listen,
                "--maildir",
                &maildir,
                "--discard",
            ],
        );
        wait_for_port(port);
        sink
    };
    let _smarthost = sink_at(smarthost);
    smimegate_ok(
        &data,
        &["smarthost", "set", &format!("127.0.0.1:{smarthost}")],
    );
    let route_at = format!("127.0.0.1:{route}");
    smimegate_ok(
        &data,
        &["domain", "add", "corp.example", "--next-hop", &route_at],
    );
    let _serve = spawn(&data, &["serve", "--http", &format!("127.0.0.1:{http}")]);

    // Nothing listens at the domain's inbound route: not ready, and the body says why.
    let (code, body) = get(http, "/ready");
    assert_eq!(code, 503, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(json["status"], "not ready", "{body}");
    assert_eq!(json["database"]["ok"], true, "{body}");
    assert_eq!(json["token"]["ok"], true, "{body}");
    let hops = json["next_hops"].as_array().expect("next_hops");
    assert_eq!(hops.len(), 2, "{body}");
    let hop = |role: &str| {
        hops.iter()
            .find(|h| h["role"] == role)
            .unwrap_or_else(|| panic!("no {role} in {body}"))
            .clone()
    };
    assert_eq!(hop("smarthost")["ok"], true, "{body}");
    let inbound = hop("inbound route of corp.example");
    assert_eq!(inbound["ok"], false, "{body}");
    assert_eq!(inbound["host_port"], route_at.as_str(), "{body}");
    assert!(
        inbound["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("connect")),
        "{body}"
    );
    // Liveness does not depend on the hops.
    assert_eq!(get(http, "/health").0, 200);

    // The route's server comes up: ready once the cached answer has aged out.
    let _route = sink_at(route);
    let until = Instant::now() + Duration::from_secs(15);
    let body = loop {
        let (code, body) = get(http, "/ready");
        if code == 200 {
            break body;
        }
        assert!(Instant::now() < until, "never ready: {body}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(json["status"], "ready", "{body}");
    assert!(
        json["next_hops"]
            .as_array()
            .expect("next_hops")
            .iter()
            .all(|h| h["ok"] == true),
        "{body}"
    );
}

/// The migrations of the release before the console (0001–0009), copied apart.
fn previous_release_migrations(into: &Path) {
    std::fs::create_dir_all(into).expect("mkdir");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    let mut copied = 0;
    for entry in std::fs::read_dir(&source).expect("migrations") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let version: u32 = name
            .get(..4)
            .and_then(|v| v.parse().ok())
            .expect("numbered");
        if version <= 9 {
            std::fs::copy(&path, into.join(&name)).expect("copy");
            copied += 1;
        }
    }
    assert_eq!(copied, 9);
}

#[test]
fn a_database_of_the_previous_release_is_migrated_by_migrate_without_loss() {
    let dir = initialised_dir();
    let data = dir.path().join("var");
    let out = smimegate_ok(&data, &["migrate"]);
    assert!(out.contains("database schema is up to date"), "{out}");

    // A database at schema 0009 with a domain and a logged message in it.
    let old_migrations = dir.path().join("migrations-0009");
    previous_release_migrations(&old_migrations);
    let db = data.join("previous.db");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=rwc", db.display());
        let pool = sqlx::AnyPool::connect(&url).await.expect("open");
        let migrator = sqlx::migrate::Migrator::new(old_migrations.as_path())
            .await
            .expect("migrator");
        migrator.run(&pool).await.expect("migrate to 0009");
        sqlx::query(
            "INSERT INTO domains (name, next_hop, wildcard, created_at) \
             VALUES ('old.example', '127.0.0.1:2525', 0, 1700000000)",
        )
        .execute(&pool)
        .await
        .expect("domain");
        sqlx::query(
            "INSERT INTO message_log (received_at, node, direction, mail_from, rcpt_to, \
             message_id, subject, size_bytes, status, actions, smtp_code, smtp_reply, \
             rule_id, duration_ms) VALUES ($1, 'node1', 'outbound', 'alice@old.example', \
             '[\"bob@partner.example\"]', '<m1@old.example>', 'before the upgrade', 1234, \
             'relayed', '[\"signed\"]', 250, '250 ok', NULL, 7)",
        )
        .bind(smimegate::store::unix_now() - 60)
        .execute(&pool)
        .await
        .expect("message");
        pool.close().await;
    });
    set_config(
        &data,
        "url = \"sqlite:smimegate.db\"",
        "url = \"sqlite:previous.db\"",
    );

    let out = smimegate_ok(&data, &["migrate"]);
    for version in ["0010", "0011", "0012"] {
        assert!(
            out.contains(&format!("applied migration {version}")),
            "{out}"
        );
    }
    assert!(!out.contains("applied migration 0009"), "{out}");
    let again = smimegate_ok(&data, &["migrate"]);
    assert!(again.contains("database schema is up to date"), "{again}");
    assert!(!again.contains("applied"), "{again}");

    // The data is there, and the new schema is used: the crypto column was backfilled.
    let domains = smimegate_ok(&data, &["domain", "list"]);
    assert!(domains.contains("old.example"), "{domains}");
    let signed = smimegate_ok(&data, &["log", "--crypto", "signed"]);
    assert!(signed.contains("alice@old.example"), "{signed}");
    smimegate_ok(&data, &["domain", "add", "new.example"]);
    let domains = smimegate_ok(&data, &["domain", "list"]);
    assert!(
        domains.contains("old.example") && domains.contains("new.example"),
        "{domains}"
    );
}

#[test]
fn sighup_with_a_wrong_log_filter_keeps_the_running_one_and_says_why() {
    let dir = initialised_dir();
    let data = dir.path().join("var");
    for (key, port) in [
        ("inbound_listen = \"127.0.0.1:2525\"", free_port()),
        ("submission_listen = \"127.0.0.1:2587\"", free_port()),
    ] {
        let (name, _) = key.split_once(" = ").expect("key");
        set_config(&data, key, &format!("{name} = \"127.0.0.1:{port}\""));
    }
    set_config(
        &data,
        "listen = \"127.0.0.1:8443\"",
        &format!("listen = \"127.0.0.1:{}\"", free_port()),
    );
    let http = free_port();
    let log = dir.path().join("serve.log");
    let child = Command::new(env!("CARGO_BIN_EXE_smimegate"))
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--http", &format!("127.0.0.1:{http}")])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start serve");
    let serve = Killed(child);
    assert_eq!(get(http, "/health").0, 200);
    set_config(&data, "filter = \"info\"", "filter = \"inof\"");
    let hup = Command::new("kill")
        .args(["-HUP", &serve.0.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let until = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).expect("read log");
        if text.contains("SIGHUP") {
            break text;
        }
        assert!(Instant::now() < until, "no SIGHUP line: {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let line = text
        .lines()
        .find(|l| l.contains("SIGHUP"))
        .expect("SIGHUP line");
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains("not reloaded; keeping the running one"),
        "{line}"
    );
    assert!(line.contains("log.filter"), "{line}");
    // Still serving, and still logging at the old level.
    assert_eq!(get(http, "/health").0, 200);
    assert!(!text.contains('\u{1b}'), "{text}");
}

//! The binary as an operator uses it: init (twice), domains, mailboxes, activation,
//! the certificate checked by openssl, the key witnessed by pkcs11-tool, the errors a
//! user can cause, and the health endpoint of `serve`.

mod common;

use std::io::{Read, Write};
use std::path::Path;

use common::{run_ok, smimegate, smimegate_env, smimegate_ok};

fn initialised_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = smimegate_ok(&dir.path().join("var"), &["init"]);
    assert!(out.contains("created SoftHSM2 token"), "{out}");
    assert!(out.contains("created CA"), "{out}");
    dir
}

/// Every failure is one line on stderr, exit status 1, never a panic.
fn assert_clean_failure(out: &std::process::Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("smimegate: error: "), "{stderr}");
    assert!(
        lines[0].contains(expected),
        "expected '{expected}' in: {stderr}"
    );
}

fn set_config(data: &Path, from: &str, to: &str) {
    let path = data.join("smimegate.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    assert!(text.contains(from), "config lacks {from}");
    std::fs::write(&path, text.replace(from, to)).expect("write config");
}

#[test]
fn init_is_idempotent_and_keeps_secrets_private() {
    let dir = initialised_dir();
    let data = dir.path().join("var");
    // What the database holds (the file itself is not compared: in WAL mode its bytes
    // move between the log and the main file when a process closes it).
    let contents = || {
        let url = format!("sqlite://{}", data.join("smimegate.db").display());
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let store =
                smimegate::store::Store::connect(&url, 1, std::time::Duration::from_secs(5))
                    .await
                    .expect("database");
            let mut counts = Vec::new();
            for table in [
                "keys",
                "certificates",
                "domains",
                "mailboxes",
                "audit_log",
                "rules",
            ] {
                let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT COUNT(*) FROM {table}"
                )))
                .fetch_one(store.pool())
                .await
                .expect("count");
                counts.push(n);
            }
            let version = store.config_version().await.expect("version");
            store.close().await;
            (counts, version)
        })
    };
    let before = contents();
    let tls = std::fs::read(data.join("smtp-tls.pem")).expect("TLS certificate");
    let out = smimegate_ok(&data, &["init"]);
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(contents(), before, "a second init changed the database");
    assert_eq!(std::fs::read(data.join("smtp-tls.pem")).expect("TLS"), tls);
    use std::os::unix::fs::PermissionsExt;
    for pin in ["hsm-user.pin", "hsm-so.pin"] {
        let mode = std::fs::metadata(data.join(pin))
            .expect("pin file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{pin}");
    }
    let config = std::fs::read_to_string(data.join("smimegate.toml")).expect("config");
    let pin = std::fs::read_to_string(data.join("hsm-user.pin")).expect("pin");
    assert!(
        !config.contains(pin.trim()),
        "PIN leaked into the configuration"
    );
}

#[test]
fn activated_mailbox_certificate_is_accepted_for_smime_and_its_key_stays_in_the_token() {
    let dir = initialised_dir();
    let data = dir.path().join("var");
    smimegate_ok(
        &data,
        &[
            "domain",
            "add",
            "corp.example",
            "--next-hop",
            "127.0.0.1:2525",
        ],
    );
    smimegate_ok(&data, &["mailbox", "add", "Alice@corp.example"]);
    let out = smimegate_ok(
        &data,
        &[
            "mailbox",
            "activate",
            "alice@corp.example",
            "--skip-mx-check",
        ],
    );
    assert!(out.contains("activated alice@corp.example"), "{out}");
    let list = smimegate_ok(&data, &["mailbox", "list"]);
    assert!(
        list.contains("alice@corp.example") && list.contains("active"),
        "{list}"
    );

    let pem = smimegate_ok(&data, &["cert", "show", "alice@corp.example", "--pem"]);
    assert!(!pem.contains("PRIVATE"), "{pem}");
    let blocks: Vec<&str> = pem.split_inclusive("-----END CERTIFICATE-----\n").collect();
    assert_eq!(blocks.len(), 3, "leaf, issuing CA and root expected: {pem}");
    let leaf = dir.path().join("leaf.pem");
    let issuing = dir.path().join("issuing.pem");
    let root = dir.path().join("root.pem");
    std::fs::write(&leaf, blocks[0]).expect("write");
    std::fs::write(&issuing, blocks[1]).expect("write");
    std::fs::write(&root, blocks[2]).expect("write");
    let (leaf, issuing, root) = (
        leaf.display().to_string(),
        issuing.display().to_string(),
        root.display().to_string(),
    );
    let out = run_ok(
        "openssl",
        &[
            "verify",
            "-purpose",
            "smimesign",
            "-CAfile",
            &root,
            "-untrusted",
            &issuing,
            &leaf,
        ],
    );
    assert!(out.contains(": OK"), "{out}");
    let text = run_ok("openssl", &["x509", "-in", &leaf, "-noout", "-text"]);
    assert!(text.contains("E-mail Protection"), "{text}");
    assert!(
        text.contains("Digital Signature, Key Encipherment"),
        "{text}"
    );
    assert!(text.contains("email:alice@corp.example"), "{text}");

    let details = smimegate_ok(&data, &["cert", "show", "alice@corp.example"]);
    assert!(details.contains("id-kp-emailProtection"), "{details}");

    // pkcs11-tool, an outside witness, sees every private key as protected.
    let listing = pkcs11_tool_private_keys(&data);
    let keys: Vec<&str> = listing.split("Private Key Object").skip(1).collect();
    assert_eq!(
        keys.len(),
        4,
        "root CA, issuing CA, SMTP TLS and alice expected: {listing}"
    );
    assert!(listing.contains("alice@corp.example"), "{listing}");
    assert!(listing.contains("SMTP TLS"), "{listing}");
    for key in keys {
        assert!(
            key.contains("Access:     sensitive, always sensitive, never extractable"),
            "{key}"
        );
    }
    let custody = smimegate_ok(&data, &["token", "custody"]);
    assert!(custody.contains("4 key(s) checked"), "{custody}");

    // Activating twice issues nothing: one certificate per mailbox.
    let again = smimegate_ok(&data, &["mailbox", "activate", "alice@corp.example"]);
    assert!(
        again.contains("skipped alice@corp.example: active already"),
        "{again}"
    );
    let show = smimegate_ok(&data, &["mailbox", "show", "alice@corp.example"]);
    assert_eq!(show.matches("serial ").count(), 1, "{show}");
}

#[test]
fn p256_mailboxes_get_key_agreement_certificates() {
    let dir = initialised_dir();
    let data = dir.path().join("var");
    smimegate_ok(
        &data,
        &[
            "domain",
            "add",
            "corp.example",
            "--next-hop",
            "mx.corp.example:25",
        ],
    );
    smimegate_ok(&data, &["mailbox", "add", "carol@corp.example"]);
    smimegate_ok(
        &data,
        &[
            "mailbox",
            "activate",
            "carol@corp.example",
            "--key",
            "p256",
            "--skip-mx-check",
        ],
    );
    let details = smimegate_ok(&data, &["cert", "show", "carol@corp.example"]);
    assert!(details.contains("id-ecPublicKey"), "{details}");
    assert!(
        details.contains("DigitalSignature, KeyAgreement"),
        "{details}"
    );
    let listing = pkcs11_tool_private_keys(&data);
    let carol = listing
        .split("Private Key Object")
        .find(|k| k.contains("carol@corp.example"))
        .unwrap_or_else(|| panic!("carol's key not listed: {listing}"));
    assert!(carol.contains("EC"), "{carol}");
    assert!(
        carol.contains("Access:     sensitive, always sensitive, never extractable"),
        "{carol}"
    );
}

/// SoftHSM2 keeps each object in `UUID.object` (and `UUID.lock`); `token.object`,
/// `token.lock` and `generation` describe the token itself.
fn is_key_object_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    (name.ends_with(".object") || name.ends_with(".lock")) && !name.starts_with("token.")
}

/// The data directory's key object files: digest and modification time of each.
fn token_files(data: &Path) -> std::collections::BTreeMap<String, (String, std::time::SystemTime)> {
    use sha2::Digest;
    let mut files = std::collections::BTreeMap::new();
    let mut dirs = vec![data.join("tokens")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("token dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            // The token's own record (token.object, generation) changes at login.
            if !is_key_object_file(&path) {
                continue;
            }
            let bytes = std::fs::read(&path).expect("read");
            let modified = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .expect("mtime");
            files.insert(
                path.display().to_string(),
                (hex::encode(sha2::Sha256::digest(bytes)), modified),
            );
        }
    }
    files
}

#[test]
fn token_custody_probes_throwaway_keys_shows_the_probes_and_never_touches_a_key() {
    let dir = initialised_dir();
    let data = dir.path().join("var");
    let before = token_files(&data);
    let text = smimegate_ok(&data, &["token", "custody"]);
    assert!(text.contains("probed on throwaway keys"), "{text}");
    assert!(
        text.contains("RSA: a throwaway rsa2048 session key"),
        "{text}"
    );
    assert!(text.contains("EC: a throwaway p256 session key"), "{text}");
    assert!(
        text.contains("wrap (CKM_AES_KEY_WRAP_PAD): refused (CKR_KEY_UNEXTRACTABLE)"),
        "{text}"
    );
    assert!(text.contains("probed as: EC"), "{text}");
    assert!(text.contains("probed as: RSA"), "{text}");
    // The root and the issuing CA (RSA), the SMTP TLS key (P-256).
    assert!(text.contains("3 key(s) checked"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&smimegate_ok(&data, &["token", "custody", "--json"])).expect("JSON");
    let kinds: Vec<&str> = json["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .map(|p| p["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["rsa", "ec"], "{json}");
    for probe in json["probes"].as_array().expect("probes") {
        assert!(
            probe["probed_on"]
                .as_str()
                .expect("probed_on")
                .contains("throwaway")
        );
        assert_eq!(probe["wrap"]["outcome"], "refused", "{probe}");
        assert_eq!(
            probe["set_extractable"]["detail"], "CKR_ATTRIBUTE_READ_ONLY",
            "{probe}"
        );
    }
    // The CA keys (RSA) and the SMTP TLS key (P-256): each names the probe it relies on.
    let keys = json["keys"].as_array().expect("keys");
    let mut key_kinds: Vec<&str> = keys
        .iter()
        .map(|k| k["kind"].as_str().expect("kind"))
        .collect();
    key_kinds.sort();
    assert_eq!(key_kinds, ["ec", "rsa", "rsa"], "{json}");
    for key in keys {
        assert_eq!(
            key["read_secret"]["detail"], "CKR_ATTRIBUTE_SENSITIVE",
            "{key}"
        );
        assert_eq!(key["usage"]["decrypt"], false, "{key}");
    }
    assert_eq!(
        token_files(&data),
        before,
        "token custody wrote to the token"
    );

    // A key another tool made extractable is named, and left as it was.
    let pin = std::fs::read_to_string(data.join("hsm-user.pin")).expect("pin");
    let out = std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", data.join("softhsm2.conf"))
        .args([
            "--module",
            &common::module().display().to_string(),
            "--token-label",
            "smimegate",
            "--login",
            "--pin",
            pin.trim(),
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            "extractable",
            "--id",
            "e7e7",
            "--extractable",
        ])
        .output()
        .expect("pkcs11-tool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = token_files(&data);
    let out = smimegate(&data, &["token", "custody"]);
    assert_clean_failure(
        &out,
        "key(s) not protected against export: e7e7 (CKA_EXTRACTABLE is true)",
    );
    assert_eq!(
        token_files(&data),
        before,
        "token custody wrote to the token"
    );
}

/// `pkcs11-tool --list-objects --type privkey` on the data directory's token.
fn pkcs11_tool_private_keys(data: &Path) -> String {
    let pin = std::fs::read_to_string(data.join("hsm-user.pin")).expect("pin");
    let out = std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", data.join("softhsm2.conf"))
        .args([
            "--module",
            &common::module().display().to_string(),
            "--token-label",
            "smimegate",
            "--login",
            "--pin",
            pin.trim(),
            "--list-objects",
            "--type",
            "privkey",
        ])
        .output()
        .expect("pkcs11-tool (opensc)");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{listing}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    listing
}

/// Runs a command with stdout a pipe whose reader has already gone, as in
/// `smimegate rules list | head -0`.
fn with_stdout_closed(data: &Path, args: &[&str]) -> std::process::Output {
    let mut child = common::smimegate_command(data, args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run smimegate");
    drop(child.stdout.take());
    child.wait_with_output().expect("wait for smimegate")
}

#[test]
fn a_reader_that_closes_the_pipe_early_gets_no_panic() {
    let dir = initialised_dir();
    let data = dir.path().join("var");
    smimegate_ok(&data, &["domain", "add", "corp.example"]);
    for args in [
        &["rule", "list"][..],
        &["domain", "list"][..],
        &["token", "status"][..],
        &["cert", "list"][..],
    ] {
        let out = with_stdout_closed(&data, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
    // A write failure that is not the reader's choice is still an error.
    if std::path::Path::new("/dev/full").exists() {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let out = common::smimegate_command(&data, &["domain", "list"])
            .stdout(full)
            .output()
            .expect("run smimegate");
        assert_clean_failure(&out, "cannot write to stdout");
    }
}

#[test]
fn user_errors_are_one_clear_line() {
    let dir = initialised_dir();
    let data = dir.path().join("var");

    let out = smimegate(&dir.path().join("missing"), &["token", "status"]);
    assert_clean_failure(&out, "run `smimegate init");

    let out = smimegate(&data, &["mailbox", "activate", "nobody@corp.example"]);
    assert_clean_failure(&out, "no managed mailbox nobody@corp.example");

    let out = smimegate(&data, &["mailbox", "add", "not-an-address"]);
    assert_clean_failure(&out, "not a valid mailbox address");

    let out = smimegate(&data, &["mailbox", "add", "bob@elsewhere.example"]);
    assert_clean_failure(&out, "elsewhere.example is not a managed domain");

    let out = smimegate(&data, &["cert", "show", "nobody@corp.example"]);
    assert_clean_failure(&out, "no certificate for nobody@corp.example");

    let out = smimegate_env(
        &data,
        &["token", "status"],
        &[("SMIMEGATE_HSM_PIN", "wrong-pin")],
    );
    assert_clean_failure(&out, "refused the PIN");

    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).expect("mkdir");
    for file in [
        "smimegate.toml",
        "softhsm2.conf",
        "hsm-user.pin",
        "smimegate.db",
    ] {
        std::fs::copy(data.join(file), copy.join(file)).expect("copy");
    }
    // softhsm2.conf points at the original token directory, so the copy sees the token.
    set_config(
        &copy,
        "token_label = \"smimegate\"",
        "token_label = \"no-such-token\"",
    );
    let out = smimegate(&copy, &["token", "status"]);
    assert_clean_failure(&out, "no token labelled 'no-such-token'");

    set_config(
        &copy,
        "token_label = \"no-such-token\"",
        "token_label = \"smimegate\"",
    );
    set_config(
        &copy,
        "/usr/lib/softhsm/libsofthsm2.so",
        "/nonexistent/libpkcs11.so",
    );
    let out = smimegate(&copy, &["token", "status"]);
    assert_clean_failure(&out, "cannot load PKCS#11 module /nonexistent/libpkcs11.so");

    set_config(
        &copy,
        "/nonexistent/libpkcs11.so",
        "/usr/lib/softhsm/libsofthsm2.so",
    );
    std::fs::remove_file(copy.join("hsm-user.pin")).expect("rm pin");
    let out = smimegate(&copy, &["token", "status"]);
    assert_clean_failure(&out, "no token PIN");

    set_config(
        &copy,
        "url = \"sqlite:smimegate.db\"",
        "url = \"postgres://nobody@127.0.0.1:1/none\"",
    );
    set_config(
        &copy,
        "connect_timeout_secs = 10",
        "connect_timeout_secs = 2",
    );
    let out = smimegate(&copy, &["domain", "list"]);
    assert_clean_failure(
        &out,
        "cannot reach database postgres://nobody@127.0.0.1:1/none",
    );
}

#[test]
fn a_pin_file_group_or_others_may_read_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = initialised_dir();
    let data = dir.path().join("var");
    let pin_file = data.join("hsm-user.pin");
    let chmod = |mode: u32| {
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    for mode in [0o644, 0o640, 0o604] {
        chmod(mode);
        let out = smimegate(&data, &["token", "status"]);
        assert_clean_failure(&out, &format!("chmod 600 {}", pin_file.display()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("mode {mode:04o}")), "{stderr}");
        let pin = std::fs::read_to_string(&pin_file).expect("pin");
        assert!(!stderr.contains(pin.trim()), "the PIN itself was printed");
    }
    // init says the same, and never makes a new PIN beside the one it cannot use.
    chmod(0o644);
    let out = smimegate(&data, &["init"]);
    assert_clean_failure(&out, &format!("chmod 600 {}", pin_file.display()));
    for mode in [0o600, 0o400] {
        chmod(mode);
        let status = smimegate_ok(&data, &["token", "status"]);
        assert!(status.contains("logged in:    yes"), "{status}");
    }
    let so_pin_file = data.join("hsm-so.pin");
    std::fs::set_permissions(&so_pin_file, std::fs::Permissions::from_mode(0o644))
        .expect("init made a security officer PIN file");
    let out = smimegate(&data, &["init"]);
    assert_clean_failure(&out, &format!("chmod 600 {}", so_pin_file.display()));
}

#[test]
fn serve_reports_health_over_http() {
    let dir = initialised_dir();
    let data = dir.path().join("var");
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr").port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_smimegate"))
        .args([
            "--data-dir",
            &data.display().to_string(),
            "serve",
            "--http",
            &listen,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start serve");
    let mut response = String::new();
    for _ in 0..100 {
        if let Ok(mut stream) = std::net::TcpStream::connect(&listen) {
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .expect("write");
            stream.read_to_string(&mut response).expect("read");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"status\":\"ok\""), "{response}");
    assert!(response.contains("\"logged_in\":true"), "{response}");
    assert!(response.contains("\"backend\":\"sqlite\""), "{response}");
}

#[test]
fn the_smime_cli_round_trips_a_message_with_a_fresh_mailbox_key() {
    let dir = initialised_dir();
    let data = dir.path().join("var");
    smimegate_ok(
        &data,
        &[
            "domain",
            "add",
            "corp.example",
            "--next-hop",
            "127.0.0.1:2525",
        ],
    );
    smimegate_ok(&data, &["mailbox", "add", "dana@corp.example"]);
    smimegate_ok(
        &data,
        &[
            "mailbox",
            "activate",
            "dana@corp.example",
            "--skip-mx-check",
        ],
    );
    let pem = smimegate_ok(&data, &["cert", "show", "dana@corp.example", "--pem"]);
    let own = dir.path().join("dana.pem");
    std::fs::write(&own, pem).expect("write");
    // A partner with a software key, to show openssl can read what we send.
    let (pk, pc) = (dir.path().join("p.key"), dir.path().join("p.pem"));
    run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &pk.display().to_string(),
            "-out",
            &pc.display().to_string(),
            "-days",
            "5",
            "-subj",
            "/CN=partner",
        ],
    );
    let message = dir.path().join("m.eml");
    std::fs::write(
        &message,
        "From: dana@corp.example\nTo: partner@partner.example\nSubject: hi\nContent-Type: text/plain; charset=utf-8\n\nGrüße!\n",
    )
    .expect("write");
    let sent = smimegate_ok(
        &data,
        &[
            "smime",
            "sign-encrypt",
            "--from",
            "dana@corp.example",
            "--to",
            &pc.display().to_string(),
            "--cipher",
            "aes256-gcm",
            &message.display().to_string(),
        ],
    );
    let sent_path = dir.path().join("sent.eml");
    std::fs::write(&sent_path, &sent).expect("write");

    // The partner (openssl) decrypts and verifies against our CA.
    let inner = run_ok(
        "openssl",
        &[
            "cms",
            "-decrypt",
            "-recip",
            &pc.display().to_string(),
            "-inkey",
            &pk.display().to_string(),
            "-in",
            &sent_path.display().to_string(),
        ],
    );
    let inner_path = dir.path().join("inner.eml");
    std::fs::write(&inner_path, inner).expect("write");
    // The root is the anchor; the message carries the issuing CA.
    let ca_only: String = std::fs::read_to_string(&own)
        .expect("read")
        .split_inclusive("-----END CERTIFICATE-----\n")
        .nth(2)
        .expect("root CA")
        .to_string();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca_only).expect("write");
    run_ok(
        "openssl",
        &[
            "cms",
            "-verify",
            "-purpose",
            "smimesign",
            "-CAfile",
            &ca_path.display().to_string(),
            "-in",
            &inner_path.display().to_string(),
            "-out",
            "/dev/null",
        ],
    );

    // The sender's own copy: decrypted with the token key, verified by the gateway.
    let decrypted = smimegate_ok(
        &data,
        &["smime", "decrypt", &sent_path.display().to_string()],
    );
    let decrypted_path = dir.path().join("decrypted.eml");
    std::fs::write(&decrypted_path, decrypted).expect("write");
    let content = smimegate_ok(
        &data,
        &["smime", "verify", &decrypted_path.display().to_string()],
    );
    assert!(content.contains("Gr=C3=BC=C3=9Fe!"), "{content}");
}

/// The JSON object `smime decrypt --json` printed on stderr.
fn decrypt_report(out: &std::process::Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON on stderr: {stderr}"));
    serde_json::from_str(line).expect("JSON")
}

#[test]
fn smime_decrypt_json_says_what_happened_and_whose_failure_it_is() {
    let dir = initialised_dir();
    let data = dir.path().join("var");
    smimegate_ok(
        &data,
        &[
            "domain",
            "add",
            "corp.example",
            "--next-hop",
            "127.0.0.1:2525",
        ],
    );
    smimegate_ok(&data, &["mailbox", "add", "erin@corp.example"]);
    smimegate_ok(
        &data,
        &[
            "mailbox",
            "activate",
            "erin@corp.example",
            "--skip-mx-check",
        ],
    );
    let pem = smimegate_ok(&data, &["cert", "show", "erin@corp.example", "--pem"]);
    let cert = dir.path().join("erin.pem");
    std::fs::write(&cert, pem).expect("write");
    let plain = dir.path().join("plain.txt");
    std::fs::write(&plain, "Content-Type: text/plain\r\n\r\nFor Erin only.\r\n").expect("write");
    let path = |name: &str| dir.path().join(name).display().to_string();
    let encrypt = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "cms",
            "-encrypt",
            "-binary",
            "-aes256",
            "-in",
            plain.to_str().expect("utf-8"),
            "-out",
            out,
            "-recip",
            cert.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        run_ok("openssl", &args);
    };

    // Decrypted: the message on stdout, the outcome as JSON on stderr.
    encrypt(&path("enc.eml"), &[]);
    let out = smimegate(&data, &["smime", "decrypt", "--json", &path("enc.eml")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("For Erin only."));
    let report = decrypt_report(&out);
    assert_eq!(report["result"], "decrypted", "{report}");
    assert!(report["class"].is_null(), "{report}");
    assert_eq!(report["content_algorithm"], "aes256-cbc", "{report}");
    assert_eq!(report["key_transport"], "rsa-pkcs1v15", "{report}");
    assert_eq!(report["weak"], false, "{report}");
    assert!(
        report["key"].as_str().is_some_and(|k| k.len() == 40),
        "{report}"
    );

    // Tampered after our key was used: integrity, exit 1, nothing on stdout.
    encrypt(&path("enc.der"), &["-outform", "DER"]);
    let mut der = std::fs::read(path("enc.der")).expect("read");
    let n = der.len();
    der[n - 1] ^= 0xff;
    let mut tampered = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\
Content-Transfer-Encoding: binary\r\n\r\n"
        .to_vec();
    tampered.extend_from_slice(&der);
    std::fs::write(path("tampered.eml"), tampered).expect("write");
    let out = smimegate(
        &data,
        &["smime", "decrypt", "--json", &path("tampered.eml")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let report = decrypt_report(&out);
    assert_eq!(report["result"], "failed", "{report}");
    assert_eq!(report["class"], "integrity", "{report}");
    assert!(report["key_transport"].is_null(), "{report}");

    // Not encrypted at all: structure.
    let out = smimegate(&data, &["smime", "decrypt", "--json", &path("plain.txt")]);
    assert_eq!(out.status.code(), Some(1));
    let report = decrypt_report(&out);
    assert_eq!(report["class"], "structure", "{report}");

    // The token refuses our PIN: the gateway's failure, not the message's.
    let out = smimegate_env(
        &data,
        &["smime", "decrypt", "--json", &path("enc.eml")],
        &[("SMIMEGATE_HSM_PIN", "wrong-pin")],
    );
    assert_eq!(out.status.code(), Some(1));
    let report = decrypt_report(&out);
    assert_eq!(report["class"], "gateway", "{report}");
    assert!(
        report["detail"].as_str().is_some_and(|d| d.contains("PIN")),
        "{report}"
    );

    // Without --json: one line, which says the class.
    let out = smimegate(&data, &["smime", "decrypt", &path("tampered.eml")]);
    assert_clean_failure(&out, "(integrity failure)");
}

/// A data directory with a default configuration and no token: enough for commands
/// that need only the database.
fn config_only_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("var");
    std::fs::create_dir(&data).expect("data dir");
    std::fs::write(data.join("smimegate.toml"), "").expect("config");
    (dir, data)
}

/// Runs smimegate with `input` on its stdin (not a terminal).
fn smimegate_stdin(data: &Path, args: &[&str], input: &[u8]) -> std::process::Output {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_smimegate"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run smimegate");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// One line on stderr and exit status 2: the operator can fix the command.
fn assert_operator_error(out: &std::process::Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("smimegate: error: "), "{stderr}");
    assert!(
        stderr.contains(expected),
        "expected '{expected}' in: {stderr}"
    );
}

fn private_file(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn submitter_verifies(data: &Path, name: &str, password: &str) -> bool {
    let url = format!("sqlite://{}", data.join("smimegate.db").display());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = smimegate::store::Store::connect(&url, 1, std::time::Duration::from_secs(5))
            .await
            .expect("database");
        let found = smimegate::ops::submitters::verify(
            &store,
            name,
            &secrecy::SecretString::from(password.to_string()),
        )
        .await
        .expect("verify");
        store.close().await;
        found.is_some()
    })
}

#[test]
fn a_password_file_group_or_others_may_read_is_refused() {
    let (dir, data) = config_only_dir();
    let file = dir.path().join("submitter.pw");
    private_file(&file, "a long enough password\n", 0o644);
    let out = smimegate(
        &data,
        &[
            "submitter",
            "add",
            "app-server",
            "--password-file",
            file.to_str().expect("utf-8 path"),
        ],
    );
    assert_operator_error(&out, &format!("chmod 600 {}", file.display()));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("long enough"));
    let list = smimegate_ok(&data, &["submitter", "list", "--json"]);
    assert_eq!(list.trim(), "[]", "nothing was added");
}

#[test]
fn submitters_are_added_listed_changed_and_removed() {
    let (dir, data) = config_only_dir();
    let out = smimegate_stdin(
        &data,
        &[
            "submitter",
            "add",
            "App-Server",
            "--may-send-as",
            "noreply@corp.example",
            "IT@corp.example",
            "--comment",
            "ERP system",
        ],
        b"first password 1\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "added submitter app-server (may send as noreply@corp.example, it@corp.example)"
        ),
        "{stdout}"
    );
    assert!(submitter_verifies(&data, "app-server", "first password 1"));
    assert!(!submitter_verifies(&data, "app-server", "first password 2"));

    let table = smimegate_ok(&data, &["submitter", "list"]);
    assert!(table.contains("app-server"), "{table}");
    assert!(table.contains("ERP system"), "{table}");
    assert!(table.contains("1 submitter(s)"), "{table}");
    let json = smimegate_ok(&data, &["submitter", "list", "--json"]);
    assert!(
        !json.contains("argon2") && !json.contains("password_hash"),
        "{json}"
    );
    let rows: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(rows[0]["name"], "app-server");
    assert_eq!(
        rows[0]["may_send_as"],
        serde_json::json!(["noreply@corp.example", "it@corp.example"])
    );
    assert_eq!(rows[0]["disabled"], false);

    // The same name again, in any case: refused, exit 2, nothing changed.
    let dup = smimegate_stdin(
        &data,
        &["submitter", "add", "APP-SERVER"],
        b"another password\n",
    );
    assert_operator_error(&dup, "submitter app-server already exists");
    assert!(submitter_verifies(&data, "app-server", "first password 1"));

    // A new password from a private file.
    let file = dir.path().join("new.pw");
    private_file(&file, "second password 2\n", 0o600);
    let changed = smimegate_ok(
        &data,
        &[
            "submitter",
            "passwd",
            "app-server",
            "--password-file",
            file.to_str().expect("utf-8 path"),
        ],
    );
    assert!(changed.contains("changed the password of submitter app-server"));
    assert!(submitter_verifies(&data, "app-server", "second password 2"));
    assert!(!submitter_verifies(&data, "app-server", "first password 1"));

    let short = smimegate_stdin(&data, &["submitter", "add", "other"], b"short\n");
    assert_operator_error(&short, "at least 12 characters");

    let removed = smimegate_ok(&data, &["submitter", "remove", "app-server"]);
    assert!(
        removed.contains("removed submitter app-server"),
        "{removed}"
    );
    assert!(!submitter_verifies(
        &data,
        "app-server",
        "second password 2"
    ));
    let again = smimegate(&data, &["submitter", "remove", "app-server"]);
    assert_operator_error(&again, "no submitter app-server");
    let json = smimegate_ok(&data, &["submitter", "list", "--json"]);
    assert_eq!(json.trim(), "[]");
}

/// The audit log of the data directory's database, oldest first.
fn audit_rows(data: &Path) -> Vec<smimegate::store::AuditEntry> {
    let url = format!("sqlite://{}", data.join("smimegate.db").display());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = smimegate::store::Store::connect(&url, 1, std::time::Duration::from_secs(5))
            .await
            .expect("database");
        let mut rows = store.audit().recent(1000).await.expect("audit log");
        store.close().await;
        rows.reverse();
        rows
    })
}

/// Commands run on one data directory, each with the audit row it must leave.
struct Audited<'a> {
    data: &'a Path,
    expected: Vec<(String, String)>,
}

impl Audited<'_> {
    fn run(&mut self, args: &[&str], action: &str, target: &str) {
        smimegate_ok(self.data, args);
        self.expected.push((action.into(), target.into()));
    }

    /// `rule add` with these arguments; the new rule's id.
    fn add_rule(&mut self, args: &[&str]) -> String {
        let out = smimegate_ok(self.data, &[&["rule", "add"][..], args].concat());
        let id = out
            .strip_prefix("added rule ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no rule id in: {out}"))
            .to_string();
        self.expected.push(("rule.add".into(), id.clone()));
        id
    }
}

#[test]
fn every_state_changing_command_leaves_its_audit_row() {
    let (_dir, data) = config_only_dir();
    let mut cli = Audited {
        data: &data,
        expected: Vec::new(),
    };
    cli.run(
        &["domain", "add", "corp.example", "--next-hop", "10.0.0.5:25"],
        "domain.add",
        "corp.example",
    );
    cli.run(
        &["domain", "add", "old.example"],
        "domain.add",
        "old.example",
    );
    cli.run(
        &["domain", "set", "old.example", "--next-hop", "10.0.0.6:25"],
        "domain.set",
        "old.example",
    );
    for address in ["alice@corp.example", "bob@corp.example"] {
        cli.run(&["mailbox", "add", address], "mailbox.add", address);
    }
    let first = cli.add_rule(&[
        "--direction",
        "outbound",
        "--from",
        "anyone",
        "--to",
        "domain:partner.example",
        "--action",
        "encrypt-enforced",
    ]);
    let second = cli.add_rule(&[
        "--direction",
        "inbound",
        "--from",
        "anyone",
        "--to",
        "managed",
        "--action",
        "decrypt-always",
    ]);
    cli.run(
        &["rule", "move", &first, "--priority", "1"],
        "rule.move",
        &first,
    );
    cli.run(
        &[
            "rule",
            "edit",
            &first,
            "--sender",
            "domain:corp.example",
            "--comment",
            "edited",
        ],
        "rule.edit",
        &first,
    );
    cli.run(&["rule", "disable", &second], "rule.disable", &second);
    cli.run(&["rule", "enable", &second], "rule.enable", &second);
    cli.run(&["rule", "remove", &second], "rule.remove", &second);
    cli.run(
        &["network", "allow", "10.1.0.0/16", "--comment", "office"],
        "network.allow",
        "10.1.0.0/16",
    );
    cli.run(
        &["network", "remove", "10.1.0.0/16"],
        "network.remove",
        "10.1.0.0/16",
    );
    cli.run(
        &["smarthost", "set", "relay.example:587"],
        "smarthost.set",
        "relay.example:587",
    );
    cli.run(
        &["mailbox", "remove", "bob@corp.example"],
        "mailbox.remove",
        "bob@corp.example",
    );
    cli.run(
        &["domain", "remove", "old.example"],
        "domain.remove",
        "old.example",
    );

    // Reads and refusals write nothing.
    for args in [
        &["domain", "list"][..],
        &["mailbox", "list", "--json"],
        &["rule", "list"],
        &[
            "rule",
            "explain",
            "alice@corp.example",
            "bob@partner.example",
        ],
        &["network", "list"],
        &["smarthost", "show"],
        &["audit", "--limit", "3"],
    ] {
        smimegate_ok(&data, args);
    }
    let listed = smimegate_ok(&data, &["rule", "list"]);
    assert!(
        listed.contains("domain:corp.example") && listed.contains("edited"),
        "{listed}"
    );
    let edits = smimegate_ok(&data, &["audit", "--action", "rule.ed", "--json"]);
    let edits: serde_json::Value = serde_json::from_str(&edits).expect("audit JSON");
    assert_eq!(edits["total"], 1, "{edits}");
    assert_eq!(edits["rows"][0]["target"], first.as_str());
    assert!(
        edits["rows"][0]["detail"].as_str().is_some_and(
            |d| d.contains("from anyone") && d.contains("-> outbound from domain:corp.example")
        ),
        "{edits}"
    );
    let unchanged = smimegate(&data, &["rule", "edit", &first, "--comment", "edited"]);
    assert_operator_error(
        &unchanged,
        &format!("the edit leaves rule {first} as it is"),
    );
    let wrong = smimegate(
        &data,
        &["rule", "edit", &first, "--action", "decrypt-always"],
    );
    assert_operator_error(&wrong, "not an outbound action");
    let bad_time = smimegate(&data, &["audit", "--since", "someday"]);
    assert_operator_error(&bad_time, "someday");
    let refused = smimegate(&data, &["domain", "add", "corp.example"]);
    assert_clean_failure(&refused, "domain corp.example already exists");
    let refused = smimegate(&data, &["domain", "set", "corp.example"]);
    assert_clean_failure(&refused, "nothing to change for domain corp.example");

    let rows = audit_rows(&data);
    let actual: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.action.clone(), r.target.clone()))
        .collect();
    assert_eq!(actual, cli.expected);
    for row in &rows {
        assert_eq!(row.origin, "cli", "{row:?}");
        assert!(row.actor.starts_with("cli:"), "{row:?}");
    }
}

/// `smimegate log` with the overview's filters over rows the relay would write: the
/// crypto result, time, paging, JSON and CSV; a wrong filter is an operator error.
#[test]
fn the_log_command_filters_by_crypto_result_and_exports_csv() {
    use smimegate::policy::Direction;
    use smimegate::store::{LogEntry, LogStatus};
    let (_dir, data) = config_only_dir();
    smimegate_ok(&data, &["log"]);
    let url = format!("sqlite://{}", data.join("smimegate.db").display());
    let now = smimegate::store::unix_now();
    let entry = |to: &str, actions: &[&str], subject: &str, age: i64| LogEntry {
        id: 0,
        received_at: now - age,
        node: "n1".into(),
        direction: Direction::Outbound,
        mail_from: "alice@corp.example".into(),
        rcpt_to: vec![to.into()],
        message_id: None,
        subject: Some(subject.into()),
        size_bytes: 10,
        status: LogStatus::Relayed,
        actions: actions.iter().map(|a| a.to_string()).collect(),
        smtp_code: Some(250),
        smtp_reply: Some("250 ok".into()),
        rule_id: None,
        duration_ms: 1,
    };
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let store =
                smimegate::store::Store::connect(&url, 1, std::time::Duration::from_secs(5))
                    .await
                    .expect("database");
            for e in [
                entry("a@partner.example", &["signed"], "=cmd|' /C calc'!A0", 30),
                entry(
                    "b@partner.example",
                    &["signed", "encrypted"],
                    "Grüße, \"quoted\"",
                    20,
                ),
                entry("c@partner.example", &[], "plain", 10),
                entry("d@partner.example", &["signed"], "last week", 7 * 86400),
            ] {
                store.message_log().record(&e).await.expect("record");
            }
            store.close().await;
        });
    let json = smimegate_ok(
        &data,
        &["log", "--crypto", "signed", "--since", "1d", "--json"],
    );
    let page: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(page["total"], 2, "{page}");
    assert_eq!(page["rows"][0]["rcpt_to"][0], "b@partner.example");
    assert_eq!(
        page["rows"][0]["crypto"],
        serde_json::json!(["signed", "encrypted"])
    );
    let paged = smimegate_ok(&data, &["log", "--limit", "1", "--page", "2", "--json"]);
    let paged: serde_json::Value = serde_json::from_str(&paged).expect("JSON");
    assert_eq!(
        (paged["total"].as_i64(), paged["has_more"].as_bool()),
        (Some(4), Some(true))
    );
    // Newest first: c (10 s ago), then b.
    assert_eq!(paged["rows"][0]["rcpt_to"][0], "b@partner.example");
    let table = smimegate_ok(
        &data,
        &["log", "--crypto", "none", "--direction", "outbound"],
    );
    assert!(
        table.contains("c@partner.example") && !table.contains("a@partner.example"),
        "{table}"
    );

    let csv = smimegate_ok(&data, &["log", "--crypto", "signed", "--csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].starts_with("id,received,direction,status,from,to,subject,"));
    assert!(
        lines[1].contains(",\"Grüße, \"\"quoted\"\"\","),
        "{}",
        lines[1]
    );
    // A formula is neutralised: the cell starts with a quote character.
    assert!(lines[2].contains(",'=cmd|' /C calc'!A0,"), "{}", lines[2]);
    assert!(lines[3].contains("d@partner.example"));

    let wrong = smimegate(&data, &["log", "--crypto", "sealed"]);
    assert_operator_error(&wrong, "unknown crypto result 'sealed'");
    let wrong = smimegate(&data, &["log", "--limit", "501"]);
    assert_operator_error(&wrong, "page_size must be 1 to 500");
    let wrong = smimegate(&data, &["log", "--from", "2026-13-40"]);
    assert_operator_error(&wrong, "from '2026-13-40'");
}

/// The lifecycle commands as an operator types them: the licence, a batch that runs
/// out of seats, deactivation, the job, and what `mailbox list` and `show` say.
#[test]
fn an_operator_runs_the_lifecycle_from_the_command_line() {
    let dir = initialised_dir();
    let data = dir.path().join("var");
    set_config(&data, "mailbox_key = \"rsa2048\"", "mailbox_key = \"p256\"");
    smimegate_ok(
        &data,
        &[
            "domain",
            "add",
            "corp.example",
            "--next-hop",
            "127.0.0.1:2526",
        ],
    );
    for address in ["a@corp.example", "b@corp.example"] {
        smimegate_ok(&data, &["mailbox", "add", address]);
    }
    let shown = smimegate_ok(&data, &["licence", "show"]);
    assert!(shown.contains("none set (no seat limit"), "{shown}");
    let refused = smimegate(
        &data,
        &[
            "licence",
            "set",
            "--smime-seats",
            "5",
            "--mail-security-seats",
            "4",
        ],
    );
    assert_eq!(refused.status.code(), Some(2), "the operator's mistake");
    let set = smimegate_ok(
        &data,
        &[
            "licence",
            "set",
            "--smime-seats",
            "1",
            "--mail-security-seats",
            "4",
            "--valid-until",
            "2999-12-31",
        ],
    );
    assert!(set.contains("valid until 2999-12-31"), "{set}");

    // Two mailboxes, one seat: one activated, the batch stops and says so.
    let out = smimegate(
        &data,
        &[
            "mailbox",
            "activate",
            "--domain",
            "corp.example",
            "--skip-mx-check",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("activated a@corp.example"), "{stdout}");
    assert!(stdout.contains("not activated b@corp.example"), "{stdout}");
    assert!(
        stderr.contains("stopped after activating 1 mailbox(es): no S/MIME seat is free"),
        "{stderr}"
    );
    let shown = smimegate_ok(&data, &["licence", "show"]);
    assert!(shown.contains("S/MIME seats used: 1"), "{shown}");
    assert!(shown.contains("free: 0"), "{shown}");
    let list = smimegate_ok(&data, &["mailbox", "list"]);
    let a_line = list
        .lines()
        .find(|l| l.starts_with("a@corp.example"))
        .expect("a listed");
    assert!(
        a_line.contains("active") && a_line.contains("issued"),
        "{list}"
    );

    // The job signs the first CRL; a renewal by hand keeps the old key.
    let run = smimegate_ok(&data, &["lifecycle", "run"]);
    assert!(run.contains("signed CRL number 1"), "{run}");
    let renewed = smimegate_ok(&data, &["mailbox", "renew", "a@corp.example"]);
    assert!(renewed.contains("its key keeps decrypting"), "{renewed}");

    let out = smimegate_ok(&data, &["mailbox", "deactivate", "a@corp.example"]);
    assert!(
        out.contains("deactivated a@corp.example: revoked certificate(s)"),
        "{out}"
    );
    let show = smimegate_ok(&data, &["mailbox", "show", "a@corp.example"]);
    assert!(show.contains("state    revoke-pending"), "{show}");
    assert!(show.contains("inactive from"), "{show}");
    assert_eq!(show.matches("decrypt only").count(), 2, "{show}");
    let again = smimegate(&data, &["mailbox", "deactivate", "a@corp.example"]);
    assert_eq!(again.status.code(), Some(2));
    let run = smimegate_ok(&data, &["lifecycle", "run"]);
    assert!(run.contains("nothing due"), "{run}");
    let json = smimegate_ok(&data, &["mailbox", "list", "--json"]);
    assert!(json.contains("\"state\": \"revoke-pending\""), "{json}");
}

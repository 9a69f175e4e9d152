//! `smimegate backup create` / `restore` with the real gateway: create while serving,
//! wipe the database, restore, and the same token decrypts again.

use std::os::unix::fs::PermissionsExt;

use super::common::{run_ok, smimegate};
use super::harness::{Client, Gateway, Partner, mailbox};
use super::{ALICE, message};

const PARTNER: &str = "bob@partner.example";

fn members(archive: &str) -> Vec<String> {
    run_ok("tar", &["tf", archive])
        .lines()
        .map(str::to_string)
        .collect()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_restored_backup_relays_and_decrypts_again_with_the_same_token() {
    let mut gw = Gateway::start_on_sqlite(|d| mailbox(d, ALICE));
    let partner = Partner::new(gw.data(), PARTNER);
    gw.introduce(&partner, ALICE);
    let rule = gw.add_rule("outbound", ALICE, PARTNER, "encrypt-enforced");
    let alice_pem = gw.mailbox_pem(ALICE);
    let data = gw.data().to_path_buf();

    // Online: the gateway keeps serving while the snapshot is taken.
    let archive = data.join("backups").join("gw.smgbak");
    std::fs::create_dir_all(archive.parent().expect("dir")).expect("mkdir");
    let archive_s = archive.display().to_string();
    let said = gw.cli(&["backup", "create", &archive_s]);
    assert!(said.contains("backup written to"), "{said}");
    let audit = gw.cli(&["audit", "--action", "backup."]);
    assert!(audit.contains("backup.create"), "{audit}");
    let mode = std::fs::metadata(&archive)
        .expect("archive")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "archive mode {mode:o}");
    assert_eq!(
        members(&archive_s),
        ["manifest.json", "smimegate.toml", "database.sqlite"],
        "exactly the manifest, the configuration and the database"
    );
    // Never a key, a PIN, a token or password file: neither as a member nor inside.
    let bytes = std::fs::read(&archive).expect("archive");
    for entry in std::fs::read_dir(&data).expect("data dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        if name.starts_with("hsm-") && name.ends_with(".pin") || name.ends_with(".password") {
            let secret = std::fs::read_to_string(&path).expect("secret file");
            let secret = secret.trim();
            assert!(secret.len() >= 4, "{name} holds a real secret");
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{name}'s content is in the archive"
            );
        }
    }
    assert!(
        data.join("hsm-user.pin").exists(),
        "the test looked at the PIN"
    );
    let manifest = run_ok("tar", &["xOf", &archive_s, "manifest.json"]);
    let manifest: serde_json::Value = serde_json::from_str(&manifest).expect("manifest JSON");
    assert_eq!(manifest["backend"], "sqlite");
    assert_eq!(manifest["node"], "node1");
    assert!(
        manifest["schema"].as_i64().expect("schema") >= 12,
        "{manifest}"
    );
    assert!(manifest["created_at"].is_string(), "{manifest}");

    // Not while serve holds the data directory.
    let out = smimegate(&data, &["backup", "restore", &archive_s]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("another smimegate serve is running"),
        "{}",
        stderr_of(&out)
    );

    // Disaster: the gateway stops and the database is gone.
    gw.kill();
    for f in ["smimegate.db", "smimegate.db-wal", "smimegate.db-shm"] {
        let _ = std::fs::remove_file(data.join(f));
    }
    let said = gw.cli(&["backup", "restore", &archive_s]);
    assert!(said.contains("restored from"), "{said}");
    gw.serve();

    // The configuration, mailbox, partner certificate and rule are back…
    let rules = gw.cli(&["rule", "list"]);
    assert!(rules.contains(&rule), "rule {rule} not restored: {rules}");
    let explained = gw.cli(&["rule", "explain", ALICE, PARTNER]);
    assert!(
        explained.contains("valid certificate known: yes"),
        "partner certificate not restored: {explained}"
    );
    // The snapshot predates its own `backup.create` row; the restore is audited.
    let audit = gw.cli(&["audit", "--action", "backup."]);
    assert!(audit.contains("backup.restore"), "{audit}");
    // …and mail encrypted to the mailbox's certificate made before the backup is
    // decrypted with the token's key.
    let plain = data.join("for-alice.eml");
    std::fs::write(
        &plain,
        message(
            PARTNER,
            ALICE,
            "after-restore",
            "the restored gateway reads this",
        ),
    )
    .expect("write");
    let sealed = run_ok(
        "openssl",
        &[
            "cms",
            "-encrypt",
            "-aes256",
            "-in",
            &plain.display().to_string(),
            &alice_pem,
        ],
    );
    let t = Client::connect(gw.inbound).send(PARTNER, &[ALICE], sealed.as_bytes());
    assert_eq!(t.data.as_ref().map(|d| d.0), Some(250), "{t:?}");
    let text = gw
        .internal
        .messages()
        .pop()
        .expect("delivered to the internal server")
        .text();
    assert!(text.contains("X-Smimegate: decrypted"), "{text}");
    assert!(text.contains("the restored gateway reads this"), "{text}");
}

#[test]
fn a_backup_of_a_newer_schema_or_with_a_foreign_member_is_refused_and_nothing_changes() {
    let mut gw = Gateway::start_on_sqlite(|_| {});
    let data = gw.data().to_path_buf();
    let archive = data.join("gw.smgbak");
    let archive_s = archive.display().to_string();
    gw.cli(&["backup", "create", &archive_s]);
    // An existing file is never overwritten.
    let out = smimegate(&data, &["backup", "create", &archive_s]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("exists"), "{}", stderr_of(&out));
    gw.kill();
    let work = data.join("unpacked");
    std::fs::create_dir_all(&work).expect("mkdir");
    let work_s = work.display().to_string();
    run_ok("tar", &["xf", &archive_s, "-C", &work_s]);
    let manifest_path = work.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).expect("manifest"))
            .expect("JSON");
    manifest["schema"] = serde_json::json!(9999);
    std::fs::write(&manifest_path, manifest.to_string()).expect("write");
    let newer = data.join("newer.smgbak").display().to_string();
    run_ok(
        "tar",
        &[
            "cf",
            &newer,
            "-C",
            &work_s,
            "manifest.json",
            "smimegate.toml",
            "database.sqlite",
        ],
    );
    let db_before = std::fs::read(data.join("smimegate.db")).expect("database");
    let out = smimegate(&data, &["backup", "restore", &newer]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("schema 9999"),
        "{}",
        stderr_of(&out)
    );
    // A member that is not ours (here a PIN file slipped in) is refused.
    std::fs::write(work.join("hsm-user.pin"), "1234").expect("write");
    let foreign = data.join("foreign.smgbak").display().to_string();
    run_ok(
        "tar",
        &[
            "cf",
            &foreign,
            "-C",
            &work_s,
            "manifest.json",
            "hsm-user.pin",
            "smimegate.toml",
            "database.sqlite",
        ],
    );
    let out = smimegate(&data, &["backup", "restore", &foreign]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("unexpected member"),
        "{}",
        stderr_of(&out)
    );
    // Garbage is not a backup.
    let garbage = data.join("garbage.smgbak");
    std::fs::write(&garbage, b"not a tar file at all").expect("write");
    let out = smimegate(
        &data,
        &["backup", "restore", &garbage.display().to_string()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert_eq!(
        std::fs::read(data.join("smimegate.db")).expect("database"),
        db_before,
        "a refused restore changed the database"
    );
}

fn psql(url: &str, sql: &str) {
    run_ok("psql", &["-v", "ON_ERROR_STOP=1", "-q", url, "-c", sql]);
}

#[test]
fn a_postgresql_database_is_dumped_wiped_and_restored() {
    let admin = super::common::postgres_base_url();
    let name = format!("smimegate_backup_{}", std::process::id());
    psql(&admin, &format!("DROP DATABASE IF EXISTS {name}"));
    psql(&admin, &format!("CREATE DATABASE {name}"));
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b.to_string(), format!("?{q}")),
        None => (admin.clone(), String::new()),
    };
    let url = format!(
        "{}/{name}{query}",
        &base[..base.rfind('/').expect("db name")]
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path();
    super::common::smimegate_ok(data, &["init"]);
    let config = data.join("smimegate.toml");
    let text = std::fs::read_to_string(&config).expect("configuration");
    assert!(text.contains("url = \"sqlite:smimegate.db\""));
    std::fs::write(
        &config,
        text.replace("url = \"sqlite:smimegate.db\"", &format!("url = \"{url}\"")),
    )
    .expect("configuration");
    super::common::smimegate_ok(data, &["init"]);
    super::common::smimegate_ok(data, &["domain", "add", "corp.example"]);
    let archive = data.join("pg.smgbak").display().to_string();
    super::common::smimegate_ok(data, &["backup", "create", &archive]);
    assert_eq!(
        members(&archive),
        ["manifest.json", "smimegate.toml", "database.pgdump"]
    );
    // Wipe every object of the database.
    psql(&url, "DROP SCHEMA public CASCADE; CREATE SCHEMA public");
    let said = super::common::smimegate_ok(data, &["backup", "restore", &archive]);
    assert!(said.contains("restored from"), "{said}");
    let domains = super::common::smimegate_ok(data, &["domain", "list"]);
    assert!(domains.contains("corp.example"), "{domains}");
    let audit = super::common::smimegate_ok(data, &["audit", "--action", "backup."]);
    assert!(audit.contains("backup.restore"), "{audit}");
    psql(
        &admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
}

//! The store suite, run once against a SQLite file and once against PostgreSQL.

mod common;

use smimegate::hsm::{KeyAlgorithm, KeyId};
use smimegate::pki::address::{Address, Domain};
use smimegate::store::{CertificateSource, KeyPurpose, MailboxState, Store, StoreError};

fn domain(s: &str) -> Domain {
    Domain::parse(s).expect("domain")
}

fn address(s: &str) -> Address {
    Address::parse(s).expect("address")
}

/// A real certificate to store: openssl makes a self-signed one.
fn sample_certificate(cn: &str) -> x509_cert::Certificate {
    use der::DecodePem;
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = dir.path().join("c.pem").display().to_string();
    let key = dir.path().join("k.pem").display().to_string();
    common::run_ok(
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
            "30",
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    x509_cert::Certificate::from_pem(std::fs::read(&cert).expect("read")).expect("parse")
}

async fn suite(store: &Store) {
    // Domains.
    let corp = store
        .domains()
        .add(&domain("corp.example"), Some("10.0.0.5:25"), false)
        .await
        .expect("add domain");
    assert_eq!(corp.next_hop.as_deref(), Some("10.0.0.5:25"));
    store
        .domains()
        .add(&domain("wild.example"), None, true)
        .await
        .expect("add wildcard");
    let dup = store
        .domains()
        .add(&domain("corp.example"), None, false)
        .await
        .unwrap_err();
    assert!(matches!(dup, StoreError::Conflict(_)), "{dup}");
    let names: Vec<String> = store
        .domains()
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["corp.example", "wild.example"]);
    assert!(
        store
            .domains()
            .get(&domain("wild.example"))
            .await
            .expect("get")
            .expect("some")
            .wildcard
    );

    // Mailboxes and their state machine.
    let alice = address("alice@corp.example");
    let row = store.mailboxes().add(&alice).await.expect("add mailbox");
    assert_eq!(row.state, MailboxState::Inactive);
    assert_eq!(row.domain, "corp.example");
    let err = store
        .mailboxes()
        .add(&address("x@unmanaged.example"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert!(matches!(
        store.mailboxes().add(&alice).await.unwrap_err(),
        StoreError::Conflict(_)
    ));
    store
        .mailboxes()
        .transition(&alice, MailboxState::Inactive, MailboxState::Pending)
        .await
        .expect("to pending");
    let err = store
        .mailboxes()
        .transition(&alice, MailboxState::Inactive, MailboxState::Pending)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is pending"), "{err}");
    store
        .mailboxes()
        .transition(&alice, MailboxState::Pending, MailboxState::Active)
        .await
        .expect("to active");
    assert_eq!(store.mailboxes().seats_in_use().await.expect("seats"), 1);
    let err = store.mailboxes().remove(&alice).await.unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err}");
    let err = store
        .domains()
        .remove(&domain("corp.example"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("still has 1 mailbox"), "{err}");

    // Keys and certificates.
    let key_id = KeyId::new(vec![0x11; 20]);
    let key = store
        .keys()
        .insert(
            &key_id,
            KeyAlgorithm::P256,
            KeyPurpose::Mailbox,
            Some(row.id),
        )
        .await
        .expect("insert key");
    assert_eq!(key.key_id().expect("id"), key_id);
    assert!(store.keys().current_ca().await.expect("ca").is_none());
    let cert = sample_certificate("alice@corp.example");
    let stored = store
        .certificates()
        .insert(
            &cert,
            CertificateSource::Issued,
            Some(alice.as_str()),
            Some(key.id),
        )
        .await
        .expect("insert certificate");
    assert_eq!(stored.record.fingerprint_sha256.len(), 64);
    assert!(stored.record.not_after > stored.record.not_before);
    let dup = store
        .certificates()
        .insert(
            &cert,
            CertificateSource::Harvested,
            Some(alice.as_str()),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(dup, StoreError::Conflict(_)), "{dup}");
    let current = store
        .certificates()
        .current(alice.as_str(), CertificateSource::Issued)
        .await
        .expect("current")
        .expect("present");
    assert_eq!(current.record.der, stored.record.der);
    assert!(
        store
            .certificates()
            .current(alice.as_str(), CertificateSource::Harvested)
            .await
            .expect("q")
            .is_none()
    );
    assert_eq!(
        store
            .certificates()
            .for_key(key.id)
            .await
            .expect("for key")
            .expect("some")
            .id,
        stored.id
    );
    store.keys().retire(key.id).await.expect("retire");
    assert!(
        store.keys().for_mailbox(row.id).await.expect("keys")[0]
            .retired_at
            .is_some()
    );

    // Removing an inactive mailbox keeps its keys (unlinked) for old mail.
    store
        .mailboxes()
        .transition(&alice, MailboxState::Active, MailboxState::RevokePending)
        .await
        .expect("revoke pending");
    store
        .mailboxes()
        .transition(&alice, MailboxState::RevokePending, MailboxState::Inactive)
        .await
        .expect("inactive");
    store
        .mailboxes()
        .remove(&alice)
        .await
        .expect("remove mailbox");
    let keys = store.keys().list().await.expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].mailbox_id, None);
    store
        .domains()
        .remove(&domain("corp.example"))
        .await
        .expect("remove domain");

    // The audit log only grows.
    store
        .audit()
        .append("cli:test", "cli", "domain.add", "corp.example", "")
        .await
        .expect("audit");
    store
        .audit()
        .append("cli:test", "cli", "domain.remove", "corp.example", "")
        .await
        .expect("audit");
    let entries = store.audit().recent(10).await.expect("recent");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].action, "domain.remove");
    let update = sqlx::query("UPDATE audit_log SET actor = 'mallory'")
        .execute(store.pool())
        .await;
    assert!(update.is_err(), "audit log accepted an UPDATE");
    let delete = sqlx::query("DELETE FROM audit_log")
        .execute(store.pool())
        .await;
    assert!(delete.is_err(), "audit log accepted a DELETE");
    assert_eq!(store.audit().recent(10).await.expect("recent").len(), 2);

    // The schema refuses values outside its vocabulary.
    let bad = sqlx::query("UPDATE mailboxes SET state = 'exploded'")
        .execute(store.pool())
        .await;
    assert!(bad.is_ok(), "no rows left to update");
    store
        .mailboxes()
        .add(&address("bob@wild.example"))
        .await
        .expect("add bob");
    let bad = sqlx::query("UPDATE mailboxes SET state = 'exploded'")
        .execute(store.pool())
        .await;
    assert!(bad.is_err(), "state CHECK constraint missing");
    store.ping().await.expect("ping");
    relay_suite(store).await;
    submitter_suite(store).await;
}

/// Rules keep dense priorities (a new rule at 1), the message log filters, the relay
/// settings round-trip.
async fn relay_suite(store: &Store) {
    use smimegate::policy::{Action, Direction, Matcher};
    use smimegate::store::{LogEntry, LogFilter, LogStatus, NewRule};
    let new = |action: Action, to: &str| NewRule {
        direction: action.direction().unwrap_or(Direction::Outbound),
        sender: Matcher::Anyone,
        recipient: Matcher::parse(to).expect("matcher"),
        action,
        comment: format!("{action} to {to}"),
    };
    let rules = store.rules();
    let a = rules.add(&new(Action::Sign, "anyone")).await.expect("a");
    let b = rules
        .add(&new(Action::EncryptEnforced, "domain:partner.example"))
        .await
        .expect("b");
    let c = rules
        .add(&new(Action::DecryptEnforced, "managed"))
        .await
        .expect("c");
    let order = |list: Vec<smimegate::policy::Rule>| {
        list.iter().map(|r| (r.id, r.priority)).collect::<Vec<_>>()
    };
    assert_eq!(
        order(rules.list().await.expect("list")),
        [(c.id, 1), (b.id, 2), (a.id, 3)]
    );
    rules.move_to(c.id, 3).await.expect("move down");
    assert_eq!(
        order(rules.list().await.expect("list")),
        [(b.id, 1), (a.id, 2), (c.id, 3)]
    );
    rules
        .move_to(c.id, -5)
        .await
        .expect("move to the top (clamped)");
    assert_eq!(
        order(rules.list().await.expect("list")),
        [(c.id, 1), (b.id, 2), (a.id, 3)]
    );
    rules.remove(b.id).await.expect("remove");
    assert_eq!(
        order(rules.list().await.expect("list")),
        [(c.id, 1), (a.id, 2)]
    );
    let off = rules.set_enabled(a.id, false).await.expect("disable");
    assert!(!off.enabled);
    assert_eq!(off.recipient, Matcher::Anyone);
    assert_eq!(off.comment, "sign to anyone");
    let wrong = NewRule {
        direction: Direction::Inbound,
        ..new(Action::Sign, "anyone")
    };
    assert!(
        rules.add(&wrong).await.is_err(),
        "an outbound action on an inbound rule"
    );
    assert!(matches!(
        rules.remove(9999).await,
        Err(StoreError::NotFound(_))
    ));

    let log = store.message_log();
    let entry = |from: &str, to: &[&str], status, at| LogEntry {
        id: 0,
        received_at: at,
        node: "test".into(),
        direction: Direction::Outbound,
        mail_from: from.into(),
        rcpt_to: to.iter().map(|s| s.to_string()).collect(),
        message_id: Some("<1@corp.example>".into()),
        subject: Some("Grüße".into()),
        size_bytes: 1234,
        status,
        actions: vec!["signed".into()],
        smtp_code: Some(250),
        smtp_reply: Some("250 2.0.0 ok".into()),
        rule_id: Some(a.id),
        duration_ms: 12,
    };
    log.record(&entry(
        "alice@corp.example",
        &["bob@partner.example"],
        LogStatus::Relayed,
        100,
    ))
    .await
    .expect("record");
    log.record(&entry(
        "carol@corp.example",
        &["dave_x@partner.example"],
        LogStatus::Rejected,
        200,
    ))
    .await
    .expect("record");
    let all = log.list(&LogFilter::default()).await.expect("all");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].mail_from, "carol@corp.example", "newest first");
    assert_eq!(all[1].subject.as_deref(), Some("Grüße"));
    let log = &log;
    let only = |f: LogFilter| async move {
        log.list(&f)
            .await
            .expect("filter")
            .iter()
            .map(|e| e.mail_from.clone())
            .collect::<Vec<_>>()
    };
    let by_status = LogFilter {
        status: Some(LogStatus::Rejected),
        ..Default::default()
    };
    assert_eq!(only(by_status).await, ["carol@corp.example"]);
    let by_recipient = LogFilter {
        address: Some("bob@partner.example".into()),
        ..Default::default()
    };
    assert_eq!(only(by_recipient).await, ["alice@corp.example"]);
    // '_' in an address is not a wildcard.
    let underscore = LogFilter {
        address: Some("daveax@partner.example".into()),
        ..Default::default()
    };
    assert!(only(underscore).await.is_empty());
    let since = LogFilter {
        since: Some(150),
        direction: Some(Direction::Outbound),
        ..Default::default()
    };
    assert_eq!(only(since).await, ["carol@corp.example"]);

    let settings = store.relay_settings();
    assert_eq!(settings.smarthost().await.expect("unset"), None);
    settings.set_smarthost("mx.example:25").await.expect("set");
    settings
        .set_smarthost("relay.example:587")
        .await
        .expect("replace");
    assert_eq!(
        settings.smarthost().await.expect("get").as_deref(),
        Some("relay.example:587")
    );
    settings
        .allow_network("10.0.0.0/8", "office", true)
        .await
        .expect("allow");
    assert!(matches!(
        settings.allow_network("10.0.0.0/8", "", false).await,
        Err(StoreError::Conflict(_))
    ));
    let networks = settings.networks().await.expect("networks");
    assert_eq!(networks.len(), 1);
    assert!(networks[0].require_auth, "the flag is stored");
    settings.remove_network("10.0.0.0/8").await.expect("remove");
    assert!(settings.remove_network("10.0.0.0/8").await.is_err());

    // Harvesting: new once, then only the capabilities are refreshed, and only by a
    // newer signed message (a replayed older one cannot downgrade them).
    let certs = store.certificates();
    let partner = sample_certificate("partner");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let gcm: &[u8] = &[0x30, 0x01, 0x01];
    let cbc: &[u8] = &[0x30, 0x01, 0x02];
    async fn caps_at(certs: &smimegate::store::Certificates<'_>, now: i64) -> Option<Vec<u8>> {
        certs
            .for_partner("p@partner.example", now)
            .await
            .expect("known")[0]
            .capabilities
            .clone()
    }
    assert!(
        certs
            .harvest(&partner, "p@partner.example", None, None, "anchor-fp")
            .await
            .expect("harvest")
    );
    assert!(
        !certs
            .harvest(&partner, "p@partner.example", Some(cbc), None, "anchor-fp")
            .await
            .expect("undated capabilities fill an empty slot")
    );
    assert_eq!(caps_at(&certs, now).await.as_deref(), Some(cbc));
    certs
        .harvest(
            &partner,
            "p@partner.example",
            Some(gcm),
            Some(now - 100),
            "anchor-fp",
        )
        .await
        .expect("dated capabilities replace undated ones");
    assert_eq!(caps_at(&certs, now).await.as_deref(), Some(gcm));
    for (replayed, at) in [(cbc, Some(now - 200)), (cbc, Some(now - 100)), (cbc, None)] {
        certs
            .harvest(
                &partner,
                "p@partner.example",
                Some(replayed),
                at,
                "anchor-fp",
            )
            .await
            .expect("replay");
        assert_eq!(
            caps_at(&certs, now).await.as_deref(),
            Some(gcm),
            "an older, equal or undated signingTime ({at:?}) must not replace them"
        );
    }
    certs
        .harvest(
            &partner,
            "p@partner.example",
            Some(cbc),
            Some(now + 86_400 * 365),
            "anchor-fp",
        )
        .await
        .expect("future");
    assert_eq!(
        caps_at(&certs, now).await.as_deref(),
        Some(cbc),
        "newest wins"
    );
    certs
        .harvest(
            &partner,
            "p@partner.example",
            Some(gcm),
            Some(now - 1),
            "anchor-fp",
        )
        .await
        .expect("after a future-dated message");
    assert_eq!(
        caps_at(&certs, now).await.as_deref(),
        Some(cbc),
        "a future signingTime counted as the time it arrived"
    );
    // Trust anchors with the domains they vouch for.
    let anchors = store.trust_anchors();
    let ca = sample_certificate("partner CA");
    let added = anchors
        .add(&ca, &["partner.example".into(), ".partner.example".into()])
        .await
        .expect("add anchor");
    assert!(matches!(
        anchors.add(&ca, &[]).await,
        Err(StoreError::Conflict(_))
    ));
    let any = anchors
        .add(&sample_certificate("other CA"), &[])
        .await
        .expect("unscoped anchor");
    let listed = anchors.list().await.expect("list");
    assert_eq!(listed.len(), 2);
    let scoped = listed
        .iter()
        .find(|a| a.certificate.id == added.certificate.id)
        .expect("listed");
    assert_eq!(scoped.domains, [".partner.example", "partner.example"]);
    assert!(
        listed
            .iter()
            .any(|a| a.certificate.id == any.certificate.id && a.domains.is_empty())
    );
    let removed = anchors
        .remove(&added.certificate.record.fingerprint_sha256.to_uppercase())
        .await
        .expect("remove by fingerprint, any case");
    assert_eq!(removed.domains.len(), 2);
    assert!(matches!(
        anchors
            .remove(&added.certificate.record.fingerprint_sha256)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(anchors.list().await.expect("list").len(), 1);

    let known = certs
        .for_partner("p@partner.example", now)
        .await
        .expect("known");
    assert_eq!(known.len(), 1);
    assert_eq!(known[0].capabilities.as_deref(), Some(cbc));
    assert_eq!(known[0].vouched_by.as_deref(), Some("anchor-fp"));
    assert!(
        certs
            .for_partner("p@partner.example", now + 365 * 86400)
            .await
            .expect("later")
            .is_empty(),
        "expired certificates are not offered"
    );
    assert!(
        certs
            .for_partner("other@partner.example", now)
            .await
            .expect("none")
            .is_empty()
    );
}

/// SMTP AUTH submitters: add, read back (with and without the hash), list, change the
/// password, disable, remove; a duplicate is a conflict; every change bumps the
/// configuration version the relay caches by.
async fn submitter_suite(store: &Store) {
    use smimegate::store::NewSubmitter;
    let subs = store.submitters();
    let version = store.config_version().await.expect("version");
    let may = vec![
        "noreply@corp.example".to_string(),
        "it@corp.example".to_string(),
    ];
    let added = subs
        .add(&NewSubmitter {
            name: "app-server",
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
            may_send_as: &may,
            comment: "ERP system",
        })
        .await
        .expect("add submitter");
    assert_eq!(added.name, "app-server");
    assert_eq!(added.may_send_as, may);
    assert!(added.may_send_as("it@corp.example"));
    assert!(!added.may_send_as("ceo@corp.example"));
    assert_eq!(added.comment, "ERP system");
    assert!(!added.disabled);
    assert_eq!(added.created_at, added.password_changed_at);
    let after_add = store.config_version().await.expect("version");
    assert!(after_add > version, "adding a submitter bumps the version");

    let relay_only = subs
        .add(&NewSubmitter {
            name: "backup-mta",
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdDI$aGFzaDI",
            may_send_as: &[],
            comment: "",
        })
        .await
        .expect("add relay-only submitter");
    assert!(relay_only.may_send_as.is_empty());
    let dup = subs
        .add(&NewSubmitter {
            name: "app-server",
            password_hash: "x",
            may_send_as: &[],
            comment: "",
        })
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");

    assert_eq!(
        subs.get("app-server").await.expect("get"),
        Some(added.clone())
    );
    assert_eq!(subs.get("nobody").await.expect("get"), None);
    let creds = subs
        .credentials("app-server")
        .await
        .expect("credentials")
        .expect("present");
    assert_eq!(
        creds.password_hash,
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"
    );
    assert!(
        !format!("{creds:?}").contains("argon2id"),
        "Debug hides the hash"
    );
    assert!(subs.credentials("nobody").await.expect("none").is_none());
    let names: Vec<String> = subs
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["app-server", "backup-mta"]);

    let before = store.config_version().await.expect("version");
    let changed = subs
        .set_password_hash("app-server", "$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3")
        .await
        .expect("new password");
    assert!(changed.password_changed_at >= added.password_changed_at);
    assert_eq!(
        subs.credentials("app-server")
            .await
            .expect("credentials")
            .expect("present")
            .password_hash,
        "$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3"
    );
    assert!(store.config_version().await.expect("version") > before);
    assert!(matches!(
        subs.set_password_hash("nobody", "x").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(
        subs.set_disabled("backup-mta", true)
            .await
            .expect("disable")
            .disabled
    );
    assert!(
        !subs
            .set_disabled("backup-mta", false)
            .await
            .expect("enable")
            .disabled
    );

    let before = store.config_version().await.expect("version");
    let removed = subs.remove("backup-mta").await.expect("remove");
    assert_eq!(removed.name, "backup-mta");
    assert!(store.config_version().await.expect("version") > before);
    assert!(matches!(
        subs.remove("backup-mta").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(subs.list().await.expect("list").len(), 1);
}

#[tokio::test]
async fn store_suite_on_sqlite() {
    let (store, dir) = common::sqlite_store().await;
    suite(&store).await;
    store.close().await;
    // Migrations are idempotent: reopening the same file applies nothing twice.
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let again = Store::connect(&url, 1, std::time::Duration::from_secs(5))
        .await
        .expect("reopen");
    assert_eq!(again.mailboxes().list().await.expect("list").len(), 1);
}

#[tokio::test]
async fn store_suite_on_postgres() {
    let db = common::postgres_store().await;
    suite(&db.store).await;
    db.drop_database().await;
}

#[tokio::test]
async fn unreachable_databases_give_a_clear_transient_error() {
    let err = Store::connect(
        "postgres://nobody@127.0.0.1:1/none",
        1,
        std::time::Duration::from_secs(2),
    )
    .await
    .err()
    .expect("must fail");
    assert!(matches!(err, StoreError::Connect { .. }), "{err}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("cannot reach database"), "{err}");
    let err = Store::connect("mysql://x", 1, std::time::Duration::from_secs(2))
        .await
        .err()
        .expect("fail");
    assert!(matches!(err, StoreError::UnsupportedUrl(_)));
}

/// A statement PostgreSQL does not finish (a runaway query, a lock another session
/// holds) is cancelled by the statement timeout and becomes a clear transient error,
/// never a hang; the pooled connection stays usable and keeps the timeout.
#[tokio::test]
async fn a_stuck_postgres_statement_ends_in_a_clear_transient_error() {
    use smimegate::store::ConnectOptions;
    use std::time::{Duration, Instant};
    let db = common::postgres_store().await;
    let store = Store::connect_with(
        &db.url(),
        &ConnectOptions {
            max_connections: 1,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Some(Duration::from_secs(1)),
        },
    )
    .await
    .expect("store with a 1 s statement timeout");
    for attempt in 0..2 {
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            Duration::from_secs(20),
            sqlx::query("SELECT pg_sleep(6)").execute(store.pool()),
        )
        .await
        .expect("the database answered");
        let elapsed = started.elapsed();
        let err = StoreError::Query {
            operation: "sleeping",
            source: outcome.expect_err("pg_sleep(6) must be cancelled"),
        };
        assert!(
            elapsed < Duration::from_secs(4),
            "attempt {attempt}: cancelled after {elapsed:?}"
        );
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("statement timeout"), "{err}");
        store.ping().await.expect("the connection is still usable");
    }

    // A table another session keeps locked: the store's own write gives up in time.
    use sqlx::Connection;
    let mut locker = sqlx::PgConnection::connect(&db.url())
        .await
        .expect("second session");
    sqlx::query("BEGIN")
        .execute(&mut locker)
        .await
        .expect("begin");
    sqlx::query("LOCK TABLE message_log IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .expect("lock");
    let entry = smimegate::store::LogEntry {
        id: 0,
        received_at: 1,
        node: "n".into(),
        direction: smimegate::policy::Direction::Inbound,
        mail_from: "a@b.example".into(),
        rcpt_to: vec!["c@corp.example".into()],
        message_id: None,
        subject: None,
        size_bytes: 1,
        status: smimegate::store::LogStatus::Relayed,
        actions: vec![],
        smtp_code: Some(250),
        smtp_reply: None,
        rule_id: None,
        duration_ms: 1,
    };
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(20), store.message_log().record(&entry))
        .await
        .expect("the store answered")
        .expect_err("the locked table cannot be written");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("writing the message log"), "{err}");
    sqlx::query("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("unlock");
    locker.close().await.ok();
    store
        .message_log()
        .record(&entry)
        .await
        .expect("written once unlocked");
    store.close().await;
    db.drop_database().await;
}

/// A message-log row the database cannot take as it is (a NUL byte in the subject and
/// the Message-ID: PostgreSQL text cannot hold NUL) is stored sanitised, and a row the
/// database still refuses is lost alone: the other sessions' rows of the same group
/// commit are all written.
async fn log_batch_suite(store: &Store, poison: &[&str]) {
    use smimegate::policy::Direction;
    use smimegate::store::{LogEntry, LogFilter, LogStatus};
    let entry = |n: i64, subject: &str, message_id: &str| LogEntry {
        id: 0,
        received_at: 1_000 + n,
        node: "node1".into(),
        direction: Direction::Inbound,
        mail_from: format!("sender{n}@partner.example"),
        rcpt_to: vec![format!("rcpt{n}@corp.example")],
        message_id: Some(message_id.into()),
        subject: Some(subject.into()),
        size_bytes: 100 + n,
        status: LogStatus::Relayed,
        actions: vec!["decrypted".into()],
        smtp_code: Some(250),
        smtp_reply: Some("250 2.0.0 ok".into()),
        rule_id: None,
        duration_ms: n,
    };
    let log = store.message_log();
    let batch = [
        entry(1, "first", "<1@partner.example>"),
        entry(2, "evil\0subject", "<2\0@partner.example>"),
        entry(3, "third", "<3@partner.example>"),
        entry(4, &"x".repeat(5000), "<4@partner.example>"),
    ];
    let written = log
        .record_all(&batch)
        .await
        .expect("the batch reaches the database");
    assert_eq!(written.len(), 4);
    assert!(written.iter().all(Result::is_ok), "{written:?}");
    let rows = log.list(&LogFilter::default()).await.expect("list");
    let subject = |n: i64| {
        rows.iter()
            .find(|r| r.received_at == 1_000 + n)
            .unwrap_or_else(|| panic!("row {n} lost: {rows:?}"))
            .clone()
    };
    assert_eq!(subject(1).subject.as_deref(), Some("first"));
    assert_eq!(subject(3).subject.as_deref(), Some("third"));
    let bad = subject(2);
    assert_eq!(bad.subject.as_deref(), Some("evil\u{FFFD}subject"));
    assert_eq!(
        bad.message_id.as_deref(),
        Some("<2\u{FFFD}@partner.example>")
    );
    assert_eq!(bad.mail_from, "sender2@partner.example");
    let long = subject(4).subject.expect("subject");
    assert!(long.len() <= 1000 && long.ends_with('…'), "{}", long.len());

    // A row the database refuses even sanitised (here: a trigger the test installs)
    // is lost alone.
    for statement in poison {
        sqlx::query(sqlx::AssertSqlSafe(*statement))
            .execute(store.pool())
            .await
            .expect("install the poison trigger");
    }
    let batch = [
        entry(5, "fifth", "<5@partner.example>"),
        entry(6, "poison", "<6@partner.example>"),
        entry(7, "seventh", "<7@partner.example>"),
    ];
    let written = log
        .record_all(&batch)
        .await
        .expect("the batch reaches the database");
    assert!(written[0].is_ok() && written[2].is_ok(), "{written:?}");
    let refused = written[1]
        .as_ref()
        .expect_err("the poisoned row is refused");
    assert!(refused.to_string().contains("poisoned"), "{refused}");
    let rows = log.list(&LogFilter::default()).await.expect("list");
    let at: Vec<i64> = rows.iter().map(|r| r.received_at).collect();
    assert!(at.contains(&1_005) && at.contains(&1_007), "{at:?}");
    assert!(!at.contains(&1_006), "{at:?}");
    assert_eq!(rows.len(), 6);

    // A group larger than one INSERT carries (32 rows) is written in one transaction
    // (here 32 + 32 + 6 rows): every row, each with its own id, in order.
    let big: Vec<LogEntry> = (100..170)
        .map(|n| entry(n, "bulk", "<bulk@partner.example>"))
        .collect();
    let ids: Vec<i64> = log
        .record_all(&big)
        .await
        .expect("the big group reaches the database")
        .into_iter()
        .map(|r| r.expect("every row of the big group is written"))
        .collect();
    assert_eq!(ids.len(), 70);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let all = LogFilter {
        limit: Some(1000),
        ..LogFilter::default()
    };
    let rows = log.list(&all).await.expect("list");
    assert_eq!(rows.len(), 76);
    for (n, id) in (100..170).zip(&ids) {
        let row = rows.iter().find(|r| r.id == *id).expect("row by its id");
        assert_eq!(row.received_at, 1_000 + n);
    }
    // One refused row in such a group: the transaction is undone, the rest written
    // one by one, nothing twice.
    let mut big: Vec<LogEntry> = (200..240)
        .map(|n| entry(n, "bulk", "<bulk@partner.example>"))
        .collect();
    big[35].subject = Some("poison".into());
    let written = log
        .record_all(&big)
        .await
        .expect("the big group reaches the database");
    assert!(written[35].is_err(), "{:?}", written[35]);
    assert_eq!(written.iter().filter(|r| r.is_ok()).count(), 39);
    let rows = log.list(&all).await.expect("list");
    assert_eq!(rows.len(), 76 + 39);
    assert!(!rows.iter().any(|r| r.received_at == 1_235));
}

#[tokio::test]
async fn a_refused_log_row_fails_alone_on_sqlite() {
    let (store, _dir) = common::sqlite_store().await;
    log_batch_suite(
        &store,
        &[
            "CREATE TRIGGER poison BEFORE INSERT ON message_log WHEN NEW.subject = 'poison' \
           BEGIN SELECT RAISE(ABORT, 'poisoned row'); END",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_refused_log_row_fails_alone_on_postgres() {
    let db = common::postgres_store().await;
    log_batch_suite(
        &db.store,
        &[
            "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN \
             IF NEW.subject = 'poison' THEN RAISE EXCEPTION 'poisoned row'; END IF; \
             RETURN NEW; END; $$ LANGUAGE plpgsql",
            "CREATE TRIGGER poison BEFORE INSERT ON message_log \
             FOR EACH ROW EXECUTE FUNCTION poison()",
        ],
    )
    .await;
    db.drop_database().await;
}

/// A log row of `direction` with these action words, received `age` seconds ago.
fn log_row(
    direction: smimegate::policy::Direction,
    from: &str,
    to: &str,
    actions: &[&str],
    status: smimegate::store::LogStatus,
    age: i64,
) -> smimegate::store::LogEntry {
    smimegate::store::LogEntry {
        id: 0,
        received_at: smimegate::store::unix_now() - age,
        node: "test".into(),
        direction,
        mail_from: from.into(),
        rcpt_to: vec![to.into()],
        message_id: None,
        subject: Some(actions.join("+")),
        size_bytes: 100,
        status,
        actions: actions.iter().map(|a| a.to_string()).collect(),
        smtp_code: Some(250),
        smtp_reply: Some("250 2.0.0 ok".into()),
        rule_id: None,
        duration_ms: 5,
    }
}

/// The email overview (`ops::messages`) and the dashboard (`ops::dashboard`) over rows
/// written through the store: every filter in SQL, paging, counts, CSV.
async fn overview_suite(store: &Store) {
    use smimegate::config::Settings;
    use smimegate::ops::messages::{self, MessageQuery};
    use smimegate::ops::{Ops, dashboard};
    use smimegate::policy::Direction::{Inbound, Outbound};
    use smimegate::store::LogStatus::{Deferred, Rejected, Relayed};

    let log = store.message_log();
    let hour = 3600;
    let rows = [
        log_row(
            Outbound,
            "alice@corp.example",
            "bob@partner.example",
            &["signed"],
            Relayed,
            10,
        ),
        log_row(
            Outbound,
            "alice@corp.example",
            "bob@partner.example",
            &["signed", "encrypted (2 copies for Bcc)"],
            Relayed,
            20,
        ),
        log_row(
            Outbound,
            "carol@corp.example",
            "dave@partner.example",
            &["not signed: no certificate"],
            Relayed,
            30,
        ),
        log_row(
            Inbound,
            "bob@partner.example",
            "alice@corp.example",
            &[
                "decrypted (aes256-cbc, rsa)",
                "signature-valid",
                "signer bob@partner.example valid: ok",
            ],
            Relayed,
            40,
        ),
        log_row(
            Inbound,
            "eve@evil.example",
            "alice@corp.example",
            &["signature-valid", "signature-bad-signature"],
            Relayed,
            50,
        ),
        log_row(
            Inbound,
            "bob@partner.example",
            "carol@corp.example",
            &["kept-encrypted"],
            Relayed,
            60,
        ),
        log_row(
            Inbound,
            "spam@evil.example",
            "alice@corp.example",
            &["refused"],
            Rejected,
            70,
        ),
        // Older than a day: not on the dashboard, found with an old enough `from`.
        log_row(
            Outbound,
            "alice@corp.example",
            "old@partner.example",
            &["signed"],
            Relayed,
            30 * hour,
        ),
    ];
    for row in &rows {
        log.record(row).await.expect("record");
    }
    let mut deferred = log_row(
        Outbound,
        "alice@corp.example",
        "x@down.example",
        &["signed"],
        Deferred,
        80,
    );
    deferred.smtp_code = Some(451);
    deferred.smtp_reply = Some(format!(
        "451 4.4.1 {}",
        smimegate::smtp::client::UNAVAILABLE
    ));
    log.record(&deferred).await.expect("record deferred");
    let mut other_deferral = log_row(
        Outbound,
        "alice@corp.example",
        "y@partner.example",
        &[],
        Deferred,
        90,
    );
    other_deferral.smtp_reply = Some("451 4.7.0 try again later".into());
    log.record(&other_deferral).await.expect("record deferral");

    let settings = Settings::new(".".into(), smimegate::config::Config::default());
    let ctx = Ops::new(&settings, store);
    let search = |q: MessageQuery| async move { messages::search(&ctx, q).await.expect("search") };
    let senders = |page: &messages::MessagePage| {
        page.rows
            .iter()
            .map(|r| r.rcpt_to[0].clone())
            .collect::<Vec<_>>()
    };
    let crypto = |c: &str| MessageQuery {
        crypto: Some(c.into()),
        from: Some("1d".into()),
        ..Default::default()
    };
    assert_eq!(
        senders(&search(crypto("signed")).await),
        [
            "bob@partner.example",
            "bob@partner.example",
            "x@down.example"
        ]
    );
    let encrypted = search(crypto("encrypted")).await;
    assert_eq!(encrypted.total, 1);
    assert_eq!(encrypted.rows[0].crypto, ["signed", "encrypted"]);
    assert_eq!(search(crypto("decrypted")).await.total, 1);
    let valid = search(crypto("signature-valid")).await;
    assert_eq!(
        valid
            .rows
            .iter()
            .map(|r| r.mail_from.as_str())
            .collect::<Vec<_>>(),
        ["bob@partner.example"]
    );
    let invalid = search(crypto("signature-invalid")).await;
    assert_eq!(
        invalid
            .rows
            .iter()
            .map(|r| r.mail_from.as_str())
            .collect::<Vec<_>>(),
        ["eve@evil.example"]
    );
    // None: no crypto action; kept-encrypted is not "none".
    assert_eq!(
        senders(&search(crypto("none")).await),
        [
            "dave@partner.example",
            "alice@corp.example",
            "y@partner.example"
        ]
    );
    // The other filters, combined.
    let q = MessageQuery {
        direction: Some("inbound".into()),
        status: Some("relayed".into()),
        address: Some("Alice@Corp.Example".into()),
        ..Default::default()
    };
    assert_eq!(search(q).await.total, 2);
    let old = MessageQuery {
        to: Some("1d".into()),
        ..Default::default()
    };
    assert_eq!(senders(&search(old).await), ["old@partner.example"]);
    // Paging: newest first, a total, has_more.
    let page = |n: i64| MessageQuery {
        page: Some(n),
        page_size: Some(4),
        ..Default::default()
    };
    let (first, third) = (search(page(1)).await, search(page(3)).await);
    assert_eq!(
        (first.total, first.rows.len(), first.has_more),
        (10, 4, true)
    );
    assert_eq!((third.rows.len(), third.has_more), (2, false));
    assert_eq!(third.rows[1].rcpt_to, ["old@partner.example"]);
    let too_big = messages::search(
        &ctx,
        MessageQuery {
            page_size: Some(501),
            ..Default::default()
        },
    )
    .await;
    assert!(too_big.is_err_and(|e| e.to_string().contains("page_size must be 1 to 500")));

    // CSV: a header and every matching row, all pages.
    let mut csv = Vec::new();
    let written = messages::csv(&ctx, crypto("signed"), &mut csv)
        .await
        .expect("csv");
    assert_eq!(written, 3);
    let csv = String::from_utf8(csv).expect("utf-8");
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(
        lines.len(),
        5,
        "header, 3 rows, empty after the last CRLF: {csv}"
    );
    assert!(lines[0].starts_with("id,received,direction,status,from,to,subject"));
    assert!(
        lines[2].contains(",signed encrypted,signed; encrypted (2 copies for Bcc),250,"),
        "{}",
        lines[2]
    );

    // The dashboard: the last 24 hours by direction and crypto result.
    let summary = dashboard::summary(&ctx).await.expect("dashboard");
    assert_eq!(
        (
            summary.outbound.total,
            summary.outbound.signed,
            summary.outbound.encrypted,
            summary.outbound.none
        ),
        (5, 3, 1, 2)
    );
    assert_eq!(
        (
            summary.inbound.total,
            summary.inbound.decrypted,
            summary.inbound.signature_valid,
            summary.inbound.signature_invalid,
            summary.inbound.none
        ),
        (4, 1, 1, 1, 1)
    );
    assert_eq!(summary.next_hop_errors.count, 1);
    assert_eq!(summary.next_hop_errors.last_at, Some(deferred.received_at));
    assert_eq!((summary.seats.used, summary.seats.free), (0, None));
    assert!(summary.expiring.is_empty());
    let json = serde_json::to_value(&summary).expect("serialise");
    assert_eq!(json["outbound"]["signed"], 3);
}

/// The dashboard's expiring certificates: the current one of each managed mailbox
/// expiring within 30 days, not a replaced, revoked, partner's or distant one.
async fn expiring_suite(store: &Store) {
    use smimegate::config::Settings;
    use smimegate::ops::{Ops, dashboard};
    let make = |cn: &str, days: &str| {
        use der::DecodePem;
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        common::run_ok(
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
                &key.display().to_string(),
                "-out",
                &cert.display().to_string(),
                "-days",
                days,
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        x509_cert::Certificate::from_pem(std::fs::read(&cert).expect("read")).expect("parse")
    };
    let certs = store.certificates();
    certs
        .insert(
            &make("soon", "10"),
            CertificateSource::Issued,
            Some("soon@corp.example"),
            None,
        )
        .await
        .expect("soon");
    certs
        .insert(
            &make("later", "90"),
            CertificateSource::Issued,
            Some("later@corp.example"),
            None,
        )
        .await
        .expect("later");
    // Renewed: the old one expires soon, the current one does not.
    certs
        .insert(
            &make("renewed-old", "5"),
            CertificateSource::Uploaded,
            Some("renewed@corp.example"),
            None,
        )
        .await
        .expect("renewed old");
    certs
        .insert(
            &make("renewed-new", "365"),
            CertificateSource::Uploaded,
            Some("renewed@corp.example"),
            None,
        )
        .await
        .expect("renewed new");
    certs
        .insert(
            &make("partner", "3"),
            CertificateSource::Harvested,
            Some("bob@partner.example"),
            None,
        )
        .await
        .expect("partner");
    let settings = Settings::new(".".into(), smimegate::config::Config::default());
    let summary = dashboard::summary(&Ops::new(&settings, store))
        .await
        .expect("dashboard");
    let addresses: Vec<&str> = summary
        .expiring
        .iter()
        .map(|c| c.address.as_str())
        .collect();
    assert_eq!(addresses, ["soon@corp.example"]);
    assert_eq!(summary.expiring[0].source, "issued");
    // The metrics' count agrees with the list.
    let now = smimegate::store::unix_now();
    let count = store
        .certificates()
        .count_managed_expiring(now, now + dashboard::EXPIRING_SECS)
        .await
        .expect("count");
    assert_eq!(count, 1);
}

/// The migration's backfill of `crypto` for rows written before it (SQL) agrees with
/// the writer's mapping table (Rust) on every kind of action list the relay writes.
async fn backfill_suite(store: &Store, migration: &str) {
    use smimegate::policy::Direction::{Inbound, Outbound};
    use smimegate::store::LogStatus::Relayed;
    let lists: &[&[&str]] = &[
        &[],
        &["signed"],
        &["signed", "encrypted"],
        &["encrypted (3 copies for Bcc)"],
        &["not signed: no certificate", "refused"],
        &[
            "decrypted (aes256-gcm, rsa-oaep)",
            "weak-cipher des-ede3-cbc",
            "signature-valid",
            "signer a@b valid: ok",
        ],
        &["signature-valid", "signature-untrusted"],
        &["signature-unchecked"],
        &["signature-valid", "signature-unchecked"],
        &["signature-revoked", "signer x revoked: crl"],
        &["kept-encrypted"],
        &["undecryptable: no key", "kept-encrypted"],
        &["decryption-failed", "kept-encrypted", "harvested"],
        &["a note mentioning \"signed\" and 100%_of it"],
    ];
    let log = store.message_log();
    for (i, actions) in lists.iter().enumerate() {
        let direction = if i % 2 == 0 { Inbound } else { Outbound };
        log.record(&log_row(
            direction,
            "a@b.example",
            "c@d.example",
            actions,
            Relayed,
            1,
        ))
        .await
        .expect("record");
    }
    let read = || async {
        let rows = sqlx::query("SELECT actions, crypto FROM message_log ORDER BY id")
            .fetch_all(store.pool())
            .await
            .expect("read");
        rows.iter()
            .map(|r| {
                use sqlx::Row;
                (r.get::<String, _>("actions"), r.get::<i64, _>("crypto"))
            })
            .collect::<Vec<_>>()
    };
    let written = read().await;
    assert_eq!(written.len(), lists.len());
    for ((_, bits), actions) in written.iter().zip(lists) {
        let words: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
        assert_eq!(*bits, smimegate::store::crypto_bits(&words), "{actions:?}");
    }
    sqlx::query("UPDATE message_log SET crypto = -1")
        .execute(store.pool())
        .await
        .expect("reset");
    let update = migration
        .split(';')
        .find(|statement| statement.contains("UPDATE message_log SET crypto"))
        .expect("the backfill statement");
    sqlx::query(sqlx::AssertSqlSafe(update.to_string()))
        .execute(store.pool())
        .await
        .expect("backfill");
    assert_eq!(
        read().await,
        written,
        "SQL backfill and Rust mapping disagree"
    );
}

#[tokio::test]
async fn the_crypto_backfill_of_migration_0012_agrees_with_the_mapping_table() {
    let (store, _dir) = common::sqlite_store().await;
    backfill_suite(
        &store,
        include_str!("../migrations/sqlite/0012_message_crypto.sql"),
    )
    .await;
    let db = common::postgres_store().await;
    backfill_suite(
        &db.store,
        include_str!("../migrations/postgres/0012_message_crypto.sql"),
    )
    .await;
    db.drop_database().await;
}

#[tokio::test]
async fn the_overview_filters_pages_and_counts_by_crypto_result_on_sqlite() {
    let (store, _dir) = common::sqlite_store().await;
    overview_suite(&store).await;
    expiring_suite(&store).await;
}

#[tokio::test]
async fn the_overview_filters_pages_and_counts_by_crypto_result_on_postgres() {
    let db = common::postgres_store().await;
    overview_suite(&db.store).await;
    expiring_suite(&db.store).await;
    db.drop_database().await;
}

/// `[log].keep_days`: rows older than the cut-off go, in batches smaller than the
/// backlog, the rest stay, one audit row says how many; 0 keeps everything.
async fn retention_suite(store: &Store) {
    use smimegate::config::{Config, Settings};
    use smimegate::ops::{Actor, Ops, retention};
    use smimegate::policy::Direction::Outbound;
    use smimegate::store::LogStatus::Relayed;
    let day = 86_400;
    let mut rows = Vec::new();
    // 7 rows past 30 days, 3 within.
    for age in [31, 32, 40, 45, 60, 90, 400] {
        rows.push(log_row(
            Outbound,
            "old@a.test",
            "x@b.test",
            &["signed"],
            Relayed,
            age * day,
        ));
    }
    for age in [0, 1, 29] {
        rows.push(log_row(
            Outbound,
            "new@a.test",
            "x@b.test",
            &["signed"],
            Relayed,
            age * day,
        ));
    }
    for row in &rows {
        store.message_log().record(row).await.expect("record");
    }
    let count = || async {
        store
            .message_log()
            .count(&Default::default())
            .await
            .expect("count")
    };
    assert_eq!(count().await, 10);

    let mut config = Config::default();
    config.log.keep_days = 0;
    let forever = Settings::new(".".into(), config.clone());
    let actor = Actor::job("lifecycle");
    let now = smimegate::store::unix_now();
    let kept = retention::purge_message_log(&Ops::new(&forever, store), &actor, now, 2)
        .await
        .expect("purge with keep_days = 0");
    assert_eq!(kept.deleted, 0);
    assert_eq!(kept.cutoff, None);
    assert_eq!(count().await, 10, "keep_days = 0 keeps every row");

    config.log.keep_days = 30;
    let thirty = Settings::new(".".into(), config);
    // A batch of 2 makes four statements for the 7 old rows.
    let purged = retention::purge_message_log(&Ops::new(&thirty, store), &actor, now, 2)
        .await
        .expect("purge");
    assert_eq!(purged.deleted, 7);
    assert_eq!(purged.cutoff, Some(now - 30 * day));
    let left = store
        .message_log()
        .list(&Default::default())
        .await
        .expect("list");
    assert_eq!(left.len(), 3);
    assert!(left.iter().all(|r| r.mail_from == "new@a.test"), "{left:?}");
    let audit = store.audit().recent(5).await.expect("audit");
    let row = audit
        .iter()
        .find(|a| a.action == "message_log.purge")
        .expect("an audit row for the purge");
    assert_eq!(row.actor, actor.name);
    assert!(row.detail.starts_with("7 rows"), "{}", row.detail);

    // Nothing left to delete: no row, no audit noise.
    let again = retention::purge_message_log(&Ops::new(&thirty, store), &actor, now, 2)
        .await
        .expect("purge again");
    assert_eq!(again.deleted, 0);
    let purges = store
        .audit()
        .recent(50)
        .await
        .expect("audit")
        .into_iter()
        .filter(|a| a.action == "message_log.purge")
        .count();
    assert_eq!(purges, 1);
}

#[tokio::test]
async fn message_log_rows_past_keep_days_are_purged_in_batches_on_sqlite() {
    let (store, _dir) = common::sqlite_store().await;
    retention_suite(&store).await;
}

#[tokio::test]
async fn message_log_rows_past_keep_days_are_purged_in_batches_on_postgres() {
    let db = common::postgres_store().await;
    retention_suite(&db.store).await;
    db.drop_database().await;
}

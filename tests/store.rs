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

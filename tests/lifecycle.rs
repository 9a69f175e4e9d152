//! The certificate lifecycle through the operation layer, as the CLI, the console and
//! the lifecycle job call it, on a SQLite file and on PostgreSQL with this process's
//! SoftHSM2 token: seats and batch activation, deactivation (revocation, CRL,
//! revoke-pending, the seat freed after the configured days), reactivation, renewal
//! that keeps every older key, an expired mailbox renewed at the next run, and the
//! job's lease. Time moves by the `at` the job is given, never by waiting.

mod common;

use std::time::{Duration, SystemTime};

use der::Decode;
use smimegate::app::App;
use smimegate::config::{Config, Settings};
use smimegate::hsm::KeyAlgorithm;
use smimegate::ops::domains::{self, AddDomain};
use smimegate::ops::licence::{self, SetLicence};
use smimegate::ops::lifecycle;
use smimegate::ops::mailboxes::{self, ActivateMany, ActivationOutcome};
use smimegate::ops::{Actor, OpError};
use smimegate::pki::address::Address;
use smimegate::store::{CertificateSource, KeyPurpose, MailboxState, Store};

const DAY: u64 = 86_400;

fn job() -> Actor {
    Actor::job("lifecycle")
}

fn operator() -> Actor {
    Actor::console("ops", "192.0.2.9".parse().expect("ip"))
}

/// The gateway's handles on `store` and this process's token, with a built-in CA.
async fn app_on(store: &Store) -> App {
    let ca = common::token_ca("CN=lifecycle test CA");
    let key = store
        .keys()
        .insert(&ca.key_id, ca.algorithm, KeyPurpose::Ca, None)
        .await
        .expect("CA key row");
    store
        .certificates()
        .insert(&ca.certificate, CertificateSource::Ca, None, Some(key.id))
        .await
        .expect("CA certificate row");
    let mut config = Config::default();
    config.ca.mailbox_key = KeyAlgorithm::P256;
    App {
        settings: Settings::new(std::path::PathBuf::from("."), config),
        store: store.clone(),
        hsm: common::token().hsm.clone(),
    }
}

async fn fixture(app: &App) {
    for (name, next_hop) in [
        ("corp.example", Some("10.0.0.5:25")),
        ("branch.example", Some("10.0.0.6:25")),
        ("noroute.example", None),
    ] {
        let input = AddDomain {
            name: name.into(),
            next_hop: next_hop.map(str::to_string),
            wildcard: false,
        };
        domains::add(&app.ops(), &operator(), input)
            .await
            .expect("domain");
    }
    for address in [
        "a@corp.example",
        "b@corp.example",
        "c@corp.example",
        "d@corp.example",
        "e@branch.example",
        "x@noroute.example",
    ] {
        mailboxes::add(&app.ops(), &operator(), address)
            .await
            .expect("mailbox");
    }
}

fn addresses(list: &[&str]) -> ActivateMany {
    ActivateMany {
        // No DNS in tests: the MX check has its own (tests/ca_domains.rs).
        skip_mx_check: true,
        addresses: list.iter().map(|a| a.to_string()).collect(),
        ..ActivateMany::default()
    }
}

async fn state(app: &App, address: &str) -> MailboxState {
    app.store
        .mailboxes()
        .require(&Address::parse(address).expect("address"))
        .await
        .expect("mailbox")
        .state
}

async fn set_licence(app: &App, smime: i64, mail_security: i64, until: Option<&str>) {
    licence::set(
        &app.ops(),
        &operator(),
        SetLicence {
            smime_seats: smime,
            mail_security_seats: mail_security,
            valid_until: until.map(str::to_string),
        },
    )
    .await
    .expect("licence");
}

fn outcome_names(report: &mailboxes::ActivationReport) -> Vec<(String, &'static str)> {
    report
        .mailboxes
        .iter()
        .map(|e| {
            let name = match e.outcome {
                ActivationOutcome::Activated { .. } => "activated",
                ActivationOutcome::Skipped { .. } => "skipped",
                ActivationOutcome::Failed { .. } => "failed",
                ActivationOutcome::NotAttempted => "not-attempted",
            };
            (e.address.clone(), name)
        })
        .collect()
}

fn pairs(list: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    list.iter().map(|(a, o)| (a.to_string(), *o)).collect()
}

async fn audit_actions(app: &App, target: &str) -> Vec<String> {
    let mut rows: Vec<String> = app
        .store
        .audit()
        .recent(10_000)
        .await
        .expect("audit")
        .into_iter()
        .filter(|r| r.target == target)
        .map(|r| format!("{} by {}", r.action, r.actor))
        .collect();
    rows.reverse();
    rows
}

async fn seats_and_deactivation(store: &Store) {
    let app = app_on(store).await;
    fixture(&app).await;

    // No licence: no limit.
    let shown = licence::show(&app.ops()).await.expect("show");
    assert!(shown.licence.is_none() && shown.smime_seats_free.is_none());
    // S/MIME seats never exceed mail-security seats.
    let too_many = licence::set(
        &app.ops(),
        &operator(),
        SetLicence {
            smime_seats: 6,
            mail_security_seats: 5,
            valid_until: None,
        },
    )
    .await;
    assert!(matches!(too_many, Err(OpError::Invalid(_))), "{too_many:?}");
    set_licence(&app, 3, 10, None).await;

    // Several at once.
    let report = mailboxes::activate_many(
        &app,
        &operator(),
        addresses(&["a@corp.example", "b@corp.example"]),
    )
    .await
    .expect("activate two");
    assert_eq!(
        outcome_names(&report),
        pairs(&[
            ("a@corp.example", "activated"),
            ("b@corp.example", "activated")
        ])
    );
    // A domain: a and b are skipped, c takes the last seat, d is not attempted.
    let report = mailboxes::activate_many(
        &app,
        &operator(),
        ActivateMany {
            // No DNS in tests: the MX check has its own (tests/ca_domains.rs).
            skip_mx_check: true,
            domain: Some("corp.example".into()),
            ..ActivateMany::default()
        },
    )
    .await
    .expect("activate domain");
    assert_eq!(
        outcome_names(&report),
        pairs(&[
            ("a@corp.example", "skipped"),
            ("b@corp.example", "skipped"),
            ("c@corp.example", "activated"),
            ("d@corp.example", "not-attempted"),
        ])
    );
    let why = report.stopped.as_deref().expect("stopped");
    assert!(
        why.contains("no S/MIME seat is free (all 3 in use)"),
        "{why}"
    );
    assert_eq!(report.activated(), 1);
    assert_eq!(state(&app, "d@corp.example").await, MailboxState::Inactive);
    let shown = licence::show(&app.ops()).await.expect("show");
    assert_eq!(
        (shown.smime_seats_used, shown.smime_seats_free),
        (3, Some(0))
    );
    assert_eq!(shown.usage.active_issued, 3);

    // Deactivation: revoked at once, in a new CRL, revoke-pending holding its seat.
    let a_serial = app
        .store
        .certificates()
        .signing("a@corp.example", smimegate::store::unix_now())
        .await
        .expect("read")
        .expect("a signs")
        .record
        .serial;
    let done = mailboxes::deactivate(&app, &operator(), &["a@corp.example".into()])
        .await
        .expect("deactivate");
    assert_eq!(done.mailboxes[0].revoked, vec![a_serial.clone()]);
    assert!(done.crl_error.is_none());
    assert_eq!(
        state(&app, "a@corp.example").await,
        MailboxState::RevokePending
    );
    let ca = app.ca().await.expect("CA");
    let crl = app
        .store
        .published_crls()
        .latest(&smimegate::ops::crl::ca_fingerprint(&ca).expect("fingerprint"))
        .await
        .expect("read CRL")
        .expect("a CRL was signed");
    assert_eq!(crl.entries, 1);
    let parsed =
        x509_cert::crl::CertificateList::<x509_cert::certificate::Rfc5280>::from_der(&crl.der)
            .expect("CRL parses");
    let listed: Vec<String> = parsed
        .tbs_cert_list
        .revoked_certificates
        .iter()
        .flatten()
        .map(|r| hex::encode(r.serial_number.as_bytes()))
        .collect();
    assert_eq!(listed, vec![a_serial]);
    // It never signs again, and its seat is still held.
    assert!(
        app.signer_for(&Address::parse("a@corp.example").expect("a"))
            .await
            .is_err()
    );
    let no_seat = mailboxes::activate_many(&app, &operator(), addresses(&["d@corp.example"]))
        .await
        .expect("report");
    assert!(no_seat.stopped.is_some(), "{no_seat:?}");

    // The job: not yet after 13 days, inactive after 14; the seat is free.
    let now = SystemTime::now();
    let report = lifecycle::run(&app, &job(), now + Duration::from_secs(13 * DAY))
        .await
        .expect("run");
    assert!(report.released.is_empty(), "{report:?}");
    let report = lifecycle::run(&app, &job(), now + Duration::from_secs(14 * DAY + 60))
        .await
        .expect("run");
    assert_eq!(report.released, vec!["a@corp.example".to_string()]);
    assert_eq!(state(&app, "a@corp.example").await, MailboxState::Inactive);
    let report = mailboxes::activate_many(&app, &operator(), addresses(&["d@corp.example"]))
        .await
        .expect("activate d");
    assert!(report.complete(), "{report:?}");

    // Reactivation needs a seat again; with one, a gets a new key and certificate
    // and its old key stays (retired) for old mail.
    set_licence(&app, 4, 10, None).await;
    mailboxes::activate_many(&app, &operator(), addresses(&["a@corp.example"]))
        .await
        .expect("reactivate");
    assert_eq!(state(&app, "a@corp.example").await, MailboxState::Active);
    let detail = mailboxes::show(&app.ops(), "a@corp.example")
        .await
        .expect("show");
    assert_eq!(detail.certificates.len(), 2);
    assert!(
        detail.certificates[0].signing && detail.certificates[0].certificate.revoked_at.is_none()
    );
    assert!(detail.certificates[1].certificate.revoked_at.is_some());
    assert_eq!(detail.keys.len(), 2);
    assert_eq!(
        detail
            .keys
            .iter()
            .filter(|k| k.retired_at.is_some())
            .count(),
        1
    );
    assert_eq!(
        audit_actions(&app, "a@corp.example").await,
        [
            "mailbox.add by console:ops",
            "mailbox.activate by console:ops",
            "mailbox.deactivate by console:ops",
            "mailbox.release by job:lifecycle",
            "mailbox.activate by console:ops",
        ]
    );

    // --all: every known mailbox of a routed domain, never one without a route.
    let report = mailboxes::activate_many(
        &app,
        &operator(),
        ActivateMany {
            // No DNS in tests: the MX check has its own (tests/ca_domains.rs).
            skip_mx_check: true,
            all: true,
            ..ActivateMany::default()
        },
    )
    .await
    .expect("all");
    let touched: Vec<String> = report.mailboxes.iter().map(|e| e.address.clone()).collect();
    assert!(
        !touched.contains(&"x@noroute.example".to_string()),
        "{touched:?}"
    );
    assert_eq!(
        outcome_names(&report).last().cloned(),
        Some(("e@branch.example".to_string(), "not-attempted")),
        "4 seats, all held: e waits"
    );

    // A licence that ended hands out no seat.
    set_licence(&app, 10, 10, Some("2020-01-31")).await;
    let ended = mailboxes::activate_many(&app, &operator(), addresses(&["e@branch.example"]))
        .await
        .expect("report");
    assert!(
        ended
            .stopped
            .as_deref()
            .is_some_and(|w| w.contains("the licence ended on 2020-01-31")),
        "{ended:?}"
    );
    let report = lifecycle::run(&app, &job(), SystemTime::now())
        .await
        .expect("run");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("the licence ended")),
        "{report:?}"
    );
}

#[tokio::test]
async fn seats_activation_and_deactivation_on_sqlite() {
    let (store, _dir) = common::sqlite_store().await;
    seats_and_deactivation(&store).await;
}

#[tokio::test]
async fn seats_activation_and_deactivation_on_postgres() {
    let db = common::postgres_store().await;
    seats_and_deactivation(&db.store).await;
    db.drop_database().await;
}

async fn renewal(store: &Store) {
    let app = app_on(store).await;
    fixture(&app).await;
    mailboxes::activate_many(&app, &operator(), addresses(&["a@corp.example"]))
        .await
        .expect("activate");
    let a = Address::parse("a@corp.example").expect("a");
    let first = app.signer_for(&a).await.expect("signer").certificate;

    // Nothing is due today.
    let now = SystemTime::now();
    let report = lifecycle::run(&app, &job(), now).await.expect("run");
    assert!(report.renewed.is_empty(), "{report:?}");
    // The first run signs the first CRL.
    assert_eq!(report.crls_signed.len(), 1);

    // 340 days on, within renew_before_days (30) of expiry: renewed; again.
    let later = now + Duration::from_secs(340 * DAY);
    let first_renewal = lifecycle::run(&app, &job(), later).await.expect("run");
    assert_eq!(first_renewal.renewed.len(), 1, "{first_renewal:?}");
    let second = app.signer_for(&a).await.expect("signer").certificate;
    assert_ne!(second, first, "signing switched to the new certificate");
    let second_renewal = lifecycle::run(&app, &job(), later).await.expect("run");
    assert_eq!(second_renewal.renewed.len(), 1, "{second_renewal:?}");
    let third = app.signer_for(&a).await.expect("signer").certificate;
    assert!(third != second && third != first);
    // Every key stays: the key directory still opens mail to the first certificate.
    let directory = app.key_directory().await.expect("directory");
    for cert in [&first, &second, &third] {
        let ids = smimegate::smime::decrypt::RecipientId::for_certificate(cert);
        assert!(
            !directory.resolve(&ids).is_empty(),
            "the key of an older certificate is gone"
        );
    }
    let detail = mailboxes::show(&app.ops(), "a@corp.example")
        .await
        .expect("show");
    assert_eq!(detail.keys.len(), 3);
    assert_eq!(
        detail
            .keys
            .iter()
            .filter(|k| k.retired_at.is_none())
            .count(),
        1
    );
    // Renewal takes no seat.
    assert_eq!(
        licence::show(&app.ops())
            .await
            .expect("show")
            .smime_seats_used,
        1
    );

    // A certificate that expired while the gateway was off is renewed at the next run.
    let long_after = now + Duration::from_secs(400 * DAY);
    let report = lifecycle::run(&app, &job(), long_after).await.expect("run");
    assert_eq!(report.renewed.len(), 1, "{report:?}");
    assert!(report.renewed[0].previous_serial.is_some());
    let renewals = audit_actions(&app, "a@corp.example")
        .await
        .into_iter()
        .filter(|r| r == "mailbox.renew by job:lifecycle")
        .count();
    assert_eq!(renewals, 3);

    // Another node running the job: this run does nothing. On PostgreSQL the other
    // node holds the advisory lock (on a session of its own); on SQLite the lease row.
    if app.store.backend() == smimegate::store::Backend::Postgres {
        let other = app
            .store
            .leases()
            .try_advisory_lock(lifecycle::ADVISORY_LOCK_KEY)
            .await
            .expect("lock")
            .expect("free before");
        let skipped = lifecycle::run(&app, &job(), long_after).await.expect("run");
        assert!(skipped.skipped && skipped.renewed.is_empty(), "{skipped:?}");
        // The other node dies: its connection ends, and with it the lock, at once.
        drop(other);
        let mut ran = false;
        for _ in 0..100 {
            let report = lifecycle::run(&app, &job(), long_after).await.expect("run");
            if !report.skipped {
                ran = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(ran, "the lock of a node that died was not freed");
    } else {
        assert!(
            app.store
                .leases()
                .acquire(
                    "lifecycle",
                    "node2:1",
                    smimegate::store::unix_now(),
                    smimegate::store::unix_now() + 600
                )
                .await
                .expect("lease")
        );
        let skipped = lifecycle::run(&app, &job(), long_after).await.expect("run");
        assert!(skipped.skipped && skipped.renewed.is_empty(), "{skipped:?}");
        app.store
            .leases()
            .release("lifecycle", "node2:1")
            .await
            .expect("release");
    }
}

#[tokio::test]
async fn renewal_keeps_every_key_on_sqlite() {
    let (store, _dir) = common::sqlite_store().await;
    renewal(&store).await;
}

#[tokio::test]
async fn renewal_keeps_every_key_on_postgres() {
    let db = common::postgres_store().await;
    renewal(&db.store).await;
    db.drop_database().await;
}

/// Two activations racing for the last seat (two nodes on one database): one gets it.
#[tokio::test]
async fn the_last_seat_goes_to_one_of_two_racing_activations_on_postgres() {
    let db = common::postgres_store().await;
    let app = app_on(&db.store).await;
    fixture(&app).await;
    set_licence(&app, 1, 10, None).await;
    for _ in 0..5 {
        let (a, b) = (
            Address::parse("a@corp.example").expect("a"),
            Address::parse("b@corp.example").expect("b"),
        );
        let mailboxes = db.store.mailboxes();
        let (got_a, got_b) = tokio::join!(
            mailboxes.take_seat(&a, Some(1)),
            mailboxes.take_seat(&b, Some(1)),
        );
        let taken = [got_a.expect("a"), got_b.expect("b")];
        assert_eq!(taken.iter().filter(|t| **t).count(), 1, "{taken:?}");
        for address in [&a, &b] {
            let _ = db
                .store
                .mailboxes()
                .transition(address, MailboxState::Pending, MailboxState::Inactive)
                .await;
        }
    }
    db.drop_database().await;
}

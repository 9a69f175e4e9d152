//! The revocation checker's parts on their own (issue 10 item 7): CRL downloads bounded
//! in size and time, an SMTP reply's bounded wait for a first download, and the CRL
//! cache shared by two nodes through the database (SQLite and PostgreSQL) and kept
//! current by the background refresh. CRLs come from `openssl ca -gencrl` over a local
//! HTTP server; the relay-level tests are in tests/relay/revocation.rs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::crl::{CrlCa, CrlServer};
use der::DecodePem;
use smimegate::config::RevocationMode;
use smimegate::pki::revocation::fetch::{self, FetchError};
use smimegate::pki::revocation::{RevocationSettings, Revocations, Status};
use smimegate::store::Store;
use x509_cert::Certificate;

fn settings(reply_wait: Duration) -> RevocationSettings {
    RevocationSettings {
        mode: RevocationMode::SoftFail,
        fetch_timeout: Duration::from_secs(20),
        max_crl_bytes: 1024 * 1024,
        refresh_interval: Duration::from_secs(3600),
        reply_wait,
    }
}

fn pem_certificate(path: &str) -> Certificate {
    Certificate::from_pem(std::fs::read(path).expect("read certificate")).expect("PEM certificate")
}

/// A listener that never accepts: connections complete, nothing is ever answered.
fn silent_listener() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    (listener, format!("http://127.0.0.1:{port}/never.crl"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_are_bounded_in_size_and_time_and_need_a_200() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = CrlServer::start(dir.path().join("www"));
    server.publish("small.crl", b"0123456789");
    server.publish("large.crl", &vec![0x30; 5000]);
    assert_eq!(
        fetch::get(&server.url("small.crl"), Duration::from_secs(20), 100)
            .await
            .expect("small file"),
        b"0123456789"
    );
    assert_eq!(
        fetch::get(&server.url("large.crl"), Duration::from_secs(20), 4999).await,
        Err(FetchError::TooLarge(4999))
    );
    assert_eq!(
        fetch::get(&server.url("missing.crl"), Duration::from_secs(20), 4999).await,
        Err(FetchError::Status(404))
    );
    let (_silent, url) = silent_listener();
    assert_eq!(
        fetch::get(&url, Duration::from_secs(1), 4999).await,
        Err(FetchError::Timeout(1))
    );
    let closed = format!("http://127.0.0.1:{}/x.crl", free_port());
    assert!(matches!(
        fetch::get(&closed, Duration::from_secs(5), 4999).await,
        Err(FetchError::Connect(_))
    ));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_waits_only_the_reply_bound_for_a_first_download() {
    let (store, _dir) = common::sqlite_store().await;
    let (_silent, url) = silent_listener();
    // The download would take up to 20 s; the check may wait 200 ms for it.
    let revocations = Revocations::new(store.clone(), settings(Duration::from_millis(200)));
    let answer = revocations.crl(&url).await;
    let why = answer.expect_err("no CRL yet");
    assert!(why.contains("still downloading"), "{why}");
    store.close().await;
}

/// Two nodes on one database: what one downloads the other reads from the table; the
/// background refresh replaces a CRL whose nextUpdate is near, and a revocation
/// published meanwhile counts from then on.
async fn shared_cache_suite(node_a: Store, node_b: Store, dir: &std::path::Path) {
    let server = CrlServer::start(dir.join("www"));
    let ca = CrlCa::new(dir, "shared", Some(server.url("shared.crl")));
    let ida = ca.issue("ida@partner.example");
    let jan = ca.issue("jan@partner.example");
    let anchor = pem_certificate(&ca.cert);
    // A CRL due for its refresh: nextUpdate in two minutes.
    let soon = time::OffsetDateTime::now_utc() + time::Duration::minutes(2);
    let next = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}Z",
        soon.year(),
        u8::from(soon.month()),
        soon.day(),
        soon.hour(),
        soon.minute(),
        soon.second()
    );
    let first = ca.crl(&["-crl_nextupdate", &next]);
    server.publish("shared.crl", &first);

    let a = Revocations::new(node_a, settings(Duration::from_secs(20)));
    let b = Revocations::new(node_b, settings(Duration::from_secs(20)));
    let status = |r: &Arc<Revocations>, who: &common::crl::Person| {
        let r = r.clone();
        let cert = pem_certificate(&who.cert);
        let anchors = vec![anchor.clone()];
        async move { r.encryption_status(&cert, anchors).await }
    };
    assert_eq!(status(&a, &jan).await, Status::Good);
    assert_eq!(server.hits(), 1);
    assert_eq!(
        b.crl(&server.url("shared.crl"))
            .await
            .expect("from the table"),
        Arc::new(first.clone())
    );
    assert_eq!(status(&b, &ida).await, Status::Good);
    assert_eq!(server.hits(), 1, "node B read node A's download");

    // Jan's key is compromised; the CA publishes a new CRL (a week long).
    ca.revoke(&jan, "keyCompromise");
    let second = ca.crl(&[]);
    server.publish("shared.crl", &second);
    // Until the refresh, the cached CRL is current and says nothing about Jan.
    assert_eq!(status(&a, &jan).await, Status::Good);
    a.refresh_round().await;
    assert_eq!(server.hits(), 2, "the refresh downloaded the CRL again");
    match status(&a, &jan).await {
        Status::Revoked(why) => assert!(why.contains("keyCompromise"), "{why}"),
        other => panic!("Jan is revoked, not {other:?}"),
    }
    assert_eq!(status(&a, &ida).await, Status::Good);
    // Node B's refresh finds the new CRL in the table and does not download it.
    b.refresh_round().await;
    assert_eq!(server.hits(), 2);
    assert!(matches!(status(&b, &jan).await, Status::Revoked(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crl_cache_is_shared_and_refreshed_on_sqlite() {
    let (store, dir) = common::sqlite_store().await;
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let other = Store::connect(&url, 2, Duration::from_secs(10))
        .await
        .expect("second node");
    shared_cache_suite(store.clone(), other.clone(), dir.path()).await;
    other.close().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crl_cache_is_shared_and_refreshed_on_postgres() {
    let db = common::postgres_store().await;
    let other = Store::connect(&db.url(), 2, Duration::from_secs(10))
        .await
        .expect("second node");
    let dir = tempfile::tempdir().expect("temp dir");
    shared_cache_suite(db.store.clone(), other.clone(), dir.path()).await;
    other.close().await;
    db.drop_database().await;
}

/// RFC 5280 §5.2: a CRL with a critical extension the checker does not implement is not
/// used at all — the status is unknown, not good; the same extension marked non-critical
/// is ignored and the CRL counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_with_an_unknown_critical_extension_is_not_used() {
    let (store, dir) = common::sqlite_store().await;
    let server = CrlServer::start(dir.path().join("www"));
    let critical = CrlCa::new(dir.path(), "critical", Some(server.url("critical.crl")));
    let plain = CrlCa::new(dir.path(), "noncritical", Some(server.url("plain.crl")));
    for (ca, flag) in [(&critical, "critical,"), (&plain, "")] {
        let mut cnf = std::fs::read_to_string(&ca.cnf).expect("ca.cnf");
        cnf.push_str(&format!(
            "\n[crl_ext]\n1.3.6.1.4.1.55555.1={flag}ASN1:NULL\n"
        ));
        std::fs::write(&ca.cnf, cnf).expect("ca.cnf");
    }
    let kay = critical.issue("kay@partner.example");
    let lou = plain.issue("lou@partner.example");
    server.publish("critical.crl", &critical.crl(&["-crlexts", "crl_ext"]));
    server.publish("plain.crl", &plain.crl(&["-crlexts", "crl_ext"]));
    let revocations = Revocations::new(store.clone(), settings(Duration::from_secs(20)));
    match revocations
        .encryption_status(
            &pem_certificate(&kay.cert),
            vec![pem_certificate(&critical.cert)],
        )
        .await
    {
        Status::Unknown(why) => assert!(why.contains("CriticalExtension"), "{why}"),
        other => panic!("a CRL with an unknown critical extension was used: {other:?}"),
    }
    assert_eq!(
        revocations
            .encryption_status(
                &pem_certificate(&lou.cert),
                vec![pem_certificate(&plain.cert)]
            )
            .await,
        Status::Good
    );
    store.close().await;
}

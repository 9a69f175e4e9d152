//! Revocation checks of partner certificates (issue 10 item 7), through the relay and
//! `smimegate smime verify`: partner CAs run by `openssl ca`, whose certificates name a
//! CRL distribution point on a local HTTP server that serves the CRLs
//! `openssl ca -gencrl` makes. A revoked partner is refused under encrypt-enforced
//! (5.7.1, naming the revocation), never harvested, and its signatures are `revoked`;
//! a status that cannot be learnt (unreachable, expired, badly signed CRL) is
//! `revocation-unknown`: used under soft-fail, refused (4.7.0) under hard-fail — never
//! "good".

use std::path::Path;

use super::common::crl::{CrlCa, CrlServer, Person};
use super::common::{self, run_ok};
use super::harness::{Client, Delivered, Gateway, free_port, mailbox};

const ALICE: &str = "alice@corp.example";

fn rand_id() -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).expect("random");
    hex::encode(b)
}

/// A message from `person` to Alice, signed by openssl as a mail client does
/// (multipart/signed; From/To/Subject outside the signed entity).
fn signed_by(dir: &Path, person: &Person, subject: &str) -> Vec<u8> {
    let id = rand_id();
    let entity = dir.join(format!("entity-{id}"));
    let signed = dir.join(format!("signed-{id}"));
    std::fs::write(
        &entity,
        format!(
            "Content-Type: text/plain\r\n\r\n{subject}: signed by {}\r\n",
            person.address
        ),
    )
    .expect("write");
    let (entity, signed) = (entity.display().to_string(), signed.display().to_string());
    let mut args = vec![
        "cms",
        "-sign",
        "-in",
        &entity,
        "-signer",
        &person.cert,
        "-inkey",
        &person.key,
        "-out",
        &signed,
        "-crlfeol",
    ];
    if let Some(carried) = &person.carried {
        args.extend_from_slice(&["-certfile", carried]);
    }
    run_ok("openssl", &args);
    let outer = format!(
        "From: {}\r\nTo: {ALICE}\r\nSubject: {subject}\r\nMessage-ID: <{id}@test>\r\n",
        person.address
    );
    [outer.into_bytes(), std::fs::read(&signed).expect("signed")].concat()
}

fn plain(from: &str, to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@test>\r\n\
         Content-Type: text/plain\r\n\r\nSecret for {to}.\r\n",
        rand_id()
    )
    .into_bytes()
}

fn stamp_of(delivered: &Delivered) -> String {
    delivered
        .text()
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-smimegate:"))
        .unwrap_or_else(|| panic!("no stamp: {}", delivered.text()))
        .to_string()
}

/// Sends `message` from the internet to Alice; returns the stamp it was delivered with.
fn inbound(gw: &Gateway, from: &str, message: &[u8]) -> String {
    let before = gw.internal.messages().len();
    let t = Client::connect(gw.inbound).send(from, &[ALICE], message);
    assert_eq!(
        t.data.as_ref().map(|d| d.0),
        Some(250),
        "{t:?}\n{}",
        gw.log()
    );
    let delivered = gw.internal.messages();
    assert_eq!(
        delivered.len(),
        before + 1,
        "delivered to the internal server"
    );
    stamp_of(delivered.last().expect("delivered"))
}

/// Alice → `to` from the internal network: the RCPT reply, and DATA's when accepted.
fn outbound(gw: &Gateway, to: &str) -> ((u16, String), Option<(u16, String)>) {
    let t = Client::internal(gw.submission).send(ALICE, &[to], &plain(ALICE, to, "secret"));
    (t.rcpts[0].clone(), t.data)
}

fn certificate_known(gw: &Gateway, partner: &str) -> bool {
    let explained = gw.cli(&["rule", "explain", ALICE, partner]);
    if explained.contains("valid certificate known: yes") {
        true
    } else {
        assert!(
            explained.contains("valid certificate known: no"),
            "{explained}"
        );
        false
    }
}

/// Sets `[revocation]` keys in the gateway's configuration (read at the next start).
fn configure(data: &Path, mode: &str) {
    let path = data.join("smimegate.toml");
    let text = std::fs::read_to_string(&path).expect("configuration");
    let text: Vec<String> = text
        .lines()
        .map(|l| match l {
            l if l.starts_with("mode = ") => format!("mode = \"{mode}\""),
            // A bound, not a timing: the local server answers at once, but the test
            // machine may be busy.
            l if l.starts_with("reply_wait_ms = ") => "reply_wait_ms = 20000".to_string(),
            l => l.to_string(),
        })
        .collect();
    assert!(text.iter().any(|l| *l == format!("mode = \"{mode}\"")));
    std::fs::write(&path, text.join("\n")).expect("configuration");
}

fn decrypts_for(gw: &Gateway, message: &[u8], person: &Person) -> String {
    let input = gw.data().join(format!("enc-{}.eml", rand_id()));
    std::fs::write(&input, message).expect("write");
    run_ok(
        "openssl",
        &[
            "cms",
            "-decrypt",
            "-in",
            &input.display().to_string(),
            "-recip",
            &person.cert,
            "-inkey",
            &person.key,
        ],
    )
}

#[test]
fn a_revoked_partner_is_refused_not_harvested_and_its_signatures_are_revoked() {
    let mut gw = Gateway::start(|d| {
        mailbox(d, ALICE);
        configure(d, "soft-fail");
    });
    let server = CrlServer::start(gw.data().join("www"));
    let ca = CrlCa::new(gw.data(), "partner", Some(server.url("partner.crl")));
    gw.cli(&["trust", "add", &ca.cert]);
    gw.add_rule(
        "outbound",
        "managed",
        "domain:partner.example",
        "encrypt-enforced",
    );
    let bob = ca.issue("bob@partner.example");
    let carol = ca.issue("carol@partner.example");
    let dave = ca.issue("dave@partner.example");

    // No CRL published yet (404): soft-fail. Bob's signature counts, the stamp says
    // the status is unknown, and his certificate is harvested.
    let stamp = inbound(&gw, &bob.address, &signed_by(gw.data(), &bob, "first"));
    assert_eq!(
        stamp,
        "X-Smimegate: not-encrypted; signature=revocation-unknown; signer=bob@partner.example",
        "{}",
        gw.log()
    );
    assert!(server.hits() >= 1, "the distribution point was asked");
    assert!(certificate_known(&gw, &bob.address));
    let log = gw.cli(&["log", "--address", &bob.address]);
    assert!(log.contains("revocation-unknown"), "{log}");

    // Bob's key is compromised: the CA revokes him (and Dave) and publishes its CRL.
    ca.revoke(&bob, "keyCompromise");
    ca.revoke(&dave, "superseded");
    server.publish("partner.crl", &ca.crl(&[]));
    // A restart forgets the failed download at once (instead of after its back-off).
    gw.kill();
    gw.serve();

    // Encrypt-enforced to Bob: his only certificate is revoked, and the refusal says so.
    let (rcpt, data) = outbound(&gw, &bob.address);
    assert_eq!(rcpt.0, 550, "{rcpt:?}");
    assert!(
        rcpt.1.contains("5.7.1")
            && rcpt.1.contains("bob@partner.example")
            && rcpt.1.contains("revoked")
            && rcpt.1.contains("keyCompromise"),
        "{rcpt:?}"
    );
    assert!(data.is_none());
    assert!(!certificate_known(&gw, &bob.address));
    let explained = gw.cli(&["rule", "explain", ALICE, &bob.address]);
    assert!(explained.contains("revoked"), "{explained}");

    // His signatures now verify as revoked.
    let stamp = inbound(&gw, &bob.address, &signed_by(gw.data(), &bob, "second"));
    assert_eq!(stamp, "X-Smimegate: not-encrypted; signature=revoked");

    // Dave, revoked before we ever heard of him: his signed mail is delivered, stamped
    // revoked, and his certificate is not harvested.
    let stamp = inbound(&gw, &dave.address, &signed_by(gw.data(), &dave, "hello"));
    assert_eq!(stamp, "X-Smimegate: not-encrypted; signature=revoked");
    assert!(!certificate_known(&gw, &dave.address));
    let log = gw.cli(&["log", "--address", &dave.address]);
    assert!(log.contains("revoked"), "{log}");
    assert!(!log.contains("harvested"), "{log}");
    let (rcpt, _) = outbound(&gw, &dave.address);
    assert_eq!(rcpt.0, 550, "{rcpt:?}");

    // Carol, on the same CRL but not revoked, is unaffected.
    let stamp = inbound(&gw, &carol.address, &signed_by(gw.data(), &carol, "hi"));
    assert_eq!(
        stamp,
        "X-Smimegate: not-encrypted; signature=valid; signer=carol@partner.example"
    );
    let (rcpt, data) = outbound(&gw, &carol.address);
    assert_eq!(rcpt.0, 250, "{rcpt:?}");
    assert_eq!(data.map(|d| d.0), Some(250));
    let out = gw.smarthost.messages().pop().expect("relayed to Carol");
    assert!(
        out.text().contains("application/pkcs7-mime"),
        "{}",
        out.text()
    );
    assert!(decrypts_for(&gw, &out.message, &carol).contains("Secret for carol@partner.example"));
    assert_eq!(
        gw.smarthost.messages().len(),
        1,
        "nothing went to Bob or Dave"
    );
}

#[test]
fn an_unreachable_crl_is_soft_fail_by_default_and_refused_for_now_under_hard_fail() {
    // Nothing listens on this port: every download is refused at once.
    let dead = format!("http://127.0.0.1:{}/gone.crl", free_port());
    let mut gw = Gateway::start(|d| {
        mailbox(d, ALICE);
        configure(d, "soft-fail");
    });
    let ca = CrlCa::new(gw.data(), "unreachable", Some(dead));
    gw.cli(&["trust", "add", &ca.cert]);
    gw.add_rule(
        "outbound",
        "managed",
        "domain:partner.example",
        "encrypt-enforced",
    );
    let erin = ca.issue("erin@partner.example");
    let frank = ca.issue("frank@partner.example");

    // Soft-fail: the signature counts (stamp and log say revocation-unknown), the
    // certificate is harvested, and mail to Erin flows, encrypted.
    let stamp = inbound(&gw, &erin.address, &signed_by(gw.data(), &erin, "hello"));
    assert_eq!(
        stamp,
        "X-Smimegate: not-encrypted; signature=revocation-unknown; signer=erin@partner.example"
    );
    assert!(certificate_known(&gw, &erin.address));
    let (rcpt, data) = outbound(&gw, &erin.address);
    assert_eq!(rcpt.0, 250, "{rcpt:?}");
    assert_eq!(data.map(|d| d.0), Some(250));
    let out = gw.smarthost.messages().pop().expect("relayed");
    assert!(decrypts_for(&gw, &out.message, &erin).contains("Secret for erin@partner.example"));
    let log = gw.cli(&["log", "--address", &erin.address]);
    assert!(log.contains("revocation-unknown"), "{log}");

    // Hard-fail: an unknown status is not valid. The signature is revocation-unknown
    // with no signer named, a new partner is not harvested, and encryption to Erin is
    // refused for now (4.7.0), never sent in clear instead.
    gw.kill();
    configure(gw.data(), "hard-fail");
    gw.serve();
    let stamp = inbound(&gw, &erin.address, &signed_by(gw.data(), &erin, "again"));
    assert_eq!(
        stamp,
        "X-Smimegate: not-encrypted; signature=revocation-unknown"
    );
    let stamp = inbound(&gw, &frank.address, &signed_by(gw.data(), &frank, "hello"));
    assert_eq!(
        stamp,
        "X-Smimegate: not-encrypted; signature=revocation-unknown"
    );
    let log = gw.cli(&["log", "--address", &frank.address]);
    assert!(!log.contains("harvested"), "{log}");
    let (rcpt, data) = outbound(&gw, &erin.address);
    assert_eq!(rcpt.0, 451, "{rcpt:?}");
    assert!(
        rcpt.1.contains("4.7.0") && rcpt.1.contains("revocation status"),
        "{rcpt:?}"
    );
    assert!(data.is_none());
    let (rcpt, _) = outbound(&gw, &frank.address);
    assert_eq!(
        rcpt.0, 550,
        "Frank's certificate was never harvested: {rcpt:?}"
    );
    assert_eq!(
        gw.smarthost.messages().len(),
        1,
        "only the soft-fail message"
    );
}

/// `smime verify --json` on `message`: (exit status, verdict).
fn cli_verify(gw: &Gateway, message: &[u8], extra: &[&str]) -> (bool, String, String) {
    let path = gw.data().join(format!("verify-{}.eml", rand_id()));
    std::fs::write(&path, message).expect("write");
    let path = path.display().to_string();
    let mut args = vec!["smime", "verify", "--json"];
    args.extend_from_slice(extra);
    args.push(&path);
    let out = common::smimegate(gw.data(), &args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json: serde_json::Value = stderr
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON verdict: {stderr}"));
    (
        out.status.success(),
        json["verdict"].as_str().unwrap_or_default().to_string(),
        stderr,
    )
}

#[test]
fn expired_and_badly_signed_crls_are_unknown_never_good() {
    let gw = Gateway::start(|d| configure(d, "hard-fail"));
    let server = CrlServer::start(gw.data().join("www"));
    let expired_ca = CrlCa::new(gw.data(), "expired", Some(server.url("expired.crl")));
    let forged_ca = CrlCa::new(gw.data(), "forged", Some(server.url("forged.crl")));
    let good_ca = CrlCa::new(gw.data(), "good", Some(server.url("good.crl")));
    let plain_ca = CrlCa::new(gw.data(), "nodp", None);
    for ca in [&expired_ca, &forged_ca, &good_ca, &plain_ca] {
        gw.cli(&["trust", "add", &ca.cert]);
    }
    let gina = expired_ca.issue("gina@partner.example");
    let hugo = forged_ca.issue("hugo@partner.example");
    let ida = good_ca.issue("ida@partner.example");
    let jan = good_ca.issue("jan@partner.example");
    let kim = plain_ca.issue("kim@partner.example");
    good_ca.revoke(&jan, "keyCompromise");

    // A CRL whose nextUpdate has passed.
    server.publish(
        "expired.crl",
        &expired_ca.crl(&[
            "-crl_lastupdate",
            "20200101000000Z",
            "-crl_nextupdate",
            "20200108000000Z",
        ]),
    );
    // A CRL whose signature does not verify: its last signature byte is changed.
    let mut forged = forged_ca.crl(&[]);
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    server.publish("forged.crl", &forged);
    server.publish("good.crl", &good_ca.crl(&[]));

    let (ok, verdict, err) = cli_verify(&gw, &signed_by(gw.data(), &gina, "x"), &[]);
    assert_eq!(verdict, "revocation-unknown", "{err}");
    assert!(!ok && err.contains("expired"), "{err}");
    let (ok, verdict, err) = cli_verify(&gw, &signed_by(gw.data(), &hugo, "x"), &[]);
    assert_eq!(verdict, "revocation-unknown", "{err}");
    assert!(!ok && err.contains("signature"), "{err}");
    let (ok, verdict, err) = cli_verify(&gw, &signed_by(gw.data(), &ida, "x"), &[]);
    assert_eq!((ok, verdict.as_str()), (true, "valid"), "{err}");
    let (ok, verdict, err) = cli_verify(&gw, &signed_by(gw.data(), &jan, "x"), &[]);
    assert_eq!((ok, verdict.as_str()), (false, "revoked"), "{err}");
    assert!(err.contains("keyCompromise"), "{err}");

    // A certificate without a distribution point is not checked — unless a CRL of its
    // CA is given, which then counts fully: an expired one is not ignored.
    let (ok, verdict, err) = cli_verify(&gw, &signed_by(gw.data(), &kim, "x"), &[]);
    assert_eq!((ok, verdict.as_str()), (true, "valid"), "{err}");
    let stale = gw.data().join("nodp-stale.crl");
    std::fs::write(
        &stale,
        plain_ca.crl(&[
            "-crl_lastupdate",
            "20200101000000Z",
            "-crl_nextupdate",
            "20200108000000Z",
        ]),
    )
    .expect("write");
    let stale = stale.display().to_string();
    let (ok, verdict, err) = cli_verify(&gw, &signed_by(gw.data(), &kim, "x"), &["--crl", &stale]);
    assert_eq!(
        (ok, verdict.as_str()),
        (false, "revocation-unknown"),
        "{err}"
    );

    // Under soft-fail the same expired CRL leaves the signer valid, the verdict saying
    // its status is unknown (exit 0).
    let text = std::fs::read_to_string(gw.data().join("smimegate.toml")).expect("config");
    std::fs::write(
        gw.data().join("smimegate.toml"),
        text.replace("mode = \"hard-fail\"", "mode = \"soft-fail\""),
    )
    .expect("config");
    let (ok, verdict, err) = cli_verify(&gw, &signed_by(gw.data(), &gina, "x"), &[]);
    assert_eq!(
        (ok, verdict.as_str()),
        (true, "revocation-unknown"),
        "{err}"
    );
    let (ok, verdict, _) = cli_verify(&gw, &signed_by(gw.data(), &hugo, "x"), &[]);
    assert_eq!((ok, verdict.as_str()), (true, "revocation-unknown"));
    let (ok, verdict, _) = cli_verify(&gw, &signed_by(gw.data(), &jan, "x"), &[]);
    assert_eq!((ok, verdict.as_str()), (false, "revoked"));
}

#[test]
fn a_revoked_intermediate_ca_revokes_the_partners_it_certified() {
    let mut gw = Gateway::start(|d| {
        mailbox(d, ALICE);
        configure(d, "soft-fail");
    });
    let server = CrlServer::start(gw.data().join("www"));
    // root (the trust anchor) → sub-CA (named in root.crl) → Leo (named in sub.crl).
    let root = CrlCa::new(gw.data(), "root", Some(server.url("root.crl")));
    let sub = root.subordinate(gw.data(), "sub", Some(server.url("sub.crl")));
    gw.cli(&["trust", "add", &root.cert]);
    gw.add_rule(
        "outbound",
        "managed",
        "domain:partner.example",
        "encrypt-enforced",
    );
    let leo = sub.issue("leo@partner.example");
    server.publish("sub.crl", &sub.crl(&[]));

    // The root's CRL is not published yet: the sub-CA's status is unknown, so Leo's
    // (soft-fail); his certificate is harvested, and the sub-CA his signature carried
    // is remembered for later checks.
    let stamp = inbound(&gw, &leo.address, &signed_by(gw.data(), &leo, "hello"));
    assert_eq!(
        stamp,
        "X-Smimegate: not-encrypted; signature=revocation-unknown; signer=leo@partner.example"
    );
    assert!(certificate_known(&gw, &leo.address));

    // The root revokes the sub-CA. Mail to Leo is refused: no message carries the
    // chain now, the remembered sub-CA certificate links him to the root's CRL.
    root.revoke_ca(&sub, "cACompromise");
    server.publish("root.crl", &root.crl(&[]));
    gw.kill();
    gw.serve();
    let (rcpt, data) = outbound(&gw, &leo.address);
    assert_eq!(rcpt.0, 550, "{rcpt:?}");
    assert!(
        rcpt.1.contains("5.7.1") && rcpt.1.contains("a CA certificate on its path is revoked"),
        "{rcpt:?}"
    );
    assert!(data.is_none());
    let stamp = inbound(&gw, &leo.address, &signed_by(gw.data(), &leo, "again"));
    assert_eq!(stamp, "X-Smimegate: not-encrypted; signature=revoked");
    assert!(gw.smarthost.messages().is_empty());
}

/// Our own mailbox certificates are checked against our database, not over HTTP (their
/// distribution point is this gateway's own URL): valid while active, `revoked` once
/// the mailbox is deactivated.
#[test]
fn our_own_certificates_are_checked_against_our_database() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let message = gw.data().join("from-alice.eml");
    std::fs::write(&message, plain(ALICE, "bob@partner.example", "ours")).expect("write");
    let signed = gw.cli(&[
        "smime",
        "sign",
        "--from",
        ALICE,
        &message.display().to_string(),
    ]);
    let (ok, verdict, err) = cli_verify(&gw, signed.as_bytes(), &[]);
    assert_eq!((ok, verdict.as_str()), (true, "valid"), "{err}");
    gw.cli(&["mailbox", "deactivate", ALICE]);
    let (ok, verdict, err) = cli_verify(&gw, signed.as_bytes(), &[]);
    assert_eq!((ok, verdict.as_str()), (false, "revoked"), "{err}");
    assert!(err.contains("revoked by this gateway's CA"), "{err}");
}

//! Mail flow and roles (issue 9): a 250 is true for every accepted recipient, no
//! recipient goes down another class's next hop, each listener does its own job, a
//! message is signed only for whom the sender is, bounces under enforcing rules are
//! never sent in clear, and every message carries a Received field.

use super::common;
use super::harness::{Client, Gateway, Partner, Sink, mailbox};

const ALICE: &str = "alice@corp.example";
const CEO: &str = "ceo@corp.example";
const BOB: &str = "bob@partner.example";

fn message(from: &str, to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@test>\r\n\
         Content-Type: text/plain\r\n\r\nHello.\r\n"
    )
    .into_bytes()
}

/// Which envelope recipients `sink` received messages for.
fn delivered_to(sink: &Sink) -> Vec<String> {
    let mut to: Vec<String> = sink
        .messages()
        .iter()
        .flat_map(|m| m.envelope_to.clone())
        .map(|e| e.trim_matches(['<', '>']).to_string())
        .collect();
    to.sort();
    to
}

#[test]
fn a_lost_next_hop_connection_loses_no_accepted_recipient() {
    let gw = Gateway::start(|d| {
        for m in ["a@corp.example", "c@corp.example", "d@corp.example"] {
            common::smimegate_ok(d, &["mailbox", "add", m]);
        }
    });
    let mut gw = gw;
    let mut client = Client::connect(gw.inbound);
    assert_eq!(client.command(&format!("MAIL FROM:<{BOB}>")).0, 250);
    assert_eq!(client.command("RCPT TO:<a@corp.example>").0, 250);
    // The internal server restarts: the connection that accepted a is gone.
    let (port, maildir) = (gw.internal.port, gw.internal.maildir.clone());
    gw.internal.stop();
    gw.internal = Sink::start(maildir, port);
    let c = client.command("RCPT TO:<c@corp.example>");
    let d = client.command("RCPT TO:<d@corp.example>");
    let mut accepted = vec!["a@corp.example".to_string()];
    for (reply, who) in [(&c, "c@corp.example"), (&d, "d@corp.example")] {
        if reply.0 == 250 {
            accepted.push(who.to_string());
        }
    }
    assert_eq!(client.command("DATA").0, 354);
    client.send_raw(b"Subject: after a restart\r\n\r\nhello\r\n.\r\n");
    let (code, text) = client.reply();
    if code == 250 {
        accepted.sort();
        assert_eq!(
            delivered_to(&gw.internal),
            accepted,
            "250 must be true for every recipient that got 250: {text}"
        );
    } else {
        assert_eq!(code / 100, 4, "{text}");
        assert!(delivered_to(&gw.internal).is_empty());
    }
}

#[test]
fn a_refused_first_recipient_sends_no_later_one_down_its_next_hop() {
    let gone = "gone@corp.example";
    let mut gw = Gateway::start(|d| {
        mailbox(d, ALICE);
        common::smimegate_ok(d, &["mailbox", "add", gone]);
    });
    // The internal server no longer knows one of our mailboxes.
    let (port, maildir) = (gw.internal.port, gw.internal.maildir.clone());
    gw.internal.stop();
    gw.internal = Sink::start_refusing(maildir, port, &[gone]);
    let mut client = Client::internal(gw.submission);
    assert_eq!(client.command(&format!("MAIL FROM:<{ALICE}>")).0, 250);
    let (code, text) = client.command(&format!("RCPT TO:<{gone}>"));
    assert_eq!(code, 550, "the internal server's verdict: {text}");
    assert_eq!(client.command(&format!("RCPT TO:<{BOB}>")).0, 250);
    assert_eq!(client.command("DATA").0, 354);
    client.send_raw(&super::harness::dot_stuff(&message(ALICE, BOB, "out")));
    assert_eq!(client.reply().0, 250);
    assert_eq!(delivered_to(&gw.smarthost), [BOB]);
    assert!(
        gw.internal.messages().is_empty(),
        "an outbound recipient went to the internal server"
    );
}

#[test]
fn each_listener_does_its_own_job() {
    let gw = Gateway::start(|d| {
        mailbox(d, ALICE);
        mailbox(d, CEO);
    });
    // The inbound listener takes mail for our domains only, even from inside.
    let t = Client::internal(gw.inbound).send(ALICE, &[BOB], &message(ALICE, BOB, "x"));
    assert_eq!(t.rcpts[0].0, 554, "{t:?}");
    assert!(t.rcpts[0].1.contains("5.7.1"), "{t:?}");
    // The submission listener takes mail from internal networks (or authenticated
    // submitters) only.
    let t = Client::connect(gw.submission).send(BOB, &[ALICE], &message(BOB, ALICE, "y"));
    let refused = if t.mail.0 == 250 {
        t.rcpts.first().map_or(0, |r| r.0)
    } else {
        t.mail.0
    };
    assert!(
        refused == 530 || refused == 554,
        "an internet client on submission: {t:?}"
    );
    assert!(gw.internal.messages().is_empty() && gw.smarthost.messages().is_empty());
    // On the inbound listener anyone can write any MAIL FROM: our own address there
    // is not "managed". A rule for managed senders must not apply.
    gw.add_rule("inbound", "managed", "anyone", "no-decrypt");
    let ceo_pem = gw.mailbox_pem(CEO);
    let plain = gw.data().join("for-ceo.eml");
    std::fs::write(&plain, message(ALICE, CEO, "spoofed")).expect("write");
    let sealed = common::run_ok(
        "openssl",
        &[
            "cms",
            "-encrypt",
            "-aes256",
            "-in",
            &plain.display().to_string(),
            &ceo_pem,
        ],
    );
    let t = Client::connect(gw.inbound).send(ALICE, &[CEO], sealed.as_bytes());
    assert_eq!(t.data.map(|d| d.0), Some(250));
    let text = gw.internal.messages().pop().expect("delivered").text();
    assert!(
        text.contains("X-Smimegate: decrypted"),
        "a spoofed managed sender changed the inbound rule: {text}"
    );
}

#[test]
fn a_message_is_signed_only_as_the_sender_it_comes_from() {
    let gw = Gateway::start(|d| {
        mailbox(d, ALICE);
        mailbox(d, CEO);
    });
    let mut client = Client::internal(gw.submission);
    // Envelope alice, header From the ceo: nobody's signature.
    let t = client.send(
        ALICE,
        &["carol@other.example"],
        &message(CEO, "carol@other.example", "spoof"),
    );
    assert_eq!(t.data.as_ref().map(|d| d.0), Some(250), "{t:?}");
    let text = gw.smarthost.messages().pop().expect("delivered").text();
    assert!(
        !text.contains("multipart/signed"),
        "signed although the header From is not the sender: {text}"
    );
    let log = gw.cli(&["log", "--limit", "1"]);
    assert!(log.contains("not signed"), "the log says why: {log}");
    // Envelope and header From the same mailbox: signed by it.
    let t = client.send(
        CEO,
        &["carol@other.example"],
        &message(CEO, "carol@other.example", "real"),
    );
    assert_eq!(t.data.map(|d| d.0), Some(250));
    let delivered = gw.smarthost.messages().pop().expect("delivered");
    let content = super::harness::openssl_verify(gw.data(), &delivered, &gw.ca_pem(CEO));
    assert!(String::from_utf8_lossy(&content).contains("Hello."));
}

#[test]
fn bounces_to_a_partner_under_an_enforcing_rule_are_never_sent_in_clear() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    gw.add_rule(
        "outbound",
        "anyone",
        "domain:partner.example",
        "encrypt-enforced",
    );
    let mut client = Client::internal(gw.submission);
    // No certificate for bob yet: a bounce to him is refused at RCPT.
    let bounce = b"From: MAILER-DAEMON@corp.example\r\nTo: bob@partner.example\r\nSubject: Undelivered Mail\r\n\r\nYour message to alice could not be delivered. It said: the secret.\r\n";
    let t = client.send("", &[BOB], bounce);
    assert_eq!(t.rcpts[0].0, 550, "{t:?}");
    assert!(t.rcpts[0].1.contains("5.7.1"), "{t:?}");
    // With his certificate known, it leaves encrypted (unsigned: <> has no key).
    let bob = Partner::new(gw.data(), BOB);
    gw.introduce(&bob, ALICE);
    let t = client.send("", &[BOB], bounce);
    assert_eq!(t.data.as_ref().map(|d| d.0), Some(250), "{t:?}");
    let out = gw.smarthost.messages().pop().expect("delivered");
    assert!(!out.text().contains("the secret"), "{}", out.text());
    let inner = super::harness::openssl_decrypt(gw.data(), &out.message, &bob);
    assert!(String::from_utf8_lossy(&inner).contains("the secret"));
}

#[test]
fn every_message_gets_a_received_field_and_loops_end() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let t = Client::connect(gw.inbound).send(BOB, &[ALICE], &message(BOB, ALICE, "in"));
    assert_eq!(t.data.map(|d| d.0), Some(250));
    let text = gw.internal.messages().pop().expect("delivered").text();
    let received = text
        .lines()
        .find(|l| l.starts_with("Received: "))
        .unwrap_or_else(|| panic!("no Received field: {text}"));
    assert!(
        received.contains("from client.test") && received.contains("127.0.0.2"),
        "{received}"
    );
    let t = Client::internal(gw.submission).send(ALICE, &[BOB], &message(ALICE, BOB, "out"));
    assert_eq!(t.data.map(|d| d.0), Some(250));
    let text = gw.smarthost.messages().pop().expect("delivered").text();
    assert!(
        text.starts_with("Received: ") || text.contains("\r\nReceived: "),
        "{text}"
    );
    // A message that has been through too many hops is a loop (RFC 5321 §6.3).
    let mut looping = String::new();
    for i in 0..60 {
        looping.push_str(&format!(
            "Received: from hop{i}.example by hop{}.example; Mon, 30 Nov 2026 20:00:00 +0000\r\n",
            i + 1
        ));
    }
    looping.push_str(&String::from_utf8_lossy(&message(BOB, ALICE, "loop")));
    let t = Client::connect(gw.inbound).send(BOB, &[ALICE], looping.as_bytes());
    let (code, text) = t.data.expect("data");
    assert_eq!(code, 554, "{text}");
    assert!(text.contains("5.4.6"), "{text}");
}

/// The logged rows (newest first) once `n` are there (the log writer commits in
/// groups, shortly after the reply).
fn logged(gw: &Gateway, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..50 {
        let page: serde_json::Value =
            serde_json::from_str(&gw.cli(&["log", "--json"])).expect("log JSON");
        let rows = page["rows"].as_array().cloned().unwrap_or_default();
        if rows.len() >= n {
            return rows;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("fewer than {n} rows in the message log");
}

#[test]
fn the_log_keeps_the_decoded_subject_and_none_when_subjects_are_off() {
    let mut gw = Gateway::start(|d| mailbox(d, ALICE));
    let send = |gw: &Gateway, subject: &str| {
        let mut client = Client::internal(gw.submission);
        let t = client.send(ALICE, &[BOB], &message(ALICE, BOB, subject));
        assert_eq!(t.data.as_ref().map(|d| d.0), Some(250), "{t:?}");
    };
    send(&gw, "=?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=");
    let rows = logged(&gw, 1);
    assert_eq!(rows[0]["subject"], "Grüße aus Köln", "{rows:?}");
    assert_eq!(rows[0]["crypto"], serde_json::json!(["signed"]), "{rows:?}");

    gw.kill();
    let config = gw.data().join("smimegate.toml");
    let text = std::fs::read_to_string(&config).expect("configuration");
    assert!(
        text.contains("subjects = true"),
        "the template names the setting"
    );
    std::fs::write(&config, text.replace("subjects = true", "subjects = false")).expect("write");
    gw.serve();
    send(&gw, "=?ISO-8859-1?Q?vertraulich:_Gehaltsliste?=");
    let rows = logged(&gw, 2);
    assert_eq!(rows[0]["subject"], serde_json::Value::Null, "{rows:?}");
    // The CSV's subject column (the 7th) is empty too (the test's Message-ID repeats
    // the subject, so only the column says it).
    let csv = gw.cli(&["log", "--csv"]);
    let newest = csv.lines().nth(1).expect("a row");
    assert_eq!(newest.split(',').nth(6), Some(""), "{csv}");
}

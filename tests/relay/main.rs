//! The relay over real SMTP on loopback: `smimegate serve` between a plain client and
//! `smimegate sink`, with what reaches the sink checked by `openssl cms`.

mod backup;
#[path = "../common/mod.rs"]
mod common;
mod flow;
mod harness;
mod identities;
mod inbound_trust;
mod interop;
mod lifecycle;
mod memory;
mod metrics;
mod nodes;
mod postfix;
mod protocol;
mod revocation;
mod tables;

use harness::{Client, Gateway, Partner, mailbox, openssl_decrypt, openssl_verify};

const ALICE: &str = "alice@corp.example";

fn message(from: &str, to: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@test>\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

#[test]
fn outbound_default_signs_and_an_8bit_body_still_verifies_after_relaying() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let mut client = Client::internal(gw.submission);
    assert!(client.ehlo.contains("PIPELINING") && client.ehlo.contains("8BITMIME"));
    let t = client.send(
        ALICE,
        &["bob@partner.example"],
        &message(
            ALICE,
            "bob@partner.example",
            "hello",
            "Grüße aus Köln — 8 bit",
        ),
    );
    assert_eq!(t.mail.0, 250, "{t:?}");
    assert_eq!(t.data.as_ref().map(|d| d.0), Some(250), "{t:?}");
    let delivered = gw.smarthost.messages();
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].text().contains("multipart/signed"));
    let content = openssl_verify(gw.data(), &delivered[0], &gw.ca_pem(ALICE));
    let content = String::from_utf8_lossy(&content);
    assert!(content.contains("quoted-printable"), "{content}");
    assert!(content.contains("Gr=C3=BC=C3=9Fe"), "{content}");
    let log = gw.cli(&["log", "--direction", "outbound"]);
    assert!(log.contains("relayed") && log.contains("signed"), "{log}");
}

#[test]
fn a_sender_without_a_certificate_goes_out_unsigned_under_the_default() {
    let gw = Gateway::start(|d| {
        common::smimegate_ok(d, &["mailbox", "add", "noca@corp.example"]);
    });
    let mut client = Client::internal(gw.submission);
    let t = client.send(
        "noca@corp.example",
        &["bob@partner.example"],
        &message("noca@corp.example", "bob@partner.example", "plain", "text"),
    );
    assert_eq!(t.data.map(|d| d.0), Some(250));
    let delivered = gw.smarthost.messages();
    assert!(!delivered[0].text().contains("multipart/signed"));
    let log = gw.cli(&["log"]);
    assert!(log.contains("no active certificate"), "{log}");
    // Under encrypt-enforced the same sender cannot send at all.
    gw.add_rule("outbound", "anyone", "anyone", "encrypt-enforced");
    let t = client.send(
        "noca@corp.example",
        &["bob@partner.example"],
        &message(
            "noca@corp.example",
            "bob@partner.example",
            "enforced",
            "text",
        ),
    );
    assert_eq!(t.rcpts[0].0, 550, "{t:?}");
    assert!(
        t.rcpts[0].1.contains("5.7.1") && t.rcpts[0].1.contains("has no active S/MIME certificate"),
        "{t:?}"
    );
    assert_eq!(gw.smarthost.messages().len(), 1, "nothing more was relayed");
}

#[test]
fn encrypt_enforced_refuses_until_the_partner_certificate_is_harvested() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let bob = Partner::new(gw.data(), "bob@partner.example");
    gw.cli(&["trust", "add", &bob.ca]);
    gw.add_rule(
        "outbound",
        "managed",
        "domain:partner.example",
        "encrypt-enforced",
    );
    let to_bob = message(ALICE, &bob.address, "secret", "Only for Bob.");

    // No certificate known: refused at RCPT, naming the recipient.
    let mut client = Client::internal(gw.submission);
    let t = client.send(ALICE, &[&bob.address], &to_bob);
    assert_eq!(t.rcpts[0].0, 550, "{t:?}");
    assert!(
        t.rcpts[0].1.contains("5.7.1") && t.rcpts[0].1.contains(&bob.address),
        "{t:?}"
    );
    assert!(gw.smarthost.messages().is_empty());

    // A forged (tampered) signed message harvests nothing.
    let signed = bob.sign(
        gw.data(),
        &String::from_utf8_lossy(&message(&bob.address, ALICE, "forged", "Hello Alice")),
    );
    let tampered = String::from_utf8_lossy(&signed).replace("Hello Alice", "Hello Alicf");
    let mut inbound = Client::connect(gw.inbound);
    let t = inbound.send(&bob.address, &[ALICE], tampered.as_bytes());
    assert_eq!(t.data.map(|d| d.0), Some(250));
    let delivered = gw.internal.messages();
    assert!(
        delivered[0]
            .text()
            .contains("X-Smimegate: not-encrypted; signature=bad-signature"),
        "{}",
        delivered[0].text()
    );
    let t = client.send(ALICE, &[&bob.address], &to_bob);
    assert_eq!(
        t.rcpts[0].0, 550,
        "a forged signature must not enable encryption"
    );

    // A validly signed message from Bob: delivered stamped, certificate harvested.
    let t = inbound.send(&bob.address, &[ALICE], &signed);
    assert_eq!(t.data.map(|d| d.0), Some(250));
    let delivered = gw.internal.messages();
    let stamped = delivered[1].text();
    assert!(
        stamped.contains("X-Smimegate: not-encrypted; signature=valid; signer=bob@partner.example"),
        "{stamped}"
    );
    // Now the same outbound message is accepted and encrypted to Bob.
    let t = client.send(ALICE, &[&bob.address], &to_bob);
    assert_eq!(t.rcpts[0].0, 250, "{t:?}");
    assert_eq!(t.data.map(|d| d.0), Some(250));
    let delivered = gw.smarthost.messages();
    let out = &delivered[0];
    assert!(
        out.text().contains("application/pkcs7-mime"),
        "{}",
        out.text()
    );
    assert!(!out.text().contains("Only for Bob"));
    let inner = openssl_decrypt(gw.data(), &out.message, &bob);
    // Signed by Alice inside.
    let inner_path = gw.data().join("inner.eml");
    std::fs::write(&inner_path, &inner).expect("write");
    let content = common::run_ok(
        "openssl",
        &[
            "cms",
            "-verify",
            "-in",
            &inner_path.display().to_string(),
            "-CAfile",
            &gw.ca_pem(ALICE),
            "-purpose",
            "smimesign",
        ],
    );
    assert!(content.contains("Only for Bob."), "{content}");
    let log = gw.cli(&["log", "--address", &bob.address]);
    assert!(log.contains("harvested"), "{log}");
    assert!(log.contains("encrypted"), "{log}");
}

#[test]
fn inbound_mail_encrypted_to_a_mailbox_is_decrypted_and_stamped() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let alice_pem = gw.mailbox_pem(ALICE);
    let plain = gw.data().join("plain.eml");
    std::fs::write(
        &plain,
        message("bob@partner.example", ALICE, "for-alice", "Decrypt me."),
    )
    .expect("write");
    let encrypted = gw.data().join("enc.eml");
    common::run_ok(
        "openssl",
        &[
            "cms",
            "-encrypt",
            "-aes256",
            "-in",
            &plain.display().to_string(),
            "-out",
            &encrypted.display().to_string(),
            &alice_pem,
        ],
    );
    let forged_stamp = [
        b"X-Smimegate: decrypted; signature=valid; signer=ceo@corp.example\r\n".to_vec(),
        std::fs::read(&encrypted).expect("read"),
    ]
    .concat();
    let mut client = Client::connect(gw.inbound);
    let t = client.send("bob@partner.example", &[ALICE], &forged_stamp);
    assert_eq!(t.data.map(|d| d.0), Some(250), "{}", gw.log());
    let text = gw.internal.messages()[0].text();
    assert!(text.contains("Decrypt me."), "{text}");
    assert!(
        text.contains("X-Smimegate: decrypted; signature=none"),
        "{text}"
    );
    assert!(
        !text.contains("ceo@corp.example"),
        "an outside stamp must be removed: {text}"
    );
}

#[test]
fn the_inbound_table_rejects_with_its_reasons() {
    let gw = Gateway::start(|d| {
        mailbox(d, ALICE);
        mailbox(d, "vault@corp.example");
        mailbox(d, "strict@corp.example");
    });
    gw.add_rule(
        "inbound",
        "anyone",
        "vault@corp.example",
        "decrypt-enforced",
    );
    gw.add_rule("inbound", "anyone", "strict@corp.example", "decrypt-always");
    // Encrypted to a key the gateway does not hold.
    let stranger = Partner::new(gw.data(), "stranger@elsewhere.example");
    let plain = gw.data().join("p.eml");
    std::fs::write(
        &plain,
        message(
            "x@partner.example",
            "strict@corp.example",
            "undecryptable",
            "?",
        ),
    )
    .expect("write");
    let foreign = gw.data().join("foreign.eml");
    common::run_ok(
        "openssl",
        &[
            "cms",
            "-encrypt",
            "-aes128",
            "-in",
            &plain.display().to_string(),
            "-out",
            &foreign.display().to_string(),
            &stranger.cert,
        ],
    );
    let foreign = std::fs::read(&foreign).expect("read");

    let mut client = Client::connect(gw.inbound);
    let t = client.send(
        "x@partner.example",
        &["vault@corp.example"],
        &message(
            "x@partner.example",
            "vault@corp.example",
            "plain",
            "not encrypted",
        ),
    );
    let (code, text) = t.data.expect("data");
    assert_eq!(code, 550, "{text}");
    assert!(
        text.contains("5.7.1") && text.contains("only encrypted mail"),
        "{text}"
    );

    let t = client.send("x@partner.example", &["strict@corp.example"], &foreign);
    let (code, text) = t.data.expect("data");
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("5.7.5"), "{text}");
    // decrypt-always accepts unencrypted mail.
    let t = client.send(
        "x@partner.example",
        &["strict@corp.example"],
        &message(
            "x@partner.example",
            "strict@corp.example",
            "ok",
            "plain is fine",
        ),
    );
    assert_eq!(t.data.map(|d| d.0), Some(250));
    // decrypt-optional (the default) delivers what it cannot decrypt as it is.
    let t = client.send("x@partner.example", &[ALICE], &foreign);
    assert_eq!(t.data.map(|d| d.0), Some(250));
    let delivered = gw.internal.messages();
    assert_eq!(delivered.len(), 2);
    assert!(
        delivered[1]
            .text()
            .contains("X-Smimegate: encrypted; signature=none"),
        "{}",
        delivered[1].text()
    );
    assert!(
        delivered[1].text().contains("application/pkcs7-mime")
            || delivered[1].text().contains("application/x-pkcs7-mime")
    );
    // Unknown mailboxes of a managed domain are refused at RCPT.
    let t = client.send(
        "x@partner.example",
        &["nobody@corp.example"],
        b"Subject: x\r\n\r\nx\r\n",
    );
    assert_eq!(t.rcpts[0].0, 550);
    assert!(t.rcpts[0].1.contains("5.1.1"));
    let log = gw.cli(&["log", "--status", "rejected"]);
    assert!(
        log.contains("vault@corp.example") && log.contains("strict@corp.example"),
        "{log}"
    );
}

#[test]
fn bcc_recipients_get_their_own_encrypted_copy() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let bob = Partner::new(gw.data(), "bob@partner.example");
    let carol = Partner::new(gw.data(), "carol@partner.example");
    for p in [&bob, &carol] {
        gw.introduce(p, ALICE);
    }
    gw.add_rule(
        "outbound",
        "anyone",
        "domain:partner.example",
        "encrypt-optional",
    );
    let mut client = Client::internal(gw.submission);
    // Carol is in the envelope only: a Bcc.
    let t = client.send(
        ALICE,
        &[&bob.address, &carol.address],
        &message(ALICE, &bob.address, "bcc", "To Bob, Bcc Carol."),
    );
    assert_eq!(t.data.map(|d| d.0), Some(250), "{}", gw.log());
    let delivered = gw.smarthost.messages();
    assert_eq!(delivered.len(), 2, "one copy for To/Cc, one for the Bcc");
    let for_bob = delivered
        .iter()
        .find(|d| d.envelope_to.iter().any(|e| e.contains("bob")))
        .expect("bob's copy");
    let for_carol = delivered
        .iter()
        .find(|d| d.envelope_to.iter().any(|e| e.contains("carol")))
        .expect("carol's copy");
    assert_eq!(for_bob.envelope_to.len(), 1);
    assert!(
        String::from_utf8_lossy(&openssl_decrypt(gw.data(), &for_bob.message, &bob))
            .contains("To Bob")
    );
    assert!(
        String::from_utf8_lossy(&openssl_decrypt(gw.data(), &for_carol.message, &carol))
            .contains("To Bob")
    );
    // Bob's copy names no key of Carol's.
    let input = gw.data().join("bob-copy.eml");
    std::fs::write(&input, &for_bob.message).expect("write");
    let (ok, _, _) = common::run(
        "openssl",
        &[
            "cms",
            "-decrypt",
            "-in",
            &input.display().to_string(),
            "-recip",
            &carol.cert,
            "-inkey",
            &carol.key,
        ],
    );
    assert!(!ok, "Carol can read Bob's copy: the Bcc was revealed");
}

#[test]
fn recipients_with_another_treatment_come_back_in_their_own_transaction() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    gw.add_rule("outbound", "anyone", "domain:plain.example", "none");
    let mut client = Client::internal(gw.submission);
    let t = client.send(
        ALICE,
        &["bob@partner.example", "dave@plain.example", ALICE],
        &message(ALICE, "bob@partner.example", "mixed", "x"),
    );
    assert_eq!(t.rcpts[0].0, 250);
    assert_eq!(t.rcpts[1].0, 452, "{t:?}");
    assert!(t.rcpts[1].1.contains("4.5.3"));
    assert_eq!(
        t.rcpts[2].0, 452,
        "an inbound recipient in an outbound transaction"
    );
    assert_eq!(t.data.map(|d| d.0), Some(250));
    let t = client.send(
        ALICE,
        &["dave@plain.example"],
        &message(ALICE, "dave@plain.example", "later", "x"),
    );
    assert_eq!(t.data.map(|d| d.0), Some(250));
    let delivered = gw.smarthost.messages();
    assert!(delivered[0].text().contains("multipart/signed"));
    assert!(!delivered[1].text().contains("multipart/signed"));
}

#[test]
fn a_dead_next_hop_defers_and_the_message_goes_through_once_it_is_back() {
    let mut gw = Gateway::start(|d| mailbox(d, ALICE));
    let port = gw.smarthost.port;
    gw.smarthost.stop();
    let mut client = Client::internal(gw.submission);
    let msg = message(ALICE, "bob@partner.example", "retry", "Deliver me later.");
    let t = client.send(ALICE, &["bob@partner.example"], &msg);
    assert_eq!(t.rcpts[0].0, 451, "{t:?}");
    assert!(t.data.is_none());
    gw.smarthost = harness::Sink::start(gw.smarthost.maildir.clone(), port);
    let t = client.send(ALICE, &["bob@partner.example"], &msg);
    assert_eq!(t.data.map(|d| d.0), Some(250));
    let delivered = gw.smarthost.messages();
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].text().contains("Subject: retry"));
    let log = gw.cli(&["log", "--status", "deferred"]);
    assert!(log.contains("4.4.1"), "{log}");
}

#[test]
fn no_open_relay_from_outside_the_internal_networks() {
    // The harness's internet client (127.0.0.2) is outside 127.0.0.1/32.
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let mut client = Client::connect(gw.inbound);
    let t = client.send(
        "spammer@evil.example",
        &["victim@elsewhere.example"],
        b"Subject: spam\r\n\r\nspam\r\n",
    );
    assert_eq!(t.rcpts[0].0, 554, "{t:?}");
    assert!(t.rcpts[0].1.contains("relaying denied"));
    // Inbound mail to a managed mailbox is still accepted.
    let t = client.send(
        "friend@partner.example",
        &[ALICE],
        &message("friend@partner.example", ALICE, "hi", "x"),
    );
    assert_eq!(t.data.map(|d| d.0), Some(250));
    gw.cli(&["network", "allow", "127.0.0.2/32"]);
    let mut client = Client::connect(gw.submission);
    let t = client.send(
        ALICE,
        &["bob@partner.example"],
        &message(ALICE, "bob@partner.example", "now", "allowed"),
    );
    assert_eq!(
        t.rcpts[0].0, 250,
        "a network added at run time counts at once"
    );
}

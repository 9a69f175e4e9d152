//! Inbound trust through the relay (issue 8): what openssl makes the way partners'
//! clients do (signed, co-signed, signed-then-encrypted with LF lines, triple wrapped,
//! encrypted-then-signed, forged) gets a stamp that tells the truth about every layer;
//! anchors vouch only for their domains; decryption failures give no padding oracle;
//! the gateway's own failures are 4xx, never a verdict about the sender.

use std::path::Path;

use super::common::{self, run_ok};
use super::harness::{Client, Delivered, Gateway, Partner, mailbox, openssl_verify};

const ALICE: &str = "alice@corp.example";
const BOB: &str = "bob@partner.example";

const ENTITY: &str = "Content-Type: text/plain\r\n\r\nPlease pay invoice 4711 to account 1234.\r\n";

fn headers(from: &str) -> String {
    format!(
        "From: {from}\r\nTo: {ALICE}\r\nSubject: invoice\r\nMessage-ID: <{}@test>\r\n",
        rand_id()
    )
}

fn rand_id() -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).expect("random");
    hex::encode(b)
}

/// `openssl cms -in (a file holding `input`) ARGS`; returns what it wrote.
fn cms(dir: &Path, input: &[u8], args: &[&str]) -> Vec<u8> {
    let id = rand_id();
    let inp = dir.join(format!("in-{id}"));
    let out = dir.join(format!("out-{id}"));
    std::fs::write(&inp, input).expect("write");
    let (inp_s, out_s) = (inp.display().to_string(), out.display().to_string());
    // Recipient certificates are positional: the options come first.
    let mut all = vec!["cms", "-in", &inp_s, "-out", &out_s];
    all.extend_from_slice(args);
    run_ok("openssl", &all);
    std::fs::read(&out).expect("read")
}

fn sign(dir: &Path, signers: &[&Partner], input: &[u8], extra: &[&str]) -> Vec<u8> {
    let mut args = vec!["-sign"];
    for s in signers {
        args.extend_from_slice(&["-signer", &s.cert, "-inkey", &s.key]);
    }
    args.extend_from_slice(extra);
    cms(dir, input, &args)
}

fn send(gw: &Gateway, from: &str, message: &[u8]) -> (u16, String) {
    Client::connect(gw.inbound)
        .send(from, &[ALICE], message)
        .data
        .expect("a recipient was accepted")
}

fn stamp_of(delivered: &Delivered) -> String {
    let text = delivered.text();
    let stamps: Vec<&str> = text
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("x-smimegate"))
        .collect();
    assert_eq!(stamps.len(), 1, "exactly our stamp: {text}");
    stamps[0].to_string()
}

fn last_stamp(gw: &Gateway) -> String {
    stamp_of(gw.internal.messages().last().expect("delivered"))
}

fn boundary_of(message: &str) -> String {
    let at = message.find("boundary=\"").expect("boundary") + 10;
    message[at..].split('"').next().expect("value").to_string()
}

#[test]
fn every_layer_and_every_signer_is_judged_through_the_relay() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let dir = gw.data().to_path_buf();
    let bob = Partner::new(&dir, BOB);
    let carol = bob.certify("carol@partner.example");
    gw.cli(&["trust", "add", &bob.ca, "--domain", "partner.example"]);
    let alice_pem = gw.mailbox_pem(ALICE);

    // Plainly signed: valid, and the certificate is harvested.
    let signed = sign(&dir, &[&bob], ENTITY.as_bytes(), &["-crlfeol"]);
    let genuine = [headers(BOB).into_bytes(), signed.clone()].concat();
    assert_eq!(send(&gw, BOB, &genuine).0, 250, "{}", gw.log());
    assert!(
        last_stamp(&gw).contains("not-encrypted; signature=valid; signer=bob@partner.example"),
        "{}",
        last_stamp(&gw)
    );

    // The boundary confusion attack: malformed, never "valid".
    let text = String::from_utf8(genuine.clone()).expect("ascii");
    let real = boundary_of(&text);
    let prefix = &real[..real.len() / 2];
    let signature_part = text
        .split(&format!("--{real}\r\n"))
        .nth(2)
        .and_then(|p| p.split(&format!("\r\n--{real}--")).next())
        .expect("signature part");
    let forged = text.replace(
        &format!("boundary=\"{real}\""),
        &format!("boundary=\"{prefix}\""),
    ) + &format!(
        "\r\n--{prefix}\r\nContent-Type: text/plain\r\n\r\nPay account 6666.\r\n--{prefix}\r\n\
             {signature_part}\r\n--{prefix}--\r\n"
    );
    assert_eq!(send(&gw, BOB, forged.as_bytes()).0, 250);
    let stamp = last_stamp(&gw);
    assert!(stamp.contains("signature=malformed"), "{stamp}");
    assert!(!stamp.contains("signer="), "{stamp}");

    // No From: the signature is fine, the binding is not.
    let no_from = [
        format!("To: {ALICE}\r\nSubject: who?\r\n").into_bytes(),
        signed.clone(),
    ]
    .concat();
    assert_eq!(send(&gw, BOB, &no_from).0, 250);
    assert!(
        last_stamp(&gw).contains("signature=no-from"),
        "{}",
        last_stamp(&gw)
    );

    // Co-signed by bob and carol, From bob: valid, each signer listed.
    let cosigned = [
        headers(BOB).into_bytes(),
        sign(&dir, &[&bob, &carol], ENTITY.as_bytes(), &["-crlfeol"]),
    ]
    .concat();
    assert_eq!(send(&gw, BOB, &cosigned).0, 250);
    let stamp = last_stamp(&gw);
    assert!(
        stamp.contains("signature=valid; signer=bob@partner.example")
            && stamp.contains("bob@partner.example valid")
            && stamp.contains("carol@partner.example valid"),
        "{stamp}"
    );

    // Signed, then encrypted to alice, with the LF line endings openssl writes by
    // default kept inside the encryption (-binary).
    let inner = sign(&dir, &[&bob], ENTITY.replace("\r\n", "\n").as_bytes(), &[]);
    assert!(
        inner.windows(2).any(|w| w[0] != b'\r' && w[1] == b'\n'),
        "bare LF lines"
    );
    let sealed = cms(
        &dir,
        &inner,
        &["-encrypt", "-binary", "-aes256", &alice_pem],
    );
    let message = [headers(BOB).into_bytes(), sealed].concat();
    assert_eq!(send(&gw, BOB, &message).0, 250, "{}", gw.log());
    let delivered = gw.internal.messages().pop().expect("delivered");
    let stamp = stamp_of(&delivered);
    assert!(
        stamp.contains("decrypted; signature=valid; signer=bob@partner.example"),
        "{stamp}"
    );
    // The inner signature is delivered for the client to check too.
    let content = openssl_verify(&dir, &delivered, &bob.ca);
    assert!(String::from_utf8_lossy(&content).contains("invoice 4711"));

    // Triple wrapped: signed, encrypted to alice, signed again.
    let inner = sign(&dir, &[&bob], ENTITY.as_bytes(), &["-crlfeol"]);
    let sealed = cms(&dir, &inner, &["-encrypt", "-aes256", &alice_pem]);
    let outer = sign(&dir, &[&bob], &sealed, &["-crlfeol"]);
    let message = [headers(BOB).into_bytes(), outer].concat();
    assert_eq!(send(&gw, BOB, &message).0, 250, "{}", gw.log());
    let delivered = gw.internal.messages().pop().expect("delivered");
    let stamp = stamp_of(&delivered);
    assert!(
        stamp.contains("decrypted; signature=valid; signer=bob@partner.example")
            && stamp.contains("layers=signed(valid) decrypted(aes256-cbc) signed(valid)"),
        "{stamp}"
    );
    openssl_verify(&dir, &delivered, &bob.ca);

    // Encrypted, then signed (opaque): the outer signature is judged, the content
    // decrypted.
    let sealed = cms(
        &dir,
        ENTITY.as_bytes(),
        &["-encrypt", "-aes128", &alice_pem],
    );
    let outer = sign(&dir, &[&bob], &sealed, &["-nodetach"]);
    let message = [headers(BOB).into_bytes(), outer].concat();
    assert_eq!(send(&gw, BOB, &message).0, 250, "{}", gw.log());
    let delivered = gw.internal.messages().pop().expect("delivered");
    let stamp = stamp_of(&delivered);
    assert!(
        stamp.contains("decrypted; signature=valid")
            && stamp.contains("layers=signed(valid) decrypted(aes128-cbc)"),
        "{stamp}"
    );
    assert!(
        delivered.text().contains("invoice 4711"),
        "{}",
        delivered.text()
    );

    // A stamp inside the encrypted content is the sender's: removed after decryption.
    let forged_inside =
        format!("X-Smimegate : decrypted; signature=valid; signer=ceo@corp.example\r\n{ENTITY}");
    let sealed = cms(
        &dir,
        forged_inside.as_bytes(),
        &["-encrypt", "-aes256", &alice_pem],
    );
    let message = [headers(BOB).into_bytes(), sealed].concat();
    assert_eq!(send(&gw, BOB, &message).0, 250);
    let delivered = gw.internal.messages().pop().expect("delivered");
    assert!(
        !delivered.text().contains("ceo@corp.example"),
        "{}",
        delivered.text()
    );
    assert!(stamp_of(&delivered).contains("decrypted; signature=none"));
}

#[test]
fn trust_anchors_vouch_only_for_their_domains() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let dir = gw.data().to_path_buf();
    let bob = Partner::new(&dir, BOB);
    let out = gw.cli(&["trust", "add", &bob.ca, "--domain", "partner.example"]);
    assert!(out.contains("for partner.example"), "{out}");
    // One of ours is never a partner's to vouch for.
    let refused = common::smimegate(
        gw.data(),
        &["trust", "add", &bob.ca, "--domain", "corp.example"],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("corp.example is a managed domain"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let listed = gw.cli(&["trust", "list"]);
    assert!(listed.contains("vouches for partner.example"), "{listed}");

    // The partner's CA certifies someone at another partner, and one of our people.
    for (address, name) in [
        ("carol@other.example", "another partner"),
        (ALICE, "our own"),
    ] {
        let impostor = bob.certify(address);
        let message = [
            headers(address).into_bytes(),
            sign(&dir, &[&impostor], ENTITY.as_bytes(), &["-crlfeol"]),
        ]
        .concat();
        assert_eq!(send(&gw, address, &message).0, 250);
        let stamp = last_stamp(&gw);
        assert!(stamp.contains("signature=untrusted"), "{name}: {stamp}");
        assert!(
            gw.log().contains("not trusted for"),
            "{name}: the log says why"
        );
        let explained = gw.cli(&["rule", "explain", ALICE, address]);
        assert!(
            !explained.contains("valid certificate known: yes"),
            "{name}: nothing harvested: {explained}"
        );
    }

    // Removed, the anchor vouches for nobody.
    let fingerprint = listed.split_whitespace().next().expect("fingerprint");
    gw.cli(&["trust", "remove", fingerprint]);
    let message = [
        headers(BOB).into_bytes(),
        sign(&dir, &[&bob], ENTITY.as_bytes(), &["-crlfeol"]),
    ]
    .concat();
    assert_eq!(send(&gw, BOB, &message).0, 250);
    assert!(
        last_stamp(&gw).contains("signature=untrusted"),
        "{}",
        last_stamp(&gw)
    );
}

/// Flips one bit of the encrypted content `from_end` bytes before the end of the DER
/// (openssl writes encryptedContent last) and wraps it as an S/MIME message.
fn tampered(der: &[u8], from_end: usize) -> Vec<u8> {
    use base64::Engine;
    let mut der = der.to_vec();
    let at = der.len() - from_end;
    der[at] ^= 0x01;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    format!(
        "{}MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data; \
         name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n",
        headers(BOB)
    )
    .into_bytes()
}

#[test]
fn decryption_failures_get_the_reply_of_a_success() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    gw.add_rule("inbound", "anyone", ALICE, "decrypt-always");
    let dir = gw.data().to_path_buf();
    let alice_pem = gw.mailbox_pem(ALICE);
    let body = format!(
        "Content-Type: text/plain\r\n\r\n{}\r\n",
        "0123456789abcdef".repeat(8)
    );
    let der = cms(
        &dir,
        body.as_bytes(),
        &["-encrypt", "-aes256", "-outform", "DER", &alice_pem],
    );
    // The last byte of the next-to-last block flips the padding byte: bad padding.
    // A byte four blocks from the end garbles two blocks and leaves the padding.
    let bad_padding = tampered(&der, 17);
    let garbled = tampered(&der, 64);
    let (bad, bad_text) = send(&gw, BOB, &bad_padding);
    let (good, good_text) = send(&gw, BOB, &garbled);
    assert_eq!(
        (bad, good),
        (250, 250),
        "the reply must not tell padding from garbage: {bad_text} / {good_text}"
    );
    let delivered = gw.internal.messages();
    let stamps: Vec<String> = delivered.iter().map(stamp_of).collect();
    assert!(stamps[0].contains("decryption-failed"), "{stamps:?}");
    assert!(
        delivered[0].text().contains("application/pkcs7-mime"),
        "a failed decryption is delivered still encrypted"
    );
    // AES-GCM (AuthEnvelopedData) with a changed tag: the same treatment.
    let gcm = cms(
        &dir,
        body.as_bytes(),
        &["-encrypt", "-aes-256-gcm", "-outform", "DER", &alice_pem],
    );
    let gcm_bad = tampered(&gcm, 20);
    assert_eq!(send(&gw, BOB, &gcm_bad).0, 250);
    assert!(
        last_stamp(&gw).contains("decryption-failed"),
        "{}",
        last_stamp(&gw)
    );
    // What is decided before our key is used still gets its 5.7.5: no key for us.
    let stranger = Partner::new(&dir, "stranger@elsewhere.example");
    let foreign = cms(
        &dir,
        body.as_bytes(),
        &["-encrypt", "-aes256", &stranger.cert],
    );
    let (code, text) = send(&gw, BOB, &[headers(BOB).into_bytes(), foreign].concat());
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("5.7.5"), "{text}");
}

#[test]
fn unreadable_trust_anchors_defer_instead_of_judging_the_sender() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let dir = gw.data().to_path_buf();
    let bob = Partner::new(&dir, BOB);
    gw.cli(&["trust", "add", &bob.ca]);
    let message = [
        headers(BOB).into_bytes(),
        sign(&dir, &[&bob], ENTITY.as_bytes(), &["-crlfeol"]),
    ]
    .concat();
    assert_eq!(send(&gw, BOB, &message).0, 250);
    assert!(last_stamp(&gw).contains("signature=valid"));
    // A trust anchor row the gateway cannot read (a damaged database).
    let sql = |statement: &str| gw.sql(statement);
    let der = if gw.postgres.is_some() {
        "decode('3000', 'hex')"
    } else {
        "x'3000'"
    };
    sql(&format!(
        "INSERT INTO certificates (der, subject, issuer, serial, not_before, not_after, \
         fingerprint_sha256, source, created_at) VALUES ({der}, 'CN=damaged', 'CN=damaged', \
         '01', 0, 0, 'damaged', 'trust-anchor', 0)"
    ));
    // The configuration with its anchors cannot be read: the transaction is deferred
    // (at MAIL, where the configuration is read).
    let t = Client::connect(gw.inbound).send(BOB, &[ALICE], &message);
    let (code, text) = if t.mail.0 != 250 {
        t.mail.clone()
    } else {
        t.data.clone().unwrap_or_else(|| t.rcpts[0].clone())
    };
    assert_eq!(
        code, 451,
        "a temporary failure of ours, not a verdict: {text}"
    );
    assert!(text.contains("4.3.0"), "{text}");
    assert_eq!(
        gw.internal.messages().len(),
        1,
        "nothing stamped untrusted was delivered"
    );
    sql("DELETE FROM certificates WHERE fingerprint_sha256 = 'damaged'");
    assert_eq!(send(&gw, BOB, &message).0, 250);
    assert!(last_stamp(&gw).contains("signature=valid"));
}

#[test]
fn nothing_the_sender_writes_extends_or_hides_a_stamp() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let dir = gw.data().to_path_buf();
    let alice_pem = gw.mailbox_pem(ALICE);
    let head = " ; signature=valid; signer=ceo@corp.example\r\nFrom: x@partner.example\r\n";
    let message = format!("{head}To: {ALICE}\r\n\r\nhello\r\n");
    assert_eq!(
        send(&gw, BOB, message.as_bytes()).0,
        250,
        "a continuation line first"
    );
    let text = gw.internal.messages().pop().expect("delivered").text();
    assert!(!text.contains("ceo@corp.example"), "{text}");
    assert!(stamp_of(&gw.internal.messages().pop().expect("delivered")).contains("signature=none"));
    // A stamp behind a bare CR never gets that far: the SMTP server refuses any
    // message with a bare CR (550 5.6.0, issue 9 item 6).
    let delivered = gw.internal.messages().len();
    let head = "Subject: hi\rX-Smimegate: decrypted; signature=valid; signer=ceo@corp.example\r\nFrom: x@partner.example\r\n";
    let message = format!("{head}To: {ALICE}\r\n\r\nhello\r\n");
    let (code, text) = send(&gw, BOB, message.as_bytes());
    assert_eq!(code, 550, "a stamp behind a bare CR: {text}");
    assert!(text.contains("5.6.0"), "{text}");
    assert_eq!(
        gw.internal.messages().len(),
        delivered,
        "nothing with a bare CR is delivered"
    );
    // Header fields inside the encrypted content are the sender's: only its Content-*
    // fields are delivered, so no second From sits beside the one the verdict is about.
    let bob = Partner::new(&dir, BOB);
    gw.cli(&["trust", "add", &bob.ca]);
    let signed = sign(&dir, &[&bob], ENTITY.as_bytes(), &["-crlfeol"]);
    let inner = [
        b"From: ceo@corp.example\r\nSubject: urgent transfer\r\n".to_vec(),
        signed,
    ]
    .concat();
    let sealed = cms(
        &dir,
        &inner,
        &["-encrypt", "-binary", "-aes256", &alice_pem],
    );
    assert_eq!(
        send(&gw, BOB, &[headers(BOB).into_bytes(), sealed].concat()).0,
        250
    );
    let delivered = gw.internal.messages().pop().expect("delivered");
    let text = delivered.text();
    let froms: Vec<&str> = text
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("from:"))
        .collect();
    assert_eq!(froms, [format!("From: {BOB}")], "{text}");
    assert!(!text.contains("urgent transfer"), "{text}");
    assert!(
        stamp_of(&delivered).contains("decrypted; signature=valid; signer=bob@partner.example")
    );
}

#[test]
fn what_is_inside_decrypted_content_never_changes_the_reply() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    gw.add_rule("inbound", "anyone", ALICE, "decrypt-enforced");
    let dir = gw.data().to_path_buf();
    let alice_pem = gw.mailbox_pem(ALICE);
    let stranger = Partner::new(&dir, "stranger@elsewhere.example");
    // Inside the encryption to alice: a layer encrypted to someone else, which on its
    // own would be "undecryptable" and refused under decrypt-enforced.
    let for_stranger = cms(
        &dir,
        ENTITY.as_bytes(),
        &["-encrypt", "-aes256", &stranger.cert],
    );
    let sealed = cms(&dir, &for_stranger, &["-encrypt", "-aes256", &alice_pem]);
    let (code, text) = send(&gw, BOB, &[headers(BOB).into_bytes(), sealed].concat());
    assert_eq!(code, 250, "{text}");
    let stamp = last_stamp(&gw);
    assert!(
        stamp.contains("layers=decrypted(aes256-cbc) encrypted"),
        "{stamp}"
    );
    // Deeper than the layer limit inside: delivered with what was opened.
    let mut nested = ENTITY.as_bytes().to_vec();
    for _ in 0..9 {
        nested = cms(&dir, &nested, &["-encrypt", "-aes128", &alice_pem]);
    }
    let (code, text) = send(&gw, BOB, &[headers(BOB).into_bytes(), nested].concat());
    assert_eq!(code, 250, "{text}");
    assert!(last_stamp(&gw).contains("..."), "{}", last_stamp(&gw));
}

#[test]
fn a_message_is_decrypted_only_for_recipients_it_was_encrypted_to() {
    let ceo = "ceo@corp.example";
    let gw = Gateway::start(|d| {
        mailbox(d, ALICE);
        mailbox(d, ceo);
    });
    let dir = gw.data().to_path_buf();
    let ceo_pem = gw.mailbox_pem(ceo);
    let sealed = cms(&dir, ENTITY.as_bytes(), &["-encrypt", "-aes256", &ceo_pem]);
    let message = [headers(BOB).into_bytes(), sealed].concat();
    // Alice relays the ceo's mail to herself, alone or beside the ceo: kept encrypted.
    for rcpts in [vec![ALICE], vec![ceo, ALICE]] {
        let t = Client::connect(gw.inbound).send(BOB, &rcpts, &message);
        assert_eq!(t.data.map(|d| d.0), Some(250), "{rcpts:?}");
        let delivered = gw.internal.messages().pop().expect("delivered");
        assert!(!delivered.text().contains("invoice 4711"), "{rcpts:?}");
        assert!(
            stamp_of(&delivered).starts_with("X-Smimegate: encrypted"),
            "{rcpts:?}"
        );
    }
    assert!(
        gw.cli(&["log", "--limit", "1"])
            .contains("not encrypted to alice@corp.example")
    );
    // To the ceo alone: decrypted.
    let t = Client::connect(gw.inbound).send(BOB, &[ceo], &message);
    assert_eq!(t.data.map(|d| d.0), Some(250));
    assert!(
        gw.internal
            .messages()
            .pop()
            .expect("delivered")
            .text()
            .contains("invoice 4711")
    );
}

#[test]
fn a_harvested_certificate_is_used_only_while_its_anchor_vouches() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let dir = gw.data().to_path_buf();
    let bob = Partner::new(&dir, BOB);
    gw.introduce(&bob, ALICE);
    let fingerprint = gw
        .cli(&["trust", "list"])
        .split_whitespace()
        .next()
        .expect("fingerprint")
        .to_string();
    gw.cli(&["trust", "remove", &fingerprint]);
    let explained = gw.cli(&["rule", "explain", ALICE, BOB]);
    assert!(
        !explained.contains("valid certificate known: yes"),
        "the certificate went with its anchor: {explained}"
    );
    // Trusted again, for another domain only: still not used.
    gw.cli(&["trust", "add", &bob.ca, "--domain", "other.example"]);
    let explained = gw.cli(&["rule", "explain", ALICE, BOB]);
    assert!(
        !explained.contains("valid certificate known: yes"),
        "{explained}"
    );
}

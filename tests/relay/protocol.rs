//! SMTP itself: pipelining, limits, SMTPUTF8, DSN parameters, hostile input, and
//! what a client sees when the gateway or the token fails.

use super::harness::{Client, Gateway, dot_stuff, mailbox};
use super::{ALICE, message};

#[test]
fn pipelined_commands_get_their_replies_in_order() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let mut client = Client::internal(gw.submission);
    let msg = message(ALICE, "bob@partner.example", "pipelined", "one write");
    let mut burst = format!(
        "MAIL FROM:<{ALICE}>\r\nRCPT TO:<bob@partner.example>\r\nRCPT TO:<carol@partner.example>\r\nDATA\r\n"
    )
    .into_bytes();
    client.send_raw(&burst);
    let replies: Vec<u16> = (0..4).map(|_| client.reply().0).collect();
    assert_eq!(replies, [250, 250, 250, 354]);
    burst = dot_stuff(&msg);
    burst.extend_from_slice(b"QUIT\r\n");
    client.send_raw(&burst);
    assert_eq!(client.reply().0, 250);
    assert_eq!(client.reply().0, 221);
    assert_eq!(gw.smarthost.messages()[0].envelope_to.len(), 2);
}

#[test]
fn size_and_recipient_limits_are_enforced_and_the_session_survives() {
    let gw = Gateway::start(|d| {
        let config = d.join("smimegate.toml");
        let text = std::fs::read_to_string(&config).expect("config");
        let text = text
            .replace("max_message_bytes = 52428800", "max_message_bytes = 20000")
            .replace("max_recipients = 100", "max_recipients = 3");
        std::fs::write(&config, text).expect("config");
        mailbox(d, ALICE);
    });
    let mut client = Client::internal(gw.submission);
    assert!(client.ehlo.contains("SIZE 20000"), "{}", client.ehlo);
    let (code, text) = client.command(&format!("MAIL FROM:<{ALICE}> SIZE=50000"));
    assert_eq!(code, 552, "{text}");
    let big = message(ALICE, "bob@partner.example", "big", &"x".repeat(30000));
    let t = client.send(ALICE, &["bob@partner.example"], &big);
    let (code, text) = t.data.expect("data");
    assert_eq!(code, 552, "{text}");
    assert!(text.contains("5.3.4"));
    let rcpts: Vec<String> = (0..5)
        .map(|i| format!("RCPT TO:<r{i}@partner.example>"))
        .collect();
    let t = client.send_with(
        &format!("MAIL FROM:<{ALICE}>"),
        &rcpts,
        &message(ALICE, "r0@partner.example", "many", "x"),
    );
    let codes: Vec<u16> = t.rcpts.iter().map(|r| r.0).collect();
    assert_eq!(codes, [250, 250, 250, 452, 452]);
    assert_eq!(t.data.map(|d| d.0), Some(250));
    // Still usable.
    assert_eq!(client.command("NOOP").0, 250);
    assert!(
        gw.smarthost
            .messages()
            .iter()
            .all(|m| !m.text().contains("Subject: big"))
    );
}

#[test]
fn smtputf8_and_dsn_parameters_reach_the_next_hop() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let mut client = Client::internal(gw.submission);
    assert!(client.ehlo.contains("SMTPUTF8") && client.ehlo.contains("DSN"));
    let t = client.send_with(
        &format!("MAIL FROM:<{ALICE}> SMTPUTF8 RET=HDRS ENVID=QQ314159"),
        &["RCPT TO:<jürgen@bücher.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@partner.example".to_string()],
        &message(ALICE, "jürgen@bücher.example", "utf8", "Grüße"),
    );
    assert_eq!(t.data.as_ref().map(|d| d.0), Some(250), "{t:?}");
    let delivered = &gw.smarthost.messages()[0];
    assert_eq!(
        delivered.envelope_to,
        ["<jürgen@bücher.example>; notify=SUCCESS,FAILURE; orcpt=rfc822;bob@partner.example"]
    );
    assert!(
        delivered.envelope_params.contains("ret=HDRS"),
        "{}",
        delivered.envelope_params
    );
    assert!(delivered.envelope_params.contains("envid=QQ314159"));
    assert!(delivered.envelope_params.contains("smtputf8"));
}

#[test]
fn hostile_input_gets_clear_replies_and_no_smuggled_message() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let mut client = Client::internal(gw.submission);
    let (code, _) = client.command(&format!("MAIL FROM:<{ALICE}> {}", "X".repeat(10000)));
    assert_eq!(code, 500, "an overlong line");
    assert_eq!(
        client.command("RCPT TO:<bob@partner.example>").0,
        503,
        "RCPT before MAIL"
    );
    assert_eq!(client.command("MAIL FROM:<no-brackets@x>").0, 250);
    assert_eq!(client.command("RSET").0, 250);
    assert_eq!(client.command("MAIL FROM:not-bracketed").0, 501);
    // SMTP smuggling: a bare-LF dot line is data, not the end of the message.
    let (code, _) = client.command(&format!("MAIL FROM:<{ALICE}>"));
    assert_eq!(code, 250);
    assert_eq!(client.command("RCPT TO:<bob@partner.example>").0, 250);
    assert_eq!(client.command("DATA").0, 354);
    client.send_raw(
        format!(
            "From: {ALICE}\r\nSubject: first\r\n\r\nbody\n.\nMAIL FROM:<ceo@corp.example>\nRCPT TO:<victim@partner.example>\nDATA\nSubject: smuggled\n\n.\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(client.reply().0, 250);
    let delivered = gw.smarthost.messages();
    assert_eq!(delivered.len(), 1, "exactly one message");
    assert!(
        delivered[0]
            .envelope_to
            .iter()
            .all(|e| !e.contains("victim"))
    );
    // 1000-level MIME nesting: refused with a reason, session intact.
    let mut nested = format!("From: {ALICE}\r\nTo: bob@partner.example\r\nSubject: deep\r\n");
    for i in 0..1000 {
        nested.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    nested.push_str("\r\ninnermost\r\n");
    let t = client.send(ALICE, &["bob@partner.example"], nested.as_bytes());
    let (code, text) = t.data.expect("data");
    assert_eq!(code, 554, "{text}");
    assert!(text.contains("nesting"), "{text}");
    assert_eq!(client.command("NOOP").0, 250);
    let t = client.send(ALICE, &["bob@partner.example"], b"Subject: garbage\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n");
    assert_eq!(
        t.data.map(|d| d.0),
        Some(250),
        "outbound: relayed signed, the body is opaque to us"
    );
    let t = Client::connect(gw.inbound).send("x@partner.example", &[ALICE], b"Subject: garbage\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n");
    assert_eq!(
        t.data.map(|d| d.0),
        Some(250),
        "inbound decrypt-optional: delivered as it is"
    );
    let last = gw.internal.messages().pop().expect("delivered");
    assert!(
        last.text().contains("X-Smimegate: encrypted"),
        "{}",
        last.text()
    );
}

#[test]
fn a_gateway_killed_during_data_never_said_250() {
    let mut gw = Gateway::start(|d| mailbox(d, ALICE));
    let mut client = Client::internal(gw.submission);
    assert_eq!(client.command(&format!("MAIL FROM:<{ALICE}>")).0, 250);
    assert_eq!(client.command("RCPT TO:<bob@partner.example>").0, 250);
    assert_eq!(client.command("DATA").0, 354);
    client.send_raw(b"Subject: half\r\n\r\nhalf a message");
    gw.kill();
    client.try_send_raw(b"\r\n.\r\n");
    let mut rest = String::new();
    use std::io::Read;
    let mut stream = client.into_stream();
    let _ = stream.read_to_string(&mut rest);
    assert!(!rest.starts_with("250"), "the client saw {rest:?}");
    assert!(
        gw.smarthost.messages().is_empty(),
        "nothing may be delivered"
    );
}

#[test]
fn a_token_failure_defers_and_never_sends_plaintext() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    // Take the mailbox key away from under the running gateway.
    let module = "/usr/lib/softhsm/libsofthsm2.so";
    let pin = std::fs::read_to_string(gw.data().join("hsm-user.pin")).expect("pin");
    let conf = gw.data().join("softhsm2.conf");
    let list = std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--module",
            module,
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
        .expect("pkcs11-tool");
    let listing = String::from_utf8_lossy(&list.stdout).into_owned();
    let ids: Vec<String> = listing
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ID:").map(|s| s.trim().to_string()))
        .collect();
    let labels: Vec<String> = listing
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("label:")
                .map(|s| s.trim().to_string())
        })
        .collect();
    let (id, _) = ids
        .iter()
        .zip(&labels)
        .find(|(_, label)| label.contains("alice"))
        .unwrap_or_else(|| panic!("alice's key in {listing}"));
    let deleted = std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--module",
            module,
            "--token-label",
            "smimegate",
            "--login",
            "--pin",
            pin.trim(),
            "--delete-object",
            "--type",
            "privkey",
            "--id",
            id,
        ])
        .output()
        .expect("pkcs11-tool");
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    let mut client = Client::internal(gw.submission);
    let t = client.send(
        ALICE,
        &["bob@partner.example"],
        &message(ALICE, "bob@partner.example", "no-key", "Must not leak."),
    );
    let (code, text) = t.data.expect("data");
    assert_eq!(code, 451, "{text}");
    assert!(gw.smarthost.messages().is_empty(), "plaintext was relayed");
}

#[test]
fn starttls_on_both_sides_with_the_token_held_tls_key() {
    let mut gw = Gateway::start(|d| {
        let config = d.join("smimegate.toml");
        let text = std::fs::read_to_string(&config).expect("config");
        std::fs::write(
            &config,
            text.replace(
                "next_hop_tls = \"opportunistic\"",
                "next_hop_tls = \"required\"",
            ),
        )
        .expect("config");
        mailbox(d, ALICE);
    });
    let port = gw.smarthost.port;
    gw.smarthost.stop();
    gw.smarthost = super::harness::Sink::start_tls(gw.smarthost.maildir.clone(), port, gw.data());
    let client = Client::internal(gw.submission);
    assert!(client.ehlo.contains("STARTTLS"), "{}", client.ehlo);
    drop(client);
    // A real client (Python's smtplib) checks our certificate against the built-in CA
    // and the host name, then sends over TLS.
    let ca = gw.ca_pem(ALICE);
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(cafile="{ca}")
s = smtplib.SMTP("localhost", {port})
s.starttls(context=ctx)
print(s.ehlo()[1].decode())
s.sendmail("{ALICE}", ["bob@partner.example"], b"From: {ALICE}\r\nTo: bob@partner.example\r\nSubject: tls\r\n\r\nover TLS\r\n")
s.quit()
"#,
        port = gw.submission
    );
    let out = super::common::run_ok("python3", &["-c", &script]);
    assert!(
        !out.contains("STARTTLS"),
        "STARTTLS is not offered twice: {out}"
    );
    let delivered = gw.smarthost.messages();
    assert_eq!(delivered.len(), 1, "{}", gw.log());
    assert!(delivered[0].tls, "the gateway must use TLS to the next hop");
    assert!(delivered[0].text().contains("multipart/signed"));
    // Without TLS at the next hop, "required" defers.
    gw.smarthost.stop();
    gw.smarthost = super::harness::Sink::start(gw.smarthost.maildir.clone(), port);
    let mut client = Client::internal(gw.submission);
    let t = client.send(
        ALICE,
        &["bob@partner.example"],
        &message(ALICE, "bob@partner.example", "no-tls", "x"),
    );
    assert_eq!(t.rcpts[0].0, 451, "{t:?}");
    // RFC 3463 X.7.4 (security features not supported); the reply names no hop.
    assert!(t.rcpts[0].1.contains("4.7.4"), "{t:?}");
}

//! SMTP itself: pipelining, limits, SMTPUTF8, DSN parameters, hostile input, and
//! what a client sees when the gateway or the token fails.

use super::harness::{Client, Gateway, dot_stuff, mailbox};
use super::{ALICE, message};

#[test]
fn pipelined_commands_get_their_replies_in_order() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let mut client = Client::connect(gw.submission);
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
    assert_eq!(gw.sink.messages()[0].envelope_to.len(), 2);
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
    let mut client = Client::connect(gw.submission);
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
        gw.sink
            .messages()
            .iter()
            .all(|m| !m.text().contains("Subject: big"))
    );
}

#[test]
fn smtputf8_and_dsn_parameters_reach_the_next_hop() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let mut client = Client::connect(gw.submission);
    assert!(client.ehlo.contains("SMTPUTF8") && client.ehlo.contains("DSN"));
    let t = client.send_with(
        &format!("MAIL FROM:<{ALICE}> SMTPUTF8 RET=HDRS ENVID=QQ314159"),
        &["RCPT TO:<jürgen@bücher.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@partner.example".to_string()],
        &message(ALICE, "jürgen@bücher.example", "utf8", "Grüße"),
    );
    assert_eq!(t.data.as_ref().map(|d| d.0), Some(250), "{t:?}");
    let delivered = &gw.sink.messages()[0];
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
    let mut client = Client::connect(gw.submission);
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
    // SMTP smuggling: a bare-LF dot line is data, not the end of the message; nor is
    // `.<CRLF>` after a bare LF (only the last `<CRLF>.<CRLF>` ends it).
    let (code, _) = client.command(&format!("MAIL FROM:<{ALICE}>"));
    assert_eq!(code, 250);
    assert_eq!(client.command("RCPT TO:<bob@partner.example>").0, 250);
    assert_eq!(client.command("DATA").0, 354);
    client.send_raw(
        format!(
            "From: {ALICE}\r\nSubject: first\r\n\r\nbody\n.\nMAIL FROM:<ceo@corp.example>\nRCPT TO:<victim@partner.example>\nDATA\nSubject: smuggled\n\n.\r\n\r\n.\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(client.reply().0, 250);
    let delivered = gw.sink.messages();
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
    let last = gw.sink.messages().pop().expect("delivered");
    assert!(
        last.text().contains("X-Smimegate: encrypted"),
        "{}",
        last.text()
    );
}

#[test]
fn a_gateway_killed_during_data_never_said_250() {
    let mut gw = Gateway::start(|d| mailbox(d, ALICE));
    let mut client = Client::connect(gw.submission);
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
    assert!(gw.sink.messages().is_empty(), "nothing may be delivered");
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
    let mut client = Client::connect(gw.submission);
    let t = client.send(
        ALICE,
        &["bob@partner.example"],
        &message(ALICE, "bob@partner.example", "no-key", "Must not leak."),
    );
    let (code, text) = t.data.expect("data");
    assert_eq!(code, 451, "{text}");
    assert!(gw.sink.messages().is_empty(), "plaintext was relayed");
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
    let port = gw.sink.port;
    gw.sink.stop();
    gw.sink = super::harness::Sink::start_tls(gw.sink.maildir.clone(), port, gw.data());
    let client = Client::connect(gw.submission);
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
    let delivered = gw.sink.messages();
    assert_eq!(delivered.len(), 1, "{}", gw.log());
    assert!(delivered[0].tls, "the gateway must use TLS to the next hop");
    assert!(delivered[0].text().contains("multipart/signed"));
    // Without TLS at the next hop, "required" defers.
    gw.sink.stop();
    gw.sink = super::harness::Sink::start(gw.sink.maildir.clone(), port);
    let mut client = Client::connect(gw.submission);
    let t = client.send(
        ALICE,
        &["bob@partner.example"],
        &message(ALICE, "bob@partner.example", "no-tls", "x"),
    );
    assert_eq!(t.rcpts[0].0, 451, "{t:?}");
    assert!(t.rcpts[0].1.contains("STARTTLS"), "{t:?}");
}

/// A plain or TLS SMTP conversation over a real socket, reading replies line by line.
struct Wire<S: std::io::Read + std::io::Write> {
    stream: std::io::BufReader<S>,
}

impl<S: std::io::Read + std::io::Write> Wire<S> {
    fn reply(&mut self) -> (u16, String) {
        use std::io::BufRead;
        let mut text = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.stream.read_line(&mut line).expect("read reply");
            assert!(n > 0, "connection closed while waiting for a reply");
            let code: u16 = line[..3].parse().expect("reply code");
            text.push(line[4..].trim_end().to_string());
            if line.as_bytes()[3] == b' ' {
                return (code, text.join("\n"));
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let stream = self.stream.get_mut();
        stream.write_all(bytes).expect("write");
        stream.flush().expect("flush");
    }

    fn command(&mut self, line: &str) -> (u16, String) {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }
}

/// Accepts the gateway's certificate from its built-in CA (the one `init` issued).
fn tls_client_config(ca_pem: &str) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).expect("CA file") {
        roots.add(cert.expect("CA")).expect("add CA");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Opens a session (EHLO done), over STARTTLS when `tls` names the CA file.
fn open_wire(port: u16, tls: Option<&str>) -> Wire<Box<dyn ReadWrite>> {
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let mut wire: Wire<Box<dyn ReadWrite>> = Wire {
        stream: std::io::BufReader::new(Box::new(tcp.try_clone().expect("clone"))),
    };
    assert_eq!(wire.reply().0, 220);
    assert_eq!(wire.command("EHLO client.test").0, 250);
    let Some(ca) = tls else { return wire };
    assert_eq!(wire.command("STARTTLS").0, 220);
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(tls_client_config(ca), name).expect("client");
    let mut wire: Wire<Box<dyn ReadWrite>> = Wire {
        stream: std::io::BufReader::new(Box::new(rustls::StreamOwned::new(conn, tcp))),
    };
    let (code, ehlo) = wire.command("EHLO client.test");
    assert_eq!(code, 250, "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    wire
}

trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

/// Only `<CRLF>.<CRLF>` ends DATA (the CVE-2023-51764 pattern): a dot line after a
/// bare LF, a dot line ending in a bare LF, or a bare CR before the dot is data, so no
/// second message can hide behind the first. A bare LF ends a line for storage (kept
/// as CRLF); a bare CR anywhere refuses the message with 550 5.6.0 after its end.
/// Checked in plaintext and after STARTTLS, over real sockets, with the next command
/// read as a command only when DATA really ended.
#[test]
fn only_crlf_dot_crlf_ends_data_before_and_after_starttls() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let ca = gw.ca_pem(ALICE);
    const SMUGGLED: &str = "MAIL FROM:<ceo@corp.example>\r\nRCPT TO:<victim@corp.example>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n";
    // (what follows "body", whether the message must be refused for a bare CR)
    let variants: [(&str, bool); 6] = [
        ("\n.\r\n", false),
        ("\r.\r\n", true),
        ("\r\n.\n", false),
        ("\n.\n", false),
        ("\n..\r\n", false),
        ("\rmid-line\r\n", true),
    ];
    let mut delivered = 0;
    for tls in [None, Some(ca.as_str())] {
        let mut wire = open_wire(gw.inbound, tls);
        for (i, (variant, bare_cr)) in variants.iter().enumerate() {
            let subject = format!("v{i}-{}", tls.is_some());
            assert_eq!(wire.command("MAIL FROM:<bob@partner.example>").0, 250);
            assert_eq!(wire.command(&format!("RCPT TO:<{ALICE}>")).0, 250);
            assert_eq!(wire.command("DATA").0, 354);
            wire.send(
                format!(
                    "From: bob@partner.example\r\nSubject: {subject}\r\n\r\nbody{variant}{SMUGGLED}"
                )
                .as_bytes(),
            );
            let (code, text) = wire.reply();
            if *bare_cr {
                assert_eq!(code, 550, "{variant:?}: {text}");
                assert!(text.contains("5.6.0"), "{variant:?}: {text}");
            } else {
                assert_eq!(code, 250, "{variant:?}: {text}");
                delivered += 1;
            }
            // The next command is read as a command: its own reply, not one of the
            // smuggled transaction's.
            let (code, text) = wire.command("NOOP");
            assert_eq!((code, text.as_str()), (250, "2.0.0 OK"), "{variant:?}");
            let messages = gw.sink.messages();
            assert_eq!(
                messages.len(),
                delivered,
                "{variant:?}: exactly one message"
            );
            assert!(
                messages
                    .iter()
                    .all(|m| m.envelope_to.iter().all(|e| !e.contains("victim"))),
                "{variant:?}: smuggled"
            );
            if !*bare_cr {
                let text = messages[delivered - 1].text();
                assert!(text.contains(&format!("Subject: {subject}")), "{text}");
                assert!(
                    text.contains("Subject: smuggled"),
                    "{variant:?}: the rest is data: {text}"
                );
                assert!(
                    !text.contains('\r') || !text.replace("\r\n", "").contains('\r'),
                    "{text:?}"
                );
                assert!(
                    !text.replace("\r\n", "").contains('\n'),
                    "bare LF stored: {text:?}"
                );
            }
        }
        // A dot at the very start ends an empty message; dot-stuffed lines lose one dot.
        assert_eq!(wire.command("MAIL FROM:<bob@partner.example>").0, 250);
        assert_eq!(wire.command(&format!("RCPT TO:<{ALICE}>")).0, 250);
        assert_eq!(wire.command("DATA").0, 354);
        wire.send(
            b"From: bob@partner.example\r\nSubject: stuffed\r\n\r\n..\r\n..hidden\r\n...\r\n.\r\n",
        );
        assert_eq!(wire.reply().0, 250);
        delivered += 1;
        let text = gw.sink.messages()[delivered - 1].text();
        assert!(text.contains("\r\n\r\n.\r\n.hidden\r\n..\r\n"), "{text:?}");
        assert_eq!(wire.command("MAIL FROM:<bob@partner.example>").0, 250);
        assert_eq!(wire.command(&format!("RCPT TO:<{ALICE}>")).0, 250);
        assert_eq!(wire.command("DATA").0, 354);
        wire.send(b".\r\nNOOP\r\n");
        let (code, _) = wire.reply();
        if code == 250 {
            delivered += 1;
        }
        assert_eq!(
            wire.reply(),
            (250, "2.0.0 OK".to_string()),
            "NOOP after an empty message"
        );
        assert_eq!(wire.command("QUIT").0, 221);
    }
    assert_eq!(gw.sink.messages().len(), delivered);
}

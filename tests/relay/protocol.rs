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
    open_wire_from("127.0.0.1", port, tls)
}

/// [`open_wire`] from the loopback address `source`.
fn open_wire_from(source: &str, port: u16, tls: Option<&str>) -> Wire<Box<dyn ReadWrite>> {
    let tcp = super::harness::connect_from(source, port);
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
            let messages = gw.internal.messages();
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
        let text = gw.internal.messages()[delivered - 1].text();
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
    assert_eq!(gw.internal.messages().len(), delivered);
}

/// Rewrites keys of the gateway's configuration file (`from` → `to`, each present).
fn edit_config(data: &std::path::Path, edits: &[(&str, &str)]) {
    let config = data.join("smimegate.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    for (from, to) in edits {
        assert!(text.contains(from), "{from} not in the configuration");
        text = text.replace(from, to);
    }
    std::fs::write(&config, text).expect("config");
}

/// A plain client connecting from `source` (another loopback address than the
/// gateway's internal network 127.0.0.1/32).
fn connect_from(source: &str, port: u16) -> Wire<std::net::TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(format!("{source}:0").parse().expect("source"))
            .expect("bind source");
        socket
            .connect(format!("127.0.0.1:{port}").parse().expect("target"))
            .await
            .expect("connect")
    });
    let stream = stream.into_std().expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    Wire {
        stream: std::io::BufReader::new(stream),
    }
}

/// Issue 9 item 12, measured: idle connections from one address made every other
/// client get `421 4.3.2`. Now that address alone is refused (`421 4.7.0`); refused
/// recipients are capped per transaction; the byte budget answers `452 4.3.1`; a
/// client that never reads its replies is dropped after the command timeout.
#[test]
fn limits_per_client_address_refused_recipients_byte_budget_and_write_timeout() {
    let gw = Gateway::start(|d| {
        edit_config(
            d,
            &[
                ("max_connections_per_ip = 20", "max_connections_per_ip = 3"),
                ("max_refused_recipients = 20", "max_refused_recipients = 4"),
                ("command_timeout_secs = 300", "command_timeout_secs = 3"),
                ("max_message_bytes = 52428800", "max_message_bytes = 100000"),
                (
                    "message_budget_bytes = 268435456",
                    "message_budget_bytes = 100000",
                ),
            ],
        );
        mailbox(d, ALICE);
    });
    // Three sessions from 127.0.0.2; the fourth is refused, and only that address.
    let mut held: Vec<_> = (0..3)
        .map(|_| {
            let mut w = connect_from("127.0.0.2", gw.inbound);
            assert_eq!(w.reply().0, 220);
            w
        })
        .collect();
    let mut refused = connect_from("127.0.0.2", gw.inbound);
    let (code, text) = refused.reply();
    assert_eq!(code, 421, "{text}");
    assert!(text.starts_with("4.7.0"), "{text}");
    let mut other = connect_from("127.0.0.3", gw.inbound);
    assert_eq!(other.reply().0, 220, "another address is served");
    let mut internal = Client::internal(gw.inbound);
    assert_eq!(
        internal.command("NOOP").0,
        250,
        "the internal network is not counted"
    );

    // Refused recipients: four answered, the fifth ends the session.
    let w = &mut held[0];
    assert_eq!(w.command("EHLO outside.test").0, 250);
    assert_eq!(w.command("MAIL FROM:<x@partner.example>").0, 250);
    for i in 0..4 {
        assert_eq!(
            w.command(&format!("RCPT TO:<nobody{i}@corp.example>")).0,
            550
        );
    }
    let (code, text) = w.command("RCPT TO:<nobody4@corp.example>");
    assert_eq!((code, &text[..5]), (421, "4.7.0"), "{text}");

    // The byte budget (100 kB, one message of the declared size): a second DATA
    // declaring as much waits with 452 4.3.1 until the first is done.
    let mut first = Client::internal(gw.inbound);
    let mut second = Client::internal(gw.inbound);
    for c in [&mut first, &mut second] {
        assert_eq!(c.command("MAIL FROM:<x@partner.example> SIZE=90000").0, 250);
        assert_eq!(c.command(&format!("RCPT TO:<{ALICE}>")).0, 250);
    }
    assert_eq!(first.command("DATA").0, 354);
    let (code, text) = second.command("DATA");
    assert_eq!(code, 452, "{text}");
    assert!(text.starts_with("4.3.1"), "{text}");
    first.send_raw(&dot_stuff(&message(
        "x@partner.example",
        ALICE,
        "budget",
        "x",
    )));
    assert_eq!(first.reply().0, 250);
    // The first session gives its budget back right after writing its reply, so the
    // second one's DATA may still meet 452 for an instant: it retries, as an MTA does.
    assert_eq!(second.command("RSET").0, 250);
    let mut accepted = false;
    for _ in 0..100 {
        assert_eq!(second.command("MAIL FROM:<x@partner.example>").0, 250);
        assert_eq!(second.command(&format!("RCPT TO:<{ALICE}>")).0, 250);
        let (code, text) = second.command("DATA");
        if code == 452 {
            assert!(text.starts_with("4.3.1"), "{text}");
            assert_eq!(second.command("RSET").0, 250);
            std::thread::sleep(std::time::Duration::from_millis(20));
            continue;
        }
        assert_eq!(code, 354, "{text}");
        second.send_raw(&dot_stuff(&message(
            "x@partner.example",
            ALICE,
            "after",
            "x",
        )));
        assert_eq!(second.reply().0, 250, "budget given back");
        accepted = true;
        break;
    }
    assert!(accepted, "the budget was never given back");

    // A client that pipelines commands and never reads the replies is dropped after
    // the command timeout (3 s here), however much it still sends.
    let mut reader_less = connect_from("127.0.0.3", gw.inbound);
    let stream = reader_less.stream.get_mut();
    stream
        .set_write_timeout(Some(std::time::Duration::from_millis(500)))
        .expect("timeout");
    let started = std::time::Instant::now();
    let burst = "NOOP\r\n".repeat(10_000);
    let dropped = loop {
        use std::io::Write;
        match stream.write(burst.as_bytes()) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break true,
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            break false;
        }
    };
    assert!(dropped, "the gateway kept a client that never reads");
    assert!(
        gw.log().contains("does not read its replies"),
        "{}",
        gw.log()
    );
}

fn pid_of_serve(data: &std::path::Path) -> String {
    let pid = std::fs::read_to_string(data.join("smimegate.lock")).expect("lock file with the pid");
    pid.trim().to_string()
}

fn signal(pid: &str, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), pid])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Running (a process that exited but was not yet reaped by the harness is a zombie).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Issue 9 item 14: a second `serve` on the same data directory is refused; SIGHUP
/// reloads the limits (and no longer kills the process); SIGTERM stops accepting,
/// tells idle sessions `421 4.3.2` at once, lets a transaction in flight finish, and
/// after the grace time tells the rest.
#[test]
fn one_serve_per_data_directory_sighup_reloads_and_sigterm_drains() {
    let gw = Gateway::start(|d| {
        edit_config(
            d,
            &[("shutdown_grace_secs = 30", "shutdown_grace_secs = 4")],
        );
        mailbox(d, ALICE);
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smimegate"))
        .arg("--data-dir")
        .arg(gw.data())
        .args([
            "serve",
            "--inbound",
            "127.0.0.1:0",
            "--submission",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("second serve");
    let started = std::time::Instant::now();
    let mut out = out;
    let status = loop {
        if let Some(status) = out.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = out.kill();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut stderr = String::new();
    use std::io::Read;
    let _ = out
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    assert!(
        status.is_some_and(|s| !s.success()),
        "a second serve ran: {stderr}"
    );
    assert!(
        stderr.contains("another smimegate serve is running"),
        "{stderr}"
    );

    let pid = pid_of_serve(gw.data());
    let before = Client::connect(gw.inbound);
    assert!(before.ehlo.contains("SIZE 52428800"), "{}", before.ehlo);
    edit_config(
        gw.data(),
        &[("max_message_bytes = 52428800", "max_message_bytes = 30000")],
    );
    signal(&pid, "HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !gw.log().contains("SIGHUP: configuration reloaded") {
        assert!(alive(&pid), "SIGHUP killed the gateway");
        assert!(std::time::Instant::now() < deadline, "{}", gw.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let after = Client::connect(gw.inbound);
    assert!(after.ehlo.contains("SIZE 30000"), "{}", after.ehlo);

    // SIGTERM with one idle session, one in a transaction that finishes, one in a
    // transaction that does not.
    let mut idle = Client::internal(gw.submission);
    let mut busy = Client::internal(gw.submission);
    let mut stuck = Client::internal(gw.submission);
    for c in [&mut busy, &mut stuck] {
        assert_eq!(c.command(&format!("MAIL FROM:<{ALICE}>")).0, 250);
        assert_eq!(c.command("RCPT TO:<bob@partner.example>").0, 250);
    }
    signal(&pid, "TERM");
    let (code, text) = idle.reply();
    assert_eq!(code, 421, "{text}");
    assert!(
        text.starts_with("4.3.2") && text.contains("shutting down"),
        "{text}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", gw.submission)).is_err(),
        "still accepting"
    );
    assert_eq!(busy.command("DATA").0, 354);
    busy.send_raw(&dot_stuff(&message(
        ALICE,
        "bob@partner.example",
        "in-flight",
        "x",
    )));
    assert_eq!(busy.reply().0, 250, "the transaction in flight finished");
    assert_eq!(busy.reply().0, 421, "then told at once");
    let (code, _) = stuck.reply();
    assert_eq!(code, 421, "told when the grace time is over");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while alive(&pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(gw.log().contains("stopped"), "{}", gw.log());
    let delivered = gw.smarthost.messages();
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].text().contains("Subject: in-flight"));
}

/// SMTP AUTH on the submission listener (issue 9, item 10): a network that requires
/// it, a submitter from the store, and a signature only as an address the submitter
/// may send as.
#[test]
fn authenticated_submitters_send_and_are_signed_only_as_themselves() {
    use base64::Engine;
    let gw = Gateway::start(|d| {
        mailbox(d, ALICE);
        mailbox(d, "ceo@corp.example");
        super::common::smimegate_ok(d, &["network", "allow", "127.0.0.2/32", "--require-auth"]);
        let password = d.join("erp.password");
        std::fs::write(&password, "correct horse battery staple\n").expect("password");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        super::common::smimegate_ok(
            d,
            &[
                "submitter",
                "add",
                "erp",
                "--may-send-as",
                ALICE,
                "--password-file",
                &password.display().to_string(),
            ],
        );
    });
    let ca = gw.ca_pem(ALICE);
    let plain = |user: &str, password: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
    };
    // The network requires authentication: nothing without it.
    let mut wire = open_wire_from("127.0.0.2", gw.submission, Some(&ca));
    assert_eq!(wire.command(&format!("MAIL FROM:<{ALICE}>")).0, 530);
    let (code, text) = wire.command(&format!("AUTH PLAIN {}", plain("erp", "wrong password!")));
    assert_eq!(code, 535, "{text}");
    let (code, text) = wire.command(&format!(
        "AUTH PLAIN {}",
        plain("erp", "correct horse battery staple")
    ));
    assert_eq!(code, 235, "{text}");
    // As alice (allowed): signed.
    for (from, subject) in [(ALICE, "as-alice"), ("ceo@corp.example", "as-ceo")] {
        assert_eq!(wire.command(&format!("MAIL FROM:<{from}>")).0, 250);
        assert_eq!(wire.command("RCPT TO:<carol@other.example>").0, 250);
        assert_eq!(wire.command("DATA").0, 354);
        wire.send(&dot_stuff(&message(
            from,
            "carol@other.example",
            subject,
            "x",
        )));
        assert_eq!(wire.reply().0, 250);
    }
    let delivered = gw.smarthost.messages();
    assert_eq!(delivered.len(), 2);
    assert!(
        delivered[0].text().contains("multipart/signed"),
        "{}",
        delivered[0].text()
    );
    assert!(
        !delivered[1].text().contains("multipart/signed"),
        "signed as an address the submitter may not use: {}",
        delivered[1].text()
    );
    let log = gw.cli(&["log", "--limit", "1"]);
    assert!(log.contains("may not send as"), "{log}");
    // The Received field says so (RFC 3848).
    assert!(
        delivered[0].text().contains("with ESMTPSA"),
        "{}",
        delivered[0].text()
    );
}

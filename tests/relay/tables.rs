//! Both policy tables over real SMTP: every action × certificate known or not × one
//! or several recipients (with a Bcc), checking the replies and, with `openssl cms`,
//! what reaches the next hop.

use std::path::Path;

use super::common::{run, run_ok};
use super::harness::{Client, Delivered, Gateway, Partner, mailbox, openssl_decrypt};
use super::{ALICE, message};

const ERIN: &str = "erin@corp.example";
const DAVE: &str = "dave@partner.example";

/// What a recipient should receive.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Got {
    Plain,
    Signed,
    SignedEncrypted,
}

fn verify_signed(dir: &Path, content: &[u8], ca: &str) -> String {
    let path = dir.join("check-signed.eml");
    std::fs::write(&path, content).expect("write");
    run_ok(
        "openssl",
        &[
            "cms",
            "-verify",
            "-in",
            &path.display().to_string(),
            "-CAfile",
            ca,
            "-purpose",
            "smimesign",
        ],
    )
}

fn check(gw: &Gateway, d: &Delivered, got: Got, reader: Option<&Partner>, body: &str) {
    let ca = gw.ca_pem(ALICE);
    let text = d.text();
    match got {
        Got::Plain => {
            assert!(
                !text.contains("multipart/signed") && !text.contains("pkcs7-mime"),
                "{text}"
            );
            assert!(text.contains(body), "{text}");
        }
        Got::Signed => {
            assert!(text.contains("multipart/signed"), "{text}");
            assert!(verify_signed(gw.data(), &d.message, &ca).contains(body));
        }
        Got::SignedEncrypted => {
            assert!(
                text.contains("application/pkcs7-mime") && !text.contains(body),
                "{text}"
            );
            let reader = reader.expect("a partner to decrypt");
            let inner = openssl_decrypt(gw.data(), &d.message, reader);
            assert!(verify_signed(gw.data(), &inner, &ca).contains(body));
        }
    }
}

#[test]
fn every_outbound_action_with_and_without_certificates() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let bob = Partner::new(gw.data(), "bob@partner.example");
    let carol = Partner::new(gw.data(), "carol@partner.example");
    for p in [&bob, &carol] {
        gw.introduce(p, ALICE);
    }
    let mut seen = gw.smarthost.messages().len();
    let mut client = Client::internal(gw.submission);
    let mut rule: Option<String> = None;
    for action in ["none", "sign", "encrypt-optional", "encrypt-enforced"] {
        if let Some(id) = rule.take() {
            gw.cli(&["rule", "remove", &id]);
        }
        rule = Some(gw.add_rule("outbound", "managed", "domain:partner.example", action));
        let encrypts = action.starts_with("encrypt");
        let base = match action {
            "none" => Got::Plain,
            _ => Got::Signed,
        };
        // (case, envelope recipients, To header, expected RCPT codes, deliveries:
        //  (recipients of the copy, what it is, who reads it))
        type Case<'a> = (
            &'a str,
            Vec<&'a str>,
            &'a str,
            Vec<u16>,
            Vec<(Vec<&'a str>, Got, Option<&'a Partner>)>,
        );
        let cases: Vec<Case> = vec![
            (
                "certificate known",
                vec![&bob.address],
                &bob.address,
                vec![250],
                vec![(
                    vec![&bob.address],
                    if encrypts { Got::SignedEncrypted } else { base },
                    Some(&bob),
                )],
            ),
            (
                "no certificate",
                vec![DAVE],
                DAVE,
                vec![if action == "encrypt-enforced" {
                    550
                } else {
                    250
                }],
                if action == "encrypt-enforced" {
                    vec![]
                } else {
                    vec![(vec![DAVE], base, None)]
                },
            ),
            (
                "several, one of them Bcc",
                vec![&bob.address, &carol.address],
                &bob.address,
                vec![250, 250],
                if encrypts {
                    vec![
                        (vec![&bob.address], Got::SignedEncrypted, Some(&bob)),
                        (vec![&carol.address], Got::SignedEncrypted, Some(&carol)),
                    ]
                } else {
                    vec![(vec![&bob.address, &carol.address], base, None)]
                },
            ),
            (
                "several, one without certificate",
                vec![&bob.address, DAVE],
                "bob@partner.example, dave@partner.example",
                match action {
                    "encrypt-optional" => vec![250, 452],
                    "encrypt-enforced" => vec![250, 550],
                    _ => vec![250, 250],
                },
                if encrypts {
                    vec![(vec![&bob.address], Got::SignedEncrypted, Some(&bob))]
                } else {
                    vec![(vec![&bob.address, DAVE], base, None)]
                },
            ),
        ];
        for (case, rcpts, to, codes, deliveries) in cases {
            let body = format!("{action} / {case}");
            let t = client.send(ALICE, &rcpts, &message(ALICE, to, "table", &body));
            let got: Vec<u16> = t.rcpts.iter().map(|r| r.0).collect();
            assert_eq!(got, codes, "{action} / {case}: {t:?}");
            let delivered: Vec<Delivered> =
                gw.smarthost.messages().into_iter().skip(seen).collect();
            seen += delivered.len();
            assert_eq!(
                delivered.len(),
                deliveries.len(),
                "{action} / {case}: copies delivered"
            );
            for (who, what, reader) in deliveries {
                let copy = delivered
                    .iter()
                    .find(|d| {
                        d.envelope_to.len() == who.len()
                            && who
                                .iter()
                                .all(|w| d.envelope_to.iter().any(|e| e.contains(w)))
                    })
                    .unwrap_or_else(|| panic!("{action} / {case}: no copy for {who:?}"));
                check(&gw, copy, what, reader, &body);
            }
        }
    }
}

#[test]
fn every_inbound_action_with_each_kind_of_content() {
    let gw = Gateway::start(|d| {
        mailbox(d, ALICE);
        mailbox(d, ERIN);
    });
    let stranger = Partner::new(gw.data(), "stranger@elsewhere.example");
    let alice_pem = gw.mailbox_pem(ALICE);
    let erin_pem = gw.mailbox_pem(ERIN);
    let dir = gw.data().to_path_buf();
    let encrypt = |to: &[&str], body: &str| -> Vec<u8> {
        let entity = dir.join("entity.eml");
        std::fs::write(
            &entity,
            format!("Content-Type: text/plain\r\n\r\n{body}\r\n"),
        )
        .expect("write");
        let out = dir.join("enc.eml");
        let mut args = vec!["cms", "-encrypt", "-aes256", "-in"];
        let entity_s = entity.display().to_string();
        let out_s = out.display().to_string();
        args.extend([entity_s.as_str(), "-out", out_s.as_str()]);
        args.extend(to.iter().copied());
        let (ok, _, err) = run("openssl", &args);
        assert!(ok, "{err}");
        let mut m =
            format!("From: x@partner.example\r\nTo: {ALICE}\r\nSubject: inbound\r\n").into_bytes();
        m.extend(std::fs::read(&out).expect("read"));
        m
    };
    let mut client = Client::connect(gw.inbound);
    let mut seen = 0;
    let mut rule: Option<String> = None;
    for action in [
        "no-decrypt",
        "decrypt-optional",
        "decrypt-always",
        "decrypt-enforced",
    ] {
        if let Some(id) = rule.take() {
            gw.cli(&["rule", "remove", &id]);
        }
        rule = Some(gw.add_rule("inbound", "anyone", "managed", action));
        for recipients in [vec![ALICE], vec![ALICE, ERIN]] {
            for content in ["unencrypted", "decryptable", "undecryptable"] {
                let body = format!("{action} {content} {}", recipients.len());
                let msg = match content {
                    "unencrypted" => message("x@partner.example", ALICE, "inbound", &body),
                    "decryptable" => encrypt(&[&alice_pem, &erin_pem], &body),
                    _ => encrypt(&[&stranger.cert], &body),
                };
                // The inbound table (docs/policy.md).
                let expected: Result<&str, &str> = match (action, content) {
                    ("no-decrypt", "unencrypted") => Ok("not-encrypted"),
                    ("no-decrypt", _) => Ok("encrypted"),
                    (_, "decryptable") => Ok("decrypted"),
                    ("decrypt-enforced", "unencrypted") => Err("5.7.1"),
                    (_, "unencrypted") => Ok("not-encrypted"),
                    ("decrypt-optional", _) => Ok("encrypted"),
                    _ => Err("5.7.5"),
                };
                let t = client.send("x@partner.example", &recipients, &msg);
                assert!(t.rcpts.iter().all(|r| r.0 == 250), "{t:?}");
                let (code, text) = t.data.expect("data");
                let delivered: Vec<Delivered> =
                    gw.internal.messages().into_iter().skip(seen).collect();
                seen += delivered.len();
                match expected {
                    Err(enhanced) => {
                        assert_eq!(code, 550, "{action} / {content}: {text}");
                        assert!(text.contains(enhanced), "{action} / {content}: {text}");
                        assert!(delivered.is_empty());
                    }
                    Ok(stamp) => {
                        assert_eq!(code, 250, "{action} / {content}: {text}");
                        assert_eq!(delivered.len(), 1);
                        assert_eq!(delivered[0].envelope_to.len(), recipients.len());
                        let text = delivered[0].text();
                        assert!(
                            text.contains(&format!("X-Smimegate: {stamp};")),
                            "{action} / {content}: {text}"
                        );
                        assert_eq!(
                            text.contains(&body),
                            stamp != "encrypted",
                            "{action} / {content}: {text}"
                        );
                    }
                }
            }
        }
    }
}

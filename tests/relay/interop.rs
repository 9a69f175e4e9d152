//! Interop through the relay (issue 8, item 18): every kind of signed and encrypted
//! message openssl and gpgsm make for our mailboxes goes through `smimegate serve`
//! and arrives decrypted, with a true stamp — not only through the CLI.

use std::path::Path;

use super::common::gpgsm::GpgsmPartner;
use super::common::{self, run_ok};
use super::harness::{Client, Gateway, Partner, mailbox};

const ALICE: &str = "alice@corp.example";
const ERIN: &str = "erin@corp.example";
const BOB: &str = "bob@partner.example";
const TEXT: &str = "The quarterly figures are attached.";

fn entity() -> String {
    format!("Content-Type: text/plain\r\n\r\n{TEXT}\r\n")
}

fn with_headers(from: &str, to: &str, body: &[u8]) -> Vec<u8> {
    [
        format!("From: {from}\r\nTo: {to}\r\nSubject: interop\r\n").into_bytes(),
        body.to_vec(),
    ]
    .concat()
}

/// `openssl cms -in FILE ARGS` (recipient certificates last); returns the output.
fn cms(dir: &Path, name: &str, input: &[u8], args: &[&str]) -> Vec<u8> {
    let inp = dir.join(format!("{name}.in"));
    let out = dir.join(format!("{name}.out"));
    std::fs::write(&inp, input).expect("write");
    let (i, o) = (inp.display().to_string(), out.display().to_string());
    let mut all = vec!["cms", "-in", &i, "-out", &o];
    all.extend_from_slice(args);
    run_ok("openssl", &all);
    std::fs::read(&out).expect("read")
}

/// Sends `message` to `to` from the internet; returns the delivered text and stamp.
fn relay(gw: &Gateway, from: &str, to: &str, message: &[u8]) -> (String, String) {
    let before = gw.internal.messages().len();
    let t = Client::connect(gw.inbound).send(from, &[to], message);
    let (code, reply) = t.data.expect("recipient accepted");
    assert_eq!(code, 250, "{reply}\n{}", gw.log());
    let delivered = gw.internal.messages();
    assert_eq!(delivered.len(), before + 1);
    let text = delivered[before].text();
    let stamp = text
        .lines()
        .find(|l| l.starts_with("X-Smimegate: "))
        .expect("stamped")
        .to_string();
    (text, stamp)
}

#[test]
fn openssl_and_gpgsm_messages_of_every_kind_through_the_relay() {
    let gw = Gateway::start(|d| {
        mailbox(d, ALICE);
        common::smimegate_ok(d, &["mailbox", "add", ERIN]);
        common::smimegate_ok(
            d,
            &[
                "mailbox",
                "activate",
                ERIN,
                "--key",
                "p256",
                "--skip-mx-check",
            ],
        );
    });
    let dir = gw.data().to_path_buf();
    let alice_pem = gw.mailbox_pem(ALICE);
    let erin_pem = gw.mailbox_pem(ERIN);
    let bob = Partner::new(&dir, BOB);
    gw.cli(&["trust", "add", &bob.ca, "--domain", "partner.example"]);

    // Encrypted by openssl to the RSA mailbox: every content cipher and key transport.
    let rsa_cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "aes128-cbc",
            vec!["-aes128"],
            "decrypted (aes128-cbc, rsa-pkcs1v15)",
        ),
        (
            "aes256-cbc",
            vec!["-aes256"],
            "decrypted (aes256-cbc, rsa-pkcs1v15)",
        ),
        ("3des", vec!["-des3"], "weak-cipher des-ede3-cbc"),
        (
            "aes128-gcm",
            vec!["-aes-128-gcm"],
            "decrypted (aes128-gcm, rsa-pkcs1v15)",
        ),
        (
            "aes256-gcm",
            vec!["-aes-256-gcm"],
            "decrypted (aes256-gcm, rsa-pkcs1v15)",
        ),
    ];
    for (name, args, action) in &rsa_cases {
        let mut all = args.clone();
        all.extend_from_slice(&["-encrypt", &alice_pem]);
        let sealed = cms(&dir, name, entity().as_bytes(), &all);
        let (text, stamp) = relay(&gw, BOB, ALICE, &with_headers(BOB, ALICE, &sealed));
        assert!(text.contains(TEXT), "{name}: {text}");
        assert!(
            stamp.contains("decrypted; signature=none"),
            "{name}: {stamp}"
        );
        assert!(
            gw.cli(&["log", "--limit", "1"]).contains(action),
            "{name}: {}",
            gw.cli(&["log", "--limit", "1"])
        );
    }
    // RSAES-OAEP with each hash (and an MGF1 hash of its own): recovered in the token
    // even where it refuses the OAEP mechanism itself.
    for (md, mgf) in [
        ("sha1", "sha1"),
        ("sha256", "sha256"),
        ("sha384", "sha384"),
        ("sha512", "sha512"),
        ("sha256", "sha1"),
    ] {
        let name = format!("oaep-{md}-{mgf}");
        let sealed = cms(
            &dir,
            &name,
            entity().as_bytes(),
            &[
                "-encrypt",
                "-aes256",
                "-recip",
                &alice_pem,
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                &format!("rsa_oaep_md:{md}"),
                "-keyopt",
                &format!("rsa_mgf1_md:{mgf}"),
            ],
        );
        let (text, stamp) = relay(&gw, BOB, ALICE, &with_headers(BOB, ALICE, &sealed));
        assert!(text.contains(TEXT), "{name}: {text}");
        assert!(
            stamp.starts_with("X-Smimegate: decrypted"),
            "{name}: {stamp}"
        );
    }
    // ECDH to the EC mailbox, CBC and GCM.
    for (name, cipher) in [("ecdh-cbc", "-aes256"), ("ecdh-gcm", "-aes-256-gcm")] {
        let sealed = cms(
            &dir,
            name,
            entity().as_bytes(),
            &[cipher, "-encrypt", &erin_pem],
        );
        let (text, stamp) = relay(&gw, BOB, ERIN, &with_headers(BOB, ERIN, &sealed));
        assert!(text.contains(TEXT), "{name}: {text}");
        assert!(
            stamp.starts_with("X-Smimegate: decrypted"),
            "{name}: {stamp}"
        );
    }

    // Signed by openssl: every signature kind, and signed-then-encrypted with GCM.
    let params = dir.join("p384.param").display().to_string();
    run_ok(
        "openssl",
        &["ecparam", "-name", "secp384r1", "-out", &params],
    );
    let ec_bob = bob.authority.issue(
        "bob-ec",
        &format!("ec:{params}"),
        &format!(
            "keyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=emailProtection\n\
             subjectAltName=email:{BOB}\n"
        ),
    );
    let signed_cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "detached",
            vec!["-signer", &bob.cert, "-inkey", &bob.key, "-crlfeol"],
        ),
        (
            "opaque",
            vec!["-signer", &bob.cert, "-inkey", &bob.key, "-nodetach"],
        ),
        (
            "pss",
            vec![
                "-signer",
                &bob.cert,
                "-inkey",
                &bob.key,
                "-keyopt",
                "rsa_padding_mode:pss",
                "-crlfeol",
            ],
        ),
        (
            "sha512",
            vec![
                "-signer", &bob.cert, "-inkey", &bob.key, "-md", "sha512", "-crlfeol",
            ],
        ),
        (
            "p384-sha512",
            vec![
                "-signer", &ec_bob.1, "-inkey", &ec_bob.0, "-md", "sha512", "-crlfeol",
            ],
        ),
        ("lf", vec!["-signer", &bob.cert, "-inkey", &bob.key]),
    ];
    for (name, args) in &signed_cases {
        let mut all = vec!["-sign"];
        all.extend_from_slice(args);
        let signed = cms(&dir, name, entity().as_bytes(), &all);
        let (text, stamp) = relay(&gw, BOB, ALICE, &with_headers(BOB, ALICE, &signed));
        // An opaque signature is delivered as it is: the text is inside the CMS.
        assert!(*name == "opaque" || text.contains(TEXT), "{name}: {text}");
        assert!(
            stamp.contains("signature=valid; signer=bob@partner.example"),
            "{name}: {stamp}"
        );
    }
    let signed = cms(
        &dir,
        "s",
        entity().as_bytes(),
        &["-sign", "-signer", &bob.cert, "-inkey", &bob.key],
    );
    let sealed = cms(
        &dir,
        "se",
        &signed,
        &["-encrypt", "-binary", "-aes-256-gcm", &erin_pem],
    );
    let (_, stamp) = relay(&gw, BOB, ERIN, &with_headers(BOB, ERIN, &sealed));
    assert!(
        stamp.contains("decrypted; signature=valid; signer=bob@partner.example"),
        "{stamp}"
    );

    // gpgsm as the partner's client: it signs, and it encrypts to alice.
    let carol = GpgsmPartner::for_address("carol@gpgsm.example");
    gw.cli(&["trust", "add", &carol.ca_path, "--domain", "gpgsm.example"]);
    let signed = carol.signed_message(&entity());
    let from = "carol@gpgsm.example";
    let (_, stamp) = relay(
        &gw,
        from,
        ALICE,
        &with_headers(from, ALICE, signed.as_bytes()),
    );
    assert!(
        stamp.contains("signature=valid; signer=carol@gpgsm.example"),
        "{stamp}"
    );
    carol.import_trusted(&[&gw.ca_pem(ALICE), &alice_pem]);
    let content = carol.dir.path().join("content");
    std::fs::write(&content, entity()).expect("write");
    let sealed = carol.dir.path().join("sealed.p7m");
    carol.gpgsm(&[
        "--encrypt",
        "--recipient",
        ALICE,
        "-o",
        &sealed.display().to_string(),
        &content.display().to_string(),
    ]);
    use base64::Engine;
    let b64 =
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&sealed).expect("read"));
    let message = format!(
        "MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n"
    );
    let (text, stamp) = relay(
        &gw,
        from,
        ALICE,
        &with_headers(from, ALICE, message.as_bytes()),
    );
    assert!(text.contains(TEXT), "{text}");
    assert!(stamp.contains("decrypted"), "{stamp}");
}

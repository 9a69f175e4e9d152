//! Encryption: what the engine emits is decrypted by openssl (each recipient with its
//! own key) and by the engine itself with a key held in the token.

use super::common;

use der::DecodePem;
use smimegate::hsm::KeyAlgorithm;
use smimegate::mime::Limits;
use smimegate::smime::decrypt;
use smimegate::smime::encrypt::{
    ContentCipher, EncryptError, KeyTransportChoice, Recipient, encrypt_message,
};
use x509_cert::Certificate;

use common::{run_ok, token};

const MESSAGE: &str = "From: alice@corp.example\r\nTo: bob@partner.example, carol@partner.example\r\n\
Subject: Q3 figures\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
Umsatz \u{00fc}ber Plan.\r\n";
const ENTITY: &str = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
Umsatz \u{00fc}ber Plan.\r\n";

struct Partner {
    key: String,
    cert_path: String,
    cert: Certificate,
}

fn partners(dir: &std::path::Path, names: &[&str]) -> Vec<Partner> {
    names
        .iter()
        .map(|name| {
            let key = dir.join(format!("{name}.key")).display().to_string();
            let cert_path = dir.join(format!("{name}.pem")).display().to_string();
            run_ok(
                "openssl",
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &key,
                    "-out",
                    &cert_path,
                    "-days",
                    "5",
                    "-subj",
                    &format!("/CN={name}"),
                    "-addext",
                    &format!("subjectAltName=email:{name}@partner.example"),
                ],
            );
            let cert = Certificate::from_pem(std::fs::read(&cert_path).expect("read"))
                .expect("certificate");
            Partner {
                key,
                cert_path,
                cert,
            }
        })
        .collect()
}

fn openssl_decrypt(dir: &std::path::Path, message: &[u8], partner: &Partner) -> Vec<u8> {
    let path = dir.join("encrypted.eml");
    std::fs::write(&path, message).expect("write");
    let out = std::process::Command::new("openssl")
        .args([
            "cms",
            "-decrypt",
            "-binary",
            "-recip",
            &partner.cert_path,
            "-inkey",
            &partner.key,
            "-in",
        ])
        .arg(&path)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn every_cipher_and_key_transport_is_decrypted_by_openssl_for_every_recipient() {
    let dir = tempfile::tempdir().expect("temp dir");
    let people = partners(dir.path(), &["bob", "carol"]);
    for cipher in [
        ContentCipher::Aes128Cbc,
        ContentCipher::Aes256Cbc,
        ContentCipher::Aes128Gcm,
        ContentCipher::Aes256Gcm,
    ] {
        for transport in [KeyTransportChoice::RsaPkcs1v15, KeyTransportChoice::RsaOaep] {
            let recipients: Vec<Recipient> = people
                .iter()
                .map(|p| Recipient {
                    certificate: p.cert.clone(),
                    transport,
                })
                .collect();
            let encrypted =
                encrypt_message(MESSAGE.as_bytes(), &recipients, cipher, &Limits::default())
                    .expect("encrypt");
            let text = String::from_utf8(encrypted.clone()).expect("7-bit output");
            assert!(text.starts_with("From: alice@corp.example\r\n"), "{text}");
            assert!(!text.contains("Umsatz"), "plaintext leaked");
            assert!(
                text.contains(&format!("smime-type={}", cipher.smime_type())),
                "{text}"
            );
            for person in &people {
                let plain = openssl_decrypt(dir.path(), &encrypted, person);
                assert_eq!(
                    String::from_utf8_lossy(&plain),
                    ENTITY,
                    "{cipher:?} {transport:?}"
                );
            }
        }
    }
}

#[test]
fn messages_encrypted_to_a_mailbox_decrypt_with_its_token_key() {
    let hsm = &token().hsm;
    let ca = common::token_ca("CN=Enc Test CA");
    let (key, cert) = common::token_mailbox(&ca, "enc", KeyAlgorithm::Rsa2048);
    let held = common::held_for(&cert, &key.id);
    for cipher in [ContentCipher::Aes256Cbc, ContentCipher::Aes256Gcm] {
        for transport in [KeyTransportChoice::RsaPkcs1v15, KeyTransportChoice::RsaOaep] {
            let recipient = Recipient {
                certificate: cert.clone(),
                transport,
            };
            let encrypted =
                encrypt_message(MESSAGE.as_bytes(), &[recipient], cipher, &Limits::default())
                    .expect("encrypt");
            let der = decrypt::cms_from_message(&encrypted, &Limits::default()).expect("cms");
            let done = decrypt::decrypt(hsm, &der, &held).expect("decrypt in token");
            assert_eq!(done.entity, ENTITY.as_bytes(), "{cipher:?} {transport:?}");
        }
    }
}

#[test]
fn refusals_are_typed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = encrypt_message(
        MESSAGE.as_bytes(),
        &[],
        ContentCipher::Aes256Cbc,
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, EncryptError::NoRecipients));
    let key = dir.path().join("ed.key").display().to_string();
    let cert = dir.path().join("ed.pem").display().to_string();
    run_ok(
        "openssl",
        &[
            "req", "-x509", "-newkey", "ed25519", "-nodes", "-keyout", &key, "-out", &cert,
            "-days", "5", "-subj", "/CN=ed",
        ],
    );
    let ed = Recipient {
        certificate: Certificate::from_pem(std::fs::read(&cert).expect("read")).expect("cert"),
        transport: KeyTransportChoice::RsaPkcs1v15,
    };
    let err = encrypt_message(
        MESSAGE.as_bytes(),
        &[ed],
        ContentCipher::Aes256Cbc,
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, EncryptError::Recipient { .. }), "{err}");

    // Keys that must not receive mail: a signing-only certificate, an EC certificate
    // without keyAgreement, an RSA key under 2048 bits (RFC 8550 §4.4.2, RFC 8551 §2.3).
    let ca = common::OpensslCa::new(dir.path(), "recipients");
    let params = dir.path().join("p256.param").display().to_string();
    run_ok(
        "openssl",
        &["ecparam", "-name", "prime256v1", "-out", &params],
    );
    let ec_spec = format!("ec:{params}");
    for (name, key_spec, ext, why) in [
        (
            "signing-only",
            "rsa:2048",
            "keyUsage=critical,digitalSignature\nsubjectAltName=email:a@x.example\n",
            "keyEncipherment",
        ),
        (
            "ec-signing-only",
            ec_spec.as_str(),
            "keyUsage=critical,digitalSignature\nsubjectAltName=email:b@x.example\n",
            "keyAgreement",
        ),
        (
            "rsa1024",
            "rsa:1024",
            "keyUsage=critical,digitalSignature,keyEncipherment\nsubjectAltName=email:c@x.example\n",
            "at least 2048",
        ),
    ] {
        let (_, cert) = ca.issue(name, key_spec, ext);
        let recipient = Recipient {
            certificate: Certificate::from_pem(std::fs::read(&cert).expect("read")).expect("cert"),
            transport: KeyTransportChoice::RsaPkcs1v15,
        };
        assert!(
            smimegate::smime::encrypt::recipient_key_problem(&recipient.certificate)
                .is_some_and(|p| p.contains(why)),
            "{name}"
        );
        let err = encrypt_message(
            MESSAGE.as_bytes(),
            &[recipient],
            ContentCipher::Aes256Cbc,
            &Limits::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, EncryptError::Recipient { reason, .. } if reason.contains(why)),
            "{name}: {err}"
        );
    }
}

#[test]
fn ec_recipients_get_ecdh_key_agreement_that_openssl_and_the_token_undo() {
    let dir = tempfile::tempdir().expect("temp dir");
    let params = dir.path().join("p.param").display().to_string();
    run_ok(
        "openssl",
        &["ecparam", "-name", "prime256v1", "-out", &params],
    );
    let key = dir.path().join("ec.key").display().to_string();
    let cert_path = dir.path().join("ec.pem").display().to_string();
    run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            &format!("ec:{params}"),
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &cert_path,
            "-days",
            "5",
            "-subj",
            "/CN=ec",
        ],
    );
    let partner = Partner {
        key,
        cert_path: cert_path.clone(),
        cert: Certificate::from_pem(std::fs::read(&cert_path).expect("read")).expect("cert"),
    };
    let rsa = partners(dir.path(), &["bob"]).remove(0);
    for cipher in [ContentCipher::Aes256Cbc, ContentCipher::Aes128Gcm] {
        let recipients = [
            Recipient {
                certificate: partner.cert.clone(),
                transport: KeyTransportChoice::RsaPkcs1v15,
            },
            Recipient {
                certificate: rsa.cert.clone(),
                transport: KeyTransportChoice::RsaOaep,
            },
        ];
        let encrypted =
            encrypt_message(MESSAGE.as_bytes(), &recipients, cipher, &Limits::default())
                .expect("encrypt");
        assert_eq!(
            String::from_utf8_lossy(&openssl_decrypt(dir.path(), &encrypted, &partner)),
            ENTITY,
            "{cipher:?}"
        );
        assert_eq!(
            String::from_utf8_lossy(&openssl_decrypt(dir.path(), &encrypted, &rsa)),
            ENTITY,
            "{cipher:?}"
        );
    }

    // And to an EC mailbox whose key is in the token.
    let hsm = &token().hsm;
    let ca = common::token_ca("CN=EC Test CA");
    let (mailbox_key, cert) = common::token_mailbox(&ca, "ec-mailbox", KeyAlgorithm::P256);
    let held = common::held_for(&cert, &mailbox_key.id);
    let encrypted = encrypt_message(
        MESSAGE.as_bytes(),
        &[Recipient {
            certificate: cert,
            transport: KeyTransportChoice::RsaPkcs1v15,
        }],
        ContentCipher::Aes256Gcm,
        &Limits::default(),
    )
    .expect("encrypt");
    let der = decrypt::cms_from_message(&encrypted, &Limits::default()).expect("cms");
    let done = decrypt::decrypt(hsm, &der, &held).expect("ECDH in the token");
    assert_eq!(done.entity, ENTITY.as_bytes());
    assert_eq!(done.key_transport, "ecdh-p256");
}

#[test]
fn recipient_counts_are_bounded_both_ways() {
    let dir = tempfile::tempdir().expect("temp dir");
    let people = partners(dir.path(), &["r1", "r2"]);
    let recipients: Vec<Recipient> = people
        .iter()
        .map(|p| Recipient {
            certificate: p.cert.clone(),
            transport: KeyTransportChoice::RsaPkcs1v15,
        })
        .collect();
    let one = Limits {
        max_recipients: 1,
        ..Limits::default()
    };
    let err = encrypt_message(
        MESSAGE.as_bytes(),
        &recipients,
        ContentCipher::Aes256Cbc,
        &one,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("more than the limit of 1"),
        "{err}"
    );
    let two = encrypt_message(
        MESSAGE.as_bytes(),
        &recipients,
        ContentCipher::Aes256Cbc,
        &Limits::default(),
    )
    .expect("encrypt");
    let der = decrypt::cms_from_message(&two, &Limits::default()).expect("cms");
    let err = decrypt::decrypt_within(&token().hsm, &der, &[], &one).unwrap_err();
    assert!(matches!(err, decrypt::DecryptError::Malformed(_)), "{err}");
    let err = decrypt::decrypt_within(&token().hsm, &der, &[], &Limits::default()).unwrap_err();
    assert!(
        matches!(err, decrypt::DecryptError::NoKey { recipients: 2 }),
        "{err}"
    );
}

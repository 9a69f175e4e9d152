//! gpgsm as the partner's client: it decrypts what we encrypt to it, and we verify
//! what it signs. (Signatures we make are checked by gpgsm in smime_sign.rs; messages
//! gpgsm encrypts to a token key in smime_decrypt.rs.)

use super::common;

use std::time::SystemTime;

use smimegate::mime::Limits;
use smimegate::smime::encrypt::{ContentCipher, KeyTransportChoice, Recipient, encrypt_message};
use smimegate::smime::verify::Verdict;

use common::gpgsm::GpgsmPartner;

const MESSAGE: &str = "From: alice@corp.example\r\nTo: bob@partner.example\r\nSubject: for gpgsm\r\n\
Content-Type: text/plain\r\n\r\nRead me with gpgsm.\r\n";

#[test]
fn gpgsm_decrypts_what_we_encrypt() {
    let partner = GpgsmPartner::new();
    // gpgsm 2.2 reads EnvelopedData with PKCS#1 v1.5 key transport only: no
    // AuthEnvelopedData, no RSAES-OAEP (openssl covers those in smime_encrypt.rs).
    for transport in [KeyTransportChoice::RsaPkcs1v15] {
        for cipher in [ContentCipher::Aes128Cbc, ContentCipher::Aes256Cbc] {
            let recipient = Recipient {
                certificate: partner.cert.clone(),
                transport,
            };
            let encrypted =
                encrypt_message(MESSAGE.as_bytes(), &[recipient], cipher, &Limits::default())
                    .expect("encrypt");
            let der = smimegate::smime::decrypt::cms_from_message(&encrypted, &Limits::default())
                .expect("cms");
            let path = partner.dir.path().join("ours.p7m");
            std::fs::write(&path, der).expect("write");
            let out = partner.gpgsm(&["--decrypt", &path.display().to_string()]);
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "Content-Type: text/plain\r\n\r\nRead me with gpgsm.\r\n",
                "{transport:?} {cipher:?}"
            );
        }
    }
}

#[test]
fn we_verify_what_gpgsm_signs() {
    let partner = GpgsmPartner::new();
    let message = format!(
        "From: bob@partner.example\r\n{}",
        partner.signed_message("Content-Type: text/plain\r\n\r\nSigned by gpgsm.\r\n")
    );
    let anchors = [partner.ca.clone()];
    let v = common::verify_signature(
        message.as_bytes(),
        Some("bob@partner.example"),
        &anchors,
        SystemTime::now(),
    );
    assert_eq!(v.verdict, Verdict::Valid, "{}", v.detail);
    let tampered = message.replace("Signed by gpgsm.", "Signed by gpgsm!");
    let v = common::verify_signature(
        tampered.as_bytes(),
        Some("bob@partner.example"),
        &anchors,
        SystemTime::now(),
    );
    assert_eq!(v.verdict, Verdict::BadSignature, "{}", v.detail);
}

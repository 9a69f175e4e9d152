//! Nested layers: triple wrap (signed, encrypted, signed) made by the engine, and
//! signed-then-encrypted made by openssl, opened layer by layer.

use super::common;

use std::time::SystemTime;

use der::EncodePem;
use smimegate::hsm::KeyAlgorithm;
use smimegate::mime::Limits;
use smimegate::pki::ca;
use smimegate::smime::encrypt::{ContentCipher, KeyTransportChoice, Recipient, encrypt_message};
use smimegate::smime::layers::{KeyDirectory, Layer, OpenError, Opener, TokenKeys};
use smimegate::smime::verify::{FromField, TrustAnchors, Verdict, VerifyContext};
use smimegate::smime::{SignerIdentity, sign_detached};

use common::{run_ok, token};

const MESSAGE: &str = "From: alice@corp.example\r\nTo: bob@corp.example\r\nSubject: layers\r\n\
Content-Type: text/plain\r\n\r\nThe innermost text.\r\n";

#[test]
fn triple_wrapped_and_openssl_nested_messages_open_layer_by_layer() {
    let hsm = &token().hsm;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = common::token_ca("CN=Layers CA");
    let ca_cert = ca.certificate.clone();
    let (alice_key, alice_cert) = common::token_mailbox(&ca, "alice", KeyAlgorithm::Rsa2048);
    let (bob_key, bob_cert) = common::token_mailbox(&ca, "bob", KeyAlgorithm::P256);
    let alice = SignerIdentity {
        key_id: alice_key.id.clone(),
        key_algorithm: KeyAlgorithm::Rsa2048,
        scheme: ca::default_scheme(KeyAlgorithm::Rsa2048),
        certificate: alice_cert.clone(),
        chain: vec![ca_cert.clone()],
    };
    let mut keys = KeyDirectory::default();
    keys.add(&bob_cert, bob_key.id.clone());
    let limits = Limits::default();
    let trust = TrustAnchors::unscoped(std::slice::from_ref(&ca_cert));
    let token_keys = TokenKeys { hsm, keys: &keys };
    let opener = Opener {
        keys: &token_keys,
        verify: VerifyContext {
            trust: &trust,
            crls: &[],
            revocation: None,
            now: SystemTime::now(),
            limits: &limits,
        },
        decrypt: true,
        max_layers: 8,
    };

    // Triple wrap: sign, encrypt to bob, sign again.
    let inner = sign_detached(hsm, &alice, MESSAGE.as_bytes(), &limits).expect("sign");
    let to_bob = [Recipient {
        certificate: bob_cert.clone(),
        transport: KeyTransportChoice::RsaPkcs1v15,
    }];
    let encrypted =
        encrypt_message(&inner, &to_bob, ContentCipher::Aes256Gcm, &limits).expect("encrypt");
    let outer = sign_detached(hsm, &alice, &encrypted, &limits).expect("sign again");
    let opened = opener
        .open(&outer, &FromField::given("alice@corp.example"))
        .expect("open");
    assert_eq!(opened.layers.len(), 3, "{:?}", opened.layers);
    assert!(matches!(&opened.layers[0], Layer::Signed(v) if v.verdict == Verdict::Valid));
    assert!(matches!(
        &opened.layers[1],
        Layer::Decrypted {
            key_transport: "ecdh-p256",
            ..
        }
    ));
    assert!(matches!(&opened.layers[2], Layer::Signed(v) if v.verdict == Verdict::Valid));
    assert_eq!(
        opened.innermost(),
        Some(&b"Content-Type: text/plain\r\n\r\nThe innermost text.\r\n"[..])
    );
    // What is delivered is the decrypted entity: the inner signature stays for the
    // recipient's client, the outer one (over the ciphertext) cannot.
    let delivered = String::from_utf8(opened.decrypted.clone().expect("decrypted")).expect("text");
    assert!(
        delivered.starts_with("Content-Type: multipart/signed"),
        "{delivered}"
    );
    assert!(inner.ends_with(delivered.split_once("\r\n\r\n").expect("body").1.as_bytes()));

    // openssl: signed by a partner, then encrypted to bob.
    let p = |n: &str| dir.path().join(n).display().to_string();
    run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &p("partner.key"),
            "-out",
            &p("partner.pem"),
            "-days",
            "5",
            "-subj",
            "/CN=partner",
            "-addext",
            "subjectAltName=email:partner@partner.example",
        ],
    );
    std::fs::write(
        p("bob.pem"),
        bob_cert.to_pem(der::pem::LineEnding::LF).expect("pem"),
    )
    .expect("write");
    std::fs::write(
        p("msg"),
        "Content-Type: text/plain\r\n\r\nFrom the partner.\r\n",
    )
    .expect("write");
    run_ok(
        "openssl",
        &[
            "cms",
            "-sign",
            "-in",
            &p("msg"),
            "-signer",
            &p("partner.pem"),
            "-inkey",
            &p("partner.key"),
            "-out",
            &p("signed"),
        ],
    );
    run_ok(
        "openssl",
        &[
            "cms",
            "-encrypt",
            "-in",
            &p("signed"),
            "-out",
            &p("sealed"),
            "-aes256",
            &p("bob.pem"),
        ],
    );
    // The partner's certificate was made just now: judge at a time after it.
    let opener = Opener {
        verify: VerifyContext {
            now: SystemTime::now(),
            ..opener.verify
        },
        ..opener
    };
    let opened = opener
        .open(
            &std::fs::read(p("sealed")).expect("read"),
            &FromField::given("partner@partner.example"),
        )
        .expect("open");
    assert_eq!(opened.layers.len(), 2);
    assert!(matches!(&opened.layers[0], Layer::Decrypted { .. }));
    // The partner's self-signed certificate is not trusted here: the verdict says so,
    // and the content is still there for the policy to decide.
    assert!(
        matches!(&opened.layers[1], Layer::Signed(v) if v.verdict == Verdict::Untrusted),
        "{:?}",
        opened.layers[1]
    );
    assert!(
        String::from_utf8_lossy(opened.innermost().expect("opened")).contains("From the partner.")
    );

    // The nesting limit holds: refused outside any decryption; inside decrypted
    // content (where nothing may change the reply) the walk stops and says so.
    let shallow = Opener {
        max_layers: 1,
        ..opener
    };
    assert!(matches!(
        shallow.open(&outer, &FromField::Missing),
        Err(OpenError::TooDeep(1))
    ));
    let shallow = Opener {
        max_layers: 2,
        ..opener
    };
    let opened = shallow
        .open(&outer, &FromField::Missing)
        .expect("opened as far as the limit");
    assert_eq!(opened.layers.len(), 2);
    assert!(opened.truncated);
}

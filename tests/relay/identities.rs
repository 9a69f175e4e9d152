//! An identity from elsewhere through the relay: a mailbox whose key and certificate
//! came in a PKCS#12 file (openssl `-legacy`, as Windows exports them) signs outbound
//! mail with it (checked by `openssl cms -verify` against the external CA) and
//! receives mail encrypted to it by openssl, decrypted with the key in the token.

use std::os::unix::fs::PermissionsExt;

use crate::common::{self, OpensslCa, run_ok};
use crate::harness::{Client, Gateway, openssl_verify};
use crate::message;

const CAROL: &str = "carol@corp.example";

#[test]
fn an_uploaded_identity_signs_outbound_and_decrypts_inbound_through_the_relay() {
    let outside = tempfile::tempdir().expect("dir");
    let ca = OpensslCa::new(outside.path(), "external");
    let (key, cert) = ca.issue(
        "carol",
        "rsa:2048",
        &format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=emailProtection\nsubjectAltName=email:{CAROL}\n"
        ),
    );
    let p12 = outside.path().join("carol.p12").display().to_string();
    run_ok(
        "openssl",
        &[
            "pkcs12",
            "-export",
            "-legacy",
            "-inkey",
            &key,
            "-in",
            &cert,
            "-certfile",
            &ca.cert,
            "-passout",
            "pass:from windows",
            "-out",
            &p12,
        ],
    );
    let pw = outside.path().join("pw");
    std::fs::write(&pw, "from windows\n").expect("write");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let gw = Gateway::start(|d| {
        common::smimegate_ok(d, &["mailbox", "add", CAROL]);
        let out = common::smimegate_ok(
            d,
            &[
                "mailbox",
                "import",
                CAROL,
                "--pkcs12",
                &p12,
                "--password-file",
                &pw.display().to_string(),
            ],
        );
        assert!(out.contains("mailbox active"), "{out}");
    });

    // Outbound: signed with the uploaded certificate, its chain verifies.
    let mut client = Client::internal(gw.submission);
    let t = client.send(
        CAROL,
        &["bob@partner.example"],
        &message(
            CAROL,
            "bob@partner.example",
            "uploaded",
            "Signed with an uploaded key.",
        ),
    );
    assert_eq!(
        t.data.as_ref().map(|d| d.0),
        Some(250),
        "{t:?} {}",
        gw.log()
    );
    let delivered = gw.smarthost.messages();
    assert_eq!(delivered.len(), 1);
    assert!(
        delivered[0].text().contains("multipart/signed"),
        "{}",
        gw.log()
    );
    let content = openssl_verify(gw.data(), &delivered[0], &ca.cert);
    assert!(
        String::from_utf8_lossy(&content).contains("Signed with an uploaded key."),
        "{}",
        String::from_utf8_lossy(&content)
    );

    // Inbound: encrypted to the uploaded certificate by openssl, decrypted.
    let plain = gw.data().join("plain.eml");
    std::fs::write(
        &plain,
        message("bob@partner.example", CAROL, "for-carol", "For Carol only."),
    )
    .expect("write");
    let encrypted = gw.data().join("enc.eml");
    run_ok(
        "openssl",
        &[
            "cms",
            "-encrypt",
            "-aes256",
            "-in",
            &plain.display().to_string(),
            "-out",
            &encrypted.display().to_string(),
            &cert,
        ],
    );
    let mut client = Client::connect(gw.inbound);
    let t = client.send(
        "bob@partner.example",
        &[CAROL],
        &std::fs::read(&encrypted).expect("read"),
    );
    assert_eq!(t.data.map(|d| d.0), Some(250), "{}", gw.log());
    let text = gw.internal.messages()[0].text();
    assert!(text.contains("For Carol only."), "{text}");
    assert!(text.contains("X-Smimegate: decrypted"), "{text}");
}

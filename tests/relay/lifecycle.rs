//! The certificate lifecycle as partners and mail see it, against a running gateway:
//! mail encrypted to a mailbox's first certificate still decrypts after two
//! renewals while outbound mail is signed with the newest; a deactivated mailbox's
//! certificate is revoked in the CRL the gateway serves (openssl says so), it signs
//! no more, and mail encrypted to it still decrypts.

use std::path::Path;

use super::common;
use super::harness::{Client, Gateway, mailbox};

const ALICE: &str = "alice@corp.example";
const PARTNER: &str = "carol@partner.example";

fn message(from: &str, to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@test>\r\n\r\nHello {subject}.\r\n"
    )
    .into_bytes()
}

/// `message` from the partner to alice, encrypted by openssl to `cert`.
fn encrypted_to(dir: &Path, cert: &str, subject: &str) -> Vec<u8> {
    let plain = dir.join(format!("{subject}.eml"));
    std::fs::write(&plain, message(PARTNER, ALICE, subject)).expect("write");
    common::run_ok(
        "openssl",
        &[
            "cms",
            "-encrypt",
            "-aes256",
            "-in",
            &plain.display().to_string(),
            cert,
        ],
    )
    .into_bytes()
}

/// The signer certificate of a message the smarthost received (openssl's view).
fn signer_of(gw: &Gateway, subject: &str) -> String {
    let delivered = gw
        .smarthost
        .messages()
        .into_iter()
        .find(|m| m.text().contains(&format!("Subject: {subject}")))
        .expect("delivered to the smarthost");
    let input = delivered.save(&gw.data().join("signed.eml"));
    let signer = gw.data().join("signer.pem");
    common::run_ok(
        "openssl",
        &[
            "cms",
            "-verify",
            "-noverify",
            "-in",
            &input,
            "-signer",
            &signer.display().to_string(),
            "-out",
            "/dev/null",
        ],
    );
    std::fs::read_to_string(signer).expect("signer")
}

fn pem_of(path: &str) -> String {
    std::fs::read_to_string(path).expect("pem")
}

#[test]
fn mail_to_the_first_certificate_decrypts_after_two_renewals_and_outbound_is_signed_with_the_newest()
 {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let first = gw.data().join("first.pem").display().to_string();
    std::fs::copy(gw.mailbox_pem(ALICE), &first).expect("keep the first certificate");
    for _ in 0..2 {
        let out = gw.cli(&["mailbox", "renew", ALICE]);
        assert!(out.contains("its key keeps decrypting"), "{out}");
    }
    let newest = pem_of(&gw.mailbox_pem(ALICE));
    assert_ne!(newest, pem_of(&first));
    let show = gw.cli(&["mailbox", "show", ALICE]);
    assert_eq!(show.matches("decrypt only").count(), 2, "{show}");
    assert_eq!(show.matches("sign+decrypt").count(), 1, "{show}");

    // A partner still encrypting to the first certificate: decrypted at the gateway.
    let sealed = encrypted_to(gw.data(), &first, "to-first");
    let t = Client::connect_from(super::harness::INTERNET_CLIENT, gw.inbound).send(
        PARTNER,
        &[ALICE],
        &sealed,
    );
    assert_eq!(t.data.as_ref().map(|d| d.0), Some(250), "{t:?}");
    let text = gw.internal.messages().pop().expect("delivered").text();
    assert!(text.contains("Hello to-first."), "{text}");
    assert!(text.contains("X-Smimegate: decrypted"), "{text}");

    // Outbound: signed with the newest certificate.
    let t =
        Client::internal(gw.submission).send(ALICE, &[PARTNER], &message(ALICE, PARTNER, "out"));
    assert_eq!(t.data.as_ref().map(|d| d.0), Some(250), "{t:?}");
    let signer = signer_of(&gw, "out");
    assert_eq!(
        signer.trim(),
        newest.trim(),
        "not signed with the newest certificate"
    );
}

/// The CRL the gateway serves (DER), once the lifecycle job (run at start) or a
/// revocation has signed one with `entries` revoked certificates.
fn served_crl(gw: &Gateway, pem_path: &Path, entries: usize) {
    for _ in 0..300 {
        let (status, body) = gw.http_get("/pki/ca.crl");
        if status == 200 {
            let der = gw.data().join("served.crl");
            std::fs::write(&der, &body).expect("write");
            let pem = common::run_ok(
                "openssl",
                &["crl", "-inform", "DER", "-in", &der.display().to_string()],
            );
            let text = common::run_ok(
                "openssl",
                &[
                    "crl",
                    "-inform",
                    "DER",
                    "-in",
                    &der.display().to_string(),
                    "-noout",
                    "-text",
                ],
            );
            if text.matches("Serial Number:").count() == entries {
                std::fs::write(pem_path, pem).expect("write");
                return;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the gateway never served a CRL with {entries} entries");
}

#[test]
fn a_deactivated_mailbox_is_revoked_in_the_served_crl_signs_no_more_and_still_decrypts() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let leaf = gw.mailbox_pem(ALICE);
    let ca = gw.ca_pem(ALICE);
    let (status, ca_der) = gw.http_get("/pki/ca.crt");
    assert_eq!(status, 200);
    let served_ca = gw.data().join("served-ca.der");
    std::fs::write(&served_ca, ca_der).expect("write");
    let served_ca_pem = common::run_ok(
        "openssl",
        &[
            "x509",
            "-inform",
            "DER",
            "-in",
            &served_ca.display().to_string(),
        ],
    );
    // `ca_pem` is the issuing CA, then the root (the two-tier CA).
    let issuing = pem_of(&ca)
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .expect("issuing CA")
        .to_string();
    assert_eq!(
        served_ca_pem.trim(),
        issuing.trim(),
        "/pki/ca.crt is the issuing CA"
    );

    let bundle = gw.data().join("bundle.pem");
    let crl_pem = gw.data().join("crl.pem");
    let verify = |bundle: &Path| {
        common::run(
            "openssl",
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                &bundle.display().to_string(),
                &leaf,
            ],
        )
    };
    // Before: the served CRL lists nothing and openssl accepts the certificate.
    served_crl(&gw, &crl_pem, 0);
    std::fs::write(
        &bundle,
        pem_of(&ca) + &pem_of(&crl_pem.display().to_string()),
    )
    .expect("bundle");
    let (ok, out, err) = verify(&bundle);
    assert!(ok, "{out}{err}");
    // The root's CRL is served too (the lifecycle job signs it): with both CRLs the
    // whole chain checks out (`-crl_check_all`).
    let mut root_crl = None;
    for _ in 0..300 {
        let (status, body) = gw.http_get("/pki/root.crl");
        if status == 200 {
            root_crl = Some(body);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let root_der = gw.data().join("root.crl");
    std::fs::write(&root_der, root_crl.expect("served root CRL")).expect("write");
    let root_pem = common::run_ok(
        "openssl",
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            &root_der.display().to_string(),
        ],
    );
    let full = gw.data().join("full.pem");
    std::fs::write(
        &full,
        pem_of(&ca) + &pem_of(&crl_pem.display().to_string()) + &root_pem,
    )
    .expect("bundle");
    let out = common::run_ok(
        "openssl",
        &[
            "verify",
            "-crl_check_all",
            "-CAfile",
            &full.display().to_string(),
            &leaf,
        ],
    );
    assert!(out.contains(": OK"), "{out}");

    let out = gw.cli(&["mailbox", "deactivate", ALICE]);
    assert!(out.contains("revoke-pending until"), "{out}");
    let list = gw.cli(&["mailbox", "list"]);
    assert!(list.contains("revoke-pending"), "{list}");

    // After: listed, and openssl says revoked.
    served_crl(&gw, &crl_pem, 1);
    std::fs::write(
        &bundle,
        pem_of(&ca) + &pem_of(&crl_pem.display().to_string()),
    )
    .expect("bundle");
    let (ok, out, err) = verify(&bundle);
    assert!(!ok, "a revoked certificate verified: {out}{err}");
    assert!(
        format!("{out}{err}").contains("certificate revoked"),
        "{out}{err}"
    );

    // It signs no more...
    let t =
        Client::internal(gw.submission).send(ALICE, &[PARTNER], &message(ALICE, PARTNER, "after"));
    assert_eq!(t.data.as_ref().map(|d| d.0), Some(250), "{t:?}");
    let text = gw.smarthost.messages().pop().expect("delivered").text();
    assert!(
        !text.contains("multipart/signed"),
        "signed after deactivation: {text}"
    );
    // ...and mail encrypted to it still decrypts.
    let sealed = encrypted_to(gw.data(), &leaf, "late");
    let t = Client::connect_from(super::harness::INTERNET_CLIENT, gw.inbound).send(
        PARTNER,
        &[ALICE],
        &sealed,
    );
    assert_eq!(t.data.as_ref().map(|d| d.0), Some(250), "{t:?}");
    let text = gw.internal.messages().pop().expect("delivered").text();
    assert!(text.contains("Hello late."), "{text}");
}

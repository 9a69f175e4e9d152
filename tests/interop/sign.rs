//! Signing: what the engine emits is verified by openssl (the peer decides, not our
//! own parser), survives a relay that rewrites line endings, and fails when tampered.

use super::common;

use der::EncodePem;
use smimegate::hsm::{KeyAlgorithm, KeyRole};
use smimegate::mime::Limits;
use smimegate::pki::address::Address;
use smimegate::pki::ca::{self, CaIdentity};
use smimegate::smime::{SignerIdentity, sign_detached};

use common::token;

struct Fixture {
    dir: tempfile::TempDir,
    ca_path: String,
    ca: CaIdentity,
    signers: Vec<SignerIdentity>,
}

fn fixture() -> Fixture {
    let hsm = &token().hsm;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_key = hsm
        .generate_key_pair(
            KeyAlgorithm::P256,
            KeyRole::CertificateAuthority,
            "smime CA",
        )
        .expect("CA key");
    let ca_cert = ca::create_ca_certificate(hsm, &ca_key, "CN=S/MIME Test CA", 30).expect("CA");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(
        &ca_path,
        ca_cert.to_pem(der::pem::LineEnding::LF).expect("pem"),
    )
    .expect("write");
    let ca = CaIdentity {
        key_id: ca_key.id,
        algorithm: ca_key.algorithm,
        certificate: ca_cert.clone(),
    };
    let signers = [KeyAlgorithm::Rsa2048, KeyAlgorithm::P256]
        .into_iter()
        .map(|algorithm| {
            let key = hsm
                .generate_key_pair(algorithm, KeyRole::Mailbox, "signer")
                .expect("key");
            let address = Address::parse(&format!("{algorithm}@corp.example")).expect("address");
            let cert = ca::issue_mailbox_certificate(
                hsm,
                &ca,
                &address,
                &key,
                365,
                "http://crl.example/ca.crl",
            )
            .expect("certificate");
            SignerIdentity {
                key_id: key.id,
                key_algorithm: algorithm,
                scheme: ca::default_scheme(algorithm),
                certificate: cert,
                chain: vec![ca_cert.clone()],
            }
        })
        .collect();
    Fixture {
        dir,
        ca_path: ca_path.display().to_string(),
        ca,
        signers,
    }
}

/// `openssl cms -verify` on a signed message; returns the signed content it extracted.
fn openssl_verify(fx: &Fixture, signed: &[u8]) -> Result<Vec<u8>, String> {
    let path = fx.dir.path().join("signed.eml");
    std::fs::write(&path, signed).expect("write");
    let out = std::process::Command::new("openssl")
        .args([
            "cms",
            "-verify",
            "-purpose",
            "smimesign",
            "-CAfile",
            &fx.ca_path,
            "-in",
        ])
        .arg(&path)
        .output()
        .expect("openssl");
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

const PLAIN: &str = "From: sender@corp.example\r\nTo: bob@partner.example\r\nSubject: plain\r\n\
                     Message-ID: <1@corp.example>\r\n\r\nHello Bob,\r\nall 7-bit.\r\n";

#[test]
fn signed_messages_verify_with_openssl_for_rsa_and_ecdsa() {
    let fx = fixture();
    for signer in &fx.signers {
        let signed = sign_detached(&token().hsm, signer, PLAIN.as_bytes(), &Limits::default())
            .expect("sign");
        let text = String::from_utf8(signed.clone()).expect("ascii output");
        assert!(text.starts_with("From: sender@corp.example\r\n"), "{text}");
        assert!(text.contains("micalg=sha-256"), "{text}");
        assert!(
            text.contains("protocol=\"application/pkcs7-signature\""),
            "{text}"
        );
        assert!(text.contains("filename=\"smime.p7s\""), "{text}");
        let content = openssl_verify(&fx, &signed)
            .unwrap_or_else(|e| panic!("{:?}: {e}", signer.key_algorithm));
        assert!(
            String::from_utf8_lossy(&content).contains("Hello Bob,"),
            "{}",
            String::from_utf8_lossy(&content)
        );
    }
}

#[test]
fn eight_bit_bodies_are_reencoded_before_signing_and_survive_relays() {
    let fx = fixture();
    let message = "From: a@corp.example\nTo: b@partner.example\nSubject: Umlaute\n\
                   Content-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\n\
                   Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n\
                   Grüße aus Köln — ça va?\n--b1\nContent-Type: application/octet-stream\n\
                   Content-Transfer-Encoding: binary\n\n\u{00ff}\u{00fe}\u{0001}data\n--b1--\n";
    let signed = sign_detached(
        &token().hsm,
        &fx.signers[0],
        message.as_bytes(),
        &Limits::default(),
    )
    .expect("sign");
    assert!(signed.is_ascii(), "the signed message must be 7-bit");
    let text = String::from_utf8(signed.clone()).expect("ascii");
    assert!(
        text.contains("Content-Transfer-Encoding: quoted-printable\r\n"),
        "{text}"
    );
    assert!(text.contains("Gr=C3=BC=C3=9Fe aus K=C3=B6ln"), "{text}");
    assert!(
        text.contains("Content-Transfer-Encoding: base64\r\n"),
        "{text}"
    );
    openssl_verify(&fx, &signed).expect("verifies as emitted");

    // A relay that stores mail with LF line endings (mbox, maildir tools) does not
    // break it: the signed part is canonicalised again by the verifier.
    let lf: Vec<u8> = text.replace("\r\n", "\n").into_bytes();
    openssl_verify(&fx, &lf).expect("verifies after CRLF -> LF");
}

#[test]
fn tampering_breaks_the_signature() {
    let fx = fixture();
    let signed = sign_detached(
        &token().hsm,
        &fx.signers[1],
        PLAIN.as_bytes(),
        &Limits::default(),
    )
    .expect("sign");
    let text = String::from_utf8(signed).expect("ascii");
    let tampered = text.replace("all 7-bit.", "all 7-bit!");
    assert_ne!(tampered, text);
    assert!(openssl_verify(&fx, tampered.as_bytes()).is_err());
    // Outer headers are not signed (RFC 8551): changing them does not matter.
    let subject = text.replace("Subject: plain", "Subject: changed");
    openssl_verify(&fx, subject.as_bytes()).expect("outer headers are outside the signature");
}

#[test]
fn hostile_structure_gets_a_typed_error() {
    let fx = fixture();
    let mut deep = String::from("From: a@corp.example\r\n");
    for i in 0..1000 {
        deep.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
        ));
    }
    deep.push_str("Content-Type: text/plain\r\n\r\n\u{00e9}\r\n");
    let err = match sign_detached(
        &token().hsm,
        &fx.signers[0],
        deep.as_bytes(),
        &Limits::default(),
    ) {
        Ok(_) => panic!("1000-level nesting was signed"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("nesting deeper"), "{err}");

    let limits = Limits {
        max_size: 1024,
        ..Limits::default()
    };
    let big = format!("{PLAIN}{}", "x".repeat(2048));
    let err = match sign_detached(&token().hsm, &fx.signers[0], big.as_bytes(), &limits) {
        Ok(_) => panic!("oversized message was signed"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
}

/// Splits our multipart/signed into (signed entity bytes, DER signature).
fn detached_parts(signed: &[u8]) -> (Vec<u8>, Vec<u8>) {
    use base64::Engine;
    let text = String::from_utf8(signed.to_vec()).expect("ascii");
    let start = text.find("boundary=\"").expect("boundary") + "boundary=\"".len();
    let boundary = &text[start..start + text[start..].find('"').expect("quote")];
    let delimiter = format!("\r\n--{boundary}");
    let first = text.find(&format!("--{boundary}\r\n")).expect("first part") + boundary.len() + 4;
    let end = first + text[first..].find(&delimiter).expect("second delimiter");
    let entity = text.as_bytes()[first..end].to_vec();
    let sig_part = &text[end + delimiter.len()..];
    let body = &sig_part[sig_part.find("\r\n\r\n").expect("sig headers") + 4..];
    let b64: String = body
        .lines()
        .take_while(|l| !l.starts_with("--"))
        .collect::<Vec<_>>()
        .concat();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    (entity, der)
}

/// gpgsm, with its own home and a trust list holding only our test CA.
fn gpgsm_verify(fx: &Fixture, signed: &[u8]) -> Result<String, String> {
    let home = tempfile::tempdir().expect("GNUPGHOME");
    std::fs::write(
        home.path().join("gpgsm.conf"),
        "disable-crl-checks\ndisable-dirmngr\n",
    )
    .expect("conf");
    let gpgsm = |args: &[&str]| {
        std::process::Command::new("gpgsm")
            .env("GNUPGHOME", home.path())
            .arg("--batch")
            .args(args)
            .output()
            .expect("gpgsm")
    };
    let import = gpgsm(&["--import", &fx.ca_path]);
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    let listing =
        String::from_utf8_lossy(&gpgsm(&["--with-colons", "--list-keys"]).stdout).into_owned();
    let fingerprint = listing
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .expect("CA fingerprint")
        .to_string();
    std::fs::write(
        home.path().join("trustlist.txt"),
        format!("{fingerprint} S relax\n"),
    )
    .expect("trustlist");
    let (entity, der) = detached_parts(signed);
    let content = home.path().join("content");
    let signature = home.path().join("smime.p7s");
    std::fs::write(&content, entity).expect("write");
    std::fs::write(&signature, der).expect("write");
    let out = gpgsm(&[
        "--verify",
        &signature.display().to_string(),
        &content.display().to_string(),
    ]);
    let _ = std::process::Command::new("gpgconf")
        .args([
            "--homedir",
            &home.path().display().to_string(),
            "--kill",
            "all",
        ])
        .output();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() && stderr.contains("Good signature") {
        Ok(stderr)
    } else {
        Err(stderr)
    }
}

#[test]
fn signed_messages_verify_with_gpgsm() {
    let fx = fixture();
    let message =
        "From: a@corp.example\nSubject: gpgsm\nContent-Type: text/plain; charset=utf-8\n\nGrüße\n";
    for signer in &fx.signers {
        let signed = sign_detached(&token().hsm, signer, message.as_bytes(), &Limits::default())
            .expect("sign");
        let report = gpgsm_verify(&fx, &signed)
            .unwrap_or_else(|e| panic!("{:?}: {e}", signer.key_algorithm));
        assert!(
            report.contains(&format!("{}@corp.example", signer.key_algorithm)),
            "{report}"
        );
        // gpgsm is not vacuous either: a changed entity fails.
        let tampered = String::from_utf8(signed)
            .expect("ascii")
            .replace("Gr=C3=BC", "Gr=C3=BD");
        assert!(gpgsm_verify(&fx, tampered.as_bytes()).is_err());
    }
}

#[test]
fn our_own_signatures_pass_our_verifier_with_the_right_verdicts() {
    use smimegate::smime::verify::Verdict;
    let fx = fixture();
    let anchors = fx.signers[0].chain.clone();
    for signer in &fx.signers {
        let signed = sign_detached(&token().hsm, signer, PLAIN.as_bytes(), &Limits::default())
            .expect("sign");
        let from = format!("{}@corp.example", signer.key_algorithm);
        let v =
            common::verify_signature(&signed, Some(&from), &anchors, std::time::SystemTime::now());
        assert_eq!(v.verdict, Verdict::Valid, "{}", v.detail);
        assert!(v.signer().is_some_and(|s| s.capabilities.is_some()));
        let v = common::verify_signature(
            &signed,
            Some("sender@corp.example"),
            &anchors,
            std::time::SystemTime::now(),
        );
        assert_eq!(v.verdict, Verdict::AddressMismatch, "{}", v.detail);
    }
}

#[test]
fn opaque_signatures_verify_with_openssl_and_with_us() {
    use smimegate::smime::sign_opaque;
    use smimegate::smime::verify::Verdict;
    let fx = fixture();
    for signer in &fx.signers {
        let signed =
            sign_opaque(&token().hsm, signer, PLAIN.as_bytes(), &Limits::default()).expect("sign");
        let text = String::from_utf8(signed.clone()).expect("ascii");
        assert!(text.contains("smime-type=signed-data"), "{text}");
        assert!(!text.contains("Hello Bob"), "the content is inside the CMS");
        let content = openssl_verify(&fx, &signed)
            .unwrap_or_else(|e| panic!("{:?}: {e}", signer.key_algorithm));
        assert!(String::from_utf8_lossy(&content).contains("Hello Bob,"));
        let from = format!("{}@corp.example", signer.key_algorithm);
        let v = common::verify_signature(
            &signed,
            Some(&from),
            &signer.chain,
            std::time::SystemTime::now(),
        );
        assert_eq!(v.verdict, Verdict::Valid, "{}", v.detail);
    }
}

#[test]
fn a_signer_listed_on_our_crl_is_revoked_for_us_and_for_openssl() {
    use smimegate::pki::crl::{Revocation, build_crl};
    use smimegate::smime::verify::Verdict;
    use std::time::{Duration, SystemTime};
    let fx = fixture();
    let signer = &fx.signers[0];
    let signed =
        sign_detached(&token().hsm, signer, PLAIN.as_bytes(), &Limits::default()).expect("sign");
    let from = format!("{}@corp.example", signer.key_algorithm);
    let week = Duration::from_secs(7 * 86_400);
    let revoked = build_crl(
        &token().hsm,
        &fx.ca,
        1,
        &[Revocation {
            serial: signer
                .certificate
                .tbs_certificate()
                .serial_number()
                .as_bytes()
                .to_vec(),
            revoked_at: SystemTime::now() - Duration::from_secs(60),
            reason: None,
        }],
        week,
    )
    .expect("CRL");
    let clean = build_crl(&token().hsm, &fx.ca, 2, &[], week).expect("CRL");
    let check = |crl: &[u8]| {
        common::verify_signature_with_crls(
            &signed,
            Some(&from),
            &signer.chain,
            &[crl.to_vec()],
            SystemTime::now(),
        )
    };
    assert_eq!(check(&revoked).verdict, Verdict::Revoked);
    assert_eq!(check(&clean).verdict, Verdict::Valid);

    // openssl reads our CRL the same way (CRLs go into the -CAfile bundle).
    let crl_der = fx.dir.path().join("crl.der");
    std::fs::write(&crl_der, &revoked).expect("write");
    let crl_pem = common::run_ok(
        "openssl",
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            &crl_der.display().to_string(),
        ],
    );
    let bundle = fx.dir.path().join("bundle.pem");
    std::fs::write(
        &bundle,
        format!(
            "{}{crl_pem}",
            std::fs::read_to_string(&fx.ca_path).expect("ca")
        ),
    )
    .expect("write");
    let path = fx.dir.path().join("signed.eml");
    std::fs::write(&path, &signed).expect("write");
    let out = std::process::Command::new("openssl")
        .args([
            "cms",
            "-verify",
            "-crl_check",
            "-purpose",
            "smimesign",
            "-CAfile",
        ])
        .arg(&bundle)
        .arg("-in")
        .arg(&path)
        .output()
        .expect("openssl");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("revoked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_signature_scheme_the_engine_emits_verifies_with_openssl() {
    use smimegate::hsm::SignatureScheme;
    let fx = fixture();
    let rsa = &fx.signers[0];
    let ec = &fx.signers[1];
    for (base, scheme, micalg) in [
        (rsa, SignatureScheme::RsaPkcs1Sha256, "sha-256"),
        (rsa, SignatureScheme::RsaPkcs1Sha384, "sha-384"),
        (rsa, SignatureScheme::RsaPkcs1Sha512, "sha-512"),
        (rsa, SignatureScheme::RsaPssSha256, "sha-256"),
        (rsa, SignatureScheme::RsaPssSha512, "sha-512"),
        (ec, SignatureScheme::EcdsaSha256, "sha-256"),
        (ec, SignatureScheme::EcdsaSha384, "sha-384"),
        (ec, SignatureScheme::EcdsaSha512, "sha-512"),
        (rsa, SignatureScheme::RsaPssSha384, "sha-384"),
    ] {
        let signer = SignerIdentity {
            scheme,
            ..base.clone()
        };
        let signed = sign_detached(&token().hsm, &signer, PLAIN.as_bytes(), &Limits::default())
            .expect("sign");
        let text = String::from_utf8(signed.clone()).expect("ascii");
        assert!(text.contains(&format!("micalg={micalg}")), "{scheme:?}");
        openssl_verify(&fx, &signed).unwrap_or_else(|e| panic!("{scheme:?}: {e}"));
        let v = common::verify_signature(
            &signed,
            Some(&format!("{}@corp.example", signer.key_algorithm)),
            &signer.chain,
            std::time::SystemTime::now(),
        );
        assert_eq!(
            v.verdict,
            smimegate::smime::verify::Verdict::Valid,
            "{scheme:?}: {}",
            v.detail
        );
    }
}

/// The SignedData is written by hand (src/smime/signed_data.rs): it must be strict DER.
/// Decoded with the `cms` crate and encoded again it gives the same bytes (sets
/// sorted, lengths minimal), for detached and encapsulated content, RSA and ECDSA, and
/// it carries what RFC 5652 and RFC 8551 ask for.
#[test]
fn the_signed_data_is_strict_der_with_the_required_fields() {
    use cms::content_info::{CmsVersion, ContentInfo};
    use cms::signed_data::SignedData;
    use der::{Decode, Encode};
    use smimegate::smime::sign_opaque;
    let fx = fixture();
    let reencoded = |der: &[u8]| -> SignedData {
        let info = ContentInfo::from_der(der).expect("ContentInfo");
        assert_eq!(info.content_type, const_oid::db::rfc5911::ID_SIGNED_DATA);
        assert_eq!(info.to_der().expect("encode"), der, "not DER as emitted");
        let signed_data: SignedData = info.content.decode_as().expect("SignedData");
        // The parsed structure, encoded again, is byte for byte what we emitted.
        assert_eq!(
            signed_data.to_der().expect("encode"),
            info.content.to_der().expect("encode"),
            "SignedData is not DER as emitted"
        );
        signed_data
    };
    for signer in &fx.signers {
        let detached = sign_detached(&token().hsm, signer, PLAIN.as_bytes(), &Limits::default())
            .expect("sign");
        let (_, der) = detached_parts(&detached);
        let sd = reencoded(&der);
        assert_eq!(sd.version, CmsVersion::V1);
        assert!(sd.encap_content_info.econtent.is_none(), "detached");
        assert_eq!(sd.certificates.as_ref().map(|c| c.0.len()), Some(2));
        let info = sd.signer_infos.0.get(0).expect("one signer");
        assert_eq!(sd.signer_infos.0.len(), 1);
        assert_eq!(info.version, CmsVersion::V1);
        let oids: Vec<String> = info
            .signed_attrs
            .as_ref()
            .expect("signed attributes")
            .iter()
            .map(|a| a.oid.to_string())
            .collect();
        for required in [
            "1.2.840.113549.1.9.3",       // contentType
            "1.2.840.113549.1.9.4",       // messageDigest
            "1.2.840.113549.1.9.5",       // signingTime
            "1.2.840.113549.1.9.15",      // SMIMECapabilities
            "1.2.840.113549.1.9.16.2.11", // SMIMEEncryptionKeyPreference
        ] {
            assert!(oids.iter().any(|o| o == required), "{required} in {oids:?}");
        }

        let opaque =
            sign_opaque(&token().hsm, signer, PLAIN.as_bytes(), &Limits::default()).expect("sign");
        let text = String::from_utf8(opaque).expect("ascii");
        let body = &text[text.find("\r\n\r\n").expect("headers") + 4..];
        let b64: String = body.lines().collect();
        use base64::Engine;
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64");
        let sd = reencoded(&der);
        let content = sd.encap_content_info.econtent.expect("encapsulated");
        assert!(String::from_utf8_lossy(content.value()).contains("Hello Bob,"));
    }
}

/// The relay signs in two steps so that a token session is held only for the
/// signature itself: the result verifies with openssl like `sign_detached`'s, for a
/// message that is already canonical and one that must be converted and re-encoded.
#[test]
fn signing_in_two_steps_verifies_with_openssl() {
    use smimegate::smime::DetachedSigning;
    let fx = fixture();
    let eight_bit = "From: a@corp.example\nTo: b@partner.example\nSubject: Umlaute\n\
                     Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n\
                     Grüße aus Köln\n";
    for signer in &fx.signers {
        for message in [PLAIN, eight_bit] {
            let signing = DetachedSigning::new(
                std::sync::Arc::new(signer.clone()),
                message.as_bytes().to_vec(),
                &Limits::default(),
            )
            .expect("prepare");
            let (key, scheme, to_be_signed) = signing.to_be_signed();
            let signature = token()
                .hsm
                .sign(key, scheme, to_be_signed)
                .expect("token signature");
            let signed = signing.finish(&signature).expect("finish");
            assert!(signed.is_ascii());
            openssl_verify(&fx, &signed)
                .unwrap_or_else(|e| panic!("{:?}: {e}", signer.key_algorithm));
        }
    }
}

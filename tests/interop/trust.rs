//! Inbound trust at the engine (issue 8): verdicts that cannot be forged. Signed
//! messages are made by openssl; what a standard MIME parser shows is judged by
//! Python's `email` package, the parser the attacks were measured against.

use super::common;

use std::path::Path;
use std::time::SystemTime;

use der::DecodePem;
use smimegate::mime::Limits;
use smimegate::pki::trust::{DomainPattern, Scope, TrustAnchor, TrustAnchors};
use smimegate::smime::verify::{FromField, Verdict, Verification, VerifyContext, verify};
use x509_cert::Certificate;

use common::run_ok;

const ENTITY: &str = "Content-Type: text/plain\r\n\r\nPlease pay invoice 4711 to account 1234.\r\n";

fn ext(address: &str) -> String {
    format!(
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\n\
         subjectAltName=email:{address}\n"
    )
}

struct Partner {
    dir: tempfile::TempDir,
    ca: common::OpensslCa,
    ca_cert: Certificate,
}

impl Partner {
    fn new() -> Partner {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = common::OpensslCa::new(dir.path(), "partner");
        let ca_cert = load(Path::new(&ca.cert));
        Partner { dir, ca, ca_cert }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// (key, cert) for `address`, `key_spec` an openssl -newkey spec.
    fn person(&self, name: &str, address: &str, key_spec: &str) -> (String, String) {
        self.ca.issue(name, key_spec, &ext(address))
    }

    /// openssl cms -sign with every (cert, key) pair as a signer; `extra` arguments.
    fn sign(&self, signers: &[(String, String)], extra: &[&str]) -> Vec<u8> {
        let input = self.path("entity");
        std::fs::write(&input, ENTITY).expect("write");
        let out = self.path("signed");
        let mut args: Vec<String> = ["cms", "-sign", "-in", &input, "-out", &out, "-crlfeol"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (key, cert) in signers {
            args.extend(["-signer".into(), cert.clone(), "-inkey".into(), key.clone()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_ok("openssl", &args);
        std::fs::read(&out).expect("read")
    }
}

fn load(path: &Path) -> Certificate {
    Certificate::from_pem(std::fs::read(path).expect("read")).expect("PEM certificate")
}

fn with_from(from_lines: &str, signed: &[u8]) -> Vec<u8> {
    [
        format!("{from_lines}To: alice@corp.example\r\nSubject: invoice\r\n").into_bytes(),
        signed.to_vec(),
    ]
    .concat()
}

fn judge(message: &[u8], trust: &TrustAnchors) -> Verification {
    verify(
        message,
        &FromField::of_message(message),
        &VerifyContext {
            trust,
            crls: &[],
            revocation: None,
            now: SystemTime::now(),
            limits: &Limits::default(),
        },
    )
}

/// What Python's email package shows as the text of a message: the payload of every
/// text/plain part, in order.
fn python_shows(dir: &Path, message: &[u8]) -> String {
    let file = dir.join("python-input.eml");
    std::fs::write(&file, message).expect("write");
    run_ok(
        "python3",
        &[
            "-c",
            "import email,sys\n\
             m=email.message_from_bytes(open(sys.argv[1],'rb').read())\n\
             for p in m.walk():\n    \
                 if p.get_content_type()=='text/plain': print(p.get_payload())",
            &file.display().to_string(),
        ],
    )
}

fn boundary_of(message: &str) -> String {
    let at = message.find("boundary=\"").expect("boundary") + 10;
    message[at..]
        .split('"')
        .next()
        .expect("boundary value")
        .to_string()
}

#[test]
fn a_genuine_signature_around_an_attackers_text_is_malformed() {
    let p = Partner::new();
    let bob = p.person("bob", "bob@partner.example", "rsa:2048");
    let trust = TrustAnchors::unscoped(std::slice::from_ref(&p.ca_cert));
    let genuine = with_from("From: bob@partner.example\r\n", &p.sign(&[bob], &[]));
    assert_eq!(judge(&genuine, &trust).verdict, Verdict::Valid);
    let text = String::from_utf8(genuine.clone()).expect("ascii");
    let real = boundary_of(&text);
    let prefix = &real[..real.len() / 2];
    let signature_part = text
        .split(&format!("--{real}\r\n"))
        .nth(2)
        .expect("signature part")
        .split(&format!("\r\n--{real}--"))
        .next()
        .expect("signature part body");
    // The measured attack: the outer boundary becomes a prefix of the real one; new
    // parts under the prefix carry other text and the old signature.
    let forged = text.replace(
        &format!("boundary=\"{real}\""),
        &format!("boundary=\"{prefix}\""),
    ) + &format!(
        "\r\n--{prefix}\r\nContent-Type: text/plain\r\n\r\nPay account 6666 instead.\r\n\
             --{prefix}\r\n{signature_part}\r\n--{prefix}--\r\n"
    );
    let shown = python_shows(p.dir.path(), forged.as_bytes());
    assert!(shown.contains("account 6666"), "python shows: {shown}");
    let v = judge(forged.as_bytes(), &trust);
    assert_eq!(v.verdict, Verdict::Malformed, "{}", v.detail);

    // Quoting that two parsers read differently: Python's email counts quotes without
    // honouring a backslash, so it takes the second boundary; a folded quoted boundary
    // keeps its line break for it. Both must be malformed for us, never "valid".
    let desync_type = format!(
        "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; \
         micalg=sha-256;\r\n x=\"\\\\\"; boundary=\"{real}\"; y=\"; boundary=EVIL; w=\""
    );
    let original_type = text
        .lines()
        .find(|l| l.starts_with("Content-Type: multipart/signed"))
        .expect("outer Content-Type")
        .to_string();
    let desync = text.replacen(&original_type, &desync_type, 1).replacen(
        "\r\n\r\n",
        "\r\n\r\n--EVIL\r\nContent-Type: text/plain\r\n\r\nPay account 6666.\r\n--EVIL--\r\n",
        1,
    );
    let shown = python_shows(p.dir.path(), desync.as_bytes());
    assert!(shown.contains("account 6666"), "python shows: {shown}");
    let v = judge(desync.as_bytes(), &trust);
    assert_eq!(v.verdict, Verdict::Malformed, "quote desync: {}", v.detail);
    let folded = text.replace(
        &format!("boundary=\"{real}\""),
        &format!("boundary=\"{}\r\n {}\"", &real[..4], &real[4..]),
    );
    let v = judge(folded.as_bytes(), &trust);
    assert_eq!(
        v.verdict,
        Verdict::Malformed,
        "folded boundary: {}",
        v.detail
    );

    // Structural variants.
    let third_part = text.replace(
        &format!("\r\n--{real}--"),
        &format!("\r\n--{real}\r\nContent-Type: text/plain\r\n\r\nP.S. more\r\n--{real}--"),
    );
    let no_close = text.replace(&format!("\r\n--{real}--"), "\r\n");
    let two_types = text.replacen(
        "MIME-Version: 1.0\r\n",
        "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n",
        1,
    );
    let sig_two_types = text.replacen(
        "Content-Type: application/pkcs7-signature",
        "Content-Type: text/plain\r\nContent-Type: application/pkcs7-signature",
        1,
    );
    let unquoted_with_space = text.replace(
        &format!("boundary=\"{real}\""),
        &format!("boundary={real} x"),
    );
    let duplicate_boundary = text.replace(
        &format!("boundary=\"{real}\""),
        &format!("boundary=\"{real}\"; boundary=\"{prefix}\""),
    );
    let rfc2231 = text.replace(
        &format!("boundary=\"{real}\""),
        &format!("boundary*=us-ascii''{real}"),
    );
    let other_case = text.replace(
        &format!("boundary=\"{real}\""),
        &format!("boundary=\"{}\"", real.to_ascii_lowercase()),
    );
    for (name, message) in [
        ("a third body part", third_part),
        ("no closing delimiter", no_close),
        ("two Content-Type fields", two_types),
        (
            "two Content-Type fields in the signature part",
            sig_two_types,
        ),
        ("an unquoted boundary with a space", unquoted_with_space),
        ("two boundary parameters", duplicate_boundary),
        ("an RFC 2231 boundary", rfc2231),
        ("the boundary in another case", other_case),
    ] {
        assert_ne!(message, text, "{name}: the variant changed nothing");
        let v = judge(message.as_bytes(), &trust);
        assert_eq!(v.verdict, Verdict::Malformed, "{name}: {}", v.detail);
    }

    // What a standard parser reads the same way stays valid: the parameter name in
    // another case, the boundary unquoted, transport padding after a delimiter.
    let upper_name = text.replace("boundary=\"", "BOUNDARY=\"");
    let unquoted = text.replace(&format!("boundary=\"{real}\""), &format!("boundary={real}"));
    let padded = text.replacen(&format!("--{real}\r\n"), &format!("--{real}  \r\n"), 1);
    for (name, message) in [
        ("BOUNDARY=", upper_name),
        ("unquoted", unquoted),
        ("padding", padded),
    ] {
        let v = judge(message.as_bytes(), &trust);
        assert_eq!(v.verdict, Verdict::Valid, "{name}: {}", v.detail);
    }
}

#[test]
fn valid_needs_a_signer_carrying_the_one_from_address() {
    let p = Partner::new();
    let bob = p.person("bob", "bob@partner.example", "rsa:2048");
    let trust = TrustAnchors::unscoped(std::slice::from_ref(&p.ca_cert));
    let signed = p.sign(&[bob], &[]);
    let valid = with_from("From: \"Bob (Partner)\" <Bob@Partner.example>\r\n", &signed);
    let v = judge(&valid, &trust);
    assert_eq!(v.verdict, Verdict::Valid, "{}", v.detail);
    for (name, from) in [
        ("no From", ""),
        ("an unreadable From", "From: bob at partner\r\n"),
        (
            "two addresses",
            "From: bob@partner.example, mallory@evil.example\r\n",
        ),
        (
            "two From fields",
            "From: bob@partner.example\r\nFrom: mallory@evil.example\r\n",
        ),
        ("a group without addresses", "From: partners:;\r\n"),
    ] {
        let v = judge(&with_from(from, &signed), &trust);
        assert_eq!(v.verdict, Verdict::NoFrom, "{name}: {}", v.detail);
        assert!(
            v.detail.contains("From"),
            "{name}: the verdict says why: {}",
            v.detail
        );
    }
    let v = judge(
        &with_from(
            "From: \"bob@partner.example\" <mallory@evil.example>\r\n",
            &signed,
        ),
        &trust,
    );
    assert_eq!(v.verdict, Verdict::AddressMismatch, "{}", v.detail);
}

#[test]
fn every_signer_is_judged_and_the_from_signer_decides() {
    let p = Partner::new();
    let bob = p.person("bob", "bob@partner.example", "rsa:2048");
    let trust = TrustAnchors::unscoped(std::slice::from_ref(&p.ca_cert));
    let params = p.path("p256.param");
    run_ok(
        "openssl",
        &["ecparam", "-name", "prime256v1", "-out", &params],
    );
    let carol = p.ca.issue(
        "carol",
        &format!("ec:{params}"),
        &ext("carol@partner.example").replace("keyEncipherment", "keyAgreement"),
    );
    let both = p.sign(&[bob.clone(), carol.clone()], &[]);
    for from in ["bob@partner.example", "carol@partner.example"] {
        let v = judge(&with_from(&format!("From: {from}\r\n"), &both), &trust);
        assert_eq!(v.verdict, Verdict::Valid, "From {from}: {}", v.detail);
        assert_eq!(v.signers.len(), 2);
        assert!(v.signers.iter().all(|s| s.verdict == Verdict::Valid));
        assert_eq!(
            v.signer().map(|s| s.addresses.clone()),
            Some(vec![from.to_string()])
        );
    }
    let v = judge(&with_from("From: dave@partner.example\r\n", &both), &trust);
    assert_eq!(v.verdict, Verdict::AddressMismatch, "{}", v.detail);

    // A co-signer from an untrusted CA: bob's verdict stands, carol's is listed.
    let stranger = Partner::new();
    let eve = stranger.person("eve", "eve@elsewhere.example", "rsa:2048");
    let mixed = p.sign(&[bob.clone(), eve], &[]);
    let v = judge(&with_from("From: bob@partner.example\r\n", &mixed), &trust);
    assert_eq!(v.verdict, Verdict::Valid, "{}", v.detail);
    let summary = v.signer_summary();
    assert!(
        summary.contains("bob@partner.example valid")
            && summary.contains("unverified-signer untrusted")
            && !summary.contains("eve@"),
        "{summary}"
    );
    let v = judge(
        &with_from("From: eve@elsewhere.example\r\n", &mixed),
        &trust,
    );
    assert_eq!(v.verdict, Verdict::Untrusted, "{}", v.detail);
}

#[test]
fn signers_are_named_only_by_addresses_an_anchor_vouched_for() {
    let p = Partner::new();
    let bob = p.person("bob", "bob@partner.example", "rsa:2048");
    let trust = TrustAnchors {
        anchors: vec![TrustAnchor {
            certificate: p.ca_cert.clone(),
            scope: Scope::Domains(vec![
                DomainPattern::parse("partner.example").expect("pattern"),
            ]),
        }],
        managed: vec!["corp.example".into()],
    };
    // A co-signer nobody vouches for, whose certificate says what a stamp might.
    let stranger = Partner::new();
    let forger = stranger.ca.issue(
        "forger",
        "rsa:2048",
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=emailProtection\n\
         subjectAltName=email:x;signature=valid;signer=ceo@corp.example\n",
    );
    let signed = p.sign(&[bob.clone(), forger], &[]);
    let v = judge(&with_from("From: bob@partner.example\r\n", &signed), &trust);
    assert_eq!(v.verdict, Verdict::Valid, "{}", v.detail);
    let summary = v.signer_summary();
    // (SignerInfos are a SET: in DER order, not the signers' order.)
    let mut parts: Vec<&str> = summary.split(", ").collect();
    parts.sort();
    assert_eq!(
        parts,
        ["bob@partner.example valid", "unverified-signer untrusted"],
        "{summary}"
    );
    // The partner's CA, trusted for partner.example, certifies one of ours beside bob:
    // as a name constraint would, that makes the certificate untrusted altogether.
    let two_domains = p.ca.issue(
        "bob-and-ceo",
        "rsa:2048",
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\n\
         subjectAltName=email:bob@partner.example,email:ceo@corp.example\n",
    );
    let v = judge(
        &with_from(
            "From: bob@partner.example\r\n",
            &p.sign(&[two_domains], &[]),
        ),
        &trust,
    );
    assert_eq!(v.verdict, Verdict::Untrusted, "{}", v.detail);
    assert!(v.detail.contains("corp.example"), "{}", v.detail);
    // RSA keys under 2048 bits are refused, PKCS#1 v1.5 and PSS alike.
    let small = p.person("small", "small@partner.example", "rsa:1024");
    for extra in [&[][..], &["-keyopt", "rsa_padding_mode:pss"][..]] {
        let v = judge(
            &with_from(
                "From: small@partner.example\r\n",
                &p.sign(std::slice::from_ref(&small), extra),
            ),
            &trust,
        );
        assert_eq!(v.verdict, Verdict::Unsupported, "{extra:?}: {}", v.detail);
    }
}

#[test]
fn ecdsa_on_p384_and_with_sha512_is_verified() {
    let p = Partner::new();
    let trust = TrustAnchors::unscoped(std::slice::from_ref(&p.ca_cert));
    for (curve, digest) in [
        ("secp384r1", "sha384"),
        ("secp384r1", "sha512"),
        ("secp384r1", "sha256"),
        ("prime256v1", "sha512"),
    ] {
        let params = p.path(&format!("{curve}.param"));
        run_ok("openssl", &["ecparam", "-name", curve, "-out", &params]);
        let name = format!("bob-{curve}-{digest}");
        let signer = p.ca.issue(
            &name,
            &format!("ec:{params}"),
            &ext("bob@partner.example").replace("keyEncipherment", "keyAgreement"),
        );
        let signed = p.sign(&[signer], &["-md", digest]);
        let message = with_from("From: bob@partner.example\r\n", &signed);
        let v = judge(&message, &trust);
        assert_eq!(v.verdict, Verdict::Valid, "{curve} {digest}: {}", v.detail);
        let tampered = String::from_utf8(message)
            .expect("ascii")
            .replace("invoice 4711", "invoice 4712");
        let v = judge(tampered.as_bytes(), &trust);
        assert_eq!(
            v.verdict,
            Verdict::BadSignature,
            "{curve} {digest}: {}",
            v.detail
        );
    }
}

#[test]
fn anchors_vouch_only_for_their_domains_and_never_for_ours() {
    let p = Partner::new();
    let bob = p.person("bob", "bob@partner.example", "rsa:2048");
    // The partner's CA also certifies someone at another partner, and one of ours.
    let carol = p.person("carol", "carol@other.example", "rsa:2048");
    let alice = p.person("alice", "alice@corp.example", "rsa:2048");
    let scoped = |scope: Scope| TrustAnchors {
        anchors: vec![TrustAnchor {
            certificate: p.ca_cert.clone(),
            scope,
        }],
        managed: vec!["corp.example".into()],
    };
    let partner_only = scoped(Scope::Domains(vec![
        DomainPattern::parse("partner.example").expect("pattern"),
    ]));
    let any_foreign = scoped(Scope::AnyForeign);
    let message = |signer: &(String, String), from: &str| {
        with_from(
            &format!("From: {from}\r\n"),
            &p.sign(std::slice::from_ref(signer), &[]),
        )
    };
    let bob_mail = message(&bob, "bob@partner.example");
    let carol_mail = message(&carol, "carol@other.example");
    let alice_mail = message(&alice, "alice@corp.example");
    assert_eq!(judge(&bob_mail, &partner_only).verdict, Verdict::Valid);
    let v = judge(&carol_mail, &partner_only);
    assert_eq!(v.verdict, Verdict::Untrusted, "{}", v.detail);
    assert!(
        v.detail.contains("not trusted for other.example"),
        "{}",
        v.detail
    );
    assert_eq!(judge(&carol_mail, &any_foreign).verdict, Verdict::Valid);
    for trust in [&partner_only, &any_foreign] {
        let v = judge(&alice_mail, trust);
        assert_eq!(v.verdict, Verdict::Untrusted, "ours: {}", v.detail);
    }
    // Listing a managed domain does not make it vouchable.
    let with_ours = scoped(Scope::Domains(vec![
        DomainPattern::parse("corp.example").expect("pattern"),
    ]));
    assert_eq!(judge(&alice_mail, &with_ours).verdict, Verdict::Untrusted);
}

#[test]
fn the_encryption_certificate_is_the_one_the_signer_prefers_and_may_encrypt() {
    let p = Partner::new();
    let trust = TrustAnchors::unscoped(std::slice::from_ref(&p.ca_cert));
    // A signing-only certificate is not offered for encryption.
    let signing_only = p.ca.issue(
        "bob-sign",
        "rsa:2048",
        &ext("bob@partner.example").replace(",keyEncipherment", ""),
    );
    let v = judge(
        &with_from(
            "From: bob@partner.example\r\n",
            &p.sign(&[signing_only], &[]),
        ),
        &trust,
    );
    assert_eq!(v.verdict, Verdict::Valid, "{}", v.detail);
    assert!(v.signer().expect("signer").encryption_certificate.is_none());
    // A dual-use certificate is.
    let dual = p.person("bob", "bob@partner.example", "rsa:2048");
    let v = judge(
        &with_from(
            "From: bob@partner.example\r\n",
            &p.sign(std::slice::from_ref(&dual), &[]),
        ),
        &trust,
    );
    let signer = v.signer().expect("signer");
    assert_eq!(
        signer
            .encryption_certificate
            .as_ref()
            .map(|e| &e.certificate),
        signer.certificate.as_ref()
    );
    assert!(signer.signing_time.is_some());
}

/// A detached signature made with the cms builder and a token key, carrying an
/// SMIMEEncryptionKeyPreference (RFC 8551 §2.5.3) that names `preferred` by issuer
/// and serial, and the certificates `carried`.
fn sign_with_preference(
    signer: &smimegate::smime::SignerIdentity,
    preferred: &Certificate,
    carried: &[Certificate],
) -> Vec<u8> {
    use cms::builder::{SignedDataBuilder, SignerInfoBuilder};
    use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
    use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
    use der::asn1::SetOfVec;
    use der::{Any, Decode, Encode};
    use sha2::Digest;
    use smimegate::hsm::{TokenSignature, TokenSigner};
    let hsm = &common::token().hsm;
    let digest = sha2::Sha256::digest(ENTITY.as_bytes()).to_vec();
    let eci = EncapsulatedContentInfo {
        econtent_type: const_oid::db::rfc5911::ID_DATA,
        econtent: None,
    };
    let tbs = signer.certificate.tbs_certificate();
    let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
        issuer: tbs.issuer().clone(),
        serial_number: tbs.serial_number().clone(),
    });
    let sha256 = spki::AlgorithmIdentifierOwned {
        oid: const_oid::db::rfc5912::ID_SHA_256,
        parameters: None,
    };
    let mut info = SignerInfoBuilder::new(sid, sha256.clone(), &eci, Some(&digest)).expect("info");
    let mut ias = IssuerAndSerialNumber {
        issuer: preferred.tbs_certificate().issuer().clone(),
        serial_number: preferred.tbs_certificate().serial_number().clone(),
    }
    .to_der()
    .expect("issuer and serial");
    ias[0] = 0xa0; // [0] IMPLICIT IssuerAndSerialNumber
    let mut values = SetOfVec::new();
    values
        .insert(Any::from_der(&ias).expect("any"))
        .expect("value");
    info.add_signed_attribute(x509_cert::attr::Attribute {
        oid: const_oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.11"),
        values,
    })
    .expect("attribute");
    let token_signer = TokenSigner::new(
        hsm.clone(),
        signer.key_id.clone(),
        signer.scheme,
        tbs.subject_public_key_info().clone(),
    );
    let mut builder = SignedDataBuilder::new(&eci);
    builder.add_digest_algorithm(sha256).expect("digest");
    for cert in carried {
        builder
            .add_certificate(CertificateChoices::Certificate(cert.clone()))
            .expect("certificate");
    }
    builder
        .add_signer_info::<_, TokenSignature>(info, &token_signer)
        .expect("sign");
    let der = builder.build().expect("build").to_der().expect("der");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!(
        "From: signer@corp.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; \
         protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"b1\"\r\n\r\n\
         --b1\r\n{ENTITY}\r\n--b1\r\nContent-Type: application/pkcs7-signature\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b1--\r\n"
    )
    .into_bytes()
}

#[test]
fn an_encryption_key_preference_names_the_certificate_to_encrypt_to() {
    use smimegate::hsm::KeyAlgorithm;
    let ca = common::token_ca("CN=Preference CA");
    let (sign_key, sign_cert) = common::token_mailbox(&ca, "signer", KeyAlgorithm::P256);
    let (_, enc_cert) = common::token_mailbox(&ca, "signer", KeyAlgorithm::Rsa2048);
    let signer = smimegate::smime::SignerIdentity {
        key_id: sign_key.id.clone(),
        key_algorithm: KeyAlgorithm::P256,
        scheme: smimegate::pki::ca::default_scheme(KeyAlgorithm::P256),
        certificate: sign_cert.clone(),
        chain: vec![ca.certificate.clone()],
    };
    let trust = TrustAnchors::unscoped(std::slice::from_ref(&ca.certificate));
    let all = [sign_cert.clone(), enc_cert.clone(), ca.certificate.clone()];
    let v = judge(&sign_with_preference(&signer, &enc_cert, &all), &trust);
    assert_eq!(v.verdict, Verdict::Valid, "{}", v.detail);
    assert_eq!(
        v.signer()
            .and_then(|s| s.encryption_certificate.as_ref())
            .map(|e| &e.certificate),
        Some(&enc_cert),
        "the preferred certificate, not the signing one"
    );
    // Named but not carried: nothing to encrypt to (not the signing certificate).
    let v = judge(
        &sign_with_preference(
            &signer,
            &enc_cert,
            &[sign_cert.clone(), ca.certificate.clone()],
        ),
        &trust,
    );
    assert_eq!(v.verdict, Verdict::Valid, "{}", v.detail);
    assert!(v.signer().expect("signer").encryption_certificate.is_none());
    // Named and carried, but from a CA nobody trusts: not offered either.
    let other_ca = common::token_ca("CN=Untrusted CA");
    let (_, stranger) = common::token_mailbox(&other_ca, "signer", KeyAlgorithm::Rsa2048);
    let v = judge(
        &sign_with_preference(
            &signer,
            &stranger,
            &[sign_cert, stranger.clone(), ca.certificate.clone()],
        ),
        &trust,
    );
    assert_eq!(v.verdict, Verdict::Valid, "{}", v.detail);
    assert!(v.signer().expect("signer").encryption_certificate.is_none());
}

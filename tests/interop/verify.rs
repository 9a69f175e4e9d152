//! Verification: signatures made by openssl (detached, opaque, PSS, ECDSA) and by our
//! engine are checked, and each kind of bad signature or certificate gets its verdict.

use super::common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use der::DecodePem;
use smimegate::smime::verify::Verdict;
use x509_cert::Certificate;

use common::run_ok;

const MESSAGE: &str = "Content-Type: text/plain\r\n\r\nPlease pay invoice 4711.\r\n";

struct Pki {
    dir: tempfile::TempDir,
    openssl: common::OpensslCa,
    ca: Certificate,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let openssl = common::OpensslCa::new(dir.path(), "partner");
        let ca = load(Path::new(&openssl.cert));
        Pki { dir, openssl, ca }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A leaf signed by the CA; `key` is an openssl -newkey spec, `ext` extension lines.
    fn leaf(&self, name: &str, key: &str, ext: &str) -> (String, String) {
        self.openssl.issue(name, key, ext)
    }

    fn sign(&self, key: &str, cert: &str, extra: &[&str]) -> Vec<u8> {
        let input = self.path("msg");
        std::fs::write(&input, MESSAGE).expect("write");
        let out = self.path("signed.eml");
        let mut args = vec![
            "cms",
            "-sign",
            "-in",
            input.as_str(),
            "-signer",
            cert,
            "-inkey",
            key,
            "-out",
            out.as_str(),
        ];
        args.extend_from_slice(extra);
        run_ok("openssl", &args);
        let signed = std::fs::read(&out).expect("read");
        let mut message = b"From: bob@partner.example\r\nSubject: invoice\r\n".to_vec();
        message.extend_from_slice(&signed);
        message
    }
}

fn load(path: &Path) -> Certificate {
    Certificate::from_pem(std::fs::read(path).expect("read")).expect("PEM certificate")
}

const SMIME_EXT: &str = "keyUsage=critical,digitalSignature,keyEncipherment\n\
                         extendedKeyUsage=emailProtection\nsubjectAltName=email:bob@partner.example\n";

fn check(pki: &Pki, message: &[u8], from: &str) -> smimegate::smime::verify::Verification {
    common::verify_signature(
        message,
        Some(from),
        std::slice::from_ref(&pki.ca),
        SystemTime::now(),
    )
}

#[test]
fn openssl_signatures_of_every_kind_are_valid() {
    let pki = Pki::new();
    let (rsa_key, rsa_cert) = pki.leaf("bob-rsa", "rsa:2048", SMIME_EXT);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("detached RSA", pki.sign(&rsa_key, &rsa_cert, &[])),
        ("opaque RSA", pki.sign(&rsa_key, &rsa_cert, &["-nodetach"])),
        (
            "RSA-PSS",
            pki.sign(&rsa_key, &rsa_cert, &["-keyopt", "rsa_padding_mode:pss"]),
        ),
        ("SHA-512", pki.sign(&rsa_key, &rsa_cert, &["-md", "sha512"])),
    ];
    for (name, message) in cases {
        let v = check(&pki, &message, "bob@partner.example");
        assert_eq!(v.verdict, Verdict::Valid, "{name}: {}", v.detail);
        assert!(
            v.signer().is_some_and(|s| s.capabilities.is_some()),
            "{name}: openssl sends SMIMECapabilities"
        );
        let content = String::from_utf8(v.content.expect("content")).expect("text");
        assert!(content.contains("invoice 4711"), "{name}: {content}");
        // The From address must be the certificate's.
        let v = check(&pki, &message, "mallory@partner.example");
        assert_eq!(v.verdict, Verdict::AddressMismatch, "{name}");
    }
}

#[test]
fn ecdsa_signatures_are_valid() {
    let pki = Pki::new();
    let params = pki.path("p256.param");
    run_ok(
        "openssl",
        &["ecparam", "-name", "prime256v1", "-out", &params],
    );
    let ec_ext = SMIME_EXT.replace("keyEncipherment", "keyAgreement");
    let (key, cert) = pki.leaf("bob-ec", &format!("ec:{params}"), &ec_ext);
    let v = check(&pki, &pki.sign(&key, &cert, &[]), "BOB@Partner.Example");
    assert_eq!(v.verdict, Verdict::Valid, "{}", v.detail);
}

#[test]
fn each_fault_gets_its_own_verdict() {
    let pki = Pki::new();
    let (key, cert) = pki.leaf("bob", "rsa:2048", SMIME_EXT);
    let good = pki.sign(&key, &cert, &[]);
    let text = String::from_utf8(good.clone()).expect("ascii");

    // Tampered body.
    let tampered = text.replace("invoice 4711", "invoice 4712");
    assert_eq!(
        check(&pki, tampered.as_bytes(), "bob@partner.example").verdict,
        Verdict::BadSignature
    );

    // Validity, judged at other times.
    let later = SystemTime::now() + Duration::from_secs(60 * 86_400);
    let v = common::verify_signature(
        &good,
        Some("bob@partner.example"),
        std::slice::from_ref(&pki.ca),
        later,
    );
    assert_eq!(v.verdict, Verdict::Expired, "{}", v.detail);
    let earlier = SystemTime::now() - Duration::from_secs(2 * 86_400);
    let v = common::verify_signature(
        &good,
        Some("bob@partner.example"),
        std::slice::from_ref(&pki.ca),
        earlier,
    );
    assert_eq!(v.verdict, Verdict::NotYetValid, "{}", v.detail);

    // Not trusted: no anchors at all, or a self-signed signer.
    let v = common::verify_signature(&good, Some("bob@partner.example"), &[], SystemTime::now());
    assert_eq!(v.verdict, Verdict::Untrusted, "{}", v.detail);
    let selfsigned_key = pki.path("self.key");
    let selfsigned = pki.path("self.pem");
    run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &selfsigned_key,
            "-out",
            &selfsigned,
            "-days",
            "5",
            "-subj",
            "/CN=bob",
            "-addext",
            "subjectAltName=email:bob@partner.example",
        ],
    );
    let v = check(
        &pki,
        &pki.sign(&selfsigned_key, &selfsigned, &[]),
        "bob@partner.example",
    );
    assert_eq!(v.verdict, Verdict::Untrusted, "{}", v.detail);

    // Wrong usage: a TLS server certificate, and one without digitalSignature.
    let (k, c) = pki.leaf(
        "tls",
        "rsa:2048",
        &SMIME_EXT.replace("emailProtection", "serverAuth"),
    );
    let v = check(&pki, &pki.sign(&k, &c, &[]), "bob@partner.example");
    assert_eq!(v.verdict, Verdict::WrongUsage, "{}", v.detail);
    let (k, c) = pki.leaf(
        "nosig",
        "rsa:2048",
        &SMIME_EXT.replace("digitalSignature,", ""),
    );
    let v = check(&pki, &pki.sign(&k, &c, &[]), "bob@partner.example");
    assert_eq!(v.verdict, Verdict::WrongUsage, "{}", v.detail);

    // Malformed: garbled base64 and truncated DER.
    let garbled = text.replacen("MII", "M*!", 1);
    assert_eq!(
        check(&pki, garbled.as_bytes(), "bob@partner.example").verdict,
        Verdict::Malformed
    );
    let not_signed = b"From: a@b.example\r\nContent-Type: text/plain\r\n\r\nhi\r\n";
    assert_eq!(
        check(&pki, not_signed, "a@b.example").verdict,
        Verdict::Malformed
    );
}

#[test]
fn a_tampered_signed_attribute_is_a_bad_signature() {
    let pki = Pki::new();
    let (key, cert) = pki.leaf("bob", "rsa:2048", SMIME_EXT);
    let der_path = pki.path("sig.der");
    let input = pki.path("msg");
    std::fs::write(&input, MESSAGE).expect("write");
    run_ok(
        "openssl",
        &[
            "cms",
            "-sign",
            "-in",
            &input,
            "-signer",
            &cert,
            "-inkey",
            &key,
            "-nodetach",
            "-outform",
            "DER",
            "-out",
            &der_path,
        ],
    );
    let mut der = std::fs::read(&der_path).expect("read");
    // signingTime, the last UTCTime ("YYMMDDhhmmssZ") after the certificates: change
    // one digit of its seconds.
    let at = der
        .windows(2)
        .rposition(|w| w == [0x17, 0x0d])
        .map(|p| p + 2 + 11)
        .expect("signingTime");
    der[at] = if der[at] == b'0' { b'1' } else { b'0' };
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let message = format!(
        "From: bob@partner.example\r\nContent-Type: application/pkcs7-mime; smime-type=signed-data\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n"
    );
    let v = check(&pki, message.as_bytes(), "bob@partner.example");
    assert_eq!(v.verdict, Verdict::BadSignature, "{}", v.detail);
}

/// RFC 5652 §5.4: the signature covers the signed attributes as the signer encoded
/// them. A signer that did not put the SET OF in DER order (some clients do not) must
/// still verify, and reordering the attributes without signing again must not.
#[test]
fn signed_attributes_are_verified_in_the_order_the_signer_wrote_them() {
    use base64::Engine;
    use der::{Decode, Encode};
    use sha2::Digest;
    let pki = Pki::new();
    let (key, cert) = pki.leaf("bob", "rsa:2048", SMIME_EXT);
    let content = pki.path("content");
    std::fs::write(&content, MESSAGE).expect("write");
    let sig_path = pki.path("sig.der");
    run_ok(
        "openssl",
        &[
            "cms", "-sign", "-binary", "-in", &content, "-signer", &cert, "-inkey", &key,
            "-outform", "DER", "-out", &sig_path,
        ],
    );
    let original = std::fs::read(&sig_path).expect("signature");
    let info = {
        let ci = cms::content_info::ContentInfo::from_der(&original).expect("ContentInfo");
        let sd: cms::signed_data::SignedData = ci.content.decode_as().expect("SignedData");
        sd.signer_infos.0.iter().next().expect("signer").clone()
    };
    let attrs = info.signed_attrs.clone().expect("signed attributes");
    let sorted = attrs.to_der().expect("attributes");
    let elements: Vec<Vec<u8>> = attrs
        .iter()
        .map(|a| a.to_der().expect("attribute"))
        .collect();
    assert!(
        elements.len() >= 3,
        "openssl writes several signed attributes"
    );
    let reversed: Vec<u8> = elements.iter().rev().flatten().copied().collect();
    let header = sorted.len() - reversed.len();
    let mut implicit = sorted.clone();
    implicit[0] = 0xa0;
    let at = original
        .windows(implicit.len())
        .position(|w| w == implicit.as_slice())
        .expect("the attributes in the DER");
    let mut reordered = original.clone();
    reordered[at + header..at + implicit.len()].copy_from_slice(&reversed);

    let message = |cms: &[u8]| -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cms);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect();
        format!(
            "From: bob@partner.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; \
             protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"b\"\r\n\r\n\
             --b\r\n{MESSAGE}\r\n--b\r\nContent-Type: application/pkcs7-signature\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
            lines.join("\r\n")
        )
        .into_bytes()
    };
    // Reordered but not signed again: the signature no longer fits.
    let v = check(&pki, &message(&reordered), "bob@partner.example");
    assert_eq!(v.verdict, Verdict::BadSignature, "{}", v.detail);

    // Signed again over the attributes in the new order (openssl pkeyutl, PKCS#1 v1.5).
    let mut set = sorted[..header].to_vec();
    set.extend_from_slice(&reversed);
    let hash_path = pki.path("attrs.sha256");
    std::fs::write(&hash_path, sha2::Sha256::digest(&set)).expect("hash");
    let new_sig_path = pki.path("attrs.sig");
    run_ok(
        "openssl",
        &[
            "pkeyutl",
            "-sign",
            "-inkey",
            &key,
            "-pkeyopt",
            "digest:sha256",
            "-in",
            &hash_path,
            "-out",
            &new_sig_path,
        ],
    );
    let new_sig = std::fs::read(&new_sig_path).expect("signature");
    let old_sig = info.signature.as_bytes();
    assert_eq!(new_sig.len(), old_sig.len());
    let at = reordered
        .windows(old_sig.len())
        .position(|w| w == old_sig)
        .expect("the signature in the DER");
    reordered[at..at + old_sig.len()].copy_from_slice(&new_sig);
    let v = check(&pki, &message(&reordered), "bob@partner.example");
    assert_eq!(v.verdict, Verdict::Valid, "{}", v.detail);
}

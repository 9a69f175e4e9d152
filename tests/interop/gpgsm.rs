//! gpgsm as the partner's client: it decrypts what we encrypt to it, and we verify
//! what it signs. (Signatures we make are checked by gpgsm in smime_sign.rs; messages
//! gpgsm encrypts to a token key in smime_decrypt.rs.)

use super::common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::SystemTime;

use der::DecodePem;
use smimegate::mime::Limits;
use smimegate::smime::encrypt::{ContentCipher, KeyTransportChoice, Recipient, encrypt_message};
use smimegate::smime::verify::Verdict;
use x509_cert::Certificate;

use common::run_ok;

/// A partner CA and a partner certificate with its key, and a gpgsm home that holds
/// the key (imported from PKCS#12) and trusts the CA.
struct GpgsmPartner {
    dir: tempfile::TempDir,
    home: tempfile::TempDir,
    ca: Certificate,
    cert: Certificate,
}

impl GpgsmPartner {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = |n: &str| dir.path().join(n).display().to_string();
        let openssl = common::OpensslCa::new(dir.path(), "partner");
        let (bob_key, bob_cert) = openssl.issue(
            "bob",
            "rsa:2048",
            "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\n\
             subjectAltName=email:bob@partner.example\n",
        );
        // gpgsm reads the legacy PKCS#12 encryption only.
        run_ok(
            "openssl",
            &[
                "pkcs12",
                "-export",
                "-legacy",
                "-inkey",
                &bob_key,
                "-in",
                &bob_cert,
                "-certfile",
                &openssl.cert,
                "-passout",
                "pass:secret",
                "-out",
                &p("bob.p12"),
            ],
        );
        let home = tempfile::tempdir().expect("GNUPGHOME");
        std::fs::write(
            home.path().join("gpgsm.conf"),
            "disable-crl-checks\ndisable-dirmngr\n",
        )
        .expect("conf");
        std::fs::write(
            home.path().join("gpg-agent.conf"),
            "allow-loopback-pinentry\n",
        )
        .expect("conf");
        let partner = GpgsmPartner {
            ca: load(Path::new(&openssl.cert)),
            cert: load(Path::new(&bob_cert)),
            dir,
            home,
        };
        partner.gpgsm(&["--import", &openssl.cert]);
        partner.gpgsm(&["--import", &p_of(&partner.dir, "bob.p12")]);
        let listing =
            String::from_utf8_lossy(&partner.gpgsm(&["--with-colons", "--list-keys"]).stdout)
                .into_owned();
        let trust: String = listing
            .lines()
            .filter(|l| l.starts_with("fpr:"))
            .filter_map(|l| l.split(':').nth(9))
            .map(|f| format!("{f} S relax\n"))
            .collect();
        std::fs::write(partner.home.path().join("trustlist.txt"), trust).expect("trustlist");
        partner
    }

    /// Runs gpgsm in batch mode with the passphrase on stdin.
    fn gpgsm(&self, args: &[&str]) -> Output {
        use std::io::Write;
        let mut child = Command::new("gpgsm")
            .env("GNUPGHOME", self.home.path())
            .args([
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase-fd",
                "0",
            ])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("gpgsm");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"secret\n")
            .expect("passphrase");
        let out = child.wait_with_output().expect("gpgsm");
        assert!(
            out.status.success(),
            "gpgsm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for GpgsmPartner {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args([
                "--homedir",
                &self.home.path().display().to_string(),
                "--kill",
                "all",
            ])
            .output();
    }
}

fn p_of(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).display().to_string()
}

fn load(path: &Path) -> Certificate {
    Certificate::from_pem(std::fs::read(path).expect("read")).expect("certificate")
}

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
    let content = partner.dir.path().join("content");
    std::fs::write(
        &content,
        "Content-Type: text/plain\r\n\r\nSigned by gpgsm.\r\n",
    )
    .expect("write");
    let signature = partner.dir.path().join("content.p7s");
    partner.gpgsm(&[
        "--detach-sign",
        "-o",
        &signature.display().to_string(),
        &content.display().to_string(),
    ]);
    use base64::Engine;
    let b64 =
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&signature).expect("read"));
    let message = format!(
        "From: bob@partner.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; \
         protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"b\"\r\n\r\n--b\r\n\
         Content-Type: text/plain\r\n\r\nSigned by gpgsm.\r\n\r\n--b\r\nContent-Type: application/pkcs7-signature\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b--\r\n"
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

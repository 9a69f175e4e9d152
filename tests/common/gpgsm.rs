//! gpgsm as a partner's mail client: a gpgsm home holding the partner's key (imported
//! from PKCS#12) and trusting the partner's CA. Each partner has its own GNUPGHOME and
//! its gpg-agent is stopped when it is dropped.

use std::path::Path;
use std::process::{Command, Output};

use der::DecodePem;
use x509_cert::Certificate;

use super::run_ok;

/// A partner CA and a partner certificate with its key, and a gpgsm home that holds
/// the key (imported from PKCS#12) and trusts the CA.
pub struct GpgsmPartner {
    pub dir: tempfile::TempDir,
    pub home: tempfile::TempDir,
    pub ca: Certificate,
    pub cert: Certificate,
    /// The partner CA's certificate file (PEM).
    pub ca_path: String,
}

impl GpgsmPartner {
    /// bob@partner.example, as gpgsm holds him.
    pub fn new() -> Self {
        Self::for_address("bob@partner.example")
    }

    pub fn for_address(address: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = |n: &str| dir.path().join(n).display().to_string();
        let openssl = super::OpensslCa::new(dir.path(), "partner");
        let (bob_key, bob_cert) = openssl.issue(
            "bob",
            "rsa:2048",
            &format!(
                "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\n\
                 subjectAltName=email:{address}\n"
            ),
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
            ca_path: openssl.cert.clone(),
            ca: load(Path::new(&openssl.cert)),
            cert: load(Path::new(&bob_cert)),
            dir,
            home,
        };
        partner.import_trusted(&[&openssl.cert, &p_of(&partner.dir, "bob.p12")]);
        partner
    }

    /// A multipart/signed message of `entity` with gpgsm's detached signature.
    pub fn signed_message(&self, entity: &str) -> String {
        use base64::Engine;
        let content = self.dir.path().join("content");
        std::fs::write(&content, entity).expect("write");
        let signature = self.dir.path().join("content.p7s");
        self.gpgsm(&[
            "--detach-sign",
            "-o",
            &signature.display().to_string(),
            &content.display().to_string(),
        ]);
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(&signature).expect("read"));
        format!(
            "MIME-Version: 1.0\r\nContent-Type: multipart/signed; \
             protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"b\"\r\n\r\n--b\r\n\
             {entity}\r\n--b\r\nContent-Type: application/pkcs7-signature\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b--\r\n"
        )
    }

    /// Imports certificates or PKCS#12 files and trusts every root gpgsm now holds.
    pub fn import_trusted(&self, files: &[&str]) {
        for file in files {
            self.gpgsm(&["--import", file]);
        }
        let listing =
            String::from_utf8_lossy(&self.gpgsm(&["--with-colons", "--list-keys"]).stdout)
                .into_owned();
        let trust: String = listing
            .lines()
            .filter(|l| l.starts_with("fpr:"))
            .filter_map(|l| l.split(':').nth(9))
            .map(|f| format!("{f} S relax\n"))
            .collect();
        std::fs::write(self.home.path().join("trustlist.txt"), trust).expect("trustlist");
        // The agent read the trust list when it started: make it read it again.
        let _ = Command::new("gpgconf")
            .args([
                "--homedir",
                &self.home.path().display().to_string(),
                "--reload",
                "gpg-agent",
            ])
            .output();
    }

    /// Runs gpgsm in batch mode with the passphrase on stdin.
    pub fn gpgsm(&self, args: &[&str]) -> Output {
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

pub fn p_of(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).display().to_string()
}

pub fn load(path: &Path) -> Certificate {
    Certificate::from_pem(std::fs::read(path).expect("read")).expect("certificate")
}

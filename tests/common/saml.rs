//! The SAML IdP for tests: pysaml2 (Debian `python3-pysaml2`, signing with
//! `xmlsec1`) run as `tests/saml/idp.py` on loopback with keys made by openssl, and a
//! reader for the auto-submitting form it answers with. Used by tests/saml and the
//! console's browser test.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The test IdP's entity ID.
pub const IDP_ENTITY_ID: &str = "https://idp.test/metadata";

/// The pysaml2 IdP process; killed (its stdin closed first) when dropped.
pub struct Idp {
    child: Child,
    pub port: u16,
}

impl Drop for Idp {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn openssl_key_and_cert(dir: &Path, name: &str) {
    let key = dir.join(format!("{name}-key.pem"));
    let cert = dir.join(format!("{name}-cert.pem"));
    super::run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=smimegate test {name}"),
            "-keyout",
            key.to_str().expect("path"),
            "-out",
            cert.to_str().expect("path"),
        ],
    );
}

/// Starts the IdP with its keys in `dir` (`idp-*.pem`, and `other-*.pem` for the
/// "other-key" variant). It writes `dir/idp-metadata.xml` before this returns, and
/// reads the SP's metadata from `dir/sp-metadata.xml` at its first request. Its SSO
/// URL is `http://127.0.0.1:PORT/sso` (see tests/saml/idp.py for users and variants).
pub fn start_idp(dir: &Path) -> Idp {
    openssl_key_and_cert(dir, "idp");
    openssl_key_and_cert(dir, "other");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/saml/idp.py");
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .args(["serve", dir.to_str().expect("path"), IDP_ENTITY_ID])
        .arg(dir.join("sp-metadata.xml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tests/saml/idp.py (python3-pysaml2, xmlsec1)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the IdP's first line");
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the IdP did not start: {line:?}"));
    Idp { child, port }
}

/// What the IdP's auto-submitting form would POST to our ACS.
pub struct Posted {
    pub action: String,
    pub saml_response: String,
    pub relay_state: Option<String>,
}

fn form_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')?;
    Some(html[start..start + end].to_string())
}

/// GETs an IdP URL and reads the form it answers with.
pub async fn fetch_form(url: &str) -> Posted {
    let answer = reqwest::get(url).await.expect("IdP answers");
    let status = answer.status();
    let html = answer.text().await.expect("IdP body");
    assert!(status.is_success(), "IdP said {status}: {html}");
    let action_start = html.find("action=\"").expect("a form") + "action=\"".len();
    let action_end = html[action_start..].find('"').expect("action") + action_start;
    Posted {
        action: html[action_start..action_end].to_string(),
        saml_response: form_field(&html, "SAMLResponse").expect("SAMLResponse field"),
        relay_state: form_field(&html, "RelayState"),
    }
}

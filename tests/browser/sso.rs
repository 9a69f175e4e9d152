//! A gateway whose console logs in through a real SAML IdP: pysaml2 as
//! `tests/saml/idp.py` (tests/common/saml.rs) on loopback. The gateway's console port
//! is chosen before it starts, since its URL is in the configuration (public URL, and
//! with it our entity ID and ACS); the IdP reads our SP metadata from the gateway's
//! `/saml/metadata` before its first answer.

use std::net::SocketAddr;

use super::common::saml::{Idp, start_idp};
use super::harness::{Gateway, free_port};

/// The IdP's groups mapped to console roles (users: tests/saml/idp.py).
const ROLES: &str = "\"smimegate-admins\" = \"admin\"\n\
                     \"smimegate-editors\" = \"editor\"\n\
                     \"smimegate-viewers\" = \"viewer\"\n";

pub struct Sso {
    pub idp: Idp,
    _dir: tempfile::TempDir,
}

/// Starts the IdP and a gateway configured for single sign-on through it; `prepare`
/// runs on the data directory as in [`Gateway::start`].
pub async fn gateway_with_sso(prepare: impl FnOnce(&std::path::Path)) -> (Gateway, Sso) {
    let dir = tempfile::tempdir().expect("IdP dir");
    let idp = start_idp(dir.path());
    let metadata = dir.path().join("idp-metadata.xml");
    let port = free_port();
    let gw = Gateway::start_with_console_port(port, |data| {
        let config = data.join("smimegate.toml");
        let text = std::fs::read_to_string(&config).expect("configuration");
        let mut text: String = text
            .lines()
            .map(|line| match line {
                "public_url = \"\"" => format!("public_url = \"https://localhost:{port}\""),
                "idp_metadata = \"\"" => format!("idp_metadata = \"{}\"", metadata.display()),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            text.contains(&format!("https://localhost:{port}"))
                && text.contains("idp-metadata.xml")
                && text.trim_end().ends_with("[saml.roles]"),
            "the configuration template changed: {text}"
        );
        text.push('\n');
        text.push_str(ROLES);
        std::fs::write(&config, text).expect("configuration");
        prepare(data);
    });
    assert_eq!(gw.console, port, "the console listens where its URL says");

    // Our metadata, as the IdP's administrator would fetch it.
    let answer = https_client(&gw)
        .get(format!("https://localhost:{port}/saml/metadata"))
        .send()
        .await
        .expect("GET /saml/metadata");
    assert_eq!(answer.status(), 200, "the SP metadata is served");
    let xml = answer.text().await.expect("SP metadata");
    assert!(
        xml.contains(&format!("https://localhost:{port}/saml/acs")),
        "{xml}"
    );
    std::fs::write(dir.path().join("sp-metadata.xml"), xml).expect("write SP metadata");
    (gw, Sso { idp, _dir: dir })
}

/// An HTTPS client for the console that trusts the gateway's root CA and follows no
/// redirects.
pub fn https_client(gw: &Gateway) -> reqwest::Client {
    let (status, der) = gw.http_get("/pki/root.crt");
    assert_eq!(status, 200, "the root CA certificate is published");
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_der(&der).expect("root CA"))
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], gw.console)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTPS client")
}

//! The certificate, rule, settings, account and mailbox pages over real HTTPS against
//! `smimegate serve`: each renders real data for a viewer, refuses a change from a
//! role below its gate, and each change made through a page's form is done and has
//! its audit row (read with `smimegate audit`).

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::client::ConsoleUser;
use super::common::run_ok;
use super::harness::{Gateway, Partner};
use super::{PASSWORD, add_account, location, token};

/// A user of `name` (made with `role` through the CLI), logged in.
async fn logged_in(gw: &Gateway, name: &str, role: &str) -> ConsoleUser {
    add_account(gw, name, role);
    let user = ConsoleUser::new(gw);
    let login = user.login(name, PASSWORD).await;
    assert_eq!(login.status(), StatusCode::SEE_OTHER, "login of {name}");
    user
}

/// The audit rows whose action starts with `action`, as `smimegate audit --json` reads
/// them: (actor, action, target), newest first.
fn audit(gw: &Gateway, action: &str) -> Vec<(String, String, String)> {
    let out = gw.cli(&["audit", "--action", action, "--json"]);
    let page: serde_json::Value = serde_json::from_str(&out).expect("audit JSON");
    page["rows"]
        .as_array()
        .expect("audit rows")
        .iter()
        .map(|r| {
            let field = |name: &str| r[name].as_str().unwrap_or_default().to_string();
            (field("actor"), field("action"), field("target"))
        })
        .collect()
}

/// Asserts an audit row of `actor` doing `action` on a target containing `target`.
async fn assert_audited(gw: &Gateway, actor: &str, action: &str, target: &str) {
    let rows = audit(gw, action);
    assert!(
        rows.iter()
            .any(|(a, act, t)| a == actor && act == action && t.contains(target)),
        "no audit row {actor} {action} {target} in {rows:#?}"
    );
}

/// POSTs a page form with the session's CSRF token; the redirect's target.
async fn submit(user: &ConsoleUser, path: &str, fields: &[(&str, &str)]) -> String {
    let csrf = user.csrf().await;
    let mut all = fields.to_vec();
    all.push(("csrf", &csrf));
    let response = user.post_form(path, &all).await;
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "{path}: {:?}",
        response.text().await
    );
    let target = location(&response);
    assert!(
        !target.contains("error="),
        "{path} failed: {}",
        urlencoding_decode(&target)
    );
    target
}

fn urlencoding_decode(text: &str) -> String {
    let query = text.split_once('?').map(|(_, q)| q).unwrap_or(text);
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The page at `path`, which must answer 200.
async fn page(user: &ConsoleUser, path: &str) -> String {
    let (status, text) = user.get_text(path).await;
    assert_eq!(status, StatusCode::OK, "{path}: {text}");
    text
}

#[tokio::test]
async fn the_rules_page_shows_both_directions_in_order_and_its_forms_change_them_with_audit_rows() {
    let gw = Gateway::start(|_| {});
    gw.cli(&[
        "rule",
        "add",
        "--direction",
        "outbound",
        "--from",
        "anyone",
        "--to",
        "domain:first.example",
        "--action",
        "sign",
        "--comment",
        "first-by-cli",
    ]);
    gw.cli(&[
        "rule",
        "add",
        "--direction",
        "outbound",
        "--from",
        "anyone",
        "--to",
        "domain:second.example",
        "--action",
        "none",
        "--comment",
        "second-by-cli",
    ]);
    let viewer = logged_in(&gw, "vi", "viewer").await;
    let rules = page(&viewer, "/rules").await;
    let first = rules.find("first-by-cli").expect("the first rule is shown");
    let second = rules
        .find("second-by-cli")
        .expect("the second rule is shown");
    assert!(second < first, "the newer rule is at priority 1, above");
    assert!(rules.contains("Inbound") && rules.contains("Outbound"));
    assert!(
        !rules.contains("/rules/add"),
        "a viewer gets no change forms"
    );
    let csrf = viewer.csrf().await;
    let refused = viewer
        .post_form(
            "/rules/add",
            &[
                ("csrf", &csrf),
                ("direction", "outbound"),
                ("from", "anyone"),
                ("to", "anyone"),
                ("action", "sign"),
            ],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // The explain form is a read: a viewer may use it.
    let explained = page(
        &viewer,
        "/rules?from=someone%40corp.example&to=friend%40first.example",
    )
    .await;
    assert!(explained.contains("id=\"explanation\""), "{explained}");
    assert!(explained.contains("Decision"), "{explained}");

    let editor = logged_in(&gw, "ed", "editor").await;
    submit(
        &editor,
        "/rules/add",
        &[
            ("direction", "outbound"),
            ("from", "anyone"),
            ("to", "domain:third.example"),
            ("action", "encrypt-optional"),
            ("comment", "third-by-page"),
        ],
    )
    .await;
    let listed: serde_json::Value = editor
        .api(Method::GET, "/rules", None, None)
        .await
        .json()
        .await
        .expect("rules");
    let third = listed
        .as_array()
        .expect("rule list")
        .iter()
        .find(|r| r["comment"] == "third-by-page")
        .expect("the rule added through the page");
    assert_eq!(third["priority"], 1);
    let id = third["id"].to_string();
    assert_audited(&gw, "console:ed", "rule.add", &id).await;

    submit(
        &editor,
        "/rules/edit",
        &[
            ("id", &id),
            ("direction", "outbound"),
            ("from", "anyone"),
            ("to", "domain:fourth.example"),
            ("action", "encrypt-enforced"),
            ("comment", "third-by-page"),
        ],
    )
    .await;
    assert_audited(&gw, "console:ed", "rule.edit", &id).await;
    let rules = page(&editor, "/rules").await;
    let row = &rules[rules.find(&format!("data-rule=\"{id}\"")).expect("row")..];
    let row = &row[..row.find("</tr>").expect("end")];
    assert!(
        row.contains("<td>domain:fourth.example</td>") && row.contains("<td>encrypt-enforced</td>"),
        "{row}"
    );
    assert!(gw.cli(&["rule", "list"]).contains("fourth.example"));

    submit(&editor, "/rules/move", &[("id", &id), ("priority", "3")]).await;
    let rules = page(&editor, "/rules").await;
    let third_at = rules.find("third-by-page").expect("shown");
    assert!(
        rules.find("first-by-cli").expect("shown") < third_at,
        "moved below the others"
    );
    assert_audited(&gw, "console:ed", "rule.move", &id).await;

    submit(&editor, "/rules/disable", &[("id", &id)]).await;
    assert_audited(&gw, "console:ed", "rule.disable", &id).await;
    let rules = page(&editor, "/rules").await;
    let row = &rules[rules.find(&format!("data-rule=\"{id}\"")).expect("row")..];
    assert!(row[..row.find("</tr>").expect("end")].contains("Disabled"));
    submit(&editor, "/rules/enable", &[("id", &id)]).await;
    assert_audited(&gw, "console:ed", "rule.enable", &id).await;

    submit(&editor, "/rules/remove", &[("id", &id)]).await;
    assert!(!page(&editor, "/rules").await.contains("third-by-page"));
    assert_audited(&gw, "console:ed", "rule.remove", &id).await;
    assert!(gw.cli(&["rule", "list"]).contains("first-by-cli"));
}

/// The SHA-256 fingerprint of a PEM certificate file, as openssl computes it.
fn fingerprint(pem: &str) -> String {
    let out = run_ok(
        "openssl",
        &["x509", "-in", pem, "-noout", "-fingerprint", "-sha256"],
    );
    out.trim()
        .rsplit('=')
        .next()
        .expect("fingerprint")
        .replace(':', "")
        .to_ascii_lowercase()
}

#[tokio::test]
async fn a_partner_certificate_imported_on_the_page_shows_its_fingerprint_and_details() {
    let gw = Gateway::start(|_| {});
    let partner = Partner::new(gw.data(), "bob@partner.example");
    let ca_pem = std::fs::read_to_string(&partner.ca).expect("CA PEM");
    let cert_pem = std::fs::read_to_string(&partner.cert).expect("certificate PEM");
    let ca_fingerprint = fingerprint(&partner.ca);
    let cert_fingerprint = fingerprint(&partner.cert);

    // An editor may not add a trust anchor; an admin may.
    let editor = logged_in(&gw, "ed", "editor").await;
    let csrf = editor.csrf().await;
    let refused = editor
        .post_form("/trust-anchors/add", &[("csrf", &csrf), ("pem", &ca_pem)])
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let admin = logged_in(&gw, "root", "admin").await;
    submit(
        &admin,
        "/trust-anchors/add",
        &[("pem", &ca_pem), ("domains", "partner.example")],
    )
    .await;
    assert_audited(&gw, "console:root", "trust.add", "CA of").await;

    submit(&editor, "/certificates/import", &[("pem", &cert_pem)]).await;
    assert_audited(&gw, "console:ed", "cert.import", "").await;

    // A colleague's certificate as a DER file, uploaded (multipart, CSRF in the query).
    let colleague = partner.certify("carol@partner.example");
    let der = gw.data().join("carol.der");
    run_ok(
        "openssl",
        &[
            "x509",
            "-in",
            &colleague.cert,
            "-outform",
            "DER",
            "-out",
            &der.display().to_string(),
        ],
    );
    let der = std::fs::read(&der).expect("DER file");
    let boundary = "----smimegate-upload";
    let csrf = editor.csrf().await;
    let uploaded = editor
        .http
        .post(editor.url(&format!("/certificates/upload?csrf={csrf}")))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(multipart(boundary, &[("file", Some("carol.der"), &der)]))
        .send()
        .await
        .expect("upload");
    let target = location(&uploaded);
    assert!(
        target.starts_with("/certificates?ok="),
        "{}",
        urlencoding_decode(&target)
    );
    let colleague_fingerprint = fingerprint(&colleague.cert);

    let viewer = logged_in(&gw, "vi", "viewer").await;
    let list = page(&viewer, "/certificates").await;
    let partners = &list[list
        .find("id=\"partner-certificates\"")
        .expect("partner table")..];
    assert!(
        partners.contains(&cert_fingerprint),
        "the imported certificate's fingerprint is listed: {list}"
    );
    assert!(
        partners.contains(&colleague_fingerprint),
        "the uploaded certificate is listed: {list}"
    );
    let anchors = &list[list.find("id=\"trust-anchors\"").expect("anchors")..];
    assert!(anchors.contains(&ca_fingerprint) && anchors.contains("partner.example"));
    assert!(
        !list.contains("/certificates/import"),
        "no import form for a viewer"
    );

    let details = page(&viewer, &format!("/certificates/{cert_fingerprint}")).await;
    for expected in [
        "email:bob@partner.example",
        cert_fingerprint.as_str(),
        "Not revoked",
        "emailProtection",
        "partner (uploaded)",
    ] {
        assert!(details.contains(expected), "{expected} missing: {details}");
    }
    assert!(!details.contains("PRIVATE KEY"));
    let (status, _) = viewer.get_text("/certificates/not-a-fingerprint").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    submit(
        &editor,
        "/certificates/remove",
        &[("fingerprint", &cert_fingerprint)],
    )
    .await;
    assert!(
        !page(&viewer, "/certificates")
            .await
            .contains(&cert_fingerprint)
    );
    assert_audited(&gw, "console:ed", "cert.remove", &cert_fingerprint).await;

    submit(
        &admin,
        "/trust-anchors/remove",
        &[("fingerprint", &ca_fingerprint)],
    )
    .await;
    assert_audited(&gw, "console:root", "trust.remove", "CA of").await;
}

#[tokio::test]
async fn the_settings_page_shows_what_is_in_force_and_an_admin_changes_it() {
    let gw = Gateway::start(|_| {});
    let viewer = logged_in(&gw, "vi", "viewer").await;
    let settings = page(&viewer, "/settings").await;
    let smarthost = format!("127.0.0.1:{}", gw.smarthost.port);
    assert!(settings.contains(&smarthost), "{settings}");
    assert!(settings.contains("127.0.0.1/32"), "{settings}");
    assert!(settings.contains("id=\"next-hop-tls\""), "{settings}");
    assert!(
        settings.contains("not configured"),
        "SAML status: {settings}"
    );
    assert!(
        !settings.contains("/settings/smarthost"),
        "no change forms for a viewer"
    );
    let csrf = viewer.csrf().await;
    let refused = viewer
        .post_form(
            "/settings/smarthost",
            &[("csrf", &csrf), ("host_port", "evil.example:25")],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    let admin = logged_in(&gw, "root", "admin").await;
    submit(
        &admin,
        "/settings/smarthost",
        &[("host_port", "relay.corp.example:2525")],
    )
    .await;
    assert_audited(
        &gw,
        "console:root",
        "smarthost.set",
        "relay.corp.example:2525",
    )
    .await;
    submit(
        &admin,
        "/settings/networks/allow",
        &[
            ("cidr", "10.20.0.0/16"),
            ("comment", "branch office"),
            ("require_auth", "1"),
        ],
    )
    .await;
    assert_audited(&gw, "console:root", "network.allow", "10.20.0.0/16").await;
    submit(
        &admin,
        "/settings/licence",
        &[
            ("smime_seats", "25"),
            ("mail_security_seats", "50"),
            ("valid_until", "2099-12-31"),
        ],
    )
    .await;
    assert_audited(&gw, "console:root", "licence.set", "licence").await;

    let settings = page(&viewer, "/settings").await;
    assert!(settings.contains("relay.corp.example:2525"), "{settings}");
    assert!(settings.contains("branch office"), "{settings}");
    assert!(
        settings.contains("<strong>25</strong> S/MIME seats"),
        "{settings}"
    );

    submit(
        &admin,
        "/settings/networks/remove",
        &[("cidr", "10.20.0.0/16")],
    )
    .await;
    assert_audited(&gw, "console:root", "network.remove", "10.20.0.0/16").await;
    assert!(!page(&viewer, "/settings").await.contains("branch office"));

    // A bad value is refused with the operation's message, and nothing is written.
    let csrf = admin.csrf().await;
    let bad = admin
        .post_form(
            "/settings/smarthost",
            &[("csrf", &csrf), ("host_port", "no port here")],
        )
        .await;
    assert!(
        location(&bad).starts_with("/settings?error="),
        "{}",
        location(&bad)
    );
}

#[tokio::test]
async fn the_accounts_page_shows_a_totp_secret_and_a_token_once_and_changes_accounts() {
    let gw = Gateway::start(|_| {});
    let editor = logged_in(&gw, "ed", "editor").await;
    let (status, _) = editor.get_text("/accounts").await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "accounts are for admins only"
    );
    let admin = logged_in(&gw, "root", "admin").await;
    assert!(
        page(&admin, "/accounts")
            .await
            .contains("data-account=\"ed\"")
    );

    let csrf = admin.csrf().await;
    let added = admin
        .post_form(
            "/accounts/add",
            &[
                ("csrf", &csrf),
                ("name", "Ops2"),
                ("role", "editor"),
                ("password", PASSWORD),
                ("totp", "1"),
            ],
        )
        .await;
    assert_eq!(added.status(), StatusCode::OK);
    let shown = added.text().await.expect("page");
    assert!(shown.contains("id=\"totp-secret\""), "{shown}");
    assert!(shown.contains("otpauth://"), "{shown}");
    assert!(
        !page(&admin, "/accounts").await.contains("otpauth://"),
        "shown once"
    );
    assert_audited(&gw, "console:root", "account.add", "ops2").await;

    submit(
        &admin,
        "/accounts/role",
        &[("name", "ops2"), ("role", "viewer")],
    )
    .await;
    assert_audited(&gw, "console:root", "account.role", "ops2").await;
    submit(&admin, "/accounts/totp", &[("name", "ops2"), ("on", "0")]).await;
    assert_audited(&gw, "console:root", "account.totp", "ops2").await;
    let csrf = admin.csrf().await;
    let renewed = admin
        .post_form(
            "/accounts/totp",
            &[("csrf", &csrf), ("name", "ops2"), ("on", "1")],
        )
        .await;
    assert_eq!(renewed.status(), StatusCode::OK);
    assert!(
        renewed
            .text()
            .await
            .expect("page")
            .contains("id=\"totp-secret\"")
    );
    submit(
        &admin,
        "/accounts/password",
        &[("name", "ops2"), ("password", "another long password")],
    )
    .await;
    assert_audited(&gw, "console:root", "account.passwd", "ops2").await;
    submit(&admin, "/accounts/totp", &[("name", "ops2"), ("on", "0")]).await;
    let ops2 = ConsoleUser::new(&gw);
    assert_eq!(
        ops2.login("ops2", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED,
        "the old password no longer works"
    );
    assert_eq!(
        ops2.login("ops2", "another long password").await.status(),
        StatusCode::SEE_OTHER,
        "the new one does"
    );
    submit(&admin, "/accounts/disable", &[("name", "ops2")]).await;
    assert_audited(&gw, "console:root", "account.disable", "ops2").await;
    let list = gw.cli(&["admin", "list"]);
    assert!(list.contains("ops2\tviewer"), "{list}");
    submit(&admin, "/accounts/enable", &[("name", "ops2")]).await;
    assert_audited(&gw, "console:root", "account.enable", "ops2").await;

    let csrf = admin.csrf().await;
    let created = admin
        .post_form(
            "/tokens/create",
            &[
                ("csrf", &csrf),
                ("account", "ed"),
                ("label", "automation"),
                ("role", "editor"),
            ],
        )
        .await;
    assert_eq!(created.status(), StatusCode::OK);
    let shown = created.text().await.expect("page");
    let start = shown.find("sgt_").expect("the token is shown");
    let token: String = shown[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    let anonymous = ConsoleUser::new(&gw);
    let me = anonymous.api(Method::GET, "/me", Some(&token), None).await;
    assert_eq!(me.status(), StatusCode::OK, "the shown token works");
    let tokens = page(&admin, "/accounts").await;
    assert!(
        tokens.contains("automation") && !tokens.contains(&token),
        "listed, never shown again"
    );
    let listed: serde_json::Value = admin
        .api(Method::GET, "/tokens", None, None)
        .await
        .json()
        .await
        .expect("tokens");
    let id = listed
        .as_array()
        .expect("token list")
        .iter()
        .find(|t| t["label"] == "automation")
        .expect("the token")["id"]
        .to_string();
    submit(&admin, "/tokens/revoke", &[("id", &id)]).await;
    assert_audited(&gw, "console:root", "token.revoke", "ed").await;
    let after = anonymous.api(Method::GET, "/me", Some(&token), None).await;
    assert_eq!(
        after.status(),
        StatusCode::UNAUTHORIZED,
        "the revoked token is refused"
    );

    submit(&admin, "/accounts/remove", &[("name", "ops2")]).await;
    assert_audited(&gw, "console:root", "account.remove", "ops2").await;
    assert!(!gw.cli(&["admin", "list"]).contains("ops2"));
}

#[tokio::test]
async fn a_mailbox_page_shows_its_certificates_and_an_editor_renews_it() {
    let gw = Gateway::start(|_| {});
    gw.cli(&["mailbox", "add", "alice@corp.example"]);
    let editor_token = {
        add_account(&gw, "ed", "editor");
        token(&gw, "ed", "editor")
    };
    let user = ConsoleUser::new(&gw);
    let activated = user
        .api(
            Method::POST,
            "/mailboxes/activate",
            Some(&editor_token),
            Some(json!({"addresses": ["alice@corp.example"], "skip_mx_check": true})),
        )
        .await;
    assert_eq!(
        activated.status(),
        StatusCode::OK,
        "{:?}",
        activated.text().await
    );
    assert_eq!(
        user.login("ed", PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    let detail = page(&user, "/mailboxes/alice@corp.example").await;
    assert!(detail.contains("signs now"), "{detail}");
    let before = detail.matches("/certificates/").count();

    submit(
        &user,
        "/mailboxes/renew",
        &[("address", "alice@corp.example")],
    )
    .await;
    assert_audited(&gw, "console:ed", "mailbox.renew", "alice@corp.example").await;
    let detail = page(&user, "/mailboxes/alice@corp.example").await;
    assert_eq!(
        detail.matches("/certificates/").count(),
        before + 1,
        "a second certificate: {detail}"
    );
    let (status, _) = user.get_text("/mailboxes/nobody@corp.example").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A multipart/form-data body as a browser sends it: (name, filename, bytes) parts.
fn multipart(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(file) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\n\
                     Content-Type: application/x-pkcs12\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

#[tokio::test]
async fn a_pkcs12_identity_uploaded_on_the_mailboxes_page_activates_its_mailbox() {
    let gw = Gateway::start(|_| {});
    gw.cli(&["mailbox", "add", "carol@corp.example"]);
    let external = Partner::new(gw.data(), "carol@corp.example");
    let file = gw.data().join("carol.p12");
    run_ok(
        "openssl",
        &[
            "pkcs12",
            "-export",
            "-inkey",
            &external.key,
            "-in",
            &external.cert,
            "-certfile",
            &external.ca,
            "-passout",
            "pass:Geheim 123",
            "-out",
            &file.display().to_string(),
        ],
    );
    let p12 = std::fs::read(&file).expect("PKCS#12 file");
    let editor = logged_in(&gw, "ed", "editor").await;
    let list = page(&editor, "/mailboxes").await;
    assert!(list.contains("enctype=\"multipart/form-data\""), "{list}");
    let csrf = editor.csrf().await;
    let boundary = "----smimegate-test-boundary";
    let upload = |password: &'static str, csrf: String| {
        let body = multipart(
            boundary,
            &[
                ("address", None, b"carol@corp.example"),
                ("file", Some("carol.p12"), &p12),
                ("password", None, password.as_bytes()),
            ],
        );
        let editor = &editor;
        async move {
            editor
                .http
                .post(editor.url(&format!("/mailboxes/import?csrf={csrf}")))
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(body)
                .send()
                .await
                .expect("upload")
        }
    };

    let not_multipart = editor
        .http
        .post(editor.url(&format!("/mailboxes/import?csrf={csrf}")))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .expect("POST");
    assert!(
        location(&not_multipart).starts_with("/mailboxes?error="),
        "a clear refusal: {}",
        location(&not_multipart)
    );
    let without_token = upload("Geheim 123", String::new()).await;
    assert_eq!(
        without_token.status(),
        StatusCode::FORBIDDEN,
        "the upload needs ?csrf="
    );
    let wrong = upload("wrong password", csrf.clone()).await;
    assert!(
        location(&wrong).starts_with("/mailboxes?error="),
        "{}",
        location(&wrong)
    );
    let done = upload("Geheim 123", csrf).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert!(
        location(&done).starts_with("/mailboxes?ok="),
        "{}",
        urlencoding_decode(&location(&done))
    );
    assert_audited(&gw, "console:ed", "mailbox.import", "carol@corp.example").await;
    let detail = page(&editor, "/mailboxes/carol@corp.example").await;
    assert!(
        detail.contains("uploaded") && detail.contains("signs now"),
        "{detail}"
    );
    assert!(!detail.contains("PRIVATE KEY"));

    // The same through the API: the file as base64.
    use base64::Engine;
    gw.cli(&["mailbox", "add", "dave@corp.example"]);
    let dave = external.certify("dave@corp.example");
    let file = gw.data().join("dave.p12");
    run_ok(
        "openssl",
        &[
            "pkcs12",
            "-export",
            "-inkey",
            &dave.key,
            "-in",
            &dave.cert,
            "-certfile",
            &dave.ca,
            "-passout",
            "pass:Geheim 456",
            "-out",
            &file.display().to_string(),
        ],
    );
    let p12 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&file).expect("p12"));
    let token = token(&gw, "ed", "editor");
    let refused = editor
        .api(
            Method::POST,
            "/mailboxes/dave@corp.example/pkcs12",
            Some(&token),
            Some(json!({"pkcs12": "not base64!", "password": "Geheim 456"})),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let imported = editor
        .api(
            Method::POST,
            "/mailboxes/dave@corp.example/pkcs12",
            Some(&token),
            Some(json!({"pkcs12": p12, "password": "Geheim 456"})),
        )
        .await;
    assert_eq!(imported.status(), StatusCode::CREATED);
    let imported: serde_json::Value = imported.json().await.expect("JSON");
    assert_eq!(imported["state"], "active");
    assert!(!imported.to_string().contains("PRIVATE"));
    let rows = audit(&gw, "mailbox.import");
    assert!(
        rows.iter().any(
            |(actor, _, target)| actor.starts_with("console:ed (API token ")
                && target == "dave@corp.example"
        ),
        "{rows:#?}"
    );
}

#[tokio::test]
async fn the_api_answers_the_pages_reads_as_documented_json_and_problems() {
    let gw = Gateway::start(|_| {});
    add_account(&gw, "vi", "viewer");
    add_account(&gw, "ed", "editor");
    let viewer = token(&gw, "vi", "viewer");
    let editor = token(&gw, "ed", "editor");
    let user = ConsoleUser::new(&gw);
    let json = |response: reqwest::Response| async move {
        let status = response.status();
        let kind = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        let body: serde_json::Value = response.json().await.expect("JSON");
        (status, kind, body)
    };

    let document: serde_json::Value = user
        .api(Method::GET, "/openapi.json", None, None)
        .await
        .json()
        .await
        .expect("OpenAPI document");
    let schemas = document["components"]["schemas"]
        .as_object()
        .expect("schemas");
    for name in [
        "CertificateDetails",
        "CertificateView",
        "TrustAnchorView",
        "Rule",
        "Explanation",
        "SettingsView",
        "MailboxList",
        "MailboxDetail",
        "ActivationReport",
    ] {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    // Every reference in the document names a schema it has (schemathesis needs them).
    fn refs(value: &serde_json::Value, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner.as_str()) {
                        ("$ref", Some(target)) => found.push(target.to_string()),
                        _ => refs(inner, found),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| refs(i, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&document, &mut found);
    assert!(found.len() > 20, "{found:?}");
    for target in &found {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {target}"));
        assert!(schemas.contains_key(name), "{target} names no schema");
    }

    let (status, _, added) = json(
        user.api(
            Method::POST,
            "/rules",
            Some(&editor),
            Some(json!({"direction": "outbound", "from": "anyone",
                        "to": "domain:partner.example", "action": "sign", "comment": "api"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(added["priority"], 1);
    assert_eq!(added["action"], "sign");
    let (status, _, explained) = json(
        user.api(
            Method::GET,
            "/rules/explain?from=a%40corp.example&to=b%40partner.example",
            Some(&viewer),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{explained}");
    assert_eq!(explained["selection"]["rule_id"], added["id"]);

    let (status, kind, problem) = json(
        user.api(Method::GET, "/certificates/xyz", Some(&viewer), None)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(kind, "application/problem+json");
    let (status, kind, _) = json(
        user.api(
            Method::GET,
            "/rules/explain?from=a%40corp.example",
            Some(&viewer),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a missing query field");
    assert_eq!(kind, "application/problem+json");

    let (status, _, settings) = json(
        user.api(Method::GET, "/settings", Some(&viewer), None)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    assert_eq!(
        settings["smarthost"]["host_port"],
        format!("127.0.0.1:{}", gw.smarthost.port)
    );
    assert_eq!(settings["saml"]["configured"], false);
    let (status, _, certificates) = json(
        user.api(
            Method::GET,
            "/certificates?kind=managed",
            Some(&viewer),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{certificates}");
    assert!(
        certificates
            .as_array()
            .expect("list")
            .iter()
            .all(|c| c["kind"] == "managed")
    );
}

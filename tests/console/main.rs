//! The admin console over real HTTPS: `smimegate serve` with its token-held TLS key,
//! a reqwest client trusting only the gateway's root CA, accounts made with the CLI.

mod client;
#[path = "../common/mod.rs"]
mod common;
mod connection;
#[path = "../relay/harness.rs"]
#[allow(dead_code)]
mod harness;
mod pages;
mod schema;

use std::os::unix::fs::PermissionsExt;

use client::ConsoleUser;
use harness::Gateway;
use reqwest::{Method, StatusCode};
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

/// Adds a local console account with `role` through the CLI.
fn add_account(gw: &Gateway, name: &str, role: &str) {
    let file = gw.data().join(format!("{name}.password"));
    std::fs::write(&file, format!("{PASSWORD}\n")).expect("password file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    gw.cli(&[
        "admin",
        "add",
        name,
        "--role",
        role,
        "--password-file",
        &file.display().to_string(),
    ]);
}

/// An API token for `name` with `role`, made through the CLI.
fn token(gw: &Gateway, name: &str, role: &str) -> String {
    let out = gw.cli(&[
        "admin", "token", "create", name, "--role", role, "--label", "test",
    ]);
    out.lines()
        .find(|l| l.starts_with("sgt_"))
        .unwrap_or_else(|| panic!("no token in: {out}"))
        .to_string()
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_local_account_logs_in_over_https_and_out_again() {
    let gw = Gateway::start(|_| {});
    add_account(&gw, "root", "admin");
    let user = ConsoleUser::new(&gw);

    let anonymous = user.get("/mailboxes").await;
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&anonymous), "/login?next=%2Fmailboxes");
    let api = user.api(Method::GET, "/me", None, None).await;
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.headers()["content-type"],
        "application/problem+json",
        "API errors are problem details"
    );

    let login = user.login("Root", PASSWORD).await;
    assert_eq!(
        login.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        login.text().await
    );
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    for attribute in [
        "__Host-smimegate-session=",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Path=/",
    ] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    let (status, dashboard) = user.get_text("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(dashboard.contains("S/MIME seats"), "{dashboard}");
    assert!(dashboard.contains("root (admin)"), "{dashboard}");
    let me: serde_json::Value = user
        .api(Method::GET, "/me", None, None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["account"], "root");
    assert_eq!(me["role"], "admin");
    assert_eq!(me["via"], "session");

    let csrf = user.csrf().await;
    let logout = user.post_form("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(logout.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&logout), "/login");
    assert_eq!(
        user.get("/").await.status(),
        StatusCode::SEE_OTHER,
        "the session ended"
    );

    let audit = gw.cli(&["admin", "list"]);
    assert!(audit.contains("root\tadmin"), "{audit}");
}

#[tokio::test]
async fn failed_logins_lock_the_account_and_then_throttle_the_address() {
    let gw = Gateway::start(|_| {});
    add_account(&gw, "root", "admin");
    let user = ConsoleUser::new(&gw);
    for _ in 0..5 {
        let refused = user.login("root", "wrong password, long enough").await;
        let status = refused.status();
        let text = refused.text().await.expect("body");
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
        assert!(text.contains("Login failed"), "{text}");
    }
    let locked = user.login("root", PASSWORD).await;
    assert_eq!(
        locked.status(),
        StatusCode::UNAUTHORIZED,
        "the right password does not open a locked account"
    );
    let list = gw.cli(&["admin", "list"]);
    assert!(list.contains("locked until"), "{list}");
    gw.cli(&["admin", "unlock", "root"]);
    assert_eq!(
        user.login("root", PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );

    // Ten failures a minute from one address (six so far), then 429 for anyone.
    for i in 0..4 {
        let refused = user
            .login(&format!("nobody{i}"), "some wrong password")
            .await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }
    let throttled = user.login("root", PASSWORD).await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// A route the API offers that changes something, the body to send, and the least
/// role allowed to call it.
struct Mutation {
    method: Method,
    path: &'static str,
    body: Option<serde_json::Value>,
    needs: &'static str,
}

fn mutations() -> Vec<Mutation> {
    let m = |method: Method, path, body, needs| Mutation {
        method,
        path,
        body,
        needs,
    };
    vec![
        m(
            Method::POST,
            "/mailboxes/activate",
            Some(json!({"addresses": ["nobody@corp.example"]})),
            "editor",
        ),
        m(
            Method::POST,
            "/mailboxes/deactivate",
            Some(json!({"addresses": ["nobody@corp.example"]})),
            "editor",
        ),
        m(
            Method::POST,
            "/accounts",
            Some(json!({"name": "x", "role": "viewer", "password": "short"})),
            "admin",
        ),
        m(Method::DELETE, "/accounts/{name}", None, "admin"),
        m(
            Method::POST,
            "/tokens",
            Some(json!({"account": "nobody", "label": "t", "role": "viewer"})),
            "admin",
        ),
        m(Method::DELETE, "/tokens/{id}", None, "admin"),
        m(Method::POST, "/mailboxes/{address}/renew", None, "editor"),
        m(
            Method::POST,
            "/mailboxes/{address}/pkcs12",
            Some(json!({"pkcs12": "AAAA", "password": "x"})),
            "editor",
        ),
        m(
            Method::POST,
            "/certificates",
            Some(json!({"pem": "not a certificate"})),
            "editor",
        ),
        m(
            Method::DELETE,
            "/certificates/{fingerprint}",
            None,
            "editor",
        ),
        m(
            Method::POST,
            "/trust-anchors",
            Some(json!({"pem": "not a certificate", "domains": ["partner.example"]})),
            "admin",
        ),
        m(
            Method::DELETE,
            "/trust-anchors/{fingerprint}",
            None,
            "admin",
        ),
        m(
            Method::POST,
            "/rules",
            Some(json!({"direction": "outbound", "from": "anyone",
                        "to": "domain:partner.example", "action": "sign"})),
            "editor",
        ),
        m(
            Method::POST,
            "/rules/{id}/move",
            Some(json!({"priority": 1})),
            "editor",
        ),
        m(Method::POST, "/rules/{id}/enable", None, "editor"),
        m(Method::POST, "/rules/{id}/disable", None, "editor"),
        m(Method::DELETE, "/rules/{id}", None, "editor"),
        m(
            Method::PATCH,
            "/rules/{id}",
            Some(json!({"comment": "edited"})),
            "editor",
        ),
        m(
            Method::PUT,
            "/settings/smarthost",
            Some(json!({"host_port": "relay.corp.example:25"})),
            "admin",
        ),
        m(
            Method::POST,
            "/settings/networks",
            Some(json!({"cidr": "10.9.0.0/16"})),
            "admin",
        ),
        m(
            Method::DELETE,
            "/settings/networks/{address}/{prefix}",
            None,
            "admin",
        ),
        m(
            Method::PUT,
            "/settings/licence",
            Some(json!({"smime_seats": 100, "mail_security_seats": 100})),
            "admin",
        ),
        m(
            Method::PUT,
            "/accounts/{name}/role",
            Some(json!({"role": "viewer"})),
            "admin",
        ),
        m(Method::POST, "/accounts/{name}/disable", None, "admin"),
        m(Method::POST, "/accounts/{name}/enable", None, "admin"),
        m(Method::POST, "/accounts/{name}/unlock", None, "admin"),
        m(
            Method::PUT,
            "/accounts/{name}/password",
            Some(json!({"password": "a new password, long enough"})),
            "admin",
        ),
        m(
            Method::PUT,
            "/accounts/{name}/totp",
            Some(json!({"on": false})),
            "admin",
        ),
    ]
}

fn concrete(path: &str) -> String {
    path.replace(
        "/settings/networks/{address}",
        "/settings/networks/10.8.0.0",
    )
    .replace("{address}", "nobody@corp.example")
    .replace("{prefix}", "16")
    .replace("{fingerprint}", &"0".repeat(64))
    .replace("{name}", "nobody")
    .replace("{id}", "999999")
}

#[tokio::test]
async fn every_mutating_api_route_answers_each_role_as_its_gate_says() {
    let gw = Gateway::start(|_| {});
    let roles = ["viewer", "editor", "admin"];
    let tokens: Vec<(String, String)> = roles
        .iter()
        .map(|role| {
            add_account(&gw, role, role);
            (role.to_string(), token(&gw, role, role))
        })
        .collect();
    let user = ConsoleUser::new(&gw);
    let table = mutations();

    // The table covers every changing operation the OpenAPI document lists.
    let document: serde_json::Value = user
        .api(Method::GET, "/openapi.json", None, None)
        .await
        .json()
        .await
        .expect("OpenAPI document");
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().expect("paths");
    for (path, operations) in paths {
        for method in operations.as_object().expect("operations").keys() {
            if method == "get" {
                continue;
            }
            assert!(
                table
                    .iter()
                    .any(|m| m.path == path && m.method.as_str().eq_ignore_ascii_case(method)),
                "{method} {path} is not in the role table of this test"
            );
        }
    }

    for route in &table {
        let path = concrete(route.path);
        let anonymous = user
            .api(route.method.clone(), &path, None, route.body.clone())
            .await;
        assert_eq!(
            anonymous.status(),
            StatusCode::UNAUTHORIZED,
            "{} {path}",
            route.method
        );
        for (role, token) in &tokens {
            let response = user
                .api(route.method.clone(), &path, Some(token), route.body.clone())
                .await;
            let status = response.status();
            let allowed = roles.iter().position(|r| r == role)
                >= roles.iter().position(|r| *r == route.needs);
            if allowed {
                assert!(
                    status != StatusCode::FORBIDDEN
                        && status != StatusCode::UNAUTHORIZED
                        && !status.is_server_error(),
                    "{role} may {} {path}, got {status}: {:?}",
                    route.method,
                    response.text().await
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{role} may not {} {path}",
                    route.method
                );
                let problem: serde_json::Value = response.json().await.expect("problem");
                assert_eq!(problem["status"], 403);
            }
        }
    }
}

#[tokio::test]
async fn a_session_changes_nothing_without_its_csrf_token_or_from_another_origin() {
    let gw = Gateway::start(|_| {});
    add_account(&gw, "ed", "editor");
    let user = ConsoleUser::new(&gw);
    assert_eq!(
        user.login("ed", PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    let csrf = user.csrf().await;

    let add = |fields: Vec<(&'static str, String)>| {
        let user = &user;
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            user.post_form("/mailboxes/add", &fields).await
        }
    };
    let missing = add(vec![("address", "a@corp.example".into())]).await;
    assert_eq!(missing.status(), StatusCode::FORBIDDEN);
    let wrong = add(vec![
        ("address", "a@corp.example".into()),
        ("csrf", "x".repeat(43)),
    ])
    .await;
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let foreign = user
        .http
        .post(user.url("/mailboxes/add"))
        .header("origin", "https://evil.example")
        .form(&[("address", "a@corp.example"), ("csrf", &csrf)])
        .send()
        .await
        .expect("POST");
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let listed = gw.cli(&["mailbox", "list"]);
    assert!(
        !listed.contains("a@corp.example"),
        "nothing was added: {listed}"
    );

    let done = add(vec![
        ("address", "a@corp.example".into()),
        ("csrf", csrf.clone()),
    ])
    .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert!(
        location(&done).starts_with("/mailboxes?ok="),
        "{}",
        location(&done)
    );
    assert!(gw.cli(&["mailbox", "list"]).contains("a@corp.example"));

    // The JSON API with the session cookie needs the token as a header.
    let body = json!({"addresses": ["a@corp.example"], "skip_mx_check": true});
    let bare = user
        .api(
            Method::POST,
            "/mailboxes/activate",
            None,
            Some(body.clone()),
        )
        .await;
    assert_eq!(bare.status(), StatusCode::FORBIDDEN);
    let with_header = user
        .http
        .post(user.url("/api/v1/mailboxes/activate"))
        .header("x-csrf-token", &csrf)
        .json(&body)
        .send()
        .await
        .expect("POST");
    assert_eq!(
        with_header.status(),
        StatusCode::OK,
        "{:?}",
        with_header.text().await
    );
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_http_serves_no_console() {
    let gw = Gateway::start(|_| {});
    let user = ConsoleUser::new(&gw);
    let response = user.get("/login").await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(headers["strict-transport-security"], "max-age=31536000");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "same-origin");
    let csp = headers["content-security-policy"].to_str().expect("csp");
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(gw.http_get("/login").0, 404, "the console is on HTTPS only");
    assert_eq!(gw.http_get("/health").0, 200);
}

fn message(from: &str, to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@test>\r\n\r\nHello.\r\n",
        subject.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn the_email_overview_finds_a_relayed_message_by_its_crypto_result() {
    const ALICE: &str = "alice@corp.example";
    let gw = Gateway::start(|d| harness::mailbox(d, ALICE));
    add_account(&gw, "watcher", "viewer");
    // One signed message out (alice has a certificate), one plain one (nobody has).
    let mut client = harness::Client::internal(gw.submission);
    let subject = "=?UTF-8?B?UXVhcnRhbHNiZXJpY2h0IMOcYmVyc2ljaHQ=?=";
    let t = client.send(
        ALICE,
        &["bob@partner.example"],
        &message(ALICE, "bob@partner.example", subject),
    );
    assert_eq!(t.data.as_ref().map(|d| d.0), Some(250), "{:?}", t.data);
    let t = client.send(
        "carol@corp.example",
        &["bob@partner.example"],
        &message("carol@corp.example", "bob@partner.example", "plain"),
    );
    assert_eq!(t.data.as_ref().map(|d| d.0), Some(250), "{:?}", t.data);

    let user = ConsoleUser::new(&gw);
    assert_eq!(
        user.login("watcher", PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    // The log writer commits in groups: wait until both rows are there.
    let mut all = String::new();
    for _ in 0..50 {
        all = user.get_text("/messages").await.1;
        if all.contains("2 messages") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(all.contains("2 messages"), "{all}");
    let (status, signed) = user
        .get_text("/messages?crypto=signed&direction=outbound&page=")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(signed.contains("1 messages"), "{signed}");
    assert!(
        signed.contains("Quartalsbericht Übersicht"),
        "the subject is shown decoded: {signed}"
    );
    assert!(!signed.contains("carol@corp.example"), "{signed}");
    let (_, none) = user.get_text("/messages?crypto=none").await;
    assert!(
        none.contains("carol@corp.example") && !none.contains("Quartalsbericht"),
        "{none}"
    );

    let csv = user.get("/messages.csv?crypto=signed").await;
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = csv.text().await.expect("csv");
    assert_eq!(csv.lines().count(), 2, "a header and one row: {csv}");
    assert!(csv.contains("Quartalsbericht Übersicht"), "{csv}");

    let api: serde_json::Value = user
        .api(Method::GET, "/messages?crypto=signed", None, None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(api["total"], 1);
    assert_eq!(api["rows"][0]["mail_from"], ALICE);

    let (_, dashboard) = user.get_text("/").await;
    assert!(dashboard.contains("Outbound, 24 h"), "{dashboard}");
    let figures: serde_json::Value = user
        .api(Method::GET, "/dashboard", None, None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(figures["outbound"]["signed"], 1, "{figures}");
    assert_eq!(figures["outbound"]["none"], 1, "{figures}");
    assert_eq!(figures["token"]["ok"], true, "{figures}");
    assert!(
        figures["token"].get("details").is_none(),
        "the token's details are the admin's: {figures}"
    );
    let (_, audit) = user.get_text("/audit?action=account.").await;
    assert!(
        audit.contains("account.add") && audit.contains("watcher"),
        "{audit}"
    );
    let (status, _) = user.get_text("/messages?crypto=bogus").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a wrong filter is shown on the page, not a failure"
    );
}

/// An operator CA and a P-256 certificate for `localhost` from it, made by openssl in
/// `dir`; returns (ca.pem, chain.pem, key.pem).
fn operator_certificate(dir: &std::path::Path, algorithm: &[&str]) -> (String, String, String) {
    let path = |name: &str| dir.join(name).display().to_string();
    let (ca_key, ca, key, csr, leaf) = (
        path("op-ca.key"),
        path("op-ca.pem"),
        path("op.key"),
        path("op.csr"),
        path("op.pem"),
    );
    common::run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-subj",
            "/CN=Operator Test CA",
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    let mut args = vec![
        "req",
        "-new",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        "/CN=localhost",
    ];
    args.extend_from_slice(algorithm);
    common::run_ok("openssl", &args);
    let ext = path("op.ext");
    std::fs::write(&ext, "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n").expect("ext");
    common::run_ok(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &leaf,
            "-days",
            "10",
            "-extfile",
            &ext,
        ],
    );
    (ca, leaf, key)
}

#[tokio::test]
async fn an_operator_certificate_is_served_with_its_key_imported_into_the_token() {
    let ops_dir = tempfile::tempdir().expect("temp dir");
    let (ca, leaf, key) = operator_certificate(
        ops_dir.path(),
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let (_, rsa_leaf, rsa_key) = {
        let rsa_dir = ops_dir.path().join("rsa");
        std::fs::create_dir(&rsa_dir).expect("dir");
        operator_certificate(&rsa_dir, &["-newkey", "rsa:2048"])
    };
    let gw = Gateway::start(|data| {
        let refused = common::smimegate(
            data,
            &[
                "admin",
                "tls-import",
                "--certificate",
                &rsa_leaf,
                "--key",
                &rsa_key,
            ],
        );
        assert_eq!(refused.status.code(), Some(2));
        let text = String::from_utf8_lossy(&refused.stderr);
        assert!(text.contains("only a P-256"), "{text}");
        let mismatched = common::smimegate(
            data,
            &[
                "admin",
                "tls-import",
                "--certificate",
                &leaf,
                "--key",
                &rsa_key,
            ],
        );
        assert_eq!(
            mismatched.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&mismatched.stderr)
        );
        let out = common::smimegate_ok(
            data,
            &["admin", "tls-import", "--certificate", &leaf, "--key", &key],
        );
        assert!(
            out.contains("tls_certificate = \"console-tls.pem\""),
            "{out}"
        );
        std::fs::remove_file(&key).expect("the key file is not needed any more");
        let config = data.join("smimegate.toml");
        let text = std::fs::read_to_string(&config).expect("config");
        let text = text.replacen(
            "tls_certificate = \"\"",
            "tls_certificate = \"console-tls.pem\"",
            1,
        );
        std::fs::write(&config, text).expect("config");
    });
    let operator_ca =
        reqwest::Certificate::from_pem(&std::fs::read(&ca).expect("ca")).expect("pem");
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(operator_ca)
        .resolve(
            "localhost",
            std::net::SocketAddr::from(([127, 0, 0, 1], gw.console)),
        )
        .build()
        .expect("client");
    let response = http
        .get(format!("https://localhost:{}/login", gw.console))
        .send()
        .await
        .expect(
            "the console presents the operator's certificate, trusted by the operator CA alone",
        );
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_last_enabled_local_admin_cannot_be_removed_demoted_or_disabled() {
    let gw = Gateway::start(|_| {});
    add_account(&gw, "root", "admin");
    for args in [
        vec!["admin", "remove", "root"],
        vec!["admin", "role", "root", "editor"],
        vec!["admin", "disable", "root"],
    ] {
        let out = common::smimegate(gw.data(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("last enabled local admin"), "{text}");
    }
    add_account(&gw, "second", "admin");
    gw.cli(&["admin", "disable", "root"]);
    let refused = common::smimegate(gw.data(), &["admin", "remove", "second"]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "root is disabled: second is the last one"
    );
    gw.cli(&["admin", "enable", "root"]);
    gw.cli(&["admin", "remove", "second"]);
    assert!(!gw.cli(&["admin", "list"]).contains("second"));
}

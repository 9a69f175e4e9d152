//! The admin console in a real headless Chromium (Debian's `chromium` driven through
//! `chromium-driver` by fantoccini) against a real gateway (`smimegate serve` with its
//! token-held TLS key), trusting only the gateway's root CA. The tests click through
//! the pages as an operator would and assert on what the pages show. Every page
//! visited is saved as a PNG under `target/console-screenshots/`;
//! `scripts/console-screenshots` copies a few of them to `docs/screenshots/`.

#[path = "../common/mod.rs"]
mod common;
mod driver;
#[path = "../relay/harness.rs"]
#[allow(dead_code)]
mod harness;
mod sso;

use std::os::unix::fs::PermissionsExt;

use driver::Browser;
use harness::{Client, Gateway};

const PASSWORD: &str = "correct horse battery staple";
const ALICE: &str = "alice@corp.example";
const CEO: &str = "ceo@corp.example";
const BOB: &str = "bob@partner.example";

fn message(from: &str, to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@test>\r\n\
         Content-Type: text/plain\r\n\r\nHello.\r\n",
        subject.replace(' ', ".")
    )
    .into_bytes()
}

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

/// Logs in on `/login` with a local account and checks the dashboard is shown.
async fn log_in(browser: &mut Browser, name: &str) {
    browser.open("/").await;
    assert!(
        browser.path().await.starts_with("/login"),
        "an anonymous visitor is sent to the login page, not {}",
        browser.path().await
    );
    assert_eq!(browser.text("h1").await, "Log in · Anmelden");
    browser.screenshot("login").await;
    browser.fill("#name", name).await;
    browser.fill("#password", PASSWORD).await;
    browser.click_and_load("#login").await;
    if browser.path().await != "/" {
        let flash = browser.text("main").await;
        panic!("the login did not land on the dashboard: {flash}");
    }
    assert_eq!(browser.text("h1").await, "Dashboard · Übersicht");
}

/// Logs in through the IdP: the login page's single sign-on link, the IdP (its user
/// `alice`, in smimegate-admins), its form posted back to our ACS, the dashboard.
async fn log_in_with_sso(browser: &mut Browser) {
    browser.open("/").await;
    assert!(
        browser.path().await.starts_with("/login"),
        "an anonymous visitor is sent to the login page"
    );
    browser.screenshot("login").await;
    browser.click("#sso").await;
    browser.wait_for_console_path("/").await;
    assert_eq!(browser.text("h1").await, "Dashboard · Übersicht");
}

/// Creates a rule with the "new rule" form of the rules page.
async fn add_rule(browser: &Browser, from: &str, to: &str, action: &str, comment: &str) {
    let form = "form#add-rule";
    browser
        .find(&format!("{form} select[name='direction']"))
        .await
        .select_by_value("outbound")
        .await
        .expect("direction");
    browser
        .fill(&format!("{form} input[name='from']"), from)
        .await;
    browser.fill(&format!("{form} input[name='to']"), to).await;
    browser
        .find(&format!("{form} select[name='action']"))
        .await
        .select_by_value(action)
        .await
        .expect("action");
    browser
        .fill(&format!("{form} input[name='comment']"), comment)
        .await;
    browser
        .click_and_load(&format!("{form} button[type='submit']"))
        .await;
    let flash = browser.text("p.flash.ok").await;
    assert!(flash.contains("added"), "{flash}");
}

/// The comments of the outbound rules, in priority order, as the page lists them.
async fn outbound_comments(browser: &Browser) -> Vec<String> {
    let mut comments = Vec::new();
    for row in browser
        .client
        .find_all(fantoccini::Locator::Css("#outbound-rules tbody tr"))
        .await
        .expect("rule rows")
    {
        // Priority, from, to, action, state, comment: the sixth cell.
        let cell = row
            .find(fantoccini::Locator::Css("td:nth-child(6)"))
            .await
            .expect("comment cell");
        comments.push(cell.text().await.expect("comment"));
    }
    comments
}

/// The id of the outbound rule with `comment`.
async fn rule_id(browser: &Browser, comment: &str) -> String {
    for row in browser
        .client
        .find_all(fantoccini::Locator::Css("#outbound-rules tbody tr"))
        .await
        .expect("rule rows")
    {
        let cell = row
            .find(fantoccini::Locator::Css("td:nth-child(6)"))
            .await
            .expect("comment cell");
        if cell.text().await.expect("comment") == comment {
            return row
                .attr("data-rule")
                .await
                .expect("attr")
                .expect("data-rule");
        }
    }
    panic!("no outbound rule {comment:?}")
}

#[tokio::test]
async fn an_sso_user_activates_a_mailbox_moves_a_rule_sees_signed_mail_and_logs_out_in_a_real_browser()
 {
    let (gw, _sso) = sso::gateway_with_sso(|data| {
        common::smimegate_ok(data, &["mailbox", "add", CEO]);
    })
    .await;
    let mut browser = Browser::start(&gw, "flow", 1280, 900).await;

    log_in_with_sso(&mut browser).await;
    assert!(
        browser.text("header .who").await.contains("alice (admin)"),
        "the header names the IdP's user with the mapped role: {}",
        browser.text("header .who").await
    );
    assert!(browser.text("#token").await.contains("OK"), "token health");
    assert!(browser.text("#seats").await.contains("0 used"));
    browser.screenshot("dashboard").await;

    // Mailboxes: add alice, tick her, activate the selected.
    browser
        .click_and_load("header nav a[href='/mailboxes']")
        .await;
    assert_eq!(browser.path().await, "/mailboxes");
    assert_eq!(browser.text("h1").await, "Mailboxes · Postfächer");
    browser.screenshot("mailboxes-before").await;
    browser
        .fill("input[name='address'][type='email']", ALICE)
        .await;
    browser.click_and_load("#add-mailbox").await;
    assert_eq!(
        browser.text("p.flash.ok").await,
        "alice@corp.example added",
        "the page confirms the change"
    );
    let row = "tr[data-address='alice@corp.example']";
    assert!(
        browser.text(row).await.contains("Inactive"),
        "{}",
        browser.text(row).await
    );
    browser.screenshot("mailbox-added").await;

    browser
        .click(&format!("{row} input[type='checkbox'][name='address']"))
        .await;
    browser.click("input[name='skip_mx_check']").await;
    browser.click_and_load("#activate-selected").await;
    assert_eq!(browser.text("p.flash.ok").await, "1 activated");
    let state = browser.text(&format!("{row} .state")).await;
    assert_eq!(state, "Active · Aktiv");
    assert!(
        browser
            .text("#seat-counter")
            .await
            .starts_with("Seats · Lizenzen: 1 used"),
        "{}",
        browser.text("#seat-counter").await
    );
    browser.screenshot("mailboxes").await;
    let listed = gw.cli(&["mailbox", "list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(ALICE) && l.split_whitespace().any(|w| w == "active")),
        "the gateway's own list agrees: {listed}"
    );

    // The audit log names the IdP's user as the one who activated alice.
    browser.click_and_load("header nav a[href='/audit']").await;
    let rows = browser
        .client
        .find_all(fantoccini::Locator::Css("table#audit tbody tr"))
        .await
        .expect("audit rows");
    let mut texts = Vec::new();
    for row in rows {
        texts.push(row.text().await.expect("row text"));
    }
    assert!(
        texts.iter().any(|t| t.contains("saml:alice")
            && t.contains("mailbox.activate")
            && t.contains(ALICE)),
        "the activation is audited as saml:alice: {texts:#?}"
    );
    browser.screenshot("audit").await;

    // The dashboard counts the seat.
    browser.click_and_load("header nav a[href='/']").await;
    assert!(browser.text("#seats").await.contains("1 used"));

    // Two messages through the relay: alice's leaves signed, the inactive ceo's not.
    let mut client = Client::internal(gw.submission);
    for (from, subject) in [(ALICE, "Quarterly report"), (CEO, "Lunch on Friday")] {
        let sent = client.send(from, &[BOB], &message(from, BOB, subject));
        assert_eq!(sent.data.as_ref().map(|d| d.0), Some(250), "{sent:?}");
    }
    let delivered = gw.smarthost.messages();
    assert_eq!(delivered.len(), 2, "both reached the smarthost");
    assert!(
        delivered
            .iter()
            .any(|m| m.text().contains("Quarterly report") && m.text().contains("multipart/signed")),
        "alice's message left signed"
    );

    // The email overview, filtered by "signed", shows alice's message only.
    browser
        .click_and_load("header nav a[href='/messages']")
        .await;
    assert_eq!(
        browser.text("h1").await,
        "Email overview · E-Mail-Übersicht"
    );
    let all = browser.text("table#messages tbody").await;
    assert!(
        all.contains("Quarterly report") && all.contains("Lunch on Friday"),
        "unfiltered, both messages are listed: {all}"
    );
    browser.screenshot("email-overview-all").await;
    browser
        .find("select#crypto")
        .await
        .select_by_value("signed")
        .await
        .expect("choose signed");
    browser.click_and_load("#apply-filter").await;
    assert!(
        browser.path().await.contains("crypto=signed"),
        "{}",
        browser.path().await
    );
    let rows = browser
        .client
        .find_all(fantoccini::Locator::Css("table#messages tbody tr"))
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1, "one signed message");
    let row = rows[0].text().await.expect("row text");
    for shown in [
        "Quarterly report",
        ALICE,
        BOB,
        "Signed · Signiert",
        "Relayed",
    ] {
        assert!(row.contains(shown), "the row shows {shown}: {row}");
    }
    assert!(!row.contains("Lunch"), "{row}");
    browser.screenshot("email-overview").await;
    assert_eq!(
        browser.horizontal_overflow().await,
        None,
        "the email overview fits 1280 px"
    );

    // Rules: two outbound rules, each created at priority 1; then the first one
    // created is moved back to priority 1.
    browser.click_and_load("header nav a[href='/rules']").await;
    assert_eq!(browser.text("h1").await, "Rules · Regeln");
    add_rule(
        &browser,
        "managed",
        "domain:partner.example",
        "sign",
        "partners get signed mail",
    )
    .await;
    add_rule(
        &browser,
        "anyone",
        "domain:other.example",
        "none",
        "nothing for other.example",
    )
    .await;
    assert_eq!(
        outbound_comments(&browser).await,
        ["nothing for other.example", "partners get signed mail"],
        "a new rule comes first"
    );
    browser.screenshot("rules-added").await;
    let partners = rule_id(&browser, "partners get signed mail").await;
    let row = format!("#outbound-rules tr[data-rule='{partners}']");
    browser
        .fill(&format!("{row} input[name='priority']"), "1")
        .await;
    browser
        .click_and_load(&format!("{row} form[action='/rules/move'] button"))
        .await;
    assert!(
        browser.text("p.flash.ok").await.contains("at priority 1"),
        "{}",
        browser.text("main").await
    );
    assert_eq!(
        outbound_comments(&browser).await,
        ["partners get signed mail", "nothing for other.example"],
        "the moved rule is first"
    );
    let first = browser.text("#outbound-rules tbody tr:first-child").await;
    assert!(
        first.starts_with('1') && first.contains("domain:partner.example"),
        "{first}"
    );
    browser.screenshot("rules").await;

    // The dashboard counts the two outbound messages.
    browser.click_and_load("header nav a[href='/']").await;
    let outbound = browser.text("#outbound").await;
    assert!(
        outbound.lines().any(|l| l.trim() == "2"),
        "two outbound messages in 24 h: {outbound}"
    );
    browser.screenshot("dashboard-busy").await;

    // Log out: back on the login page, and the console is closed again.
    browser.click_and_load("#logout").await;
    assert_eq!(browser.path().await, "/login");
    assert_eq!(browser.text("h1").await, "Log in · Anmelden");
    browser.screenshot("logged-out").await;
    browser.open("/mailboxes").await;
    assert_eq!(
        browser.path().await,
        "/login?next=%2Fmailboxes",
        "after logout the pages need a login again"
    );
    browser.close().await;
}

#[tokio::test]
async fn the_console_pages_fit_a_tablet_without_sideways_scrolling() {
    let gw = Gateway::start(|data| harness::mailbox(data, ALICE));
    add_account(&gw, "root", "admin");
    let mut browser = Browser::start(&gw, "tablet", 820, 1180).await;
    let width: u64 = browser
        .client
        .execute("return window.innerWidth;", vec![])
        .await
        .expect("execute")
        .as_u64()
        .expect("width");
    assert!(
        width <= 820,
        "the window is tablet-sized ({width} px wide inside)"
    );

    browser.open("/login").await;
    assert_eq!(browser.horizontal_overflow().await, None, "/login");
    log_in(&mut browser, "root").await;
    for (path, name) in [
        ("/", "dashboard"),
        ("/mailboxes", "mailboxes"),
        ("/messages", "email-overview"),
        ("/audit", "audit"),
        ("/rules", "rules"),
        ("/certificates", "certificates"),
        ("/settings", "settings"),
        ("/accounts", "accounts"),
    ] {
        browser.open(path).await;
        assert_eq!(browser.path().await, path);
        browser.screenshot(name).await;
        assert_eq!(
            browser.horizontal_overflow().await,
            None,
            "{path} is wider than a tablet (scrollWidth, innerWidth)"
        );
    }
    browser.open("/mailboxes").await;
    assert!(
        browser
            .text("tr[data-address='alice@corp.example']")
            .await
            .contains("Active"),
        "the tablet shows the mailbox list"
    );
    browser.close().await;
}

#[tokio::test]
async fn a_browser_that_does_not_trust_the_gateway_root_shows_no_console() {
    let gw = Gateway::start(|_| {});
    let browser = Browser::start_untrusting(&gw, "untrusted").await;
    let url = format!("{}/login", browser.base);
    // Chromium answers an untrusted certificate with its interstitial: no console
    // page, no form to log in on. (So the other tests' trust is the NSS anchor.)
    let _ = browser.client.goto(&url).await;
    let title = browser.client.title().await.unwrap_or_default();
    assert_eq!(
        title, "Privacy error",
        "Chromium's certificate interstitial, not the console"
    );
    let login = browser
        .client
        .find_all(fantoccini::Locator::Css("#login"))
        .await
        .unwrap_or_default();
    assert!(login.is_empty(), "the login form was shown");
    browser.close().await;
}

#[tokio::test]
async fn an_sso_user_without_a_mapped_role_sees_why_and_gets_no_session() {
    let (gw, sso) = sso::gateway_with_sso(|_| {}).await;
    let mut browser = Browser::start(&gw, "sso-refused", 1280, 900).await;
    // A login request of ours (what the login page's link starts), answered by the IdP
    // for mallory: staff only, no group mapped to a role.
    let redirect = sso::https_client(&gw)
        .get(format!("https://localhost:{}/saml/login", gw.console))
        .send()
        .await
        .expect("GET /saml/login");
    assert_eq!(redirect.status(), 303, "SP-initiated login redirects");
    let to_idp = redirect.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    assert!(
        to_idp.starts_with(&format!(
            "http://127.0.0.1:{}/sso?SAMLRequest=",
            sso.idp.port
        )),
        "{to_idp}"
    );
    browser
        .client
        .goto(&format!("{to_idp}&user=mallory"))
        .await
        .expect("to the IdP");
    browser.wait_for_console_path("/saml/acs").await;
    let error = browser.text("#login-error").await;
    assert!(
        error.contains("no console role") && error.contains("groups"),
        "the page says why: {error}"
    );
    browser.screenshot("refused").await;
    browser.open("/").await;
    assert!(
        browser.path().await.starts_with("/login"),
        "no session was started: {}",
        browser.path().await
    );
    let audit = gw.cli(&["audit", "--action", "saml.login-refused"]);
    assert!(audit.contains("saml:mallory"), "{audit}");
    browser.close().await;
}

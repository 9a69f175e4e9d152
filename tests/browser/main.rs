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

use std::os::unix::fs::PermissionsExt;

use driver::Browser;
use harness::Gateway;

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

#[tokio::test]
async fn an_editor_logs_in_activates_a_mailbox_and_logs_out_in_a_real_browser() {
    let gw = Gateway::start(|_| {});
    add_account(&gw, "erika", "editor");
    let mut browser = Browser::start(&gw, "flow", 1280, 900).await;

    log_in(&mut browser, "erika").await;
    assert!(
        browser.text("header .who").await.contains("erika (editor)"),
        "the header names the caller"
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
    browser.screenshot("mailboxes-empty").await;
    browser
        .fill("input[name='address'][type='email']", "alice@corp.example")
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
        listed.lines().any(
            |l| l.contains("alice@corp.example") && l.split_whitespace().any(|w| w == "active")
        ),
        "the gateway's own list agrees: {listed}"
    );

    // The dashboard counts the seat.
    browser.click_and_load("header nav a[href='/']").await;
    assert!(browser.text("#seats").await.contains("1 used"));

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
    let gw = Gateway::start(|data| harness::mailbox(data, "alice@corp.example"));
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
    for (path, name) in [("/", "dashboard"), ("/mailboxes", "mailboxes")] {
        browser.open(path).await;
        assert_eq!(browser.path().await, path);
        assert_eq!(
            browser.horizontal_overflow().await,
            None,
            "{path} is wider than a tablet (scrollWidth, innerWidth)"
        );
        browser.screenshot(name).await;
    }
    assert!(
        browser
            .text("tr[data-address='alice@corp.example']")
            .await
            .contains("Active"),
        "the tablet shows the mailbox list"
    );
    browser.close().await;
}

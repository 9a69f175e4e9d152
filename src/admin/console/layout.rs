//! The page shell every console page shares: navigation, the caller, logout, and the
//! labels (English with the German the product's FAQ uses). Pages are plain HTML
//! forms; no script is needed. maud escapes every interpolated value.

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::Who;
use crate::ops::Role;

const STYLE: &str = r#"
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,sans-serif;color:#1d2430;background:#f4f6f9}
header{display:flex;flex-wrap:wrap;align-items:center;gap:.25rem 1rem;padding:.6rem 1rem;background:#1f3a5f;color:#fff}
header a{color:#fff;text-decoration:none;padding:.25rem .4rem;border-radius:4px}header a.on,header a:hover{background:#2f5687}
header .who{margin-left:auto;font-size:.9em}main{padding:1rem;max-width:1400px;margin:auto}
table{border-collapse:collapse;width:100%;background:#fff}th,td{border-bottom:1px solid #dde2ea;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#e9edf3}.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:1rem;margin-bottom:1rem}
.card{background:#fff;border:1px solid #dde2ea;border-radius:6px;padding:.8rem}.card .n{font-size:1.8em;font-weight:600}
form.inline{display:inline}button,input,select{font:inherit;padding:.3rem .5rem}button{cursor:pointer}
.state{padding:.1rem .4rem;border-radius:3px;font-size:.85em;white-space:nowrap}.ok{background:#d8f0dd}.warn{background:#fbeccc}.bad{background:#f6d5d5}.off{background:#e4e6ea}
.flash{padding:.6rem;border-radius:4px;margin-bottom:1rem}.flash.err{background:#f6d5d5}.flash.ok{background:#d8f0dd}
fieldset{border:1px solid #dde2ea;background:#fff;margin:0 0 1rem}.mono{font-family:ui-monospace,monospace;font-size:.9em;word-break:break-all}
@media (max-width:800px){table{font-size:.85em}header .who{margin-left:0}}
"#;

/// The navigation: path, English, German, role needed to see it.
const NAV: &[(&str, &str, &str, Role)] = &[
    ("/", "Dashboard", "Übersicht", Role::Viewer),
    ("/mailboxes", "Mailboxes", "Postfächer", Role::Viewer),
    ("/certificates", "Certificates", "Zertifikate", Role::Viewer),
    ("/rules", "Rules", "Regeln", Role::Viewer),
    (
        "/messages",
        "Email overview",
        "E-Mail-Übersicht",
        Role::Viewer,
    ),
    ("/audit", "Audit log", "Audit-Protokoll", Role::Viewer),
    ("/settings", "Settings", "Einstellungen", Role::Viewer),
    ("/accounts", "Accounts", "Konten", Role::Admin),
];

/// An English label with its German one, as the pages show both.
pub fn both(en: &str, de: &str) -> Markup {
    html! { (en) " · " span lang="de" { (de) } }
}

/// A page in the shell; `current` is the navigation entry to mark.
pub fn page(who: &Who, current: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — smimegate" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "smimegate" }
                    nav {
                        @for (path, en, de, role) in NAV {
                            @if who.caller.role.allows(*role) {
                                a href=(path) class=[(*path == current).then_some("on")] title=(de) { (en) }
                            }
                        }
                    }
                    span.who {
                        (who.caller.account) " (" (who.caller.role) ") "
                        form.inline method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(who.csrf());
                            button type="submit" id="logout" { "Log out · Abmelden" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A page for a visitor who is not logged in (login, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — smimegate" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header { strong { "smimegate" } }
                main { h1 { (title) } (body) }
            }
        }
    }
}

pub fn error_page(status: StatusCode, detail: &str) -> Markup {
    bare(
        status.canonical_reason().unwrap_or("Error"),
        html! { p.flash.err { (detail) } p { a href="/" { "Back to the console" } } },
    )
}

/// A message above a page's content after a change (`?ok=` / `?error=`).
pub fn flash(ok: Option<&str>, error: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = error { p.flash.err role="alert" { (text) } }
        @if let Some(text) = ok { p.flash.ok role="status" { (text) } }
    }
}

/// A unix time as the pages show it (UTC).
pub fn when(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

//! The email overview: the message log filtered by time, direction, status, crypto
//! result and address, paged, with a CSV export of the same filter.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, RawQuery, State};
use axum::http::{Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};

use super::super::{Console, Problem, Who, layout};
use crate::ops;
use crate::ops::messages::MessageQuery;

pub fn viewer() -> Router<Arc<Console>> {
    Router::new()
        .route("/messages", get(overview))
        .route("/messages.csv", get(export))
}

/// A crypto result as the pages show it, English and German.
pub fn crypto_label(result: &str) -> Markup {
    let (class, en, de) = match result {
        "signed" => ("ok", "Signed", "Signiert"),
        "encrypted" => ("ok", "Encrypted", "Verschlüsselt"),
        "decrypted" => ("ok", "Decrypted", "Entschlüsselt"),
        "signature-valid" => ("ok", "Signature valid", "Signatur gültig"),
        "signature-invalid" => ("bad", "Signature invalid", "Signatur ungültig"),
        "none" => ("off", "None", "Keine"),
        other => ("off", other, other),
    };
    html! { span class={ "state " (class) } data-crypto=(result) { (layout::both(en, de)) } }
}

fn status_label(status: &str) -> Markup {
    let (class, en, de) = match status {
        "relayed" => ("ok", "Relayed", "Zugestellt"),
        "rejected" => ("bad", "Rejected", "Abgewiesen"),
        "deferred" => ("warn", "Deferred", "Zurückgestellt"),
        other => ("off", other, other),
    };
    html! { span class={ "state " (class) } { (layout::both(en, de)) } }
}

/// The query as typed into the filter form: empty fields are left out (an empty
/// `page=` is no page), so the operation sees only what the user set.
pub(in crate::admin::console) fn lenient<T: serde::de::DeserializeOwned + Default>(
    raw: Option<&str>,
) -> Result<T, Problem> {
    let Some(raw) = raw else {
        return Ok(T::default());
    };
    let kept = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form_urlencoded::parse(raw.as_bytes()).filter(|(_, v)| !v.trim().is_empty()))
        .finish();
    let uri: Uri = format!("/?{kept}")
        .parse()
        .map_err(|_| Problem::new(axum::http::StatusCode::BAD_REQUEST, "unreadable query"))?;
    Query::<T>::try_from_uri(&uri)
        .map(|Query(q)| q)
        .map_err(|e| Problem::new(axum::http::StatusCode::BAD_REQUEST, e.body_text()))
}

fn selected(current: &Option<String>, value: &str) -> bool {
    current.as_deref() == Some(value)
}

async fn overview(
    State(console): State<Arc<Console>>,
    who: Who,
    RawQuery(raw): RawQuery,
) -> Response {
    let query: MessageQuery = match lenient(raw.as_deref()) {
        Ok(q) => q,
        Err(p) => return p.into_response(),
    };
    let (page, error) = match ops::messages::search(&console.ops(), query.clone()).await {
        Ok(page) => (Some(page), None),
        Err(e) => (None, Some(Problem::from(e).detail)),
    };
    let keep = |page_no: i64| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("from", &query.from),
            ("to", &query.to),
            ("direction", &query.direction),
            ("status", &query.status),
            ("crypto", &query.crypto),
            ("address", &query.address),
        ] {
            if let Some(v) = v {
                s.append_pair(k, v);
            }
        }
        if let Some(size) = query.page_size {
            s.append_pair("page_size", &size.to_string());
        }
        if page_no > 0 {
            s.append_pair("page", &page_no.to_string());
        }
        s.finish()
    };
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let body = html! {
        (layout::flash(None, error.as_deref()))
        form method="get" action="/messages" id="message-filter" {
            fieldset {
                legend { "Filter" }
                label { "From " input name="from" value=(text(&query.from)) placeholder="24h, 7d, 2026-11-30T00:00:00Z" size="18"; } " "
                label { "To " input name="to" value=(text(&query.to)) size="18"; } " "
                label { "Direction " select name="direction" {
                    option value="" { "any" }
                    option value="inbound" selected[selected(&query.direction, "inbound")] { "inbound · eingehend" }
                    option value="outbound" selected[selected(&query.direction, "outbound")] { "outbound · ausgehend" }
                } } " "
                label { "Status " select name="status" {
                    option value="" { "any" }
                    @for s in ["relayed", "rejected", "deferred"] {
                        option value=(s) selected[selected(&query.status, s)] { (s) }
                    }
                } } " "
                label { "Crypto result " select name="crypto" id="crypto" {
                    option value="" { "any" }
                    @for c in ["signed", "encrypted", "decrypted", "signature-valid", "signature-invalid", "none"] {
                        option value=(c) selected[selected(&query.crypto, c)] { (c) }
                    }
                } } " "
                label { "Address " input name="address" type="email" value=(text(&query.address)); } " "
                button type="submit" id="apply-filter" { "Show · Anzeigen" }
                " " a href={ "/messages.csv?" (keep(0)) } id="csv" { "CSV export" }
            }
        }
        @if let Some(page) = &page {
            p { (page.total) " messages · Nachrichten" }
            table #messages {
                thead { tr {
                    th { "Received" } th { "Direction" } th { "From" } th { "To" } th { "Subject · Betreff" }
                    th { "Status" } th { "Crypto" } th { "SMTP reply" }
                } }
                tbody {
                    @for row in &page.rows {
                        tr data-id=(row.id) {
                            td { (layout::when(row.received_at)) }
                            td { (row.direction) }
                            td { (row.mail_from) }
                            td { @for (i, r) in row.rcpt_to.iter().enumerate() { @if i > 0 { br; } (r) } }
                            td { (row.subject.clone().unwrap_or_default()) }
                            td { (status_label(&row.status)) }
                            td {
                                @if row.crypto.is_empty() { (crypto_label("none")) }
                                @for c in &row.crypto { (crypto_label(c)) " " }
                            }
                            // The reply text starts with its code; the code alone when there is no text.
                            td.mono {
                                @match (&row.smtp_reply, row.smtp_code) {
                                    (Some(reply), _) => { (reply) }
                                    (None, Some(code)) => { (code) }
                                    (None, None) => {}
                                }
                            }
                        }
                    }
                }
            }
            p {
                @if page.page > 1 { a href={ "/messages?" (keep(page.page - 1)) } { "← newer" } " " }
                "page " (page.page)
                @if page.has_more { " " a href={ "/messages?" (keep(page.page + 1)) } id="older" { "older →" } }
            }
        }
    };
    layout::page(&who, "/messages", "Email overview · E-Mail-Übersicht", body).into_response()
}

async fn export(State(console): State<Arc<Console>>, RawQuery(raw): RawQuery) -> Response {
    let query: MessageQuery = match lenient(raw.as_deref()) {
        Ok(q) => q,
        Err(p) => return p.into_response(),
    };
    csv_answer(&console, query).await
}

/// The CSV export of `query` as a download.
pub(in crate::admin::console) async fn csv_answer(
    console: &Console,
    query: MessageQuery,
) -> Response {
    let mut out = Vec::new();
    match ops::messages::csv(&console.ops(), query, &mut out).await {
        Ok(_) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"smimegate-messages.csv\"",
                ),
            ],
            out,
        )
            .into_response(),
        Err(e) => Problem::from(e).into_response(),
    }
}

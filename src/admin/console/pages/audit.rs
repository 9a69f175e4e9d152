//! The audit log: who changed what, when, from where; filterable and paged.

use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::html;

use super::super::{Console, Problem, Who, layout};
use super::messages::lenient;
use crate::ops;
use crate::ops::audit::AuditQuery;

pub fn viewer() -> Router<Arc<Console>> {
    Router::new().route("/audit", get(audit))
}

async fn audit(State(console): State<Arc<Console>>, who: Who, RawQuery(raw): RawQuery) -> Response {
    let query: AuditQuery = match lenient(raw.as_deref()) {
        Ok(q) => q,
        Err(p) => return p.into_response(),
    };
    let (page, error) = match ops::audit::search(&console.ops(), query.clone()).await {
        Ok(page) => (Some(page), None),
        Err(e) => (None, Some(Problem::from(e).detail)),
    };
    let keep = |page_no: i64| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("actor", &query.actor),
            ("action", &query.action),
            ("target", &query.target),
            ("from", &query.from),
            ("to", &query.to),
        ] {
            if let Some(v) = v {
                s.append_pair(k, v);
            }
        }
        s.append_pair("page", &page_no.to_string());
        s.finish()
    };
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let body = html! {
        (layout::flash(None, error.as_deref()))
        form method="get" action="/audit" {
            fieldset {
                legend { "Filter" }
                label { "Who " input name="actor" value=(text(&query.actor)) placeholder="console:alice"; } " "
                label { "Action starts with " input name="action" value=(text(&query.action)) placeholder="rule."; } " "
                label { "Target " input name="target" value=(text(&query.target)); } " "
                label { "From " input name="from" value=(text(&query.from)) placeholder="7d" size="14"; } " "
                label { "To " input name="to" value=(text(&query.to)) size="14"; } " "
                button type="submit" { "Show · Anzeigen" }
            }
        }
        @if let Some(page) = &page {
            p { (page.total) " entries · Einträge" }
            table #audit {
                thead { tr { th { "When" } th { "Who" } th { "From where" } th { "What" } th { "Target" } th { "Detail" } } }
                tbody {
                    @for row in &page.rows {
                        tr {
                            td { (layout::when(row.at)) }
                            td { (row.actor) }
                            td { (row.origin) }
                            td { (row.action) }
                            td { (row.target) }
                            td { (row.detail) }
                        }
                    }
                }
            }
            p {
                @if page.page > 1 { a href={ "/audit?" (keep(page.page - 1)) } { "← newer" } " " }
                "page " (page.page)
                @if page.has_more { " " a href={ "/audit?" (keep(page.page + 1)) } { "older →" } }
            }
        }
    };
    layout::page(&who, "/audit", "Audit log · Audit-Protokoll", body).into_response()
}

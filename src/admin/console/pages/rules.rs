//! Rules: both directions in priority order; editors create (at priority 1), edit,
//! move, enable/disable and delete; everyone may ask *explain* (sender + recipient → the
//! decision and why), a read that changes nothing.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::html;

use super::super::{Console, Who, layout};
use super::{back, form_fields, one_of};
use crate::ops::{self, OpError, Role};
use crate::policy::Direction;

pub fn viewer() -> Router<Arc<Console>> {
    Router::new().route("/rules", get(list))
}

pub fn editor() -> Router<Arc<Console>> {
    Router::new()
        .route("/rules/add", post(add))
        .route("/rules/edit", post(edit))
        .route("/rules/move", post(move_rule))
        .route("/rules/enable", post(enable))
        .route("/rules/disable", post(disable))
        .route("/rules/remove", post(remove))
}

#[derive(Debug, Default, serde::Deserialize)]
struct RulesQuery {
    #[serde(default)]
    ok: Option<String>,
    #[serde(default)]
    error: Option<String>,
    /// The explain form's sender and recipient.
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

const OUTBOUND_ACTIONS: &[&str] = &[
    "undefined",
    "none",
    "sign",
    "encrypt-optional",
    "encrypt-enforced",
];
const INBOUND_ACTIONS: &[&str] = &[
    "undefined",
    "no-decrypt",
    "decrypt-optional",
    "decrypt-always",
    "decrypt-enforced",
];

async fn list(
    State(console): State<Arc<Console>>,
    who: Who,
    Query(query): Query<RulesQuery>,
) -> Response {
    let ops = console.ops();
    let rules = match ops::rules::list(&ops).await {
        Ok(rules) => rules,
        Err(e) => return super::failed(e),
    };
    let asked = match (query.from.as_deref(), query.to.as_deref()) {
        (Some(from), Some(to)) if !from.is_empty() && !to.is_empty() => {
            let input = ops::rules::Explain {
                from: from.to_string(),
                to: to.to_string(),
            };
            Some(ops::rules::explain(&ops, input).await)
        }
        _ => None,
    };
    let may_edit = who.caller.role.allows(Role::Editor);
    let csrf = who.csrf();
    let body = html! {
        (layout::flash(query.ok.as_deref(), query.error.as_deref()))
        @for direction in [Direction::Outbound, Direction::Inbound] {
            h2 { @match direction {
                Direction::Outbound => (layout::both("Outbound", "Ausgehend")),
                Direction::Inbound => (layout::both("Inbound", "Eingehend")),
            } }
            table id={ (direction.as_str()) "-rules" } {
                thead { tr {
                    th { "Priority" } th { "From · Von" } th { "To · An" } th { "Action · Aktion" }
                    th { "State · Status" } th { "Comment" } @if may_edit { th { "" } }
                } }
                tbody {
                    @for rule in rules.iter().filter(|r| r.direction == direction) {
                        tr data-rule=(rule.id) {
                            td { (rule.priority) }
                            td { (rule.sender.to_string()) }
                            td { (rule.recipient.to_string()) }
                            td { (rule.action.to_string()) }
                            td { @if rule.enabled { span.state.ok { (layout::both("Enabled", "Aktiv")) } }
                                 @else { span.state.off { (layout::both("Disabled", "Deaktiviert")) } } }
                            td { (rule.comment) }
                            @if may_edit {
                                td {
                                    form.inline method="post" action="/rules/move" {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="id" value=(rule.id);
                                        input type="number" name="priority" min="1" value=(rule.priority) style="width:5em" aria-label="new priority";
                                        button type="submit" { "Move" }
                                    }
                                    " "
                                    form.inline method="post" action=(if rule.enabled { "/rules/disable" } else { "/rules/enable" }) {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="id" value=(rule.id);
                                        button type="submit" { @if rule.enabled { "Disable" } @else { "Enable" } }
                                    }
                                    " "
                                    form.inline method="post" action="/rules/remove" {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="id" value=(rule.id);
                                        button type="submit" { "Delete · Löschen" }
                                    }
                                    details {
                                        summary { "Edit · Bearbeiten" }
                                        form method="post" action="/rules/edit" {
                                            input type="hidden" name="csrf" value=(csrf);
                                            input type="hidden" name="id" value=(rule.id);
                                            input type="hidden" name="direction" value=(rule.direction.as_str());
                                            label { "From " input name="from" required value=(rule.sender.to_string()); } " "
                                            label { "To " input name="to" required value=(rule.recipient.to_string()); } " "
                                            label { "Action " select name="action" {
                                                @for a in (if direction == Direction::Outbound { OUTBOUND_ACTIONS } else { INBOUND_ACTIONS }) {
                                                    option value=(a) selected[rule.action.to_string() == *a] { (a) }
                                                }
                                            } } " "
                                            label { "Comment " input name="comment" value=(rule.comment); } " "
                                            button type="submit" { "Save · Speichern" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if may_edit {
            form method="post" action="/rules/add" id="add-rule" {
                input type="hidden" name="csrf" value=(csrf);
                fieldset {
                    legend { "New rule at priority 1 · Neue Regel (Priorität 1)" }
                    label { "Direction " select name="direction" {
                        option value="outbound" { "outbound" } option value="inbound" { "inbound" }
                    } } " "
                    label { "From " input name="from" required placeholder="anyone, managed, domain:x.example, name@x.example"; } " "
                    label { "To " input name="to" required placeholder="anyone, domain:partner.example"; } " "
                    label { "Action " select name="action" {
                        optgroup label="outbound" { @for a in OUTBOUND_ACTIONS { option value=(a) { (a) } } }
                        optgroup label="inbound" { @for a in &INBOUND_ACTIONS[1..] { option value=(a) { (a) } } }
                    } } " "
                    label { "Comment " input name="comment"; } " "
                    button type="submit" { "Create · Anlegen" }
                }
            }
        }
        h2 { (layout::both("Explain", "Erklären")) }
        form method="get" action="/rules" id="explain" {
            label { "Sender " input name="from" type="email" required value=(query.from.as_deref().unwrap_or("")); } " "
            label { "Recipient " input name="to" type="email" required value=(query.to.as_deref().unwrap_or("")); } " "
            button type="submit" { "Explain" }
        }
        @match &asked {
            Some(Ok(e)) => {
                div #explanation .card {
                    p { strong { (e.direction.as_str()) } ": " (e.sender) " → " (e.recipient) }
                    p { "Decision: " strong { (e.selection.action.to_string()) } " — "
                        @if let Some(id) = e.selection.rule_id { "rule " (id) } @else { "no rule decides: the default applies" } }
                    ul { @for line in &e.outcomes { li { (line) } } }
                    @if !e.notes.is_empty() { ul { @for note in &e.notes { li { em { (note) } } } } }
                }
            }
            Some(Err(e)) => { p.flash.err role="alert" { (e.to_string()) } }
            None => {}
        }
    };
    layout::page(&who, "/rules", "Rules · Regeln", body).into_response()
}

/// The rule id of a form, or why there is none.
fn rule_id(fields: &[(String, String)]) -> Result<i64, OpError> {
    one_of(fields, "id")
        .and_then(|id| id.trim().parse().ok())
        .ok_or_else(|| OpError::Invalid("the form names no rule id".into()))
}

async fn add(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let field = |name| one_of(&fields, name).unwrap_or_default().to_string();
    let input = ops::rules::AddRule {
        direction: field("direction"),
        from: field("from"),
        to: field("to"),
        action: field("action"),
        comment: field("comment"),
    };
    let outcome = ops::rules::add(&console.ops(), &who.actor(), input)
        .await
        .map(|rule| format!("rule {} added: {}", rule.id, ops::rules::describe(&rule)));
    back("/rules", outcome)
}

async fn edit(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let field = |name| one_of(&fields, name).map(str::to_string);
    let outcome = match rule_id(&fields) {
        Ok(id) => {
            let input = ops::rules::EditRule {
                direction: field("direction"),
                from: field("from"),
                to: field("to"),
                action: field("action"),
                comment: field("comment"),
            };
            ops::rules::edit(&console.ops(), &who.actor(), id, input)
                .await
                .map(|rule| format!("rule {} saved: {}", rule.id, ops::rules::describe(&rule)))
        }
        Err(e) => Err(e),
    };
    back("/rules", outcome)
}

async fn move_rule(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let input = rule_id(&fields).and_then(|id| {
        one_of(&fields, "priority")
            .and_then(|p| p.trim().parse().ok())
            .map(|priority| ops::rules::MoveRule { id, priority })
            .ok_or_else(|| OpError::Invalid("the priority is not a number".into()))
    });
    let outcome = match input {
        Ok(input) => ops::rules::move_to(&console.ops(), &who.actor(), input)
            .await
            .map(|rule| format!("rule {} is at priority {}", rule.id, rule.priority)),
        Err(e) => Err(e),
    };
    back("/rules", outcome)
}

async fn enable(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let outcome = match rule_id(&form_fields(&body)) {
        Ok(id) => ops::rules::enable(&console.ops(), &who.actor(), id)
            .await
            .map(|rule| format!("rule {} enabled", rule.id)),
        Err(e) => Err(e),
    };
    back("/rules", outcome)
}

async fn disable(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let outcome = match rule_id(&form_fields(&body)) {
        Ok(id) => ops::rules::disable(&console.ops(), &who.actor(), id)
            .await
            .map(|rule| format!("rule {} disabled", rule.id)),
        Err(e) => Err(e),
    };
    back("/rules", outcome)
}

async fn remove(State(console): State<Arc<Console>>, who: Who, body: Bytes) -> Response {
    let outcome = match rule_id(&form_fields(&body)) {
        Ok(id) => ops::rules::remove(&console.ops(), &who.actor(), id)
            .await
            .map(|rule| format!("rule {} deleted", rule.id)),
        Err(e) => Err(e),
    };
    back("/rules", outcome)
}

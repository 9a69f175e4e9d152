//! Policy rules: list and explain (viewer); add, edit, move, enable, disable, remove
//! (editor).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, ApiQuery, ApiRouter, answer, created};
use crate::admin::console::{Console, Problem, Who};
use crate::ops::{self};
use crate::policy::Rule;
use crate::relay::explain::Explanation;

pub fn viewer() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(list_rules))
        .routes(routes!(explain))
}

pub fn editor() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(add_rule))
        .routes(routes!(move_rule))
        .routes(routes!(enable_rule))
        .routes(routes!(disable_rule))
        .routes(routes!(edit_rule, remove_rule))
}

/// Every rule, both directions, highest priority first.
#[utoipa::path(get, path = "/rules", tag = "rules",
    responses((status = 200, body = Vec<Rule>), (status = 401, body = Problem)))]
async fn list_rules(State(console): State<Arc<Console>>) -> Response {
    answer(ops::rules::list(&console.ops()).await)
}

/// A sender and a recipient to explain.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExplainQuery {
    from: String,
    to: String,
}

/// Which rule decides for a sender and a recipient, what happens and why.
#[utoipa::path(get, path = "/rules/explain", tag = "rules", params(ExplainQuery),
    responses((status = 200, body = Explanation), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 422, body = Problem)))]
async fn explain(
    State(console): State<Arc<Console>>,
    ApiQuery(query): ApiQuery<ExplainQuery>,
) -> Response {
    let input = ops::rules::Explain {
        from: query.from,
        to: query.to,
    };
    answer(ops::rules::explain(&console.ops(), input).await)
}

/// Adds a rule at priority 1.
#[utoipa::path(post, path = "/rules", tag = "rules", request_body = ops::rules::AddRule,
    responses((status = 201, body = Rule), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn add_rule(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiJson(input): ApiJson<ops::rules::AddRule>,
) -> Response {
    created(ops::rules::add(&console.ops(), &who.actor(), input).await)
}

/// Changes a rule's direction, matchers, action or comment (absent fields stay);
/// its priority and state stay.
#[utoipa::path(patch, path = "/rules/{id}", tag = "rules", request_body = ops::rules::EditRule,
    params(("id" = i64, Path, description = "rule id")),
    responses((status = 200, body = Rule), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn edit_rule(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiPath(id): ApiPath<i64>,
    ApiJson(input): ApiJson<ops::rules::EditRule>,
) -> Response {
    answer(ops::rules::edit(&console.ops(), &who.actor(), id, input).await)
}

/// Where a rule moves to.
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct MoveRequest {
    /// 1 is the highest; beyond the last rule means last.
    priority: i64,
}

/// Moves a rule to another priority.
#[utoipa::path(post, path = "/rules/{id}/move", tag = "rules", request_body = MoveRequest,
    params(("id" = i64, Path, description = "rule id")),
    responses((status = 200, body = Rule), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn move_rule(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiPath(id): ApiPath<i64>,
    ApiJson(input): ApiJson<MoveRequest>,
) -> Response {
    let input = ops::rules::MoveRule {
        id,
        priority: input.priority,
    };
    answer(ops::rules::move_to(&console.ops(), &who.actor(), input).await)
}

/// Puts a disabled rule back in force.
#[utoipa::path(post, path = "/rules/{id}/enable", tag = "rules",
    params(("id" = i64, Path, description = "rule id")),
    responses((status = 200, body = Rule), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn enable_rule(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiPath(id): ApiPath<i64>,
) -> Response {
    answer(ops::rules::enable(&console.ops(), &who.actor(), id).await)
}

/// Keeps a rule but skips it.
#[utoipa::path(post, path = "/rules/{id}/disable", tag = "rules",
    params(("id" = i64, Path, description = "rule id")),
    responses((status = 200, body = Rule), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn disable_rule(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiPath(id): ApiPath<i64>,
) -> Response {
    answer(ops::rules::disable(&console.ops(), &who.actor(), id).await)
}

/// Removes a rule; the lower ones move up one.
#[utoipa::path(delete, path = "/rules/{id}", tag = "rules",
    params(("id" = i64, Path, description = "rule id")),
    responses((status = 200, body = Rule), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn remove_rule(
    State(console): State<Arc<Console>>,
    who: Who,
    ApiPath(id): ApiPath<i64>,
) -> Response {
    answer(ops::rules::remove(&console.ops(), &who.actor(), id).await)
}

//! Policy rules (DESIGN §3): priorities 1..n without gaps, 1 the highest. A new rule
//! goes to 1 and the others move down; moving and removing keep the sequence dense.
//! The relay reads the rules for every transaction, so a change is in force for the
//! next one, on every node.

use sqlx::{AnyPool, Row};

use super::{Result, StoreError, db, now};
use crate::policy::{Action, Direction, Matcher, Rule};

pub struct Rules<'a> {
    pub(super) pool: &'a AnyPool,
}

/// A rule to add.
#[derive(Debug, Clone)]
pub struct NewRule {
    pub direction: Direction,
    pub sender: Matcher,
    pub recipient: Matcher,
    pub action: Action,
    pub comment: String,
}

const COLUMNS: &str =
    "id, priority, direction, sender_matcher, recipient_matcher, action, enabled, comment";

fn row_to_rule(row: &sqlx::any::AnyRow) -> Result<Rule> {
    let read = db("reading rule");
    let id: i64 = row.try_get("id").map_err(&read)?;
    let corrupt = |what: String| StoreError::Corrupt(format!("rule {id}: {what}"));
    let direction: String = row.try_get("direction").map_err(&read)?;
    let direction = Direction::parse(&direction).map_err(|e| corrupt(e.to_string()))?;
    let sender: String = row.try_get("sender_matcher").map_err(&read)?;
    let recipient: String = row.try_get("recipient_matcher").map_err(&read)?;
    let action: String = row.try_get("action").map_err(&read)?;
    Ok(Rule {
        id,
        priority: row.try_get("priority").map_err(&read)?,
        direction,
        sender: Matcher::parse(&sender).map_err(|e| corrupt(e.to_string()))?,
        recipient: Matcher::parse(&recipient).map_err(|e| corrupt(e.to_string()))?,
        action: Action::parse(&action, direction).map_err(|e| corrupt(e.to_string()))?,
        enabled: row.try_get::<i64, _>("enabled").map_err(&read)? != 0,
        comment: row.try_get("comment").map_err(&read)?,
    })
}

impl Rules<'_> {
    /// Adds a rule at priority 1; every other rule moves down one.
    pub async fn add(&self, rule: &NewRule) -> Result<Rule> {
        if rule.action != Action::Undefined && rule.action.direction() != Some(rule.direction) {
            return Err(StoreError::Refused(format!(
                "action {} is not an {} action",
                rule.action, rule.direction
            )));
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting transaction"))?;
        sqlx::query("UPDATE rules SET priority = priority + 1")
            .execute(&mut *tx)
            .await
            .map_err(db("moving rules down"))?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO rules (priority, direction, sender_matcher, recipient_matcher, action, \
             enabled, comment, created_at, updated_at) VALUES (1, $1, $2, $3, $4, 1, $5, $6, $6) \
             RETURNING {COLUMNS}"
        )))
        .bind(rule.direction.as_str())
        .bind(rule.sender.to_string())
        .bind(rule.recipient.to_string())
        .bind(rule.action.as_str())
        .bind(&rule.comment)
        .bind(now())
        .fetch_one(&mut *tx)
        .await
        .map_err(db("adding rule"))?;
        let added = row_to_rule(&row)?;
        tx.commit().await.map_err(db("committing rule"))?;
        Ok(added)
    }

    /// Every rule, highest priority first.
    pub async fn list(&self) -> Result<Vec<Rule>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM rules ORDER BY priority, id"
        )))
        .fetch_all(self.pool)
        .await
        .map_err(db("listing rules"))?;
        rows.iter().map(row_to_rule).collect()
    }

    pub async fn get(&self, id: i64) -> Result<Rule> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM rules WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool)
        .await
        .map_err(db("reading rule"))?
        .ok_or_else(|| StoreError::NotFound(format!("no rule {id}")))?;
        row_to_rule(&row)
    }

    /// Moves a rule to `priority` (clamped to 1..=number of rules); the rules between
    /// its old and new place shift by one.
    pub async fn move_to(&self, id: i64, priority: i64) -> Result<Rule> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting transaction"))?;
        let old: i64 = sqlx::query_scalar("SELECT priority FROM rules WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("reading rule"))?
            .ok_or_else(|| StoreError::NotFound(format!("no rule {id}")))?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rules")
            .fetch_one(&mut *tx)
            .await
            .map_err(db("counting rules"))?;
        let new = priority.clamp(1, count.max(1));
        if new < old {
            sqlx::query(
                "UPDATE rules SET priority = priority + 1 WHERE priority >= $1 AND priority < $2",
            )
            .bind(new)
            .bind(old)
            .execute(&mut *tx)
            .await
            .map_err(db("moving rules"))?;
        } else if new > old {
            sqlx::query(
                "UPDATE rules SET priority = priority - 1 WHERE priority > $1 AND priority <= $2",
            )
            .bind(old)
            .bind(new)
            .execute(&mut *tx)
            .await
            .map_err(db("moving rules"))?;
        }
        sqlx::query("UPDATE rules SET priority = $1, updated_at = $2 WHERE id = $3")
            .bind(new)
            .bind(now())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db("moving rule"))?;
        tx.commit().await.map_err(db("committing rule move"))?;
        self.get(id).await
    }

    /// Replaces the direction, matchers, action and comment of rule `id` in one
    /// statement; its priority and enabled flag stay.
    pub async fn update(&self, id: i64, rule: &NewRule) -> Result<Rule> {
        if rule.action != Action::Undefined && rule.action.direction() != Some(rule.direction) {
            return Err(StoreError::Refused(format!(
                "action {} is not an {} action",
                rule.action, rule.direction
            )));
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE rules SET direction = $1, sender_matcher = $2, recipient_matcher = $3, \
             action = $4, comment = $5, updated_at = $6 WHERE id = $7 RETURNING {COLUMNS}"
        )))
        .bind(rule.direction.as_str())
        .bind(rule.sender.to_string())
        .bind(rule.recipient.to_string())
        .bind(rule.action.as_str())
        .bind(&rule.comment)
        .bind(now())
        .bind(id)
        .fetch_optional(self.pool)
        .await
        .map_err(db("editing rule"))?
        .ok_or_else(|| StoreError::NotFound(format!("no rule {id}")))?;
        row_to_rule(&row)
    }

    pub async fn set_enabled(&self, id: i64, enabled: bool) -> Result<Rule> {
        let done = sqlx::query("UPDATE rules SET enabled = $1, updated_at = $2 WHERE id = $3")
            .bind(i64::from(enabled))
            .bind(now())
            .bind(id)
            .execute(self.pool)
            .await
            .map_err(db("changing rule"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no rule {id}")));
        }
        self.get(id).await
    }

    /// Removes a rule; the lower ones move up one.
    pub async fn remove(&self, id: i64) -> Result<Rule> {
        let rule = self.get(id).await?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting transaction"))?;
        sqlx::query("DELETE FROM rules WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db("removing rule"))?;
        sqlx::query("UPDATE rules SET priority = priority - 1 WHERE priority > $1")
            .bind(rule.priority)
            .execute(&mut *tx)
            .await
            .map_err(db("moving rules up"))?;
        tx.commit().await.map_err(db("committing rule removal"))?;
        Ok(rule)
    }
}

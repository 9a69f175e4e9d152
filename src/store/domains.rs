//! Managed domains and their inbound routes.

use sqlx::{AnyPool, Row};

use super::{Result, StoreError, db, now, query_error};
use crate::pki::address::Domain;

#[derive(Debug, Clone, serde::Serialize)]
pub struct DomainRow {
    pub id: i64,
    pub name: String,
    pub next_hop: Option<String>,
    pub wildcard: bool,
    pub created_at: i64,
}

pub struct Domains<'a> {
    pub(super) pool: &'a AnyPool,
}

fn row_to_domain(row: &sqlx::any::AnyRow) -> std::result::Result<DomainRow, sqlx::Error> {
    Ok(DomainRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        next_hop: row.try_get("next_hop")?,
        wildcard: row.try_get::<i64, _>("wildcard")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

impl Domains<'_> {
    pub async fn add(
        &self,
        domain: &Domain,
        next_hop: Option<&str>,
        wildcard: bool,
    ) -> Result<DomainRow> {
        let row = sqlx::query(
            "INSERT INTO domains (name, next_hop, wildcard, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING id, name, next_hop, wildcard, created_at",
        )
        .bind(domain.as_str())
        .bind(next_hop)
        .bind(i64::from(wildcard))
        .bind(now())
        .fetch_one(self.pool)
        .await
        .map_err(query_error("adding domain", || format!("domain {domain}")))?;
        row_to_domain(&row).map_err(db("reading domain"))
    }

    pub async fn get(&self, domain: &Domain) -> Result<Option<DomainRow>> {
        let row = sqlx::query(
            "SELECT id, name, next_hop, wildcard, created_at FROM domains WHERE name = $1",
        )
        .bind(domain.as_str())
        .fetch_optional(self.pool)
        .await
        .map_err(db("reading domain"))?;
        row.as_ref()
            .map(row_to_domain)
            .transpose()
            .map_err(db("reading domain"))
    }

    pub async fn list(&self) -> Result<Vec<DomainRow>> {
        let rows = sqlx::query(
            "SELECT id, name, next_hop, wildcard, created_at FROM domains ORDER BY name",
        )
        .fetch_all(self.pool)
        .await
        .map_err(db("listing domains"))?;
        rows.iter()
            .map(row_to_domain)
            .collect::<std::result::Result<_, _>>()
            .map_err(db("listing domains"))
    }

    /// Changes a domain's inbound route and/or wildcard flag (`None`: unchanged; the
    /// next hop `Some(None)` clears it). The `domains` update trigger bumps the
    /// configuration version, so a running relay reloads the route.
    pub async fn update(
        &self,
        domain: &Domain,
        next_hop: Option<Option<&str>>,
        wildcard: Option<bool>,
    ) -> Result<DomainRow> {
        let existing = self
            .get(domain)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no managed domain {domain}")))?;
        let next_hop = next_hop.unwrap_or(existing.next_hop.as_deref());
        let wildcard = wildcard.unwrap_or(existing.wildcard);
        let row = sqlx::query(
            "UPDATE domains SET next_hop = $1, wildcard = $2 WHERE id = $3 \
             RETURNING id, name, next_hop, wildcard, created_at",
        )
        .bind(next_hop)
        .bind(i64::from(wildcard))
        .bind(existing.id)
        .fetch_one(self.pool)
        .await
        .map_err(db("updating domain"))?;
        row_to_domain(&row).map_err(db("reading domain"))
    }

    /// How many of the domain's mailboxes hold a seat (pending, active, revoke-pending).
    pub async fn mailboxes_in_use(&self, domain: &Domain) -> Result<i64> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM mailboxes m JOIN domains d ON d.id = m.domain_id \
             WHERE d.name = $1 AND m.state <> 'inactive'",
        )
        .bind(domain.as_str())
        .fetch_one(self.pool)
        .await
        .map_err(db("counting mailboxes"))
    }

    /// Removes a domain that has no mailboxes left.
    pub async fn remove(&self, domain: &Domain) -> Result<()> {
        let existing = self
            .get(domain)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no managed domain {domain}")))?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mailboxes WHERE domain_id = $1")
            .bind(existing.id)
            .fetch_one(self.pool)
            .await
            .map_err(db("counting mailboxes"))?;
        if count > 0 {
            return Err(StoreError::Refused(format!(
                "domain {domain} still has {count} mailbox(es); remove them first"
            )));
        }
        sqlx::query("DELETE FROM domains WHERE id = $1")
            .bind(existing.id)
            .execute(self.pool)
            .await
            .map_err(db("removing domain"))?;
        Ok(())
    }
}

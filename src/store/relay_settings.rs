//! Relay settings changed at run time: the smarthost for outbound mail and the
//! internal networks allowed to relay outbound. Read per transaction.

use sqlx::{AnyPool, Row};

use super::{Result, StoreError, db, now, query_error};

pub struct RelaySettings<'a> {
    pub(super) pool: &'a AnyPool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct NetworkRow {
    pub id: i64,
    pub cidr: String,
    pub comment: String,
    /// Clients on this network must authenticate (SMTP AUTH) to submit.
    pub require_auth: bool,
}

const SMARTHOST: &str = "smarthost";

impl RelaySettings<'_> {
    /// The smarthost (HOST:PORT) outbound mail goes to, if set here.
    pub async fn smarthost(&self) -> Result<Option<String>> {
        self.get(SMARTHOST).await
    }

    pub async fn set_smarthost(&self, host_port: &str) -> Result<()> {
        self.set(SMARTHOST, host_port).await
    }

    async fn get(&self, name: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM relay_settings WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool)
            .await
            .map_err(db("reading relay settings"))
    }

    async fn set(&self, name: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO relay_settings (name, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(value)
        .bind(now())
        .execute(self.pool)
        .await
        .map_err(db("writing relay settings"))?;
        Ok(())
    }

    pub async fn networks(&self) -> Result<Vec<NetworkRow>> {
        let rows =
            sqlx::query("SELECT id, cidr, comment, require_auth FROM relay_networks ORDER BY id")
                .fetch_all(self.pool)
                .await
                .map_err(db("listing networks"))?;
        rows.iter()
            .map(|row| {
                let require_auth: i64 = row.try_get("require_auth")?;
                Ok(NetworkRow {
                    id: row.try_get("id")?,
                    cidr: row.try_get("cidr")?,
                    comment: row.try_get("comment")?,
                    require_auth: require_auth != 0,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(db("listing networks"))
    }

    /// Adds a network (already validated and written canonically by the caller);
    /// `require_auth`: its clients must still authenticate to submit.
    pub async fn allow_network(&self, cidr: &str, comment: &str, require_auth: bool) -> Result<()> {
        sqlx::query(
            "INSERT INTO relay_networks (cidr, comment, require_auth, created_at) VALUES ($1, $2, $3, $4)",
        )
            .bind(cidr)
            .bind(comment)
            .bind(i64::from(require_auth))
            .bind(now())
            .execute(self.pool)
            .await
            .map_err(query_error("adding network", || format!("network {cidr}")))?;
        Ok(())
    }

    pub async fn remove_network(&self, cidr: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM relay_networks WHERE cidr = $1")
            .bind(cidr)
            .execute(self.pool)
            .await
            .map_err(db("removing network"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no allowed network {cidr}")));
        }
        Ok(())
    }
}

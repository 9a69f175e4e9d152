//! Leases: one holder at a time for a named job across every node sharing the
//! database. A lease runs out on its own, so a node that dies holding it does not
//! block the job for ever.

use sqlx::AnyPool;

use super::{Result, db};

pub struct Leases<'a> {
    pub(super) pool: &'a AnyPool,
}

impl Leases<'_> {
    /// Takes lease `name` for `holder` until `expires_at` (unix seconds) when it is
    /// free, expired at `now`, or already this holder's. True when taken.
    pub async fn acquire(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO job_leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE job_leases.expires_at <= $4 OR job_leases.holder = excluded.holder",
        )
        .bind(name)
        .bind(holder)
        .bind(expires_at)
        .bind(now)
        .execute(self.pool)
        .await
        .map_err(db("taking a job lease"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives lease `name` back if `holder` still holds it.
    pub async fn release(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM job_leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(self.pool)
            .await
            .map_err(db("giving a job lease back"))?;
        Ok(())
    }
}

/// A PostgreSQL session-level advisory lock, held on a connection of its own for as
/// long as this value lives. Unlike a lease it cannot outlive its holder: when the node
/// dies, its connection closes and the server frees the lock at once.
pub struct AdvisoryLock {
    connection: Option<sqlx::pool::PoolConnection<sqlx::Any>>,
    key: i64,
}

impl Leases<'_> {
    /// Takes advisory lock `key` when no other session holds it (PostgreSQL only: on
    /// SQLite, one node, use [`Leases::acquire`]). `None` when another session has it.
    pub async fn try_advisory_lock(&self, key: i64) -> Result<Option<AdvisoryLock>> {
        let mut connection = self
            .pool
            .acquire()
            .await
            .map_err(db("taking a connection for an advisory lock"))?;
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *connection)
            .await
            .map_err(db("taking an advisory lock"))?;
        Ok(taken.then_some(AdvisoryLock {
            connection: Some(connection),
            key,
        }))
    }
}

impl AdvisoryLock {
    /// Frees the lock and gives the connection back to the pool. Should the unlock
    /// fail, the connection is closed instead, which frees the lock as well.
    pub async fn release(mut self) {
        let Some(mut connection) = self.connection.take() else {
            return;
        };
        let freed = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .fetch_one(&mut *connection)
            .await;
        if !matches!(freed, Ok(true)) {
            tracing::warn!(
                key = self.key,
                "advisory lock not freed; closing its connection"
            );
            let _ = sqlx::Connection::close(connection.detach()).await;
        }
    }
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        // Dropped without release (a panic, a cancelled task): never return a connection
        // that still holds the lock to the pool; closing it frees the lock.
        if let Some(connection) = self.connection.take() {
            let raw = connection.detach();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = sqlx::Connection::close(raw).await;
                });
            }
        }
    }
}

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

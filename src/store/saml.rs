//! SAML single sign-on state shared by every node: the login requests we sent (each
//! answerable once, until it expires) and the assertions already used (a replay is
//! refused until the assertion would have expired anyway).

use sqlx::AnyPool;

use super::{Result, db};

pub struct SamlState<'a> {
    pub(super) pool: &'a AnyPool,
}

impl SamlState<'_> {
    /// Records login request `id`, answerable until `expires_at` (unix seconds); prunes
    /// requests that expired unanswered.
    pub async fn add_request(&self, id: &str, now: i64, expires_at: i64) -> Result<()> {
        sqlx::query("DELETE FROM saml_requests WHERE expires_at <= $1")
            .bind(now)
            .execute(self.pool)
            .await
            .map_err(db("pruning SAML login requests"))?;
        sqlx::query("INSERT INTO saml_requests (id, created_at, expires_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(now)
            .bind(expires_at)
            .execute(self.pool)
            .await
            .map_err(db("recording a SAML login request"))?;
        Ok(())
    }

    /// Takes login request `id`: true when it was pending and not expired at `now`.
    /// Either way it is gone afterwards, so a second answer to it is refused.
    pub async fn take_request(&self, id: &str, now: i64) -> Result<bool> {
        let done = sqlx::query("DELETE FROM saml_requests WHERE id = $1 AND expires_at > $2")
            .bind(id)
            .bind(now)
            .execute(self.pool)
            .await
            .map_err(db("taking a SAML login request"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Remembers assertion `id` until `expires_at`: true when it is new, false when it
    /// was used before (a replay). Prunes assertions whose time has passed.
    pub async fn remember_assertion(
        &self,
        id: &str,
        name_id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool> {
        sqlx::query("DELETE FROM saml_assertions WHERE expires_at <= $1")
            .bind(now)
            .execute(self.pool)
            .await
            .map_err(db("pruning used SAML assertions"))?;
        let done = sqlx::query(
            "INSERT INTO saml_assertions (id, name_id, used_at, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(name_id)
        .bind(now)
        .bind(expires_at)
        .execute(self.pool)
        .await
        .map_err(db("remembering a used SAML assertion"))?;
        Ok(done.rows_affected() == 1)
    }
}

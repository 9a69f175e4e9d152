//! The admin console's accounts, browser sessions and API tokens. The repository
//! stores what it is given: names already normalised, argon2id PHC strings already
//! computed, token hashes already taken; checking lives in `ops::console`, so no
//! password or token ever reaches this module.

use sqlx::{AnyPool, Row};

use super::{Result, StoreError, db, now, query_error};

/// A local console account (without its password hash or TOTP secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub totp: bool,
    pub failed_logins: i64,
    /// Unix seconds; in the past when the account is not locked.
    pub locked_until: i64,
    pub disabled: bool,
    pub created_at: i64,
    pub password_changed_at: i64,
    pub last_login_at: Option<i64>,
}

/// An account with what a login is checked against. `Debug` leaves the secrets out.
#[derive(Clone)]
pub struct AccountCredentials {
    pub account: Account,
    pub password_hash: String,
    pub totp_secret: Option<String>,
    pub totp_last_step: i64,
}

impl std::fmt::Debug for AccountCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountCredentials")
            .field("account", &self.account)
            .field("password_hash", &"<redacted>")
            .field(
                "totp_secret",
                &self.totp_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A browser session as the console reads it for every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub account: String,
    pub role: String,
    pub source: String,
    pub csrf_token: String,
    pub client: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
}

/// What `start` writes.
pub struct NewSession<'a> {
    pub token_hash: &'a str,
    pub account: &'a str,
    pub role: &'a str,
    pub source: &'a str,
    pub csrf_token: &'a str,
    pub client: &'a str,
    pub expires_at: i64,
}

/// An API token (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: i64,
    pub account: String,
    pub label: String,
    pub role: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

pub struct Console<'a> {
    pub(super) pool: &'a AnyPool,
}

const ACCOUNT_COLUMNS: &str = "id, name, role, totp_secret, failed_logins, locked_until, \
     disabled, created_at, password_changed_at, last_login_at";
const SESSION_COLUMNS: &str =
    "account, role, source, csrf_token, client, created_at, last_seen_at, expires_at";
const TOKEN_COLUMNS: &str = "id, account, label, role, created_at, last_used_at, revoked_at";

fn row_to_account(row: &sqlx::any::AnyRow) -> Result<Account> {
    let read = db("reading console account");
    Ok(Account {
        id: row.try_get("id").map_err(&read)?,
        name: row.try_get("name").map_err(&read)?,
        role: row.try_get("role").map_err(&read)?,
        totp: row
            .try_get::<Option<String>, _>("totp_secret")
            .map_err(&read)?
            .is_some(),
        failed_logins: row.try_get("failed_logins").map_err(&read)?,
        locked_until: row.try_get("locked_until").map_err(&read)?,
        disabled: row.try_get::<i64, _>("disabled").map_err(&read)? != 0,
        created_at: row.try_get("created_at").map_err(&read)?,
        password_changed_at: row.try_get("password_changed_at").map_err(&read)?,
        last_login_at: row.try_get("last_login_at").map_err(&read)?,
    })
}

fn row_to_session(row: &sqlx::any::AnyRow) -> Result<Session> {
    let read = db("reading console session");
    Ok(Session {
        account: row.try_get("account").map_err(&read)?,
        role: row.try_get("role").map_err(&read)?,
        source: row.try_get("source").map_err(&read)?,
        csrf_token: row.try_get("csrf_token").map_err(&read)?,
        client: row.try_get("client").map_err(&read)?,
        created_at: row.try_get("created_at").map_err(&read)?,
        last_seen_at: row.try_get("last_seen_at").map_err(&read)?,
        expires_at: row.try_get("expires_at").map_err(&read)?,
    })
}

fn row_to_token(row: &sqlx::any::AnyRow) -> Result<ApiToken> {
    let read = db("reading API token");
    Ok(ApiToken {
        id: row.try_get("id").map_err(&read)?,
        account: row.try_get("account").map_err(&read)?,
        label: row.try_get("label").map_err(&read)?,
        role: row.try_get("role").map_err(&read)?,
        created_at: row.try_get("created_at").map_err(&read)?,
        last_used_at: row.try_get("last_used_at").map_err(&read)?,
        revoked_at: row.try_get("revoked_at").map_err(&read)?,
    })
}

fn no_account(name: &str) -> StoreError {
    StoreError::NotFound(format!("no console account {name}"))
}

impl Console<'_> {
    pub async fn add_account(
        &self,
        name: &str,
        role: &str,
        password_hash: &str,
        totp_secret: Option<&str>,
    ) -> Result<Account> {
        let at = now();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO console_accounts (name, role, password_hash, totp_secret, created_at, \
             password_changed_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {ACCOUNT_COLUMNS}"
        )))
        .bind(name)
        .bind(role)
        .bind(password_hash)
        .bind(totp_secret)
        .bind(at)
        .bind(at)
        .fetch_one(self.pool)
        .await
        .map_err(query_error("adding console account", || {
            format!("console account {name}")
        }))?;
        row_to_account(&row)
    }

    pub async fn account(&self, name: &str) -> Result<Option<Account>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM console_accounts WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(self.pool)
        .await
        .map_err(db("reading console account"))?;
        row.as_ref().map(row_to_account).transpose()
    }

    pub async fn credentials(&self, name: &str) -> Result<Option<AccountCredentials>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS}, password_hash, totp_last_step FROM console_accounts \
             WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(self.pool)
        .await
        .map_err(db("reading console account"))?;
        let read = db("reading console account");
        row.as_ref()
            .map(|row| {
                Ok(AccountCredentials {
                    account: row_to_account(row)?,
                    password_hash: row.try_get("password_hash").map_err(&read)?,
                    totp_secret: row.try_get("totp_secret").map_err(&read)?,
                    totp_last_step: row.try_get("totp_last_step").map_err(&read)?,
                })
            })
            .transpose()
    }

    pub async fn accounts(&self) -> Result<Vec<Account>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM console_accounts ORDER BY name"
        )))
        .fetch_all(self.pool)
        .await
        .map_err(db("listing console accounts"))?;
        rows.iter().map(row_to_account).collect()
    }

    /// Enabled admin accounts other than `name`.
    pub async fn other_enabled_admins(&self, name: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM console_accounts WHERE role = 'admin' AND disabled = 0 AND name <> $1",
        )
        .bind(name)
        .fetch_one(self.pool)
        .await
        .map_err(db("counting admin accounts"))?;
        row.try_get("n").map_err(db("counting admin accounts"))
    }

    /// Removes the account and ends its sessions; its API tokens are revoked.
    pub async fn remove_account(&self, name: &str) -> Result<Account> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("removing console account"))?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM console_accounts WHERE name = $1 RETURNING {ACCOUNT_COLUMNS}"
        )))
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("removing console account"))?;
        let Some(row) = row else {
            return Err(no_account(name));
        };
        let account = row_to_account(&row)?;
        end_sessions_of(&mut tx, name, "local").await?;
        sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE account = $2 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(db("revoking API tokens"))?;
        tx.commit().await.map_err(db("removing console account"))?;
        Ok(account)
    }

    /// Sets a new password hash, clears the lockout and ends the account's sessions.
    pub async fn set_password(&self, name: &str, password_hash: &str) -> Result<Account> {
        self.update_ending_sessions(
            name,
            "UPDATE console_accounts SET password_hash = $1, password_changed_at = $2, \
             failed_logins = 0, locked_until = 0 WHERE name = $3",
            |q| q.bind(password_hash.to_string()).bind(now()),
        )
        .await
    }

    /// Changes the role and ends the account's sessions (they carry the old role).
    pub async fn set_role(&self, name: &str, role: &str) -> Result<Account> {
        self.update_ending_sessions(
            name,
            "UPDATE console_accounts SET role = $1 WHERE name = $2",
            |q| q.bind(role.to_string()),
        )
        .await
    }

    /// Disables or enables the account; disabling ends its sessions.
    pub async fn set_disabled(&self, name: &str, disabled: bool) -> Result<Account> {
        self.update_ending_sessions(
            name,
            "UPDATE console_accounts SET disabled = $1 WHERE name = $2",
            |q| q.bind(i64::from(disabled)),
        )
        .await
    }

    /// Sets or clears the TOTP secret.
    pub async fn set_totp(&self, name: &str, secret: Option<&str>) -> Result<Account> {
        self.update_ending_sessions(
            name,
            "UPDATE console_accounts SET totp_secret = $1, totp_last_step = 0 WHERE name = $2",
            |q| q.bind(secret.map(str::to_string)),
        )
        .await
    }

    /// Clears a lockout.
    pub async fn unlock(&self, name: &str) -> Result<Account> {
        let done = sqlx::query(
            "UPDATE console_accounts SET failed_logins = 0, locked_until = 0 WHERE name = $1",
        )
        .bind(name)
        .execute(self.pool)
        .await
        .map_err(db("unlocking console account"))?;
        if done.rows_affected() == 0 {
            return Err(no_account(name));
        }
        self.account(name).await?.ok_or_else(|| no_account(name))
    }

    /// `sql` binds its own values first (by `bind`), the account name last.
    async fn update_ending_sessions(
        &self,
        name: &str,
        sql: &'static str,
        bind: impl for<'q> FnOnce(
            sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
        ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<Account> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("changing console account"))?;
        let done = bind(sqlx::query(sql))
            .bind(name.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db("changing console account"))?;
        if done.rows_affected() == 0 {
            return Err(no_account(name));
        }
        end_sessions_of(&mut tx, name, "local").await?;
        tx.commit().await.map_err(db("changing console account"))?;
        self.account(name).await?.ok_or_else(|| no_account(name))
    }

    /// Counts a failed login; at `lock_after` failures the account is locked until
    /// `lock_until` and the count starts again. Returns the account after the change.
    pub async fn record_failure(
        &self,
        name: &str,
        lock_after: i64,
        lock_until: i64,
    ) -> Result<Option<Account>> {
        sqlx::query(
            "UPDATE console_accounts SET \
             locked_until = CASE WHEN failed_logins + 1 >= $1 THEN $2 ELSE locked_until END, \
             failed_logins = CASE WHEN failed_logins + 1 >= $1 THEN 0 ELSE failed_logins + 1 END \
             WHERE name = $3",
        )
        .bind(lock_after)
        .bind(lock_until)
        .bind(name)
        .execute(self.pool)
        .await
        .map_err(db("counting a failed login"))?;
        self.account(name).await
    }

    /// A successful login: clears the failure count, remembers the TOTP step used.
    /// Returns false when `totp_step` was used already (a replayed code): the login
    /// must then fail. The check and the write are one statement, so two logins racing
    /// with one code cannot both pass.
    pub async fn record_success(&self, name: &str, totp_step: Option<i64>) -> Result<bool> {
        let done = match totp_step {
            Some(step) => sqlx::query(
                "UPDATE console_accounts SET failed_logins = 0, last_login_at = $1, \
                 totp_last_step = $2 WHERE name = $3 AND totp_last_step < $2",
            )
            .bind(now())
            .bind(step)
            .bind(name),
            None => sqlx::query(
                "UPDATE console_accounts SET failed_logins = 0, last_login_at = $1 \
                 WHERE name = $2",
            )
            .bind(now())
            .bind(name),
        }
        .execute(self.pool)
        .await
        .map_err(db("recording a login"))?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn start_session(&self, new: &NewSession<'_>) -> Result<()> {
        let at = now();
        sqlx::query(
            "INSERT INTO console_sessions (token_hash, account, role, source, csrf_token, client, \
             created_at, last_seen_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(new.token_hash)
        .bind(new.account)
        .bind(new.role)
        .bind(new.source)
        .bind(new.csrf_token)
        .bind(new.client)
        .bind(at)
        .bind(at)
        .bind(new.expires_at)
        .execute(self.pool)
        .await
        .map_err(db("starting console session"))?;
        Ok(())
    }

    pub async fn session(&self, token_hash: &str) -> Result<Option<Session>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM console_sessions WHERE token_hash = $1"
        )))
        .bind(token_hash)
        .fetch_optional(self.pool)
        .await
        .map_err(db("reading console session"))?;
        row.as_ref().map(row_to_session).transpose()
    }

    pub async fn touch_session(&self, token_hash: &str, at: i64) -> Result<()> {
        sqlx::query("UPDATE console_sessions SET last_seen_at = $1 WHERE token_hash = $2")
            .bind(at)
            .bind(token_hash)
            .execute(self.pool)
            .await
            .map_err(db("touching console session"))?;
        Ok(())
    }

    /// Ends one session; true when there was one.
    pub async fn end_session(&self, token_hash: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.pool)
            .await
            .map_err(db("ending console session"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes sessions past their absolute end or idle since before `idle_before`.
    pub async fn prune_sessions(&self, idle_before: i64) -> Result<u64> {
        let done =
            sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1 OR last_seen_at < $2")
                .bind(now())
                .bind(idle_before)
                .execute(self.pool)
                .await
                .map_err(db("pruning console sessions"))?;
        Ok(done.rows_affected())
    }

    pub async fn add_token(
        &self,
        account: &str,
        label: &str,
        role: &str,
        token_hash: &str,
    ) -> Result<ApiToken> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO api_tokens (account, label, role, token_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {TOKEN_COLUMNS}"
        )))
        .bind(account)
        .bind(label)
        .bind(role)
        .bind(token_hash)
        .bind(now())
        .fetch_one(self.pool)
        .await
        .map_err(query_error("adding API token", || "API token".to_string()))?;
        row_to_token(&row)
    }

    pub async fn tokens(&self) -> Result<Vec<ApiToken>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id"
        )))
        .fetch_all(self.pool)
        .await
        .map_err(db("listing API tokens"))?;
        rows.iter().map(row_to_token).collect()
    }

    /// The live (not revoked) token with this hash, marked used now.
    pub async fn use_token(&self, token_hash: &str) -> Result<Option<ApiToken>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE api_tokens SET last_used_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL \
             RETURNING {TOKEN_COLUMNS}"
        )))
        .bind(now())
        .bind(token_hash)
        .fetch_optional(self.pool)
        .await
        .map_err(db("reading API token"))?;
        row.as_ref().map(row_to_token).transpose()
    }

    pub async fn revoke_token(&self, id: i64) -> Result<ApiToken> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
             RETURNING {TOKEN_COLUMNS}"
        )))
        .bind(now())
        .bind(id)
        .fetch_optional(self.pool)
        .await
        .map_err(db("revoking API token"))?;
        match row {
            Some(row) => row_to_token(&row),
            None => Err(StoreError::NotFound(format!("no live API token {id}"))),
        }
    }
}

async fn end_sessions_of(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    account: &str,
    source: &str,
) -> Result<()> {
    sqlx::query("DELETE FROM console_sessions WHERE account = $1 AND source = $2")
        .bind(account)
        .bind(source)
        .execute(&mut **tx)
        .await
        .map_err(db("ending console sessions"))?;
    Ok(())
}

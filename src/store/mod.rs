//! The database, through sqlx: SQLite file as the embedded default, PostgreSQL when the
//! URL says so. One repository per aggregate; each borrows the pool. Queries are plain
//! SQL with `$n` placeholders, which both backends accept, so one text serves both.

mod audit;
mod certificates;
mod config_watch;
mod console;
mod crls;
mod domains;
mod filter;
mod keys;
mod leases;
mod licence;
mod mailboxes;
mod message_log;
mod published_crls;
mod relay_settings;
mod rules;
mod saml;
mod submitters;
mod trust;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::{AnyPoolOptions, install_default_drivers};

pub use audit::{AuditEntry, AuditFilter, AuditLog};
pub use certificates::{
    CertificateRecord, CertificateSource, Certificates, IdentityKey, NewIdentity, PartnerRow,
    StoredCertificate,
};
pub use config_watch::ConfigWatch;
pub use console::{Account, AccountCredentials, ApiToken, Console, NewSession, Session};
pub use crls::{CachedCrl, Crls, OwnCertificate};
pub use domains::{DomainRow, Domains};
pub use keys::{KeyPurpose, KeyRow, Keys};
pub use leases::{AdvisoryLock, Leases};
pub use licence::{Licence, LicenceRow, SeatUsage};
pub use mailboxes::{MailboxRow, MailboxState, Mailboxes};
pub use message_log::{
    CryptoCounts, CryptoResult, HeldConnection, LogEntry, LogFilter, LogStatus, MessageLog,
    crypto_bits,
};
pub use published_crls::{PublishedCrl, PublishedCrls};
pub use relay_settings::{NetworkRow, RelaySettings};
pub use rules::{NewRule, Rules};
pub use saml::SamlState;
pub use submitters::{NewSubmitter, Submitter, SubmitterCredentials, Submitters};
pub use trust::{TrustAnchorRow, TrustAnchorStore};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("database URL '{0}' is neither sqlite: nor postgres://")]
    UnsupportedUrl(String),
    #[error("cannot reach database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error while {operation}: {source}")]
    Query {
        operation: &'static str,
        source: sqlx::Error,
    },
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// Busy or interrupted beside the database (e.g. every password-hashing slot in
    /// use): try again later.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// True when a retry later may succeed: the database is unreachable, busy, or
    /// cancelled the statement (PostgreSQL's statement timeout), not the data wrong.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Connect { .. } | StoreError::Unavailable(_) => true,
            StoreError::Query { source, .. } => match source {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => transient_database_error(db.as_ref()),
                _ => false,
            },
            _ => false,
        }
    }
}

/// Database errors that say "not now" rather than "never". PostgreSQL SQLSTATEs:
/// class 08 (connection), 53 (insufficient resources), 57 (operator intervention:
/// 57014 is a statement timeout or cancel, 57P01 a shutdown), 40001 (serialization),
/// 40P01 (deadlock), 55P03 (lock not available). SQLite: SQLITE_BUSY (5) and
/// SQLITE_LOCKED (6), with their extended codes.
fn transient_database_error(db: &dyn sqlx::error::DatabaseError) -> bool {
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        let code = pg.code();
        return code.starts_with("08")
            || code.starts_with("53")
            || code.starts_with("57")
            || matches!(code, "40001" | "40P01" | "55P03");
    }
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        return db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|extended| matches!(extended & 0xff, 5 | 6));
    }
    false
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Maps a query error, turning unique violations into [`StoreError::Conflict`].
pub(crate) fn query_error(
    operation: &'static str,
    what: impl FnOnce() -> String,
) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| match &source {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what()),
        _ => StoreError::Query { operation, source },
    }
}

/// Maps any query error to [`StoreError::Query`] naming what was being done.
pub(crate) fn db(operation: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { operation, source }
}

/// Unix seconds now, as the store writes them.
pub fn unix_now() -> i64 {
    now()
}

pub(crate) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// As given to [`Store::connect_with`] (the PostgreSQL listener connects with it).
    url: Arc<str>,
    /// Set once by [`Store::watch_config`] in a serving gateway.
    watch: Arc<OnceLock<ConfigWatch>>,
}

/// How [`Store::connect_with`] connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Largest number of pooled connections (SQLite: at most 4; 1 in memory).
    pub max_connections: u32,
    /// How long to wait for a connection (pooled or new) before failing.
    pub acquire_timeout: Duration,
    /// PostgreSQL only: the longest one statement may run before the server cancels
    /// it (SQLSTATE 57014, a transient error), so a stuck database (a lock held
    /// elsewhere, a runaway query) is an error, never a hang. `None` or zero: no limit.
    /// Migrations run without it. SQLite waits for locks `busy_timeout` (5 s) instead.
    pub statement_timeout: Option<Duration>,
}

/// A schema migration `smimegate migrate` applied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Migration {
    pub version: i64,
    pub description: String,
}

/// The statement timeout of [`Store::connect`] (and the `[database]` default).
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

impl Store {
    /// Connects (creating a SQLite file if missing) and applies pending migrations,
    /// with the [`DEFAULT_STATEMENT_TIMEOUT`].
    pub async fn connect(url: &str, max_connections: u32, timeout: Duration) -> Result<Store> {
        Self::connect_with(
            url,
            &ConnectOptions {
                max_connections,
                acquire_timeout: timeout,
                statement_timeout: Some(DEFAULT_STATEMENT_TIMEOUT),
            },
        )
        .await
    }

    /// Connects as `options` say and applies pending migrations.
    pub async fn connect_with(url: &str, options: &ConnectOptions) -> Result<Store> {
        let store = Self::connect_unmigrated(url, options).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects as `options` say and leaves the schema as it is (`smimegate migrate`
    /// then says what it applies with [`Store::apply_migrations`]).
    pub async fn connect_unmigrated(url: &str, options: &ConnectOptions) -> Result<Store> {
        let max_connections = options.max_connections;
        let timeout = options.acquire_timeout;
        // Whole milliseconds, at least 1 when set (0 would mean "no limit").
        let statement_timeout_ms = options
            .statement_timeout
            .filter(|t| !t.is_zero())
            .map(|t| t.as_millis().clamp(1, i32::MAX as u128));
        install_default_drivers();
        let (backend, url_to_use) = if url.starts_with("sqlite:") {
            let with_mode = if url.contains("mode=") {
                url.to_string()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            (Backend::Sqlite, with_mode)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(StoreError::UnsupportedUrl(redact(url)));
        };
        // SQLite in WAL mode: readers run beside the one writer, writers wait for each
        // other (busy_timeout). An in-memory database exists per connection: one.
        let max = if backend == Backend::Sqlite {
            if url.contains(":memory:") {
                1
            } else {
                max_connections.clamp(1, 4)
            }
        } else {
            max_connections
        };
        let sqlite = backend == Backend::Sqlite;
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(timeout)
            // A SQLite connection is a file handle in this process: it cannot have been
            // dropped by a server, so it is not pinged on every acquire (each ping is a
            // round trip to sqlx's SQLite worker thread, per query). PostgreSQL
            // connections are checked.
            .test_before_acquire(!sqlite)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if sqlite {
                        // Write-ahead logging: readers do not wait for the writer, and a
                        // commit is not an fsync each (the message log writes one row per
                        // SMTP transaction). NORMAL stays consistent after a crash.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA busy_timeout = 5000",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    } else if let Some(ms) = statement_timeout_ms {
                        // Every statement on this connection: the server cancels it
                        // past the limit. (SET takes no bind parameter; ms is a number.)
                        sqlx::query(sqlx::AssertSqlSafe(format!("SET statement_timeout = {ms}")))
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url_to_use)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact(url),
                source,
            })?;
        Ok(Store {
            pool,
            backend,
            url: Arc::from(url),
            watch: Arc::new(OnceLock::new()),
        })
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// The migration versions applied to this database (none on a new one).
    pub async fn applied_migrations(&self) -> Result<Vec<i64>> {
        let exists = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' \
                 AND name = '_sqlx_migrations'"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_name = '_sqlx_migrations' AND table_schema = current_schema()"
            }
        };
        let found: i64 = sqlx::query_scalar(exists)
            .fetch_one(&self.pool)
            .await
            .map_err(db("reading the applied migrations"))?;
        if found == 0 {
            return Ok(Vec::new());
        }
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading the applied migrations"))
    }

    /// Applies the pending migrations and returns those it applied, in order (none
    /// when the schema is up to date). A database with a migration this binary does
    /// not know (a newer release's) is refused.
    pub async fn apply_migrations(&self) -> Result<Vec<Migration>> {
        let before = self.applied_migrations().await?;
        self.migrate().await?;
        Ok(self
            .migrator()
            .iter()
            .filter(|m| !m.migration_type.is_down_migration() && !before.contains(&m.version))
            .map(|m| Migration {
                version: m.version,
                description: m.description.to_string(),
            })
            .collect())
    }

    /// The newest migration this binary has.
    pub fn latest_migration(&self) -> Option<i64> {
        self.migrator().iter().map(|m| m.version).max()
    }

    async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => {
                // A migration may rewrite or index a large table (the message log), and
                // waits for another node's migration lock: no statement timeout for it.
                // The connection is closed afterwards, never pooled without the limit.
                let mut conn = self.pool.acquire().await.map_err(db("migrating"))?;
                conn.close_on_drop();
                sqlx::query("SET statement_timeout = 0")
                    .execute(&mut *conn)
                    .await
                    .map_err(db("migrating"))?;
                POSTGRES_MIGRATIONS.run(&mut *conn).await?;
            }
        }
        Ok(())
    }

    /// The newest migration this binary knows for `backend` (the schema level a backup
    /// made by it can have at most).
    pub fn known_schema_level(backend: Backend) -> i64 {
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// The newest migration applied to this database.
    pub async fn schema_level(&self) -> Result<i64> {
        let level: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await
                .map_err(db("reading the schema level"))?;
        Ok(level.unwrap_or(0))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The counter every change to rules, domains, mailboxes, certificates, keys and
    /// relay settings bumps (by triggers): a cached copy of them is current while this
    /// is unchanged.
    pub async fn config_version(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT version FROM config_version WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(|source| StoreError::Query {
                operation: "reading the configuration version",
                source,
            })
    }

    /// The configuration version this process acts on: kept current in the
    /// background once [`Store::watch_config`] ran (no query), else read now.
    pub async fn config_version_in_force(&self) -> Result<i64> {
        match self.watch.get() {
            Some(watch) => Ok(watch.version()),
            None => self.config_version().await,
        }
    }

    /// The background watch of the configuration version, when one runs.
    pub fn config_watch(&self) -> Option<&ConfigWatch> {
        self.watch.get()
    }

    /// Starts keeping the configuration version current in the background (a gateway
    /// that serves mail does this once) until `stop` turns true; see
    /// [`config_watch`](ConfigWatch).
    pub async fn watch_config(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<tokio::task::JoinHandle<()>> {
        let (watch, task) = ConfigWatch::start(self, stop).await?;
        if self.watch.set(watch).is_err() {
            task.abort();
            return Err(StoreError::Refused(
                "the configuration version is already watched".into(),
            ));
        }
        Ok(task)
    }

    /// After a change made by this process: the watch reads the version now rather
    /// than at its next poll or notification.
    pub async fn refresh_config_version(&self) -> Result<()> {
        if let Some(watch) = self.watch.get() {
            watch.refresh(self).await?;
        }
        Ok(())
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// A cheap round trip, for health checks.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|source| StoreError::Query {
                operation: "ping",
                source,
            })
    }

    pub fn console(&self) -> Console<'_> {
        Console { pool: &self.pool }
    }

    pub fn crls(&self) -> Crls<'_> {
        Crls { pool: &self.pool }
    }

    pub fn domains(&self) -> Domains<'_> {
        Domains { pool: &self.pool }
    }

    pub fn mailboxes(&self) -> Mailboxes<'_> {
        Mailboxes { pool: &self.pool }
    }

    pub fn keys(&self) -> Keys<'_> {
        Keys { pool: &self.pool }
    }

    pub fn certificates(&self) -> Certificates<'_> {
        Certificates { pool: &self.pool }
    }

    pub fn rules(&self) -> Rules<'_> {
        Rules { pool: &self.pool }
    }

    pub fn message_log(&self) -> MessageLog<'_> {
        MessageLog { pool: &self.pool }
    }

    pub fn relay_settings(&self) -> RelaySettings<'_> {
        RelaySettings { pool: &self.pool }
    }

    pub fn trust_anchors(&self) -> TrustAnchorStore<'_> {
        TrustAnchorStore { pool: &self.pool }
    }

    pub fn submitters(&self) -> Submitters<'_> {
        Submitters { pool: &self.pool }
    }

    pub fn licence(&self) -> Licence<'_> {
        Licence { pool: &self.pool }
    }

    pub fn published_crls(&self) -> PublishedCrls<'_> {
        PublishedCrls { pool: &self.pool }
    }

    pub fn leases(&self) -> Leases<'_> {
        Leases { pool: &self.pool }
    }

    pub fn saml(&self) -> SamlState<'_> {
        SamlState { pool: &self.pool }
    }

    pub fn audit(&self) -> AuditLog<'_> {
        AuditLog { pool: &self.pool }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite:x.db"), "sqlite:x.db");
    }
}

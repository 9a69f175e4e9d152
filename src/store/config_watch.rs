//! Which configuration version is in force, known without a query per transaction.
//!
//! Every write to what the relay caches (rules, domains, mailboxes, certificates, keys,
//! relay settings, trust anchors, submitters) bumps `config_version` by trigger. A
//! running gateway learns the new number in the background and keeps it in an atomic
//! that each SMTP transaction reads:
//!
//! - **PostgreSQL** (several nodes): the trigger also sends `NOTIFY smimegate_config`
//!   with the new number, and one `LISTEN` connection per node receives it, so a change
//!   made on any node or by the CLI is in force everywhere within milliseconds. A
//!   listener loses what is sent while it reconnects, so after every (re)connection the
//!   version is read again; it is also read every [`SAFETY_POLL`] in case a
//!   notification went missing some other way.
//! - **SQLite** (one node): the version is polled every [`SQLITE_POLL`] by one task —
//!   a few cheap reads a second whatever the mail rate, and none per transaction.
//!
//! Changes made through this process's console are read at once
//! ([`ConfigWatch::refresh`]), not a poll later.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::PgListener;

use super::{Backend, Store, StoreError};

/// The channel the PostgreSQL trigger notifies (migration 0013).
pub const CHANNEL: &str = "smimegate_config";
/// How often a single SQLite node reads the version.
pub const SQLITE_POLL: Duration = Duration::from_millis(100);
/// How often the version is read on PostgreSQL besides the notifications.
pub const SAFETY_POLL: Duration = Duration::from_secs(30);
/// How long to wait before connecting the listener again after a failure.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// The configuration version this node acts on, kept current in the background.
#[derive(Clone, Debug)]
pub struct ConfigWatch {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    version: AtomicI64,
    /// Times the version was learnt from the database or a notification (for tests
    /// and the health endpoint: a watch that never updates is broken).
    updates: AtomicU64,
}

impl ConfigWatch {
    fn new(version: i64) -> Self {
        ConfigWatch {
            inner: Arc::new(Inner {
                version: AtomicI64::new(version),
                updates: AtomicU64::new(0),
            }),
        }
    }

    /// The version in force on this node: one atomic read.
    pub fn version(&self) -> i64 {
        self.inner.version.load(Ordering::Acquire)
    }

    /// How many times the version was learnt since the watch started.
    pub fn updates(&self) -> u64 {
        self.inner.updates.load(Ordering::Relaxed)
    }

    /// The version as read from the database (it may go down after a restore).
    fn set(&self, version: i64) {
        let before = self.inner.version.swap(version, Ordering::AcqRel);
        self.inner.updates.fetch_add(1, Ordering::Relaxed);
        if before != version {
            tracing::debug!(from = before, to = version, "configuration version changed");
        }
    }

    /// A version announced by a notification: versions only grow, so an older
    /// notification arriving late changes nothing.
    fn announce(&self, version: i64) {
        let before = self.inner.version.fetch_max(version, Ordering::AcqRel);
        self.inner.updates.fetch_add(1, Ordering::Relaxed);
        if before < version {
            tracing::debug!(
                from = before,
                to = version,
                "configuration version notified"
            );
        }
    }

    /// Reads the version from the database now (after a change this process made).
    pub async fn refresh(&self, store: &Store) -> Result<i64, StoreError> {
        let version = store.config_version().await?;
        self.set(version);
        Ok(version)
    }

    /// Reads the version and starts keeping it current until `stop` turns true.
    pub async fn start(
        store: &Store,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(ConfigWatch, tokio::task::JoinHandle<()>), StoreError> {
        let watch = ConfigWatch::new(store.config_version().await?);
        let task = match store.backend() {
            Backend::Sqlite => tokio::spawn(poll(store.clone(), watch.clone(), stop)),
            Backend::Postgres => tokio::spawn(listen(store.clone(), watch.clone(), stop)),
        };
        Ok((watch, task))
    }
}

/// Reads the version every [`SQLITE_POLL`].
async fn poll(store: Store, watch: ConfigWatch, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut failing = false;
    let mut tick = tokio::time::interval(SQLITE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(&mut stop) => return,
        }
        match watch.refresh(&store).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("configuration version readable again");
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot read the configuration version; keeping the one in force");
            }
            Err(_) => {}
        }
    }
}

/// Listens for `NOTIFY smimegate_config`; reads the version after each (re)connection
/// and every [`SAFETY_POLL`].
async fn listen(store: Store, watch: ConfigWatch, mut stop: tokio::sync::watch::Receiver<bool>) {
    'connect: loop {
        let mut listener = match connect_listener(&store).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for configuration changes; trying again");
                // Meanwhile the version is still read, so changes arrive a second late
                // rather than never.
                let _ = watch.refresh(&store).await;
                tokio::select! {
                    _ = tokio::time::sleep(RECONNECT_AFTER) => continue 'connect,
                    _ = stopped(&mut stop) => return,
                }
            }
        };
        // Whatever was notified before LISTEN took effect is read here.
        if let Err(e) = watch.refresh(&store).await {
            tracing::warn!(error = %e, "cannot read the configuration version");
        }
        tracing::debug!("listening for configuration changes");
        let mut safety = tokio::time::interval(SAFETY_POLL);
        safety.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        safety.tick().await;
        loop {
            tokio::select! {
                // try_recv is cancel-safe: a notification not yet returned stays queued.
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => match notification.payload().parse::<i64>() {
                        Ok(version) => watch.announce(version),
                        Err(_) => {
                            let _ = watch.refresh(&store).await;
                        }
                    },
                    // The connection was lost, and what is notified until LISTEN is
                    // in force again is lost with it: connect anew, and read the
                    // version once listening.
                    Ok(None) => {
                        tracing::info!("configuration listener lost its connection; connecting again");
                        continue 'connect;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "configuration listener failed; connecting again");
                        break;
                    }
                },
                _ = safety.tick() => {
                    let _ = watch.refresh(&store).await;
                }
                _ = stopped(&mut stop) => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT_AFTER) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn connect_listener(store: &Store) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(store.url()).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

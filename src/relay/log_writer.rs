//! Writes message-log rows with group commit: a session hands its row over and waits
//! until it is committed (so the reply to the client still follows the log row), but
//! rows of sessions finishing at the same time share one database commit. A row the
//! database refuses is lost alone (the store retries the group row by row) and named
//! at WARN; a database that cannot be used at all loses the group, logged at ERROR.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::{HeldConnection, LogEntry, Store};

/// Most rows in one commit.
const BATCH: usize = 256;

/// How long the writer keeps its database connection while no row waits. Under load
/// the next row comes sooner, and the connection is not given back and taken again per
/// group (sqlx pings every connection it is given back); when mail stops, the
/// connection goes back to the pool for the rest of the gateway.
const LINGER: Duration = Duration::from_millis(50);

type Job = (LogEntry, oneshot::Sender<()>);

#[derive(Clone)]
pub struct LogWriter {
    jobs: mpsc::Sender<Job>,
}

impl LogWriter {
    /// Starts the writer task on the current runtime.
    pub fn start(store: Store) -> LogWriter {
        let (jobs, mut queue) = mpsc::channel::<Job>(4 * BATCH);
        tokio::spawn(async move {
            let mut held = HeldConnection::default();
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                let first = if held.is_held() {
                    match tokio::time::timeout(LINGER, queue.recv()).await {
                        Ok(job) => job,
                        Err(_) => {
                            held.release();
                            continue;
                        }
                    }
                } else {
                    queue.recv().await
                };
                let Some(first) = first else { break };
                batch.push(first);
                gather(&mut queue, &mut batch).await;
                let (entries, waiters): (Vec<LogEntry>, Vec<oneshot::Sender<()>>) =
                    batch.drain(..).unzip();
                write(&store, &mut held, &entries).await;
                for waiter in waiters {
                    let _ = waiter.send(());
                }
            }
        });
        LogWriter { jobs }
    }

    /// Records a row and waits until it is committed (or failed, which is logged).
    pub async fn record(&self, entry: LogEntry) {
        let (done, committed) = oneshot::channel();
        if self.jobs.send((entry, done)).await.is_err() {
            tracing::error!("message log writer stopped; row lost");
            return;
        }
        let _ = committed.await;
    }
}

/// Most rounds of [`gather`] that each brought at least one more row.
const GATHER_ROUNDS: usize = 8;

/// Adds to `batch` the rows that are ready now, and those that sessions finishing
/// this instant are about to hand over: a yield lets the runtime poll its sockets and
/// run the sessions whose next hop has just answered, and rounds go on while each
/// brings more rows. Without it, a commit was so quick that most groups held one
/// row, and each row paid its own commit (a WAL append and the file locks around it).
/// A lone session loses one yield, a few microseconds; no timer ever holds a reply.
async fn gather(queue: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    let mut rounds = 0;
    loop {
        let before = batch.len();
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let grew = batch.len() > before;
        if batch.len() >= BATCH || rounds == GATHER_ROUNDS || (rounds > 0 && !grew) {
            return;
        }
        rounds += 1;
        tokio::task::yield_now().await;
    }
}

/// Writes one group and logs what was lost.
async fn write(store: &Store, held: &mut HeldConnection, entries: &[LogEntry]) {
    match store.message_log().record_all_on(held, entries).await {
        Ok(outcomes) => {
            for (entry, outcome) in entries.iter().zip(outcomes) {
                if let Err(e) = outcome {
                    // Which transaction, not its content (the subject may be what the
                    // database refused).
                    tracing::warn!(
                        error = %e,
                        received_at = entry.received_at,
                        direction = entry.direction.as_str(),
                        status = entry.status.as_str(),
                        smtp_code = entry.smtp_code,
                        "message log row lost"
                    );
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, rows = entries.len(), "could not write the message log");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::policy::Direction;
    use crate::store::{LogFilter, LogStatus};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn entry(n: i64, subject: &str) -> LogEntry {
        LogEntry {
            id: 0,
            received_at: n,
            node: "node1".into(),
            direction: Direction::Inbound,
            mail_from: format!("s{n}@partner.example"),
            rcpt_to: vec!["r@corp.example".into()],
            message_id: Some(format!("<{n}\0@partner.example>")),
            subject: Some(subject.into()),
            size_bytes: 1,
            status: LogStatus::Relayed,
            actions: vec![],
            smtp_code: Some(250),
            smtp_reply: None,
            rule_id: None,
            duration_ms: 1,
        }
    }

    /// Sessions finishing together share a commit; the one row the database refuses
    /// is lost alone and named at WARN (without its subject), the others are written.
    #[tokio::test]
    async fn a_refused_row_is_lost_alone_and_logged() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("log.db").display());
        let store = Store::connect(&url, 2, std::time::Duration::from_secs(5))
            .await
            .expect("store");
        sqlx::query(
            "CREATE TRIGGER poison BEFORE INSERT ON message_log WHEN NEW.subject = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poisoned row'); END",
        )
        .execute(store.pool())
        .await
        .expect("trigger");
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let writer = LogWriter::start(store.clone());
        tokio::join!(
            writer.record(entry(1, "one\0")),
            writer.record(entry(2, "poison")),
            writer.record(entry(3, "three")),
        );
        let rows = store
            .message_log()
            .list(&LogFilter::default())
            .await
            .expect("list");
        let mut at: Vec<i64> = rows.iter().map(|r| r.received_at).collect();
        at.sort();
        assert_eq!(at, [1, 3]);
        assert!(
            rows.iter()
                .any(|r| r.subject.as_deref() == Some("one\u{FFFD}"))
        );
        let logged = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
        // One group, refused, then retried row by row.
        assert!(logged.contains("rows=3"), "{logged}");
        assert!(logged.contains("writing its rows one by one"), "{logged}");
        assert!(logged.contains("WARN"), "{logged}");
        assert!(logged.contains("message log row lost"), "{logged}");
        assert!(logged.contains("received_at=2"), "{logged}");
        assert!(!logged.contains("poison\""), "{logged}");
        assert_eq!(
            logged.matches("message log row lost").count(),
            1,
            "{logged}"
        );
    }
}

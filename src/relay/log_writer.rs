//! Writes message-log rows with group commit: a session hands its row over and waits
//! until it is committed (so the reply to the client still follows the log row), but
//! rows of sessions finishing at the same time share one database commit.

use tokio::sync::{mpsc, oneshot};

use crate::store::{LogEntry, Store};

/// Most rows in one commit.
const BATCH: usize = 256;

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
            while let Some(first) = queue.recv().await {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match queue.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let (entries, waiters): (Vec<LogEntry>, Vec<oneshot::Sender<()>>) =
                    batch.into_iter().unzip();
                if let Err(e) = store.message_log().record_all(&entries).await {
                    tracing::error!(error = %e, rows = entries.len(), "could not write the message log");
                }
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

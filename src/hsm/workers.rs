//! The token's worker threads: one OS thread per pooled session, fed from one queue.
//!
//! Async callers hand a job to the queue and await its reply; a worker runs jobs back to
//! back without parking between them while the queue is non-empty. Measured on the
//! 2-core reference machine, this keeps a saturated pool at ~80 % of a bare signing
//! loop, where a `spawn_blocking` per operation reached ~47 % (every operation paid two
//! thread hand-offs). The runtime is never blocked either way.
//!
//! The queue is a mutex-guarded deque with a condition variable: an idle worker sleeps
//! at once and is woken for exactly one job. (A channel that spins and yields before it
//! sleeps made the idle ones of eight workers on two cores take turns in
//! `sched_yield`, CPU the signatures then lacked.)

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::error::{HsmError, Result};

type Job = Box<dyn FnOnce() + Send>;

struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

struct QueueState {
    jobs: VecDeque<Job>,
    /// Set when the last handle is gone: workers finish what is queued, then stop.
    closed: bool,
    /// Workers asleep waiting for a job: a job is announced (a futex wake, a system
    /// call) only when one is, not while every worker is busy.
    idle: usize,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Jobs run outside the lock, and each update under it is one statement: a
        // poisoned lock still holds a consistent queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, job: Job) -> Result<()> {
        let mut state = self.lock();
        if state.closed {
            return Err(HsmError::Task("token workers stopped".into()));
        }
        state.jobs.push_back(job);
        let asleep = state.idle > 0;
        drop(state);
        if asleep {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// The next job, waiting for one; `None` once closed and drained.
    fn next(&self) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state.idle += 1;
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.idle -= 1;
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

pub(crate) struct Workers {
    queue: Arc<Queue>,
    threads: usize,
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl Workers {
    /// Starts `threads` workers. They stop when the last handle to the queue is gone.
    pub(crate) fn start(threads: usize) -> Result<Self> {
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                closed: false,
                idle: 0,
            }),
            ready: Condvar::new(),
        });
        let workers = Workers {
            queue: queue.clone(),
            threads,
        };
        for n in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("token-{n}"))
                .spawn(move || {
                    while let Some(job) = queue.next() {
                        job();
                    }
                })
                .map_err(|e| HsmError::Task(format!("cannot start token worker: {e}")))?;
        }
        Ok(workers)
    }

    /// Runs `work` on a worker. A job no worker has taken within `queue_timeout` is
    /// [`HsmError::Busy`] and skipped, never run late. A job that has started gets
    /// `run_timeout` more after that point, then [`HsmError::Timeout`] (the worker stays
    /// with the token until it returns, and the result is dropped).
    pub(crate) async fn run<T, F>(
        &self,
        operation: &'static str,
        queue_timeout: Duration,
        run_timeout: Duration,
        work: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        let (reply, mut result) = tokio::sync::oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        let job_state = state.clone();
        let job: Job = Box::new(move || {
            // Exactly one of "worker starts it" and "caller gives up on it" wins.
            if job_state
                .compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return;
            }
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                .unwrap_or_else(|_| Err(HsmError::Task(format!("{operation} panicked"))));
            let _ = reply.send(outcome);
        });
        self.queue.push(job)?;
        // Common case: the answer arrives within the queue timeout (one timer).
        match tokio::time::timeout(queue_timeout, &mut result).await {
            Ok(Ok(outcome)) => return outcome,
            Ok(Err(_)) => {
                return Err(HsmError::Task(format!(
                    "{operation}: worker dropped the job"
                )));
            }
            Err(_) => {}
        }
        if state
            .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return Err(HsmError::Busy {
                seconds: queue_timeout.as_secs(),
                capacity: self.threads,
            });
        }
        // Started but not finished: it gets the operation timeout from here.
        match tokio::time::timeout(run_timeout, result).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(HsmError::Task(format!(
                "{operation}: worker dropped the job"
            ))),
            Err(_) => {
                tracing::warn!(
                    operation,
                    seconds = run_timeout.as_secs(),
                    "token operation timed out"
                );
                Err(HsmError::Timeout {
                    operation,
                    seconds: run_timeout.as_secs(),
                })
            }
        }
    }
}

const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const ABANDONED: u8 = 2;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    const SHORT: Duration = Duration::from_millis(50);
    const LONG: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn results_come_back_in_order_of_completion() {
        let workers = Workers::start(2).expect("start");
        let a = workers.run("a", LONG, LONG, || Ok(1));
        let b = workers.run("b", LONG, LONG, || Ok(2));
        let (a, b) = tokio::join!(a, b);
        assert_eq!((a.expect("a"), b.expect("b")), (1, 2));
    }

    #[tokio::test]
    async fn a_job_nobody_takes_in_time_is_busy_and_never_runs_late() {
        let workers = Workers::start(1).expect("start");
        let ran_late = Arc::new(AtomicBool::new(false));
        let blocker = workers.run("blocker", LONG, LONG, || {
            std::thread::sleep(Duration::from_millis(400));
            Ok(())
        });
        let flag = ran_late.clone();
        let queued = workers.run("queued", SHORT, SHORT, move || {
            flag.store(true, Ordering::SeqCst);
            Ok(())
        });
        let (blocker, queued) = tokio::join!(blocker, queued);
        blocker.expect("blocker");
        assert!(matches!(queued, Err(HsmError::Busy { .. })), "{queued:?}");
        // The worker is free again and skipped the abandoned job.
        workers
            .run("after", LONG, LONG, || Ok(()))
            .await
            .expect("after");
        assert!(!ran_late.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_job_that_overruns_times_out_and_is_transient() {
        let workers = Workers::start(1).expect("start");
        let err = workers
            .run("slow", SHORT, SHORT, || {
                std::thread::sleep(Duration::from_millis(300));
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                HsmError::Timeout {
                    operation: "slow",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.is_transient());
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_worker_survives() {
        let workers = Workers::start(1).expect("start");
        let err = workers
            .run::<(), _>("boom", LONG, LONG, || panic!("injected"))
            .await
            .unwrap_err();
        assert!(matches!(err, HsmError::Task(_)), "{err}");
        assert_eq!(
            workers
                .run("next", LONG, LONG, || Ok(7))
                .await
                .expect("next"),
            7
        );
    }
}

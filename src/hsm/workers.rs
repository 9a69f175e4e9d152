//! The token's worker threads: one OS thread per pooled session, fed from one queue.
//!
//! Async callers hand a job to the queue and await its reply; a worker runs jobs back to
//! back without parking between them while the queue is non-empty, and sends the
//! replies of short jobs together (see [`work`]). Measured on the 2-core reference
//! machine, a saturated pool runs at ~80–85 % of a bare signing loop, where a
//! `spawn_blocking` per operation reached ~47 % (every operation paid two thread
//! hand-offs). The runtime is never blocked either way.
//!
//! The queue is a mutex-guarded deque with a condition variable: an idle worker sleeps
//! at once and is woken for exactly one job. (A channel that spins and yields before it
//! sleeps made the idle ones of eight workers on two cores take turns in
//! `sched_yield`, CPU the signatures then lacked.)

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::error::{HsmError, Result};

/// A queued operation. Run, it returns the hand-over of its outcome to the waiting
/// caller (`None` when the caller gave up before it started).
type Job = Box<dyn FnOnce() -> Option<Reply> + Send>;
/// Hands a finished job's outcome to its caller: wakes the caller's task.
type Reply = Box<dyn FnOnce() + Send>;

/// A reply may wait for the next jobs only if its own job took less than this: short
/// operations (P-256 signatures, ~50 µs in SoftHSM) then share one wake-up of the
/// async runtime between callers; slow ones (RSA, ~0.5 ms) are answered at once.
const HOLD_JOBS_UNDER: Duration = Duration::from_micros(200);

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

    /// The next job if one is queued, without waiting.
    fn try_next(&self) -> Option<Job> {
        self.lock().jobs.pop_front()
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

/// Every worker thread this process started and has not yet joined. A worker stops on
/// its own once its queue is closed, but the thread's exit (the per-thread state of the
/// token's library and of OpenSSL under it, freed by thread-local destructors) may
/// still be running when `main` calls `C_Finalize`. That overlap is the likely cause of
/// a CLI that died once in CI with "double free or corruption" (not reproduced in 600
/// runs); [`join_all`] rules it out.
static THREADS: Mutex<Vec<std::thread::JoinHandle<()>>> = Mutex::new(Vec::new());

fn threads() -> MutexGuard<'static, Vec<std::thread::JoinHandle<()>>> {
    THREADS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Joins every worker thread, once each has stopped (their queues are closed when the
/// last handle to their token is dropped). Returns `false`, joining none, if some are
/// still running after `timeout` (a worker still inside a hung token call).
pub(crate) fn join_all(timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        {
            let mut threads = threads();
            if threads.iter().all(std::thread::JoinHandle::is_finished) {
                for thread in threads.drain(..) {
                    // A panic in a worker was already reported as its job's error.
                    let _ = thread.join();
                }
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
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
        let mut started = threads_started();
        for n in 0..threads {
            let queue = queue.clone();
            let thread = std::thread::Builder::new()
                .name(format!("token-{n}"))
                .spawn(move || work(&queue))
                .map_err(|e| HsmError::Task(format!("cannot start token worker: {e}")))?;
            started.push(thread);
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
                return None;
            }
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                .unwrap_or_else(|_| Err(HsmError::Task(format!("{operation} panicked"))));
            Some(Box::new(move || {
                let _ = reply.send(outcome);
            }))
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

/// The registry of worker threads, rid of those that have stopped already (a process
/// that opens the token again and again, like `token bench`, keeps no dead handles).
fn threads_started() -> MutexGuard<'static, Vec<std::thread::JoinHandle<()>>> {
    let mut threads = threads();
    let (stopped, running): (Vec<_>, Vec<_>) = threads
        .drain(..)
        .partition(std::thread::JoinHandle::is_finished);
    *threads = running;
    for thread in stopped {
        let _ = thread.join();
    }
    threads
}

/// A worker's loop: runs jobs back to back while any are queued, sleeps when none are.
///
/// Each reply wakes the caller's task, and waking an idle async runtime is a system
/// call on this thread plus a park and unpark of the runtime's threads: measured on the
/// 2-core reference machine, a pool of one session answering every P-256 signature at
/// once ran at ~69 % of a bare signing loop. So the replies of short jobs wait while
/// the next queued jobs run, and up to [`MAX_HELD`] go out together (the runtime wakes
/// once for them): ~82 % with three, ~78 % with two, in the same runs. Replies are
/// never held while the worker sleeps, and a job of [`HOLD_JOBS_UNDER`] or longer sends
/// them at once with its own, so a reply waits for at most one such slow job.
fn work(queue: &Queue) {
    let mut held: Vec<Reply> = Vec::with_capacity(MAX_HELD);
    loop {
        let job = match queue.try_next() {
            Some(job) => job,
            None => {
                held.drain(..).for_each(|reply| reply());
                match queue.next() {
                    Some(job) => job,
                    None => return,
                }
            }
        };
        let started = Instant::now();
        let Some(reply) = job() else { continue };
        held.push(reply);
        // An empty queue sends them at the top of the loop, before the worker sleeps.
        if held.len() >= MAX_HELD || started.elapsed() >= HOLD_JOBS_UNDER {
            held.drain(..).for_each(|reply| reply());
        }
    }
}

/// Most replies of short jobs sent together.
const MAX_HELD: usize = 3;

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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_reply_arrives_when_short_jobs_share_a_wake_up() {
        // One worker and many callers of short jobs: their replies go out in groups.
        let workers = Arc::new(Workers::start(1).expect("start"));
        let callers: Vec<_> = (0..64u64)
            .map(|n| {
                let workers = workers.clone();
                tokio::spawn(async move {
                    let mut sum = 0;
                    for i in 0..50u64 {
                        sum += workers
                            .run("short", LONG, LONG, move || Ok(n * 1000 + i))
                            .await
                            .expect("short job");
                    }
                    sum
                })
            })
            .collect();
        let mut total = 0;
        for caller in callers {
            total += caller.await.expect("caller");
        }
        let expected: u64 = (0..64u64)
            .map(|n| (0..50u64).map(|i| n * 1000 + i).sum::<u64>())
            .sum();
        assert_eq!(total, expected);
        // The last reply was not left held when the queue ran dry: a lone job answers.
        let alone = tokio::time::timeout(
            Duration::from_secs(5),
            workers.run("alone", LONG, LONG, || Ok(1)),
        )
        .await
        .expect("a lone job is answered at once");
        assert_eq!(alone.expect("alone"), 1);
    }

    #[tokio::test]
    async fn a_slow_job_after_a_short_one_delays_its_reply_by_one_job_at_most() {
        let workers = Workers::start(1).expect("start");
        let blocker = workers.run("blocker", LONG, LONG, || {
            std::thread::sleep(Duration::from_millis(100));
            Ok(())
        });
        let short = async {
            // Queued behind the blocker; the slow job is queued behind it.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let started = Instant::now();
            workers
                .run("short", LONG, LONG, || Ok(()))
                .await
                .expect("short");
            started.elapsed()
        };
        let slow = async {
            tokio::time::sleep(Duration::from_millis(40)).await;
            workers
                .run("slow", LONG, LONG, || {
                    std::thread::sleep(Duration::from_millis(300));
                    Ok(())
                })
                .await
                .expect("slow");
        };
        let (blocked, waited, ()) = tokio::join!(blocker, short, slow);
        blocked.expect("blocker");
        // Held for the slow job at most (it was queued when the short one finished).
        assert!(waited < Duration::from_secs(2), "{waited:?}");
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

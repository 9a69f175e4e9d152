//! A bounded pool of logged-in sessions. `Session` is `Send` but not `Sync`, so each
//! concurrent operation borrows one session; the pool never opens more than its
//! capacity, which the caller has already capped at the token's own session limit.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::session::Session;
use cryptoki::slot::Slot;

use super::error::{HsmError, Result};

pub(crate) struct SessionPool {
    ctx: Pkcs11,
    slot: Slot,
    capacity: usize,
    state: Mutex<PoolState>,
    returned: Condvar,
}

struct PoolState {
    idle: Vec<Session>,
    open: usize,
    /// Callers asleep waiting for a session: a returned session is announced (a futex
    /// wake, a system call) only when one is. With one worker per session, nobody
    /// usually is.
    waiting: usize,
}

/// Counters for the health report.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PoolUsage {
    pub capacity: usize,
    pub open: usize,
    pub in_use: usize,
    pub idle: usize,
}

impl SessionPool {
    pub(crate) fn new(ctx: Pkcs11, slot: Slot, capacity: usize, first: Session) -> Self {
        Self {
            ctx,
            slot,
            capacity,
            state: Mutex::new(PoolState {
                idle: vec![first],
                open: 1,
                waiting: 0,
            }),
            returned: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic while holding this lock cannot leave the counters inconsistent
        // (each update is a single statement), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Borrows a session, opening a new one while below capacity, else waiting up to
    /// `timeout` for one to come back.
    pub(crate) fn acquire(&self, timeout: Duration) -> Result<PooledSession<'_>> {
        let mut deadline = None;
        let mut state = self.lock();
        loop {
            if let Some(session) = state.idle.pop() {
                return Ok(PooledSession {
                    pool: self,
                    session: Some(session),
                    broken: false,
                });
            }
            if state.open < self.capacity {
                state.open += 1;
                drop(state);
                return match self.ctx.open_rw_session(self.slot) {
                    Ok(session) => Ok(PooledSession {
                        pool: self,
                        session: Some(session),
                        broken: false,
                    }),
                    Err(e) => {
                        self.release_slot();
                        Err(HsmError::token("open session", e))
                    }
                };
            }
            // The clock is read only when a caller has to wait.
            let now = Instant::now();
            let deadline = *deadline.get_or_insert(now + timeout);
            if now >= deadline {
                return Err(HsmError::Busy {
                    seconds: timeout.as_secs(),
                    capacity: self.capacity,
                });
            }
            state.waiting += 1;
            state = self
                .returned
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.waiting -= 1;
        }
    }

    /// Gives up a slot whose session is gone (failed to open, or closed as broken).
    fn release_slot(&self) {
        let mut state = self.lock();
        state.open -= 1;
        let waiting = state.waiting > 0;
        drop(state);
        if waiting {
            self.returned.notify_one();
        }
    }

    fn give_back(&self, session: Session, broken: bool) {
        if broken {
            drop(session); // closes the session
            self.release_slot();
            return;
        }
        let mut state = self.lock();
        state.idle.push(session);
        let waiting = state.waiting > 0;
        drop(state);
        if waiting {
            self.returned.notify_one();
        }
    }

    pub(crate) fn usage(&self) -> PoolUsage {
        let state = self.lock();
        PoolUsage {
            capacity: self.capacity,
            open: state.open,
            in_use: state.open - state.idle.len(),
            idle: state.idle.len(),
        }
    }
}

/// A borrowed session; it goes back to the pool on drop, or is closed when marked broken.
pub(crate) struct PooledSession<'a> {
    pool: &'a SessionPool,
    session: Option<Session>,
    broken: bool,
}

impl PooledSession<'_> {
    pub(crate) fn mark_broken(&mut self) {
        self.broken = true;
    }
}

impl std::ops::Deref for PooledSession<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        // Only `Drop` takes the session out.
        match &self.session {
            Some(s) => s,
            None => unreachable!("session taken before drop"),
        }
    }
}

impl Drop for PooledSession<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.pool.give_back(session, self.broken);
        }
    }
}

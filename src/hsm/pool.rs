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
        let deadline = Instant::now() + timeout;
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
                        self.lock().open -= 1;
                        self.returned.notify_one();
                        Err(HsmError::token("open session", e))
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(HsmError::Busy {
                    seconds: timeout.as_secs(),
                    capacity: self.capacity,
                });
            }
            state = self
                .returned
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn give_back(&self, session: Session, broken: bool) {
        let mut state = self.lock();
        if broken {
            state.open -= 1;
            drop(state);
            drop(session); // closes the session
        } else {
            state.idle.push(session);
            drop(state);
        }
        self.returned.notify_one();
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

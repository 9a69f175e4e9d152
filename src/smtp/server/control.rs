//! What all listeners of one process share: the current [`Limits`] (replaced on
//! SIGHUP), the byte [`Budget`], the connection counts per client address, the number
//! of sessions, and the shutdown [`Phase`]. Exposure: none; the listeners and the
//! process's signal handling use it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::sync::watch;

use super::Limits;
use super::budget::Budget;
use crate::smtp::Reply;

/// Where the process is in its life (SIGTERM moves it on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// No new connections; sessions idle between transactions get `421 4.3.2` at
    /// once, transactions in flight may finish.
    Draining,
    /// The grace time is over: every session gets `421 4.3.2` now.
    Closing,
}

pub struct Control {
    limits: RwLock<Arc<Limits>>,
    budget: Arc<Budget>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    phase: watch::Sender<Phase>,
    sessions: watch::Sender<usize>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    ListenerFull,
    AddressFull,
}

impl Refusal {
    pub(crate) fn reply(self) -> Reply {
        match self {
            Refusal::ListenerFull => {
                Reply::new(421, "4.3.2", "Too many connections, try again later")
            }
            Refusal::AddressFull => Reply::new(
                421,
                "4.7.0",
                "Too many connections from your address, try again later",
            ),
        }
    }
}

impl Control {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Control {
            budget: Budget::new(limits.message_budget_bytes),
            limits: RwLock::new(Arc::new(limits)),
            per_ip: Mutex::new(HashMap::new()),
            phase: watch::Sender::new(Phase::Running),
            sessions: watch::Sender::new(0),
        })
    }

    /// The limits new sessions start with.
    pub fn limits(&self) -> Arc<Limits> {
        self.limits
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// New limits for sessions from now on; the byte budget changes at once.
    pub fn set_limits(&self, limits: Limits) {
        self.budget.set_capacity(limits.message_budget_bytes);
        *self.limits.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(limits);
    }

    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Moves the process on to `phase` (never back).
    pub fn advance(&self, phase: Phase) {
        self.phase.send_if_modified(|current| {
            let later = phase > *current;
            if later {
                *current = phase;
            }
            later
        });
    }

    /// Sessions running now (every listener).
    pub fn sessions(&self) -> usize {
        *self.sessions.borrow()
    }

    /// Waits until no session is left.
    pub async fn idle(&self) {
        let mut sessions = self.sessions.subscribe();
        let _ = sessions.wait_for(|n| *n == 0).await;
    }

    pub(crate) fn enter(self: &Arc<Self>) -> SessionGuard {
        self.sessions.send_modify(|n| *n += 1);
        SessionGuard(self.clone())
    }

    /// Admits a connection from `ip` to a listener with `active` sessions.
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        active: &Arc<AtomicUsize>,
        limits: &Limits,
    ) -> Result<Slot, Refusal> {
        active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limits.max_connections.max(1)).then_some(n + 1)
            })
            .map_err(|_| Refusal::ListenerFull)?;
        let mut slot = Slot {
            control: self.clone(),
            ip: None,
            active: active.clone(),
        };
        if limits.counts_per_ip(ip) {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= limits.max_connections_per_ip.max(1) {
                return Err(Refusal::AddressFull);
            }
            *count += 1;
            slot.ip = Some(ip);
        }
        Ok(slot)
    }

    /// Sessions from `ip` counted now.
    pub fn connections_from(&self, ip: IpAddr) -> usize {
        self.per_ip
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&ip)
            .copied()
            .unwrap_or(0)
    }
}

/// Counts one session while it runs.
pub(crate) struct SessionGuard(Arc<Control>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.sessions.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// One admitted connection: its place in the listener's and its address's counts.
pub(crate) struct Slot {
    control: Arc<Control>,
    ip: Option<IpAddr>,
    active: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut per_ip = self
                .control
                .per_ip
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = per_ip.get_mut(&ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

/// Resolves once the process has reached `phase` (never if its control is gone).
pub(crate) async fn reached(phase: &mut watch::Receiver<Phase>, target: Phase) {
    if phase.wait_for(|p| *p >= target).await.is_err() {
        std::future::pending::<()>().await;
    }
}

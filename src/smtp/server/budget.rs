//! The global budget of message memory in flight: every message a session holds
//! (while reading DATA and until the handler's reply is sent) reserves here first what
//! it may cost — [`PROCESSING_MULTIPLE`] times its bytes, for the copies signing,
//! encryption or decryption make — so many large messages at once get `452 4.3.1`
//! instead of exhausting memory. Exposure: none directly; sessions reserve for what
//! clients send.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many times its size a message may occupy at once while it is processed: the
/// DATA buffer and what the S/MIME work makes from it (a signed copy; a base64
/// ciphertext about 1.4 times the size; a decrypted entity). `BENCH_ONLY=big
/// scripts/bench-relay` prints the peak resident memory of each mode above the idle
/// gateway divided by the message size (2.0 signing, 2.4 signing and encrypting, 2.5
/// decrypting and verifying when this was set): 4 leaves room for Bcc copies and for
/// what the allocator keeps, and is the bound issue 12 sets.
pub const PROCESSING_MULTIPLE: usize = 4;

/// Bytes reserved by all sessions together, against a capacity that may change at
/// run time (SIGHUP).
#[derive(Debug, Default)]
pub struct Budget {
    used: AtomicUsize,
    capacity: AtomicUsize,
}

impl Budget {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Budget {
            used: AtomicUsize::new(0),
            capacity: AtomicUsize::new(capacity),
        })
    }

    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity, Ordering::Relaxed);
    }

    /// What a message of `bytes` reserves: [`PROCESSING_MULTIPLE`] times its size, but
    /// no more than the whole budget, so that a message the size limit allows (the
    /// configuration keeps the budget at least that large) can always pass alone.
    pub fn cost(&self, bytes: usize) -> usize {
        let capacity = self.capacity.load(Ordering::Relaxed);
        bytes
            .saturating_mul(PROCESSING_MULTIPLE)
            .min(capacity.max(bytes))
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn try_add(&self, bytes: usize) -> bool {
        let capacity = self.capacity.load(Ordering::Relaxed);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= capacity)
            })
            .is_ok()
    }

    /// A reservation of `bytes`, or `None` when the budget cannot give them.
    pub fn hold(self: &Arc<Self>, bytes: usize) -> Option<Held> {
        self.try_add(bytes).then(|| Held {
            budget: self.clone(),
            bytes,
        })
    }
}

/// Bytes reserved for one message; given back when dropped.
#[derive(Debug)]
pub struct Held {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Held {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Makes the reservation cover at least `needed` bytes, growing it geometrically
    /// (up to `cap`) so a message read in small pieces does not reserve per piece.
    /// False when the budget cannot give what is needed.
    pub fn ensure(&mut self, needed: usize, cap: usize) -> bool {
        if needed <= self.bytes {
            return true;
        }
        let generous = needed
            .max(self.bytes.saturating_mul(2))
            .min(cap.max(needed));
        for want in [generous, needed] {
            if self.budget.try_add(want - self.bytes) {
                self.bytes = want;
                return true;
            }
        }
        false
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_within_the_capacity_and_are_given_back() {
        let budget = Budget::new(100);
        let mut a = budget.hold(40).expect("40 of 100");
        assert!(budget.hold(70).is_none());
        assert!(a.ensure(50, 1000), "grows");
        assert!(a.bytes() >= 50);
        let b = budget.hold(100 - a.bytes()).expect("the rest");
        assert!(!a.ensure(a.bytes() + 1, 1000), "nothing left");
        drop(b);
        assert!(a.ensure(90, 1000));
        drop(a);
        assert_eq!(budget.used(), 0);
        budget.set_capacity(10);
        assert!(budget.hold(11).is_none());
    }

    #[test]
    fn a_message_costs_its_processing_multiple_up_to_the_whole_budget() {
        let budget = Budget::new(1000);
        assert_eq!(budget.cost(100), 100 * PROCESSING_MULTIPLE);
        assert_eq!(budget.cost(900), 1000, "alone it still fits");
        assert_eq!(budget.cost(1001), 1001, "more than the budget: refused");
    }
}

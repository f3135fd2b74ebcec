//! The process-wide budget for buffered request bodies
//! (`limits.max_buffered_body_bytes`). Each call reserves bytes as its body
//! arrives and gives them back when the pipeline is done with the request,
//! so a thousand slow uploads cannot take the process's memory with them:
//! the one that does not fit is refused (503 `overloaded`) instead.
//!
//! Reserving as bytes arrive (rather than the declared `content-length` up
//! front) means a client that declares a large body and sends nothing holds
//! nothing; reserving what is allocated (the buffer's capacity, not its
//! length) keeps the count honest about memory.

use std::sync::Arc;

use crate::metrics::Gauge;

/// The shared budget; cheap to clone.
#[derive(Clone)]
pub struct Budget {
    used: Arc<Gauge>,
    max: u64,
}

impl Budget {
    /// A budget of `max` bytes, counted in `used` (the exported gauge).
    pub fn new(max: u64, used: Arc<Gauge>) -> Budget {
        Budget { used, max }
    }

    /// An empty reservation that grows as the body arrives.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            held: 0,
        }
    }

    /// The budget's size in bytes.
    pub fn max(&self) -> u64 {
        self.max
    }
}

/// Bytes one call holds; given back when dropped.
pub struct Reservation {
    budget: Budget,
    held: u64,
}

impl Reservation {
    /// Takes `n` more bytes; `false` (and nothing taken) when the budget
    /// cannot spare them.
    #[must_use]
    pub fn grow(&mut self, n: u64) -> bool {
        if self.budget.used.try_add(n, self.budget.max) {
            self.held += n;
            true
        } else {
            false
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.held
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.sub(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_overshoot_and_give_back_on_drop() {
        let used = Arc::new(Gauge::default());
        let budget = Budget::new(100, used.clone());
        let mut a = budget.reservation();
        let mut b = budget.reservation();
        assert!(a.grow(60));
        assert!(!b.grow(41), "60 + 41 is over 100");
        assert!(b.grow(40));
        assert_eq!(used.get(), 100);
        drop(a);
        assert_eq!(used.get(), 40);
        assert!(b.grow(60));
        drop(b);
        assert_eq!(used.get(), 0);
    }
}

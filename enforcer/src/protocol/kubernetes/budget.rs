//! Memory held by answers while they are redacted, shared by every connection. One answer
//! is capped on its own, but HTTP/2 runs 100 streams on a connection and an agent may open
//! many connections: without a shared cap, what it could make enforcer hold has no bound.

use tokio::sync::{Semaphore, SemaphorePermit};

/// Bytes all answers being redacted may hold at once.
pub const TOTAL: usize = 256 << 20;

static BUDGET: Semaphore = Semaphore::const_new(TOTAL);

#[derive(Debug, thiserror::Error)]
#[error("enforcer holds {} MiB of answers to redact already; try again shortly", TOTAL >> 20)]
pub struct Exhausted;

/// The share of the budget one answer holds; released when dropped.
pub struct Held {
    pool: &'static Semaphore,
    permit: Option<SemaphorePermit<'static>>,
}

impl Held {
    pub fn new() -> Held {
        Held::of(&BUDGET)
    }

    fn of(pool: &'static Semaphore) -> Held {
        Held { pool, permit: None }
    }

    fn holds(&self) -> usize {
        self.permit.as_ref().map_or(0, SemaphorePermit::num_permits)
    }

    /// Holds exactly `bytes` from now on: more if it grew (refused when the budget is
    /// spent, never waited for, as two answers each waiting for the other's share would
    /// wait for ever), the rest given back if it shrank.
    pub fn set(&mut self, bytes: usize) -> Result<(), Exhausted> {
        let holds = self.holds();
        if bytes > holds {
            let more = u32::try_from(bytes - holds).map_err(|_| Exhausted)?;
            let more = self.pool.try_acquire_many(more).map_err(|_| Exhausted)?;
            match &mut self.permit {
                Some(permit) => permit.merge(more),
                None => self.permit = Some(more),
            }
        } else if let Some(permit) = &mut self.permit {
            drop(permit.split(holds - bytes));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_share_the_budget_and_give_back_what_they_no_longer_hold() {
        static POOL: Semaphore = Semaphore::const_new(100);
        let mut first = Held::of(&POOL);
        let mut second = Held::of(&POOL);
        first.set(60).expect("within the budget");
        assert!(second.set(50).is_err(), "60 + 50 is over 100");
        assert_eq!(second.holds(), 0, "a refused growth holds nothing");
        second.set(40).expect("60 + 40 fits");
        first.set(10).expect("shrinking");
        assert_eq!(POOL.available_permits(), 50);
        drop(first);
        drop(second);
        assert_eq!(POOL.available_permits(), 100);
        assert!(Held::of(&POOL).set(usize::MAX).is_err());
    }
}

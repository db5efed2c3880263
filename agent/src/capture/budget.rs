//! Lock-free throttles for the capturing thread: the agent-wide CPU budget and each capture's
//! rate limit.
//!
//! Both are GCRA (generic cell rate) meters over one atomic: a "paid back at" time that moves
//! forward with every use. That is a sliding window without buckets — over any window of its
//! length the meter admits at most its allowance (plus the one use in flight) — and costs one
//! load, or one compare-and-swap, on the hot path.

use std::sync::atomic::{AtomicU64, Ordering};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// The agent-wide budget for capture work: a fraction of one core over a sliding second.
pub(crate) struct CpuBudget {
    /// Parts per million of one core; 10_000 is 1 %.
    ppm: AtomicU64,
    /// When the work done so far is paid back, in the engine's monotonic nanoseconds.
    paid_back_at: AtomicU64,
}

impl CpuBudget {
    pub const WINDOW_NS: u64 = NANOS_PER_SEC;

    pub fn new(fraction_of_one_core: f64) -> CpuBudget {
        let budget = CpuBudget {
            ppm: AtomicU64::new(0),
            paid_back_at: AtomicU64::new(0),
        };
        budget.set_fraction(fraction_of_one_core);
        budget
    }

    /// Sets the budget. Work booked under the old budget is forgiven: its payback time was
    /// computed at the old rate and would otherwise hold the new budget hostage.
    pub fn set_fraction(&self, fraction_of_one_core: f64) {
        let ppm = (fraction_of_one_core.clamp(0.0, 1.0) * 1_000_000.0).round() as u64;
        self.ppm.store(ppm, Ordering::Relaxed);
        self.paid_back_at.store(0, Ordering::Relaxed);
    }

    /// Whether capture work may start now: the work already done is paid back within one
    /// window from now.
    #[inline]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub fn has_room(&self, now_ns: u64) -> bool {
        if self.ppm.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.paid_back_at.load(Ordering::Relaxed) <= now_ns.saturating_add(Self::WINDOW_NS)
    }

    /// The most one piece of work (a hit on an application thread, a snapshot's redaction on
    /// the agent's) is charged: past it, the time is more likely the thread descheduled on a
    /// busy machine than capture work, and charging it would disarm captures for the
    /// machine's load rather than their own cost.
    pub const MAX_CHARGE_NS: u64 = 2_000_000;

    /// Books `cost_ns` of work done at `now_ns`, at most [`CpuBudget::MAX_CHARGE_NS`].
    #[inline]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub fn charge(&self, now_ns: u64, cost_ns: u64) {
        let cost_ns = cost_ns.min(Self::MAX_CHARGE_NS);
        let ppm = self.ppm.load(Ordering::Relaxed).max(1);
        // Work of `cost` ns at `ppm` is paid back after cost * 1e6 / ppm ns of wall time.
        let payback = cost_ns.saturating_mul(1_000_000) / ppm;
        let _ = self
            .paid_back_at
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |at| {
                Some(at.max(now_ns).saturating_add(payback))
            });
    }
}

/// Snapshots per second, with a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl RateLimit {
    /// Ten snapshots a second, ten at once: enough to see a pattern, never a flood.
    pub const DEFAULT: RateLimit = RateLimit {
        per_second: 10.0,
        burst: 10,
    };

    /// The most an agent allows unless configured otherwise.
    pub const DEFAULT_CEILING: RateLimit = RateLimit {
        per_second: 1_000.0,
        burst: 100,
    };

    /// The stricter of `self` and `ceiling` in each dimension.
    pub fn clamped_to(self, ceiling: RateLimit) -> RateLimit {
        let per_second = if self.per_second.is_finite() && self.per_second > 0.0 {
            self.per_second.min(ceiling.per_second)
        } else {
            ceiling.per_second.min(RateLimit::DEFAULT.per_second)
        };
        RateLimit {
            per_second,
            burst: self.burst.clamp(1, ceiling.burst.max(1)),
        }
    }
}

/// One capture's rate limit.
pub(crate) struct RateLimiter {
    interval_ns: u64,
    /// How far ahead of now the meter may run: (burst - 1) intervals.
    tolerance_ns: u64,
    /// Theoretical arrival time of the next conforming snapshot.
    next_at: AtomicU64,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> RateLimiter {
        let interval_ns = if limit.per_second > 0.0 {
            ((NANOS_PER_SEC as f64) / limit.per_second).max(1.0) as u64
        } else {
            u64::MAX / 4
        };
        RateLimiter {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(limit.burst.max(1) - 1)),
            next_at: AtomicU64::new(0),
        }
    }

    /// Whether [`RateLimiter::allow`] would refuse now, taking nothing: one load. A refusal
    /// holds until `now_ns` moves on (the meter only runs ahead), so a caller may act on it.
    #[inline]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub fn refuses(&self, now_ns: u64) -> bool {
        let next = self.next_at.load(Ordering::Relaxed);
        next.saturating_sub(now_ns) > self.tolerance_ns
    }

    /// Takes one snapshot's allowance if there is one.
    #[inline]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub fn allow(&self, now_ns: u64) -> bool {
        self.next_at
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
                let start = next.max(now_ns);
                (start - now_ns <= self.tolerance_ns)
                    .then(|| start.saturating_add(self.interval_ns))
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn cpu_budget_admits_one_percent_over_a_sliding_second() {
        let budget = CpuBudget::new(0.01);
        let mut now = 10 * NANOS_PER_SEC;
        // 1 % of a second is 10 ms of work; spend it in 1 ms pieces at one instant.
        let mut admitted = 0;
        while budget.has_room(now) && admitted < 1_000 {
            budget.charge(now, MS);
            admitted += 1;
        }
        assert_eq!(admitted, 11, "10 ms of allowance plus the one in flight");
        // A tenth of a second later, a tenth of the window is paid back: one more piece.
        now += 100 * MS;
        assert!(budget.has_room(now));
        budget.charge(now, MS);
        assert!(!budget.has_room(now));
        // A full second later everything is paid back.
        now += NANOS_PER_SEC + 100 * MS;
        assert!(budget.has_room(now));
    }

    #[test]
    fn a_new_budget_starts_without_the_old_debt() {
        let budget = CpuBudget::new(0.0001);
        let now = 10 * NANOS_PER_SEC;
        budget.charge(now, 100 * MS);
        assert!(!budget.has_room(now), "1000 s of payback at 0.01 %");
        budget.set_fraction(0.5);
        assert!(budget.has_room(now));
    }

    #[test]
    fn zero_budget_admits_nothing() {
        let budget = CpuBudget::new(0.0);
        assert!(!budget.has_room(NANOS_PER_SEC));
    }

    #[test]
    fn rate_limiter_allows_burst_then_rate() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 10.0,
            burst: 3,
        });
        let now = 5 * NANOS_PER_SEC;
        let burst = (0..10).filter(|_| limiter.allow(now)).count();
        assert_eq!(burst, 3);
        assert!(!limiter.allow(now + 50 * MS));
        assert!(limiter.allow(now + 100 * MS));
        assert!(!limiter.allow(now + 100 * MS));
    }

    #[test]
    fn refuses_exactly_when_allow_would() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 10.0,
            burst: 2,
        });
        let now = 5 * NANOS_PER_SEC;
        assert!(!limiter.refuses(now), "a fresh limiter has its burst");
        assert!(limiter.allow(now));
        assert!(!limiter.refuses(now), "one of the burst left");
        assert!(limiter.allow(now));
        assert!(limiter.refuses(now));
        assert!(!limiter.allow(now), "refuses and allow agree");
        assert!(limiter.refuses(now + 99 * MS), "peeking takes nothing");
        assert!(!limiter.refuses(now + 100 * MS));
        assert!(limiter.allow(now + 100 * MS));
    }

    #[test]
    fn requests_cannot_exceed_the_ceiling() {
        let ceiling = RateLimit {
            per_second: 5.0,
            burst: 2,
        };
        let asked = RateLimit {
            per_second: 1e9,
            burst: 1000,
        };
        assert_eq!(asked.clamped_to(ceiling), ceiling);
        let nonsense = RateLimit {
            per_second: f64::NAN,
            burst: 0,
        };
        let clamped = nonsense.clamped_to(ceiling);
        assert_eq!(clamped.per_second, 5.0);
        assert_eq!(clamped.burst, 1);
    }
}

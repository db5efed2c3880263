//! Rate limiting of refused calls, per caller identity.
//!
//! Every refused call is recorded in the audit log, so a caller that is refused over and over
//! would fill the log (and the disk under it) for everyone. Each identity therefore has a token
//! bucket for refusals: every refused call (INVALID_ARGUMENT, PERMISSION_DENIED, NOT_FOUND,
//! FAILED_PRECONDITION, ALREADY_EXISTS, OUT_OF_RANGE, RESOURCE_EXHAUSTED) takes one token;
//! `limits.refusal_burst` tokens at most, `limits.refusals_per_minute` come back each minute.
//! Calls that succeed cost nothing, and failures that are the control plane's own (UNAVAILABLE,
//! INTERNAL) cost nothing either. An identity with an empty bucket gets RESOURCE_EXHAUSTED for
//! every call, before anything else runs, until a token comes back.
//!
//! The limiting itself is recorded once per identity and [`WINDOW`] (`caller.limited`, with
//! the number of calls it refused since the previous record), not once per call: a limited
//! caller adds one record a minute.
//!
//! Memory is bounded: at most [`MAX_IDENTITIES`] buckets. An identity enters the table with
//! its first refusal; when the table is full, buckets that have refilled (equivalent to no
//! bucket) go first, then the least recently touched.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use loupe_audit::event::{
    Action as AuditAction, Decision as AuditDecision, Detail, NewEvent, Outcome, Resource,
};
use tonic::{Code, Status};

use super::ControlPlane;
use super::admission::Call;
use super::caller::Caller;
use super::random_id;
use crate::config::Limits;

/// How often the limiting of one identity is recorded, at most.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Identities tracked at once.
pub const MAX_IDENTITIES: usize = 10_000;

/// One identity's refusals.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    touched: Instant,
    /// When the limiting was last recorded.
    recorded: Option<Instant>,
    /// Calls refused by the limiter since that record.
    limited: u64,
}

/// What the limiter decided about a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    Serve,
    /// Refuse; `record` carries the count to record when this refusal opens a window.
    Limit {
        record: Option<u64>,
        retry_after: Duration,
    },
}

/// The buckets of every identity with recent refusals.
#[derive(Debug)]
pub struct RefusalLimiter {
    burst: f64,
    per_second: f64,
    max_identities: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Whether `status` is a refusal of the caller (as opposed to the control plane's failure).
pub fn is_refusal(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument
            | Code::PermissionDenied
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::OutOfRange
            | Code::ResourceExhausted
    )
}

impl RefusalLimiter {
    pub fn new(limits: &Limits) -> RefusalLimiter {
        RefusalLimiter::with(
            limits.refusal_burst,
            limits.refusals_per_minute,
            MAX_IDENTITIES,
        )
    }

    fn with(burst: u32, per_minute: u32, max_identities: usize) -> RefusalLimiter {
        RefusalLimiter {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_minute.max(1)) / 60.0,
            max_identities: max_identities.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.touched).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.touched = now;
    }

    /// Whether `identity` may be served now.
    pub fn check(&self, identity: &str, now: Instant) -> Admission {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(bucket) = buckets.get_mut(identity) else {
            return Admission::Serve;
        };
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            return Admission::Serve;
        }
        bucket.limited += 1;
        let retry_after = Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second);
        let due = bucket
            .recorded
            .is_none_or(|at| now.saturating_duration_since(at) >= WINDOW);
        let record = due.then(|| {
            bucket.recorded = Some(now);
            std::mem::take(&mut bucket.limited)
        });
        Admission::Limit {
            record,
            retry_after,
        }
    }

    /// Takes one token from `identity` for a refused call.
    pub fn charge(&self, identity: &str, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(identity) && buckets.len() >= self.max_identities {
            self.make_room(&mut buckets, now);
        }
        let bucket = buckets.entry(identity.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            touched: now,
            recorded: None,
            limited: 0,
        });
        self.refill(bucket, now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
    }

    /// Drops buckets that refilled; if none did, the least recently touched one.
    fn make_room(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        let before = buckets.len();
        buckets.retain(|_, bucket| {
            let elapsed = now.saturating_duration_since(bucket.touched).as_secs_f64();
            bucket.tokens + elapsed * self.per_second < self.burst
        });
        if buckets.len() < before {
            return;
        }
        if let Some(oldest) = buckets
            .iter()
            .min_by_key(|(_, bucket)| bucket.touched)
            .map(|(identity, _)| identity.clone())
        {
            buckets.remove(&oldest);
        }
    }

    /// Identities tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Refuses `caller` with RESOURCE_EXHAUSTED when its bucket is empty, recording the limiting
/// once per window.
pub(crate) async fn admit(cp: &ControlPlane, caller: &Caller, call: Call) -> Result<(), Status> {
    let (record, retry_after) = match cp.refusals.check(&caller.identity.id, Instant::now()) {
        Admission::Serve => return Ok(()),
        Admission::Limit {
            record,
            retry_after,
        } => (record, retry_after),
    };
    let limits = &cp.config.limits;
    let reason = format!(
        "too many refused calls from `{}`: at most {} at once and {} a minute; retry in {} s",
        caller.identity.id,
        limits.refusal_burst,
        limits.refusals_per_minute,
        retry_after.as_secs().max(1)
    );
    if let Some(limited) = record {
        let event = NewEvent::new(
            caller.actor.clone(),
            AuditAction::CallerLimited,
            Resource {
                kind: call.resource_kind(),
                id: String::new(),
            },
            AuditDecision {
                outcome: Outcome::Deny,
                policies: Vec::new(),
                reason: reason.clone(),
            },
            random_id("req"),
        )
        .detail("call", Detail::Text(call.name().to_owned()))
        .detail("limited_since_last_record", Detail::UInt(limited))
        .detail("window_seconds", Detail::UInt(WINDOW.as_secs()));
        cp.record(event).await?;
    }
    Err(Status::resource_exhausted(reason))
}

/// Charges `caller` for `result` if it is a refusal.
pub(crate) fn charge<T>(cp: &ControlPlane, caller: &Caller, result: &Result<T, Status>) {
    if let Err(status) = result
        && is_refusal(status)
    {
        cp.refusals.charge(&caller.identity.id, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_refusals_limits_and_tokens_come_back() {
        let limiter = RefusalLimiter::with(3, 60, 100);
        let t0 = Instant::now();
        assert_eq!(limiter.check("alice", t0), Admission::Serve);
        for _ in 0..3 {
            limiter.charge("alice", t0);
        }
        let Admission::Limit { record, .. } = limiter.check("alice", t0) else {
            panic!("limited after the burst");
        };
        assert_eq!(record, Some(1), "the first limited call opens a window");
        for _ in 0..5 {
            let Admission::Limit { record, .. } = limiter.check("alice", t0) else {
                panic!("still limited");
            };
            assert_eq!(record, None, "recorded once per window");
        }
        assert_eq!(limiter.check("bob", t0), Admission::Serve);
        // One token a second comes back.
        assert_eq!(
            limiter.check("alice", t0 + Duration::from_secs(1)),
            Admission::Serve
        );
    }

    #[test]
    fn the_window_counts_the_calls_refused_meanwhile() {
        let limiter = RefusalLimiter::with(1, 1, 100);
        let t0 = Instant::now();
        limiter.charge("mallory", t0);
        assert!(matches!(
            limiter.check("mallory", t0),
            Admission::Limit {
                record: Some(1),
                ..
            }
        ));
        for _ in 0..9 {
            limiter.check("mallory", t0);
        }
        // 1 a minute: the token comes back exactly at the window; charge it again.
        let later = t0 + WINDOW;
        limiter.charge("mallory", later);
        let Admission::Limit { record, .. } = limiter.check("mallory", later) else {
            panic!("limited");
        };
        assert_eq!(record, Some(10));
    }

    #[test]
    fn the_table_is_bounded() {
        let limiter = RefusalLimiter::with(2, 60, 10);
        let t0 = Instant::now();
        for i in 0..1000 {
            limiter.charge(&format!("user-{i}"), t0 + Duration::from_millis(i));
        }
        assert!(limiter.tracked() <= 10);
        // A refilled bucket makes room before a busy one does.
        let limiter = RefusalLimiter::with(1, 60, 2);
        limiter.charge("busy", t0 + Duration::from_secs(10));
        limiter.charge("quiet", t0);
        limiter.charge("new", t0 + Duration::from_secs(10));
        assert!(matches!(
            limiter.check("busy", t0 + Duration::from_secs(10)),
            Admission::Limit { .. }
        ));
        assert_eq!(limiter.tracked(), 2);
    }
}

//! Single-use session tokens: the agent accepts each token's `jti` for one `Capture` call, so a
//! token copied off the wire, out of a log or out of a crashed control plane's memory opens
//! nothing a second time, even over the control plane's own certificate.
//!
//! Decisions, and why:
//! - **Spent on verification.** A token is spent as soon as its signature and claims verify,
//!   before the agent looks at what it asks for: a refusal after that point (a point the token
//!   does not grant, a revoked session, a bad condition, a full agent) still spends it, as an
//!   OAuth authorization code is spent by its first redemption, successful or not. A token that
//!   does not verify is not remembered, so forged tokens cannot fill the cache and a thief
//!   without the certificate named in `cnf` cannot burn a legitimate one.
//! - **Remembered until `exp` plus the leeway.** After that the token is refused as expired
//!   whoever presents it, so forgetting its `jti` reopens nothing.
//! - **Bounded, failing closed.** At most [`DEFAULT_CAPACITY`] entries unless configured; when
//!   every entry is still live, a new token is refused (`RESOURCE_EXHAUSTED`, counted as
//!   `token_replay_cache_full`) rather than a live entry forgotten, since forgetting one would
//!   make its token usable again. The control plane mints one token per capture per instance,
//!   with a 5-minute default lifetime: 8,192 entries allow 27 captures a second for ever at that
//!   lifetime, and 4.5 a second at the agent's 30-minute ceiling — far beyond what people
//!   opening captures do, while the bound keeps a runaway or hostile minter from growing the
//!   agent's memory.
//! - **`jti` at most [`MAX_JTI_BYTES`].** The control plane's are 24 bytes; the cap makes the
//!   bound on entries a bound on memory (under 2 MiB at the default capacity).
//! - **In memory only.** A restarted agent starts with an empty cache, as Teleport's and most
//!   JWT replay caches do; replaying across a restart still needs the token *and* the private
//!   key of the certificate it is bound to.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Tokens remembered at once unless the agent is configured otherwise.
pub const DEFAULT_CAPACITY: usize = 8_192;

/// Longest `jti` the agent accepts, in bytes.
pub const MAX_JTI_BYTES: usize = 128;

/// Why a token cannot be spent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    #[error(
        "session token `{jti}` was already used for a capture; each token is good for one Capture \
         call (the control plane mints a fresh one per call)"
    )]
    AlreadyUsed { jti: String },
    #[error(
        "this agent remembers {capacity} unexpired session tokens, its maximum, and refuses new \
         ones rather than forget a live one; retry when the oldest expire"
    )]
    Full { capacity: usize },
    #[error("claim `jti` is {len} bytes; at most {MAX_JTI_BYTES} are accepted")]
    JtiTooLong { len: usize },
}

impl ReplayError {
    /// The label the refusal is counted under in `Describe`'s denials.
    pub fn label(&self) -> &'static str {
        match self {
            ReplayError::AlreadyUsed { .. } => "token_already_used",
            ReplayError::Full { .. } => "token_replay_cache_full",
            ReplayError::JtiTooLong { .. } => "token_claims",
        }
    }
}

/// The `jti`s of tokens already spent, each with the Unix second after which it may be
/// forgotten.
pub(crate) struct ReplayCache {
    capacity: usize,
    spent: Mutex<HashMap<Box<str>, u64>>,
}

impl ReplayCache {
    pub fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            capacity: capacity.max(1),
            spent: Mutex::new(HashMap::new()),
        }
    }

    /// Spends the token `jti`, remembered until Unix second `forget_after`. `now` is the
    /// current Unix second.
    pub fn spend(&self, jti: &str, forget_after: u64, now: u64) -> Result<(), ReplayError> {
        if jti.len() > MAX_JTI_BYTES {
            return Err(ReplayError::JtiTooLong { len: jti.len() });
        }
        // A single map operation per critical section: a poisoned map is still whole.
        let mut spent = self.spent.lock().unwrap_or_else(PoisonError::into_inner);
        if spent.get(jti).is_some_and(|until| *until >= now) {
            return Err(ReplayError::AlreadyUsed {
                jti: jti.to_owned(),
            });
        }
        if spent.len() >= self.capacity {
            spent.retain(|_, until| *until >= now);
        }
        if spent.len() >= self.capacity {
            return Err(ReplayError::Full {
                capacity: self.capacity,
            });
        }
        spent.insert(Box::from(jti), forget_after);
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.spent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn a_token_is_spent_once() {
        let cache = ReplayCache::new(4);
        assert_eq!(cache.spend("a", NOW + 60, NOW), Ok(()));
        assert_eq!(
            cache.spend("a", NOW + 60, NOW + 30),
            Err(ReplayError::AlreadyUsed { jti: "a".into() })
        );
        assert_eq!(cache.spend("b", NOW + 60, NOW + 30), Ok(()));
    }

    #[test]
    fn a_full_cache_refuses_until_entries_expire() {
        let cache = ReplayCache::new(2);
        cache.spend("a", NOW + 10, NOW).expect("room");
        cache.spend("b", NOW + 20, NOW).expect("room");
        assert_eq!(
            cache.spend("c", NOW + 30, NOW + 10),
            Err(ReplayError::Full { capacity: 2 }),
            "`a` is live through its last second"
        );
        // `a` may be forgotten after its second; `b` stays remembered.
        assert_eq!(cache.spend("c", NOW + 30, NOW + 11), Ok(()));
        assert_eq!(cache.len(), 2);
        assert_eq!(
            cache.spend("b", NOW + 20, NOW + 11),
            Err(ReplayError::AlreadyUsed { jti: "b".into() })
        );
    }

    #[test]
    fn an_expired_entry_does_not_count_as_used() {
        // Its token is refused as expired before it gets here; the cache just has no say.
        let cache = ReplayCache::new(2);
        cache.spend("a", NOW + 10, NOW).expect("room");
        assert_eq!(cache.spend("a", NOW + 100, NOW + 11), Ok(()));
    }

    #[test]
    fn long_jtis_are_refused_and_not_stored() {
        let cache = ReplayCache::new(2);
        let long = "j".repeat(MAX_JTI_BYTES + 1);
        assert_eq!(
            cache.spend(&long, NOW + 10, NOW),
            Err(ReplayError::JtiTooLong {
                len: MAX_JTI_BYTES + 1
            })
        );
        assert_eq!(cache.len(), 0);
        assert_eq!(
            cache.spend(&"j".repeat(MAX_JTI_BYTES), NOW + 10, NOW),
            Ok(())
        );
    }
}

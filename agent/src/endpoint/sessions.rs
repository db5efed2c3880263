//! What the endpoint remembers between calls: revoked sessions, spent tokens, the captures it
//! is serving, the verification policy (whose keys reload), and its counters.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use loupe_trust::identity::IdentityRules;
use loupe_trust::token::{KeySet, VerificationPolicy, unix_now};
use tokio::sync::watch;

use crate::capture::EndReason;
use crate::capture::engine::Engine;
use crate::endpoint::replay::{ReplayCache, ReplayError};

/// Counters reported by `Describe` and in logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentCounters {
    pub captures_active: u64,
    pub captures_started: u64,
    pub snapshots_sent: u64,
    pub snapshots_dropped: u64,
    /// Refusals by reason label.
    pub denied: BTreeMap<String, u64>,
}

/// Why the endpoint takes no further capture now: the agent's own limit or the session's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdmitError {
    #[error("this agent already serves {serving} captures, its maximum; end one first")]
    AgentFull { serving: usize },
    #[error(
        "session {session_id} already has {serving} captures on this agent, the maximum per session"
    )]
    SessionFull { session_id: String, serving: usize },
}

/// A capture being served: its id in the engine and its session.
struct Serving {
    session_id: String,
}

pub(crate) struct EndpointState {
    pub service: String,
    pub instance: String,
    /// How this agent observes its process, as `Describe` and registration announce it.
    pub mode: loupe_proto::v1::AgentMode,
    pub control_plane: String,
    /// How the caller is identified (strict SVID rules in the control plane's trust domain).
    pub identity: IdentityRules,
    pub policy: ArcSwap<VerificationPolicy>,
    pub max_captures: usize,
    pub max_captures_per_session: usize,
    pub max_token_lifetime: Duration,
    pub shutdown: watch::Receiver<bool>,
    /// Session id → Unix second until which it stays revoked.
    revoked: Mutex<HashMap<String, u64>>,
    /// The `jti`s of tokens already used.
    spent_tokens: ReplayCache,
    /// Capture id → what it serves.
    serving: Mutex<HashMap<String, Serving>>,
    captures_started: AtomicU64,
    snapshots_sent: AtomicU64,
    snapshots_dropped: AtomicU64,
    denied: Mutex<BTreeMap<String, u64>>,
    /// Bumped at every revocation, so streams notice theirs without polling.
    revocations: watch::Sender<u64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a single map operation; a poisoned map is still whole.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl EndpointState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        service: String,
        instance: String,
        control_plane: String,
        identity: IdentityRules,
        policy: ArcSwap<VerificationPolicy>,
        max_captures: usize,
        max_captures_per_session: usize,
        max_token_lifetime: Duration,
        replay_cache_capacity: usize,
        shutdown: watch::Receiver<bool>,
    ) -> EndpointState {
        EndpointState {
            service,
            instance,
            mode: loupe_proto::v1::AgentMode::InProcess,
            control_plane,
            identity,
            policy,
            max_captures,
            max_captures_per_session,
            max_token_lifetime,
            shutdown,
            revoked: Mutex::new(HashMap::new()),
            spent_tokens: ReplayCache::new(replay_cache_capacity),
            serving: Mutex::new(HashMap::new()),
            captures_started: AtomicU64::new(0),
            snapshots_sent: AtomicU64::new(0),
            snapshots_dropped: AtomicU64::new(0),
            denied: Mutex::new(BTreeMap::new()),
            revocations: watch::Sender::new(0),
        }
    }

    pub fn deny(&self, label: &str) {
        *lock(&self.denied).entry(label.to_owned()).or_insert(0) += 1;
    }

    /// Revokes `session_id` until `until` (Unix seconds) and ends its captures.
    pub fn revoke(&self, session_id: &str, until: u64) -> usize {
        let mut revoked = lock(&self.revoked);
        let now = unix_now();
        revoked.retain(|_, until| *until > now);
        let entry = revoked.entry(session_id.to_owned()).or_insert(0);
        *entry = (*entry).max(until);
        drop(revoked);
        self.revocations.send_modify(|n| *n = n.wrapping_add(1));
        Engine::global().disarm_session(session_id, EndReason::Disarmed)
    }

    /// Notified at every revocation (of any session).
    pub fn revocations(&self) -> watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    pub fn is_revoked(&self, session_id: &str) -> bool {
        lock(&self.revoked)
            .get(session_id)
            .is_some_and(|until| *until > unix_now())
    }

    /// Spends a verified token: its `jti` opens no other capture until `exp` plus the leeway.
    pub fn spend_token(&self, jti: &str, exp: u64, leeway: Duration) -> Result<(), ReplayError> {
        self.spent_tokens
            .spend(jti, exp.saturating_add(leeway.as_secs()), unix_now())
    }

    /// Reserves a slot for a new capture of `session_id`, or says which limit is reached.
    pub fn admit(&self, capture_id: &str, session_id: &str) -> Result<(), AdmitError> {
        let mut serving = lock(&self.serving);
        if serving.len() >= self.max_captures {
            return Err(AdmitError::AgentFull {
                serving: serving.len(),
            });
        }
        let of_session = serving
            .values()
            .filter(|s| s.session_id == session_id)
            .count();
        if of_session >= self.max_captures_per_session {
            return Err(AdmitError::SessionFull {
                session_id: session_id.to_owned(),
                serving: of_session,
            });
        }
        serving.insert(
            capture_id.to_owned(),
            Serving {
                session_id: session_id.to_owned(),
            },
        );
        self.captures_started.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub fn finish(&self, capture_id: &str, sent: u64, dropped: u64) {
        lock(&self.serving).remove(capture_id);
        self.snapshots_sent.fetch_add(sent, Ordering::Relaxed);
        self.snapshots_dropped.fetch_add(dropped, Ordering::Relaxed);
    }

    /// Ends every capture this endpoint serves (shutdown).
    pub fn end_all_captures(&self) {
        let ids: Vec<String> = lock(&self.serving).keys().cloned().collect();
        for id in ids {
            Engine::global().disarm(&id, EndReason::Disarmed);
        }
    }

    pub fn counters(&self) -> AgentCounters {
        let active_ids: Vec<String> = lock(&self.serving).keys().cloned().collect();
        // Snapshots of captures still running count too.
        let (mut sent, mut dropped) = (0, 0);
        for status in Engine::global().captures() {
            if active_ids.contains(&status.capture_id) {
                sent += status.counters.sent;
                dropped += status.counters.dropped_queue_full
                    + status.counters.lost_at_source
                    + status.counters.skipped_cpu_budget
                    + status.counters.skipped_rate;
            }
        }
        AgentCounters {
            captures_active: active_ids.len() as u64,
            captures_started: self.captures_started.load(Ordering::Relaxed),
            snapshots_sent: self.snapshots_sent.load(Ordering::Relaxed) + sent,
            snapshots_dropped: self.snapshots_dropped.load(Ordering::Relaxed) + dropped,
            denied: lock(&self.denied).clone(),
        }
    }

    /// Re-reads the token key set if its file changed; a bad file keeps the old keys.
    pub fn reload_keys(&self, path: &Path) {
        let Ok(json) = std::fs::read(path) else {
            tracing::warn!(path = %path.display(), "loupe agent: cannot read token keys; keeping the old set");
            return;
        };
        match KeySet::from_jwks_json(&json) {
            Ok(keys) => {
                self.install_keys(keys, &path.display().to_string());
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "loupe agent: new token keys rejected; keeping the old set");
            }
        }
    }

    /// Makes `keys` the verification keys, unless they are the ones in use. `source` names
    /// where they came from, for the log. Returns whether anything changed.
    pub fn install_keys(&self, keys: KeySet, source: &str) -> bool {
        let current = self.policy.load();
        if keys.to_jwks_json() == current.keys.to_jwks_json() {
            return false;
        }
        let mut policy = VerificationPolicy::clone(&current);
        policy.keys = keys;
        self.policy.store(Arc::new(policy));
        tracing::info!(source, "loupe agent: reloaded token keys");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(max_captures: usize, per_session: usize) -> EndpointState {
        let policy = VerificationPolicy {
            keys: KeySet::new(),
            issuer: "spiffe://loupe.test/control-plane".into(),
            audience: "loupe-agent/checkout".into(),
            leeway: Duration::from_secs(1),
            max_lifetime: Duration::from_secs(60),
        };
        let (_, shutdown) = watch::channel(false);
        EndpointState::new(
            "checkout".into(),
            "i-1".into(),
            "spiffe://loupe.test/control-plane".into(),
            IdentityRules::new("loupe.test").expect("trust domain"),
            ArcSwap::from_pointee(policy),
            max_captures,
            per_session,
            Duration::from_secs(60),
            16,
            shutdown,
        )
    }

    #[test]
    fn admission_says_which_limit_is_reached() {
        let state = state(3, 2);
        assert_eq!(state.admit("c1", "s1"), Ok(()));
        assert_eq!(state.admit("c2", "s1"), Ok(()));
        assert_eq!(
            state.admit("c3", "s1"),
            Err(AdmitError::SessionFull {
                session_id: "s1".into(),
                serving: 2,
            })
        );
        assert_eq!(state.admit("c3", "s2"), Ok(()));
        assert_eq!(
            state.admit("c4", "s3"),
            Err(AdmitError::AgentFull { serving: 3 })
        );
        state.finish("c1", 0, 0);
        assert_eq!(state.admit("c4", "s3"), Ok(()));
    }
}

//! The session table: every session as committed to the audit database, in memory, and the
//! one way a session changes ([`commit`]): the decision's record and the session's new state
//! go into one transaction, and only once it is durable does the table follow (the log applies
//! the change, see [`StateObserver`]). The table is never changed ahead of a commit, so what a
//! call reads here was recorded.
//!
//! It also holds what the transitions of existing sessions need: one lock that serializes them
//! (two approvers, or an approval racing a revoke, cannot both win), and the end of each
//! session as something live captures wait on.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use loupe_audit::event::{Action as AuditAction, NewEvent, Resource, ResourceKind};
use tokio::sync::watch;
use tonic::Status;

use super::ControlPlane;
use super::answers::{deny, missing};
use super::caller::Caller;
use super::fanout::current;
use crate::audit::{StateChange, StateObserver};
use crate::session::SessionState;
use crate::state::StoredSession;

/// Sessions in memory: the committed state, kept current by the audit log (see
/// [`StateObserver`]), never changed ahead of a commit.
pub struct SessionTable {
    sessions: Mutex<HashMap<String, StoredSession>>,
    /// Live captures wait on these to learn that their session ended.
    ends: Mutex<HashMap<String, watch::Sender<Option<SessionState>>>>,
    transitions: tokio::sync::Mutex<()>,
}

impl SessionTable {
    pub fn new(loaded: Vec<StoredSession>) -> SessionTable {
        SessionTable {
            sessions: Mutex::new(
                loaded
                    .into_iter()
                    .map(|s| (s.session.id.clone(), s))
                    .collect(),
            ),
            ends: Mutex::new(HashMap::new()),
            transitions: tokio::sync::Mutex::new(()),
        }
    }

    pub fn get(&self, id: &str) -> Option<StoredSession> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Takes `stored` unless the table already holds a later version of it (a replica learns
    /// of other replicas' changes as it catches up, in no guaranteed order with its own).
    /// Whether it was taken.
    fn put(&self, stored: StoredSession) -> bool {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = sessions.get(&stored.session.id)
            && held.version > stored.version
        {
            return false;
        }
        sessions.insert(stored.session.id.clone(), stored);
        true
    }

    /// Every session, oldest request first.
    pub(crate) fn all(&self) -> Vec<StoredSession> {
        let mut all: Vec<StoredSession> = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| {
            (a.session.requested_at, &a.session.id).cmp(&(b.session.requested_at, &b.session.id))
        });
        all
    }

    /// The right to change an existing session, one transition at a time. Read the session
    /// after taking it: what was read before may have changed meanwhile.
    pub(crate) async fn one_transition(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.transitions.lock().await
    }

    /// Tells when session `id` ends (the terminal state), for live captures — at once if it
    /// has ended already (a capture may subscribe after the end was taken into the table).
    pub fn subscribe(&self, id: &str) -> watch::Receiver<Option<SessionState>> {
        let mut ends = self.ends.lock().unwrap_or_else(PoisonError::into_inner);
        ends.retain(|_, sender| sender.receiver_count() > 0);
        // Read under the `ends` lock: an end taken in after this read is notified to the
        // channel made here, since notifying takes that lock.
        let ended = self
            .get(id)
            .map(|s| s.session.state)
            .filter(|state| state.is_terminal());
        ends.entry(id.to_owned())
            .or_insert_with(|| watch::channel(ended).0)
            .subscribe()
    }

    fn notify_end(&self, id: &str, state: SessionState) {
        if let Some(sender) = self
            .ends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
        {
            sender.send_replace(Some(state));
        }
    }
}

impl StateObserver for SessionTable {
    fn applied(&self, change: &StateChange) {
        match change {
            StateChange::PutSession(row) => match StoredSession::from_row(row) {
                Ok(stored) => {
                    let (id, state) = (stored.session.id.clone(), stored.session.state);
                    if self.put(stored) && state.is_terminal() {
                        self.notify_end(&id, state);
                    }
                }
                // Written by `commit` from a value that serialized; cannot be unreadable.
                Err(error) => tracing::error!(%error, "a committed session is unreadable"),
            },
        }
    }
}

/// Records `events` and stores `next` in one transaction; the table in memory (and the live
/// captures waiting for the session's end) follow once it is durable. On `Err`, nothing
/// happened.
pub(crate) async fn commit(
    cp: &ControlPlane,
    events: Vec<NewEvent>,
    next: &StoredSession,
) -> Result<(), Status> {
    let change = next.to_change().map_err(|e| {
        Status::internal(format!("session {} cannot be stored: {e}", next.session.id))
    })?;
    cp.record_with_state(events, change).await
}

/// The session `id`, or the answer for a missing one.
pub(crate) fn find(cp: &ControlPlane, id: &str) -> Result<StoredSession, Status> {
    cp.sessions.get(id.trim()).ok_or_else(|| missing(id))
}

/// The session `id` for a call by `caller`, as the database holds it now (see
/// [`super::fanout::current`]: replicas sharing a database never act on a stale view); a
/// refusal for an id that names no session is recorded as `action` denied before it is
/// answered, like every other refusal. The id was checked against its bound on entry, so what
/// is recorded is bounded.
pub(crate) async fn find_or_record_refusal(
    cp: &ControlPlane,
    caller: &Caller,
    id: &str,
    action: AuditAction,
    request_id: &str,
) -> Result<StoredSession, Status> {
    if let Some(stored) = current(cp, id).await? {
        return Ok(stored);
    }
    let event = NewEvent::new(
        caller.actor.clone(),
        action,
        Resource {
            kind: ResourceKind::Session,
            id: id.trim().to_owned(),
        },
        deny(Vec::new(), "no such session"),
        request_id,
    );
    cp.record(event).await?;
    Err(missing(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::fixtures::{NOW, session};

    fn applied(table: &SessionTable, stored: &StoredSession) {
        table.applied(&stored.to_change().expect("a storable session"));
    }

    #[test]
    fn a_committed_change_is_what_the_table_shows_in_request_order() {
        let mut later = session("bob", "checkout", &["checkout.total"], 0);
        later.session.requested_at = NOW + 1;
        let earlier = session("alice", "checkout", &["checkout.total"], 0);
        let table = SessionTable::new(vec![later.clone()]);
        assert!(table.get(&earlier.session.id).is_none());
        applied(&table, &earlier);
        // What the table shows is the stored version: the first.
        let committed = StoredSession {
            version: 1,
            ..earlier.clone()
        };
        assert_eq!(table.get(&earlier.session.id), Some(committed));
        let order: Vec<String> = table.all().into_iter().map(|s| s.session.id).collect();
        assert_eq!(order, vec![earlier.session.id, later.session.id]);
    }

    #[test]
    fn a_version_learnt_late_never_replaces_a_later_one() {
        let stored = session("alice", "checkout", &["checkout.total"], 0);
        let table = SessionTable::new(vec![]);
        let mut later = stored.clone();
        later.version = 1;
        later
            .session
            .revoke("revoked by carol", NOW)
            .expect("revoke");
        applied(&table, &later);
        applied(&table, &stored);
        assert_eq!(
            table.get(&stored.session.id).map(|s| s.session.state),
            Some(SessionState::Revoked)
        );
    }

    #[test]
    fn a_capture_that_subscribes_after_its_session_ended_learns_it_at_once() {
        let mut stored = session("alice", "checkout", &["checkout.total"], 0);
        stored
            .session
            .revoke("revoked by carol", NOW)
            .expect("revoke");
        let table = SessionTable::new(vec![stored.clone()]);
        assert_eq!(
            *table.subscribe(&stored.session.id).borrow(),
            Some(SessionState::Revoked)
        );
        let live = session("bob", "checkout", &["checkout.total"], 0);
        let table = SessionTable::new(vec![live.clone()]);
        assert_eq!(*table.subscribe(&live.session.id).borrow(), None);
    }

    #[test]
    fn live_captures_learn_of_their_session_s_end_and_only_of_its_end() {
        let mut stored = session("alice", "checkout", &["checkout.total"], 0);
        let table = SessionTable::new(vec![stored.clone()]);
        let ends = table.subscribe(&stored.session.id);
        stored.approval_points.push("checkout.total".into());
        applied(&table, &stored);
        assert_eq!(*ends.borrow(), None, "a change that ends nothing");
        stored
            .session
            .revoke("revoked by carol", NOW)
            .expect("revoke");
        applied(&table, &stored);
        assert_eq!(*ends.borrow(), Some(SessionState::Revoked));
    }
}

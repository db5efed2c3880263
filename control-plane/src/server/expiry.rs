//! Session expiry: every second, each session whose time has come (its ttl, or its wait for
//! approval) is recorded as expired, with the control plane as actor, and stored so. A session
//! past its expiry is treated as expired at once everywhere (`Session::state_at`), whether or
//! not the sweep has recorded it yet; a sweep that cannot record an expiry tries again on its
//! next tick. Replicas on one database each sweep every session; the version check records
//! each expiry once, and the others' attempts are refused (`ABORTED`) and recorded nowhere.

use std::sync::Arc;
use std::time::Duration;

use loupe_audit::event::{Action as AuditAction, NewEvent, Resource, ResourceKind};

use super::answers::allow;
use super::table::commit;
use super::{ControlPlane, Every, now, random_id};
use crate::session::{Session, SessionState};
use crate::state::StoredSession;

/// Records the expiry of every session whose time has come, every second.
pub(crate) async fn expire_sessions(cp: Arc<ControlPlane>) {
    let mut every = Every::new(Duration::from_secs(1), cp.shutdown.clone());
    while every.tick().await {
        let now = now();
        for stored in due(cp.sessions.all(), now) {
            expire(&cp, &stored.session.id, now).await;
        }
    }
}

/// The sessions not yet recorded as ended whose time has come at `now`.
fn due(sessions: Vec<StoredSession>, now: u64) -> Vec<StoredSession> {
    sessions
        .into_iter()
        .filter(|s| {
            !s.session.state.is_terminal() && s.session.state_at(now) == SessionState::Expired
        })
        .collect()
}

/// Records the expiry of session `id`, unless a transition ended it first.
async fn expire(cp: &ControlPlane, id: &str, now: u64) {
    let _one_transition = cp.sessions.one_transition().await;
    let Some(mut next) = cp.sessions.get(id) else {
        return;
    };
    if !next.session.expire_if_due(now) {
        return;
    }
    let event = expiry_event(cp, &next.session);
    match commit(cp, vec![event], &next).await {
        // Another replica's sweeper recorded it first (the version check let one through);
        // the stored session, ended, is in the table now.
        Err(status) if status.code() == tonic::Code::Aborted => {
            tracing::debug!(session = %next.session.id, "another replica recorded this expiry")
        }
        // Still treated as expired everywhere (state_at); recorded on a later tick.
        Err(status) => {
            tracing::error!(session = %next.session.id, error = %status.message(), "cannot record an expiry")
        }
        Ok(()) => {
            tracing::info!(session = %next.session.id, "session expired")
        }
    }
}

/// The record of `session`'s expiry, the control plane its actor.
fn expiry_event(cp: &ControlPlane, session: &Session) -> NewEvent {
    NewEvent::new(
        cp.own_actor(),
        AuditAction::SessionExpired,
        Resource {
            kind: ResourceKind::Session,
            id: session.id.clone(),
        },
        allow(Vec::new(), session.end_reason.clone().unwrap_or_default()),
        random_id("req"),
    )
    .session(session.id.clone())
    .service(session.service.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::fixtures::{NOW, session};

    #[test]
    fn due_are_the_sessions_past_their_time_not_yet_recorded_as_ended() {
        let active = session("alice", "checkout", &["checkout.total"], 0);
        let pending = session("bob", "payments", &["payments.charge"], 1);
        let mut closed = session("carol", "checkout", &["checkout.total"], 0);
        closed.session.close("closed by carol", NOW).expect("close");
        let all = vec![active.clone(), pending.clone(), closed];

        assert!(due(all.clone(), NOW).is_empty(), "nothing is due yet");
        let ids = |due: Vec<StoredSession>| -> Vec<String> {
            due.into_iter().map(|s| s.session.id).collect()
        };
        assert_eq!(
            ids(due(all.clone(), pending.session.expires_at)),
            vec![pending.session.id.clone()],
            "the approval wait ends first"
        );
        assert_eq!(
            ids(due(all, active.session.expires_at)).len(),
            2,
            "a closed session never expires"
        );
    }
}

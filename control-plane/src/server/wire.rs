//! The wire form of a session, as every session call answers it: the state the session is
//! really in at the time of asking (a session past its expiry is expired, recorded or not),
//! why and when it ended, and — while it waits — who could still approve it.

use loupe_proto::v1 as pb;

use super::access::approvers;
use crate::policy::PolicyBundle;
use crate::session::SessionState;
use crate::state::StoredSession;

/// The wire form of a session.
pub(crate) fn session_info(stored: &StoredSession, now: u64) -> pb::SessionInfo {
    let session = &stored.session;
    let state = match session.state_at(now) {
        SessionState::Pending => pb::SessionState::Pending,
        SessionState::Active => pb::SessionState::Active,
        SessionState::Closed => pb::SessionState::Closed,
        SessionState::Expired => pb::SessionState::Expired,
        SessionState::Revoked => pb::SessionState::Revoked,
        SessionState::Denied => pb::SessionState::Denied,
    };
    let unix = |t: u64| i64::try_from(t).unwrap_or(i64::MAX);
    let (ended, end_reason) = match (session.ended_at, &session.end_reason) {
        (Some(at), Some(reason)) => (unix(at), reason.clone()),
        _ if state == pb::SessionState::Expired => (
            unix(session.expires_at),
            if session.activated_at.is_some() {
                "ttl reached".to_owned()
            } else {
                "not approved in time".to_owned()
            },
        ),
        _ => (0, String::new()),
    };
    pb::SessionInfo {
        id: session.id.clone(),
        requester: session.requester.clone(),
        service: session.service.clone(),
        points: session.points.clone(),
        reason: session.reason.clone(),
        ticket: session.ticket.clone().unwrap_or_default(),
        ttl_seconds: u32::try_from(session.ttl_seconds).unwrap_or(u32::MAX),
        state: state as i32,
        approvals_required: session.approvals_required,
        approvals: session
            .approvals
            .iter()
            .map(|a| pb::SessionApproval {
                approver: a.approver.clone(),
                at_unix: unix(a.at),
            })
            .collect(),
        awaiting_approval_from: if state == pb::SessionState::Pending {
            stored.awaiting_approval_from.clone()
        } else {
            Vec::new()
        },
        requested_unix: unix(session.requested_at),
        activated_unix: session.activated_at.map_or(0, unix),
        expires_unix: unix(session.expires_at),
        ended_unix: ended,
        end_reason,
        policy_ids: stored.policy_ids.clone(),
        policy_version: stored.policy_version.clone(),
    }
}

/// The answer to a call on one session: the session, and who could approve it.
pub(crate) fn response(
    policy: &PolicyBundle,
    stored: &StoredSession,
    now: u64,
) -> pb::SessionResponse {
    pb::SessionResponse {
        session: Some(session_info(stored, now)),
        approvers: approvers(policy, stored, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::fixtures::{NOW, session, user};

    #[test]
    fn an_unrecorded_expiry_reads_as_expired_with_why() {
        let active = session("alice", "checkout", &["checkout.total"], 0);
        let at = active.session.expires_at;
        let info = session_info(&active, at);
        assert_eq!(info.state, pb::SessionState::Expired as i32);
        assert_eq!(info.end_reason, "ttl reached");
        assert_eq!(info.ended_unix, i64::try_from(at).expect("time"));

        let pending = session("alice", "payments", &["payments.charge"], 1);
        let info = session_info(&pending, pending.session.expires_at);
        assert_eq!(info.end_reason, "not approved in time");
        assert!(
            info.awaiting_approval_from.is_empty(),
            "nobody is awaited once it expired"
        );
    }

    #[test]
    fn a_pending_session_names_whom_it_waits_for_and_an_ended_one_why() {
        let pending = session("alice", "payments", &["payments.charge"], 1);
        let info = session_info(&pending, NOW);
        assert_eq!(info.state, pb::SessionState::Pending as i32);
        assert_eq!(info.awaiting_approval_from, vec!["security".to_owned()]);
        assert_eq!((info.ended_unix, info.end_reason.as_str()), (0, ""));

        let mut closed = session("alice", "checkout", &["checkout.total"], 0);
        closed
            .session
            .close(&format!("closed by {}", user("alice")), NOW + 5)
            .expect("close");
        let info = session_info(&closed, NOW + 10);
        assert_eq!(info.state, pb::SessionState::Closed as i32);
        assert_eq!(info.ended_unix, i64::try_from(NOW + 5).expect("time"));
        assert!(info.end_reason.starts_with("closed by"));
    }
}

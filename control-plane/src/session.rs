//! Inspection sessions and their lifecycle: who asked to look at which points of which service,
//! why, for how long, who approved, and what state the session is in.
//!
//! ```text
//! pending ──approve (enough approvals)──▶ active ──close──▶ closed
//!    │                                       ├──expire──▶ expired
//!    ├──deny──▶ denied                       └──revoke──▶ revoked
//!    ├──close (by the requester)──▶ closed
//!    ├──expire (no approval in time)──▶ expired
//!    └──revoke──▶ revoked
//! ```
//!
//! This module owns the rules only; it performs no I/O. The control plane audits each
//! transition before applying it, and stores the result.
//!
//! Decisions:
//! - The ttl runs from activation, not from the request, so time spent waiting for an approver
//!   does not eat the engineer's window. A pending session expires on its own after
//!   `pending_timeout` so a forgotten request cannot be approved days later.
//! - Approvals are by distinct users, never the requester; a duplicate or self-approval is an
//!   error, not a silent no-op, so the approver learns it did not count.
//! - Every token minted for a session expires no later than the session.

use std::fmt;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Waiting for approvals.
    Pending,
    /// Captures may run until `expires_at`.
    Active,
    /// Ended by its requester (or an operator) before expiry.
    Closed,
    /// Reached its expiry, or was never approved in time.
    Expired,
    /// Ended by an administrator.
    Revoked,
    /// Refused by an approver.
    Denied,
}

impl SessionState {
    /// No transition leaves a terminal state.
    pub fn is_terminal(self) -> bool {
        !matches!(self, SessionState::Pending | SessionState::Active)
    }

    /// The state's name as stored and shown (`pending`, `active`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Pending => "pending",
            SessionState::Active => "active",
            SessionState::Closed => "closed",
            SessionState::Expired => "expired",
            SessionState::Revoked => "revoked",
            SessionState::Denied => "denied",
        }
    }

    /// The state named `name`, as stored by [`SessionState::as_str`].
    pub fn parse(name: &str) -> Option<SessionState> {
        Some(match name {
            "pending" => SessionState::Pending,
            "active" => SessionState::Active,
            "closed" => SessionState::Closed,
            "expired" => SessionState::Expired,
            "revoked" => SessionState::Revoked,
            "denied" => SessionState::Denied,
            _ => return None,
        })
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One approval of a session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Approval {
    /// The approver's identity.
    pub approver: String,
    /// Unix seconds.
    pub at: u64,
}

/// A session and everything its decisions rest on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    pub id: String,
    /// The engineer's identity.
    pub requester: String,
    pub service: String,
    /// Exact point names granted (namespace patterns are expanded before a session exists).
    pub points: Vec<String>,
    pub reason: String,
    pub ticket: Option<String>,
    /// Granted time to live, counted from activation, in seconds.
    pub ttl_seconds: u64,
    /// Approvals still needed when the session was requested.
    pub approvals_required: u32,
    pub approvals: Vec<Approval>,
    pub state: SessionState,
    /// Unix seconds.
    pub requested_at: u64,
    pub activated_at: Option<u64>,
    /// When an active session ends; when a pending one stops waiting for approval.
    pub expires_at: u64,
    /// When the session reached a terminal state, and why.
    pub ended_at: Option<u64>,
    pub end_reason: Option<String>,
}

/// Why a transition was refused. Each says what would have to be different.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransitionError {
    #[error("session {id} is {state}; it can no longer be {action}")]
    Ended {
        id: String,
        state: SessionState,
        action: &'static str,
    },
    #[error("session {id} is {state}, not pending: there is nothing to {action}")]
    NotPending {
        id: String,
        state: SessionState,
        action: &'static str,
    },
    #[error("{approver} requested session {id} and cannot approve it; another approver must")]
    SelfApproval { id: String, approver: String },
    #[error("{approver} already approved session {id}; another approver must")]
    AlreadyApproved { id: String, approver: String },
    #[error("session {id} expired at {expired_at}")]
    Expired { id: String, expired_at: u64 },
}

/// What a new session asks for, after policy allowed it.
#[derive(Debug, Clone)]
pub struct SessionRequest {
    pub id: String,
    pub requester: String,
    pub service: String,
    pub points: Vec<String>,
    pub reason: String,
    pub ticket: Option<String>,
    pub ttl_seconds: u64,
    pub approvals_required: u32,
}

impl Session {
    /// A new session: active at once when no approval is required, else pending until
    /// `now + pending_timeout_seconds`.
    pub fn open(request: SessionRequest, now: u64, pending_timeout_seconds: u64) -> Session {
        let needs_approval = request.approvals_required > 0;
        Session {
            id: request.id,
            requester: request.requester,
            service: request.service,
            points: request.points,
            reason: request.reason,
            ticket: request.ticket,
            ttl_seconds: request.ttl_seconds,
            approvals_required: request.approvals_required,
            approvals: Vec::new(),
            state: if needs_approval {
                SessionState::Pending
            } else {
                SessionState::Active
            },
            requested_at: now,
            activated_at: (!needs_approval).then_some(now),
            expires_at: if needs_approval {
                now.saturating_add(pending_timeout_seconds)
            } else {
                now.saturating_add(request.ttl_seconds)
            },
            ended_at: None,
            end_reason: None,
        }
    }

    /// The state the session is really in at `now`: a pending or active session past its
    /// expiry has expired, whether or not anyone has recorded it yet.
    pub fn state_at(&self, now: u64) -> SessionState {
        if !self.state.is_terminal() && now >= self.expires_at {
            SessionState::Expired
        } else {
            self.state
        }
    }

    /// Whether captures may run at `now`.
    pub fn is_active_at(&self, now: u64) -> bool {
        self.state_at(now) == SessionState::Active
    }

    /// Records an approval; activates the session when it was the last one needed. Returns
    /// whether the session became active.
    pub fn approve(&mut self, approver: &str, now: u64) -> Result<bool, TransitionError> {
        self.add_approval(approver, now)?;
        if self.approvals.len() as u64 >= u64::from(self.approvals_required) {
            self.activate(now);
            return Ok(true);
        }
        Ok(false)
    }

    /// Records an approval without deciding whether it was enough: for a caller that asks the
    /// policy instead of counting (see [`Session::activate`]).
    pub fn add_approval(&mut self, approver: &str, now: u64) -> Result<(), TransitionError> {
        self.require_pending(now, "approved", "approve")?;
        if approver == self.requester {
            return Err(TransitionError::SelfApproval {
                id: self.id.clone(),
                approver: approver.to_owned(),
            });
        }
        if self.approvals.iter().any(|a| a.approver == approver) {
            return Err(TransitionError::AlreadyApproved {
                id: self.id.clone(),
                approver: approver.to_owned(),
            });
        }
        self.approvals.push(Approval {
            approver: approver.to_owned(),
            at: now,
        });
        Ok(())
    }

    /// Makes a pending session active from `now`, its ttl starting then.
    pub fn activate(&mut self, now: u64) {
        if self.state == SessionState::Pending {
            self.state = SessionState::Active;
            self.activated_at = Some(now);
            self.expires_at = now.saturating_add(self.ttl_seconds);
        }
    }

    /// Refuses a pending session.
    pub fn deny(&mut self, reason: &str, now: u64) -> Result<(), TransitionError> {
        self.require_pending(now, "denied", "deny")?;
        self.end(SessionState::Denied, reason, now);
        Ok(())
    }

    /// Ends a pending or active session early.
    pub fn close(&mut self, reason: &str, now: u64) -> Result<(), TransitionError> {
        self.require_live(now, "closed")?;
        self.end(SessionState::Closed, reason, now);
        Ok(())
    }

    /// Ends a pending or active session by an administrator's decision.
    pub fn revoke(&mut self, reason: &str, now: u64) -> Result<(), TransitionError> {
        self.require_live(now, "revoked")?;
        self.end(SessionState::Revoked, reason, now);
        Ok(())
    }

    /// Records the expiry of a session whose time has come. Returns whether anything changed.
    pub fn expire_if_due(&mut self, now: u64) -> bool {
        if self.state_at(now) == SessionState::Expired && self.state != SessionState::Expired {
            let reason = if self.state == SessionState::Pending {
                "not approved in time"
            } else {
                "ttl reached"
            };
            let at = self.expires_at;
            self.end(SessionState::Expired, reason, at);
            return true;
        }
        false
    }

    /// When a token minted at `now` for this session must expire: after `lifetime_seconds`,
    /// and never after the session.
    pub fn token_expiry(&self, now: u64, lifetime_seconds: u64) -> u64 {
        now.saturating_add(lifetime_seconds).min(self.expires_at)
    }

    fn end(&mut self, state: SessionState, reason: &str, at: u64) {
        self.state = state;
        self.ended_at = Some(at);
        self.end_reason = Some(reason.to_owned());
    }

    fn require_live(&self, now: u64, action: &'static str) -> Result<(), TransitionError> {
        match self.state_at(now) {
            SessionState::Pending | SessionState::Active => Ok(()),
            SessionState::Expired => Err(TransitionError::Expired {
                id: self.id.clone(),
                expired_at: self.expires_at,
            }),
            state => Err(TransitionError::Ended {
                id: self.id.clone(),
                state,
                action,
            }),
        }
    }

    /// `done` names the action as in "can no longer be approved", `verb` as in "nothing to
    /// approve".
    fn require_pending(
        &self,
        now: u64,
        done: &'static str,
        verb: &'static str,
    ) -> Result<(), TransitionError> {
        self.require_live(now, done)?;
        if self.state != SessionState::Pending {
            return Err(TransitionError::NotPending {
                id: self.id.clone(),
                state: self.state,
                action: verb,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn request(approvals_required: u32) -> SessionRequest {
        SessionRequest {
            id: "s-1".into(),
            requester: "spiffe://loupe.test/user/alice".into(),
            service: "checkout".into(),
            points: vec!["payments.charge".into()],
            reason: "INC-42 refunds failing".into(),
            ticket: Some("INC-42".into()),
            ttl_seconds: 900,
            approvals_required,
        }
    }

    #[test]
    fn a_session_without_required_approval_is_active_at_once() {
        let session = Session::open(request(0), NOW, 600);
        assert_eq!(session.state, SessionState::Active);
        assert_eq!(session.expires_at, NOW + 900);
        assert!(session.is_active_at(NOW + 899));
        assert_eq!(session.state_at(NOW + 900), SessionState::Expired);
    }

    #[test]
    fn approval_by_another_user_activates_and_starts_the_ttl() {
        let mut session = Session::open(request(1), NOW, 600);
        assert_eq!(session.state, SessionState::Pending);
        assert!(!session.is_active_at(NOW));
        let activated = session
            .approve("spiffe://loupe.test/user/carol", NOW + 120)
            .expect("approves");
        assert!(activated);
        assert_eq!(session.activated_at, Some(NOW + 120));
        assert_eq!(
            session.expires_at,
            NOW + 120 + 900,
            "ttl runs from activation"
        );
    }

    #[test]
    fn self_approval_and_double_approval_are_refused() {
        let mut session = Session::open(request(2), NOW, 600);
        let err = session
            .approve("spiffe://loupe.test/user/alice", NOW)
            .expect_err("self");
        assert!(matches!(err, TransitionError::SelfApproval { .. }));
        assert!(err.to_string().contains("another approver must"));
        assert_eq!(
            session.approve("spiffe://loupe.test/user/carol", NOW),
            Ok(false),
            "one of two"
        );
        assert!(matches!(
            session.approve("spiffe://loupe.test/user/carol", NOW),
            Err(TransitionError::AlreadyApproved { .. })
        ));
        assert_eq!(session.state, SessionState::Pending);
        assert_eq!(
            session.approve("spiffe://loupe.test/user/dan", NOW),
            Ok(true)
        );
        assert!(matches!(
            session.approve("spiffe://loupe.test/user/erin", NOW),
            Err(TransitionError::NotPending { .. })
        ));
    }

    #[test]
    fn a_pending_session_expires_when_nobody_approves_in_time() {
        let mut session = Session::open(request(1), NOW, 600);
        assert!(matches!(
            session.approve("spiffe://loupe.test/user/carol", NOW + 600),
            Err(TransitionError::Expired { .. })
        ));
        assert!(session.expire_if_due(NOW + 601));
        assert_eq!(session.state, SessionState::Expired);
        assert_eq!(session.end_reason.as_deref(), Some("not approved in time"));
        assert!(!session.expire_if_due(NOW + 700), "recorded once");
    }

    #[test]
    fn terminal_states_admit_no_transition() {
        let mut denied = Session::open(request(1), NOW, 600);
        denied
            .deny("not during the freeze", NOW + 1)
            .expect("denies");
        assert!(matches!(
            denied.approve("spiffe://loupe.test/user/carol", NOW + 2),
            Err(TransitionError::Ended { .. })
        ));
        assert!(denied.close("done", NOW + 2).is_err());
        assert!(denied.revoke("stop", NOW + 2).is_err());

        let mut closed = Session::open(request(0), NOW, 600);
        closed.close("found it", NOW + 10).expect("closes");
        assert_eq!(closed.state_at(NOW + 10_000), SessionState::Closed);
        assert!(closed.revoke("late", NOW + 11).is_err());

        let mut revoked = Session::open(request(0), NOW, 600);
        revoked
            .revoke("security incident", NOW + 10)
            .expect("revokes");
        assert!(revoked.close("too late", NOW + 11).is_err());
        assert!(!revoked.expire_if_due(NOW + 10_000));
        assert_eq!(revoked.state, SessionState::Revoked);
    }

    #[test]
    fn active_sessions_cannot_be_denied_or_approved_again() {
        let mut session = Session::open(request(0), NOW, 600);
        assert!(matches!(
            session.deny("no", NOW),
            Err(TransitionError::NotPending { .. })
        ));
    }

    #[test]
    fn tokens_never_outlive_their_session() {
        let session = Session::open(request(0), NOW, 600);
        assert_eq!(session.token_expiry(NOW, 300), NOW + 300);
        assert_eq!(session.token_expiry(NOW + 800, 300), NOW + 900);
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for state in [
            SessionState::Pending,
            SessionState::Active,
            SessionState::Closed,
            SessionState::Expired,
            SessionState::Revoked,
            SessionState::Denied,
        ] {
            assert_eq!(SessionState::parse(state.as_str()), Some(state));
        }
        assert_eq!(SessionState::parse("paused"), None);
    }
}

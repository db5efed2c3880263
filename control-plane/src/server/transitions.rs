//! Transitions of existing sessions by the people involved: `ApproveSession`, `DenySession`,
//! `CloseSession` and `RevokeSession`. Each takes the one transition lock of the session table,
//! reads the session, checks that the caller may see it ([`hide_unless_visible`]), asks the
//! policy, and records the decision with the session's new state in one commit; a refusal,
//! whatever refused it (policy, the session's state, the caller's view), is recorded before it
//! is answered.
//!
//! Decisions:
//! - Approval: the approver must be allowed `ApproveSession` on every point that asked for
//!   approval; whether the approvals are now enough is asked of the policy again (with the
//!   approvers as verified facts), not counted, so a policy that wants two groups gets two.
//! - Close (by the owner, as policy says) and revoke (by an administrator) tell the agents
//!   after the transition lock is released, so an agent that does not answer holds up no one
//!   else; tokens already minted would otherwise stay valid until their `exp`.

use std::sync::Arc;

use loupe_audit::event::{Action as AuditAction, Decision as AuditDecision, Detail, NewEvent};
use loupe_proto::v1 as pb;
use tonic::Status;

use super::access::{approval_decisions, hide_unless_visible, merge};
use super::agents::revoke_on_agents;
use super::answers::{
    allow, audit_decision, denied_status, deny, session_event, transition_status,
};
use super::caller::Caller;
use super::facts::{self, names, policy_time, session_facts};
use super::table::{commit, find_or_record_refusal};
use super::wire::response;
use super::{ControlPlane, now, request_id};
use crate::policy::{AuthzRequest, PolicyBundle, ServiceName, SessionControlFacts, UserId};
use crate::session::{Session, SessionState, TransitionError};
use crate::state::StoredSession;

/// `ApproveSession`: one more approval, which activates the session once the policy says the
/// approvals are enough.
pub(crate) async fn approve(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    request: pb::ApproveSessionRequest,
) -> Result<pb::SessionResponse, Status> {
    let user = caller.user()?;
    let request_id = request_id(&request.request_id);
    let _one_transition = cp.sessions.one_transition().await;
    let now = now();
    let action = AuditAction::SessionApproved;
    let stored =
        find_or_record_refusal(cp, caller, &request.session_id, action, &request_id).await?;
    let event = |decision| {
        session_event(caller, action, &stored.session, decision, &request_id)
            .client_text("comment", request.comment.as_bytes())
    };
    hide_unless_visible(cp, caller, &stored, now, event).await?;
    if let Err(refusal) = approvable(&stored, &caller.identity.id, now) {
        cp.record(event(deny(Vec::new(), refusal.message())))
            .await?;
        return Err(refusal);
    }
    let policy_ids = approver_policies(cp, &user, &stored, now, event).await?;
    let mut next = stored.clone();
    if let Err(error) = next.session.add_approval(&caller.identity.id, now) {
        return Err(refuse_transition(cp, error, event).await);
    }
    let activates = approvals_enough(&cp.policy.current(), &next, now)?;
    if activates {
        next.session.activate(now);
    }
    let approved =
        event(allow(policy_ids.clone(), "")).detail("activates", Detail::Bool(activates));
    let mut events = vec![approved];
    if activates {
        events.push(opened_by_approval(
            caller,
            &next.session,
            policy_ids,
            &request_id,
        ));
    }
    commit(cp, events, &next).await?;
    Ok(response(&cp.policy.current(), &next, now))
}

/// The policies that allow `user` to approve (or deny) `stored` on every point that asked for
/// approval; a refusal is recorded by `event`, then answered.
async fn approver_policies(
    cp: &ControlPlane,
    user: &UserId,
    stored: &StoredSession,
    now: u64,
    event: impl FnOnce(AuditDecision) -> NewEvent,
) -> Result<Vec<String>, Status> {
    let verdict = merge(&approval_decisions(
        &cp.policy.current(),
        user,
        stored,
        now,
    )?);
    if verdict.allowed {
        return Ok(verdict.policy_ids);
    }
    let refusal = denied_status(&verdict.policy_ids, &verdict.reason);
    Err(cp
        .refuse(event(deny(verdict.policy_ids, verdict.reason)), refusal)
        .await)
}

/// Whether `approver` may approve `stored` at `now` as far as the session itself goes: it must
/// be pending, and not theirs. The refusal says which.
fn approvable(stored: &StoredSession, approver: &str, now: u64) -> Result<(), Status> {
    let state = stored.session.state_at(now);
    if state != SessionState::Pending {
        return Err(Status::failed_precondition(format!(
            "session {} is {state}, not pending: there is nothing to approve",
            stored.session.id
        )));
    }
    if approver == stored.session.requester {
        return Err(Status::permission_denied(format!(
            "{approver} requested session {} and cannot approve it; another approver must",
            stored.session.id
        )));
    }
    Ok(())
}

/// Whether the approvals `next` has are enough: the policy's call, asked again for every point
/// with the approvers as facts.
fn approvals_enough(policy: &PolicyBundle, next: &StoredSession, now: u64) -> Result<bool, Status> {
    let facts = session_facts(next, now)?;
    let mut satisfied = true;
    for point in &next.session.points {
        let (service, point) = names(&next.session.service, point)?;
        satisfied &= policy
            .authorize(&AuthzRequest::open_session(service, point, facts.clone()))
            .allowed;
    }
    Ok(satisfied)
}

/// The record of a session opened by the approval that made the approvals enough.
fn opened_by_approval(
    caller: &Caller,
    session: &Session,
    policy_ids: Vec<String>,
    request_id: &str,
) -> NewEvent {
    session_event(
        caller,
        AuditAction::SessionOpened,
        session,
        allow(policy_ids, "approved"),
        request_id,
    )
    .detail("expires_at", Detail::UInt(session.expires_at))
}

/// `DenySession`: an approver refuses a pending session, which ends it.
pub(crate) async fn deny_session(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    request: pb::DenySessionRequest,
) -> Result<pb::SessionResponse, Status> {
    let user = caller.user()?;
    let request_id = request_id(&request.request_id);
    let _one_transition = cp.sessions.one_transition().await;
    let now = now();
    let action = AuditAction::SessionDenied;
    let stored =
        find_or_record_refusal(cp, caller, &request.session_id, action, &request_id).await?;
    let event = |decision| {
        session_event(caller, action, &stored.session, decision, &request_id)
            .client_text("reason", request.reason.as_bytes())
    };
    hide_unless_visible(cp, caller, &stored, now, event).await?;
    let policy_ids = approver_policies(cp, &user, &stored, now, event).await?;
    let mut next = stored.clone();
    let why = ended_by("denied", &caller.identity.id, &request.reason);
    if let Err(error) = next.session.deny(&why, now) {
        return Err(refuse_transition(cp, error, event).await);
    }
    commit(cp, vec![event(allow(policy_ids, ""))], &next).await?;
    Ok(response(&cp.policy.current(), &next, now))
}

/// How a session is ended by someone: closed by its owner, or revoked by an administrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Close,
    Revoke,
}

impl Ending {
    fn action(self) -> AuditAction {
        match self {
            Ending::Close => AuditAction::SessionClosed,
            Ending::Revoke => AuditAction::SessionRevoked,
        }
    }

    /// The policy question: may `user` end a session of `service` so?
    fn question(
        self,
        user: UserId,
        service: ServiceName,
        facts: SessionControlFacts,
    ) -> AuthzRequest {
        match self {
            Ending::Close => AuthzRequest::close_session(user, service, facts),
            Ending::Revoke => AuthzRequest::revoke_session(user, service, facts),
        }
    }

    /// Ends `session` at `now`, for the reason `why`.
    fn apply(self, session: &mut Session, why: &str, now: u64) -> Result<(), TransitionError> {
        match self {
            Ending::Close => session.close(why, now),
            Ending::Revoke => session.revoke(why, now),
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Ending::Close => "closed",
            Ending::Revoke => "revoked",
        }
    }
}

/// `CloseSession` and `RevokeSession`: ends the session, then tells the agents.
pub(crate) async fn end(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    session_id: &str,
    reason: &str,
    given_request_id: &str,
    ending: Ending,
) -> Result<pb::SessionResponse, Status> {
    let user = caller.user()?;
    let request_id = request_id(given_request_id);
    let one_transition = cp.sessions.one_transition().await;
    let now = now();
    let action = ending.action();
    let stored = find_or_record_refusal(cp, caller, session_id, action, &request_id).await?;
    let question = ending.question(user, facts::service(&stored)?, control_facts(&stored, now)?);
    let event = |decision| {
        session_event(caller, action, &stored.session, decision, &request_id)
            .client_text("reason", reason.as_bytes())
    };
    hide_unless_visible(cp, caller, &stored, now, event).await?;
    let decision = cp.policy.authorize(&question);
    if !decision.allowed {
        cp.record(event(audit_decision(&decision))).await?;
        return Err(denied_status(
            &decision.policy_ids,
            &decision.reasons.join("; "),
        ));
    }
    let mut next = stored.clone();
    let why = ended_by(ending.verb(), &caller.identity.id, reason);
    if let Err(error) = ending.apply(&mut next.session, &why, now) {
        return Err(refuse_transition(cp, error, event).await);
    }
    commit(cp, vec![event(audit_decision(&decision))], &next).await?;
    // The agents are told without holding up every other session's transitions: one agent
    // that does not answer must not stall the control plane.
    drop(one_transition);
    revoke_on_agents(cp, &next.session).await;
    Ok(response(&cp.policy.current(), &next, now))
}

/// The facts of a question about ending `stored` at `now`.
fn control_facts(stored: &StoredSession, now: u64) -> Result<SessionControlFacts, Status> {
    Ok(SessionControlFacts {
        session_owner: facts::owner(stored)?,
        time: policy_time(now),
    })
}

/// The end reason a session keeps: `<verb> by <who>`, and their reason if they gave one.
fn ended_by(verb: &str, by: &str, reason: &str) -> String {
    match reason.trim() {
        "" => format!("{verb} by {by}"),
        reason => format!("{verb} by {by}: {reason}"),
    }
}

/// Refuses (recorded by `event`) a transition the session's state does not allow.
async fn refuse_transition(
    cp: &ControlPlane,
    error: TransitionError,
    event: impl FnOnce(AuditDecision) -> NewEvent,
) -> Status {
    let status = transition_status(error);
    let record = event(deny(Vec::new(), status.message().to_owned()));
    cp.refuse(record, status).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::fixtures::{NOW, session, shipped_policies, user};
    use tonic::Code;

    #[test]
    fn only_someone_else_may_approve_and_only_while_pending() {
        let pending = session("alice", "payments", &["payments.charge"], 1);
        assert!(approvable(&pending, &user("carol"), NOW).is_ok());
        let own = approvable(&pending, &user("alice"), NOW).expect_err("own");
        assert_eq!(own.code(), Code::PermissionDenied);
        assert!(own.message().contains("another approver must"));

        let active = session("alice", "checkout", &["checkout.total"], 0);
        let done = approvable(&active, &user("carol"), NOW).expect_err("active");
        assert_eq!(done.code(), Code::FailedPrecondition);
        assert!(done.message().contains("is active, not pending"));
        let late =
            approvable(&pending, &user("carol"), pending.session.expires_at).expect_err("expired");
        assert!(late.message().contains("is expired"));
    }

    #[test]
    fn the_policy_decides_when_approvals_are_enough() {
        let policy = shipped_policies();
        let mut stored = session("alice", "payments", &["payments.charge"], 1);
        assert!(!approvals_enough(&policy, &stored, NOW).expect("facts"));
        stored
            .session
            .add_approval(&user("bob"), NOW)
            .expect("bob's approval is recorded");
        assert!(
            !approvals_enough(&policy, &stored, NOW).expect("facts"),
            "an sre is not the security approval the policy wants"
        );
        stored
            .session
            .add_approval(&user("carol"), NOW)
            .expect("carol's approval is recorded");
        assert!(approvals_enough(&policy, &stored, NOW).expect("facts"));
    }

    #[test]
    fn an_ending_names_who_and_why() {
        let alice = user("alice");
        assert_eq!(
            ended_by("closed", &alice, "  "),
            format!("closed by {alice}")
        );
        assert_eq!(
            ended_by("revoked", &alice, " done "),
            format!("revoked by {alice}: done")
        );
    }

    #[test]
    fn close_and_revoke_ask_their_own_question_and_end_in_their_own_state() {
        let policy = shipped_policies();
        let stored = session("alice", "checkout", &["checkout.total"], 0);
        let ask = |ending: Ending, who: &str| {
            let user = UserId::parse(&user(who)).expect("user");
            let service = facts::service(&stored).expect("service");
            let facts = control_facts(&stored, NOW).expect("facts");
            policy
                .authorize(&ending.question(user, service, facts))
                .allowed
        };
        assert!(ask(Ending::Close, "alice"));
        assert!(!ask(Ending::Close, "bob"));
        assert!(!ask(Ending::Revoke, "alice"));
        assert!(ask(Ending::Revoke, "carol"));

        let mut revoked = stored.session.clone();
        Ending::Revoke
            .apply(&mut revoked, "revoked", NOW)
            .expect("revokes");
        assert_eq!(revoked.state, SessionState::Revoked);
        let again = Ending::Close
            .apply(&mut revoked, "closed", NOW)
            .expect_err("ended");
        assert_eq!(transition_status(again).code(), Code::FailedPrecondition);
    }
}

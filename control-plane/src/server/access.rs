//! Who may do what with an existing session, as the policy in force says: see it, approve (or
//! deny) it, and who could still approve it.
//!
//! Decisions:
//! - A caller sees their own sessions, sessions they could approve while pending, and every
//!   session of a service whose sessions they may revoke. A call on a session the caller may
//!   not see is refused — and recorded — with the very answer a missing session gets
//!   ([`hide_unless_visible`]), so session ids are no oracle.
//! - An approver must be allowed `ApproveSession` on every point that asked for approval (on
//!   every point of the session when none did); the decisions are merged into one verdict
//!   naming the policies that decided it.

use std::collections::BTreeSet;

use loupe_audit::event::{Decision as AuditDecision, NewEvent};
use loupe_proto::v1 as pb;
use tonic::Status;

use super::ControlPlane;
use super::answers::{deny, missing};
use super::caller::Caller;
use super::facts::{approval_facts, names, policy_time};
use crate::policy::{
    AuthzRequest, Decision, PolicyBundle, ServiceName, SessionControlFacts, UserId,
};
use crate::session::SessionState;
use crate::state::StoredSession;

/// Several decisions on one call, merged: allowed only if each was, with the policies and
/// reasons of the decisions that agree with the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub allowed: bool,
    pub policy_ids: Vec<String>,
    pub reason: String,
}

/// Merges `decisions` into one verdict.
pub(crate) fn merge(decisions: &[Decision]) -> Verdict {
    let allowed = decisions.iter().all(|d| d.allowed);
    let relevant = decisions.iter().filter(|d| d.allowed == allowed);
    let mut ids = BTreeSet::new();
    let mut reasons = BTreeSet::new();
    for decision in relevant {
        ids.extend(decision.policy_ids.iter().cloned());
        reasons.extend(decision.reasons.iter().cloned());
    }
    Verdict {
        allowed,
        policy_ids: ids.into_iter().collect(),
        reason: reasons.into_iter().collect::<Vec<_>>().join("; "),
    }
}

/// Whether `user` may approve `stored` on every point that asked for approval; the decisions.
pub(crate) fn approval_decisions(
    policy: &PolicyBundle,
    user: &UserId,
    stored: &StoredSession,
    now: u64,
) -> Result<Vec<Decision>, Status> {
    let facts = approval_facts(stored, now)?;
    let points: &[String] = if stored.approval_points.is_empty() {
        &stored.session.points
    } else {
        &stored.approval_points
    };
    points
        .iter()
        .map(|point| {
            let (service, point) = names(&stored.session.service, point)?;
            Ok(policy.authorize(&AuthzRequest::approve_session(
                user.clone(),
                service,
                point,
                facts.clone(),
            )))
        })
        .collect()
}

/// Whether `caller` may see `stored`.
pub(crate) fn visible(
    policy: &PolicyBundle,
    caller: &Caller,
    stored: &StoredSession,
    now: u64,
) -> bool {
    if caller.identity.id == stored.session.requester {
        return true;
    }
    let Ok(user) = caller.user() else {
        return false;
    };
    let (Ok(owner), Ok(service)) = (
        UserId::parse(&stored.session.requester),
        ServiceName::parse(&stored.session.service),
    ) else {
        return false;
    };
    let facts = SessionControlFacts {
        session_owner: owner,
        time: policy_time(now),
    };
    if policy
        .authorize(&AuthzRequest::revoke_session(user.clone(), service, facts))
        .allowed
    {
        return true;
    }
    stored.session.state_at(now) == SessionState::Pending
        && approval_decisions(policy, &user, stored, now)
            .map(|d| merge(&d).allowed)
            .unwrap_or(false)
}

/// Refuses (recorded by `event`) a call on a session the caller may not see, answering as if
/// it did not exist.
pub(crate) async fn hide_unless_visible(
    cp: &ControlPlane,
    caller: &Caller,
    stored: &StoredSession,
    now: u64,
    event: impl FnOnce(AuditDecision) -> NewEvent,
) -> Result<(), Status> {
    if visible(&cp.policy.current(), caller, stored, now) {
        return Ok(());
    }
    cp.record(event(deny(
        Vec::new(),
        "the caller may not see this session",
    )))
    .await?;
    Err(missing(&stored.session.id))
}

/// Who may approve `stored` now: users allowed on every point that asked for approval and
/// who have not approved it yet. Nobody, once it is no longer pending.
pub(crate) fn approvers(
    policy: &PolicyBundle,
    stored: &StoredSession,
    now: u64,
) -> Vec<pb::ApproverInfo> {
    if stored.session.state_at(now) != SessionState::Pending {
        return Vec::new();
    }
    let Ok(facts) = approval_facts(stored, now) else {
        return Vec::new();
    };
    let mut common: Option<Vec<pb::ApproverInfo>> = None;
    for point in &stored.approval_points {
        let Ok((service, point)) = names(&stored.session.service, point) else {
            return Vec::new();
        };
        let these: Vec<pb::ApproverInfo> = policy
            .who_could_approve(&service, &point, &facts)
            .into_iter()
            .filter(|a| {
                !stored
                    .session
                    .approvals
                    .iter()
                    .any(|x| x.approver == a.id.as_str())
            })
            .map(|a| pb::ApproverInfo {
                id: a.id.as_str().to_owned(),
                name: a.name,
            })
            .collect();
        common = Some(match common {
            None => these,
            Some(before) => before.into_iter().filter(|a| these.contains(a)).collect(),
        });
    }
    common.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::fixtures::{NOW, caller, session, shipped_policies, user};

    fn decision(allowed: bool, ids: &[&str], reasons: &[&str]) -> Decision {
        Decision {
            allowed,
            policy_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            reasons: reasons.iter().map(|s| (*s).to_owned()).collect(),
            awaiting_approval_from: Vec::new(),
            policy_version: "test".to_owned(),
        }
    }

    #[test]
    fn one_refusal_refuses_and_only_the_refusals_are_named() {
        let verdict = merge(&[
            decision(true, &["permit-a"], &[]),
            decision(false, &["forbid-b"], &["b says no"]),
            decision(false, &["forbid-c", "forbid-b"], &["c says no"]),
        ]);
        assert_eq!(
            verdict,
            Verdict {
                allowed: false,
                policy_ids: vec!["forbid-b".into(), "forbid-c".into()],
                reason: "b says no; c says no".into(),
            }
        );
        let all = merge(&[
            decision(true, &["p"], &[]),
            decision(true, &["q", "p"], &[]),
        ]);
        assert!(all.allowed);
        assert_eq!(all.policy_ids, vec!["p".to_owned(), "q".to_owned()]);
    }

    #[test]
    fn the_requester_security_and_no_one_else_see_a_session() {
        let policy = shipped_policies();
        let stored = session("alice", "checkout", &["checkout.total"], 0);
        assert!(visible(&policy, &caller("alice"), &stored, NOW));
        assert!(
            visible(&policy, &caller("carol"), &stored, NOW),
            "security may revoke it"
        );
        assert!(
            !visible(&policy, &caller("bob"), &stored, NOW),
            "another sre"
        );
        assert!(
            !visible(&policy, &caller("dave"), &stored, NOW),
            "an auditor"
        );
    }

    #[test]
    fn only_security_may_approve_payments_and_never_their_own_session() {
        let policy = shipped_policies();
        let stored = session("alice", "payments", &["payments.charge"], 1);
        let carol = crate::policy::UserId::parse(&user("carol")).expect("user");
        let bob = crate::policy::UserId::parse(&user("bob")).expect("user");
        let alice = crate::policy::UserId::parse(&user("alice")).expect("user");
        let allowed = |who| merge(&approval_decisions(&policy, who, &stored, NOW).expect("facts"));
        assert!(allowed(&carol).allowed);
        assert!(!allowed(&bob).allowed);
        assert!(!allowed(&alice).allowed);
    }

    #[test]
    fn approvers_are_those_still_able_to_approve_while_pending() {
        let policy = shipped_policies();
        let mut stored = session("alice", "payments", &["payments.charge"], 1);
        let names: Vec<String> = approvers(&policy, &stored, NOW)
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, vec!["carol".to_owned()]);

        stored
            .session
            .add_approval(&user("carol"), NOW)
            .expect("carol approves");
        assert!(
            approvers(&policy, &stored, NOW).is_empty(),
            "carol approved already"
        );

        let expired = session("alice", "payments", &["payments.charge"], 1);
        let later = expired.session.expires_at;
        assert!(
            approvers(&policy, &expired, later).is_empty(),
            "no longer pending"
        );
    }
}

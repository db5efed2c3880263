//! What a decision becomes: the decision the audit record keeps, the event that records a call
//! on a session, and the gRPC status the caller is answered with. Every module that decides
//! something answers through these, so a denial reads the same wherever it was made, and the
//! answer for a session that does not exist is the one answer for a session the caller may not
//! see (ids are no oracle).

use loupe_audit::event::{
    Action as AuditAction, Decision as AuditDecision, NewEvent, Outcome, Resource, ResourceKind,
};
use tonic::Status;

use super::caller::Caller;
use crate::policy::Decision;
use crate::session::{Session, TransitionError};

/// The audit decision for a policy decision.
pub(crate) fn audit_decision(decision: &Decision) -> AuditDecision {
    AuditDecision {
        outcome: if decision.allowed {
            Outcome::Allow
        } else {
            Outcome::Deny
        },
        policies: decision.policy_ids.clone(),
        reason: decision.reasons.join("; "),
    }
}

/// An allowing audit decision by `policies`.
pub(crate) fn allow(policies: Vec<String>, reason: impl Into<String>) -> AuditDecision {
    AuditDecision {
        outcome: Outcome::Allow,
        policies,
        reason: reason.into(),
    }
}

/// A refusing audit decision by `policies` (none: refused by the control plane's own checks).
pub(crate) fn deny(policies: Vec<String>, reason: impl Into<String>) -> AuditDecision {
    AuditDecision {
        outcome: Outcome::Deny,
        policies,
        reason: reason.into(),
    }
}

/// PERMISSION_DENIED naming the policies and the reason.
pub(crate) fn denied_status(policies: &[String], reason: &str) -> Status {
    if policies.is_empty() {
        Status::permission_denied(format!("denied: {reason}"))
    } else {
        Status::permission_denied(format!(
            "denied by policy {}: {reason}",
            policies.join(", ")
        ))
    }
}

/// INVALID_ARGUMENT with the error's own words.
pub(crate) fn invalid(error: impl std::fmt::Display) -> Status {
    Status::invalid_argument(error.to_string())
}

/// The answer to a transition the session's state does not allow.
pub(crate) fn transition_status(error: TransitionError) -> Status {
    match error {
        TransitionError::SelfApproval { .. } => Status::permission_denied(error.to_string()),
        TransitionError::AlreadyApproved { .. } => Status::already_exists(error.to_string()),
        _ => Status::failed_precondition(error.to_string()),
    }
}

/// The answer for a session that does not exist — and, so that ids are no oracle, for one the
/// caller may not see.
pub(crate) fn missing(id: &str) -> Status {
    Status::not_found(format!(
        "no session `{id}`; `loupe session list` shows yours"
    ))
}

/// The record of `caller`'s `action` on `session`, decided as `decision`.
pub(crate) fn session_event(
    caller: &Caller,
    action: AuditAction,
    session: &Session,
    decision: AuditDecision,
    request_id: &str,
) -> NewEvent {
    NewEvent::new(
        caller.actor.clone(),
        action,
        Resource {
            kind: ResourceKind::Session,
            id: session.id.clone(),
        },
        decision,
        request_id,
    )
    .session(session.id.clone())
    .service(session.service.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn a_denial_names_its_policies_when_there_are_any() {
        let by_policy = denied_status(&["a".into(), "b".into()], "no");
        assert_eq!(by_policy.code(), Code::PermissionDenied);
        assert_eq!(by_policy.message(), "denied by policy a, b: no");
        assert_eq!(denied_status(&[], "no").message(), "denied: no");
    }

    #[test]
    fn a_refused_transition_is_answered_by_what_refused_it() {
        let own = TransitionError::SelfApproval {
            id: "ses-1".into(),
            approver: "alice".into(),
        };
        assert_eq!(transition_status(own).code(), Code::PermissionDenied);
        let twice = TransitionError::AlreadyApproved {
            id: "ses-1".into(),
            approver: "carol".into(),
        };
        assert_eq!(transition_status(twice).code(), Code::AlreadyExists);
        let late = TransitionError::Expired {
            id: "ses-1".into(),
            expired_at: 1,
        };
        assert_eq!(transition_status(late).code(), Code::FailedPrecondition);
    }

    #[test]
    fn a_policy_decision_is_recorded_with_its_policies_and_reasons() {
        let decision = Decision {
            allowed: false,
            policy_ids: vec!["forbid-x".into()],
            reasons: vec!["one".into(), "two".into()],
            awaiting_approval_from: Vec::new(),
            policy_version: "v".into(),
        };
        let recorded = audit_decision(&decision);
        assert_eq!(recorded.outcome, Outcome::Deny);
        assert_eq!(recorded.policies, vec!["forbid-x".to_owned()]);
        assert_eq!(recorded.reason, "one; two");
    }
}

//! The first check of every call: each client string and list of the request within its
//! bound ([`crate::bounds`]), before any handler sees it.
//!
//! A request over a bound is refused with INVALID_ARGUMENT naming the field, its length and
//! the bound, and the refusal is recorded — as the field's name, length and SHA-256, never its
//! text — under the action the call would have had (reads that are never audited, such as
//! `GetSession`, record nothing). So a refused caller adds a few hundred bytes to the log per
//! call whatever it sent, and the reviewer still sees who tried what.

use std::collections::BTreeSet;

use loupe_audit::event::{
    Action as AuditAction, Decision as AuditDecision, Detail, NewEvent, Outcome, Resource,
    ResourceKind,
};
use loupe_proto::v1 as pb;
use tonic::Status;

use super::caller::Caller;
use super::{ControlPlane, random_id};
use crate::bounds::{self, Violation};
use crate::registry;

/// A call of the `ControlPlane` service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Register,
    ListServices,
    ListPoints,
    OpenSession,
    ApproveSession,
    DenySession,
    CloseSession,
    RevokeSession,
    ListSessions,
    GetSession,
    Capture,
    QueryAudit,
    GetCheckpoint,
    ProveInclusion,
    ProveConsistency,
    GetTokenKeys,
}

impl Call {
    /// The RPC's name, as the .proto spells it.
    pub fn name(self) -> &'static str {
        match self {
            Call::Register => "Register",
            Call::ListServices => "ListServices",
            Call::ListPoints => "ListPoints",
            Call::OpenSession => "OpenSession",
            Call::ApproveSession => "ApproveSession",
            Call::DenySession => "DenySession",
            Call::CloseSession => "CloseSession",
            Call::RevokeSession => "RevokeSession",
            Call::ListSessions => "ListSessions",
            Call::GetSession => "GetSession",
            Call::Capture => "Capture",
            Call::QueryAudit => "QueryAudit",
            Call::GetCheckpoint => "GetCheckpoint",
            Call::ProveInclusion => "ProveInclusion",
            Call::ProveConsistency => "ProveConsistency",
            Call::GetTokenKeys => "GetTokenKeys",
        }
    }

    /// The kind of thing the call acts on.
    pub fn resource_kind(self) -> ResourceKind {
        match self {
            Call::Register => ResourceKind::Agent,
            Call::ListServices | Call::ListPoints | Call::GetTokenKeys => ResourceKind::Service,
            Call::OpenSession
            | Call::ApproveSession
            | Call::DenySession
            | Call::CloseSession
            | Call::RevokeSession
            | Call::ListSessions
            | Call::GetSession => ResourceKind::Session,
            Call::Capture => ResourceKind::Point,
            Call::QueryAudit
            | Call::GetCheckpoint
            | Call::ProveInclusion
            | Call::ProveConsistency => ResourceKind::AuditLog,
        }
    }

    /// The action the call is recorded under; `None` for reads that are not audited at all
    /// (a session's own caller reading it, the public token keys).
    fn action(self) -> Option<AuditAction> {
        Some(match self {
            Call::Register => AuditAction::AgentRegistered,
            Call::ListServices | Call::ListPoints => AuditAction::PointsListed,
            Call::OpenSession => AuditAction::SessionRequested,
            Call::ApproveSession => AuditAction::SessionApproved,
            Call::DenySession => AuditAction::SessionDenied,
            Call::CloseSession => AuditAction::SessionClosed,
            Call::RevokeSession => AuditAction::SessionRevoked,
            Call::Capture => AuditAction::CaptureStarted,
            Call::QueryAudit
            | Call::GetCheckpoint
            | Call::ProveInclusion
            | Call::ProveConsistency => AuditAction::AuditRead,
            Call::ListSessions | Call::GetSession | Call::GetTokenKeys => return None,
        })
    }
}

/// The record of a refused `call` by `caller`, for `reason`.
fn refusal_event(caller: &Caller, call: Call, action: AuditAction, reason: String) -> NewEvent {
    NewEvent::new(
        caller.actor.clone(),
        action,
        Resource {
            kind: call.resource_kind(),
            id: String::new(),
        },
        AuditDecision {
            outcome: Outcome::Deny,
            policies: Vec::new(),
            reason,
        },
        random_id("req"),
    )
    .detail("call", Detail::Text(call.name().to_owned()))
}

/// Refuses `violation` of `call`: records it (length and digest only) when the call is an
/// audited one, and answers INVALID_ARGUMENT.
pub(crate) async fn refuse(
    cp: &ControlPlane,
    caller: &Caller,
    call: Call,
    violation: Violation,
) -> Status {
    let refusal = Status::invalid_argument(format!("{}: {violation}", call.name()));
    let Some(action) = call.action() else {
        return refusal;
    };
    let mut event = refusal_event(caller, call, action, violation.to_string())
        .detail("field", Detail::Text(violation.field.clone()))
        .detail(
            "length",
            Detail::UInt(u64::try_from(violation.actual).unwrap_or(u64::MAX)),
        );
    if !violation.sha256.is_empty() {
        event = event.detail("sha256", Detail::Text(violation.sha256.clone()));
    }
    cp.refuse(event, refusal).await
}

/// Checks that a user makes `call` if only users may, then `check`, refusing (and recording)
/// either failure. An identity that is no user (one too long or malformed to be a policy
/// principal) is refused here, on record, for every audited call but an agent's `Register`.
pub(crate) async fn admit(
    cp: &ControlPlane,
    caller: &Caller,
    call: Call,
    check: Result<(), Violation>,
) -> Result<(), Status> {
    if let Err(not_a_user) = caller.user()
        && let Some(action) = call.action().filter(|_| call != Call::Register)
    {
        let event = refusal_event(caller, call, action, not_a_user.message().to_owned());
        return Err(cp.refuse(event, not_a_user).await);
    }
    match check {
        Ok(()) => Ok(()),
        Err(violation) => Err(refuse(cp, caller, call, violation).await),
    }
}

pub(crate) fn register(request: &pb::RegisterRequest) -> Result<(), Violation> {
    bounds::SERVICE.check(&request.service)?;
    bounds::INSTANCE.check(&request.instance)?;
    bounds::ADDRESS.check(&request.address)?;
    bounds::VERSION.check(&request.version)?;
    registry::check_points(&request.points)
}

pub(crate) fn list_services(request: &pb::ListServicesRequest) -> Result<(), Violation> {
    bounds::PAGE_TOKEN.check(&request.page_token)
}

pub(crate) fn list_points(request: &pb::ListPointsRequest) -> Result<(), Violation> {
    bounds::SERVICE.check(&request.service)?;
    bounds::PAGE_TOKEN.check(&request.page_token)
}

pub(crate) fn open_session(request: &pb::OpenSessionRequest) -> Result<(), Violation> {
    bounds::SERVICE.check(&request.service)?;
    bounds::REASON.check(request.reason.trim())?;
    bounds::TICKET.check(request.ticket.trim())?;
    let mut distinct = BTreeSet::new();
    for (i, pattern) in request.points.iter().enumerate() {
        bounds::POINT_PATTERN.check_at(format!("points[{i}]"), pattern.trim())?;
        distinct.insert(pattern.trim());
    }
    bounds::SESSION_PATTERNS.check(distinct.len())
}

pub(crate) fn approve_session(request: &pb::ApproveSessionRequest) -> Result<(), Violation> {
    bounds::SESSION_ID.check(request.session_id.trim())?;
    bounds::COMMENT.check(request.comment.trim())
}

/// Deny, close and revoke: a session id and a reason.
pub(crate) fn end_session(session_id: &str, reason: &str) -> Result<(), Violation> {
    bounds::SESSION_ID.check(session_id.trim())?;
    bounds::REASON.check(reason.trim())
}

pub(crate) fn list_sessions(request: &pb::ListSessionsRequest) -> Result<(), Violation> {
    bounds::SESSION_STATES.check(request.states.len())?;
    bounds::SERVICE.check(&request.service)?;
    bounds::PAGE_TOKEN.check(&request.page_token)
}

pub(crate) fn get_session(request: &pb::GetSessionRequest) -> Result<(), Violation> {
    bounds::SESSION_ID.check(request.session_id.trim())
}

pub(crate) fn capture(request: &pb::BrokeredCaptureRequest) -> Result<(), Violation> {
    bounds::SESSION_ID.check(request.session_id.trim())?;
    bounds::POINT.check(request.point.trim())?;
    bounds::CAPTURE_INSTANCES.check(request.instances.len())?;
    for (i, instance) in request.instances.iter().enumerate() {
        bounds::INSTANCE.check_at(format!("instances[{i}]"), instance)?;
    }
    bounds::REDACT_KEYWORDS.check(request.redact_keywords.len())?;
    for (i, keyword) in request.redact_keywords.iter().enumerate() {
        bounds::REDACT_KEYWORD.check_at(format!("redact_keywords[{i}]"), keyword)?;
    }
    bounds::REDACT_PATTERNS.check(request.redact_patterns.len())?;
    for (i, pattern) in request.redact_patterns.iter().enumerate() {
        bounds::REDACT_PATTERN.check_at(format!("redact_patterns[{i}]"), pattern)?;
    }
    // The condition is the broker's to bound: its refusal records it cut, after the check of
    // who is asking (see `capture`).
    Ok(())
}

pub(crate) fn query_audit(request: &pb::QueryAuditRequest) -> Result<(), Violation> {
    bounds::FILTER_ACTOR.check(request.actor.trim())?;
    bounds::FILTER_SESSION.check(request.session.trim())?;
    bounds::FILTER_SERVICE.check(request.service.trim())?;
    bounds::FILTER_POINT.check(request.point.trim())?;
    bounds::FILTER_ACTION.check(request.action.trim())?;
    bounds::FILTER_OUTCOME.check(request.outcome.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversize_filters_are_named_with_their_length() {
        let request = pb::QueryAuditRequest {
            actor: "a".repeat(1024 * 1024),
            ..pb::QueryAuditRequest::default()
        };
        let violation = query_audit(&request).expect_err("oversize");
        assert_eq!(violation.field, "actor");
        assert_eq!(violation.actual, 1024 * 1024);
        assert_eq!(violation.max, bounds::FILTER_ACTOR.max_bytes);
    }

    #[test]
    fn repeated_patterns_count_once() {
        let request = pb::OpenSessionRequest {
            points: vec!["checkout.total".to_owned(); 10_000],
            ..pb::OpenSessionRequest::default()
        };
        assert!(open_session(&request).is_ok());
        let request = pb::OpenSessionRequest {
            points: (0..300).map(|i| format!("checkout.p{i}")).collect(),
            ..pb::OpenSessionRequest::default()
        };
        let violation = open_session(&request).expect_err("too many");
        assert_eq!(
            violation.to_string(),
            "`points` has 300 entries; at most 256 are accepted"
        );
    }

    #[test]
    fn registrations_are_bounded_field_by_field() {
        let mut request = pb::RegisterRequest {
            service: "checkout".into(),
            instance: "i-1".into(),
            address: "127.0.0.1:1".into(),
            version: "1".into(),
            mode: 1,
            points: vec![pb::PointInfo {
                name: "checkout.total".into(),
                fields: vec![pb::FieldInfo {
                    name: "cart".into(),
                    r#type: "t".repeat(300),
                }],
                ..pb::PointInfo::default()
            }],
        };
        let violation = register(&request).expect_err("long type");
        assert_eq!(violation.field, "points[0].fields[0].type");
        request.points[0].fields[0].r#type = "serde".into();
        assert!(register(&request).is_ok());
        request.version = "v".repeat(65);
        assert_eq!(register(&request).expect_err("version").field, "version");
    }
}

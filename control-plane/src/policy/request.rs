//! Typed authorization requests: who asks, for which action, on what, with which verified facts.
//!
//! The control plane builds these from verified facts only — the identity from the peer
//! certificate, names through [`crate::policy::names`], the clock it reads itself — and the
//! engine turns them into Cedar requests. Group memberships are never part of a request: they
//! come from the entities file.
//!
//! [`SessionFacts::new`] is where the two-person rule is kept honest: approvals are a set (one per
//! approver), and an approval by the requester is dropped there, never passed to policy.

use std::collections::BTreeSet;
use std::fmt;

use super::names::{PointName, ServiceName, UserId};

/// Longest reason accepted, in bytes (after trimming).
pub const MAX_REASON_LEN: usize = 1024;
/// Longest ticket reference accepted, in bytes (after trimming).
pub const MAX_TICKET_LEN: usize = 128;

/// The id of the audit log resource (`AuditLog::"main"`).
pub const AUDIT_LOG_ID: &str = "main";

/// What a caller wants to do. The names are the Cedar action ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    ListPoints,
    OpenSession,
    ApproveSession,
    CloseSession,
    RevokeSession,
    Capture,
    ReadAudit,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::ListPoints,
        Action::OpenSession,
        Action::ApproveSession,
        Action::CloseSession,
        Action::RevokeSession,
        Action::Capture,
        Action::ReadAudit,
    ];

    /// The Cedar action id (`Action::"<name>"`).
    pub fn name(self) -> &'static str {
        match self {
            Action::ListPoints => "ListPoints",
            Action::OpenSession => "OpenSession",
            Action::ApproveSession => "ApproveSession",
            Action::CloseSession => "CloseSession",
            Action::RevokeSession => "RevokeSession",
            Action::Capture => "Capture",
            Action::ReadAudit => "ReadAudit",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an action is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A service (`ListPoints`, `CloseSession`, `RevokeSession`).
    Service(ServiceName),
    /// A snapshot point of a service (`OpenSession`, `Capture`, `ApproveSession`). It is in its
    /// service and in each of its dotted namespaces.
    Point {
        service: ServiceName,
        point: PointName,
    },
    /// The audit log (`ReadAudit`).
    AuditLog,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Service(service) => {
                write!(f, "Service::{service:?}", service = service.as_str())
            }
            Resource::Point { service, point } => {
                write!(
                    f,
                    "Point::{:?} of Service::{:?}",
                    point.as_str(),
                    service.as_str()
                )
            }
            Resource::AuditLog => write!(f, "AuditLog::{AUDIT_LOG_ID:?}"),
        }
    }
}

/// A fact that could not go into a context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    #[error("ttl must be at least 1 s")]
    ZeroTtl,
    #[error("reason is longer than {MAX_REASON_LEN} bytes")]
    ReasonTooLong,
    #[error("reason contains control characters")]
    ReasonControlCharacters,
    #[error(
        "ticket must be at most {MAX_TICKET_LEN} bytes of printable ASCII without quotes or backslashes"
    )]
    BadTicket,
}

/// The facts of a session, for `OpenSession` and for each `Capture` inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFacts {
    requester: UserId,
    ttl_seconds: u32,
    reason: String,
    ticket: Option<String>,
    approvals: BTreeSet<UserId>,
    dropped_self_approval: bool,
    time: i64,
}

impl SessionFacts {
    /// Builds the facts of `requester`'s session. The reason is trimmed (an empty reason is
    /// kept, so that policy can refuse it with its own explanation); an empty ticket is none.
    /// `approvers` are the verified identities of those who approved: duplicates collapse into
    /// one approval, and the requester's own approval is dropped (see
    /// [`SessionFacts::dropped_self_approval`]). `time` is unix seconds.
    pub fn new(
        requester: UserId,
        ttl_seconds: u32,
        reason: &str,
        ticket: Option<&str>,
        approvers: impl IntoIterator<Item = UserId>,
        time: i64,
    ) -> Result<SessionFacts, ContextError> {
        if ttl_seconds == 0 {
            return Err(ContextError::ZeroTtl);
        }
        let reason = check_reason(reason)?;
        let ticket = check_ticket(ticket)?;
        let mut approvals: BTreeSet<UserId> = approvers.into_iter().collect();
        let dropped_self_approval = approvals.remove(&requester);
        Ok(SessionFacts {
            requester,
            ttl_seconds,
            reason,
            ticket,
            approvals,
            dropped_self_approval,
            time,
        })
    }

    pub fn requester(&self) -> &UserId {
        &self.requester
    }
    pub fn ttl_seconds(&self) -> u32 {
        self.ttl_seconds
    }
    pub fn reason(&self) -> &str {
        &self.reason
    }
    pub fn ticket(&self) -> Option<&str> {
        self.ticket.as_deref()
    }
    /// Distinct approvers, never the requester.
    pub fn approvals(&self) -> &BTreeSet<UserId> {
        &self.approvals
    }
    /// Whether the requester was among the approvers given (and so was dropped) — worth an
    /// audit detail, since the transport should never have let it through.
    pub fn dropped_self_approval(&self) -> bool {
        self.dropped_self_approval
    }
    pub fn time(&self) -> i64 {
        self.time
    }
}

/// The facts of a pending session someone is asked to approve (`ApproveSession`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalFacts {
    requester: UserId,
    ttl_seconds: u32,
    reason: String,
    ticket: Option<String>,
    time: i64,
}

impl ApprovalFacts {
    /// The session `requester` asked for, as the approver is shown it. `time` is unix seconds.
    pub fn new(
        requester: UserId,
        ttl_seconds: u32,
        reason: &str,
        ticket: Option<&str>,
        time: i64,
    ) -> Result<ApprovalFacts, ContextError> {
        if ttl_seconds == 0 {
            return Err(ContextError::ZeroTtl);
        }
        Ok(ApprovalFacts {
            requester,
            ttl_seconds,
            reason: check_reason(reason)?,
            ticket: check_ticket(ticket)?,
            time,
        })
    }

    pub fn requester(&self) -> &UserId {
        &self.requester
    }
    pub fn ttl_seconds(&self) -> u32 {
        self.ttl_seconds
    }
    pub fn reason(&self) -> &str {
        &self.reason
    }
    pub fn ticket(&self) -> Option<&str> {
        self.ticket.as_deref()
    }
    pub fn time(&self) -> i64 {
        self.time
    }
}

/// The facts of closing or revoking a session: whose it is, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionControlFacts {
    pub session_owner: UserId,
    pub time: i64,
}

/// The verified facts a request carries; which kind fits which action is fixed by the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestContext {
    /// Only the clock (`ListPoints`, `ReadAudit`), unix seconds.
    Clock { time: i64 },
    /// `OpenSession`, `Capture`.
    Session(SessionFacts),
    /// `ApproveSession`.
    Approval(ApprovalFacts),
    /// `CloseSession`, `RevokeSession`.
    SessionControl(SessionControlFacts),
}

impl RequestContext {
    /// Unix seconds the facts were gathered at.
    pub fn time(&self) -> i64 {
        match self {
            RequestContext::Clock { time } => *time,
            RequestContext::Session(facts) => facts.time,
            RequestContext::Approval(facts) => facts.time,
            RequestContext::SessionControl(facts) => facts.time,
        }
    }

    /// The requested ttl, where there is one.
    pub fn ttl_seconds(&self) -> Option<u32> {
        match self {
            RequestContext::Session(facts) => Some(facts.ttl_seconds),
            RequestContext::Approval(facts) => Some(facts.ttl_seconds),
            _ => None,
        }
    }
}

/// One question for the policy engine. Build it with the constructors, which pair each action
/// with the resource and facts it needs; a hand-built request that does not fit is denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzRequest {
    pub principal: UserId,
    pub action: Action,
    pub resource: Resource,
    pub context: RequestContext,
}

impl AuthzRequest {
    pub fn list_points(user: UserId, service: ServiceName, time: i64) -> AuthzRequest {
        AuthzRequest {
            principal: user,
            action: Action::ListPoints,
            resource: Resource::Service(service),
            context: RequestContext::Clock { time },
        }
    }

    /// The requester of `facts` opening a session on `point` of `service`.
    pub fn open_session(
        service: ServiceName,
        point: PointName,
        facts: SessionFacts,
    ) -> AuthzRequest {
        AuthzRequest {
            principal: facts.requester.clone(),
            action: Action::OpenSession,
            resource: Resource::Point { service, point },
            context: RequestContext::Session(facts),
        }
    }

    /// The session's requester capturing `point` of `service` within the session of `facts`.
    pub fn capture(service: ServiceName, point: PointName, facts: SessionFacts) -> AuthzRequest {
        AuthzRequest {
            principal: facts.requester.clone(),
            action: Action::Capture,
            resource: Resource::Point { service, point },
            context: RequestContext::Session(facts),
        }
    }

    pub fn approve_session(
        approver: UserId,
        service: ServiceName,
        point: PointName,
        facts: ApprovalFacts,
    ) -> AuthzRequest {
        AuthzRequest {
            principal: approver,
            action: Action::ApproveSession,
            resource: Resource::Point { service, point },
            context: RequestContext::Approval(facts),
        }
    }

    pub fn close_session(
        user: UserId,
        service: ServiceName,
        facts: SessionControlFacts,
    ) -> AuthzRequest {
        AuthzRequest {
            principal: user,
            action: Action::CloseSession,
            resource: Resource::Service(service),
            context: RequestContext::SessionControl(facts),
        }
    }

    pub fn revoke_session(
        user: UserId,
        service: ServiceName,
        facts: SessionControlFacts,
    ) -> AuthzRequest {
        AuthzRequest {
            principal: user,
            action: Action::RevokeSession,
            resource: Resource::Service(service),
            context: RequestContext::SessionControl(facts),
        }
    }

    pub fn read_audit(user: UserId, time: i64) -> AuthzRequest {
        AuthzRequest {
            principal: user,
            action: Action::ReadAudit,
            resource: Resource::AuditLog,
            context: RequestContext::Clock { time },
        }
    }

    /// Why this request does not fit its action, if it does not.
    pub(crate) fn misfit(&self) -> Option<String> {
        let resource_fits = match self.action {
            Action::ListPoints | Action::CloseSession | Action::RevokeSession => {
                matches!(self.resource, Resource::Service(_))
            }
            Action::OpenSession | Action::Capture | Action::ApproveSession => {
                matches!(self.resource, Resource::Point { .. })
            }
            Action::ReadAudit => matches!(self.resource, Resource::AuditLog),
        };
        let context_fits = match (&self.action, &self.context) {
            (Action::ListPoints | Action::ReadAudit, RequestContext::Clock { .. }) => true,
            (Action::OpenSession | Action::Capture, RequestContext::Session(facts)) => {
                if facts.requester != self.principal {
                    return Some(format!(
                        "the session facts are {}'s, not {}'s",
                        facts.requester, self.principal
                    ));
                }
                true
            }
            (Action::ApproveSession, RequestContext::Approval(_)) => true,
            (Action::CloseSession | Action::RevokeSession, RequestContext::SessionControl(_)) => {
                true
            }
            _ => false,
        };
        if resource_fits && context_fits {
            None
        } else {
            Some(format!(
                "{} does not apply to {} with these facts",
                self.action, self.resource
            ))
        }
    }
}

fn check_reason(reason: &str) -> Result<String, ContextError> {
    let reason = reason.trim();
    if reason.len() > MAX_REASON_LEN {
        return Err(ContextError::ReasonTooLong);
    }
    if reason.chars().any(char::is_control) {
        return Err(ContextError::ReasonControlCharacters);
    }
    Ok(reason.to_owned())
}

fn check_ticket(ticket: Option<&str>) -> Result<Option<String>, ContextError> {
    let Some(ticket) = ticket.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let printable = ticket
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\' | b'`'));
    if ticket.len() > MAX_TICKET_LEN || !printable {
        return Err(ContextError::BadTicket);
    }
    Ok(Some(ticket.to_owned()))
}

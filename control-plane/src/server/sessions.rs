//! Sessions as the control plane runs them: policy decides; the audit log records the decision
//! and stores the session's new state in the same transaction; once that commit is durable the
//! in-memory table follows (the log applies the change to it); then the consequences follow
//! (streams end, agents are told to revoke). A transition the log cannot record is refused
//! with UNAVAILABLE and changes nothing, anywhere.
//!
//! Decisions:
//! - A session covers exact points. Patterns (`payments.*`) are expanded against the live points
//!   of the service when the session opens; an exact name no live instance has is refused with
//!   NOT_FOUND, so a typo is caught before anyone waits for an approval.
//! - Each point is decided on its own; one refused point refuses the whole session (with every
//!   point's reason), and points that need approval make the whole session wait.
//! - Approval: the approver must be allowed `ApproveSession` on every point that asked for
//!   approval; whether the approvals are now enough is asked of the policy again (with the
//!   approvers as verified facts), not counted, so a policy that wants two groups gets two.
//! - Transitions of existing sessions are serialized by one lock, so two approvers or an
//!   approval racing a revoke cannot both win; opening a new session needs no lock.
//! - Expiry is swept every second (see [`super::expiry`]).
//! - Reads (`GetSession`, `ListSessions`) show what the caller may see: their own sessions,
//!   sessions they could approve, and every session if they may revoke its service's sessions.
//!   Every other call on a session the caller may not see is refused (and recorded) with the
//!   very answer a missing session gets, so session ids are no oracle.
//! - A refused call is recorded before it is answered, whatever refused it: policy, the
//!   session's state, or the caller's view. Close and revoke tell the agents after the
//!   transition lock is released, so an agent that does not answer holds up no one else.

use std::collections::BTreeSet;
use std::sync::Arc;

use loupe_proto::audit::event::{
    Action as AuditAction, Decision as AuditDecision, Detail, NewEvent, Resource, ResourceKind,
};
use loupe_proto::v1 as pb;
use tonic::Status;

use super::answers::{
    allow, audit_decision, denied_status, deny, invalid, missing, session_event, transition_status,
};
use super::caller::Caller;
use super::facts::{self, approval_facts, names, session_facts};
use super::table::{commit, find, find_or_record_refusal};
use super::{ControlPlane, now, random_id, request_id};
use crate::policy::{
    AuthzRequest, Decision, PointName, ServiceName, SessionControlFacts, SessionFacts, UserId,
};
use crate::session::{Session, SessionRequest, SessionState, TransitionError};
use crate::state::StoredSession;

/// Expands names and `namespace.*` patterns against the live points.
fn expand_points(
    requested: &[String],
    live: &[String],
    service: &str,
) -> Result<Vec<String>, Status> {
    if requested.is_empty() {
        return Err(Status::invalid_argument(
            "no points requested: name at least one point or pattern (e.g. `checkout.*`)",
        ));
    }
    let mut points = BTreeSet::new();
    for pattern in requested {
        let pattern = pattern.trim();
        if let Some(namespace) = pattern.strip_suffix(".*") {
            PointName::parse(namespace).map_err(invalid)?;
            let prefix = format!("{namespace}.");
            let matched: Vec<&String> = live.iter().filter(|p| p.starts_with(&prefix)).collect();
            if matched.is_empty() {
                return Err(Status::not_found(format!(
                    "no live instance of `{service}` has a point under `{namespace}.`; `loupe points {service}` lists them"
                )));
            }
            points.extend(matched.into_iter().cloned());
        } else {
            PointName::parse(pattern).map_err(invalid)?;
            if !live.iter().any(|p| p == pattern) {
                return Err(Status::not_found(format!(
                    "no live instance of `{service}` has point `{pattern}`; `loupe points {service}` lists them"
                )));
            }
            points.insert(pattern.to_owned());
        }
    }
    Ok(points.into_iter().collect())
}

/// Who may approve `stored`: users allowed on every point that asked for approval.
fn approvers(cp: &ControlPlane, stored: &StoredSession, now: u64) -> Vec<pb::ApproverInfo> {
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
        let these: Vec<pb::ApproverInfo> = cp
            .policy
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

fn response(cp: &ControlPlane, stored: &StoredSession, now: u64) -> pb::SessionResponse {
    pb::SessionResponse {
        session: Some(session_info(stored, now)),
        approvers: approvers(cp, stored, now),
    }
}

/// The checks of an `OpenSession` request before policy: its service, ttl, points (expanded
/// against the live ones) and the facts the policy will see.
fn open_request_facts(
    cp: &ControlPlane,
    user: &UserId,
    request: &pb::OpenSessionRequest,
    now: u64,
) -> Result<(ServiceName, Vec<String>, SessionFacts), Status> {
    let service = ServiceName::parse(request.service.trim()).map_err(invalid)?;
    if request.ttl_seconds == 0 {
        return Err(Status::invalid_argument(
            "ttl must be at least 1 s (e.g. --ttl 15m)",
        ));
    }
    let live: Vec<String> = cp
        .registry()
        .points(service.as_str(), now)
        .into_iter()
        .map(|(point, _)| point.name)
        .collect();
    if live.is_empty() {
        return Err(Status::not_found(format!(
            "no live instance of `{}` is registered; `loupe services` lists what is running",
            service.as_str()
        )));
    }
    let points = expand_points(&request.points, &live, service.as_str())?;
    crate::bounds::SESSION_POINTS
        .check(points.len())
        .map_err(|v| invalid(format!("{v}; name fewer points or narrower patterns")))?;
    let ticket = Some(request.ticket.trim()).filter(|t| !t.is_empty());
    let facts = SessionFacts::new(
        user.clone(),
        request.ttl_seconds,
        &request.reason,
        ticket,
        [],
        i64::try_from(now).unwrap_or(i64::MAX),
    )
    .map_err(invalid)?;
    Ok((service, points, facts))
}

/// Records an `OpenSession` refused before policy (a bad ttl, no live instance, a point that
/// is not there, a blank reason) as `session.requested` denied, then answers it. Every string
/// in the request was bounded on entry, so the record is too.
async fn record_open_refusal(
    cp: &ControlPlane,
    caller: &Caller,
    request: &pb::OpenSessionRequest,
    request_id: &str,
    refusal: Status,
) -> Status {
    let event = NewEvent::new(
        caller.actor.clone(),
        AuditAction::SessionRequested,
        Resource {
            kind: ResourceKind::Session,
            id: String::new(),
        },
        deny(Vec::new(), refusal.message()),
        request_id,
    )
    .service(request.service.trim())
    .detail("ttl_seconds", Detail::UInt(u64::from(request.ttl_seconds)))
    .client_text("reason", request.reason.as_bytes())
    .client_text("ticket", request.ticket.as_bytes());
    cp.refuse(event, refusal).await
}

pub(crate) async fn open(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    request: pb::OpenSessionRequest,
) -> Result<pb::OpenSessionResponse, Status> {
    let user = caller.user()?;
    let request_id = request_id(&request.request_id);
    let now = now();
    let (service, points, facts) = match open_request_facts(cp, &user, &request, now) {
        Ok(checked) => checked,
        Err(refusal) => {
            return Err(record_open_refusal(cp, caller, &request, &request_id, refusal).await);
        }
    };

    let bundle = cp.policy.current();
    let mut policy_ids = BTreeSet::new();
    let mut awaiting = BTreeSet::new();
    let mut approval_points = Vec::new();
    let mut refusals: Vec<(String, Decision)> = Vec::new();
    for point in &points {
        let point_name = PointName::parse(point).map_err(invalid)?;
        let decision = bundle.authorize(&AuthzRequest::open_session(
            service.clone(),
            point_name,
            facts.clone(),
        ));
        if decision.allowed {
            policy_ids.extend(decision.policy_ids);
        } else if !decision.awaiting_approval_from.is_empty() {
            policy_ids.extend(decision.policy_ids);
            awaiting.extend(decision.awaiting_approval_from);
            approval_points.push(point.clone());
        } else {
            refusals.push((point.clone(), decision));
        }
    }

    let draft = Session::open(
        SessionRequest {
            id: random_id("ses"),
            requester: caller.identity.id.clone(),
            service: service.as_str().to_owned(),
            points: points.clone(),
            reason: facts.reason().to_owned(),
            ticket: facts.ticket().map(str::to_owned),
            ttl_seconds: u64::from(request.ttl_seconds),
            approvals_required: u32::try_from(awaiting.len()).unwrap_or(u32::MAX),
        },
        now,
        cp.config.pending_timeout_seconds,
    );
    let details = |event: NewEvent| {
        event
            .detail("points", Detail::List(points.clone()))
            .detail("ttl_seconds", Detail::UInt(u64::from(request.ttl_seconds)))
            .client_text("reason", request.reason.as_bytes())
            .client_text("ticket", request.ticket.as_bytes())
            .detail("policy_version", Detail::Text(bundle.version().to_owned()))
    };

    let over_hard_cap = u64::from(request.ttl_seconds) > cp.config.max_ttl_seconds;
    if over_hard_cap || !refusals.is_empty() {
        let (ids, reason, told) = if over_hard_cap {
            let reason = format!(
                "ttl {} s exceeds this control plane's hard maximum of {} s",
                request.ttl_seconds, cp.config.max_ttl_seconds
            );
            (Vec::new(), reason.clone(), reason)
        } else {
            let ids: BTreeSet<String> = refusals
                .iter()
                .flat_map(|(_, d)| d.policy_ids.iter().cloned())
                .collect();
            let reasons: BTreeSet<String> = refusals
                .iter()
                .flat_map(|(_, d)| d.reasons.iter().cloned())
                .collect();
            // Reasons may name the points they refuse. A point the caller named is no news;
            // one a pattern expanded to is, and only a caller who may list points may learn it.
            let expanded: Vec<&str> = refusals
                .iter()
                .map(|(p, _)| p.as_str())
                .filter(|p| !request.points.iter().any(|named| named.trim() == *p))
                .collect();
            let may_list = || {
                bundle
                    .authorize(&AuthzRequest::list_points(
                        user.clone(),
                        service.clone(),
                        i64::try_from(now).unwrap_or(i64::MAX),
                    ))
                    .allowed
            };
            let mut reason = reasons.iter().cloned().collect::<Vec<_>>().join("; ");
            if refusals.len() < points.len() {
                let refused: Vec<&str> = refusals.iter().map(|(p, _)| p.as_str()).collect();
                reason = format!("{reason} (refused points: {})", refused.join(", "));
            }
            // The log keeps the whole reason; the caller may be told less.
            let told = if !expanded.is_empty() && !may_list() {
                let mut told: Vec<&str> = reasons
                    .iter()
                    .map(String::as_str)
                    .filter(|r| !expanded.iter().any(|p| r.contains(p)))
                    .collect();
                told.push(
                    "points your patterns match are refused to you (and you may not list this \
                     service's points)",
                );
                told.join("; ")
            } else {
                reason.clone()
            };
            (ids.into_iter().collect(), reason, told)
        };
        cp.record(details(session_event(
            caller,
            AuditAction::SessionRequested,
            &draft,
            deny(ids.clone(), reason),
            &request_id,
        )))
        .await?;
        return Err(denied_status(&ids, &told));
    }

    let policy_ids: Vec<String> = policy_ids.into_iter().collect();
    let awaiting: Vec<String> = awaiting.into_iter().collect();
    let reason = if awaiting.is_empty() {
        String::new()
    } else {
        format!("awaiting approval from {}", awaiting.join(", "))
    };
    let mut events = vec![details(session_event(
        caller,
        AuditAction::SessionRequested,
        &draft,
        allow(policy_ids.clone(), reason),
        &request_id,
    ))];
    if draft.state == SessionState::Active {
        events.push(
            session_event(
                caller,
                AuditAction::SessionOpened,
                &draft,
                allow(policy_ids.clone(), ""),
                &request_id,
            )
            .detail("expires_at", Detail::UInt(draft.expires_at)),
        );
    }
    let stored = StoredSession {
        session: draft,
        policy_ids,
        policy_version: bundle.version().to_owned(),
        awaiting_approval_from: awaiting,
        approval_points,
    };
    commit(cp, events, &stored).await?;
    tracing::info!(
        session = %stored.session.id,
        requester = %stored.session.requester,
        service = %stored.session.service,
        state = %stored.session.state,
        "session opened"
    );
    let response = response(cp, &stored, now);
    Ok(pb::OpenSessionResponse {
        session: response.session,
        approvers: response.approvers,
    })
}

/// Refuses (recorded by `event`) a call on a session the caller may not see, answering as if
/// it did not exist.
async fn hide_unless_visible(
    cp: &ControlPlane,
    caller: &Caller,
    stored: &StoredSession,
    now: u64,
    event: impl FnOnce(AuditDecision) -> NewEvent,
) -> Result<(), Status> {
    if visible(cp, caller, stored, now) {
        return Ok(());
    }
    cp.record(event(deny(
        Vec::new(),
        "the caller may not see this session",
    )))
    .await?;
    Err(missing(&stored.session.id))
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

/// Whether `user` may approve `stored` on every point that asked for approval; the decisions.
fn approval_decisions(
    cp: &ControlPlane,
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
    let bundle = cp.policy.current();
    points
        .iter()
        .map(|point| {
            let (service, point) = names(&stored.session.service, point)?;
            Ok(bundle.authorize(&AuthzRequest::approve_session(
                user.clone(),
                service,
                point,
                facts.clone(),
            )))
        })
        .collect()
}

fn merge(decisions: &[Decision]) -> (bool, Vec<String>, String) {
    let allowed = decisions.iter().all(|d| d.allowed);
    let relevant = decisions.iter().filter(|d| d.allowed == allowed);
    let mut ids = BTreeSet::new();
    let mut reasons = BTreeSet::new();
    for decision in relevant {
        ids.extend(decision.policy_ids.iter().cloned());
        reasons.extend(decision.reasons.iter().cloned());
    }
    (
        allowed,
        ids.into_iter().collect(),
        reasons.into_iter().collect::<Vec<_>>().join("; "),
    )
}

pub(crate) async fn approve(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    request: pb::ApproveSessionRequest,
) -> Result<pb::SessionResponse, Status> {
    let user = caller.user()?;
    let request_id = request_id(&request.request_id);
    let _one_transition = cp.sessions.one_transition().await;
    let now = now();
    let stored = find_or_record_refusal(
        cp,
        caller,
        &request.session_id,
        AuditAction::SessionApproved,
        &request_id,
    )
    .await?;
    let event = |decision| {
        session_event(
            caller,
            AuditAction::SessionApproved,
            &stored.session,
            decision,
            &request_id,
        )
        .client_text("comment", request.comment.as_bytes())
    };
    hide_unless_visible(cp, caller, &stored, now, event).await?;
    let state = stored.session.state_at(now);
    if state != SessionState::Pending {
        let reason = format!(
            "session {} is {state}, not pending: there is nothing to approve",
            stored.session.id
        );
        cp.record(event(deny(Vec::new(), reason.clone()))).await?;
        return Err(Status::failed_precondition(reason));
    }
    if caller.identity.id == stored.session.requester {
        let reason = format!(
            "{} requested session {} and cannot approve it; another approver must",
            caller.identity.id, stored.session.id
        );
        cp.record(event(deny(Vec::new(), reason.clone()))).await?;
        return Err(Status::permission_denied(reason));
    }
    let (allowed, ids, reason) = merge(&approval_decisions(cp, &user, &stored, now)?);
    if !allowed {
        cp.record(event(deny(ids.clone(), reason.clone()))).await?;
        return Err(denied_status(&ids, &reason));
    }
    let mut next = stored.clone();
    if let Err(error) = next.session.add_approval(&caller.identity.id, now) {
        return Err(refuse_transition(cp, error, event).await);
    }
    // Enough approvals is the policy's call: ask it again with the approvers as facts.
    let facts = session_facts(&next, now)?;
    let bundle = cp.policy.current();
    let mut satisfied = true;
    for point in &next.session.points {
        let (service, point) = names(&next.session.service, point)?;
        satisfied &= bundle
            .authorize(&AuthzRequest::open_session(service, point, facts.clone()))
            .allowed;
    }
    if satisfied {
        next.session.activate(now);
    }
    let mut events =
        vec![event(allow(ids.clone(), "")).detail("activates", Detail::Bool(satisfied))];
    if satisfied {
        events.push(
            session_event(
                caller,
                AuditAction::SessionOpened,
                &next.session,
                allow(ids, "approved"),
                &request_id,
            )
            .detail("expires_at", Detail::UInt(next.session.expires_at)),
        );
    }
    commit(cp, events, &next).await?;
    Ok(response(cp, &next, now))
}

pub(crate) async fn deny_session(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    request: pb::DenySessionRequest,
) -> Result<pb::SessionResponse, Status> {
    let user = caller.user()?;
    let request_id = request_id(&request.request_id);
    let _one_transition = cp.sessions.one_transition().await;
    let now = now();
    let stored = find_or_record_refusal(
        cp,
        caller,
        &request.session_id,
        AuditAction::SessionDenied,
        &request_id,
    )
    .await?;
    let event = |decision| {
        session_event(
            caller,
            AuditAction::SessionDenied,
            &stored.session,
            decision,
            &request_id,
        )
        .client_text("reason", request.reason.as_bytes())
    };
    hide_unless_visible(cp, caller, &stored, now, event).await?;
    let (allowed, ids, reason) = merge(&approval_decisions(cp, &user, &stored, now)?);
    if !allowed {
        cp.record(event(deny(ids.clone(), reason.clone()))).await?;
        return Err(denied_status(&ids, &reason));
    }
    let mut next = stored.clone();
    let why = if request.reason.trim().is_empty() {
        format!("denied by {}", caller.identity.id)
    } else {
        format!(
            "denied by {}: {}",
            caller.identity.id,
            request.reason.trim()
        )
    };
    if let Err(error) = next.session.deny(&why, now) {
        return Err(refuse_transition(cp, error, event).await);
    }
    commit(cp, vec![event(allow(ids, ""))], &next).await?;
    Ok(response(cp, &next, now))
}

/// Close (`revoke == false`, by the owner as policy says) or revoke (by an administrator).
pub(crate) async fn end(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    session_id: &str,
    reason: &str,
    given_request_id: &str,
    revoke: bool,
) -> Result<pb::SessionResponse, Status> {
    let user = caller.user()?;
    let request_id = request_id(given_request_id);
    let one_transition = cp.sessions.one_transition().await;
    let now = now();
    let ending = if revoke {
        AuditAction::SessionRevoked
    } else {
        AuditAction::SessionClosed
    };
    let stored = find_or_record_refusal(cp, caller, session_id, ending, &request_id).await?;
    let service = facts::service(&stored)?;
    let facts = SessionControlFacts {
        session_owner: facts::owner(&stored)?,
        time: facts::policy_time(now),
    };
    let (question, action) = if revoke {
        (
            AuthzRequest::revoke_session(user, service, facts),
            AuditAction::SessionRevoked,
        )
    } else {
        (
            AuthzRequest::close_session(user, service, facts),
            AuditAction::SessionClosed,
        )
    };
    let event = |decision| {
        session_event(caller, action, &stored.session, decision, &request_id)
            .client_text("reason", reason.as_bytes())
    };
    hide_unless_visible(cp, caller, &stored, now, event).await?;
    let decision = cp.policy.authorize(&question);
    if !decision.allowed {
        let why = decision.reasons.join("; ");
        cp.record(event(audit_decision(&decision))).await?;
        return Err(denied_status(&decision.policy_ids, &why));
    }
    let mut next = stored.clone();
    let why = match (revoke, reason.trim()) {
        (true, "") => format!("revoked by {}", caller.identity.id),
        (true, r) => format!("revoked by {}: {r}", caller.identity.id),
        (false, "") => format!("closed by {}", caller.identity.id),
        (false, r) => format!("closed by {}: {r}", caller.identity.id),
    };
    let result = if revoke {
        next.session.revoke(&why, now)
    } else {
        next.session.close(&why, now)
    };
    if let Err(error) = result {
        return Err(refuse_transition(cp, error, event).await);
    }
    commit(cp, vec![event(audit_decision(&decision))], &next).await?;
    // The agents are told without holding up every other session's transitions: one agent
    // that does not answer must not stall the control plane.
    drop(one_transition);
    // Tokens already minted would stay valid until their `exp`: tell the agents now.
    super::agents::revoke_on_agents(cp, &next.session).await;
    Ok(response(cp, &next, now))
}

/// Whether `caller` may see `stored`.
fn visible(cp: &ControlPlane, caller: &Caller, stored: &StoredSession, now: u64) -> bool {
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
        time: i64::try_from(now).unwrap_or(i64::MAX),
    };
    if cp
        .policy
        .authorize(&AuthzRequest::revoke_session(user.clone(), service, facts))
        .allowed
    {
        return true;
    }
    stored.session.state_at(now) == SessionState::Pending
        && approval_decisions(cp, &user, stored, now)
            .map(|d| merge(&d).0)
            .unwrap_or(false)
}

pub(crate) fn get(
    cp: &ControlPlane,
    caller: &Caller,
    request: pb::GetSessionRequest,
) -> Result<pb::SessionResponse, Status> {
    let now = now();
    let stored = find(cp, &request.session_id)?;
    if !visible(cp, caller, &stored, now) {
        // The same answer as for a session that does not exist: ids are not an oracle.
        return Err(Status::not_found(format!(
            "no session `{}`; `loupe session list` shows yours",
            request.session_id
        )));
    }
    Ok(response(cp, &stored, now))
}

pub(crate) fn list(
    cp: &ControlPlane,
    caller: &Caller,
    request: pb::ListSessionsRequest,
) -> Result<pb::ListSessionsResponse, Status> {
    let after = super::paging::start(&request.page_token)?;
    let now = now();
    let listed = cp
        .sessions
        .all()
        .into_iter()
        .filter(|s| {
            after.as_deref().is_none_or(|after| {
                super::paging::session_key(s.session.requested_at, &s.session.id).as_str() > after
            })
        })
        .filter(|s| request.service.is_empty() || s.session.service == request.service)
        .filter(|s| visible(cp, caller, s, now))
        .map(|s| {
            let key = super::paging::session_key(s.session.requested_at, &s.session.id);
            (key, session_info(&s, now))
        })
        .filter(|(_, info)| request.states.is_empty() || request.states.contains(&info.state));
    let (sessions, next_page_token) = super::paging::page(
        listed,
        None,
        crate::bounds::page_size(request.page_size),
        prost::Message::encoded_len,
    );
    Ok(pb::ListSessionsResponse {
        sessions,
        next_page_token,
    })
}

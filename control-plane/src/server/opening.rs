//! `OpenSession`: a request becomes a session, active at once or waiting for approval — or is
//! refused. Policy decides; the audit log records the request (and, if it opens at once, the
//! opening) with the new session's state in one transaction; only then is it answered.
//!
//! Decisions:
//! - A session covers exact points. Patterns (`payments.*`) are expanded against the live points
//!   of the service when the session opens; an exact name no live instance has is refused with
//!   NOT_FOUND, so a typo is caught before anyone waits for an approval.
//! - Each point is decided on its own; one refused point refuses the whole session (with every
//!   point's reason), and points that need approval make the whole session wait.
//! - A refusal's record keeps every reason; the caller is told less when a reason names a point
//!   only a pattern of theirs reached and they may not list the service's points.
//! - Opening needs no transition lock: a new session races nobody.
//! - A request refused before policy (no live instance, a bad ttl, a point that is not there) is
//!   recorded as `session.requested` denied, like every refusal.

use std::collections::BTreeSet;
use std::sync::Arc;

use loupe_audit::event::{Action as AuditAction, Detail, NewEvent, Resource, ResourceKind};
use loupe_proto::v1 as pb;
use tonic::Status;

use super::answers::{allow, denied_status, deny, invalid, session_event};
use super::caller::Caller;
use super::facts::policy_time;
use super::table::commit;
use super::wire::response;
use super::{ControlPlane, now, random_id, request_id};
use crate::policy::{
    AuthzRequest, Decision, PointName, PolicyBundle, ServiceName, SessionFacts, UserId,
};
use crate::session::{Session, SessionRequest, SessionState};
use crate::state::StoredSession;

/// `OpenSession`; see the module doc.
pub(crate) async fn open(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    request: pb::OpenSessionRequest,
) -> Result<pb::OpenSessionResponse, Status> {
    let user = caller.user()?;
    let request_id = request_id(&request.request_id);
    let now = now();
    let (service, points, facts) = match open_request_facts(cp, &user, &request, now).await {
        Ok(checked) => checked,
        Err(refusal) => {
            return Err(record_open_refusal(cp, caller, &request, &request_id, refusal).await);
        }
    };
    let bundle = cp.policy.current();
    let decided = decide_points(&bundle, &service, &points, &facts)?;
    let draft = draft(
        cp, caller, &service, &points, &facts, &request, &decided, now,
    );
    let details = |event: NewEvent| requested_details(event, &points, &request, bundle.version());

    let may_list = || may_list_points(&bundle, &user, &service, now);
    let max_ttl = cp.config.max_ttl_seconds;
    if let Some(refused) = refusal(max_ttl, &request, &points, &decided, may_list) {
        let event = session_event(
            caller,
            AuditAction::SessionRequested,
            &draft,
            deny(refused.policy_ids.clone(), refused.reason),
            &request_id,
        );
        cp.record(details(event)).await?;
        return Err(denied_status(&refused.policy_ids, &refused.told));
    }

    let stored = decided.into_stored(draft, bundle.version());
    let events = opening_events(caller, &stored, &request_id, details);
    commit(cp, events, &stored).await?;
    tracing::info!(
        session = %stored.session.id,
        requester = %stored.session.requester,
        service = %stored.session.service,
        state = %stored.session.state,
        "session opened"
    );
    let response = response(&cp.policy.current(), &stored, now);
    Ok(pb::OpenSessionResponse {
        session: response.session,
        approvers: response.approvers,
    })
}

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

/// The checks of an `OpenSession` request before policy: its service, ttl, points (expanded
/// against the live ones) and the facts the policy will see.
async fn open_request_facts(
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
        .registry
        .points(service.as_str(), now)
        .await
        .map_err(super::registry_failing)?
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

/// How the policy decided each point of a session.
#[derive(Debug, Default)]
struct PointDecisions {
    /// The policies behind the points allowed or waiting for approval.
    policy_ids: BTreeSet<String>,
    /// The groups whose approval the waiting points need.
    awaiting: BTreeSet<String>,
    /// The points waiting for approval.
    approval_points: Vec<String>,
    /// The points refused, each with its decision.
    refusals: Vec<(String, Decision)>,
}

/// Decides every point on its own.
fn decide_points(
    bundle: &PolicyBundle,
    service: &ServiceName,
    points: &[String],
    facts: &SessionFacts,
) -> Result<PointDecisions, Status> {
    let mut decided = PointDecisions::default();
    for point in points {
        let point_name = PointName::parse(point).map_err(invalid)?;
        let decision = bundle.authorize(&AuthzRequest::open_session(
            service.clone(),
            point_name,
            facts.clone(),
        ));
        if decision.allowed {
            decided.policy_ids.extend(decision.policy_ids);
        } else if !decision.awaiting_approval_from.is_empty() {
            decided.policy_ids.extend(decision.policy_ids);
            decided.awaiting.extend(decision.awaiting_approval_from);
            decided.approval_points.push(point.clone());
        } else {
            decided.refusals.push((point.clone(), decision));
        }
    }
    Ok(decided)
}

impl PointDecisions {
    /// The session `draft` with the decision that admitted it.
    fn into_stored(self, draft: Session, policy_version: &str) -> StoredSession {
        StoredSession {
            session: draft,
            policy_ids: self.policy_ids.into_iter().collect(),
            policy_version: policy_version.to_owned(),
            awaiting_approval_from: self.awaiting.into_iter().collect(),
            approval_points: self.approval_points,
            version: 0,
        }
    }
}

/// The session the request would open: active at once, or pending while any point waits for
/// approval (one approval per group awaited).
#[allow(clippy::too_many_arguments)]
fn draft(
    cp: &ControlPlane,
    caller: &Caller,
    service: &ServiceName,
    points: &[String],
    facts: &SessionFacts,
    request: &pb::OpenSessionRequest,
    decided: &PointDecisions,
    now: u64,
) -> Session {
    Session::open(
        SessionRequest {
            id: random_id("ses"),
            requester: caller.identity.id.clone(),
            service: service.as_str().to_owned(),
            points: points.to_vec(),
            reason: facts.reason().to_owned(),
            ticket: facts.ticket().map(str::to_owned),
            ttl_seconds: u64::from(request.ttl_seconds),
            approvals_required: u32::try_from(decided.awaiting.len()).unwrap_or(u32::MAX),
        },
        now,
        cp.config.pending_timeout_seconds,
    )
}

/// What every record of the request keeps of it.
fn requested_details(
    event: NewEvent,
    points: &[String],
    request: &pb::OpenSessionRequest,
    policy_version: &str,
) -> NewEvent {
    event
        .detail("points", Detail::List(points.to_vec()))
        .detail("ttl_seconds", Detail::UInt(u64::from(request.ttl_seconds)))
        .client_text("reason", request.reason.as_bytes())
        .client_text("ticket", request.ticket.as_bytes())
        .detail("policy_version", Detail::Text(policy_version.to_owned()))
}

/// A refused request: what the log keeps, and what the caller is told.
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    policy_ids: Vec<String>,
    reason: String,
    told: String,
}

/// Why the request for `points` is refused, if it is: a ttl over this control plane's hard
/// maximum, or any point refused by policy. `may_list` says whether the caller may list the
/// service's points.
fn refusal(
    max_ttl_seconds: u64,
    request: &pb::OpenSessionRequest,
    points: &[String],
    decided: &PointDecisions,
    may_list: impl FnOnce() -> bool,
) -> Option<Refusal> {
    if u64::from(request.ttl_seconds) > max_ttl_seconds {
        let reason = format!(
            "ttl {} s exceeds this control plane's hard maximum of {} s",
            request.ttl_seconds, max_ttl_seconds
        );
        return Some(Refusal {
            policy_ids: Vec::new(),
            told: reason.clone(),
            reason,
        });
    }
    if decided.refusals.is_empty() {
        return None;
    }
    Some(policy_refusal(
        &decided.refusals,
        &request.points,
        points.len(),
        may_list,
    ))
}

/// The refusal of the `refused` points, out of `points` in all, that the caller `named` (names
/// and patterns as they asked).
fn policy_refusal(
    refused: &[(String, Decision)],
    named: &[String],
    points: usize,
    may_list: impl FnOnce() -> bool,
) -> Refusal {
    let ids: BTreeSet<String> = refused
        .iter()
        .flat_map(|(_, d)| d.policy_ids.iter().cloned())
        .collect();
    let reasons: BTreeSet<String> = refused
        .iter()
        .flat_map(|(_, d)| d.reasons.iter().cloned())
        .collect();
    // Reasons may name the points they refuse. A point the caller named is no news; one a
    // pattern expanded to is, and only a caller who may list points may learn it.
    let expanded: Vec<&str> = refused
        .iter()
        .map(|(p, _)| p.as_str())
        .filter(|p| !named.iter().any(|named| named.trim() == *p))
        .collect();
    let mut reason = reasons.iter().cloned().collect::<Vec<_>>().join("; ");
    if refused.len() < points {
        let refused: Vec<&str> = refused.iter().map(|(p, _)| p.as_str()).collect();
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
    Refusal {
        policy_ids: ids.into_iter().collect(),
        reason,
        told,
    }
}

/// Whether `user` may list the points of `service`.
fn may_list_points(bundle: &PolicyBundle, user: &UserId, service: &ServiceName, now: u64) -> bool {
    bundle
        .authorize(&AuthzRequest::list_points(
            user.clone(),
            service.clone(),
            policy_time(now),
        ))
        .allowed
}

/// The records of an allowed request: requested (waiting for whom, if anyone), and opened
/// when it is active at once.
fn opening_events(
    caller: &Caller,
    stored: &StoredSession,
    request_id: &str,
    details: impl FnOnce(NewEvent) -> NewEvent,
) -> Vec<NewEvent> {
    let session = &stored.session;
    let reason = if stored.awaiting_approval_from.is_empty() {
        String::new()
    } else {
        format!(
            "awaiting approval from {}",
            stored.awaiting_approval_from.join(", ")
        )
    };
    let mut events = vec![details(session_event(
        caller,
        AuditAction::SessionRequested,
        session,
        allow(stored.policy_ids.clone(), reason),
        request_id,
    ))];
    if session.state == SessionState::Active {
        events.push(
            session_event(
                caller,
                AuditAction::SessionOpened,
                session,
                allow(stored.policy_ids.clone(), ""),
                request_id,
            )
            .detail("expires_at", Detail::UInt(session.expires_at)),
        );
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::fixtures::{NOW, caller, shipped_policies, user};
    use tonic::Code;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    const LIVE: &[&str] = &["checkout.total", "checkout.cart.items", "payments.charge"];

    #[test]
    fn patterns_expand_to_the_live_points_under_them_once_each_in_order() {
        let points = expand_points(
            &strings(&["checkout.*", " checkout.total "]),
            &strings(LIVE),
            "shop",
        )
        .expect("expands");
        assert_eq!(points, strings(&["checkout.cart.items", "checkout.total"]));
    }

    #[test]
    fn a_point_or_pattern_no_live_instance_has_is_not_found_and_none_is_invalid() {
        let live = strings(LIVE);
        let typo = expand_points(&strings(&["checkout.totl"]), &live, "shop").expect_err("typo");
        assert_eq!(typo.code(), Code::NotFound);
        assert!(typo.message().contains("`loupe points shop`"));
        let empty = expand_points(&strings(&["orders.*"]), &live, "shop").expect_err("none");
        assert_eq!(empty.code(), Code::NotFound);
        let nothing = expand_points(&[], &live, "shop").expect_err("nothing asked");
        assert_eq!(nothing.code(), Code::InvalidArgument);
        let bad = expand_points(&strings(&["no spaces.*"]), &live, "shop").expect_err("bad");
        assert_eq!(bad.code(), Code::InvalidArgument);
    }

    fn facts(requester: &str, ttl: u32) -> SessionFacts {
        let user = UserId::parse(&user(requester)).expect("user");
        SessionFacts::new(user, ttl, "INC-1", None, [], policy_time(NOW)).expect("facts")
    }

    fn shop() -> ServiceName {
        ServiceName::parse("shop").expect("service")
    }

    #[test]
    fn each_point_is_decided_on_its_own() {
        let policy = shipped_policies();
        let points = strings(&["checkout.total", "payments.charge"]);
        let decided =
            decide_points(&policy, &shop(), &points, &facts("alice", 900)).expect("decided");
        assert!(decided.refusals.is_empty());
        assert_eq!(decided.approval_points, strings(&["payments.charge"]));
        assert_eq!(
            decided.awaiting.into_iter().collect::<Vec<_>>(),
            strings(&["security"])
        );
        assert!(decided.policy_ids.contains("sre-open-sessions"));

        let too_long =
            decide_points(&policy, &shop(), &points, &facts("alice", 3600)).expect("decided");
        assert_eq!(too_long.refusals.len(), 2, "the ttl cap refuses both");
    }

    #[test]
    fn a_ttl_past_the_hard_maximum_is_refused_before_any_policy_reason() {
        let request = pb::OpenSessionRequest {
            ttl_seconds: 7200,
            ..Default::default()
        };
        let refused =
            refusal(3600, &request, &[], &PointDecisions::default(), || true).expect("refused");
        assert!(refused.policy_ids.is_empty());
        assert_eq!(refused.reason, refused.told);
        assert!(refused.told.contains("hard maximum of 3600 s"));
        let fine = pb::OpenSessionRequest {
            ttl_seconds: 60,
            ..Default::default()
        };
        assert_eq!(
            refusal(3600, &fine, &[], &PointDecisions::default(), || true),
            None
        );
    }

    fn refused(point: &str, policy: &str, reason: &str) -> (String, Decision) {
        (
            point.to_owned(),
            Decision {
                allowed: false,
                policy_ids: vec![policy.to_owned()],
                reasons: vec![reason.to_owned()],
                awaiting_approval_from: Vec::new(),
                policy_version: "test".to_owned(),
            },
        )
    }

    #[test]
    fn a_caller_who_may_not_list_points_learns_no_point_their_pattern_reached() {
        let refusals = [refused(
            "checkout.secret",
            "hide-secret",
            "checkout.secret is off limits",
        )];
        let pattern = strings(&["checkout.*"]);
        let hidden = policy_refusal(&refusals, &pattern, 2, || false);
        assert_eq!(
            hidden.reason, "checkout.secret is off limits (refused points: checkout.secret)",
            "the log keeps it all"
        );
        assert!(!hidden.told.contains("checkout.secret"));
        assert!(
            hidden
                .told
                .contains("you may not list this service's points")
        );
        assert_eq!(hidden.policy_ids, strings(&["hide-secret"]));

        let lister = policy_refusal(&refusals, &pattern, 2, || true);
        assert_eq!(lister.told, lister.reason);
        let named = policy_refusal(&refusals, &strings(&["checkout.secret"]), 1, || {
            panic!("a point the caller named needs no listing right")
        });
        assert_eq!(named.told, "checkout.secret is off limits");
    }

    #[test]
    fn an_allowed_request_is_recorded_as_requested_and_opened_only_when_active() {
        let alice = caller("alice");
        let active = crate::server::fixtures::session("alice", "checkout", &["checkout.total"], 0);
        let events = opening_events(&alice, &active, "req-1", |e| e);
        assert_eq!(events.len(), 2);
        let pending =
            crate::server::fixtures::session("alice", "payments", &["payments.charge"], 1);
        let events = opening_events(&alice, &pending, "req-1", |e| e);
        assert_eq!(events.len(), 1, "opened only once approved");
        assert_eq!(events[0].decision.reason, "awaiting approval from security");
    }
}

//! Capture brokering: one engineer's `Capture` fans out to the live instances of the session's
//! service, and their snapshot streams come back merged, each snapshot audited before it is
//! sent.
//!
//! How a capture runs:
//! 1. Checks, in order: the caller is the session's requester, the condition is within its
//!    bound, the session is active, the point is in it, policy allows `Capture`, the instances
//!    asked for are live and have the point (read from the registry now: with replicas, from
//!    the database, so an instance registered through any replica is armed; unreadable, the
//!    capture is refused `UNAVAILABLE`), the engineer has a capture slot — each refusal
//!    audited (`capture.started`, deny) before it is answered.
//! 2. Every targeted instance is armed at once ([`arming`]). If no instance armed, the call
//!    fails with the agents' own status (so a bad CEL condition is INVALID_ARGUMENT from the
//!    call itself); otherwise the stream starts and reports which instances armed and which
//!    failed, and why.
//! 3. The stream runs until the capture ends ([`stream`]), every snapshot recorded before it is
//!    delivered.
//!
//! Each running capture holds one of its engineer's capture slots (`limits.captures_per_user`,
//! see [`super::slots`]); past them a new capture is RESOURCE_EXHAUSTED, recorded as refused.
//!
//! - [`plan`]: what one capture asked for, and the records that name it.
//! - [`arming`]: tokens minted and capture streams opened on the instances.
//! - [`stream`]: the running capture, from the instances' streams to the engineer's.

pub mod arming;
pub mod plan;
pub mod stream;

use std::sync::Arc;

use loupe_audit::event::{
    Action as AuditAction, Decision as AuditDecision, Detail, NewEvent, Outcome,
};
use loupe_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use self::arming::{arm_all, none_armed};
use self::plan::{MAX_CONDITION_BYTES, Plan};
use self::stream::Run;
use super::answers::{allow, denied_status, deny, missing};
use super::caller::Caller;
use super::facts::{self, session_facts};
use super::slots::CaptureSlot;
use super::table::find_or_record_refusal;
use super::{ControlPlane, now, registry_failing, request_id, utc};
use crate::policy::{AuthzRequest, Decision, PointName};
use crate::registry::Instance;
use crate::session::{Session, SessionState};
use crate::state::StoredSession;

/// Messages waiting for the engineer's stream.
const OUT_QUEUE: usize = 16;

/// The engineer's stream of capture events.
pub type CaptureStream = ReceiverStream<Result<pb::CaptureEvent, Status>>;

/// A capture refused before it started: why, as recorded, and the caller's answer.
#[derive(Debug)]
struct Refused {
    policies: Vec<String>,
    reason: String,
    answer: Status,
}

impl Refused {
    /// A refusal by the control plane's own checks, answered with `answer` carrying `reason`.
    fn new(reason: String, answer: fn(String) -> Status) -> Refused {
        Refused {
            policies: Vec::new(),
            answer: answer(reason.clone()),
            reason,
        }
    }

    /// Records the refusal as `started` makes it, then answers it.
    async fn record(
        self,
        cp: &ControlPlane,
        started: impl FnOnce(AuditDecision) -> NewEvent,
    ) -> Status {
        cp.refuse(started(deny(self.policies, self.reason)), self.answer)
            .await
    }
}

/// `Capture`: starts a capture; see the module doc.
pub(crate) async fn capture(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    request: pb::BrokeredCaptureRequest,
) -> Result<CaptureStream, Status> {
    caller.user()?;
    let now = now();
    let request_id = request_id(&request.request_id);
    let action = AuditAction::CaptureStarted;
    let stored =
        find_or_record_refusal(cp, caller, &request.session_id, action, &request_id).await?;
    let plan = Plan::of(&request, request_id);
    let started = |decision| plan.started_event(caller, &stored.session, decision);

    let asked = &request.session_id;
    if let Err(refused) = check_session(&caller.identity.id, &stored, &plan, asked, now) {
        return Err(refused.record(cp, started).await);
    }
    let decision = authorize(cp, &stored, &plan, now)?;
    let admitted = if decision.allowed {
        match cp.registry.instances(&stored.session.service, now).await {
            Ok(live) => targets_and_slot(cp, caller, live, &plan, &request.instances, &stored),
            Err(error) => Err(Refused::new(
                registry_failing(error).message().to_owned(),
                Status::unavailable,
            )),
        }
    } else {
        Err(refused_by_policy(&decision))
    };
    let (targets, slot) = match admitted {
        Ok(admitted) => admitted,
        Err(refused) => return Err(refused.record(cp, started).await),
    };
    let names = targets
        .iter()
        .map(|i| i.announcement.instance.clone())
        .collect();
    cp.record(started(allow(decision.policy_ids, "")).detail("instances", Detail::List(names)))
        .await?;
    start(cp, caller, &stored.session, plan, targets, slot).await
}

/// The instances to arm, of the `live` ones of the session's service, and the engineer's
/// capture slot (held until the capture's stream ends, however it ends: see `slots`).
fn targets_and_slot(
    cp: &ControlPlane,
    caller: &Caller,
    live: Vec<Instance>,
    plan: &Plan,
    wanted: &[String],
    stored: &StoredSession,
) -> Result<(Vec<Instance>, CaptureSlot), Refused> {
    let service = &stored.session.service;
    let targets = targets(live, wanted, &plan.point, service)?;
    let slot = cp
        .captures
        .take(&caller.identity.id)
        .map_err(|full| Refused::new(full.to_string(), Status::resource_exhausted))?;
    Ok((targets, slot))
}

/// Arms the `targets` and starts the stream — or, when no instance armed, records the capture
/// as ended in error and answers with the agents' own status.
async fn start(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    session: &Session,
    plan: Plan,
    targets: Vec<Instance>,
    slot: CaptureSlot,
) -> Result<CaptureStream, Status> {
    let (armed, failed) = arm_all(cp, session, &plan, &targets).await;
    if armed.is_empty() {
        let (answer, reason) = none_armed(&failed);
        let error = AuditDecision {
            outcome: Outcome::Error,
            policies: Vec::new(),
            reason,
        };
        let _ = cp
            .record(plan.event(caller, session, AuditAction::CaptureEnded, error))
            .await;
        return Err(answer);
    }
    let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
    let run = Run::new(
        Arc::clone(cp),
        caller.clone(),
        session.clone(),
        plan,
        targets.len(),
        slot,
    );
    tokio::spawn(run.drive(armed, failed, out_tx));
    Ok(ReceiverStream::new(out_rx))
}

/// The checks of a capture in `stored` by `caller_id` before policy: whose session it is, the
/// condition's size, the session's state, the point. `asked` is the session id as asked for.
fn check_session(
    caller_id: &str,
    stored: &StoredSession,
    plan: &Plan,
    asked: &str,
    now: u64,
) -> Result<(), Refused> {
    let session = &stored.session;
    if caller_id != session.requester {
        // Not an oracle for other people's sessions: the same answer as a missing one.
        return Err(Refused {
            policies: Vec::new(),
            reason: "only the session's requester may capture in it".to_owned(),
            answer: missing(asked),
        });
    }
    // Checks of the request itself come after the check of who is asking, so that they tell a
    // stranger nothing about someone else's session.
    if plan.condition.len() > MAX_CONDITION_BYTES {
        let reason = format!(
            "the condition is {} bytes; at most {MAX_CONDITION_BYTES} are accepted",
            plan.condition.len()
        );
        return Err(Refused::new(reason, Status::invalid_argument));
    }
    check_active(stored, now)?;
    if !session.points.contains(&plan.point) {
        let reason = format!(
            "point `{}` is not in session {} (its points: {}); open a session that includes it",
            plan.point,
            session.id,
            session.points.join(", ")
        );
        return Err(Refused::new(reason, Status::permission_denied));
    }
    Ok(())
}

/// Whether `stored` is active at `now`; if not, a refusal saying what it is instead.
fn check_active(stored: &StoredSession, now: u64) -> Result<(), Refused> {
    let session = &stored.session;
    let reason = match session.state_at(now) {
        SessionState::Active => return Ok(()),
        SessionState::Pending => format!(
            "session {} is waiting for approval from {}",
            session.id,
            stored.awaiting_approval_from.join(", ")
        ),
        SessionState::Expired => format!(
            "session {} expired at {}; open a new one",
            session.id,
            utc(session.expires_at)
        ),
        state => format!(
            "session {} is {state} ({}); open a new one",
            session.id,
            session.end_reason.clone().unwrap_or_default()
        ),
    };
    Err(Refused::new(reason, Status::failed_precondition))
}

/// The policy's decision on capturing `plan`'s point in `stored` at `now`.
fn authorize(
    cp: &ControlPlane,
    stored: &StoredSession,
    plan: &Plan,
    now: u64,
) -> Result<Decision, Status> {
    let service = facts::service(stored)?;
    let point =
        PointName::parse(&plan.point).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let facts = session_facts(stored, now)?;
    Ok(cp
        .policy
        .authorize(&AuthzRequest::capture(service, point, facts)))
}

/// The refusal of a capture the policy did not allow.
fn refused_by_policy(decision: &Decision) -> Refused {
    let reason = decision.reasons.join("; ");
    Refused {
        policies: decision.policy_ids.clone(),
        answer: denied_status(&decision.policy_ids, &reason),
        reason,
    }
}

/// The instances of `service` to arm: of the `live` ones, those `wanted` (all when none is
/// named) that have `point`. Naming an instance that is not live is refused, and so is a
/// capture no live instance can serve.
fn targets(
    live: Vec<Instance>,
    wanted: &[String],
    point: &str,
    service: &str,
) -> Result<Vec<Instance>, Refused> {
    for wanted in wanted {
        if !live.iter().any(|i| i.announcement.instance == *wanted) {
            let reason =
                format!("no live instance `{wanted}` of `{service}`; `loupe services` lists them");
            return Err(Refused::new(reason, Status::not_found));
        }
    }
    let targets: Vec<Instance> = live
        .into_iter()
        .filter(|i| wanted.is_empty() || wanted.contains(&i.announcement.instance))
        .filter(|i| i.announcement.points.iter().any(|p| p.name == point))
        .collect();
    if targets.is_empty() {
        let reason = format!("no live instance of `{service}` has point `{point}` right now");
        return Err(Refused::new(reason, Status::failed_precondition));
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Announcement;
    use crate::server::fixtures::{NOW, session, user};
    use tonic::Code;

    fn plan(point: &str, condition: &str) -> Plan {
        Plan::of(
            &pb::BrokeredCaptureRequest {
                point: point.into(),
                condition: condition.into(),
                ..Default::default()
            },
            "req-1".into(),
        )
    }

    fn check(caller: &str, stored: &StoredSession, plan: &Plan, now: u64) -> Result<(), Refused> {
        check_session(&user(caller), stored, plan, &stored.session.id, now)
    }

    #[test]
    fn a_stranger_learns_nothing_not_even_that_the_request_is_bad() {
        let stored = session("alice", "checkout", &["checkout.total"], 0);
        let long = "x".repeat(MAX_CONDITION_BYTES + 1);
        let refused = check("bob", &stored, &plan("nope", &long), NOW).expect_err("not bob's");
        let missing = missing(&stored.session.id);
        assert_eq!(refused.answer.code(), missing.code());
        assert_eq!(refused.answer.message(), missing.message());
        assert!(
            refused.reason.contains("only the session's requester"),
            "the log says why"
        );

        let refused =
            check("alice", &stored, &plan("checkout.total", &long), NOW).expect_err("too long");
        assert_eq!(refused.answer.code(), Code::InvalidArgument);
    }

    #[test]
    fn only_an_active_session_captures_and_the_answer_says_what_it_is_instead() {
        let at = plan("payments.charge", "");
        let pending = session("alice", "payments", &["payments.charge"], 1);
        let refused = check("alice", &pending, &at, NOW).expect_err("pending");
        assert_eq!(refused.answer.code(), Code::FailedPrecondition);
        assert!(
            refused
                .reason
                .contains("waiting for approval from security")
        );

        let active = session("alice", "checkout", &["checkout.total"], 0);
        let at = plan("checkout.total", "");
        assert!(check("alice", &active, &at, NOW).is_ok());
        let late = check("alice", &active, &at, active.session.expires_at).expect_err("expired");
        assert!(late.reason.contains("expired at 2025-"), "{}", late.reason);

        let mut closed = active.clone();
        closed.session.close("closed by alice", NOW).expect("close");
        let refused = check("alice", &closed, &at, NOW).expect_err("closed");
        assert!(refused.reason.contains("is closed (closed by alice)"));
    }

    #[test]
    fn a_point_outside_the_session_is_refused_naming_its_points() {
        let stored = session("alice", "checkout", &["checkout.total"], 0);
        let refused = check("alice", &stored, &plan("checkout.cart", ""), NOW).expect_err("out");
        assert_eq!(refused.answer.code(), Code::PermissionDenied);
        assert!(refused.reason.contains("(its points: checkout.total)"));
    }

    fn instance(name: &str, points: &[&str]) -> Instance {
        Instance {
            announcement: Announcement {
                service: "checkout".into(),
                instance: name.into(),
                address: "127.0.0.1:7000".parse().expect("address"),
                version: "1".into(),
                mode: 0,
                points: points
                    .iter()
                    .map(|p| pb::PointInfo {
                        name: (*p).into(),
                        ..Default::default()
                    })
                    .collect(),
            },
            identity: "spiffe://loupe.dev/agent/checkout".into(),
            registered_at: NOW,
            lease_expires_at: NOW + 30,
        }
    }

    fn names(targets: Vec<Instance>) -> Vec<String> {
        targets
            .into_iter()
            .map(|i| i.announcement.instance)
            .collect()
    }

    #[test]
    fn targets_are_the_wanted_live_instances_with_the_point() {
        let live = || {
            vec![
                instance("i-1", &["checkout.total"]),
                instance("i-2", &["checkout.total"]),
                instance("i-3", &["checkout.cart"]),
            ]
        };
        let all = targets(live(), &[], "checkout.total", "checkout").expect("targets");
        assert_eq!(names(all), vec!["i-1", "i-2"]);
        let one = targets(live(), &["i-2".into()], "checkout.total", "checkout").expect("one");
        assert_eq!(names(one), vec!["i-2"]);

        let gone =
            targets(live(), &["i-9".into()], "checkout.total", "checkout").expect_err("not live");
        assert_eq!(gone.answer.code(), Code::NotFound);
        let none = targets(live(), &["i-3".into()], "checkout.total", "checkout")
            .expect_err("no such point there");
        assert_eq!(none.answer.code(), Code::FailedPrecondition);
    }
}

//! Capture brokering: one engineer's `Capture` fans out to the live instances of the session's
//! service, and their snapshot streams come back merged, each snapshot audited before it is
//! sent.
//!
//! How a capture runs:
//! 1. Checks, in order: the caller is the session's requester, the session is active, the point
//!    is in it, policy allows `Capture` — each refusal audited (`capture.started`, deny).
//! 2. Every targeted instance is armed at once, each with its own token (one point, bound to
//!    our client certificate, expiring with the session). The call waits for the arming results:
//!    if no instance armed, it fails with the agents' own status (so a bad CEL condition is
//!    INVALID_ARGUMENT from the call itself); otherwise the stream starts and reports which
//!    instances armed and which failed, and why.
//! 3. One reader task per instance forwards snapshots into a bounded merge queue. When the
//!    engineer reads slowly the queue fills, readers stop reading, HTTP/2 flow control pushes
//!    back to the agents, and the agents drop (and count) rather than queue — nothing here
//!    buffers without bound. An instance that fails mid-stream is reported; the others go on.
//!    When an instance's stream ends because its token expired while the session still runs,
//!    the reader re-arms it with a fresh token.
//! 4. The capture ends at `max_snapshots`, at the timeout, when the session ends (expiry,
//!    close, revoke — whichever comes first), when every instance is done, on shutdown, or when
//!    the engineer goes away. Reader tasks are aborted, which cancels the agent streams; the
//!    agents also stop on their own at the token's `exp`.
//!
//! Each running capture holds one of its engineer's capture slots (`limits.captures_per_user`,
//! see [`super::slots`]); past them a new capture is RESOURCE_EXHAUSTED, recorded as refused.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use loupe_proto::audit::event::{
    Action as AuditAction, Decision as AuditDecision, Detail, NewEvent, Outcome, Resource,
    ResourceKind, SnapshotMeta,
};
use loupe_proto::token::{TokenLimits, TokenRedaction};
use loupe_proto::v1 as pb;
use loupe_proto::v1::agent_client::AgentClient;
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use super::agents::ANSWER_TIMEOUT;
use super::answers::{denied_status, deny, missing};
use super::caller::Caller;
use super::facts::{self, session_facts};
use super::slots::CaptureSlot;
use super::table::find_or_record_refusal;
use super::{ControlPlane, now, random_id, request_id};
use crate::audit::Receipt;
use crate::policy::{AuthzRequest, PointName};
use crate::registry::Instance;
use crate::session::{Session, SessionState};

/// Snapshots delivered when the request does not say.
pub const DEFAULT_MAX_SNAPSHOTS: u64 = 10;
/// Most snapshots one capture may ask for.
pub const MAX_SNAPSHOTS: u64 = 10_000;
/// Longest CEL condition accepted.
const MAX_CONDITION_BYTES: usize = 4096;
/// Snapshots waiting between the instance readers and the engineer.
const MERGE_QUEUE: usize = 32;
/// Messages waiting for the engineer's stream.
const OUT_QUEUE: usize = 16;
/// Snapshots whose audit records may be in the writing at once, per capture.
const AUDITS_IN_FLIGHT: usize = 64;
/// Bytes per snapshot when the request does not say (the agents clamp to their ceiling).
const DEFAULT_SNAPSHOT_BYTES: u64 = 64 * 1024;

/// What one capture asked for, after validation.
#[derive(Clone)]
struct Plan {
    capture_id: String,
    request_id: String,
    point: String,
    condition: String,
    max_snapshots: u64,
    rate: f64,
    limits: pb::CaptureLimits,
    redact: TokenRedaction,
    /// Ends the capture after this long; `None` runs to the session's end.
    timeout: Option<Duration>,
}

/// What an instance reader reports.
enum FromInstance {
    Snapshot(Box<pb::Snapshot>),
    Failed { instance: String, status: Status },
    Ended { instance: String },
}

fn event(
    caller: &Caller,
    session: &Session,
    plan: &Plan,
    action: AuditAction,
    decision: AuditDecision,
) -> NewEvent {
    NewEvent::new(
        caller.actor.clone(),
        action,
        Resource {
            kind: ResourceKind::Point,
            id: plan.point.clone(),
        },
        decision,
        plan.request_id.clone(),
    )
    .session(session.id.clone())
    .service(session.service.clone())
    .point(plan.point.clone())
    .detail("capture_id", Detail::Text(plan.capture_id.clone()))
}

/// Starts a capture; see the module doc.
pub(crate) async fn capture(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    request: pb::BrokeredCaptureRequest,
) -> Result<ReceiverStream<Result<pb::CaptureEvent, Status>>, Status> {
    caller.user()?;
    let now = now();
    let request_id = request_id(&request.request_id);
    let stored = find_or_record_refusal(
        cp,
        caller,
        &request.session_id,
        AuditAction::CaptureStarted,
        &request_id,
    )
    .await?;
    let session = stored.session.clone();
    let plan = Plan {
        capture_id: random_id("cap"),
        request_id,
        point: request.point.trim().to_owned(),
        condition: request.condition.clone(),
        max_snapshots: match request.max_snapshots {
            0 => DEFAULT_MAX_SNAPSHOTS,
            n => n.min(MAX_SNAPSHOTS),
        },
        rate: request.rate_per_second,
        limits: request.limits.unwrap_or_default(),
        redact: TokenRedaction {
            keywords: request.redact_keywords.clone(),
            patterns: request.redact_patterns.clone(),
        },
        timeout: (request.timeout_seconds > 0)
            .then(|| Duration::from_secs(u64::from(request.timeout_seconds))),
    };
    let started = |decision| {
        event(
            caller,
            &session,
            &plan,
            AuditAction::CaptureStarted,
            decision,
        )
        // Bounded: a refused, oversized condition must not bloat the log.
        .client_text(
            "condition",
            &plan.condition.as_bytes()[..plan.condition.len().min(MAX_CONDITION_BYTES + 1)],
        )
        .detail("max_snapshots", Detail::UInt(plan.max_snapshots))
    };

    if caller.identity.id != session.requester {
        // Not an oracle for other people's sessions: the same answer as a missing one.
        let reason = "only the session's requester may capture in it";
        cp.record(started(deny(Vec::new(), reason))).await?;
        return Err(missing(&request.session_id));
    }
    // Checks of the request itself come after the check of who is asking, so that they tell a
    // stranger nothing about someone else's session.
    if plan.condition.len() > MAX_CONDITION_BYTES {
        let reason = format!(
            "the condition is {} bytes; at most {MAX_CONDITION_BYTES} are accepted",
            plan.condition.len()
        );
        cp.record(started(deny(Vec::new(), &reason))).await?;
        return Err(Status::invalid_argument(reason));
    }
    match session.state_at(now) {
        SessionState::Active => {}
        SessionState::Pending => {
            let reason = format!(
                "session {} is waiting for approval from {}",
                session.id,
                stored.awaiting_approval_from.join(", ")
            );
            cp.record(started(deny(Vec::new(), &reason))).await?;
            return Err(Status::failed_precondition(reason));
        }
        SessionState::Expired => {
            let reason = format!(
                "session {} expired at {}; open a new one",
                session.id,
                super::utc(session.expires_at)
            );
            cp.record(started(deny(Vec::new(), &reason))).await?;
            return Err(Status::failed_precondition(reason));
        }
        state => {
            let reason = format!(
                "session {} is {state} ({}); open a new one",
                session.id,
                session.end_reason.clone().unwrap_or_default()
            );
            cp.record(started(deny(Vec::new(), &reason))).await?;
            return Err(Status::failed_precondition(reason));
        }
    }
    if !session.points.contains(&plan.point) {
        let reason = format!(
            "point `{}` is not in session {} (its points: {}); open a session that includes it",
            plan.point,
            session.id,
            session.points.join(", ")
        );
        cp.record(started(deny(Vec::new(), &reason))).await?;
        return Err(Status::permission_denied(reason));
    }
    let service_name = facts::service(&stored)?;
    let point_name =
        PointName::parse(&plan.point).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let decision = cp.policy.authorize(&AuthzRequest::capture(
        service_name,
        point_name,
        session_facts(&stored, now)?,
    ));
    if !decision.allowed {
        let reason = decision.reasons.join("; ");
        cp.record(started(deny(decision.policy_ids.clone(), &reason)))
            .await?;
        return Err(denied_status(&decision.policy_ids, &reason));
    }

    let live = cp
        .registry()
        .instances(&session.service, now)
        .into_iter()
        .cloned()
        .collect::<Vec<Instance>>();
    for wanted in &request.instances {
        if !live.iter().any(|i| i.announcement.instance == *wanted) {
            let reason = format!(
                "no live instance `{wanted}` of `{}`; `loupe services` lists them",
                session.service
            );
            cp.record(started(deny(Vec::new(), &reason))).await?;
            return Err(Status::not_found(reason));
        }
    }
    let targets: Vec<Instance> = live
        .into_iter()
        .filter(|i| {
            request.instances.is_empty() || request.instances.contains(&i.announcement.instance)
        })
        .filter(|i| i.announcement.points.iter().any(|p| p.name == plan.point))
        .collect();
    if targets.is_empty() {
        let reason = format!(
            "no live instance of `{}` has point `{}` right now",
            session.service, plan.point
        );
        cp.record(started(deny(Vec::new(), &reason))).await?;
        return Err(Status::failed_precondition(reason));
    }
    // Held until the capture's stream ends, however it ends (see `slots`).
    let slot = match cp.captures.take(&caller.identity.id) {
        Ok(slot) => slot,
        Err(full) => {
            let reason = full.to_string();
            cp.record(started(deny(Vec::new(), &reason))).await?;
            return Err(Status::resource_exhausted(reason));
        }
    };
    cp.record(
        started(AuditDecision {
            outcome: Outcome::Allow,
            policies: decision.policy_ids.clone(),
            reason: String::new(),
        })
        .detail(
            "instances",
            Detail::List(
                targets
                    .iter()
                    .map(|i| i.announcement.instance.clone())
                    .collect(),
            ),
        ),
    )
    .await?;

    // Arm every instance at once and wait for the answers.
    let mut arming = JoinSet::new();
    for instance in &targets {
        let cp = Arc::clone(cp);
        let instance = instance.clone();
        let session = session.clone();
        let plan = plan.clone();
        arming.spawn(async move {
            let armed = arm(&cp, &session, &instance, &plan).await;
            (instance, armed)
        });
    }
    let mut armed = Vec::new();
    let mut failed = Vec::new();
    while let Some(joined) = arming.join_next().await {
        match joined {
            Ok((instance, Ok(stream))) => armed.push((instance, stream)),
            Ok((instance, Err(status))) => failed.push((instance.announcement.instance, status)),
            Err(error) => tracing::error!(%error, "arming task failed"),
        }
    }
    if armed.is_empty() {
        let (code, detail) = failed
            .first()
            .map(|(i, s)| (s.code(), format!("instance {i}: {}", s.message())))
            .unwrap_or((Code::Unavailable, "no instance answered".to_owned()));
        let all: Vec<String> = failed
            .iter()
            .map(|(i, s)| format!("{i}: {}", s.message()))
            .collect();
        let reason = format!("no instance could be armed: {}", all.join("; "));
        let _ = cp
            .record(event(
                caller,
                &session,
                &plan,
                AuditAction::CaptureEnded,
                AuditDecision {
                    outcome: Outcome::Error,
                    policies: Vec::new(),
                    reason: reason.clone(),
                },
            ))
            .await;
        return Err(Status::new(
            code,
            if failed.len() == 1 { detail } else { reason },
        ));
    }

    let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
    let run = Run {
        cp: Arc::clone(cp),
        caller: caller.clone(),
        session,
        plan,
        targeted: u32::try_from(targets.len()).unwrap_or(u32::MAX),
        _slot: slot,
    };
    tokio::spawn(run.drive(armed, failed, out_tx));
    Ok(ReceiverStream::new(out_rx))
}

/// Mints a token and opens the capture stream on one instance.
async fn arm(
    cp: &ControlPlane,
    session: &Session,
    instance: &Instance,
    plan: &Plan,
) -> Result<(Streaming<pb::Snapshot>, u64), Status> {
    let now = now();
    let limits = TokenLimits {
        max_snapshots: plan.max_snapshots,
        max_bytes: match plan.limits.max_snapshot_bytes {
            0 => DEFAULT_SNAPSHOT_BYTES,
            n => u64::from(n),
        },
        rate: plan.rate,
    };
    let (channel, binding) = cp.agents.channel(
        &instance.announcement.service,
        &instance.announcement.address.to_string(),
    )?;
    let token = cp
        .minter
        .mint(
            session,
            &plan.point,
            &random_id("jti"),
            limits,
            plan.redact.clone(),
            &binding,
            now,
        )
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
    let exp = session.token_expiry(now, cp.config.token_lifetime_seconds);
    let request = pb::CaptureRequest {
        token,
        point: plan.point.clone(),
        condition: plan.condition.clone(),
        max_snapshots: plan.max_snapshots,
        rate_per_second: plan.rate,
        limits: Some(plan.limits),
        redact_keywords: plan.redact.keywords.clone(),
        redact_patterns: plan.redact.patterns.clone(),
    };
    let mut client = AgentClient::new(channel).max_decoding_message_size(super::MAX_RESPONSE_BYTES);
    let response = tokio::time::timeout(ANSWER_TIMEOUT, client.capture(request))
        .await
        .map_err(|_| {
            Status::unavailable(format!(
                "instance {} at {} did not answer within {} s",
                instance.announcement.instance,
                instance.announcement.address,
                ANSWER_TIMEOUT.as_secs()
            ))
        })??;
    Ok((response.into_inner(), exp))
}

struct Run {
    cp: Arc<ControlPlane>,
    caller: Caller,
    session: Session,
    plan: Plan,
    targeted: u32,
    /// The engineer's capture slot, given back when the run ends.
    _slot: CaptureSlot,
}

fn status_event(
    instance: &str,
    state: pb::InstanceState,
    status: Option<&Status>,
    armed: u32,
    targeted: u32,
) -> pb::CaptureEvent {
    pb::CaptureEvent {
        event: Some(pb::capture_event::Event::Instance(pb::InstanceStatus {
            instance: instance.to_owned(),
            state: state as i32,
            code: status
                .map(|s| format!("{:?}", s.code()))
                .unwrap_or_default(),
            detail: status.map(|s| s.message().to_owned()).unwrap_or_default(),
            armed,
            targeted,
        })),
    }
}

impl Run {
    async fn drive(
        self,
        armed: Vec<(Instance, (Streaming<pb::Snapshot>, u64))>,
        failed: Vec<(String, Status)>,
        out: mpsc::Sender<Result<pb::CaptureEvent, Status>>,
    ) {
        let (merge_tx, mut merge_rx) = mpsc::channel(MERGE_QUEUE);
        let mut readers = JoinSet::new();
        let mut live = u32::try_from(armed.len()).unwrap_or(u32::MAX);
        let mut failures = u32::try_from(failed.len()).unwrap_or(u32::MAX);
        for (instance, stream) in armed {
            let _ = out
                .send(Ok(status_event(
                    &instance.announcement.instance,
                    pb::InstanceState::Armed,
                    None,
                    live,
                    self.targeted,
                )))
                .await;
            readers.spawn(read_instance(
                Arc::clone(&self.cp),
                self.session.clone(),
                self.plan.clone(),
                instance,
                stream,
                merge_tx.clone(),
            ));
        }
        drop(merge_tx);
        for (instance, status) in &failed {
            let _ = out
                .send(Ok(status_event(
                    instance,
                    pb::InstanceState::Failed,
                    Some(status),
                    live,
                    self.targeted,
                )))
                .await;
        }

        let mut ends = self.cp.sessions.subscribe(&self.session.id);
        let mut shutdown = self.cp.shutdown.clone();
        let session_left = Duration::from_secs(self.session.expires_at.saturating_sub(now()));
        let session_end = tokio::time::sleep(session_left);
        tokio::pin!(session_end);
        // The engineer's certificate may run out before the session: the stream ends with it.
        let certificate_left = Duration::from_secs(
            u64::try_from(self.caller.identity.not_after)
                .unwrap_or(0)
                .saturating_sub(now()),
        );
        let certificate_end = tokio::time::sleep(certificate_left);
        tokio::pin!(certificate_end);
        let timeout = self
            .plan
            .timeout
            .unwrap_or(session_left + Duration::from_secs(1));
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut delivered = 0u64;
        let mut detail = String::new();

        // Snapshots whose audit record is being written, oldest first. Appends run
        // concurrently (one group commit covers many) but snapshots leave strictly in order,
        // each only after its own record is durable.
        let mut in_flight: InFlight = VecDeque::new();
        let reason = loop {
            let ended_state = *ends.borrow();
            if let Some(state) = ended_state {
                break end_reason_for(state);
            }
            let accepting = in_flight.len() < AUDITS_IN_FLIGHT;
            let step = tokio::select! {
                biased;
                _ = out.closed() => break None,
                _ = shutdown.wait_for(|stop| *stop) => break Some(pb::CaptureEndReason::Shutdown),
                changed = ends.changed() => {
                    if changed.is_err() { break Some(pb::CaptureEndReason::SessionExpired) }
                    continue;
                }
                _ = &mut session_end => break Some(pb::CaptureEndReason::SessionExpired),
                _ = &mut certificate_end => break Some(pb::CaptureEndReason::CertificateExpired),
                _ = &mut deadline => break Some(pb::CaptureEndReason::Timeout),
                audited = oldest(&mut in_flight), if !in_flight.is_empty() => Step::Audited(audited),
                message = merge_rx.recv(), if accepting => Step::Message(message),
            };
            let message = match step {
                Step::Audited(audited) => {
                    let Some((_, snapshot)) = in_flight.pop_front() else {
                        continue;
                    };
                    let failure = match audited {
                        Ok(Ok(_)) => None,
                        Ok(Err(status)) => Some(status),
                        Err(error) => Some(Status::internal(format!("audit task failed: {error}"))),
                    };
                    if let Some(status) = failure {
                        let _ = out.send(Err(status)).await;
                        detail =
                            "the audit log is failing; no snapshot is delivered unaudited".into();
                        break Some(pb::CaptureEndReason::Shutdown);
                    }
                    let event = pb::CaptureEvent {
                        event: Some(pb::capture_event::Event::Snapshot(*snapshot)),
                    };
                    if out.send(Ok(event)).await.is_err() {
                        break None;
                    }
                    delivered += 1;
                    if delivered >= self.plan.max_snapshots {
                        break Some(pb::CaptureEndReason::Complete);
                    }
                    continue;
                }
                Step::Message(message) => message,
            };
            match message {
                // The agents stop on their own at the token's `exp`, which is the session's
                // expiry at the latest: instances ending then is the session ending.
                None if !in_flight.is_empty() => {
                    // Deliver what is already being recorded before concluding.
                    while let Some((handle, snapshot)) = in_flight.pop_front() {
                        if !matches!(handle.await, Ok(Ok(_))) {
                            break;
                        }
                        let event = pb::CaptureEvent {
                            event: Some(pb::capture_event::Event::Snapshot(*snapshot)),
                        };
                        if out.send(Ok(event)).await.is_err() {
                            break;
                        }
                        delivered += 1;
                    }
                    if delivered >= self.plan.max_snapshots {
                        break Some(pb::CaptureEndReason::Complete);
                    }
                    continue;
                }
                None if now() >= self.session.expires_at => {
                    break Some(pb::CaptureEndReason::SessionExpired);
                }
                None => break Some(pb::CaptureEndReason::InstancesDone),
                Some(FromInstance::Snapshot(mut snapshot)) => {
                    let wanted = self.plan.max_snapshots.saturating_sub(delivered);
                    if in_flight.len() as u64 >= wanted {
                        // Enough are already on their way.
                        continue;
                    }
                    // One capture id end to end: the engineer receives the id this log records
                    // (the agent's own id, which changes at every re-arm, is kept beside it), and
                    // the hash covers the snapshot exactly as delivered.
                    let agent_capture_id =
                        std::mem::replace(&mut snapshot.capture_id, self.plan.capture_id.clone());
                    let meta = metadata(&snapshot);
                    let event = NewEvent::snapshot_delivered(
                        self.caller.actor.clone(),
                        &self.session.id,
                        &self.session.service,
                        &self.plan.point,
                        meta,
                        self.plan.request_id.clone(),
                    )
                    .detail("capture_id", Detail::Text(self.plan.capture_id.clone()))
                    .detail("agent_capture_id", Detail::Text(agent_capture_id))
                    .detail("sequence", Detail::UInt(snapshot.sequence));
                    let cp = Arc::clone(&self.cp);
                    let record = tokio::spawn(async move { cp.record(event).await });
                    in_flight.push_back((record, snapshot));
                }
                Some(FromInstance::Failed { instance, status }) => {
                    live = live.saturating_sub(1);
                    failures += 1;
                    let _ = out
                        .send(Ok(status_event(
                            &instance,
                            pb::InstanceState::Failed,
                            Some(&status),
                            live,
                            self.targeted,
                        )))
                        .await;
                }
                Some(FromInstance::Ended { instance }) => {
                    live = live.saturating_sub(1);
                    let _ = out
                        .send(Ok(status_event(
                            &instance,
                            pb::InstanceState::Ended,
                            None,
                            live,
                            self.targeted,
                        )))
                        .await;
                }
            }
        };
        readers.abort_all();

        let ended = match reason {
            Some(reason) => {
                let _ = out
                    .send(Ok(pb::CaptureEvent {
                        event: Some(pb::capture_event::Event::End(pb::CaptureEnd {
                            reason: reason as i32,
                            delivered,
                            failed_instances: failures,
                            detail: detail.clone(),
                        })),
                    }))
                    .await;
                reason.as_str_name().to_owned()
            }
            None => "CANCELLED_BY_CLIENT".to_owned(),
        };
        let event = event(
            &self.caller,
            &self.session,
            &self.plan,
            AuditAction::CaptureEnded,
            AuditDecision {
                outcome: Outcome::Allow,
                policies: Vec::new(),
                reason: ended,
            },
        )
        .detail("delivered", Detail::UInt(delivered))
        .detail("failed_instances", Detail::UInt(u64::from(failures)));
        if let Err(status) = self.cp.record(event).await {
            tracing::error!(capture = %self.plan.capture_id, error = %status.message(), "cannot record the end of a capture");
        }
    }
}

/// Snapshots waiting for their audit record, oldest first.
type InFlight = VecDeque<(JoinHandle<Result<Receipt, Status>>, Box<pb::Snapshot>)>;

/// One turn of a capture's loop.
enum Step {
    Audited(Result<Result<Receipt, Status>, tokio::task::JoinError>),
    Message(Option<FromInstance>),
}

/// The audit record of the oldest snapshot in flight.
async fn oldest(
    in_flight: &mut InFlight,
) -> Result<Result<Receipt, Status>, tokio::task::JoinError> {
    match in_flight.front_mut() {
        Some((handle, _)) => handle.await,
        None => std::future::pending().await,
    }
}

/// The capture's end for a session that reached `state`.
fn end_reason_for(state: SessionState) -> Option<pb::CaptureEndReason> {
    Some(match state {
        SessionState::Closed => pb::CaptureEndReason::SessionClosed,
        SessionState::Revoked => pb::CaptureEndReason::SessionRevoked,
        _ => pb::CaptureEndReason::SessionExpired,
    })
}

/// What the audit log keeps of a snapshot: never the values.
fn metadata(snapshot: &pb::Snapshot) -> SnapshotMeta {
    let bytes = snapshot.encode_to_vec();
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(digest.as_ref());
    SnapshotMeta {
        instance: snapshot.instance.clone(),
        fields: snapshot.fields.iter().map(|f| f.name.clone()).collect(),
        redactions: u64::try_from(snapshot.redacted.len()).unwrap_or(u64::MAX),
        bytes: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
        sha256,
    }
}

/// Forwards one instance's snapshots; re-arms when its token ran out but the session did not.
async fn read_instance(
    cp: Arc<ControlPlane>,
    session: Session,
    plan: Plan,
    instance: Instance,
    first: (Streaming<pb::Snapshot>, u64),
    merge: mpsc::Sender<FromInstance>,
) {
    let name = instance.announcement.instance.clone();
    let (mut stream, mut token_exp) = first;
    loop {
        loop {
            match stream.message().await {
                Ok(Some(snapshot)) => {
                    if merge
                        .send(FromInstance::Snapshot(Box::new(snapshot)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    let _ = merge
                        .send(FromInstance::Failed {
                            instance: name,
                            status,
                        })
                        .await;
                    return;
                }
            }
        }
        let now = now();
        let session_runs = cp
            .sessions
            .get(&session.id)
            .is_some_and(|s| s.session.is_active_at(now));
        if !(session_runs && now + 1 >= token_exp && token_exp < session.expires_at) {
            let _ = merge.send(FromInstance::Ended { instance: name }).await;
            return;
        }
        match arm(&cp, &session, &instance, &plan).await {
            Ok((next, exp)) => {
                stream = next;
                token_exp = exp;
            }
            Err(status) => {
                let _ = merge
                    .send(FromInstance::Failed {
                        instance: name,
                        status,
                    })
                    .await;
                return;
            }
        }
    }
}

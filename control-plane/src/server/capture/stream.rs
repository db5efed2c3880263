//! A running capture: one reader task per armed instance forwards snapshots into a bounded
//! merge queue; the run takes them from there, has each one's audit record written, and sends
//! it to the engineer only once that record is durable, strictly in order.
//!
//! Why it is shaped so:
//! - Nothing buffers without bound. When the engineer reads slowly the out queue fills, the
//!   run stops taking from the merge queue, readers stop reading, HTTP/2 flow control pushes
//!   back to the agents, and the agents drop (and count) rather than queue. At most
//!   [`AUDITS_IN_FLIGHT`] records are in the writing at once; appends run concurrently (one
//!   group commit covers many) but snapshots leave in the order they came.
//! - No snapshot is delivered unaudited: a record that fails ends the capture.
//! - An instance that fails mid-stream is reported and the others go on; an instance whose
//!   token expired while the session still runs is re-armed with a fresh token.
//! - The capture ends at `max_snapshots`, at its timeout, when the session ends (expiry, close,
//!   revoke — whichever comes first), when the engineer's certificate expires, when every
//!   instance is done (unless the session, read as stored then, has ended: the agents stop
//!   when any replica tells them so, which may be before this one has heard, and the engineer
//!   is told the session's end, not the instances'), on shutdown, or when the engineer goes
//!   away; its end is recorded
//!   (`capture.ended`) with what it delivered. Reader tasks are aborted, which cancels the
//!   agent streams; the agents also stop on their own at the token's `exp`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use loupe_audit::event::{Action as AuditAction, Detail, NewEvent, SnapshotMeta};
use loupe_proto::v1 as pb;
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tonic::{Status, Streaming};

use super::arming::{Armed, arm};
use super::plan::Plan;
use crate::audit::Receipt;
use crate::registry::Instance;
use crate::server::answers::allow;
use crate::server::caller::Caller;
use crate::server::slots::CaptureSlot;
use crate::server::{ControlPlane, now};
use crate::session::{Session, SessionState};

/// Snapshots waiting between the instance readers and the engineer.
const MERGE_QUEUE: usize = 32;
/// Snapshots whose audit records may be in the writing at once, per capture.
const AUDITS_IN_FLIGHT: usize = 64;

/// Where the engineer's stream of capture events goes.
pub(crate) type Out = mpsc::Sender<Result<pb::CaptureEvent, Status>>;

/// One capture, from its first armed instance to its end.
pub(crate) struct Run {
    cp: Arc<ControlPlane>,
    caller: Caller,
    session: Session,
    plan: Plan,
    /// How many instances were targeted.
    targeted: u32,
    /// The engineer's capture slot, given back when the run ends.
    _slot: CaptureSlot,
}

/// What an instance reader reports.
enum FromInstance {
    Snapshot(Box<pb::Snapshot>),
    Failed { instance: String, status: Status },
    Ended { instance: String },
}

/// Snapshots waiting for their audit record, oldest first.
type InFlight = VecDeque<(JoinHandle<Result<Receipt, Status>>, Box<pb::Snapshot>)>;

/// One turn of a capture's loop.
enum Step {
    Audited(Result<Result<Receipt, Status>, tokio::task::JoinError>),
    Message(Option<FromInstance>),
}

/// Whether the capture goes on after a step, or how it ended (`None`: the engineer left).
enum Flow {
    Continue,
    End(Option<pb::CaptureEndReason>),
}

/// What a capture has done so far: instances still streaming, instances failed, snapshots
/// delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    live: u32,
    failures: u32,
    delivered: u64,
}

impl Tally {
    fn new(armed: usize, failed: usize) -> Tally {
        Tally {
            live: u32::try_from(armed).unwrap_or(u32::MAX),
            failures: u32::try_from(failed).unwrap_or(u32::MAX),
            delivered: 0,
        }
    }

    /// Whether one more snapshot is wanted, with `in_flight` already on their way.
    fn wants_another(&self, max_snapshots: u64, in_flight: usize) -> bool {
        (in_flight as u64) < max_snapshots.saturating_sub(self.delivered)
    }

    fn complete(&self, max_snapshots: u64) -> bool {
        self.delivered >= max_snapshots
    }

    fn instance_failed(&mut self) {
        self.live = self.live.saturating_sub(1);
        self.failures += 1;
    }

    fn instance_ended(&mut self) {
        self.live = self.live.saturating_sub(1);
    }
}

/// How long until each of a capture's ends: the session's, the engineer's certificate's, and
/// its own timeout (a second past the session's when it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Deadlines {
    session: Duration,
    certificate: Duration,
    timeout: Duration,
}

impl Deadlines {
    fn at(
        now: u64,
        session_expires_at: u64,
        certificate_not_after: i64,
        timeout: Option<Duration>,
    ) -> Deadlines {
        let session = Duration::from_secs(session_expires_at.saturating_sub(now));
        // The engineer's certificate may run out before the session: the stream ends with it.
        let certificate = Duration::from_secs(
            u64::try_from(certificate_not_after)
                .unwrap_or(0)
                .saturating_sub(now),
        );
        Deadlines {
            session,
            certificate,
            timeout: timeout.unwrap_or(session + Duration::from_secs(1)),
        }
    }
}

impl Run {
    /// The capture of `plan` by `caller` in `session` over `targeted` instances, holding the
    /// engineer's capture `slot` until it ends.
    pub(crate) fn new(
        cp: Arc<ControlPlane>,
        caller: Caller,
        session: Session,
        plan: Plan,
        targeted: usize,
        slot: CaptureSlot,
    ) -> Run {
        Run {
            cp,
            caller,
            session,
            plan,
            targeted: u32::try_from(targeted).unwrap_or(u32::MAX),
            _slot: slot,
        }
    }

    /// Streams the capture to `out` from the `armed` instances (the `failed` ones reported)
    /// until it ends, then records its end.
    pub(crate) async fn drive(
        self,
        armed: Vec<(Instance, Armed)>,
        failed: Vec<(String, Status)>,
        out: Out,
    ) {
        let mut tally = Tally::new(armed.len(), failed.len());
        let (merge, mut readers) = self.start_readers(armed, &failed, &out, &tally).await;
        let mut detail = String::new();
        let reason = self.forward(merge, &out, &mut tally, &mut detail).await;
        readers.abort_all();
        self.finish(reason, &out, &tally, detail).await;
    }

    /// Starts one reader per armed instance and tells the engineer which instances armed and
    /// which failed.
    async fn start_readers(
        &self,
        armed: Vec<(Instance, Armed)>,
        failed: &[(String, Status)],
        out: &Out,
        tally: &Tally,
    ) -> (mpsc::Receiver<FromInstance>, JoinSet<()>) {
        let (merge_tx, merge_rx) = mpsc::channel(MERGE_QUEUE);
        let mut readers = JoinSet::new();
        for (instance, stream) in armed {
            let name = &instance.announcement.instance;
            let armed = status_event(
                name,
                pb::InstanceState::Armed,
                None,
                tally.live,
                self.targeted,
            );
            let _ = out.send(Ok(armed)).await;
            readers.spawn(read_instance(
                Arc::clone(&self.cp),
                self.session.clone(),
                self.plan.clone(),
                instance,
                stream,
                merge_tx.clone(),
            ));
        }
        for (instance, status) in failed {
            let state = pb::InstanceState::Failed;
            let failed = status_event(instance, state, Some(status), tally.live, self.targeted);
            let _ = out.send(Ok(failed)).await;
        }
        (merge_rx, readers)
    }

    /// Forwards snapshots, each once its record is durable, until the capture ends; how it
    /// ended (`None`: the engineer went away).
    async fn forward(
        &self,
        mut merge: mpsc::Receiver<FromInstance>,
        out: &Out,
        tally: &mut Tally,
        detail: &mut String,
    ) -> Option<pb::CaptureEndReason> {
        let mut ends = self.cp.sessions.subscribe(&self.session.id);
        let mut shutdown = self.cp.shutdown.clone();
        let not_after = self.caller.identity.not_after;
        let deadlines = Deadlines::at(now(), self.session.expires_at, not_after, self.plan.timeout);
        let session_end = tokio::time::sleep(deadlines.session);
        tokio::pin!(session_end);
        let certificate_end = tokio::time::sleep(deadlines.certificate);
        tokio::pin!(certificate_end);
        let deadline = tokio::time::sleep(deadlines.timeout);
        tokio::pin!(deadline);
        let mut in_flight: InFlight = VecDeque::new();
        loop {
            let ended_state = *ends.borrow();
            if let Some(state) = ended_state {
                // The engineer is told why (`revoked by carol: …`), as the session says.
                *detail = self
                    .cp
                    .sessions
                    .get(&self.session.id)
                    .and_then(|s| s.session.end_reason)
                    .unwrap_or_default();
                return end_reason_for(state);
            }
            let accepting = in_flight.len() < AUDITS_IN_FLIGHT;
            let step = tokio::select! {
                biased;
                _ = out.closed() => return None,
                _ = shutdown.wait_for(|stop| *stop) => return Some(pb::CaptureEndReason::Shutdown),
                changed = ends.changed() => {
                    if changed.is_err() { return Some(pb::CaptureEndReason::SessionExpired) }
                    continue;
                }
                _ = &mut session_end => return Some(pb::CaptureEndReason::SessionExpired),
                _ = &mut certificate_end => return Some(pb::CaptureEndReason::CertificateExpired),
                _ = &mut deadline => return Some(pb::CaptureEndReason::Timeout),
                audited = oldest(&mut in_flight), if !in_flight.is_empty() => Step::Audited(audited),
                message = merge.recv(), if accepting => Step::Message(message),
            };
            let flow = match step {
                Step::Audited(audited) => {
                    self.deliver_oldest(audited, &mut in_flight, out, tally, detail)
                        .await
                }
                // The agents stop on their own at the token's `exp`, which is the session's
                // expiry at the latest: instances ending then is the session ending. They also
                // stop when told that the session ended — by whichever replica decided it,
                // maybe before this one heard — so the session is read as stored now first: if
                // it ended, that (with its reason) is why the capture ends.
                Step::Message(None) => {
                    if self.ended_as_stored(&ends).await {
                        continue;
                    }
                    self.instances_done(&mut in_flight, out, tally).await
                }
                Step::Message(Some(message)) => {
                    self.take(message, &mut in_flight, out, tally).await;
                    Flow::Continue
                }
            };
            if let Flow::End(reason) = flow {
                return reason;
            }
        }
    }

    /// Sends the oldest snapshot in flight, whose record was `audited`.
    async fn deliver_oldest(
        &self,
        audited: Result<Result<Receipt, Status>, tokio::task::JoinError>,
        in_flight: &mut InFlight,
        out: &Out,
        tally: &mut Tally,
        detail: &mut String,
    ) -> Flow {
        let Some((_, snapshot)) = in_flight.pop_front() else {
            return Flow::Continue;
        };
        let failure = match audited {
            Ok(Ok(_)) => None,
            Ok(Err(status)) => Some(status),
            Err(error) => Some(Status::internal(format!("audit task failed: {error}"))),
        };
        if let Some(status) = failure {
            let _ = out.send(Err(status)).await;
            *detail = "the audit log is failing; no snapshot is delivered unaudited".into();
            return Flow::End(Some(pb::CaptureEndReason::Shutdown));
        }
        if out.send(Ok(snapshot_event(*snapshot))).await.is_err() {
            return Flow::End(None);
        }
        tally.delivered += 1;
        if tally.complete(self.plan.max_snapshots) {
            return Flow::End(Some(pb::CaptureEndReason::Complete));
        }
        Flow::Continue
    }

    /// Whether the session has ended as the database holds it now (taken into the table, so
    /// `ends` says how). A database that cannot be read leaves the table as it was.
    async fn ended_as_stored(
        &self,
        ends: &tokio::sync::watch::Receiver<Option<SessionState>>,
    ) -> bool {
        if ends.borrow().is_some() {
            return true;
        }
        if let Err(status) = crate::server::fanout::current(&self.cp, &self.session.id).await {
            tracing::warn!(session = %self.session.id, error = %status.message(), "cannot read the session as its capture's instances end");
        }
        ends.borrow().is_some()
    }

    /// Every reader is done: deliver what is already being recorded, then conclude.
    async fn instances_done(&self, in_flight: &mut InFlight, out: &Out, tally: &mut Tally) -> Flow {
        if in_flight.is_empty() {
            return Flow::End(Some(if now() >= self.session.expires_at {
                pb::CaptureEndReason::SessionExpired
            } else {
                pb::CaptureEndReason::InstancesDone
            }));
        }
        while let Some((handle, snapshot)) = in_flight.pop_front() {
            if !matches!(handle.await, Ok(Ok(_))) {
                break;
            }
            if out.send(Ok(snapshot_event(*snapshot))).await.is_err() {
                break;
            }
            tally.delivered += 1;
        }
        if tally.complete(self.plan.max_snapshots) {
            return Flow::End(Some(pb::CaptureEndReason::Complete));
        }
        Flow::Continue
    }

    /// Takes one report of an instance: a snapshot has its record written (unless enough are
    /// on their way already); a failure or an end is told to the engineer.
    async fn take(
        &self,
        message: FromInstance,
        in_flight: &mut InFlight,
        out: &Out,
        tally: &mut Tally,
    ) {
        let (instance, state, status) = match message {
            FromInstance::Snapshot(mut snapshot) => {
                if tally.wants_another(self.plan.max_snapshots, in_flight.len()) {
                    let event =
                        delivery_event(&self.caller, &self.session, &self.plan, &mut snapshot);
                    let cp = Arc::clone(&self.cp);
                    let record = tokio::spawn(async move { cp.record(event).await });
                    in_flight.push_back((record, snapshot));
                }
                return;
            }
            FromInstance::Failed { instance, status } => {
                tally.instance_failed();
                (instance, pb::InstanceState::Failed, Some(status))
            }
            FromInstance::Ended { instance } => {
                tally.instance_ended();
                (instance, pb::InstanceState::Ended, None)
            }
        };
        let event = status_event(&instance, state, status.as_ref(), tally.live, self.targeted);
        let _ = out.send(Ok(event)).await;
    }

    /// Tells the engineer how the capture ended (unless they left) and records its end.
    async fn finish(
        &self,
        reason: Option<pb::CaptureEndReason>,
        out: &Out,
        tally: &Tally,
        detail: String,
    ) {
        if let Some(reason) = reason {
            let _ = out.send(Ok(end_event(reason, tally, detail))).await;
        }
        let ended = reason.map_or("CANCELLED_BY_CLIENT", |r| r.as_str_name());
        let event = self
            .plan
            .event(
                &self.caller,
                &self.session,
                AuditAction::CaptureEnded,
                allow(Vec::new(), ended),
            )
            .detail("delivered", Detail::UInt(tally.delivered))
            .detail("failed_instances", Detail::UInt(u64::from(tally.failures)));
        if let Err(status) = self.cp.record(event).await {
            tracing::error!(capture = %self.plan.capture_id, error = %status.message(), "cannot record the end of a capture");
        }
    }
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

/// The record of `snapshot`'s delivery. One capture id end to end: the engineer receives the
/// id this log records (the agent's own id, which changes at every re-arm, is kept beside it),
/// so the snapshot's capture id is replaced first, and the hash covers it exactly as delivered.
fn delivery_event(
    caller: &Caller,
    session: &Session,
    plan: &Plan,
    snapshot: &mut pb::Snapshot,
) -> NewEvent {
    let agent_capture_id = std::mem::replace(&mut snapshot.capture_id, plan.capture_id.clone());
    NewEvent::snapshot_delivered(
        caller.actor.clone(),
        &session.id,
        &session.service,
        &plan.point,
        metadata(snapshot),
        plan.request_id.clone(),
    )
    .detail("capture_id", Detail::Text(plan.capture_id.clone()))
    .detail("agent_capture_id", Detail::Text(agent_capture_id))
    .detail("sequence", Detail::UInt(snapshot.sequence))
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

fn snapshot_event(snapshot: pb::Snapshot) -> pb::CaptureEvent {
    pb::CaptureEvent {
        event: Some(pb::capture_event::Event::Snapshot(snapshot)),
    }
}

fn end_event(reason: pb::CaptureEndReason, tally: &Tally, detail: String) -> pb::CaptureEvent {
    pb::CaptureEvent {
        event: Some(pb::capture_event::Event::End(pb::CaptureEnd {
            reason: reason as i32,
            delivered: tally.delivered,
            failed_instances: tally.failures,
            detail,
        })),
    }
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

/// Forwards one instance's snapshots; re-arms when its token ran out but the session did not.
async fn read_instance(
    cp: Arc<ControlPlane>,
    session: Session,
    plan: Plan,
    instance: Instance,
    first: Armed,
    merge: mpsc::Sender<FromInstance>,
) {
    if let Some(last) = follow_instance(&cp, &session, &plan, &instance, first, &merge).await {
        let _ = merge.send(last).await;
    }
}

/// Follows one instance's streams, re-arming it as its tokens run out, until it is done; its
/// last report (none when the run stopped listening).
async fn follow_instance(
    cp: &ControlPlane,
    session: &Session,
    plan: &Plan,
    instance: &Instance,
    first: Armed,
    merge: &mpsc::Sender<FromInstance>,
) -> Option<FromInstance> {
    let name = || instance.announcement.instance.clone();
    let (mut stream, mut token_exp) = first;
    loop {
        match forward_stream(&mut stream, merge).await {
            Ok(()) => {}
            Err(None) => return None,
            Err(Some(status)) => {
                return Some(FromInstance::Failed {
                    instance: name(),
                    status,
                });
            }
        }
        let now = now();
        let session_runs = cp
            .sessions
            .get(&session.id)
            .is_some_and(|s| s.session.is_active_at(now));
        if !rearm_due(session_runs, now, token_exp, session.expires_at) {
            return Some(FromInstance::Ended { instance: name() });
        }
        (stream, token_exp) = match arm(cp, session, instance, plan).await {
            Ok(armed) => armed,
            Err(status) => {
                return Some(FromInstance::Failed {
                    instance: name(),
                    status,
                });
            }
        };
    }
}

/// Forwards `stream` into `merge` until it ends (`Ok`), fails (`Err(Some)`), or the run is no
/// longer listening (`Err(None)`).
async fn forward_stream(
    stream: &mut Streaming<pb::Snapshot>,
    merge: &mpsc::Sender<FromInstance>,
) -> Result<(), Option<Status>> {
    loop {
        match stream.message().await {
            Ok(Some(snapshot)) => merge
                .send(FromInstance::Snapshot(Box::new(snapshot)))
                .await
                .map_err(|_| None)?,
            Ok(None) => return Ok(()),
            Err(status) => return Err(Some(status)),
        }
    }
}

/// Whether an instance whose stream ended at `now` is re-armed: its token ran out (within a
/// second) while its session runs on past the token.
fn rearm_due(session_runs: bool, now: u64, token_exp: u64, session_expires_at: u64) -> bool {
    session_runs && now + 1 >= token_exp && token_exp < session_expires_at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::fixtures::{NOW, caller, session};

    #[test]
    fn a_tally_wants_no_more_than_are_still_missing() {
        let mut tally = Tally::new(2, 1);
        assert!(tally.wants_another(3, 2));
        assert!(!tally.wants_another(3, 3), "three on their way are enough");
        tally.delivered = 2;
        assert!(tally.wants_another(3, 0));
        assert!(!tally.wants_another(3, 1));
        assert!(!tally.complete(3));
        tally.delivered = 3;
        assert!(tally.complete(3));
        assert!(!tally.wants_another(3, 0));

        tally.instance_failed();
        tally.instance_ended();
        tally.instance_ended();
        assert_eq!((tally.live, tally.failures), (0, 2), "never below zero");
    }

    #[test]
    fn deadlines_follow_the_session_the_certificate_and_the_timeout() {
        let cert = i64::try_from(NOW + 100).expect("time");
        let d = Deadlines::at(NOW, NOW + 60, cert, None);
        assert_eq!(d.session, Duration::from_secs(60));
        assert_eq!(d.certificate, Duration::from_secs(100));
        assert_eq!(
            d.timeout,
            Duration::from_secs(61),
            "no timeout: past the session's end"
        );
        let d = Deadlines::at(NOW, NOW + 60, cert, Some(Duration::from_secs(5)));
        assert_eq!(d.timeout, Duration::from_secs(5));
        let d = Deadlines::at(NOW, NOW - 1, -1, None);
        assert_eq!(
            (d.session, d.certificate),
            (Duration::ZERO, Duration::ZERO),
            "already over"
        );
    }

    #[test]
    fn a_session_end_names_how_the_session_ended() {
        assert_eq!(
            end_reason_for(SessionState::Closed),
            Some(pb::CaptureEndReason::SessionClosed)
        );
        assert_eq!(
            end_reason_for(SessionState::Revoked),
            Some(pb::CaptureEndReason::SessionRevoked)
        );
        assert_eq!(
            end_reason_for(SessionState::Expired),
            Some(pb::CaptureEndReason::SessionExpired)
        );
        assert_eq!(
            end_reason_for(SessionState::Denied),
            Some(pb::CaptureEndReason::SessionExpired)
        );
    }

    #[test]
    fn a_delivery_record_names_our_capture_id_and_hashes_the_snapshot_as_delivered() {
        let stored = session("alice", "checkout", &["checkout.total"], 0);
        let plan = Plan::of(
            &pb::BrokeredCaptureRequest {
                point: "checkout.total".into(),
                ..Default::default()
            },
            "req-1".into(),
        );
        let mut snapshot = pb::Snapshot {
            capture_id: "agent-cap-7".into(),
            instance: "i-1".into(),
            sequence: 4,
            fields: vec![pb::Field {
                name: "total".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let event = delivery_event(&caller("alice"), &stored.session, &plan, &mut snapshot);
        assert_eq!(
            snapshot.capture_id, plan.capture_id,
            "the engineer gets our id"
        );
        assert_eq!(
            event.details.get("agent_capture_id"),
            Some(&Detail::Text("agent-cap-7".into()))
        );
        assert_eq!(event.details.get("sequence"), Some(&Detail::UInt(4)));
        let meta = metadata(&snapshot);
        assert_eq!(meta.fields, vec!["total".to_owned()]);
        let digest = ring::digest::digest(&ring::digest::SHA256, &snapshot.encode_to_vec());
        assert_eq!(meta.sha256.as_slice(), digest.as_ref());
    }

    #[test]
    fn an_instance_is_rearmed_only_when_its_token_ran_out_before_its_session() {
        let expires = NOW + 900;
        assert!(
            rearm_due(true, NOW, NOW + 1, expires),
            "token out, session on"
        );
        assert!(!rearm_due(false, NOW, NOW + 1, expires), "session ended");
        assert!(
            !rearm_due(true, NOW, NOW + 30, expires),
            "the agent ended it early"
        );
        assert!(
            !rearm_due(true, expires, expires, expires),
            "the token ran to the session's end"
        );
    }

    #[test]
    fn an_instance_status_carries_the_code_and_the_counts() {
        let status = Status::unavailable("gone");
        let event = status_event("i-1", pb::InstanceState::Failed, Some(&status), 1, 3);
        let Some(pb::capture_event::Event::Instance(instance)) = event.event else {
            panic!("an instance status");
        };
        assert_eq!(
            (
                instance.code.as_str(),
                instance.detail.as_str(),
                instance.armed,
                instance.targeted
            ),
            ("Unavailable", "gone", 1, 3)
        );
    }
}

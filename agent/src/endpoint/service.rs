//! The `loupe.v1.Agent` service.
//!
//! Every call first checks who is calling: the peer certificate's identity must be the
//! configured control plane. A capture then needs a session token that verifies against this
//! agent's keys, is bound to that same certificate, grants the point, and belongs to a session
//! that is not revoked, and the token must not have been used before (see
//! [`super::replay`]: a verified token is spent by the call that presents it). The request can tighten the token's limits, never loosen them. The
//! agent ends the stream on its own at the token's `exp`, at revocation, and when the peer
//! certificate expires — it does not rely on the control plane for any of them.
//!
//! Such an end for cause cuts the stream at once, even when the client reads slowly: snapshots
//! still queued for it are dropped, and only what the transport already holds can arrive. A
//! capture that completes delivers everything it captured. A token already past `exp` by the
//! agent's clock is refused even within the verification leeway, and every call re-checks the
//! peer certificate's validity, since an HTTP/2 connection outlives its handshake.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use loupe_proto::v1 as pb;
use loupe_trust::identity::PeerIdentity;
use loupe_trust::token::{SessionClaims, TokenError, TokenErrorClass, unix_now};
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::capture::EndReason;
use crate::capture::budget::RateLimit;
use crate::capture::engine::{ArmError, Engine};
use crate::capture::spec::CaptureSpec;
use crate::capture::stream::CaptureStream;
use crate::condition::MAX_CONDITION_LEN;
use crate::endpoint::replay::ReplayError;
use crate::endpoint::sessions::EndpointState;
use crate::limits::LimitRequest;
use crate::point::{PointRegistry, SiteKind};

/// Most extra redaction keywords or patterns one request may add.
const MAX_REQUEST_REDACTIONS: usize = 64;
/// Snapshots buffered per stream toward a slow client before back-pressure reaches the engine
/// (whose own queue then drops and counts).
const STREAM_BUFFER: usize = 16;

pub(crate) struct AgentService {
    state: Arc<EndpointState>,
}

impl AgentService {
    pub fn new(state: Arc<EndpointState>) -> AgentService {
        AgentService { state }
    }

    /// The caller's certificate, if it is the control plane's.
    fn control_plane_peer<T>(
        &self,
        request: &Request<T>,
    ) -> Result<(CertificateDer<'static>, PeerIdentity), Status> {
        let Some(chain) = request.peer_certs() else {
            self.state.deny("no_client_certificate");
            return Err(Status::unauthenticated(
                "no client certificate: this agent serves only the control plane over mTLS",
            ));
        };
        let Some(leaf) = chain.first().cloned() else {
            self.state.deny("no_client_certificate");
            return Err(Status::unauthenticated("empty client certificate chain"));
        };
        let identity = self.state.identity.identify(&leaf).map_err(|error| {
            self.state.deny("peer_identity");
            Status::unauthenticated(error.to_string())
        })?;
        // The handshake checked the certificate's validity, but an HTTP/2 connection outlives
        // it: every call checks again, so a connection opened with a certificate that has
        // since expired serves nothing more.
        let now = unix_now_precise();
        if now >= Duration::from_secs(u64::try_from(identity.not_after).unwrap_or(0)) {
            self.state.deny("peer_certificate_expired");
            return Err(Status::unauthenticated(format!(
                "the client certificate of `{}` expired at {} (Unix seconds); reconnect with a renewed certificate",
                identity.id, identity.not_after
            )));
        }
        if now < Duration::from_secs(u64::try_from(identity.not_before).unwrap_or(u64::MAX)) {
            self.state.deny("peer_certificate_not_yet_valid");
            return Err(Status::unauthenticated(format!(
                "the client certificate of `{}` is not valid before {} (Unix seconds); check the clocks",
                identity.id, identity.not_before
            )));
        }
        if identity.id != self.state.control_plane {
            self.state.deny("peer_not_control_plane");
            tracing::warn!(peer = %identity.id, "loupe agent: refused a caller that is not the control plane");
            return Err(Status::permission_denied(format!(
                "this agent serves only the control plane `{}`; the caller is `{}` (engineers go through the control plane)",
                self.state.control_plane, identity.id
            )));
        }
        Ok((leaf, identity))
    }

    fn refuse(&self, label: &str, status: Status) -> Status {
        self.state.deny(label);
        tracing::warn!(
            reason = label,
            message = status.message(),
            "loupe agent: capture refused"
        );
        status
    }

    /// The capture the request asks for, within what the token and the agent allow.
    fn capture_spec(
        &self,
        claims: &SessionClaims,
        request: &pb::CaptureRequest,
    ) -> Result<CaptureSpec, Status> {
        if request.condition.len() > MAX_CONDITION_LEN {
            return Err(self.refuse(
                "request_invalid",
                Status::invalid_argument(format!(
                    "condition is {} bytes; at most {MAX_CONDITION_LEN} are accepted",
                    request.condition.len()
                )),
            ));
        }
        if request.redact_keywords.len() + request.redact_patterns.len() > MAX_REQUEST_REDACTIONS {
            return Err(self.refuse(
                "request_invalid",
                Status::invalid_argument(format!(
                    "at most {MAX_REQUEST_REDACTIONS} extra redaction keywords and patterns per request"
                )),
            ));
        }
        let token_max = claims.limits.max_snapshots.max(1);
        let max_snapshots = match request.max_snapshots {
            0 => token_max,
            asked => asked.min(token_max),
        };
        let token_rate = if claims.limits.rate.is_finite() && claims.limits.rate > 0.0 {
            claims.limits.rate
        } else {
            RateLimit::DEFAULT.per_second
        };
        let rate = if request.rate_per_second.is_finite() && request.rate_per_second > 0.0 {
            request.rate_per_second.min(token_rate)
        } else {
            token_rate
        };
        let limits = request.limits.unwrap_or_default();
        let asked = |v: u32| (v > 0).then_some(v);
        let token_bytes = u32::try_from(claims.limits.max_bytes)
            .unwrap_or(u32::MAX)
            .max(1);
        let limit_request = LimitRequest {
            max_depth: asked(limits.max_depth),
            max_collection_len: asked(limits.max_collection_len),
            max_struct_fields: asked(limits.max_struct_fields),
            max_string_bytes: asked(limits.max_string_bytes),
            max_snapshot_bytes: Some(
                asked(limits.max_snapshot_bytes).map_or(token_bytes, |b| b.min(token_bytes)),
            ),
        };
        let mut spec = CaptureSpec::new(claims.sid.clone(), request.point.clone())
            .max_snapshots(max_snapshots)
            .duration(until_unix(claims.exp).max(Duration::from_millis(1)))
            .rate(RateLimit {
                per_second: rate,
                burst: rate.ceil().clamp(1.0, 100.0) as u32,
            })
            .limits(limit_request)
            .redact_keywords(claims.redact.keywords.iter().cloned())
            .redact_patterns(claims.redact.patterns.iter().cloned())
            .redact_keywords(request.redact_keywords.iter().cloned())
            .redact_patterns(request.redact_patterns.iter().cloned());
        if !request.condition.trim().is_empty() {
            spec = spec.condition(request.condition.clone());
        }
        Ok(spec)
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::Snapshot, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentService {
    async fn describe(
        &self,
        request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        self.control_plane_peer(&request)?;
        let points = point_infos();
        let counters = self.state.counters();
        let ceiling = Engine::global().config().limit_ceiling;
        Ok(Response::new(pb::DescribeResponse {
            service: self.state.service.clone(),
            instance: self.state.instance.clone(),
            mode: self.state.mode as i32,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            points,
            counters: Some(pb::AgentCounters {
                captures_active: counters.captures_active,
                captures_started: counters.captures_started,
                snapshots_sent: counters.snapshots_sent,
                snapshots_dropped: counters.snapshots_dropped,
                denied: counters.denied.into_iter().collect(),
            }),
            limit_ceiling: Some(pb::CaptureLimits {
                max_depth: ceiling.max_depth,
                max_collection_len: ceiling.max_collection_len,
                max_struct_fields: ceiling.max_struct_fields,
                max_string_bytes: ceiling.max_string_bytes,
                max_snapshot_bytes: ceiling.max_snapshot_bytes,
            }),
        }))
    }

    type CaptureStream = SnapshotStream;

    async fn capture(
        &self,
        request: Request<pb::CaptureRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        let (peer_cert, peer) = self.control_plane_peer(&request)?;
        let request = request.into_inner();
        if request.point.is_empty() {
            return Err(self.refuse(
                "request_invalid",
                Status::invalid_argument("capture request names no point"),
            ));
        }
        let now = unix_now();
        let policy = self.state.policy.load_full();
        let claims = policy
            .verify(&request.token, &peer_cert, now)
            .map_err(|error| {
                let status = match error.class() {
                    TokenErrorClass::Unauthenticated => Status::unauthenticated(error.to_string()),
                    TokenErrorClass::PermissionDenied => {
                        Status::permission_denied(error.to_string())
                    }
                };
                self.refuse(error.label(), status)
            })?;
        self.state
            .spend_token(&claims.jti, claims.exp, policy.leeway)
            .map_err(|error| {
                let status = match error {
                    ReplayError::AlreadyUsed { .. } => Status::permission_denied(error.to_string()),
                    ReplayError::Full { .. } => Status::resource_exhausted(error.to_string()),
                    ReplayError::JtiTooLong { .. } => Status::unauthenticated(error.to_string()),
                };
                self.refuse(error.label(), status)
            })?;
        claims.grants(&request.point).map_err(|error| {
            self.refuse(error.label(), Status::permission_denied(error.to_string()))
        })?;
        // Verification tolerates clock skew on `exp`, but the stream ends at `exp` by this
        // agent's clock: a token already past it could only open a stream that ends at once,
        // after whatever snapshot won the race.
        if until_unix(claims.exp).is_zero() {
            let expired = TokenError::Expired {
                exp: claims.exp,
                now,
            };
            return Err(self.refuse(
                expired.label(),
                Status::unauthenticated(expired.to_string()),
            ));
        }
        if self.state.is_revoked(&claims.sid) {
            return Err(self.refuse(
                "session_revoked",
                Status::permission_denied(format!("session `{}` has been revoked", claims.sid)),
            ));
        }
        let spec = self.capture_spec(&claims, &request)?;
        let stream = PointRegistry::global()
            .arm(spec)
            .map_err(|error| match error {
                ArmError::UnknownPoint { .. } => {
                    self.refuse("point_not_found", Status::not_found(error.to_string()))
                }
                ArmError::TooManyCaptures { .. } => self.refuse(
                    "too_many_captures",
                    Status::resource_exhausted(error.to_string()),
                ),
                ArmError::Condition(_) | ArmError::Redaction(_) | ArmError::InvalidRequest(_) => {
                    self.refuse(
                        "request_invalid",
                        Status::invalid_argument(error.to_string()),
                    )
                }
            })?;
        let capture_id = stream.capture_id();
        if let Err(full) = self.state.admit(&capture_id, &claims.sid) {
            drop(stream);
            return Err(self.refuse(
                "too_many_captures",
                Status::resource_exhausted(full.to_string()),
            ));
        }
        tracing::info!(
            capture = %capture_id,
            session = %claims.sid,
            engineer = %claims.sub,
            point = %request.point,
            exp = claims.exp,
            "loupe agent: capture started"
        );
        let ends_at = EndsAt {
            token_exp: claims.exp,
            certificate_not_after: u64::try_from(peer.not_after).unwrap_or(0),
        };
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let cut = Arc::new(OnceLock::new());
        tokio::spawn(forward(
            Arc::clone(&self.state),
            stream,
            sender,
            Arc::clone(&cut),
            ends_at,
            claims.sid,
        ));
        Ok(Response::new(Box::pin(Delivery {
            receiver,
            cut,
            done: false,
        })))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        self.control_plane_peer(&request)?;
        let request = request.into_inner();
        if request.session_id.is_empty() {
            return Err(Status::invalid_argument("revoke request names no session"));
        }
        let now = unix_now();
        let until = match u64::try_from(request.until_unix) {
            Ok(until) if until > now => until,
            _ => now + self.state.max_token_lifetime.as_secs(),
        };
        let ended = self.state.revoke(&request.session_id, until);
        tracing::info!(session = %request.session_id, ended, until, "loupe agent: session revoked");
        Ok(Response::new(pb::RevokeSessionResponse {
            captures_ended: u32::try_from(ended).unwrap_or(u32::MAX),
        }))
    }
}

/// Every point of the process as `Describe` lists it; registration announces the same list.
pub(crate) fn point_infos() -> Vec<pb::PointInfo> {
    PointRegistry::global()
        .points()
        .map(|point| pb::PointInfo {
            name: point.name().to_owned(),
            kind: match point.kind() {
                SiteKind::Watch => pb::PointKind::Watch,
                SiteKind::Probe => pb::PointKind::Probe,
                SiteKind::Snapshot => pb::PointKind::Snapshot,
            } as i32,
            locations: point
                .callsites()
                .iter()
                .map(|site| pb::SourceLocation {
                    file: site.file().to_owned(),
                    line: site.line(),
                    module_path: site.module_path().to_owned(),
                })
                .collect(),
            fields: point
                .fields()
                .into_iter()
                .map(|(name, kind)| pb::FieldInfo {
                    name: name.to_owned(),
                    r#type: kind.to_owned(),
                })
                .collect(),
        })
        .collect()
}

/// The time since the Unix epoch, to the nanosecond: whole seconds would make every deadline
/// derived from a Unix-second claim up to a second late.
fn unix_now_precise() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// How long until the Unix second `unix` begins, by the agent's own clock (zero if past).
fn until_unix(unix: u64) -> Duration {
    Duration::from_secs(unix).saturating_sub(unix_now_precise())
}

/// When a stream must end regardless of the capture: Unix seconds.
struct EndsAt {
    token_exp: u64,
    certificate_not_after: u64,
}

impl EndsAt {
    fn first(&self) -> (u64, Status) {
        if self.certificate_not_after < self.token_exp {
            (
                self.certificate_not_after,
                Status::unauthenticated(
                    "the control plane's client certificate expired; the agent ended the stream",
                ),
            )
        } else {
            (
                self.token_exp,
                Status::deadline_exceeded(format!(
                    "session token expired at {}; the agent ended the stream",
                    self.token_exp
                )),
            )
        }
    }
}

/// Moves snapshots from the capture to the client until the capture ends, the token or the
/// peer certificate expires, the session is revoked, the client goes away, or the agent stops.
///
/// The end conditions are watched while waiting for a snapshot and while waiting for a slow
/// client to take one, so a reader that is behind cannot keep a stream alive past them. An end
/// for cause (expiry, revocation, shutdown) cuts the stream: snapshots still queued for it are
/// not delivered; only a stream that completes hands over everything it captured.
async fn forward(
    state: Arc<EndpointState>,
    mut stream: CaptureStream,
    sender: mpsc::Sender<pb::Snapshot>,
    cut: Arc<OnceLock<Status>>,
    ends_at: EndsAt,
    session_id: String,
) {
    let capture_id = stream.capture_id();
    let (end_unix, end_status) = ends_at.first();
    let mut ends = Ends {
        deadline: tokio::time::Instant::now() + until_unix(end_unix),
        expiry: end_status,
        shutdown: state.shutdown.clone(),
        revocations: state.revocations(),
        check_revoked: true,
        state: &state,
        session_id: &session_id,
    };
    let outcome: Option<Status> = loop {
        let snapshot = tokio::select! {
            biased;
            status = ends.next() => break Some(status),
            _ = sender.closed() => break None,
            snapshot = stream.next() => snapshot,
        };
        let Some(snapshot) = snapshot else {
            break final_status(&stream, &state, &session_id, &ends.expiry);
        };
        tokio::select! {
            biased;
            status = ends.next() => break Some(status),
            sent = sender.send(snapshot) => {
                if sent.is_err() {
                    break None;
                }
            }
        }
    };
    stream.disarm();
    let status = stream.status();
    if let Some(status) = outcome.clone() {
        // Set before `sender` drops, so the response stream finds it when its channel closes.
        let _ = cut.set(status);
    }
    drop(sender);
    state.finish(
        &capture_id,
        status.counters.sent,
        status.counters.dropped_queue_full
            + status.counters.lost_at_source
            + status.counters.skipped_cpu_budget
            + status.counters.skipped_rate,
    );
    tracing::info!(
        capture = %capture_id,
        session = %session_id,
        sent = status.counters.sent,
        hits = status.counters.hits,
        ended = %status.ended.map_or("ended".to_owned(), |r| r.to_string()),
        error = outcome.as_ref().map(|s| s.message().to_owned()),
        "loupe agent: capture ended"
    );
}

/// What ends a stream for cause, whatever the capture is doing.
struct Ends<'a> {
    deadline: tokio::time::Instant,
    expiry: Status,
    shutdown: tokio::sync::watch::Receiver<bool>,
    revocations: tokio::sync::watch::Receiver<u64>,
    check_revoked: bool,
    state: &'a EndpointState,
    session_id: &'a str,
}

impl Ends<'_> {
    /// Resolves with the status to end the stream with, once one of the conditions holds.
    async fn next(&mut self) -> Status {
        loop {
            // The revocation set is read once at the start (a revocation may have landed
            // between the capture's check and this stream's subscription) and then only when
            // some session was revoked, not for every snapshot.
            if self.check_revoked {
                self.check_revoked = false;
                if self.state.is_revoked(self.session_id) {
                    return Status::permission_denied(format!(
                        "session `{}` has been revoked",
                        self.session_id
                    ));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(self.deadline) => return self.expiry.clone(),
                _ = stopping(&mut self.shutdown) => {
                    return Status::unavailable("the agent is shutting down");
                }
                changed = self.revocations.changed() => {
                    if changed.is_err() {
                        // The state outlives every stream; a closed channel means it is going.
                        return Status::unavailable("the agent is shutting down");
                    }
                    self.check_revoked = true;
                }
            }
        }
    }
}

/// The response stream of a capture: the snapshots `forward` hands over, then how the stream
/// ended. A cut takes effect at the next poll, ahead of anything still buffered.
struct Delivery {
    receiver: mpsc::Receiver<pb::Snapshot>,
    cut: Arc<OnceLock<Status>>,
    done: bool,
}

impl Stream for Delivery {
    type Item = Result<pb::Snapshot, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(status) = self.cut.get().cloned() {
            self.done = true;
            return Poll::Ready(Some(Err(status)));
        }
        match self.receiver.poll_recv(cx) {
            Poll::Ready(Some(snapshot)) => Poll::Ready(Some(Ok(snapshot))),
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(self.cut.get().cloned().map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Resolves once the agent is stopping (or its handle is gone).
async fn stopping(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// How a stream whose capture ended by itself should close: cleanly when it completed, with a
/// status saying why otherwise.
fn final_status(
    stream: &CaptureStream,
    state: &EndpointState,
    session_id: &str,
    expiry: &Status,
) -> Option<Status> {
    let status = stream.status();
    match status.ended {
        Some(EndReason::Completed) | None | Some(EndReason::ReceiverDropped) => None,
        Some(EndReason::DeadlineReached) => Some(expiry.clone()),
        Some(EndReason::CpuBudgetExceeded) => Some(Status::resource_exhausted(
            EndReason::CpuBudgetExceeded.to_string(),
        )),
        Some(EndReason::ConditionOverBudget) => Some(Status::resource_exhausted(format!(
            "{} ({})",
            EndReason::ConditionOverBudget,
            status.last_condition_error.unwrap_or_default()
        ))),
        Some(EndReason::Disarmed) if state.is_revoked(session_id) => Some(
            Status::permission_denied(format!("session `{session_id}` has been revoked")),
        ),
        Some(EndReason::Disarmed) => Some(Status::aborted("the capture was disarmed")),
        Some(EndReason::TargetGone) => Some(Status::unavailable(EndReason::TargetGone.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_count_the_fraction_of_the_current_second() {
        let before = unix_now_precise();
        let target = before.as_secs() + 2;
        let left = until_unix(target);
        // Counting from the whole second would give exactly 2 s; the time left is less by
        // however far into the current second `before` was.
        assert!(left <= Duration::from_secs(target) - before, "{left:?}");
        assert!(left > Duration::from_secs(1), "{left:?}");
        assert_eq!(until_unix(before.as_secs() - 1), Duration::ZERO);
    }
}

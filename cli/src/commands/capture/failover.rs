//! Continuing a capture through another control-plane replica when the one holding its stream
//! goes away (killed, partitioned, restarted, or shutting down), and telling the engineer what
//! the gap cost.
//!
//! Decisions, in the manner of a gRPC client with several backends and of Snapshot Debugger's
//! "breakpoint re-armed" model:
//! - **What counts as losing the replica**: the stream broke on this side (a transport error:
//!   reset, refused, a keep-alive that timed out — see [`crate::error::connection_lost`]), it
//!   closed without saying how the capture ended, or the control plane said it was shutting
//!   down. A capture the control plane ended for a reason of the session's or the engineer's
//!   (revoked, expired, closed, complete, timeout, a certificate that expired) is never resumed,
//!   and neither is a refusal it sent (its audit log failing is UNAVAILABLE from the server:
//!   exit 6 at once — every replica writes the same log).
//! - **How it continues**: a new `Capture` call in the same session, for the snapshots still
//!   wanted and the time still left, through the next configured address (the lost one tried
//!   last, since a supervisor may have restarted it). The control plane checks the session
//!   again (a session revoked during the gap is refused, exit 5) and arms the instances with a
//!   fresh token. This is the one call the CLI sends again after its outcome became unknown,
//!   because a capture lasts only as long as its stream: the lost one ended with its replica
//!   (or, if the replica lives, when it sees the stream gone), so two never run for one command.
//!   The resumed call carries the command's request id, so the audit log ties both captures to
//!   one command; the control plane does not de-duplicate by it (see [`crate::client`]).
//! - **How long it tries**: `--resume-for` from the loss ([`DEFAULT_RESUME_FOR`] unless the
//!   engineer says otherwise: long enough for a supervisor to restart a replica, short enough
//!   that a capture nobody can continue does not hang an incident's terminal), retrying every
//!   address with a backoff from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`]; then exit 6 naming the
//!   lost replica. `--resume-for 0` turns resuming off (a script that would rather start over
//!   itself). Ctrl-C ends the wait like a capture (exit 130).
//! - **What the gap report says**: the replica lost and why, the one resumed through, how long
//!   the capture was disarmed, and for each instance the last sequence number received. A new
//!   capture numbers its snapshots from 1 again under a new capture id, so hits during the gap
//!   and any snapshot the lost replica recorded but never forwarded are not seen; the audit log
//!   (`snapshot.delivered` of the lost capture id) says which those were.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use loupe_proto::v1::{BrokeredCaptureRequest, CaptureEvent};
use serde_json::{Value, json};
use tonic::Streaming;

use crate::client::{self, Connection};
use crate::config::Settings;
use crate::duration::format_duration;
use crate::error::{CliError, connection_lost};
use crate::render::printable;

/// How long after losing its replica a capture keeps trying the others, unless `--resume-for`
/// says otherwise (the flag's default is written in `crate::cli`; a test keeps them equal).
pub const DEFAULT_RESUME_FOR: Duration = Duration::from_secs(30);
/// The pause after the first round of addresses that all failed; doubled each round.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between rounds.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What the capture knew when its replica went away.
#[derive(Debug, Clone)]
pub struct Loss {
    /// The replica lost, and where it is in the configured list.
    pub address: String,
    pub index: usize,
    /// Why the stream is considered lost.
    pub reason: String,
    pub at: Instant,
    /// How long to keep trying to continue it (`--resume-for`).
    pub resume_for: Duration,
    /// The lost capture's id, if a snapshot of it arrived.
    pub capture_id: Option<String>,
    /// Per instance, the last sequence number received in the lost capture.
    pub last_sequences: BTreeMap<String, u64>,
}

/// The gap a resumed capture had: what the engineer is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub lost: String,
    pub reason: String,
    pub resumed_through: String,
    /// From noticing the loss to the new capture being armed.
    pub disarmed_for: Duration,
    /// Dial-and-capture rounds it took.
    pub attempts: u32,
    pub lost_capture_id: Option<String>,
    pub last_sequences: BTreeMap<String, u64>,
}

impl Gap {
    /// The line on stderr.
    pub fn line(&self) -> String {
        let seen = if self.last_sequences.is_empty() {
            "no snapshot had arrived from it".to_owned()
        } else {
            let last: Vec<String> = self
                .last_sequences
                .iter()
                .map(|(instance, seq)| format!("{instance} #{seq}"))
                .collect();
            format!("last received: {}", last.join(", "))
        };
        printable(&format!(
            "capture resumed through {} after {} disarmed (lost {}: {}); {seen}; hits in the gap \
             were not captured, and the new capture numbers its snapshots from 1",
            self.resumed_through,
            format_duration_ms(self.disarmed_for),
            self.lost,
            self.reason,
        ))
        .into_owned()
    }

    /// The record in `--output json|jsonl`, beside the snapshots (one key, `failover`, which a
    /// snapshot never has).
    pub fn json(&self) -> Value {
        json!({
            "failover": {
                "lost": self.lost,
                "reason": self.reason,
                "resumed_through": self.resumed_through,
                "gap_ms": u64::try_from(self.disarmed_for.as_millis()).unwrap_or(u64::MAX),
                "attempts": self.attempts,
                "lost_capture_id": self.lost_capture_id,
                "last_sequences": self.last_sequences,
            }
        })
    }
}

/// A duration to the millisecond for people (`1.234s`, `87ms`).
fn format_duration_ms(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else if duration < Duration::from_secs(60) {
        format!("{:.1}s", duration.as_secs_f64())
    } else {
        format_duration(duration)
    }
}

/// The line on stderr the moment the loss is noticed.
pub fn lost_line(loss: &Loss, addresses: usize) -> String {
    let others = if addresses > 1 {
        "the other addresses, then this one"
    } else {
        "it again"
    };
    printable(&format!(
        "lost the control plane at {} holding this capture ({}); trying {others} for up to {}",
        loss.address,
        loss.reason,
        format_duration(loss.resume_for)
    ))
    .into_owned()
}

/// The capture request that continues `original` after `captured` snapshots, for the time
/// left before `deadline` (the request's own `--timeout`, if any).
pub fn continuation(
    original: &BrokeredCaptureRequest,
    captured: u64,
    deadline: Option<Instant>,
    now: Instant,
) -> BrokeredCaptureRequest {
    let timeout_seconds = deadline.map_or(0, |deadline| {
        let left = deadline.saturating_duration_since(now);
        // Rounded up: a capture never ends before the engineer's deadline.
        u32::try_from(left.as_secs() + u64::from(left.subsec_nanos() > 0))
            .unwrap_or(u32::MAX)
            .max(1)
    });
    BrokeredCaptureRequest {
        max_snapshots: original.max_snapshots.saturating_sub(captured).max(1),
        timeout_seconds,
        ..original.clone()
    }
}

/// One try that did not arm: worth another round, or the end.
enum Attempt {
    Again(String),
    Final(CliError),
}

/// Resumes the capture `request` after `loss`: rounds over every address (the lost one last)
/// until one arms it, the control plane refuses it, or `loss.resume_for` passes (with
/// `--resume-for 0` it is not called: see [`not_resuming`]).
pub async fn resume(
    settings: &Settings,
    connect_timeout: Duration,
    loss: &Loss,
    request: &BrokeredCaptureRequest,
) -> Result<(Connection, Streaming<CaptureEvent>, Gap), CliError> {
    let give_up_at = loss.at + loss.resume_for;
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let left = give_up_at.saturating_duration_since(Instant::now());
        let timeout = connect_timeout.min(left).max(Duration::from_millis(100));
        let why = match attempt(settings, timeout, loss.index + 1, request).await {
            Ok((connection, stream)) => {
                let gap = gap(loss, &connection, attempts);
                return Ok((connection, stream, gap));
            }
            Err(Attempt::Final(error)) => return Err(error),
            Err(Attempt::Again(why)) => why,
        };
        if Instant::now() + backoff >= give_up_at {
            return Err(gave_up(loss, &why));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One round: the first address that answers, asked to capture.
async fn attempt(
    settings: &Settings,
    timeout: Duration,
    start: usize,
    request: &BrokeredCaptureRequest,
) -> Result<(Connection, Streaming<CaptureEvent>), Attempt> {
    let mut connection = match client::connect_from(settings, timeout, start).await {
        Ok(connection) => connection,
        Err(error @ CliError::Unreachable { .. }) => return Err(Attempt::Again(error.to_string())),
        Err(error) => return Err(Attempt::Final(error)),
    };
    match connection.client.capture(request.clone()).await {
        Ok(response) => Ok((connection, response.into_inner())),
        Err(status) if connection_lost(&status) => Err(Attempt::Again(format!(
            "{}: {}",
            connection.address,
            status.message()
        ))),
        Err(status) => Err(Attempt::Final(connection.error(&status))),
    }
}

fn gap(loss: &Loss, connection: &Connection, attempts: u32) -> Gap {
    Gap {
        lost: loss.address.clone(),
        reason: loss.reason.clone(),
        resumed_through: connection.address.clone(),
        disarmed_for: loss.at.elapsed(),
        attempts,
        lost_capture_id: loss.capture_id.clone(),
        last_sequences: loss.last_sequences.clone(),
    }
}

/// The end of a capture whose stream from `address` broke, with `--resume-for 0`: not
/// continuing was asked for, and the replica may be fine, so no advice to check it.
pub fn not_resuming(address: &str, reason: &str) -> CliError {
    CliError::Status {
        code: tonic::Code::Unavailable,
        message: printable(&format!(
            "the capture's stream from {address} broke ({reason}) and --resume-for 0 says not \
             to continue it"
        ))
        .into_owned(),
    }
}

fn gave_up(loss: &Loss, last: &str) -> CliError {
    CliError::Unreachable {
        address: loss.address.clone(),
        reason: format!(
            "the capture's stream broke ({}) and no configured address took the capture over \
             within {} (last: {last}; pass a longer --resume-for to keep trying)",
            loss.reason,
            format_duration(loss.resume_for)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_continuation_asks_for_what_is_left() {
        let original = BrokeredCaptureRequest {
            session_id: "s-1".into(),
            point: "checkout.apply_discount".into(),
            max_snapshots: 10,
            timeout_seconds: 60,
            request_id: "cli-1".into(),
            ..BrokeredCaptureRequest::default()
        };
        let now = Instant::now();
        let next = continuation(&original, 4, Some(now + Duration::from_millis(2500)), now);
        assert_eq!(next.max_snapshots, 6);
        assert_eq!(next.timeout_seconds, 3, "rounded up, never shorter");
        assert_eq!(next.request_id, "cli-1", "one command, one request id");
        assert_eq!(next.session_id, "s-1");
        let open_ended = continuation(&original, 0, None, now);
        assert_eq!(
            (open_ended.max_snapshots, open_ended.timeout_seconds),
            (10, 0)
        );
    }

    #[test]
    fn the_gap_is_told_in_a_line_and_in_a_record() {
        let gap = Gap {
            lost: "10.0.0.2:7443".into(),
            reason: "connection reset".into(),
            resumed_through: "10.0.0.3:7443".into(),
            disarmed_for: Duration::from_millis(840),
            attempts: 1,
            lost_capture_id: Some("cap-1".into()),
            last_sequences: BTreeMap::from([("checkout-1".into(), 7), ("checkout-2".into(), 3)]),
        };
        assert_eq!(
            gap.line(),
            "capture resumed through 10.0.0.3:7443 after 840ms disarmed (lost 10.0.0.2:7443: \
             connection reset); last received: checkout-1 #7, checkout-2 #3; hits in the gap \
             were not captured, and the new capture numbers its snapshots from 1"
        );
        assert_eq!(
            gap.json(),
            json!({"failover": {
                "lost": "10.0.0.2:7443",
                "reason": "connection reset",
                "resumed_through": "10.0.0.3:7443",
                "gap_ms": 840,
                "attempts": 1,
                "lost_capture_id": "cap-1",
                "last_sequences": {"checkout-1": 7, "checkout-2": 3},
            }})
        );
        let quiet = Gap {
            last_sequences: BTreeMap::new(),
            disarmed_for: Duration::from_millis(2340),
            ..gap
        };
        assert!(
            quiet.line().contains("after 2.3s disarmed"),
            "{}",
            quiet.line()
        );
        assert!(quiet.line().contains("no snapshot had arrived from it"));
    }
}

//! What one capture asked for, after validation, and the records that name it: every event of a
//! capture carries its session, service, point and capture id, so a reviewer can follow one
//! capture from `capture.started` through each `snapshot.delivered` to `capture.ended`.

use std::time::Duration;

use loupe_audit::event::{
    Action as AuditAction, Decision as AuditDecision, Detail, NewEvent, Resource, ResourceKind,
};
use loupe_proto::v1 as pb;
use loupe_trust::token::{TokenLimits, TokenRedaction};

use crate::server::caller::Caller;
use crate::server::random_id;
use crate::session::Session;

/// Snapshots delivered when the request does not say.
pub const DEFAULT_MAX_SNAPSHOTS: u64 = 10;
/// Most snapshots one capture may ask for.
pub const MAX_SNAPSHOTS: u64 = 10_000;
/// Longest CEL condition accepted.
pub(crate) const MAX_CONDITION_BYTES: usize = 4096;
/// Bytes per snapshot when the request does not say (the agents clamp to their ceiling).
const DEFAULT_SNAPSHOT_BYTES: u64 = 64 * 1024;

/// What one capture asked for, after validation.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub capture_id: String,
    pub request_id: String,
    pub point: String,
    pub condition: String,
    pub max_snapshots: u64,
    pub rate: f64,
    pub limits: pb::CaptureLimits,
    pub redact: TokenRedaction,
    /// Ends the capture after this long; `None` runs to the session's end.
    pub timeout: Option<Duration>,
}

impl Plan {
    /// The plan of `request`, under a fresh capture id: defaults filled in, the snapshot count
    /// held to [`MAX_SNAPSHOTS`].
    pub(crate) fn of(request: &pb::BrokeredCaptureRequest, request_id: String) -> Plan {
        Plan {
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
        }
    }

    /// The limits a token for this capture carries.
    pub(crate) fn token_limits(&self) -> TokenLimits {
        TokenLimits {
            max_snapshots: self.max_snapshots,
            max_bytes: match self.limits.max_snapshot_bytes {
                0 => DEFAULT_SNAPSHOT_BYTES,
                n => u64::from(n),
            },
            rate: self.rate,
        }
    }

    /// The record of `action` on this capture in `session`, decided as `decision`.
    pub(crate) fn event(
        &self,
        caller: &Caller,
        session: &Session,
        action: AuditAction,
        decision: AuditDecision,
    ) -> NewEvent {
        NewEvent::new(
            caller.actor.clone(),
            action,
            Resource {
                kind: ResourceKind::Point,
                id: self.point.clone(),
            },
            decision,
            self.request_id.clone(),
        )
        .session(session.id.clone())
        .service(session.service.clone())
        .point(self.point.clone())
        .detail("capture_id", Detail::Text(self.capture_id.clone()))
    }

    /// The record of this capture's start (or of its refusal).
    pub(crate) fn started_event(
        &self,
        caller: &Caller,
        session: &Session,
        decision: AuditDecision,
    ) -> NewEvent {
        self.event(caller, session, AuditAction::CaptureStarted, decision)
            // Bounded: a refused, oversized condition must not bloat the log.
            .client_text(
                "condition",
                &self.condition.as_bytes()[..self.condition.len().min(MAX_CONDITION_BYTES + 1)],
            )
            .detail("max_snapshots", Detail::UInt(self.max_snapshots))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_fills_in_defaults_and_holds_the_count_to_the_maximum() {
        let plan = Plan::of(
            &pb::BrokeredCaptureRequest {
                point: " checkout.total ".into(),
                ..Default::default()
            },
            "req-1".into(),
        );
        assert_eq!(plan.point, "checkout.total");
        assert_eq!(plan.max_snapshots, DEFAULT_MAX_SNAPSHOTS);
        assert_eq!(plan.timeout, None, "runs to the session's end");
        assert!(plan.capture_id.starts_with("cap-"));
        assert_eq!(plan.token_limits().max_bytes, DEFAULT_SNAPSHOT_BYTES);

        let plan = Plan::of(
            &pb::BrokeredCaptureRequest {
                max_snapshots: MAX_SNAPSHOTS + 1,
                timeout_seconds: 30,
                limits: Some(pb::CaptureLimits {
                    max_snapshot_bytes: 512,
                    ..Default::default()
                }),
                ..Default::default()
            },
            "req-2".into(),
        );
        assert_eq!(plan.max_snapshots, MAX_SNAPSHOTS);
        assert_eq!(plan.timeout, Some(Duration::from_secs(30)));
        assert_eq!(plan.token_limits().max_bytes, 512);
    }

    #[test]
    fn the_start_record_keeps_at_most_one_byte_past_the_condition_bound() {
        let plan = Plan::of(
            &pb::BrokeredCaptureRequest {
                condition: "x".repeat(MAX_CONDITION_BYTES * 2),
                ..Default::default()
            },
            "req-1".into(),
        );
        let stored = crate::server::fixtures::session("alice", "checkout", &["c.t"], 0);
        let caller = crate::server::fixtures::caller("alice");
        let event = plan.started_event(
            &caller,
            &stored.session,
            crate::server::answers::deny(Vec::new(), "too long"),
        );
        match event.details.get("condition") {
            Some(Detail::Text(kept)) => assert_eq!(kept.len(), MAX_CONDITION_BYTES + 1),
            other => panic!("the condition is recorded as text, not {other:?}"),
        }
    }
}

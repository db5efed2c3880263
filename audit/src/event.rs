//! The audit event and its one canonical byte encoding.
//!
//! **The canonical bytes of an event are its JSON Lines export line** (without the newline):
//! a JSON object with the fields in the fixed order of [`AuditEvent`], no insignificant
//! whitespace, integers only (no floats, so no rounding), map keys sorted, and every string
//! escaped by `serde_json`, which writes control characters (newline, carriage return, ESC of
//! ANSI sequences) as escapes. A hostile string can therefore never start a new line or forge
//! a field. The Merkle leaf is `SHA-256(0x00 ‖ line)`, so a reviewer verifying an export hashes
//! exactly the bytes they hold, and any JSON tool reads them.
//!
//! Text that reaches the log as raw bytes from a client (a request id, a reason) may not be
//! UTF-8. It is never stored raw: [`NewEvent::client_text`] decodes it lossily (invalid
//! sequences become U+FFFD) and names the field in the event's `lossy` list, so the record says
//! that it is not byte-exact.
//!
//! Each event also carries `prev`, the leaf hash of the event before it (all zeros for the
//! first). The Merkle root alone says *that* a log was altered; the chain lets a verifier say
//! *which* event: the first event whose successor does not vouch for it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::merkle::{Hash, leaf_hash, to_hex};

/// Why bytes are not a canonical audit event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// Not JSON, or not an audit event.
    #[error("not an audit event: {0}")]
    Malformed(#[from] serde_json::Error),
    /// An audit event, but not in canonical form (whitespace, field order, extra fields…).
    #[error("audit event is not in canonical form")]
    NotCanonical,
}

/// Who acted: the identity from the peer certificate and that certificate's fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// SPIFFE-style URI SAN or subject CN, e.g. `spiffe://loupe.dev/user/alice`.
    pub id: String,
    /// Lower-case hex SHA-256 of the peer certificate's DER (empty for the control plane's own
    /// events, such as expiry).
    pub cert_sha256: String,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    #[serde(rename = "session.requested")]
    SessionRequested,
    #[serde(rename = "session.approved")]
    SessionApproved,
    #[serde(rename = "session.denied")]
    SessionDenied,
    #[serde(rename = "session.opened")]
    SessionOpened,
    #[serde(rename = "session.closed")]
    SessionClosed,
    #[serde(rename = "session.expired")]
    SessionExpired,
    #[serde(rename = "session.revoked")]
    SessionRevoked,
    #[serde(rename = "capture.started")]
    CaptureStarted,
    #[serde(rename = "capture.ended")]
    CaptureEnded,
    #[serde(rename = "snapshot.delivered")]
    SnapshotDelivered,
    #[serde(rename = "policy.loaded")]
    PolicyLoaded,
    #[serde(rename = "policy.rejected")]
    PolicyRejected,
    #[serde(rename = "agent.registered")]
    AgentRegistered,
    #[serde(rename = "audit.read")]
    AuditRead,
    /// Someone listed services or the points of a service.
    #[serde(rename = "points.listed")]
    PointsListed,
    /// A caller with too many refused calls was refused without being served; recorded once
    /// per identity and window, with the count of calls refused so.
    #[serde(rename = "caller.limited")]
    CallerLimited,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Action; 16] = [
        Action::SessionRequested,
        Action::SessionApproved,
        Action::SessionDenied,
        Action::SessionOpened,
        Action::SessionClosed,
        Action::SessionExpired,
        Action::SessionRevoked,
        Action::CaptureStarted,
        Action::CaptureEnded,
        Action::SnapshotDelivered,
        Action::PolicyLoaded,
        Action::PolicyRejected,
        Action::AgentRegistered,
        Action::AuditRead,
        Action::PointsListed,
        Action::CallerLimited,
    ];

    /// The name used in the encoding and in queries, e.g. `session.opened`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::SessionRequested => "session.requested",
            Action::SessionApproved => "session.approved",
            Action::SessionDenied => "session.denied",
            Action::SessionOpened => "session.opened",
            Action::SessionClosed => "session.closed",
            Action::SessionExpired => "session.expired",
            Action::SessionRevoked => "session.revoked",
            Action::CaptureStarted => "capture.started",
            Action::CaptureEnded => "capture.ended",
            Action::SnapshotDelivered => "snapshot.delivered",
            Action::PolicyLoaded => "policy.loaded",
            Action::PolicyRejected => "policy.rejected",
            Action::AgentRegistered => "agent.registered",
            Action::AuditRead => "audit.read",
            Action::PointsListed => "points.listed",
            Action::CallerLimited => "caller.limited",
        }
    }
}

/// The kind of thing acted upon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    Service,
    Point,
    Session,
    Policy,
    Agent,
    AuditLog,
}

impl ResourceKind {
    /// The name used in the encoding.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Service => "service",
            ResourceKind::Point => "point",
            ResourceKind::Session => "session",
            ResourceKind::Policy => "policy",
            ResourceKind::Agent => "agent",
            ResourceKind::AuditLog => "audit_log",
        }
    }
}

/// What was acted upon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    pub kind: ResourceKind,
    pub id: String,
}

/// The outcome of a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Deny,
    Error,
}

impl Outcome {
    /// The name used in the encoding and in queries.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Error => "error",
        }
    }
}

/// The decision and what it rests on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub outcome: Outcome,
    /// Ids of the policies that determined the outcome.
    pub policies: Vec<String>,
    pub reason: String,
}

/// One value in an event's details: integers, booleans, text or a list of text. No floats,
/// so the encoding never depends on how a number is printed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Detail {
    Bool(bool),
    UInt(u64),
    Int(i64),
    Text(String),
    List(Vec<String>),
}

/// Free-form details, keyed and sorted by name.
pub type Details = BTreeMap<String, Detail>;

/// An audit event as stored, exported and hashed. Field order here is the canonical order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// Position in the log, from 0; also the Merkle leaf index.
    pub seq: u64,
    /// When the log sequenced the event, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub actor: Actor,
    pub action: Action,
    pub resource: Resource,
    pub decision: Decision,
    /// The request this event belongs to (correlates the control plane's logs and traces).
    pub request_id: String,
    pub session: Option<String>,
    pub service: Option<String>,
    pub point: Option<String>,
    pub details: Details,
    /// Fields whose client-supplied bytes were not UTF-8 and were decoded lossily.
    pub lossy: Vec<String>,
    /// Hex leaf hash of event `seq - 1`; 64 zeros for event 0.
    pub prev: String,
}

impl AuditEvent {
    /// The canonical bytes: the export line without its newline.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, EventError> {
        Ok(serde_json::to_vec(self)?)
    }

    /// The Merkle leaf hash of the canonical bytes.
    pub fn leaf_hash(&self) -> Result<Hash, EventError> {
        Ok(leaf_hash(&self.canonical_bytes()?))
    }

    /// Parses canonical bytes, refusing anything that is not exactly the canonical encoding
    /// of the event it describes.
    pub fn from_canonical(bytes: &[u8]) -> Result<Self, EventError> {
        let event: AuditEvent = serde_json::from_slice(bytes)?;
        if event.canonical_bytes()? != bytes {
            return Err(EventError::NotCanonical);
        }
        Ok(event)
    }
}

/// The metadata of a delivered snapshot — never its values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The agent instance that captured it.
    pub instance: String,
    /// Paths of the fields it carried.
    pub fields: Vec<String>,
    /// How many values were redacted.
    pub redactions: u64,
    /// Encoded size in bytes.
    pub bytes: u64,
    /// SHA-256 of the encoded snapshot.
    pub sha256: Hash,
}

/// An event as a caller submits it; the log adds `seq`, `time_ms` and `prev`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub actor: Actor,
    pub action: Action,
    pub resource: Resource,
    pub decision: Decision,
    pub request_id: String,
    pub session: Option<String>,
    pub service: Option<String>,
    pub point: Option<String>,
    pub details: Details,
    pub lossy: Vec<String>,
}

impl NewEvent {
    /// An event with no session, service, point or details.
    pub fn new(
        actor: Actor,
        action: Action,
        resource: Resource,
        decision: Decision,
        request_id: impl Into<String>,
    ) -> Self {
        Self {
            actor,
            action,
            resource,
            decision,
            request_id: request_id.into(),
            session: None,
            service: None,
            point: None,
            details: Details::new(),
            lossy: Vec::new(),
        }
    }

    /// A `snapshot.delivered` event for `point` of `service` in `session`.
    pub fn snapshot_delivered(
        actor: Actor,
        session: &str,
        service: &str,
        point: &str,
        meta: SnapshotMeta,
        request_id: impl Into<String>,
    ) -> Self {
        let decision = Decision {
            outcome: Outcome::Allow,
            policies: Vec::new(),
            reason: String::new(),
        };
        let resource = Resource {
            kind: ResourceKind::Point,
            id: point.to_owned(),
        };
        NewEvent::new(
            actor,
            Action::SnapshotDelivered,
            resource,
            decision,
            request_id,
        )
        .session(session)
        .service(service)
        .point(point)
        .detail("instance", Detail::Text(meta.instance))
        .detail("fields", Detail::List(meta.fields))
        .detail("redactions", Detail::UInt(meta.redactions))
        .detail("bytes", Detail::UInt(meta.bytes))
        .detail("sha256", Detail::Text(to_hex(&meta.sha256)))
    }

    /// Sets the session id.
    pub fn session(mut self, id: impl Into<String>) -> Self {
        self.session = Some(id.into());
        self
    }

    /// Sets the service.
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(name.into());
        self
    }

    /// Sets the snapshot point.
    pub fn point(mut self, name: impl Into<String>) -> Self {
        self.point = Some(name.into());
        self
    }

    /// Adds a detail.
    pub fn detail(mut self, key: impl Into<String>, value: Detail) -> Self {
        self.details.insert(key.into(), value);
        self
    }

    /// Adds a detail from bytes a client sent. Invalid UTF-8 is replaced by U+FFFD and the
    /// key is recorded in `lossy` (as `details.<key>`), so the event admits it is not exact.
    pub fn client_text(mut self, key: &str, bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        if let std::borrow::Cow::Owned(_) = text {
            self.lossy.push(format!("details.{key}"));
        }
        self.details
            .insert(key.to_owned(), Detail::Text(text.into_owned()));
        self
    }

    /// Sets the request id from bytes a client sent, decoding lossily as
    /// [`client_text`](Self::client_text) does.
    pub fn client_request_id(mut self, bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        if let std::borrow::Cow::Owned(_) = text {
            self.lossy.push("request_id".to_owned());
        }
        self.request_id = text.into_owned();
        self
    }

    /// Fixes the event at position `seq`, sequenced at `time_ms`, after the event whose leaf
    /// hash is `prev`.
    pub fn seal(self, seq: u64, time_ms: u64, prev: &Hash) -> AuditEvent {
        AuditEvent {
            seq,
            time_ms,
            actor: self.actor,
            action: self.action,
            resource: self.resource,
            decision: self.decision,
            request_id: self.request_id,
            session: self.session,
            service: self.service,
            point: self.point,
            details: self.details,
            lossy: self.lossy,
            prev: to_hex(prev),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NewEvent {
        NewEvent::new(
            Actor {
                id: "spiffe://loupe.dev/user/alice".into(),
                cert_sha256: "ab".repeat(32),
            },
            Action::SessionOpened,
            Resource {
                kind: ResourceKind::Session,
                id: "s-1".into(),
            },
            Decision {
                outcome: Outcome::Allow,
                policies: vec!["sre-open".into()],
                reason: "incident 42".into(),
            },
            "r-7f3a",
        )
        .session("s-1")
        .service("checkout")
    }

    #[test]
    fn canonical_bytes_are_one_compact_line_in_field_order() {
        let event = sample()
            .detail("ttl_s", Detail::UInt(600))
            .detail("a", Detail::Bool(true))
            .seal(3, 1_700_000_000_000, &[0; 32]);
        let line = String::from_utf8(event.canonical_bytes().expect("encode")).expect("utf8");
        assert!(line.starts_with(r#"{"seq":3,"time_ms":1700000000000,"actor":{"id":"#));
        assert!(line.contains(r#""details":{"a":true,"ttl_s":600},"lossy":[],"prev":"0000"#));
        assert!(!line.contains('\n') && !line.contains("\": ") && !line.contains(", \""));
        let back = AuditEvent::from_canonical(line.as_bytes()).expect("parse");
        assert_eq!(back, event);
    }

    #[test]
    fn non_canonical_forms_are_refused() {
        let event = sample().seal(0, 1, &[0; 32]);
        let line = String::from_utf8(event.canonical_bytes().expect("encode")).expect("utf8");
        let spaced = line.replacen(":", ": ", 1);
        assert!(matches!(
            AuditEvent::from_canonical(spaced.as_bytes()),
            Err(EventError::NotCanonical)
        ));
        let float = line.replacen(r#""seq":0"#, r#""seq":0.0"#, 1);
        assert!(AuditEvent::from_canonical(float.as_bytes()).is_err());
        let extra = line.replacen("{", r#"{"admin":true,"#, 1);
        assert!(AuditEvent::from_canonical(extra.as_bytes()).is_err());
    }

    #[test]
    fn hostile_text_stays_inside_its_string() {
        let forged = "x\n{\"seq\":99}\r\u{1b}[2J\u{1b}]0;pwned\u{7}";
        let event = sample()
            .client_text("reason", forged.as_bytes())
            .client_text("raw", b"ok \xff\xfe end")
            .seal(0, 1, &[0; 32]);
        let bytes = event.canonical_bytes().expect("encode");
        assert!(
            !bytes
                .iter()
                .any(|b| *b == b'\n' || *b == b'\r' || *b == 0x1b)
        );
        assert_eq!(event.lossy, vec!["details.raw".to_owned()]);
        let back = AuditEvent::from_canonical(&bytes).expect("parse");
        assert_eq!(back.details["reason"], Detail::Text(forged.into()));
        assert_eq!(
            back.details["raw"],
            Detail::Text("ok \u{fffd}\u{fffd} end".into())
        );
    }
}

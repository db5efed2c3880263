//! Rendering audit events as OCSF (Open Cybersecurity Schema Framework) events for SIEMs.
//!
//! Two classes fit Loupe's events:
//!
//! | Loupe action | OCSF class | activity |
//! | --- | --- | --- |
//! | `session.approved`, `session.denied`, `session.opened` | Authorize Session (3003, category 3 IAM) | 1 Assign Privileges |
//! | `session.requested`, `capture.started`, `agent.registered` | API Activity (6003, category 6 Application Activity) | 1 Create |
//! | `snapshot.delivered`, `audit.read` | API Activity | 2 Read |
//! | `policy.loaded`, `policy.rejected` | API Activity | 3 Update |
//! | `session.closed`, `session.expired`, `session.revoked`, `capture.ended` | API Activity | 4 Delete |
//! | `caller.limited` | API Activity | 99 Other |
//!
//! `type_uid` is `class_uid * 100 + activity_id`. The decision becomes `status_id` (1 Success
//! for allow, 2 Failure for deny and error) and the actor's `authorizations`, with the policy
//! ids. The OCSF rendering is for search and alerting; the JSON Lines export is what verifies.
//!
//! Each record links back to its proof: `metadata.uid` is the event's sequence, which is its
//! Merkle leaf index, and — OCSF having no attribute for a transparency-log leaf —
//! `unmapped.loupe_leaf_index` and `unmapped.loupe_leaf_hash` (lowercase hex of
//! `SHA-256(0x00 ‖ canonical event)`) carry what `loupe audit prove SEQ --output json` prints,
//! so a SIEM copy can be checked against a signed checkpoint (docs/audit-format.md).

use loupe_audit::event::{Action, AuditEvent, Detail, Outcome};
use loupe_audit::merkle::to_hex;
use serde_json::{Map, Value, json};

/// The OCSF schema version these events follow.
pub const OCSF_VERSION: &str = "1.3.0";

/// Where an event sits in OCSF: class, category and activity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OcsfClass {
    pub class_uid: u64,
    pub class_name: &'static str,
    pub category_uid: u64,
    pub category_name: &'static str,
    pub activity_id: u64,
    pub activity_name: &'static str,
}

impl OcsfClass {
    /// `class_uid * 100 + activity_id`, as OCSF defines it.
    pub fn type_uid(&self) -> u64 {
        self.class_uid * 100 + self.activity_id
    }

    const fn api_activity(activity_id: u64, activity_name: &'static str) -> Self {
        Self {
            class_uid: 6003,
            class_name: "API Activity",
            category_uid: 6,
            category_name: "Application Activity",
            activity_id,
            activity_name,
        }
    }

    const fn authorize_session(activity_id: u64, activity_name: &'static str) -> Self {
        Self {
            class_uid: 3003,
            class_name: "Authorize Session",
            category_uid: 3,
            category_name: "Identity & Access Management",
            activity_id,
            activity_name,
        }
    }
}

/// The OCSF class and activity of `action` (the table above).
pub fn classify(action: Action) -> OcsfClass {
    match action {
        Action::SessionApproved | Action::SessionDenied | Action::SessionOpened => {
            OcsfClass::authorize_session(1, "Assign Privileges")
        }
        Action::SessionRequested | Action::CaptureStarted | Action::AgentRegistered => {
            OcsfClass::api_activity(1, "Create")
        }
        Action::SnapshotDelivered | Action::AuditRead | Action::PointsListed => {
            OcsfClass::api_activity(2, "Read")
        }
        Action::PolicyLoaded | Action::PolicyRejected => OcsfClass::api_activity(3, "Update"),
        Action::SessionClosed
        | Action::SessionExpired
        | Action::SessionRevoked
        | Action::CaptureEnded => OcsfClass::api_activity(4, "Delete"),
        Action::CallerLimited => OcsfClass::api_activity(99, "Other"),
    }
}

fn detail_value(detail: &Detail) -> Value {
    match detail {
        Detail::Bool(b) => json!(b),
        Detail::UInt(u) => json!(u),
        Detail::Int(i) => json!(i),
        Detail::Text(t) => json!(t),
        Detail::List(l) => json!(l),
    }
}

/// The OCSF event for `event` of the log named `origin`.
pub fn to_ocsf(event: &AuditEvent, origin: &str) -> Value {
    let class = classify(event.action);
    let (status_id, status, severity_id) = match event.decision.outcome {
        Outcome::Allow => (1, "Success", 1),
        Outcome::Deny => (2, "Failure", 3),
        Outcome::Error => (2, "Failure", 4),
    };
    let user = json!({ "uid": event.actor.id, "name": event.actor.id, "type_id": 0 });
    let authorizations: Vec<Value> = event
        .decision
        .policies
        .iter()
        .map(|id| json!({ "decision": event.decision.outcome.as_str(), "policy": { "uid": id, "name": id } }))
        .collect();
    let mut resources = vec![json!({
        "type": event.resource.kind.as_str(),
        "uid": event.resource.id,
    })];
    for (kind, value) in [
        ("session", &event.session),
        ("service", &event.service),
        ("point", &event.point),
    ] {
        if let Some(value) = value
            && !(event.resource.kind.as_str() == kind && &event.resource.id == value)
        {
            resources.push(json!({ "type": kind, "uid": value }));
        }
    }
    let details: Map<String, Value> = event
        .details
        .iter()
        .map(|(k, v)| (k.clone(), detail_value(v)))
        .collect();
    let mut object = json!({
        "class_uid": class.class_uid,
        "class_name": class.class_name,
        "category_uid": class.category_uid,
        "category_name": class.category_name,
        "activity_id": class.activity_id,
        "activity_name": class.activity_name,
        "type_uid": class.type_uid(),
        "type_name": format!("{}: {}", class.class_name, class.activity_name),
        "time": event.time_ms,
        "severity_id": severity_id,
        "status_id": status_id,
        "status": status,
        "status_detail": event.decision.reason,
        "message": format!("{} {} {}", event.actor.id, event.action.as_str(), event.resource.id),
        "metadata": {
            "version": OCSF_VERSION,
            "uid": event.seq.to_string(),
            "correlation_uid": event.request_id,
            "log_name": origin,
            "product": { "name": "Loupe", "vendor_name": "Loupe" },
        },
        "actor": { "user": user.clone(), "authorizations": authorizations },
        "resources": resources,
        "unmapped": {
            "loupe_action": event.action.as_str(),
            "loupe_seq": event.seq,
            "loupe_leaf_index": event.seq,
            // Encoding a decoded event cannot fail (string keys, no floats).
            "loupe_leaf_hash": event.leaf_hash().map(|h| to_hex(&h)).unwrap_or_default(),
            "actor_cert_sha256": event.actor.cert_sha256,
            "details": details,
            "lossy": event.lossy,
        },
    });
    if class.class_uid == 3003 {
        object["user"] = user;
        let privilege = event
            .point
            .clone()
            .or_else(|| event.session.clone())
            .unwrap_or_else(|| event.resource.id.clone());
        object["privileges"] = json!([privilege]);
        if let Some(session) = &event.session {
            object["session"] = json!({ "uid": session });
        }
    } else {
        object["api"] = json!({
            "operation": event.action.as_str(),
            "request": { "uid": event.request_id },
            "service": { "name": event.service.clone().unwrap_or_else(|| "loupe-control-plane".into()) },
        });
        object["src_endpoint"] = json!({ "svc_name": "loupe-control-plane" });
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_uid_and_category_follow_the_class_for_every_action() {
        for action in Action::ALL {
            let class = classify(action);
            assert_eq!(class.category_uid, class.class_uid / 1000, "{action:?}");
            assert!([6003, 3003].contains(&class.class_uid));
            assert!((1..=4).contains(&class.activity_id) || class.activity_id == 99);
            assert_eq!(class.type_uid(), class.class_uid * 100 + class.activity_id);
        }
    }

    #[test]
    fn a_record_carries_its_leaf_index_and_leaf_hash() {
        use loupe_audit::event::{Actor, Decision, NewEvent, Resource, ResourceKind};
        use loupe_audit::merkle::leaf_hash;
        let event = NewEvent::new(
            Actor {
                id: "spiffe://loupe.dev/user/alice".into(),
                cert_sha256: String::new(),
            },
            Action::SessionOpened,
            Resource {
                kind: ResourceKind::Session,
                id: "ses-1".into(),
            },
            Decision {
                outcome: Outcome::Allow,
                policies: vec!["sre-open-sessions".into()],
                reason: String::new(),
            },
            "req-1",
        )
        .seal(41, 1_700_000_000_000, &[7; 32]);
        let record = to_ocsf(&event, "loupe.dev/audit");
        let canonical = event.canonical_bytes().expect("canonical");
        assert_eq!(record["metadata"]["uid"], "41");
        assert_eq!(record["unmapped"]["loupe_leaf_index"], 41);
        assert_eq!(
            record["unmapped"]["loupe_leaf_hash"],
            to_hex(&leaf_hash(&canonical))
        );
    }
}

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
//!
//! `type_uid` is `class_uid * 100 + activity_id`. The decision becomes `status_id` (1 Success
//! for allow, 2 Failure for deny and error) and the actor's `authorizations`, with the policy
//! ids. The OCSF rendering is for search and alerting; the JSON Lines export is what verifies.

use loupe_proto::audit::event::{Action, AuditEvent, Detail, Outcome};
use serde_json::{Map, Value, json};

/// The OCSF schema version these events follow.
pub const OCSF_VERSION: &str = "1.3.0";

const API_ACTIVITY: (u64, &str, u64, &str) = (6003, "API Activity", 6, "Application Activity");
const AUTHORIZE_SESSION: (u64, &str, u64, &str) =
    (3003, "Authorize Session", 3, "Identity & Access Management");

/// The class (uid, name, category uid, category name) and activity (id, name) of `action`.
pub fn classify(action: Action) -> ((u64, &'static str, u64, &'static str), u64, &'static str) {
    match action {
        Action::SessionApproved | Action::SessionDenied | Action::SessionOpened => {
            (AUTHORIZE_SESSION, 1, "Assign Privileges")
        }
        Action::SessionRequested | Action::CaptureStarted | Action::AgentRegistered => {
            (API_ACTIVITY, 1, "Create")
        }
        Action::SnapshotDelivered | Action::AuditRead => (API_ACTIVITY, 2, "Read"),
        Action::PolicyLoaded | Action::PolicyRejected => (API_ACTIVITY, 3, "Update"),
        Action::SessionClosed
        | Action::SessionExpired
        | Action::SessionRevoked
        | Action::CaptureEnded => (API_ACTIVITY, 4, "Delete"),
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
    let ((class_uid, class_name, category_uid, category_name), activity_id, activity_name) =
        classify(event.action);
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
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "category_name": category_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": format!("{class_name}: {activity_name}"),
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
            "actor_cert_sha256": event.actor.cert_sha256,
            "details": details,
            "lossy": event.lossy,
        },
    });
    if class_uid == AUTHORIZE_SESSION.0 {
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
            let ((class_uid, _, category_uid, _), activity_id, _) = classify(action);
            assert_eq!(category_uid, class_uid / 1000, "{action:?}");
            assert!([6003, 3003].contains(&class_uid));
            assert!((1..=4).contains(&activity_id));
        }
    }
}

//! What the server's unit tests decide on: sessions built the way `OpenSession` builds them,
//! callers as the TLS layer identifies them, and the shipped policy set read from its files.
//! Real values throughout; nothing here stands in for the audit log or TLS.

use std::path::Path;

use loupe_audit::event::Actor;
use loupe_trust::identity::PeerIdentity;

use super::caller::Caller;
use crate::policy::PolicyBundle;
use crate::session::{Session, SessionRequest};
use crate::state::StoredSession;

/// The tests' clock: Unix seconds.
pub(crate) const NOW: u64 = 1_764_000_000;
/// How long a session may wait for approval in these tests.
pub(crate) const PENDING_TIMEOUT: u64 = 600;

/// The SPIFFE id of user `name` in the shipped trust domain.
pub(crate) fn user(name: &str) -> String {
    format!("spiffe://loupe.dev/user/{name}")
}

/// User `name` calling with a certificate valid around [`NOW`].
pub(crate) fn caller(name: &str) -> Caller {
    Caller {
        identity: PeerIdentity {
            id: user(name),
            not_after: i64::try_from(NOW).unwrap_or(i64::MAX) + 3600,
            not_before: 0,
        },
        actor: Actor {
            id: user(name),
            cert_sha256: "00".repeat(32),
        },
    }
}

/// The shipped policy set (`policies/`): sre opens and captures, security approves `payments.`
/// and revokes, auditors read the log.
pub(crate) fn shipped_policies() -> PolicyBundle {
    PolicyBundle::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies"))
        .expect("the shipped policies load")
}

/// A session `requester` opened at [`NOW`] on `points` of `service`, waiting for
/// `approvals_required` approvals (active at once with none).
pub(crate) fn session(
    requester: &str,
    service: &str,
    points: &[&str],
    approvals_required: u32,
) -> StoredSession {
    let points: Vec<String> = points.iter().map(|p| (*p).to_owned()).collect();
    StoredSession {
        session: Session::open(
            SessionRequest {
                id: format!("ses-{requester}-{service}"),
                requester: user(requester),
                service: service.to_owned(),
                points: points.clone(),
                reason: "INC-1 checkout errors".to_owned(),
                ticket: None,
                ttl_seconds: 900,
                approvals_required,
            },
            NOW,
            PENDING_TIMEOUT,
        ),
        policy_ids: vec!["sre-open-sessions".to_owned()],
        policy_version: "test".to_owned(),
        awaiting_approval_from: if approvals_required > 0 {
            vec!["security".to_owned()]
        } else {
            Vec::new()
        },
        approval_points: if approvals_required > 0 {
            points
        } else {
            Vec::new()
        },
        version: 0,
    }
}

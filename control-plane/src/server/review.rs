//! The reviewer's side: reading, following and proving the audit log. Each call needs
//! `ReadAudit` and is itself recorded (`audit.read`) before anything is read — the auditors are
//! audited. Events go out in their canonical bytes, exactly as hashed, so the reviewer's tools
//! check them against checkpoints without trusting this server.

use std::sync::Arc;
use std::time::Duration;

use loupe_audit::event::{
    Action as AuditAction, AuditEvent, Detail, NewEvent, Outcome, Resource, ResourceKind,
};
use loupe_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::answers::{audit_decision, denied_status};
use super::caller::Caller;
use super::{ControlPlane, now, random_id};
use crate::audit::{Cursor, Filter, Page, ReadError};
use crate::policy::AuthzRequest;

/// Events fetched per page while streaming.
const PAGE: usize = 1000;
/// How often a follower looks for new events.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// Checks `ReadAudit` and records the read, allowed or not.
async fn authorize_read(
    cp: &ControlPlane,
    caller: &Caller,
    what: &str,
    details: Vec<(&str, Detail)>,
) -> Result<(), Status> {
    let user = caller.user()?;
    let decision = cp.policy.authorize(&AuthzRequest::read_audit(
        user,
        i64::try_from(now()).unwrap_or(i64::MAX),
    ));
    let mut event = NewEvent::new(
        caller.actor.clone(),
        AuditAction::AuditRead,
        Resource {
            kind: ResourceKind::AuditLog,
            id: "main".to_owned(),
        },
        audit_decision(&decision),
        random_id("req"),
    )
    .detail("call", Detail::Text(what.to_owned()));
    for (key, value) in details {
        event = event.detail(key, value);
    }
    cp.record(event).await?;
    if decision.allowed {
        Ok(())
    } else {
        Err(denied_status(
            &decision.policy_ids,
            &decision.reasons.join("; "),
        ))
    }
}

fn read_status(error: ReadError) -> Status {
    match error {
        ReadError::NotFound { seq } => Status::not_found(format!("no audit event {seq}")),
        ReadError::NoCheckpoint => Status::unavailable("the audit log has no checkpoint yet"),
        other => Status::invalid_argument(other.to_string()),
    }
}

fn filter_of(request: &pb::QueryAuditRequest) -> Result<Filter, Status> {
    let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let action = match text(&request.action) {
        Some(name) => Some(
            AuditAction::ALL
                .into_iter()
                .find(|action| action.as_str() == name)
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "unknown action `{name}` (e.g. session.opened, snapshot.delivered, audit.read)"
                    ))
                })?,
        ),
        None => None,
    };
    let outcome = match text(&request.outcome) {
        Some(name) => Some(
            [Outcome::Allow, Outcome::Deny, Outcome::Error]
                .into_iter()
                .find(|outcome| outcome.as_str() == name)
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "unknown outcome `{name}` (allow, deny or error)"
                    ))
                })?,
        ),
        None => None,
    };
    Ok(Filter {
        since_ms: request.since_ms,
        until_ms: request.until_ms,
        actor: text(&request.actor),
        session: text(&request.session),
        service: text(&request.service),
        point: text(&request.point),
        action,
        outcome,
    })
}

/// `QueryAudit`: the events matching the filter, in their canonical bytes — and, when
/// following, every new one as it is appended, until the reviewer's certificate expires.
pub(crate) async fn query(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    request: pb::QueryAuditRequest,
) -> Result<ReceiverStream<Result<pb::AuditRecord, Status>>, Status> {
    let filter = filter_of(&request)?;
    authorize_read(
        cp,
        caller,
        "QueryAudit",
        vec![
            ("filter", Detail::Text(format!("{filter:?}"))),
            ("follow", Detail::Bool(request.follow)),
        ],
    )
    .await?;
    let (tx, rx) = mpsc::channel(64);
    let reader = Reader {
        cp: Arc::clone(cp),
        filter,
        limit: request.limit,
        follow: request.follow,
        // A follow outlives no certificate: it ends when the reviewer's does.
        certificate_expiry: u64::try_from(caller.identity.not_after).unwrap_or(0),
        tx,
    };
    tokio::spawn(reader.run((request.after_seq > 0).then_some(Cursor(request.after_seq))));
    Ok(ReceiverStream::new(rx))
}

/// One reviewer's read of the log, streamed page by page.
struct Reader {
    cp: Arc<ControlPlane>,
    filter: Filter,
    /// Events to send at most when not following (0: all).
    limit: u64,
    follow: bool,
    /// Unix seconds.
    certificate_expiry: u64,
    tx: mpsc::Sender<Result<pb::AuditRecord, Status>>,
}

impl Reader {
    /// Sends the events after `cursor` until the read is done, the reviewer goes away, or the
    /// control plane stops.
    async fn run(self, mut cursor: Option<Cursor>) {
        let mut sent = 0u64;
        let mut shutdown = self.cp.shutdown.clone();
        loop {
            let page = match self.page(cursor).await {
                Ok(page) => page,
                Err(status) => {
                    let _ = self.tx.send(Err(status)).await;
                    return;
                }
            };
            let full = page.next.is_some();
            if !self.send(page.events, &mut cursor, &mut sent).await {
                return;
            }
            if full {
                continue;
            }
            if !self.follow || !self.wait_for_more(&mut shutdown).await {
                return;
            }
        }
    }

    /// The page after `cursor`, read off the async threads.
    async fn page(&self, cursor: Option<Cursor>) -> Result<Page, Status> {
        let cp = Arc::clone(&self.cp);
        let filter = self.filter.clone();
        match tokio::task::spawn_blocking(move || cp.audit.query(&filter, cursor, PAGE)).await {
            Ok(Ok(page)) => Ok(page),
            Ok(Err(error)) => Err(read_status(error)),
            Err(error) => Err(Status::internal(error.to_string())),
        }
    }

    /// Sends `events`, moving `cursor` past each; whether the read goes on.
    async fn send(
        &self,
        events: Vec<AuditEvent>,
        cursor: &mut Option<Cursor>,
        sent: &mut u64,
    ) -> bool {
        for event in events {
            *cursor = Some(Cursor(event.seq));
            let Ok(bytes) = event.canonical_bytes() else {
                continue;
            };
            let record = pb::AuditRecord {
                seq: event.seq,
                canonical_json: bytes,
            };
            if self.tx.send(Ok(record)).await.is_err() {
                return false;
            }
            *sent += 1;
            if limit_reached(self.limit, *sent, self.follow) {
                return false;
            }
        }
        true
    }

    /// Waits before looking for new events; `false` when the follow is over instead (the
    /// certificate expired, the reviewer went away, the control plane stops).
    async fn wait_for_more(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        if now() >= self.certificate_expiry {
            let _ = self
                .tx
                .send(Err(Status::unauthenticated(format!(
                    "the client certificate expired at {}; reconnect with a renewed certificate",
                    super::utc(self.certificate_expiry)
                ))))
                .await;
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => true,
            _ = self.tx.closed() => false,
            _ = shutdown.wait_for(|stop| *stop) => false,
        }
    }
}

/// Whether a read that sent `sent` events is done by its `limit` (a follow has none).
fn limit_reached(limit: u64, sent: u64, follow: bool) -> bool {
    limit > 0 && sent >= limit && !follow
}

pub(crate) async fn checkpoint(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
) -> Result<pb::CheckpointResponse, Status> {
    authorize_read(cp, caller, "GetCheckpoint", Vec::new()).await?;
    let signed =
        cp.audit.checkpoint().await.map_err(|e| {
            Status::unavailable(format!("the audit log cannot sign a checkpoint: {e}"))
        })?;
    Ok(pb::CheckpointResponse {
        note: signed.note,
        tree_size: signed.checkpoint.size,
        root_hash: signed.checkpoint.root.to_vec(),
        verifier_key: cp.audit.verifier().key_text(),
    })
}

pub(crate) async fn prove_inclusion(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    request: pb::ProveInclusionRequest,
) -> Result<pb::ProveInclusionResponse, Status> {
    authorize_read(
        cp,
        caller,
        "ProveInclusion",
        vec![("seq", Detail::UInt(request.seq))],
    )
    .await?;
    let latest =
        cp.audit.checkpoint().await.map_err(|e| {
            Status::unavailable(format!("the audit log cannot sign a checkpoint: {e}"))
        })?;
    let tree_size = match request.tree_size {
        0 => latest.checkpoint.size,
        n => n,
    };
    if request.seq >= tree_size {
        return Err(Status::out_of_range(format!(
            "event {} is not in a tree of {tree_size} events",
            request.seq
        )));
    }
    let proof = cp
        .audit
        .inclusion_proof(request.seq, tree_size)
        .map_err(read_status)?;
    let event = cp.audit.event(request.seq).map_err(read_status)?;
    let canonical_json = event
        .canonical_bytes()
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(pb::ProveInclusionResponse {
        seq: request.seq,
        tree_size,
        hashes: proof.path.iter().map(|h| h.to_vec()).collect(),
        canonical_json,
        checkpoint_note: if tree_size == latest.checkpoint.size {
            latest.note
        } else {
            String::new()
        },
    })
}

pub(crate) async fn prove_consistency(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    request: pb::ProveConsistencyRequest,
) -> Result<pb::ProveConsistencyResponse, Status> {
    authorize_read(
        cp,
        caller,
        "ProveConsistency",
        vec![
            ("first_size", Detail::UInt(request.first_size)),
            ("second_size", Detail::UInt(request.second_size)),
        ],
    )
    .await?;
    let latest =
        cp.audit.checkpoint().await.map_err(|e| {
            Status::unavailable(format!("the audit log cannot sign a checkpoint: {e}"))
        })?;
    let second = match request.second_size {
        0 => latest.checkpoint.size,
        n => n,
    };
    if request.first_size > second {
        return Err(Status::invalid_argument(format!(
            "first_size {} is larger than second_size {second}",
            request.first_size
        )));
    }
    let hashes = cp
        .audit
        .consistency_proof(request.first_size, second)
        .map_err(read_status)?;
    Ok(pb::ProveConsistencyResponse {
        first_size: request.first_size,
        second_size: second,
        hashes: hashes.iter().map(|h| h.to_vec()).collect(),
        checkpoint_note: if second == latest.checkpoint.size {
            latest.note
        } else {
            String::new()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_ends_a_read_but_never_a_follow() {
        assert!(!limit_reached(0, 1_000_000, false), "no limit");
        assert!(!limit_reached(3, 2, false));
        assert!(limit_reached(3, 3, false));
        assert!(!limit_reached(3, 3, true), "a follow runs on");
    }

    #[test]
    fn filters_name_known_actions_and_outcomes_only() {
        let request = pb::QueryAuditRequest {
            action: " session.opened ".into(),
            outcome: "deny".into(),
            actor: "  ".into(),
            ..Default::default()
        };
        let filter = filter_of(&request).expect("a filter");
        assert_eq!(filter.action, Some(AuditAction::SessionOpened));
        assert_eq!(filter.outcome, Some(Outcome::Deny));
        assert_eq!(filter.actor, None, "blank is no filter");

        let unknown = pb::QueryAuditRequest {
            action: "session.teleported".into(),
            ..Default::default()
        };
        let refused = filter_of(&unknown).expect_err("unknown action");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("session.teleported"));
    }
}

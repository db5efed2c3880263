//! The reviewer's side: reading, following and proving the audit log. Each call needs
//! `ReadAudit` and is itself recorded (`audit.read`) before anything is read — the auditors are
//! audited. Events go out in their canonical bytes, exactly as hashed, so the reviewer's tools
//! check them against checkpoints without trusting this server.

use std::sync::Arc;
use std::time::Duration;

use loupe_proto::audit::event::{
    Action as AuditAction, Detail, NewEvent, Outcome, Resource, ResourceKind,
};
use loupe_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::answers::{audit_decision, denied_status};
use super::caller::Caller;
use super::{ControlPlane, now, random_id};
use crate::audit::{Cursor, Filter, ReadError};
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
    let cp = Arc::clone(cp);
    // A follow outlives no certificate: it ends when the reviewer's does.
    let certificate_expiry = u64::try_from(caller.identity.not_after).unwrap_or(0);
    tokio::spawn(async move {
        let mut cursor = (request.after_seq > 0).then_some(Cursor(request.after_seq));
        let mut sent = 0u64;
        let mut shutdown = cp.shutdown.clone();
        loop {
            let page_cp = Arc::clone(&cp);
            let page_filter = filter.clone();
            let page = tokio::task::spawn_blocking(move || {
                page_cp.audit.query(&page_filter, cursor, PAGE)
            })
            .await;
            let page = match page {
                Ok(Ok(page)) => page,
                Ok(Err(error)) => {
                    let _ = tx.send(Err(read_status(error))).await;
                    return;
                }
                Err(error) => {
                    let _ = tx.send(Err(Status::internal(error.to_string()))).await;
                    return;
                }
            };
            let full = page.next.is_some();
            for event in page.events {
                cursor = Some(Cursor(event.seq));
                let Ok(bytes) = event.canonical_bytes() else {
                    continue;
                };
                let record = pb::AuditRecord {
                    seq: event.seq,
                    canonical_json: bytes,
                };
                if tx.send(Ok(record)).await.is_err() {
                    return;
                }
                sent += 1;
                if request.limit > 0 && sent >= request.limit && !request.follow {
                    return;
                }
            }
            if full {
                continue;
            }
            if !request.follow {
                return;
            }
            if now() >= certificate_expiry {
                let _ = tx
                    .send(Err(Status::unauthenticated(format!(
                        "the client certificate expired at {}; reconnect with a renewed certificate",
                        super::utc(certificate_expiry)
                    ))))
                    .await;
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = tx.closed() => return,
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    });
    Ok(ReceiverStream::new(rx))
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

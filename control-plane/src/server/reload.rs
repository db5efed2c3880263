//! Reloading what the control plane reads from files while it runs: the policy set (on SIGHUP
//! or when its files change) and the TLS material (when its files change).
//!
//! Decisions:
//! - A policy set takes effect only once its loading is recorded (`policy.loaded`, the control
//!   plane as actor): a set the audit log cannot record stays out of force, and is tried again
//!   on the next SIGHUP or file change. A set that does not load is recorded as rejected
//!   (`policy.rejected`) and the previous one stays in force. Reloads run one at a time.
//! - Files are watched by polling their modification stamps every two seconds rather than with
//!   a watcher crate: two directories, a handful of files, no dependency.
//! - New TLS material serves new handshakes, and becomes the client certificate shown to
//!   agents (which tokens bind to) from then on; material that does not load is logged and the
//!   old stays.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use loupe_audit::event::{
    Action as AuditAction, Decision as AuditDecision, Detail, NewEvent, Resource, ResourceKind,
};
use tonic::Status;

use super::answers::{allow, deny};
use super::{ControlPlane, Every, random_id};

fn text(value: impl Into<String>) -> Detail {
    Detail::Text(value.into())
}

/// Records the policy set in force at start.
pub(crate) async fn record_policy_loaded(cp: &Arc<ControlPlane>) -> Result<(), Status> {
    let bundle = cp.policy.current();
    cp.record(policy_event(
        cp,
        AuditAction::PolicyLoaded,
        allow(bundle.policy_ids(), "loaded at start"),
        bundle.version(),
    ))
    .await?;
    Ok(())
}

fn policy_event(
    cp: &ControlPlane,
    action: AuditAction,
    decision: AuditDecision,
    version: &str,
) -> NewEvent {
    NewEvent::new(
        cp.own_actor(),
        action,
        Resource {
            kind: ResourceKind::Policy,
            id: cp.policy.dir().display().to_string(),
        },
        decision,
        random_id("req"),
    )
    .detail("version", text(version))
}

/// Rereads the policy directory (on SIGHUP or a file change): a valid new set is audited as
/// loaded and then takes effect — and does not if it cannot be recorded (it is tried again on
/// the next SIGHUP or file change); an invalid one is logged and audited as rejected, and the
/// old set stays in force.
pub async fn reload_policy(cp: &Arc<ControlPlane>, trigger: &str) {
    let _one_reload = cp.policy_reloads.lock().await;
    let engine_cp = Arc::clone(cp);
    let outcome = tokio::task::spawn_blocking(move || engine_cp.policy.prepare_reload()).await;
    match outcome {
        Ok(Ok(prepared)) if prepared.outcome.changed => {
            let outcome = prepared.outcome.clone();
            let event = policy_event(
                cp,
                AuditAction::PolicyLoaded,
                allow(outcome.policy_ids, format!("reloaded ({trigger})")),
                &outcome.version,
            )
            .detail("previous_version", text(outcome.previous_version.clone()));
            if let Err(status) = cp.record(event).await {
                tracing::error!(version = %outcome.version, error = %status.message(), %trigger, "new policies not applied: the audit log cannot record them; the previous set stays in force");
                return;
            }
            cp.policy.apply(prepared);
            tracing::info!(version = %outcome.version, previous = %outcome.previous_version, %trigger, "policies reloaded");
        }
        Ok(Ok(_)) => tracing::debug!(%trigger, "policies unchanged"),
        Ok(Err(error)) => {
            tracing::error!(%error, %trigger, "new policies rejected; the previous set stays in force");
            let version = cp.policy.current().version().to_owned();
            let event = policy_event(
                cp,
                AuditAction::PolicyRejected,
                deny(Vec::new(), error.to_string()),
                &version,
            );
            let _ = cp.record(event).await;
        }
        Err(error) => tracing::error!(%error, "policy reload task failed"),
    }
}

/// Modification stamps of the files in a directory, to notice edits without a watcher crate.
fn stamps(dir: &std::path::Path) -> Vec<(String, Option<SystemTime>, u64)> {
    let mut stamps: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| {
            let meta = entry.metadata().ok();
            (
                entry.file_name().to_string_lossy().into_owned(),
                meta.as_ref().and_then(|m| m.modified().ok()),
                meta.map_or(0, |m| m.len()),
            )
        })
        .collect();
    stamps.sort();
    stamps
}

/// Every two seconds: new TLS material takes effect for new handshakes and for the connections
/// (and token bindings) to agents from then on; changed policy files are reloaded as on SIGHUP.
pub(crate) async fn watch_files(cp: Arc<ControlPlane>) {
    let mut seen = stamps(cp.policy.dir());
    let mut every = Every::new(Duration::from_secs(2), cp.shutdown.clone());
    while every.tick().await {
        reload_tls_if_changed(&cp);
        let now_stamps = stamps(cp.policy.dir());
        if now_stamps != seen {
            seen = now_stamps;
            reload_policy(&cp, "file change").await;
        }
    }
}

/// Rereads the TLS material if its files changed; the same files are the client certificate
/// shown to agents, which tokens bind to.
fn reload_tls_if_changed(cp: &ControlPlane) {
    match cp.server_tls.reload_if_changed() {
        Ok(true) => match cp.agents.reload() {
            Ok(()) => tracing::info!("reloaded TLS material"),
            Err(error) => {
                tracing::warn!(%error, "new client TLS material rejected; agents see the old")
            }
        },
        Ok(false) => {}
        Err(error) => tracing::warn!(%error, "new TLS material rejected; keeping the old"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_notice_a_new_file_an_edit_and_a_removal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = dir.path().join("a.cedar");
        std::fs::write(&policy, "permit (principal, action, resource);").expect("write");
        let first = stamps(dir.path());
        assert_eq!(first.len(), 1);
        assert_eq!(
            stamps(dir.path()),
            first,
            "nothing changed, nothing noticed"
        );

        std::fs::write(dir.path().join("b.cedar"), "").expect("write");
        let added = stamps(dir.path());
        assert_ne!(added, first);

        // Same modification time is possible within the clock's grain: the length tells.
        std::fs::write(&policy, "forbid (principal, action, resource);; ").expect("write");
        assert_ne!(stamps(dir.path()), added);

        std::fs::remove_file(&policy).expect("remove");
        assert_eq!(stamps(dir.path()).len(), 1);
    }

    #[test]
    fn a_missing_directory_has_no_stamps() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(stamps(&dir.path().join("gone")).is_empty());
    }
}

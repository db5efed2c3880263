//! The running policy: one validated [`PolicyBundle`] behind an atomic handle, swapped whole on
//! reload. Readers never wait and never see half a set; a reload that fails keeps the set in
//! force and returns the error, for the caller to audit (`policy.rejected`).
//!
//! A reload is two steps, [`PolicyEngine::prepare_reload`] (read and validate) and
//! [`PolicyEngine::apply`] (take effect), so that the caller can record the new set in the
//! audit log between them and apply it only once that record is durable.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use super::bundle::{PolicyBundle, PolicyError};
use super::decide::{Approver, Decision};
use super::names::{PointName, ServiceName};
use super::request::{ApprovalFacts, AuthzRequest};

/// What a successful reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// Version of the set replaced.
    pub previous_version: String,
    /// Version now in force.
    pub version: String,
    /// Whether any file changed (when not, the old set is kept as is).
    pub changed: bool,
    /// Policy ids now in force, sorted.
    pub policy_ids: Vec<String>,
}

/// A validated new policy set, not yet in force.
#[derive(Debug)]
pub struct PreparedReload {
    pub outcome: ReloadOutcome,
    bundle: PolicyBundle,
}

/// The control plane's policy engine.
#[derive(Debug)]
pub struct PolicyEngine {
    dir: PathBuf,
    current: ArcSwap<PolicyBundle>,
    reloading: Mutex<()>,
}

impl PolicyEngine {
    /// Loads `dir`; an invalid set is an error (the control plane refuses to start).
    pub fn load(dir: impl AsRef<Path>) -> Result<PolicyEngine, PolicyError> {
        let dir = dir.as_ref().to_path_buf();
        let bundle = PolicyBundle::load(&dir)?;
        Ok(PolicyEngine {
            dir,
            current: ArcSwap::from_pointee(bundle),
            reloading: Mutex::new(()),
        })
    }

    /// Rereads the directory. If the new set is valid it takes effect for every later decision;
    /// if not, the set in force stays and the error says why.
    pub fn reload(&self) -> Result<ReloadOutcome, PolicyError> {
        let prepared = self.prepare_reload()?;
        let outcome = prepared.outcome.clone();
        self.apply(prepared);
        Ok(outcome)
    }

    /// Rereads and validates the directory without changing the set in force.
    pub fn prepare_reload(&self) -> Result<PreparedReload, PolicyError> {
        let previous = self.current.load_full();
        let bundle = PolicyBundle::load(&self.dir)?;
        let outcome = ReloadOutcome {
            previous_version: previous.version().to_owned(),
            version: bundle.version().to_owned(),
            changed: bundle.version() != previous.version(),
            policy_ids: bundle.policy_ids(),
        };
        Ok(PreparedReload { outcome, bundle })
    }

    /// Puts a prepared set in force (if it differs from the one in force).
    pub fn apply(&self, prepared: PreparedReload) {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if prepared.outcome.changed {
            self.current.store(Arc::new(prepared.bundle));
        }
    }

    /// The set in force. Hold it to make several decisions against one version.
    pub fn current(&self) -> Arc<PolicyBundle> {
        self.current.load_full()
    }

    /// Decides `request` against the set in force.
    pub fn authorize(&self, request: &AuthzRequest) -> Decision {
        self.current.load().authorize(request)
    }

    /// Who could approve the pending session of `facts` on `point` of `service`.
    pub fn who_could_approve(
        &self,
        service: &ServiceName,
        point: &PointName,
        facts: &ApprovalFacts,
    ) -> Vec<Approver> {
        self.current.load().who_could_approve(service, point, facts)
    }

    /// The directory the engine loads from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

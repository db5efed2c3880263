//! The running control plane: the `loupe.v1.ControlPlane` gRPC service over mTLS, and the
//! state every call shares.
//!
//! - [`caller`]: who is calling, from the client certificate, and the audit actor it becomes.
//! - [`table`]: the session table, kept to what is committed, and the one way a session changes.
//! - [`answers`]: what a decision becomes: its audit record and the caller's gRPC status.
//! - [`facts`]: the policy facts of a stored session.
//! - [`access`]: who may see, approve or deny a session, and who could still approve it.
//! - [`wire`]: the wire form of a session, as every session call answers it.
//! - [`opening`]: opening a session (`OpenSession`).
//! - [`transitions`]: approving, denying, closing and revoking a session.
//! - [`views`]: what a caller sees of sessions (`GetSession`, `ListSessions`).
//! - [`expiry`]: recording the expiry of sessions whose time has come.
//! - [`fanout`]: several replicas on one database: sessions read before deciding, and other
//!   replicas' changes followed (revocations reach this replica's captures and agents).
//! - [`reload`]: policy and TLS reloads while running, each policy change recorded first.
//! - [`discovery`]: agent registration and the service/point listings.
//! - [`agents`]: the channels to agents, and telling them a session was revoked.
//! - [`capture`]: capture fan-out to the agents and the merged, audited stream back.
//! - [`review`]: the reviewer's reads of the audit log, each itself audited.
//! - [`admission`]: the bounds every request's fields are checked against on entry.
//! - [`refusals`]: per-identity rate limiting of refused calls.
//! - [`slots`]: how many captures each engineer runs at once.
//! - [`paging`]: page sizes and page tokens of the list calls.
//! - [`startup`]: what the control plane reads from files when it opens.
//! - [`service`]: the tonic service, a thin mapping of each RPC onto the above.
//!
//! The rule every module follows: decide, write the decision to the audit log — with the state
//! change it makes, in the same commit ([`ControlPlane::record_with_state`]) — and only then
//! act. An audit append that fails turns into `UNAVAILABLE` ("the audit log is failing") and
//! the action does not happen, in the log, the state or memory.

pub mod access;
pub mod admission;
pub mod agents;
pub mod answers;
pub mod caller;
pub mod capture;
pub mod discovery;
pub mod expiry;
pub mod facts;
pub mod fanout;
#[cfg(test)]
mod fixtures;
pub mod opening;
pub mod paging;
pub mod refusals;
pub mod reload;
pub mod review;
pub mod service;
pub mod slots;
pub mod startup;
pub mod table;
pub mod transitions;
pub mod views;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use loupe_audit::event::{Actor, NewEvent};
use loupe_proto::v1::control_plane_server::ControlPlaneServer;
use loupe_trust::accept::tls_incoming;
use loupe_trust::dial::ClientTls;
use loupe_trust::identity::IdentityRules;
use loupe_trust::tls::{ReloadingServerTls, TlsError};
use tokio::sync::watch;
use tonic::Status;

use crate::audit::{AuditLog, Database, OpenError, ReadError, Receipt, SessionFeed, StateChange};
use crate::config::Config;
use crate::policy::{PolicyEngine, PolicyError};
use crate::registry::{Registry, Rules};
use crate::state::StateError;
use crate::tokens::{MintError, TokenMinter};

/// Largest request decoded: requests are small; anything bigger is hostile.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest message encoded: one snapshot at the agents' largest ceiling, with room to spare.
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Why the control plane did not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("policies: {0}")]
    Policy(#[from] PolicyError),
    #[error("audit log: {0}")]
    Audit(#[from] OpenError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("reading the stored sessions: {0}")]
    Sessions(#[from] ReadError),
    #[error("token-signing key {path}: {reason}")]
    TokenKey {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("tokens: {0}")]
    Mint(#[from] MintError),
    #[error("audit-signing key {path}: {reason}")]
    AuditKey {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("identity.cn_mappings: CA certificate {path}: {reason}")]
    CnMapping {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("the control plane's own certificate {path}: {reason}")]
    OwnIdentity {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the policy engine's startup decision could not be audited: {0}")]
    StartupAudit(String),
    #[error("cannot start following other replicas' session changes: {0}")]
    Fanout(std::io::Error),
}

/// Everything the calls share.
pub struct ControlPlane {
    pub(crate) config: Config,
    pub(crate) audit: AuditLog,
    pub(crate) policy: PolicyEngine,
    /// Sessions as committed to the audit database (the log keeps this table current).
    pub(crate) sessions: Arc<table::SessionTable>,
    /// The shared database's session changes, when replicas share one (see [`fanout`]).
    pub(crate) feed: Option<Arc<SessionFeed>>,
    /// Policy reloads one at a time: each is recorded before it takes effect.
    pub(crate) policy_reloads: tokio::sync::Mutex<()>,
    /// Live agent instances: in memory with SQLite, in the shared database with PostgreSQL.
    pub(crate) registry: Registry,
    pub(crate) minter: TokenMinter,
    pub(crate) agents: agents::AgentDialer,
    pub(crate) refusals: refusals::RefusalLimiter,
    pub(crate) captures: slots::CaptureSlots,
    /// The control plane's identity, the actor of the events it causes (expiry, policy).
    pub(crate) own_identity: String,
    pub(crate) server_tls: Arc<ReloadingServerTls>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// How callers are identified: strict SVIDs in the trust domain, plus any configured
    /// CN mappings.
    pub(crate) identity: IdentityRules,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("listen", &self.config.listen)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Loads every file the configuration names (TLS material, policies, keys), opens and
    /// re-verifies the audit log and the session state. Anything wrong is an error naming it.
    pub fn open(
        config: Config,
        shutdown: watch::Receiver<bool>,
    ) -> Result<ControlPlane, StartError> {
        let server_tls = ReloadingServerTls::load(config.tls.clone())?;
        let client_tls = ClientTls::load(&config.tls)?;
        let identity = startup::identity_rules(&config)?;
        let own_identity = startup::own_identity(
            &config.trust_domain,
            &config.tls.cert,
            client_tls.certificate(),
        )?;
        let policy = PolicyEngine::load(&config.policy_dir)?;
        let minter = startup::token_minter(&config, &own_identity)?;
        let signer = startup::audit_signer(&config.audit_signing_key)?;
        let (audit, sessions) =
            startup::audit_and_sessions(&config.data_dir, config.database.as_deref(), signer)?;
        let database = config
            .database
            .as_deref()
            .map(Database::parse)
            .transpose()
            .map_err(StateError::Store)?;
        let feed = database.clone().map(|db| Arc::new(SessionFeed::new(db)));
        let rules = Rules::new(
            config.trust_domain.clone(),
            config.lease_seconds,
            usize::try_from(config.limits.instances_per_agent_identity).unwrap_or(usize::MAX),
        );
        let registry = match database {
            Some(database) => Registry::shared(rules, database),
            None => Registry::in_memory(rules),
        };
        Ok(ControlPlane {
            agents: agents::AgentDialer::new(
                client_tls,
                config.tls.clone(),
                config.trust_domain.clone(),
            ),
            refusals: refusals::RefusalLimiter::new(&config.limits),
            captures: slots::CaptureSlots::new(config.limits.captures_per_user),
            config,
            audit,
            policy,
            sessions,
            feed,
            policy_reloads: tokio::sync::Mutex::new(()),
            registry,
            minter,
            own_identity,
            server_tls,
            shutdown,
            identity,
        })
    }

    /// Appends `event`, or refuses the action it guards.
    pub(crate) async fn record(&self, event: NewEvent) -> Result<Receipt, Status> {
        self.audit.append(event).await.map_err(audit_failing)
    }

    /// Records the refusal `event`, then answers `refusal` — or, if the log cannot take the
    /// record, the log's failure instead: no refusal is answered unrecorded.
    pub(crate) async fn refuse(&self, event: NewEvent, refusal: Status) -> Status {
        match self.record(event).await {
            Ok(_) => refusal,
            Err(unrecorded) => unrecorded,
        }
    }

    /// Appends `events` and commits the state change they record in one transaction, or
    /// refuses the action: nothing of it is stored then, and nothing changes in memory.
    pub(crate) async fn record_with_state(
        &self,
        events: Vec<NewEvent>,
        change: StateChange,
    ) -> Result<(), Status> {
        self.audit
            .append_with_state(events, vec![change])
            .await
            .map(drop)
            .map_err(audit_failing)
    }

    /// The control plane itself as an audit actor, with the certificate it presents now.
    pub(crate) fn own_actor(&self) -> Actor {
        Actor {
            id: self.own_identity.clone(),
            cert_sha256: self.agents.certificate_fingerprint(),
        }
    }
}

/// The answer to a call the agent registry could not serve (its database unreachable): a
/// replica does not act on what it last knew of the agents.
pub(crate) fn registry_failing(error: crate::audit::StoreError) -> Status {
    tracing::error!(%error, "the agent registry cannot be used; refusing the call");
    Status::unavailable(format!(
        "the agent registry cannot be used ({error}), and this replica does not act on what it last knew of the agents; retry, or tell the control plane's operators"
    ))
}

/// The answer to an action the audit log could not record.
fn audit_failing(error: crate::audit::AppendError) -> Status {
    if let crate::audit::AppendError::Conflict(conflict) = &error {
        // Not a failing log: another replica decided on the same session first.
        return Status::aborted(format!(
            "{conflict}: another control-plane replica changed it first, and nothing was recorded; read the session again and retry"
        ));
    }
    tracing::error!(%error, "audit append failed; refusing the action");
    Status::unavailable(format!(
        "the audit log is failing, so the control plane refuses every action it cannot record ({error}); tell the control plane's operators"
    ))
}

/// A started control plane: where it listens, and its serving task.
pub struct Running {
    pub local_addr: SocketAddr,
    pub state: Arc<ControlPlane>,
    pub server: tokio::task::JoinHandle<()>,
}

/// Binds `state.config.listen` and serves until `state.shutdown` turns true. Also starts the
/// background duties: session expiry, lease expiry, TLS and policy reload, and (on a shared
/// database) following other replicas' session changes.
pub async fn start(state: ControlPlane) -> Result<Running, StartError> {
    let address = state.config.listen;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Listen { address, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| StartError::Listen { address, source })?;
    let server_config = state.server_tls.server_config()?;
    let state = Arc::new(state);
    reload::record_policy_loaded(&state)
        .await
        .map_err(|status| StartError::StartupAudit(status.message().to_owned()))?;

    tokio::spawn(expiry::expire_sessions(Arc::clone(&state)));
    fanout::follow(&state).map_err(StartError::Fanout)?;
    tokio::spawn(discovery::expire_leases(Arc::clone(&state)));
    tokio::spawn(reload::watch_files(Arc::clone(&state)));

    let incoming = tls_incoming(
        listener,
        server_config,
        state.shutdown.clone(),
        "loupe control plane",
    );
    let service = ControlPlaneServer::new(service::ControlPlaneService::new(Arc::clone(&state)))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES);
    let mut shutdown = state.shutdown.clone();
    let server = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "control plane server stopped");
        }
    });
    Ok(Running {
        local_addr,
        state,
        server,
    })
}

/// A periodic duty that stops with the control plane.
pub(crate) struct Every {
    ticker: tokio::time::Interval,
    shutdown: watch::Receiver<bool>,
}

impl Every {
    pub(crate) fn new(period: Duration, shutdown: watch::Receiver<bool>) -> Every {
        let mut ticker = tokio::time::interval(period);
        // A stalled tick is not made up for in a burst.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Every { ticker, shutdown }
    }

    /// Waits for the next tick; `false` once the control plane is stopping.
    pub(crate) async fn tick(&mut self) -> bool {
        tokio::select! {
            _ = self.ticker.tick() => true,
            _ = self.shutdown.wait_for(|stop| *stop) => false,
        }
    }
}

/// A random id with a prefix, e.g. `ses-3f9c…` (80 bits).
pub(crate) fn random_id(prefix: &str) -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 10];
    // A failing system RNG leaves zeros; ids must still differ, so mix in the clock.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes.copy_from_slice(&nanos.to_le_bytes()[..10]);
    }
    let mut id = String::with_capacity(prefix.len() + 21);
    id.push_str(prefix);
    id.push('-');
    for byte in bytes {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// Unix seconds as RFC 3339 UTC (`2026-11-30T01:18:25Z`), for messages people read.
pub(crate) fn utc(unix_seconds: u64) -> String {
    let seconds = i64::try_from(unix_seconds).unwrap_or(i64::MAX);
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{unix_seconds} (Unix seconds)"),
    }
}

/// Unix seconds now.
pub(crate) fn now() -> u64 {
    loupe_trust::token::unix_now()
}

/// The caller's request id, or a fresh one.
pub(crate) fn request_id(given: &str) -> String {
    let given = given.trim();
    if given.is_empty()
        || given.len() > crate::bounds::REQUEST_ID_BYTES
        || given.chars().any(char::is_control)
    {
        random_id("req")
    } else {
        given.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AppendError, StoreError};

    #[test]
    fn a_decision_on_a_stale_session_is_aborted_and_a_failing_log_is_unavailable() {
        let conflict = audit_failing(AppendError::Conflict("session ses-1 changed".into()));
        assert_eq!(conflict.code(), tonic::Code::Aborted);
        assert!(
            conflict.message().contains("retry"),
            "{}",
            conflict.message()
        );
        let down = audit_failing(AppendError::Storage(StoreError::Unavailable(
            "error connecting to server".into(),
        )));
        assert_eq!(down.code(), tonic::Code::Unavailable);
    }
}

//! The agent's gRPC endpoint: the process's snapshot points, served over mTLS to the control
//! plane and to no one else, with every capture enforced by a session token the agent checks
//! itself.
//!
//! [`Agent::builder`] configures it; [`AgentBuilder::start`] validates everything (files, keys,
//! the listen address) before returning, then serves on a thread and Tokio runtime of its own,
//! so it works in programs without Tokio and never competes with the host's runtime. Dropping
//! the returned [`AgentHandle`] ends every capture it serves and stops the server, waiting at
//! most a short grace for peers to close their connections.
//!
//! - [`service`]: the `loupe.v1.Agent` service — identity check, token enforcement, limits.
//! - [`sessions`]: revocations, spent tokens, the captures in flight, and the agent's counters.
//! - [`replay`]: single-use tokens — the bounded cache of `jti`s already used.
//! - [`registration`]: registering with the control plane and renewing the lease, when
//!   [`AgentBuilder::control_plane_address`] is set; also fetches the token keys then.

pub mod registration;
pub mod replay;
pub mod service;
pub mod sessions;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
pub use loupe_proto::v1::AgentMode;
use loupe_proto::v1::agent_server::AgentServer;
use loupe_trust::accept::tls_incoming;
use loupe_trust::dial::{ClientTls, split_host_port};
use loupe_trust::identity::{IdentityRules, SpiffeId, SpiffeIdError};
use loupe_trust::tls::{ReloadingServerTls, TlsError, TlsPaths};
use loupe_trust::token::{KeyError, KeySet, MAX_LEEWAY_SECS, VerificationPolicy, audience_for};
use tokio::sync::watch;

use crate::capture::engine::Engine;
use crate::capture::spec::{EngineConfig, default_instance_id};
use crate::redaction::RedactionError;
use registration::{Registration, RegistrationConfig, RegistrationStatus};
use service::AgentService;
use sessions::{AgentCounters, EndpointState};

/// Largest request the agent decodes: capture requests are small; anything bigger is hostile.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest message the agent encodes: one snapshot at the largest ceiling, with room to spare.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// How long a stopping agent waits for its peers to close their connections before it closes
/// them itself.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The in-process agent's endpoint.
pub struct Agent;

impl Agent {
    pub fn builder() -> AgentBuilder {
        AgentBuilder::default()
    }
}

/// Where the token-verification keys come from.
#[derive(Debug, Clone)]
enum TokenKeys {
    /// A JWK set file, reloaded when it changes (key rotation without restart).
    File(PathBuf),
    Fixed(KeySet),
}

/// Configuration of an agent endpoint. `start()` checks it all.
#[derive(Debug, Clone)]
pub struct AgentBuilder {
    service: Option<String>,
    instance: Option<String>,
    listen: SocketAddr,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    crl: Option<PathBuf>,
    control_plane: Option<String>,
    control_plane_address: Option<String>,
    advertise_address: Option<String>,
    token_keys: Option<TokenKeys>,
    max_token_lifetime: Duration,
    leeway: Duration,
    max_captures: usize,
    max_captures_per_session: usize,
    replay_cache_capacity: usize,
    reload_interval: Duration,
    engine: EngineConfig,
    mode: AgentMode,
}

impl Default for AgentBuilder {
    fn default() -> Self {
        AgentBuilder {
            service: None,
            instance: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            cert: None,
            key: None,
            ca: None,
            crl: None,
            control_plane: None,
            control_plane_address: None,
            advertise_address: None,
            token_keys: None,
            max_token_lifetime: Duration::from_secs(30 * 60),
            leeway: Duration::from_secs(MAX_LEEWAY_SECS),
            max_captures: 16,
            max_captures_per_session: 4,
            replay_cache_capacity: replay::DEFAULT_CAPACITY,
            reload_interval: Duration::from_secs(2),
            engine: EngineConfig::default(),
            mode: AgentMode::InProcess,
        }
    }
}

/// Why the endpoint did not start: each kind its own variant, so a caller (the demo, a
/// service's own start-up) can tell a setting to fix from a file to provide or a port in use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("agent setting `{0}` is required")]
    Missing(&'static str),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot read token keys {path}: {source}")]
    ReadKeys {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token keys {path}: {source}")]
    Keys { path: PathBuf, source: KeyError },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the agent's thread: {0}")]
    Thread(std::io::Error),
    #[error("agent redaction configuration: {0}")]
    Redaction(#[from] RedactionError),
    #[error("invalid setting: service name is empty")]
    EmptyService,
    #[error("invalid setting: replay_cache_capacity is 0; the agent could accept no token")]
    NoReplayCapacity,
    #[error("invalid setting: control_plane identity `{identity}` is not a SPIFFE ID: {reason}")]
    ControlPlaneIdentity {
        identity: String,
        reason: SpiffeIdError,
    },
    #[error("invalid setting: {setting} `{address}` is not a host:port address: {rule}")]
    BadAddress {
        setting: &'static str,
        address: String,
        rule: &'static str,
    },
    #[error(
        "the agent listens on the wildcard address {listen}, which the control plane cannot dial; \
         set `advertise_address` to the host:port it should use"
    )]
    AdvertiseAddressRequired { listen: SocketAddr },
}

impl AgentBuilder {
    /// The service this process belongs to; tokens must name it in `aud`.
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    /// This instance's id (default: hostname-pid).
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Address to listen on (default 127.0.0.1 on a free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The agent's certificate chain and key (PEM), and the CA that client certificates must
    /// chain to.
    pub fn tls(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        ca: impl Into<PathBuf>,
    ) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self.ca = Some(ca.into());
        self
    }

    /// A CRL (PEM) for the CA; revoked client certificates are refused.
    pub fn crl(mut self, crl: impl Into<PathBuf>) -> Self {
        self.crl = Some(crl.into());
        self
    }

    /// The one identity allowed to call this agent, e.g. `spiffe://example.org/control-plane`.
    /// Also the required token issuer.
    pub fn control_plane(mut self, identity: impl Into<String>) -> Self {
        self.control_plane = Some(identity.into());
        self
    }

    /// The control plane's `host:port`: the agent registers there on start, renews its lease
    /// for as long as it runs, and is dialed back at its advertised address. The control
    /// plane's certificate must name the [`control_plane`](Self::control_plane) identity.
    /// Unless token keys are given here, they are fetched from the control plane at each
    /// registration; until the first arrive, every capture is refused.
    pub fn control_plane_address(mut self, address: impl Into<String>) -> Self {
        self.control_plane_address = Some(address.into());
        self
    }

    /// The `host:port` the control plane should dial to reach this agent (default: the
    /// listener's address, which must then not be a wildcard such as `0.0.0.0`).
    pub fn advertise_address(mut self, address: impl Into<String>) -> Self {
        self.advertise_address = Some(address.into());
        self
    }

    /// Token-verification keys from a JWK set file, reloaded when it changes.
    pub fn token_keys_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token_keys = Some(TokenKeys::File(path.into()));
        self
    }

    /// Token-verification keys given directly.
    pub fn token_keys(mut self, keys: KeySet) -> Self {
        self.token_keys = Some(TokenKeys::Fixed(keys));
        self
    }

    /// Longest token lifetime accepted (default 30 minutes).
    pub fn max_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_token_lifetime = lifetime;
        self
    }

    /// Clock skew tolerated on token times; at most 5 s.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway.min(Duration::from_secs(MAX_LEEWAY_SECS));
        self
    }

    /// Captures served at once (default 16), and per session (default 4).
    pub fn max_captures(mut self, total: usize, per_session: usize) -> Self {
        self.max_captures = total;
        self.max_captures_per_session = per_session;
        self
    }

    /// How many used tokens the agent remembers at once (default
    /// [`replay::DEFAULT_CAPACITY`]); when that many are still unexpired, new captures are
    /// refused until the oldest expire. See [`replay`].
    pub fn replay_cache_capacity(mut self, tokens: usize) -> Self {
        self.replay_cache_capacity = tokens;
        self
    }

    /// How often certificate, key, CA, CRL and token-key files are checked for changes.
    pub fn reload_interval(mut self, interval: Duration) -> Self {
        self.reload_interval = interval;
        self
    }

    /// Capture ceilings, CPU budget and redaction of this agent (service and instance are set
    /// from the builder).
    pub fn engine_config(mut self, config: EngineConfig) -> Self {
        self.engine = config;
        self
    }

    /// Checks the configuration, binds the listener, and starts serving.
    /// How this agent observes the process it serves: in-process (the default, a library
    /// inside it) or as a sidecar beside it. Announced in `Describe` and at registration.
    pub fn mode(mut self, mode: AgentMode) -> Self {
        self.mode = mode;
        self
    }

    pub fn start(self) -> Result<AgentHandle, StartError> {
        let service = self.service.clone().ok_or(StartError::Missing("service"))?;
        if service.is_empty() {
            return Err(StartError::EmptyService);
        }
        let control_plane = self
            .control_plane
            .clone()
            .ok_or(StartError::Missing("control_plane"))?;
        if self.replay_cache_capacity == 0 {
            return Err(StartError::NoReplayCapacity);
        }
        // The one caller this agent serves; its trust domain is the one every peer is
        // identified in.
        let identity = SpiffeId::parse(&control_plane)
            .map(|id| IdentityRules::for_peer(&id))
            .map_err(|reason| StartError::ControlPlaneIdentity {
                identity: control_plane.clone(),
                reason,
            })?;
        let tls_paths = TlsPaths {
            cert: self
                .cert
                .clone()
                .ok_or(StartError::Missing("tls certificate"))?,
            key: self.key.clone().ok_or(StartError::Missing("tls key"))?,
            ca: self.ca.clone().ok_or(StartError::Missing("tls CA"))?,
            crl: self.crl.clone(),
        };
        let tls = ReloadingServerTls::load(tls_paths)?;
        let server_config = tls.server_config()?;
        let registering = match &self.control_plane_address {
            None => None,
            Some(address) => {
                check_host_port("control_plane_address", address, Wildcard::Allowed)?;
                if let Some(advertise) = &self.advertise_address {
                    check_host_port("advertise_address", advertise, Wildcard::Refused)?;
                } else if self.listen.ip().is_unspecified() {
                    return Err(StartError::AdvertiseAddressRequired {
                        listen: self.listen,
                    });
                }
                // The server side loaded these files already; loading them as a client too
                // makes a problem with them an error here rather than a retry loop later.
                ClientTls::load(tls.paths())?;
                Some(address.clone())
            }
        };
        let keys = match &self.token_keys {
            // Fetched from the control plane once registered; an empty set refuses every
            // token meanwhile.
            None if registering.is_some() => KeySet::new(),
            None => return Err(StartError::Missing("token keys")),
            Some(TokenKeys::Fixed(keys)) => keys.clone(),
            Some(TokenKeys::File(path)) => read_key_set(path)?,
        };
        let instance = self.instance.clone().unwrap_or_else(default_instance_id);
        let engine = Engine::global();
        engine.configure(EngineConfig {
            service: service.clone(),
            instance: instance.clone(),
            ..self.engine.clone()
        })?;

        let listener = TcpListener::bind(self.listen).map_err(|source| StartError::Bind {
            addr: self.listen,
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| StartError::Bind {
                addr: self.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: self.listen,
            source,
        })?;

        let policy = VerificationPolicy {
            keys,
            issuer: control_plane.clone(),
            audience: audience_for(&service),
            leeway: self.leeway,
            max_lifetime: self.max_token_lifetime,
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut state = EndpointState::new(
            service,
            instance,
            control_plane,
            identity,
            ArcSwap::from_pointee(policy),
            self.max_captures,
            self.max_captures_per_session,
            self.max_token_lifetime,
            self.replay_cache_capacity,
            shutdown_rx.clone(),
        );
        state.mode = self.mode;
        let state = Arc::new(state);

        let registration = registering.map(|address| {
            let config = RegistrationConfig {
                address,
                identity: state.control_plane.clone(),
                advertise: self
                    .advertise_address
                    .clone()
                    .unwrap_or_else(|| local_addr.to_string()),
                tls: tls.paths().clone(),
                fetch_keys: self.token_keys.is_none(),
            };
            (config, Arc::new(Registration::default()))
        });
        let status = registration.as_ref().map(|(_, status)| Arc::clone(status));

        let thread_state = Arc::clone(&state);
        let key_file = match &self.token_keys {
            Some(TokenKeys::File(path)) => Some(path.clone()),
            _ => None,
        };
        let reload_interval = self.reload_interval;
        let thread = std::thread::Builder::new()
            .name("loupe-agent".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .thread_name("loupe-agent")
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        tracing::error!(%error, "loupe agent: cannot build its runtime; not serving");
                        return;
                    }
                };
                // Registration shares the agent's runtime: it never runs on a host thread, and it
                // ends with the server.
                if let Some((config, status)) = registration {
                    runtime.spawn(registration::run(
                        config,
                        Arc::clone(&thread_state),
                        status,
                        shutdown_rx.clone(),
                    ));
                }
                runtime.block_on(serve(
                    listener,
                    server_config,
                    tls,
                    key_file,
                    reload_interval,
                    thread_state,
                    shutdown_rx,
                ));
            })
            .map_err(StartError::Thread)?;
        tracing::info!(%local_addr, service = %state.service, instance = %state.instance, "loupe agent serving");
        Ok(AgentHandle {
            local_addr,
            state,
            registration: status,
            shutdown: shutdown_tx,
            thread: Some(thread),
        })
    }
}

/// Whether an address may be a wildcard IP (`0.0.0.0`, `::`): fine to dial locally, but
/// meaningless to tell a remote peer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wildcard {
    Allowed,
    Refused,
}

/// Refuses anything but `host:port` (a name or an IP, IPv6 in brackets) with a port number.
fn check_host_port(
    setting: &'static str,
    address: &str,
    wildcard: Wildcard,
) -> Result<(), StartError> {
    let bad = |rule: &'static str| StartError::BadAddress {
        setting,
        address: address.to_owned(),
        rule,
    };
    let (host, _) = split_host_port(address).map_err(bad)?;
    if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) && wildcard == Wildcard::Refused {
        return Err(bad("a wildcard address cannot be dialed"));
    }
    Ok(())
}

fn read_key_set(path: &Path) -> Result<KeySet, StartError> {
    let json = std::fs::read(path).map_err(|source| StartError::ReadKeys {
        path: path.to_owned(),
        source,
    })?;
    KeySet::from_jwks_json(&json).map_err(|source| StartError::Keys {
        path: path.to_owned(),
        source,
    })
}

/// A running agent endpoint. Dropping it ends its captures and stops the server.
pub struct AgentHandle {
    local_addr: SocketAddr,
    state: Arc<EndpointState>,
    registration: Option<Arc<Registration>>,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl AgentHandle {
    /// The address actually listened on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The endpoint's counters, as `Describe` reports them.
    pub fn counters(&self) -> AgentCounters {
        self.state.counters()
    }

    /// How registration with the control plane stands; `None` when the agent was given no
    /// control-plane address.
    pub fn registration(&self) -> Option<RegistrationStatus> {
        self.registration.as_ref().map(|r| r.status())
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: TcpListener,
    server_config: Arc<rustls::ServerConfig>,
    tls: Arc<ReloadingServerTls>,
    key_file: Option<PathBuf>,
    reload_interval: Duration,
    state: Arc<EndpointState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "loupe agent: cannot use its listener; not serving");
            return;
        }
    };
    let incoming = tls_incoming(listener, server_config, shutdown.clone(), "loupe agent");

    let reload_state = Arc::clone(&state);
    let mut reload_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(reload_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = reload_shutdown.changed() => return,
            }
            match tls.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(cert = %tls.paths().cert.display(), "loupe agent: reloaded TLS material")
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "loupe agent: new TLS material rejected; keeping the old")
                }
            }
            if let Some(path) = &key_file {
                reload_state.reload_keys(path);
            }
        }
    });

    let service = AgentServer::new(AgentService::new(Arc::clone(&state)))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES);
    let mut grace_shutdown = shutdown.clone();
    let server = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        });
    // A graceful stop waits for every connection to close, which is up to the peer: a stuck or
    // hostile peer would otherwise hold the host's `drop(handle)` forever. Streams end at once on
    // shutdown, so after a short grace the remaining connections are cut by dropping the
    // runtime with their tasks.
    let grace_expired = async move {
        let _ = grace_shutdown.wait_for(|stop| *stop).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = server => {
            if let Err(error) = result {
                tracing::error!(%error, "loupe agent: server stopped");
            }
        }
        _ = grace_expired => {
            tracing::info!("loupe agent: connections still open after the shutdown grace; closing them");
        }
    }
    state.end_all_captures();
}

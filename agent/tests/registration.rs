//! Registration with the control plane, over real mTLS on loopback: an in-test control plane
//! serving only `Register` and `GetTokenKeys` records who called it (by certificate) and with
//! what. The agent registers with its identity, address, version and points, and renews; keeps
//! trying while the control plane is down; never talks to a server presenting another identity;
//! and, given no keys of its own, verifies capture tokens with the keys the control plane
//! publishes — refusing every capture until they arrive.
//!
//! Every wait is "eventually, within [`PATIENCE`]"; nothing here times the agent.

#[path = "../fixtures/order.rs"]
mod order;
#[path = "support/pki.rs"]
mod pki;
mod support;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use loupe_agent::{Agent, AgentBuilder, AgentHandle, EngineConfig, RegistrationStatus, snapshot};
use loupe_proto::v1 as pb;
use loupe_proto::v1::agent_client::AgentClient;
use loupe_proto::v1::control_plane_server::{ControlPlane, ControlPlaneServer};
use loupe_trust::accept::tls_incoming;
use loupe_trust::identity::IdentityRules;
use loupe_trust::tls::{ReloadingServerTls, TlsPaths};
use loupe_trust::token::{
    Confirmation, SessionClaims, TokenLimits, TokenRedaction, audience_for, unix_now,
};
use pki::{Leaf, LeafSpec, TRUST_DOMAIN, TestPki, control_plane_id};
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request, Response, Status};

const SERVICE: &str = "checkout";
const INSTANCE: &str = "checkout-1";
const POINT: &str = "checkout.apply_discount";
/// Every wait in these tests is bounded by this; none is expected to come close.
const PATIENCE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The host program: one point, hit every millisecond.

fn apply_discount(order: &order::Order, coupon: Option<&str>) {
    snapshot!("checkout.apply_discount", order, ?coupon);
}

fn start_hitting() {
    static HITTER: Once = Once::new();
    HITTER.call_once(|| {
        std::thread::Builder::new()
            .name("host-traffic".into())
            .spawn(|| {
                let mut id = 0u64;
                loop {
                    id += 1;
                    apply_discount(&order::Order::reference(id), Some("SPRING"));
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .expect("hitter thread");
    });
}

// ---------------------------------------------------------------------------------------------
// Certificates: the agent dials out with its own certificate, so it needs client auth too; the
// in-test control plane serves, and also calls the agent in the capture test.

struct Certs {
    pki: TestPki,
    agent: Leaf,
    control_plane: Leaf,
}

fn agent_id() -> String {
    format!("spiffe://{TRUST_DOMAIN}/agent/{SERVICE}")
}

fn certs() -> Certs {
    let pki = TestPki::new(SERVICE);
    let agent = pki.ca.issue(
        pki.path(),
        "agent-both",
        LeafSpec::server_and_client("agent checkout", Some(&agent_id())),
    );
    let control_plane = pki.ca.issue(
        pki.path(),
        "control-plane-both",
        LeafSpec::server_and_client("control plane", Some(&control_plane_id())),
    );
    Certs {
        pki,
        agent,
        control_plane,
    }
}

// ---------------------------------------------------------------------------------------------
// The in-test control plane.

#[derive(Default)]
struct Calls {
    /// Caller identity and request of every `Register`.
    registers: Vec<(String, pb::RegisterRequest)>,
    /// Caller identity of every `GetTokenKeys`.
    key_fetches: Vec<String>,
}

#[derive(Clone)]
struct FakeControlPlane {
    calls: Arc<Mutex<Calls>>,
    jwks: String,
    renew_after_seconds: u32,
}

fn caller<T>(request: &Request<T>) -> Result<String, Status> {
    let chain = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let leaf = chain
        .first()
        .ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
    IdentityRules::new(TRUST_DOMAIN)
        .expect("trust domain")
        .identify(leaf)
        .map(|identity| identity.id)
        .map_err(|e| Status::unauthenticated(e.to_string()))
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented(
        "not served by the test control plane",
    ))
}

#[tonic::async_trait]
impl ControlPlane for FakeControlPlane {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let identity = caller(&request)?;
        let body = request.into_inner();
        let allowed = format!("spiffe://{TRUST_DOMAIN}/agent/{}", body.service);
        let lock = self.calls.lock();
        let mut calls = lock.unwrap_or_else(|e| e.into_inner());
        calls.registers.push((identity.clone(), body));
        if identity != allowed {
            return Err(Status::permission_denied(format!(
                "`{identity}` may not register as `{allowed}`"
            )));
        }
        Ok(Response::new(pb::RegisterResponse {
            lease_expires_unix: i64::try_from(unix_now()).unwrap_or(i64::MAX) + 30,
            renew_after_seconds: self.renew_after_seconds,
        }))
    }

    async fn get_token_keys(
        &self,
        request: Request<pb::GetTokenKeysRequest>,
    ) -> Result<Response<pb::GetTokenKeysResponse>, Status> {
        let identity = caller(&request)?;
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .key_fetches
            .push(identity);
        Ok(Response::new(pb::GetTokenKeysResponse {
            jwks_json: self.jwks.clone(),
        }))
    }

    async fn list_services(
        &self,
        _: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        unimplemented()
    }
    async fn list_points(
        &self,
        _: Request<pb::ListPointsRequest>,
    ) -> Result<Response<pb::ListPointsResponse>, Status> {
        unimplemented()
    }
    async fn open_session(
        &self,
        _: Request<pb::OpenSessionRequest>,
    ) -> Result<Response<pb::OpenSessionResponse>, Status> {
        unimplemented()
    }
    async fn approve_session(
        &self,
        _: Request<pb::ApproveSessionRequest>,
    ) -> Result<Response<pb::SessionResponse>, Status> {
        unimplemented()
    }
    async fn deny_session(
        &self,
        _: Request<pb::DenySessionRequest>,
    ) -> Result<Response<pb::SessionResponse>, Status> {
        unimplemented()
    }
    async fn close_session(
        &self,
        _: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<pb::SessionResponse>, Status> {
        unimplemented()
    }
    async fn revoke_session(
        &self,
        _: Request<pb::AdminRevokeSessionRequest>,
    ) -> Result<Response<pb::SessionResponse>, Status> {
        unimplemented()
    }
    async fn list_sessions(
        &self,
        _: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        unimplemented()
    }
    async fn get_session(
        &self,
        _: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::SessionResponse>, Status> {
        unimplemented()
    }
    type CaptureStream = Streamed<pb::CaptureEvent>;
    async fn capture(
        &self,
        _: Request<pb::BrokeredCaptureRequest>,
    ) -> Result<Response<Self::CaptureStream>, Status> {
        unimplemented()
    }
    type QueryAuditStream = Streamed<pb::AuditRecord>;
    async fn query_audit(
        &self,
        _: Request<pb::QueryAuditRequest>,
    ) -> Result<Response<Self::QueryAuditStream>, Status> {
        unimplemented()
    }
    async fn get_checkpoint(
        &self,
        _: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::CheckpointResponse>, Status> {
        unimplemented()
    }
    async fn prove_inclusion(
        &self,
        _: Request<pb::ProveInclusionRequest>,
    ) -> Result<Response<pb::ProveInclusionResponse>, Status> {
        unimplemented()
    }
    async fn prove_consistency(
        &self,
        _: Request<pb::ProveConsistencyRequest>,
    ) -> Result<Response<pb::ProveConsistencyResponse>, Status> {
        unimplemented()
    }
}

/// A control plane serving on loopback until dropped.
struct RunningControlPlane {
    addr: SocketAddr,
    calls: Arc<Mutex<Calls>>,
    shutdown: watch::Sender<bool>,
}

impl RunningControlPlane {
    fn registers(&self) -> Vec<(String, pb::RegisterRequest)> {
        self.lock().registers.clone()
    }

    fn key_fetches(&self) -> Vec<String> {
        self.lock().key_fetches.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for RunningControlPlane {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Serves a control plane presenting `leaf` on `addr` (port 0 for any).
async fn serve_control_plane(
    certs: &Certs,
    leaf: &Leaf,
    addr: SocketAddr,
    renew_after_seconds: u32,
) -> RunningControlPlane {
    let tls = ReloadingServerTls::load(TlsPaths {
        cert: leaf.cert.clone(),
        key: leaf.key.clone(),
        ca: certs.pki.ca_path.clone(),
        crl: None,
    })
    .expect("control plane TLS");
    let config = tls.server_config().expect("server config");
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("control plane listens");
    let addr = listener.local_addr().expect("local addr");
    let (shutdown, shutdown_rx) = watch::channel(false);
    let incoming = tls_incoming(listener, config, shutdown_rx.clone(), "test control plane");
    let calls = Arc::new(Mutex::new(Calls::default()));
    let service = FakeControlPlane {
        calls: Arc::clone(&calls),
        jwks: certs.pki.keys.to_jwks_json(),
        renew_after_seconds,
    };
    let mut stop = shutdown_rx;
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(ControlPlaneServer::new(service))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|stop| *stop).await;
            })
            .await;
    });
    RunningControlPlane {
        addr,
        calls,
        shutdown,
    }
}

/// A loopback address nothing listens on (yet).
fn vacant_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

// ---------------------------------------------------------------------------------------------
// The agent.

fn builder(certs: &Certs, control_plane_addr: SocketAddr) -> AgentBuilder {
    Agent::builder()
        .service(SERVICE)
        .instance(INSTANCE)
        .tls(&certs.agent.cert, &certs.agent.key, &certs.pki.ca_path)
        .control_plane(control_plane_id())
        .control_plane_address(control_plane_addr.to_string())
        .engine_config(EngineConfig {
            cpu_budget: 0.5,
            ..EngineConfig::default()
        })
}

fn status(agent: &AgentHandle) -> RegistrationStatus {
    agent
        .registration()
        .expect("an agent with a control-plane address reports its registration")
}

/// Polls the agent's registration status until `condition` holds.
async fn eventually(
    agent: &AgentHandle,
    what: &str,
    condition: impl Fn(&RegistrationStatus) -> bool,
) -> RegistrationStatus {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = status(agent);
        if condition(&now) {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {PATIENCE:?}; status: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client of the agent's endpoint, as the control plane.
async fn agent_client(agent: &AgentHandle, certs: &Certs) -> AgentClient<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&certs.pki.ca.pem))
        .identity(Identity::from_pem(
            &certs.control_plane.cert_pem,
            &certs.control_plane.key_pem,
        ))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://127.0.0.1:{}", agent.local_addr().port()))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect_timeout(PATIENCE)
        .connect()
        .await
        .expect("the control plane connects to the agent");
    AgentClient::new(channel)
}

fn token(certs: &Certs, session: &str) -> String {
    let now = unix_now();
    certs
        .pki
        .signer
        .mint(&SessionClaims {
            iss: control_plane_id(),
            aud: audience_for(SERVICE),
            sub: format!("spiffe://{TRUST_DOMAIN}/user/alice"),
            sid: session.to_owned(),
            jti: format!("jti-{session}"),
            iat: now,
            nbf: now,
            exp: now + 120,
            points: vec![POINT.to_owned()],
            limits: TokenLimits {
                max_snapshots: 10,
                max_bytes: 64 * 1024,
                rate: 100.0,
            },
            redact: TokenRedaction::default(),
            cnf: Confirmation::for_certificate(&certs.control_plane.der),
        })
        .expect("mint")
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_its_identity_address_version_and_points_then_renews() {
    let certs = certs();
    let control_plane = serve_control_plane(
        &certs,
        &certs.control_plane,
        "127.0.0.1:0".parse().unwrap(),
        1,
    )
    .await;
    let agent = builder(&certs, control_plane.addr)
        .token_keys(certs.pki.keys.clone())
        .start()
        .expect("agent starts");

    let now = eventually(&agent, "two renewals", |s| s.renewals >= 2).await;
    assert!(now.registered, "{now:?}");
    assert_eq!(now.last_error, None);
    assert!(now.lease_expires_unix > i64::try_from(unix_now()).unwrap_or(0));
    assert!(
        !now.token_keys_installed,
        "an agent given keys of its own does not fetch any"
    );

    let registers = control_plane.registers();
    assert!(registers.len() >= 3, "{} registrations", registers.len());
    let (identity, first) = &registers[0];
    assert_eq!(identity, &agent_id(), "registers with its own certificate");
    assert_eq!(first.service, SERVICE);
    assert_eq!(first.instance, INSTANCE);
    assert_eq!(first.address, agent.local_addr().to_string());
    assert_eq!(first.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(first.mode(), pb::AgentMode::InProcess);
    let point = first
        .points
        .iter()
        .find(|p| p.name == POINT)
        .expect("the point is announced");
    let fields: Vec<&str> = point.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(fields, ["order", "coupon"]);
    assert!(!point.locations.is_empty());
    assert!(
        registers.iter().all(|(_, r)| r == first),
        "renewals repeat the registration"
    );
    assert!(
        control_plane.key_fetches().is_empty(),
        "keys are not fetched when the agent has its own"
    );

    // The points announced are exactly those `Describe` lists.
    let mut client = agent_client(&agent, &certs).await;
    let described = client
        .describe(pb::DescribeRequest {})
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(described.points, first.points);

    // Dropping the agent stops renewals.
    drop(agent);
    // A renewal already on the wire when the agent stopped may still land; count after that.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_drop = control_plane.registers().len();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        control_plane.registers().len(),
        after_drop,
        "a dropped agent renews no more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_retrying_while_the_control_plane_is_down_and_registers_once_it_is_up() {
    let certs = certs();
    let addr = vacant_addr();
    let agent = builder(&certs, addr)
        .token_keys(certs.pki.keys.clone())
        .start()
        .expect("an unreachable control plane does not stop the agent from starting");

    let down = eventually(&agent, "a failed attempt", |s| s.last_error.is_some()).await;
    assert!(!down.registered);
    let error = down.last_error.unwrap_or_default();
    assert!(error.contains(&addr.to_string()), "{error}");

    let control_plane = serve_control_plane(&certs, &certs.control_plane, addr, 10).await;
    let up = eventually(&agent, "registration", |s| s.registered).await;
    assert_eq!(up.last_error, None, "a success clears the error");
    assert_eq!(up.renewals, 0);
    assert_eq!(control_plane.registers()[0].0, agent_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_presenting_another_identity_is_never_registered_with() {
    let certs = certs();
    let impostor = certs.pki.ca.issue(
        certs.pki.path(),
        "impostor",
        LeafSpec::server_and_client(
            "impostor",
            Some(&format!("spiffe://{TRUST_DOMAIN}/agent/other")),
        ),
    );
    let control_plane =
        serve_control_plane(&certs, &impostor, "127.0.0.1:0".parse().unwrap(), 1).await;
    let agent = builder(&certs, control_plane.addr).start().expect("starts");

    let refused = eventually(&agent, "a refused handshake", |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("agent/other"))
    })
    .await;
    let error = refused.last_error.clone().unwrap_or_default();
    assert!(error.contains(&control_plane_id()), "{error}");
    // Several more attempts, all refused before a request is sent.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = status(&agent);
    assert!(!after.registered, "{after:?}");
    assert!(!after.token_keys_installed);
    assert!(control_plane.registers().is_empty());
    assert!(control_plane.key_fetches().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_that_only_spells_its_id_or_is_revoked_is_never_registered_with() {
    let certs = certs();
    // Its CN is the control plane's ID; it has no URI SAN.
    let cn_only = certs.pki.ca.issue(
        certs.pki.path(),
        "cn-only",
        LeafSpec::server_and_client(&control_plane_id(), None),
    );
    let forged = serve_control_plane(&certs, &cn_only, "127.0.0.1:0".parse().unwrap(), 1).await;
    let agent = builder(&certs, forged.addr).start().expect("starts");
    let refused = eventually(&agent, "a refused handshake", |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("no URI SAN"))
    })
    .await;
    assert!(!refused.registered, "{refused:?}");
    assert!(forged.registers().is_empty());
    drop(agent);

    // The real control plane's certificate, revoked by the CRL the agent is given.
    let crl = certs
        .pki
        .ca
        .crl(certs.pki.path(), &[certs.control_plane.serial]);
    let revoked = serve_control_plane(
        &certs,
        &certs.control_plane,
        "127.0.0.1:0".parse().unwrap(),
        1,
    )
    .await;
    let agent = builder(&certs, revoked.addr)
        .crl(&crl)
        .start()
        .expect("starts");
    let refused = eventually(&agent, "a refused handshake", |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("Revoked"))
    })
    .await;
    assert!(!refused.registered, "{refused:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(revoked.registers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_verify_with_the_keys_the_control_plane_publishes_and_not_before() {
    start_hitting();
    let certs = certs();
    let addr = vacant_addr();
    // No token keys given: they come from the control plane, which is not up yet.
    let agent = builder(&certs, addr)
        .start()
        .expect("an agent fetching its keys starts without any");
    let mut client = agent_client(&agent, &certs).await;

    let refused = client
        .capture(pb::CaptureRequest {
            token: token(&certs, "before-keys"),
            point: POINT.to_owned(),
            ..pb::CaptureRequest::default()
        })
        .await
        .expect_err("no keys yet: the capture is refused");
    assert_eq!(
        refused.code(),
        Code::Unauthenticated,
        "{}",
        refused.message()
    );

    let control_plane = serve_control_plane(&certs, &certs.control_plane, addr, 10).await;
    let installed = eventually(&agent, "keys installed", |s| s.token_keys_installed).await;
    assert!(installed.registered);
    assert_eq!(control_plane.key_fetches(), [agent_id()]);

    let mut stream = client
        .capture(pb::CaptureRequest {
            token: token(&certs, "after-keys"),
            point: POINT.to_owned(),
            max_snapshots: 1,
            ..pb::CaptureRequest::default()
        })
        .await
        .expect("the control plane's keys verify the token")
        .into_inner();
    let snapshot = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("a snapshot in time")
        .expect("the stream works")
        .expect("a snapshot");
    assert_eq!(snapshot.point, POINT);
    assert_eq!(snapshot.session_id, "after-keys");
}

#[test]
fn a_wildcard_listener_needs_an_advertised_address() {
    let certs = certs();
    let wildcard: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let error = match builder(&certs, vacant_addr()).listen(wildcard).start() {
        Ok(_) => panic!("started advertising a wildcard address"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("advertise_address") && error.contains("0.0.0.0"),
        "{error}"
    );

    let error = match builder(&certs, vacant_addr())
        .advertise_address("no-port")
        .start()
    {
        Ok(_) => panic!("started with an advertised address without a port"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("`no-port`"), "{error}");

    let error = match builder(&certs, vacant_addr())
        .advertise_address("0.0.0.0:7001")
        .start()
    {
        Ok(_) => panic!("started advertising a wildcard address"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("wildcard"), "{error}");

    let error = match builder(&certs, vacant_addr())
        .control_plane_address("control-plane")
        .start()
    {
        Ok(_) => panic!("started with a control-plane address without a port"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("control_plane_address") && error.contains("`control-plane`"),
        "{error}"
    );
}

#[test]
fn an_agent_without_a_control_plane_address_does_not_register() {
    let certs = certs();
    let agent = Agent::builder()
        .service(SERVICE)
        .instance(INSTANCE)
        .tls(&certs.agent.cert, &certs.agent.key, &certs.pki.ca_path)
        .control_plane(control_plane_id())
        .token_keys(certs.pki.keys.clone())
        .start()
        .expect("starts");
    assert_eq!(agent.registration(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_advertised_address_is_what_the_control_plane_is_told() {
    let certs = certs();
    let control_plane = serve_control_plane(
        &certs,
        &certs.control_plane,
        "127.0.0.1:0".parse().unwrap(),
        10,
    )
    .await;
    let agent = builder(&certs, control_plane.addr)
        .listen("0.0.0.0:0".parse().unwrap())
        .advertise_address("checkout-7.internal:7001")
        .token_keys(certs.pki.keys.clone())
        .start()
        .expect("a wildcard listener with an advertised address starts");
    eventually(&agent, "registration", |s| s.registered).await;
    assert_eq!(
        control_plane.registers()[0].1.address,
        "checkout-7.internal:7001"
    );
}

//! The CLI's commands against a fake control plane over real mTLS: what reaches the wire, how
//! answers and statuses become output and exit codes, and the reviewer's audit verification
//! against a real audit log (including a fork the log tries to pass off).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loupe_audit::checkpoint::NoteSigner;
use loupe_audit::event::{Action, Actor, Decision, NewEvent, Outcome, Resource, ResourceKind};
use loupe_cli::cli::{
    AuditCommand, CaptureArgs, Command, ExportArgs, ExportFormat, OpenArgs, QueryArgs,
    SessionCommand, VerifierKeyArg, VerifyArgs,
};
use loupe_cli::commands::{self, Context};
use loupe_cli::config::{Addresses, Settings};
use loupe_cli::exit;
use loupe_cli::output::{Format, Output};
use loupe_control_plane::audit::{AuditLog, AuditLogConfig, Filter};
use loupe_proto::v1::control_plane_server::{ControlPlane, ControlPlaneServer};
use loupe_proto::v1::*;
use loupe_trust::accept::tls_incoming;
use loupe_trust::authority::{Authority, LeafSpec};
use loupe_trust::tls::{ReloadingServerTls, TlsPaths};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

const CONTROL_PLANE: &str = "spiffe://loupe.test/control-plane";
const ORIGIN: &str = "loupe.test/audit";

// ---- PKI -------------------------------------------------------------------------------------

struct Pki {
    dir: tempfile::TempDir,
    authority: Authority,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let authority = Authority::for_tests("test CA").expect("CA");
        std::fs::write(dir.path().join("ca.pem"), authority.cert_pem()).expect("write CA");
        Pki { dir, authority }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues `identity`'s certificate; returns (cert, key) paths.
    fn issue(&self, stem: &str, identity: &str, server: bool) -> (PathBuf, PathBuf) {
        let spec = if server {
            LeafSpec::server(stem, Some(identity))
        } else {
            LeafSpec::client(stem, Some(identity))
        };
        let leaf = self.authority.issue(&spec).expect("cert");
        let cert_path = self.dir.path().join(format!("{stem}.pem"));
        let key_path = self.dir.path().join(format!("{stem}.key"));
        std::fs::write(&cert_path, leaf.cert_pem).expect("write cert");
        std::fs::write(&key_path, leaf.key_pem).expect("write key");
        (cert_path, key_path)
    }
}

// ---- The fake control plane ------------------------------------------------------------------

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn session(id: &str, state: SessionState) -> SessionInfo {
    SessionInfo {
        id: id.into(),
        requester: "spiffe://loupe.test/user/alice".into(),
        service: "checkout".into(),
        points: vec!["checkout.apply_discount".into()],
        reason: "INC-1".into(),
        ttl_seconds: 900,
        state: state as i32,
        requested_unix: now(),
        expires_unix: now() + 900,
        ..SessionInfo::default()
    }
}

struct Fake {
    log: Mutex<Arc<AuditLog>>,
    requests: Mutex<Vec<String>>,
    /// Whether `ProveInclusion` serves an altered event.
    lie: Mutex<bool>,
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the fake"))
}

impl Fake {
    fn log(&self) -> Arc<AuditLog> {
        Arc::clone(&self.log.lock().expect("fake state lock"))
    }
}

#[tonic::async_trait]
impl ControlPlane for Fake {
    async fn register(
        &self,
        _: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        unimplemented()
    }
    async fn list_services(
        &self,
        _: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        Ok(Response::new(ListServicesResponse {
            services: vec![ServiceInfo {
                name: "checkout".into(),
                instances: vec![InstanceInfo {
                    instance: "i-1".into(),
                    address: "127.0.0.1:9".into(),
                    mode: AgentMode::InProcess as i32,
                    ..InstanceInfo::default()
                }],
            }],
            next_page_token: String::new(),
        }))
    }
    async fn list_points(
        &self,
        _: Request<ListPointsRequest>,
    ) -> Result<Response<ListPointsResponse>, Status> {
        unimplemented()
    }
    async fn open_session(
        &self,
        request: Request<OpenSessionRequest>,
    ) -> Result<Response<OpenSessionResponse>, Status> {
        let request = request.into_inner();
        self.requests.lock().expect("fake state lock").push(format!(
            "open {} {} {}s",
            request.service,
            request.points.join(","),
            request.ttl_seconds
        ));
        if request.reason == "forbidden" {
            return Err(Status::permission_denied(
                "denied by policy forbid-weekends: no sessions on weekends",
            ));
        }
        if request.points.iter().any(|p| p.starts_with("payments.")) {
            let mut pending = session("s-pending", SessionState::Pending);
            pending.awaiting_approval_from = vec!["security".into()];
            pending.approvals_required = 1;
            return Ok(Response::new(OpenSessionResponse {
                session: Some(pending),
                approvers: vec![ApproverInfo {
                    id: "spiffe://loupe.test/user/carol".into(),
                    name: "carol".into(),
                }],
            }));
        }
        Ok(Response::new(OpenSessionResponse {
            session: Some(session("s-active", SessionState::Active)),
            approvers: vec![],
        }))
    }
    async fn approve_session(
        &self,
        _: Request<ApproveSessionRequest>,
    ) -> Result<Response<SessionResponse>, Status> {
        unimplemented()
    }
    async fn deny_session(
        &self,
        _: Request<DenySessionRequest>,
    ) -> Result<Response<SessionResponse>, Status> {
        unimplemented()
    }
    async fn close_session(
        &self,
        request: Request<CloseSessionRequest>,
    ) -> Result<Response<SessionResponse>, Status> {
        let id = request.into_inner().session_id;
        Err(Status::failed_precondition(format!(
            "session {id} expired at 2026-11-30T00:00:00Z"
        )))
    }
    async fn revoke_session(
        &self,
        _: Request<AdminRevokeSessionRequest>,
    ) -> Result<Response<SessionResponse>, Status> {
        unimplemented()
    }
    async fn list_sessions(
        &self,
        _: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        unimplemented()
    }
    async fn get_session(
        &self,
        request: Request<GetSessionRequest>,
    ) -> Result<Response<SessionResponse>, Status> {
        let id = request.into_inner().session_id;
        let state = match id.as_str() {
            "s-active" => SessionState::Active,
            "s-expired" => SessionState::Expired,
            "s-pending" => SessionState::Pending,
            _ => return Err(Status::not_found(format!("no session {id}"))),
        };
        Ok(Response::new(SessionResponse {
            session: Some(session(&id, state)),
            approvers: vec![],
        }))
    }

    type CaptureStream = Boxed<CaptureEvent>;

    async fn capture(
        &self,
        request: Request<BrokeredCaptureRequest>,
    ) -> Result<Response<Self::CaptureStream>, Status> {
        let request = request.into_inner();
        self.requests.lock().expect("fake state lock").push(format!(
            "capture {} {} where={} n={} timeout={}",
            request.session_id,
            request.point,
            request.condition,
            request.max_snapshots,
            request.timeout_seconds
        ));
        let snapshot = |instance: &str, sequence| Snapshot {
            session_id: request.session_id.clone(),
            capture_id: "cap-1".into(),
            point: request.point.clone(),
            service: "checkout".into(),
            instance: instance.into(),
            sequence,
            ..Snapshot::default()
        };
        let events = vec![
            capture_event::Event::Instance(InstanceStatus {
                instance: "i-1".into(),
                state: InstanceState::Armed as i32,
                armed: 1,
                targeted: 2,
                ..InstanceStatus::default()
            }),
            capture_event::Event::Instance(InstanceStatus {
                instance: "i-2".into(),
                state: InstanceState::Failed as i32,
                code: "UNAVAILABLE".into(),
                detail: "connection refused".into(),
                armed: 1,
                targeted: 2,
            }),
            capture_event::Event::Snapshot(snapshot("i-1", 1)),
            capture_event::Event::Snapshot(snapshot("i-1", 2)),
            capture_event::Event::End(CaptureEnd {
                reason: CaptureEndReason::Complete as i32,
                delivered: 2,
                failed_instances: 1,
                detail: String::new(),
            }),
        ];
        let stream = tokio_stream::iter(
            events
                .into_iter()
                .map(|event| Ok(CaptureEvent { event: Some(event) })),
        );
        Ok(Response::new(Box::pin(stream)))
    }

    type QueryAuditStream = Boxed<AuditRecord>;

    async fn query_audit(
        &self,
        request: Request<QueryAuditRequest>,
    ) -> Result<Response<Self::QueryAuditStream>, Status> {
        let limit = request.into_inner().limit;
        let log = self.log();
        let records: Vec<Result<AuditRecord, Status>> = log
            .stream(Filter::default())
            .take(if limit == 0 {
                usize::MAX
            } else {
                limit as usize
            })
            .map(|event| {
                let event = event.map_err(|e| Status::internal(e.to_string()))?;
                Ok(AuditRecord {
                    seq: event.seq,
                    canonical_json: event.canonical_bytes().expect("canonical"),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(records))))
    }
    async fn get_checkpoint(
        &self,
        _: Request<GetCheckpointRequest>,
    ) -> Result<Response<CheckpointResponse>, Status> {
        let log = self.log();
        let checkpoint = log
            .checkpoint()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(CheckpointResponse {
            note: checkpoint.note,
            tree_size: checkpoint.checkpoint.size,
            root_hash: checkpoint.checkpoint.root.to_vec(),
            verifier_key: log.verifier().to_string(),
        }))
    }
    async fn prove_inclusion(
        &self,
        request: Request<ProveInclusionRequest>,
    ) -> Result<Response<ProveInclusionResponse>, Status> {
        let request = request.into_inner();
        let log = self.log();
        let proof = log
            .inclusion_proof(request.seq, request.tree_size)
            .map_err(|e| Status::not_found(e.to_string()))?;
        let mut canonical = log
            .event(request.seq)
            .map_err(|e| Status::not_found(e.to_string()))?
            .canonical_bytes()
            .expect("canonical");
        if *self.lie.lock().expect("fake state lock") {
            // A log that rewrote the event after signing: the bytes no longer hash to the leaf.
            canonical = String::from_utf8(canonical)
                .expect("fake state")
                .replace("alice", "erin")
                .into_bytes();
        }
        Ok(Response::new(ProveInclusionResponse {
            seq: request.seq,
            tree_size: proof.tree_size,
            hashes: proof.path.iter().map(|h| h.to_vec()).collect(),
            canonical_json: canonical,
            checkpoint_note: String::new(),
        }))
    }
    async fn prove_consistency(
        &self,
        request: Request<ProveConsistencyRequest>,
    ) -> Result<Response<ProveConsistencyResponse>, Status> {
        let request = request.into_inner();
        let hashes = self
            .log()
            .consistency_proof(request.first_size, request.second_size)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(ProveConsistencyResponse {
            first_size: request.first_size,
            second_size: request.second_size,
            hashes: hashes.iter().map(|h| h.to_vec()).collect(),
            checkpoint_note: String::new(),
        }))
    }
    async fn get_token_keys(
        &self,
        _: Request<GetTokenKeysRequest>,
    ) -> Result<Response<GetTokenKeysResponse>, Status> {
        unimplemented()
    }
}

// ---- Harness -----------------------------------------------------------------------------------

struct Harness {
    pki: Pki,
    address: SocketAddr,
    fake: Arc<Fake>,
    state: tempfile::TempDir,
    verifier_key: PathBuf,
    _runtime: tokio::runtime::Runtime,
}

fn open_log(dir: &Path) -> AuditLog {
    let signer = NoteSigner::from_seed(ORIGIN, [42; 32]).expect("signer");
    AuditLog::open(dir, signer, AuditLogConfig::default()).expect("log")
}

fn append(log: &AuditLog, n: usize, who: &str) {
    for i in 0..n {
        let event = NewEvent::new(
            Actor {
                id: format!("spiffe://loupe.test/user/{who}"),
                cert_sha256: String::new(),
            },
            Action::SessionOpened,
            Resource {
                kind: ResourceKind::Session,
                id: format!("s-{i}"),
            },
            Decision {
                outcome: Outcome::Allow,
                policies: vec!["p".into()],
                reason: String::new(),
            },
            format!("r-{i}"),
        );
        log.append_blocking(event).expect("append");
    }
}

impl Harness {
    fn start() -> Harness {
        let pki = Pki::new();
        let (cert, key) = pki.issue("control-plane", CONTROL_PLANE, true);
        let tls = ReloadingServerTls::load(TlsPaths {
            cert,
            key,
            ca: pki.ca(),
            crl: None,
        })
        .expect("server TLS");
        let config = tls.server_config().expect("server config");
        let log = open_log(&pki.dir.path().join("log"));
        append(&log, 3, "alice");
        let verifier_key = pki.dir.path().join("audit-verifier.pub");
        std::fs::write(&verifier_key, log.verifier().to_string()).expect("write verifier");
        let fake = Arc::new(Fake {
            log: Mutex::new(Arc::new(log)),
            requests: Mutex::new(Vec::new()),
            lie: Mutex::new(false),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let service = ControlPlaneServer::from_arc(Arc::clone(&fake));
        runtime.spawn(async move {
            let (_stop, shutdown) = tokio::sync::watch::channel(false);
            let incoming = tls_incoming(listener, config, shutdown, "fake control plane");
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        Harness {
            pki,
            address,
            fake,
            state: tempfile::tempdir().expect("state dir"),
            verifier_key,
            _runtime: runtime,
        }
    }

    fn context(&self, user: &str) -> Context {
        let (cert, key) = self
            .pki
            .issue(user, &format!("spiffe://loupe.test/user/{user}"), false);
        Context {
            settings: Settings {
                profile: None,
                addresses: Some(Addresses::parse(&self.address.to_string()).expect("address")),
                cert: Some(cert),
                key: Some(key),
                ca: Some(self.pki.ca()),
                crl: None,
                control_plane_identity: CONTROL_PLANE.into(),
                output: None,
                audit_verifier: Some(self.verifier_key.clone()),
            },
            output: Output {
                format: Format::Jsonl,
                color: false,
            },
            connect_timeout: Duration::from_secs(5),
            state_dir: Some(self.state.path().to_owned()),
        }
    }

    fn run(&self, context: &Context, command: Command) -> Result<u8, String> {
        commands::run(context, command).map_err(|e| format!("{} (exit {})", e, e.exit_code()))
    }

    fn requests(&self) -> Vec<String> {
        self.fake.requests.lock().expect("fake state lock").clone()
    }
}

fn open(points: &[&str], reason: &str) -> Command {
    Command::Session(SessionCommand::Open(OpenArgs {
        service: "checkout".into(),
        points: points.iter().map(|p| (*p).to_owned()).collect(),
        ttl: Duration::from_secs(900),
        reason: reason.into(),
        ticket: None,
    }))
}

fn capture(session: &str, save: Option<PathBuf>) -> Command {
    Command::Capture(CaptureArgs {
        point: "checkout.apply_discount".into(),
        session: session.into(),
        condition: Some("cart.total > 100".into()),
        count: 5,
        instances: vec![],
        timeout: Some(Duration::from_secs(30)),
        save,
        resume_for: loupe_cli::commands::capture::failover::DEFAULT_RESUME_FOR,
    })
}

fn verify() -> Command {
    Command::Audit(AuditCommand::Verify(VerifyArgs {
        key: VerifierKeyArg::default(),
        export: None,
        checkpoint: None,
    }))
}

// ---- Tests -------------------------------------------------------------------------------------

#[test]
fn sessions_open_active_pending_or_denied_with_their_exit_codes() {
    let harness = Harness::start();
    let alice = harness.context("alice");
    assert_eq!(harness.run(&alice, Command::Services), Ok(exit::OK));
    assert_eq!(
        harness.run(&alice, open(&["checkout.apply_discount"], "INC-1")),
        Ok(exit::OK)
    );
    assert_eq!(
        harness.run(&alice, open(&["payments.*"], "INC-2")),
        Ok(exit::PENDING_APPROVAL)
    );
    let denied = harness.run(&alice, open(&["a"], "forbidden")).unwrap_err();
    assert_eq!(
        denied,
        "denied by policy forbid-weekends: no sessions on weekends (exit 3)"
    );
    let expired = harness
        .run(
            &alice,
            Command::Session(SessionCommand::Close {
                id: "s-9".into(),
                reason: None,
            }),
        )
        .unwrap_err();
    assert!(
        expired.starts_with("session s-9 expired at 2026-11-30T00:00:00Z"),
        "{expired}"
    );
    assert!(expired.ends_with("(exit 5)"), "{expired}");
    let missing = harness
        .run(
            &alice,
            Command::Session(SessionCommand::Show { id: "nope".into() }),
        )
        .unwrap_err();
    assert!(missing.ends_with("(exit 4)"), "{missing}");
    assert_eq!(
        harness.requests()[..2],
        [
            "open checkout checkout.apply_discount 900s".to_owned(),
            "open checkout payments.* 900s".to_owned()
        ]
    );
}

#[test]
fn capture_streams_saves_and_reports_the_end() {
    let harness = Harness::start();
    let alice = harness.context("alice");
    let save = harness.state.path().join("saved");
    assert_eq!(
        harness.run(&alice, capture("s-active", Some(save.clone()))),
        Ok(exit::OK)
    );
    let mut saved: Vec<String> = std::fs::read_dir(&save)
        .expect("saved")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    saved.sort();
    assert_eq!(
        saved,
        [
            "s-active-cap-1-checkout.apply_discount-i-1-1.json",
            "s-active-cap-1-checkout.apply_discount-i-1-2.json"
        ]
    );
    assert!(
        harness.requests().contains(
            &"capture s-active checkout.apply_discount where=cart.total > 100 n=5 timeout=30"
                .to_owned()
        )
    );
    let expired = harness.run(&alice, capture("s-expired", None)).unwrap_err();
    assert!(
        expired.contains("session s-expired is expired"),
        "{expired}"
    );
    assert!(expired.ends_with("(exit 5)"), "{expired}");
    assert_eq!(
        harness.run(&alice, capture("s-pending", None)),
        Ok(exit::PENDING_APPROVAL)
    );
}

#[test]
fn identity_and_reachability_failures_have_their_own_exit_codes() {
    let harness = Harness::start();
    let mut wrong = harness.context("alice");
    wrong.settings.control_plane_identity = "spiffe://loupe.test/agent/checkout".into();
    let error = harness.run(&wrong, Command::Services).unwrap_err();
    assert!(error.ends_with("(exit 7)"), "{error}");
    assert_eq!(
        error,
        "the server at {} is not spiffe://loupe.test/agent/checkout (it presented \
         spiffe://loupe.test/control-plane) (check --address and --control-plane-identity) \
         (exit 7)"
            .replace("{}", &harness.address.to_string())
    );

    let mut nowhere = harness.context("alice");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let addresses = |text: &str| Some(Addresses::parse(text).expect("addresses"));
    nowhere.settings.addresses = addresses(&format!("127.0.0.1:{port}"));
    let error = harness.run(&nowhere, Command::Services).unwrap_err();
    assert!(
        error.starts_with(&format!("control plane unreachable at 127.0.0.1:{port}")),
        "{error}"
    );
    assert!(
        error.ends_with("(is it running? check --address) (exit 6)"),
        "{error}"
    );

    // Replicas: an address where nobody answers is skipped for the next one.
    let mut replicas = harness.context("alice");
    replicas.settings.addresses = addresses(&format!("127.0.0.1:{port},{}", harness.address));
    assert_eq!(harness.run(&replicas, Command::Services), Ok(exit::OK));
    // None answering: each is named with its reason.
    let mut none = harness.context("alice");
    none.settings.addresses = addresses(&format!("127.0.0.1:{port},127.0.0.1:1"));
    let error = harness.run(&none, Command::Services).unwrap_err();
    assert!(
        error.starts_with(&format!(
            "control plane unreachable at any of 127.0.0.1:{port}, 127.0.0.1:1: 127.0.0.1:{port}: "
        )),
        "{error}"
    );
    assert!(error.ends_with("(exit 6)"), "{error}");
    // A server that is not the control plane stops the dial at once: the next address is
    // never tried, so an impostor in the list is seen, not routed around.
    let mut impostor = harness.context("alice");
    impostor.settings.control_plane_identity = "spiffe://loupe.test/agent/checkout".into();
    impostor.settings.addresses = addresses(&format!("{},127.0.0.1:{port}", harness.address));
    let error = harness.run(&impostor, Command::Services).unwrap_err();
    assert!(error.ends_with("(exit 7)"), "{error}");
}

#[test]
fn online_verification_keeps_a_checkpoint_and_refuses_a_fork() {
    let harness = Harness::start();
    let dave = harness.context("dave");
    let witness = loupe_cli::witness::witness_path(harness.state.path(), CONTROL_PLANE);

    assert_eq!(harness.run(&dave, verify()), Ok(exit::OK));
    let first = std::fs::read_to_string(&witness).expect("kept after first use");
    assert!(first.contains("\n3\n"), "{first}");

    append(&harness.fake.log(), 4, "bob");
    assert_eq!(harness.run(&dave, verify()), Ok(exit::OK));
    let second = std::fs::read_to_string(&witness).expect("kept");
    assert!(second.contains("\n7\n"), "{second}");
    // Unchanged log: verifies again.
    assert_eq!(harness.run(&dave, verify()), Ok(exit::OK));

    // The control plane now serves another history under the same key.
    let forked = open_log(&harness.pki.dir.path().join("forked"));
    append(&forked, 9, "mallory");
    *harness.fake.log.lock().unwrap() = Arc::new(forked);
    let error = harness.run(&dave, verify()).unwrap_err();
    assert!(error.contains("split view"), "{error}");
    assert!(error.ends_with("(exit 8)"), "{error}");
    assert_eq!(
        std::fs::read_to_string(&witness).unwrap(),
        second,
        "kept checkpoint untouched"
    );

    // A shorter history is a rollback.
    let short = open_log(&harness.pki.dir.path().join("short"));
    append(&short, 2, "mallory");
    *harness.fake.log.lock().unwrap() = Arc::new(short);
    let error = harness.run(&dave, verify()).unwrap_err();
    assert!(error.contains("rollback"), "{error}");
    assert_eq!(std::fs::read_to_string(&witness).unwrap(), second);
}

#[test]
fn an_export_verifies_offline() {
    let harness = Harness::start();
    let dave = harness.context("dave");
    append(&harness.fake.log(), 5, "bob");
    let path = harness.state.path().join("audit.jsonl");
    let export = Command::Audit(AuditCommand::Export(ExportArgs {
        format: ExportFormat::Jsonl,
        out: Some(path.clone()),
        filter: QueryArgs::default(),
    }));
    assert_eq!(harness.run(&dave, export), Ok(exit::OK));
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 9, "8 events and the checkpoint");
    let offline = |checkpoint: Option<PathBuf>| {
        Command::Audit(AuditCommand::Verify(VerifyArgs {
            key: VerifierKeyArg::default(),
            export: Some(path.clone()),
            checkpoint,
        }))
    };
    assert_eq!(harness.run(&dave, offline(None)), Ok(exit::OK));

    // After an online verification the kept checkpoint is checked too, and a cut export fails.
    assert_eq!(harness.run(&dave, verify()), Ok(exit::OK));
    let cut: Vec<&str> = text.lines().filter(|l| !l.contains("\"seq\":7,")).collect();
    std::fs::write(&path, cut.join("\n") + "\n").unwrap();
    let error = harness.run(&dave, offline(None)).unwrap_err();
    assert!(error.ends_with("(exit 8)"), "{error}");

    let ocsf = Command::Audit(AuditCommand::Export(ExportArgs {
        format: ExportFormat::Ocsf,
        out: Some(harness.state.path().join("audit.ocsf.jsonl")),
        filter: QueryArgs::default(),
    }));
    assert_eq!(harness.run(&dave, ocsf), Ok(exit::OK));
    let first = std::fs::read_to_string(harness.state.path().join("audit.ocsf.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(first["class_uid"], 3003);
}

#[test]
fn inclusion_proofs_are_checked_locally() {
    let harness = Harness::start();
    let dave = harness.context("dave");
    let prove = |seq| {
        Command::Audit(AuditCommand::Prove {
            seq,
            key: VerifierKeyArg::default(),
        })
    };
    assert_eq!(harness.run(&dave, prove(1)), Ok(exit::OK));
    let error = harness.run(&dave, prove(99)).unwrap_err();
    assert!(error.ends_with("(exit 4)"), "{error}");
    *harness.fake.lie.lock().unwrap() = true;
    let error = harness.run(&dave, prove(1)).unwrap_err();
    assert!(error.contains("not in the signed log"), "{error}");
    assert!(error.ends_with("(exit 8)"), "{error}");
    let query = Command::Audit(AuditCommand::Query(QueryArgs {
        action: Some("session.opened".into()),
        ..QueryArgs::default()
    }));
    assert_eq!(harness.run(&dave, query), Ok(exit::OK));
}

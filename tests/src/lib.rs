//! Support for Loupe's end-to-end tests: a throwaway deployment of real processes — the control
//! plane and the demo checkout service with its in-process agent — over real mTLS on loopback,
//! with a development PKI on disk, and gRPC clients acting as engineers, approvers, reviewers
//! and rogue agents; and several control-plane replicas on one throwaway PostgreSQL cluster
//! ([`replicas`]); and the percentiles the latency benches print ([`latency`]).
//!
//! Every process is the `loupe-e2e` executable (see `src/bin/loupe_e2e.rs`), which runs the very
//! entry points the shipped binaries run. The PKI, the policies, the control plane's configuration
//! and the supervision of processes are `loupe_devstack`'s, as the quickstart uses them; this
//! crate adds what tests change (shorter leases and token lifetimes) and the clients. Processes
//! are stopped with SIGTERM (and killed if they linger) when their handle drops, so a failing
//! test leaves nothing behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use loupe_control_plane::config::FileConfig;
use loupe_devstack::pki::{self, PkiLayout, PkiOptions};
use loupe_devstack::stack::{self, CheckoutLaunch, ControlPlanePlaces};
use loupe_devstack::supervise::{Launch, Stderr, Supervised};
use loupe_proto::v1::agent_client::AgentClient;
use loupe_proto::v1::control_plane_client::ControlPlaneClient;
use loupe_trust::dial::ClientTls;
use loupe_trust::identity::control_plane_identity;
use tonic::transport::Channel;

pub use loupe_proto::v1 as pb;

pub mod latency;
pub mod replicas;

/// Environment variables that would change which settings the `loupe` CLI uses: a test
/// running the CLI removes them, so that nothing of whoever runs the tests leaks in.
pub const LOUPE_ENV: [&str; 10] = [
    "LOUPE_PROFILE",
    "LOUPE_OUTPUT",
    "LOUPE_ADDRESS",
    "LOUPE_CERT",
    "LOUPE_KEY",
    "LOUPE_CA",
    "LOUPE_CRL",
    "LOUPE_CONTROL_PLANE_IDENTITY",
    "LOUPE_AUDIT_VERIFIER",
    "LOUPE_CONFIG",
];

/// The trust domain of the test PKI (the one `policies/entities.json` names).
pub const TRUST_DOMAIN: &str = pki::DEFAULT_TRUST_DOMAIN;

/// Generous bound for anything that should happen "soon" on a loaded CI machine.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A deployment's files: PKI, policies, data.
pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub pki: PkiLayout,
    pub policy_dir: PathBuf,
    pub data_dir: PathBuf,
    pub exe: PathBuf,
}

impl Deployment {
    /// A fresh PKI (services `checkout` and `inventory`, the default users) and a copy of the
    /// shipped policies. `exe` is `env!("CARGO_BIN_EXE_loupe-e2e")`.
    pub fn new(exe: &str) -> Deployment {
        let dir = tempfile::tempdir().expect("temporary directory");
        let options = PkiOptions {
            services: vec!["checkout".into(), "inventory".into()],
            ..PkiOptions::default()
        };
        let pki = pki::init(&dir.path().join("pki"), &options).expect("dev PKI");
        let policy_dir = dir.path().join("policies");
        stack::write_shipped_policies(&policy_dir).expect("shipped policies");
        let data_dir = dir.path().join("data");
        Deployment {
            dir,
            pki,
            policy_dir,
            data_dir,
            exe: PathBuf::from(exe),
        }
    }

    /// The control plane's configuration for this deployment, as the dev stack writes it, with
    /// what end-to-end tests change: short token lifetimes and leases, and a one-hour cap on
    /// sessions. Tests adjust it further before [`Deployment::write_config`].
    pub fn config(&self) -> FileConfig {
        let places = ControlPlanePlaces {
            listen: "127.0.0.1:0".into(),
            trust_domain: TRUST_DOMAIN.into(),
            data_dir: self.data_dir.clone(),
            policy_dir: self.policy_dir.clone(),
        };
        let mut config = stack::control_plane_config(&self.pki, &places);
        config.tokens.lifetime_seconds = Some(60);
        config.registry.lease_seconds = Some(6);
        config.sessions.max_ttl_seconds = Some(3600);
        config
    }

    /// Writes the control plane's configuration file: [`Deployment::config`] changed by
    /// `adjust`.
    pub fn write_config(&self, adjust: impl FnOnce(&mut FileConfig)) -> PathBuf {
        let mut config = self.config();
        adjust(&mut config);
        let path = self.dir.path().join("control-plane.toml");
        stack::write_control_plane_config(&path, &config).expect("write config");
        path
    }

    /// Starts the control plane with the default test configuration.
    pub fn start_control_plane(&self) -> Process {
        self.start_control_plane_with(|_| {})
    }

    /// Starts the control plane with its configuration changed by `adjust`.
    pub fn start_control_plane_with(&self, adjust: impl FnOnce(&mut FileConfig)) -> Process {
        let config = self.write_config(adjust);
        Process::start(stack::control_plane(
            &self.exe,
            &config,
            PATIENCE,
            Stderr::Inherit,
        ))
    }

    /// Starts the demo checkout service registering with the control plane at `address`.
    pub fn start_checkout(&self, control_plane: &str, instance: &str) -> Process {
        self.start_checkout_with_traffic(control_plane, instance, 200)
    }

    /// Same, with `per_second` synthetic requests.
    pub fn start_checkout_with_traffic(
        &self,
        control_plane: &str,
        instance: &str,
        per_second: u32,
    ) -> Process {
        // The CLI's own settings must not come from whoever runs the tests.
        let settings = self.dir.path().join("demo-cli.toml");
        std::fs::write(&settings, "# the demo's settings come from its flags\n")
            .expect("demo CLI settings");
        let launch = CheckoutLaunch {
            pki_dir: self.pki.dir().to_owned(),
            control_plane: control_plane.to_owned(),
            trust_domain: TRUST_DOMAIN.to_owned(),
            http_listen: "127.0.0.1:0".to_owned(),
            traffic_per_second: Some(per_second),
            instance: Some(instance.to_owned()),
            cli_settings: settings,
        };
        Process::start(stack::checkout(
            &self.exe,
            &launch,
            PATIENCE,
            Stderr::Inherit,
        ))
    }

    /// Writes a `loupe` CLI config with one profile per user of the PKI (the config
    /// `loupe pki init` suggests), naming the control plane at `address`; returns its path.
    pub fn write_cli_config(&self, address: &str) -> PathBuf {
        let users = PkiOptions::default().users;
        let text =
            loupe_cli::commands::pki::config_snippet(&self.pki, &users, TRUST_DOMAIN, address);
        let path = self.dir.path().join("cli.toml");
        std::fs::write(&path, text).expect("write CLI config");
        path
    }

    /// mTLS material of `user` (a name from the PKI).
    pub fn user_tls(&self, user: &str) -> ClientTls {
        ClientTls::load(&self.pki.tls_paths(&self.pki.user(user))).expect("user TLS material")
    }

    /// A control-plane client acting as `user`.
    pub async fn client(&self, address: &str, user: &str) -> ControlPlaneClient<Channel> {
        self.client_with(address, &self.user_tls(user)).await
    }

    /// A control-plane client with any TLS material (an agent's, a rogue's).
    pub async fn client_with(&self, address: &str, tls: &ClientTls) -> ControlPlaneClient<Channel> {
        let channel = tls
            .dial(address, &control_plane_identity(TRUST_DOMAIN), PATIENCE)
            .await
            .expect("control plane reachable");
        ControlPlaneClient::new(channel).max_decoding_message_size(16 * 1024 * 1024)
    }

    /// An agent client presenting `tls`, expecting the agent of `service` at `address`.
    pub async fn agent_client(
        &self,
        address: &str,
        service: &str,
        tls: &ClientTls,
    ) -> Result<AgentClient<Channel>, String> {
        tls.dial(
            address,
            &loupe_trust::identity::agent_identity(TRUST_DOMAIN, service),
            PATIENCE,
        )
        .await
        .map(AgentClient::new)
        .map_err(|e| e.to_string())
    }
}

/// A child process that announced itself ready on stdout; stopped (SIGTERM) when dropped.
pub struct Process {
    supervised: Supervised,
    /// The announced address (`listen=` for the control plane, `agent=` for a service).
    pub address: String,
}

impl Process {
    /// Starts `launch` (with `LOUPE_LOG=info`) and waits for its ready line; panics with the
    /// reason when it does not come.
    pub fn start(mut launch: Launch) -> Process {
        launch.command.env("LOUPE_LOG", "info");
        let supervised = Supervised::start(launch).unwrap_or_else(|e| panic!("{e}"));
        let ready = supervised.ready();
        let address = ready
            .get("listen")
            .or_else(|| ready.get("agent"))
            .unwrap_or_default()
            .to_owned();
        Process {
            supervised,
            address,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.supervised.pid()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.supervised.kill();
    }

    /// Sends SIGTERM and waits for the exit (killing after `PATIENCE`); returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.supervised.terminate(PATIENCE)
    }
}

/// A control-plane client.
pub type Client = ControlPlaneClient<Channel>;

/// A deployment with the control plane and one checkout instance (`checkout-1`), ready to
/// inspect. Processes stop (SIGTERM) when it drops.
pub struct Running {
    pub deployment: Deployment,
    pub control_plane: Process,
    pub checkout: Process,
}

impl Running {
    /// Starts it with the control plane's configuration changed by `adjust`, and waits until
    /// the instance is registered. `exe` is `env!("CARGO_BIN_EXE_loupe-e2e")`.
    pub async fn start(exe: &str, adjust: impl FnOnce(&mut FileConfig)) -> Running {
        let deployment = Deployment::new(exe);
        let control_plane = deployment.start_control_plane_with(adjust);
        let checkout = deployment.start_checkout(&control_plane.address, "checkout-1");
        let mut alice = deployment.client(&control_plane.address, "alice").await;
        wait_for_instances(&mut alice, "checkout", 1).await;
        Running {
            deployment,
            control_plane,
            checkout,
        }
    }

    /// A client acting as `user`.
    pub async fn client(&self, user: &str) -> Client {
        self.deployment
            .client(&self.control_plane.address, user)
            .await
    }

    /// A control-plane client presenting the agent certificate of `service`.
    pub async fn agent(&self, service: &str) -> Client {
        let paths = self
            .deployment
            .pki
            .tls_paths(&self.deployment.pki.agent(service));
        let tls = ClientTls::load(&paths).expect("agent TLS");
        self.deployment
            .client_with(&self.control_plane.address, &tls)
            .await
    }
}

/// An `OpenSession` request on `points` of `checkout`.
pub fn open_request(points: &[&str], ttl: u32, reason: &str) -> pb::OpenSessionRequest {
    pb::OpenSessionRequest {
        service: "checkout".into(),
        points: points.iter().map(|p| (*p).to_owned()).collect(),
        ttl_seconds: ttl,
        reason: reason.into(),
        ticket: "INC-4711".into(),
        request_id: String::new(),
    }
}

/// A session on `points` of `checkout` opened by `client` for `ttl` seconds, for an incident.
pub async fn opened_session(client: &mut Client, points: &[&str], ttl: u32) -> pb::SessionInfo {
    client
        .open_session(open_request(
            points,
            ttl,
            "checkout errors spiking, INC-4711",
        ))
        .await
        .expect("session opens")
        .into_inner()
        .session
        .expect("session in the answer")
}

/// Asserts that `result` failed with `code` and a message containing `needle`.
pub fn assert_status(
    result: Result<impl std::fmt::Debug, tonic::Status>,
    code: tonic::Code,
    needle: &str,
) {
    match result {
        Ok(value) => panic!("expected {code:?} containing {needle:?}, got {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            assert!(
                status.message().contains(needle),
                "{:?} does not mention {needle:?}",
                status.message()
            );
        }
    }
}

/// Polls `check` until it returns `Some`, for at most `PATIENCE`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the control plane lists `count` live instances of `service` (as `user`).
pub async fn wait_for_instances(
    client: &mut ControlPlaneClient<Channel>,
    service: &str,
    count: usize,
) -> Vec<pb::InstanceInfo> {
    eventually(&format!("{count} live instance(s) of {service}"), || {
        let mut client = client.clone();
        async move {
            let services = client
                .list_services(pb::ListServicesRequest::default())
                .await
                .ok()?
                .into_inner()
                .services;
            let instances = services.into_iter().find(|s| s.name == service)?.instances;
            (instances.len() >= count).then_some(instances)
        }
    })
    .await
}

/// Every event of the log as JSON (`canonical_json` parsed), read as `reviewer`.
pub async fn audit_events(
    client: &mut ControlPlaneClient<Channel>,
    filter: pb::QueryAuditRequest,
) -> Vec<serde_json::Value> {
    let mut stream = client
        .query_audit(filter)
        .await
        .expect("audit query allowed")
        .into_inner();
    let mut events = Vec::new();
    while let Some(record) = stream.message().await.expect("audit stream") {
        events.push(serde_json::from_slice(&record.canonical_json).expect("event JSON"));
    }
    events
}

/// The events `filter` selects, once there is at least one (the log is written after the
/// answer that caused it, so a test reads until it appears, up to [`PATIENCE`]).
pub async fn audit_events_eventually(
    client: &ControlPlaneClient<Channel>,
    filter: pb::QueryAuditRequest,
) -> Vec<serde_json::Value> {
    let what = format!("`{}` events in the log", filter.action);
    eventually(&what, || {
        let mut client = client.clone();
        let filter = filter.clone();
        async move {
            let events = audit_events(&mut client, filter).await;
            (!events.is_empty()).then_some(events)
        }
    })
    .await
}

/// The `action` of each event.
pub fn actions(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A small tmpfs, unmounted when this drops, however the test ends.
pub struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounts an 8 MiB tmpfs at `at`, for tests of a full disk. Mounting needs root: without it
/// this says so and returns `None` (the test returns) — unless
/// `LOUPE_REQUIRE_PRIVILEGED_TESTS=1` (as in CI), where being unable to mount is a failure.
pub fn mount_tmpfs(at: &Path) -> Option<Mount> {
    std::fs::create_dir_all(at).expect("mount point");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "loupe-e2e-audit"])
        .arg(at)
        .status();
    match status {
        Ok(s) if s.success() => Some(Mount(at.to_owned())),
        other => {
            let why = format!("cannot mount a tmpfs at {} ({other:?})", at.display());
            if std::env::var("LOUPE_REQUIRE_PRIVILEGED_TESTS").as_deref() == Ok("1") {
                panic!("{why}, and LOUPE_REQUIRE_PRIVILEGED_TESTS=1 requires this test to run");
            }
            eprintln!("SKIPPED a full-disk test: {why}; run as root to include it");
            None
        }
    }
}

/// Fills the file system of `path` with a file there, to the last byte.
pub fn fill_up(path: &Path) {
    let mut file = std::fs::File::create(path).expect("create filler");
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling the tmpfs failed unexpectedly: {e}"),
        }
    }
}

//! The sidecar end to end: a C process that knows nothing about Loupe, `loupe-agent sidecar`
//! beside it registering with a real control plane as a SIDECAR instance of `inventory`, and
//! the `loupe` CLI opening a session and capturing a watch point through the control plane,
//! over real mTLS on loopback; the snapshots carry the target's values (a password member
//! redacted) and the capture is in the audit log.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use loupe_devstack::supervise::{Launch, Stderr};
use loupe_tests::{
    Deployment, PATIENCE, Process, TRUST_DOMAIN, audit_events, pb, wait_for_instances,
};
use loupe_trust::identity::control_plane_identity;
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_loupe-e2e");
const SIDECAR: &str = env!("CARGO_BIN_EXE_loupe-agent-e2e");

/// The C fixture, killed when dropped.
struct Target(Child);

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `cc` is here to build the fixture (required under LOUPE_REQUIRE_PRIVILEGED_TESTS=1).
fn can_build_c() -> bool {
    let ok = Command::new("cc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("LOUPE_REQUIRE_PRIVILEGED_TESTS").as_deref() != Ok("1"),
            "this test needs a C compiler (`cc`), and LOUPE_REQUIRE_PRIVILEGED_TESTS=1 requires it to run"
        );
        eprintln!("skipped: no C compiler");
    }
    ok
}

/// The sidecar's C fixture `name`.c, built with `-g` and `flags` and started.
fn start_target(dir: &Path, name: &str, flags: &[&str]) -> Target {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sidecar/tests/fixtures")
        .join(format!("{name}.c"));
    let binary = dir.join(name);
    let status = Command::new("cc")
        .arg("-g")
        .args(flags)
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed");
    let mut child = Command::new(&binary)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the fixture");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    assert!(line.starts_with("ready"), "{line}");
    Target(child)
}

/// `loupe-agent sidecar` for `target` with the points file `points`, registered with the
/// control plane at `address` as instance `inventory-sidecar-1` of `inventory`.
fn start_sidecar(deployment: &Deployment, address: &str, target: &Target, points: &str) -> Process {
    let path = deployment.dir.path().join("points.toml");
    std::fs::write(&path, points).expect("points file");
    let agent = deployment.pki.agent("inventory");
    let mut command = Command::new(SIDECAR);
    command
        .args(["sidecar", "--pid", &target.0.id().to_string(), "--points"])
        .arg(&path)
        .args([
            "--service",
            "inventory",
            "--instance",
            "inventory-sidecar-1",
        ])
        .arg("--cert")
        .arg(&agent.cert)
        .arg("--key")
        .arg(&agent.key)
        .arg("--ca")
        .arg(deployment.pki.ca_cert())
        .args(["--control-plane", &control_plane_identity(TRUST_DOMAIN)])
        .args(["--control-plane-address", address]);
    Process::start(Launch {
        name: "sidecar".into(),
        command,
        ready_process: loupe_proto::ready::SIDECAR.into(),
        ready_within: PATIENCE,
        stderr: Stderr::Inherit,
    })
}

/// `loupe --profile USER --output json ARGS…`, to its end.
fn loupe(
    deployment: &Deployment,
    config: &Path,
    user: &str,
    args: &[&str],
) -> (i32, String, String) {
    let output = Command::new(EXE)
        .env("LOUPE_CONFIG", config)
        .env("LOUPE_STATE_DIR", deployment.dir.path().join("state"))
        .env("NO_COLOR", "1")
        .env_remove("LOUPE_PROFILE")
        .env_remove("LOUPE_ADDRESS")
        .args(["--profile", user, "--output", "json"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run loupe");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_point_is_captured_through_the_control_plane_and_audited() {
    if !can_build_c() {
        return;
    }
    let deployment = Deployment::new(EXE);
    let control_plane = deployment.start_control_plane();
    let target = start_target(deployment.dir.path(), "shapes", &["-O2"]);
    let mut sidecar = start_sidecar(
        &deployment,
        &control_plane.address,
        &target,
        "[[watch]]\nname = \"inventory.config\"\nsymbol = \"g_config\"\ninterval_ms = 50\n\
         [[watch]]\nname = \"inventory.login\"\nsymbol = \"g_login\"\ninterval_ms = 50\n",
    );

    // Registered as a sidecar, with its watch points listed.
    let mut alice = deployment.client(&control_plane.address, "alice").await;
    let instances = wait_for_instances(&mut alice, "inventory", 1).await;
    assert_eq!(instances[0].instance, "inventory-sidecar-1");
    assert_eq!(instances[0].mode(), pb::AgentMode::Sidecar);
    let listed = alice
        .list_points(pb::ListPointsRequest {
            service: "inventory".into(),
            ..pb::ListPointsRequest::default()
        })
        .await
        .expect("list points")
        .into_inner();
    let names: Vec<&str> = listed
        .points
        .iter()
        .filter_map(|p| p.point.as_ref().map(|info| info.name.as_str()))
        .collect();
    assert!(
        names.contains(&"inventory.config") && names.contains(&"inventory.login"),
        "{names:?}"
    );
    let config_point = listed
        .points
        .iter()
        .filter_map(|p| p.point.as_ref())
        .find(|p| p.name == "inventory.config")
        .expect("listed");
    assert_eq!(config_point.kind(), pb::PointKind::Watch);
    assert_eq!(config_point.fields[0].name, "g_config");
    assert_eq!(config_point.fields[0].r#type, "config_t", "the DWARF type");
    assert!(
        config_point.locations[0].file.ends_with("shapes.c") && config_point.locations[0].line > 0,
        "{config_point:?}"
    );

    // The engineer's path: open a session, capture, through the CLI.
    let config = deployment.write_cli_config(&control_plane.address);
    let (code, stdout, stderr) = loupe(
        &deployment,
        &config,
        "alice",
        &[
            "session",
            "open",
            "--service",
            "inventory",
            "--points",
            "inventory.*",
            "--ttl",
            "10m",
            "--reason",
            "stock limits look wrong, INC-4712",
            "--ticket",
            "INC-4712",
        ],
    );
    assert_eq!(code, 0, "session open: {stdout}\n{stderr}");
    let session: Value = serde_json::from_str(&stdout).expect("session JSON");
    assert_eq!(session["state"], "active", "{session}");
    let session_id = session["id"].as_str().expect("session id").to_owned();

    let capture = |point: &str| {
        let (code, stdout, stderr) = loupe(
            &deployment,
            &config,
            "alice",
            &[
                "capture",
                point,
                "--session",
                &session_id,
                "--count",
                "2",
                "--timeout",
                "60s",
            ],
        );
        assert_eq!(code, 0, "capture {point}: {stdout}\n{stderr}");
        serde_json::Deserializer::from_str(&stdout)
            .into_iter::<Value>()
            .collect::<Result<Vec<_>, _>>()
            .expect("snapshots as JSON")
    };
    let snapshots = capture("inventory.config");
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
    for snapshot in &snapshots {
        assert_eq!(snapshot["point"], "inventory.config");
        assert_eq!(snapshot["instance"], "inventory-sidecar-1");
        let config = &snapshot["fields"]["g_config"];
        assert_eq!(config["name"], "checkout", "{snapshot}");
        assert_eq!(config["limits"]["max"], 100, "{snapshot}");
        assert_eq!(config["head"]["next"]["label"], "second", "{snapshot}");
    }
    let logins = capture("inventory.login");
    let raw = serde_json::to_string(&logins).expect("JSON");
    assert!(!raw.contains("hunter2"), "the password leaked: {raw}");
    assert!(
        logins[0]["fields"]["g_login"]["password"]["$redacted"].is_string(),
        "{raw}"
    );
    assert_eq!(logins[0]["fields"]["g_login"]["user"], "alice");

    // Audited: the capture and each delivered snapshot, by point.
    let mut dave = deployment.client(&control_plane.address, "dave").await;
    let events = audit_events(
        &mut dave,
        pb::QueryAuditRequest {
            session: session_id.clone(),
            ..pb::QueryAuditRequest::default()
        },
    )
    .await;
    let about_config: Vec<&Value> = events
        .iter()
        .filter(|e| e.to_string().contains("inventory.config"))
        .collect();
    assert!(
        about_config
            .iter()
            .any(|e| e["action"] == "capture.started"),
        "{about_config:?}"
    );
    assert!(
        about_config
            .iter()
            .filter(|e| e["action"].as_str().is_some_and(|a| a.contains("snapshot")))
            .count()
            >= 2,
        "{about_config:?}"
    );

    // The target exits during a capture: the engineer is told why, and the sidecar exits (3).
    let mut watching = Command::new(EXE)
        .env("LOUPE_CONFIG", &config)
        .env("LOUPE_STATE_DIR", deployment.dir.path().join("state"))
        .env("NO_COLOR", "1")
        .env_remove("LOUPE_PROFILE")
        .env_remove("LOUPE_ADDRESS")
        .args(["--profile", "alice", "--output", "json"])
        .args(["capture", "inventory.config", "--session", &session_id])
        .args(["--count", "100000", "--timeout", "120s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run loupe capture");
    // Snapshots are pretty-printed JSON documents; wait for the first one's point.
    let mut lines = BufReader::new(watching.stdout.take().expect("stdout")).lines();
    let first = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.contains("inventory.config"));
    assert!(first.is_some(), "no snapshot before the target exited");
    let drain = std::thread::spawn(move || lines.count());
    drop(target);
    let ended = watching.wait_with_output().expect("loupe capture ends");
    drain.join().expect("stdout drained");
    let stderr = String::from_utf8_lossy(&ended.stderr);
    assert!(
        stderr.contains("exited"),
        "the engineer is told the target exited: {stderr}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let state = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim().chars().next())
            })
            .flatten()
    };
    while state(sidecar.pid()) != Some('Z') && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        sidecar.terminate(),
        Some(3),
        "the sidecar exits when its target does"
    );
}

/// Whether uprobes can be opened here (root and the uprobe PMU; required under
/// LOUPE_REQUIRE_PRIVILEGED_TESTS=1).
fn can_probe() -> bool {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .is_some_and(|uids| uids.split_whitespace().nth(1) == Some("0"))
    });
    let pmu = Path::new("/sys/bus/event_source/devices/uprobe/type").exists();
    if !(root && pmu) {
        assert!(
            std::env::var("LOUPE_REQUIRE_PRIVILEGED_TESTS").as_deref() != Ok("1"),
            "this test needs root and the uprobe PMU, and LOUPE_REQUIRE_PRIVILEGED_TESTS=1 requires it to run"
        );
        eprintln!("skipped: needs root and the uprobe PMU");
    }
    root && pmu
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_point_is_captured_through_the_control_plane_and_audited() {
    if !can_build_c() || !can_probe() {
        return;
    }
    let deployment = Deployment::new(EXE);
    let control_plane = deployment.start_control_plane();
    let target = start_target(deployment.dir.path(), "calls", &["-O2", "-fcf-protection"]);
    let _sidecar = start_sidecar(
        &deployment,
        &control_plane.address,
        &target,
        "[[probe]]\nname = \"inventory.work\"\nfunction = \"work\"\n",
    );

    // Listed as a probe, with the parameters' DWARF types and the function's file and line.
    let mut alice = deployment.client(&control_plane.address, "alice").await;
    wait_for_instances(&mut alice, "inventory", 1).await;
    let listed = alice
        .list_points(pb::ListPointsRequest {
            service: "inventory".into(),
            ..pb::ListPointsRequest::default()
        })
        .await
        .expect("list points")
        .into_inner();
    let work = listed
        .points
        .iter()
        .filter_map(|p| p.point.as_ref())
        .find(|p| p.name == "inventory.work")
        .expect("listed");
    assert_eq!(work.kind(), pb::PointKind::Probe);
    let fields: Vec<(&str, &str)> = work
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.r#type.as_str()))
        .collect();
    assert_eq!(
        fields,
        [("n", "i32"), ("item", "*item"), ("label", "char *")]
    );
    assert!(
        work.locations[0].file.ends_with("calls.c") && work.locations[0].line > 0,
        "{work:?}"
    );

    let config = deployment.write_cli_config(&control_plane.address);
    let (code, stdout, stderr) = loupe(
        &deployment,
        &config,
        "alice",
        &[
            "session",
            "open",
            "--service",
            "inventory",
            "--points",
            "inventory.work",
            "--ttl",
            "10m",
            "--reason",
            "what does work() get called with, INC-4713",
            "--ticket",
            "INC-4713",
        ],
    );
    assert_eq!(code, 0, "session open: {stdout}\n{stderr}");
    let session: Value = serde_json::from_str(&stdout).expect("session JSON");
    let session_id = session["id"].as_str().expect("session id").to_owned();
    let (code, stdout, stderr) = loupe(
        &deployment,
        &config,
        "alice",
        &[
            "capture",
            "inventory.work",
            "--session",
            &session_id,
            "--count",
            "3",
            "--timeout",
            "60s",
        ],
    );
    assert_eq!(code, 0, "capture: {stdout}\n{stderr}");
    let snapshots: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .expect("snapshots as JSON");
    assert_eq!(snapshots.len(), 3, "{snapshots:?}");
    let mut previous = 0;
    for snapshot in &snapshots {
        assert_eq!(snapshot["point"], "inventory.work");
        let fields = &snapshot["fields"];
        let n = fields["n"].as_i64().expect("n is a number");
        assert!(n > previous, "{snapshot}");
        previous = n;
        assert_eq!(fields["item"]["id"], 7, "{snapshot}");
        assert_eq!(fields["item"]["sku"], "sku-7", "{snapshot}");
        assert_eq!(fields["label"], "checkout", "{snapshot}");
    }

    let mut dave = deployment.client(&control_plane.address, "dave").await;
    let events = audit_events(
        &mut dave,
        pb::QueryAuditRequest {
            session: session_id.clone(),
            ..pb::QueryAuditRequest::default()
        },
    )
    .await;
    let about_work: Vec<&Value> = events
        .iter()
        .filter(|e| e.to_string().contains("inventory.work"))
        .collect();
    assert!(
        about_work.iter().any(|e| e["action"] == "capture.started"),
        "{about_work:?}"
    );
    assert!(
        about_work
            .iter()
            .filter(|e| e["action"].as_str().is_some_and(|a| a.contains("snapshot")))
            .count()
            >= 3,
        "{about_work:?}"
    );
}

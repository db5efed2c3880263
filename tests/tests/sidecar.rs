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

/// The sidecar's C fixture `name`.c, built into `dir` with `-g` and `flags`.
fn build_fixture(dir: &Path, name: &str, flags: &[&str]) -> std::path::PathBuf {
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
    binary
}

/// The sidecar's C fixture `name`.c, built with `-g` and `flags` and started.
fn start_target(dir: &Path, name: &str, flags: &[&str]) -> Target {
    let binary = build_fixture(dir, name, flags);
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

/// alice's session on `points` of `inventory`, active at once; its id.
fn open_session(deployment: &Deployment, config: &Path, points: &str, reason: &str) -> String {
    let (code, stdout, stderr) = loupe(
        deployment,
        config,
        "alice",
        &[
            "session",
            "open",
            "--service",
            "inventory",
            "--points",
            points,
            "--ttl",
            "10m",
            "--reason",
            reason,
        ],
    );
    assert_eq!(code, 0, "session open: {stdout}\n{stderr}");
    let session: Value = serde_json::from_str(&stdout).expect("session JSON");
    assert_eq!(session["state"], "active", "{session}");
    session["id"].as_str().expect("session id").to_owned()
}

/// alice's `loupe capture POINT` that would run for minutes, once its first snapshot has
/// arrived; the thread drains the rest of its output.
fn long_capture(
    deployment: &Deployment,
    config: &Path,
    session_id: &str,
    point: &str,
) -> (Child, std::thread::JoinHandle<usize>) {
    let mut watching = Command::new(EXE)
        .env("LOUPE_CONFIG", config)
        .env("LOUPE_STATE_DIR", deployment.dir.path().join("state"))
        .env("NO_COLOR", "1")
        .env_remove("LOUPE_PROFILE")
        .env_remove("LOUPE_ADDRESS")
        .args(["--profile", "alice", "--output", "jsonl"])
        .args(["capture", point, "--session", session_id])
        .args(["--count", "100000", "--timeout", "120s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run loupe capture");
    let mut lines = BufReader::new(watching.stdout.take().expect("stdout")).lines();
    let first = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.contains(point));
    assert!(first.is_some(), "no snapshot of {point}");
    (watching, std::thread::spawn(move || lines.count()))
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
    let (watching, drain) = long_capture(&deployment, &config, &session_id, "inventory.config");
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
    let session_id = open_session(
        &deployment,
        &config,
        "inventory.work",
        "what does work() get called with, INC-4713",
    );
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
        // The target's thread that hit the probe (its only one: tid = pid), not the sidecar's.
        assert_eq!(snapshot["thread"]["id"], target.0.id(), "{snapshot}");
        assert_eq!(snapshot["thread"]["name"], "calls", "{snapshot}");
        assert_eq!(snapshot["trace"]["span_id"], "", "{snapshot}");
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

/// The fixture `name`.c built with `-g` and `flags`, started with `args`; its stdout lines
/// after "ready" arrive on the receiver (the warm fixture's "window <ns per call>" lines).
fn start_target_with_lines(
    dir: &Path,
    name: &str,
    flags: &[&str],
    args: &[&str],
) -> (Target, std::sync::mpsc::Receiver<String>) {
    let binary = build_fixture(dir, name, flags);
    let mut child = Command::new(&binary)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the fixture");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(ready.starts_with("ready"), "{ready}");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    (Target(child), receiver)
}

/// The next "window <ns per call>" the warm fixture prints.
fn next_window(lines: &std::sync::mpsc::Receiver<String>) -> f64 {
    loop {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the fixture reports a window");
        if let Some(ns) = line.strip_prefix("window ") {
            return ns.trim().parse().expect("ns per call");
        }
    }
}

/// The byte of code at file offset `offset` of process `pid`'s executable, as its threads see
/// it: an armed uprobe shows there as int3 (0xcc), written into the target's copy of the page.
fn code_byte(pid: u32, offset: u64) -> u8 {
    use std::io::{Read, Seek, SeekFrom};
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("the target's executable");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("the target's maps");
    let address = maps
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (range, perms, file_offset, path) =
                (fields[0], fields[1], fields[2], fields.get(5)?);
            if !perms.contains('x') || Path::new(path) != exe {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            let file_offset = u64::from_str_radix(file_offset, 16).ok()?;
            (file_offset..file_offset + (end - start))
                .contains(&offset)
                .then(|| start + (offset - file_offset))
        })
        .expect("the executable's code mapping holds the offset");
    let mut memory = std::fs::File::open(format!("/proc/{pid}/mem")).expect("the target's memory");
    memory.seek(SeekFrom::Start(address)).expect("seek");
    let mut byte = [0u8; 1];
    memory.read_exact(&mut byte).expect("read the code byte");
    byte[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_the_probes_ends_the_captures_with_a_reason_and_exits_0() {
    if !can_build_c() || !can_probe() {
        return;
    }
    let deployment = Deployment::new(EXE);
    let control_plane = deployment.start_control_plane();
    // -O0 with CET: the probe goes after endbr64, on `push %rbp`, which the kernel emulates;
    // the warm fixture's ~2000 calls a second stay under the breaker's budget.
    let (target, windows) = start_target_with_lines(
        deployment.dir.path(),
        "calls",
        &["-O0", "-fcf-protection"],
        &["warm"],
    );
    let points = "[[probe]]\nname = \"inventory.work\"\nfunction = \"work\"\n";
    let points_file = deployment.dir.path().join("check.toml");
    std::fs::write(&points_file, points).expect("points file");
    let check = Command::new(SIDECAR)
        .args([
            "sidecar",
            "--check",
            "--pid",
            &target.0.id().to_string(),
            "--points",
        ])
        .arg(&points_file)
        .output()
        .expect("run the sidecar's check");
    let check = String::from_utf8_lossy(&check.stdout).into_owned();
    let offset = check
        .split("uprobe at file offset 0x")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_hexdigit()).next())
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .unwrap_or_else(|| panic!("no file offset in: {check}"));
    let original = code_byte(target.0.id(), offset);
    assert_ne!(original, 0xcc, "no breakpoint before any probe is armed");
    let baseline = (0..2)
        .map(|_| next_window(&windows))
        .fold(f64::MAX, f64::min);

    let mut sidecar = start_sidecar(&deployment, &control_plane.address, &target, points);
    let mut alice = deployment.client(&control_plane.address, "alice").await;
    wait_for_instances(&mut alice, "inventory", 1).await;
    let config = deployment.write_cli_config(&control_plane.address);
    let session_id = open_session(
        &deployment,
        &config,
        "inventory.work",
        "does work() slow down under a probe, INC-4714",
    );

    // A capture that would run for minutes, reading hits as they come.
    let (watching, drain) = long_capture(&deployment, &config, &session_id, "inventory.work");
    assert_eq!(
        code_byte(target.0.id(), offset),
        0xcc,
        "the armed probe is a breakpoint in the target's code"
    );

    // SIGTERM: exit 0, the engineer told why the capture ended, the breakpoint gone.
    let code = sidecar.terminate();
    let stopped_at = std::time::Instant::now();
    assert_eq!(code, Some(0), "the sidecar exits 0 on SIGTERM");
    let ended = watching.wait_with_output().expect("loupe capture ends");
    drain.join().expect("stdout drained");
    let told = String::from_utf8_lossy(&ended.stderr);
    assert!(
        told.contains("shutting down"),
        "the engineer is told why the capture ended: {told}"
    );
    assert_eq!(
        code_byte(target.0.id(), offset),
        original,
        "no breakpoint remains in the target's code"
    );

    // The target runs on, at its normal speed (windows that began after the stop).
    while stopped_at.elapsed() < std::time::Duration::from_secs(1) {
        let _ = next_window(&windows);
    }
    let after = (0..2)
        .map(|_| next_window(&windows))
        .fold(f64::MAX, f64::min);
    assert!(
        after <= baseline * 3.0 + 50.0,
        "a call costs {after} ns after the sidecar stopped, {baseline} ns before it started"
    );
    let mut target = target;
    assert!(
        target.0.try_wait().expect("poll the target").is_none(),
        "the target is still running"
    );
    eprintln!("sigterm: baseline {baseline} ns, after {after} ns per call");
}

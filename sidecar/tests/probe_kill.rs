//! SIGKILL of the sidecar while its probe is hot: the kernel closes the dead sidecar's perf
//! descriptors, which removes the breakpoint, so the target keeps running, is back to its
//! normal cost per call within a second, and never receives SIGTRAP.
//!
//! The sidecar is a real second process: this test binary run again with
//! `LOUPE_TEST_SIDECAR_FOR=<pid>`, which attaches to the fixture, arms a capture on the probe,
//! says `sidecar armed` once hits arrive, and serves until it is killed.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use loupe_agent::{CaptureSpec, RateLimit};
use loupe_sidecar::{PointsFile, Resolved, Sidecar, Target};
use support::*;

const ROLE: &str = "LOUPE_TEST_SIDECAR_FOR";
const TEST: &str = "sigkill_of_the_sidecar_leaves_the_target_running_at_its_normal_speed";

#[test]
fn sigkill_of_the_sidecar_leaves_the_target_running_at_its_normal_speed() {
    if let Ok(pid) = std::env::var(ROLE) {
        be_the_sidecar(pid.parse().expect("a pid"));
        return;
    }
    if !can_run_probes() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // -O0 with CET: the probe goes after endbr64, on `push %rbp`, which the kernel emulates;
    // about 2000 hits a second then stay under the breaker's 1 % budget.
    let binary = build_c(
        dir.path(),
        &fixture_source("calls.c"),
        "calls_warm",
        &["-g", "-O0", "-fcf-protection"],
    );
    let (mut fixture, lines) = spawn_with_lines(&binary, "warm");
    let baseline = (0..2).map(|_| next_window(&lines)).fold(f64::MAX, f64::min);

    let mut sidecar = KilledOnDrop(
        Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(ROLE, fixture.pid.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the sidecar process"),
    );
    let stdout = sidecar.0.stdout.take().expect("stdout");
    let armed = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("sidecar armed"));
    assert!(armed, "the sidecar process armed its probe");
    // Windows that began after the probe was armed show what it costs.
    let _ = next_window(&lines);
    let probed = next_window(&lines);
    assert!(
        probed > baseline + 200.0,
        "the probe is hot: {probed} ns per call against {baseline} ns"
    );

    sidecar.0.kill().expect("SIGKILL the sidecar");
    let killed_at = Instant::now();
    let status = sidecar.0.wait().expect("reap the sidecar");
    assert_eq!(status.signal(), Some(libc_sigkill()));
    // Windows that began a second after the kill are back to normal.
    while killed_at.elapsed() < Duration::from_secs(1) {
        let _ = next_window(&lines);
    }
    let after = (0..2).map(|_| next_window(&lines)).fold(f64::MAX, f64::min);
    assert!(
        after <= baseline * 3.0 + 50.0,
        "a call costs {after} ns a second after the kill, {baseline} ns before the probe ({probed} ns probed)"
    );
    assert!(
        fixture
            .child
            .try_wait()
            .expect("poll the fixture")
            .is_none(),
        "the target is still running"
    );
    fixture.kill();
    let status = fixture.child.wait().expect("reap the fixture");
    assert_eq!(
        status.signal(),
        Some(libc_sigkill()),
        "it ended by the test's SIGKILL, never by SIGTRAP"
    );
    eprintln!(
        "probe kill: baseline {baseline} ns, probed {probed} ns, after kill {after} ns per call"
    );
}

/// The sidecar process, killed if the test fails before it does.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn libc_sigkill() -> i32 {
    9
}

/// The sidecar process's side: attach, arm, say so, serve until killed.
fn be_the_sidecar(pid: i32) {
    let points = PointsFile::parse(
        Path::new("points.toml"),
        "[[probe]]\nname = \"warm.work\"\nfunction = \"work\"\n",
    )
    .expect("points");
    let target = Target::attach(i64::from(pid)).expect("attach");
    let sidecar = Sidecar::declare(
        Resolved::attach_points(target, &points.watches, &points.probes).expect("resolve"),
    )
    .expect("declare");
    let mut stream = loupe_agent::arm(
        CaptureSpec::new("s-warm", "warm.work")
            .max_snapshots(1_000_000_000)
            .duration(Duration::from_secs(600))
            .rate(RateLimit {
                per_second: 10_000.0,
                burst: 1000,
            }),
    )
    .expect("armed");
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| sidecar.run(&stop));
        stream.blocking_next().expect("a first hit");
        println!("sidecar armed");
        while stream.blocking_next().is_some() {}
        panic!(
            "the capture ended before the sidecar was killed: {:?}",
            stream.status()
        );
    });
}

//! A thread the target starts after the probe is armed is found by the `/proc/PID/task`
//! rescan, and its calls reach the capture. Its own test binary: the point registry is built
//! once per process.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use loupe_agent::{CaptureSpec, RateLimit};
use loupe_sidecar::{PointsFile, Resolved, Sidecar, Target};
use support::*;

/// A thread the target starts after the probe is armed is found by the task rescan: its
/// calls (`n` counting down from -1) reach the capture too.
#[test]
fn threads_started_later_are_probed() {
    if !can_run_probes() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let binary = build_c(
        dir,
        &fixture_source("calls.c"),
        "calls_threads",
        &["-g", "-O2", "-pthread"],
    );
    let (fixture, _lines) = spawn_with_lines(&binary, "threads");
    let points = PointsFile::parse(
        Path::new("points.toml"),
        "[[probe]]\nname = \"threads.work\"\nfunction = \"work\"\nargs = [\"n\"]\n",
    )
    .expect("points");
    let target = Target::attach(i64::from(fixture.pid)).expect("attach");
    let sidecar = Sidecar::declare(
        Resolved::attach_points(target, &points.watches, &points.probes).expect("resolve"),
    )
    .expect("declare");
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let _stop_on_panic = StopOnDrop(&stop);
        scope.spawn(|| sidecar.run(&stop));
        let mut stream = loupe_agent::arm(
            CaptureSpec::new("s-threads", "threads.work")
                .max_snapshots(10_000)
                .duration(Duration::from_secs(30))
                .rate(RateLimit {
                    per_second: 2000.0,
                    burst: 100,
                }),
        )
        .expect("armed");
        let mut first_thread = false;
        let mut later_thread = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(first_thread && later_thread) && Instant::now() < deadline {
            let snapshot = stream.blocking_next().expect("a snapshot");
            let all = leaves_of(&snapshot);
            match leaf(&all, "n") {
                Leaf::Int(n) if *n > 0 => first_thread = true,
                Leaf::Int(_) => later_thread = true,
                other => panic!("n is {other:?}"),
            }
        }
        assert!(first_thread, "the main thread's calls are captured");
        assert!(
            later_thread,
            "the calls of a thread started after arming are captured"
        );
        // The stats are recorded after the samples of a pass are delivered, so the snapshot
        // of the later thread can arrive before its event is counted: wait for the count.
        let counted = Instant::now() + Duration::from_secs(5);
        while sidecar.probe_stats()[0].1.threads < 2 && Instant::now() < counted {
            std::thread::sleep(Duration::from_millis(10));
        }
        let threads = sidecar.probe_stats()[0].1.threads;
        assert!(threads >= 2, "events open on {threads} thread(s)");
        stop.store(true, Ordering::Relaxed);
    });
}

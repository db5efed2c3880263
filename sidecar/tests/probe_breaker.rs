//! The circuit breaker: a probe on a function the target calls in a tight loop costs it far
//! more than 1 % of a core, so within a breaker window or two the probe is closed and its
//! capture ends with a reason the engineer sees; the target's calls return to their normal
//! cost. One test: the point registry is built once per process.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use loupe_agent::{CaptureSpec, EndReason, RateLimit};
use loupe_sidecar::{PointsFile, Resolved, Sidecar, Target};
use support::*;

#[test]
fn the_breaker_closes_a_probe_on_a_hot_function_and_the_capture_says_why() {
    if !can_run_probes() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = build_c(
        dir.path(),
        &fixture_source("calls.c"),
        "calls_hot",
        &["-g", "-O2", "-fcf-protection"],
    );
    let (fixture, lines) = spawn_with_lines(&binary, "hot");
    let baseline = (0..3).map(|_| next_window(&lines)).fold(f64::MAX, f64::min);
    let points = PointsFile::parse(
        Path::new("points.toml"),
        "[[probe]]\nname = \"hot.work\"\nfunction = \"work\"\n",
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
        let armed_at = Instant::now();
        let mut stream = loupe_agent::arm(
            CaptureSpec::new("s-hot", "hot.work")
                .max_snapshots(1_000_000)
                .duration(Duration::from_secs(60))
                .rate(RateLimit {
                    per_second: 100.0,
                    burst: 10,
                }),
        )
        .expect("armed");
        let mut snapshots = 0;
        while stream.blocking_next().is_some() {
            snapshots += 1;
        }
        let tripped_after = armed_at.elapsed();
        assert_eq!(
            stream.status().ended,
            Some(EndReason::CpuBudgetExceeded),
            "the capture ends with the breaker's reason"
        );
        assert!(
            tripped_after < Duration::from_secs(3),
            "tripped after {tripped_after:?}"
        );
        assert!(snapshots > 0, "it captured before it tripped");
        let stats = sidecar.probe_stats();
        assert_eq!(stats[0].1.tripped, 1, "{stats:?}");
        assert!(!stats[0].1.armed);
        assert!(
            stats[0].1.lost > 0 && stats[0].1.hits > stats[0].1.lost,
            "at this rate the rings overflow, and what they drop is counted: {stats:?}"
        );
        assert!(!perf_events_open_here(), "the events are closed");
        // The target's calls cost what they did before the probe (the breakpoint is gone):
        // skip the window the trip happened in, then compare.
        let _ = next_window(&lines);
        let after = (0..3).map(|_| next_window(&lines)).fold(f64::MAX, f64::min);
        assert!(
            after <= baseline * 3.0 + 20.0,
            "a call costs {after} ns after the trip, {baseline} ns before the probe"
        );
        stop.store(true, Ordering::Relaxed);
    });
}

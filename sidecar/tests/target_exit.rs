//! The target exits while a capture is armed on one of its watch points: the capture ends with
//! `TargetGone` (the engineer sees why), the sampling loop returns so the sidecar can exit,
//! and nothing is read from a process that is gone. One test: the point registry is built
//! once per process.

mod support;

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use loupe_agent::{CaptureSpec, EndReason, RateLimit};
use loupe_sidecar::target::ReadFault;
use loupe_sidecar::{PointsFile, Resolved, RunEnd, Sidecar, Target};
use support::*;

#[test]
fn target_exit_ends_captures_with_a_reason() {
    if !can_run(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = build_c(
        dir.path(),
        &fixture_source("shapes.c"),
        "shapes",
        &["-g", "-O1"],
    );
    let mut fixture = Fixture::spawn(&binary);
    let points = PointsFile::parse(
        std::path::Path::new("points.toml"),
        "[[watch]]\nname = \"exit.ticks\"\nsymbol = \"g_ticks\"\ninterval_ms = 10\n",
    )
    .expect("points");
    let target = Target::attach(i64::from(fixture.pid)).expect("attach");
    let sidecar = Sidecar::declare(Resolved::attach(target, &points.watches).expect("resolve"))
        .expect("declare");
    let mut stream = loupe_agent::arm(
        CaptureSpec::new("s-exit", "exit.ticks")
            .max_snapshots(100_000)
            .duration(Duration::from_secs(60))
            .rate(RateLimit {
                per_second: 1000.0,
                burst: 100,
            }),
    )
    .expect("armed");
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let run = scope.spawn(|| sidecar.run(&stop));
        // Samples arrive while the target runs, and its counter moves between them.
        let first = stream.blocking_next().expect("a first sample");
        let second = stream.blocking_next().expect("a second sample");
        assert_eq!(first.fields[0].name, "g_ticks");
        assert_ne!(
            first.fields[0].value, second.fields[0].value,
            "g_ticks advances"
        );

        // SIGKILL without reaping: the target is a zombie, its pidfd readable.
        let _ = fixture.child.kill();
        let end = run.join().expect("sampling thread");
        assert_eq!(end, RunEnd::TargetGone);
    });
    while stream.blocking_next().is_some() {}
    assert_eq!(stream.status().ended, Some(EndReason::TargetGone));
    assert!(
        EndReason::TargetGone.to_string().contains("exited"),
        "the reason says what happened"
    );
    let mut byte = [0u8; 8];
    assert_eq!(
        sidecar.target().read(0x1000, &mut byte),
        Err(ReadFault::Gone),
        "nothing is read from a process that exited"
    );
    assert!(!sidecar.target().still_same_process());
    fixture.kill();
}

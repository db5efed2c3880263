//! Probe arguments on the C fixture, a real process trapped by real uprobes: for each way C is
//! built (`-O0`/`-O2`, with and without CET, PIE or not) every snapshot of `work(n, &g_item,
//! "checkout")` shows the arguments the fixture passed: `n` counting up, the struct behind the
//! pointer, the string; `many`'s seventh argument comes from the stack. A double in XMM is marked not captured, never guessed. Disarming
//! closes the events: the breakpoint is gone from the target.
//!
//! One test: the agent's point registry is built once per process, so every variant's points
//! are declared before the first capture is armed.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use loupe_agent::{CaptureSpec, RateLimit};
use loupe_proto::v1 as pb;
use loupe_sidecar::{PointsFile, Resolved, Sidecar, Target};
use support::*;

#[test]
fn probe_snapshots_show_the_arguments_the_fixture_passed() {
    if !can_run_probes() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let source = fixture_source("calls.c");
    let mut running = Vec::new();
    for (variant, flags) in CALLS_VARIANTS {
        let binary = build_c(dir.path(), &source, &format!("calls_{variant}"), flags);
        let fixture = Fixture::spawn(&binary);
        let points = PointsFile::parse(
            Path::new("points.toml"),
            &format!(
                "[[probe]]\nname = \"{variant}.work\"\nfunction = \"work\"\n[[probe]]\nname = \"{variant}.scale\"\nfunction = \"scale\"\n[[probe]]\nname = \"{variant}.many\"\nfunction = \"many\"\n"
            ),
        )
        .expect("points");
        let target = Target::attach(i64::from(fixture.pid)).expect("attach");
        let resolved = Resolved::attach_points(target, &points.watches, &points.probes)
            .unwrap_or_else(|e| panic!("{variant}: {e}"));
        running.push((
            variant,
            fixture,
            Sidecar::declare(resolved).expect("declare"),
        ));
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let _stop_on_panic = StopOnDrop(&stop);
        for (_, _, sidecar) in &running {
            scope.spawn(|| sidecar.run(&stop));
        }
        for (variant, fixture, sidecar) in &running {
            let mut work = loupe_agent::arm(
                CaptureSpec::new(format!("s-{variant}"), format!("{variant}.work"))
                    .max_snapshots(5)
                    .duration(Duration::from_secs(30))
                    .rate(RateLimit {
                        per_second: 1000.0,
                        burst: 100,
                    }),
            )
            .expect("armed");
            let mut previous = 0;
            for _ in 0..5 {
                let snapshot = work.blocking_next().expect("a snapshot");
                let all = leaves_of(&snapshot);
                let Leaf::Int(n) = *leaf(&all, "n") else {
                    panic!("{variant}: n is {all:?}");
                };
                assert!(n > previous, "{variant}: n counts up ({previous} then {n})");
                previous = n;
                assert_eq!(leaf(&all, "item.id"), &Leaf::Int(7), "{variant}");
                assert_eq!(leaf(&all, "item.price"), &Leaf::Int(1999), "{variant}");
                assert_eq!(
                    leaf(&all, "item.sku"),
                    &Leaf::Text("sku-7".into()),
                    "{variant}"
                );
                assert_eq!(
                    leaf(&all, "label"),
                    &Leaf::Text("checkout".into()),
                    "{variant}"
                );
            }

            let mut scale = loupe_agent::arm(
                CaptureSpec::new(format!("s-{variant}-scale"), format!("{variant}.scale"))
                    .max_snapshots(1)
                    .duration(Duration::from_secs(30)),
            )
            .expect("armed");
            let snapshot = scale.blocking_next().expect("a snapshot");
            let all = leaves_of(&snapshot);
            assert!(
                matches!(leaf(&all, "x"), Leaf::NotCaptured(pb::NotCapturedReason::Unsupported, why) if why.contains("XMM")),
                "{variant}: a double in XMM is not guessed: {all:?}"
            );
            assert!(
                matches!(leaf(&all, "k"), Leaf::Int(k) if *k > 0),
                "{variant}: {all:?}"
            );

            // The seventh argument is on the stack, read from the copy taken at the trap.
            let mut many = loupe_agent::arm(
                CaptureSpec::new(format!("s-{variant}-many"), format!("{variant}.many"))
                    .max_snapshots(1)
                    .duration(Duration::from_secs(30)),
            )
            .expect("armed");
            let snapshot = many.blocking_next().expect("a snapshot");
            let all = leaves_of(&snapshot);
            for (name, value) in ["a", "b", "c", "d", "e", "f"].iter().zip(1..) {
                assert_eq!(leaf(&all, name), &Leaf::Int(value), "{variant}: {all:?}");
            }
            assert!(
                matches!(leaf(&all, "g"), Leaf::Int(g) if *g > 0),
                "{variant}: the stack argument: {all:?}"
            );
            while many.blocking_next().is_some() {}

            // Disarmed: the events are closed, which removes the breakpoint.
            while work.blocking_next().is_some() {}
            while scale.blocking_next().is_some() {}
            let deadline = Instant::now() + Duration::from_secs(5);
            while sidecar.probe_stats().iter().any(|(_, s)| s.armed) {
                assert!(Instant::now() < deadline, "{variant}: probes still open");
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(
                !perf_events_open_here(),
                "{variant}: every perf descriptor is closed, so no breakpoint is left"
            );
            assert!(fixture.pid > 0);
            let stats = sidecar.probe_stats();
            assert!(stats[0].1.hits >= 5, "{variant}: {stats:?}");
        }
        stop.store(true, Ordering::Relaxed);
    });
}

//! The host comes first: when capture work would exceed the agent's CPU budget, hits are
//! skipped and counted, and a capture that keeps hitting the budget is disarmed with a status
//! that says so. Runs in its own process because it changes the engine's budget.

mod support;

use std::time::{Duration, Instant};

use loupe_agent::{CaptureSpec, EndReason, EngineConfig, RateLimit, snapshot};
use support::*;

#[derive(serde::Serialize)]
struct Payload {
    values: Vec<u64>,
    text: String,
}

fn busy(payload: &Payload) {
    snapshot!("protect.busy", payload);
}

#[test]
fn a_capture_that_keeps_exceeding_the_cpu_budget_is_disarmed() {
    // 0.01 % of one core: 100 µs of capture work per second.
    loupe_agent::Engine::global()
        .configure(EngineConfig {
            cpu_budget: 0.0001,
            ..EngineConfig::default()
        })
        .expect("config");
    let payload = Payload {
        values: (0..100).collect(),
        text: "x".repeat(200),
    };
    let mut stream = loupe_agent::arm(
        CaptureSpec::new("s", "protect.busy")
            .max_snapshots(10_000)
            .duration(Duration::from_secs(30))
            .rate(RateLimit {
                per_second: 1_000.0,
                burst: 100,
            }),
    )
    .expect("armed");
    let started = Instant::now();
    let mut received = 0;
    while stream.status().ended.is_none() && started.elapsed() < Duration::from_secs(15) {
        for _ in 0..1_000 {
            busy(&payload);
        }
        while stream.try_next().is_some() {
            received += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    while stream.try_next().is_some() {
        received += 1;
    }
    let status = stream.status();
    assert_eq!(
        status.ended,
        Some(EndReason::CpuBudgetExceeded),
        "{status:?}"
    );
    let counters = status.counters;
    assert!(
        counters.skipped_cpu_budget > counters.sent * 10,
        "{counters:?}"
    );
    assert_eq!(received, counters.sent);
    // The work done stayed near the budget: at most the allowance per second elapsed, plus
    // one capture in flight per window (a capture admitted while budget remains is charged in
    // full; an unoptimized build's capture can cost more than the whole allowance).
    let elapsed = started.elapsed().as_secs_f64();
    let per_capture = counters.cost_ns as f64 / counters.sent.max(1) as f64;
    let allowed_ns = (elapsed + 1.0) * (100_000.0 + per_capture);
    assert!(
        (counters.cost_ns as f64) < allowed_ns * 2.0,
        "{} ns of capture work in {elapsed:.1} s",
        counters.cost_ns
    );
    assert!(drain(&mut stream).is_empty());
}

//! Only capture work is charged to the CPU budget: hits turned away by the rate limit before
//! any work must not spend it, or a busy point would starve its own capture. Runs in its own
//! process because it sets the engine's budget.

use std::time::Duration;

use loupe_agent::{CaptureSpec, EngineConfig, RateLimit, snapshot};

fn busy(n: u64) {
    snapshot!("budget.rate_limited", n);
}

#[test]
fn rate_limited_hits_do_not_spend_the_cpu_budget() {
    // 0.5 % of one core: 5 ms of capture work per second — room for the one cold capture of an
    // unoptimized build on a loaded machine (about 2 ms), but not for 200,000 hits if each were
    // charged even 50 ns.
    loupe_agent::Engine::global()
        .configure(EngineConfig {
            cpu_budget: 0.005,
            ..EngineConfig::default()
        })
        .expect("config");
    let mut stream = loupe_agent::arm(
        CaptureSpec::new("s", "budget.rate_limited")
            .max_snapshots(1_000)
            .duration(Duration::from_secs(30))
            .rate(RateLimit {
                per_second: 1.0,
                burst: 1,
            }),
    )
    .expect("armed");
    for n in 0..200_000 {
        busy(n);
    }
    let mut received = 0;
    while stream.try_next().is_some() {
        received += 1;
    }
    let counters = stream.status().counters;
    assert_eq!(received, 1, "{counters:?}");
    assert_eq!(counters.skipped_rate, 199_999, "{counters:?}");
    assert_eq!(counters.skipped_cpu_budget, 0, "{counters:?}");
    assert!(stream.status().ended.is_none());
}

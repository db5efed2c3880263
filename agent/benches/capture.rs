//! The in-process agent's budgets, measured against their anchors in the same run.
//!
//! - `disarmed/*`: an empty loop, the loop with a disarmed `snapshot!`, and the loop with a
//!   disabled `tracing::info!` (no subscriber). Budget: disarmed no slower than disabled
//!   tracing. Each iteration is 1,000 passes.
//! - `armed/*`: one capture of the reference `Order` on the calling thread, with no condition,
//!   a condition that fails, and one that passes. Budget: median ≤ 2 µs. Only the hits are
//!   timed; the stream is drained (and encoded) between batches, off the clock.
//!
//! `cargo bench -p loupe-agent --bench capture`

#[path = "../fixtures/order.rs"]
mod order;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use loupe_agent::{CaptureLimits, CaptureSpec, EngineConfig, RateLimit, snapshot};

const PASSES: u64 = 1_000;

fn disarmed(c: &mut Criterion) {
    let order = order::Order::reference(1);
    let mut group = c.benchmark_group("disarmed");
    group.bench_function("empty_loop", |b| {
        b.iter(|| {
            for i in 0..PASSES {
                black_box(i);
            }
        })
    });
    group.bench_function("snapshot_disarmed", |b| {
        b.iter(|| {
            for i in 0..PASSES {
                black_box(i);
                snapshot!("bench.disarmed", order, ?i);
            }
        })
    });
    group.bench_function("tracing_disabled", |b| {
        b.iter(|| {
            for i in 0..PASSES {
                black_box(i);
                tracing::info!(?order, i, "checkout");
            }
        })
    });
    group.finish();
}

fn place_order(order: &order::Order) {
    snapshot!("bench.armed", order);
}

fn armed(c: &mut Criterion) {
    let engine = loupe_agent::Engine::global();
    engine
        .configure(EngineConfig {
            service: "bench".into(),
            // The budget and rate guards would skip most hits of a tight loop; the benchmark
            // measures the capture itself.
            cpu_budget: 1.0,
            rate_ceiling: RateLimit {
                per_second: 1e12,
                burst: u32::MAX,
            },
            max_snapshots_ceiling: u64::MAX,
            queue_capacity: 4_096,
            limit_ceiling: CaptureLimits::DEFAULT_CEILING,
            ..EngineConfig::default()
        })
        .expect("valid config");
    let order = order::Order::reference(1);
    let cases = [
        ("no_condition", None),
        ("condition_false", Some("order.total_cents > 1000000u")),
        ("condition_true", Some("order.total_cents > 100u")),
    ];
    let mut group = c.benchmark_group("armed");
    for (name, condition) in cases {
        let mut spec = CaptureSpec::new("bench", "bench.armed")
            .max_snapshots(u64::MAX)
            .duration(Duration::from_secs(3_600))
            .rate(RateLimit {
                per_second: 1e12,
                burst: u32::MAX,
            });
        if let Some(condition) = condition {
            spec = spec.condition(condition);
        }
        let mut stream = loupe_agent::arm(spec).expect("armed");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut remaining = iters;
                while remaining > 0 {
                    let batch = remaining.min(1_024);
                    let start = Instant::now();
                    for _ in 0..batch {
                        place_order(black_box(&order));
                    }
                    timed += start.elapsed();
                    while stream.try_next().is_some() {}
                    remaining -= batch;
                }
                timed
            })
        });
        let counters = stream.status().counters;
        assert_eq!(counters.dropped_queue_full, 0, "{name}: {counters:?}");
        assert_eq!(counters.skipped_cpu_budget, 0, "{name}: {counters:?}");
        if condition.is_none() || name == "condition_true" {
            assert_eq!(counters.sent, counters.hits, "{name}: {counters:?}");
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = disarmed, armed
}
criterion_main!(benches);

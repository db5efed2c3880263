//! Many threads hitting a point while captures are armed, disarmed and dropped around them:
//! every hit ends in exactly one counted outcome, every counted snapshot arrives once, and
//! sequence numbers are never repeated.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use loupe_agent::{CaptureCounters, CaptureSpec, EngineConfig, RateLimit, snapshot};
use loupe_proto::v1::value::Kind;
use support::*;

fn hot(thread: u64, n: u64) {
    snapshot!("conc.hot", thread, n);
}

fn accounted(counters: &CaptureCounters) -> u64 {
    counters.sent
        + counters.condition_false
        + counters.condition_errors
        + counters.skipped_rate
        + counters.skipped_cpu_budget
        + counters.skipped_reentrant
        + counters.skipped_after_end
        + counters.dropped_queue_full
}

#[test]
fn hits_arms_and_disarms_race_without_loss_or_duplication() {
    loupe_agent::Engine::global()
        .configure(EngineConfig {
            cpu_budget: 1.0,
            queue_capacity: 32,
            ..EngineConfig::default()
        })
        .expect("config");
    let stop = Arc::new(AtomicBool::new(false));
    let total_hits = Arc::new(AtomicU64::new(0));
    let hitters: Vec<_> = (0..6)
        .map(|t| {
            let stop = Arc::clone(&stop);
            let total_hits = Arc::clone(&total_hits);
            thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    hot(t, n);
                    n += 1;
                }
                total_hits.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();

    let mut rounds = Vec::new();
    for round in 0..40u64 {
        let mut spec = CaptureSpec::new(format!("round-{round}"), "conc.hot")
            .max_snapshots(20 + round)
            .rate(RateLimit {
                per_second: 100_000.0,
                burst: 100,
            });
        if round % 3 == 0 {
            spec = spec.condition("n % 2u == 0u");
        }
        let mut stream = loupe_agent::arm(spec).expect("armed");
        let consumer = thread::spawn(move || {
            let mut received = Vec::new();
            while let Some(snapshot) = stream.blocking_next() {
                received.push(snapshot);
                if round % 4 == 1 && received.len() == 5 {
                    // Walk away mid-capture: dropping the stream disarms it.
                    return (received, stream.status());
                }
                if round % 4 == 2 && received.len() == 3 {
                    stream.disarm();
                }
            }
            (received, stream.status())
        });
        rounds.push((round, consumer));
        if round % 5 == 0 {
            thread::sleep(Duration::from_millis(2));
        }
    }
    let results: Vec<_> = rounds
        .into_iter()
        .map(|(round, consumer)| (round, consumer.join().expect("consumer")))
        .collect();
    stop.store(true, Ordering::Relaxed);
    for hitter in hitters {
        hitter.join().expect("hitter");
    }
    assert!(total_hits.load(Ordering::Relaxed) > 0);

    for (round, (received, status)) in results {
        let counters = status.counters;
        let walked_away = round % 4 == 1;
        if !walked_away {
            // Status read after the stream ended, so the counters are final.
            assert!(status.ended.is_some(), "round {round} ended: {status:?}");
            assert_eq!(
                accounted(&counters),
                counters.hits,
                "round {round}: {counters:?}"
            );
        }
        let sequences: HashSet<u64> = received.iter().map(|s| s.sequence).collect();
        assert_eq!(
            sequences.len(),
            received.len(),
            "round {round}: duplicate sequence"
        );
        assert!(counters.sent <= 20 + round);
        if !walked_away {
            // Read to the end: every snapshot counted as sent arrived.
            assert_eq!(
                received.len() as u64,
                counters.sent,
                "round {round}: {counters:?}"
            );
        } else {
            assert!(received.len() as u64 <= counters.sent);
        }
        if round % 3 == 0 {
            for snapshot in &received {
                let Kind::Uint(n) = field(snapshot, "n") else {
                    panic!("n")
                };
                assert_eq!(n % 2, 0, "round {round}: condition held");
            }
        }
        for snapshot in &received {
            assert!(matches!(field(snapshot, "thread"), Kind::Uint(t) if *t < 6));
        }
    }
    // Nothing stays armed once every capture ended.
    let point = loupe_agent::PointRegistry::global()
        .get("conc.hot")
        .expect("point");
    assert!(wait_for(Duration::from_secs(2), || !point.callsites()[0].is_armed()));
}

//! `OpenSession` latency through each of three control-plane replicas on one PostgreSQL
//! database, against one control plane on SQLite, in the same run, over real processes and
//! real mTLS on loopback.
//!
//! - anchor: one control plane on SQLite, with a demo checkout instance registered with it
//!   (the registry in memory, the audit commit in the local file);
//! - replicas A, B and C: one demo checkout instance registered with A only, so B and C know
//!   it only from the database; an `OpenSession` through any of them reads the service's live
//!   points from the registry's table, decides, and commits its audit events and session row
//!   through the log's coordination row.
//!
//! The four targets are called in turn, round after round, so that all of them see the same
//! machine. Budget (issue #14): p99 ≤ 20 ms through any replica.
//!
//! `cargo bench -p loupe-tests --bench open_session` (latency distributions need every
//! sample, which criterion does not report, so this bench prints its own percentiles, as the
//! other end-to-end benches do). `LOUPE_BENCH_TRIALS` sets the calls per target (default 500;
//! 20 under `cargo test --benches`).

use std::time::{Duration, Instant};

use loupe_tests::latency::report;
use loupe_tests::replicas::{Demo, Replicas};
use loupe_tests::{Client, Running, pb};

const EXE: &str = env!("CARGO_BIN_EXE_loupe-e2e");

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run quickly then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let trials = std::env::var("LOUPE_BENCH_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(if quick { 20 } else { 500 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(trials));
}

fn open_request() -> pb::OpenSessionRequest {
    loupe_tests::open_request(&["checkout.apply_discount"], 600, "open-session bench")
}

async fn run(trials: usize) {
    let Some(replicas) =
        Replicas::start_with(EXE, "open_session", 3, 50, Demo::OnlyWith(0), |_| {}).await
    else {
        return;
    };
    let single = Running::start(EXE, |_| {}).await;
    let mut targets: Vec<(&str, Client)> =
        vec![("SQLite, one control plane", single.client("alice").await)];
    for (index, name) in ["replica A (agent's)", "replica B", "replica C"]
        .into_iter()
        .enumerate()
    {
        targets.push((name, replicas.client(index, "alice").await));
    }

    // Warm up connections, prepared statements and caches.
    for (_, client) in &mut targets {
        for _ in 0..20 {
            client.open_session(open_request()).await.expect("opens");
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(trials); targets.len()];
    for _ in 0..trials {
        for ((_, client), taken) in targets.iter_mut().zip(&mut samples) {
            let start = Instant::now();
            client.open_session(open_request()).await.expect("opens");
            taken.push(start.elapsed());
        }
    }

    println!("OpenSession, same run, targets called in turn:");
    let mut figures = Vec::new();
    for ((name, _), taken) in targets.iter().zip(samples) {
        figures.push(report(name, taken));
    }
    let (anchor_p50, anchor_p99) = figures[0];
    let ratio = |d: Duration, anchor: Duration| d.as_secs_f64() / anchor.as_secs_f64().max(1e-9);
    for ((name, _), (p50, p99)) in targets.iter().zip(&figures).skip(1) {
        println!(
            "{name:<30} p50 {:.2}x SQLite, p99 {:.2}x SQLite; budget p99 <= 20 ms: {}",
            ratio(*p50, anchor_p50),
            ratio(*p99, anchor_p99),
            if *p99 <= Duration::from_millis(20) {
                "met"
            } else {
                "NOT met"
            }
        );
    }
}

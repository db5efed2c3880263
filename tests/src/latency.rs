//! The latency benches' arithmetic and report (`control_plane`, `open_session`,
//! `revoke_fanout`, `failover`): percentiles over every sample, which criterion does not
//! report, printed one line per case.

use std::time::Duration;

/// Runs a bench's `main` future on a two-worker runtime, as the end-to-end tests run.
pub fn block_on<F: std::future::Future>(bench: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench)
}

/// Trials per case: `LOUPE_BENCH_TRIALS`, else `full` under `cargo bench` (which passes
/// `--bench`) and `quick` under `cargo test --benches`.
pub fn trials(full: usize, quick: usize) -> usize {
    let benching = std::env::args().any(|a| a == "--bench");
    std::env::var("LOUPE_BENCH_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(if benching { full } else { quick })
}

/// The `p`-th percentile (0.0–1.0) of `sorted`, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Prints one case's samples (p50, p90, p99, max) and returns its p50 and p99
/// (`Duration::MAX` for a case with no samples, which fails any budget).
pub fn report(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    if samples.is_empty() {
        println!("{name:<40} no samples");
        return (Duration::MAX, Duration::MAX);
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (p50, p99) = (percentile(&samples, 0.50), percentile(&samples, 0.99));
    println!(
        "{name:<40} n={:<4} p50={:>8.2} ms  p90={:>8.2} ms  p99={:>8.2} ms  max={:>8.2} ms",
        samples.len(),
        ms(p50),
        ms(percentile(&samples, 0.90)),
        ms(p99),
        ms(samples[samples.len() - 1]),
    );
    (p50, p99)
}

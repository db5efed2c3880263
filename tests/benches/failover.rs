//! A capture's failover across replicas, over real processes on one throwaway PostgreSQL
//! cluster: three control-plane replicas, a demo checkout instance registered with each, and
//! the `loupe` CLI (a real process, `--output jsonl`) configured with all three addresses,
//! capturing through the first. Each trial kills that replica with SIGKILL and measures, from
//! the kill, what the engineer's terminal receives:
//!
//! - **resumed**: the CLI's `{"failover": …}` record, printed once another replica has armed
//!   the capture again (the budget's measure);
//! - **first snapshot**: the first snapshot received through the new replica (with the demo's
//!   20 requests a second, up to ~50 ms after arming).
//!
//! Anchor, in the same run: a fresh `loupe capture` started against a healthy replica, from
//! starting the process to its first snapshot — what starting over by hand would cost at best.
//! The killed replica is restarted on its address after each trial (and its instance waits to
//! register again), and the next trial kills the next replica.
//!
//! Budget (issue #14): resumed within 3 s. `cargo bench -p loupe-tests --bench failover`
//! (percentiles need every sample, which criterion does not report, so this bench prints its
//! own). `LOUPE_BENCH_TRIALS` sets the trials (default 12; 2 under `cargo test --benches`).

use std::time::{Duration, Instant};

use loupe_tests::PATIENCE;
use loupe_tests::latency::{self, report};
use loupe_tests::replicas::{Replicas, open_session};

const EXE: &str = env!("CARGO_BIN_EXE_loupe-e2e");
const REPLICAS: usize = 3;

fn main() {
    latency::block_on(run(latency::trials(12, 2)));
}

/// One trial's measurements.
struct Trial {
    /// CLI started → first snapshot, through a healthy replica.
    anchor: Duration,
    /// Kill → the failover record.
    resumed: Duration,
    /// Kill → the first snapshot through the new replica.
    first_snapshot: Duration,
}

async fn run(trials: usize) {
    let Some(mut world) = Replicas::start(EXE, "failover_bench", REPLICAS, 20).await else {
        return;
    };
    let mut samples = Vec::with_capacity(trials);
    for trial in 0..trials {
        let victim = trial % REPLICAS;
        samples.push(kill_and_resume(&mut world, victim).await);
        world.restart(victim).await;
    }
    println!(
        "SIGKILL of the replica holding a CLI capture → capture resumed, 3 replicas on PostgreSQL:"
    );
    let (anchor, _) = report(
        "fresh capture → first snapshot (anchor)",
        samples.iter().map(|t| t.anchor).collect(),
    );
    let (p50, p99) = report(
        "kill → resumed (armed again)",
        samples.iter().map(|t| t.resumed).collect(),
    );
    report(
        "kill → first snapshot after",
        samples.iter().map(|t| t.first_snapshot).collect(),
    );
    println!(
        "resumed/anchor p50 ratio {:.2}; budget ≤ 3000 ms: {}",
        p50.as_secs_f64() / anchor.as_secs_f64().max(f64::MIN_POSITIVE),
        if p99 <= Duration::from_secs(3) {
            "met (p99)"
        } else {
            "NOT met (p99)"
        }
    );
}

/// A session, a CLI capture through `victim` (its address first), the victim killed; the
/// times the CLI's output shows.
async fn kill_and_resume(world: &mut Replicas, victim: usize) -> Trial {
    let order: Vec<usize> = (0..REPLICAS).map(|i| (victim + i) % REPLICAS).collect();
    let mut alice = world.client(victim, "alice").await;
    let session = open_session(&mut alice).await;
    let config = world.cli_config(&order);
    let started = Instant::now();
    let mut cli = world.capture(&config, &session);
    let victims_instance = format!("checkout-{victim}");
    let first = cli.until("a first snapshot", PATIENCE, |l| {
        l.snapshot()
            .is_some_and(|s| s["instance"] == victims_instance.as_str())
    });
    let anchor = first.at - started;
    // Before the kill: the CLI may notice the loss before `kill` has reaped the process.
    let killed = Instant::now();
    world.kill(victim);
    let record = cli.until("the failover record", PATIENCE, |l| l.failover().is_some());
    let after = cli.until("a snapshot through another replica", PATIENCE, |l| {
        l.snapshot()
            .is_some_and(|s| s["instance"] != victims_instance.as_str())
    });
    cli.interrupt();
    cli.wait(PATIENCE);
    Trial {
        anchor,
        resumed: record.at.saturating_duration_since(killed),
        first_snapshot: after.at.saturating_duration_since(killed),
    }
}

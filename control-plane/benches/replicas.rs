//! Durable audit appends with several control-plane replicas on one PostgreSQL database,
//! against the embedded SQLite log, in the same run: one log on SQLite, one replica on
//! PostgreSQL, three replicas on PostgreSQL (each an `AuditLog` with its own connections, as
//! separate processes would have), 48 appending threads in all. The PostgreSQL cluster is a
//! throwaway one (as in the tests: `tests/pg`), with `fsync` and `synchronous_commit` on.
//!
//! Run: `cargo bench -p loupe-control-plane --bench replicas`.

#[path = "../tests/pg/mod.rs"]
mod pg;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use loupe_audit::checkpoint::NoteSigner;
use loupe_audit::event::{Action, Actor, Decision, NewEvent, Outcome, Resource, ResourceKind};
use loupe_control_plane::audit::{AuditLog, AuditLogConfig, Database, PostgresStore};

/// Appending threads in all, shared out between the replicas.
const THREADS: u64 = 48;

fn signer() -> NoteSigner {
    NoteSigner::from_seed("loupe.bench/replicas", [5; 32]).expect("key")
}

/// A typical event (≈ 600 bytes encoded), as in the `audit` benchmark.
fn event(i: u64) -> NewEvent {
    let session = format!("s-{:08}", i / 50);
    NewEvent::new(
        Actor {
            id: format!("spiffe://loupe.dev/user/engineer-{}", i % 50),
            cert_sha256: "5f0c2e2d7a1b9e8c4d3f6a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d".into(),
        },
        Action::SessionOpened,
        Resource {
            kind: ResourceKind::Session,
            id: session.clone(),
        },
        Decision {
            outcome: Outcome::Allow,
            policies: vec!["sre-may-open-30m".into()],
            reason: "incident INC-4711: discounts applied twice".into(),
        },
        format!("r-{i:016x}"),
    )
    .session(session)
    .service("checkout")
    .point("checkout.apply_discount")
}

fn postgres_replica(url: &str) -> AuditLog {
    let store = PostgresStore::open(Database::parse(url).expect("url")).expect("store");
    AuditLog::open_with_store(store, signer(), AuditLogConfig::default()).expect("open")
}

/// Time per append of `THREADS` threads appending through `logs` (threads spread evenly).
fn appending(logs: &[Arc<AuditLog>], iters: u64) -> Duration {
    let per_thread = iters.div_ceil(THREADS).max(1);
    let start = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = logs[(t as usize) % logs.len()].clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    log.append_blocking(event(t * per_thread + i))
                        .expect("append");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("appender");
    }
    start
        .elapsed()
        .mul_f64(iters as f64 / (per_thread * THREADS) as f64)
}

fn replicas(c: &mut Criterion) {
    let mut group = c.benchmark_group("append/replicas");
    group.throughput(Throughput::Elements(1));
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = [Arc::new(
        AuditLog::open(dir.path(), signer(), AuditLogConfig::default()).expect("open"),
    )];
    group.bench_function(BenchmarkId::new("sqlite", 1), |b| {
        b.iter_custom(|iters| appending(&sqlite, iters))
    });
    let Some(url) = pg::database("append/replicas") else {
        group.finish();
        return;
    };
    for count in [1usize, 3] {
        let logs: Vec<Arc<AuditLog>> = (0..count)
            .map(|_| Arc::new(postgres_replica(&url)))
            .collect();
        group.bench_function(BenchmarkId::new("postgres", count), |b| {
            b.iter_custom(|iters| appending(&logs, iters))
        });
        for log in &logs {
            log.close().expect("close");
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(10);
    targets = replicas
}
criterion_main!(benches);

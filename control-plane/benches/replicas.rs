//! Durable audit appends with several control-plane replicas on one PostgreSQL database,
//! against the embedded SQLite log, in the same run: one log on SQLite, one replica on
//! PostgreSQL, three replicas on PostgreSQL (each an `AuditLog` with its own connections, as
//! separate processes would have). The PostgreSQL cluster is a throwaway one (as in the tests:
//! `tests/pg`), with `fsync` and `synchronous_commit` on.
//!
//! **The load** is appends in flight at once, as the server's request handlers make them: async
//! tasks on a two-thread runtime, each appending and waiting for its receipt, then appending
//! again, spread evenly over the replicas. Three settings, each for all three stores:
//! - 48 in flight (the setting of the first measurements);
//! - 768 and 1536 in flight, the production-like ones: by Little's law a log sustaining
//!   10,000 durable appends/s at a commit latency of 50–150 ms (what sequencing through one
//!   locked row costs three replicas on a loaded two-core machine) has 500–1500 appends in
//!   flight, so a load with fewer measures the appenders' patience, not the log. Each
//!   replica's writer takes all its queued appends into one commit, so with three replicas a
//!   commit carries about a third of what is in flight.
//!
//! Each PostgreSQL setting runs on a database of its own, after a checkpoint of the cluster
//! (see `replicas`).
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

/// Appends in flight at once, shared out between the replicas.
const IN_FLIGHT: [u64; 3] = [48, 768, 1536];

/// Appends each task makes in a sample, at least. Criterion asks for few iterations of a slow
/// routine — fewer than the tasks in flight at 768 or 1536 — and a task that appends once is
/// one burst and its drain, not the load described above: the sample measured how long the
/// first commits of an idle log take, not how many appends a second it sustains. So every task
/// appends at least this often, and the time is scaled to the iterations asked for.
const MIN_APPENDS_PER_TASK: u64 = 8;

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

/// Time per append of `in_flight` tasks appending through `logs` (spread evenly).
fn appending(
    runtime: &tokio::runtime::Runtime,
    logs: &[Arc<AuditLog>],
    in_flight: u64,
    iters: u64,
) -> Duration {
    let per_task = iters.div_ceil(in_flight).max(MIN_APPENDS_PER_TASK);
    let start = Instant::now();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..in_flight)
            .map(|t| {
                let log = logs[(t as usize) % logs.len()].clone();
                tokio::spawn(async move {
                    for i in 0..per_task {
                        log.append(event(t * per_task + i)).await.expect("append");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("appender");
        }
    });
    start
        .elapsed()
        .mul_f64(iters as f64 / (per_task * in_flight) as f64)
}

fn bench(c: &mut Criterion, runtime: &tokio::runtime::Runtime, name: &str, logs: &[Arc<AuditLog>]) {
    let mut group = c.benchmark_group("append/replicas");
    group.throughput(Throughput::Elements(1));
    for in_flight in IN_FLIGHT {
        group.bench_function(BenchmarkId::new(name, in_flight), |b| {
            b.iter_custom(|iters| appending(runtime, logs, in_flight, iters))
        });
    }
    group.finish();
}

fn replicas(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = [Arc::new(
        AuditLog::open(dir.path(), signer(), AuditLogConfig::default()).expect("open"),
    )];
    bench(c, &runtime, "sqlite", &sqlite);
    for count in [1usize, 3] {
        // Each setting on a database of its own, after a checkpoint of the cluster, so that
        // it does not pay for the previous one's writes: measured on the database one
        // replica had just filled (hundreds of thousands of events), three replicas ran at
        // a third of the rate they reach on it after a CHECKPOINT and VACUUM ANALYZE — the
        // write-back and vacuuming of those rows, not their number, was what cost.
        let Some(url) = pg::database(&format!("append/replicas/postgres-{count}")) else {
            return;
        };
        postgres::Client::connect(&url, postgres::NoTls)
            .and_then(|mut admin| admin.batch_execute("CHECKPOINT"))
            .expect("checkpoint the cluster");
        let logs: Vec<Arc<AuditLog>> = (0..count)
            .map(|_| Arc::new(postgres_replica(&url)))
            .collect();
        bench(c, &runtime, &format!("postgres-{count}"), &logs);
        for log in &logs {
            log.close().expect("close");
        }
    }
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

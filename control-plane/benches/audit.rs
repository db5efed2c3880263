//! Audit log benchmarks: durable appends with 1, 8 and 64 writer threads (and 512 async
//! tasks), offline verification of a 1,000,000-event export, the log's own re-verification
//! of 1,000,000 stored events on start, and proof latency at 1,000,000 events.
//!
//! Run: `cargo bench -p loupe-control-plane --bench audit` (add a filter such as `append`,
//! `verify` or `proof` to run one group).

use std::hint::black_box;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use loupe_audit::checkpoint::{Checkpoint, NoteSigner};
use loupe_audit::event::{
    Action, Actor, Decision, Detail, NewEvent, Outcome, Resource, ResourceKind,
};
use loupe_audit::export::ExportWriter;
use loupe_audit::merkle::{CompactTree, leaf_hash};
use loupe_audit::proof::verify_inclusion;
use loupe_audit::verify::verify_export;
use loupe_control_plane::audit::{
    AuditLog, AuditLogConfig, AuditStore, Batch, CheckpointWrite, Frontier, SqliteStore,
    StoredEvent,
};

const ORIGIN: &str = "loupe.bench/audit";
const MILLION: u64 = 1_000_000;

fn signer() -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, [3; 32]).expect("key")
}

/// A typical event (≈ 600 bytes encoded): an engineer's session with a reason and a ticket.
/// Sessions are short-lived and each produces a run of events (open, capture, snapshots,
/// close), so consecutive events share a session, as they do in production.
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
    .detail("ttl_s", Detail::UInt(900))
    .detail("ticket", Detail::Text("INC-4711".into()))
}

fn appends(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log =
        Arc::new(AuditLog::open(dir.path(), signer(), AuditLogConfig::default()).expect("open"));
    let mut group = c.benchmark_group("append/durable");
    group.throughput(Throughput::Elements(1));
    for writers in [1u64, 8, 64] {
        group.bench_with_input(
            BenchmarkId::new("threads", writers),
            &writers,
            |b, &writers| {
                b.iter_custom(|iters| {
                    let per_writer = iters.div_ceil(writers);
                    let start = Instant::now();
                    let threads: Vec<_> = (0..writers)
                        .map(|w| {
                            let log = log.clone();
                            std::thread::spawn(move || {
                                for i in 0..per_writer {
                                    log.append_blocking(event(w * per_writer + i))
                                        .expect("append");
                                }
                            })
                        })
                        .collect();
                    for t in threads {
                        t.join().expect("writer");
                    }
                    // Time per append, counting what was really appended.
                    start
                        .elapsed()
                        .mul_f64(iters as f64 / (per_writer * writers) as f64)
                })
            },
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let tasks = 512u64;
    group.bench_with_input(
        BenchmarkId::new("async_tasks", tasks),
        &tasks,
        |b, &tasks| {
            b.iter_custom(|iters| {
                let per_task = iters.div_ceil(tasks);
                let start = Instant::now();
                runtime.block_on(async {
                    let handles: Vec<_> = (0..tasks)
                        .map(|t| {
                            let log = log.clone();
                            tokio::spawn(async move {
                                for i in 0..per_task {
                                    log.append(event(t * per_task + i)).await.expect("append");
                                }
                            })
                        })
                        .collect();
                    for h in handles {
                        h.await.expect("task");
                    }
                });
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_task * tasks) as f64)
            })
        },
    );
    group.finish();
    log.close().expect("close");
}

/// A 1,000,000-event export, built with the same encoding and chain the log uses.
fn million_event_export() -> Vec<u8> {
    let signer = signer();
    let mut tree = CompactTree::new();
    let mut prev = [0u8; 32];
    let mut export = ExportWriter::new(Vec::with_capacity(600 * MILLION as usize));
    for seq in 0..MILLION {
        let line = event(seq)
            .seal(seq, 1_760_000_000_000 + seq, &prev)
            .canonical_bytes()
            .expect("encode");
        prev = leaf_hash(&line);
        tree.push(prev);
        export.event(&line).expect("write");
    }
    let checkpoint = Checkpoint {
        origin: ORIGIN.into(),
        size: MILLION,
        root: tree.root(),
    };
    export
        .finish(&checkpoint.sign(&signer).expect("sign"))
        .expect("finish")
}

fn verification(c: &mut Criterion) {
    // Built on first use, so that running another group skips it.
    let export = OnceLock::new();
    let verifier = signer().verifier();
    let mut group = c.benchmark_group("verify");
    group.sample_size(10);
    group.throughput(Throughput::Elements(MILLION));
    group.bench_function("export_1m_events", |b| {
        let export = export.get_or_init(|| {
            let export = million_event_export();
            eprintln!(
                "1,000,000-event export: {} MB ({} bytes per event)",
                export.len() / 1_000_000,
                export.len() as u64 / MILLION
            );
            export
        });
        b.iter(|| {
            let verified =
                verify_export(black_box(export.as_slice()), &verifier, None).expect("verify");
            assert_eq!(verified.events, MILLION);
        })
    });
    group.finish();
}

/// A SQLite log of 1,000,000 events, written through the store in large batches, each with
/// the signed checkpoint covering it, as the log writes them (the append path is measured
/// separately).
fn million_event_log(dir: &std::path::Path) {
    let signer = signer();
    let mut store = SqliteStore::open(dir).expect("store");
    let mut tree = CompactTree::new();
    let mut prev = [0u8; 32];
    const BATCH: usize = 20_000;
    let mut batch = Vec::with_capacity(BATCH);
    let mut commit = |batch: &mut Vec<StoredEvent>, tree: &CompactTree| {
        let checkpoint = Checkpoint {
            origin: ORIGIN.into(),
            size: tree.size(),
            root: tree.root(),
        };
        let note = checkpoint.sign(&signer).expect("sign");
        let mut sealed = Some(Batch {
            events: std::mem::take(batch),
            state: Vec::new(),
            checkpoint: CheckpointWrite {
                size: tree.size(),
                note,
                archive: true,
            },
            // One writer: the SQLite store keeps no frontier.
            frontier: Frontier::default(),
        });
        store.commit(&mut |_| Ok(sealed.take())).expect("commit");
    };
    for seq in 0..MILLION {
        let sealed = event(seq).seal(seq, 1_760_000_000_000 + seq, &prev);
        let line = sealed.canonical_bytes().expect("encode");
        prev = leaf_hash(&line);
        tree.push(prev);
        batch.push(StoredEvent::new(&sealed, line));
        if batch.len() == BATCH {
            commit(&mut batch, &tree);
        }
    }
    if !batch.is_empty() {
        commit(&mut batch, &tree);
    }
}

/// Opens (and so re-verifies) a 1,000,000-event log, reporting how long that took.
fn open_million_event_log() -> (tempfile::TempDir, AuditLog) {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    million_event_log(dir.path());
    eprintln!(
        "wrote a 1,000,000-event SQLite log in {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let log = AuditLog::open(dir.path(), signer(), AuditLogConfig::default()).expect("open");
    let took = started.elapsed();
    eprintln!(
        "open + full re-verification of 1,000,000 stored events: {took:?} ({:.0} events/s)",
        MILLION as f64 / took.as_secs_f64()
    );
    assert_eq!(log.size(), MILLION);
    (dir, log)
}

fn proofs(c: &mut Criterion) {
    let fixture = OnceLock::new();
    let mut group = c.benchmark_group("proof");
    let mut seq = 0u64;
    group.bench_function("inclusion_at_1m", |b| {
        let (_, log) = fixture.get_or_init(open_million_event_log);
        b.iter(|| {
            seq = (seq + 7_919) % MILLION;
            black_box(log.inclusion_proof(seq, MILLION).expect("proof"))
        })
    });
    group.bench_function("inclusion_at_1m_and_verify", |b| {
        let (_, log) = fixture.get_or_init(open_million_event_log);
        let root = log.latest_checkpoint().expect("checkpoint").checkpoint.root;
        b.iter(|| {
            seq = (seq + 7_919) % MILLION;
            let proof = log.inclusion_proof(seq, MILLION).expect("proof");
            verify_inclusion(&proof.leaf_hash, seq, MILLION, &proof.path, &root).expect("verifies");
        })
    });
    let mut first = 1u64;
    group.bench_function("consistency_to_1m", |b| {
        let (_, log) = fixture.get_or_init(open_million_event_log);
        b.iter(|| {
            first = (first + 104_729) % MILLION + 1;
            black_box(log.consistency_proof(first, MILLION).expect("proof"))
        })
    });
    group.finish();
    if let Some((_, log)) = fixture.get() {
        log.close().expect("close");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    targets = appends, verification, proofs
}
criterion_main!(benches);

//! The agent's endpoint end to end: real mTLS on loopback, a tonic client as the control plane,
//! snapshots of the reference `Order`.
//!
//! - `throughput/*`: snapshots per second arriving at the client over one stream and over 16
//!   concurrent streams (4 sessions × 4 captures, the agent's default per-session limit), with
//!   the engine's rate and CPU ceilings raised so that the endpoint itself is the bottleneck.
//!   One host thread hits the point in a loop; hits the queue cannot take are dropped and
//!   counted, as in production.
//! - `default_ceilings/*`: the same with the engine's default ceilings (1,000/s per capture,
//!   1 % of one core), counted over a fixed window and printed, because the CPU budget may
//!   disarm a capture mid-run (the output says how each stream ended).
//! - `latency/hit_to_client`: from a point hit to its snapshot arriving at the gRPC client; the
//!   hit carries `Instant`-based nanoseconds in a field, the client subtracts on arrival. Hits
//!   are one at a time, so nothing queues. p50 and p99 over every sample are printed at the end.
//!
//! `cargo bench -p loupe-agent --bench endpoint -- --warm-up-time 1 --measurement-time 3`

#[path = "../fixtures/order.rs"]
mod order;
#[path = "../tests/support/pki.rs"]
mod pki;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use loupe_agent::{Agent, AgentHandle, CaptureSpec, EngineConfig, RateLimit, snapshot};
use loupe_proto::v1::agent_client::AgentClient;
use loupe_proto::v1::value::Kind;
use loupe_proto::v1::{CaptureRequest, Snapshot};
use loupe_trust::token::{
    Confirmation, SessionClaims, TokenLimits, TokenRedaction, audience_for, unix_now,
};
use pki::{TRUST_DOMAIN, TestPki, control_plane_id};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tonic::Streaming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const SERVICE: &str = "bench";
const THROUGHPUT_POINT: &str = "bench.endpoint.order";
const LATENCY_POINT: &str = "bench.endpoint.latency";
/// No wait in the benchmark should come anywhere near this; past it something is broken.
const STALL: Duration = Duration::from_secs(30);

fn place_order(order: &order::Order) {
    snapshot!("bench.endpoint.order", order);
}

/// The clock hits and arrivals share: nanoseconds since the first use.
fn clock() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn place_timed_order(order: &order::Order) {
    let hit_at_ns = clock().elapsed().as_nanos() as u64;
    snapshot!("bench.endpoint.latency", order, hit_at_ns);
}

/// Engine ceilings that leave the endpoint as the bottleneck.
fn raised() -> EngineConfig {
    EngineConfig {
        cpu_budget: 1.0,
        rate_ceiling: RateLimit {
            per_second: 1e9,
            burst: 100,
        },
        max_snapshots_ceiling: u64::MAX,
        ..EngineConfig::default()
    }
}

struct Bench {
    pki: TestPki,
    agent: AgentHandle,
    runtime: Runtime,
    client: AgentClient<Channel>,
}

impl Bench {
    fn start(engine: EngineConfig) -> Bench {
        let pki = TestPki::new(SERVICE);
        let agent = Agent::builder()
            .service(SERVICE)
            .instance("bench-1")
            .tls(&pki.agent.cert, &pki.agent.key, &pki.ca_path)
            .control_plane(control_plane_id())
            .token_keys(pki.keys.clone())
            .engine_config(engine)
            .start()
            .expect("agent starts");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("client runtime");
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca.pem))
            .identity(Identity::from_pem(
                &pki.control_plane.cert_pem,
                &pki.control_plane.key_pem,
            ))
            .domain_name("localhost");
        let endpoint =
            Channel::from_shared(format!("https://127.0.0.1:{}", agent.local_addr().port()))
                .expect("uri")
                .tls_config(tls)
                .expect("tls");
        let channel = runtime
            .block_on(endpoint.connect())
            .expect("control plane connects");
        Bench {
            pki,
            agent,
            runtime,
            client: AgentClient::new(channel),
        }
    }

    fn open(&self, session: &str, point: &str, rate: f64) -> Streaming<Snapshot> {
        let now = unix_now();
        let claims = SessionClaims {
            iss: control_plane_id(),
            aud: audience_for(SERVICE),
            sub: format!("spiffe://{TRUST_DOMAIN}/user/bench"),
            sid: session.to_owned(),
            jti: format!("{session}-{point}-{}", clock().elapsed().as_nanos()),
            iat: now,
            nbf: now,
            exp: now + 25 * 60,
            points: vec![point.to_owned()],
            limits: TokenLimits {
                max_snapshots: u64::MAX / 2,
                max_bytes: 64 * 1024,
                rate,
            },
            redact: TokenRedaction::default(),
            cnf: Confirmation::for_certificate(&self.pki.control_plane.der),
        };
        let token = self.pki.signer.mint(&claims).expect("mint");
        let mut client = self.client.clone();
        self.runtime
            .block_on(client.capture(CaptureRequest {
                token,
                point: point.to_owned(),
                ..CaptureRequest::default()
            }))
            .expect("capture opens")
            .into_inner()
    }
}

/// A host thread hitting the throughput point until stopped: as fast as it can, or with a
/// pause after each hit, like a busy service.
struct Hitter {
    stop: Arc<AtomicBool>,
    hits: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Hitter {
    fn start(pause: Option<Duration>) -> Hitter {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let hits = Arc::new(AtomicU64::new(0));
        let thread_hits = Arc::clone(&hits);
        let thread = std::thread::spawn(move || {
            let order = order::Order::reference(7);
            while !thread_stop.load(Ordering::Relaxed) {
                place_order(black_box(&order));
                thread_hits.fetch_add(1, Ordering::Relaxed);
                match pause {
                    Some(pause) => std::thread::sleep(pause),
                    None => std::thread::yield_now(),
                }
            }
        });
        Hitter {
            stop,
            hits,
            thread: Some(thread),
        }
    }
}

impl Drop for Hitter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads every stream on the client runtime; each arrival adds a permit.
fn read_all(bench: &Bench, streams: Vec<Streaming<Snapshot>>) -> Arc<Semaphore> {
    let arrived = Arc::new(Semaphore::new(0));
    for mut stream in streams {
        let arrived = Arc::clone(&arrived);
        bench.runtime.spawn(async move {
            // Streams end when their agent is dropped after the case; an earlier end shows as
            // a stall in `time_arrivals`, with the reason printed here.
            loop {
                match stream.message().await {
                    Ok(Some(snapshot)) => {
                        black_box(snapshot);
                        arrived.add_permits(1);
                    }
                    Ok(None) => break,
                    Err(status) if status.code() == tonic::Code::Unavailable => break,
                    Err(status) => {
                        eprintln!("stream ended: {:?}: {}", status.code(), status.message());
                        break;
                    }
                }
            }
        });
    }
    arrived
}

/// Time for `count` more snapshots to arrive.
fn time_arrivals(bench: &Bench, arrived: &Semaphore, count: u64) -> Duration {
    bench.runtime.block_on(async {
        let start = Instant::now();
        let mut left = count;
        while left > 0 {
            let chunk = u32::try_from(left.min(1 << 20)).unwrap_or(u32::MAX);
            tokio::time::timeout(STALL, arrived.acquire_many(chunk))
                .await
                .expect("snapshots keep arriving")
                .expect("semaphore open")
                .forget();
            left -= u64::from(chunk);
        }
        start.elapsed()
    })
}

fn throughput_case(c: &mut Criterion, name: &str, engine: EngineConfig, streams: usize, rate: f64) {
    let bench = Bench::start(engine);
    let opened: Vec<Streaming<Snapshot>> = (0..streams)
        .map(|i| bench.open(&format!("{name}-session-{}", i / 4), THROUGHPUT_POINT, rate))
        .collect();
    let arrived = read_all(&bench, opened);
    let hitter = Hitter::start(None);
    let mut group = c.benchmark_group("throughput");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| time_arrivals(&bench, &arrived, iters))
    });
    group.finish();
    drop(hitter);
    let counters = bench.agent.counters();
    eprintln!(
        "throughput/{name}: agent sent {} snapshots, dropped or skipped {} hits (queue full, rate, CPU budget)",
        counters.snapshots_sent, counters.snapshots_dropped
    );
}

fn throughput(c: &mut Criterion) {
    throughput_case(c, "one_stream", raised(), 1, 1e9);
    throughput_case(c, "sixteen_streams", raised(), 16, 1e9);
}

/// The engine's default ceilings, as production runs: 1,000 snapshots/s per capture at most and
/// 1 % of one core for capture work, which disarms a capture that keeps exceeding it. Those
/// ceilings, not the endpoint, decide the rate; a criterion loop would stall on a disarmed
/// stream, so this counts arrivals over a fixed window and reports how each stream ended.
fn default_ceilings(_: &mut Criterion) {
    const WINDOW: Duration = Duration::from_secs(4);
    for (name, streams, rate) in [
        ("one_stream_at_100_per_s", 1usize, 100.0),
        ("one_stream_at_1000_per_s", 1, 1_000.0),
        ("sixteen_streams_at_100_per_s", 16, 100.0),
    ] {
        let bench = Bench::start(EngineConfig::default());
        if !budget_has_room() {
            println!("default_ceilings/{name}: not run, the CPU budget is still exhausted");
            continue;
        }
        let streams: Vec<Streaming<Snapshot>> = (0..streams)
            .map(|i| bench.open(&format!("default-{name}-{}", i / 4), THROUGHPUT_POINT, rate))
            .collect();
        // About 10,000 hits a second: every armed hit, skipped by the rate limit or not, is
        // charged to the 1 % budget, so a tight loop would exhaust it on its own.
        let hitter = Hitter::start(Some(Duration::from_micros(100)));
        let hits_before = hitter.hits.load(Ordering::Relaxed);
        let outcomes = bench.runtime.block_on(async {
            let readers = streams.into_iter().map(|mut stream| {
                tokio::spawn(async move {
                    let (mut count, mut cost_ns) = (0u64, 0u64);
                    let end = tokio::time::sleep(WINDOW);
                    tokio::pin!(end);
                    let ended = loop {
                        tokio::select! {
                            _ = &mut end => break "still open".to_owned(),
                            message = stream.message() => match message {
                                Ok(Some(snapshot)) => {
                                    count += 1;
                                    cost_ns += snapshot.capture_cost_ns;
                                }
                                Ok(None) => break "completed".to_owned(),
                                Err(status) => break format!("{:?}: {}", status.code(), status.message()),
                            },
                        }
                    };
                    (count, cost_ns, ended)
                })
            });
            let mut outcomes = Vec::new();
            for reader in readers.collect::<Vec<_>>() {
                outcomes.push(reader.await.expect("reader"));
            }
            outcomes
        });
        let hit_rate =
            (hitter.hits.load(Ordering::Relaxed) - hits_before) as f64 / WINDOW.as_secs_f64();
        drop(hitter);
        let total: u64 = outcomes.iter().map(|o| o.0).sum();
        let cost: u64 = outcomes.iter().map(|o| o.1).sum();
        let mut ends: Vec<&str> = outcomes.iter().map(|o| o.2.as_str()).collect();
        ends.dedup();
        println!(
            "default_ceilings/{name}: {:.0} snapshots/s over {WINDOW:?} at {hit_rate:.0} hits/s, mean capture cost {} ns, streams: {ends:?}",
            total as f64 / WINDOW.as_secs_f64(),
            cost.checked_div(total).unwrap_or(0)
        );
    }
}

fn probe(attempt: u32) {
    snapshot!("bench.endpoint.probe", attempt);
}

/// The CPU budget is process-wide and remembers work charged at its old fraction: after a case
/// that exhausted it, the next would start in debt. Waits (up to a minute) until a hit is
/// captured again.
fn budget_has_room() -> bool {
    let spec = CaptureSpec::new("budget-probe", "bench.endpoint.probe")
        .max_snapshots(1)
        .rate(RateLimit {
            per_second: 1_000.0,
            burst: 10,
        });
    let mut stream = loupe_agent::arm(spec).expect("probe armed");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = 0;
    while Instant::now() < deadline {
        attempt += 1;
        probe(attempt);
        if stream.try_next().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn field_u64(snapshot: &Snapshot, name: &str) -> u64 {
    let field = snapshot
        .fields
        .iter()
        .find(|f| f.name == name)
        .expect("timed field");
    match field.value.as_ref().and_then(|v| v.kind.as_ref()) {
        Some(Kind::Uint(n)) => *n,
        other => panic!("{name} is not a uint: {other:?}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn latency(c: &mut Criterion) {
    let bench = Bench::start(raised());
    let mut stream = bench.open("latency-session", LATENCY_POINT, 1e9);
    let order = order::Order::reference(11);
    let samples = Mutex::new(Vec::new());
    let mut group = c.benchmark_group("latency");
    group.bench_function("hit_to_client", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                place_timed_order(&order);
                let snapshot = bench
                    .runtime
                    .block_on(async { tokio::time::timeout(STALL, stream.message()).await })
                    .expect("snapshot arrives")
                    .expect("stream healthy")
                    .expect("stream open");
                let arrived_ns = clock().elapsed().as_nanos() as u64;
                let took = Duration::from_nanos(arrived_ns - field_u64(&snapshot, "hit_at_ns"));
                samples.lock().expect("samples").push(took);
                total += took;
            }
            total
        })
    });
    group.finish();
    let mut samples = samples.into_inner().expect("samples");
    if samples.is_empty() {
        return; // filtered out on the command line
    }
    samples.sort();
    eprintln!(
        "latency/hit_to_client over {} hits (warm-up included): p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default()
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = throughput, latency, default_ceilings
}
criterion_main!(benches);

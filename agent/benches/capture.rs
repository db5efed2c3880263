//! The in-process agent's budgets, measured against their anchors in the same run.
//!
//! - `disarmed/*`: an empty loop, the loop with a disarmed `snapshot!`, and the loop with a
//!   disabled `tracing::info!` (no subscriber). Budget: disarmed no slower than disabled
//!   tracing. Each iteration is 1,000 passes.
//! - `armed/*`: one capture of the reference `Order` on the calling thread, with no condition,
//!   a condition that fails, and one that passes. Budget: median ≤ 2 µs. Only the hits are
//!   timed; the stream is drained (and encoded) between batches, off the clock.
//! - `cold/*`: the same capture as production sees it, where a point is hit a few times a
//!   second with other work in between. Budget: median ≤ 10 µs. Only the hit is timed. Each
//!   case also prints the percentiles of its single hits (and, where the benchmark reads the
//!   stream itself, of the `capture_cost_ns` its snapshots report), since criterion's median is
//!   a median of per-sample means.
//!   - `spaced_*`: before each hit the thread writes a buffer as large as the machine's largest
//!     cache (from sysfs, 32–512 MiB, so that the agent's code and data are evicted from it)
//!     and sleeps 2 ms; the stream is drained on the same thread between hits.
//!   - `spaced_read_elsewhere`: the same, the stream read by another thread that waits for
//!     snapshots, as the agent's thread does (each snapshot read before the next other work,
//!     as the agent's thread reads it within a tick).
//!   - `spaced_in_request_span`: the same, each hit inside a request's span recorded by
//!     `CorrelationLayer`, as a handler takes it.
//!   - `spaced_in_request_span_after_idle`: the same with a 25 ms pause, longer than the agent
//!     thread's tick, so that its warm pass over the hit path (`capture::warm`) runs between
//!     the other work and the hit, as in a service that waits for its next request. In the
//!     other cases the hit comes 2 ms after the other work, before any such pass.
//!   - `fresh_thread`: the hit is the first capture on a newly spawned thread.
//!   - `anchor_serde_json`: the host's own serialization of the same `Order` to JSON under the
//!     same spaced, evicted conditions, the anchor the cold capture is compared with.
//!   - `paired_with_anchor`: spaced hits read elsewhere, each just after an anchor
//!     serialization under the same conditions, to print the ratio of the two medians without
//!     the drift between cases.
//!   - `paired_with_contract_floor`: hits in a request's span, each just after the least a hit
//!     meeting the snapshot contract must do (`support/contract_floor.rs`: the clocks, the span
//!     stack's walk, the value's bytes copied through its `Serialize`, one hand-off), to print
//!     how far above that floor the agent's hit is.
//!   - `paired_with_structured_floor`: the same with the value copied by `serde_json`, the
//!     leanest copy at hand that keeps names and structure.
//! - `warm/*`: the agent thread's pass over the hit path's code while anything is armed
//!   (`capture::warm`), from the caches and after other work emptied them.
//!
//! `cargo bench -p loupe-agent --bench capture`
//!
//! **Counting the lines a cold hit fetches.** Wall time on this shared machine wanders by 2×
//! between runs; the number of cache lines a cold hit has to bring in from memory does not. With
//! `LOUPE_BENCH_COLD_COUNT=N` the binary skips criterion and runs `N` spaced hits read elsewhere,
//! each in a request's span (`count_cold_hit`), `N` spaced anchor serializations
//! (`count_cold_anchor`) and `N` spaced contract floors in a request's span
//! (`count_cold_floor`), for a cache simulator to count. The simulated first-level instruction
//! cache is made tiny so that every code line reaches the simulated last-level cache, which the
//! other work empties between hits, as the real one is (without it, code would stay in the
//! simulated L1 forever: the simulator does not model the real caches' inclusion):
//!
//! ```text
//! LOUPE_BENCH_COLD_COUNT=100 valgrind --tool=callgrind --cache-sim=yes \
//!     --I1=1024,1,64 --LL=33554432,16,64 --callgrind-out-file=cold.cg \
//!     --toggle-collect='*count_cold_*' target/release/deps/capture-<hash>
//! callgrind_annotate --inclusive=yes cold.cg | grep count_cold_
//! ```
//!
//! Per hit, divided by `N`: `ILmr` code lines, `DLmr` data lines read and `DLmw` data lines
//! written, each fetched from memory.
//!
//! **Counting the disarmed check.** A pass of `disarmed/*` is below one cycle, and which of
//! two such loops runs faster follows where the linker happened to put them (a loop starting
//! at a 64-byte boundary or 48 bytes into one). `LOUPE_BENCH_DISARMED_COUNT=N` runs the three
//! loops `N` times each in functions of their own, for callgrind to count instructions:
//!
//! ```text
//! LOUPE_BENCH_DISARMED_COUNT=100000 valgrind --tool=callgrind --callgrind-out-file=off.cg \
//!     --toggle-collect='*count_*_passes*' target/release/deps/capture-<hash>
//! callgrind_annotate --inclusive=yes off.cg | grep _passes
//! ```

#[path = "support/contract_floor.rs"]
mod contract_floor;
#[path = "../fixtures/order.rs"]
mod order;

use std::hint::black_box;
use std::time::{Duration, Instant};

use contract_floor::{Copier, FloorReader, contract_floor};
use criterion::{Criterion, SamplingMode, criterion_group};
use loupe_agent::{CaptureLimits, CaptureSpec, EngineConfig, RateLimit, snapshot};
use tracing_subscriber::layer::SubscriberExt as _;

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

/// The engine as the benchmarks need it: the budget and rate guards would skip most hits of a
/// tight loop, and the benchmarks measure the capture itself.
fn configure_for_benchmarks() {
    loupe_agent::Engine::global()
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
}

fn unlimited_spec(point: &str, condition: Option<&str>) -> CaptureSpec {
    let spec = CaptureSpec::new("bench", point)
        .max_snapshots(u64::MAX)
        .duration(Duration::from_secs(3_600))
        .rate(RateLimit {
            per_second: 1e12,
            burst: u32::MAX,
        });
    match condition {
        Some(condition) => spec.condition(condition),
        None => spec,
    }
}

fn armed(c: &mut Criterion) {
    configure_for_benchmarks();
    let order = order::Order::reference(1);
    let cases = [
        ("no_condition", None),
        ("condition_false", Some("order.total_cents > 1000000u")),
        ("condition_true", Some("order.total_cents > 100u")),
    ];
    let mut group = c.benchmark_group("armed");
    for (name, condition) in cases {
        let mut stream = loupe_agent::arm(unlimited_spec("bench.armed", condition)).expect("armed");
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

fn place_order_cold(order: &order::Order) {
    snapshot!("bench.cold", order);
}

/// What the host does between two hits of a point: enough memory traffic to evict the agent
/// from the caches, and a pause in which other threads and processes run.
struct OtherWork {
    buffer: Vec<u8>,
    /// Bytes between two bytes written: 64 writes every line; 4096 one line a page, which
    /// evicts the address translations with little of the caches.
    stride: usize,
    pause: Duration,
    round: u8,
}

impl OtherWork {
    /// The least written between hits, where the machine reports no cache sizes.
    const MIN_BUFFER_BYTES: usize = 32 * 1024 * 1024;
    /// The most: a larger last-level cache is shared by more cores than the benchmark's, and
    /// each hit's other work would take longer than its pause.
    const MAX_BUFFER_BYTES: usize = 512 * 1024 * 1024;
    const PAUSE: Duration = Duration::from_millis(2);
    /// Longer than the agent thread's slowest tick (20 ms while nothing waits).
    const IDLE: Duration = Duration::from_millis(25);

    /// Writes as many bytes as the machine's largest cache holds (within the bounds above),
    /// then pauses.
    fn evicting_the_caches() -> OtherWork {
        let largest = largest_cache_bytes();
        OtherWork::writing(largest.clamp(Self::MIN_BUFFER_BYTES, Self::MAX_BUFFER_BYTES))
    }

    /// Writes `bytes` between hits, then pauses; `LOUPE_BENCH_EVICT_BYTES`,
    /// `LOUPE_BENCH_EVICT_STRIDE` and `LOUPE_BENCH_PAUSE_US` change that, to see which part of
    /// the cold cost comes from the caches, which from the address translations and which from
    /// the pause.
    fn writing(bytes: usize) -> OtherWork {
        let setting = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let bytes = setting("LOUPE_BENCH_EVICT_BYTES").map_or(bytes, |b| b as usize);
        let pause = setting("LOUPE_BENCH_PAUSE_US").map_or(Self::PAUSE, Duration::from_micros);
        let stride = setting("LOUPE_BENCH_EVICT_STRIDE").map_or(64, |b| (b as usize).max(1));
        OtherWork {
            buffer: vec![0; bytes],
            stride,
            pause,
            round: 0,
        }
    }

    fn run(&mut self) {
        self.round = self.round.wrapping_add(1);
        for line in self.buffer.chunks_mut(self.stride) {
            line[0] = line[0].wrapping_add(self.round);
        }
        black_box(&self.buffer);
        if !self.pause.is_zero() {
            std::thread::sleep(self.pause);
        }
    }
}

/// The largest cache the first CPU reports (Linux's sysfs), in bytes; 0 when none is reported.
/// A buffer sized once for one machine stops evicting on the next: 32 MiB emptied the last
/// level of the machine these benchmarks were first run on, and left most of the agent in the
/// 480 MiB of a later one, where the cold hit measured half what the demo's snapshots report.
fn largest_cache_bytes() -> usize {
    let size_of = |index: usize| {
        let path = format!("/sys/devices/system/cpu/cpu0/cache/index{index}/size");
        let text = std::fs::read_to_string(path).ok()?;
        let text = text.trim();
        let (digits, unit) = match text.strip_suffix(['K', 'M', 'G']) {
            Some(digits) => (digits, &text[digits.len()..]),
            None => (text, ""),
        };
        let scale = match unit {
            "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            _ => 1,
        };
        digits.parse::<usize>().ok()?.checked_mul(scale)
    };
    (0..8).filter_map(size_of).max().unwrap_or(0)
}

/// The capture's stream read by another thread, as the agent's own reads it. The benchmark
/// waits, off the clock, for each snapshot to be read before the host's other work: in
/// production the agent's thread takes a snapshot within a tick of its hit, long before the
/// next hit of a point hit a few times a second, and reading it later (during the pause just
/// before the next hit) would warm the code and the tape that hit reuses.
struct ReadElsewhere {
    capture_id: String,
    read: std::sync::mpsc::Receiver<()>,
    reader: std::thread::JoinHandle<loupe_agent::CaptureCounters>,
}

impl ReadElsewhere {
    fn arm() -> ReadElsewhere {
        let mut stream = loupe_agent::arm(unlimited_spec("bench.cold", None)).expect("armed");
        let capture_id = stream.capture_id();
        let (tell, read) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            while stream.blocking_next().is_some() {
                let _ = tell.send(());
            }
            stream.status().counters
        });
        ReadElsewhere {
            capture_id,
            read,
            reader,
        }
    }

    /// Waits until the stream has read the last hit's snapshot.
    fn wait_for_snapshot(&self) {
        self.read.recv().expect("the reader reads every snapshot");
    }

    /// Disarms, and checks that every hit of the capture was captured and read (a hit the
    /// budget or the queue turned away would be timed as a cheap one).
    fn finish(self) {
        loupe_agent::Engine::global().disarm(&self.capture_id, loupe_agent::EndReason::Disarmed);
        let counters = self.reader.join().expect("reader");
        assert_eq!(counters.sent, counters.hits, "{counters:?}");
        assert_eq!(counters.skipped_cpu_budget, 0, "{counters:?}");
    }
}

/// Single-hit times and reported capture costs of one cold case, in nanoseconds.
#[derive(Default)]
struct Observed {
    hit_ns: Vec<u64>,
    reported_cost_ns: Vec<u64>,
}

impl Observed {
    fn median_ns(&self) -> u64 {
        let mut hits = self.hit_ns.clone();
        hits.sort_unstable();
        hits.get(hits.len() / 2).copied().unwrap_or(0)
    }

    fn print(mut self, case: &str) {
        fn percentiles(values: &mut [u64]) -> String {
            values.sort_unstable();
            let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize] as f64 / 1e3;
            if values.is_empty() {
                return "none".to_owned();
            }
            format!(
                "p50 {:.1} µs, p90 {:.1} µs, max {:.1} µs (n={})",
                at(0.5),
                at(0.9),
                at(1.0),
                values.len()
            )
        }
        eprintln!(
            "cold/{case}: single hits {}; capture_cost_ns reported {}",
            percentiles(&mut self.hit_ns),
            percentiles(&mut self.reported_cost_ns)
        );
    }
}

/// Times one anchor serialization after the host's other work, in nanoseconds.
fn time_anchor(work: &mut OtherWork, json: &mut Vec<u8>, order: &order::Order) -> u64 {
    work.run();
    json.clear();
    let start = Instant::now();
    serde_json::to_writer(&mut *json, black_box(order)).expect("serializable");
    let took = start.elapsed();
    black_box(&json);
    took.as_nanos() as u64
}

/// Times `iters` hits, each after the host's other work; `between` runs after each hit, off
/// the clock.
fn spaced_hits(
    iters: u64,
    work: &mut OtherWork,
    order: &order::Order,
    observed: &mut Observed,
    mut between: impl FnMut(&mut Observed),
) -> Duration {
    let mut timed = Duration::ZERO;
    for _ in 0..iters {
        work.run();
        let start = Instant::now();
        place_order_cold(black_box(order));
        let hit = start.elapsed();
        timed += hit;
        observed.hit_ns.push(hit.as_nanos() as u64);
        between(observed);
    }
    timed
}

fn cold(c: &mut Criterion) {
    configure_for_benchmarks();
    let order = order::Order::reference(3);
    let mut group = c.benchmark_group("cold");
    // Criterion sizes samples by wall time, which here is mostly the untimed work between hits
    // (about 7 ms an iteration): flat samples, and a warm-up long enough to estimate it, give
    // over a thousand spaced hits per case in about 10 s.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    let mut work = OtherWork::evicting_the_caches();
    let cases = [
        ("spaced_no_condition", None),
        ("spaced_condition_true", Some("order.total_cents > 100u")),
    ];
    for (name, condition) in cases {
        let mut stream = loupe_agent::arm(unlimited_spec("bench.cold", condition)).expect("armed");
        let mut observed = Observed::default();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                spaced_hits(iters, &mut work, &order, &mut observed, |observed| {
                    while let Some(snapshot) = stream.try_next() {
                        observed.reported_cost_ns.push(snapshot.capture_cost_ns);
                    }
                })
            })
        });
        let counters = stream.status().counters;
        assert_eq!(counters.sent, counters.hits, "{name}: {counters:?}");
        observed.print(name);
    }

    // As in production: the stream is read by another thread (the agent's own), which waits
    // for snapshots; the hit must not pay for waking it.
    let reader = ReadElsewhere::arm();
    let read = |_: &mut Observed| reader.wait_for_snapshot();
    let mut observed = Observed::default();
    group.bench_function("spaced_read_elsewhere", |b| {
        b.iter_custom(|iters| spaced_hits(iters, &mut work, &order, &mut observed, read))
    });
    observed.print("spaced_read_elsewhere");

    // As a service's request handler hits a point: inside the request's span, recorded by
    // the correlation layer, so the snapshot carries the span's id and its `request_id`.
    let subscriber = tracing_subscriber::registry().with(loupe_agent::CorrelationLayer::new());
    let subscribed = tracing::subscriber::set_default(subscriber);
    // The second case idles between the other work and the hit for longer than the agent
    // thread's slowest tick, as a service waits for its next request: the agent's warm pass
    // (`capture::warm`) runs in between, as it does in production.
    let cases = [
        ("spaced_in_request_span", work.pause),
        ("spaced_in_request_span_after_idle", OtherWork::IDLE),
    ];
    for (name, pause) in cases {
        let pause = std::mem::replace(&mut work.pause, pause);
        let mut observed = Observed::default();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for request in 0..iters {
                    let span =
                        tracing::info_span!("request", request_id = request, path = "/checkout");
                    let _entered = span.enter();
                    timed += spaced_hits(1, &mut work, &order, &mut observed, read);
                }
                timed
            })
        });
        work.pause = pause;
        observed.print(name);
    }
    drop(subscribed);

    // The same hits, each paired with an anchor serialization under the same conditions just
    // before it: the machine's state drifts over the seconds between two cases, and the ratio
    // of the pair does not.
    let mut observed = Observed::default();
    let mut anchor = Observed::default();
    let mut json = Vec::with_capacity(4096);
    group.bench_function("paired_with_anchor", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                anchor
                    .hit_ns
                    .push(time_anchor(&mut work, &mut json, &order));
                timed += spaced_hits(1, &mut work, &order, &mut observed, read);
            }
            timed
        })
    });
    if !anchor.hit_ns.is_empty() {
        eprintln!(
            "cold/paired_with_anchor: hit / anchor p50 {:.2}",
            observed.median_ns() as f64 / anchor.median_ns().max(1) as f64
        );
    }
    observed.print("paired_with_anchor (hits)");
    anchor.print("paired_with_anchor (anchor)");

    // The floors: the least any hit that meets the contract does, timed in the same request
    // span under the same conditions, each just before a real hit. See `contract_floor`.
    let mut copier = Copier::with_capacity(4096);
    let least = |order: &order::Order| copier.copy(order);
    paired_with_floor(
        &mut group,
        "paired_with_contract_floor",
        &mut work,
        &order,
        &reader,
        least,
    );
    let structured = |order: &order::Order| {
        json.clear();
        serde_json::to_writer(&mut json, order).expect("serializable");
        json.len()
    };
    paired_with_floor(
        &mut group,
        "paired_with_structured_floor",
        &mut work,
        &order,
        &reader,
        structured,
    );
    reader.finish();

    // The anchor: what the host's own code pays for the same value under the same conditions —
    // serializing the `Order` to JSON into a reused buffer, as a service logging or answering
    // with it would. Cold caches and a wake-up cost every code path, not only the agent's.
    let mut observed = Observed::default();
    group.bench_function("anchor_serde_json", |b| {
        b.iter_custom(|iters| {
            let mut timed = 0;
            for _ in 0..iters {
                let took = time_anchor(&mut work, &mut json, &order);
                timed += took;
                observed.hit_ns.push(took);
            }
            Duration::from_nanos(timed)
        })
    });
    observed.print("anchor_serde_json");

    let mut stream = loupe_agent::arm(unlimited_spec("bench.cold", None)).expect("armed");
    let mut observed = Observed::default();
    group.bench_function("fresh_thread", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let order = &order;
                let hit = std::thread::scope(|scope| {
                    scope
                        .spawn(move || {
                            let start = Instant::now();
                            place_order_cold(black_box(order));
                            start.elapsed()
                        })
                        .join()
                        .expect("hit thread")
                });
                timed += hit;
                observed.hit_ns.push(hit.as_nanos() as u64);
                while let Some(snapshot) = stream.try_next() {
                    observed.reported_cost_ns.push(snapshot.capture_cost_ns);
                }
            }
            timed
        })
    });
    let counters = stream.status().counters;
    assert_eq!(counters.sent, counters.hits, "fresh_thread: {counters:?}");
    observed.print("fresh_thread");
    group.finish();
}

/// Hits read elsewhere in a request's span, each just after a contract floor that copies the
/// value with `copy`, under the same conditions; prints both and the ratio of their medians.
fn paired_with_floor(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    work: &mut OtherWork,
    order: &order::Order,
    reader: &ReadElsewhere,
    mut copy: impl FnMut(&order::Order) -> usize,
) {
    let subscriber = tracing_subscriber::registry().with(loupe_agent::CorrelationLayer::new());
    let subscribed = tracing::subscriber::set_default(subscriber);
    let floor_reader = FloorReader::spawn();
    let mut floors = Observed::default();
    let mut hits = Observed::default();
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for request in 0..iters {
                let span = tracing::info_span!("request", request_id = request, path = "/checkout");
                let _entered = span.enter();
                work.run();
                let start = Instant::now();
                contract_floor(&floor_reader, || copy(black_box(order)));
                floors.hit_ns.push(start.elapsed().as_nanos() as u64);
                floor_reader.wait_for_hand_off();
                let read = |_: &mut Observed| reader.wait_for_snapshot();
                timed += spaced_hits(1, work, order, &mut hits, read);
            }
            timed
        })
    });
    drop(subscribed);
    if !floors.hit_ns.is_empty() {
        eprintln!(
            "cold/{name}: hit / floor p50 {:.2}",
            hits.median_ns() as f64 / floors.median_ns().max(1) as f64
        );
    }
    hits.print(&format!("{name} (hits)"));
    floors.print(&format!("{name} (floor)"));
}

/// The agent thread's warm pass over the hit path's section (`capture::warm`), which it makes
/// on every tick while anything is armed: from the caches (`cached`), and after the host's
/// other work emptied them (`after_other_work`, only the pass timed).
fn warm(c: &mut Criterion) {
    let mut group = c.benchmark_group("warm");
    group.bench_function("hit_path_pass_cached", |b| {
        b.iter(loupe_agent::capture::warm::warm_hit_path)
    });
    let mut work = OtherWork::writing(SIMULATED_LAST_LEVEL_BYTES);
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    group.bench_function("hit_path_pass_after_other_work", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                work.run();
                let start = Instant::now();
                loupe_agent::capture::warm::warm_hit_path();
                timed += start.elapsed();
            }
            timed
        })
    });
    group.finish();
}

/// The last-level cache the count recipe (module docs) simulates, `--LL=33554432`: the other
/// work between counted hits empties it, as it does the real caches in `cold/*`.
const SIMULATED_LAST_LEVEL_BYTES: usize = 32 * 1024 * 1024;

/// The `LOUPE_BENCH_COLD_COUNT` mode (see the module docs): the cold hit as production takes
/// it, and the anchor, each after the same other work, for a cache simulator to count.
fn count_cold(hits: u64) {
    configure_for_benchmarks();
    let order = order::Order::reference(3);
    let mut work = OtherWork::writing(SIMULATED_LAST_LEVEL_BYTES);
    let reader = ReadElsewhere::arm();
    let subscriber = tracing_subscriber::registry().with(loupe_agent::CorrelationLayer::new());
    let subscribed = tracing::subscriber::set_default(subscriber);
    for request in 0..=hits {
        let span = tracing::info_span!("request", request_id = request, path = "/checkout");
        let _entered = span.enter();
        work.run();
        if request == 0 {
            // The thread's first hit sets up what every later one reuses; production sees it
            // once.
            place_order_cold(&order);
        } else {
            count_cold_hit(black_box(&order));
        }
        reader.wait_for_snapshot();
    }
    drop(subscribed);
    reader.finish();
    let mut json = Vec::with_capacity(4096);
    for _ in 0..hits {
        work.run();
        json.clear();
        count_cold_anchor(&mut json, black_box(&order));
        black_box(&json);
    }
    let subscriber = tracing_subscriber::registry().with(loupe_agent::CorrelationLayer::new());
    let subscribed = tracing::subscriber::set_default(subscriber);
    let floor_reader = FloorReader::spawn();
    let mut copier = Copier::with_capacity(4096);
    for request in 0..=hits {
        let span = tracing::info_span!("request", request_id = request, path = "/checkout");
        let _entered = span.enter();
        work.run();
        if request == 0 {
            contract_floor(&floor_reader, || copier.copy(&order));
        } else {
            count_cold_floor(&floor_reader, &mut copier, black_box(&order));
        }
        floor_reader.wait_for_hand_off();
    }
    drop(subscribed);
    drop(floor_reader);
}

/// The `LOUPE_BENCH_DISARMED_COUNT` mode (see the module docs): the three loops of
/// `disarmed/*`, each in a function of its own, for callgrind to count their instructions.
/// A pass is below a cycle, where wall time follows the loops' alignment in the binary;
/// instruction counts do not.
fn count_disarmed(passes: u64) {
    let order = order::Order::reference(1);
    count_empty_passes(passes);
    count_disarmed_passes(passes, &order);
    count_tracing_passes(passes, &order);
}

#[inline(never)]
fn count_empty_passes(passes: u64) {
    for i in 0..passes {
        black_box(i);
    }
}

#[inline(never)]
fn count_disarmed_passes(passes: u64, order: &order::Order) {
    for i in 0..passes {
        black_box(i);
        snapshot!("bench.disarmed_count", order, ?i);
    }
}

#[inline(never)]
fn count_tracing_passes(passes: u64, order: &order::Order) {
    for i in 0..passes {
        black_box(i);
        tracing::info!(?order, i, "checkout");
    }
}

#[inline(never)]
fn count_cold_hit(order: &order::Order) {
    place_order_cold(order);
}

#[inline(never)]
fn count_cold_anchor(json: &mut Vec<u8>, order: &order::Order) {
    serde_json::to_writer(json, order).expect("serializable");
}

#[inline(never)]
fn count_cold_floor(reader: &FloorReader, copier: &mut Copier, order: &order::Order) {
    contract_floor(reader, || copier.copy(order));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = disarmed, armed, cold, warm
}

fn main() {
    if let Ok(passes) = std::env::var("LOUPE_BENCH_DISARMED_COUNT") {
        let passes = passes
            .parse()
            .expect("LOUPE_BENCH_DISARMED_COUNT is a number of passes");
        return count_disarmed(passes);
    }
    if let Ok(hits) = std::env::var("LOUPE_BENCH_COLD_COUNT") {
        let hits = hits
            .parse()
            .expect("LOUPE_BENCH_COLD_COUNT is a number of hits");
        return count_cold(hits);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

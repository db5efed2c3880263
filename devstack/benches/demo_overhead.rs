//! The demo checkout's cost per request through its whole axum stack — request-id middleware,
//! `TraceLayer`'s span, routing, JSON parsing and the four snapshot points — in the
//! configurations of `benches/host_overhead.sh`, in-process, on one thread, in the same run:
//!
//! - `no_agent`: no `CorrelationLayer` in the subscriber, nothing armed (the anchor);
//! - `disarmed`: the `CorrelationLayer` in the subscriber, nothing armed (so it copies no span
//!   fields: one relaxed load per span);
//! - `armed_false_condition`: `checkout.apply_discount` armed with `order.total_cents == 0u`;
//! - `armed_default_rate`: `checkout.apply_discount` armed with no condition at the default
//!   rate (10 snapshots/s), its stream drained by another thread.
//!
//! `request_span/*` isolates what the `CorrelationLayer` adds to a request: creating, entering
//! and closing the demo's `request` span (three fields) without the layer, with it while
//! nothing is armed (`disarmed`'s case), and with it while a capture is armed somewhere (the
//! layer then copies the fields at span creation). Those differences are small against the
//! whole request, so they are measured alone, where noise does not hide them.
//!
//! The agent's engine keeps its default configuration, CPU budget included, so a costly
//! armed capture is throttled here as in production; each armed case prints its counters.
//! No sockets: the kernel's share of a served request is left out, so the ratios here bound
//! from above what a request served over TCP sees.
//!
//! `cargo bench -p loupe-devstack --bench demo_overhead`
//!
//! **Counting instructions.** With `LOUPE_BENCH_COUNT=N` the binary skips criterion and serves
//! N requests twice in each `checkout_request` case, in the same process, each case inside its
//! own function (`count_no_agent`, `count_disarmed`, `count_armed_false_condition`,
//! `count_armed_default_rate`) after a warm-up outside them, so callgrind's inclusive count of
//! each function divided by 2N is that case's instructions per request (on this thread: the
//! drain thread's work is not in it):
//!
//! ```text
//! LOUPE_BENCH_COUNT=2000 valgrind --tool=callgrind --callgrind-out-file=demo.cg \
//!     target/release/deps/demo_overhead-<hash>
//! callgrind_annotate --inclusive=yes demo.cg | grep count_
//! ```
//!
//! With `--toggle-collect='*count_<case>*'` a run counts that case alone, and
//! `callgrind_annotate --inclusive=yes` then splits it by function: the agent's own share is
//! `Callsite::hit` plus the `CorrelationLayer`'s `on_new_span` and `on_close`. Read that
//! share rather than the whole request's difference from `no_agent` alone: the same code's
//! whole-request count moves by several hundred instructions with the allocator's state.
//! The cases share one agent-wide CPU budget, so a case that spends it (a costly condition)
//! leaves the next case's hits turned away cheaply: compare the printed counters too.
//!
//! Under callgrind everything runs some 50 times slower, the agent's clocks do not. The CPU
//! budget (1 % of a core) then admits about as large a share of the instructions as it admits
//! of the time natively, which is what it is for; but the rate limit would admit its 10
//! snapshots a second against some 700 requests a second instead of tens of thousands, so a
//! count at the default rate would hold far more snapshots per request than a native run (and,
//! their cost inflated too, they spend the CPU budget, so the hits after them take the
//! budget's refusal path). So the default-rate case is counted with its allowance spent
//! ([`COUNTED_RATE_SPENT`]): each counted request pays what it pays natively at the default
//! rate — the span's copy and a hit the rate limit turns away — and the 10 snapshots a
//! second add their own cost (`cargo bench -p loupe-agent --bench capture`) divided by the
//! requests served in that second.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use criterion::{Criterion, criterion_group};
use loupe_agent::{CaptureSpec, CaptureStream, RateLimit};
use loupe_devstack::demo::checkout::Checkout;
use loupe_devstack::demo::dispatch;
use loupe_devstack::demo::server::router;
use tower_service::Service;

/// The order every request posts; `benches/host_overhead.sh` has wrk post the same.
const ORDER: &str = include_str!("checkout_order.json");

/// One `POST /checkout` through the router, its body read to the end.
#[inline(never)]
fn one_request(runtime: &tokio::runtime::Runtime, app: &mut Router) {
    let request = Request::post("/checkout")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(ORDER))
        .expect("a valid request");
    runtime.block_on(async {
        let Ok(response) = app.call(request).await;
        assert_eq!(response.status(), StatusCode::OK);
        black_box(axum::body::to_bytes(response.into_body(), 64 * 1024).await).expect("a body");
    });
}

/// Drains a capture's snapshots on another thread until stopped, then disarms it. Meanwhile
/// the agent's own thread works for the capture (its drain tick, retiring, the budget's
/// watch); what that costs a second is printed at the end.
struct Drain {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<CaptureStream>,
    started: Instant,
    /// The agent thread's CPU time when the capture was armed; 0 when it was not found, as
    /// when the first arm of the process has just spawned it and it has not named itself yet.
    agent_cpu_at_start: u64,
}

impl Drain {
    fn start(mut stream: CaptureStream) -> Drain {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                while stream.try_next().is_some() {}
                std::thread::sleep(Duration::from_millis(10));
            }
            stream
        });
        Drain {
            stop,
            thread,
            started: Instant::now(),
            agent_cpu_at_start: agent_thread_cpu_ns().unwrap_or(0),
        }
    }

    fn finish(self, name: &str) {
        let seconds = self.started.elapsed().as_secs_f64();
        let agent_cpu =
            agent_thread_cpu_ns().map(|end| end.saturating_sub(self.agent_cpu_at_start));
        self.stop.store(true, Ordering::Relaxed);
        let stream = self.thread.join().expect("the drain thread");
        println!("{name}: {:?}", stream.status());
        if let Some(ns) = agent_cpu {
            let per_second = ns as f64 / seconds;
            println!(
                "{name}: the agent's thread ran {:.0} µs a second while armed ({:.3} % of a core)",
                per_second / 1e3,
                per_second / 1e7,
            );
        }
        stream.disarm();
    }
}

/// CPU time the agent's own thread (`loupe-capture`) has run so far, in nanoseconds, from the
/// scheduler's account (`/proc/self/task/*/schedstat`); `None` where that is not available.
fn agent_thread_cpu_ns() -> Option<u64> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == "loupe-capture" {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            return stat.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

fn arm(condition: Option<&str>, rate: RateLimit) -> CaptureStream {
    let mut spec = CaptureSpec::new("bench", "checkout.apply_discount")
        .max_snapshots(10_000)
        .duration(Duration::from_secs(30 * 60))
        .rate(rate);
    if let Some(condition) = condition {
        spec = spec.condition(condition);
    }
    loupe_agent::arm(spec).expect("the capture is armed")
}

fn checkout_request(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut app = router(Arc::new(Checkout::default()));
    let mut group = c.benchmark_group("checkout_request");
    let cases: [(&str, bool, Option<Option<&str>>); 4] = [
        ("no_agent", false, None),
        ("disarmed", true, None),
        (
            "armed_false_condition",
            true,
            Some(Some("order.total_cents == 0u")),
        ),
        ("armed_default_rate", true, Some(None)),
    ];
    for (name, correlate, armed) in cases {
        tracing::dispatcher::with_default(&dispatch(correlate), || {
            let drain = armed.map(|condition| Drain::start(arm(condition, RateLimit::DEFAULT)));
            group.bench_function(name, |b| b.iter(|| one_request(&runtime, &mut app)));
            if let Some(drain) = drain {
                drain.finish(name);
            }
        });
    }
    group.finish();
}

fn request_span(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_span");
    let cases = [
        ("without_correlation", false, false),
        ("with_correlation_nothing_armed", true, false),
        ("with_correlation_armed", true, true),
    ];
    for (name, correlate, armed) in cases {
        tracing::dispatcher::with_default(&dispatch(correlate), || {
            let drain = armed
                .then(|| Drain::start(arm(Some("order.total_cents == 0u"), RateLimit::DEFAULT)));
            group.bench_function(name, |b| {
                b.iter(|| {
                    let span = tracing::info_span!(
                        "request",
                        request_id = black_box("r-1f2e3d"),
                        method = %black_box("POST"),
                        path = black_box("/checkout"),
                    );
                    let _entered = span.enter();
                })
            });
            if let Some(drain) = drain {
                drain.finish(name);
            }
        });
    }
    group.finish();
}

/// Serves `requests` requests; its own function so that a profile can tell the cases apart
/// (its name, passed through `black_box`, keeps the linker from folding the four into one).
macro_rules! counted_case {
    ($name:ident) => {
        #[inline(never)]
        fn $name(runtime: &tokio::runtime::Runtime, app: &mut Router, requests: u64) {
            black_box(stringify!($name));
            for _ in 0..requests {
                one_request(runtime, app);
            }
        }
    };
}
counted_case!(count_no_agent);
counted_case!(count_disarmed);
counted_case!(count_armed_false_condition);
counted_case!(count_armed_default_rate);

/// One case of the `LOUPE_BENCH_COUNT` mode.
struct CountedCase {
    name: &'static str,
    /// Whether the `CorrelationLayer` is in the subscriber.
    correlate: bool,
    /// The condition and rate `checkout.apply_discount` is armed with, if it is.
    armed: Option<(Option<&'static str>, RateLimit)>,
    /// The case's own function, which callgrind counts alone.
    count: fn(&tokio::runtime::Runtime, &mut Router, u64),
}

/// Requests served before each counted case, outside its function.
const COUNT_WARM_UP: u64 = 200;

/// The default-rate case's limit when counting: one snapshot, taken in the warm-up, then none
/// for the rest of the count, so that every counted hit is one the rate limit turns away —
/// the path nearly every hit takes at the default rate natively (10 a second against tens of
/// thousands of requests a second). At the default rate itself, under callgrind's slowdown
/// one request in about seventy took a snapshot, whose cost, inflated in wall time, spent the
/// CPU budget, so the count measured the budget's refusals instead (see the module docs).
const COUNTED_RATE_SPENT: RateLimit = RateLimit {
    per_second: 1e-3,
    burst: 1,
};

/// The `LOUPE_BENCH_COUNT` mode (see the module docs). The cases run forwards then backwards
/// (A B C D D C B A), each on a fresh router, so what drifts over a run — the allocator's
/// state, the request ids' length — weighs on every case alike.
fn count_instructions(requests: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let cases = [
        CountedCase {
            name: "no_agent",
            correlate: false,
            armed: None,
            count: count_no_agent,
        },
        CountedCase {
            name: "disarmed",
            correlate: true,
            armed: None,
            count: count_disarmed,
        },
        CountedCase {
            name: "armed_false_condition",
            correlate: true,
            armed: Some((Some("order.total_cents == 0u"), RateLimit::DEFAULT)),
            count: count_armed_false_condition,
        },
        CountedCase {
            name: "armed_default_rate",
            correlate: true,
            armed: Some((None, COUNTED_RATE_SPENT)),
            count: count_armed_default_rate,
        },
    ];
    for case in cases.iter().chain(cases.iter().rev()) {
        let name = case.name;
        let mut app = router(Arc::new(Checkout::default()));
        tracing::dispatcher::with_default(&dispatch(case.correlate), || {
            let drain = case
                .armed
                .map(|(condition, rate)| Drain::start(arm(condition, rate)));
            for _ in 0..COUNT_WARM_UP {
                one_request(&runtime, &mut app);
            }
            (case.count)(&runtime, &mut app, requests);
            if let Some(drain) = drain {
                drain.finish(name);
            } else {
                println!("{name}: {requests} requests");
            }
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    targets = checkout_request, request_span
}

fn main() {
    if let Some(requests) = std::env::var("LOUPE_BENCH_COUNT")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        count_instructions(requests);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

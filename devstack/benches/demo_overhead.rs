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

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use criterion::{Criterion, criterion_group, criterion_main};
use loupe_agent::{CaptureSpec, CaptureStream};
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

/// Drains a capture's snapshots on another thread until stopped, then disarms it.
struct Drain {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<CaptureStream>,
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
        Drain { stop, thread }
    }

    fn finish(self, name: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let stream = self.thread.join().expect("the drain thread");
        println!("{name}: {:?}", stream.status());
        stream.disarm();
    }
}

fn arm(condition: Option<&str>) -> CaptureStream {
    let mut spec = CaptureSpec::new("bench", "checkout.apply_discount")
        .max_snapshots(10_000)
        .duration(Duration::from_secs(30 * 60));
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
            let drain = armed.map(|condition| Drain::start(arm(condition)));
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
            let drain = armed.then(|| Drain::start(arm(Some("order.total_cents == 0u"))));
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

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    targets = checkout_request, request_span
}
criterion_main!(benches);

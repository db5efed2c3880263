//! A steady capture's hit allocates nothing on the host's thread: its record and tape are
//! the ones the stream handed back after encoding an earlier snapshot. On a hit that finds the
//! caches cold, an allocation is a walk through the allocator's slow path (the agent's thread
//! frees each record into its own cache, never the host thread's), so the capture cost that
//! production sees depends on this.
//!
//! Its own test binary: it counts allocations with a global allocator.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use loupe_agent::{CaptureSpec, RateLimit, snapshot};

/// The system allocator, counting the allocations of each thread.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator, which upholds
// `GlobalAlloc`'s contract; the count is a thread-local `Cell` that allocates nothing.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: the caller's `layout` is passed on as the contract requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: as for `dealloc`; `new_size` is the caller's, as the contract requires.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[derive(serde::Serialize)]
struct Item {
    sku: String,
    qty: u32,
}

#[derive(serde::Serialize)]
struct Order {
    id: u64,
    email: String,
    items: Vec<Item>,
    coupon: Option<String>,
}

fn order() -> Order {
    Order {
        id: 7,
        email: "ada@example.com".into(),
        items: vec![
            Item {
                sku: "SKU-1".into(),
                qty: 2,
            },
            Item {
                sku: "SKU-2".into(),
                qty: 1,
            },
        ],
        coupon: Some("WELCOME".into()),
    }
}

fn place_unconditional(order: &Order) {
    snapshot!("test.allocations.unconditional", order);
}

fn place_conditional(order: &Order) {
    snapshot!("test.allocations.conditional", order);
}

fn place_general(order: &Order) {
    snapshot!("test.allocations.general", order);
}

fn place_in_span(order: &Order) {
    snapshot!("test.allocations.in_span", order);
}

/// Hits `place` 20 times, each snapshot read (on this thread, between hits, as the agent's
/// thread would read it between two hits of a point hit a few times a second), and returns
/// the allocations of each hit after the first few.
fn allocations_per_hit(
    point: &str,
    condition: Option<&str>,
    place: fn(&Order),
) -> (Vec<u64>, usize, loupe_agent::CaptureCounters) {
    let mut spec = CaptureSpec::new("s-allocations", point)
        .rate(RateLimit {
            per_second: 1_000.0,
            burst: 100,
        })
        .max_snapshots(100)
        .duration(Duration::from_secs(60));
    if let Some(condition) = condition {
        spec = spec.condition(condition);
    }
    let mut stream = loupe_agent::arm(spec).expect("armed");
    let order = order();
    let mut counts = Vec::new();
    let mut received = 0;
    for hit in 0..20 {
        let before = allocations();
        place(&order);
        let after = allocations();
        // The first hits fill the pool, and the first hit of a thread names the thread.
        if hit >= 3 {
            counts.push(after - before);
        }
        while stream.try_next().is_some() {
            received += 1;
        }
    }
    (counts, received, stream.status().counters)
}

#[test]
fn a_steady_capture_hit_allocates_nothing() {
    let (counts, received, _) =
        allocations_per_hit("test.allocations.unconditional", None, place_unconditional);
    assert_eq!(received, 20, "every hit was captured");
    assert!(
        counts.iter().all(|&n| n == 0),
        "allocations per hit: {counts:?}"
    );
}

/// As a handler hits a point: inside a request's span, whose `request_id` the snapshot
/// carries, copied from the span's record straight into the snapshot's tape.
#[test]
fn a_steady_capture_hit_in_a_request_span_allocates_nothing() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let subscriber = tracing_subscriber::registry().with(loupe_agent::CorrelationLayer::new());
    tracing::subscriber::with_default(subscriber, || {
        let spec = CaptureSpec::new("s-allocations", "test.allocations.in_span")
            .rate(RateLimit {
                per_second: 1_000.0,
                burst: 100,
            })
            .max_snapshots(100)
            .duration(Duration::from_secs(60));
        let mut stream = loupe_agent::arm(spec).expect("armed");
        let order = order();
        let mut counts = Vec::new();
        let mut request_ids = Vec::new();
        for hit in 0..20 {
            // Opened after arming, so the layer records its fields.
            let span = tracing::info_span!("request", request_id = format!("r-{hit}").as_str());
            let _entered = span.enter();
            let before = allocations();
            place_in_span(&order);
            let after = allocations();
            if hit >= 3 {
                counts.push(after - before);
            }
            while let Some(snapshot) = stream.try_next() {
                let trace = snapshot.trace.expect("trace context");
                request_ids.extend(
                    trace
                        .span_fields
                        .into_iter()
                        .filter(|field| field.name == "request_id")
                        .map(|field| format!("{:?}", field.value)),
                );
            }
        }
        assert_eq!(
            request_ids.len(),
            20,
            "each snapshot carries its request_id"
        );
        assert!(request_ids[7].contains("r-7"), "{:?}", request_ids[7]);
        assert!(
            counts.iter().all(|&n| n == 0),
            "allocations per hit: {counts:?}"
        );
    });
}

#[test]
fn a_hit_that_a_direct_condition_turns_away_allocates_nothing() {
    let (counts, received, counters) = allocations_per_hit(
        "test.allocations.conditional",
        Some("order.id == 8u"),
        place_conditional,
    );
    assert_eq!(received, 0);
    // Every hit reached the condition and was answered by it, not skipped before it.
    assert_eq!(counters.condition_false, 20, "{counters:?}");
    assert_eq!(counters.hits, 20, "{counters:?}");
    assert!(
        counts.iter().all(|&n| n == 0),
        "allocations per hit: {counts:?}"
    );
}

/// A condition the direct path cannot answer takes its own redacted capture of what it reads,
/// on a reused tape that also keeps where each field starts. What is left to allocate, once
/// each a hit: the redacting builder's path and the evaluator's comprehension variables.
#[test]
fn a_hit_that_a_general_condition_turns_away_allocates_twice_at_most() {
    let (counts, received, counters) = allocations_per_hit(
        "test.allocations.general",
        Some("order.items.exists(i, i.qty > 100u)"),
        place_general,
    );
    assert_eq!(received, 0);
    assert_eq!(counters.condition_false, 20, "{counters:?}");
    assert!(
        counts.iter().all(|&n| n <= 2),
        "allocations per hit: {counts:?}"
    );
}

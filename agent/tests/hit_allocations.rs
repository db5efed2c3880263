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

fn place_formatted(order: &Order) {
    let coupon = &order.coupon;
    let id = order.id;
    snapshot!("test.allocations.formatted", ?coupon, %id);
}

/// What a run of hits on one capture gave: the allocations of each hit after the first few
/// (which fill the record pool and name the thread), the snapshots, and the counters.
struct Run {
    allocations: Vec<u64>,
    snapshots: Vec<loupe_proto::v1::Snapshot>,
    counters: loupe_agent::CaptureCounters,
}

impl Run {
    /// Arms `point` (with `condition`, if any) and makes 20 hits with `hit`, which returns the
    /// allocations of the hit itself ([`allocations_of`]). Each snapshot is read on this
    /// thread between hits, as the agent's thread reads it between two hits of a point hit a
    /// few times a second.
    fn of(point: &str, condition: Option<&str>, mut hit: impl FnMut(u64, &Order) -> u64) -> Run {
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
        let mut allocations = Vec::new();
        let mut snapshots = Vec::new();
        for n in 0..20 {
            let made = hit(n, &order);
            if n >= 3 {
                allocations.push(made);
            }
            while let Some(snapshot) = stream.try_next() {
                snapshots.push(snapshot);
            }
        }
        Run {
            allocations,
            snapshots,
            counters: stream.status().counters,
        }
    }

    fn assert_at_most(&self, per_hit: u64) {
        assert!(
            self.allocations.iter().all(|&n| n <= per_hit),
            "allocations per hit: {:?}",
            self.allocations
        );
    }
}

/// The allocations this thread makes in `hit`.
fn allocations_of(hit: impl FnOnce()) -> u64 {
    let before = allocations();
    hit();
    allocations() - before
}

#[test]
fn a_steady_capture_hit_allocates_nothing() {
    let run = Run::of("test.allocations.unconditional", None, |_, order| {
        allocations_of(|| place_unconditional(order))
    });
    assert_eq!(run.snapshots.len(), 20, "every hit was captured");
    run.assert_at_most(0);
}

/// Debug and Display fields are formatted into a buffer the thread keeps, not a new string.
#[test]
fn a_steady_capture_hit_with_formatted_fields_allocates_nothing() {
    let run = Run::of("test.allocations.formatted", None, |_, order| {
        allocations_of(|| place_formatted(order))
    });
    assert_eq!(run.snapshots.len(), 20, "every hit was captured");
    run.assert_at_most(0);
}

/// As a handler hits a point: inside a request's span, whose `request_id` the snapshot
/// carries, copied from the span's record straight into the snapshot's tape.
#[test]
fn a_steady_capture_hit_in_a_request_span_allocates_nothing() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let subscriber = tracing_subscriber::registry().with(loupe_agent::CorrelationLayer::new());
    let run = tracing::subscriber::with_default(subscriber, || {
        Run::of("test.allocations.in_span", None, |n, order| {
            // Opened after arming, so the layer records its fields.
            let span = tracing::info_span!("request", request_id = format!("r-{n}").as_str());
            let _entered = span.enter();
            allocations_of(|| place_in_span(order))
        })
    });
    let request_ids: Vec<String> = run
        .snapshots
        .iter()
        .flat_map(|snapshot| snapshot.trace.iter().flat_map(|trace| &trace.span_fields))
        .filter(|field| field.name == "request_id")
        .map(|field| format!("{:?}", field.value))
        .collect();
    assert_eq!(
        request_ids.len(),
        20,
        "each snapshot carries its request_id"
    );
    assert!(request_ids[7].contains("r-7"), "{:?}", request_ids[7]);
    run.assert_at_most(0);
}

#[test]
fn a_hit_that_a_direct_condition_turns_away_allocates_nothing() {
    let run = Run::of(
        "test.allocations.conditional",
        Some("order.id == 8u"),
        |_, order| allocations_of(|| place_conditional(order)),
    );
    assert!(run.snapshots.is_empty());
    // Every hit reached the condition and was answered by it, not skipped before it.
    assert_eq!(run.counters.condition_false, 20, "{:?}", run.counters);
    assert_eq!(run.counters.hits, 20, "{:?}", run.counters);
    run.assert_at_most(0);
}

/// A condition the direct path cannot answer takes its own redacted capture of what it reads,
/// on a reused tape that also keeps where each field starts, with no path kept for reasons
/// nobody reads; the evaluator holds its comprehension variables inline.
#[test]
fn a_hit_that_a_general_condition_turns_away_allocates_nothing() {
    let run = Run::of(
        "test.allocations.general",
        Some("order.items.exists(i, i.qty > 100u)"),
        |_, order| allocations_of(|| place_general(order)),
    );
    assert!(run.snapshots.is_empty());
    assert_eq!(run.counters.condition_false, 20, "{:?}", run.counters);
    run.assert_at_most(0);
}

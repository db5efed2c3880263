//! The per-hit cost of the most expensive conditions the agent accepts, against the
//! reference `Order`, with an unconditional capture of the same order as the anchor in the
//! same run. Budget (design): the worst accepted condition ≤ 50 µs per hit, never a crash.
//!
//! Each case is a condition whose estimate is close to the budget (`MAX_COST` units) and that
//! fails on the order, so every hit evaluates the condition in full and captures nothing: the
//! measured time is the condition's. The order is the reference one with every collection and
//! string at the default limits (100 items, 255-byte strings), so the evaluation does the work
//! the estimate assumed. Each case prints its estimate, to read ns per unit off the medians.
//!
//! At the limits the redaction scan of what a condition reads is itself past the per-hit
//! budget for conditions that read the items' SKUs (`exists_over_items`): those hits stop
//! there, as condition errors. A condition that reads only the quantities (`map_then_exists`,
//! and `filter_size`, whose result only `size()` reads) captures only those and decides. Each
//! case prints how its hits ended. A capture ends on the third such hit in a row, so such
//! a case is armed again, untimed, every two hits.
//!
//! The same order with Debug-like SKUs (`at_limits_labelled_text`, a label every dozen bytes)
//! shows the scan's price on the text it works hardest on: each label it judges is charged as
//! bytes' worth of work, so such a scan stops sooner (`redaction::Work`). With SKUs of labels
//! whose values only the text's end ends (`at_limits_open_labels`), it shows that finding a
//! value's extent does not cost the rest of the text for each label; with SKUs that each hold
//! secrets (`at_limits_password_labels`, one value running to the text's end, and
//! `at_limits_assignments`, a dozen values a text), that masking them is paid for too.
//!
//! `cargo bench -p loupe-agent --bench conditions`

#[path = "../fixtures/order.rs"]
mod order;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use loupe_agent::FieldValue;
use loupe_agent::capture::dry_run::CapturedValues;
use loupe_agent::condition::{Condition, MAX_COST};
use loupe_agent::{CaptureLimits, CaptureSpec, EngineConfig, RateLimit, snapshot};

/// Candidates for the worst accepted condition, one per kind of work: a comprehension over
/// the whole item list, string building, substring search over built strings, list building.
/// Each fails on the orders benchmarked, so every hit evaluates it in full. Those the
/// estimate refuses are printed and left out.
const CASES: &[(&str, &str)] = &[
    (
        "exists_over_items",
        "order.items.exists(i, i.sku == 'SKU-01001-none')",
    ),
    (
        "exists_one_over_items",
        "order.items.exists_one(i, i.sku.endsWith('none'))",
    ),
    (
        "map_then_exists",
        "order.items.map(i, i.qty).exists(q, q > 1000u)",
    ),
    (
        "filter_size",
        "order.items.filter(i, i.qty > 1000u).size() > 50",
    ),
    (
        "string_building",
        "order.user.email + order.user.address.street + order.user.address.city + order.currency == order.user.address.country + order.user.address.zip + 'x'",
    ),
    (
        "built_strings_searched",
        "[order.user.email, order.user.address.street, order.user.address.city].map(s, s + s + s + s).exists(t, t.contains(order.currency + 'none'))",
    ),
    (
        "exists_one_concat",
        "order.items.exists_one(i, i.sku + '-' + i.sku == order.currency)",
    ),
];

fn big_order() -> order::Order {
    let mut order = order::Order::reference(1);
    order.items = (0..100)
        .map(|i| order::Item {
            sku: format!("SKU-{i:05}-{}", "x".repeat(260)),
            qty: i,
            price_cents: u64::from(i) * 100,
        })
        .collect();
    order.currency = "E".repeat(255);
    order.user.email = format!("{}@example.com", "a".repeat(250));
    order.user.address.street = "s".repeat(255);
    order.user.address.city = "c".repeat(255);
    order
}

/// [`big_order`] whose SKUs are text the redaction scan works hardest on a byte: Debug
/// output, a label every dozen bytes, each judged as a name.
fn big_order_of_labelled_text() -> order::Order {
    big_order_with_skus_of("Item { id: 42, kind: Gold, note: \"x\", qty: 2 } ")
}

/// [`big_order`] whose SKUs are labels whose values nothing ends but the text's end (no comma,
/// quote or line break): where finding each value's extent could cost the rest of the text.
fn big_order_of_open_labels() -> order::Order {
    big_order_with_skus_of("bin: A1 shelf: B2 note: fragile ")
}

/// [`big_order`] whose SKUs are `record` repeated to 255 bytes.
fn big_order_with_skus_of(record: &str) -> order::Order {
    let mut order = big_order();
    for item in &mut order.items {
        item.sku = record.repeat(255 / record.len() + 1)[..255].to_owned();
    }
    order
}

fn place_order(order: &order::Order) {
    snapshot!("bench.conditions", order);
}

/// Compiles every case, printing its estimate; refused cases are reported and left out.
fn accepted_cases() -> Vec<(&'static str, Condition)> {
    CASES
        .iter()
        .filter_map(|(name, source)| {
            match Condition::compile(source, &["order"], &CaptureLimits::DEFAULT) {
                Ok(condition) => {
                    println!(
                        "{name}: estimate {} of {MAX_COST} units",
                        condition.estimated_cost()
                    );
                    Some((*name, condition))
                }
                Err(error) => {
                    println!("{name}: refused: {error}");
                    None
                }
            }
        })
        .collect()
}

/// Evaluation alone, on the order at every default limit captured once: the time per
/// metered unit, to check the budget in units against the budget in time.
fn evaluation(c: &mut Criterion) {
    let order = big_order();
    let mut group = c.benchmark_group("condition_evaluation");
    for (name, condition) in accepted_cases() {
        let captured = CapturedValues::capture(&condition, &[("order", FieldValue::serde(&order))]);
        let evaluated = captured.evaluate(&condition);
        println!(
            "{name}: {:?}, metered {} units (estimate {}), {} bytes allocated",
            evaluated.result,
            evaluated.cost,
            condition.estimated_cost(),
            evaluated.allocated_bytes
        );
        group.bench_function(name, |b| {
            b.iter(|| black_box(captured.evaluate(&condition)))
        });
    }
    group.finish();
}

/// Whole hits on the reference order: the anchor (an unconditional capture) and each case,
/// armed on a real point.
fn hits(c: &mut Criterion) {
    let engine = loupe_agent::Engine::global();
    engine
        .configure(EngineConfig {
            service: "bench".into(),
            // The budget and rate guards would skip most hits of a tight loop; the benchmark
            // measures the condition itself.
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
    for (label, order) in [
        ("reference", order::Order::reference(1)),
        ("at_limits", big_order()),
        ("at_limits_labelled_text", big_order_of_labelled_text()),
        ("at_limits_open_labels", big_order_of_open_labels()),
        (
            "at_limits_password_labels",
            big_order_with_skus_of("password: a1 password: b2 "),
        ),
        (
            "at_limits_assignments",
            big_order_with_skus_of("password=a1 user=b2 "),
        ),
    ] {
        let mut group = c.benchmark_group(format!("condition_hit_{label}"));
        let cases = accepted_cases();
        let anchor = std::iter::once(("anchor_no_condition", None));
        let cases = cases
            .iter()
            .map(|(name, condition)| (*name, Some(condition.source())));
        for (name, condition) in anchor.chain(cases) {
            let arm = || {
                let mut spec = CaptureSpec::new("bench", "bench.conditions")
                    .max_snapshots(u64::MAX)
                    .duration(Duration::from_secs(3_600))
                    .rate(RateLimit {
                        per_second: 1e12,
                        burst: u32::MAX,
                    });
                if let Some(condition) = condition {
                    spec = spec.condition(condition);
                }
                loupe_agent::arm(spec).expect("armed")
            };
            // A condition whose hits run out of budget ends its capture on the third in a
            // row. Each sample starts with two hits on a fresh capture; if either ran out,
            // the sample goes on two hits per capture, armed again untimed in between, so
            // every timed hit is a full one; otherwise it goes on in batches on that capture.
            let mut outcomes = Outcomes::default();
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    let mut remaining = iters;
                    let mut stream = arm();
                    let mut batch_size = 2;
                    while remaining > 0 {
                        let batch = remaining.min(batch_size);
                        let start = Instant::now();
                        for _ in 0..batch {
                            place_order(black_box(&order));
                        }
                        timed += start.elapsed();
                        while stream.try_next().is_some() {}
                        remaining -= batch;
                        if stream.status().counters.condition_errors == 0 {
                            batch_size = 256;
                        } else {
                            outcomes.add(&stream.status(), condition.is_some());
                            engine.disarm(
                                &stream.status().capture_id,
                                loupe_agent::EndReason::Disarmed,
                            );
                            stream = arm();
                        }
                    }
                    outcomes.add(&stream.status(), condition.is_some());
                    engine.disarm(
                        &stream.status().capture_id,
                        loupe_agent::EndReason::Disarmed,
                    );
                    timed
                })
            });
            println!("{label}/{name}: {outcomes}");
        }
        group.finish();
    }
}

/// How the timed hits of one case ended, over all its armings.
#[derive(Default)]
struct Outcomes {
    hits: u64,
    condition_false: u64,
    over_budget: u64,
    last_error: Option<String>,
}

impl Outcomes {
    fn add(&mut self, status: &loupe_agent::CaptureStatus, conditional: bool) {
        let counters = &status.counters;
        assert_eq!(counters.skipped_cpu_budget, 0, "{counters:?}");
        self.hits += counters.hits;
        self.condition_false += counters.condition_false;
        self.over_budget += counters.condition_errors;
        if conditional {
            // Every hit is decided false, or stopped at the per-hit budget.
            assert_eq!(
                counters.condition_false + counters.condition_errors,
                counters.hits,
                "{status:?}"
            );
        }
        if let Some(error) = &status.last_condition_error {
            assert!(error.contains("budget"), "{error}");
            self.last_error = Some(error.clone());
        }
    }
}

impl std::fmt::Display for Outcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} hits: {} decided false, {} stopped at the per-hit budget",
            self.hits, self.condition_false, self.over_budget
        )?;
        if let Some(error) = &self.last_error {
            write!(f, " ({error})")?;
        }
        Ok(())
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = evaluation, hits
}
criterion_main!(benches);

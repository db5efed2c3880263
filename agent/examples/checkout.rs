//! A checkout service with snapshot points, inspected in-process.
//!
//! Worker threads process a stream of orders, each inside a `request` span carrying a
//! `request_id`. While they run, the program arms `checkout.apply_discount` with a condition
//! (`order.total_cents > 10000u && order.user.tier == "Gold"`), prints the snapshots it gets as
//! trees — note `card_token` and the `api_key` coupon come out redacted — and then captures
//! exactly one request by its correlation id. Finally it shows what the points cost.
//!
//! `cargo run --release -p loupe-agent --example checkout`

#[path = "../fixtures/order.rs"]
mod order;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use loupe_agent::{CaptureSpec, CorrelationLayer, PointRegistry, RateLimit, Secret, snapshot};
use loupe_proto::v1::{self as pb, value::Kind};
use tracing_subscriber::layer::SubscriberExt;

#[derive(Debug)]
#[allow(dead_code)] // read through Debug by the snapshot
struct Coupon {
    code: String,
    api_key: &'static str,
}

fn apply_discount(order: &order::Order, coupon: Option<&Coupon>) -> u64 {
    let discount_pct = match order.user.tier {
        order::Tier::Gold => 10,
        order::Tier::Silver => 5,
        order::Tier::Free => 0,
    };
    snapshot!("checkout.apply_discount", order, ?coupon, discount_pct);
    order.total_cents * (100 - discount_pct) / 100
}

fn charge(order: &order::Order, amount_cents: u64, processor_key: &Secret<String>) {
    snapshot!(
        "payments.charge",
        order_id = order.id,
        amount_cents,
        processor_key
    );
}

fn serve(worker: u64, stop: &AtomicBool, served: &AtomicU64) {
    let processor_key = Secret::new("pk_live_never_leaves".to_owned());
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let id = worker * 1_000_000 + n;
        let request_id = format!("r-{id:x}");
        let span = tracing::info_span!("request", request_id = request_id.as_str(), worker);
        let _entered = span.enter();
        let mut order = order::Order::reference(id);
        order.total_cents = 2_000 + (id * 7_919) % 20_000;
        let coupon = n.is_multiple_of(4).then(|| Coupon {
            code: format!("SPRING{}", n % 10),
            api_key: "AKIAIOSFODNN7EXAMPLE",
        });
        let amount = apply_discount(&order, coupon.as_ref());
        charge(&order, amount, &processor_key);
        served.fetch_add(1, Ordering::Relaxed);
        n += 1;
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn main() {
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(CorrelationLayer::new()),
    )
    .expect("no other subscriber");

    println!("Snapshot points in this process:");
    for point in PointRegistry::global().points() {
        let site = point.callsites()[0];
        println!(
            "  {:<26} {}:{}  fields: {}",
            point.name(),
            site.file(),
            site.line(),
            point.field_names().join(", ")
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (1..=4)
        .map(|worker| {
            let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
            std::thread::Builder::new()
                .name(format!("worker-{worker}"))
                .spawn(move || serve(worker, &stop, &served))
                .expect("spawn worker")
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));

    let condition = r#"order.total_cents > 10000u && order.user.tier == "Gold""#;
    println!("\nArming checkout.apply_discount where {condition} (3 snapshots)…");
    let started = Instant::now();
    let mut stream = loupe_agent::arm(
        CaptureSpec::new("demo-session", "checkout.apply_discount")
            .condition(condition)
            .max_snapshots(3)
            .duration(Duration::from_secs(10)),
    )
    .expect("arm checkout.apply_discount");
    let mut last_request = None;
    while let Some(snapshot) = stream.blocking_next() {
        print!("{}", render(&snapshot));
        last_request = request_id(&snapshot);
    }
    let status = stream.status();
    println!(
        "capture ended ({}) after {:.0?}: {} hits, {} sent, {} condition false, {} rate-limited",
        status.ended.map_or("still armed".into(), |r| r.to_string()),
        started.elapsed(),
        status.counters.hits,
        status.counters.sent,
        status.counters.condition_false,
        status.counters.skipped_rate,
    );

    println!("\nArming payments.charge (processor_key is a Secret<String>)…");
    let mut stream = loupe_agent::arm(
        CaptureSpec::new("demo-session", "payments.charge")
            .max_snapshots(1)
            .rate(RateLimit::DEFAULT),
    )
    .expect("arm payments.charge");
    if let Some(snapshot) = stream.blocking_next() {
        print!("{}", render(&snapshot));
    }

    if let Some(request) = last_request {
        // Each request id is used once, so this capture can only time out; it shows the
        // exact-request condition, and how a capture that finds nothing ends by itself.
        let condition = format!(r#"ctx.request_id == "{request}""#);
        println!("\nArming payments.charge where {condition} for 1 s (that request is over)…");
        let mut stream = loupe_agent::arm(
            CaptureSpec::new("demo-session", "payments.charge")
                .condition(condition)
                .duration(Duration::from_secs(1)),
        )
        .expect("arm by request id");
        let got = std::iter::from_fn(|| stream.blocking_next()).count();
        let status = stream.status();
        println!(
            "{got} snapshots; ended: {}; {} hits checked",
            status.ended.map_or("still armed".into(), |r| r.to_string()),
            status.counters.hits
        );
    }

    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("worker");
    }
    println!(
        "\n{} requests served while inspected. Disarmed points cost one relaxed load; see `cargo bench -p loupe-agent --bench capture`.",
        served.load(Ordering::Relaxed)
    );
}

fn request_id(snapshot: &pb::Snapshot) -> Option<String> {
    let trace = snapshot.trace.as_ref()?;
    let field = trace.span_fields.iter().find(|f| f.name == "request_id")?;
    match field.value.as_ref()?.kind.as_ref()? {
        Kind::String(s) => Some(s.value.clone()),
        _ => None,
    }
}

/// A snapshot as an indented tree.
fn render(snapshot: &pb::Snapshot) -> String {
    let mut out = String::new();
    let thread = snapshot.thread.clone().unwrap_or_default();
    let trace = snapshot.trace.clone().unwrap_or_default();
    out.push_str(&format!(
        "\n── {} #{}  {}/{}  thread {} ({})  cost {} ns\n",
        snapshot.point,
        snapshot.sequence,
        snapshot.service,
        snapshot.instance,
        thread.name,
        thread.id,
        snapshot.capture_cost_ns
    ));
    for field in &trace.span_fields {
        out.push_str(&format!(
            "   ctx.{} = {}\n",
            field.name,
            scalar(field.value.as_ref())
        ));
    }
    for field in &snapshot.fields {
        render_value(&mut out, 1, &field.name, field.value.as_ref());
    }
    for redacted in &snapshot.redacted {
        out.push_str(&format!(
            "   redacted {} ({})\n",
            redacted.path, redacted.reason
        ));
    }
    out
}

fn render_value(out: &mut String, depth: usize, name: &str, value: Option<&pb::Value>) {
    let indent = "   ".repeat(depth);
    let kind = value.and_then(|v| v.kind.as_ref());
    match kind {
        Some(Kind::Struct(s)) => {
            out.push_str(&format!("{indent}{name}: {}\n", s.type_name));
            for field in &s.fields {
                render_value(out, depth + 1, &field.name, field.value.as_ref());
            }
        }
        Some(Kind::List(list)) => {
            out.push_str(&format!(
                "{indent}{name}: [{} of {}]\n",
                list.items.len(),
                list.total_len
            ));
            for (i, item) in list.items.iter().enumerate() {
                render_value(out, depth + 1, &format!("[{i}]"), Some(item));
            }
        }
        _ => out.push_str(&format!("{indent}{name} = {}\n", scalar(value))),
    }
}

fn scalar(value: Option<&pb::Value>) -> String {
    match value.and_then(|v| v.kind.as_ref()) {
        None | Some(Kind::Null(_)) => "null".into(),
        Some(Kind::Bool(b)) => b.to_string(),
        Some(Kind::Int(i)) => i.to_string(),
        Some(Kind::Uint(u)) => u.to_string(),
        Some(Kind::Float(f)) => f.to_string(),
        Some(Kind::String(s)) if s.truncated => {
            format!("{:?}… ({} bytes)", s.value, s.original_len)
        }
        Some(Kind::String(s)) => format!("{:?}", s.value),
        Some(Kind::Bytes(b)) => format!("<{} bytes>", b.original_len),
        Some(Kind::Enum(e)) if e.fields.is_empty() => format!("{}::{}", e.type_name, e.variant),
        Some(Kind::Enum(e)) => format!("{}::{}(…)", e.type_name, e.variant),
        Some(Kind::Map(m)) => format!("{{{} entries}}", m.total_len),
        Some(Kind::Redacted(r)) => format!("‹redacted: {}›", r.reason),
        Some(Kind::NotCaptured(n)) => format!("‹not captured: {:?} {}›", n.reason(), n.detail),
        Some(other) => format!("{other:?}"),
    }
}

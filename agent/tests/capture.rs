//! Arming points and reading their snapshots: fields by sigil, counts, deadlines, conditions,
//! correlation context, several captures and several callsites per point.

#[path = "../fixtures/order.rs"]
mod order;
mod support;

use std::time::Duration;

use loupe_agent::{ArmError, CaptureSpec, EndReason, PointRegistry, RateLimit, snapshot};
use loupe_proto::v1::value::Kind;
use support::*;

fn fast(spec: CaptureSpec) -> CaptureSpec {
    spec.rate(RateLimit {
        per_second: 1_000.0,
        burst: 100,
    })
}

fn checkout(order: &order::Order, coupon: Option<&str>, status: u16) {
    let user_id = order.user.id;
    snapshot!("test.checkout", order, user_id, ?coupon, %status, doubled = user_id * 2);
}

#[test]
fn points_are_listed_before_any_is_hit() {
    fn never_called() {
        snapshot!("test.never_hit", answer = 42);
    }
    let _ = never_called;
    let point = PointRegistry::global()
        .get("test.never_hit")
        .expect("registered at link time");
    assert_eq!(point.field_names(), ["answer"]);
    let site = point.callsites()[0];
    assert!(site.file().ends_with("capture.rs"));
    assert!(site.line() > 0);
    assert!(site.module_path().contains("capture"));
}

#[test]
fn captures_fields_by_serde_debug_and_display() {
    let mut stream =
        loupe_agent::arm(fast(CaptureSpec::new("s-1", "test.checkout")).max_snapshots(2))
            .expect("armed");
    let order = order::Order::reference(7);
    for _ in 0..5 {
        checkout(&order, Some("SPRING"), 201);
    }
    let snapshots = drain(&mut stream);
    assert_eq!(snapshots.len(), 2);
    assert_eq!(stream.status().ended, Some(EndReason::Completed));
    let first = &snapshots[0];
    assert_eq!(first.point, "test.checkout");
    assert_eq!(first.session_id, "s-1");
    assert_eq!((first.sequence, snapshots[1].sequence), (1, 2));
    let order_value = field(first, "order");
    assert_eq!(member(order_value, "id"), &Kind::Uint(7));
    let user = member(order_value, "user");
    assert_eq!(string(member(user, "email")).value, "ada@example.com");
    match member(user, "tier") {
        Kind::Enum(tier) => assert_eq!(tier.variant, "Silver"),
        other => panic!("tier: {other:?}"),
    }
    assert_eq!(
        redaction_reason(member(order_value, "card_token")),
        "name:token"
    );
    assert!(
        first.redacted.iter().any(|r| r.path == "order.card_token"),
        "{:?}",
        first.redacted
    );
    assert_eq!(string(field(first, "coupon")).value, "Some(\"SPRING\")");
    assert_eq!(string(field(first, "status")).value, "201");
    assert_eq!(field(first, "doubled"), &Kind::Uint(2 * (90_210 + 7)));
    let location = first.location.as_ref().expect("location");
    assert!(location.file.ends_with("capture.rs"));
    assert!(first.thread.as_ref().expect("thread").id > 0);
    assert!(first.wall_time_unix_nanos > 1_700_000_000_000_000_000);
    assert!(first.capture_cost_ns > 0);
}

#[test]
fn disarmed_points_do_not_evaluate_their_fields() {
    fn expensive(calls: &std::cell::Cell<u32>) -> u32 {
        calls.set(calls.get() + 1);
        7
    }
    let calls = std::cell::Cell::new(0);
    for _ in 0..10 {
        snapshot!("test.lazy_fields", value = expensive(&calls));
    }
    assert_eq!(calls.get(), 0);
    let mut stream =
        loupe_agent::arm(fast(CaptureSpec::new("s", "test.lazy_fields")).max_snapshots(1))
            .expect("armed");
    snapshot!("test.lazy_fields", value = expensive(&calls));
    assert_eq!(calls.get(), 1, "evaluated once per armed hit");
    assert_eq!(drain(&mut stream).len(), 1);
}

#[test]
fn unknown_points_and_bad_requests_are_refused_clearly() {
    let err = loupe_agent::arm(CaptureSpec::new("s", "test.checkut")).expect_err("unknown");
    assert!(matches!(err, ArmError::UnknownPoint { .. }));
    assert!(
        err.to_string().contains("did you mean `test.checkout`"),
        "{err}"
    );
    let err = loupe_agent::arm(CaptureSpec::new("s", "test.checkout").max_snapshots(0))
        .expect_err("zero");
    assert!(matches!(err, ArmError::InvalidRequest(_)));
    let err = loupe_agent::arm(CaptureSpec::new("s", "test.checkout").condition("order.id >"))
        .expect_err("syntax");
    assert!(err.to_string().contains("line 1, column"), "{err}");
    let err = loupe_agent::arm(CaptureSpec::new("s", "test.checkout").condition("ordr.id > 1"))
        .expect_err("typo");
    assert!(err.to_string().contains("`ordr`"), "{err}");
    let err = loupe_agent::arm(CaptureSpec::new("s", "test.checkout").redact_patterns(["("]))
        .expect_err("bad regex");
    assert!(matches!(err, ArmError::Redaction(_)), "{err}");
}

#[test]
fn conditions_select_hits_and_count_the_rest() {
    fn hit(total: u64, label: &str) {
        snapshot!("test.condition", total, label);
    }
    let mut stream = loupe_agent::arm(
        fast(CaptureSpec::new("s", "test.condition"))
            .condition("total > 100u && label.startsWith('keep')")
            .max_snapshots(3),
    )
    .expect("armed");
    for i in 0..10u64 {
        hit(i * 30, if i % 2 == 0 { "keep" } else { "drop" });
    }
    stream.disarm();
    let snapshots = drain(&mut stream);
    let totals: Vec<_> = snapshots
        .iter()
        .map(|s| field(s, "total").clone())
        .collect();
    assert_eq!(totals, [Kind::Uint(120), Kind::Uint(180), Kind::Uint(240)]);
    let status = stream.status();
    // 0, 30, 60, 90, 150 and 210 fail the condition; 120, 180 and 240 complete the capture.
    // The last hit (270) comes after the end: it is either skipped as such, or not seen at
    // all if the agent thread already disarmed the point.
    assert_eq!(status.counters.condition_false, 6);
    assert_eq!(status.counters.sent, 3);
    assert_eq!(status.counters.hits, 9 + status.counters.skipped_after_end);
    assert!(status.counters.skipped_after_end <= 1);
}

#[test]
fn condition_errors_are_counted_and_reported() {
    fn hit(value: &str) {
        snapshot!("test.condition_error", value);
    }
    // Type mismatch: a string compared with an int fails at evaluation time.
    let mut stream = loupe_agent::arm(
        fast(CaptureSpec::new("s", "test.condition_error"))
            .condition("value > 3")
            .duration(Duration::from_millis(300)),
    )
    .expect("armed");
    for _ in 0..4 {
        hit("text");
    }
    assert!(drain(&mut stream).is_empty());
    let status = stream.status();
    assert_eq!(status.counters.condition_errors, 4);
    assert_eq!(status.ended, Some(EndReason::DeadlineReached));
    let error = status.last_condition_error.expect("error kept");
    assert!(error.contains("evaluate"), "{error}");
}

/// A condition that reads nothing is answered when the capture is armed: a hit counts its
/// answer without running any field's `Serialize`; one that would fail on every hit is refused.
#[test]
fn a_constant_condition_is_answered_at_arm_time() {
    struct Counted<'c>(&'c std::cell::Cell<u32>);
    impl serde::Serialize for Counted<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            self.0.set(self.0.get() + 1);
            serializer.serialize_u64(1)
        }
    }
    fn hit(value: &Counted<'_>) {
        snapshot!("test.condition_constant", value);
    }
    let serialized = std::cell::Cell::new(0);
    let mut stream = loupe_agent::arm(
        fast(CaptureSpec::new("s", "test.condition_constant"))
            .condition("false || 2 < 1")
            .duration(Duration::from_millis(300)),
    )
    .expect("armed");
    for _ in 0..5 {
        hit(&Counted(&serialized));
    }
    assert!(drain(&mut stream).is_empty());
    assert_eq!(stream.status().counters.condition_false, 5);
    assert_eq!(
        serialized.get(),
        0,
        "no field is read for a constant answer"
    );

    for (condition, why) in [("1 / 0 == 0", "division by zero"), ("1 + 1", "not a bool")] {
        let refused = loupe_agent::arm(
            fast(CaptureSpec::new("s", "test.condition_constant")).condition(condition),
        )
        .expect_err("refused at arm time");
        let message = refused.to_string();
        assert!(message.contains("every hit"), "{condition}: {message}");
        assert!(message.contains(why), "{condition}: {message}");
    }
}

#[test]
fn conditions_never_see_redacted_values() {
    #[derive(serde::Serialize)]
    struct Login<'a> {
        user: &'a str,
        password: &'a str,
    }
    fn hit(login: &Login<'_>) {
        snapshot!("test.condition_secret", login);
    }
    let mut stream = loupe_agent::arm(
        fast(CaptureSpec::new("s", "test.condition_secret"))
            .condition("login.password == 'hunter2' || login.password.startsWith('h')")
            .duration(Duration::from_millis(300)),
    )
    .expect("armed");
    hit(&Login {
        user: "ada",
        password: "hunter2",
    });
    assert!(drain(&mut stream).is_empty(), "a secret cannot be probed");
    let status = stream.status();
    assert_eq!(
        status.counters.condition_false + status.counters.condition_errors,
        1
    );
}

#[test]
fn correlation_context_selects_one_request() {
    use tracing_subscriber::layer::SubscriberExt;
    fn handle(request: &str, amount: u64) {
        let span = tracing::info_span!("request", request_id = request, trace_id = "4bf92f35");
        let _entered = span.enter();
        snapshot!("test.correlated", amount);
    }
    let subscriber = tracing_subscriber::registry().with(loupe_agent::CorrelationLayer::new());
    tracing::subscriber::with_default(subscriber, || {
        let mut stream = loupe_agent::arm(
            fast(CaptureSpec::new("s", "test.correlated"))
                .condition(r#"ctx.request_id == "r-7f3a""#)
                .max_snapshots(1),
        )
        .expect("armed");
        for (i, request) in ["r-1", "r-2", "r-7f3a", "r-3"].iter().enumerate() {
            handle(request, i as u64);
        }
        let snapshots = drain(&mut stream);
        assert_eq!(snapshots.len(), 1);
        let snapshot = &snapshots[0];
        assert_eq!(field(snapshot, "amount"), &Kind::Uint(2));
        let trace = snapshot.trace.as_ref().expect("trace");
        assert_eq!(trace.trace_id, "4bf92f35");
        assert!(!trace.span_id.is_empty());
        let request = trace
            .span_fields
            .iter()
            .find(|f| f.name == "request_id")
            .expect("request_id");
        assert_eq!(string(kind(request.value.as_ref())).value, "r-7f3a");
    });
}

/// A snapshot's record is recycled: read by the stream, it comes back for the next hit to fill
/// in place. Nothing of the snapshot it carried before may show in the next one: not its
/// trace context when the next hit is in no span, not its thread when another thread hits.
#[test]
fn a_recycled_record_carries_nothing_of_its_last_snapshot() {
    use tracing_subscriber::layer::SubscriberExt;
    fn pay(amount: u64) {
        snapshot!("test.recycled", amount);
    }
    let subscriber = tracing_subscriber::registry().with(loupe_agent::CorrelationLayer::new());
    let mut stream =
        loupe_agent::arm(fast(CaptureSpec::new("s", "test.recycled")).max_snapshots(2))
            .expect("armed");
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("request", request_id = "r-1", trace_id = "4bf92f35");
        span.in_scope(|| pay(1));
    });
    let first = stream.blocking_next().expect("the first snapshot");
    let trace = first.trace.as_ref().expect("the first hit's trace context");
    assert_eq!(trace.trace_id, "4bf92f35");
    assert!(!trace.span_id.is_empty());
    assert!(!trace.span_fields.is_empty());
    std::thread::Builder::new()
        .name("second-hitter".into())
        .spawn(|| pay(2))
        .expect("spawned")
        .join()
        .expect("the second hit");
    let second = stream.blocking_next().expect("the second snapshot");
    assert_eq!(field(&second, "amount"), &Kind::Uint(2));
    let trace = second.trace.unwrap_or_default();
    assert_eq!(trace.trace_id, "", "{trace:?}");
    assert_eq!(trace.span_id, "", "{trace:?}");
    assert!(trace.span_fields.is_empty(), "{trace:?}");
    let thread = second.thread.expect("the hit's thread");
    assert_eq!(thread.name, "second-hitter");
    assert_ne!(Some(thread.id), first.thread.map(|t| t.id));
    assert_eq!(second.sequence, 2);
}

#[test]
fn ctx_carries_the_identifiers_and_what_the_capture_reads() {
    use tracing_subscriber::layer::SubscriberExt;
    fn handle() {
        let span = tracing::info_span!(
            "request",
            request_id = "r-1",
            tier = "gold",
            plan = "pro",
            unasked_detail = "not for snapshots",
            method = %"POST",
        );
        let _entered = span.enter();
        snapshot!("test.ctx_selection", n = 1);
    }
    let carried = |spec: CaptureSpec| {
        let mut stream = loupe_agent::arm(fast(spec).max_snapshots(1)).expect("armed");
        handle();
        let snapshot = drain(&mut stream).remove(0);
        let trace = snapshot.trace.expect("trace");
        let mut names: Vec<String> = trace.span_fields.into_iter().map(|f| f.name).collect();
        names.sort();
        names
    };
    let subscriber = tracing_subscriber::registry().with(loupe_agent::CorrelationLayer::new());
    tracing::subscriber::with_default(subscriber, || {
        let spec = || CaptureSpec::new("s", "test.ctx_selection");
        assert_eq!(carried(spec()), ["request_id"], "the default set");
        assert_eq!(
            carried(
                spec()
                    .span_fields(["tier"])
                    .condition(r#"ctx.plan == "pro""#)
            ),
            ["plan", "request_id", "tier"],
            "asked for, and read by the condition"
        );
        assert_eq!(
            carried(spec().span_fields(["*"])),
            ["method", "plan", "request_id", "tier", "unasked_detail"],
            "every field"
        );
    });
    let service = tracing_subscriber::registry()
        .with(loupe_agent::CorrelationLayer::new().with_span_fields(&["tier"]));
    tracing::subscriber::with_default(service, || {
        assert_eq!(
            carried(CaptureSpec::new("s", "test.ctx_selection")),
            ["request_id", "tier"],
            "the service's own identifiers"
        );
    });
}

#[test]
fn a_capture_cannot_ask_for_unbounded_span_fields() {
    let many: Vec<String> = (0..33).map(|i| format!("f{i}")).collect();
    let error = loupe_agent::arm(CaptureSpec::new("s", "test.ctx_selection").span_fields(many))
        .expect_err("too many");
    assert!(matches!(error, ArmError::InvalidRequest(_)), "{error}");
    let error = loupe_agent::arm(CaptureSpec::new("s", "test.ctx_selection").span_fields([""]))
        .expect_err("empty");
    assert!(matches!(error, ArmError::InvalidRequest(_)), "{error}");
}

#[test]
fn span_fields_are_redacted_too() {
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber = tracing_subscriber::registry().with(loupe_agent::CorrelationLayer::new());
    tracing::subscriber::with_default(subscriber, || {
        let mut stream = loupe_agent::arm(
            fast(CaptureSpec::new("s", "test.span_secret"))
                .max_snapshots(1)
                .span_fields(["authorization", "user"]),
        )
        .expect("armed");
        let span = tracing::info_span!(
            "request",
            authorization = "Bearer abc.def.ghi",
            user = "ada"
        );
        let _entered = span.enter();
        snapshot!("test.span_secret", n = 1);
        let snapshot = drain(&mut stream).remove(0);
        let trace = snapshot.trace.expect("trace");
        let auth = trace
            .span_fields
            .iter()
            .find(|f| f.name == "authorization")
            .expect("present, withheld");
        assert!(matches!(kind(auth.value.as_ref()), Kind::Redacted(_)));
        assert!(
            snapshot
                .redacted
                .iter()
                .any(|r| r.path == "ctx.authorization")
        );
    });
}

#[test]
fn two_callsites_with_one_name_are_one_point() {
    fn first() {
        snapshot!("test.shared_name", site = "first");
    }
    fn second() {
        snapshot!("test.shared_name", site = "second");
    }
    let point = PointRegistry::global()
        .get("test.shared_name")
        .expect("point");
    assert_eq!(point.callsites().len(), 2);
    let mut stream =
        loupe_agent::arm(fast(CaptureSpec::new("s", "test.shared_name")).max_snapshots(2))
            .expect("armed");
    first();
    second();
    let sites: Vec<_> = drain(&mut stream)
        .iter()
        .map(|s| string(field(s, "site")).value.clone())
        .collect();
    assert_eq!(sites, ["first", "second"]);
}

#[test]
fn several_captures_on_one_point_each_get_their_own_snapshots() {
    fn hit(n: u64) {
        snapshot!("test.many_captures", n);
    }
    let mut evens = loupe_agent::arm(
        fast(CaptureSpec::new("a", "test.many_captures"))
            .condition("n % 2u == 0u")
            .max_snapshots(3),
    )
    .expect("armed");
    let mut all =
        loupe_agent::arm(fast(CaptureSpec::new("b", "test.many_captures")).max_snapshots(4))
            .expect("armed");
    for n in 0..10 {
        hit(n);
    }
    let evens: Vec<_> = drain(&mut evens)
        .iter()
        .map(|s| field(s, "n").clone())
        .collect();
    let all: Vec<_> = drain(&mut all)
        .iter()
        .map(|s| field(s, "n").clone())
        .collect();
    assert_eq!(evens, [Kind::Uint(0), Kind::Uint(2), Kind::Uint(4)]);
    assert_eq!(
        all,
        [Kind::Uint(0), Kind::Uint(1), Kind::Uint(2), Kind::Uint(3)]
    );
}

#[test]
fn a_capture_ends_at_its_deadline_and_disarms_the_point() {
    fn hit() {
        snapshot!("test.deadline", x = 1);
    }
    let mut stream = loupe_agent::arm(
        fast(CaptureSpec::new("s", "test.deadline"))
            .max_snapshots(1_000)
            .duration(Duration::from_millis(200)),
    )
    .expect("armed");
    hit();
    let started = std::time::Instant::now();
    let snapshots = drain(&mut stream);
    assert_eq!(snapshots.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(stream.status().ended, Some(EndReason::DeadlineReached));
    let point = PointRegistry::global().get("test.deadline").expect("point");
    assert!(wait_for(Duration::from_secs(2), || !point.callsites()[0].is_armed()));
}

#[test]
fn dropping_the_stream_disarms_the_point() {
    fn hit() {
        snapshot!("test.drop_stream", x = 1);
    }
    let stream = loupe_agent::arm(CaptureSpec::new("s", "test.drop_stream")).expect("armed");
    let point = PointRegistry::global()
        .get("test.drop_stream")
        .expect("point");
    assert!(point.callsites()[0].is_armed());
    drop(stream);
    assert!(!point.callsites()[0].is_armed());
    hit();
}

#[test]
fn disarming_a_session_ends_its_captures_only() {
    fn hit() {
        snapshot!("test.revoke", x = 1);
    }
    let mut revoked = loupe_agent::arm(CaptureSpec::new("revoked", "test.revoke")).expect("armed");
    let mut kept = loupe_agent::arm(fast(CaptureSpec::new("kept", "test.revoke")).max_snapshots(1))
        .expect("armed");
    let ended = loupe_agent::Engine::global().disarm_session("revoked", EndReason::Disarmed);
    assert_eq!(ended, 1);
    hit();
    assert!(drain(&mut revoked).is_empty());
    assert_eq!(revoked.status().ended, Some(EndReason::Disarmed));
    assert_eq!(drain(&mut kept).len(), 1);
}

#[test]
fn the_rate_limit_skips_and_counts() {
    fn hit() {
        snapshot!("test.rate", x = 1);
    }
    let mut stream = loupe_agent::arm(
        CaptureSpec::new("s", "test.rate")
            .rate(RateLimit {
                per_second: 1.0,
                burst: 2,
            })
            .max_snapshots(100)
            .duration(Duration::from_millis(300)),
    )
    .expect("armed");
    for _ in 0..10 {
        hit();
    }
    assert_eq!(drain(&mut stream).len(), 2);
    let counters = stream.status().counters;
    assert_eq!(counters.skipped_rate, 8);
    assert_eq!(counters.hits, 10);
}

#[test]
fn a_full_hand_off_drops_and_counts_and_sequence_gaps_show_it() {
    fn hit(n: u32) {
        snapshot!("test.queue_full", n);
    }
    // The default queue holds 64 snapshots; nobody reads while 100 are taken.
    let mut stream = loupe_agent::arm(
        fast(CaptureSpec::new("s", "test.queue_full"))
            .rate(RateLimit {
                per_second: 1e6,
                burst: 1_000,
            })
            .max_snapshots(1_000)
            .duration(Duration::from_millis(500)),
    )
    .expect("armed");
    for n in 0..100 {
        hit(n);
    }
    let snapshots = drain(&mut stream);
    let counters = stream.status().counters;
    assert_eq!(snapshots.len() as u64, counters.sent);
    assert_eq!(counters.sent + counters.dropped_queue_full, 100);
    assert!(counters.dropped_queue_full > 0);
    // Later snapshots report the drops in their counters.
    let last = snapshots.last().expect("some");
    assert_eq!(
        last.drops.as_ref().expect("drops").dropped_queue_full,
        0,
        "the queue filled after the last accepted snapshot"
    );
}

#[test]
fn reentrant_hits_are_skipped_and_counted() {
    struct Nosy;
    impl serde::Serialize for Nosy {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            // A Serialize impl that itself passes the point.
            snapshot!("test.reentrant", inner = 1);
            s.serialize_str("nosy")
        }
    }
    fn hit() {
        let nosy = Nosy;
        snapshot!("test.reentrant", nosy);
    }
    let mut stream =
        loupe_agent::arm(fast(CaptureSpec::new("s", "test.reentrant")).max_snapshots(1))
            .expect("armed");
    hit();
    let snapshots = drain(&mut stream);
    assert_eq!(snapshots.len(), 1);
    assert_eq!(string(field(&snapshots[0], "nosy")).value, "nosy");
    assert_eq!(stream.status().counters.skipped_reentrant, 1);
}

#[test]
fn conditions_on_part_of_a_field_still_capture_all_of_it() {
    fn hit(order: &order::Order, headers: &std::collections::BTreeMap<String, String>) {
        snapshot!("test.projected", order, headers);
    }
    let mut headers = std::collections::BTreeMap::new();
    headers.insert("host".to_owned(), "shop.example".to_owned());
    headers.insert("accept".to_owned(), "text/html".to_owned());
    let mut stream = loupe_agent::arm(
        fast(CaptureSpec::new("s", "test.projected"))
            .condition(r#"order.total_cents > 8000u && headers.host == "shop.example""#)
            .max_snapshots(1),
    )
    .expect("armed");
    let mut small = order::Order::reference(1);
    small.total_cents = 10;
    hit(&small, &headers);
    let mut large = order::Order::reference(2);
    large.total_cents = 9_000;
    hit(&large, &headers);
    let snapshots = drain(&mut stream);
    assert_eq!(snapshots.len(), 1);
    let snapshot = &snapshots[0];
    let order = field(snapshot, "order");
    assert_eq!(member(order, "total_cents"), &Kind::Uint(9_000));
    // The parts the condition did not read are captured too, once it said yes.
    assert_eq!(
        string(member(member(order, "user"), "email")).value,
        "ada@example.com"
    );
    match member(order, "items") {
        Kind::List(items) => assert_eq!(items.items.len(), 5),
        other => panic!("{other:?}"),
    }
    match field(snapshot, "headers") {
        Kind::Map(map) => assert_eq!(map.entries.len(), 2),
        other => panic!("{other:?}"),
    }
    // Redactions are listed once, not once per pass.
    assert_eq!(
        snapshot
            .redacted
            .iter()
            .map(|r| r.path.as_str())
            .collect::<Vec<_>>(),
        ["order.card_token"]
    );
    let status = stream.status();
    assert_eq!(status.counters.condition_false, 1);
}

#[test]
fn a_condition_never_serializes_what_it_does_not_read_on_a_false_hit() {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SERIALIZED: AtomicU32 = AtomicU32::new(0);
    struct Expensive;
    impl serde::Serialize for Expensive {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            SERIALIZED.fetch_add(1, Ordering::Relaxed);
            s.serialize_str("expensive")
        }
    }
    #[derive(serde::Serialize)]
    struct Request {
        amount: u64,
        payload: Expensive,
    }
    fn hit(request: &Request) {
        snapshot!("test.projected_skip", request);
    }
    let mut stream = loupe_agent::arm(
        fast(CaptureSpec::new("s", "test.projected_skip"))
            .condition("request.amount > 100u")
            .max_snapshots(1),
    )
    .expect("armed");
    hit(&Request {
        amount: 1,
        payload: Expensive,
    });
    assert_eq!(
        SERIALIZED.load(Ordering::Relaxed),
        0,
        "false hit: payload untouched"
    );
    hit(&Request {
        amount: 500,
        payload: Expensive,
    });
    let snapshots = drain(&mut stream);
    assert_eq!(snapshots.len(), 1);
    assert_eq!(
        string(member(field(&snapshots[0], "request"), "payload")).value,
        "expensive"
    );
    assert_eq!(SERIALIZED.load(Ordering::Relaxed), 1);
}

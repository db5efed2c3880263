//! Points declared at start-up, beside `snapshot!` callsites: validated like planted ones,
//! listed and armed the same way, captured with the same redaction, and refused once the
//! registry is in use. One test, because the registry is built once per process and the order
//! of declaration and first use is what is under test.

mod support;

use std::time::Duration;

use loupe_agent::FieldValue;
use loupe_agent::point::{FieldKind, MAX_DECLARED_FIELDS, NameError};
use loupe_agent::{
    CaptureSpec, CorrelationLayer, DeclareError, DeclaredPoint, PointRegistry, RateLimit,
    ThreadInfo, snapshot,
};
use support::*;
use tracing_subscriber::layer::SubscriberExt;

fn declared(name: &str, fields: &[(&str, FieldKind)]) -> DeclaredPoint {
    DeclaredPoint {
        name: name.to_owned(),
        file: "inventory.c".to_owned(),
        line: 42,
        module_path: "reserve_stock".to_owned(),
        fields: fields.iter().map(|(f, k)| (f.to_string(), *k)).collect(),
    }
}

fn planted(order_id: u64) {
    snapshot!("declared.planted", order_id);
}

#[test]
fn declared_points_join_the_registry_until_it_is_in_use() {
    // Refused as a planted name would be, naming the point and the rule.
    let bad = loupe_agent::declare_point(declared("Inventory.Reserve", &[])).unwrap_err();
    assert_eq!(
        bad,
        DeclareError::InvalidName {
            name: "Inventory.Reserve".into(),
            error: NameError::BadCharacter(0),
        }
    );
    assert!(bad.to_string().contains("Inventory.Reserve"), "{bad}");
    let twice = loupe_agent::declare_point(declared(
        "inventory.reserve",
        &[("sku", FieldKind::Display), ("sku", FieldKind::Serde)],
    ))
    .unwrap_err();
    assert!(
        matches!(twice, DeclareError::DuplicateField { .. }),
        "{twice}"
    );
    let many: Vec<(String, FieldKind)> = (0..=MAX_DECLARED_FIELDS)
        .map(|i| (format!("f{i}"), FieldKind::Serde))
        .collect();
    let mut too_many = declared("inventory.many", &[]);
    too_many.fields = many;
    assert!(matches!(
        loupe_agent::declare_point(too_many),
        Err(DeclareError::TooManyFields { .. })
    ));

    // Two locations of one point, declared separately.
    let fields = [("sku", FieldKind::Display), ("api_key", FieldKind::Display)];
    let first = loupe_agent::declare_point(declared("inventory.reserve", &fields)).expect("ok");
    let mut elsewhere = declared("inventory.reserve", &fields);
    elsewhere.line = 97;
    let second = loupe_agent::declare_point(elsewhere).expect("ok");
    assert!(!std::ptr::eq(first, second));
    // Names are interned once, whichever declaration brought them.
    assert!(std::ptr::eq(first.name(), second.name()));

    // The registry lists declared and planted points alike.
    let registry = PointRegistry::global();
    let point = registry
        .get("inventory.reserve")
        .expect("declared point listed");
    assert_eq!(point.callsites().len(), 2);
    assert_eq!(point.field_names(), ["sku", "api_key"]);
    assert_eq!(point.callsites()[1].line(), 97);
    assert!(registry.get("declared.planted").is_some());
    assert!(registry.get("Inventory.Reserve").is_none());

    // Once the registry is in use, the list is fixed.
    assert!(matches!(
        loupe_agent::declare_point(declared("inventory.late", &[])),
        Err(DeclareError::RegistryInUse)
    ));

    // Armed and hit like a planted point, with the same redaction.
    let mut stream = loupe_agent::arm(
        CaptureSpec::new("s-declared", "inventory.reserve")
            .max_snapshots(2)
            .duration(Duration::from_secs(30))
            .rate(RateLimit {
                per_second: 1_000.0,
                burst: 100,
            }),
    )
    .expect("armed");
    assert!(first.is_armed() && second.is_armed());
    let sku = "SKU-00042";
    let key = "sk_live_51HqLyjWDarjtT1zdp7dcXWQpPJq0vA1b2C3d4E5f";
    first.hit(&[FieldValue::display(&sku), FieldValue::display(&key)]);
    second.hit(&[FieldValue::display(&"SKU-7"), FieldValue::display(&"none")]);
    let snapshots = drain(&mut stream);
    assert_eq!(snapshots.len(), 2);
    assert_eq!(snapshots[0].point, "inventory.reserve");
    assert_eq!(string(field(&snapshots[0], "sku")).value, sku);
    let withheld = format!("{:?}", field(&snapshots[0], "api_key"));
    assert!(!withheld.contains("sk_live_51HqLy"), "{withheld}");
    assert_eq!(snapshots[1].location.as_ref().map(|l| l.line), Some(97));

    // A hit on another process's thread (a sidecar's probe) names that thread, not the calling
    // one, and carries none of the calling thread's spans; hits its source lost are counted.
    let mut stream = loupe_agent::arm(
        CaptureSpec::new("s-foreign", "inventory.reserve")
            .max_snapshots(2)
            .duration(Duration::from_secs(30)),
    )
    .expect("armed");
    let subscriber = tracing_subscriber::registry().with(CorrelationLayer::new());
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("request", request_id = "r-the-sidecars-own");
        let _entered = span.enter();
        let thread = ThreadInfo::foreign("worker-3", 4242);
        first.hit_on_thread(
            &thread,
            &[FieldValue::display(&sku), FieldValue::display(&"-")],
        );
    });
    first.count_lost(5);
    let snapshot = stream.blocking_next().expect("the hit's snapshot");
    let thread = snapshot.thread.as_ref().expect("a thread");
    assert_eq!((thread.name.as_str(), thread.id), ("worker-3", 4242));
    let trace = snapshot.trace.as_ref().expect("a trace context");
    assert!(
        trace.span_fields.is_empty() && trace.span_id.is_empty(),
        "{trace:?}"
    );
    let counters = stream.status().counters;
    assert_eq!(
        (counters.hits, counters.lost_at_source),
        (6, 5),
        "{counters:?}"
    );
    stream.disarm();
    planted(1);
}

//! Watch reads of Rust std shapes, with the in-process agent as the oracle: the Rust fixture
//! (built with `rustc -g`, unoptimised and optimised, run as a real process) holds an `Order`
//! in a `Mutex<Option<Order>>` static; the sidecar's snapshot of it must equal, value for
//! value and redaction for redaction, the snapshot the in-process agent takes of the same
//! `Order` built here with `#[derive(Serialize)]`. So `String`, `&str`, `Vec<T>`, `Box<T>`,
//! `Arc<T>`, `Option<T>` (tagged and niche-encoded) and enums with payloads decode as serde shows them,
//! and a sidecar withholds exactly what the agent withholds.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use loupe_agent::point::FieldKind;
use loupe_agent::{CaptureSpec, DeclaredPoint, FieldValue, LimitRequest};
use loupe_proto::v1 as pb;
use loupe_sidecar::{PointsFile, Resolved, Sidecar, Target};
use support::*;

// The fixture's types, as the in-process agent would see them.
#[derive(serde::Serialize)]
enum Tier {
    #[allow(dead_code)]
    Free,
    Pro {
        seats: u32,
    },
    Enterprise(String),
}

#[derive(serde::Serialize)]
struct Item {
    sku: String,
    qty: u32,
    price_cents: u64,
}

#[derive(serde::Serialize)]
struct Order {
    id: u64,
    email: String,
    tier: Tier,
    items: Vec<Item>,
    coupon: Option<String>,
    gift: Option<u32>,
    region: &'static str,
    total_cents: Box<u64>,
    card_token: String,
}

fn expected_order() -> Option<Order> {
    Some(Order {
        id: 4242,
        email: "alice@example.com".to_owned(),
        tier: Tier::Pro { seats: 5 },
        items: vec![
            Item {
                sku: "SKU-1".to_owned(),
                qty: 2,
                price_cents: 1999,
            },
            Item {
                sku: "SKU-22".to_owned(),
                qty: 1,
                price_cents: 500,
            },
        ],
        coupon: Some("SPRING".to_owned()),
        gift: None,
        region: "eu-west",
        total_cents: Box::new(4498),
        card_token: "4111111111111111".to_owned(),
    })
}

const OPT_LEVELS: [&str; 2] = ["0", "2"];

fn build_rust(dir: &Path, opt: &str) -> std::path::PathBuf {
    let out = dir.join(format!("orders_o{opt}"));
    let status = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args([
            "--edition",
            "2024",
            "-g",
            "-C",
            &format!("opt-level={opt}"),
            "-o",
        ])
        .arg(&out)
        .arg(fixture_source("orders.rs"))
        .status()
        .expect("run rustc");
    assert!(status.success(), "rustc failed");
    out
}

fn spec(point: &str) -> CaptureSpec {
    CaptureSpec::new(format!("s-{point}"), point)
        .max_snapshots(1)
        .duration(Duration::from_secs(30))
        .limits(LimitRequest {
            max_depth: Some(6),
            ..LimitRequest::default()
        })
}

fn value_of(snapshot: &pb::Snapshot) -> pb::Value {
    snapshot.fields[0].value.clone().expect("a value")
}

#[test]
fn rust_std_shapes_decode_as_the_in_process_agent_captures_them() {
    if !can_run(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut running = Vec::new();
    for opt in OPT_LEVELS {
        let binary = build_rust(dir.path(), opt);
        let fixture = Fixture::spawn(&binary);
        let text = format!(
            "[[watch]]\nname = \"o{opt}.order\"\nsymbol = \"orders::CURRENT\"\npath = \"data\"\n\
             [[watch]]\nname = \"o{opt}.plan\"\nsymbol = \"orders::PLAN\"\npath = \"data\"\n\
             [[watch]]\nname = \"o{opt}.greeting\"\nsymbol = \"orders::GREETING\"\n\
             [[watch]]\nname = \"o{opt}.ticks\"\nsymbol = \"orders::TICKS\"\n\
             [[watch]]\nname = \"o{opt}.shared\"\nsymbol = \"orders::SHARED\"\npath = \"data\"\n"
        );
        let points = PointsFile::parse(Path::new("points.toml"), &text).expect("points");
        let target = Target::attach(i64::from(fixture.pid)).expect("attach");
        let resolved = Resolved::attach(target, &points.watches)
            .unwrap_or_else(|e| panic!("opt-level {opt}: {e}"));
        running.push((opt, fixture, Sidecar::declare(resolved).expect("declare")));
    }
    let oracle = loupe_agent::declare_point(DeclaredPoint {
        name: "oracle.order".into(),
        file: "watch_rust.rs".into(),
        line: 1,
        module_path: "oracle".into(),
        fields: vec![("data".into(), FieldKind::Serde)],
    })
    .expect("oracle point");
    let oracle_plan = loupe_agent::declare_point(DeclaredPoint {
        name: "oracle.plan".into(),
        file: "watch_rust.rs".into(),
        line: 2,
        module_path: "oracle".into(),
        fields: vec![("data".into(), FieldKind::Serde)],
    })
    .expect("oracle point");

    let oracle_shared = loupe_agent::declare_point(DeclaredPoint {
        name: "oracle.shared".into(),
        file: "watch_rust.rs".into(),
        line: 3,
        module_path: "oracle".into(),
        fields: vec![("data".into(), FieldKind::Serde)],
    })
    .expect("oracle point");

    let mut in_process = loupe_agent::arm(spec("oracle.order")).expect("armed");
    oracle.hit(&[FieldValue::serde(&expected_order())]);
    let expected = value_of(&in_process.blocking_next().expect("oracle snapshot"));
    // serde shows an Arc<T> as its T (without the reference counts), as the sidecar must.
    let mut in_process = loupe_agent::arm(spec("oracle.shared")).expect("armed");
    oracle_shared.hit(&[FieldValue::serde(&Some(Item {
        sku: "SKU-ARC".to_owned(),
        qty: 3,
        price_cents: 700,
    }))]);
    let expected_shared = value_of(&in_process.blocking_next().expect("oracle snapshot"));
    let mut in_process = loupe_agent::arm(spec("oracle.plan")).expect("armed");
    oracle_plan.hit(&[FieldValue::serde(&Tier::Enterprise("acme corp".to_owned()))]);
    let expected_plan = value_of(&in_process.blocking_next().expect("oracle snapshot"));
    let pb::value::Kind::Struct(order) = kind(Some(&expected)) else {
        panic!("the oracle's Order is a struct: {expected:?}");
    };
    assert_eq!(order.fields.len(), 9, "{expected:?}");
    let card = format!("{expected:?}");
    assert!(card.contains("SKU-22") && card.contains("eu-west") && card.contains("SPRING"));
    assert!(
        !card.contains("4111111111111111"),
        "the oracle withholds the card"
    );

    for (opt, _fixture, sidecar) in &running {
        let mut order = loupe_agent::arm(spec(&format!("o{opt}.order"))).expect("armed");
        let mut plan = loupe_agent::arm(spec(&format!("o{opt}.plan"))).expect("armed");
        let mut greeting = loupe_agent::arm(spec(&format!("o{opt}.greeting"))).expect("armed");
        let mut ticks = loupe_agent::arm(spec(&format!("o{opt}.ticks"))).expect("armed");
        let mut shared = loupe_agent::arm(spec(&format!("o{opt}.shared"))).expect("armed");
        assert_eq!(sidecar.sample_armed(), 5);
        let shared = shared.blocking_next().expect("shared snapshot");
        assert_eq!(
            value_of(&shared),
            expected_shared,
            "opt-level {opt}: Arc<Item>"
        );
        let order = order.blocking_next().expect("order snapshot");
        assert_eq!(
            value_of(&order),
            expected,
            "opt-level {opt}: the sidecar's Order differs from the in-process capture"
        );
        assert_eq!(order.redacted, {
            let mut in_process = loupe_agent::arm(spec("oracle.order")).expect("armed");
            oracle.hit(&[FieldValue::serde(&expected_order())]);
            in_process
                .blocking_next()
                .expect("oracle snapshot")
                .redacted
        });
        let plan = plan.blocking_next().expect("plan snapshot");
        assert_eq!(
            value_of(&plan),
            expected_plan,
            "opt-level {opt}: niche enum"
        );
        let greeting = greeting.blocking_next().expect("greeting snapshot");
        assert_eq!(
            string(kind(greeting.fields[0].value.as_ref())).value,
            "hello from rust"
        );
        let ticks = ticks.blocking_next().expect("ticks snapshot");
        assert!(
            matches!(kind(ticks.fields[0].value.as_ref()), pb::value::Kind::Uint(n) if *n > 0),
            "an AtomicU64 is its number: {ticks:?}"
        );
    }
}

fn kind(value: Option<&pb::Value>) -> &pb::value::Kind {
    value.and_then(|v| v.kind.as_ref()).expect("a kind")
}

fn string(kind: &pb::value::Kind) -> &pb::StringValue {
    match kind {
        pb::value::Kind::String(s) => s,
        other => panic!("not a string: {other:?}"),
    }
}

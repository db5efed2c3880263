//! Limits at every edge: depth, element and field counts, string sizes and UTF-8 cuts, the
//! snapshot byte budget, and user impls that panic or fail. Every cut is visible.

mod support;

use std::collections::BTreeMap;

use loupe_agent::{CaptureSpec, LimitRequest, RateLimit, snapshot};
use loupe_proto::v1::{NotCapturedReason, Snapshot, value::Kind};
use serde::Serialize;
use support::*;

/// Arms `point` with `limits`, runs `hit` once, and returns the snapshot.
fn capture_once(point: &str, limits: LimitRequest, hit: impl FnOnce()) -> Snapshot {
    let mut stream = loupe_agent::arm(
        CaptureSpec::new("limits", point)
            .limits(limits)
            .max_snapshots(1)
            .rate(RateLimit {
                per_second: 1_000.0,
                burst: 10,
            }),
    )
    .expect("armed");
    hit();
    let mut snapshots = drain(&mut stream);
    assert_eq!(snapshots.len(), 1, "one snapshot from {point}");
    snapshots.remove(0)
}

#[derive(Serialize)]
struct Nest {
    level: u32,
    child: Option<Box<Nest>>,
}

fn nest(levels: u32) -> Nest {
    (0..levels).rev().fold(
        Nest {
            level: levels,
            child: None,
        },
        |child, level| Nest {
            level,
            child: Some(Box::new(child)),
        },
    )
}

#[test]
fn depth_cuts_containers_but_keeps_scalars() {
    fn hit(value: &Nest) {
        snapshot!("limits.depth", value);
    }
    let deep = nest(50);
    let snapshot = capture_once("limits.depth", LimitRequest::default(), || hit(&deep));
    // Depth 3: the field itself (0), its child (1), grandchild (2); the next struct is cut.
    let level0 = field(&snapshot, "value");
    let level1 = member(level0, "child");
    let level2 = member(level1, "child");
    assert_eq!(member(level2, "level"), &Kind::Uint(2));
    let cut = member(level2, "child");
    assert_eq!(not_captured(cut), NotCapturedReason::Depth);
    assert_eq!(
        snapshot
            .truncation
            .as_ref()
            .expect("truncation")
            .values_not_captured,
        1
    );
}

#[test]
fn a_request_can_lower_the_depth_and_never_raise_it_past_the_ceiling() {
    fn hit(value: &Nest) {
        snapshot!("limits.depth_request", value);
    }
    let deep = nest(50);
    let shallow = capture_once(
        "limits.depth_request",
        LimitRequest {
            max_depth: Some(1),
            ..LimitRequest::default()
        },
        || hit(&deep),
    );
    assert_eq!(
        not_captured(member(field(&shallow, "value"), "child")),
        NotCapturedReason::Depth
    );
    let greedy = capture_once(
        "limits.depth_request",
        LimitRequest {
            max_depth: Some(10_000),
            ..LimitRequest::default()
        },
        || hit(&deep),
    );
    let mut value = field(&greedy, "value");
    let mut depth = 0;
    while let Kind::Struct(_) = value {
        value = member(value, "child");
        depth += 1;
    }
    assert_eq!(not_captured(value), NotCapturedReason::Depth);
    assert_eq!(
        depth,
        loupe_agent::CaptureLimits::DEFAULT_CEILING.max_depth,
        "clamped to the agent's ceiling"
    );
}

#[test]
fn deeply_nested_values_do_not_exhaust_the_stack() {
    fn hit(value: &serde_json_like::Deep) {
        snapshot!("limits.very_deep", value);
    }
    let deep = serde_json_like::Deep::new(100_000);
    let snapshot = capture_once(
        "limits.very_deep",
        LimitRequest {
            max_depth: Some(1_000),
            ..LimitRequest::default()
        },
        || hit(&deep),
    );
    assert!(matches!(field(&snapshot, "value"), Kind::List(_)));
}

/// A value nested far deeper than any limit, serialized without recursion in its own
/// `Serialize` beyond what the serializer asks for.
mod serde_json_like {
    use serde::ser::{Serialize, SerializeSeq, Serializer};

    pub struct Deep(usize);

    impl Deep {
        pub fn new(levels: usize) -> Deep {
            Deep(levels)
        }
    }

    impl Serialize for Deep {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut seq = serializer.serialize_seq(Some(1))?;
            if self.0 > 0 {
                seq.serialize_element(&Deep(self.0 - 1))?;
            }
            seq.end()
        }
    }
}

#[test]
fn collections_stop_at_the_element_limit_and_report_their_length() {
    fn hit(items: &[u32], map: &BTreeMap<String, u32>) {
        snapshot!("limits.collections", items, map);
    }
    let items: Vec<u32> = (0..1_000).collect();
    let map: BTreeMap<String, u32> = (0..150).map(|i| (format!("k{i:03}"), i)).collect();
    let snapshot = capture_once("limits.collections", LimitRequest::default(), || {
        hit(&items, &map)
    });
    match field(&snapshot, "items") {
        Kind::List(list) => {
            assert_eq!(list.items.len(), 100);
            assert_eq!(list.total_len, 1_000);
        }
        other => panic!("{other:?}"),
    }
    match field(&snapshot, "map") {
        Kind::Map(map) => {
            assert_eq!(map.entries.len(), 100);
            assert_eq!(map.total_len, 150);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        snapshot
            .truncation
            .as_ref()
            .expect("truncation")
            .collections_truncated,
        2
    );
    // Exactly at the limit nothing is cut.
    let exact: Vec<u32> = (0..100).collect();
    let empty = BTreeMap::new();
    let snapshot = capture_once("limits.collections", LimitRequest::default(), || {
        hit(&exact, &empty)
    });
    match field(&snapshot, "items") {
        Kind::List(list) => assert_eq!((list.items.len(), list.total_len), (100, 100)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        snapshot
            .truncation
            .as_ref()
            .expect("truncation")
            .collections_truncated,
        0
    );
}

#[test]
fn structs_stop_at_the_field_limit() {
    #[derive(Serialize)]
    struct Wide {
        f00: u8,
        f01: u8,
        f02: u8,
        f03: u8,
        f04: u8,
        f05: u8,
    }
    fn hit(wide: &Wide) {
        snapshot!("limits.fields", wide);
    }
    let wide = Wide {
        f00: 0,
        f01: 1,
        f02: 2,
        f03: 3,
        f04: 4,
        f05: 5,
    };
    let snapshot = capture_once(
        "limits.fields",
        LimitRequest {
            max_struct_fields: Some(4),
            ..LimitRequest::default()
        },
        || hit(&wide),
    );
    match field(&snapshot, "wide") {
        Kind::Struct(s) => {
            let names: Vec<_> = s.fields.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(names, ["f00", "f01", "f02", "f03"]);
            assert_eq!(s.total_fields, 6);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn strings_are_cut_on_utf8_boundaries_with_the_original_length() {
    fn hit(ascii: &str, multibyte: &str, exact: &str) {
        snapshot!("limits.strings", ascii, multibyte, exact);
    }
    let ascii = "a".repeat(300);
    // 'é' is two bytes, '€' three: a 255-byte cut falls inside a character.
    let multibyte = "é€".repeat(100);
    let exact = "x".repeat(255);
    let snapshot = capture_once("limits.strings", LimitRequest::default(), || {
        hit(&ascii, &multibyte, &exact)
    });
    let ascii = string(field(&snapshot, "ascii"));
    assert_eq!(
        (ascii.value.len(), ascii.truncated, ascii.original_len),
        (255, true, 300)
    );
    let multibyte = string(field(&snapshot, "multibyte"));
    assert!(multibyte.value.len() <= 255 && multibyte.value.len() >= 252);
    assert!(multibyte.truncated);
    assert_eq!(multibyte.original_len, 500);
    assert!("é€".repeat(100).starts_with(&multibyte.value));
    let exact = string(field(&snapshot, "exact"));
    assert_eq!((exact.value.len(), exact.truncated), (255, false));
}

#[test]
fn debug_and_display_output_is_bounded() {
    struct Chatty(usize);
    impl std::fmt::Display for Chatty {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            for _ in 0..self.0 {
                f.write_str("0123456789")?;
            }
            Ok(())
        }
    }
    fn hit(small: &Chatty, huge: &Chatty) {
        snapshot!("limits.formatted", %small, %huge);
    }
    let (small, huge) = (Chatty(3), Chatty(10_000_000));
    let snapshot = capture_once("limits.formatted", LimitRequest::default(), || {
        hit(&small, &huge)
    });
    let small = string(field(&snapshot, "small"));
    assert_eq!(
        (small.value.as_str(), small.truncated),
        ("012345678901234567890123456789", false)
    );
    let huge = string(field(&snapshot, "huge"));
    assert_eq!(huge.value.len(), 255);
    assert!(huge.truncated);
    assert!(huge.original_len_is_lower_bound, "formatting stopped early");
    // Formatting stops once the kept window (the string limit and the scan margin) is full.
    assert!(huge.original_len < 8 * 1024, "{}", huge.original_len);
}

#[test]
fn the_snapshot_byte_budget_cuts_later_values() {
    fn hit(first: &[String], second: &[String]) {
        snapshot!("limits.snapshot_size", first, second);
    }
    let big: Vec<String> = (0..100).map(|i| format!("{i:0>200}")).collect();
    let snapshot = capture_once(
        "limits.snapshot_size",
        LimitRequest {
            max_snapshot_bytes: Some(4_096),
            ..LimitRequest::default()
        },
        || hit(&big, &big),
    );
    let truncation = snapshot.truncation.as_ref().expect("truncation");
    assert!(truncation.snapshot_size_limit_reached);
    match field(&snapshot, "first") {
        Kind::List(list) => {
            let captured = list
                .items
                .iter()
                .filter(|v| matches!(kind(Some(v)), Kind::String(_)))
                .count();
            assert!(captured > 0 && captured < 30, "{captured}");
            let last = kind(list.items.last());
            assert_eq!(not_captured(last), NotCapturedReason::Size);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        not_captured(field(&snapshot, "second")),
        NotCapturedReason::Size
    );
}

#[test]
fn panicking_and_failing_user_impls_become_markers() {
    struct PanicsInSerialize;
    impl Serialize for PanicsInSerialize {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            panic!("serialize exploded")
        }
    }
    struct FailsInSerialize;
    impl Serialize for FailsInSerialize {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("cannot serialize this"))
        }
    }
    struct PanicsInDebug;
    impl std::fmt::Debug for PanicsInDebug {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("debug exploded")
        }
    }
    struct PanicsInDisplay;
    impl std::fmt::Display for PanicsInDisplay {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("display exploded")
        }
    }
    #[derive(Serialize)]
    struct Holder {
        fine: u32,
        broken: Vec<FailsInSerialize>,
    }
    fn hit(
        a: &PanicsInSerialize,
        b: &FailsInSerialize,
        c: &PanicsInDebug,
        d: &PanicsInDisplay,
        e: &Holder,
    ) {
        snapshot!("limits.panics", a, b, ?c, %d, e, after = 7u8);
    }
    let holder = Holder {
        fine: 1,
        broken: vec![FailsInSerialize],
    };
    let snapshot = capture_once("limits.panics", LimitRequest::default(), || {
        hit(
            &PanicsInSerialize,
            &FailsInSerialize,
            &PanicsInDebug,
            &PanicsInDisplay,
            &holder,
        )
    });
    for (name, reason, text) in [
        ("a", NotCapturedReason::Panic, "serialize exploded"),
        ("b", NotCapturedReason::Error, "cannot serialize this"),
        ("c", NotCapturedReason::Panic, "debug exploded"),
        ("d", NotCapturedReason::Panic, "display exploded"),
    ] {
        match field(&snapshot, name) {
            Kind::NotCaptured(marker) => {
                assert_eq!(marker.reason(), reason, "{name}");
                assert!(marker.detail.contains(text), "{name}: {}", marker.detail);
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // A failing element is marked in place; its siblings survive.
    let e = field(&snapshot, "e");
    assert_eq!(member(e, "fine"), &Kind::Uint(1));
    match member(e, "broken") {
        Kind::List(list) => assert_eq!(
            not_captured(kind(list.items.first())),
            NotCapturedReason::Error
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(field(&snapshot, "after"), &Kind::Uint(7));
}

#[test]
fn every_serde_shape_is_represented() {
    #[derive(Serialize)]
    struct Unit;
    #[derive(Serialize)]
    struct Newtype(u32);
    #[derive(Serialize)]
    struct Pair(u32, &'static str);
    #[derive(Serialize)]
    enum Shape {
        Unit,
        Newtype(u32),
        Tuple(u32, u32),
        Struct { w: u32 },
    }
    #[derive(Serialize)]
    struct All {
        unit: Unit,
        newtype: Newtype,
        pair: Pair,
        shapes: Vec<Shape>,
        tuple: (bool, char, f64),
        none: Option<u8>,
        bytes: serde_bytes_like::Bytes,
        big: u128,
        negative: i64,
    }
    mod serde_bytes_like {
        pub struct Bytes(pub Vec<u8>);
        impl serde::Serialize for Bytes {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
    }
    fn hit(all: &All) {
        snapshot!("limits.shapes", all);
    }
    let all = All {
        unit: Unit,
        newtype: Newtype(5),
        pair: Pair(1, "b"),
        shapes: vec![
            Shape::Unit,
            Shape::Newtype(1),
            Shape::Tuple(2, 3),
            Shape::Struct { w: 4 },
        ],
        tuple: (true, 'λ', 1.5),
        none: None,
        bytes: serde_bytes_like::Bytes(vec![0, 159, 146, 150]),
        big: u128::MAX,
        negative: -42,
    };
    let snapshot = capture_once("limits.shapes", LimitRequest::default(), || hit(&all));
    let all = field(&snapshot, "all");
    assert!(matches!(member(all, "unit"), Kind::Struct(s) if s.type_name == "Unit"));
    assert_eq!(member(all, "newtype"), &Kind::Uint(5));
    assert_eq!(
        member(member(all, "pair"), "1"),
        &Kind::String(loupe_proto::v1::StringValue {
            value: "b".into(),
            truncated: false,
            original_len: 1,
            original_len_is_lower_bound: false,
        })
    );
    let Kind::List(shapes) = member(all, "shapes") else {
        panic!("list")
    };
    let variants: Vec<_> = shapes
        .items
        .iter()
        .map(|v| match kind(Some(v)) {
            Kind::Enum(e) => (e.variant.clone(), e.fields.len()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        variants,
        [
            ("Unit".into(), 0),
            ("Newtype".into(), 1),
            ("Tuple".into(), 2),
            ("Struct".into(), 1)
        ]
    );
    let Kind::List(tuple) = member(all, "tuple") else {
        panic!("tuple")
    };
    assert_eq!(
        kind(tuple.items.get(1)),
        &Kind::String(loupe_proto::v1::StringValue {
            value: "λ".into(),
            truncated: false,
            original_len: 2,
            original_len_is_lower_bound: false,
        })
    );
    assert!(matches!(member(all, "none"), Kind::Null(_)));
    assert!(matches!(member(all, "bytes"), Kind::Bytes(b) if b.value == [0, 159, 146, 150]));
    assert_eq!(string(member(all, "big")).value, u128::MAX.to_string());
    assert_eq!(member(all, "negative"), &Kind::Int(-42));
}

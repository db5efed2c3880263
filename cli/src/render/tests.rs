//! Tests of the renderers: a representative snapshot as tree and JSON, and hostile input.

use loupe_proto::v1::value::Kind;
use loupe_proto::v1::{
    BytesValue, DropCounters, EnumValue, Field, ListValue, MapEntry, MapValue, NotCaptured,
    NotCapturedReason, Null, RedactedPath, Snapshot, SourceLocation, StringValue, StructValue,
    ThreadInfo, TraceContext, Truncation, Value,
};
use serde_json::json;

use super::{Style, Table, snapshot_json, snapshot_tree};

fn v(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}

fn field(name: &str, value: Value) -> Field {
    Field {
        name: name.into(),
        value: Some(value),
    }
}

fn string(text: &str) -> Value {
    v(Kind::String(StringValue {
        value: text.into(),
        truncated: false,
        original_len: text.len() as u64,
        original_len_is_lower_bound: false,
    }))
}

fn item(sku: &str, qty: u64) -> Value {
    v(Kind::Struct(StructValue {
        type_name: "Item".into(),
        fields: vec![field("sku", string(sku)), field("qty", v(Kind::Uint(qty)))],
        total_fields: 2,
    }))
}

/// The kind of snapshot an engineer sees during an incident, with one of everything that can
/// be cut, withheld or missing.
fn representative() -> Snapshot {
    let cart = v(Kind::Struct(StructValue {
        type_name: "Cart".into(),
        fields: vec![
            field(
                "items",
                v(Kind::List(ListValue {
                    items: vec![item("A-1", 2), item("B-2", 1)],
                    total_len: 5,
                })),
            ),
            field("total_cents", v(Kind::Int(-120))),
            field(
                "coupon",
                v(Kind::Enum(EnumValue {
                    type_name: "Coupon".into(),
                    variant: "Percent".into(),
                    fields: vec![field("0", v(Kind::Float(10.0)))],
                    total_fields: 1,
                })),
            ),
            field(
                "card_token",
                v(Kind::Redacted(loupe_proto::v1::Redacted {
                    reason: "name:card_token".into(),
                })),
            ),
            field(
                "address",
                v(Kind::NotCaptured(NotCaptured {
                    reason: NotCapturedReason::Depth as i32,
                    detail: "Address".into(),
                })),
            ),
        ],
        total_fields: 6,
    }));
    Snapshot {
        session_id: "s-1".into(),
        capture_id: "c-1".into(),
        point: "checkout.apply_discount".into(),
        service: "checkout".into(),
        instance: "checkout-1".into(),
        sequence: 3,
        wall_time_unix_nanos: 1_796_000_499_123_456_789,
        monotonic_nanos: 81_234,
        thread: Some(ThreadInfo {
            name: "main".into(),
            id: 1,
        }),
        trace: Some(TraceContext {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            span_fields: vec![field("request_id", string("r-7f3a"))],
        }),
        fields: vec![
            field("cart", cart),
            field("user_id", v(Kind::Uint(42))),
            field(
                "note",
                v(Kind::String(StringValue {
                    value: "line\n\"quoted\"".into(),
                    truncated: true,
                    original_len: 1024,
                    original_len_is_lower_bound: false,
                })),
            ),
            field(
                "tier",
                v(Kind::Enum(EnumValue {
                    type_name: "Tier".into(),
                    variant: "Gold".into(),
                    fields: vec![],
                    total_fields: 0,
                })),
            ),
            field(
                "headers",
                v(Kind::Map(MapValue {
                    entries: vec![MapEntry {
                        key: Some(string("x-req")),
                        value: Some(string("1")),
                    }],
                    total_len: 3,
                })),
            ),
            field(
                "blob",
                v(Kind::Bytes(BytesValue {
                    value: vec![1, 2, 0xff],
                    truncated: false,
                    original_len: 3,
                })),
            ),
            field("nothing", v(Kind::Null(Null {}))),
            field("from_the_future", Value { kind: None }),
        ],
        redacted: vec![RedactedPath {
            path: "cart.card_token".into(),
            reason: "name:card_token".into(),
        }],
        truncation: Some(Truncation {
            values_not_captured: 1,
            strings_truncated: 1,
            collections_truncated: 2,
            structs_truncated: 1,
            snapshot_size_limit_reached: false,
        }),
        drops: Some(DropCounters {
            hits: 17,
            condition_false: 5,
            condition_errors: 0,
            skipped_rate: 3,
            skipped_cpu_budget: 0,
            dropped_queue_full: 1,
            skipped_reentrant: 0,
            lost_at_source: 2,
        }),
        capture_cost_ns: 1_240,
        location: Some(SourceLocation {
            file: "src/checkout.rs".into(),
            line: 42,
            module_path: "checkout".into(),
        }),
    }
}

#[test]
fn tree_of_a_representative_snapshot() {
    let tree = snapshot_tree(&representative(), Style::PLAIN);
    let expected = r#"checkout.apply_discount #3  checkout/checkout-1  2026-11-30T01:01:39.123Z
  thread main (1) · capture cost 1.2µs · at src/checkout.rs:42
  trace 4bf92f3577b34da6a3ce929d0e0e4736 · span 00f067aa0ba902b7 · request_id="r-7f3a"
├─ cart: Cart {5 of 6 fields}
│  ├─ items: list [2 of 5]
│  │  ├─ [0]: Item
│  │  │  ├─ sku: "A-1"
│  │  │  └─ qty: 2
│  │  ├─ [1]: Item
│  │  │  ├─ sku: "B-2"
│  │  │  └─ qty: 1
│  │  └─ … 3 more elements not captured
│  ├─ total_cents: -120
│  ├─ coupon: Coupon::Percent
│  │  └─ 0: 10.0
│  ├─ card_token: <redacted: name:card_token>
│  ├─ address: <not captured: depth (Address)>
│  └─ … 1 more field not captured
├─ user_id: 42
├─ note: "line\n\"quoted\""… (truncated, 1024 bytes)
├─ tier: Tier::Gold
├─ headers: map {1 of 3}
│  ├─ ["x-req"]: "1"
│  └─ … 2 more entries not captured
├─ blob: bytes [3] 0102ff
├─ nothing: null
└─ from_the_future: <unknown value kind>
redacted:
  cart.card_token  name:card_token
truncated: 1 string, 2 collections, 1 struct, 1 value not captured
dropped: 3 by the rate limit, 1 on a full queue, 2 lost before the agent read them (of 17 hits, 5 condition false)
"#;
    assert_eq!(tree, expected, "\n{tree}");
}

#[test]
fn colors_only_when_asked() {
    let snapshot = representative();
    assert!(!snapshot_tree(&snapshot, Style::PLAIN).contains('\x1b'));
    let colored = snapshot_tree(&snapshot, Style::COLOR);
    assert!(
        colored.contains("\x1b[31m<redacted: name:card_token>\x1b[0m"),
        "{colored}"
    );
    assert!(
        colored.contains("\x1b[33m… (truncated, 1024 bytes)\x1b[0m"),
        "{colored}"
    );
    assert!(colored.contains("\x1b[2mCart\x1b[0m"), "{colored}");
    // Colors change nothing but the escape sequences.
    let stripped = strip_ansi(&colored);
    assert_eq!(stripped, snapshot_tree(&snapshot, Style::PLAIN));
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn json_of_a_representative_snapshot() {
    let json = snapshot_json(&representative());
    assert_eq!(
        json,
        json!({
            "session_id": "s-1",
            "capture_id": "c-1",
            "point": "checkout.apply_discount",
            "service": "checkout",
            "instance": "checkout-1",
            "sequence": 3,
            "time": "2026-11-30T01:01:39.123Z",
            "wall_time_unix_nanos": 1_796_000_499_123_456_789_i64,
            "monotonic_nanos": 81_234,
            "thread": {"name": "main", "id": 1},
            "trace": {
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "span_id": "00f067aa0ba902b7",
                "span_fields": {"request_id": "r-7f3a"},
            },
            "location": {"file": "src/checkout.rs", "line": 42, "module_path": "checkout"},
            "fields": {
                "cart": {
                    "$type": "Cart",
                    "$total_fields": 6,
                    "items": {
                        "$items": [
                            {"$type": "Item", "sku": "A-1", "qty": 2},
                            {"$type": "Item", "sku": "B-2", "qty": 1},
                        ],
                        "$total_len": 5,
                    },
                    "total_cents": -120,
                    "coupon": {"$type": "Coupon", "$variant": "Percent", "0": 10.0},
                    "card_token": {"$redacted": "name:card_token"},
                    "address": {"$not_captured": "depth", "$detail": "Address"},
                },
                "user_id": 42,
                "note": {
                    "$string": "line\n\"quoted\"",
                    "$truncated": true,
                    "$original_len": 1024,
                },
                "tier": {"$type": "Tier", "$variant": "Gold"},
                "headers": {"x-req": "1", "$total_len": 3},
                "blob": {"$bytes": "AQL/", "$len": 3},
                "nothing": null,
                "from_the_future": {"$unknown": true},
            },
            "redacted": [{"path": "cart.card_token", "reason": "name:card_token"}],
            "truncation": {
                "values_not_captured": 1,
                "strings_truncated": 1,
                "collections_truncated": 2,
                "structs_truncated": 1,
                "snapshot_size_limit_reached": false,
            },
            "drops": {
                "hits": 17,
                "condition_false": 5,
                "condition_errors": 0,
                "skipped_rate": 3,
                "skipped_cpu_budget": 0,
                "dropped_queue_full": 1,
                "skipped_reentrant": 0,
                "lost_at_source": 2,
            },
            "capture_cost_ns": 1240,
        })
    );
}

#[test]
fn json_markers_for_what_json_cannot_say() {
    let with = |name: &str, value: Value| Snapshot {
        fields: vec![field(name, value)],
        ..Snapshot::default()
    };
    let json = |value: Value| snapshot_json(&with("x", value))["fields"]["x"].clone();

    // Complete lists are plain arrays; NaN and infinities are not JSON numbers.
    let list = v(Kind::List(ListValue {
        items: vec![v(Kind::Float(f64::NAN)), v(Kind::Float(f64::NEG_INFINITY))],
        total_len: 2,
    }));
    assert_eq!(json(list), json!([{"$float": "NaN"}, {"$float": "-inf"}]));

    // Maps with non-string (or repeated) keys keep every entry as a pair.
    let map = v(Kind::Map(MapValue {
        entries: vec![
            MapEntry {
                key: Some(v(Kind::Uint(7))),
                value: Some(string("seven")),
            },
            MapEntry {
                key: Some(v(Kind::Bool(true))),
                value: None,
            },
        ],
        total_len: 2,
    }));
    assert_eq!(
        json(map),
        json!({"$entries": [[7, "seven"], [true, {"$unknown": true}]]})
    );
    let repeated = v(Kind::Map(MapValue {
        entries: vec![
            MapEntry {
                key: Some(string("k")),
                value: Some(v(Kind::Int(1))),
            },
            MapEntry {
                key: Some(string("k")),
                value: Some(v(Kind::Int(2))),
            },
        ],
        total_len: 2,
    }));
    assert_eq!(json(repeated), json!({"$entries": [["k", 1], ["k", 2]]}));

    // Data keys that look like markers are escaped, so they cannot be mistaken for them.
    let sneaky = v(Kind::Struct(StructValue {
        type_name: "T".into(),
        fields: vec![field("$redacted", string("no"))],
        total_fields: 1,
    }));
    assert_eq!(json(sneaky), json!({"$type": "T", "$$redacted": "no"}));
    assert_eq!(
        snapshot_json(&with("$type", v(Kind::Bool(true))))["fields"],
        json!({"$$type": true})
    );

    // A lower bound on the original length says so; cut bytes too.
    let debug_output = v(Kind::String(StringValue {
        value: "Order { id".into(),
        truncated: true,
        original_len: 4096,
        original_len_is_lower_bound: true,
    }));
    assert_eq!(
        json(debug_output),
        json!({
            "$string": "Order { id",
            "$truncated": true,
            "$original_len": 4096,
            "$original_len_is_lower_bound": true,
        })
    );
    let bytes = v(Kind::Bytes(BytesValue {
        value: vec![0; 2],
        truncated: true,
        original_len: 9,
    }));
    assert_eq!(
        json(bytes),
        json!({"$bytes": "AAA=", "$len": 2, "$truncated": true, "$original_len": 9})
    );
    assert_eq!(
        json(v(Kind::NotCaptured(NotCaptured {
            reason: 99,
            detail: String::new(),
        }))),
        json!({"$not_captured": "reason 99"})
    );
}

#[test]
fn empty_snapshot_renders() {
    let empty = Snapshot::default();
    let tree = snapshot_tree(&empty, Style::COLOR);
    assert!(tree.starts_with("\x1b[1m<no point>\x1b[0m #0  ?/?  1970-01-01T00:00:00.000Z\n"));
    assert!(tree.contains("(no fields)"), "{tree}");
    let json = snapshot_json(&empty);
    assert_eq!(json["fields"], json!({}));
    assert_eq!(json["thread"], json!(null));
    assert_eq!(json["trace"], json!(null));
    assert_eq!(json["truncation"]["strings_truncated"], json!(0));
}

/// `depth` structs, each holding the next, innermost an int.
fn nested(depth: usize) -> Value {
    let mut value = v(Kind::Int(1));
    for _ in 0..depth {
        value = v(Kind::Struct(StructValue {
            type_name: "Node".into(),
            fields: vec![field("next", value)],
            total_fields: 1,
        }));
    }
    value
}

#[test]
fn deep_nesting_is_cut_with_a_marker() {
    let snapshot = Snapshot {
        fields: vec![field("root", nested(200))],
        ..Snapshot::default()
    };
    let tree = snapshot_tree(&snapshot, Style::PLAIN);
    assert_eq!(tree.matches("Node").count(), super::MAX_DEPTH);
    assert!(tree.contains("next: <not shown: nested deeper than 64 levels>"));

    let json = snapshot_json(&snapshot);
    let mut node = &json["fields"]["root"];
    for _ in 1..super::MAX_DEPTH {
        node = &node["next"];
    }
    assert_eq!(node["$type"], json!("Node"));
    assert_eq!(node["next"], json!({"$not_shown": "depth"}));
    // Within the cap, nothing is cut.
    let shallow = snapshot_json(&Snapshot {
        fields: vec![field("root", nested(3))],
        ..Snapshot::default()
    });
    assert_eq!(shallow["fields"]["root"]["next"]["next"]["next"], json!(1));
}

#[test]
fn hostile_text_cannot_forge_lines_or_reach_the_terminal() {
    let snapshot = Snapshot {
        point: "p\x1b[2Jwiped".into(),
        fields: vec![
            field("a\n└─ b", string("\x1b]0;title\x07")),
            field("rtl", string("abc\u{202e}fed")),
            field("huge", string(&"é".repeat(1 << 20))),
        ],
        redacted: vec![RedactedPath {
            path: "x\r".into(),
            reason: "r\x1b".into(),
        }],
        ..Snapshot::default()
    };
    let tree = snapshot_tree(&snapshot, Style::PLAIN);
    assert!(!tree.contains('\x1b') && !tree.contains('\r') && !tree.contains('\u{202e}'));
    assert!(tree.contains(r"p\u{1b}[2Jwiped"), "{}", &tree[..200]);
    assert!(tree.contains(r#"├─ a\n└─ b: "\u{1b}]0;title\u{7}""#));
    assert!(tree.contains(r#""abc\u{202e}fed""#));
    // One line per field plus header, details and the redaction footer.
    assert_eq!(tree.lines().count(), 2 + 3 + 2);
}

#[test]
fn unusual_values_do_not_panic() {
    let snapshot = Snapshot {
        wall_time_unix_nanos: i64::MIN,
        capture_cost_ns: u64::MAX,
        fields: vec![
            Field {
                name: String::new(),
                value: None,
            },
            field(
                "list",
                v(Kind::List(ListValue {
                    items: vec![Value::default()],
                    total_len: 0,
                })),
            ),
            field(
                "map",
                v(Kind::Map(MapValue {
                    entries: vec![MapEntry {
                        key: None,
                        value: Some(nested(3)),
                    }],
                    total_len: u64::MAX,
                })),
            ),
            field(
                "bytes",
                v(Kind::Bytes(BytesValue {
                    value: vec![7; 100],
                    truncated: true,
                    original_len: 1,
                })),
            ),
            field(
                "struct",
                v(Kind::Struct(StructValue {
                    type_name: String::new(),
                    fields: vec![],
                    total_fields: u32::MAX,
                })),
            ),
        ],
        drops: Some(DropCounters {
            hits: u64::MAX,
            skipped_reentrant: u64::MAX,
            ..DropCounters::default()
        }),
        truncation: Some(Truncation {
            snapshot_size_limit_reached: true,
            ..Truncation::default()
        }),
        ..Snapshot::default()
    };
    let tree = snapshot_tree(&snapshot, Style::COLOR);
    let plain = snapshot_tree(&snapshot, Style::PLAIN);
    assert!(plain.contains("list: list [1]"), "{plain}");
    assert!(
        plain.contains(&format!("map: map {{1 of {}}}", u64::MAX)),
        "{plain}"
    );
    assert!(
        plain.contains("truncated: snapshot size limit reached"),
        "{plain}"
    );
    assert!(plain.contains("1677-09-21T00:12:43.145Z"), "{plain}");
    assert!(!tree.is_empty());
    let json = snapshot_json(&snapshot);
    assert_eq!(json["fields"][""], json!({"$unknown": true}));
    assert_eq!(
        json["fields"]["map"]["$entries"][0][0],
        json!({"$unknown": true})
    );
}

#[test]
fn table_aligns_by_display_width() {
    let mut table = Table::new(["SERVICE", "INSTANCES", "NOTE"]);
    table
        .push_row(["checkout", "2", "ok"])
        .push_row(["café", "10", ""])
        .push_row(["会計", "1", "wide", "extra"])
        .push_row(["x\ny"]);
    assert_eq!(table.len(), 4);
    let expected = "\
SERVICE   INSTANCES  NOTE
checkout  2          ok
café      10
会計      1          wide  extra
x\\ny
";
    assert_eq!(table.render(Style::PLAIN), expected);
    let colored = table.render(Style::COLOR);
    assert!(
        colored.starts_with("\x1b[1mSERVICE   INSTANCES  NOTE\x1b[0m\n"),
        "{colored}"
    );
    assert_eq!(Table::new(Vec::<String>::new()).render(Style::COLOR), "");
    assert!(Table::default().is_empty());
}

//! The JSON form of a snapshot: what `--output json`, `--output jsonl` and `--save DIR` write,
//! and what scripts read. Its shape is documented on [`snapshot_json`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use loupe_proto::v1::value::Kind;
use loupe_proto::v1::{Field, Snapshot, Value};
use serde_json::{Map, Value as Json, json};

use super::MAX_DEPTH;
use super::text::{not_captured_reason, rfc3339_millis};

/// The JSON form of `snapshot`: what `--output json`, `--output jsonl` and `--save DIR` write,
/// and what scripts read. The shape is stable: keys are only ever added.
///
/// ```json
/// {
///   "session_id": "s-1", "capture_id": "c-1",
///   "point": "checkout.apply_discount", "service": "checkout", "instance": "checkout-1",
///   "sequence": 3,
///   "time": "2026-11-30T00:01:39.123Z",          // RFC 3339, UTC, milliseconds
///   "wall_time_unix_nanos": 1796000499123456789, // exact
///   "monotonic_nanos": 81234,
///   "thread": {"name": "main", "id": 1},         // or null
///   "trace": {"trace_id": "…", "span_id": "…", "span_fields": {"request_id": "r-7f3a"}}, // or null
///   "location": {"file": "src/checkout.rs", "line": 42, "module_path": "checkout"},     // or null
///   "fields": {"cart": …, "user_id": 42},
///   "redacted": [{"path": "cart.card_token", "reason": "name:card_token"}],
///   "truncation": {"values_not_captured": 0, "strings_truncated": 1, "collections_truncated": 1,
///                  "structs_truncated": 0, "snapshot_size_limit_reached": false},
///   "drops": {"hits": 17, "condition_false": 5, "condition_errors": 0, "skipped_rate": 0,
///             "skipped_cpu_budget": 0, "dropped_queue_full": 0, "skipped_reentrant": 0,
///             "lost_at_source": 0},
///   "capture_cost_ns": 1200
/// }
/// ```
///
/// `fields` and `span_fields` are objects keyed by field name (key order carries no meaning;
/// the tree keeps the declared order). Should a name repeat, the first occurrence wins (for span
/// fields that is the innermost span, as in the capture itself).
///
/// Values are natural JSON wherever JSON can say everything there is to say, and objects with
/// `$`-prefixed keys where it cannot:
///
/// | value | JSON |
/// | --- | --- |
/// | null, bool, int, uint | `null`, `true`, `-3`, `18446744073709551615` |
/// | float | a number; NaN and infinities as `{"$float": "NaN" \| "inf" \| "-inf"}` |
/// | string | `"text"`; cut: `{"$string": "prefix", "$truncated": true, "$original_len": 1024}` (+ `"$original_len_is_lower_bound": true` when it is one) |
/// | bytes | `{"$bytes": "<base64>", "$len": 3}` (+ `"$truncated": true, "$original_len": n` when cut) |
/// | list | `[…]`; cut: `{"$items": […], "$total_len": 100}` |
/// | map, all keys strings | `{"key": …}` (+ `"$total_len": n` when cut) |
/// | map, other keys | `{"$entries": [[key, value], …]}` (+ `"$total_len": n` when cut) |
/// | struct | `{"$type": "Cart", "field": …}` (+ `"$total_fields": n` when cut) |
/// | enum | `{"$type": "Tier", "$variant": "Gold", "0": …}` (+ `"$total_fields": n` when cut) |
/// | redacted | `{"$redacted": "name:card_token"}` |
/// | not captured | `{"$not_captured": "depth", "$detail": "Address"}` (`$detail` when given) |
/// | unknown kind (newer agent) | `{"$unknown": true}` |
/// | deeper than 64 levels | `{"$not_shown": "depth"}` |
///
/// So that a data key can never be mistaken for a marker, struct field names and map keys that
/// start with `$` are written with one more `$` in front (`$ref` → `$$ref`).
pub fn snapshot_json(snapshot: &Snapshot) -> Json {
    let s = snapshot;
    let thread = s
        .thread
        .as_ref()
        .map_or(Json::Null, |t| json!({"name": t.name, "id": t.id}));
    let trace = s.trace.as_ref().map_or(Json::Null, |t| {
        json!({
            "trace_id": t.trace_id,
            "span_id": t.span_id,
            "span_fields": fields(&t.span_fields, 1),
        })
    });
    let location = s.location.as_ref().map_or(
        Json::Null,
        |l| json!({"file": l.file, "line": l.line, "module_path": l.module_path}),
    );
    let redacted: Vec<Json> = s
        .redacted
        .iter()
        .map(|r| json!({"path": r.path, "reason": r.reason}))
        .collect();
    // Always every counter, zero or not, so scripts need no defaults.
    let t = s.truncation.unwrap_or_default();
    let d = s.drops.unwrap_or_default();
    json!({
        "session_id": s.session_id,
        "capture_id": s.capture_id,
        "point": s.point,
        "service": s.service,
        "instance": s.instance,
        "sequence": s.sequence,
        "time": rfc3339_millis(s.wall_time_unix_nanos),
        "wall_time_unix_nanos": s.wall_time_unix_nanos,
        "monotonic_nanos": s.monotonic_nanos,
        "thread": thread,
        "trace": trace,
        "location": location,
        "fields": fields(&s.fields, 1),
        "redacted": redacted,
        "truncation": {
            "values_not_captured": t.values_not_captured,
            "strings_truncated": t.strings_truncated,
            "collections_truncated": t.collections_truncated,
            "structs_truncated": t.structs_truncated,
            "snapshot_size_limit_reached": t.snapshot_size_limit_reached,
        },
        "drops": {
            "hits": d.hits,
            "condition_false": d.condition_false,
            "condition_errors": d.condition_errors,
            "skipped_rate": d.skipped_rate,
            "skipped_cpu_budget": d.skipped_cpu_budget,
            "dropped_queue_full": d.dropped_queue_full,
            "skipped_reentrant": d.skipped_reentrant,
            "lost_at_source": d.lost_at_source,
        },
        "capture_cost_ns": s.capture_cost_ns,
    })
}

/// A data key, escaped so it cannot collide with a `$` marker.
fn data_key(name: &str) -> String {
    if name.starts_with('$') {
        format!("${name}")
    } else {
        name.to_owned()
    }
}

/// Fields as an object, first occurrence of a name winning.
fn fields(list: &[Field], depth: usize) -> Json {
    let mut object = Map::new();
    add_fields(&mut object, list, depth);
    Json::Object(object)
}

fn add_fields(object: &mut Map<String, Json>, list: &[Field], depth: usize) {
    for field in list {
        let key = data_key(&field.name);
        if !object.contains_key(&key) {
            object.insert(key, json_value(field.value.as_ref(), depth));
        }
    }
}

fn json_value(value: Option<&Value>, depth: usize) -> Json {
    if depth > MAX_DEPTH {
        return json!({"$not_shown": "depth"});
    }
    let Some(kind) = value.and_then(|v| v.kind.as_ref()) else {
        return json!({"$unknown": true});
    };
    let child = depth + 1;
    match kind {
        Kind::Null(_) => Json::Null,
        Kind::Bool(b) => Json::Bool(*b),
        Kind::Int(i) => json!(i),
        Kind::Uint(u) => json!(u),
        Kind::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(n) => Json::Number(n),
            None if f.is_nan() => json!({"$float": "NaN"}),
            None if *f > 0.0 => json!({"$float": "inf"}),
            None => json!({"$float": "-inf"}),
        },
        Kind::String(s) => {
            if !s.truncated {
                return Json::String(s.value.clone());
            }
            let mut object = Map::new();
            object.insert("$string".into(), Json::String(s.value.clone()));
            object.insert("$truncated".into(), Json::Bool(true));
            object.insert("$original_len".into(), json!(s.original_len));
            if s.original_len_is_lower_bound {
                object.insert("$original_len_is_lower_bound".into(), Json::Bool(true));
            }
            Json::Object(object)
        }
        Kind::Bytes(b) => {
            let mut object = Map::new();
            object.insert("$bytes".into(), Json::String(STANDARD.encode(&b.value)));
            object.insert("$len".into(), json!(b.value.len()));
            if b.truncated {
                object.insert("$truncated".into(), Json::Bool(true));
                object.insert("$original_len".into(), json!(b.original_len));
            }
            Json::Object(object)
        }
        Kind::List(list) => {
            let items: Vec<Json> = list
                .items
                .iter()
                .map(|i| json_value(Some(i), child))
                .collect();
            if list.total_len > list.items.len() as u64 {
                json!({"$items": items, "$total_len": list.total_len})
            } else {
                Json::Array(items)
            }
        }
        Kind::Map(map) => {
            let cut = map.total_len > map.entries.len() as u64;
            let string_keys: Option<Vec<&str>> = map
                .entries
                .iter()
                .map(|e| match e.key.as_ref().and_then(|k| k.kind.as_ref()) {
                    Some(Kind::String(s)) if !s.truncated => Some(s.value.as_str()),
                    _ => None,
                })
                .collect();
            let unique = string_keys.as_ref().is_some_and(|keys| {
                let set: std::collections::HashSet<&&str> = keys.iter().collect();
                set.len() == keys.len()
            });
            let mut object = Map::new();
            match string_keys {
                // A JSON object only when it loses nothing: string keys, no repeats.
                Some(keys) if unique => {
                    for (key, entry) in keys.into_iter().zip(&map.entries) {
                        object.insert(data_key(key), json_value(entry.value.as_ref(), child));
                    }
                }
                _ => {
                    let entries: Vec<Json> = map
                        .entries
                        .iter()
                        .map(|e| {
                            json!([
                                json_value(e.key.as_ref(), child),
                                json_value(e.value.as_ref(), child)
                            ])
                        })
                        .collect();
                    object.insert("$entries".into(), Json::Array(entries));
                }
            }
            if cut {
                object.insert("$total_len".into(), json!(map.total_len));
            }
            Json::Object(object)
        }
        Kind::Struct(s) => {
            let mut object = Map::new();
            object.insert("$type".into(), Json::String(s.type_name.clone()));
            if u64::from(s.total_fields) > s.fields.len() as u64 {
                object.insert("$total_fields".into(), json!(s.total_fields));
            }
            add_fields(&mut object, &s.fields, child);
            Json::Object(object)
        }
        Kind::Enum(e) => {
            let mut object = Map::new();
            object.insert("$type".into(), Json::String(e.type_name.clone()));
            object.insert("$variant".into(), Json::String(e.variant.clone()));
            if u64::from(e.total_fields) > e.fields.len() as u64 {
                object.insert("$total_fields".into(), json!(e.total_fields));
            }
            add_fields(&mut object, &e.fields, child);
            Json::Object(object)
        }
        Kind::Redacted(r) => json!({"$redacted": r.reason}),
        Kind::NotCaptured(n) => {
            let mut object = Map::new();
            object.insert(
                "$not_captured".into(),
                Json::String(not_captured_reason(n.reason)),
            );
            if !n.detail.is_empty() {
                object.insert("$detail".into(), Json::String(n.detail.clone()));
            }
            Json::Object(object)
        }
    }
}

//! Helpers for reading `loupe.v1` snapshots in tests.

#![allow(dead_code)]

use std::time::Duration;

use loupe_agent::{CaptureSpec, CaptureStream, RateLimit};
use loupe_proto::v1::{self as pb, value::Kind};

/// `spec` with a rate limit no test's few hits reach.
pub fn unthrottled(spec: CaptureSpec) -> CaptureSpec {
    spec.rate(RateLimit {
        per_second: 1_000.0,
        burst: 100,
    })
}

/// Every snapshot until the capture ends.
pub fn drain(stream: &mut CaptureStream) -> Vec<pb::Snapshot> {
    std::iter::from_fn(|| stream.blocking_next()).collect()
}

/// Polls `condition` until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    condition()
}

/// The `request_id` span field a snapshot carries, as text.
pub fn request_id(snapshot: &pb::Snapshot) -> Option<String> {
    let trace = snapshot.trace.as_ref()?;
    let field = trace.span_fields.iter().find(|f| f.name == "request_id")?;
    Some(string(kind(field.value.as_ref())).value.clone())
}

pub fn field<'a>(snapshot: &'a pb::Snapshot, name: &str) -> &'a Kind {
    let field = snapshot
        .fields
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("snapshot has no field {name}: {snapshot:#?}"));
    kind(field.value.as_ref())
}

pub fn kind(value: Option<&pb::Value>) -> &Kind {
    value
        .and_then(|v| v.kind.as_ref())
        .expect("value has a kind")
}

/// The named field of a struct or enum value.
pub fn member<'a>(value: &'a Kind, name: &str) -> &'a Kind {
    let fields = match value {
        Kind::Struct(s) => &s.fields,
        Kind::Enum(e) => &e.fields,
        other => panic!("not a struct: {other:?}"),
    };
    let field = fields
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no member {name} in {value:?}"));
    kind(field.value.as_ref())
}

pub fn string(value: &Kind) -> &pb::StringValue {
    match value {
        Kind::String(s) => s,
        other => panic!("not a string: {other:?}"),
    }
}

pub fn redaction_reason(value: &Kind) -> &str {
    match value {
        Kind::Redacted(r) => &r.reason,
        other => panic!("not redacted: {other:?}"),
    }
}

pub fn not_captured(value: &Kind) -> pb::NotCapturedReason {
    match value {
        Kind::NotCaptured(n) => n.reason(),
        other => panic!("not a not_captured marker: {other:?}"),
    }
}

/// Every string in a value tree, for "no secret anywhere" checks.
pub fn all_text(value: &Kind, out: &mut Vec<String>) {
    match value {
        Kind::String(s) => out.push(s.value.clone()),
        Kind::Bytes(b) => out.push(String::from_utf8_lossy(&b.value).into_owned()),
        Kind::Int(i) => out.push(i.to_string()),
        Kind::Uint(u) => out.push(u.to_string()),
        Kind::List(l) => l.items.iter().for_each(|v| all_text(kind(Some(v)), out)),
        Kind::Map(m) => m.entries.iter().for_each(|e| {
            all_text(kind(e.key.as_ref()), out);
            all_text(kind(e.value.as_ref()), out);
        }),
        Kind::Struct(s) => s
            .fields
            .iter()
            .for_each(|f| all_text(kind(f.value.as_ref()), out)),
        Kind::Enum(e) => e
            .fields
            .iter()
            .for_each(|f| all_text(kind(f.value.as_ref()), out)),
        _ => {}
    }
}

pub fn snapshot_text(snapshot: &pb::Snapshot) -> String {
    let mut out = Vec::new();
    for field in &snapshot.fields {
        all_text(kind(field.value.as_ref()), &mut out);
    }
    if let Some(trace) = &snapshot.trace {
        for field in &trace.span_fields {
            all_text(kind(field.value.as_ref()), &mut out);
        }
    }
    out.join("\n")
}

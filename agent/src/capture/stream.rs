//! The receiving end of a capture, and the protobuf encoding of what it receives.
//!
//! Application threads hand over [`CapturedSnapshot`]s (borrow-free, not yet encoded); the
//! encoding into `loupe.v1.Snapshot` happens here, on whichever thread consumes the stream — the
//! agent's own runtime in production — so it costs the application nothing.

use std::sync::Arc;

use loupe_proto::v1 as pb;
use tokio::sync::mpsc;

use crate::capture::callsite::Callsite;
use crate::capture::serialize::TruncationCounts;
use crate::capture::{CaptureCounters, CaptureShared, CaptureStatus, EndReason};
use crate::context::ThreadInfo;
use crate::redaction::Reason;
use crate::value::{Tape, ValueKind, ValueRef};

/// A snapshot as taken on the application thread.
pub(crate) struct CapturedSnapshot {
    pub sequence: u64,
    pub wall_unix_nanos: i64,
    pub monotonic_nanos: u64,
    pub thread: ThreadInfo,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    /// Span fields: name and where the (redacted) value is in the tape.
    pub span_fields: Vec<(&'static str, u32)>,
    pub callsite: &'static Callsite,
    /// All values of the snapshot.
    pub tape: Tape,
    /// Where each of the callsite's fields starts in the tape, in declaration order.
    pub roots: Vec<u32>,
    pub redacted: Vec<(String, Reason)>,
    pub truncation: TruncationCounts,
    pub counters: CaptureCounters,
    /// This thread's time on the snapshot up to its hand-off (`Snapshot.capture_cost_ns`).
    pub cost_ns: u64,
}

/// The snapshots of one capture, in the order they were taken. Dropping the stream disarms the
/// capture.
pub struct CaptureStream {
    shared: Arc<CaptureShared>,
    receiver: mpsc::Receiver<CapturedSnapshot>,
    service: Arc<str>,
    instance: Arc<str>,
    /// Ends this stream's capture in the engine that armed it.
    retire: fn(u64, EndReason),
}

impl CaptureStream {
    pub(crate) fn new(
        shared: Arc<CaptureShared>,
        receiver: mpsc::Receiver<CapturedSnapshot>,
        service: Arc<str>,
        instance: Arc<str>,
        retire: fn(u64, EndReason),
    ) -> CaptureStream {
        CaptureStream {
            shared,
            receiver,
            service,
            instance,
            retire,
        }
    }

    pub fn capture_id(&self) -> String {
        self.shared.id_string()
    }

    /// The next snapshot, or `None` once the capture has ended and every snapshot it took has
    /// been received. See [`CaptureStream::status`] for why it ended.
    pub async fn next(&mut self) -> Option<pb::Snapshot> {
        let captured = self.receiver.recv().await?;
        Some(self.encode(captured))
    }

    /// [`CaptureStream::next`] for threads outside an async runtime (it panics inside one,
    /// as blocking there would stall the runtime).
    pub fn blocking_next(&mut self) -> Option<pb::Snapshot> {
        let captured = self.receiver.blocking_recv()?;
        Some(self.encode(captured))
    }

    /// A snapshot if one is waiting, without waiting.
    pub fn try_next(&mut self) -> Option<pb::Snapshot> {
        let captured = self.receiver.try_recv().ok()?;
        Some(self.encode(captured))
    }

    pub fn status(&self) -> CaptureStatus {
        CaptureStatus::of(&self.shared)
    }

    /// Ends the capture now; snapshots already taken can still be received.
    pub fn disarm(&self) {
        (self.retire)(self.shared.id, EndReason::Disarmed);
    }

    /// Encodes a snapshot and hands its tape back to the capturing threads.
    fn encode(&self, mut captured: CapturedSnapshot) -> pb::Snapshot {
        let tape = std::mem::take(&mut captured.tape);
        let snapshot = self.encode_with(captured, &tape);
        self.shared.spare_tapes.give_back(tape);
        snapshot
    }

    fn encode_with(&self, captured: CapturedSnapshot, tape: &Tape) -> pb::Snapshot {
        let site = captured.callsite;
        let field = |name: &str, root: u32| pb::Field {
            name: name.to_owned(),
            value: Some(tape.get(root).map_or_else(null_value, encode_value)),
        };
        pb::Snapshot {
            session_id: self.shared.session_id.to_string(),
            capture_id: self.shared.id_string(),
            point: site.name().to_owned(),
            service: self.service.to_string(),
            instance: self.instance.to_string(),
            sequence: captured.sequence,
            wall_time_unix_nanos: captured.wall_unix_nanos,
            monotonic_nanos: captured.monotonic_nanos,
            thread: Some(pb::ThreadInfo {
                name: captured.thread.name.to_string(),
                id: captured.thread.id,
            }),
            trace: Some(pb::TraceContext {
                trace_id: captured.trace_id.unwrap_or_default(),
                span_id: captured.span_id.unwrap_or_default(),
                span_fields: captured
                    .span_fields
                    .iter()
                    .map(|(name, root)| field(name, *root))
                    .collect(),
            }),
            fields: site
                .field_names()
                .iter()
                .zip(&captured.roots)
                .map(|(name, root)| field(name, *root))
                .collect(),
            redacted: captured
                .redacted
                .into_iter()
                .map(|(path, reason)| pb::RedactedPath {
                    path,
                    reason: reason.to_string(),
                })
                .collect(),
            truncation: Some(pb::Truncation {
                values_not_captured: captured.truncation.values_not_captured,
                strings_truncated: captured.truncation.strings_truncated,
                collections_truncated: captured.truncation.collections_truncated,
                structs_truncated: captured.truncation.structs_truncated,
                snapshot_size_limit_reached: captured.truncation.snapshot_size_limit_reached,
            }),
            drops: Some(pb::DropCounters {
                hits: captured.counters.hits,
                condition_false: captured.counters.condition_false,
                condition_errors: captured.counters.condition_errors,
                skipped_rate: captured.counters.skipped_rate,
                skipped_cpu_budget: captured.counters.skipped_cpu_budget,
                dropped_queue_full: captured.counters.dropped_queue_full,
                skipped_reentrant: captured.counters.skipped_reentrant,
                lost_at_source: captured.counters.lost_at_source,
            }),
            capture_cost_ns: captured.cost_ns,
            location: Some(pb::SourceLocation {
                file: site.file().to_owned(),
                line: site.line(),
                module_path: site.module_path().to_owned(),
            }),
        }
    }
}

impl std::fmt::Debug for CaptureStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureStream")
            .field("capture_id", &self.shared.id_string())
            .field("point", &self.shared.point)
            .field("session_id", &self.shared.session_id)
            .finish_non_exhaustive()
    }
}

impl Drop for CaptureStream {
    fn drop(&mut self) {
        self.shared.end(EndReason::ReceiverDropped);
        (self.retire)(self.shared.id, EndReason::ReceiverDropped);
    }
}

fn null_value() -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::Null(pb::Null {})),
    }
}

fn encode_fields(value: ValueRef<'_>) -> Vec<pb::Field> {
    value
        .fields()
        .map(|(name, value)| pb::Field {
            name: name.to_owned(),
            value: Some(encode_value(value)),
        })
        .collect()
}

/// The protobuf form of a captured value.
pub fn encode_value(value: ValueRef<'_>) -> pb::Value {
    use pb::value::Kind;
    let kind = match value.kind() {
        ValueKind::Null => Kind::Null(pb::Null {}),
        ValueKind::Bool(b) => Kind::Bool(b),
        ValueKind::Int(i) => Kind::Int(i),
        ValueKind::Uint(u) => Kind::Uint(u),
        ValueKind::Float(f) => Kind::Float(f),
        ValueKind::Str { text, span } => Kind::String(pb::StringValue {
            value: text.to_owned(),
            truncated: span.truncated,
            original_len: span.original_len,
            original_len_is_lower_bound: span.original_len_is_lower_bound,
        }),
        ValueKind::Bytes {
            bytes,
            truncated,
            original_len,
        } => Kind::Bytes(pb::BytesValue {
            value: bytes.to_vec(),
            truncated,
            original_len,
        }),
        ValueKind::List { total_len } => Kind::List(pb::ListValue {
            items: value.items().map(encode_value).collect(),
            total_len,
        }),
        ValueKind::Map { total_len } => Kind::Map(pb::MapValue {
            entries: value
                .entries()
                .map(|(key, value)| pb::MapEntry {
                    key: Some(encode_value(key)),
                    value: Some(encode_value(value)),
                })
                .collect(),
            total_len,
        }),
        ValueKind::Struct {
            type_name,
            total_fields,
        } => Kind::Struct(pb::StructValue {
            type_name: type_name.to_owned(),
            fields: encode_fields(value),
            total_fields,
        }),
        ValueKind::Enum {
            type_name,
            variant,
            total_fields,
        } => Kind::Enum(pb::EnumValue {
            type_name: type_name.to_owned(),
            variant: variant.to_owned(),
            fields: encode_fields(value),
            total_fields,
        }),
        ValueKind::Redacted(reason) => Kind::Redacted(pb::Redacted {
            reason: reason.to_string(),
        }),
        ValueKind::NotCaptured { reason, detail } => Kind::NotCaptured(pb::NotCaptured {
            reason: reason as i32,
            detail: detail.to_owned(),
        }),
    };
    pb::Value { kind: Some(kind) }
}

//! The receiving end of a capture, and the protobuf encoding of what it receives.
//!
//! Application threads hand over [`CapturedSnapshot`]s (borrow-free, not redacted, not yet
//! encoded); their redaction ([`UnredactedTape::redact`]) and the encoding into
//! `loupe.v1.Snapshot` happen here, on whichever thread consumes the stream — the agent's own
//! runtime in production — so the application's thread does neither. The redaction's time is
//! charged to the agent's CPU budget like the capture work on the application's thread (it
//! used to be part of it); the encoding's is not, as before.
//!
//! A hit does not wake the stream (but for a burst, below). Waking a parked consumer is a
//! system call and a scheduler pass on the application's thread — measured at 15–20 µs a hit
//! on a loaded machine, more than the capture itself, and on a busy machine it can hand the
//! hit's core to the woken thread. The hit only queues its snapshot ([`SnapshotSender`]); the
//! agent's thread, which ticks while any capture is armed, wakes each stream whose snapshots
//! wait, and the queue's last sender wakes its stream when it drops, so that the stream sees
//! the end; only a burst that fills half the queue within a tick has the hit wake it. This is
//! how tracing exporters batch (OpenTelemetry's batch span processor, a
//! dynamic-instrumentation uploader): a snapshot reaches its stream up to one tick after its
//! hit, well within the hit-to-client budget. The tick is 5 ms while snapshots keep arriving
//! and lengthens to 20 ms while none do ([`IDLE_DRAIN_TICK`]), so an armed capture of a quiet
//! point costs the host a wake every 20 ms, and nothing is woken while nothing is armed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use loupe_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};

use crate::capture::callsite::Callsite;
use crate::capture::serialize::UnredactedTape;
use crate::capture::serialize::replay::{RedactedSnapshot, ReplayRules};
use crate::capture::warm;
use crate::capture::{CaptureCounters, CaptureShared, CaptureStatus, EndReason};
use crate::context::{ThreadInfo, TraceIdentifier};
use crate::limits::CaptureLimits;
use crate::redaction::RedactionRules;
use crate::value::{TAPE_BUFFERS, Tape, ValueKind, ValueRef};

/// A snapshot as taken on the application thread: raw values, redacted when received.
///
/// It travels boxed, and the box makes a round trip: the stream hands it back, emptied, once
/// the snapshot is encoded ([`SpareRecords`]), and a later hit fills it in place. Moved by
/// value, its few hundred bytes were copied through the hit's stack frame into the queue, a
/// cold hit's worth of extra cache lines (measured in the README's capture-cost section).
pub(crate) struct CapturedSnapshot {
    pub sequence: u64,
    /// When the hit began, on the engine's monotonic clock; its wall-clock time is worked out
    /// when the snapshot is received ([`CaptureStream::wall_time_of`]), so that the hit reads
    /// one clock instead of two.
    pub monotonic_nanos: u64,
    pub thread: ThreadInfo,
    pub trace_id: Option<TraceIdentifier>,
    pub span_id: Option<TraceIdentifier>,
    pub callsite: &'static Callsite,
    /// All values of the snapshot, as the application's thread copied them, with where each
    /// of the callsite's fields starts.
    pub tape: UnredactedTape,
    pub counters: CaptureCounters,
    /// This thread's time on the snapshot up to its hand-off (`Snapshot.capture_cost_ns`).
    pub cost_ns: u64,
}

impl CapturedSnapshot {
    /// A record with nothing in it but an empty `tape`, for a hit that found no spare one.
    pub(crate) fn blank(callsite: &'static Callsite, tape: Tape) -> Box<CapturedSnapshot> {
        Box::new(CapturedSnapshot {
            sequence: 0,
            monotonic_nanos: 0,
            thread: ThreadInfo::current(),
            trace_id: None,
            span_id: None,
            callsite,
            tape: UnredactedTape::spare(tape),
            counters: CaptureCounters::default(),
            cost_ns: 0,
        })
    }
}

/// Records handed back by the stream once their snapshots are encoded, each with its tape
/// emptied, so that a capturing thread fills one instead of allocating a record and a tape.
/// On a hit that finds the caches cold, an allocation is a walk through the allocator's code
/// and bins, and in glibc always its slow path: the agent's thread frees each record into its
/// own cache, never the capturing thread's. Bounded in count and in size per tape; the
/// capturing thread never waits for the lock.
///
/// The agent's thread names the pool's memory on every tick, for the warm pass
/// (`SpareRecords::memory`), from addresses each give-back publishes, not under the lock: a
/// hit that found the pool busy would allocate a record, or free one, and the agent's thread
/// can be descheduled while it holds a lock.
#[derive(Default)]
#[allow(clippy::vec_box)] // The boxes are what is kept: each goes back into the queue as is.
pub(crate) struct SpareRecords {
    records: std::sync::Mutex<Vec<Box<CapturedSnapshot>>>,
    /// Where the record last given back to each place in `records` lay, and its tape's
    /// buffers, as start and end addresses: what the warm pass prefetches.
    places: [[AtomicUsize; 2 * RANGES_A_RECORD]; SpareRecords::MAX_SPARE],
    /// How many places hold a spare record, set under the lock by every take and give-back:
    /// a taken record is being filled by a hit, maybe on another core, and a prefetch for
    /// writing would take its lines from that hit.
    spare: AtomicUsize,
}

/// Address ranges a spare record is published as: the record, then its tape's buffers.
const RANGES_A_RECORD: usize = 1 + TAPE_BUFFERS;

impl SpareRecords {
    /// Records kept per capture: one in flight while the next hit takes the other.
    const MAX_SPARE: usize = 2;
    /// Records whose tape grew larger (a snapshot near the size limits) are freed rather
    /// than kept.
    const MAX_SPARE_BYTES: usize = 32 * 1024;

    /// A record with an empty tape, if one is spare and the pool is not busy; never blocks.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub fn take(&self) -> Option<Box<CapturedSnapshot>> {
        let mut records = self.records.try_lock().ok()?;
        let record = records.pop();
        self.spare.store(records.len(), Ordering::Relaxed);
        record
    }

    /// Where the spare records and their tapes' buffers lie, for `capture::warm` to prefetch
    /// on the cores hits run on, as their give-backs published them: read without the lock,
    /// so the agent's thread never makes a hit find the pool busy. Only addresses are read,
    /// and only prefetched, which never faults: a range read while a take or give-back runs
    /// may name a record just taken, or mix two records' bounds for one pass; one that is
    /// inverted or larger than a kept record's is left out.
    pub fn memory(&self, ranges: &mut Vec<std::ops::Range<usize>>) {
        let spare = self.spare.load(Ordering::Relaxed).min(Self::MAX_SPARE);
        for place in &self.places[..spare] {
            for bounds in place.chunks_exact(2) {
                let start = bounds[0].load(Ordering::Relaxed);
                let end = bounds[1].load(Ordering::Relaxed);
                if start < end && end - start <= Self::MAX_SPARE_BYTES {
                    ranges.push(start..end);
                }
            }
        }
    }

    /// Publishes `ranges` (a record's, see [`SpareRecords::ranges_of`]) for the record about
    /// to be kept at `place` (see [`SpareRecords::memory`]).
    fn publish(&self, place: usize, ranges: &[std::ops::Range<usize>; RANGES_A_RECORD]) {
        let Some(bounds) = self.places.get(place) else {
            return;
        };
        for (range, bounds) in ranges.iter().zip(bounds.chunks_exact(2)) {
            bounds[0].store(range.start, Ordering::Relaxed);
            bounds[1].store(range.end, Ordering::Relaxed);
        }
    }

    /// Where `record` and its tape's buffers lie.
    fn ranges_of(record: &CapturedSnapshot) -> [std::ops::Range<usize>; RANGES_A_RECORD] {
        let buffers = record.tape.buffer_ranges();
        std::array::from_fn(|index| match index {
            0 => warm::memory_of(record),
            _ => buffers[index - 1].clone(),
        })
    }

    /// Keeps `record` for a later snapshot, its tape emptied, if there is room; otherwise
    /// frees it.
    pub fn give_back(&self, mut record: Box<CapturedSnapshot>) {
        if record.tape.capacity_bytes() > Self::MAX_SPARE_BYTES {
            return;
        }
        record.tape.clear();
        // Worked out before the lock: a hit that finds it held allocates instead.
        let ranges = Self::ranges_of(&record);
        if let Ok(mut records) = self.records.try_lock()
            && records.len() < Self::MAX_SPARE
        {
            self.publish(records.len(), &ranges);
            records.push(record);
            self.spare.store(records.len(), Ordering::Relaxed);
        }
    }
}

/// How often the agent's thread wakes the streams whose snapshots wait while snapshots keep
/// arriving (see the module docs).
pub(crate) const DRAIN_TICK: Duration = Duration::from_millis(5);

/// The longest the agent's thread sleeps between looks while something is armed: its tick
/// doubles from [`DRAIN_TICK`] up to this while nothing waits, and halves back while snapshots
/// keep arriving. Each wake costs the host a scheduler round trip — measured at 30–50 µs on a
/// virtual machine, so a steady 5 ms tick took 0.75 % of a core while armed, whatever the
/// point's traffic, and this one about a third of that (0.25 %, `demo_overhead`'s printout);
/// a snapshot of a sparse point reaches its stream within 20 ms of its hit (10 on average),
/// inside the hit-to-CLI budget (p50 ≤ 20 ms).
pub(crate) const IDLE_DRAIN_TICK: Duration = Duration::from_millis(20);

/// The capturing threads' end of a capture's bounded queue. Sending wakes the stream only
/// once the queue is half full (with a queue of one or two, every send); dropping the sender
/// wakes it, once its queue can receive nothing more.
pub(crate) struct SnapshotSender {
    /// `None` only while dropping.
    sender: Option<mpsc::Sender<Box<CapturedSnapshot>>>,
    shared: Arc<CaptureShared>,
}

impl SnapshotSender {
    pub(crate) fn new(
        sender: mpsc::Sender<Box<CapturedSnapshot>>,
        shared: Arc<CaptureShared>,
    ) -> SnapshotSender {
        SnapshotSender {
            sender: Some(sender),
            shared,
        }
    }

    /// Queues `snapshot` without waiting; the queue is bounded, and a snapshot it cannot take
    /// is dropped here, its record kept for the next hit (the caller counts it). The stream
    /// waits on its own wake-up, not on the queue (it only takes what is there), so this wakes
    /// it only from half full on.
    #[inline]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub(crate) fn try_send(&self, snapshot: Box<CapturedSnapshot>) -> Result<(), NotQueued> {
        let Some(sender) = &self.sender else {
            return Err(NotQueued::Closed);
        };
        match sender.try_send(snapshot) {
            Ok(()) => {
                // A burst can fill the queue within a tick: from half full on, the hit wakes
                // the stream itself (one wake for many snapshots, as a batch exporter does).
                if sender.capacity() <= sender.max_capacity() / 2 {
                    self.shared.delivery.notify_one();
                }
                Ok(())
            }
            Err(TrySendError::Full(record)) => {
                self.shared.spare_records.give_back(record);
                Err(NotQueued::Full)
            }
            Err(TrySendError::Closed(_)) => Err(NotQueued::Closed),
        }
    }

    /// Whether snapshots wait in the queue for the stream.
    pub(crate) fn has_waiting(&self) -> bool {
        self.sender
            .as_ref()
            .is_some_and(|sender| sender.capacity() < sender.max_capacity())
    }
}

/// Why [`SnapshotSender::try_send`] could not queue a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotQueued {
    /// The queue is full: the stream is behind.
    Full,
    /// The stream is gone.
    Closed,
}

impl Drop for SnapshotSender {
    fn drop(&mut self) {
        // The queue closes with its sender; the stream, woken, finds it closed once drained.
        drop(self.sender.take());
        self.shared.delivery.notify_one();
    }
}

/// The snapshots of one capture, in the order they were taken. Dropping the stream disarms the
/// capture.
pub struct CaptureStream {
    shared: Arc<CaptureShared>,
    receiver: mpsc::Receiver<Box<CapturedSnapshot>>,
    service: Arc<str>,
    instance: Arc<str>,
    /// What the capture's snapshots are redacted by (see [`UnredactedTape::redact`]).
    limits: CaptureLimits,
    rules: Arc<RedactionRules>,
    /// The last redacted tape's buffers, for the next.
    scratch: Tape,
    hooks: EngineHooks,
}

/// What a stream asks of the engine that armed its capture, as functions, so that the stream
/// needs no knowledge of the engine.
#[derive(Clone, Copy)]
pub(crate) struct EngineHooks {
    /// Ends this stream's capture.
    pub retire: fn(u64, EndReason),
    /// Charges this many nanoseconds of capture work to the agent's CPU budget.
    pub charge: fn(u64),
    /// The engine's monotonic clock, which hits are timed by.
    pub now_ns: fn() -> u64,
}

/// Redacted tapes larger than this (a snapshot near the size limits) are not kept for the next.
const MAX_SCRATCH_BYTES: usize = 32 * 1024;

impl CaptureStream {
    pub(crate) fn new(
        shared: Arc<CaptureShared>,
        receiver: mpsc::Receiver<Box<CapturedSnapshot>>,
        (service, instance): (Arc<str>, Arc<str>),
        (limits, rules): (CaptureLimits, Arc<RedactionRules>),
        hooks: EngineHooks,
    ) -> CaptureStream {
        CaptureStream {
            shared,
            receiver,
            service,
            instance,
            limits,
            rules,
            scratch: Tape::default(),
            hooks,
        }
    }

    pub fn capture_id(&self) -> String {
        self.shared.id_string()
    }

    /// The next snapshot, or `None` once the capture has ended and every snapshot it took has
    /// been received. See [`CaptureStream::status`] for why it ended.
    pub async fn next(&mut self) -> Option<pb::Snapshot> {
        let shared = Arc::clone(&self.shared);
        loop {
            // Created before looking, so that a wake between the look and the wait is kept.
            let delivered = shared.delivery.notified();
            match self.receiver.try_recv() {
                Ok(captured) => return Some(self.encode(captured)),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => delivered.await,
            }
        }
    }

    /// [`CaptureStream::next`] for threads outside an async runtime: the thread parks until
    /// the stream is woken, as an async reader would wait.
    ///
    /// # Panics
    ///
    /// Inside a tokio runtime, where parking would stall the runtime's thread for up to a
    /// drain tick a call (checked where the agent has a runtime of its own, the `endpoint`
    /// feature): use [`CaptureStream::next`] there.
    pub fn blocking_next(&mut self) -> Option<pb::Snapshot> {
        #[cfg(feature = "endpoint")]
        assert!(
            tokio::runtime::Handle::try_current().is_err(),
            "CaptureStream::blocking_next called inside a tokio runtime: await next() instead"
        );
        block_on(self.next())
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
        (self.hooks.retire)(self.shared.id, EndReason::Disarmed);
    }

    /// Redacts and encodes a snapshot, and hands its record back to the capturing threads.
    fn encode(&mut self, captured: Box<CapturedSnapshot>) -> pb::Snapshot {
        let redacted = self.redact(&captured);
        let snapshot = self.encode_with(&captured, &redacted);
        self.shared.spare_records.give_back(captured);
        let mut tape = redacted.tape;
        if tape.capacity_bytes() <= MAX_SCRATCH_BYTES {
            tape.clear();
            self.scratch = tape;
        }
        snapshot
    }

    /// The snapshot's values as they may leave the process; the time it takes is charged to
    /// the agent's CPU budget.
    fn redact(&mut self, captured: &CapturedSnapshot) -> RedactedSnapshot {
        let started = Instant::now();
        let rules = ReplayRules {
            limits: &self.limits,
            rules: &self.rules,
            rules_id: self.shared.id,
        };
        let redacted = captured.tape.redact(
            rules,
            captured.callsite.field_names(),
            std::mem::take(&mut self.scratch),
        );
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        (self.hooks.charge)(took);
        redacted
    }

    /// The wall-clock time of a hit at `monotonic_ns`: now on the wall clock, less the time
    /// since the hit on the monotonic one. A snapshot is received within moments of its hit,
    /// so a wall-clock step in between (the one thing that would make this differ from
    /// reading the wall clock on the hit) is as unlikely as it is small in effect.
    fn wall_time_of(&self, monotonic_ns: u64) -> i64 {
        let since_hit = (self.hooks.now_ns)().saturating_sub(monotonic_ns);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        now.saturating_sub(i64::try_from(since_hit).unwrap_or(i64::MAX))
    }

    fn encode_with(
        &self,
        captured: &CapturedSnapshot,
        redacted: &RedactedSnapshot,
    ) -> pb::Snapshot {
        let site = captured.callsite;
        let tape = &redacted.tape;
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
            wall_time_unix_nanos: self.wall_time_of(captured.monotonic_nanos),
            monotonic_nanos: captured.monotonic_nanos,
            thread: Some(pb::ThreadInfo {
                name: captured.thread.name.to_string(),
                id: captured.thread.id,
            }),
            trace: Some(pb::TraceContext {
                trace_id: identifier(captured.trace_id),
                span_id: identifier(captured.span_id),
                span_fields: redacted
                    .span_fields
                    .iter()
                    .map(|(name, root)| field(name, *root))
                    .collect(),
            }),
            fields: site
                .field_names()
                .iter()
                .zip(&redacted.roots)
                .map(|(name, root)| field(name, *root))
                .collect(),
            redacted: redacted
                .redacted
                .iter()
                .map(|(path, reason)| pb::RedactedPath {
                    path: path.clone(),
                    reason: reason.to_string(),
                })
                .collect(),
            truncation: Some(pb::Truncation {
                values_not_captured: redacted.truncation.values_not_captured,
                strings_truncated: redacted.truncation.strings_truncated,
                collections_truncated: redacted.truncation.collections_truncated,
                structs_truncated: redacted.truncation.structs_truncated,
                snapshot_size_limit_reached: redacted.truncation.snapshot_size_limit_reached,
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
        (self.hooks.retire)(self.shared.id, EndReason::ReceiverDropped);
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
        ValueKind::List { total_len, .. } => Kind::List(pb::ListValue {
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

/// Runs `future` to its end on this thread, parked between polls until its waker unparks it.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

/// A trace context identifier as the wire carries it: empty when there is none.
fn identifier(id: Option<TraceIdentifier>) -> String {
    id.map_or_else(String::new, |id| id.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::serialize::SnapshotBuilder;
    use crate::capture::serialize::field::FieldValue;
    use std::future::Future;
    use std::task::{Context, Waker};

    static SITE: Callsite = Callsite::new("test.stream", "stream.rs", 1, "stream", &[], &[]);

    fn shared() -> Arc<CaptureShared> {
        Arc::new(CaptureShared {
            id: 1,
            session_id: Arc::from("s"),
            point: "test.stream",
            callsites: &[],
            condition_source: None,
            max_snapshots: u64::MAX,
            counters: Default::default(),
            end: Default::default(),
            last_condition_error: std::sync::Mutex::new(None),
            spare_records: Default::default(),
            condition_budget_strikes: Default::default(),
            delivery: Default::default(),
        })
    }

    /// Whether the stream was woken since it last looked: a wake with nobody waiting leaves a
    /// permit, which the next wait takes at once.
    fn woken(shared: &CaptureShared) -> bool {
        let notified = std::pin::pin!(shared.delivery.notified());
        notified
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_ready()
    }

    /// A record holding a raw capture of `text`, on a tape with room for `capacity` bytes.
    fn record_with_text(text: &str, capacity: usize) -> Box<CapturedSnapshot> {
        let limits = CaptureLimits::DEFAULT;
        let rules = crate::redaction::RedactionRules::builtin();
        let mut builder =
            SnapshotBuilder::deferred(&limits, &rules, 94, Tape::with_capacity(16, capacity));
        builder.capture_root("value", FieldValue::serde(&text));
        let mut record = CapturedSnapshot::blank(&SITE, Tape::default());
        record.tape = builder.into_unredacted();
        record
    }

    fn record(text: &str) -> Box<CapturedSnapshot> {
        record_with_text(text, 64)
    }

    #[test]
    fn a_burst_that_fills_half_the_queue_wakes_the_stream_and_a_full_queue_keeps_the_record() {
        let shared = shared();
        let (sender, _receiver) = mpsc::channel(4);
        let sender = SnapshotSender::new(sender, Arc::clone(&shared));
        assert_eq!(sender.try_send(record("one")), Ok(()));
        assert!(!woken(&shared), "one snapshot waits for the drain tick");
        assert_eq!(sender.try_send(record("two")), Ok(()));
        assert!(
            woken(&shared),
            "half the queue full: the hit wakes the stream"
        );
        assert_eq!(sender.try_send(record("three")), Ok(()));
        assert_eq!(sender.try_send(record("four")), Ok(()));
        assert!(shared.spare_records.take().is_none());
        assert_eq!(sender.try_send(record("five")), Err(NotQueued::Full));
        let kept = shared
            .spare_records
            .take()
            .expect("the refused record is kept");
        assert_eq!(kept.tape.sizes(), (0, 0), "emptied before it is kept");
    }

    /// A snapshot's wall-clock time is its hit's: now, less the time since the hit on the
    /// monotonic clock; a hit stamped after "now" (clocks read in either order) is now.
    #[test]
    fn a_snapshot_is_dated_when_its_hit_happened() {
        const NOW_NS: u64 = 50_000_000_000;
        let (_sender, receiver) = mpsc::channel(1);
        let stream = CaptureStream::new(
            shared(),
            receiver,
            (Arc::from("service"), Arc::from("instance")),
            (CaptureLimits::DEFAULT, Arc::new(RedactionRules::builtin())),
            EngineHooks {
                retire: |_, _| {},
                charge: |_| {},
                now_ns: || NOW_NS,
            },
        );
        let wall_now = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        };
        let before = wall_now();
        let dated = stream.wall_time_of(NOW_NS - 3_000_000_000);
        let after = wall_now();
        assert!(
            (before - 3_000_000_000..=after - 3_000_000_000).contains(&dated),
            "{dated} not 3 s before [{before}, {after}]"
        );
        let later = stream.wall_time_of(NOW_NS + 1_000);
        assert!((before..=wall_now()).contains(&later));
    }

    #[test]
    fn the_pool_keeps_two_records_and_frees_those_whose_tape_grew_large() {
        let shared = shared();
        let pool = &shared.spare_records;
        for _ in 0..3 {
            pool.give_back(record("raw value"));
        }
        let first = pool.take().expect("kept");
        let second = pool.take().expect("kept");
        assert!(pool.take().is_none(), "at most two are kept");
        assert_eq!(first.tape.sizes(), (0, 0));
        assert_eq!(second.tape.sizes(), (0, 0));
        pool.give_back(record_with_text("x", SpareRecords::MAX_SPARE_BYTES + 1));
        assert!(pool.take().is_none(), "a record with a large tape is freed");
    }

    #[test]
    fn the_pools_memory_names_each_spare_record_and_its_tapes_buffers() {
        let shared = shared();
        let pool = &shared.spare_records;
        let mut ranges = Vec::new();
        pool.memory(&mut ranges);
        assert!(ranges.is_empty(), "no spare record, no memory");

        pool.give_back(record_with_text("raw value", 256));
        pool.memory(&mut ranges);
        let kept = pool.take().expect("kept");
        let start = &raw const *kept as usize;
        assert!(
            ranges.contains(&(start..start + std::mem::size_of::<CapturedSnapshot>())),
            "the record itself"
        );
        // A buffer never allocated has no memory to name.
        for buffer in kept
            .tape
            .buffer_ranges()
            .into_iter()
            .filter(|b| !b.is_empty())
        {
            assert!(ranges.contains(&buffer), "the tape's buffer at {buffer:x?}");
        }
        let text = kept.tape.buffer_ranges()[1].clone();
        assert!(text.len() >= 256, "a buffer's whole capacity: {text:x?}");

        // A taken record is a hit's to fill: the pass must not take its lines for writing.
        ranges.clear();
        pool.memory(&mut ranges);
        assert!(
            ranges.is_empty(),
            "a taken record is not named: {ranges:x?}"
        );
    }

    /// The agent's thread names the pool's memory on every tick (`memory`) while hits take
    /// and give back records: it never makes the pool busy, so a hit never allocates a record,
    /// or frees one, for meeting it. Under the lock, that look failed `tests/hit_allocations.rs`
    /// about one run in twelve, and missed about 70 % of the takes here.
    #[test]
    fn the_agent_threads_look_at_the_pool_never_makes_it_busy() {
        let shared = shared();
        shared
            .spare_records
            .give_back(record_with_text("raw value", 256));
        let looking = std::sync::atomic::AtomicBool::new(true);
        let looks = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut ranges = Vec::new();
                while looking.load(Ordering::Relaxed) {
                    ranges.clear();
                    shared.spare_records.memory(&mut ranges);
                    looks.fetch_add(1, Ordering::Relaxed);
                }
            });
            while looks.load(Ordering::Relaxed) == 0 {
                std::hint::spin_loop();
            }
            let mut missed = 0;
            for _ in 0..100_000 {
                match shared.spare_records.take() {
                    Some(record) => shared.spare_records.give_back(record),
                    None => missed += 1,
                }
            }
            looking.store(false, Ordering::Relaxed);
            assert_eq!(missed, 0, "takes that found no spare record");
        });
    }
}

//! Correlation context: which request, trace and thread a snapshot belongs to.
//!
//! [`CorrelationLayer`] is a `tracing-subscriber` layer that keeps a bounded copy of the span
//! fields a capture can use. At a hit, the capture walks the current span stack (innermost
//! first) and reads them, so a snapshot carries `request_id` and the trace and span ids, and a
//! condition can say `ctx.request_id == "r-7f3a"`.
//!
//! The lookup needs the subscriber to be built on `tracing_subscriber::Registry` (the usual
//! `tracing_subscriber::registry().with(...)`); under any other subscriber snapshots carry the
//! thread only. Raw span values are kept here, each with whether it was cut when recorded;
//! redaction happens per capture when they are copied into a snapshot, and a cut value is
//! judged as cut there (a secret running into the cut is masked).
//!
//! **Which fields `ctx` carries (a product decision).** Snapshots exist to find one request's
//! state and follow it to its trace, so by default `ctx` carries the identifiers that do that
//! — [`DEFAULT_SPAN_FIELDS`]: `request_id`, `trace_id`, `span_id` — as Datadog's and
//! Lightrun's snapshots carry the trace and span ids and not every span tag. Other span fields
//! (an HTTP method, a path, a user agent) are recorded only when something asks for them:
//!
//! - a capture's condition: `ctx.tier == "gold"` makes the layer record `tier`, and a
//!   condition that reads `ctx` whole (`'tier' in ctx`) records every field;
//! - a capture's spec: [`crate::CaptureSpec::span_fields`] names more fields, or `"*"` for all;
//! - the service: [`CorrelationLayer::with_span_fields`] adds names its spans use as request
//!   identifiers (a tenant, a job id), recorded as if they were defaults.
//!
//! The engine publishes the union over the armed captures whenever a capture is armed or ends
//! (before the capture can be hit); the layer resolves it once per span callsite into a mask
//! of field indices and caches that per thread, so a span with no wanted field costs a few
//! loads and one with wanted fields copies only those, formatting nothing else. The copies
//! live in a table of the layer's, by span id (`SpanTable`), not in the span's extensions:
//! no allocation and no registry lookup a span. Copying every field of the demo's request span
//! into its extensions cost about 1,300 instructions a request (2.9 % of the request), alone
//! over the armed budget.
//!
//! **Free while nothing is armed.** The layer copies nothing while no capture is armed anywhere
//! in the process (one relaxed load per span). The price: a span opened before the first capture
//! was armed carries no fields, so a request already in flight when a capture starts is captured
//! without its `request_id` (its thread and the span id are still there) and a `ctx.` condition
//! does not match it; likewise a field a new capture asks for is missing from spans opened
//! before it was armed. Requests that start after arming carry their context as usual.
//!
//! `trace_id` and `span_id` also travel outside the redacted values, in the snapshot's trace
//! context, so they are kept there only when they look like the identifiers they are named
//! after: hexadecimal digits and dashes, at most [`MAX_TRACE_ID_LEN`] bytes (W3C, B3, X-Ray,
//! UUIDs). Anything else is left to the span fields, where it is scanned like any value.

use std::cell::{Cell, OnceCell};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwapOption;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Metadata, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Fields kept per span; more are ignored (the span is still walked).
const MAX_FIELDS_PER_SPAN: usize = 16;
/// Bytes kept per span field value.
const MAX_SPAN_VALUE_BYTES: usize = 512;
/// Fields gathered over the whole span stack.
pub(crate) const MAX_CONTEXT_FIELDS: usize = 32;
/// Longest `trace_id`/`span_id` carried in the trace context.
pub const MAX_TRACE_ID_LEN: usize = 64;

/// The span fields recorded while anything is armed, whatever the captures ask: what
/// identifies a request and a trace (see the module docs).
pub const DEFAULT_SPAN_FIELDS: [&str; 3] = ["request_id", "trace_id", "span_id"];
/// What a capture names to ask for every span field.
pub const ALL_SPAN_FIELDS: &str = "*";
/// Span field names one capture may ask for.
pub const MAX_REQUESTED_SPAN_FIELDS: usize = 32;
/// Longest span field name a capture may ask for.
pub const MAX_SPAN_FIELD_NAME_LEN: usize = 128;

/// The span fields a condition reads through `ctx` (`Condition::context_reads`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContextReads<'c> {
    /// These names (none when it does not read `ctx`).
    Named(Vec<&'c str>),
    /// `ctx` as a whole: every field.
    All,
}

/// The span fields one armed capture reads: those it asked for and those its condition reads
/// through `ctx`, beyond [`DEFAULT_SPAN_FIELDS`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SpanFieldRequest {
    all: bool,
    names: Vec<Box<str>>,
}

impl SpanFieldRequest {
    /// `asked` as a capture spec names them ([`ALL_SPAN_FIELDS`] for all) plus what `reads`
    /// (its condition's `ctx`) needs.
    pub fn new(asked: &[String], reads: ContextReads<'_>) -> SpanFieldRequest {
        let mut request = SpanFieldRequest::default();
        for name in asked {
            request.add(name);
        }
        match reads {
            ContextReads::All => request.all = true,
            ContextReads::Named(names) => names.into_iter().for_each(|name| request.add(name)),
        }
        request
    }

    fn add(&mut self, name: &str) {
        if name == ALL_SPAN_FIELDS {
            self.all = true;
        } else if !DEFAULT_SPAN_FIELDS.contains(&name) && !self.names.iter().any(|n| **n == *name) {
            self.names.push(name.into());
        }
    }

    /// Why `asked` cannot be a capture's request, if it cannot.
    pub fn check(asked: &[String]) -> Result<(), &'static str> {
        if asked.len() > MAX_REQUESTED_SPAN_FIELDS {
            return Err("span_fields names more than 32 fields");
        }
        if asked
            .iter()
            .any(|name| name.is_empty() || name.len() > MAX_SPAN_FIELD_NAME_LEN)
        {
            return Err("span_fields has an empty name or one longer than 128 bytes");
        }
        Ok(())
    }
}

/// The union of the armed captures' [`SpanFieldRequest`]s: what the layer records beyond the
/// defaults and its service's own names.
#[derive(Debug, Default)]
struct Selection {
    all: bool,
    names: Vec<Box<str>>,
}

/// The current selection (`None`: nothing beyond the defaults), replaced by the engine under its
/// arm lock whenever the armed captures change, and its generation, which the layer's
/// per-thread cache of span callsites compares to notice a change.
static SELECTION: ArcSwapOption<Selection> = ArcSwapOption::const_empty();
static SELECTION_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Publishes the span fields `requests` (every armed capture's) read. Called by the engine with
/// its arm lock held, so publications are serialized.
pub(crate) fn select_span_fields<'r>(requests: impl IntoIterator<Item = &'r SpanFieldRequest>) {
    let mut selection = Selection::default();
    for request in requests {
        selection.all |= request.all;
        for name in &request.names {
            if !selection.names.contains(name) {
                selection.names.push(name.clone());
            }
        }
    }
    let selection = (selection.all || !selection.names.is_empty()).then(|| Arc::new(selection));
    SELECTION.store(selection);
    SELECTION_GENERATION.fetch_add(1, Ordering::Release);
}

/// The fields of one span callsite worth recording, as bits by field index.
type FieldMask = u64;

/// What a cached [`FieldMask`] was computed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CacheKey {
    /// The span callsite's metadata, by address.
    callsite: usize,
    /// The layer's service fields, by address and length.
    service: (usize, usize),
    /// [`SELECTION_GENERATION`] when it was computed.
    generation: u64,
}

thread_local! {
    /// The last span callsite this thread created a span of while armed, with its mask. A
    /// service creates most of its spans from a few callsites, so this spares the name
    /// comparisons of nearly every span.
    static LAST_MASK: Cell<(CacheKey, FieldMask)> = const {
        Cell::new((
            CacheKey {
                callsite: 0,
                service: (0, 0),
                generation: u64::MAX,
            },
            0,
        ))
    };
}

/// One span field's value as recorded: at most [`MAX_SPAN_VALUE_BYTES`] bytes of it, borrowed
/// from the span's record while a walk of the span stack visits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpanValue<'t> {
    pub text: &'t str,
    /// Whether `text` is all of the value.
    pub complete: bool,
    /// Length of the value in bytes (of what was formatted, when it was cut while formatting).
    pub original_len: u64,
}

/// Whether a `trace_id`/`span_id` value is shaped like an identifier (see the module docs).
fn is_trace_identifier(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_TRACE_ID_LEN
        && value.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Records span fields for Loupe's correlation context. Add it to the subscriber:
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
/// let subscriber = tracing_subscriber::registry().with(loupe_agent::CorrelationLayer::new());
/// # let _ = subscriber;
/// ```
///
/// It records [`DEFAULT_SPAN_FIELDS`] and whatever an armed capture asks for; a service whose
/// spans carry other identifiers worth seeing in every snapshot names them once:
///
/// ```
/// let layer = loupe_agent::CorrelationLayer::new().with_span_fields(&["tenant_id"]);
/// # let _ = layer;
/// ```
#[derive(Debug)]
pub struct CorrelationLayer {
    /// Whether a new span's fields are worth copying now.
    worth_recording: fn() -> bool,
    /// Fields this service records as if they were defaults.
    service_fields: &'static [&'static str],
    /// Every field of every span, whatever is selected: for tests of the copy itself.
    every_field: bool,
    /// Where spans' fields are recorded, allocated when the first span is.
    table: OnceLock<SpanTable>,
}

/// A copy records into a table of its own: span ids are only unique within one subscriber.
impl Clone for CorrelationLayer {
    fn clone(&self) -> CorrelationLayer {
        CorrelationLayer {
            worth_recording: self.worth_recording,
            service_fields: self.service_fields,
            every_field: self.every_field,
            table: OnceLock::new(),
        }
    }
}

impl Default for CorrelationLayer {
    fn default() -> CorrelationLayer {
        CorrelationLayer::new()
    }
}

impl CorrelationLayer {
    pub fn new() -> CorrelationLayer {
        CorrelationLayer {
            worth_recording: crate::capture::callsite::any_armed,
            service_fields: &[],
            every_field: false,
            table: OnceLock::new(),
        }
    }

    /// Also records these span fields while anything is armed, as if they were among
    /// [`DEFAULT_SPAN_FIELDS`]: identifiers of this service's requests (a tenant, a job id)
    /// that every snapshot should carry without each capture asking.
    pub fn with_span_fields(mut self, names: &'static [&'static str]) -> CorrelationLayer {
        self.service_fields = names;
        self
    }

    /// Records the selected fields of every span, armed or not: for tests of the selection.
    #[cfg(test)]
    fn recording_selected() -> CorrelationLayer {
        CorrelationLayer {
            worth_recording: || true,
            ..CorrelationLayer::new()
        }
    }

    /// Records every field of every span, armed or not: for tests of the copy itself.
    #[cfg(test)]
    fn recording_always() -> CorrelationLayer {
        CorrelationLayer {
            worth_recording: || true,
            service_fields: &[],
            every_field: true,
            table: OnceLock::new(),
        }
    }

    /// The fields of `metadata`'s span worth recording now. Cached per thread for the last
    /// callsite: the selection changes only when captures are armed or end.
    #[inline]
    fn wanted(&self, metadata: &'static Metadata<'static>) -> FieldMask {
        if self.every_field {
            return FieldMask::MAX;
        }
        let generation = SELECTION_GENERATION.load(Ordering::Acquire);
        let key = CacheKey {
            callsite: std::ptr::from_ref(metadata) as usize,
            service: (
                self.service_fields.as_ptr() as usize,
                self.service_fields.len(),
            ),
            generation,
        };
        LAST_MASK
            .try_with(|last| {
                let (seen, mask) = last.get();
                if seen == key {
                    return mask;
                }
                let mask = self.select(metadata);
                last.set((key, mask));
                mask
            })
            .unwrap_or_else(|_| self.select(metadata))
    }

    /// [`CorrelationLayer::wanted`] without the cache: the names compared.
    #[cold]
    #[inline(never)]
    fn select(&self, metadata: &'static Metadata<'static>) -> FieldMask {
        let selection = SELECTION.load();
        let selection = selection.as_deref();
        let mut mask = 0;
        for (index, field) in metadata.fields().iter().enumerate().take(MASK_BITS) {
            let name = field.name();
            let wanted = DEFAULT_SPAN_FIELDS.contains(&name)
                || self.service_fields.contains(&name)
                || selection.is_some_and(|s| s.all || s.names.iter().any(|n| **n == *name));
            if wanted {
                mask |= 1 << index;
            }
        }
        mask
    }
}

/// Fields of one span callsite a [`FieldMask`] can name; tracing allows 32 per callsite.
const MASK_BITS: usize = FieldMask::BITS as usize;

/// Recorded spans' fields by span id, in place: a span with wanted fields costs no allocation
/// and no lookup in the registry, where a copy in the span's extensions cost a box, a map
/// insert and the registry's lock and lookup, about two thirds of the recording. Direct-mapped
/// by a hash of the id; a span whose slot is taken by another live span (or busy) keeps its
/// fields in its extensions instead, as every span once did, so the table bounds memory, not
/// correctness. A slot is freed when its span closes.
///
/// Locks are held for bounded copies only: recording a span's values (at most
/// [`MAX_FIELDS_PER_SPAN`] × [`MAX_SPAN_VALUE_BYTES`]) or reading them at a hit. Writers and
/// readers try the lock a bounded number of times and never wait on it.
struct SpanTable {
    slots: Box<[Mutex<TableSlot>]>,
}

/// One recorded span: its id (0 for a free slot) and its fields.
struct TableSlot {
    id: u64,
    fields: SpanFields,
}

/// Spans recorded in place at once (per subscriber); more live spans with wanted fields than
/// this, or ones whose ids collide, use the extensions. A power of two.
const TABLE_SLOTS: usize = 1024;

/// Tries of a busy slot's lock before giving up.
const LOCK_TRIES: usize = 64;

impl std::fmt::Debug for SpanTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanTable")
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl SpanTable {
    fn new() -> SpanTable {
        SpanTable {
            slots: (0..TABLE_SLOTS)
                .map(|_| {
                    Mutex::new(TableSlot {
                        id: 0,
                        fields: SpanFields::new(0),
                    })
                })
                .collect(),
        }
    }

    /// The slot for span `id` (Fibonacci hashing: registry ids are dense slab indexes).
    fn slot(&self, id: u64) -> &Mutex<TableSlot> {
        let index = (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - TABLE_SLOTS.trailing_zeros()))
            as usize;
        &self.slots[index % TABLE_SLOTS]
    }

    /// Runs `f` on span `id`'s slot under its lock, unless the lock stays busy.
    fn with_slot<R>(&self, id: u64, f: impl FnOnce(&mut TableSlot) -> R) -> Option<R> {
        let slot = self.slot(id);
        for _ in 0..LOCK_TRIES {
            match slot.try_lock() {
                Ok(mut entry) => return Some(f(&mut entry)),
                // A panic while holding it cannot leave a slot half-updated in a way that
                // matters: its id says whose fields it holds, and they are bounded.
                Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                    return Some(f(&mut poisoned.into_inner()));
                }
                Err(std::sync::TryLockError::WouldBlock) => std::hint::spin_loop(),
            }
        }
        None
    }
}

/// The bounded copy of one span's fields, in a `SpanTable` slot or the span's extensions.
///
/// Built for the recording, which happens for every span with a wanted field while anything is
/// armed: all values' text in one buffer, inline while it is short, the fields' places in a
/// fixed array — no allocation for the usual request span, where a string per field costed a
/// request about a thousand instructions more.
struct SpanFields {
    /// The values' text, back to back. A value recorded again is appended; the text is
    /// compacted when dead values would grow it past [`MAX_SPAN_TEXT_BYTES`].
    text: SpanText,
    /// The first fields' places: most spans have no more, and a small value is cheap to move
    /// into the extensions' box.
    first: [Slot; INLINE_SLOTS],
    /// The places of fields past the first [`INLINE_SLOTS`].
    more: Vec<Slot>,
    len: usize,
    /// The fields worth recording, by index in the span's field set: chosen when the span
    /// was created, kept for values recorded later.
    wanted: FieldMask,
}

/// Bytes of text a span keeps inline before moving it to the heap: a request id, a trace id
/// and a span id fit.
const INLINE_TEXT_BYTES: usize = 96;

/// A span's recorded text. Only whole `str`s, or their prefixes cut on a character boundary,
/// are ever appended, so every value's range is UTF-8.
enum SpanText {
    Inline {
        bytes: [u8; INLINE_TEXT_BYTES],
        len: u8,
    },
    Heap(String),
}

impl Default for SpanText {
    fn default() -> SpanText {
        SpanText::Inline {
            bytes: [0; INLINE_TEXT_BYTES],
            len: 0,
        }
    }
}

impl SpanText {
    /// Empties it; heap text goes back inline, so a table slot does not keep a long span's
    /// buffer. Inline text only has its length reset: its bytes past the length are never
    /// read, and rewriting all of them cost every recorded span two 97-byte stores.
    fn clear(&mut self) {
        match self {
            SpanText::Inline { len, .. } => *len = 0,
            SpanText::Heap(_) => *self = SpanText::default(),
        }
    }

    fn len(&self) -> usize {
        match self {
            SpanText::Inline { len, .. } => usize::from(*len),
            SpanText::Heap(text) => text.len(),
        }
    }

    /// The text in `start..start + len`; empty if that is not a range of whole values.
    fn get(&self, start: usize, len: usize) -> &str {
        let bytes = match self {
            SpanText::Inline { bytes, len: used } => &bytes[..usize::from(*used)],
            SpanText::Heap(text) => text.as_bytes(),
        };
        bytes
            .get(start..start + len)
            .and_then(|value| std::str::from_utf8(value).ok())
            .unwrap_or("")
    }

    fn push_str(&mut self, value: &str) {
        match self {
            SpanText::Inline { bytes, len }
                if usize::from(*len) + value.len() <= INLINE_TEXT_BYTES =>
            {
                let start = usize::from(*len);
                bytes[start..start + value.len()].copy_from_slice(value.as_bytes());
                *len += value.len() as u8;
            }
            SpanText::Inline { .. } => self.spill(value),
            SpanText::Heap(text) => text.push_str(value),
        }
    }

    /// Moves the text to the heap, with `value` appended.
    #[cold]
    fn spill(&mut self, value: &str) {
        let used = self.len();
        let mut text = String::with_capacity((used + value.len()).max(2 * INLINE_TEXT_BYTES));
        text.push_str(self.get(0, used));
        text.push_str(value);
        *self = SpanText::Heap(text);
    }
}

/// Where one field's value lies in [`SpanFields::text`].
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    name: &'static str,
    start: u32,
    /// At most [`MAX_SPAN_VALUE_BYTES`].
    len: u16,
    /// Whether the text is all of the value.
    complete: bool,
    /// Length of the value in bytes (of what was formatted, when it was cut while formatting).
    original_len: u64,
}

/// Fields whose places a span keeps without another allocation.
const INLINE_SLOTS: usize = 4;

/// Bytes of text one span keeps, live and dead together, before compacting: every field at
/// its longest, twice.
const MAX_SPAN_TEXT_BYTES: usize = 2 * MAX_FIELDS_PER_SPAN * MAX_SPAN_VALUE_BYTES;

impl SpanFields {
    fn new(wanted: FieldMask) -> SpanFields {
        SpanFields {
            text: SpanText::default(),
            first: [Slot::default(); INLINE_SLOTS],
            more: Vec::new(),
            len: 0,
            wanted,
        }
    }

    /// Empties it for a new span's `wanted` fields, keeping what it allocated.
    fn reset(&mut self, wanted: FieldMask) {
        self.text.clear();
        self.more.clear();
        self.len = 0;
        self.wanted = wanted;
    }

    #[inline]
    fn wants(&self, field: &Field) -> bool {
        field.index() < MASK_BITS && self.wanted & (1 << field.index()) != 0
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> {
        let inline = self.len.min(INLINE_SLOTS);
        self.first[..inline].iter().chain(&self.more)
    }

    fn slot_mut(&mut self, index: usize) -> Option<&mut Slot> {
        match index.checked_sub(INLINE_SLOTS) {
            None => self.first.get_mut(index),
            Some(spilled) => self.more.get_mut(spilled),
        }
    }

    fn fields(&self) -> impl Iterator<Item = (&'static str, &str, &Slot)> {
        self.slots().map(|slot| {
            let text = self.text.get(slot.start as usize, usize::from(slot.len));
            (slot.name, text, slot)
        })
    }

    /// Records `name`'s value by appending what `write` writes (at most
    /// [`MAX_SPAN_VALUE_BYTES`], cut on a character boundary) to the text. A field past
    /// [`MAX_FIELDS_PER_SPAN`] is not formatted at all.
    ///
    /// Out of line, as [`SpanFields::record_text`]: a span's fields arrive one by one through
    /// the visitor, most of them not wanted, and with the recording inlined every visit paid
    /// for saving and restoring the registers the recording needs.
    #[inline(never)]
    fn record(&mut self, name: &'static str, write: impl FnOnce(&mut ValueWriter<'_>) -> bool) {
        let Some(index) = self.place(name) else {
            return;
        };
        let start = self.text.len();
        let mut writer = ValueWriter {
            text: &mut self.text,
            start,
            seen: 0,
        };
        let whole = write(&mut writer);
        let seen = writer.seen;
        let len = self.text.len() - start;
        if let Some(slot) = self.slot_mut(index) {
            *slot = Slot {
                name,
                start: start as u32,
                len: len as u16,
                complete: whole && seen == len,
                original_len: seen as u64,
            };
        }
    }

    /// [`SpanFields::record`] for a value that is already text (a request id, most often):
    /// the same cut, with no formatter between the value and the copy.
    #[inline(never)]
    fn record_text(&mut self, name: &'static str, value: &str) {
        let Some(index) = self.place(name) else {
            return;
        };
        let start = self.text.len();
        let kept = if value.len() <= MAX_SPAN_VALUE_BYTES {
            value
        } else {
            &value[..crate::text::floor_char_boundary(value, MAX_SPAN_VALUE_BYTES)]
        };
        self.text.push_str(kept);
        if let Some(slot) = self.slot_mut(index) {
            *slot = Slot {
                name,
                start: start as u32,
                len: kept.len() as u16,
                complete: kept.len() == value.len(),
                original_len: value.len() as u64,
            };
        }
    }

    /// The index of `name`'s place (a new one if it has none yet), with room made in the text
    /// for one more value; `None` past [`MAX_FIELDS_PER_SPAN`].
    #[inline]
    fn place(&mut self, name: &'static str) -> Option<usize> {
        let known = self.slots().position(|slot| slot.name == name);
        let index = match known {
            Some(index) => index,
            None if self.len < MAX_FIELDS_PER_SPAN => {
                if self.len >= INLINE_SLOTS {
                    self.more.push(Slot::default());
                }
                self.len += 1;
                self.len - 1
            }
            None => return None,
        };
        if self.text.len() + MAX_SPAN_VALUE_BYTES > MAX_SPAN_TEXT_BYTES {
            self.compact();
        }
        Some(index)
    }

    /// Drops the text of values recorded over since.
    #[cold]
    fn compact(&mut self) {
        let mut text = SpanText::default();
        let inline = self.len.min(INLINE_SLOTS);
        for slot in self.first[..inline].iter_mut().chain(&mut self.more) {
            let value = self.text.get(slot.start as usize, usize::from(slot.len));
            slot.start = text.len() as u32;
            text.push_str(value);
        }
        self.text = text;
    }
}

impl Visit for SpanFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.wants(field) {
            self.record(field.name(), |out| write!(out, "{value:?}").is_ok());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.wants(field) {
            self.record_text(field.name(), value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.wants(field) {
            self.record(field.name(), |out| write!(out, "{value}").is_ok());
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.wants(field) {
            self.record(field.name(), |out| write!(out, "{value}").is_ok());
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.wants(field) {
            self.record(field.name(), |out| {
                out.write_str(if value { "true" } else { "false" }).is_ok()
            });
        }
    }
}

/// Appends one value to a span's text, keeping its first [`MAX_SPAN_VALUE_BYTES`] and
/// stopping the formatter there.
struct ValueWriter<'t> {
    text: &'t mut SpanText,
    /// Where this value starts in `text`.
    start: usize,
    /// Bytes the value's formatting produced so far.
    seen: usize,
}

impl fmt::Write for ValueWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.seen += s.len();
        let room = MAX_SPAN_VALUE_BYTES - (self.text.len() - self.start);
        if s.len() <= room {
            self.text.push_str(s);
            Ok(())
        } else {
            let cut = crate::text::floor_char_boundary(s, room);
            self.text.push_str(&s[..cut]);
            Err(fmt::Error)
        }
    }
}

impl<S> Layer<S> for CorrelationLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !(self.worth_recording)() {
            return;
        }
        let wanted = self.wanted(attrs.metadata());
        let table = self.table.get_or_init(SpanTable::new);
        let id_u64 = id.into_u64();
        let recorded = table.with_slot(id_u64, |entry| {
            // Taken by another span: keep it if that span is alive (a close that found the
            // slot busy leaves a dead one behind, reclaimed here).
            if entry.id != 0 && entry.id != id_u64 && ctx.span(&Id::from_u64(entry.id)).is_some() {
                return false;
            }
            if wanted == 0 {
                entry.id = 0;
                return true;
            }
            entry.id = id_u64;
            entry.fields.reset(wanted);
            attrs.record(&mut entry.fields);
            true
        });
        if recorded == Some(true) || wanted == 0 {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::new(wanted);
        attrs.record(&mut fields);
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let id_u64 = id.into_u64();
        if let Some(table) = self.table.get() {
            let recorded = table.with_slot(id_u64, |entry| {
                (entry.id == id_u64).then(|| values.record(&mut entry.fields))
            });
            if recorded.flatten().is_some() {
                return;
            }
        }
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(fields);
        }
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        let Some(table) = self.table.get() else {
            return;
        };
        let id_u64 = id.into_u64();
        table.with_slot(id_u64, |entry| {
            if entry.id == id_u64 {
                entry.id = 0;
                entry.fields.reset(0);
            }
        });
    }
}

/// The thread a hit happened on, as a snapshot names it: the capturing thread (named once per
/// thread), or for a point source that reads another process, the target's thread that hit
/// the point ([`crate::Callsite::hit_on_thread`]).
#[derive(Debug, Clone)]
pub struct ThreadInfo {
    pub(crate) name: Arc<str>,
    pub(crate) id: u64,
}

thread_local! {
    static THREAD_INFO: OnceCell<ThreadInfo> = const { OnceCell::new() };
}

impl ThreadInfo {
    /// A thread by its name and id, for a hit that did not happen on the calling thread (a
    /// sidecar names the target's thread: its `comm` and tid).
    pub fn foreign(name: &str, id: u64) -> ThreadInfo {
        ThreadInfo {
            name: Arc::from(name),
            id,
        }
    }

    /// Whether `other` names the same thread by the same shared name (so a record that holds
    /// it need not take a new reference).
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub(crate) fn same_as(&self, other: &ThreadInfo) -> bool {
        self.id == other.id && Arc::ptr_eq(&self.name, &other.name)
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub(crate) fn current() -> ThreadInfo {
        THREAD_INFO
            .try_with(|cell| cell.get_or_init(ThreadInfo::describe_current).clone())
            .unwrap_or_else(|_| ThreadInfo::describe_current())
    }

    fn describe_current() -> ThreadInfo {
        let thread = std::thread::current();
        // `ThreadId` has no stable numeric accessor; its Debug form is `ThreadId(N)`.
        let id = format!("{:?}", thread.id())
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0);
        ThreadInfo {
            name: Arc::from(thread.name().unwrap_or("")),
            id,
        }
    }
}

/// A `trace_id` or `span_id` shaped like the identifier it is named after (see the module
/// docs), held inline: a hit copies it into its snapshot without allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceIdentifier {
    len: u8,
    bytes: [u8; MAX_TRACE_ID_LEN],
}

impl TraceIdentifier {
    /// `value`, if it is shaped like an identifier.
    pub fn parse(value: &str) -> Option<TraceIdentifier> {
        if !is_trace_identifier(value) {
            return None;
        }
        let mut bytes = [0; MAX_TRACE_ID_LEN];
        bytes
            .get_mut(..value.len())?
            .copy_from_slice(value.as_bytes());
        let len = u8::try_from(value.len()).ok()?;
        Some(TraceIdentifier { len, bytes })
    }

    /// A span's id, as sixteen lowercase hexadecimal digits (as W3C writes a parent id).
    pub fn of_span(id: u64) -> TraceIdentifier {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut bytes = [0; MAX_TRACE_ID_LEN];
        for (place, byte) in bytes[..16].iter_mut().enumerate() {
            *byte = DIGITS[((id >> (60 - 4 * place)) & 0xf) as usize];
        }
        TraceIdentifier { len: 16, bytes }
    }

    pub fn as_str(&self) -> &str {
        // Only hexadecimal digits and dashes are ever held, so this never falls back.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl fmt::Debug for TraceIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The identifiers of one hit's correlation context, held inline, so a snapshot takes them
/// without allocating. Its span fields are not kept: each capture that takes them walks the
/// span stack ([`CorrelationIds::walk`]) and copies them straight into its own tape, so a hit
/// in a request's span copies each field once and allocates nothing for it.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CorrelationIds {
    pub trace_id: Option<TraceIdentifier>,
    pub span_id: Option<TraceIdentifier>,
}

impl CorrelationIds {
    /// Walks this thread's span stack, innermost span first, giving `visit` each span field
    /// once (an inner field hides an outer one of the same name; at most
    /// [`MAX_CONTEXT_FIELDS`]), and returns the trace and span ids the stack carries.
    ///
    /// `visit` runs while the span's record is locked (its table slot, or its extensions), so
    /// it should copy the value and go: a late value recorded while the slot stays busy past
    /// the writer's few tries is not kept (see [`SpanTable::with_slot`]). A snapshot's visitor
    /// copies the text; a condition's also scans it, a few hundred bytes at most.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub fn walk(visit: &mut dyn FnMut(&'static str, SpanValue<'_>)) -> CorrelationIds {
        let mut walk = Walk {
            ids: CorrelationIds::default(),
            seen: [""; MAX_CONTEXT_FIELDS],
            count: 0,
            visit,
        };
        tracing::dispatcher::get_default(|dispatch| walk.read_from(dispatch));
        walk.ids
    }

    /// Runs, on the agent's thread, the `tracing` code a hit's walk runs before it reaches a
    /// span: the default dispatcher, the downcasts through the subscriber's layers and the
    /// registry's span stack (the agent's thread's own, empty), so that a core the warm pass
    /// warms has that code in its caches too (`capture::warm`). True when the default
    /// subscriber is a registry.
    ///
    /// It looks no span up: a reference to a span, even one only read, is a hold on its slot,
    /// and a span the host closes meanwhile is then removed when the hold ends, on this thread,
    /// which would run the host's layers' `on_close` here, late (and, inside this walk's own
    /// `get_default`, with no dispatcher to close its parent with).
    pub(crate) fn rehearse_walk() -> bool {
        tracing::dispatcher::get_default(|dispatch| {
            if dispatch.downcast_ref::<Registry>().is_none() {
                return false;
            }
            std::hint::black_box(dispatch.current_span());
            std::hint::black_box(dispatch.downcast_ref::<CorrelationLayer>());
            true
        })
    }
}

/// One walk of the span stack: the ids found so far and the names already visited.
struct Walk<'v> {
    ids: CorrelationIds,
    seen: [&'static str; MAX_CONTEXT_FIELDS],
    count: usize,
    visit: &'v mut dyn FnMut(&'static str, SpanValue<'_>),
}

impl Walk<'_> {
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn read_from(&mut self, dispatch: &Dispatch) {
        let Some(registry) = dispatch.downcast_ref::<Registry>() else {
            return;
        };
        let current = dispatch.current_span();
        let Some(id) = current.id() else { return };
        let Some(span) = registry.span(id) else {
            return;
        };
        self.ids.span_id = Some(TraceIdentifier::of_span(id.into_u64()));
        let table = dispatch
            .downcast_ref::<CorrelationLayer>()
            .and_then(|layer| layer.table.get());
        for span in span.scope() {
            let id = span.id().into_u64();
            let in_table = table.and_then(|table| {
                table.with_slot(id, |entry| {
                    (entry.id == id).then(|| self.gather(&entry.fields))
                })
            });
            let more = match in_table.flatten() {
                Some(more) => more,
                None => match span.extensions().get::<SpanFields>() {
                    Some(fields) => self.gather(fields),
                    None => true,
                },
            };
            if !more {
                return;
            }
        }
    }

    /// Visits one span's fields that an inner span did not already give; false once
    /// [`MAX_CONTEXT_FIELDS`] are visited.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn gather(&mut self, fields: &SpanFields) -> bool {
        for (name, text, slot) in fields.fields() {
            if self.count >= MAX_CONTEXT_FIELDS {
                return false;
            }
            if self.seen[..self.count].contains(&name) {
                continue;
            }
            let identifier = || {
                slot.complete
                    .then(|| TraceIdentifier::parse(text))
                    .flatten()
            };
            match name {
                "trace_id" if self.ids.trace_id.is_none() => {
                    self.ids.trace_id = identifier();
                }
                "span_id" => {
                    if let Some(id) = identifier() {
                        self.ids.span_id = Some(id);
                    }
                }
                _ => {}
            }
            self.seen[self.count] = name;
            self.count += 1;
            (self.visit)(
                name,
                SpanValue {
                    text,
                    complete: slot.complete,
                    original_len: slot.original_len,
                },
            );
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// A span field's value, copied out of a walk.
    #[derive(Debug, Clone)]
    struct Recorded {
        text: String,
        complete: bool,
        original_len: u64,
    }

    /// Everything one walk of the span stack gives.
    struct Correlation {
        trace_id: Option<TraceIdentifier>,
        span_id: Option<TraceIdentifier>,
        fields: Vec<(&'static str, Recorded)>,
    }

    impl Correlation {
        fn current() -> Correlation {
            let mut fields = Vec::new();
            let ids = CorrelationIds::walk(&mut |name, value| {
                let recorded = Recorded {
                    text: value.text.to_owned(),
                    complete: value.complete,
                    original_len: value.original_len,
                };
                fields.push((name, recorded));
            });
            Correlation {
                trace_id: ids.trace_id,
                span_id: ids.span_id,
                fields,
            }
        }
    }

    #[test]
    fn reads_the_span_stack_innermost_first() {
        let subscriber = tracing_subscriber::registry().with(CorrelationLayer::recording_always());
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("request", request_id = "r-1", tier = "gold");
            let _outer = outer.enter();
            let inner = tracing::info_span!("db", request_id = "r-inner", trace_id = "abc123");
            let _inner = inner.enter();
            let correlation = Correlation::current();
            assert_eq!(
                correlation.trace_id.as_ref().map(TraceIdentifier::as_str),
                Some("abc123")
            );
            assert!(correlation.span_id.is_some());
            let fields: Vec<_> = correlation
                .fields
                .iter()
                .map(|(n, v)| (*n, v.text.as_str()))
                .collect();
            assert_eq!(
                fields,
                [
                    ("request_id", "r-inner"),
                    ("trace_id", "abc123"),
                    ("tier", "gold")
                ]
            );
        });
    }

    /// The warm pass's rehearsal runs the dispatcher's and the registry's code without
    /// touching the host's spans: the span it runs beside is recorded and read as before.
    #[test]
    fn a_rehearsed_walk_finds_the_registry_and_leaves_the_spans_alone() {
        let subscriber = tracing_subscriber::registry().with(CorrelationLayer::recording_always());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", request_id = tracing::field::Empty);
            let _entered = span.enter();
            assert!(CorrelationIds::rehearse_walk());
            span.record("request_id", "r-1");
            let fields: Vec<_> = Correlation::current()
                .fields
                .iter()
                .map(|(n, v)| (*n, v.text.clone()))
                .collect();
            assert_eq!(fields, [("request_id", "r-1".to_owned())]);
        });
        assert!(
            !CorrelationIds::rehearse_walk(),
            "without a registry there is nothing to run"
        );
    }

    #[test]
    fn records_late_values_and_bounds_long_ones() {
        let subscriber = tracing_subscriber::registry().with(CorrelationLayer::recording_always());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                request_id = tracing::field::Empty,
                blob = tracing::field::Empty
            );
            let _entered = span.enter();
            span.record("request_id", "r-late");
            span.record("blob", "é".repeat(MAX_SPAN_VALUE_BYTES).as_str());
            let correlation = Correlation::current();
            let get = |name: &str| {
                correlation
                    .fields
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.clone())
            };
            let request_id = get("request_id").expect("request_id recorded");
            assert_eq!(request_id.text, "r-late");
            assert!(request_id.complete);
            let blob = get("blob").expect("blob recorded");
            assert!(blob.text.len() <= MAX_SPAN_VALUE_BYTES);
            assert!(blob.text.chars().all(|c| c == 'é'));
            assert!(!blob.complete, "a cut value says so");
            assert_eq!(blob.original_len, 2 * MAX_SPAN_VALUE_BYTES as u64);
        });
    }

    #[test]
    fn values_recorded_again_and_again_keep_the_text_bounded() {
        let subscriber = tracing_subscriber::registry().with(CorrelationLayer::recording_always());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                attempt = tracing::field::Empty,
                status = "started",
                ok = true
            );
            let _entered = span.enter();
            let long = "x".repeat(MAX_SPAN_VALUE_BYTES);
            for attempt in 0..1_000u64 {
                span.record("attempt", attempt);
                span.record("status", long.as_str());
            }
            span.record("status", "done");
            span.with_subscriber(|(id, dispatch)| {
                let layer = dispatch
                    .downcast_ref::<CorrelationLayer>()
                    .expect("the layer");
                let table = layer.table.get().expect("a table");
                let id = id.into_u64();
                let len = table
                    .with_slot(id, |entry| {
                        (entry.id == id).then(|| entry.fields.text.len())
                    })
                    .flatten()
                    .expect("recorded in the table");
                assert!(len <= MAX_SPAN_TEXT_BYTES, "{len}");
            });
            let correlation = Correlation::current();
            let texts: Vec<_> = correlation
                .fields
                .iter()
                .map(|(n, v)| (*n, v.text.as_str(), v.complete))
                .collect();
            assert_eq!(
                texts,
                [
                    ("status", "done", true),
                    ("ok", "true", true),
                    ("attempt", "999", true)
                ]
            );
        });
    }

    #[test]
    fn fields_past_the_limit_are_not_kept() {
        let subscriber = tracing_subscriber::registry().with(CorrelationLayer::recording_always());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "wide",
                f0 = 0,
                f1 = 1,
                f2 = 2,
                f3 = 3,
                f4 = 4,
                f5 = 5,
                f6 = 6,
                f7 = 7,
                f8 = 8,
                f9 = 9,
                f10 = 10,
                f11 = 11,
                f12 = 12,
                f13 = 13,
                f14 = 14,
                f15 = 15,
                f16 = 16,
                f17 = 17
            );
            let _entered = span.enter();
            let correlation = Correlation::current();
            assert_eq!(correlation.fields.len(), MAX_FIELDS_PER_SPAN);
            assert_eq!(correlation.fields[15].0, "f15");
            assert_eq!(correlation.fields[15].1.text, "15");
        });
    }

    #[test]
    fn trace_ids_that_are_not_identifiers_stay_in_the_span_fields_only() {
        let subscriber = tracing_subscriber::registry().with(CorrelationLayer::recording_always());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                trace_id = "Bearer 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",
                span_id = "00f067aa0ba902b7"
            );
            let _entered = span.enter();
            let correlation = Correlation::current();
            assert_eq!(correlation.trace_id, None);
            assert_eq!(
                correlation.span_id.as_ref().map(TraceIdentifier::as_str),
                Some("00f067aa0ba902b7")
            );
            assert!(
                correlation
                    .fields
                    .iter()
                    .any(|(name, _)| *name == "trace_id")
            );
        });
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            TraceIdentifier::parse(id).map(|id| id.as_str().to_owned()),
            Some(id.into())
        );
        assert_eq!(TraceIdentifier::parse("4bf92f35 77b3"), None);
        let longest = "a".repeat(MAX_TRACE_ID_LEN);
        assert_eq!(
            TraceIdentifier::parse(&longest).map(|id| id.as_str().len()),
            Some(MAX_TRACE_ID_LEN)
        );
        assert_eq!(TraceIdentifier::parse(&format!("{longest}a")), None);
        for span in [0, 1, 0x00f0_67aa_0ba9_02b7, u64::MAX] {
            assert_eq!(
                TraceIdentifier::of_span(span).as_str(),
                format!("{span:016x}")
            );
        }
        assert!(is_trace_identifier("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(is_trace_identifier("550e8400-e29b-41d4-a716-446655440000"));
        assert!(!is_trace_identifier(""));
        assert!(!is_trace_identifier(&"a".repeat(MAX_TRACE_ID_LEN + 1)));
    }

    fn request_ids() -> Vec<String> {
        Correlation::current()
            .fields
            .into_iter()
            .filter(|(name, _)| *name == "request_id")
            .map(|(_, value)| value.text)
            .collect()
    }

    #[test]
    fn a_field_nobody_asked_for_is_not_recorded() {
        let subscriber =
            tracing_subscriber::registry().with(CorrelationLayer::recording_selected());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                request_id = "r-1",
                unasked_by_any_capture = "x",
                method = %"POST"
            );
            let _entered = span.enter();
            let names: Vec<_> = Correlation::current()
                .fields
                .iter()
                .map(|(name, _)| *name)
                .collect();
            assert_eq!(names, ["request_id"]);
        });
    }

    #[test]
    fn spans_past_the_table_keep_their_fields_in_the_extensions() {
        let subscriber =
            tracing_subscriber::registry().with(CorrelationLayer::recording_selected());
        tracing::subscriber::with_default(subscriber, || {
            let spans: Vec<_> = (0..TABLE_SLOTS + 100)
                .map(|i| tracing::info_span!("request", request_id = format!("r-{i}").as_str()))
                .collect();
            for (i, span) in spans.iter().enumerate() {
                let _entered = span.enter();
                assert_eq!(request_ids(), [format!("r-{i}")]);
            }
        });
    }

    #[test]
    fn a_closed_span_leaves_nothing_for_the_next() {
        let subscriber =
            tracing_subscriber::registry().with(CorrelationLayer::recording_selected());
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..3 * TABLE_SLOTS {
                let span = tracing::info_span!("request", request_id = format!("r-{i}").as_str());
                drop(span);
                let quiet = tracing::info_span!("work", unasked_by_any_capture = i);
                let _entered = quiet.enter();
                assert!(request_ids().is_empty(), "span {i}: {:?}", request_ids());
            }
        });
    }

    #[test]
    fn without_the_registry_there_is_no_span_context() {
        let correlation = Correlation::current();
        assert!(correlation.fields.is_empty());
        assert!(correlation.span_id.is_none());
        let thread = ThreadInfo::current();
        assert!(thread.id > 0);
    }
}

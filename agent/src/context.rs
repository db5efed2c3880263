//! Correlation context: which request, trace and thread a snapshot belongs to.
//!
//! [`CorrelationLayer`] is a `tracing-subscriber` layer that keeps a bounded copy of each span's
//! fields. At a hit, the capture walks the current span stack (innermost first) and reads them,
//! so a snapshot carries `request_id`, the trace and span ids and any other span field, and a
//! condition can say `ctx.request_id == "r-7f3a"`.
//!
//! The lookup needs the subscriber to be built on `tracing_subscriber::Registry` (the usual
//! `tracing_subscriber::registry().with(...)`); under any other subscriber snapshots carry the
//! thread only. Raw span values are kept here, each with whether it was cut when recorded;
//! redaction happens per capture when they are copied into a snapshot, and a cut value is
//! judged as cut there (a secret running into the cut is masked).
//!
//! **Free while nothing is armed.** Copying a span's fields costs about as much as the rest of a
//! small request's instrumentation, so the layer copies nothing while no capture is armed anywhere
//! in the process (one relaxed load per span). The price: a span opened before the first capture
//! was armed carries no fields, so a request already in flight when a capture starts is captured
//! without its `request_id` (its thread and the span id are still there) and a `ctx.` condition
//! does not match it. Requests that start after arming carry their context as usual.
//!
//! `trace_id` and `span_id` also travel outside the redacted values, in the snapshot's trace
//! context, so they are kept there only when they look like the identifiers they are named
//! after: hexadecimal digits and dashes, at most [`MAX_TRACE_ID_LEN`] bytes (W3C, B3, X-Ray,
//! UUIDs). Anything else is left to the span fields, where it is scanned like any value.

use std::cell::OnceCell;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Subscriber};
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

/// One span field's value as recorded: at most [`MAX_SPAN_VALUE_BYTES`] bytes of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SpanValue {
    pub text: String,
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
#[derive(Debug, Clone, Copy)]
pub struct CorrelationLayer {
    /// Whether a new span's fields are worth copying now.
    worth_recording: fn() -> bool,
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
        }
    }

    /// Records every span, armed or not: for tests of the copy itself.
    #[cfg(test)]
    fn recording_always() -> CorrelationLayer {
        CorrelationLayer {
            worth_recording: || true,
        }
    }
}

/// The bounded copy of one span's fields, stored in the span's extensions.
///
/// Recorded for every span while anything is armed, so it is built for the recording: all
/// values' text in one buffer, the fields' places in a fixed array — two allocations a span
/// (this value's box in the extensions, and the text) whatever its number of fields, where a
/// string per field costed a request about a thousand instructions more.
struct SpanFields {
    /// The values' text, back to back. A value recorded again is appended; the text is
    /// compacted when dead values would grow it past [`MAX_SPAN_TEXT_BYTES`].
    text: String,
    /// The first fields' places: most spans have no more, and a small value is cheap to move
    /// into the extensions' box.
    first: [Slot; INLINE_SLOTS],
    /// The places of fields past the first [`INLINE_SLOTS`].
    more: Vec<Slot>,
    len: usize,
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

/// What a span's text starts with room for; the usual request span's fields (an id, a method,
/// a path) fit.
const SPAN_TEXT_CAPACITY: usize = 64;

impl SpanFields {
    fn new() -> SpanFields {
        SpanFields {
            text: String::with_capacity(SPAN_TEXT_CAPACITY),
            first: [Slot::default(); INLINE_SLOTS],
            more: Vec::new(),
            len: 0,
        }
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
            let start = slot.start as usize;
            let text = self
                .text
                .get(start..start + usize::from(slot.len))
                .unwrap_or("");
            (slot.name, text, slot)
        })
    }

    /// Records `name`'s value by appending what `write` writes (at most
    /// [`MAX_SPAN_VALUE_BYTES`], cut on a character boundary) to the text. A field past
    /// [`MAX_FIELDS_PER_SPAN`] is not formatted at all.
    fn record(&mut self, name: &'static str, write: impl FnOnce(&mut ValueWriter<'_>) -> bool) {
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
            None => return,
        };
        if self.text.len() + MAX_SPAN_VALUE_BYTES > MAX_SPAN_TEXT_BYTES {
            self.compact();
        }
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

    /// Drops the text of values recorded over since.
    #[cold]
    fn compact(&mut self) {
        let mut text = String::with_capacity(self.text.len());
        let inline = self.len.min(INLINE_SLOTS);
        for slot in self.first[..inline].iter_mut().chain(&mut self.more) {
            let start = slot.start as usize;
            let value = self
                .text
                .get(start..start + usize::from(slot.len))
                .unwrap_or("");
            slot.start = text.len() as u32;
            text.push_str(value);
        }
        self.text = text;
    }
}

impl Visit for SpanFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field.name(), |out| write!(out, "{value:?}").is_ok());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field.name(), |out| out.write_str(value).is_ok());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(field.name(), |out| write!(out, "{value}").is_ok());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(field.name(), |out| write!(out, "{value}").is_ok());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(field.name(), |out| {
            out.write_str(if value { "true" } else { "false" }).is_ok()
        });
    }
}

/// Appends one value to a span's text, keeping its first [`MAX_SPAN_VALUE_BYTES`] and
/// stopping the formatter there.
struct ValueWriter<'t> {
    text: &'t mut String,
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
        if attrs.fields().is_empty() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::new();
        attrs.record(&mut fields);
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(fields);
        }
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

/// The correlation context of one hit, before redaction.
#[derive(Debug, Default, Clone)]
pub(crate) struct Correlation {
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    /// Span fields, innermost span first; an inner field hides an outer one of the same name.
    pub fields: Vec<(&'static str, SpanValue)>,
}

impl Correlation {
    /// Reads the current span stack of this thread.
    pub fn current() -> Correlation {
        let mut correlation = Correlation::default();
        tracing::dispatcher::get_default(|dispatch| correlation.read_from(dispatch));
        correlation
    }

    fn read_from(&mut self, dispatch: &Dispatch) {
        let Some(registry) = dispatch.downcast_ref::<Registry>() else {
            return;
        };
        let current = dispatch.current_span();
        let Some(id) = current.id() else { return };
        let Some(span) = registry.span(id) else {
            return;
        };
        self.span_id = Some(format!("{:016x}", id.into_u64()));
        for span in span.scope() {
            let extensions = span.extensions();
            let Some(fields) = extensions.get::<SpanFields>() else {
                continue;
            };
            for (name, text, slot) in fields.fields() {
                if self.fields.len() >= MAX_CONTEXT_FIELDS {
                    return;
                }
                if self.fields.iter().any(|(seen, _)| *seen == name) {
                    continue;
                }
                let identifier = slot.complete && is_trace_identifier(text);
                match name {
                    "trace_id" if self.trace_id.is_none() && identifier => {
                        self.trace_id = Some(text.to_owned());
                    }
                    "span_id" if identifier => self.span_id = Some(text.to_owned()),
                    _ => {}
                }
                let value = SpanValue {
                    text: text.to_owned(),
                    complete: slot.complete,
                    original_len: slot.original_len,
                };
                self.fields.push((name, value));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn reads_the_span_stack_innermost_first() {
        let subscriber = tracing_subscriber::registry().with(CorrelationLayer::recording_always());
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("request", request_id = "r-1", tier = "gold");
            let _outer = outer.enter();
            let inner = tracing::info_span!("db", request_id = "r-inner", trace_id = "abc123");
            let _inner = inner.enter();
            let correlation = Correlation::current();
            assert_eq!(correlation.trace_id.as_deref(), Some("abc123"));
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
                let registry = dispatch.downcast_ref::<Registry>().expect("registry");
                let span = registry.span(id).expect("span");
                let extensions = span.extensions();
                let fields = extensions.get::<SpanFields>().expect("fields");
                assert!(
                    fields.text.len() <= MAX_SPAN_TEXT_BYTES,
                    "{}",
                    fields.text.len()
                );
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
            assert_eq!(correlation.span_id.as_deref(), Some("00f067aa0ba902b7"));
            assert!(
                correlation
                    .fields
                    .iter()
                    .any(|(name, _)| *name == "trace_id")
            );
        });
        assert!(is_trace_identifier("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(is_trace_identifier("550e8400-e29b-41d4-a716-446655440000"));
        assert!(!is_trace_identifier(""));
        assert!(!is_trace_identifier(&"a".repeat(MAX_TRACE_ID_LEN + 1)));
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

//! Correlation context: which request, trace and thread a snapshot belongs to.
//!
//! [`CorrelationLayer`] is a `tracing-subscriber` layer that keeps a bounded copy of each span's
//! fields. At a hit, the capture walks the current span stack (innermost first) and reads them,
//! so a snapshot carries `request_id`, the trace and span ids and any other span field, and a
//! condition can say `ctx.request_id == "r-7f3a"`.
//!
//! The lookup needs the subscriber to be built on `tracing_subscriber::Registry` (the usual
//! `tracing_subscriber::registry().with(...)`); under any other subscriber snapshots carry the
//! thread only. Raw span values are kept here; redaction happens per capture when they are
//! copied into a snapshot.

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

/// Records span fields for Loupe's correlation context. Add it to the subscriber:
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
/// let subscriber = tracing_subscriber::registry().with(loupe_agent::CorrelationLayer::new());
/// # let _ = subscriber;
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct CorrelationLayer {
    _private: (),
}

impl CorrelationLayer {
    pub fn new() -> CorrelationLayer {
        CorrelationLayer { _private: () }
    }
}

/// The bounded copy of one span's fields, stored in the span's extensions.
#[derive(Default)]
struct SpanFields {
    fields: Vec<(&'static str, String)>,
}

impl SpanFields {
    fn set(&mut self, name: &'static str, value: String) {
        if let Some(slot) = self.fields.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value;
        } else if self.fields.len() < MAX_FIELDS_PER_SPAN {
            self.fields.push((name, value));
        }
    }
}

impl Visit for SpanFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut text = BoundedString::default();
        let _ = write!(text, "{value:?}");
        self.set(field.name(), text.0);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let cut = crate::capture::serialize::floor_char_boundary(value, MAX_SPAN_VALUE_BYTES);
        self.set(field.name(), value[..cut].to_owned());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field.name(), value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field.name(), value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field.name(), value.to_string());
    }
}

#[derive(Default)]
struct BoundedString(String);

impl fmt::Write for BoundedString {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = MAX_SPAN_VALUE_BYTES - self.0.len();
        if s.len() <= room {
            self.0.push_str(s);
            Ok(())
        } else {
            let cut = crate::capture::serialize::floor_char_boundary(s, room);
            self.0.push_str(&s[..cut]);
            Err(fmt::Error)
        }
    }
}

impl<S> Layer<S> for CorrelationLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::default();
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

/// The capturing thread, named once per thread.
#[derive(Debug, Clone)]
pub(crate) struct ThreadInfo {
    pub name: Arc<str>,
    pub id: u64,
}

thread_local! {
    static THREAD_INFO: OnceCell<ThreadInfo> = const { OnceCell::new() };
}

impl ThreadInfo {
    pub fn current() -> ThreadInfo {
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
    pub fields: Vec<(&'static str, String)>,
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
            for (name, value) in &fields.fields {
                if self.fields.len() >= MAX_CONTEXT_FIELDS {
                    return;
                }
                if self.fields.iter().any(|(seen, _)| seen == name) {
                    continue;
                }
                match *name {
                    "trace_id" if self.trace_id.is_none() => self.trace_id = Some(value.clone()),
                    "span_id" => self.span_id = Some(value.clone()),
                    _ => {}
                }
                self.fields.push((name, value.clone()));
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
        let subscriber = tracing_subscriber::registry().with(CorrelationLayer::new());
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
                .map(|(n, v)| (*n, v.as_str()))
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
        let subscriber = tracing_subscriber::registry().with(CorrelationLayer::new());
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
            assert_eq!(get("request_id").as_deref(), Some("r-late"));
            let blob = get("blob").expect("blob recorded");
            assert!(blob.len() <= MAX_SPAN_VALUE_BYTES);
            assert!(blob.chars().all(|c| c == 'é'));
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

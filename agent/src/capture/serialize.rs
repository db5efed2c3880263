//! The bounded serializer: turns borrowed field values into [`Value`]s on the capturing thread,
//! applying limits and redaction as it goes so that nothing over the limits is ever copied and
//! nothing redacted is ever formatted.
//!
//! It never fails and never panics on its own: a user `Serialize` that errors becomes
//! `not_captured{error}` at that value, and a panicking user impl (caught per top-level field by
//! [`SnapshotBuilder::capture_field`]) becomes `not_captured{panic}`.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::ser::{self, Serialize};

use crate::capture::limits::CaptureLimits;
use crate::capture::name_cache::sensitive_static_name;
use crate::field::FieldValue;
use crate::redaction::{Reason, RedactionRules};
use crate::secret::SECRET_MARKER;
use crate::value::{CapturedStr, FieldName, NotCapturedReason, Value};

/// Bytes of Debug/Display output kept beyond the string limit, so that a secret that starts
/// inside the kept text is seen whole by the pattern scan before the text is cut.
const SCAN_MARGIN: usize = 4096;

/// Debug/Display output the agent is willing to format for one value; past it formatting stops
/// and the original length is reported as a lower bound.
const FORMAT_CAP: usize = 1024 * 1024;

/// Approximate wire overhead charged per value against the snapshot's byte budget.
const VALUE_OVERHEAD: usize = 4;

/// Names for positional fields (tuple structs and variants), so they need no allocation.
const POSITION_NAMES: [&str; 32] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31",
];

fn position_name(index: usize) -> FieldName {
    match POSITION_NAMES.get(index) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(index.to_string()),
    }
}

/// Counts of what limits cut in one snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TruncationCounts {
    pub values_not_captured: u32,
    pub strings_truncated: u32,
    pub collections_truncated: u32,
    pub structs_truncated: u32,
    pub snapshot_size_limit_reached: bool,
}

/// A path from the snapshot's fields to a value, kept as a stack while descending and rendered
/// only when something needs to name it.
#[derive(Debug, Clone)]
enum PathSegment {
    Field(FieldName),
    Index(u64),
    Key(String),
}

/// Per-snapshot state of one capture: its limits, its redaction rules, and what was cut or
/// withheld so far.
pub(crate) struct SnapshotBuilder<'r> {
    limits: &'r CaptureLimits,
    rules: &'r RedactionRules,
    /// Identifies `rules` for the static-name memo.
    rules_id: u64,
    bytes_used: usize,
    truncation: TruncationCounts,
    redacted: Vec<(String, Reason)>,
    path: Vec<PathSegment>,
}

impl<'r> SnapshotBuilder<'r> {
    pub fn new(
        limits: &'r CaptureLimits,
        rules: &'r RedactionRules,
        rules_id: u64,
    ) -> SnapshotBuilder<'r> {
        SnapshotBuilder {
            limits,
            rules,
            rules_id,
            bytes_used: 0,
            truncation: TruncationCounts::default(),
            redacted: Vec::new(),
            path: Vec::new(),
        }
    }

    pub fn into_parts(self) -> (TruncationCounts, Vec<(String, Reason)>) {
        (self.truncation, self.redacted)
    }

    /// Captures one top-level field. The name is checked against the redaction keywords first,
    /// so a sensitive field is never formatted at all.
    pub fn capture_field(&mut self, name: &'static str, value: FieldValue<'_>) -> Value {
        let depth_before = self.path.len();
        self.path.push(PathSegment::Field(Cow::Borrowed(name)));
        let captured = if let Some(reason) = self.sensitive_name(&Cow::Borrowed(name)) {
            self.redact(reason)
        } else {
            match catch_unwind(AssertUnwindSafe(|| self.capture_value(value))) {
                Ok(value) => value,
                Err(payload) => {
                    self.truncation.values_not_captured += 1;
                    Value::not_captured(NotCapturedReason::Panic, panic_message(&payload))
                }
            }
        };
        self.path.truncate(depth_before);
        captured
    }

    /// Captures an already-known string under `name` (span fields of the correlation context).
    pub fn capture_context_field(&mut self, name: &'static str, value: &str) -> Value {
        self.path.clear();
        self.path.push(PathSegment::Field(Cow::Borrowed("ctx")));
        self.path.push(PathSegment::Field(Cow::Borrowed(name)));
        let captured = match self.sensitive_name(&Cow::Borrowed(name)) {
            Some(reason) => self.redact(reason),
            None => self.string_value(value, true, value.len() as u64, false),
        };
        self.path.clear();
        captured
    }

    fn capture_value(&mut self, value: FieldValue<'_>) -> Value {
        match value {
            FieldValue::Serde(value) => value.capture_with(ValueSerializer {
                builder: self,
                depth: 0,
            }),
            FieldValue::Debug(value) => self.formatted(format_args!("{value:?}")),
            FieldValue::Display(value) => self.formatted(format_args!("{value}")),
        }
    }

    /// Formats into a bounded buffer: at most `max_string_bytes + SCAN_MARGIN` bytes are kept
    /// and at most `FORMAT_CAP` are produced, however large the value's output would be.
    fn formatted(&mut self, args: fmt::Arguments<'_>) -> Value {
        let keep = self.limits.max_string_bytes as usize + SCAN_MARGIN;
        let mut writer = BoundedWriter::new(keep);
        // An error here means the cap was reached (or the impl failed); what was written stands.
        let _ = writer.write_fmt(args);
        let complete = writer.seen == writer.text.len();
        let lower_bound = writer.capped;
        let seen = writer.seen as u64;
        self.string_value(&writer.text, complete, seen, lower_bound)
    }

    /// Whether a field name is withheld; static names are answered from a per-thread memo.
    #[inline]
    fn sensitive_name(&self, name: &FieldName) -> Option<Reason> {
        match name {
            Cow::Borrowed(name) => sensitive_static_name(self.rules_id, self.rules, name),
            Cow::Owned(name) => self.rules.sensitive_name(name),
        }
    }

    /// Records that the value at the current path was withheld.
    fn redact(&mut self, reason: Reason) -> Value {
        self.redacted.push((self.render_path(), reason.clone()));
        Value::Redacted(reason)
    }

    /// Charges `bytes` against the snapshot's byte budget; false when it is spent.
    fn charge(&mut self, bytes: usize) -> bool {
        if self.truncation.snapshot_size_limit_reached {
            return false;
        }
        self.bytes_used += bytes + VALUE_OVERHEAD;
        if self.bytes_used > self.limits.max_snapshot_bytes as usize {
            self.truncation.snapshot_size_limit_reached = true;
            return false;
        }
        true
    }

    fn size_exhausted(&mut self) -> Value {
        self.truncation.values_not_captured += 1;
        Value::not_captured(NotCapturedReason::Size, "snapshot byte limit reached")
    }

    /// A string after pattern redaction and truncation. `text` is the part of the original that
    /// the agent holds; `complete` says whether that is all of it.
    fn string_value(
        &mut self,
        text: &str,
        complete: bool,
        original_len: u64,
        lower_bound: bool,
    ) -> Value {
        let max = self.limits.max_string_bytes as usize;
        // Scan a window larger than what is kept, so a secret that starts in the kept part is
        // recognised whole; if the window itself is cut, the scan treats a secret running into
        // its end as a secret.
        let window_len = floor_char_boundary(text, max.saturating_add(SCAN_MARGIN));
        let window = &text[..window_len];
        let window_complete = complete && window_len == text.len();
        let masked = self.rules.mask_secrets(window, window_complete);
        let shown: &str = match &masked {
            Some(masked) => {
                let reasons = masked.reasons.clone();
                let path = self.render_path();
                for reason in reasons {
                    self.redacted.push((path.clone(), reason));
                }
                &masked.text
            }
            None => window,
        };
        let cut = floor_char_boundary(shown, max);
        let truncated = cut < shown.len() || !window_complete;
        if !self.charge(cut) {
            return self.size_exhausted();
        }
        if truncated {
            self.truncation.strings_truncated += 1;
        }
        Value::Str(CapturedStr {
            text: shown[..cut].to_owned(),
            truncated,
            original_len,
            original_len_is_lower_bound: lower_bound,
        })
    }

    fn render_path(&self) -> String {
        let mut out = String::new();
        for segment in &self.path {
            match segment {
                PathSegment::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                PathSegment::Index(index) => {
                    let _ = write!(out, "[{index}]");
                }
                PathSegment::Key(key) => {
                    let _ = write!(out, "[{key:?}]");
                }
            }
        }
        out
    }

    fn depth_exceeded(&mut self, what: &'static str) -> Value {
        self.truncation.values_not_captured += 1;
        Value::not_captured(NotCapturedReason::Depth, what)
    }
}

/// The largest index `<= max` that is a char boundary of `text`.
pub(crate) fn floor_char_boundary(text: &str, max: usize) -> usize {
    if max >= text.len() {
        return text.len();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.as_str()
    } else {
        "panic with a non-string payload"
    };
    let cut = floor_char_boundary(message, 200);
    format!("panicked: {}", &message[..cut])
}

/// A `fmt::Write` that keeps a prefix of what is written and stops the formatter at a cap.
struct BoundedWriter {
    text: String,
    keep: usize,
    /// Once a piece has been cut, nothing more may be appended, or `text` would stop being a
    /// prefix of the output.
    full: bool,
    seen: usize,
    capped: bool,
}

impl BoundedWriter {
    fn new(keep: usize) -> BoundedWriter {
        BoundedWriter {
            text: String::new(),
            keep,
            full: false,
            seen: 0,
            capped: false,
        }
    }
}

impl fmt::Write for BoundedWriter {
    fn write_str(&mut self, piece: &str) -> fmt::Result {
        if !self.full {
            let room = self.keep - self.text.len();
            if piece.len() <= room {
                self.text.push_str(piece);
            } else {
                self.text
                    .push_str(&piece[..floor_char_boundary(piece, room)]);
                self.full = true;
            }
        }
        self.seen += piece.len();
        if self.seen >= FORMAT_CAP {
            self.capped = true;
            return Err(fmt::Error);
        }
        Ok(())
    }
}

/// The error a user `Serialize` impl may raise; the serializer itself never raises one.
#[derive(Debug)]
pub struct SerializeError(String);

impl fmt::Display for SerializeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SerializeError {}

impl ser::Error for SerializeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        let mut writer = BoundedWriter::new(200);
        let _ = write!(writer, "{msg}");
        SerializeError(writer.text)
    }
}

/// Serializes one value (at one depth) into a [`Value`].
pub struct ValueSerializer<'b, 'r> {
    builder: &'b mut SnapshotBuilder<'r>,
    depth: u32,
}

impl<'b, 'r> ValueSerializer<'b, 'r> {
    /// Runs `value`'s `Serialize`, turning its errors into `not_captured{error}`.
    pub fn capture<T: Serialize + ?Sized>(self, value: &T) -> Value {
        let ValueSerializer { builder, depth } = self;
        let serializer = ValueSerializer {
            builder: &mut *builder,
            depth,
        };
        match value.serialize(serializer) {
            Ok(value) => value,
            Err(err) => {
                builder.truncation.values_not_captured += 1;
                Value::not_captured(NotCapturedReason::Error, err.0)
            }
        }
    }

    fn child(&mut self) -> ValueSerializer<'_, 'r> {
        ValueSerializer {
            builder: self.builder,
            depth: self.depth + 1,
        }
    }

    fn scalar(self, bytes: usize, value: Value) -> Result<Value, SerializeError> {
        if !self.builder.charge(bytes) {
            return Ok(self.builder.size_exhausted());
        }
        Ok(value)
    }

    /// Whether a container may open here; if not, the value that stands in for it.
    fn open_container(&mut self, what: &'static str) -> Option<Value> {
        if self.depth >= self.builder.limits.max_depth {
            return Some(self.builder.depth_exceeded(what));
        }
        if !self.builder.charge(0) {
            return Some(self.builder.size_exhausted());
        }
        None
    }

    fn seq(mut self, what: &'static str, len: Option<usize>) -> SeqBuilder<'b, 'r> {
        let cut = self.open_container(what);
        let max = self.builder.limits.max_collection_len as usize;
        SeqBuilder {
            items: if cut.is_some() {
                Vec::new()
            } else {
                Vec::with_capacity(len.unwrap_or(0).min(max))
            },
            serializer: self,
            total: 0,
            cut,
        }
    }

    fn fields(
        mut self,
        what: &'static str,
        type_name: &'static str,
        variant: Option<&'static str>,
        len: usize,
    ) -> FieldsBuilder<'b, 'r> {
        let cut = self.open_container(what);
        let max = self.builder.limits.max_struct_fields as usize;
        FieldsBuilder {
            fields: if cut.is_some() {
                Vec::new()
            } else {
                Vec::with_capacity(len.min(max))
            },
            serializer: self,
            type_name,
            variant,
            total: 0,
            cut,
        }
    }
}

impl<'b, 'r> ser::Serializer for ValueSerializer<'b, 'r> {
    type Ok = Value;
    type Error = SerializeError;
    type SerializeSeq = SeqBuilder<'b, 'r>;
    type SerializeTuple = SeqBuilder<'b, 'r>;
    type SerializeTupleStruct = FieldsBuilder<'b, 'r>;
    type SerializeTupleVariant = FieldsBuilder<'b, 'r>;
    type SerializeMap = MapBuilder<'b, 'r>;
    type SerializeStruct = FieldsBuilder<'b, 'r>;
    type SerializeStructVariant = FieldsBuilder<'b, 'r>;

    fn serialize_bool(self, v: bool) -> Result<Value, SerializeError> {
        self.scalar(1, Value::Bool(v))
    }

    fn serialize_i8(self, v: i8) -> Result<Value, SerializeError> {
        self.serialize_i64(v.into())
    }

    fn serialize_i16(self, v: i16) -> Result<Value, SerializeError> {
        self.serialize_i64(v.into())
    }

    fn serialize_i32(self, v: i32) -> Result<Value, SerializeError> {
        self.serialize_i64(v.into())
    }

    fn serialize_i64(self, v: i64) -> Result<Value, SerializeError> {
        if let Some(reason) = self.builder.rules.sensitive_i64(v) {
            return Ok(self.builder.redact(reason));
        }
        self.scalar(8, Value::Int(v))
    }

    fn serialize_i128(self, v: i128) -> Result<Value, SerializeError> {
        match i64::try_from(v) {
            Ok(v) => self.serialize_i64(v),
            Err(_) => self.serialize_str(&v.to_string()),
        }
    }

    fn serialize_u8(self, v: u8) -> Result<Value, SerializeError> {
        self.serialize_u64(v.into())
    }

    fn serialize_u16(self, v: u16) -> Result<Value, SerializeError> {
        self.serialize_u64(v.into())
    }

    fn serialize_u32(self, v: u32) -> Result<Value, SerializeError> {
        self.serialize_u64(v.into())
    }

    fn serialize_u64(self, v: u64) -> Result<Value, SerializeError> {
        if let Some(reason) = self.builder.rules.sensitive_u64(v) {
            return Ok(self.builder.redact(reason));
        }
        self.scalar(8, Value::Uint(v))
    }

    fn serialize_u128(self, v: u128) -> Result<Value, SerializeError> {
        match u64::try_from(v) {
            Ok(v) => self.serialize_u64(v),
            Err(_) => self.serialize_str(&v.to_string()),
        }
    }

    fn serialize_f32(self, v: f32) -> Result<Value, SerializeError> {
        self.serialize_f64(v.into())
    }

    fn serialize_f64(self, v: f64) -> Result<Value, SerializeError> {
        self.scalar(8, Value::Float(v))
    }

    fn serialize_char(self, v: char) -> Result<Value, SerializeError> {
        let mut buf = [0u8; 4];
        self.serialize_str(v.encode_utf8(&mut buf))
    }

    fn serialize_str(self, v: &str) -> Result<Value, SerializeError> {
        Ok(self.builder.string_value(v, true, v.len() as u64, false))
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<Value, SerializeError> {
        // Bytes that are text get the same pattern scan as strings; a hit withholds the whole
        // value, since masking inside arbitrary bytes has no meaning.
        let found = std::str::from_utf8(v)
            .ok()
            .and_then(|text| self.builder.rules.mask_secrets(text, true))
            .and_then(|masked| masked.reasons.into_iter().next());
        if let Some(reason) = found {
            return Ok(self.builder.redact(reason));
        }
        let max = self.builder.limits.max_string_bytes as usize;
        let cut = v.len().min(max);
        if !self.builder.charge(cut) {
            return Ok(self.builder.size_exhausted());
        }
        let truncated = cut < v.len();
        if truncated {
            self.builder.truncation.strings_truncated += 1;
        }
        Ok(Value::Bytes {
            bytes: v[..cut].to_vec(),
            truncated,
            original_len: v.len() as u64,
        })
    }

    fn serialize_none(self) -> Result<Value, SerializeError> {
        self.scalar(1, Value::Null)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, SerializeError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<Value, SerializeError> {
        self.scalar(1, Value::Null)
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<Value, SerializeError> {
        self.scalar(
            name.len(),
            Value::Struct {
                type_name: name,
                fields: Vec::new(),
                total_fields: 0,
            },
        )
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, SerializeError> {
        self.scalar(
            variant.len(),
            Value::Enum {
                type_name: name,
                variant,
                fields: Vec::new(),
                total_fields: 0,
            },
        )
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<Value, SerializeError> {
        if name == SECRET_MARKER {
            // A `Secret<T>`: withheld whatever the request says, and never serialized.
            return Ok(self.builder.redact(crate::secret::secret_reason()));
        }
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, SerializeError> {
        let mut fields = self.fields("enum", name, Some(variant), 1);
        ser::SerializeTupleVariant::serialize_field(&mut fields, value)?;
        ser::SerializeTupleVariant::end(fields)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder<'b, 'r>, SerializeError> {
        Ok(self.seq("list", len))
    }

    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder<'b, 'r>, SerializeError> {
        Ok(self.seq("tuple", Some(len)))
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<FieldsBuilder<'b, 'r>, SerializeError> {
        Ok(self.fields("struct", name, None, len))
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<FieldsBuilder<'b, 'r>, SerializeError> {
        Ok(self.fields("enum", name, Some(variant), len))
    }

    fn serialize_map(mut self, len: Option<usize>) -> Result<MapBuilder<'b, 'r>, SerializeError> {
        let cut = self.open_container("map");
        let max = self.builder.limits.max_collection_len as usize;
        Ok(MapBuilder {
            entries: if cut.is_some() {
                Vec::new()
            } else {
                Vec::with_capacity(len.unwrap_or(0).min(max))
            },
            serializer: self,
            pending_key: None,
            total: 0,
            cut,
        })
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<FieldsBuilder<'b, 'r>, SerializeError> {
        Ok(self.fields("struct", name, None, len))
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<FieldsBuilder<'b, 'r>, SerializeError> {
        Ok(self.fields("enum", name, Some(variant), len))
    }

    /// serde's default formats into an unbounded `String`; this one is bounded.
    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<Value, SerializeError> {
        Ok(self.builder.formatted(format_args!("{value}")))
    }
}

/// Lists and tuples.
pub struct SeqBuilder<'b, 'r> {
    serializer: ValueSerializer<'b, 'r>,
    items: Vec<Value>,
    total: u64,
    /// Set when the container itself was cut (depth or size): elements are only counted.
    cut: Option<Value>,
}

impl SeqBuilder<'_, '_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) {
        let index = self.total;
        self.total += 1;
        if self.cut.is_some()
            || self.items.len() >= self.serializer.builder.limits.max_collection_len as usize
        {
            return;
        }
        self.serializer.builder.path.push(PathSegment::Index(index));
        let item = self.serializer.child().capture(value);
        self.serializer.builder.path.pop();
        self.items.push(item);
    }

    fn finish(self) -> Value {
        if let Some(cut) = self.cut {
            return cut;
        }
        if (self.items.len() as u64) < self.total {
            self.serializer.builder.truncation.collections_truncated += 1;
        }
        Value::List {
            items: self.items,
            total_len: self.total,
        }
    }
}

impl ser::SerializeSeq for SeqBuilder<'_, '_> {
    type Ok = Value;
    type Error = SerializeError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.element(value);
        Ok(())
    }

    fn end(self) -> Result<Value, SerializeError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTuple for SeqBuilder<'_, '_> {
    type Ok = Value;
    type Error = SerializeError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.element(value);
        Ok(())
    }

    fn end(self) -> Result<Value, SerializeError> {
        Ok(self.finish())
    }
}

/// Structs, tuple structs and enum variants with a payload.
pub struct FieldsBuilder<'b, 'r> {
    serializer: ValueSerializer<'b, 'r>,
    type_name: &'static str,
    variant: Option<&'static str>,
    fields: Vec<(FieldName, Value)>,
    total: u32,
    cut: Option<Value>,
}

impl FieldsBuilder<'_, '_> {
    fn field<T: Serialize + ?Sized>(&mut self, name: FieldName, value: &T) {
        self.total = self.total.saturating_add(1);
        if self.cut.is_some()
            || self.fields.len() >= self.serializer.builder.limits.max_struct_fields as usize
        {
            return;
        }
        let builder = &mut *self.serializer.builder;
        builder.path.push(PathSegment::Field(name.clone()));
        let captured = if let Some(reason) = builder.sensitive_name(&name) {
            builder.redact(reason)
        } else if !builder.charge(name.len()) {
            builder.size_exhausted()
        } else {
            self.serializer.child().capture(value)
        };
        self.serializer.builder.path.pop();
        self.fields.push((name, captured));
    }

    fn positional<T: Serialize + ?Sized>(&mut self, value: &T) {
        let name = position_name(self.total as usize);
        self.field(name, value);
    }

    fn finish(self) -> Value {
        if let Some(cut) = self.cut {
            return cut;
        }
        if (self.fields.len() as u32) < self.total {
            self.serializer.builder.truncation.structs_truncated += 1;
        }
        match self.variant {
            None => Value::Struct {
                type_name: self.type_name,
                fields: self.fields,
                total_fields: self.total,
            },
            Some(variant) => Value::Enum {
                type_name: self.type_name,
                variant,
                fields: self.fields,
                total_fields: self.total,
            },
        }
    }
}

impl ser::SerializeStruct for FieldsBuilder<'_, '_> {
    type Ok = Value;
    type Error = SerializeError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        self.field(Cow::Borrowed(key), value);
        Ok(())
    }

    fn end(self) -> Result<Value, SerializeError> {
        Ok(self.finish())
    }
}

impl ser::SerializeStructVariant for FieldsBuilder<'_, '_> {
    type Ok = Value;
    type Error = SerializeError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        self.field(Cow::Borrowed(key), value);
        Ok(())
    }

    fn end(self) -> Result<Value, SerializeError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleStruct for FieldsBuilder<'_, '_> {
    type Ok = Value;
    type Error = SerializeError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.positional(value);
        Ok(())
    }

    fn end(self) -> Result<Value, SerializeError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleVariant for FieldsBuilder<'_, '_> {
    type Ok = Value;
    type Error = SerializeError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.positional(value);
        Ok(())
    }

    fn end(self) -> Result<Value, SerializeError> {
        Ok(self.finish())
    }
}

/// Maps. A string key that names a secret (`"password" => …`) withholds its value.
pub struct MapBuilder<'b, 'r> {
    serializer: ValueSerializer<'b, 'r>,
    entries: Vec<(Value, Value)>,
    /// The key of the entry in progress; `None` inside while the entry is being skipped.
    pending_key: Option<Option<Value>>,
    total: u64,
    cut: Option<Value>,
}

impl ser::SerializeMap for MapBuilder<'_, '_> {
    type Ok = Value;
    type Error = SerializeError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Self::Error> {
        let index = self.total;
        self.total += 1;
        if self.cut.is_some()
            || self.entries.len() >= self.serializer.builder.limits.max_collection_len as usize
        {
            self.pending_key = Some(None);
            return Ok(());
        }
        self.serializer.builder.path.push(PathSegment::Index(index));
        let key = self.serializer.child().capture(key);
        self.serializer.builder.path.pop();
        self.pending_key = Some(Some(key));
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        let Some(Some(key)) = self.pending_key.take() else {
            return Ok(());
        };
        let builder = &mut *self.serializer.builder;
        let segment = match &key {
            Value::Str(s) => PathSegment::Key(s.text.clone()),
            Value::Int(i) => PathSegment::Key(i.to_string()),
            Value::Uint(u) => PathSegment::Key(u.to_string()),
            Value::Bool(b) => PathSegment::Key(b.to_string()),
            _ => PathSegment::Index(self.total - 1),
        };
        builder.path.push(segment);
        let sensitive = key.as_str().and_then(|k| builder.rules.sensitive_name(k));
        let captured = match sensitive {
            Some(reason) => builder.redact(reason),
            None => self.serializer.child().capture(value),
        };
        self.serializer.builder.path.pop();
        self.entries.push((key, captured));
        Ok(())
    }

    fn end(self) -> Result<Value, SerializeError> {
        if let Some(cut) = self.cut {
            return Ok(cut);
        }
        if (self.entries.len() as u64) < self.total {
            self.serializer.builder.truncation.collections_truncated += 1;
        }
        Ok(Value::Map {
            entries: self.entries,
            total_len: self.total,
        })
    }
}

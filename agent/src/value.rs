//! The captured value model, as built on the capturing thread.
//!
//! It mirrors `loupe.v1.Value` but borrows what it can (`&'static` type and field names) and
//! skips protobuf's per-message overhead, so the capturing thread only allocates for the data
//! itself. The consumer (the agent's own thread) turns it into protobuf in `encode`.

use std::borrow::Cow;

use crate::redaction::Reason;

pub use loupe_proto::v1::NotCapturedReason;

/// One captured value. Every cut or withheld value says so.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(CapturedStr),
    Bytes {
        bytes: Vec<u8>,
        truncated: bool,
        original_len: u64,
    },
    List {
        items: Vec<Value>,
        total_len: u64,
    },
    Map {
        entries: Vec<(Value, Value)>,
        total_len: u64,
    },
    Struct {
        type_name: &'static str,
        fields: Vec<(FieldName, Value)>,
        total_fields: u32,
    },
    Enum {
        type_name: &'static str,
        variant: &'static str,
        fields: Vec<(FieldName, Value)>,
        total_fields: u32,
    },
    Redacted(Reason),
    NotCaptured {
        reason: NotCapturedReason,
        detail: Cow<'static, str>,
    },
}

/// Field names are `&'static str` from serde and `snapshot!`; only span fields own theirs.
pub type FieldName = Cow<'static, str>;

/// A string after redaction and truncation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedStr {
    pub text: String,
    /// `text` is a prefix of the (masked) original.
    pub truncated: bool,
    /// Length in bytes of the original string.
    pub original_len: u64,
    /// The original was longer than the agent was willing to format (Debug/Display output);
    /// `original_len` counts only what was formatted.
    pub original_len_is_lower_bound: bool,
}

impl Value {
    pub fn not_captured(reason: NotCapturedReason, detail: impl Into<Cow<'static, str>>) -> Value {
        Value::NotCaptured {
            reason,
            detail: detail.into(),
        }
    }

    /// A complete, uncut string (used for values the agent itself produces).
    pub fn plain_str(text: impl Into<String>) -> Value {
        let text = text.into();
        Value::Str(CapturedStr {
            original_len: text.len() as u64,
            text,
            truncated: false,
            original_len_is_lower_bound: false,
        })
    }

    /// The string content, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(&s.text),
            _ => None,
        }
    }

    /// The value of a struct's or enum variant's field, by name.
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct { fields, .. } | Value::Enum { fields, .. } => fields
                .iter()
                .find(|(field, _)| field == name)
                .map(|(_, value)| value),
            _ => None,
        }
    }
}

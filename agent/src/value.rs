//! The captured value model, as built on the capturing thread: a flat tape.
//!
//! A snapshot's values are written in pre-order into one node array, with all their text in one
//! string, instead of a tree of separately allocated nodes: a capture of a 500-byte struct then
//! costs a handful of allocations instead of dozens, on the application's thread. Containers
//! record where their subtree ends, so readers skip a child in O(1). The consumer (the agent's
//! own thread) walks the tape to build protobuf in `capture::stream`; conditions read it through
//! [`ValueRef`].

use std::borrow::Cow;

use crate::redaction::Reason;

pub use loupe_proto::v1::NotCapturedReason;

/// Field names are `&'static str` from serde and `snapshot!`; only map-derived names own theirs.
pub type FieldName = Cow<'static, str>;

/// One node of a tape.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(TextSpan),
    Bytes {
        start: u32,
        len: u32,
        truncated: bool,
        original_len: u64,
    },
    /// Followed by `count` element subtrees.
    List {
        end: u32,
        count: u32,
        total_len: u64,
    },
    /// Followed by `count` (key subtree, value subtree) pairs.
    Map {
        end: u32,
        count: u32,
        total_len: u64,
    },
    /// Followed by `count` ([`Node::Name`], value subtree) pairs.
    Struct {
        end: u32,
        type_name: &'static str,
        count: u32,
        total_fields: u32,
    },
    /// Like a struct: followed by `count` (name, value) pairs of the variant's payload.
    Enum {
        end: u32,
        type_name: &'static str,
        variant: &'static str,
        count: u32,
        total_fields: u32,
    },
    /// The name of the struct field (or enum payload field) whose value follows.
    Name(FieldName),
    Redacted(Reason),
    NotCaptured {
        reason: NotCapturedReason,
        detail: Cow<'static, str>,
    },
    /// A `not_captured` whose detail quotes text the agent did not write (a panic or
    /// `Serialize` error message), not scanned yet: only on a tape whose redaction is deferred
    /// to the agent's thread, whose replay scans `message` (cut when `complete` is false) and
    /// shows `prefix` before it. Read as a value, it shows only `prefix`.
    Unscanned {
        reason: NotCapturedReason,
        prefix: &'static str,
        message: Box<str>,
        complete: bool,
    },
}

/// A string stored in the tape's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextSpan {
    pub start: u32,
    pub len: u32,
    /// The text is a prefix (cut on a UTF-8 boundary) of the (masked) original.
    pub truncated: bool,
    /// Length in bytes of the original string.
    pub original_len: u64,
    /// The original was longer than the agent was willing to format; `original_len` counts
    /// only what was formatted.
    pub original_len_is_lower_bound: bool,
}

/// The values of one snapshot.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tape {
    pub(crate) nodes: Vec<Node>,
    pub(crate) text: String,
    pub(crate) bytes: Vec<u8>,
    /// Where each field of a snapshot captured for the agent's thread starts, in declaration
    /// order; kept with the other buffers so that a reused tape takes a hit no allocation.
    pub(crate) roots: Vec<u32>,
}

impl Tape {
    pub fn with_capacity(nodes: usize, text: usize) -> Tape {
        Tape {
            nodes: Vec::with_capacity(nodes),
            text: String::with_capacity(text),
            bytes: Vec::new(),
            roots: Vec::new(),
        }
    }

    /// The value whose node is at `index`.
    pub fn get(&self, index: u32) -> Option<ValueRef<'_>> {
        ((index as usize) < self.nodes.len()).then_some(ValueRef { tape: self, index })
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Index of the next node to be written.
    #[inline]
    pub(crate) fn next_index(&self) -> u32 {
        u32::try_from(self.nodes.len()).unwrap_or(u32::MAX)
    }

    #[inline]
    pub(crate) fn push(&mut self, node: Node) -> u32 {
        let index = self.next_index();
        self.nodes.push(node);
        index
    }

    /// Appends `text` and returns where it is.
    pub(crate) fn push_text(&mut self, text: &str) -> (u32, u32) {
        let start = u32::try_from(self.text.len()).unwrap_or(u32::MAX);
        self.text.push_str(text);
        (start, u32::try_from(text.len()).unwrap_or(u32::MAX))
    }

    pub(crate) fn push_bytes(&mut self, bytes: &[u8]) -> (u32, u32) {
        let start = u32::try_from(self.bytes.len()).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(bytes);
        (start, u32::try_from(bytes.len()).unwrap_or(u32::MAX))
    }

    /// Where the tape stands, to roll back to if a value fails half-way.
    pub(crate) fn mark(&self) -> TapeMark {
        TapeMark {
            nodes: self.nodes.len(),
            text: self.text.len(),
            bytes: self.bytes.len(),
        }
    }

    /// Empties the tape and keeps its buffers, for reuse by a later snapshot.
    pub(crate) fn clear(&mut self) {
        self.nodes.clear();
        self.text.clear();
        self.bytes.clear();
        self.roots.clear();
    }

    /// Bytes held by the tape's buffers, used or not.
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.text.capacity()
            + self.bytes.capacity()
            + self.roots.capacity() * std::mem::size_of::<u32>()
    }

    pub(crate) fn rollback(&mut self, mark: TapeMark) {
        self.nodes.truncate(mark.nodes);
        self.text.truncate(mark.text);
        self.bytes.truncate(mark.bytes);
    }

    pub(crate) fn node_mut(&mut self, index: u32) -> Option<&mut Node> {
        self.nodes.get_mut(index as usize)
    }

    fn text_of(&self, span: &TextSpan) -> &str {
        let start = span.start as usize;
        self.text
            .get(start..start + span.len as usize)
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct TapeMark {
    nodes: usize,
    text: usize,
    bytes: usize,
}

/// A value in a tape.
#[derive(Debug, Clone, Copy)]
pub struct ValueRef<'t> {
    tape: &'t Tape,
    index: u32,
}

/// What a [`ValueRef`] is, with its scalar contents.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueKind<'t> {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str {
        text: &'t str,
        span: TextSpan,
    },
    Bytes {
        bytes: &'t [u8],
        truncated: bool,
        original_len: u64,
    },
    List {
        total_len: u64,
    },
    Map {
        total_len: u64,
    },
    Struct {
        type_name: &'static str,
        total_fields: u32,
    },
    Enum {
        type_name: &'static str,
        variant: &'static str,
        total_fields: u32,
    },
    Redacted(&'t Reason),
    NotCaptured {
        reason: NotCapturedReason,
        detail: &'t str,
    },
}

impl<'t> ValueRef<'t> {
    pub(crate) fn node(&self) -> &'t Node {
        &self.tape.nodes[self.index as usize]
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn kind(&self) -> ValueKind<'t> {
        match self.node() {
            Node::Null | Node::Name(_) => ValueKind::Null,
            Node::Bool(b) => ValueKind::Bool(*b),
            Node::Int(i) => ValueKind::Int(*i),
            Node::Uint(u) => ValueKind::Uint(*u),
            Node::Float(f) => ValueKind::Float(*f),
            Node::Str(span) => ValueKind::Str {
                text: self.tape.text_of(span),
                span: *span,
            },
            Node::Bytes {
                start,
                len,
                truncated,
                original_len,
            } => ValueKind::Bytes {
                bytes: self
                    .tape
                    .bytes
                    .get(*start as usize..(*start + *len) as usize)
                    .unwrap_or_default(),
                truncated: *truncated,
                original_len: *original_len,
            },
            Node::List { total_len, .. } => ValueKind::List {
                total_len: *total_len,
            },
            Node::Map { total_len, .. } => ValueKind::Map {
                total_len: *total_len,
            },
            Node::Struct {
                type_name,
                total_fields,
                ..
            } => ValueKind::Struct {
                type_name,
                total_fields: *total_fields,
            },
            Node::Enum {
                type_name,
                variant,
                total_fields,
                ..
            } => ValueKind::Enum {
                type_name,
                variant,
                total_fields: *total_fields,
            },
            Node::Redacted(reason) => ValueKind::Redacted(reason),
            Node::NotCaptured { reason, detail } => ValueKind::NotCaptured {
                reason: *reason,
                detail,
            },
            Node::Unscanned { reason, prefix, .. } => ValueKind::NotCaptured {
                reason: *reason,
                detail: prefix,
            },
        }
    }

    /// The string content, if this is a string.
    pub fn as_str(&self) -> Option<&'t str> {
        match self.kind() {
            ValueKind::Str { text, .. } => Some(text),
            _ => None,
        }
    }

    /// How many elements (list), entries (map) or fields (struct, enum payload) it holds.
    pub fn children_len(&self) -> usize {
        self.child_count() as usize
    }

    /// Index just past this value's subtree.
    fn end(&self) -> u32 {
        match self.node() {
            Node::List { end, .. }
            | Node::Map { end, .. }
            | Node::Struct { end, .. }
            | Node::Enum { end, .. } => *end,
            _ => self.index + 1,
        }
    }

    fn child_count(&self) -> u32 {
        match self.node() {
            Node::List { count, .. }
            | Node::Map { count, .. }
            | Node::Struct { count, .. }
            | Node::Enum { count, .. } => *count,
            _ => 0,
        }
    }

    /// The immediate children in order: list elements, map keys and values alternating, or
    /// struct names and values alternating.
    fn children(&self) -> Children<'t> {
        let pairs = matches!(
            self.node(),
            Node::Map { .. } | Node::Struct { .. } | Node::Enum { .. }
        );
        Children {
            tape: self.tape,
            next: self.index + 1,
            remaining: self.child_count() * if pairs { 2 } else { 1 },
        }
    }

    /// List elements.
    pub fn items(&self) -> impl Iterator<Item = ValueRef<'t>> + 't {
        let is_list = matches!(self.node(), Node::List { .. });
        self.children().filter(move |_| is_list)
    }

    /// Map entries as (key, value).
    pub fn entries(&self) -> impl Iterator<Item = (ValueRef<'t>, ValueRef<'t>)> + 't {
        let is_map = matches!(self.node(), Node::Map { .. });
        Pairs(self.children()).filter(move |_| is_map)
    }

    /// Struct or enum-payload fields as (name, value).
    pub fn fields(&self) -> impl Iterator<Item = (&'t str, ValueRef<'t>)> + 't {
        let has_fields = matches!(self.node(), Node::Struct { .. } | Node::Enum { .. });
        Pairs(self.children())
            .filter(move |_| has_fields)
            .map(|(name, value)| match name.node() {
                Node::Name(name) => (name.as_ref(), value),
                _ => ("", value),
            })
    }

    /// Struct or enum-payload fields with their names as written (`None` where the tape holds
    /// something other than a name).
    pub(crate) fn named_fields(
        &self,
    ) -> impl Iterator<Item = (Option<&'t FieldName>, ValueRef<'t>)> + 't {
        let has_fields = matches!(self.node(), Node::Struct { .. } | Node::Enum { .. });
        Pairs(self.children())
            .filter(move |_| has_fields)
            .map(|(name, value)| match name.node() {
                Node::Name(name) => (Some(name), value),
                _ => (None, value),
            })
    }

    /// The value of a struct's or enum payload's field, by name.
    pub fn field(&self, name: &str) -> Option<ValueRef<'t>> {
        self.fields()
            .find(|(field, _)| *field == name)
            .map(|(_, value)| value)
    }
}

struct Children<'t> {
    tape: &'t Tape,
    next: u32,
    remaining: u32,
}

impl<'t> Iterator for Children<'t> {
    type Item = ValueRef<'t>;

    fn next(&mut self) -> Option<ValueRef<'t>> {
        if self.remaining == 0 {
            return None;
        }
        let child = self.tape.get(self.next)?;
        self.remaining -= 1;
        self.next = child.end();
        Some(child)
    }
}

struct Pairs<'t>(Children<'t>);

impl<'t> Iterator for Pairs<'t> {
    type Item = (ValueRef<'t>, ValueRef<'t>);

    fn next(&mut self) -> Option<Self::Item> {
        Some((self.0.next()?, self.0.next()?))
    }
}

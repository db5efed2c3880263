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

/// One node of a tape: 24 bytes, so that a capture writes few cache lines (a hit that finds
/// the caches cold pays for every line it touches). What does not fit is kept beside the
/// nodes: text in the tape's text, type and variant names in its name table, reasons in its
/// reason table; nodes hold indices into them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    /// Text at `start..start + len` of the tape's text.
    Str {
        start: u32,
        len: u32,
        truncated: bool,
        original_len_is_lower_bound: bool,
        original_len: u64,
    },
    /// Bytes at `start..start + len` of the tape's bytes.
    Bytes {
        start: u32,
        len: u32,
        truncated: bool,
        original_len: u64,
    },
    /// Followed by `count` element subtrees. `pair`: declared two elements long (a pair
    /// tuple, `[T; 2]`, a two-element `Vec`), so the first may name the second.
    List {
        end: u32,
        count: u32,
        pair: bool,
        total_len: u64,
    },
    /// Followed by `count` (key subtree, value subtree) pairs.
    Map {
        end: u32,
        count: u32,
        total_len: u64,
    },
    /// Followed by `count` ([`Node::Name`], value subtree) pairs; the type's name is entry
    /// `type_name` of the tape's name table.
    Struct {
        end: u32,
        count: u32,
        total_fields: u32,
        type_name: u32,
    },
    /// Like a struct: followed by `count` (name, value) pairs of the variant's payload; the
    /// type's name is entry `names` of the name table, the variant's the next.
    Enum {
        end: u32,
        count: u32,
        total_fields: u32,
        names: u32,
    },
    /// The name of the struct field (or enum payload field) whose value follows.
    Name(&'static str),
    /// A name held in the tape's text (a positional name past the static ones).
    NameText {
        start: u32,
        len: u32,
    },
    /// Entry `reason` of the tape's reason table. `end` is the index just past the value it
    /// stands for: the next node, or, for a value withheld after it was written (a pair's
    /// name that comes after its value: [`Tape::withhold_in_place`]), past the subtree it
    /// hides.
    Redacted {
        reason: u32,
        end: u32,
    },
    NotCaptured {
        reason: NotCapturedReason,
        detail: &'static str,
    },
    /// A `not_captured` whose detail is in the tape's text.
    NotCapturedText {
        reason: NotCapturedReason,
        start: u32,
        len: u32,
    },
    /// A `not_captured` whose detail quotes text the agent did not write (a panic or
    /// `Serialize` error message), not scanned yet: only on a tape whose redaction is deferred
    /// to the agent's thread. The tape's text holds, from `start`, a prefix of `prefix_len`
    /// bytes (the agent's own words, shown before the message) and then `len` bytes of the
    /// message, which the replay scans (cut when `complete` is false). Read as a value, it
    /// shows only the prefix.
    Unscanned {
        reason: NotCapturedReason,
        complete: bool,
        start: u32,
        prefix_len: u32,
        len: u32,
    },
}

// A node is written for every value a hit captures: keep it at 24 bytes.
const _: () = assert!(std::mem::size_of::<Node>() == 24);

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

/// Buffers a [`Tape`] keeps its values in ([`Tape::buffer_ranges`]).
pub(crate) const TAPE_BUFFERS: usize = 7;

/// The values of one snapshot.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tape {
    pub(crate) nodes: Vec<Node>,
    pub(crate) text: String,
    pub(crate) bytes: Vec<u8>,
    /// Type and variant names of the tape's structs and enums.
    pub(crate) names: Vec<&'static str>,
    /// Why each withheld value was withheld.
    pub(crate) reasons: Vec<Reason>,
    /// Where each field of a snapshot captured for the agent's thread starts, in declaration
    /// order; kept with the other buffers so that a reused tape takes a hit no allocation.
    pub(crate) roots: Vec<u32>,
    /// The same for the snapshot's span fields: each one's name and where its value starts.
    pub(crate) context_roots: Vec<(&'static str, u32)>,
}

/// Offsets into a tape's text or bytes, saturated: a tape never holds 4 GiB.
fn offset(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

impl Tape {
    pub fn with_capacity(nodes: usize, text: usize) -> Tape {
        Tape {
            nodes: Vec::with_capacity(nodes),
            text: String::with_capacity(text),
            names: Vec::with_capacity(8),
            ..Tape::default()
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
        offset(self.nodes.len())
    }

    #[inline]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub(crate) fn push(&mut self, node: Node) -> u32 {
        let index = self.next_index();
        self.nodes.push(node);
        index
    }

    /// Appends `text` and returns where it is.
    pub(crate) fn push_text(&mut self, text: &str) -> (u32, u32) {
        let start = offset(self.text.len());
        self.text.push_str(text);
        (start, offset(text.len()))
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub(crate) fn push_bytes(&mut self, bytes: &[u8]) -> (u32, u32) {
        let start = offset(self.bytes.len());
        self.bytes.extend_from_slice(bytes);
        (start, offset(bytes.len()))
    }

    /// A string's node, its text appended.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub(crate) fn push_str(&mut self, text: &str, span: StrShape) -> u32 {
        let (start, len) = self.push_text(text);
        self.push(Node::Str {
            start,
            len,
            truncated: span.truncated,
            original_len_is_lower_bound: span.original_len_is_lower_bound,
            original_len: span.original_len,
        })
    }

    /// A struct's placeholder (end and counts set when it closes), or a unit struct's node.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub(crate) fn push_struct(&mut self, type_name: &'static str, end: u32) -> u32 {
        let type_name = self.push_name(type_name);
        self.push(Node::Struct {
            end,
            count: 0,
            total_fields: 0,
            type_name,
        })
    }

    /// An enum variant's placeholder (end and counts set when it closes), or a unit
    /// variant's node.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub(crate) fn push_enum(
        &mut self,
        type_name: &'static str,
        variant: &'static str,
        end: u32,
    ) -> u32 {
        let names = self.push_name(type_name);
        self.push_name(variant);
        self.push(Node::Enum {
            end,
            count: 0,
            total_fields: 0,
            names,
        })
    }

    fn push_name(&mut self, name: &'static str) -> u32 {
        let at = offset(self.names.len());
        self.names.push(name);
        at
    }

    /// A struct field's name. Inline, as it runs for every field a hit captures; a name
    /// that is not `'static` (rare) is copied out of line.
    #[inline]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub(crate) fn push_field_name(&mut self, name: FieldName) -> u32 {
        match name {
            Cow::Borrowed(name) => self.push(Node::Name(name)),
            Cow::Owned(name) => self.push_field_name_text(&name),
        }
    }

    #[cold]
    #[inline(never)]
    fn push_field_name_text(&mut self, name: &str) -> u32 {
        let (start, len) = self.push_text(name);
        self.push(Node::NameText { start, len })
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub(crate) fn push_redacted(&mut self, reason: Reason) -> u32 {
        let at = offset(self.reasons.len());
        self.reasons.push(reason);
        let end = self.next_index().saturating_add(1);
        self.push(Node::Redacted { reason: at, end })
    }

    /// Withholds the value written at `at`, subtree and all, for `reason`: its node becomes a
    /// redacted one that readers step over the rest of the subtree from. For a value found
    /// secret only after it was written, by a pair's name that comes after it. False when
    /// there is no value at `at`.
    pub(crate) fn withhold_in_place(&mut self, at: u32, reason: Reason) -> bool {
        let Some(end) = self.get(at).map(|value| value.end()) else {
            return false;
        };
        let Some(node) = self.nodes.get_mut(at as usize) else {
            return false;
        };
        let reason_at = offset(self.reasons.len());
        self.reasons.push(reason);
        *node = Node::Redacted {
            reason: reason_at,
            end,
        };
        true
    }

    pub(crate) fn push_not_captured(
        &mut self,
        reason: NotCapturedReason,
        detail: Cow<'static, str>,
    ) -> u32 {
        match detail {
            Cow::Borrowed(detail) => self.push(Node::NotCaptured { reason, detail }),
            Cow::Owned(detail) => {
                let (start, len) = self.push_text(&detail);
                self.push(Node::NotCapturedText { reason, start, len })
            }
        }
    }

    /// A `not_captured` quoting foreign text, not scanned yet ([`Node::Unscanned`]).
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub(crate) fn push_unscanned(
        &mut self,
        reason: NotCapturedReason,
        prefix: &str,
        message: &str,
        complete: bool,
    ) -> u32 {
        let (start, prefix_len) = self.push_text(prefix);
        let (_, len) = self.push_text(message);
        self.push(Node::Unscanned {
            reason,
            complete,
            start,
            prefix_len,
            len,
        })
    }

    /// Sets a container's end and counts once its children are written.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub(crate) fn close(&mut self, index: u32, end: u32, count: u32, total: u64) {
        match self.nodes.get_mut(index as usize) {
            Some(
                Node::List {
                    end: node_end,
                    count: node_count,
                    total_len,
                    ..
                }
                | Node::Map {
                    end: node_end,
                    count: node_count,
                    total_len,
                },
            ) => {
                *node_end = end;
                *node_count = count;
                *total_len = total;
            }
            Some(
                Node::Struct {
                    end: node_end,
                    count: node_count,
                    total_fields,
                    ..
                }
                | Node::Enum {
                    end: node_end,
                    count: node_count,
                    total_fields,
                    ..
                },
            ) => {
                *node_end = end;
                *node_count = count;
                *total_fields = u32::try_from(total).unwrap_or(u32::MAX);
            }
            _ => {}
        }
    }

    /// Where the tape stands, to roll back to if a value fails half-way.
    pub(crate) fn mark(&self) -> TapeMark {
        TapeMark {
            nodes: offset(self.nodes.len()),
            text: offset(self.text.len()),
            bytes: offset(self.bytes.len()),
            names: offset(self.names.len()),
            reasons: offset(self.reasons.len()),
        }
    }

    /// Empties the tape and keeps its buffers, for reuse by a later snapshot.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub(crate) fn clear(&mut self) {
        self.nodes.clear();
        self.text.clear();
        self.bytes.clear();
        self.names.clear();
        self.reasons.clear();
        self.roots.clear();
        self.context_roots.clear();
    }

    /// Where the tape's buffers lie, as address ranges, for `capture::warm` to prefetch.
    pub(crate) fn buffer_ranges(&self) -> [std::ops::Range<usize>; TAPE_BUFFERS] {
        fn range<T>(buffer: &[T], capacity: usize) -> std::ops::Range<usize> {
            let start = buffer.as_ptr() as usize;
            start..start + capacity * std::mem::size_of::<T>()
        }
        [
            range(&self.nodes, self.nodes.capacity()),
            range(self.text.as_bytes(), self.text.capacity()),
            range(&self.bytes, self.bytes.capacity()),
            range(&self.names, self.names.capacity()),
            range(&self.reasons, self.reasons.capacity()),
            range(&self.roots, self.roots.capacity()),
            range(&self.context_roots, self.context_roots.capacity()),
        ]
    }

    /// Bytes held by the tape's buffers, used or not.
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.buffer_ranges()
            .iter()
            .map(ExactSizeIterator::len)
            .sum()
    }

    pub(crate) fn rollback(&mut self, mark: TapeMark) {
        self.nodes.truncate(mark.nodes as usize);
        self.text.truncate(mark.text as usize);
        self.bytes.truncate(mark.bytes as usize);
        self.names.truncate(mark.names as usize);
        self.reasons.truncate(mark.reasons as usize);
    }

    fn text_at(&self, start: u32, len: u32) -> &str {
        let start = start as usize;
        self.text
            .get(start..start.saturating_add(len as usize))
            .unwrap_or_default()
    }

    fn name_at(&self, index: u32) -> &'static str {
        self.names.get(index as usize).copied().unwrap_or_default()
    }
}

/// What a string's node says besides its text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StrShape {
    pub truncated: bool,
    pub original_len: u64,
    pub original_len_is_lower_bound: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TapeMark {
    nodes: u32,
    text: u32,
    bytes: u32,
    names: u32,
    reasons: u32,
}

impl TapeMark {
    /// The index of the first node written after the mark: the value that starts there.
    pub(crate) fn node_index(&self) -> u32 {
        self.nodes
    }
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
        /// Declared two elements long: the first may name the second (see [`Node::List`]).
        pair: bool,
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
        let tape = self.tape;
        match self.node() {
            Node::Null | Node::Name(_) | Node::NameText { .. } => ValueKind::Null,
            Node::Bool(b) => ValueKind::Bool(*b),
            Node::Int(i) => ValueKind::Int(*i),
            Node::Uint(u) => ValueKind::Uint(*u),
            Node::Float(f) => ValueKind::Float(*f),
            Node::Str {
                start,
                len,
                truncated,
                original_len_is_lower_bound,
                original_len,
            } => ValueKind::Str {
                text: tape.text_at(*start, *len),
                span: TextSpan {
                    start: *start,
                    len: *len,
                    truncated: *truncated,
                    original_len: *original_len,
                    original_len_is_lower_bound: *original_len_is_lower_bound,
                },
            },
            Node::Bytes {
                start,
                len,
                truncated,
                original_len,
            } => ValueKind::Bytes {
                bytes: tape
                    .bytes
                    .get(*start as usize..(*start as usize).saturating_add(*len as usize))
                    .unwrap_or_default(),
                truncated: *truncated,
                original_len: *original_len,
            },
            Node::List {
                total_len, pair, ..
            } => ValueKind::List {
                total_len: *total_len,
                pair: *pair,
            },
            Node::Map { total_len, .. } => ValueKind::Map {
                total_len: *total_len,
            },
            Node::Struct {
                type_name,
                total_fields,
                ..
            } => ValueKind::Struct {
                type_name: tape.name_at(*type_name),
                total_fields: *total_fields,
            },
            Node::Enum {
                names,
                total_fields,
                ..
            } => ValueKind::Enum {
                type_name: tape.name_at(*names),
                variant: tape.name_at(names.saturating_add(1)),
                total_fields: *total_fields,
            },
            Node::Redacted { reason, .. } => match tape.reasons.get(*reason as usize) {
                Some(reason) => ValueKind::Redacted(reason),
                None => ValueKind::NotCaptured {
                    reason: NotCapturedReason::Error,
                    detail: "withheld",
                },
            },
            Node::NotCaptured { reason, detail } => ValueKind::NotCaptured {
                reason: *reason,
                detail,
            },
            Node::NotCapturedText { reason, start, len } => ValueKind::NotCaptured {
                reason: *reason,
                detail: tape.text_at(*start, *len),
            },
            Node::Unscanned {
                reason,
                start,
                prefix_len,
                ..
            } => ValueKind::NotCaptured {
                reason: *reason,
                detail: tape.text_at(*start, *prefix_len),
            },
        }
    }

    /// A struct field's name, if this node is one.
    pub(crate) fn as_name(&self) -> Option<FieldName> {
        match self.node() {
            Node::Name(name) => Some(Cow::Borrowed(name)),
            Node::NameText { start, len } => {
                Some(Cow::Owned(self.tape.text_at(*start, *len).to_owned()))
            }
            _ => None,
        }
    }

    /// An unscanned `not_captured` ([`Node::Unscanned`]): its reason, prefix, message and
    /// whether the message is whole.
    pub(crate) fn as_unscanned(&self) -> Option<(NotCapturedReason, &'t str, &'t str, bool)> {
        match self.node() {
            Node::Unscanned {
                reason,
                complete,
                start,
                prefix_len,
                len,
            } => Some((
                *reason,
                self.tape.text_at(*start, *prefix_len),
                self.tape.text_at(start.saturating_add(*prefix_len), *len),
                *complete,
            )),
            _ => None,
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
            | Node::Enum { end, .. }
            | Node::Redacted { end, .. } => *end,
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
                Node::Name(name) => (*name, value),
                Node::NameText { start, len } => (name.tape.text_at(*start, *len), value),
                _ => ("", value),
            })
    }

    /// Struct or enum-payload fields with their names as written (`None` where the tape holds
    /// something other than a name).
    pub(crate) fn named_fields(
        &self,
    ) -> impl Iterator<Item = (Option<FieldName>, ValueRef<'t>)> + 't {
        let has_fields = matches!(self.node(), Node::Struct { .. } | Node::Enum { .. });
        Pairs(self.children())
            .filter(move |_| has_fields)
            .map(|(name, value)| (name.as_name(), value))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What a reader of `tape` sees at `index`.
    fn kind_at(tape: &Tape, index: u32) -> Option<ValueKind<'_>> {
        tape.get(index).map(|value| value.kind())
    }

    #[test]
    fn what_lives_beside_the_nodes_reads_back() {
        let mut tape = Tape::default();
        let order = tape.push_struct("Order", 0);
        tape.push_field_name(Cow::Borrowed("id"));
        tape.push(Node::Uint(7));
        tape.push_field_name(Cow::Owned("40".to_owned()));
        let tier = tape.push_enum("Tier", "Gold", 0);
        tape.close(tier, tier + 1, 0, 0);
        tape.push_field_name(Cow::Borrowed("card"));
        let withheld = tape.push_redacted(Reason::from_static("pattern:card-number"));
        tape.push_field_name(Cow::Borrowed("note"));
        let error = tape.push_not_captured(NotCapturedReason::Error, Cow::Owned("bad".into()));
        tape.push_field_name(Cow::Borrowed("payload"));
        let unscanned =
            tape.push_unscanned(NotCapturedReason::Panic, "panicked: ", "token=abc", false);
        let end = tape.next_index();
        tape.close(order, end, 5, 5);

        let value = tape.get(order).expect("order");
        assert_eq!(
            value.kind(),
            ValueKind::Struct {
                type_name: "Order",
                total_fields: 5
            }
        );
        let names: Vec<&str> = value.fields().map(|(name, _)| name).collect();
        assert_eq!(names, ["id", "40", "card", "note", "payload"]);
        assert_eq!(
            value.field("id").map(|v| v.kind()),
            Some(ValueKind::Uint(7))
        );
        assert_eq!(
            kind_at(&tape, tier),
            Some(ValueKind::Enum {
                type_name: "Tier",
                variant: "Gold",
                total_fields: 0
            })
        );
        assert!(matches!(
            kind_at(&tape, withheld),
            Some(ValueKind::Redacted(reason)) if reason.as_str() == "pattern:card-number"
        ));
        assert_eq!(
            kind_at(&tape, error),
            Some(ValueKind::NotCaptured {
                reason: NotCapturedReason::Error,
                detail: "bad"
            })
        );
        // Unscanned text shows only the agent's own prefix; the replay reads the rest.
        assert_eq!(
            kind_at(&tape, unscanned),
            Some(ValueKind::NotCaptured {
                reason: NotCapturedReason::Panic,
                detail: "panicked: "
            })
        );
        assert_eq!(
            tape.get(unscanned).and_then(|v| v.as_unscanned()),
            Some((NotCapturedReason::Panic, "panicked: ", "token=abc", false))
        );
    }

    #[test]
    fn a_rollback_undoes_the_side_tables_too() {
        let mut tape = Tape::default();
        tape.push_struct("Kept", 1);
        let mark = tape.mark();
        tape.push_enum("Gone", "Away", 0);
        tape.push_redacted(Reason::from_static("name:password"));
        tape.push_field_name(Cow::Owned("owned".into()));
        tape.rollback(mark);
        assert_eq!(tape.len(), 1);
        assert_eq!(tape.names, ["Kept"]);
        assert!(tape.reasons.is_empty());
        assert!(tape.text.is_empty());
    }

    #[test]
    fn a_value_withheld_in_place_hides_its_subtree_and_its_siblings_still_read() {
        let mut tape = Tape::default();
        let outer = tape.push_struct("Var", 0);
        tape.push_field_name(Cow::Borrowed("value"));
        let value = tape.push_struct("Inner", 0);
        tape.push_field_name(Cow::Borrowed("secret"));
        tape.push(Node::Uint(4821));
        let end = tape.next_index();
        tape.close(value, end, 1, 1);
        tape.push_field_name(Cow::Borrowed("name"));
        tape.push(Node::Uint(7));
        let end = tape.next_index();
        tape.close(outer, end, 2, 2);

        assert!(tape.withhold_in_place(value, Reason::from_static("name:password")));
        let fields: Vec<_> = tape
            .get(outer)
            .expect("the struct")
            .fields()
            .map(|(name, value)| (name, value.kind()))
            .collect();
        assert_eq!(fields.len(), 2, "{fields:?}");
        assert!(
            matches!(fields[0], ("value", ValueKind::Redacted(reason)) if reason.as_str() == "name:password"),
            "{fields:?}"
        );
        assert_eq!(fields[1], ("name", ValueKind::Uint(7)));
        assert!(
            !tape.withhold_in_place(end, Reason::from_static("x")),
            "past the end"
        );
    }

    #[test]
    fn an_index_past_a_side_table_reads_as_a_marker_not_a_panic() {
        let mut tape = Tape::default();
        let redacted = tape.push(Node::Redacted { reason: 9, end: 1 });
        let nameless = tape.push(Node::Struct {
            end: 2,
            count: 0,
            total_fields: 0,
            type_name: 9,
        });
        assert!(matches!(
            kind_at(&tape, redacted),
            Some(ValueKind::NotCaptured { .. })
        ));
        assert_eq!(
            kind_at(&tape, nameless),
            Some(ValueKind::Struct {
                type_name: "",
                total_fields: 0
            })
        );
    }
}

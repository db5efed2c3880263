//! Decoding a watched value from the target's memory, as `serde::Serialize`, so that it enters
//! the agent's capture like any in-process value: the capture's limits (depth, elements,
//! fields, string bytes, snapshot bytes), redaction (names and values) and conditions apply
//! unchanged, and nothing leaves the sidecar that the in-process agent would withhold.
//!
//! Memory is read lazily, as the capture asks for each value: a struct up to
//! [`BLOCK_BYTES`] is read whole in one `process_vm_readv` and decoded from that copy; larger
//! ones, and whatever a pointer leads to, are read where needed. A value the capture cuts (by
//! depth or count) is therefore never read at all. One snapshot reads at most [`MAX_READS`]
//! times and [`MAX_READ_BYTES`] bytes, and nests at most [`MAX_NESTING`] values deep (a
//! pointer cycle in the target ends there, whatever the serializer allows); past that, values
//! are `not_captured{size}`.
//!
//! Never guessed: a read that fails or comes back short makes that value
//! `not_captured{unreadable}` with the reason, and decoding goes on with its siblings.
//!
//! Never passed off as whole: the decoder's own caps cut what it reads, not what it reports. A
//! list reports its real length (elements past what is read in one block are read only if the
//! capture asks for them), and a struct its real count of fields (those past [`MAX_FIELDS`]
//! counted, not decoded); past what one snapshot walks ([`MAX_LISTED`]) one marker stands for
//! the rest, saying the length is a lower bound. A string cut at [`MAX_STRING_BYTES`] reaches
//! the capture as text longer than the capture scans (formatted, so that the capture marks it
//! truncated with its length a lower bound). A Rust `str` whose bytes are not UTF-8 is handed
//! on as its exact bytes, never with U+FFFD in their place (C strings, which need not be
//! UTF-8, are shown lossily as before).
//!
//! Torn reads: the target keeps running while it is read. One block is one copy by the kernel,
//! but that copy is not atomic against the target's writers, and separate blocks (a struct and
//! what its pointers lead to) are read at separate instants. A watch snapshot is therefore a
//! sample taken without the target's locks: a value that is being updated may show a mix of
//! old and new bytes. Lengths and pointers read from the target are treated as untrusted
//! (bounded, checked) for that reason.

use std::cell::Cell;

use loupe_agent::{CaptureLimits, Uncaptured, UncapturedReason};
use serde::ser::{
    SerializeSeq, SerializeStruct, SerializeStructVariant, SerializeTupleVariant, Serializer,
};

use crate::layout::{Access, Field, Layouts, Node, NodeId, RustVariant, Step};
use crate::target::{ReadFault, Target};

/// A struct up to this size is read in one copy.
pub const BLOCK_BYTES: u64 = 4096;
/// Reads one snapshot may make.
pub const MAX_READS: u32 = 256;
/// Bytes one snapshot may read.
pub const MAX_READ_BYTES: u64 = 1 << 20;
/// What the capture scans of a string at the agent's ceiling
/// ([`CaptureLimits::text_window`]). Text handed on as cut must be longer than this for the
/// capture to take it as not complete: the capture has no way to be told a string was cut,
/// only text longer than its window is marked truncated with its length a lower bound.
pub const CAPTURE_WINDOW: usize = CaptureLimits::DEFAULT_CEILING.text_window();
/// The most bytes of a string read (C or Rust): the capture's window and 4 more, because a
/// cut that splits a UTF-8 character drops up to 3 bytes of it; what is left is still longer
/// than the window, so the capture marks it truncated, its length a lower bound.
pub const MAX_STRING_BYTES: usize = CAPTURE_WINDOW + 4;
/// The most array elements read in one block (the capture's collection limit is lower); the
/// rest are read one by one, only if the capture asks for them.
pub const MAX_ELEMENTS: u64 = 4096;
/// The most list elements and struct fields past the first of each (a list's first
/// [`MAX_ELEMENTS`], a struct's first [`MAX_FIELDS`]) one snapshot walks, all lists and
/// structs together. Those are only counted by the capture (past its own limits), which is
/// cheap but not free: this bounds a snapshot's time whatever the lengths say (a length the
/// target wrote, a DWARF array of absurd size). Each list and struct has its first elements
/// or fields whatever an earlier one spent, so that one huge list does not starve the others;
/// past the budget one marker stands for the rest, and the length counted is a lower bound.
pub const MAX_LISTED: u64 = 1 << 20;
/// The most fields of one struct decoded: no capture on the sidecar's agent shows more (its
/// ceiling), and decoding every member of a struct with tens of thousands, each time a
/// snapshot opens one, is unbounded time. The rest are handed on as markers (the capture only
/// counts them), within [`MAX_LISTED`], so that the count of fields left out is the real one.
pub const MAX_FIELDS: usize = CaptureLimits::DEFAULT_CEILING.max_struct_fields as usize;

/// A field past [`MAX_FIELDS`]: counted, not decoded.
const NOT_WALKED: &str = "not decoded: past the most fields the sidecar decodes";
/// What stands for the rest of a list or struct past the snapshot's [`MAX_LISTED`] (or a list
/// whose next element would lie past the end of the address space).
const LIST_CUT: &str = "not decoded: the rest is past what the sidecar walks in one snapshot; the length counted is a lower bound";

const PAGE: u64 = 4096;

/// Where the target's memory comes from: the live process, or (in tests) a fixed image.
pub trait Memory {
    fn read(&self, address: u64, buf: &mut [u8]) -> Result<(), ReadFault>;
}

impl Memory for Target {
    fn read(&self, address: u64, buf: &mut [u8]) -> Result<(), ReadFault> {
        Target::read(self, address, buf)
    }
}

/// How deeply values may nest while decoding, whatever the serializer allows: a pointer
/// cycle in the target must end in a marker, not in this thread's stack.
pub const MAX_NESTING: u32 = 64;

/// One snapshot's reads: the memory and what is left of its read budget.
pub struct Reads<'m> {
    memory: &'m dyn Memory,
    reads_left: Cell<u32>,
    bytes_left: Cell<u64>,
    nesting: Cell<u32>,
    /// List elements this snapshot may still walk ([`MAX_LISTED`]).
    listed_left: Cell<u64>,
}

/// Holds one level of nesting while a value decodes.
struct Nested<'r>(&'r Cell<u32>);

impl Drop for Nested<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

const TOO_DEEP: &str = "values nest deeper than the sidecar decodes (a pointer cycle?)";

const BUDGET_SPENT: &str = "the sidecar's read budget for one snapshot is spent";

impl<'m> Reads<'m> {
    pub fn new(memory: &'m dyn Memory) -> Reads<'m> {
        Reads {
            memory,
            reads_left: Cell::new(MAX_READS),
            bytes_left: Cell::new(MAX_READ_BYTES),
            nesting: Cell::new(0),
            listed_left: Cell::new(MAX_LISTED),
        }
    }

    /// Takes up to `len` elements or fields from the snapshot's walking budget
    /// ([`MAX_LISTED`]): how many may be walked.
    fn list(&self, len: u64) -> u64 {
        let granted = len.min(self.listed_left.get());
        self.listed_left.set(self.listed_left.get() - granted);
        granted
    }

    /// The fields of a struct past [`MAX_FIELDS`], each with the marker that stands for it:
    /// one per field as far as the snapshot's [`MAX_LISTED`] goes (the capture counts them),
    /// then one [`LIST_CUT`] for the rest.
    fn fields_past_decoded<'f>(
        &self,
        fields: &'f [Field],
    ) -> impl Iterator<Item = (&'static str, Uncaptured)> + use<'f> {
        let rest = fields.get(MAX_FIELDS..).unwrap_or_default();
        let counted = usize::try_from(self.list(rest.len() as u64)).unwrap_or(rest.len());
        let marker = |detail| Uncaptured::new(UncapturedReason::Size, detail);
        let counted_fields = rest[..counted]
            .iter()
            .map(move |field| (field.name, marker(NOT_WALKED)));
        let cut = rest
            .get(counted)
            .map(|field| (field.name, marker(LIST_CUT)));
        counted_fields.chain(cut)
    }

    fn enter(&self) -> Option<Nested<'_>> {
        let depth = self.nesting.get();
        if depth >= MAX_NESTING {
            return None;
        }
        self.nesting.set(depth + 1);
        Some(Nested(&self.nesting))
    }

    fn read(&self, address: u64, len: u64) -> Result<Vec<u8>, Uncaptured> {
        let reads = self.reads_left.get();
        let bytes = self.bytes_left.get();
        if reads == 0 || len > bytes {
            return Err(Uncaptured::new(UncapturedReason::Size, BUDGET_SPENT));
        }
        self.reads_left.set(reads - 1);
        self.bytes_left.set(bytes - len);
        let len = usize::try_from(len)
            .map_err(|_| Uncaptured::new(UncapturedReason::Size, BUDGET_SPENT))?;
        let mut buf = vec![0u8; len];
        self.memory
            .read(address, &mut buf)
            .map_err(|fault| Uncaptured::new(UncapturedReason::Unreadable, fault.detail()))?;
        Ok(buf)
    }

    fn read_u64(&self, address: u64) -> Result<u64, Uncaptured> {
        let bytes = self.read(address, 8)?;
        Ok(u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8])))
    }

    /// A NUL-terminated string at `address`, read page by page so that a string ending just
    /// before an unmapped page is read whole: its bytes, and whether they are all of it (no NUL
    /// within [`MAX_STRING_BYTES`]: cut).
    fn read_cstring(&self, address: u64) -> Result<(Vec<u8>, bool), Uncaptured> {
        let mut out = Vec::new();
        let mut at = address;
        while out.len() < MAX_STRING_BYTES {
            let to_page_end = PAGE - (at % PAGE);
            let want = to_page_end.min((MAX_STRING_BYTES - out.len()) as u64);
            let chunk = self.read(at, want)?;
            if let Some(nul) = chunk.iter().position(|b| *b == 0) {
                out.extend_from_slice(&chunk[..nul]);
                return Ok((out, true));
            }
            out.extend_from_slice(&chunk);
            at = at.saturating_add(want);
        }
        Ok((out, false))
    }
}

/// Text the decoder cut: formatted into the capture, which takes formatted text longer than
/// its window as not complete (marked truncated, its length a lower bound). `serialize_str`
/// would state it whole.
struct CutText<'t>(&'t str);

impl std::fmt::Display for CutText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Text read from the target: whole, or cut by the decoder.
fn serialize_text<S: Serializer>(
    serializer: S,
    text: &str,
    complete: bool,
) -> Result<S::Ok, S::Error> {
    if complete {
        serializer.serialize_str(text)
    } else {
        serializer.collect_str(&CutText(text))
    }
}

/// A Rust `str`'s bytes: text when they are UTF-8 (a cut that splits the last character is
/// cut before it); their exact bytes when they are not, so that nothing shows a character the
/// target never held. Bytes that are not UTF-8 and were cut cannot be handed on as a prefix
/// (the capture would take them as whole): not captured.
fn serialize_rust_str<S: Serializer>(
    serializer: S,
    bytes: &[u8],
    complete: bool,
) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serialize_text(serializer, text, complete),
        Err(error) if !complete && error.error_len().is_none() => {
            let text = std::str::from_utf8(&bytes[..error.valid_up_to()]).unwrap_or_default();
            serialize_text(serializer, text, false)
        }
        Err(_) if complete => serializer.serialize_bytes(bytes),
        Err(_) => serde::Serialize::serialize(
            &Uncaptured::new(
                UncapturedReason::Unreadable,
                "unreadable: a str whose bytes are not UTF-8 (a torn read, or memory that is not a str), longer than the sidecar reads",
            ),
            serializer,
        ),
    }
}

/// The value a watch point reads: its global's address, the steps to the watched member, and
/// the layout to decode it with.
/// Each serialization (one per capture armed on the point) has its own read budget.
pub struct Watched<'a> {
    pub layouts: &'a Layouts,
    pub access: &'a Access,
    pub address: u64,
    pub memory: &'a dyn Memory,
}

impl serde::Serialize for Watched<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let reads = Reads::new(self.memory);
        let mut address = self.address;
        for step in &self.access.steps {
            match step {
                Step::Offset(offset) => address = address.wrapping_add(*offset),
                Step::Deref => match reads.read_u64(address) {
                    Ok(0) => return serializer.serialize_none(),
                    Ok(pointer) => address = pointer,
                    Err(uncaptured) => return serde::Serialize::serialize(&uncaptured, serializer),
                },
            }
        }
        Value {
            layouts: self.layouts,
            node: self.access.node,
            address,
            local: None,
            reads: &reads,
        }
        .serialize(serializer)
    }
}

/// A probe parameter: its bytes as taken at the hit (registers, the stack copied at the
/// trap, or memory read right after), decoded like a watched value; what it points to is read
/// from the target's memory when the capture asks for it.
pub struct Captured<'a> {
    pub layouts: &'a Layouts,
    pub node: NodeId,
    /// The value's bytes and the address they came from (0 when from registers), or why it
    /// is not captured.
    pub bytes: Result<(Vec<u8>, u64), Uncaptured>,
    pub memory: &'a dyn Memory,
}

impl serde::Serialize for Captured<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.bytes {
            Err(uncaptured) => uncaptured.serialize(serializer),
            Ok((bytes, address)) => {
                let reads = Reads::new(self.memory);
                Value {
                    layouts: self.layouts,
                    node: self.node,
                    address: *address,
                    local: Some(bytes),
                    reads: &reads,
                }
                .serialize(serializer)
            }
        }
    }
}

/// One value in the target: where it is, how to decode it, and its bytes if an enclosing
/// block already holds them.
struct Value<'a> {
    layouts: &'a Layouts,
    node: NodeId,
    address: u64,
    local: Option<&'a [u8]>,
    reads: &'a Reads<'a>,
}

impl<'a> Value<'a> {
    fn at<'b>(&'b self, node: NodeId, offset: u64, block: Option<&'b [u8]>) -> Value<'b> {
        let size = self.layouts.size(node);
        let local = block.and_then(|bytes| {
            let start = usize::try_from(offset).ok()?;
            let end = start.checked_add(usize::try_from(size).ok()?)?;
            bytes.get(start..end)
        });
        Value {
            layouts: self.layouts,
            node,
            address: self.address.wrapping_add(offset),
            local,
            reads: self.reads,
        }
    }

    /// This value's bytes: from the enclosing block, or read now.
    fn bytes(&self, len: u64) -> Result<std::borrow::Cow<'_, [u8]>, Uncaptured> {
        match self.local {
            Some(bytes) if bytes.len() as u64 >= len => Ok(std::borrow::Cow::Borrowed(
                &bytes[..usize::try_from(len).unwrap_or(bytes.len())],
            )),
            _ => self
                .reads
                .read(self.address, len)
                .map(std::borrow::Cow::Owned),
        }
    }
}

fn uint(bytes: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    let n = bytes.len().min(8);
    raw[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(raw)
}

fn sign_extend(raw: u64, size: u8) -> i64 {
    let bits = u32::from(size) * 8;
    if bits >= 64 {
        return raw as i64;
    }
    let shift = 64 - bits;
    ((raw << shift) as i64) >> shift
}

impl serde::Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(_nested) = self.reads.enter() else {
            return Uncaptured::new(UncapturedReason::Size, TOO_DEEP).serialize(serializer);
        };
        let layouts = self.layouts;
        let size = layouts.size(self.node);
        macro_rules! bytes_or_not_captured {
            ($len:expr) => {
                match self.bytes($len) {
                    Ok(bytes) => bytes,
                    Err(uncaptured) => return serde::Serialize::serialize(&uncaptured, serializer),
                }
            };
        }
        match layouts.node(self.node) {
            Node::Pending { .. } => Uncaptured::new(
                UncapturedReason::Unsupported,
                "internal: a layout that was never completed",
            )
            .serialize(serializer),
            Node::Int { size, signed } => {
                let raw = uint(&bytes_or_not_captured!(u64::from(*size)));
                if *signed {
                    serializer.serialize_i64(sign_extend(raw, *size))
                } else {
                    serializer.serialize_u64(raw)
                }
            }
            Node::Bool { size } => {
                let raw = uint(&bytes_or_not_captured!(u64::from(*size)));
                serializer.serialize_bool(raw != 0)
            }
            Node::Float { size: 4 } => {
                let raw = uint(&bytes_or_not_captured!(4));
                serializer.serialize_f32(f32::from_bits(raw as u32))
            }
            Node::Float { .. } => {
                let raw = uint(&bytes_or_not_captured!(8));
                serializer.serialize_f64(f64::from_bits(raw))
            }
            Node::Char32 => {
                let raw = uint(&bytes_or_not_captured!(4));
                match char::from_u32(raw as u32) {
                    Some(c) => serializer.serialize_char(c),
                    None => serializer.serialize_u32(raw as u32),
                }
            }
            Node::Enum {
                name,
                size,
                signed,
                variants,
            } => {
                let raw = uint(&bytes_or_not_captured!(u64::from(*size)));
                match variants.iter().position(|(value, _)| *value == raw) {
                    Some(index) => serializer.serialize_unit_variant(
                        name,
                        u32::try_from(index).unwrap_or(u32::MAX),
                        variants[index].1,
                    ),
                    None if *signed => serializer.serialize_i64(sign_extend(raw, *size)),
                    None => serializer.serialize_u64(raw),
                }
            }
            Node::Address => {
                let raw = uint(&bytes_or_not_captured!(8));
                serializer.serialize_u64(raw)
            }
            Node::Pointer { target } => {
                let pointer = uint(&bytes_or_not_captured!(8));
                if pointer == 0 {
                    return serializer.serialize_none();
                }
                serializer.serialize_some(&Value {
                    layouts,
                    node: *target,
                    address: pointer,
                    local: None,
                    reads: self.reads,
                })
            }
            Node::CString => {
                let pointer = uint(&bytes_or_not_captured!(8));
                if pointer == 0 {
                    return serializer.serialize_none();
                }
                match self.reads.read_cstring(pointer) {
                    Ok((bytes, complete)) => {
                        serialize_text(serializer, &String::from_utf8_lossy(&bytes), complete)
                    }
                    Err(uncaptured) => uncaptured.serialize(serializer),
                }
            }
            Node::CharArray { len } => {
                let read = (*len).min(MAX_STRING_BYTES as u64);
                let bytes = bytes_or_not_captured!(read);
                let (end, complete) = match bytes.iter().position(|b| *b == 0) {
                    Some(nul) => (nul, true),
                    None => (bytes.len(), read == *len),
                };
                serialize_text(
                    serializer,
                    &String::from_utf8_lossy(&bytes[..end]),
                    complete,
                )
            }
            Node::Struct { name, fields, .. } => {
                let block = if self.local.is_none() && size <= BLOCK_BYTES {
                    match self.reads.read(self.address, size) {
                        Ok(bytes) => Some(bytes),
                        Err(uncaptured) => {
                            return serde::Serialize::serialize(&uncaptured, serializer);
                        }
                    }
                } else {
                    None
                };
                let local = block.as_deref().or(self.local);
                let mut out = serializer.serialize_struct(name, fields.len())?;
                for field in fields.iter().take(MAX_FIELDS) {
                    let value = self.at(field.node, field.offset, local);
                    out.serialize_field(field.name, &value)?;
                }
                for (name, marker) in self.reads.fields_past_decoded(fields) {
                    out.serialize_field(name, &marker)?;
                }
                out.end()
            }
            Node::Array {
                element,
                count,
                stride,
            } => {
                let items = Value {
                    layouts,
                    node: *element,
                    address: self.address,
                    local: self.local,
                    reads: self.reads,
                };
                items.elements(serializer, *count, *element, *stride)
            }
            Node::Shared {
                pointer,
                data,
                target,
                ..
            } => {
                let at = self.at_size(*pointer, 8);
                let pointer = match at.bytes(8) {
                    Ok(bytes) => uint(&bytes),
                    Err(uncaptured) => return serde::Serialize::serialize(&uncaptured, serializer),
                };
                if pointer == 0 {
                    return serializer.serialize_none();
                }
                serializer.serialize_some(&Value {
                    layouts,
                    node: *target,
                    address: pointer.wrapping_add(*data),
                    local: None,
                    reads: self.reads,
                })
            }
            Node::RustStr { ptr, len, .. } => {
                let (pointer, len) = match self.pointer_and_len(*ptr, *len) {
                    Ok(found) => found,
                    Err(uncaptured) => return serde::Serialize::serialize(&uncaptured, serializer),
                };
                if len == 0 {
                    return serializer.serialize_str("");
                }
                let shown = len.min(MAX_STRING_BYTES as u64);
                match self.reads.read(pointer, shown) {
                    Ok(bytes) => serialize_rust_str(serializer, &bytes, shown == len),
                    Err(uncaptured) => uncaptured.serialize(serializer),
                }
            }
            Node::RustVec {
                ptr,
                len,
                element,
                stride,
                ..
            } => {
                let (pointer, len) = match self.pointer_and_len(*ptr, *len) {
                    Ok(found) => found,
                    Err(uncaptured) => return serde::Serialize::serialize(&uncaptured, serializer),
                };
                let items = Value {
                    layouts,
                    node: *element,
                    address: pointer,
                    local: None,
                    reads: self.reads,
                };
                items.elements(serializer, len, *element, *stride)
            }
            Node::RustEnum {
                name,
                discr,
                variants,
                is_option,
                ..
            } => {
                let block = if self.local.is_none() && size <= BLOCK_BYTES {
                    match self.reads.read(self.address, size) {
                        Ok(bytes) => Some(bytes),
                        Err(uncaptured) => {
                            return serde::Serialize::serialize(&uncaptured, serializer);
                        }
                    }
                } else {
                    None
                };
                let local = block.as_deref().or(self.local);
                let this = Value {
                    layouts,
                    node: self.node,
                    address: self.address,
                    local,
                    reads: self.reads,
                };
                let raw = match discr {
                    None => None,
                    Some((offset, discr_size)) => {
                        let at = this.at_size(*offset, u64::from(*discr_size));
                        match at.bytes(u64::from(*discr_size)) {
                            Ok(bytes) => Some(uint(&bytes)),
                            Err(uncaptured) => {
                                return serde::Serialize::serialize(&uncaptured, serializer);
                            }
                        }
                    }
                };
                let chosen = variants
                    .iter()
                    .position(|v| v.discr.is_some() && v.discr == raw)
                    .or_else(|| variants.iter().position(|v| v.discr.is_none()));
                let Some(index) = chosen else {
                    return Uncaptured::new(
                        UncapturedReason::Unreadable,
                        "unreadable: the enum's discriminant matches no variant (a torn read, or memory that is not this type)",
                    )
                    .serialize(serializer);
                };
                this.variant(serializer, name, index, &variants[index], *is_option)
            }
            Node::Unsupported { detail, .. } => {
                Uncaptured::new(UncapturedReason::Unsupported, detail).serialize(serializer)
            }
        }
    }
}

impl<'a> Value<'a> {
    /// A view of `len` bytes at `offset` inside this value, for a scalar that is not a node.
    fn at_size(&self, offset: u64, len: u64) -> Value<'_> {
        let local = self.local.and_then(|bytes| {
            let start = usize::try_from(offset).ok()?;
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            bytes.get(start..end)
        });
        Value {
            layouts: self.layouts,
            node: self.node,
            address: self.address.wrapping_add(offset),
            local,
            reads: self.reads,
        }
    }

    /// The data pointer and length of a `String`, `&str`, `Vec` or slice. A length is only a
    /// number the target wrote: it bounds nothing until it is capped where it is used.
    fn pointer_and_len(&self, ptr: u64, len: u64) -> Result<(u64, u64), Uncaptured> {
        let pointer = uint(&self.at_size(ptr, 8).bytes(8)?);
        let len = uint(&self.at_size(len, 8).bytes(8)?);
        if pointer == 0 && len != 0 {
            return Err(Uncaptured::new(
                UncapturedReason::Unreadable,
                "unreadable: a null data pointer with a non-zero length (a torn read?)",
            ));
        }
        Ok((pointer, len))
    }

    /// `len` elements of `element` starting at this value's address, `stride` apart. The first
    /// [`MAX_ELEMENTS`] are read in one block when they fit; the others are read one by one,
    /// only if the serializer asks for them (the capture only counts those past its limit),
    /// so that the list's length is the real one. Past the snapshot's [`MAX_LISTED`] one
    /// marker stands for the rest.
    fn elements<S: Serializer>(
        &self,
        serializer: S,
        len: u64,
        element: NodeId,
        stride: u64,
    ) -> Result<S::Ok, S::Error> {
        let shown = len.min(MAX_ELEMENTS);
        let span = shown.saturating_mul(stride);
        let block = if self.local.is_none() && span > 0 && span <= BLOCK_BYTES * 16 {
            match self.reads.read(self.address, span) {
                Ok(bytes) => Some(bytes),
                Err(uncaptured) => return serde::Serialize::serialize(&uncaptured, serializer),
            }
        } else {
            None
        };
        let local = block.as_deref().or(self.local);
        let base = Value {
            layouts: self.layouts,
            node: self.node,
            address: self.address,
            local,
            reads: self.reads,
        };
        // The first MAX_ELEMENTS are every list's own; only the tail is charged to the
        // snapshot's budget.
        let listed = shown + self.reads.list(len - shown);
        let cut = || Uncaptured::new(UncapturedReason::Size, LIST_CUT);
        let marker = u64::from(listed < len);
        let mut out = serializer
            .serialize_seq(Some(usize::try_from(listed + marker).unwrap_or(usize::MAX)))?;
        for index in 0..listed {
            // An element past the end of the address space: the list ends there, marked.
            let Some(offset) = index.checked_mul(stride) else {
                out.serialize_element(&cut())?;
                return out.end();
            };
            out.serialize_element(&base.at(element, offset, local))?;
        }
        if marker == 1 {
            out.serialize_element(&cut())?;
        }
        out.end()
    }

    /// A Rust enum's chosen variant: `Option` as null or its value, a unit variant by name,
    /// tuple and struct variants with their fields.
    fn variant<S: Serializer>(
        &self,
        serializer: S,
        enum_name: &'static str,
        index: usize,
        variant: &RustVariant,
        is_option: bool,
    ) -> Result<S::Ok, S::Error> {
        let fields: &[Field] = match self.layouts.node(variant.fields) {
            Node::Struct { fields, .. } => fields,
            _ => &[],
        };
        let field_value = |field: &Field| {
            self.at(
                field.node,
                variant.offset.saturating_add(field.offset),
                self.local,
            )
        };
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        if is_option {
            return match fields.first() {
                Some(field) if variant.name == "Some" => {
                    serializer.serialize_some(&field_value(field))
                }
                _ => serializer.serialize_none(),
            };
        }
        if fields.is_empty() {
            return serializer.serialize_unit_variant(enum_name, index, variant.name);
        }
        if fields.iter().all(|f| f.name.starts_with("__")) {
            let mut out =
                serializer.serialize_tuple_variant(enum_name, index, variant.name, fields.len())?;
            for field in fields.iter().take(MAX_FIELDS) {
                out.serialize_field(&field_value(field))?;
            }
            for (_, marker) in self.reads.fields_past_decoded(fields) {
                out.serialize_field(&marker)?;
            }
            return out.end();
        }
        let mut out =
            serializer.serialize_struct_variant(enum_name, index, variant.name, fields.len())?;
        for field in fields.iter().take(MAX_FIELDS) {
            out.serialize_field(field.name, &field_value(field))?;
        }
        for (name, marker) in self.reads.fields_past_decoded(fields) {
            out.serialize_field(name, &marker)?;
        }
        out.end()
    }
}

#[cfg(test)]
mod tests {
    //! What the target's memory can do to the decoder: every hostile or torn value becomes a
    //! marked `not_captured`, bounded, never a panic or a guess. Memory is a fake here (the
    //! module's own logic); the real reads are tested against live processes.

    use std::collections::BTreeMap;

    use super::*;
    use crate::layout::{Field, RustVariant};

    /// Regions of bytes at addresses; everything else is unmapped.
    #[derive(Default)]
    struct FakeMemory(BTreeMap<u64, Vec<u8>>);

    impl Memory for FakeMemory {
        fn read(&self, address: u64, buf: &mut [u8]) -> Result<(), ReadFault> {
            let Some((start, bytes)) = self.0.range(..=address).next_back() else {
                return Err(ReadFault::Unmapped);
            };
            let offset = usize::try_from(address - start).map_err(|_| ReadFault::Unmapped)?;
            if offset >= bytes.len() {
                return Err(ReadFault::Unmapped);
            }
            let available = &bytes[offset..];
            if available.len() < buf.len() {
                return Err(ReadFault::Partial);
            }
            buf.copy_from_slice(&available[..buf.len()]);
            Ok(())
        }
    }

    fn decode(layouts: &Layouts, node: NodeId, address: u64, memory: &FakeMemory) -> String {
        let access = Access {
            steps: Vec::new(),
            node,
        };
        let watched = Watched {
            layouts,
            access: &access,
            address,
            memory,
        };
        serde_json::to_string(&watched).expect("serializes")
    }

    fn le(values: &[u64]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn a_struct_running_into_unmapped_memory_is_unreadable_not_half_read() {
        let mut layouts = Layouts::default();
        let int = layouts.push(Node::Int {
            size: 8,
            signed: false,
        });
        let pair = layouts.push(Node::Struct {
            name: "pair",
            size: 16,
            fields: vec![
                Field {
                    name: "a",
                    offset: 0,
                    node: int,
                },
                Field {
                    name: "b",
                    offset: 8,
                    node: int,
                },
            ]
            .into(),
        });
        let mut memory = FakeMemory::default();
        memory.0.insert(0x1000, le(&[7]));
        let text = decode(&layouts, pair, 0x1000, &memory);
        assert!(text.contains("partial read"), "{text}");
        assert!(!text.contains('7'), "no half value: {text}");
        memory.0.insert(0x1000, le(&[7, 9]));
        assert_eq!(decode(&layouts, pair, 0x1000, &memory), r#"{"a":7,"b":9}"#);
    }

    #[test]
    fn hostile_lengths_and_pointers_are_bounded_and_marked() {
        let mut layouts = Layouts::default();
        let byte = layouts.push(Node::Int {
            size: 1,
            signed: false,
        });
        let string = layouts.push(Node::RustStr {
            ptr: 0,
            len: 8,
            size: 16,
        });
        let vec = layouts.push(Node::RustVec {
            ptr: 0,
            len: 8,
            element: byte,
            stride: 1,
            size: 16,
        });
        let mut memory = FakeMemory::default();
        // A length of 2^60 over a short buffer: the read is capped, and the cap runs into
        // unmapped memory, so the value is unreadable rather than a short guess.
        memory.0.insert(0x1000, le(&[0x2000, 1 << 60]));
        memory.0.insert(0x2000, b"hello".to_vec());
        let text = decode(&layouts, string, 0x1000, &memory);
        assert!(text.contains("unreadable"), "{text}");
        let text = decode(&layouts, vec, 0x1000, &memory);
        assert!(text.contains("unreadable"), "{text}");
        // A null data pointer with a length is a torn value.
        memory.0.insert(0x3000, le(&[0, 5]));
        let text = decode(&layouts, string, 0x3000, &memory);
        assert!(text.contains("null data pointer"), "{text}");
        // An honest one.
        memory.0.insert(0x4000, le(&[0x2000, 5]));
        assert_eq!(decode(&layouts, string, 0x4000, &memory), r#""hello""#);
    }

    #[test]
    fn a_discriminant_no_variant_claims_is_unreadable() {
        let mut layouts = Layouts::default();
        let empty = layouts.push(Node::Struct {
            name: "Unit",
            size: 0,
            fields: Vec::new().into(),
        });
        let variant = |name, discr| RustVariant {
            name,
            discr: Some(discr),
            offset: 0,
            fields: empty,
        };
        let tier = layouts.push(Node::RustEnum {
            name: "Tier",
            size: 8,
            discr: Some((0, 8)),
            variants: vec![variant("Free", 0), variant("Pro", 1)].into(),
            is_option: false,
        });
        let mut memory = FakeMemory::default();
        memory.0.insert(0x1000, le(&[1]));
        assert_eq!(decode(&layouts, tier, 0x1000, &memory), r#""Pro""#);
        memory.0.insert(0x1000, le(&[0xdead]));
        let text = decode(&layouts, tier, 0x1000, &memory);
        assert!(text.contains("matches no variant"), "{text}");
    }

    #[test]
    fn a_pointer_cycle_is_bounded_by_the_read_budget() {
        let mut layouts = Layouts::default();
        // struct node { struct node *next; }, whose next points at itself.
        let node = layouts.push(Node::Pending { size: 8 });
        let pointer = layouts.push(Node::Pointer { target: node });
        layouts.nodes_mut_for_test()[node] = Node::Struct {
            name: "node",
            size: 8,
            fields: vec![Field {
                name: "next",
                offset: 0,
                node: pointer,
            }]
            .into(),
        };
        let mut memory = FakeMemory::default();
        memory.0.insert(0x1000, le(&[0x1000]));
        // serde_json has no depth limit of its own (the capture's applies first in a real
        // snapshot); the decoder's own bound ends the walk, with a marker.
        let text = decode(&layouts, node, 0x1000, &memory);
        assert!(text.contains(TOO_DEEP), "{}", &text[text.len() - 200..]);
    }

    #[test]
    fn the_decoders_caps_cut_what_is_read_not_the_lengths_reported() {
        let mut layouts = Layouts::default();
        let byte = layouts.push(Node::Int {
            size: 1,
            signed: false,
        });
        let array = layouts.push(Node::Array {
            element: byte,
            count: 5000,
            stride: 1,
        });
        let mut memory = FakeMemory::default();
        memory.0.insert(0x10_000, vec![7; 5000]);
        // Every element is listed (past the read budget, as markers): the length is the real
        // one, not the block read at once.
        let text = decode(&layouts, array, 0x10_000, &memory);
        let list: Vec<serde_json::Value> = serde_json::from_str(&text).expect("a list");
        assert_eq!(list.len(), 5000);
        assert_eq!(list[0], 7);
        assert_eq!(list[4095], 7);

        // A struct wider than any capture shows: cut, one marker standing for the rest.
        let fields = (0..MAX_FIELDS + 50)
            .map(|i| Field {
                name: crate::layout::tests_intern(&format!("f{i}")),
                offset: 0,
                node: byte,
            })
            .collect();
        let wide = layouts.push(Node::Struct {
            name: "wide",
            size: 1,
            fields,
        });
        let text = decode(&layouts, wide, 0x10_000, &memory);
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).expect("an object");
        // Every field is counted, the ones past MAX_FIELDS as markers: the count is the real
        // one.
        assert_eq!(object.len(), MAX_FIELDS + 50);
        assert_eq!(object["f0"], 7);
        assert_eq!(object[&format!("f{MAX_FIELDS}")], NOT_WALKED);
        assert_eq!(object[&format!("f{}", MAX_FIELDS + 49)], NOT_WALKED);
    }

    #[test]
    fn one_huge_list_does_not_starve_the_lists_and_structs_after_it() {
        let mut layouts = Layouts::default();
        let byte = layouts.push(Node::Int {
            size: 1,
            signed: false,
        });
        let int = layouts.push(Node::Int {
            size: 4,
            signed: true,
        });
        // Elements that cost nothing to show, so that the test's JSON stays small.
        let cheap = layouts.push(Node::Unsupported {
            detail: "u",
            size: 1,
        });
        let big_len = 2_000_000;
        let big = layouts.push(Node::Array {
            element: cheap,
            count: big_len,
            stride: 1,
        });
        let small = layouts.push(Node::Array {
            element: int,
            count: 3,
            stride: 4,
        });
        let fields = (0..MAX_FIELDS + 10)
            .map(|i| Field {
                name: crate::layout::tests_intern(&format!("f{i}")),
                offset: 0,
                node: byte,
            })
            .collect();
        let wide = layouts.push(Node::Struct {
            name: "wide",
            size: 1,
            fields,
        });
        let field = |name, offset, node| Field { name, offset, node };
        let outer = layouts.push(Node::Struct {
            name: "outer",
            size: big_len + 13,
            fields: vec![
                field("big", 0, big),
                field("small", big_len, small),
                field("wide", big_len + 12, wide),
            ]
            .into(),
        });
        let mut bytes = vec![0; usize::try_from(big_len + 13).expect("fits")];
        bytes[usize::try_from(big_len).expect("fits")..][..12]
            .copy_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]);
        let mut memory = FakeMemory::default();
        memory.0.insert(0x10_000, bytes);
        let text = decode(&layouts, outer, 0x10_000, &memory);
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(value["small"], serde_json::json!([1, 2, 3]));
        // The huge list: its first MAX_ELEMENTS and the budget walked, then a marker saying
        // its length is a lower bound.
        let big = value["big"].as_array().expect("a list");
        assert_eq!(big.len() as u64, MAX_ELEMENTS + MAX_LISTED + 1);
        assert_eq!(big[big.len() - 1], LIST_CUT);
        // The struct after it, the budget spent: its decoded fields, then one marker saying
        // the count is a lower bound.
        let wide = value["wide"].as_object().expect("a struct");
        assert_eq!(wide.len(), MAX_FIELDS + 1);
        assert_eq!(wide[&format!("f{MAX_FIELDS}")], LIST_CUT);
    }

    #[test]
    fn an_element_past_the_end_of_the_address_space_ends_its_list_marked() {
        let mut layouts = Layouts::default();
        let cheap = layouts.push(Node::Unsupported {
            detail: "u",
            size: 1,
        });
        let array = layouts.push(Node::Array {
            element: cheap,
            count: 4,
            stride: 1 << 63,
        });
        let memory = FakeMemory::default();
        let text = decode(&layouts, array, 0x1000, &memory);
        let list: Vec<serde_json::Value> = serde_json::from_str(&text).expect("a list");
        assert_eq!(
            list,
            vec!["u".into(), "u".into(), serde_json::Value::from(LIST_CUT)]
        );
    }

    /// The capture takes text as cut only when it is longer than its window: a Rust `str` cut
    /// inside a multibyte character, trimmed to its last whole one, must still be.
    #[test]
    fn a_str_cut_inside_a_character_is_still_longer_than_the_captures_window() {
        let mut layouts = Layouts::default();
        let string = layouts.push(Node::RustStr {
            ptr: 0,
            len: 8,
            size: 16,
        });
        for character in ['д', '€', '😀'] {
            for prefix in 0..4 {
                let mut text = "a".repeat(prefix);
                while text.len() < 20_000 {
                    text.push(character);
                }
                let mut memory = FakeMemory::default();
                memory.0.insert(0x1000, le(&[0x10_000, text.len() as u64]));
                memory.0.insert(0x10_000, text.into_bytes());
                let json = decode(&layouts, string, 0x1000, &memory);
                let shown: String = serde_json::from_str(&json).expect("text");
                assert!(
                    shown.len() > CAPTURE_WINDOW,
                    "{character:?} after {prefix} bytes: {} bytes handed on, which the capture \
                     would take as the whole string",
                    shown.len()
                );
            }
        }
    }

    #[test]
    fn a_str_is_text_bytes_or_not_captured_never_replaced() {
        let mut layouts = Layouts::default();
        let string = layouts.push(Node::RustStr {
            ptr: 0,
            len: 8,
            size: 16,
        });
        let mut memory = FakeMemory::default();
        // Longer than the decoder reads: the text it holds is all of its read.
        memory.0.insert(0x1000, le(&[0x10_000, 20_000]));
        memory.0.insert(0x10_000, vec![b'a'; 20_000]);
        let text = decode(&layouts, string, 0x1000, &memory);
        assert_eq!(text.len(), MAX_STRING_BYTES + 2, "{}", &text[..20]);
        // Not UTF-8, whole: its exact bytes.
        memory.0.insert(0x2000, le(&[0x20_000, 3]));
        memory.0.insert(0x20_000, vec![0xff, 0xfe, b'A']);
        assert_eq!(decode(&layouts, string, 0x2000, &memory), "[255,254,65]");
        // Not UTF-8, and cut: no prefix can be handed on as whole.
        memory.0.insert(0x3000, le(&[0x30_000, 20_000]));
        memory.0.insert(0x30_000, vec![0xff; 20_000]);
        let text = decode(&layouts, string, 0x3000, &memory);
        assert!(text.contains("not UTF-8"), "{text}");
        assert!(!text.contains('\u{fffd}'), "{text}");
    }
}

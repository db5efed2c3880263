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
//! Torn reads: the target keeps running while it is read. One block is one copy by the kernel,
//! but that copy is not atomic against the target's writers, and separate blocks (a struct and
//! what its pointers lead to) are read at separate instants. A watch snapshot is therefore a
//! sample taken without the target's locks: a value that is being updated may show a mix of
//! old and new bytes. Lengths and pointers read from the target are treated as untrusted
//! (bounded, checked) for that reason.

use std::cell::Cell;

use loupe_agent::{Uncaptured, UncapturedReason};
use serde::ser::{
    Error as _, SerializeSeq, SerializeStruct, SerializeStructVariant, SerializeTupleVariant,
    Serializer,
};

use crate::layout::{Access, Field, Layouts, Node, NodeId, RustVariant, Step};
use crate::target::{ReadFault, Target};

/// A struct up to this size is read in one copy.
pub const BLOCK_BYTES: u64 = 4096;
/// Reads one snapshot may make.
pub const MAX_READS: u32 = 256;
/// Bytes one snapshot may read.
pub const MAX_READ_BYTES: u64 = 1 << 20;
/// The most bytes of a C string read (the capture keeps fewer; the rest is marked truncated).
pub const MAX_CSTRING_BYTES: usize = 4096;
/// The most array elements decoded (the capture's collection limit is lower).
pub const MAX_ELEMENTS: u64 = 4096;

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
        }
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
    /// before an unmapped page is read whole.
    fn read_cstring(&self, address: u64) -> Result<Vec<u8>, Uncaptured> {
        let mut out = Vec::new();
        let mut at = address;
        while out.len() < MAX_CSTRING_BYTES {
            let to_page_end = PAGE - (at % PAGE);
            let want = to_page_end.min((MAX_CSTRING_BYTES - out.len()) as u64);
            let chunk = self.read(at, want)?;
            if let Some(nul) = chunk.iter().position(|b| *b == 0) {
                out.extend_from_slice(&chunk[..nul]);
                return Ok(out);
            }
            out.extend_from_slice(&chunk);
            at = at.saturating_add(want);
        }
        Ok(out)
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
                    Ok(bytes) => serializer.serialize_str(&String::from_utf8_lossy(&bytes)),
                    Err(uncaptured) => uncaptured.serialize(serializer),
                }
            }
            Node::CharArray { len } => {
                let bytes = bytes_or_not_captured!((*len).min(MAX_CSTRING_BYTES as u64));
                let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
                serializer.serialize_str(&String::from_utf8_lossy(&bytes[..end]))
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
                for field in fields {
                    let value = self.at(field.node, field.offset, local);
                    out.serialize_field(field.name, &value)?;
                }
                out.end()
            }
            Node::Array {
                element,
                count,
                stride,
            } => {
                let shown = (*count).min(MAX_ELEMENTS);
                let span = shown.saturating_mul(*stride);
                let block = if self.local.is_none() && span <= BLOCK_BYTES * 16 {
                    match self.reads.read(self.address, span) {
                        Ok(bytes) => Some(bytes),
                        Err(uncaptured) => {
                            return serde::Serialize::serialize(&uncaptured, serializer);
                        }
                    }
                } else {
                    None
                };
                let local = block.as_deref().or(self.local);
                let mut out = serializer
                    .serialize_seq(Some(usize::try_from(*count).unwrap_or(usize::MAX)))?;
                for index in 0..shown {
                    let offset = index
                        .checked_mul(*stride)
                        .ok_or_else(|| S::Error::custom("array offset overflows"))?;
                    out.serialize_element(&self.at(*element, offset, local))?;
                }
                out.end()
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
                let shown = len.min(MAX_CSTRING_BYTES as u64);
                match self.reads.read(pointer, shown) {
                    Ok(bytes) => serializer.serialize_str(&String::from_utf8_lossy(&bytes)),
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

    /// `len` elements of `element` starting at this value's address, `stride` apart; at most
    /// [`MAX_ELEMENTS`] are read, in one block when they fit.
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
        let mut out = serializer.serialize_seq(Some(usize::try_from(len).unwrap_or(usize::MAX)))?;
        for index in 0..shown {
            let offset = index
                .checked_mul(stride)
                .ok_or_else(|| S::Error::custom("element offset overflows"))?;
            out.serialize_element(&base.at(element, offset, local))?;
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
            for field in fields {
                out.serialize_field(&field_value(field))?;
            }
            return out.end();
        }
        let mut out =
            serializer.serialize_struct_variant(enum_name, index, variant.name, fields.len())?;
        for field in fields {
            out.serialize_field(field.name, &field_value(field))?;
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
            ],
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
            fields: Vec::new(),
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
            variants: vec![variant("Free", 0), variant("Pro", 1)],
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
            }],
        };
        let mut memory = FakeMemory::default();
        memory.0.insert(0x1000, le(&[0x1000]));
        // serde_json has no depth limit of its own (the capture's applies first in a real
        // snapshot); the decoder's own bound ends the walk, with a marker.
        let text = decode(&layouts, node, 0x1000, &memory);
        assert!(text.contains(TOO_DEEP), "{}", &text[text.len() - 200..]);
    }
}

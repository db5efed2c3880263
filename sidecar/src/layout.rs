//! Layout plans: a watched global's type, compiled once from DWARF into a small graph of nodes
//! the decoder walks with no DIE parsing per snapshot.
//!
//! What is decoded: base types (integers, `bool`, `float`/`double`, C `char` as its number, Rust
//! `char`), C enums (by enumerator, the number when none matches), pointers (followed; null is
//! `null`), `char *` (a NUL-terminated string, bounded), `char[N]` (the string up to its first
//! NUL; only plain `char` is text, `unsigned char`/`uint8_t` arrays are lists of numbers), structs and classes (members in DWARF order), fixed-size arrays. What is reported as
//! `not_captured{unsupported}` rather than guessed: unions (which member is live is unknowable),
//! bitfields, Rust enums and other `DW_TAG_variant_part` shapes, arrays of unknown length,
//! `long double`, incomplete types. `void *` and function pointers show their address.
//!
//! Rust: `String` and `&str` as text, `Vec<T>` (its element type from the `T` template
//! parameter: the buffer's pointer is type-erased to `u8`) and `&[T]` as lists, enums with
//! `DW_TAG_variant_part` (tagged and niche-encoded alike: the variant without a discriminant
//! value takes every value no other claims) as enum values, `Option<T>` as the value or null
//! (as serde shows it), and `UnsafeCell`, `Cell`, `ManuallyDrop` and atomics as the value they
//! wrap. `Box<T>` is a pointer and is followed; `Arc<T>` and `Rc<T>` are followed to the
//! shared `T` (the reference counts are not shown, as serde does not show them). A `Mutex` is a struct: watch its `data` member
//! (read without the lock, see `crate::decode`).
//!
//! Typedefs and cv-qualifiers cost nothing: they resolve to the type they name (an anonymous
//! struct takes the typedef's name). Recursive types (a linked list) are one node that points
//! back at itself; the capture's depth limit bounds how far a snapshot follows it.
//!
//! The DWARF is untrusted input, so compiling is bounded by the compiler, not by the file: a
//! pointer's target is compiled later, from a work list, not by recursing into it (a chain of
//! 100 000 pointer types must not take 100 000 stack frames), members, typedefs and array
//! dimensions count against [`MAX_NESTING`], and offsets are added with checked arithmetic. An
//! offset that is not understood or overflows makes that value `not_captured`, never read at
//! a guessed place.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use gimli::AttributeValue;

use crate::dwarf::{Debug, Die, DieRef, DwarfError};

/// Index of a node in [`Layouts`].
pub type NodeId = usize;

/// Types nested deeper than this (through members, typedefs and array dimensions, not
/// pointers) are refused.
const MAX_NESTING: usize = 64;

/// Why a member or variant cannot be placed: its offset in DWARF overflows.
const OFFSET_OVERFLOWS: &str = "a member at an offset that overflows";

/// How to decode one type. Its lists are shared, not owned, so that a node copied for a
/// transparent wrapper (`Cell<T>` is decoded as its `T`) costs the same whatever `T` holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Reserved while its own members are compiled (a type that contains a pointer to itself).
    Pending {
        size: u64,
    },
    Int {
        size: u8,
        signed: bool,
    },
    Bool {
        size: u8,
    },
    Float {
        size: u8,
    },
    /// A Rust `char`: a Unicode scalar value in 4 bytes.
    Char32,
    Enum {
        name: &'static str,
        size: u8,
        signed: bool,
        /// (raw value as stored, masked to `size`, enumerator name).
        variants: Arc<[(u64, &'static str)]>,
    },
    /// A pointer that is followed; `target` is what it points at.
    Pointer {
        target: NodeId,
    },
    /// A pointer whose target is not decoded (`void *`, a function): its address.
    Address,
    /// `char *`: a NUL-terminated string.
    CString,
    /// `char[len]`: a string up to the first NUL inside the array.
    CharArray {
        len: u64,
    },
    Struct {
        name: &'static str,
        size: u64,
        fields: Arc<[Field]>,
    },
    Array {
        element: NodeId,
        count: u64,
        stride: u64,
    },
    /// Rust `String` and `&str`: UTF-8 bytes at the pointer at `ptr`, `len` of them.
    RustStr {
        ptr: u64,
        len: u64,
        size: u64,
    },
    /// Rust `Vec<T>` and `&[T]`: `len` elements at the pointer at `ptr`.
    RustVec {
        ptr: u64,
        len: u64,
        element: NodeId,
        stride: u64,
        size: u64,
    },
    /// Rust `Arc<T>` and `Rc<T>`: the pointer at `pointer` leads to the shared allocation,
    /// whose `T` is `data` bytes past where it points (after the reference counts).
    Shared {
        pointer: u64,
        data: u64,
        target: NodeId,
        size: u64,
    },
    /// A Rust enum (`DW_TAG_variant_part`): the discriminant picks the variant; a variant
    /// without a discriminant value is the one every other value (a niche) means.
    RustEnum {
        name: &'static str,
        size: u64,
        /// Offset and size of the discriminant; `None` for an enum of one variant.
        discr: Option<(u64, u8)>,
        variants: Arc<[RustVariant]>,
        /// `Option<T>`: `None` is null and `Some(x)` is `x`, as serde shows it.
        is_option: bool,
    },
    Unsupported {
        detail: &'static str,
        size: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RustVariant {
    pub name: &'static str,
    /// The discriminant value, masked to its size; `None` for the default (niche) variant.
    pub discr: Option<u64>,
    /// Where the variant's fields start, and their layout (a struct node).
    pub offset: u64,
    pub fields: NodeId,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: &'static str,
    pub offset: u64,
    pub node: NodeId,
}

/// Every node compiled for a sidecar's points; shared by them (a type used by two points is
/// compiled once).
#[derive(Debug, Default)]
pub struct Layouts {
    nodes: Vec<Node>,
}

impl Layouts {
    pub fn node(&self, id: NodeId) -> &Node {
        // Ids only come from this arena, which never shrinks.
        self.nodes.get(id).unwrap_or(&Node::Unsupported {
            detail: "internal: unknown layout node",
            size: 0,
        })
    }

    /// Bytes a value of this node occupies.
    pub fn size(&self, id: NodeId) -> u64 {
        match self.node(id) {
            Node::Pending { size } => *size,
            Node::Int { size, .. } | Node::Bool { size } | Node::Float { size } => u64::from(*size),
            Node::Enum { size, .. } => u64::from(*size),
            Node::Char32 => 4,
            Node::Pointer { .. } | Node::Address | Node::CString => 8,
            Node::CharArray { len } => *len,
            Node::Struct { size, .. } => *size,
            Node::Array { count, stride, .. } => count.saturating_mul(*stride),
            Node::RustStr { size, .. } | Node::RustVec { size, .. } => *size,
            Node::Shared { size, .. } => *size,
            Node::RustEnum { size, .. } => *size,
            Node::Unsupported { size, .. } => *size,
        }
    }

    #[cfg(test)]
    pub(crate) fn nodes_mut_for_test(&mut self) -> &mut [Node] {
        &mut self.nodes
    }

    pub(crate) fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The DWARF-ish name of a node's type, for Describe.
    pub fn type_name(&self, id: NodeId) -> String {
        self.type_name_at(id, 0)
    }

    /// [`Layouts::type_name`] `depth` levels into a name: the compiler bounds how deeply nodes
    /// nest, and this bound keeps naming from recursing without end whatever the arena holds.
    fn type_name_at(&self, id: NodeId, depth: usize) -> String {
        if depth > 2 * MAX_NESTING {
            return "…".into();
        }
        match self.node(id) {
            Node::Pending { .. } => "?".into(),
            Node::Int { size, signed } => {
                format!("{}{}", if *signed { "i" } else { "u" }, size * 8)
            }
            Node::Bool { .. } => "bool".into(),
            Node::Float { size } => format!("f{}", size * 8),
            Node::Char32 => "char".into(),
            Node::Enum { name, .. } => format!("enum {name}"),
            Node::Pointer { target } => format!("*{}", self.type_name_shallow(*target, depth)),
            Node::Address => "address".into(),
            Node::CString => "char *".into(),
            Node::CharArray { len } => format!("char[{len}]"),
            Node::Struct { name, .. } => (*name).to_owned(),
            Node::Array { element, count, .. } => {
                format!("[{}; {count}]", self.type_name_shallow(*element, depth))
            }
            Node::RustStr { .. } => "&str".into(),
            Node::Shared { target, .. } => {
                format!("Arc<{}>", self.type_name_shallow(*target, depth))
            }
            Node::RustVec { element, .. } => {
                format!("Vec<{}>", self.type_name_shallow(*element, depth))
            }
            Node::RustEnum { name, .. } => (*name).to_owned(),
            Node::Unsupported { detail, .. } => format!("unsupported ({detail})"),
        }
    }

    fn type_name_shallow(&self, id: NodeId, depth: usize) -> String {
        match self.node(id) {
            Node::Pointer { .. } => "*…".into(),
            _ => self.type_name_at(id, depth + 1),
        }
    }
}

/// One step from a global's address to the value a point watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Add to the address (a member inside the current value).
    Offset(u64),
    /// Read a pointer at the address and continue at what it points to.
    Deref,
}

/// Where a watch point's value is, from its global, and how to decode it.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub steps: Vec<Step>,
    pub node: NodeId,
}

/// Why a member path does not lead anywhere in the type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PathError(pub String);

impl Layouts {
    /// Follows `path` (member names) from `root`, through pointers, to the watched value.
    pub fn access(&self, root: NodeId, path: &[String]) -> Result<Access, PathError> {
        let mut steps = Vec::new();
        let mut node = root;
        let mut walked = String::new();
        for member in path {
            if let Node::Pointer { target } = self.node(node) {
                steps.push(Step::Deref);
                node = *target;
            }
            let here = if walked.is_empty() {
                "the symbol".to_owned()
            } else {
                format!("`{walked}`")
            };
            let Node::Struct { name, fields, .. } = self.node(node) else {
                return Err(PathError(format!(
                    "{here} is {}, which has no member `{member}`",
                    self.type_name(node)
                )));
            };
            let Some(field) = fields.iter().find(|f| f.name == member) else {
                let known: Vec<&str> = fields.iter().map(|f| f.name).collect();
                return Err(PathError(format!(
                    "{here} (struct {name}) has no member `{member}`; it has {}",
                    known.join(", ")
                )));
            };
            steps.push(Step::Offset(field.offset));
            node = field.node;
            if !walked.is_empty() {
                walked.push('.');
            }
            walked.push_str(member);
        }
        Ok(Access { steps, node })
    }
}

/// Compiles DWARF types into a [`Layouts`] arena.
pub struct Compiler<'d, 'a> {
    debug: &'d Debug<'a>,
    layouts: Layouts,
    compiled: HashMap<DieRef, NodeId>,
    /// Pointers whose target DIE is not compiled yet, by that DIE: each points at
    /// [`Compiler::waiting`] until the target is compiled, then at the target's own node.
    /// Never a copy of the target's node: a big struct reached through many aliases (typedefs,
    /// qualifiers) each behind a pointer would be copied once per alias, and a copy taken
    /// while the struct is still being compiled would stay unfinished.
    reserved: HashMap<DieRef, Vec<NodeId>>,
    /// What a pointer waiting for its target points at meanwhile (created on first use): an
    /// unfinished node, which the decoder reports as such if compiling stops with an error.
    waiting: Option<NodeId>,
    /// Pointer targets to compile, in no particular order: a work list instead of recursion,
    /// so that a chain of pointer types costs no stack.
    deferred: Vec<DieRef>,
    void_pointer: Option<NodeId>,
}

impl<'d, 'a> Compiler<'d, 'a> {
    pub fn new(debug: &'d Debug<'a>) -> Self {
        Compiler::continuing(debug, Layouts::default())
    }

    /// Compiles another object's types into the same arena (one arena per sidecar).
    pub fn continuing(debug: &'d Debug<'a>, layouts: Layouts) -> Self {
        Compiler {
            debug,
            layouts,
            compiled: HashMap::new(),
            reserved: HashMap::new(),
            waiting: None,
            deferred: Vec::new(),
            void_pointer: None,
        }
    }

    pub fn finish(self) -> Layouts {
        self.layouts
    }

    pub fn layouts(&self) -> &Layouts {
        &self.layouts
    }

    /// The node for the type DIE `die` (`None`: a variable without a type), with everything
    /// it leads to compiled.
    pub fn compile(&mut self, die: Option<DieRef>) -> Result<NodeId, DwarfError> {
        let root = match die {
            None => return Ok(self.unsupported("a value without a type", 0)),
            Some(die) => self.compile_die(die, None, 0)?,
        };
        // What pointers lead to, each compiled from the top (pointers reset the nesting
        // count: what they point at is read separately, and the capture's depth limit bounds
        // how far it is followed).
        while let Some(target) = self.deferred.pop() {
            if self.reserved.contains_key(&target) {
                self.compile_die(target, None, 0)?;
            }
        }
        Ok(root)
    }

    fn unsupported(&mut self, detail: &'static str, size: u64) -> NodeId {
        self.layouts.push(Node::Unsupported { detail, size })
    }

    fn compile_die(
        &mut self,
        die: DieRef,
        typedef_name: Option<&str>,
        nesting: usize,
    ) -> Result<NodeId, DwarfError> {
        if let Some(id) = self.compiled.get(&die) {
            return Ok(*id);
        }
        if nesting > MAX_NESTING {
            return Ok(self.unsupported("type nested too deeply", 0));
        }
        let entry = self.debug.entry(die)?;
        let tag = entry.tag();
        let size = entry
            .attr_value(gimli::DW_AT_byte_size)
            .and_then(|v| v.udata_value());
        let type_of = |this: &Self| {
            entry
                .attr_value(gimli::DW_AT_type)
                .and_then(|v| this.debug.reference(die.unit, v))
        };
        let id = match tag {
            gimli::DW_TAG_typedef => {
                let name = self.debug.name(die.unit, &entry);
                match type_of(self) {
                    Some(target) => self.compile_die(target, name.as_deref(), nesting + 1)?,
                    None => self.unsupported("typedef of void", 0),
                }
            }
            gimli::DW_TAG_const_type
            | gimli::DW_TAG_volatile_type
            | gimli::DW_TAG_restrict_type
            | gimli::DW_TAG_atomic_type => match type_of(self) {
                Some(target) => self.compile_die(target, typedef_name, nesting + 1)?,
                None => self.unsupported("qualified void", 0),
            },
            gimli::DW_TAG_base_type => self.base_type(&entry, size),
            gimli::DW_TAG_enumeration_type => self.enumeration(die, &entry, size, typedef_name)?,
            gimli::DW_TAG_pointer_type
            | gimli::DW_TAG_reference_type
            | gimli::DW_TAG_rvalue_reference_type => self.pointer(type_of(self))?,
            gimli::DW_TAG_structure_type | gimli::DW_TAG_class_type => {
                self.structure(die, &entry, size, typedef_name, nesting)?
            }
            gimli::DW_TAG_union_type => self.unsupported(
                "a union: which member holds the value cannot be known",
                size.unwrap_or(0),
            ),
            gimli::DW_TAG_array_type => self.array(die, type_of(self), nesting)?,
            gimli::DW_TAG_subroutine_type => self.unsupported("a function", 0),
            _ => self.unsupported(
                "a DWARF type this sidecar does not decode",
                size.unwrap_or(0),
            ),
        };
        self.compiled.entry(die).or_insert(id);
        // Pointers compiled before this type now point at its node (the struct's own, even
        // one whose members are still being compiled: it is completed in place).
        for pointer in self.reserved.remove(&die).unwrap_or_default() {
            self.layouts.nodes[pointer] = Node::Pointer { target: id };
        }
        Ok(id)
    }

    fn base_type(&mut self, entry: &Die<'a>, size: Option<u64>) -> NodeId {
        let encoding = match entry.attr_value(gimli::DW_AT_encoding) {
            Some(AttributeValue::Encoding(encoding)) => encoding,
            _ => return self.unsupported("a base type without an encoding", size.unwrap_or(0)),
        };
        let size = size.unwrap_or(0);
        let Ok(small) = u8::try_from(size) else {
            return self.unsupported("a base type larger than 8 bytes", size);
        };
        let node = match encoding {
            gimli::DW_ATE_signed | gimli::DW_ATE_signed_char if matches!(small, 1 | 2 | 4 | 8) => {
                Node::Int {
                    size: small,
                    signed: true,
                }
            }
            gimli::DW_ATE_unsigned | gimli::DW_ATE_unsigned_char
                if matches!(small, 1 | 2 | 4 | 8) =>
            {
                Node::Int {
                    size: small,
                    signed: false,
                }
            }
            gimli::DW_ATE_boolean if matches!(small, 1 | 2 | 4 | 8) => Node::Bool { size: small },
            gimli::DW_ATE_float if matches!(small, 4 | 8) => Node::Float { size: small },
            gimli::DW_ATE_UTF if small == 4 => Node::Char32,
            gimli::DW_ATE_float => Node::Unsupported {
                detail: "a floating-point type wider than 8 bytes (long double)",
                size,
            },
            _ => Node::Unsupported {
                detail: "a base type of an encoding or size this sidecar does not decode",
                size,
            },
        };
        self.layouts.push(node)
    }

    fn enumeration(
        &mut self,
        die: DieRef,
        entry: &Die<'a>,
        size: Option<u64>,
        typedef_name: Option<&str>,
    ) -> Result<NodeId, DwarfError> {
        let size = size.unwrap_or(4);
        let Some(small) = u8::try_from(size)
            .ok()
            .filter(|s| matches!(s, 1 | 2 | 4 | 8))
        else {
            return Ok(self.unsupported("an enum of unusual size", size));
        };
        let underlying = entry
            .attr_value(gimli::DW_AT_type)
            .and_then(|v| self.debug.reference(die.unit, v));
        let mut signed = match underlying {
            Some(base) => {
                let base = self.debug.entry(base)?;
                matches!(
                    base.attr_value(gimli::DW_AT_encoding),
                    Some(AttributeValue::Encoding(gimli::DW_ATE_signed))
                        | Some(AttributeValue::Encoding(gimli::DW_ATE_signed_char))
                )
            }
            None => false,
        };
        let mask = if small == 8 {
            u64::MAX
        } else {
            (1u64 << (u32::from(small) * 8)) - 1
        };
        let mut variants = Vec::new();
        for child in self.debug.children(die)? {
            if child.tag() != gimli::DW_TAG_enumerator {
                continue;
            }
            let Some(name) = self.debug.name(die.unit, &child) else {
                continue;
            };
            let raw = match child.attr_value(gimli::DW_AT_const_value) {
                Some(AttributeValue::Sdata(v)) => {
                    if v < 0 {
                        signed = true;
                    }
                    v as u64
                }
                Some(value) => match value.udata_value() {
                    Some(v) => v,
                    None => continue,
                },
                None => continue,
            };
            variants.push((raw & mask, intern(&name)));
        }
        let name = self
            .debug
            .name(die.unit, entry)
            .or_else(|| typedef_name.map(str::to_owned))
            .unwrap_or_else(|| "<anonymous enum>".into());
        Ok(self.layouts.push(Node::Enum {
            name: intern(&name),
            size: small,
            signed,
            variants: variants.into(),
        }))
    }

    /// A pointer to `target`. The target is not compiled here: the pointer points at the
    /// target's node if it exists, else waits for it ([`Compiler::reserved`]), compiled later
    /// from the work list (see [`Compiler::compile`]).
    fn pointer(&mut self, target: Option<DieRef>) -> Result<NodeId, DwarfError> {
        let Some(target) = target else {
            return Ok(self.address_node());
        };
        match self.resolve_qualifiers(target)? {
            Some((_, entry)) if entry.tag() == gimli::DW_TAG_subroutine_type => {
                return Ok(self.layouts.push(Node::Address));
            }
            _ => {}
        }
        if self.is_char(target)? {
            return Ok(self.layouts.push(Node::CString));
        }
        if let Some(id) = self.compiled.get(&target) {
            return Ok(self.layouts.push(Node::Pointer { target: *id }));
        }
        let waiting = self.waiting_node();
        let pointer = self.layouts.push(Node::Pointer { target: waiting });
        match self.reserved.get_mut(&target) {
            Some(pointers) => pointers.push(pointer),
            None => {
                self.reserved.insert(target, vec![pointer]);
                self.deferred.push(target);
            }
        }
        Ok(pointer)
    }

    fn waiting_node(&mut self) -> NodeId {
        match self.waiting {
            Some(id) => id,
            None => {
                let id = self.layouts.push(Node::Pending { size: 0 });
                self.waiting = Some(id);
                id
            }
        }
    }

    fn address_node(&mut self) -> NodeId {
        match self.void_pointer {
            Some(id) => id,
            None => {
                let id = self.layouts.push(Node::Address);
                self.void_pointer = Some(id);
                id
            }
        }
    }

    /// The type `die` names through typedefs and qualifiers (`None`: void, or a chain longer
    /// than [`MAX_NESTING`]).
    fn resolve_qualifiers(&self, mut die: DieRef) -> Result<Option<(DieRef, Die<'a>)>, DwarfError> {
        for _ in 0..MAX_NESTING {
            let entry = self.debug.entry(die)?;
            match entry.tag() {
                gimli::DW_TAG_typedef
                | gimli::DW_TAG_const_type
                | gimli::DW_TAG_volatile_type
                | gimli::DW_TAG_restrict_type
                | gimli::DW_TAG_atomic_type => {
                    match entry
                        .attr_value(gimli::DW_AT_type)
                        .and_then(|v| self.debug.reference(die.unit, v))
                    {
                        Some(next) => die = next,
                        None => return Ok(None),
                    }
                }
                _ => return Ok(Some((die, entry))),
            }
        }
        Ok(None)
    }

    /// Whether `die`, through typedefs and qualifiers, is C's plain `char`: text, as gdb
    /// shows it. `signed char`, `unsigned char` and `uint8_t` are numbers (bytes), not text.
    fn is_char(&self, die: DieRef) -> Result<bool, DwarfError> {
        let Some((die, entry)) = self.resolve_qualifiers(die)? else {
            return Ok(false);
        };
        if entry.tag() != gimli::DW_TAG_base_type {
            return Ok(false);
        }
        let one_byte = entry
            .attr_value(gimli::DW_AT_byte_size)
            .and_then(|v| v.udata_value())
            == Some(1);
        let char_encoding = matches!(
            entry.attr_value(gimli::DW_AT_encoding),
            Some(AttributeValue::Encoding(
                gimli::DW_ATE_signed_char | gimli::DW_ATE_unsigned_char
            ))
        );
        let plain_char = self.debug.name(die.unit, &entry).as_deref() == Some("char");
        Ok(one_byte && char_encoding && plain_char)
    }

    fn structure(
        &mut self,
        die: DieRef,
        entry: &Die<'a>,
        size: Option<u64>,
        typedef_name: Option<&str>,
        nesting: usize,
    ) -> Result<NodeId, DwarfError> {
        let declaration = matches!(
            entry.attr_value(gimli::DW_AT_declaration),
            Some(AttributeValue::Flag(true))
        );
        let Some(size) = size.filter(|_| !declaration) else {
            return Ok(self.unsupported("an incomplete type (declared, never defined here)", 0));
        };
        let name = self
            .debug
            .name(die.unit, entry)
            .or_else(|| typedef_name.map(str::to_owned))
            .unwrap_or_else(|| "<anonymous struct>".into());
        let id = self.layouts.push(Node::Pending { size });
        self.compiled.insert(die, id);
        let children = self.debug.children(die)?;
        if let Some(node) = self.rust_shape(die, &name, size, &children, nesting)? {
            self.layouts.nodes[id] = if self.inside(&node) {
                node
            } else {
                Node::Unsupported {
                    detail: "a std type whose members lie outside its bytes",
                    size,
                }
            };
            return Ok(id);
        }
        let mut fields = Vec::new();
        let mut seen = BTreeSet::new();
        for child in children {
            if child.tag() != gimli::DW_TAG_member || child.attr(gimli::DW_AT_external).is_some() {
                continue;
            }
            let member_name = self
                .debug
                .name(die.unit, &child)
                .unwrap_or_else(|| format!("{}", fields.len()));
            if !seen.insert(member_name.clone()) {
                continue;
            }
            let bitfield = child.attr(gimli::DW_AT_bit_size).is_some()
                || child.attr(gimli::DW_AT_data_bit_offset).is_some();
            let offset = member_offset(&child);
            let node = if bitfield {
                self.unsupported("a bitfield", 0)
            } else {
                let member_type = child
                    .attr_value(gimli::DW_AT_type)
                    .and_then(|v| self.debug.reference(die.unit, v));
                match member_type {
                    Some(t) => self.compile_die(t, None, nesting + 1)?,
                    None => self.unsupported("a member without a type", 0),
                }
            };
            // A member must lie inside its struct: an offset past it (or whose end overflows)
            // would be read from the bytes of something else.
            let inside = offset.and_then(|offset| offset.checked_add(self.layouts.size(node)));
            let (offset, node) = match (offset, inside) {
                (None, _) => (
                    0,
                    self.unsupported("a member at an offset that is not a constant", 0),
                ),
                (Some(_), None) => (0, self.unsupported(OFFSET_OVERFLOWS, 0)),
                (Some(_), Some(end)) if end > size => (
                    0,
                    self.unsupported("a member that lies outside its struct's bytes", 0),
                ),
                (Some(offset), Some(_)) => (offset, node),
            };
            fields.push(Field {
                name: intern(&member_name),
                offset,
                node,
            });
        }
        self.layouts.nodes[id] = Node::Struct {
            name: intern(&name),
            size,
            fields: fields.into(),
        };
        Ok(id)
    }

    /// Rust's std shapes, recognised by their members (never by name alone: the layouts of
    /// `String` and `Vec` change between compiler versions, so the members are looked up, not
    /// their offsets assumed). `None`: an ordinary struct.
    fn rust_shape(
        &mut self,
        die: DieRef,
        name: &str,
        size: u64,
        children: &[Die<'a>],
        nesting: usize,
    ) -> Result<Option<Node>, DwarfError> {
        if let Some(part) = children
            .iter()
            .find(|c| c.tag() == gimli::DW_TAG_variant_part)
        {
            return self.rust_enum(die, name, size, part, nesting).map(Some);
        }
        let members = self.members(die.unit, children);
        let member = |wanted: &str| members.iter().find(|(n, _, _)| n == wanted).cloned();
        // Transparent wrappers: the value inside, at offset 0, costs no depth.
        // `AtomicBool` holds a `u8`; it is a `bool`, as serde shows it.
        if name == "AtomicBool" && size == 1 {
            return Ok(Some(Node::Bool { size: 1 }));
        }
        let transparent = ["UnsafeCell<", "SyncUnsafeCell<", "Cell<", "ManuallyDrop<"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            || name.starts_with("Atomic");
        if transparent
            && members.len() == 1
            && let Some((_, 0, Some(inner))) = members.first().cloned()
        {
            let node = self.compile_die(inner, None, nesting + 1)?;
            return Ok(Some(self.layouts.node(node).clone()));
        }
        if name == "&str"
            && let (Some((_, ptr, _)), Some((_, len, _))) = (member("data_ptr"), member("length"))
        {
            return Ok(Some(Node::RustStr { ptr, len, size }));
        }
        if name.starts_with("&[")
            && let (Some((_, ptr, Some(pointer))), Some((_, len, _))) =
                (member("data_ptr"), member("length"))
            && let Some(element) = self.pointee(pointer)?
        {
            let element = self.compile_die(element, None, nesting + 1)?;
            let stride = self.layouts.size(element);
            return Ok(Some(Node::RustVec {
                ptr,
                len,
                element,
                stride,
                size,
            }));
        }
        if (name.starts_with("Arc<") || name.starts_with("Rc<"))
            && let Some((_, ptr_offset, Some(non_null))) = member("ptr")
            && let Some((pointer, inner)) = self.non_null(non_null)?
            && let Some((data, value)) = self.shared_value(inner)?
        {
            let target = self.compile_die(value, None, nesting + 1)?;
            let Some(pointer) = ptr_offset.checked_add(pointer) else {
                return Ok(Some(Node::Unsupported {
                    detail: OFFSET_OVERFLOWS,
                    size,
                }));
            };
            return Ok(Some(Node::Shared {
                pointer,
                data,
                target,
                size,
            }));
        }
        if name == "String"
            && let Some((_, vec_offset, Some(vec))) = member("vec")
            && let Some((ptr, len)) = self.vec_fields(vec)?
        {
            let (Some(ptr), Some(len)) = (vec_offset.checked_add(ptr), vec_offset.checked_add(len))
            else {
                return Ok(Some(Node::Unsupported {
                    detail: OFFSET_OVERFLOWS,
                    size,
                }));
            };
            return Ok(Some(Node::RustStr { ptr, len, size }));
        }
        if name.starts_with("Vec<")
            && let Some((ptr, len)) = self.vec_fields(die)?
            && let Some(element) = self.template_parameter(children, die.unit, "T")
        {
            let element = self.compile_die(element, None, nesting + 1)?;
            let stride = self.layouts.size(element);
            return Ok(Some(Node::RustVec {
                ptr,
                len,
                element,
                stride,
                size,
            }));
        }
        Ok(None)
    }

    /// Whether what a std shape reads lies inside its struct's bytes: the pointers and
    /// lengths of `String`, `&str`, `Vec` and slices, the pointer of `Arc` and `Rc`, an enum's
    /// discriminant and variants. Offsets come from the DWARF; one past the struct would be
    /// read from the bytes of something else.
    fn inside(&self, node: &Node) -> bool {
        let fits = |offset: u64, width: u64, size: u64| {
            offset.checked_add(width).is_some_and(|end| end <= size)
        };
        match node {
            Node::RustStr { ptr, len, size } | Node::RustVec { ptr, len, size, .. } => {
                fits(*ptr, 8, *size) && fits(*len, 8, *size)
            }
            Node::Shared { pointer, size, .. } => fits(*pointer, 8, *size),
            Node::RustEnum {
                size,
                discr,
                variants,
                ..
            } => {
                discr.is_none_or(|(offset, width)| fits(offset, u64::from(width), *size))
                    && variants
                        .iter()
                        .all(|v| fits(v.offset, self.layouts.size(v.fields), *size))
            }
            _ => true,
        }
    }

    /// (name, offset, type) of each data member.
    fn members(&self, unit: usize, children: &[Die<'a>]) -> Vec<(String, u64, Option<DieRef>)> {
        children
            .iter()
            .filter(|c| c.tag() == gimli::DW_TAG_member)
            .filter_map(|c| {
                let name = self.debug.name(unit, c)?;
                let offset = member_offset(c)?;
                let ty = c
                    .attr_value(gimli::DW_AT_type)
                    .and_then(|v| self.debug.reference(unit, v));
                Some((name, offset, ty))
            })
            .collect()
    }

    fn template_parameter(
        &self,
        children: &[Die<'a>],
        unit: usize,
        wanted: &str,
    ) -> Option<DieRef> {
        children
            .iter()
            .filter(|c| c.tag() == gimli::DW_TAG_template_type_parameter)
            .find(|c| self.debug.name(unit, c).as_deref() == Some(wanted))
            .and_then(|c| c.attr_value(gimli::DW_AT_type))
            .and_then(|v| self.debug.reference(unit, v))
    }

    /// `NonNull<T>`: the offset of its pointer member and the `T` it points at.
    fn non_null(&self, non_null: DieRef) -> Result<Option<(u64, DieRef)>, DwarfError> {
        let children = self.debug.children(non_null)?;
        let Some((_, offset, Some(pointer))) = self
            .members(non_null.unit, &children)
            .into_iter()
            .find(|(n, _, _)| n == "pointer")
        else {
            return Ok(None);
        };
        Ok(self.pointee(pointer)?.map(|inner| (offset, inner)))
    }

    /// `ArcInner<T>` / `RcInner<T>`: the offset and type of the shared value (`data` or
    /// `value`, after the counts).
    fn shared_value(&self, inner: DieRef) -> Result<Option<(u64, DieRef)>, DwarfError> {
        let children = self.debug.children(inner)?;
        Ok(self
            .members(inner.unit, &children)
            .into_iter()
            .find(|(n, _, _)| n == "data" || n == "value")
            .and_then(|(_, offset, ty)| ty.map(|ty| (offset, ty))))
    }

    /// What a pointer type points at.
    fn pointee(&self, pointer: DieRef) -> Result<Option<DieRef>, DwarfError> {
        let entry = self.debug.entry(pointer)?;
        Ok(entry
            .attr_value(gimli::DW_AT_type)
            .and_then(|v| self.debug.reference(pointer.unit, v)))
    }

    /// Offsets in a `Vec` of its data pointer and its length: `len` is a member; the pointer
    /// is found by following `buf`, then members named `inner`, `ptr` or `pointer`, down to a
    /// pointer type (`buf.inner.ptr.pointer.pointer` today, `buf.ptr.pointer.pointer` before).
    /// Offsets that overflow are not a `Vec`'s shape (`None`): the struct is then shown member
    /// by member, where a member outside the struct is not captured.
    fn vec_fields(&self, vec: DieRef) -> Result<Option<(u64, u64)>, DwarfError> {
        let children = self.debug.children(vec)?;
        let members = self.members(vec.unit, &children);
        let Some((_, len, _)) = members.iter().find(|(n, _, _)| n == "len").cloned() else {
            return Ok(None);
        };
        let Some((_, mut offset, Some(mut at))) =
            members.iter().find(|(n, _, _)| n == "buf").cloned()
        else {
            return Ok(None);
        };
        for _ in 0..8 {
            let entry = self.debug.entry(at)?;
            if entry.tag() == gimli::DW_TAG_pointer_type {
                return Ok(Some((offset, len)));
            }
            if entry.tag() != gimli::DW_TAG_structure_type {
                return Ok(None);
            }
            let children = self.debug.children(at)?;
            let inner = self
                .members(at.unit, &children)
                .into_iter()
                .find(|(n, _, _)| matches!(n.as_str(), "inner" | "ptr" | "pointer"));
            match inner {
                Some((_, member_offset, Some(ty))) => {
                    let Some(sum) = offset.checked_add(member_offset) else {
                        return Ok(None);
                    };
                    offset = sum;
                    at = ty;
                }
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    fn rust_enum(
        &mut self,
        die: DieRef,
        name: &str,
        size: u64,
        part: &Die<'a>,
        nesting: usize,
    ) -> Result<Node, DwarfError> {
        let part_ref = DieRef {
            unit: die.unit,
            offset: part.offset(),
        };
        let discr = match part
            .attr_value(gimli::DW_AT_discr)
            .and_then(|v| self.debug.reference(die.unit, v))
        {
            None => None,
            Some(member) => match self.discriminant(member)? {
                Discriminant::At(offset, small) => Some((offset, small)),
                Discriminant::Size => {
                    return Ok(Node::Unsupported {
                        detail: "an enum whose discriminant is not 1, 2, 4 or 8 bytes",
                        size,
                    });
                }
                Discriminant::Offset => {
                    return Ok(Node::Unsupported {
                        detail: "an enum whose discriminant is at an offset that is not a constant",
                        size,
                    });
                }
            },
        };
        let mask = match discr {
            Some((_, small)) if small < 8 => (1u64 << (u32::from(small) * 8)) - 1,
            _ => u64::MAX,
        };
        let mut variants = Vec::new();
        for variant in self
            .debug
            .children(part_ref)?
            .iter()
            .filter(|c| c.tag() == gimli::DW_TAG_variant)
        {
            let value = variant
                .attr_value(gimli::DW_AT_discr_value)
                .and_then(|v| match v {
                    AttributeValue::Sdata(signed) => Some(signed as u64),
                    other => other.udata_value(),
                });
            let variant_ref = DieRef {
                unit: die.unit,
                offset: variant.offset(),
            };
            let members = self.debug.children(variant_ref)?;
            let Some(member) = members.iter().find(|c| c.tag() == gimli::DW_TAG_member) else {
                continue;
            };
            let variant_name = self.debug.name(die.unit, member).unwrap_or_default();
            let fields = match member
                .attr_value(gimli::DW_AT_type)
                .and_then(|v| self.debug.reference(die.unit, v))
            {
                Some(ty) => self.compile_die(ty, None, nesting + 1)?,
                None => self.unsupported("a variant without a type", 0),
            };
            // A variant whose place is not understood would be decoded from the wrong bytes:
            // the whole enum is refused rather than one variant shown from a guess.
            let Some(offset) = member_offset(member) else {
                return Ok(Node::Unsupported {
                    detail: "an enum variant at an offset that is not a constant",
                    size,
                });
            };
            variants.push(RustVariant {
                name: intern(&variant_name),
                discr: value.map(|v| v & mask),
                offset,
                fields,
            });
        }
        let is_option = name.starts_with("Option<")
            && variants.len() == 2
            && variants.iter().any(|v| v.name == "None")
            && variants.iter().any(|v| v.name == "Some");
        Ok(Node::RustEnum {
            name: intern(name),
            size,
            discr,
            variants: variants.into(),
            is_option,
        })
    }

    /// Offset and size of an enum's discriminant member.
    fn discriminant(&self, member: DieRef) -> Result<Discriminant, DwarfError> {
        let entry = self.debug.entry(member)?;
        let Some(offset) = member_offset(&entry) else {
            return Ok(Discriminant::Offset);
        };
        let size = match entry
            .attr_value(gimli::DW_AT_type)
            .and_then(|v| self.debug.reference(member.unit, v))
        {
            Some(ty) => self
                .debug
                .entry(ty)?
                .attr_value(gimli::DW_AT_byte_size)
                .and_then(|v| v.udata_value())
                .unwrap_or(0),
            None => 0,
        };
        Ok(u8::try_from(size)
            .ok()
            .filter(|s| matches!(s, 1 | 2 | 4 | 8))
            .map_or(Discriminant::Size, |small| Discriminant::At(offset, small)))
    }

    fn array(
        &mut self,
        die: DieRef,
        element: Option<DieRef>,
        nesting: usize,
    ) -> Result<NodeId, DwarfError> {
        let Some(element) = element else {
            return Ok(self.unsupported("an array of void", 0));
        };
        let mut counts = Vec::new();
        for child in self.debug.children(die)? {
            if child.tag() != gimli::DW_TAG_subrange_type {
                continue;
            }
            let count = match child
                .attr_value(gimli::DW_AT_count)
                .and_then(|v| v.udata_value())
            {
                Some(count) => Some(count),
                None => child
                    .attr_value(gimli::DW_AT_upper_bound)
                    .and_then(|v| v.udata_value())
                    .map(|upper| upper.saturating_add(1)),
            };
            match count {
                Some(count) => counts.push(count),
                None => return Ok(self.unsupported("an array of unknown length", 0)),
            }
        }
        if counts.is_empty() {
            return Ok(self.unsupported("an array of unknown length", 0));
        }
        // Every dimension is one more level of nesting: past the limit, the innermost
        // dimensions are one node that is not captured (its size kept, so that the outer
        // dimensions' strides stay right).
        let kept = counts.len().min(MAX_NESTING.saturating_sub(nesting).max(1));
        let nesting = nesting + kept;
        let (outer, inner) = counts.split_at(kept);
        let last = outer.len() - 1;
        let mut node = if !inner.is_empty() {
            // The element is not compiled (it would be past the nesting limit): its size is
            // the one its DWARF states, if any.
            let element_size = match self.resolve_qualifiers(element)? {
                Some((_, entry)) => entry
                    .attr_value(gimli::DW_AT_byte_size)
                    .and_then(|v| v.udata_value())
                    .unwrap_or(0),
                None => 0,
            };
            let size = inner
                .iter()
                .fold(element_size, |size, count| size.saturating_mul(*count));
            let innermost =
                self.unsupported("an array of more dimensions than the sidecar decodes", size);
            let stride = self.layouts.size(innermost);
            self.layouts.push(Node::Array {
                element: innermost,
                count: outer[last],
                stride,
            })
        } else if self.is_char(element)? {
            // The innermost dimension first: `int m[2][3]` is two arrays of three.
            self.layouts.push(Node::CharArray { len: outer[last] })
        } else {
            let element = self.compile_die(element, None, nesting + 1)?;
            let stride = self.layouts.size(element);
            self.layouts.push(Node::Array {
                element,
                count: outer[last],
                stride,
            })
        };
        for count in outer[..last].iter().rev() {
            let stride = self.layouts.size(node);
            node = self.layouts.push(Node::Array {
                element: node,
                count: *count,
                stride,
            });
        }
        Ok(node)
    }
}

/// An enum's discriminant member, as far as the layout can use it.
enum Discriminant {
    /// Its offset and size (1, 2, 4 or 8).
    At(u64, u8),
    /// A size the decoder does not read.
    Size,
    /// An offset that is not a constant: reading it anywhere would be a guess.
    Offset,
}

/// `DW_AT_data_member_location`: a constant, or an expression evaluated with the struct's
/// address pushed first (older producers write `DW_OP_plus_uconst n`); absent means 0 (a union
/// member, or the first member for some producers). `None`: not a constant offset from the
/// struct's address, or one that overflows; the member is then not captured, never read at a
/// guessed place.
fn member_offset(member: &Die<'_>) -> Option<u64> {
    match member.attr_value(gimli::DW_AT_data_member_location) {
        None => Some(0),
        Some(AttributeValue::Exprloc(expression)) => member_offset_expression(expression),
        Some(value) => value.udata_value(),
    }
}

/// A member location expression, on a DWARF stack whose entries are the struct's address
/// plus a constant, or constants: what it understands is constants, `DW_OP_plus_uconst` and
/// `DW_OP_plus`; anything else, or a result that is not the struct's address plus a
/// constant, is `None`.
fn member_offset_expression(
    expression: gimli::Expression<crate::location::Slice<'_>>,
) -> Option<u64> {
    /// (whether the entry holds the struct's address, the constant added to it).
    type Entry = (bool, u64);
    // Member locations use no operation whose encoding depends on the unit's format.
    let encoding = gimli::Encoding {
        format: gimli::Format::Dwarf32,
        version: 4,
        address_size: 8,
    };
    let mut stack: Vec<Entry> = vec![(true, 0)];
    // A member's offset needs two entries; deeper stacks are no member location a compiler
    // writes, and bounding them bounds what a hostile expression can allocate.
    const MAX_STACK: usize = 16;
    let mut operations = expression.operations(encoding);
    while let Some(operation) = operations.next().ok()? {
        if stack.len() > MAX_STACK {
            return None;
        }
        match operation {
            gimli::Operation::UnsignedConstant { value } => stack.push((false, value)),
            gimli::Operation::SignedConstant { value } => {
                stack.push((false, u64::try_from(value).ok()?));
            }
            gimli::Operation::PlusConstant { value } => {
                let (base, constant) = stack.pop()?;
                stack.push((base, constant.checked_add(value)?));
            }
            gimli::Operation::Plus => {
                let (base_b, b) = stack.pop()?;
                let (base_a, a) = stack.pop()?;
                if base_a && base_b {
                    return None;
                }
                stack.push((base_a || base_b, a.checked_add(b)?));
            }
            gimli::Operation::Nop => {}
            _ => return None,
        }
    }
    match stack.as_slice() {
        [(true, offset)] => Some(*offset),
        _ => None,
    }
}

/// [`intern`], for other modules' tests that build layouts by hand.
#[cfg(test)]
pub(crate) fn tests_intern(text: &str) -> &'static str {
    intern(text)
}

/// DWARF names the decoder hands to serde, which wants `&'static str`: each distinct name is
/// leaked once. They come from the layouts compiled at start-up, so their number is bounded by
/// the declared points' types.
fn intern(text: &str) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = names.get(text) {
        return known;
    }
    let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(bytes: &[u8]) -> Option<u64> {
        member_offset_expression(gimli::Expression(gimli::EndianSlice::new(
            bytes,
            gimli::RunTimeEndian::Little,
        )))
    }

    #[test]
    fn member_location_expressions_are_evaluated_or_refused() {
        // DW_OP_plus_uconst 8
        assert_eq!(offset(&[0x23, 0x08]), Some(8));
        // DW_OP_constu 8 DW_OP_plus
        assert_eq!(offset(&[0x10, 0x08, 0x22]), Some(8));
        // (empty): the struct's address itself
        assert_eq!(offset(&[]), Some(0));
        // DW_OP_constu 8: a constant, not an offset from the struct
        assert_eq!(offset(&[0x10, 0x08]), None);
        // DW_OP_dup DW_OP_plus: the struct's address twice
        assert_eq!(offset(&[0x12, 0x22]), None);
        // DW_OP_deref: reads memory, not a constant offset
        assert_eq!(offset(&[0x06]), None);
        // DW_OP_plus_uconst 2^64-1 DW_OP_plus_uconst 1: overflows
        let mut overflow = vec![0x23];
        overflow.extend_from_slice(&[0xff; 9]);
        overflow.push(0x01);
        overflow.extend_from_slice(&[0x23, 0x01]);
        assert_eq!(offset(&overflow), None);
    }

    #[test]
    fn type_names_are_bounded_whatever_the_arena_holds() {
        let mut layouts = Layouts::default();
        let mut node = layouts.push(Node::Int {
            size: 4,
            signed: true,
        });
        for _ in 0..10_000 {
            node = layouts.push(Node::Array {
                element: node,
                count: 1,
                stride: 4,
            });
        }
        let name = layouts.type_name(node);
        assert!(name.starts_with('[') && name.contains('…'), "{name}");
    }
}

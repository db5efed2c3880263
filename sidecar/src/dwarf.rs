//! The target's DWARF, read with gimli: finding the globals the points file names, and the DIE
//! access the layout compiler needs (`crate::layout`).
//!
//! Finding is one pass over the compilation units, looking only at variable DIEs outside
//! functions, for the declared names only: no full name index is built or kept, and the DWARF
//! is dropped once every point's layout is compiled. A global matches by its qualified name
//! (`rfix::CURRENT`: namespaces joined with `::`; in C just the name) or its linkage name. A
//! definition that carries only `DW_AT_specification` (GCC does this) takes its name from the
//! declaration it points at. With link-time optimization GCC goes one step further (Debian's
//! python3, `_PyRuntime`): the definition, in an LTO partition's unit, has only a location
//! and a `DW_AT_abstract_origin` into another unit's early debug info, whose DIE has only a
//! `DW_AT_specification` to the named declaration; such definitions are resolved after the
//! pass, through the wanted declarations it found, and take type, file and line from the
//! first DIE of that chain that has them. Function-local statics are not found yet.
//!
//! The DWARF is untrusted input, and what it costs is bounded by the sidecar, not by the
//! file: a compressed section is inflated only up to the size its header declares (itself
//! capped, [`MAX_SECTION_BYTES`]); units that share an abbreviation table share one parsed
//! copy, and the distinct tables together may read `.debug_abbrev` only a few times over
//! ([`ABBREVIATIONS_PER_SECTION_BYTE`]); and a qualified name is built only for a DIE that is
//! wanted, compared scope by scope otherwise ([`Scopes`]), so that deeply nested scopes cost
//! neither quadratic time nor memory.
//!
//! Functions (for probe points) are found the same way: subprograms outside other functions,
//! by qualified or linkage name, a definition taking its name from the DIE its
//! `DW_AT_specification` or `DW_AT_abstract_origin` points at (a C++ method, or the
//! out-of-line copy of an inlinable function). Their formal parameters' locations are
//! evaluated at the entry pc ([`crate::location`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use gimli::{AttributeValue, EndianSlice, RunTimeEndian, UnitOffset};
use object::{Object, ObjectSection};

use crate::location::{self, FrameBase, ParamLocation, Place, Slice};

pub(crate) type Die<'a> = gimli::DebuggingInformationEntry<Slice<'a>>;

/// Why the DWARF could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DwarfError {
    #[error("the debug file is not an ELF file: {0}")]
    Elf(String),
    #[error("malformed DWARF: {0}")]
    Gimli(#[from] gimli::Error),
    #[error("only 64-bit targets are supported (a unit has {0}-byte addresses)")]
    AddressSize(u8),
    /// The units' abbreviation tables, each parsed once, come to more than
    /// [`ABBREVIATIONS_PER_SECTION_BYTE`] times `.debug_abbrev`: tables at distinct offsets
    /// overlap (each runs to the end of one long table), which no compiler writes.
    #[error(
        "malformed DWARF: the units' abbreviation tables overlap, parsing them would read more than \
         {budget} bytes of a {section}-byte .debug_abbrev; no compiler writes this: rebuild the \
         binary with debug info, or reinstall its debug package"
    )]
    AbbreviationsOverlap { section: u64, budget: u64 },
}

/// How many times its size the units' abbreviation tables may read of `.debug_abbrev`, all
/// distinct tables together (a table shared by units is parsed once). Tables a compiler
/// writes do not overlap, so they read it at most once; tables that start at distinct
/// offsets inside one long table each read to its end, quadratic in the file.
pub const ABBREVIATIONS_PER_SECTION_BYTE: u64 = 4;

/// A DIE by unit and offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DieRef {
    pub unit: usize,
    pub offset: UnitOffset<usize>,
}

/// A global the points file asked for, as its DWARF describes it.
#[derive(Debug, Clone)]
pub struct Global {
    pub qualified_name: String,
    /// Its address before bias, or why it has none a sidecar can read.
    pub address: Result<u64, &'static str>,
    pub type_die: Option<DieRef>,
    pub decl_file: String,
    pub decl_line: u32,
}

/// The largest size a compressed section may declare: what it inflates to is held in memory.
pub const MAX_SECTION_BYTES: u64 = 2 << 30;

/// What a DIE is to the names nested in it: a named scope that qualifies them, code (a
/// function or block, whose variables are locals), or neither.
enum Scope {
    Named(String),
    Code,
    None,
}

/// What [`Debug::find_globals`] gathers over the units.
#[derive(Default)]
struct GlobalSearch {
    found: BTreeMap<String, Vec<Global>>,
    /// Wanted variables seen without a location (declarations, early-debug DIEs), by DIE:
    /// the name asked for and the qualified name.
    wanted_declarations: HashMap<DieRef, (String, String)>,
    /// Nameless variables without a location that refer to a DIE not yet known as wanted.
    aliases: Vec<(DieRef, DieRef)>,
    /// Nameless definitions (with a location) whose origin was not resolved in their unit.
    unnamed: Vec<(DieRef, DieRef)>,
}

impl GlobalSearch {
    /// Names the nameless declarations whose origin is now known to be wanted (GCC's LTO
    /// early debug: `DW_AT_specification` to the declaration, referred to by the concrete
    /// DIE's `DW_AT_abstract_origin`).
    fn resolve_aliases(&mut self) {
        let aliases = std::mem::take(&mut self.aliases);
        for (die, origin) in aliases {
            match self.wanted_declarations.get(&origin).cloned() {
                Some(names) => {
                    self.wanted_declarations.insert(die, names);
                }
                None => self.aliases.push((die, origin)),
            }
        }
    }
}

/// The scopes enclosing the DIE a pass over a unit is at, innermost last: named ones qualify
/// the names in them, code (a function or block) makes its variables locals. Both questions
/// a pass asks of every DIE (inside code? is this name wanted?) cost nothing in the nesting
/// depth: counts are kept, and a wanted name is compared scope by scope, bounded by its own
/// length. A qualified name is built only for a DIE that is wanted.
#[derive(Default)]
struct Scopes {
    /// (depth of the scope's DIE, whether it is code, the innermost named scope in `named`
    /// from it inwards).
    stack: Vec<(isize, bool, Option<usize>)>,
    /// Every named scope the pass has entered in this unit: (the named scope it is in, its
    /// name). Kept after the pass leaves it, so that a name seen inside it can be qualified
    /// later from a [`ScopedName`], at the cost of one entry per scope DIE.
    named: Vec<(Option<usize>, String)>,
    code: usize,
}

/// A name and the named scope it was seen in ([`Scopes::named`]): what a pass keeps of a
/// declaration not yet known to be wanted, its qualified name built only once it is.
#[derive(Clone)]
struct ScopedName {
    scope: Option<usize>,
    name: String,
}

impl Scopes {
    /// Leaves the scopes a DIE at `depth` is not inside.
    fn leave_to(&mut self, depth: isize) {
        while let Some((at, code, _)) = self.stack.last() {
            if *at < depth {
                break;
            }
            if *code {
                self.code -= 1;
            }
            self.stack.pop();
        }
    }

    fn push(&mut self, depth: isize, scope: Option<String>) {
        let innermost = self.innermost();
        let entry = match scope {
            None => {
                self.code += 1;
                (depth, true, innermost)
            }
            Some(name) => {
                self.named.push((innermost, name));
                (depth, false, Some(self.named.len() - 1))
            }
        };
        self.stack.push(entry);
    }

    fn in_code(&self) -> bool {
        self.code > 0
    }

    /// The innermost named scope the pass is in.
    fn innermost(&self) -> Option<usize> {
        self.stack.last().and_then(|(_, _, scope)| *scope)
    }

    /// `name`, in the scope the pass is in, to be qualified later if wanted.
    fn scoped(&self, name: &str) -> ScopedName {
        ScopedName {
            scope: self.innermost(),
            name: name.to_owned(),
        }
    }

    /// The names of the named scope `scope` and those it is in, innermost first. Each
    /// scope's parent was entered before it: the walk ends.
    fn names_from(&self, mut scope: Option<usize>) -> impl Iterator<Item = &str> {
        std::iter::from_fn(move || {
            let (parent, name) = self.named.get(scope?)?;
            scope = *parent;
            Some(name.as_str())
        })
    }

    /// The name in `wanted` that `name`, qualified by these scopes, is.
    fn wanted<'w>(&self, name: &str, wanted: &BTreeSet<&'w str>) -> Option<&'w str> {
        wanted
            .iter()
            .copied()
            .find(|candidate| self.qualifies(candidate, name))
    }

    /// Whether `candidate` is `name` qualified by these scopes (`a::b::name`), without
    /// building the qualified name: each named scope, innermost first, must match the part
    /// of it before the last one matched.
    fn qualifies(&self, candidate: &str, name: &str) -> bool {
        let Some(mut rest) = candidate.strip_suffix(name) else {
            return false;
        };
        for scope in self.names_from(self.innermost()) {
            match rest.strip_suffix("::").and_then(|r| r.strip_suffix(scope)) {
                Some(before) => rest = before,
                None => return false,
            }
        }
        rest.is_empty()
    }

    /// `name` qualified by these scopes.
    fn qualified(&self, name: &str) -> String {
        self.qualified_in(&self.scoped(name))
    }

    /// A name kept with its scope, qualified.
    fn qualified_in(&self, scoped: &ScopedName) -> String {
        let mut parts: Vec<&str> = self.names_from(scoped.scope).collect();
        parts.reverse();
        parts.push(&scoped.name);
        parts.join("::")
    }
}

/// A function the points file asked for, as one of its DWARF subprograms describes it.
#[derive(Debug, Clone)]
pub struct Function {
    pub qualified_name: String,
    /// Its entry address before bias; `None` for a declaration or an inline-only abstract
    /// instance (see `inlined`).
    pub entry: Option<u64>,
    /// `DW_AT_inline` says it is inlined: with no entry, it exists only inlined into callers.
    pub inlined: bool,
    /// `DW_CC_nocall`: the compiler changed how it is called; its parameters' locations are
    /// still described, but no caller follows the ABI.
    pub nocall: bool,
    /// The compilation unit is C or C++ (the System V calling convention is known to hold
    /// for its parameters).
    pub c_language: bool,
    pub decl_file: String,
    pub decl_line: u32,
    pub params: Vec<Param>,
    /// Its return type (`None`: void).
    pub return_type: Option<DieRef>,
}

/// One formal parameter of a [`Function`], with its location at the entry pc.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub type_die: Option<DieRef>,
    pub location: ParamLocation,
}

/// The DWARF sections of one ELF file, decompressed where the file compresses them
/// (`SHF_COMPRESSED`, zlib or zstd), so that [`Debug`](struct@Debug) can borrow them.
pub struct DebugSections<'a> {
    endian: RunTimeEndian,
    sections: Vec<(gimli::SectionId, Cow<'a, [u8]>)>,
}

/// What an object's DWARF is read for, which decides the sections decompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Watch points: names, types and the globals' fixed addresses.
    Globals,
    /// Probe points too: their parameters' location lists and the functions' ranges.
    GlobalsAndFunctions,
}

/// Sections only functions' parameters and ranges need. On Debian's python3 they are 6.5 of
/// the 22 MB of DWARF, and inflating them was a third of a cold watch's time.
const FUNCTIONS_ONLY: [gimli::SectionId; 5] = [
    gimli::SectionId::DebugAranges,
    gimli::SectionId::DebugLoc,
    gimli::SectionId::DebugLocLists,
    gimli::SectionId::DebugRanges,
    gimli::SectionId::DebugRngLists,
];

impl<'a> DebugSections<'a> {
    /// The sections `purpose` needs; the others stay empty (and compressed).
    pub fn read(bytes: &'a [u8], purpose: Purpose) -> Result<DebugSections<'a>, DwarfError> {
        let file = object::File::parse(bytes).map_err(|e| DwarfError::Elf(e.to_string()))?;
        let endian = if file.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        let mut sections = Vec::new();
        for id in ALL_SECTIONS {
            if purpose == Purpose::Globals && FUNCTIONS_ONLY.contains(&id) {
                continue;
            }
            let Some(section) = file.section_by_name(id.name()) else {
                continue;
            };
            let data = section_data(&section)
                .map_err(|e| DwarfError::Elf(format!("section {}: {e}", id.name())))?;
            sections.push((id, data));
        }
        Ok(DebugSections { endian, sections })
    }

    fn get(&self, id: gimli::SectionId) -> Slice<'_> {
        let data = self
            .sections
            .iter()
            .find(|(have, _)| *have == id)
            .map(|(_, data)| &**data)
            .unwrap_or(&[]);
        EndianSlice::new(data, self.endian)
    }
}

/// A section's bytes, inflated if compressed. The size a compressed section's header declares
/// is capped ([`MAX_SECTION_BYTES`]), and inflating never produces more than that size: zlib
/// is inflated by `object` into a buffer of exactly the declared size, which it never grows;
/// zstd is inflated here through a reader limited to one byte past it (`object` would inflate
/// the whole stream first and compare afterwards: a few KiB can inflate to gigabytes).
fn section_data<'a>(section: &object::Section<'a, '_>) -> Result<Cow<'a, [u8]>, String> {
    let compressed = section.compressed_data().map_err(|e| e.to_string())?;
    if compressed.format == object::CompressionFormat::None {
        return Ok(Cow::Borrowed(compressed.data));
    }
    if compressed.uncompressed_size > MAX_SECTION_BYTES {
        return Err(format!(
            "declares {} bytes uncompressed, more than the {} GiB the sidecar inflates",
            compressed.uncompressed_size,
            MAX_SECTION_BYTES >> 30
        ));
    }
    match compressed.format {
        object::CompressionFormat::Zstandard => {
            // Within MAX_SECTION_BYTES, which fits a 64-bit usize.
            let size = usize::try_from(compressed.uncompressed_size).map_err(|e| e.to_string())?;
            inflate_zstd(compressed.data, size).map(Cow::Owned)
        }
        _ => compressed.decompress().map_err(|e| e.to_string()),
    }
}

/// Inflates zstd frames (skippable ones skipped) that must inflate to exactly `size` bytes;
/// at most `size + 1` bytes are ever produced.
fn inflate_zstd(mut input: &[u8], size: usize) -> Result<Vec<u8>, String> {
    use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
    use std::io::Read as _;
    let mut out = Vec::new();
    out.try_reserve_exact(size)
        .map_err(|_| format!("cannot allocate the {size} bytes it declares"))?;
    while !input.is_empty() {
        let decoder = match ruzstd::decoding::StreamingDecoder::new(&mut input) {
            Ok(decoder) => decoder,
            Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                length,
                ..
            })) => {
                input = usize::try_from(length)
                    .ok()
                    .and_then(|length| input.get(length..))
                    .ok_or("a skippable zstd frame runs past the section")?;
                continue;
            }
            Err(e) => return Err(format!("invalid zstd data: {e}")),
        };
        let room = (size - out.len()) as u64 + 1;
        decoder
            .take(room)
            .read_to_end(&mut out)
            .map_err(|e| format!("invalid zstd data: {e}"))?;
        if out.len() > size {
            return Err(format!(
                "inflates past the {size} bytes its compression header declares"
            ));
        }
    }
    if out.len() != size {
        return Err(format!(
            "inflates to {} bytes where its compression header declares {size}",
            out.len()
        ));
    }
    Ok(out)
}

/// The sections gimli may ask for.
const ALL_SECTIONS: [gimli::SectionId; 14] = [
    gimli::SectionId::DebugAbbrev,
    gimli::SectionId::DebugAddr,
    gimli::SectionId::DebugAranges,
    gimli::SectionId::DebugInfo,
    gimli::SectionId::DebugLine,
    gimli::SectionId::DebugLineStr,
    gimli::SectionId::DebugLoc,
    gimli::SectionId::DebugLocLists,
    gimli::SectionId::DebugRanges,
    gimli::SectionId::DebugRngLists,
    gimli::SectionId::DebugStr,
    gimli::SectionId::DebugStrOffsets,
    gimli::SectionId::DebugTypes,
    gimli::SectionId::DebugMacinfo,
];

/// The abbreviation tables of one file's units, each parsed once, and the bytes of
/// `.debug_abbrev` they may still read. gimli's own cache shares a table only between units
/// known in advance to use the same offset; 20 000 units at 20 000 distinct offsets inside one
/// table of 50 000 entries would each parse the rest of it (gigabytes for 0.5 MB of DWARF).
/// A table is measured by scanning its bytes (no allocation) before gimli parses it.
struct AbbreviationTables<'a> {
    section: &'a [u8],
    parsed: HashMap<u64, std::sync::Arc<gimli::Abbreviations>>,
    budget: u64,
    left: u64,
}

impl<'a> AbbreviationTables<'a> {
    fn new(section: Slice<'a>) -> Self {
        let section = section.slice();
        let budget = (section.len() as u64).saturating_mul(ABBREVIATIONS_PER_SECTION_BYTE);
        AbbreviationTables {
            section,
            parsed: HashMap::new(),
            budget,
            left: budget,
        }
    }

    fn get(
        &mut self,
        dwarf: &gimli::Dwarf<Slice<'a>>,
        header: &gimli::UnitHeader<Slice<'a>>,
    ) -> Result<std::sync::Arc<gimli::Abbreviations>, DwarfError> {
        let offset = header.debug_abbrev_offset().0 as u64;
        if let Some(table) = self.parsed.get(&offset) {
            return Ok(table.clone());
        }
        let Some(len) = abbreviation_table_len(self.section, offset, self.left) else {
            return Err(DwarfError::AbbreviationsOverlap {
                section: self.section.len() as u64,
                budget: self.budget,
            });
        };
        self.left -= len;
        let table = dwarf.abbreviations(header)?;
        self.parsed.insert(offset, table.clone());
        Ok(table)
    }
}

/// The bytes of the abbreviation table at `offset` (to its terminating 0, or the section's
/// end: gimli then reports what is malformed), or `None` if that is more than `budget`.
fn abbreviation_table_len(section: &[u8], offset: u64, budget: u64) -> Option<u64> {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(section.len());
    let mut at = start;
    let within = |at: usize| (at - start) as u64 <= budget;
    // Each entry: its code (0 ends the table), tag and children byte, then (attribute, form)
    // pairs up to (0, 0), a DW_FORM_implicit_const's with its value after them.
    'entries: loop {
        if !within(at) {
            return None;
        }
        let (Some(code), Some(_tag)) = (uleb(section, &mut at), uleb(section, &mut at)) else {
            break;
        };
        if code == 0 || section.get(at).is_none() {
            break;
        }
        at += 1;
        loop {
            let (Some(attribute), Some(form)) = (uleb(section, &mut at), uleb(section, &mut at))
            else {
                break 'entries;
            };
            if attribute == 0 && form == 0 {
                break;
            }
            if form == u64::from(gimli::DW_FORM_implicit_const.0)
                && uleb(section, &mut at).is_none()
            {
                break 'entries;
            }
            if !within(at) {
                return None;
            }
        }
    }
    within(at).then_some((at - start) as u64)
}

/// The (S)LEB128 at `at` in `section`, as unsigned (its bits past 64 dropped: only its length
/// and whether it is 0 or a form code matter here); `None` at the section's end.
fn uleb(section: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    let mut shift = 0u32;
    loop {
        let byte = *section.get(*at)?;
        *at += 1;
        if shift < 64 {
            value |= u64::from(byte & 0x7f) << shift;
        }
        shift = shift.saturating_add(7);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
}

/// The DWARF of one ELF file.
pub struct Debug<'a> {
    dwarf: gimli::Dwarf<Slice<'a>>,
    units: Vec<gimli::Unit<Slice<'a>>>,
}

impl<'a> Debug<'a> {
    pub fn load(sections: &'a DebugSections<'_>) -> Result<Debug<'a>, DwarfError> {
        let dwarf = gimli::Dwarf::load(|id| Ok::<_, gimli::Error>(sections.get(id)))?;
        // Units that share an abbreviation table share one parsed copy: without that, every
        // unit kept here holds its own, and memory is units × table (20 000 units of 12 bytes
        // sharing a 300 KB table would hold gigabytes). Tables at distinct offsets are each
        // measured before they are parsed, against a budget (see `AbbreviationTables`).
        let mut tables = AbbreviationTables::new(sections.get(gimli::SectionId::DebugAbbrev));
        let mut units = Vec::new();
        let mut headers = dwarf.units();
        while let Some(header) = headers.next()? {
            let abbreviations = tables.get(&dwarf, &header)?;
            let unit = gimli::Unit::new_with_abbreviations(&dwarf, header, abbreviations)?;
            if unit.encoding().address_size != 8 {
                return Err(DwarfError::AddressSize(unit.encoding().address_size));
            }
            units.push(unit);
        }
        Ok(Debug { dwarf, units })
    }

    /// Every global named (qualified or by linkage name) in `wanted`, by the name asked for.
    pub fn find_globals(
        &self,
        wanted: &BTreeSet<&str>,
    ) -> Result<BTreeMap<String, Vec<Global>>, DwarfError> {
        let mut search = GlobalSearch::default();
        for index in 0..self.units.len() {
            self.find_in_unit(index, wanted, &mut search)?;
        }
        // Definitions that name their variable only through a DIE the pass had not seen yet
        // (another unit's, as GCC's LTO output does, or later in their own unit).
        for (die, origin) in std::mem::take(&mut search.unnamed) {
            if let Some((asked, qualified)) = search.wanted_declarations.get(&origin) {
                let global = self.global(die, Some(origin), qualified.clone())?;
                search.found.entry(asked.clone()).or_default().push(global);
            }
        }
        Ok(search.found)
    }

    fn find_in_unit(
        &self,
        index: usize,
        wanted: &BTreeSet<&str>,
        search: &mut GlobalSearch,
    ) -> Result<(), DwarfError> {
        let unit = &self.units[index];
        let mut cursor = unit.entries();
        let mut scopes = Scopes::default();
        // The wanted variables seen so far (name asked for, qualified name), for definitions
        // that only point at their declaration. Only wanted ones: unwanted names are never
        // built.
        let mut declared: HashMap<UnitOffset<usize>, (String, String)> = HashMap::new();
        // The other declarations seen so far, by name and scope only: a definition that
        // names itself only by its linkage name (clang's out-of-class definition of a static
        // data member) takes its qualified name from one.
        let mut unwanted: HashMap<UnitOffset<usize>, ScopedName> = HashMap::new();
        while let Some(entry) = cursor.next_dfs()? {
            let depth = entry.depth();
            scopes.leave_to(depth);
            let tag = entry.tag();
            match self.scope_of(index, entry) {
                Scope::Named(name) => {
                    scopes.push(depth, Some(name));
                    continue;
                }
                Scope::Code => {
                    scopes.push(depth, None);
                    continue;
                }
                Scope::None => {}
            }
            if tag != gimli::DW_TAG_variable || scopes.in_code() {
                continue;
            }
            let this = DieRef {
                unit: index,
                offset: entry.offset(),
            };
            // The DIE a nameless definition takes its name, type and line from: its
            // declaration (`DW_AT_specification`) or, in GCC's LTO output, the early-debug
            // DIE in another unit (`DW_AT_abstract_origin`).
            let origin = [gimli::DW_AT_specification, gimli::DW_AT_abstract_origin]
                .into_iter()
                .find_map(|at| entry.attr_value(at))
                .and_then(|value| self.reference(index, value));
            let (asked, qualified) = match self.name(index, entry) {
                Some(name) => {
                    let asked = match scopes.wanted(&name, wanted) {
                        Some(asked) => Some(asked.to_owned()),
                        None => self.linkage_name(index, entry, wanted),
                    };
                    let Some(asked) = asked else {
                        if entry.attr(gimli::DW_AT_location).is_none() {
                            unwanted.insert(entry.offset(), scopes.scoped(&name));
                        }
                        continue;
                    };
                    (asked, scopes.qualified(&name))
                }
                None => match origin {
                    Some(o) if o.unit == index && declared.contains_key(&o.offset) => {
                        declared[&o.offset].clone()
                    }
                    // Wanted by its own linkage name: qualified by its declaration's scope
                    // when that is known here, else known by the linkage name.
                    Some(o) if let Some(linkage) = self.linkage_name(index, entry, wanted) => {
                        let qualified = match unwanted.get(&o.offset).filter(|_| o.unit == index) {
                            Some(scoped) => scopes.qualified_in(scoped),
                            None => linkage.clone(),
                        };
                        (linkage, qualified)
                    }
                    Some(o) => {
                        // Not a wanted declaration seen in this unit: one later in it, or in
                        // another unit, resolved after the pass.
                        if entry.attr(gimli::DW_AT_location).is_some() {
                            search.unnamed.push((this, o));
                        } else {
                            // A declaration completed elsewhere: its name is its origin's.
                            search.aliases.push((this, o));
                        }
                        continue;
                    }
                    None => continue,
                },
            };
            declared.insert(entry.offset(), (asked.clone(), qualified.clone()));
            if entry.attr(gimli::DW_AT_location).is_none() {
                // A declaration; its definition carries the location, and may name it only
                // through this DIE.
                search.wanted_declarations.insert(this, (asked, qualified));
                continue;
            }
            let global = self.global(this, origin, qualified)?;
            search.found.entry(asked).or_default().push(global);
        }
        search.resolve_aliases();
        Ok(())
    }

    /// A DIE's own linkage name, if it is one of `wanted`.
    fn linkage_name(
        &self,
        index: usize,
        entry: &Die<'a>,
        wanted: &BTreeSet<&str>,
    ) -> Option<String> {
        [gimli::DW_AT_linkage_name, gimli::DW_AT_MIPS_linkage_name]
            .into_iter()
            .find_map(|at| entry.attr_value(at))
            .and_then(|value| self.string(index, value))
            .filter(|linkage| wanted.contains(linkage.as_str()))
    }

    /// The global defined at `die`, its type, file and line taken from the first of it, its
    /// origin and the origin's own declaration that carries them (each read in its own unit).
    fn global(
        &self,
        die: DieRef,
        origin: Option<DieRef>,
        qualified_name: String,
    ) -> Result<Global, DwarfError> {
        let entry = self.entry(die)?;
        let mut chain = vec![(die.unit, entry.clone())];
        let mut next = origin;
        // A declaration chain is at most a definition, an abstract instance and a
        // declaration; the bound also stops a malformed cycle.
        while let Some(at) = next.take()
            && chain.len() < 4
        {
            let origin_entry = self.entry(at)?;
            next = [gimli::DW_AT_specification, gimli::DW_AT_abstract_origin]
                .into_iter()
                .find_map(|a| origin_entry.attr_value(a))
                .and_then(|value| self.reference(at.unit, value));
            chain.push((at.unit, origin_entry));
        }
        let attr = |at| {
            chain
                .iter()
                .find_map(|(unit, e)| e.attr_value(at).map(|v| (*unit, v)))
        };
        let address = match entry.attr_value(gimli::DW_AT_location) {
            Some(location) => self.static_address(die.unit, location),
            None => Err("it has no location"),
        };
        Ok(Global {
            qualified_name,
            address,
            type_die: attr(gimli::DW_AT_type).and_then(|(unit, v)| self.reference(unit, v)),
            decl_file: attr(gimli::DW_AT_decl_file)
                .and_then(|(unit, v)| self.file_name(unit, v))
                .unwrap_or_default(),
            decl_line: attr(gimli::DW_AT_decl_line)
                .and_then(|(_, v)| v.udata_value())
                .and_then(|line| u32::try_from(line).ok())
                .unwrap_or(0),
        })
    }

    /// The address of a variable whose location is one `DW_OP_addr` (or `DW_OP_addrx`).
    fn static_address(
        &self,
        index: usize,
        location: AttributeValue<Slice<'a>>,
    ) -> Result<u64, &'static str> {
        let unit = &self.units[index];
        let Some(expression) = location.exprloc_value() else {
            return Err("its location is a location list: it does not live at one address");
        };
        let mut operations = expression.operations(unit.encoding());
        let first = operations
            .next()
            .map_err(|_| "its location expression is malformed")?;
        let rest = operations
            .next()
            .map_err(|_| "its location expression is malformed")?;
        match (first, rest) {
            (Some(gimli::Operation::Address { address }), None) => Ok(address),
            (Some(gimli::Operation::AddressIndex { index: i }), None) => self
                .dwarf
                .address(unit, i)
                .map_err(|_| "its DW_OP_addrx index is not in .debug_addr"),
            (_, Some(gimli::Operation::TLS)) | (Some(gimli::Operation::TLS), _) => {
                Err("it is thread-local; thread-local variables are not supported yet")
            }
            _ => Err("its location is not a fixed address"),
        }
    }

    /// Every function (subprogram outside other functions) named, qualified or by linkage
    /// name, in `wanted`, by the name asked for; declarations and abstract instances included,
    /// so that the caller can say why a name has no entry.
    pub fn find_functions(
        &self,
        wanted: &BTreeSet<&str>,
    ) -> Result<BTreeMap<String, Vec<Function>>, DwarfError> {
        let mut found: BTreeMap<String, Vec<Function>> = BTreeMap::new();
        for index in 0..self.units.len() {
            self.find_functions_in_unit(index, wanted, &mut found)?;
        }
        Ok(found)
    }

    fn find_functions_in_unit(
        &self,
        index: usize,
        wanted: &BTreeSet<&str>,
        found: &mut BTreeMap<String, Vec<Function>>,
    ) -> Result<(), DwarfError> {
        let unit = &self.units[index];
        let c_language = unit
            .entries()
            .next_dfs()?
            .and_then(|root| root.attr_value(gimli::DW_AT_language))
            .is_some_and(|language| {
                matches!(
                    language,
                    AttributeValue::Language(
                        gimli::DW_LANG_C
                            | gimli::DW_LANG_C89
                            | gimli::DW_LANG_C99
                            | gimli::DW_LANG_C11
                            | gimli::DW_LANG_C17
                            | gimli::DW_LANG_C_plus_plus
                            | gimli::DW_LANG_C_plus_plus_11
                            | gimli::DW_LANG_C_plus_plus_14
                            | gimli::DW_LANG_C_plus_plus_17
                            | gimli::DW_LANG_C_plus_plus_20
                    )
                )
            });
        let mut cursor = unit.entries();
        let mut scopes = Scopes::default();
        while let Some(entry) = cursor.next_dfs()? {
            let depth = entry.depth();
            scopes.leave_to(depth);
            match self.scope_of(index, entry) {
                Scope::Named(name) => {
                    scopes.push(depth, Some(name));
                    continue;
                }
                Scope::Code if entry.tag() == gimli::DW_TAG_subprogram => {}
                Scope::Code => {
                    scopes.push(depth, None);
                    continue;
                }
                Scope::None => continue,
            }
            let inside_function = scopes.in_code();
            scopes.push(depth, None);
            if inside_function {
                continue;
            }
            // A definition may carry its name, type and line only on the DIE it refers to.
            let origin = [gimli::DW_AT_specification, gimli::DW_AT_abstract_origin]
                .into_iter()
                .find_map(|at| entry.attr_value(at))
                .and_then(|value| self.reference(index, value))
                .map(|die| self.entry(die).map(|e| (die, e)))
                .transpose()?;
            let attr = |at| {
                entry
                    .attr_value(at)
                    .or_else(|| origin.as_ref().and_then(|(_, e)| e.attr_value(at)))
            };
            let origin_unit = origin.as_ref().map_or(index, |(die, _)| die.unit);
            let string_of = |at| {
                entry
                    .attr_value(at)
                    .and_then(|v| self.string(index, v))
                    .or_else(|| {
                        origin
                            .as_ref()
                            .and_then(|(_, e)| e.attr_value(at))
                            .and_then(|v| self.string(origin_unit, v))
                    })
            };
            let Some(name) = string_of(gimli::DW_AT_name) else {
                continue;
            };
            let asked = match scopes.wanted(&name, wanted) {
                Some(asked) => Some(asked),
                None => string_of(gimli::DW_AT_linkage_name)
                    .or_else(|| string_of(gimli::DW_AT_MIPS_linkage_name))
                    .and_then(|linkage| wanted.get(linkage.as_str()).copied()),
            };
            let Some(asked) = asked else {
                continue;
            };
            let qualified = scopes.qualified(&name);
            let entry_pc = match entry.attr_value(gimli::DW_AT_low_pc) {
                Some(value) => self.dwarf.attr_address(unit, value)?,
                None => match entry.attr_value(gimli::DW_AT_entry_pc) {
                    Some(value) => self.dwarf.attr_address(unit, value)?,
                    None => None,
                },
            };
            let frame_base = match entry.attr_value(gimli::DW_AT_frame_base) {
                Some(AttributeValue::Exprloc(expression)) => {
                    let mut operations = expression.operations(unit.encoding());
                    match operations.next() {
                        Ok(Some(gimli::Operation::CallFrameCFA)) => FrameBase::Cfa,
                        Ok(Some(gimli::Operation::Register { .. })) => FrameBase::Register,
                        _ => FrameBase::Unknown,
                    }
                }
                _ => FrameBase::Unknown,
            };
            let params = match entry_pc {
                Some(pc) => self.params(index, entry.offset(), pc, frame_base)?,
                None => Vec::new(),
            };
            let function = Function {
                qualified_name: qualified.clone(),
                entry: entry_pc,
                inlined: attr(gimli::DW_AT_inline).is_some_and(|v| {
                    matches!(
                        v,
                        AttributeValue::Inline(
                            gimli::DW_INL_inlined | gimli::DW_INL_declared_inlined
                        )
                    )
                }),
                nocall: matches!(
                    attr(gimli::DW_AT_calling_convention),
                    Some(AttributeValue::CallingConvention(gimli::DW_CC_nocall))
                ),
                c_language,
                decl_file: attr(gimli::DW_AT_decl_file)
                    .and_then(|v| self.file_name(origin_unit, v))
                    .unwrap_or_default(),
                decl_line: attr(gimli::DW_AT_decl_line)
                    .and_then(|v| v.udata_value())
                    .and_then(|line| u32::try_from(line).ok())
                    .unwrap_or(0),
                params,
                return_type: match entry.attr_value(gimli::DW_AT_type) {
                    Some(value) => self.reference(index, value),
                    None => origin
                        .as_ref()
                        .and_then(|(_, e)| e.attr_value(gimli::DW_AT_type))
                        .and_then(|value| self.reference(origin_unit, value)),
                },
            };
            found.entry(asked.to_owned()).or_default().push(function);
        }
        Ok(())
    }

    /// The formal parameters of the subprogram at `offset`, located at `pc`.
    fn params(
        &self,
        index: usize,
        offset: UnitOffset<usize>,
        pc: u64,
        frame_base: FrameBase,
    ) -> Result<Vec<Param>, DwarfError> {
        let unit = &self.units[index];
        let mut params = Vec::new();
        for child in self.children(DieRef {
            unit: index,
            offset,
        })? {
            if child.tag() != gimli::DW_TAG_formal_parameter {
                continue;
            }
            let origin = child
                .attr_value(gimli::DW_AT_abstract_origin)
                .and_then(|value| self.reference(index, value))
                .map(|die| self.entry(die).map(|e| (die, e)))
                .transpose()?;
            let origin_unit = origin.as_ref().map_or(index, |(die, _)| die.unit);
            let name = self
                .name(index, &child)
                .or_else(|| origin.as_ref().and_then(|(_, e)| self.name(origin_unit, e)))
                .unwrap_or_default();
            let type_die = match child.attr_value(gimli::DW_AT_type) {
                Some(value) => self.reference(index, value),
                None => origin
                    .as_ref()
                    .and_then(|(_, e)| e.attr_value(gimli::DW_AT_type))
                    .and_then(|value| self.reference(origin_unit, value)),
            };
            let location = if let Some(value) = child.attr_value(gimli::DW_AT_const_value) {
                const_location(value)
            } else {
                match child.attr_value(gimli::DW_AT_location) {
                    None => ParamLocation::NotCaptured(location::OPTIMIZED_OUT),
                    Some(AttributeValue::Exprloc(expression)) => {
                        location::evaluate(expression, unit.encoding(), frame_base)
                    }
                    Some(value) => match self.dwarf.attr_locations(unit, value)? {
                        None => ParamLocation::NotCaptured(
                            "its location attribute has a form the sidecar does not read",
                        ),
                        Some(mut list) => {
                            let mut at_entry = ParamLocation::NotCaptured(location::OPTIMIZED_OUT);
                            while let Some(item) = list.next()? {
                                if (item.range.begin..item.range.end).contains(&pc) {
                                    at_entry =
                                        location::evaluate(item.data, unit.encoding(), frame_base);
                                    break;
                                }
                            }
                            at_entry
                        }
                    },
                }
            };
            params.push(Param {
                name,
                type_die,
                location,
            });
        }
        Ok(params)
    }

    /// What a DIE is to the names nested in it.
    fn scope_of(&self, index: usize, entry: &Die<'a>) -> Scope {
        let tag = entry.tag();
        if tag == gimli::DW_TAG_namespace
            || tag == gimli::DW_TAG_structure_type
            || tag == gimli::DW_TAG_class_type
            || tag == gimli::DW_TAG_union_type
            || tag == gimli::DW_TAG_module
        {
            Scope::Named(self.name(index, entry).unwrap_or_else(|| "{anon}".into()))
        } else if tag == gimli::DW_TAG_subprogram
            || tag == gimli::DW_TAG_lexical_block
            || tag == gimli::DW_TAG_inlined_subroutine
        {
            Scope::Code
        } else {
            Scope::None
        }
    }

    pub(crate) fn entry(&self, die: DieRef) -> Result<Die<'a>, DwarfError> {
        let unit = &self.units[die.unit];
        Ok(unit.entry(die.offset)?)
    }

    /// The children of a DIE, in order.
    pub(crate) fn children(&self, die: DieRef) -> Result<Vec<Die<'a>>, DwarfError> {
        let unit = &self.units[die.unit];
        let mut tree = unit.entries_tree(Some(die.offset))?;
        let root = tree.root()?;
        let mut children = root.children();
        let mut out = Vec::new();
        while let Some(child) = children.next()? {
            out.push(child.entry().clone());
        }
        Ok(out)
    }

    /// `DW_AT_name` of a DIE in unit `index`.
    pub(crate) fn name(&self, index: usize, entry: &Die<'a>) -> Option<String> {
        entry
            .attr_value(gimli::DW_AT_name)
            .and_then(|value| self.string(index, value))
    }

    pub(crate) fn string(&self, index: usize, value: AttributeValue<Slice<'a>>) -> Option<String> {
        let unit = &self.units[index];
        self.dwarf
            .attr_string(unit, value)
            .ok()
            .map(|s| s.to_string_lossy().into_owned())
    }

    /// A reference attribute's target, within its unit or across units.
    pub(crate) fn reference(
        &self,
        index: usize,
        value: AttributeValue<Slice<'a>>,
    ) -> Option<DieRef> {
        match value {
            AttributeValue::UnitRef(offset) => Some(DieRef {
                unit: index,
                offset,
            }),
            AttributeValue::DebugInfoRef(offset) => {
                self.units.iter().enumerate().find_map(|(unit, u)| {
                    offset
                        .to_unit_offset(&u.header)
                        .map(|offset| DieRef { unit, offset })
                })
            }
            _ => None,
        }
    }

    fn file_name(&self, index: usize, value: AttributeValue<Slice<'a>>) -> Option<String> {
        let AttributeValue::FileIndex(file) = value else {
            return None;
        };
        let unit = &self.units[index];
        let header = unit.line_program.as_ref()?.header();
        let entry = header.file(file)?;
        let name = self.string(index, entry.path_name())?;
        if name.starts_with('/') {
            return Some(name);
        }
        let directory = entry
            .directory(header)
            .and_then(|dir| self.string(index, dir));
        Some(match directory {
            Some(dir) if !dir.is_empty() => format!("{dir}/{name}"),
            _ => name,
        })
    }
}

/// A parameter whose value the compiler knows (`DW_AT_const_value`), as a place.
fn const_location(value: AttributeValue<Slice<'_>>) -> ParamLocation {
    let bytes = match value {
        AttributeValue::Block(block) => block.slice().to_vec(),
        AttributeValue::Sdata(value) => value.to_le_bytes().to_vec(),
        other => match other.udata_value() {
            Some(value) => value.to_le_bytes().to_vec(),
            None => {
                return ParamLocation::NotCaptured(
                    "its constant value has a form the sidecar does not read",
                );
            }
        },
    };
    ParamLocation::Pieces(vec![location::Piece {
        place: Place::Value(bytes),
        size: None,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_match_qualified_names_part_by_part() {
        let mut scopes = Scopes::default();
        scopes.push(1, Some("a".into()));
        scopes.push(2, Some("b".into()));
        let wanted = BTreeSet::from(["a::b::x", "b::x", "x"]);
        assert_eq!(scopes.wanted("x", &wanted), Some("a::b::x"));
        assert!(!scopes.qualifies("a::bx", "x"));
        assert!(!scopes.qualifies("a::b::y", "x"));
        assert!(!scopes.qualifies("c::a::b::x", "x"));
        assert_eq!(scopes.qualified("x"), "a::b::x");
        assert!(!scopes.in_code());
        scopes.push(3, None);
        assert!(scopes.in_code());
        // Leaving to depth 2 leaves the code and `b`.
        scopes.leave_to(2);
        assert!(!scopes.in_code());
        assert_eq!(scopes.wanted("x", &wanted), None);
        assert!(scopes.qualifies("a::x", "x"));
        scopes.leave_to(0);
        assert_eq!(scopes.wanted("x", &wanted), Some("x"));
    }

    #[test]
    fn a_zstd_stream_is_inflated_to_its_declared_size_and_no_further() {
        // One frame: a raw block of 4 bytes, then an RLE block of 128 KiB.
        let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58];
        let raw = (4u32 << 3) & !1; // raw block, not last
        frame.extend_from_slice(&raw.to_le_bytes()[..3]);
        frame.extend_from_slice(b"abcd");
        let rle = (131_072u32 << 3) | (1 << 1) | 1;
        frame.extend_from_slice(&rle.to_le_bytes()[..3]);
        frame.push(b'z');
        let whole = 4 + 131_072;
        let inflated = inflate_zstd(&frame, whole).expect("inflates");
        assert_eq!(&inflated[..4], b"abcd");
        assert_eq!(inflated.len(), whole);
        assert!(inflate_zstd(&frame, 64).is_err(), "more than declared");
        assert!(
            inflate_zstd(&frame, whole + 1).is_err(),
            "less than declared"
        );
    }
}

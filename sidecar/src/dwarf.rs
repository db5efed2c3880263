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
}

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
/// (`SHF_COMPRESSED`, zlib or zstd), so that [`Debug`] can borrow them.
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
            let data = section
                .uncompressed_data()
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

/// The DWARF of one ELF file.
pub struct Debug<'a> {
    dwarf: gimli::Dwarf<Slice<'a>>,
    units: Vec<gimli::Unit<Slice<'a>>>,
}

impl<'a> Debug<'a> {
    pub fn load(sections: &'a DebugSections<'_>) -> Result<Debug<'a>, DwarfError> {
        let dwarf = gimli::Dwarf::load(|id| Ok::<_, gimli::Error>(sections.get(id)))?;
        let mut units = Vec::new();
        let mut headers = dwarf.units();
        while let Some(header) = headers.next()? {
            let unit = dwarf.unit(header)?;
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
        // (depth, name) of the enclosing scopes; `None` for a function or block, whose
        // variables are locals.
        let mut scopes: Vec<(isize, Option<String>)> = Vec::new();
        // Qualified names of the variables seen so far, for definitions that only point at
        // their declaration.
        let mut declared: HashMap<UnitOffset<usize>, String> = HashMap::new();
        while let Some(entry) = cursor.next_dfs()? {
            let depth = entry.depth();
            while scopes.last().is_some_and(|(d, _)| *d >= depth) {
                scopes.pop();
            }
            let tag = entry.tag();
            match self.scope_of(index, entry) {
                Scope::Named(name) => {
                    scopes.push((depth, Some(name)));
                    continue;
                }
                Scope::Code => {
                    scopes.push((depth, None));
                    continue;
                }
                Scope::None => {}
            }
            if tag != gimli::DW_TAG_variable || scopes.iter().any(|(_, s)| s.is_none()) {
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
            let qualified = match self.name(index, entry) {
                Some(name) => {
                    let mut parts: Vec<&str> =
                        scopes.iter().filter_map(|(_, s)| s.as_deref()).collect();
                    parts.push(&name);
                    parts.join("::")
                }
                None => match origin {
                    Some(o) if o.unit == index && declared.contains_key(&o.offset) => {
                        declared[&o.offset].clone()
                    }
                    Some(o) => {
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
            declared.insert(entry.offset(), qualified.clone());
            let linkage = [gimli::DW_AT_linkage_name, gimli::DW_AT_MIPS_linkage_name]
                .into_iter()
                .find_map(|at| entry.attr_value(at))
                .and_then(|value| self.string(index, value));
            let asked = [Some(qualified.as_str()), linkage.as_deref()]
                .into_iter()
                .flatten()
                .find(|name| wanted.contains(name))
                .map(str::to_owned);
            let Some(asked) = asked else {
                continue;
            };
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
        let mut scopes: Vec<(isize, Option<String>)> = Vec::new();
        while let Some(entry) = cursor.next_dfs()? {
            let depth = entry.depth();
            while scopes.last().is_some_and(|(d, _)| *d >= depth) {
                scopes.pop();
            }
            match self.scope_of(index, entry) {
                Scope::Named(name) => {
                    scopes.push((depth, Some(name)));
                    continue;
                }
                Scope::Code if entry.tag() == gimli::DW_TAG_subprogram => {}
                Scope::Code => {
                    scopes.push((depth, None));
                    continue;
                }
                Scope::None => continue,
            }
            let inside_function = scopes.iter().any(|(_, s)| s.is_none());
            scopes.push((depth, None));
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
            let mut parts: Vec<&str> = scopes.iter().filter_map(|(_, s)| s.as_deref()).collect();
            parts.push(&name);
            let qualified = parts.join("::");
            let linkage = string_of(gimli::DW_AT_linkage_name)
                .or_else(|| string_of(gimli::DW_AT_MIPS_linkage_name));
            let asked = [Some(qualified.as_str()), linkage.as_deref()]
                .into_iter()
                .flatten()
                .find(|name| wanted.contains(name));
            let Some(asked) = asked else {
                continue;
            };
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

//! The target's DWARF, read with gimli: finding the globals the points file names, and the DIE
//! access the layout compiler needs (`crate::layout`).
//!
//! Finding is one pass over the compilation units, looking only at variable DIEs outside
//! functions, for the declared names only: no full name index is built or kept, and the DWARF
//! is dropped once every point's layout is compiled. A global matches by its qualified name
//! (`rfix::CURRENT`: namespaces joined with `::`; in C just the name) or its linkage name. A
//! definition that carries only `DW_AT_specification` (GCC does this) takes its name from the
//! declaration it points at. Function-local statics are not found yet.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use gimli::{AttributeValue, EndianSlice, RunTimeEndian, UnitOffset};
use object::{Object, ObjectSection};

pub(crate) type Slice<'a> = EndianSlice<'a, RunTimeEndian>;
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

/// The DWARF sections of one ELF file, decompressed where the file compresses them
/// (`SHF_COMPRESSED`, zlib or zstd), so that [`Debug`] can borrow them.
pub struct DebugSections<'a> {
    endian: RunTimeEndian,
    sections: Vec<(gimli::SectionId, Cow<'a, [u8]>)>,
}

impl<'a> DebugSections<'a> {
    pub fn read(bytes: &'a [u8]) -> Result<DebugSections<'a>, DwarfError> {
        let file = object::File::parse(bytes).map_err(|e| DwarfError::Elf(e.to_string()))?;
        let endian = if file.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        let mut sections = Vec::new();
        for id in ALL_SECTIONS {
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
        let mut found: BTreeMap<String, Vec<Global>> = BTreeMap::new();
        for index in 0..self.units.len() {
            self.find_in_unit(index, wanted, &mut found)?;
        }
        Ok(found)
    }

    fn find_in_unit(
        &self,
        index: usize,
        wanted: &BTreeSet<&str>,
        found: &mut BTreeMap<String, Vec<Global>>,
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
            if tag == gimli::DW_TAG_namespace
                || tag == gimli::DW_TAG_structure_type
                || tag == gimli::DW_TAG_class_type
                || tag == gimli::DW_TAG_union_type
                || tag == gimli::DW_TAG_module
            {
                let name = self.name(index, entry).unwrap_or_else(|| "{anon}".into());
                scopes.push((depth, Some(name)));
                continue;
            }
            if tag == gimli::DW_TAG_subprogram
                || tag == gimli::DW_TAG_lexical_block
                || tag == gimli::DW_TAG_inlined_subroutine
            {
                scopes.push((depth, None));
                continue;
            }
            if tag != gimli::DW_TAG_variable || scopes.iter().any(|(_, s)| s.is_none()) {
                continue;
            }
            let specification = match entry.attr_value(gimli::DW_AT_specification) {
                Some(AttributeValue::UnitRef(offset)) => Some(offset),
                _ => None,
            };
            let qualified = match self.name(index, entry) {
                Some(name) => {
                    let mut parts: Vec<&str> =
                        scopes.iter().filter_map(|(_, s)| s.as_deref()).collect();
                    parts.push(&name);
                    parts.join("::")
                }
                None => match specification.and_then(|offset| declared.get(&offset)) {
                    Some(name) => name.clone(),
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
                .find(|name| wanted.contains(name));
            let Some(asked) = asked else {
                continue;
            };
            let Some(location) = entry.attr(gimli::DW_AT_location) else {
                continue; // a declaration; its definition carries the location
            };
            let address = self.static_address(index, location.value());
            // Type, file and line may sit on the declaration only.
            let declaration = match specification {
                Some(offset) => Some(unit.entry(offset)?),
                None => None,
            };
            let attr = |at| {
                entry
                    .attr_value(at)
                    .or_else(|| declaration.as_ref().and_then(|d| d.attr_value(at)))
            };
            let global = Global {
                qualified_name: qualified.clone(),
                address,
                type_die: attr(gimli::DW_AT_type).and_then(|v| self.reference(index, v)),
                decl_file: attr(gimli::DW_AT_decl_file)
                    .and_then(|v| self.file_name(index, v))
                    .unwrap_or_default(),
                decl_line: attr(gimli::DW_AT_decl_line)
                    .and_then(|v| v.udata_value())
                    .and_then(|line| u32::try_from(line).ok())
                    .unwrap_or(0),
            };
            found.entry(asked.to_owned()).or_default().push(global);
        }
        Ok(())
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

//! The target's executable or one of its shared libraries, as mapped: its ELF read through `/proc/PID/map_files` (the exact
//! file mapped, even if deleted or replaced on disk), its build-id, its load bias, and the file
//! that holds its DWARF (itself, or split debug info found by build-id or debuglink).
//!
//! Bias follows samply's rule: for a file mapping at `start` with file offset `offset`, find the
//! `PT_LOAD` segment whose file range holds `offset`; the bias is `start` minus the virtual
//! address that offset has in that segment. The shortcut `start - offset` of the executable
//! mapping is wrong for lld's layout (text at vaddr 0x185e0, file offset 0x175e0), so it is not
//! used. The first mapping and every executable mapping must agree on the bias, or attaching
//! fails.
//!
//! Files are untrusted input: every file read here is opened without blocking (a FIFO must not
//! hang attaching), must be a regular file, and is read up to [`MAX_FILE_BYTES`] (a device
//! such as `/dev/zero` must not take all memory). A `.gnu_debuglink` is a file name, never a
//! path, looked up where gdb looks; the file it names must have the CRC the link records (a
//! stale debug file describes another build, whose addresses would be read as this one's).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, ObjectSegment};

use crate::target::{AttachError, Mapping, Target};

/// Why the target's executable or its debug info cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error("process {pid}: its executable {exe} is not in its memory maps")]
    NotMapped { pid: i32, exe: String },
    #[error("process {pid} has no library named {name} mapped (it has: {mapped})")]
    LibraryNotMapped {
        pid: i32,
        name: String,
        mapped: String,
    },
    #[error(
        "more than one mapped file is named {name} ({paths}); the points file cannot say which"
    )]
    AmbiguousLibrary { name: String, paths: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an ELF file the sidecar can read: {detail}")]
    NotElf { path: PathBuf, detail: String },
    #[error(
        "{path}: mappings disagree on the load bias ({first:#x} and {other:#x}); refusing to guess addresses"
    )]
    InconsistentBias {
        path: PathBuf,
        first: u64,
        other: u64,
    },
    #[error("{path}: no mapping matches a PT_LOAD segment; cannot compute the load bias")]
    NoBias { path: PathBuf },
    #[error(
        "no debug info for {exe} (build-id {build_id}): the sidecar resolves points by DWARF. Build it with `-g` \
         (Rust: `debug = 1` or more in the profile, and do not strip), or install its split debug info: \
         the distribution's `-dbg`/`-dbgsym`/`-debuginfo` package, or a file at \
         /usr/lib/debug/.build-id/{build_id_dir}.debug (in the target's root or the sidecar's), \
         e.g. fetched with `debuginfod-find debuginfo {build_id}`"
    )]
    NoDebugInfo {
        exe: String,
        build_id: String,
        build_id_dir: String,
    },
    #[error(
        "{path}: its debug sections use the legacy .zdebug compression, which this sidecar does not read. \
         Rewrite them with `objcopy --decompress-debug-sections` (or `--compress-debug-sections=zlib-gabi`)"
    )]
    CompressedDebugInfo { path: PathBuf },
    #[error(
        "{path} is the debug file {exe}'s .gnu_debuglink names, but its CRC is {found:#010x} where the \
         link records {expected:#010x}: it is the debug info of another build (stale), whose addresses \
         would be wrong for this one. Install the debug file of this very build"
    )]
    StaleDebugFile {
        exe: String,
        path: PathBuf,
        expected: u32,
        found: u32,
    },
}

/// The largest file read as an object or its debug info (the whole file is held in memory).
pub const MAX_FILE_BYTES: u64 = 4 << 30;

/// Reads a whole regular file, refusing anything else: checked with `stat` before it is
/// opened (opening a device can itself act: a tape rewinds, a modem line is claimed), opened
/// with `O_NONBLOCK` so that a FIFO swapped in meanwhile does not block, checked again with
/// `fstat` (what was opened is what is read), and read up to [`MAX_FILE_BYTES`] (a file
/// growing while read is cut there and refused).
pub fn read_regular_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let not_regular =
        || std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file");
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(not_regular());
    }
    let too_large = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "larger than the {} GiB the sidecar reads",
                MAX_FILE_BYTES >> 30
            ),
        )
    };
    if metadata.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(usize::try_from(metadata.len()).map_err(|_| too_large())?)
        .map_err(|_| too_large())?;
    (&mut file)
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// The CRC-32 a `.gnu_debuglink` records of its debug file: the standard (IEEE 802.3,
/// reflected, as zlib's `crc32`) CRC of the file's bytes, computed several bytes at a time
/// (`crc32fast`): a debug file can be gigabytes.
pub fn gnu_debuglink_crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// A `.gnu_debuglink`'s file name, if it is one: not empty, no `/` (a path would be opened
/// wherever it points: a FIFO, a device), not `.` or `..`, no NUL.
fn debuglink_name(link: &[u8]) -> Option<&OsStr> {
    let plain = !link.is_empty()
        && link != b"."
        && link != b".."
        && !link.iter().any(|b| *b == b'/' || *b == 0);
    plain.then(|| OsStr::from_bytes(link))
}

/// The target's main executable, read once at attach.
#[derive(Debug)]
pub struct MappedObject {
    /// The path the target's maps give it (for messages and Describe).
    pub path: String,
    /// Lowercase hex, empty if the file has none.
    pub build_id: String,
    /// Added to a DWARF/ELF virtual address to get the address in the target.
    pub bias: u64,
    /// The ELF file that holds the DWARF: the executable itself or its split debug file.
    pub debug: DebugFile,
    /// The object itself, through `/proc/PID/map_files`: the exact file mapped, which is what
    /// a uprobe names.
    pub map_file: PathBuf,
    /// Its executable `PT_LOAD` segments: (virtual address, file offset, size in the file).
    pub code_segments: Vec<(u64, u64, u64)>,
}

impl MappedObject {
    /// The file offset of the code at virtual address `address` (before bias), if an
    /// executable segment holds it: a uprobe takes a file offset, never an address.
    pub fn code_file_offset(&self, address: u64) -> Option<u64> {
        self.code_segments
            .iter()
            .find(|(start, _, size)| (*start..start.saturating_add(*size)).contains(&address))
            .map(|(start, offset, _)| offset + (address - start))
    }
}

/// A file holding DWARF sections, read into memory.
#[derive(Debug)]
pub struct DebugFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

impl MappedObject {
    /// The target's executable: its mappings, its ELF through map_files, bias and debug info.
    pub fn main_executable(target: &Target) -> Result<MappedObject, ObjectError> {
        let exe = target.exe_path()?;
        let mappings = target.mappings()?;
        let own: Vec<&Mapping> = mappings
            .iter()
            .filter(|m| m.path.as_deref() == Some(exe.as_str()))
            .collect();
        if own.is_empty() {
            return Err(ObjectError::NotMapped {
                pid: target.pid(),
                exe,
            });
        }
        MappedObject::open(target, exe, &own)
    }

    /// A shared library the target has mapped, by file name: `libfoo.so` matches
    /// `/usr/lib/libfoo.so` and `/usr/lib/libfoo.so.1.2`. Two different files that match are
    /// refused, naming both.
    pub fn library(target: &Target, name: &str) -> Result<MappedObject, ObjectError> {
        let mappings = target.mappings()?;
        let matches = |path: &str| {
            let file = path.rsplit('/').next().unwrap_or(path);
            let file = file.strip_suffix(" (deleted)").unwrap_or(file);
            file == name
                || file
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('.'))
        };
        let paths: BTreeSet<&str> = mappings
            .iter()
            .filter_map(|m| m.path.as_deref())
            .filter(|path| path.starts_with('/') && matches(path))
            .collect();
        let path = match paths.into_iter().collect::<Vec<_>>().as_slice() {
            [one] => (*one).to_owned(),
            [] => {
                let mapped: BTreeSet<&str> = mappings
                    .iter()
                    .filter_map(|m| m.path.as_deref())
                    .filter(|p| p.contains(".so"))
                    .filter_map(|p| p.rsplit('/').next())
                    .collect();
                return Err(ObjectError::LibraryNotMapped {
                    pid: target.pid(),
                    name: name.to_owned(),
                    mapped: mapped.into_iter().collect::<Vec<_>>().join(", "),
                });
            }
            many => {
                return Err(ObjectError::AmbiguousLibrary {
                    name: name.to_owned(),
                    paths: many.join(", "),
                });
            }
        };
        let own: Vec<&Mapping> = mappings
            .iter()
            .filter(|m| m.path.as_deref() == Some(path.as_str()))
            .collect();
        MappedObject::open(target, path, &own)
    }

    /// One mapped object: `own` are its file mappings, `path` as the maps name it.
    fn open(target: &Target, path: String, own: &[&Mapping]) -> Result<MappedObject, ObjectError> {
        let mapped_path = path.strip_suffix(" (deleted)").unwrap_or(&path).to_owned();
        let first = own
            .iter()
            .min_by_key(|m| m.offset)
            .ok_or_else(|| ObjectError::NotMapped {
                pid: target.pid(),
                exe: path.clone(),
            })?;
        let elf_path = first.map_file(target.pid());
        let bytes = read_regular_file(&elf_path).map_err(|source| match source.kind() {
            std::io::ErrorKind::PermissionDenied => map_files_permission(target.pid()),
            _ => ObjectError::Read {
                path: elf_path.clone(),
                source,
            },
        })?;
        let file = parse(&elf_path, &bytes)?;
        let build_id = build_id_hex(&file);
        let bias = load_bias(&elf_path, &file, own)?;
        let code_segments = file
            .segments()
            .filter(|segment| {
                matches!(segment.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0)
            })
            .map(|segment| {
                let (offset, size) = segment.file_range();
                (segment.address(), offset, size)
            })
            .collect();
        let has_dwarf = has_debug_info(&elf_path, &file)?;
        drop(file);
        let map_file = elf_path.clone();
        let debug = if has_dwarf {
            DebugFile {
                path: elf_path,
                bytes,
            }
        } else {
            find_split_debug(target, Path::new(&mapped_path), &bytes, &build_id)?
        };
        Ok(MappedObject {
            path,
            build_id,
            bias,
            debug,
            map_file,
            code_segments,
        })
    }
}

/// The refusal to read `/proc/PID/map_files`, saying what to grant.
pub(crate) fn map_files_permission(pid: i32) -> ObjectError {
    ObjectError::Attach(AttachError::Permission {
        pid,
        advice: format!(
            "reading /proc/PID/map_files needs CAP_SYS_ADMIN or CAP_SYS_PTRACE over the target; \
             grant CAP_SYS_PTRACE ({})",
            crate::grant::setcap("cap_sys_ptrace")
        ),
    })
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<object::File<'a>, ObjectError> {
    object::File::parse(bytes).map_err(|error| ObjectError::NotElf {
        path: path.to_owned(),
        detail: error.to_string(),
    })
}

fn build_id_hex(file: &object::File<'_>) -> String {
    match file.build_id() {
        Ok(Some(id)) => id.iter().map(|b| format!("{b:02x}")).collect(),
        _ => String::new(),
    }
}

/// Whether the file itself carries DWARF for its globals. Sections compressed the standard
/// way (`SHF_COMPRESSED`) are read; the legacy `.zdebug_*` sections are refused.
fn has_debug_info(path: &Path, file: &object::File<'_>) -> Result<bool, ObjectError> {
    if file.section_by_name(".zdebug_info").is_some() {
        return Err(ObjectError::CompressedDebugInfo {
            path: path.to_owned(),
        });
    }
    Ok(file
        .section_by_name(".debug_info")
        .is_some_and(|section| section.size() > 0))
}

/// The bias of an object from its file mappings (samply's rule, see the module docs).
fn load_bias(
    path: &Path,
    file: &object::File<'_>,
    mappings: &[&Mapping],
) -> Result<u64, ObjectError> {
    let segments: Vec<Segment> = file
        .segments()
        .map(|segment| {
            let (offset, size) = segment.file_range();
            let flags = match segment.flags() {
                object::SegmentFlags::Elf { p_flags } => p_flags,
                _ => 0,
            };
            Segment {
                address: segment.address(),
                offset,
                size,
                writable: flags & object::elf::PF_W != 0,
                executable: flags & object::elf::PF_X != 0,
            }
        })
        .collect();
    // The first mapping and the executable ones say the bias unambiguously; a writable or
    // RELRO (made read-only after relocation) mapping may share a file page with read-only
    // data, so those are not asked.
    let lowest = mappings.iter().map(|m| m.offset).min().unwrap_or(0);
    let asked = mappings
        .iter()
        .filter(|m| m.offset == lowest || m.perms.as_bytes().get(2) == Some(&b'x'));
    let mut bias: Option<u64> = None;
    for mapping in asked {
        let writable = mapping.perms.as_bytes().get(1) == Some(&b'w');
        let executable = mapping.perms.as_bytes().get(2) == Some(&b'x');
        let Some(Segment {
            address, offset, ..
        }) = segments.iter().find(|segment| {
            let page_start = segment.offset & !0xfff;
            let end = segment
                .offset
                .saturating_add(segment.size)
                .max(page_start + 1);
            (page_start..end).contains(&mapping.offset)
                && segment.writable == writable
                && segment.executable == executable
        })
        else {
            continue;
        };
        // The SVMA the mapping's first byte has in that segment.
        let svma = address.wrapping_add(mapping.offset).wrapping_sub(*offset);
        let this = mapping.start.wrapping_sub(svma);
        match bias {
            None => bias = Some(this),
            Some(first) if first != this => {
                return Err(ObjectError::InconsistentBias {
                    path: path.to_owned(),
                    first,
                    other: this,
                });
            }
            Some(_) => {}
        }
    }
    bias.ok_or_else(|| ObjectError::NoBias {
        path: path.to_owned(),
    })
}

/// A `PT_LOAD` segment: where it is in memory and in the file, and its permissions.
struct Segment {
    address: u64,
    offset: u64,
    size: u64,
    writable: bool,
    executable: bool,
}

/// Split debug info: by build-id under /usr/lib/debug/.build-id, then by `.gnu_debuglink`
/// next to the executable, in its `.debug/` and under /usr/lib/debug (gdb's places); each place
/// looked up in the target's root first (a container's files), then the sidecar's. A candidate
/// must carry the same build-id as the executable when the executable has one, and one found
/// by debuglink must have the CRC the link records: a stale file is refused with
/// [`ObjectError::StaleDebugFile`] when nothing else is found.
fn find_split_debug(
    target: &Target,
    exe: &Path,
    exe_bytes: &[u8],
    build_id: &str,
) -> Result<DebugFile, ObjectError> {
    // (path, the CRC its debuglink records; `None` for the build-id path).
    let mut candidates: Vec<(PathBuf, Option<u32>)> = Vec::new();
    if build_id.len() > 2 {
        candidates.push((
            PathBuf::from(format!(
                "/usr/lib/debug/.build-id/{}/{}.debug",
                &build_id[..2],
                &build_id[2..]
            )),
            None,
        ));
    }
    if let Ok(file) = object::File::parse(exe_bytes)
        && let Ok(Some((link, crc))) = file.gnu_debuglink()
    {
        match debuglink_name(link) {
            Some(name) => {
                let dir = exe.parent().unwrap_or(Path::new("/"));
                let relative = dir.strip_prefix("/").unwrap_or(dir);
                for path in [
                    dir.join(name),
                    dir.join(".debug").join(name),
                    Path::new("/usr/lib/debug").join(relative).join(name),
                ] {
                    candidates.push((path, Some(crc)));
                }
            }
            None => tracing::warn!(
                exe = %exe.display(),
                link = %String::from_utf8_lossy(link),
                "ignoring a .gnu_debuglink that is not a plain file name"
            ),
        }
    }
    let mut stale = None;
    for (candidate, crc) in &candidates {
        for path in [target.in_root(candidate), candidate.clone()] {
            let Ok(bytes) = read_regular_file(&path) else {
                continue;
            };
            if let Some(expected) = *crc {
                let found = gnu_debuglink_crc(&bytes);
                if found != expected {
                    stale.get_or_insert(ObjectError::StaleDebugFile {
                        exe: exe.display().to_string(),
                        path,
                        expected,
                        found,
                    });
                    continue;
                }
            }
            let Ok(file) = object::File::parse(&*bytes) else {
                continue;
            };
            let matches = build_id.is_empty() || build_id_hex(&file) == build_id;
            if matches && has_debug_info(&path, &file)? {
                drop(file);
                return Ok(DebugFile { path, bytes });
            }
        }
    }
    if let Some(stale) = stale {
        return Err(stale);
    }
    let build_id_dir = if build_id.len() > 2 {
        format!("{}/{}", &build_id[..2], &build_id[2..])
    } else {
        "<build-id>".into()
    };
    Err(ObjectError::NoDebugInfo {
        exe: exe.display().to_string(),
        build_id: if build_id.is_empty() {
            "none".into()
        } else {
            build_id.into()
        },
        build_id_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is not a regular file is refused before it is opened: opening a device can act on
    /// it. A socket shows the difference: opening one fails (`ENXIO`), so a refusal that says
    /// "not a regular file" was made before any open.
    #[test]
    fn what_is_not_a_regular_file_is_refused_before_it_is_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        let error = read_regular_file(&socket).expect_err("a socket is refused");
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::InvalidInput,
            "refused only by opening it: {error}"
        );
        let error = read_regular_file(Path::new("/dev/null")).expect_err("a device is refused");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{error}");
    }

    #[test]
    fn the_debuglink_crc_is_the_standard_crc32() {
        assert_eq!(gnu_debuglink_crc(b"123456789"), 0xcbf4_3926);
        assert_eq!(gnu_debuglink_crc(b""), 0);
    }

    #[test]
    fn a_debuglink_is_a_file_name_never_a_path() {
        assert!(debuglink_name(b"prog.debug").is_some());
        for bad in [
            &b""[..],
            b"/dev/zero",
            b"../prog.debug",
            b"a/b",
            b".",
            b"..",
            b"a\0b",
        ] {
            assert!(debuglink_name(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn only_regular_files_are_read() {
        assert!(read_regular_file(Path::new("/dev/zero")).is_err());
        assert!(read_regular_file(Path::new("/")).is_err());
        let dir = std::env::temp_dir().join(format!("loupe-elf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success(), "mkfifo");
        // Opened without blocking (nobody writes to it), then refused: not a regular file.
        assert!(read_regular_file(&fifo).is_err());
        let file = dir.join("file");
        std::fs::write(&file, b"bytes").expect("write");
        assert_eq!(read_regular_file(&file).expect("read"), b"bytes");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

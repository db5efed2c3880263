//! Hostile or corrupted input to the sidecar: DWARF and ELF of the target's files, and the
//! target's memory. Each test states the rule it checks (no panic, no unbounded allocation or
//! time, partial and failed reads marked, never guessed) and fails while the sidecar breaks it.
//!
//! DWARF is written by hand in assembly (`cc -c`), so that every attribute is what the test
//! says; for live targets the same DWARF is linked into a C program built without `-g`.
//! Tests that crash the process (stack overflow, allocation failure) or hang run their body
//! in a child process (this test binary, re-run on one `#[ignore]`d test) watched by the
//! parent, so that the parent reports the crash as a failure.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loupe_sidecar::decode::{Memory, Watched};
use loupe_sidecar::dwarf::{Debug, DebugSections, Purpose};
use loupe_sidecar::layout::{Access, Compiler, Layouts, Node, NodeId};
use loupe_sidecar::target::ReadFault;

// ---------------------------------------------------------------------------------------------
// A child process per dangerous test body.

const CHILD_ENV: &str = "LOUPE_HOSTILE_CHILD";

struct ChildRun {
    /// `None`: still running at the deadline (killed).
    status: Option<std::process::ExitStatus>,
    output: String,
    peak_rss_kb: u64,
}

/// Runs the `#[ignore]`d test `name` of this binary in a child, for at most `timeout`;
/// `rss_limit_kb` kills it early once its resident memory passes that.
fn run_child(name: &str, timeout: Duration, rss_limit_kb: Option<u64>) -> ChildRun {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("out");
    let file = std::fs::File::create(&log).expect("log");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(file.try_clone().expect("dup"))
        .stderr(file)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn child");
    let start = Instant::now();
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            // A child that crashed leaves its fixtures running, in its process group.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(Stdio::null())
                .status();
            break Some(status);
        }
        let rss = rss_kb(child.id());
        peak = peak.max(rss);
        if start.elapsed() > timeout || rss_limit_kb.is_some_and(|limit| rss > limit) {
            // The whole group: the child's fixtures too, which its kill would orphan.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    ChildRun {
        status,
        output: std::fs::read_to_string(&log).unwrap_or_default(),
        peak_rss_kb: peak,
    }
}

fn rss_kb(pid: u32) -> u64 {
    status_kb(&pid.to_string(), "VmRSS:")
}

/// A `kB` field of `/proc/<pid>/status`; 0 when it cannot be read.
fn status_kb(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn in_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// The tail of a child's output, for failure messages.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines
        .iter()
        .position(|l| {
            l.contains("panicked at") || l.contains("overflowed") || l.contains("memory allocation")
        })
        .unwrap_or(lines.len().saturating_sub(12));
    lines[from..]
        .iter()
        .take(12)
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

/// Fails unless the child test finished, and passed.
fn assert_child_passes(name: &str, timeout: Duration) {
    let run = run_child(name, timeout, None);
    match run.status {
        None => panic!(
            "{name}: still running after {timeout:?} (killed)\n{}",
            tail(&run.output)
        ),
        Some(status) => assert!(
            status.success(),
            "{name}: the child process died ({status}):\n{}",
            tail(&run.output)
        ),
    }
}

/// Runs child `name` with at most `rss_limit_kb` of resident memory and `timeout`, and fails,
/// saying `what` it did and its peak, unless it passes.
fn assert_child_passes_within(name: &str, timeout: Duration, rss_limit_kb: u64, what: &str) {
    let run = run_child(name, timeout, Some(rss_limit_kb));
    assert!(
        run.status.is_some_and(|s| s.success()),
        "{what}: peak {} MiB resident, {}:\n{}",
        run.peak_rss_kb >> 10,
        match run.status {
            None => "killed".to_owned(),
            Some(status) => status.to_string(),
        },
        tail(&run.output)
    );
}

// ---------------------------------------------------------------------------------------------
// DWARF written by hand.

/// A DWARF 4 compilation unit as assembler directives, one DIE at a time.
struct Dw {
    info: String,
}

/// Abbreviation codes (see `ABBREV`).
const CU: u32 = 1;
const VARIABLE: u32 = 2;
const BASE: u32 = 3;
const POINTER: u32 = 4;
const STRUCT: u32 = 5;
const MEMBER: u32 = 6;
const ARRAY: u32 = 7;
const SUBRANGE: u32 = 8;
const MEMBER_EXPR: u32 = 9;
const VARIANT_PART: u32 = 10;
const VARIANT: u32 = 11;
const SUBPROGRAM: u32 = 12;
const PARAM: u32 = 13;
const NAMESPACE: u32 = 14;
const VAR_NAME: u32 = 15;
const TYPEDEF: u32 = 16;
const SPEC_DEF: u32 = 17;

/// One abbreviation: (code, tag, children, [(attribute, form)]).
type Abbreviation = (u32, u32, bool, &'static [(u32, u32)]);

const ABBREV: &[Abbreviation] = &[
    (CU, 0x11, true, &[(0x03, 0x08), (0x13, 0x05)]),
    (
        VARIABLE,
        0x34,
        false,
        &[(0x03, 0x08), (0x49, 0x13), (0x02, 0x18)],
    ),
    (
        BASE,
        0x24,
        false,
        &[(0x03, 0x08), (0x3e, 0x0b), (0x0b, 0x0b)],
    ),
    (POINTER, 0x0f, false, &[(0x0b, 0x0b), (0x49, 0x13)]),
    (STRUCT, 0x13, true, &[(0x03, 0x08), (0x0b, 0x0f)]),
    (
        MEMBER,
        0x0d,
        false,
        &[(0x03, 0x08), (0x49, 0x13), (0x38, 0x0f)],
    ),
    (ARRAY, 0x01, true, &[(0x49, 0x13)]),
    (SUBRANGE, 0x21, false, &[(0x37, 0x0f)]),
    (
        MEMBER_EXPR,
        0x0d,
        false,
        &[(0x03, 0x08), (0x49, 0x13), (0x38, 0x18)],
    ),
    (VARIANT_PART, 0x33, true, &[(0x15, 0x13)]),
    (VARIANT, 0x19, true, &[(0x16, 0x0f)]),
    (
        SUBPROGRAM,
        0x2e,
        true,
        &[(0x03, 0x08), (0x11, 0x01), (0x3f, 0x19)],
    ),
    (
        PARAM,
        0x05,
        false,
        &[(0x03, 0x08), (0x49, 0x13), (0x02, 0x18)],
    ),
    (NAMESPACE, 0x39, true, &[(0x03, 0x08)]),
    (VAR_NAME, 0x34, false, &[(0x03, 0x08)]),
    (TYPEDEF, 0x16, false, &[(0x03, 0x08), (0x49, 0x13)]),
    (
        SPEC_DEF,
        0x34,
        false,
        &[(0x47, 0x13), (0x6e, 0x08), (0x02, 0x18)],
    ),
];

impl Dw {
    /// A C unit (`DW_LANG_C99`) named `name`.
    fn new(name: &str) -> Dw {
        let mut dw = Dw {
            info: String::new(),
        };
        dw.die(None, CU);
        dw.string(name);
        dw.line(".short 0x0c");
        dw
    }

    fn line(&mut self, text: &str) {
        self.info.push_str(text);
        self.info.push('\n');
    }

    /// Starts a DIE, at `label` if given.
    fn die(&mut self, label: Option<&str>, code: u32) {
        if let Some(label) = label {
            let _ = writeln!(self.info, "{label}:");
        }
        let _ = writeln!(self.info, ".uleb128 {code}");
    }

    fn string(&mut self, text: &str) {
        let _ = writeln!(self.info, ".asciz \"{text}\"");
    }

    fn reference(&mut self, label: &str) {
        let _ = writeln!(self.info, ".long {label} - .Lcu");
    }

    fn udata(&mut self, value: u64) {
        let _ = writeln!(self.info, ".uleb128 {value:#x}");
    }

    fn byte(&mut self, value: u8) {
        let _ = writeln!(self.info, ".byte {value}");
    }

    fn expr(&mut self, bytes: &[u8]) {
        let _ = writeln!(self.info, ".uleb128 {}", bytes.len());
        for b in bytes {
            let _ = writeln!(self.info, ".byte {b:#x}");
        }
    }

    fn end_children(&mut self) {
        self.line(".byte 0");
    }

    // Common DIEs.

    fn base(&mut self, label: &str, name: &str, encoding: u8, size: u8) {
        self.die(Some(label), BASE);
        self.string(name);
        self.byte(encoding);
        self.byte(size);
    }

    fn pointer(&mut self, label: &str, target: &str) {
        self.die(Some(label), POINTER);
        self.byte(8);
        self.reference(target);
    }

    fn member(&mut self, name: &str, ty: &str, offset: u64) {
        self.die(None, MEMBER);
        self.string(name);
        self.reference(ty);
        self.udata(offset);
    }

    /// A global `name` of type `ty` at `address` (a number, or a symbol in a linked program).
    fn variable(&mut self, name: &str, ty: &str, address: &str) {
        self.die(None, VARIABLE);
        self.string(name);
        self.reference(ty);
        self.line(".uleb128 9");
        self.line(".byte 0x03");
        let _ = writeln!(self.info, ".quad {address}");
    }

    /// The assembler text of the unit: `.debug_abbrev` and `.debug_info`.
    fn finish(mut self) -> String {
        self.end_children();
        let mut out = String::from(".section .debug_abbrev,\"\",@progbits\n.Labbrev:\n");
        for (code, tag, children, attributes) in ABBREV {
            let _ = writeln!(
                out,
                ".uleb128 {code}\n.uleb128 {tag:#x}\n.byte {}",
                u8::from(*children)
            );
            for (at, form) in *attributes {
                let _ = writeln!(out, ".uleb128 {at:#x}\n.uleb128 {form:#x}");
            }
            out.push_str(".byte 0\n.byte 0\n");
        }
        out.push_str(".byte 0\n");
        out.push_str(".section .debug_info,\"\",@progbits\n.Lcu:\n.long .Lcu_end - .Lcu - 4\n.short 4\n.long .Labbrev\n.byte 8\n");
        out.push_str(&self.info);
        out.push_str(".Lcu_end:\n");
        out
    }
}

/// An ELF relocatable object holding only the DWARF `asm` describes.
fn object_with(asm: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("dwarf.s");
    std::fs::write(&source, asm).expect("write asm");
    let object = dir.path().join("dwarf.o");
    let status = Command::new("cc")
        .arg("-c")
        .arg("-o")
        .arg(&object)
        .arg(&source)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc -c dwarf.s failed");
    std::fs::read(&object).expect("read object")
}

/// The layout of global `g` in `elf`: the sidecar's own resolution path (find the global,
/// compile its type), with the type name Describe shows.
fn compile_global(elf: &[u8]) -> (Layouts, NodeId, String) {
    let sections = DebugSections::read(elf, Purpose::Globals).expect("sections");
    let debug = Debug::load(&sections).expect("DWARF loads");
    let found = debug
        .find_globals(&BTreeSet::from(["g"]))
        .expect("globals found");
    let global = &found.get("g").expect("g is found")[0];
    let mut compiler = Compiler::new(&debug);
    let node = compiler.compile(global.type_die).expect("type compiles");
    let layouts = compiler.finish();
    let name = layouts.type_name(node);
    (layouts, node, name)
}

/// Memory as regions of bytes; everything else is unmapped.
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

fn decode_json(layouts: &Layouts, node: NodeId, address: u64, memory: &FakeMemory) -> String {
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

// ---------------------------------------------------------------------------------------------
// DWARF: deep nesting.

/// `g` has type `T *****…*int`, each `*` its own pointer DIE, 100 000 of them (≈ 1 MB of DWARF).
/// Pointers reset the layout compiler's nesting count, so only compiling their targets from a work
/// list, not by recursing, keeps the stack it takes from growing with the chain: it compiles on an
/// 8 MB stack (the main thread's, where `Resolved::attach_points` runs in the `loupe-agent sidecar`
/// command).
#[test]
fn a_long_chain_of_pointer_types_does_not_overflow_the_stack() {
    assert_child_passes("child_pointer_chain", Duration::from_secs(300));
}

#[test]
#[ignore = "run by a_long_chain_of_pointer_types_does_not_overflow_the_stack"]
fn child_pointer_chain() {
    if !in_child() {
        return;
    }
    const CHAIN: usize = 100_000;
    let mut dw = Dw::new("chain.c");
    dw.base(".Lint", "int", 0x05, 4);
    for i in 0..CHAIN {
        let next = if i + 1 == CHAIN {
            ".Lint".to_owned()
        } else {
            format!(".Lp{}", i + 1)
        };
        dw.pointer(&format!(".Lp{i}"), &next);
    }
    dw.variable("g", ".Lp0", "0x1000");
    let elf = object_with(&dw.finish());
    let result = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || compile_global(&elf).2)
        .expect("thread")
        .join()
        .expect("no panic");
    assert!(result.starts_with('*'), "{result}");
}

/// `g` is one array type with 200 000 `DW_TAG_subrange_type` children (`int g[1][1]…[1]`).
/// Dimensions count against the layout's nesting limit, and naming a type (`Layouts::type_name`,
/// for every watch and every probe parameter) is bounded whatever the arena holds: neither
/// overflows an 8 MB stack.
#[test]
fn an_array_with_many_dimensions_does_not_overflow_the_stack() {
    assert_child_passes("child_many_dimensions", Duration::from_secs(300));
}

#[test]
#[ignore = "run by an_array_with_many_dimensions_does_not_overflow_the_stack"]
fn child_many_dimensions() {
    if !in_child() {
        return;
    }
    let mut dw = Dw::new("dims.c");
    dw.base(".Lint", "int", 0x05, 4);
    dw.die(Some(".Larray"), ARRAY);
    dw.reference(".Lint");
    for _ in 0..200_000 {
        dw.die(None, SUBRANGE);
        dw.udata(1);
    }
    dw.end_children();
    dw.variable("g", ".Larray", "0x1000");
    let elf = object_with(&dw.finish());
    let name = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || compile_global(&elf).2)
        .expect("thread")
        .join()
        .expect("no panic");
    assert!(name.starts_with('['), "{}", &name[..40.min(name.len())]);
}

// ---------------------------------------------------------------------------------------------
// DWARF: absurd offsets.

/// A Rust `String` whose `vec` member is at offset 2^64 - 1 (its `Vec`'s pointer at 8). Offsets
/// from the DWARF are added with checked arithmetic (in `String`, `Arc`/`Rc` and `vec_fields`
/// alike): compiling it does not panic where overflow checks are on (every test and debug build).
#[test]
fn member_offsets_near_u64_max_do_not_panic() {
    let mut dw = Dw::new("string.rs");
    dw.base(".Lu8", "u8", 0x08, 1);
    dw.base(".Lusize", "usize", 0x07, 8);
    dw.pointer(".Lptr", ".Lu8");
    // RawVec { ptr: *const u8 at 8 }
    dw.die(Some(".Lraw"), STRUCT);
    dw.string("RawVec<u8>");
    dw.udata(16);
    dw.member("ptr", ".Lptr", 8);
    dw.end_children();
    // Vec<u8> { buf: RawVec at 0, len: usize at 16 }
    dw.die(Some(".Lvec"), STRUCT);
    dw.string("Vec<u8>");
    dw.udata(24);
    dw.member("buf", ".Lraw", 0);
    dw.member("len", ".Lusize", 16);
    dw.end_children();
    // String { vec: Vec<u8> at 2^64 - 1 }
    dw.die(Some(".Lstring"), STRUCT);
    dw.string("String");
    dw.udata(24);
    dw.member("vec", ".Lvec", u64::MAX);
    dw.end_children();
    dw.variable("g", ".Lstring", "0x1000");
    let elf = object_with(&dw.finish());
    let outcome = std::panic::catch_unwind(|| compile_global(&elf).2);
    assert!(
        outcome.is_ok(),
        "compiling a String whose member offset is 2^64-1 panicked (see the panic message above)"
    );
}

// ---------------------------------------------------------------------------------------------
// DWARF: what is not understood must not be guessed.

/// A Rust enum whose discriminant member's `DW_AT_data_member_location` is an expression other than
/// `DW_OP_plus_uconst` (`DW_OP_constu 8; DW_OP_plus`: offset 8). The discriminant is read where the
/// expression puts it, or not at all, never at a guessed offset 0 (which holds the value of another
/// variant here).
#[test]
fn an_enum_discriminant_at_an_offset_not_understood_is_not_read_at_zero() {
    let mut dw = Dw::new("tier.rs");
    dw.base(".Lu64", "u64", 0x07, 8);
    dw.die(Some(".Lunit_a"), STRUCT);
    dw.string("Free");
    dw.udata(16);
    dw.end_children();
    dw.die(Some(".Lunit_b"), STRUCT);
    dw.string("Pro");
    dw.udata(16);
    dw.end_children();
    dw.die(Some(".Ltier"), STRUCT);
    dw.string("Tier");
    dw.udata(16);
    dw.die(None, VARIANT_PART);
    dw.reference(".Ldiscr");
    dw.die(Some(".Ldiscr"), MEMBER_EXPR);
    dw.string("__tag");
    dw.reference(".Lu64");
    dw.expr(&[0x10, 0x08, 0x22]); // DW_OP_constu 8, DW_OP_plus
    dw.die(None, VARIANT);
    dw.udata(0);
    dw.member("Free", ".Lunit_a", 0);
    dw.end_children();
    dw.die(None, VARIANT);
    dw.udata(1);
    dw.member("Pro", ".Lunit_b", 0);
    dw.end_children();
    dw.end_children(); // variant part
    dw.end_children(); // Tier
    dw.variable("g", ".Ltier", "0x1000");
    let elf = object_with(&dw.finish());
    let (layouts, node, _) = compile_global(&elf);
    let mut memory = FakeMemory::default();
    // Offset 0 holds 1, the discriminant (offset 8) holds 0: the value is `Free`.
    memory.0.insert(0x1000, le(&[1, 0]));
    let text = decode_json(&layouts, node, 0x1000, &memory);
    assert_eq!(
        text, r#""Free""#,
        "the discriminant is at offset 8, which holds 0 (`Free`)"
    );
}

/// A Rust `&str` whose bytes are not UTF-8 (a torn read, or memory that is not a `str`) is handed
/// on as its exact bytes: never as a string the target never held, U+FFFD in place of its bytes.
#[test]
fn a_str_that_is_not_utf8_is_marked_not_altered() {
    let mut dw = Dw::new("str.rs");
    dw.base(".Lu8", "u8", 0x08, 1);
    dw.base(".Lusize", "usize", 0x07, 8);
    dw.pointer(".Lptr", ".Lu8");
    dw.die(Some(".Lstr"), STRUCT);
    dw.string("&str");
    dw.udata(16);
    dw.member("data_ptr", ".Lptr", 0);
    dw.member("length", ".Lusize", 8);
    dw.end_children();
    dw.variable("g", ".Lstr", "0x1000");
    let elf = object_with(&dw.finish());
    let (layouts, node, name) = compile_global(&elf);
    assert_eq!(name, "&str");
    let mut memory = FakeMemory::default();
    memory.0.insert(0x1000, le(&[0x2000, 3]));
    memory.0.insert(0x2000, vec![0xff, 0xfe, b'A']);
    let text = decode_json(&layouts, node, 0x1000, &memory);
    assert!(
        !text.contains('\u{fffd}'),
        "invalid UTF-8 was replaced and shown as the value: {text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Live targets: files the target's ELF points at.

/// Writes `source` (C) to `dir` and builds it with `cc flags`, plus any extra inputs.
fn build(
    dir: &Path,
    name: &str,
    source: &str,
    flags: &[&str],
    extra: &[&Path],
) -> std::path::PathBuf {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, source).expect("write source");
    let out = dir.join(name);
    let status = Command::new("cc")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&c)
        .args(extra)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc {name} failed");
    out
}

const IDLE_MAIN: &str = r#"
#include <stdio.h>
#include <unistd.h>
long first = 111;
long second = 222;
int main(void) {
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
"#;

/// Gives `binary` a `.gnu_debuglink` naming `link` verbatim (with a made-up CRC).
fn set_debuglink(dir: &Path, binary: &Path, link: &str) {
    let mut section = link.as_bytes().to_vec();
    section.push(0);
    while !section.len().is_multiple_of(4) {
        section.push(0);
    }
    section.extend_from_slice(&0x1234_5678u32.to_le_bytes());
    let file = dir.join("debuglink.bin");
    std::fs::write(&file, section).expect("write debuglink");
    let status = Command::new("objcopy")
        .arg(format!("--add-section=.gnu_debuglink={}", file.display()))
        .arg(binary)
        .status()
        .expect("objcopy");
    assert!(status.success(), "objcopy --add-section");
}

/// The target's executable has no DWARF and its `.gnu_debuglink` names an absolute path, a FIFO
/// nobody writes to. A debuglink is a file name, looked up only where debug files are kept, and
/// only a regular file is read: attaching does not block on the FIFO.
#[test]
fn a_debuglink_to_a_fifo_does_not_hang_attach() {
    if !support::can_run(false) {
        return;
    }
    let run = run_child("child_debuglink_fifo", Duration::from_secs(20), None);
    match run.status {
        None => panic!(
            "MappedObject::main_executable still blocked after 20 s (reading the FIFO the debuglink names):\n{}",
            tail(&run.output)
        ),
        Some(status) => assert!(
            status.success(),
            "child died ({status}):\n{}",
            tail(&run.output)
        ),
    }
}

#[test]
#[ignore = "run by a_debuglink_to_a_fifo_does_not_hang_attach"]
fn child_debuglink_fifo() {
    if !in_child() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    attach_finds_no_debug_info_through(dir.path(), &fifo.display().to_string());
}

/// As above, with the debuglink naming `/dev/zero`: attaching does not allocate without bound (the
/// child is killed once it holds 2 GiB).
#[test]
fn a_debuglink_to_dev_zero_does_not_allocate_without_bound() {
    if !support::can_run(false) {
        return;
    }
    let run = run_child(
        "child_debuglink_dev_zero",
        Duration::from_secs(60),
        Some(2 << 20),
    );
    match run.status {
        None => panic!(
            "attaching grew to {} MiB of resident memory (killed) reading the /dev/zero the debuglink names:\n{}",
            run.peak_rss_kb >> 10,
            tail(&run.output)
        ),
        Some(status) => assert!(
            status.success(),
            "child died ({status}):\n{}",
            tail(&run.output)
        ),
    }
}

#[test]
#[ignore = "run by a_debuglink_to_dev_zero_does_not_allocate_without_bound"]
fn child_debuglink_dev_zero() {
    if !in_child() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    attach_finds_no_debug_info_through(dir.path(), "/dev/zero");
}

/// Builds a program with no debug info of its own whose `.gnu_debuglink` names `link`, runs it,
/// and attaches: the executable is found to have no debug info, and attaching returns.
fn attach_finds_no_debug_info_through(dir: &Path, link: &str) {
    let binary = build(dir, "idle", IDLE_MAIN, &["-O0"], &[]);
    set_debuglink(dir, &binary, link);
    let fixture = support::Fixture::spawn(&binary);
    let target = loupe_sidecar::Target::attach(i64::from(fixture.pid)).expect("attach");
    let result = loupe_sidecar::elf::MappedObject::main_executable(&target);
    assert!(result.is_err(), "no debug info anywhere");
}

/// The executable has no build-id, and its `.gnu_debuglink` names `prog.debug` next to it, but that
/// file is stale: the debug info of another build (globals in another order). As gdb does, the
/// sidecar checks the CRC the debuglink records and refuses the file, rather than read `first` at
/// `second`'s storage and show 222 as its value.
#[test]
fn a_stale_debug_file_is_refused_not_used_to_read_the_wrong_address() {
    if !support::can_run(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let flags = ["-g", "-O0", "-fno-toplevel-reorder", "-Wl,--build-id=none"];
    let binary = build(dir.path(), "prog", IDLE_MAIN, &flags, &[]);
    let debug = dir.path().join("prog.debug");
    let objcopy = |args: &[&std::ffi::OsStr]| {
        let status = Command::new("objcopy")
            .args(args)
            .status()
            .expect("objcopy");
        assert!(status.success(), "objcopy {args:?}");
    };
    objcopy(&[
        "--only-keep-debug".as_ref(),
        binary.as_os_str(),
        debug.as_os_str(),
    ]);
    let link = format!("--add-gnu-debuglink={}", debug.display());
    objcopy(&["--strip-debug".as_ref(), link.as_ref(), binary.as_os_str()]);
    // Another build of the program, its globals in the other order: its debug file replaces
    // the one the debuglink's CRC names.
    let other_source = IDLE_MAIN.replace(
        "long first = 111;\nlong second = 222;",
        "long second = 222;\nlong first = 111;",
    );
    let other = build(dir.path(), "other", &other_source, &flags, &[]);
    objcopy(&[
        "--only-keep-debug".as_ref(),
        other.as_os_str(),
        debug.as_os_str(),
    ]);

    let fixture = support::Fixture::spawn(&binary);
    let points = loupe_sidecar::PointsFile::parse(
        Path::new("points.toml"),
        "[[watch]]\nname = \"h.first\"\nsymbol = \"first\"\n",
    )
    .expect("points");
    let target = loupe_sidecar::Target::attach(i64::from(fixture.pid)).expect("attach");
    let resolved = match loupe_sidecar::Resolved::attach(target, &points.watches) {
        // Refusing the stale file is the right outcome.
        Err(_) => return,
        Ok(resolved) => resolved,
    };
    let watch = &resolved.watches[0];
    let watched = Watched {
        layouts: &resolved.layouts,
        access: &watch.access,
        address: watch.address,
        memory: &resolved.target,
    };
    let text = serde_json::to_string(&watched).expect("serializes");
    assert_eq!(
        text, "111",
        "`first` is 111 in the target; the sidecar used a debug file whose CRC does not match and shows {text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Live targets: lengths the decoder caps.

/// `int big[10000]` and a `char *` to a 5000-byte string, both longer than the decoder reads at
/// once (4096). The snapshot states the array's real length (`total_len` 10 000, which the DWARF
/// says), and the string as truncated, its length the real one or a lower bound, even at
/// `max_string_bytes = 4096` (the agent's default ceiling).
#[test]
fn lengths_past_the_decoders_caps_are_not_reported_as_the_real_lengths() {
    if !support::can_run(false) {
        return;
    }
    assert_child_passes("child_capped_lengths", Duration::from_secs(120));
}

const BIG_MAIN: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int big[10000];
char *text;
int main(void) {
    for (int i = 0; i < 10000; i++) big[i] = i;
    text = malloc(5001);
    memset(text, 'a', 5000);
    text[5000] = 0;
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
"#;

#[test]
#[ignore = "run by lengths_past_the_decoders_caps_are_not_reported_as_the_real_lengths"]
fn child_capped_lengths() {
    use loupe_agent::{CaptureSpec, LimitRequest};
    use loupe_proto::v1::value::Kind;
    if !in_child() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = build(dir.path(), "big", BIG_MAIN, &["-g", "-O0"], &[]);
    let fixture = support::Fixture::spawn(&binary);
    let points = loupe_sidecar::PointsFile::parse(
        Path::new("points.toml"),
        "[[watch]]\nname = \"h.big\"\nsymbol = \"big\"\n[[watch]]\nname = \"h.text\"\nsymbol = \"text\"\n",
    )
    .expect("points");
    let target = loupe_sidecar::Target::attach(i64::from(fixture.pid)).expect("attach");
    let resolved = loupe_sidecar::Resolved::attach(target, &points.watches).expect("resolves");
    let sidecar = loupe_sidecar::Sidecar::declare(resolved).expect("declare");
    let snapshot_of = |point: &str| {
        let mut stream = loupe_agent::arm(
            CaptureSpec::new(format!("s-{point}"), point)
                .max_snapshots(1)
                .duration(Duration::from_secs(30))
                .limits(LimitRequest {
                    max_string_bytes: Some(4096),
                    ..LimitRequest::default()
                }),
        )
        .expect("armed");
        sidecar.sample_armed();
        let snapshot = stream.blocking_next().expect("a snapshot");
        snapshot.fields[0]
            .value
            .as_ref()
            .and_then(|v| v.kind.clone())
            .expect("a value")
    };
    let mut problems = Vec::new();
    match snapshot_of("h.big") {
        Kind::List(list) if list.total_len == 10_000 => {}
        Kind::List(list) => problems.push(format!(
            "int big[10000]: the snapshot says total_len {} ({} items shown)",
            list.total_len,
            list.items.len()
        )),
        other => problems.push(format!("big: {other:?}")),
    }
    match snapshot_of("h.text") {
        Kind::String(s)
            if s.truncated && (s.original_len == 5000 || s.original_len_is_lower_bound) => {}
        Kind::String(s) => problems.push(format!(
            "a 5000-byte string: {} bytes shown, truncated: {}, original_len: {}, lower bound: {}",
            s.value.len(),
            s.truncated,
            s.original_len,
            s.original_len_is_lower_bound
        )),
        other => problems.push(format!("text: {other:?}")),
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// ELF: compressed debug sections.

/// A minimal ELF64 relocatable holding one section, `.debug_info`, with `flags`.
fn elf_with_section(flags: u64, data: &[u8]) -> Vec<u8> {
    let shstrtab = b"\0.debug_info\0.shstrtab\0";
    let data_offset = 64u64;
    let shstrtab_offset = data_offset + data.len() as u64;
    let shoff = (shstrtab_offset + shstrtab.len() as u64).next_multiple_of(8);
    let mut elf = Vec::new();
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&1u16.to_le_bytes()); // ET_REL
    elf.extend_from_slice(&62u16.to_le_bytes()); // x86-64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&0u64.to_le_bytes()); // entry
    elf.extend_from_slice(&0u64.to_le_bytes()); // phoff
    elf.extend_from_slice(&shoff.to_le_bytes());
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    elf.extend_from_slice(&64u16.to_le_bytes()); // ehsize
    elf.extend_from_slice(&0u16.to_le_bytes()); // phentsize
    elf.extend_from_slice(&0u16.to_le_bytes()); // phnum
    elf.extend_from_slice(&64u16.to_le_bytes()); // shentsize
    elf.extend_from_slice(&3u16.to_le_bytes()); // shnum
    elf.extend_from_slice(&2u16.to_le_bytes()); // shstrndx
    elf.extend_from_slice(data);
    elf.extend_from_slice(shstrtab);
    elf.resize(shoff as usize, 0);
    let section = |elf: &mut Vec<u8>, name: u32, kind: u32, flags: u64, offset: u64, size: u64| {
        elf.extend_from_slice(&name.to_le_bytes());
        elf.extend_from_slice(&kind.to_le_bytes());
        elf.extend_from_slice(&flags.to_le_bytes());
        elf.extend_from_slice(&0u64.to_le_bytes()); // addr
        elf.extend_from_slice(&offset.to_le_bytes());
        elf.extend_from_slice(&size.to_le_bytes());
        elf.extend_from_slice(&0u32.to_le_bytes()); // link
        elf.extend_from_slice(&0u32.to_le_bytes()); // info
        elf.extend_from_slice(&1u64.to_le_bytes()); // addralign
        elf.extend_from_slice(&0u64.to_le_bytes()); // entsize
    };
    section(&mut elf, 0, 0, 0, 0, 0);
    section(&mut elf, 1, 1, flags, data_offset, data.len() as u64);
    section(&mut elf, 13, 3, 0, shstrtab_offset, shstrtab.len() as u64);
    elf
}

/// `.debug_info` compressed with zstd (`SHF_COMPRESSED`), its header saying it inflates to 64
/// bytes, its stream of 2048 RLE blocks (8 KiB) inflating to 256 MiB. A section is inflated only up
/// to the size its header declares: reading it does not take 256 MiB (a ratio of 32 768, which
/// would scale with the file).
#[test]
fn a_compressed_section_does_not_inflate_past_its_declared_size() {
    let run = run_child("child_zstd_bomb", Duration::from_secs(300), Some(4 << 20));
    match run.status {
        Some(status) if status.success() => {}
        _ => panic!(
            "reading an 8 KiB compressed section that declares 64 bytes: peak {} MiB resident ({:?}):\n{}",
            run.peak_rss_kb >> 10,
            run.status,
            tail(&run.output)
        ),
    }
}

#[test]
#[ignore = "run by a_compressed_section_does_not_inflate_past_its_declared_size"]
fn child_zstd_bomb() {
    if !in_child() {
        return;
    }
    let mut section = Vec::new();
    section.extend_from_slice(&2u32.to_le_bytes()); // ELFCOMPRESS_ZSTD
    section.extend_from_slice(&0u32.to_le_bytes());
    section.extend_from_slice(&64u64.to_le_bytes()); // ch_size
    section.extend_from_slice(&1u64.to_le_bytes()); // ch_addralign
    section.extend_from_slice(&[0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38]); // magic, FHD, 128 KiB window
    const BLOCKS: u32 = 2048;
    for i in 0..BLOCKS {
        let last = u32::from(i + 1 == BLOCKS);
        let header = (131_072u32 << 3) | (1 << 1) | last; // RLE block of 128 KiB
        section.extend_from_slice(&header.to_le_bytes()[..3]);
        section.push(0);
    }
    let elf = elf_with_section(0x800, &section);
    let peak_kb = || status_kb("self", "VmHWM:");
    let before = peak_kb();
    let result = DebugSections::read(&elf, Purpose::Globals).map(|_| ());
    let grew = peak_kb().saturating_sub(before);
    assert!(
        grew < 64 << 10,
        "reading a {} byte section grew the peak resident set by {} MiB (result: {result:?})",
        section.len(),
        grew >> 10
    );
}

/// Fails unless this child's peak resident memory stayed under 256 MiB while it read `input`
/// bytes of hostile DWARF.
fn assert_peak_memory_under_256_mib(input: usize) {
    let peak = status_kb("self", "VmHWM:");
    assert!(
        peak < 256 << 10,
        "peak {} MiB for {input} bytes",
        peak >> 10
    );
}

/// Loads `elf`'s DWARF for globals and searches it for one that is not there, as attaching a
/// watch point does.
fn search_for_a_missing_global(elf: &[u8]) {
    let sections = DebugSections::read(elf, Purpose::Globals).expect("sections");
    let debug = Debug::load(&sections).expect("loads");
    let found = debug.find_globals(&BTreeSet::from(["g"])).expect("search");
    assert!(found.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Probes: location expressions.

fn uleb(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

const WORK_MAIN: &str = r#"
#include <stdio.h>
#include <unistd.h>
__attribute__((noinline)) int work(int n) { return n * 2 + 1; }
int main(void) {
    printf("ready\n");
    fflush(stdout);
    volatile int sink = 0;
    for (int i = 1;; i++) {
        sink += work(i);
        usleep(1000);
    }
}
"#;

/// `work(int n)`, its parameter described as `DW_OP_lit0; DW_OP_stack_value; DW_OP_piece 2^40`: a
/// constant piece one TiB long for a 4-byte int. Pieces' sizes are checked against the type's
/// before anything is allocated for them: the parameter is `not_captured`, and the sidecar does not
/// abort on an allocation of 1 TiB at the first hit.
#[test]
fn a_huge_piece_in_a_parameters_location_is_not_allocated() {
    if !support::can_run_probes() {
        return;
    }
    assert_child_passes("child_huge_piece", Duration::from_secs(120));
}

#[test]
#[ignore = "run by a_huge_piece_in_a_parameters_location_is_not_allocated"]
fn child_huge_piece() {
    use loupe_agent::{CaptureSpec, RateLimit};
    use std::sync::atomic::{AtomicBool, Ordering};
    if !in_child() {
        return;
    }
    let mut dw = Dw::new("work.c");
    dw.base(".Lint", "int", 0x05, 4);
    dw.die(None, SUBPROGRAM);
    dw.string("work");
    dw.line(".quad work");
    dw.die(None, PARAM);
    dw.string("n");
    dw.reference(".Lint");
    let mut location = vec![0x30, 0x9f, 0x93];
    location.extend(uleb(1 << 40));
    dw.expr(&location);
    dw.end_children();
    let dir = tempfile::tempdir().expect("tempdir");
    let asm = dir.path().join("dwarf.s");
    std::fs::write(&asm, dw.finish()).expect("write asm");
    let binary = build(dir.path(), "work", WORK_MAIN, &["-O1"], &[&asm]);
    let fixture = support::Fixture::spawn(&binary);
    let points = loupe_sidecar::PointsFile::parse(
        Path::new("points.toml"),
        "[[probe]]\nname = \"h.work\"\nfunction = \"work\"\n",
    )
    .expect("points");
    let target = loupe_sidecar::Target::attach(i64::from(fixture.pid)).expect("attach");
    let resolved = loupe_sidecar::Resolved::attach_points(target, &points.watches, &points.probes)
        .expect("the probe resolves");
    let sidecar = loupe_sidecar::Sidecar::declare(resolved).expect("declare");
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let _stop = support::StopOnDrop(&stop);
        scope.spawn(|| sidecar.run(&stop));
        let mut stream = loupe_agent::arm(
            CaptureSpec::new("s-work", "h.work")
                .max_snapshots(1)
                .duration(Duration::from_secs(30))
                .rate(RateLimit {
                    per_second: 100.0,
                    burst: 10,
                }),
        )
        .expect("armed");
        let snapshot = stream.blocking_next().expect("a snapshot");
        let all = support::leaves_of(&snapshot);
        assert!(
            matches!(support::leaf(&all, "n"), support::Leaf::NotCaptured(..)),
            "{all:?}"
        );
        stop.store(true, Ordering::Relaxed);
    });
}

/// `DW_OP_lit7; DW_OP_breg5 0; DW_OP_stack_value`: the DWARF stack is [7, rdi] and the value is its
/// top, rdi. Expressions are evaluated on a stack: the parameter is not described as the literal 7
/// left below the top.
#[test]
fn a_location_expression_is_not_evaluated_to_a_constant_that_is_not_its_value() {
    use loupe_sidecar::location::{FrameBase, ParamLocation, Piece, Place, evaluate};
    let encoding = gimli::Encoding {
        format: gimli::Format::Dwarf32,
        version: 5,
        address_size: 8,
    };
    let bytes = [0x37, 0x75, 0x00, 0x9f];
    let location = evaluate(
        gimli::Expression(gimli::EndianSlice::new(
            &bytes,
            gimli::RunTimeEndian::Little,
        )),
        encoding,
        FrameBase::Cfa,
    );
    assert_ne!(
        location,
        ParamLocation::Pieces(vec![Piece {
            place: Place::Value(7u64.to_le_bytes().to_vec()),
            size: None
        }]),
        "the value is rdi's, not the literal left below it"
    );
}

// ---------------------------------------------------------------------------------------------
// DWARF: memory that grows faster than the file.

/// 20 000 compilation units of 12 bytes each, all using one abbreviation table of 50 000
/// entries (≈ 300 KB). Units that share a table share one parsed copy: memory is not units ×
/// table (about 100 GB here for a 0.5 MB file; the child is killed at 2 GiB).
#[test]
fn units_sharing_one_abbreviation_table_do_not_each_copy_it() {
    assert_child_passes_within(
        "child_shared_abbreviations",
        Duration::from_secs(300),
        2 << 20,
        "Debug::load of a 0.5 MB file",
    );
}

#[test]
#[ignore = "run by units_sharing_one_abbreviation_table_do_not_each_copy_it"]
fn child_shared_abbreviations() {
    if !in_child() {
        return;
    }
    let mut asm = String::from(".section .debug_abbrev,\"\",@progbits\n");
    for code in 1..=50_000 {
        let _ = writeln!(
            asm,
            ".uleb128 {code}\n.byte 0x11\n.byte 0\n.byte 0\n.byte 0"
        );
    }
    asm.push_str(".byte 0\n.section .debug_info,\"\",@progbits\n");
    asm.push_str(".rept 20000\n.long 8\n.short 4\n.long 0\n.byte 8\n.byte 1\n.endr\n");
    let elf = object_with(&asm);
    search_for_a_missing_global(&elf);
    assert_peak_memory_under_256_mib(elf.len());
}

/// 50 000 variables inside 10 000 nested namespaces (≈ 150 KB of DWARF). A variable's qualified
/// name (30 KB here) is built only once it is known to be wanted, and none is kept for unwanted
/// ones: searching takes neither quadratic memory (1.5 GB; the child is killed at 1 GiB) nor
/// quadratic time.
#[test]
fn deeply_nested_scopes_do_not_multiply_memory() {
    assert_child_passes_within(
        "child_nested_scopes",
        Duration::from_secs(300),
        1 << 20,
        "find_globals on a 0.15 MB unit",
    );
}

#[test]
#[ignore = "run by deeply_nested_scopes_do_not_multiply_memory"]
fn child_nested_scopes() {
    if !in_child() {
        return;
    }
    let mut dw = Dw::new("nest.cc");
    for _ in 0..10_000 {
        dw.die(None, NAMESPACE);
        dw.string("n");
    }
    dw.line(".rept 50000\n.uleb128 15\n.asciz \"v\"\n.endr");
    for _ in 0..10_000 {
        dw.end_children();
    }
    let elf = object_with(&dw.finish());
    search_for_a_missing_global(&elf);
    assert_peak_memory_under_256_mib(elf.len());
}

// ---------------------------------------------------------------------------------------------
// Decoding time.

/// `struct S { T m0; T m1; … T m19999; }` with `typedef S T` (a type cycle through a typedef, every
/// member at offset 0 of an 8-byte struct), captured with limits the agent's default ceiling allows
/// (depth 8, 100 fields, 1 MiB). The members all decode from the one 8-byte block, so neither the
/// read budget nor `MAX_NESTING` bounds a walk of every member of every struct opened (~260 000
/// structs × 20 000 members ≈ 5·10⁹ steps): the decoder decodes at most `MAX_FIELDS` of a struct
/// and only counts the rest, within the snapshot's budget, so one snapshot takes bounded time.
#[test]
fn one_snapshot_of_a_wide_self_containing_struct_takes_bounded_time() {
    let run = run_child("child_wide_cycle", Duration::from_secs(90), None);
    match run.status {
        None => panic!("one snapshot still not taken after 90 s (killed)"),
        Some(status) => assert!(status.success(), "child: {status}\n{}", tail(&run.output)),
    }
}

#[test]
#[ignore = "run by one_snapshot_of_a_wide_self_containing_struct_takes_bounded_time"]
fn child_wide_cycle() {
    use loupe_agent::point::FieldKind;
    use loupe_agent::{CaptureSpec, DeclaredPoint, FieldValue, LimitRequest, SiteKind};
    if !in_child() {
        return;
    }
    let mut dw = Dw::new("wide.c");
    dw.die(Some(".LT"), TYPEDEF);
    dw.string("T");
    dw.reference(".LS");
    dw.die(Some(".LS"), STRUCT);
    dw.string("S");
    dw.udata(8);
    for i in 0..20_000 {
        dw.member(&format!("m{i}"), ".LT", 0);
    }
    dw.end_children();
    dw.variable("g", ".LS", "0x1000");
    let elf = object_with(&dw.finish());
    let (layouts, node, name) = compile_global(&elf);
    let mut memory = FakeMemory::default();
    memory.0.insert(0x1000, le(&[0]));
    let access = Access {
        steps: Vec::new(),
        node,
    };
    let watched = Watched {
        layouts: &layouts,
        access: &access,
        address: 0x1000,
        memory: &memory,
    };
    loupe_agent::serve_declared_points_only().expect("declared only");
    let callsite = loupe_agent::declare_point_of_kind(
        DeclaredPoint {
            name: "h.wide".into(),
            file: "wide.c".into(),
            line: 1,
            module_path: "g".into(),
            fields: vec![("g".into(), FieldKind::Serde)],
        },
        SiteKind::Watch,
        &[name],
    )
    .expect("declared");
    let mut stream = loupe_agent::arm(
        CaptureSpec::new("s-wide", "h.wide")
            .max_snapshots(1)
            .duration(Duration::from_secs(600))
            .limits(LimitRequest {
                max_depth: Some(8),
                max_struct_fields: Some(100),
                max_snapshot_bytes: Some(1 << 20),
                ..LimitRequest::default()
            }),
    )
    .expect("armed");
    let start = Instant::now();
    callsite.hit(&[FieldValue::serde(&watched)]);
    let elapsed = start.elapsed();
    assert!(stream.blocking_next().is_some(), "a snapshot");
    assert!(
        elapsed < Duration::from_secs(10),
        "one snapshot took {elapsed:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// DWARF: types reached through aliases.

/// `struct R { T0 *p0; …; T49 *p49; S s; }` where every `Ti` is a typedef of `S`, and `S`
/// holds a `T0` (a type that contains itself, as hostile DWARF may say). Every pointer must
/// lead to `S`'s one node: a layout node per alias would cost memory aliases × the struct's
/// size, and an alias compiled while `S` is being compiled must not keep `S` unfinished.
#[test]
fn pointers_through_aliases_share_their_targets_node() {
    const ALIASES: usize = 50;
    let mut dw = Dw::new("alias.c");
    dw.base(".Lint", "int", 0x05, 4);
    for i in 0..ALIASES {
        dw.die(Some(&format!(".LT{i}")), TYPEDEF);
        dw.string(&format!("T{i}"));
        dw.reference(".LS");
        dw.pointer(&format!(".LP{i}"), &format!(".LT{i}"));
    }
    dw.die(Some(".LS"), STRUCT);
    dw.string("S");
    dw.udata(8);
    dw.member("a", ".Lint", 0);
    dw.member("self", ".LT0", 0);
    dw.end_children();
    dw.die(Some(".LR"), STRUCT);
    dw.string("R");
    dw.udata(8 * ALIASES as u64 + 8);
    for i in 0..ALIASES {
        dw.member(&format!("p{i}"), &format!(".LP{i}"), 8 * i as u64);
    }
    dw.member("s", ".LS", 8 * ALIASES as u64);
    dw.end_children();
    dw.variable("g", ".LR", "0x1000");
    let elf = object_with(&dw.finish());
    let (layouts, node, _) = compile_global(&elf);
    let Node::Struct { fields, .. } = layouts.node(node) else {
        panic!("R is a struct: {:?}", layouts.node(node));
    };
    let s = fields.last().expect("s").node;
    assert!(
        matches!(layouts.node(s), Node::Struct { name: "S", .. }),
        "{:?}",
        layouts.node(s)
    );
    for field in &fields[..ALIASES] {
        match layouts.node(field.node) {
            Node::Pointer { target } => assert_eq!(
                *target,
                s,
                "{} leads to its own node ({:?}), not S's",
                field.name,
                layouts.node(*target)
            ),
            other => panic!("{}: {other:?}", field.name),
        }
    }
}

/// `struct R { Cell<S> c0; …; Cell<S> c1999; }` where every `Cell<S>` is its own struct DIE
/// around one `S` of 20 000 members. A transparent wrapper is decoded as what it holds; a
/// layout that copied the inner node for each wrapper would hold 2 000 copies of 20 000 fields
/// (about 1 GiB from 0.5 MB of DWARF): the wrappers share `S`'s fields instead.
#[test]
fn transparent_wrappers_do_not_copy_what_they_hold() {
    assert_child_passes_within(
        "child_many_wrappers",
        Duration::from_secs(300),
        1 << 20,
        "2 000 wrappers of one wide struct",
    );
}

#[test]
#[ignore = "run by transparent_wrappers_do_not_copy_what_they_hold"]
fn child_many_wrappers() {
    if !in_child() {
        return;
    }
    const WRAPPERS: u64 = 2_000;
    const MEMBERS: u64 = 20_000;
    let mut dw = Dw::new("cells.rs");
    dw.base(".Lint", "i32", 0x05, 4);
    dw.die(Some(".LS"), STRUCT);
    dw.string("S");
    dw.udata(4 * MEMBERS);
    for i in 0..MEMBERS {
        dw.member(&format!("m{i}"), ".Lint", 4 * i);
    }
    dw.end_children();
    for i in 0..WRAPPERS {
        dw.die(Some(&format!(".LC{i}")), STRUCT);
        dw.string("Cell<S>");
        dw.udata(4 * MEMBERS);
        dw.member("value", ".LS", 0);
        dw.end_children();
    }
    dw.die(Some(".LR"), STRUCT);
    dw.string("R");
    dw.udata(4 * MEMBERS * WRAPPERS);
    for i in 0..WRAPPERS {
        dw.member(&format!("c{i}"), &format!(".LC{i}"), 4 * MEMBERS * i);
    }
    dw.end_children();
    dw.variable("g", ".LR", "0x1000");
    let elf = object_with(&dw.finish());
    let (layouts, node, _) = compile_global(&elf);
    let Node::Struct { fields, .. } = layouts.node(node) else {
        panic!("R is a struct: {:?}", layouts.node(node));
    };
    for field in fields.iter() {
        let Node::Struct { name, fields, .. } = layouts.node(field.node) else {
            panic!(
                "{} is decoded as S: {:?}",
                field.name,
                layouts.node(field.node)
            );
        };
        assert_eq!(
            (*name, fields.len()),
            ("S", MEMBERS as usize),
            "{}",
            field.name
        );
    }
    assert_peak_memory_under_256_mib(elf.len());
}

// ---------------------------------------------------------------------------------------------
// DWARF: finding globals.

/// clang's DWARF for `struct Foo { static int count; }; int Foo::count;`: in the class, a
/// declaration with a name and no linkage name; outside, the definition, with no name, a
/// `DW_AT_specification` to the declaration, the linkage name and the location. Asked for
/// by its linkage name, the definition is found, and named by its declaration's scope.
#[test]
fn a_definition_is_found_by_its_own_linkage_name() {
    let mut dw = Dw::new("foo.cc");
    dw.die(None, STRUCT);
    dw.string("Foo");
    dw.udata(1);
    dw.die(Some(".Ldecl"), VAR_NAME);
    dw.string("count");
    dw.end_children();
    dw.die(None, SPEC_DEF);
    dw.reference(".Ldecl");
    dw.string("_ZN3Foo5countE");
    dw.line(".uleb128 9");
    dw.line(".byte 0x03");
    dw.line(".quad 0x1000");
    let elf = object_with(&dw.finish());
    let sections = DebugSections::read(&elf, Purpose::Globals).expect("sections");
    let debug = Debug::load(&sections).expect("DWARF loads");
    let found = debug
        .find_globals(&BTreeSet::from(["_ZN3Foo5countE"]))
        .expect("search");
    let globals = found
        .get("_ZN3Foo5countE")
        .expect("found by its linkage name");
    assert_eq!(globals.len(), 1);
    assert_eq!(globals[0].qualified_name, "Foo::count");
    assert_eq!(globals[0].address, Ok(0x1000));
}

/// 20 000 compilation units, each at its own offset inside one abbreviation table of 50 000
/// entries (≈ 350 KB): each offset starts a table that runs to the end of the long one. The
/// tables are parsed once per distinct offset, so sharing does not bound them: what all the
/// tables read together is bounded by the size of `.debug_abbrev`, past which the file is
/// refused as malformed, with little memory and time spent.
#[test]
fn units_at_distinct_offsets_inside_one_abbreviation_table_are_refused() {
    assert_child_passes_within(
        "child_overlapping_abbreviations",
        Duration::from_secs(120),
        1 << 20,
        "Debug::load of 0.5 MB of DWARF",
    );
}

#[test]
#[ignore = "run by units_at_distinct_offsets_inside_one_abbreviation_table_are_refused"]
fn child_overlapping_abbreviations() {
    if !in_child() {
        return;
    }
    // Codes from 16 384 take 3 bytes of ULEB128: every entry is 7 bytes (code, tag
    // DW_TAG_compile_unit, no children, no attributes), so entry k is at offset 7k.
    const FIRST_CODE: u32 = 16_384;
    let mut asm = String::from(".section .debug_abbrev,\"\",@progbits\n");
    for k in 0..50_000 {
        let _ = writeln!(
            asm,
            ".uleb128 {}\n.byte 0x11\n.byte 0\n.byte 0\n.byte 0",
            FIRST_CODE + k
        );
    }
    asm.push_str(".byte 0\n.section .debug_info,\"\",@progbits\n");
    for i in 0..20_000u32 {
        let k = 2 * i;
        let _ = writeln!(
            asm,
            ".long 10\n.short 4\n.long {}\n.byte 8\n.uleb128 {}",
            7 * k,
            FIRST_CODE + k
        );
    }
    let elf = object_with(&asm);
    let sections = DebugSections::read(&elf, Purpose::Globals).expect("sections");
    let start = Instant::now();
    let outcome = Debug::load(&sections).map(|_| ());
    assert!(
        matches!(
            outcome,
            Err(loupe_sidecar::dwarf::DwarfError::AbbreviationsOverlap { .. })
        ),
        "{outcome:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert_peak_memory_under_256_mib(elf.len());
}

/// A `&str` of 8 bytes whose `length` member is at offset 8, and an enum of 8 bytes whose
/// discriminant is at offset 8: what a std shape reads must lie inside its struct's bytes,
/// else it is not captured (read past it, it would be the bytes of something else).
#[test]
fn std_shapes_whose_members_lie_outside_them_are_not_read() {
    let mut dw = Dw::new("shapes.rs");
    dw.base(".Lu8", "u8", 0x08, 1);
    dw.base(".Lu64", "u64", 0x07, 8);
    dw.pointer(".Lptr", ".Lu8");
    dw.die(Some(".Lstr"), STRUCT);
    dw.string("&str");
    dw.udata(8);
    dw.member("data_ptr", ".Lptr", 0);
    dw.member("length", ".Lu64", 8);
    dw.end_children();
    dw.die(Some(".Lunit"), STRUCT);
    dw.string("Free");
    dw.udata(8);
    dw.end_children();
    dw.die(Some(".Ltier"), STRUCT);
    dw.string("Tier");
    dw.udata(8);
    dw.die(None, VARIANT_PART);
    dw.reference(".Ldiscr");
    dw.die(Some(".Ldiscr"), MEMBER);
    dw.string("__tag");
    dw.reference(".Lu64");
    dw.udata(8);
    dw.die(None, VARIANT);
    dw.udata(0);
    dw.member("Free", ".Lunit", 0);
    dw.end_children();
    dw.end_children(); // variant part
    dw.end_children(); // Tier
    dw.die(Some(".Lboth"), STRUCT);
    dw.string("Both");
    dw.udata(16);
    dw.member("s", ".Lstr", 0);
    dw.member("t", ".Ltier", 8);
    dw.end_children();
    dw.variable("g", ".Lboth", "0x1000");
    let elf = object_with(&dw.finish());
    let (layouts, node, _) = compile_global(&elf);
    let Node::Struct { fields, .. } = layouts.node(node) else {
        panic!("{:?}", layouts.node(node));
    };
    for field in fields.iter() {
        assert!(
            matches!(layouts.node(field.node), Node::Unsupported { .. }),
            "{}: {:?}",
            field.name,
            layouts.node(field.node)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Strings cut by the decoder, as the agent's capture sees them.

/// A 20 000-byte `&str` of two-byte characters, captured at `max_string_bytes = 4096` (the
/// agent's ceiling), at every alignment of the decoder's cut against the characters. The
/// capture cannot be told a string was cut: only text longer than what it scans is taken as
/// not complete. The decoder reads the capture's scan window
/// (`CaptureLimits::text_window`) and 4 bytes more, so that a cut trimmed to a whole character is still
/// longer: the string is truncated, its length a lower bound, never 8192 bytes stated whole.
#[test]
fn a_str_the_decoder_cuts_inside_a_character_is_a_lower_bound_in_the_capture() {
    assert_child_passes("child_cut_multibyte_str", Duration::from_secs(120));
}

#[test]
#[ignore = "run by a_str_the_decoder_cuts_inside_a_character_is_a_lower_bound_in_the_capture"]
fn child_cut_multibyte_str() {
    use loupe_agent::point::FieldKind;
    use loupe_agent::{CaptureSpec, DeclaredPoint, FieldValue, LimitRequest, SiteKind};
    use loupe_proto::v1::value::Kind;
    if !in_child() {
        return;
    }
    let mut dw = Dw::new("str.rs");
    dw.base(".Lu8", "u8", 0x08, 1);
    dw.base(".Lusize", "usize", 0x07, 8);
    dw.pointer(".Lptr", ".Lu8");
    dw.die(Some(".Lstr"), STRUCT);
    dw.string("&str");
    dw.udata(16);
    dw.member("data_ptr", ".Lptr", 0);
    dw.member("length", ".Lusize", 8);
    dw.end_children();
    dw.variable("g", ".Lstr", "0x1000");
    let elf = object_with(&dw.finish());
    let (layouts, node, name) = compile_global(&elf);
    loupe_agent::serve_declared_points_only().expect("declared only");
    let callsite = loupe_agent::declare_point_of_kind(
        DeclaredPoint {
            name: "h.str".into(),
            file: "str.rs".into(),
            line: 1,
            module_path: "g".into(),
            fields: vec![("g".into(), FieldKind::Serde)],
        },
        SiteKind::Watch,
        &[name],
    )
    .expect("declared");
    let mut problems = Vec::new();
    for prefix in 0..2 {
        let mut text = "a".repeat(prefix);
        while text.len() < 20_000 {
            text.push('д');
        }
        let mut memory = FakeMemory::default();
        memory.0.insert(0x1000, le(&[0x10_000, text.len() as u64]));
        memory.0.insert(0x10_000, text.into_bytes());
        let access = Access {
            steps: Vec::new(),
            node,
        };
        let watched = Watched {
            layouts: &layouts,
            access: &access,
            address: 0x1000,
            memory: &memory,
        };
        let mut stream = loupe_agent::arm(
            CaptureSpec::new(format!("s-str-{prefix}"), "h.str")
                .max_snapshots(1)
                .duration(Duration::from_secs(60))
                .limits(LimitRequest {
                    max_string_bytes: Some(4096),
                    ..LimitRequest::default()
                }),
        )
        .expect("armed");
        callsite.hit(&[FieldValue::serde(&watched)]);
        let snapshot = stream.blocking_next().expect("a snapshot");
        match snapshot.fields[0]
            .value
            .as_ref()
            .and_then(|v| v.kind.clone())
        {
            Some(Kind::String(s)) if s.truncated && s.original_len_is_lower_bound => {}
            Some(Kind::String(s)) => problems.push(format!(
                "after {prefix} ASCII bytes: truncated {}, original_len {}, lower bound {}",
                s.truncated, s.original_len, s.original_len_is_lower_bound
            )),
            other => problems.push(format!("after {prefix} ASCII bytes: {other:?}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

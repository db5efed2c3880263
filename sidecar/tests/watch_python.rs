//! CPython's runtime state read by the sidecar and by gdb, the oracle: a real `python3`
//! process (the distribution's interpreter, not a fixture built here) sleeping in
//! `time.sleep`, with watch points on `_PyRuntime.initialized`, `_PyRuntime.main_thread` and
//! `_PyRuntime.interpreters.main.id` (through the `PyInterpreterState *`), each of which must
//! agree with `gdb -nx -batch -p PID -ex 'print _PyRuntime.…'`.
//!
//! **Where `_PyRuntime` lives.** Debian links libpython statically into `/usr/bin/python3.11`
//! (the executable exports `_PyRuntime`; there is no `libpython3.11.so` mapped), and ships it
//! stripped: the DWARF (9.6 MB compressed, 22 MB inflated) is in `python3.11-dbg`, at
//! `/usr/lib/debug/.build-id/xx/yyyy.debug`, found by the executable's build-id. Other builds
//! (Fedora's, `--enable-shared`) put `_PyRuntime` in `libpython3.X.so`; the test declares the
//! points on that library when the process has one mapped, so both layouts are read the same
//! way. Debian also builds it with link-time optimization, so `_PyRuntime`'s definition names
//! it only through another compilation unit's DIE (the `-flto` variant of `watch_gdb` covers
//! that without python).
//!
//! Without python's DWARF (the `-dbg` package not installed) the test is skipped with a note
//! saying what to install, and under `LOUPE_REQUIRE_PRIVILEGED_TESTS=1` (CI) it fails
//! instead.

mod support;

use loupe_sidecar::elf::ObjectError;
use loupe_sidecar::{PointsFile, Resolved, Sidecar, SidecarError, Target};
use std::path::Path;
use std::process::Command;
use support::*;

/// The distribution's interpreter, whose debug info its `-dbg` package ships (a `python3`
/// earlier on PATH, e.g. pyenv's, has none installed).
const PYTHON: &str = "/usr/bin/python3";

/// What to install when python's DWARF is missing.
const INSTALL: &str = "python3's DWARF (Debian/Ubuntu: `apt-get install python3.11-dbg`, or the \
                       `-dbg` package of the installed python3.X)";

/// (point suffix, member path in `_PyRuntime`).
const FIELDS: [(&str, &str); 3] = [
    ("initialized", "initialized"),
    ("main_thread", "main_thread"),
    ("main_interpreter_id", "interpreters.main.id"),
];

fn points_file(object: Option<&str>) -> PointsFile {
    let mut text = String::new();
    for (suffix, path) in FIELDS {
        text.push_str(&format!(
            "[[watch]]\nname = \"python.{suffix}\"\nsymbol = \"_PyRuntime\"\npath = \"{path}\"\n"
        ));
        if let Some(object) = object {
            text.push_str(&format!("object = \"{object}\"\n"));
        }
    }
    PointsFile::parse(Path::new("points.toml"), &text).expect("points file")
}

/// The file name of the libpython the process maps, if it has one (a shared build).
fn mapped_libpython(pid: i32) -> Option<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter_map(|path| path.rsplit('/').next())
        .find(|file| file.starts_with("libpython3"))
        .map(str::to_owned)
}

#[test]
fn cpython_runtime_fields_agree_with_gdb_print() {
    if !can_run(true) {
        return;
    }
    if !Path::new(PYTHON).exists() && !runs_without(&[&format!("{PYTHON} and {INSTALL}")]) {
        return;
    }
    let mut python = Command::new(PYTHON);
    python.args([
        "-c",
        "import time; print('ready', flush=True); time.sleep(600)",
    ]);
    let fixture = Fixture::spawn_command(python);
    let library = mapped_libpython(fixture.pid);
    let target = Target::attach(i64::from(fixture.pid)).expect("attach");
    let resolved = match Resolved::attach(target, &points_file(library.as_deref()).watches) {
        Ok(resolved) => resolved,
        Err(SidecarError::Object(error @ ObjectError::NoDebugInfo { .. })) => {
            runs_without(&[&format!("{INSTALL}: {error}")]);
            return;
        }
        Err(error) => panic!("_PyRuntime does not resolve: {error}"),
    };
    let object = &resolved.objects[0];
    eprintln!(
        "_PyRuntime in {} (build-id {}), DWARF from {}",
        object.path, object.build_id, object.debug_file
    );
    let sidecar = Sidecar::declare(resolved).expect("declare");

    let mut all = Vec::new();
    for (suffix, path) in FIELDS {
        let expr = format!("_PyRuntime.{path}");
        capture_watch_once(&sidecar, &format!("python.{suffix}"), &expr, &mut all);
    }
    assert_eq!(all.len(), FIELDS.len(), "one scalar each: {all:?}");
    assert_eq!(
        leaf(&all, "_PyRuntime.initialized"),
        &Leaf::Int(1),
        "a running interpreter is initialized"
    );
    assert!(
        matches!(leaf(&all, "_PyRuntime.main_thread"), Leaf::Uint(thread) if *thread != 0),
        "{all:?}"
    );
    assert_eq!(
        leaf(&all, "_PyRuntime.interpreters.main.id"),
        &Leaf::Int(0),
        "the main interpreter is interpreter 0"
    );

    assert_all_agree_with_gdb(fixture.pid, &all);
}

//! Watch points on a shared library's globals: the library is found in the target's maps by
//! file name (`libstock.so` matches the mapped `libstock.so.1`), read through map_files with
//! its own bias and DWARF, and every decoded scalar agrees with gdb's `print`, beside a watch
//! on the executable in the same file. A library the target has not mapped is refused, saying
//! which libraries it has.

mod support;

use loupe_sidecar::elf::ObjectError;
use loupe_sidecar::{PointsFile, Resolved, Sidecar, SidecarError, Target};
use std::path::Path;
use std::process::Command;
use support::*;

fn build(dir: &Path) -> std::path::PathBuf {
    let library = dir.join("libstock.so.1");
    let status = Command::new("cc")
        .args([
            "-g",
            "-O2",
            "-fPIC",
            "-shared",
            "-Wl,-soname,libstock.so.1",
            "-o",
        ])
        .arg(&library)
        .arg(fixture_source("libstock.c"))
        .status()
        .expect("cc");
    assert!(status.success(), "cc libstock");
    let binary = dir.join("uses_lib");
    let status = Command::new("cc")
        .args(["-g", "-O0", "-o"])
        .arg(&binary)
        .arg(fixture_source("uses_lib.c"))
        .arg(&library)
        .arg(format!("-Wl,-rpath,{}", dir.display()))
        .status()
        .expect("cc");
    assert!(status.success(), "cc uses_lib");
    binary
}

#[test]
fn a_shared_librarys_globals_are_watched_and_agree_with_gdb() {
    if !can_run(true) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = Fixture::spawn(&build(dir.path()));

    let missing = PointsFile::parse(
        Path::new("points.toml"),
        "[[watch]]\nname = \"lib.none\"\nsymbol = \"g_stock\"\nobject = \"libnope.so\"\n",
    )
    .expect("points");
    let target = Target::attach(i64::from(fixture.pid)).expect("attach");
    let error = Resolved::attach(target, &missing.watches).expect_err("not mapped");
    assert!(
        matches!(
            error,
            SidecarError::Object(ObjectError::LibraryNotMapped { .. })
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("libstock.so.1"),
        "lists what is mapped: {error}"
    );

    let points = PointsFile::parse(
        Path::new("points.toml"),
        "[[watch]]\nname = \"lib.stock\"\nsymbol = \"g_stock\"\nobject = \"libstock.so\"\n\
         [[watch]]\nname = \"lib.counter\"\nsymbol = \"g_main_counter\"\n",
    )
    .expect("points");
    let target = Target::attach(i64::from(fixture.pid)).expect("attach");
    let resolved = Resolved::attach(target, &points.watches).expect("resolves");
    assert_eq!(resolved.objects.len(), 2);
    assert!(
        resolved
            .objects
            .iter()
            .any(|o| o.path.ends_with("libstock.so.1")),
        "{:?}",
        resolved.objects
    );
    let sidecar = Sidecar::declare(resolved).expect("declare");

    let mut all = Vec::new();
    for (point, expr) in [("lib.stock", "g_stock"), ("lib.counter", "g_main_counter")] {
        capture_watch_once(&sidecar, point, expr, &mut all);
    }
    assert!(
        all.contains(&("g_stock.on_hand".to_owned(), Leaf::Int(17))),
        "{all:?}"
    );
    assert!(all.contains(&("g_stock.warehouse".to_owned(), Leaf::Text("north".into()))));
    assert!(all.contains(&("g_main_counter".to_owned(), Leaf::Int(99))));
    assert_all_agree_with_gdb(fixture.pid, &all);
}

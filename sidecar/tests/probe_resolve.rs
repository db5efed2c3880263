//! Probe points resolved against the C fixture built the ways distributions and developers
//! build C (`-O0`/`-O2`, with and without CET's `-fcf-protection`, PIE or not): the probe goes
//! at the entry, after `endbr64` when there is one, and is priced by the instruction there;
//! each parameter is placed where it is at entry, or marked not captured (a float in XMM),
//! never guessed; a function that does not resolve (or is only inlined) stops the sidecar,
//! naming the point.

mod support;

use std::path::Path;

use loupe_sidecar::location::{ParamLocation, Piece, Place};
use loupe_sidecar::probe::CostClass;
use loupe_sidecar::{PointsFile, Resolved, SidecarError, Target};
use support::*;

fn points(text: &str) -> PointsFile {
    PointsFile::parse(Path::new("points.toml"), text).expect("points file")
}

fn in_register(register: u16) -> ParamLocation {
    ParamLocation::Pieces(vec![Piece {
        place: Place::Register(register),
        size: None,
    }])
}

#[test]
fn probes_resolve_to_the_entry_after_endbr64_with_parameters_at_entry() {
    if !can_run(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let source = fixture_source("calls.c");
    let file = points(
        "[[probe]]\nname = \"app.work\"\nfunction = \"work\"\n[[probe]]\nname = \"app.scale\"\nfunction = \"scale\"\n",
    );
    for (variant, flags) in CALLS_VARIANTS {
        let binary = build_c(dir.path(), &source, &format!("calls_{variant}"), flags);
        let fixture = Fixture::spawn(&binary);
        let target = Target::attach(i64::from(fixture.pid)).expect("attach");
        let resolved = Resolved::attach_points(target, &file.watches, &file.probes)
            .unwrap_or_else(|e| panic!("{variant}: {e}"));
        let work = &resolved.probes[0];
        assert_eq!(work.spec.name, "app.work");
        assert_eq!(work.qualified_name, "work");
        assert!(work.decl_file.ends_with("calls.c"), "{variant}");
        assert_eq!(
            work.decl_line,
            fixture_line("calls.c", "long work("),
            "{variant}"
        );
        let cet = variant.contains("cet");
        assert_eq!(work.after_endbr64, cet, "{variant}");
        assert_eq!(
            work.address - work.entry,
            if cet { 4 } else { 0 },
            "{variant}"
        );
        if variant.contains("pie") && !variant.contains("nopie") {
            let bias = resolved.objects[0].bias;
            assert_eq!(
                work.address - bias,
                work.file_offset,
                "{variant}: a gcc/bfd PIE has its text at the file offset equal to its address"
            );
        }
        if variant.starts_with("o0") {
            // `push %rbp`, whether or not endbr64 came first.
            assert_eq!(work.cost, CostClass::Emulated, "{variant}");
        }
        let names: Vec<&str> = work.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["n", "item", "label"], "{variant}");
        assert_eq!(work.params[0].type_name, "i32");
        assert_eq!(work.params[1].type_name, "*item");
        assert_eq!(work.params[2].type_name, "char *");
        // rdi, rsi, rdx: from DWARF at -O2, from the calling convention at -O0.
        for (param, register) in work.params.iter().zip([5, 4, 1]) {
            assert_eq!(
                param.location,
                in_register(register),
                "{variant}: {}",
                param.name
            );
        }
        let scale = &resolved.probes[1];
        assert!(
            matches!(scale.params[0].location, ParamLocation::NotCaptured(why) if why.contains("XMM")),
            "{variant}: a double is in XMM: {:?}",
            scale.params[0].location
        );
        assert_eq!(
            scale.params[1].location,
            in_register(5),
            "{variant}: k in rdi"
        );
    }
}

#[test]
fn a_probe_that_does_not_resolve_stops_the_sidecar_naming_the_point() {
    if !can_run(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = build_c(
        dir.path(),
        &fixture_source("calls.c"),
        "calls",
        &["-g", "-O2"],
    );
    let fixture = Fixture::spawn(&binary);
    for (text, expected) in [
        (
            "[[probe]]\nname = \"app.nothing\"\nfunction = \"no_such_function\"\n",
            "no function of that name",
        ),
        (
            "[[probe]]\nname = \"app.twice\"\nfunction = \"twice\"\n",
            "only inlined into its callers",
        ),
        (
            "[[probe]]\nname = \"app.work\"\nfunction = \"work\"\nargs = [\"count\"]\n",
            "has no parameter `count`; it has n, item, label",
        ),
    ] {
        let file = points(text);
        let target = Target::attach(i64::from(fixture.pid)).expect("attach");
        let error = Resolved::attach_points(target, &file.watches, &file.probes).unwrap_err();
        assert!(matches!(error, SidecarError::Unresolved { .. }), "{error}");
        let message = error.to_string();
        let point = &file.probes[0].name;
        assert!(
            message.contains(&format!("`{point}`")) && message.contains(expected),
            "{message}"
        );
    }
}

//! Refusals at attach: each names what is wrong and what to do. A process that is gone, a
//! point that does not resolve (every one named, none served), an executable without debug
//! info, a sidecar without the right to read the target or, with probe points, to open uprobes;
//! and what must still work: a target whose binary was deleted from disk, and split debug info
//! found by debuglink.

mod support;

use std::path::Path;
use std::process::Command;

use loupe_sidecar::elf::ObjectError;
use loupe_sidecar::layout::Step;
use loupe_sidecar::{AttachError, PointsFile, Resolved, SidecarError, Target};
use support::*;

fn watches(text: &str) -> PointsFile {
    PointsFile::parse(Path::new("points.toml"), text).expect("points file")
}

#[test]
fn a_process_that_is_gone_is_refused() {
    if !can_run(false) {
        return;
    }
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("reaped");
    let error = Target::attach(i64::from(pid)).expect_err("gone");
    assert!(matches!(error, AttachError::Gone { .. }), "{error}");
    assert!(error.to_string().contains("does not exist"), "{error}");
    let error = Target::attach_pid_file(Path::new("/nonexistent/app.pid")).expect_err("no file");
    assert!(matches!(error, AttachError::PidFile { .. }), "{error}");
}

#[test]
fn unresolved_points_are_refused_each_named() {
    if !can_run(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = build_c(
        dir.path(),
        &fixture_source("shapes.c"),
        "shapes",
        &["-g", "-O2"],
    );
    let fixture = Fixture::spawn(&binary);
    let points = watches(
        "[[watch]]\nname = \"app.ok\"\nsymbol = \"g_config\"\n\
         [[watch]]\nname = \"app.missing\"\nsymbol = \"g_no_such_global\"\n\
         [[watch]]\nname = \"app.bad_path\"\nsymbol = \"g_config\"\npath = \"limits.nope\"\n\
         [[watch]]\nname = \"app.through_int\"\nsymbol = \"g_negative\"\npath = \"x\"\n",
    );
    let target = Target::attach(i64::from(fixture.pid)).expect("attach");
    let error = Resolved::attach(target, &points.watches).expect_err("refused");
    let SidecarError::Unresolved { problems, .. } = &error else {
        panic!("{error}");
    };
    assert_eq!(problems.len(), 3, "{error}");
    let text = error.to_string();
    assert!(
        text.contains("app.missing") && text.contains("g_no_such_global"),
        "{text}"
    );
    assert!(
        text.contains("app.bad_path") && text.contains("no member `nope`"),
        "{text}"
    );
    assert!(
        text.contains("max, min, big, ratio, scale"),
        "lists the members: {text}"
    );
    assert!(text.contains("app.through_int"), "{text}");
    assert!(!text.contains("app.ok"), "{text}");
}

#[test]
fn an_executable_without_debug_info_is_refused_saying_what_to_install() {
    if !can_run(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = build_c(dir.path(), &fixture_source("shapes.c"), "bare", &["-O2"]);
    let fixture = Fixture::spawn(&binary);
    let target = Target::attach(i64::from(fixture.pid)).expect("attach");
    let error = Resolved::attach(
        target,
        &watches("[[watch]]\nname = \"a.b\"\nsymbol = \"g_pi\"\n").watches,
    )
    .expect_err("no DWARF");
    assert!(
        matches!(error, SidecarError::Object(ObjectError::NoDebugInfo { .. })),
        "{error}"
    );
    let text = error.to_string();
    for advice in ["-g", "/usr/lib/debug/.build-id/", "debuginfod-find", "-dbg"] {
        assert!(text.contains(advice), "missing {advice:?}: {text}");
    }
}

#[test]
fn split_debug_info_is_found_by_debuglink_and_a_deleted_binary_still_reads() {
    if !can_run(false) {
        return;
    }
    if !Command::new("objcopy")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(
            std::env::var("LOUPE_REQUIRE_PRIVILEGED_TESTS").as_deref() != Ok("1"),
            "objcopy (binutils) is required"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = build_c(
        dir.path(),
        &fixture_source("shapes.c"),
        "split",
        &["-g", "-O2"],
    );
    let debug = dir.path().join("split.debug");
    let run = |args: &[&str]| {
        let status = Command::new("objcopy")
            .args(args)
            .status()
            .expect("objcopy");
        assert!(status.success(), "objcopy {args:?}");
    };
    let (binary_s, debug_s) = (
        binary.to_str().expect("utf-8"),
        debug.to_str().expect("utf-8"),
    );
    run(&["--only-keep-debug", binary_s, debug_s]);
    run(&["--strip-debug", binary_s]);
    run(&[&format!("--add-gnu-debuglink={debug_s}"), binary_s]);
    let fixture = Fixture::spawn(&binary);
    // Deleted from disk: map_files still holds the mapped file.
    std::fs::remove_file(&binary).expect("delete the binary");
    let target = Target::attach(i64::from(fixture.pid)).expect("attach");
    let resolved = Resolved::attach(
        target,
        &watches("[[watch]]\nname = \"a.b\"\nsymbol = \"g_config\"\npath = \"limits.max\"\n")
            .watches,
    )
    .expect("resolves through the debuglink");
    assert!(
        resolved.objects[0]
            .debug_file
            .ends_with(&debug.display().to_string()),
        "{:?}",
        resolved.objects
    );
    let watch = &resolved.watches[0];
    let offset: u64 = watch
        .access
        .steps
        .iter()
        .map(|step| match step {
            Step::Offset(offset) => *offset,
            Step::Deref => panic!("no pointer on this path"),
        })
        .sum();
    let mut value = [0u8; 4];
    resolved
        .target
        .read(watch.address + offset, &mut value)
        .expect("read");
    assert_eq!(i32::from_le_bytes(value), 100);
}

#[test]
fn a_sidecar_without_cap_sys_ptrace_is_told_what_to_grant() {
    if !can_run(false) {
        return;
    }
    let is_root = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")));
    if !is_root
        || !Command::new("setpriv")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        assert!(
            std::env::var("LOUPE_REQUIRE_PRIVILEGED_TESTS").as_deref() != Ok("1"),
            "this test runs the sidecar as `nobody` with setpriv, which needs root"
        );
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = build_c(
        dir.path(),
        &fixture_source("shapes.c"),
        "shapes",
        &["-g", "-O2"],
    );
    let fixture = Fixture::spawn(&binary);
    let points = dir.path().join("points.toml");
    std::fs::write(&points, "[[watch]]\nname = \"a.b\"\nsymbol = \"g_pi\"\n").expect("write");
    let mut permissions = std::fs::metadata(dir.path()).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(dir.path(), permissions).expect("chmod");
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
            env!("CARGO_BIN_EXE_loupe-agent"),
            "sidecar",
            "--check",
            "--pid",
            &fixture.pid.to_string(),
            "--points",
        ])
        .arg(&points)
        .output()
        .expect("run the sidecar as nobody");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // 4: a privilege is missing (an environment to fix, not a points file).
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("no permission to inspect process"),
        "{stderr}"
    );
    assert!(
        stderr.contains("CAP_SYS_PTRACE") && stderr.contains("setcap"),
        "{stderr}"
    );
    assert!(
        stderr.contains("uid 0") && stderr.contains("uid 65534"),
        "{stderr}"
    );
}

#[test]
fn the_pid_file_names_the_target_and_check_prints_what_each_point_watches() {
    if !can_run(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = build_c(
        dir.path(),
        &fixture_source("shapes.c"),
        "shapes",
        &["-g", "-O2"],
    );
    let fixture = Fixture::spawn(&binary);
    let pid_file = dir.path().join("app.pid");
    std::fs::write(&pid_file, format!("{}\n", fixture.pid)).expect("pid file");
    let points = dir.path().join("points.toml");
    std::fs::write(
        &points,
        format!(
            "[target]\npid_file = \"{}\"\n[[watch]]\nname = \"app.max\"\nsymbol = \"g_config\"\npath = \"limits.max\"\n",
            pid_file.display()
        ),
    )
    .expect("points file");
    let output = Command::new(env!("CARGO_BIN_EXE_loupe-agent"))
        .args(["sidecar", "--check", "--points"])
        .arg(&points)
        .output()
        .expect("run the sidecar");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("process {}", fixture.pid)),
        "{stdout}"
    );
    assert!(
        stdout.contains("watch app.max = g_config.limits.max : i32")
            && stdout.contains("shapes.c:"),
        "{stdout}"
    );

    std::fs::write(&pid_file, "not a pid\n").expect("pid file");
    let error = Target::attach_pid_file(&pid_file).expect_err("refused");
    assert!(
        matches!(error, AttachError::PidFileContent { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("not a pid"), "{error}");

    // A probe point is resolved and listed with its parameters; one that does not resolve
    // stops the sidecar, naming the point.
    let check = |text: &str| {
        std::fs::write(&points, text).expect("points file");
        Command::new(env!("CARGO_BIN_EXE_loupe-agent"))
            .args([
                "sidecar",
                "--check",
                "--pid",
                &fixture.pid.to_string(),
                "--points",
            ])
            .arg(&points)
            .output()
            .expect("run the sidecar")
    };
    let output = check(
        "[[watch]]\nname = \"app.max\"\nsymbol = \"g_config\"\n[[probe]]\nname = \"app.main\"\nfunction = \"main\"\n",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("probe app.main = main at") && stdout.contains("shapes.c:"),
        "{stdout}"
    );
    let output = check("[[probe]]\nname = \"app.work\"\nfunction = \"no_such_work\"\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`app.work`") && stderr.contains("no function of that name"),
        "{stderr}"
    );
}

/// A sidecar with probe points but without CAP_SYS_ADMIN (it keeps CAP_SYS_PTRACE, enough for
/// watch points) refuses to start and says what to grant, rather than serve probes it could
/// never arm; with `--watches-only` it gets past that, saying which probe points it leaves
/// out.
#[test]
fn probe_points_without_cap_sys_admin_are_refused_saying_what_to_grant() {
    if !can_run_probes() {
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
    let points = dir.path().join("points.toml");
    std::fs::write(
        &points,
        "[[watch]]\nname = \"app.item\"\nsymbol = \"g_item\"\n\
         [[probe]]\nname = \"app.work\"\nfunction = \"work\"\n",
    )
    .expect("points file");
    let without_sys_admin = |extra: &[&str]| {
        Command::new("setpriv")
            .args(["--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--"])
            .arg(env!("CARGO_BIN_EXE_loupe-agent"))
            .args(["sidecar", "--pid", &fixture.pid.to_string(), "--points"])
            .arg(&points)
            .args(extra)
            .args([
                "--service",
                "app",
                "--cert",
                "a.crt",
                "--key",
                "a.key",
                "--ca",
                "ca.pem",
            ])
            .args(["--control-plane", "spiffe://example.org/control-plane"])
            .output()
            .expect("run the sidecar under setpriv")
    };
    let output = without_sys_admin(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // 4: a privilege is missing (an environment to fix, not a points file).
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("CAP_SYS_ADMIN") && stderr.contains("setcap"),
        "{stderr}"
    );

    // Watches only: no privilege is missing any more; what stops it now is the made-up
    // certificate, after the probe point was resolved and left out.
    let output = without_sys_admin(&["--watches-only"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--watches-only: probe point(s) app.work resolve but are not served"),
        "{stderr}"
    );
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        !stderr.contains("CAP_SYS_ADMIN") && stderr.contains("a.crt"),
        "{stderr}"
    );
}

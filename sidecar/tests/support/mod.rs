//! Shared by the sidecar's integration tests: fixtures built at test time and run as real
//! processes, gdb as the oracle, and the privileged-test gate.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use loupe_proto::v1 as pb;
use loupe_proto::v1::value::Kind;

/// Whether a test that needs `cc`, `gdb` and the right to read another process may run here.
/// Without them it is skipped with a note, unless `LOUPE_REQUIRE_PRIVILEGED_TESTS=1` (as in
/// CI, which runs as root), where their absence fails the test.
pub fn can_run(needs_gdb: bool) -> bool {
    let mut missing = Vec::new();
    if !tool_runs("cc", &["--version"]) {
        missing.push("a C compiler (`cc`)");
    }
    if needs_gdb && !tool_runs("gdb", &["--version"]) {
        missing.push("gdb (the oracle)");
    }
    if let Ok(scope) = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        && scope.trim() != "0"
        && !is_root()
    {
        missing.push("root or CAP_SYS_PTRACE (Yama ptrace_scope is above 0)");
    }
    runs_without(&missing)
}

/// True when nothing is missing; otherwise skips with a note, or fails under
/// `LOUPE_REQUIRE_PRIVILEGED_TESTS=1`.
pub fn runs_without(missing: &[&str]) -> bool {
    if missing.is_empty() {
        return true;
    }
    let why = format!("this test needs {}", missing.join(", "));
    if std::env::var("LOUPE_REQUIRE_PRIVILEGED_TESTS").as_deref() == Ok("1") {
        panic!("{why}, and LOUPE_REQUIRE_PRIVILEGED_TESTS=1 requires this test to run");
    }
    eprintln!("skipped: {why}");
    false
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|uids| uids.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn tool_runs(tool: &str, args: &[&str]) -> bool {
    Command::new(tool)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn fixture_source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Compiles `source` with `cc -g` and `flags` into `dir`.
pub fn build_c(dir: &Path, source: &Path, output: &str, flags: &[&str]) -> PathBuf {
    let out = dir.join(output);
    let status = Command::new("cc")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(source)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc {flags:?} {} failed", source.display());
    out
}

/// A fixture process, killed and reaped when dropped.
pub struct Fixture {
    pub child: Child,
    pub pid: i32,
}

impl Fixture {
    /// Starts `path` and waits for its `ready` line.
    pub fn spawn(path: &Path) -> Fixture {
        Fixture::spawn_command(Command::new(path))
    }

    /// Starts `command` and waits for its `ready` line.
    pub fn spawn_command(mut command: Command) -> Fixture {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn fixture");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("fixture ready line");
        assert!(line.starts_with("ready"), "fixture said {line:?}");
        let pid = i32::try_from(child.id()).expect("pid fits");
        Fixture { child, pid }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What gdb printed for each expression: `print_cmd` is `print`, `print/d`, ...
pub fn gdb_print(pid: i32, commands: &[String]) -> Vec<String> {
    let mut gdb = Command::new("gdb");
    gdb.args(["-nx", "-batch", "-p", &pid.to_string()]);
    for setting in [
        "set print elements 0",
        "set print repeats unlimited",
        "set print null-stop on",
        "set print address off",
    ] {
        gdb.args(["-ex", setting]);
    }
    for (index, command) in commands.iter().enumerate() {
        gdb.args(["-ex", &format!("echo @@{index}@@\\n"), "-ex", command]);
    }
    gdb.args(["-ex", "echo @@end@@\\n"]);
    let output = gdb.output().expect("run gdb");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut answers = Vec::new();
    for index in 0..commands.len() {
        let start_marker = format!("@@{index}@@\n");
        let end_marker = if index + 1 < commands.len() {
            format!("@@{}@@\n", index + 1)
        } else {
            "@@end@@\n".to_owned()
        };
        let start = stdout
            .find(&start_marker)
            .unwrap_or_else(|| panic!("gdb output lacks marker {index}: {stdout}"))
            + start_marker.len();
        let end = stdout[start..]
            .find(&end_marker)
            .map(|e| start + e)
            .unwrap_or(stdout.len());
        answers.push(stdout[start..end].trim().to_owned());
    }
    answers
}

/// One scalar a snapshot holds, at a gdb expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf {
    Int(i64),
    Uint(u64),
    Bool(bool),
    Float(f64),
    Text(String),
    Variant(String),
    Null,
    NotCaptured(pb::NotCapturedReason, String),
    Redacted,
}

/// Every leaf of `kind`, with the C expression that names it from `expr`. Pointers are
/// transparent in a snapshot, and gdb accepts `.` on a pointer, so `a.head.id` names both.
pub fn leaves(kind: &Kind, expr: &str, out: &mut Vec<(String, Leaf)>) {
    let leaf = match kind {
        Kind::Null(_) => Leaf::Null,
        Kind::Bool(b) => Leaf::Bool(*b),
        Kind::Int(i) => Leaf::Int(*i),
        Kind::Uint(u) => Leaf::Uint(*u),
        Kind::Float(f) => Leaf::Float(*f),
        Kind::String(s) => Leaf::Text(s.value.clone()),
        Kind::Redacted(_) => Leaf::Redacted,
        Kind::NotCaptured(n) => Leaf::NotCaptured(n.reason(), n.detail.clone()),
        Kind::Struct(s) => {
            for field in &s.fields {
                let value = field.value.as_ref().and_then(|v| v.kind.as_ref());
                leaves(
                    value.expect("field has a value"),
                    &format!("{expr}.{}", field.name),
                    out,
                );
            }
            return;
        }
        Kind::List(list) => {
            for (index, item) in list.items.iter().enumerate() {
                let value = item.kind.as_ref().expect("item has a kind");
                leaves(value, &format!("{expr}[{index}]"), out);
            }
            return;
        }
        Kind::Enum(e) if e.fields.is_empty() => Leaf::Variant(e.variant.clone()),
        other => panic!("unexpected value at {expr}: {other:?}"),
    };
    out.push((expr.to_owned(), leaf));
}

/// The gdb command whose answer a leaf is compared with (`None`: not compared with gdb).
pub fn gdb_command(expr: &str, leaf: &Leaf) -> Option<String> {
    Some(match leaf {
        Leaf::Int(_) | Leaf::Bool(_) => format!("print/d {expr}"),
        Leaf::Uint(_) => format!("print/u {expr}"),
        Leaf::Null => format!("print/x {expr}"),
        Leaf::Float(_) | Leaf::Text(_) | Leaf::Variant(_) => format!("print {expr}"),
        // Unreadable memory is what a pointer leads to: gdb must fail to read it too.
        Leaf::NotCaptured(pb::NotCapturedReason::Unreadable, _) => format!("print *{expr}"),
        Leaf::NotCaptured(..) | Leaf::Redacted => return None,
    })
}

/// Whether gdb's answer agrees with the leaf; `Err` says how it does not.
pub fn agrees(leaf: &Leaf, answer: &str) -> Result<(), String> {
    let value = answer
        .split_once(" = ")
        .map(|(_, v)| v.trim())
        .unwrap_or("");
    let ok = match leaf {
        Leaf::Int(i) => value.parse::<i64>().ok() == Some(*i),
        Leaf::Uint(u) => value.parse::<u64>().ok() == Some(*u),
        Leaf::Bool(b) => value == if *b { "1" } else { "0" },
        Leaf::Null => value == "0x0",
        Leaf::Float(f) => value
            .parse::<f64>()
            .is_ok_and(|g| (g - f).abs() <= 1e-6 * g.abs().max(1.0)),
        Leaf::Text(text) => gdb_string(value).as_deref() == Some(text.as_str()),
        Leaf::Variant(variant) => value == variant,
        // gdb cannot read it either.
        Leaf::NotCaptured(..) => !answer.contains(" = "),
        Leaf::Redacted => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("sidecar {leaf:?}, gdb {answer:?}"))
    }
}

/// The text of gdb's first quoted string in `value`, unescaped.
fn gdb_string(value: &str) -> Option<String> {
    let start = value.find('"')? + 1;
    let mut out = Vec::new();
    let mut chars = value[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return String::from_utf8(out).ok(),
            '\\' => match chars.next()? {
                'n' => out.push(b'\n'),
                't' => out.push(b'\t'),
                '"' => out.push(b'"'),
                '\\' => out.push(b'\\'),
                d @ '0'..='7' => {
                    let mut octal = d.to_digit(8)?;
                    for _ in 0..2 {
                        let next = chars.clone().next()?;
                        if let Some(digit) = next.to_digit(8) {
                            octal = octal * 8 + digit;
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    out.push(u8::try_from(octal).ok()?);
                }
                other => out.extend(other.to_string().bytes()),
            },
            other => out.extend(other.to_string().bytes()),
        }
    }
    None
}

/// Arms a one-snapshot capture on the watch point `point`, takes the sidecar's sample, and
/// adds the snapshot's leaves, named from the C expression `expr`, to `out`.
pub fn capture_watch_once(
    sidecar: &loupe_sidecar::Sidecar,
    point: &str,
    expr: &str,
    out: &mut Vec<(String, Leaf)>,
) {
    let mut stream = loupe_agent::arm(
        loupe_agent::CaptureSpec::new(format!("s-{point}"), point)
            .max_snapshots(1)
            .duration(std::time::Duration::from_secs(30)),
    )
    .expect("armed");
    sidecar.sample_armed();
    let snapshot = stream.blocking_next().expect("one snapshot");
    let kind = snapshot.fields[0]
        .value
        .as_ref()
        .and_then(|v| v.kind.as_ref())
        .expect("value");
    leaves(kind, expr, out);
}

/// Every leaf (each one gdb can print) agrees with gdb's `print` in process `pid`.
pub fn assert_all_agree_with_gdb(pid: i32, all: &[(String, Leaf)]) {
    let commands: Vec<String> = all
        .iter()
        .filter_map(|(expr, leaf)| gdb_command(expr, leaf))
        .collect();
    assert_eq!(
        commands.len(),
        all.len(),
        "gdb can print every leaf: {all:?}"
    );
    let answers = gdb_print(pid, &commands);
    for ((expr, leaf), answer) in all.iter().zip(&answers) {
        agrees(leaf, answer).unwrap_or_else(|problem| panic!("{expr}: {problem}"));
    }
}

/// Whether a probe test may run here: what [`can_run`] needs, plus root (uprobes need
/// CAP_SYS_ADMIN) and the uprobe PMU. Under `LOUPE_REQUIRE_PRIVILEGED_TESTS=1` their absence
/// fails the test.
pub fn can_run_probes() -> bool {
    if !can_run(false) {
        return false;
    }
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root (uprobes need CAP_SYS_ADMIN)");
    }
    if !Path::new("/sys/bus/event_source/devices/uprobe/type").exists() {
        missing.push("the uprobe PMU (/sys/bus/event_source/devices/uprobe)");
    }
    runs_without(&missing)
}

/// Whether this process still holds a perf event descriptor: closing every one is what
/// removes a uprobe's breakpoint from the target.
pub fn perf_events_open_here() -> bool {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .any(|target| target.to_string_lossy().contains("perf_event"))
}

/// A fixture started with an argument, whose stdout lines after `ready` can be read.
pub fn spawn_with_lines(path: &Path, arg: &str) -> (Fixture, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(path)
        .arg(arg)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn fixture");
    let stdout = child.stdout.take().expect("stdout");
    let (send, receive) = std::sync::mpsc::channel();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line).expect("fixture ready line");
    assert!(line.starts_with("ready"), "fixture said {line:?}");
    std::thread::spawn(move || {
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let pid = i32::try_from(child.id()).expect("pid fits");
    (Fixture { child, pid }, receive)
}

/// The next `window <ns per call>` the fixture printed.
pub fn next_window(lines: &std::sync::mpsc::Receiver<String>) -> f64 {
    let line = lines
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("a window line");
    line.strip_prefix("window ")
        .and_then(|ns| ns.trim().parse().ok())
        .unwrap_or_else(|| panic!("not a window line: {line:?}"))
}

/// The ways the probe fixture `calls.c` is built: optimization, CET (`endbr64` at every
/// function's entry), PIE or not.
pub const CALLS_VARIANTS: [(&str, &[&str]); 4] = [
    (
        "o0_pie",
        &["-g", "-O0", "-fcf-protection=none", "-fPIE", "-pie"],
    ),
    (
        "o2_nopie",
        &["-g", "-O2", "-fcf-protection=none", "-fno-pie", "-no-pie"],
    ),
    (
        "o0_cet_pie",
        &["-g", "-O0", "-fcf-protection", "-fPIE", "-pie"],
    ),
    (
        "o2_cet_nopie",
        &["-g", "-O2", "-fcf-protection", "-fno-pie", "-no-pie"],
    ),
];

/// The 1-based line of the first line of fixture `name` that contains `text`.
pub fn fixture_line(name: &str, text: &str) -> u32 {
    let source = std::fs::read_to_string(fixture_source(name)).expect("fixture source");
    let index = source
        .lines()
        .position(|line| line.contains(text))
        .unwrap_or_else(|| panic!("{name} has no line with {text:?}"));
    u32::try_from(index + 1).expect("line fits")
}

/// Every leaf of every field of a snapshot, named from the field.
pub fn leaves_of(snapshot: &pb::Snapshot) -> Vec<(String, Leaf)> {
    let mut all = Vec::new();
    for field in &snapshot.fields {
        let kind = field
            .value
            .as_ref()
            .and_then(|v| v.kind.as_ref())
            .expect("value");
        leaves(kind, &field.name, &mut all);
    }
    all
}

/// The leaf named `name`.
pub fn leaf<'a>(all: &'a [(String, Leaf)], name: &str) -> &'a Leaf {
    all.iter()
        .find(|(n, _)| n == name)
        .map(|(_, l)| l)
        .unwrap_or_else(|| panic!("no {name} in {all:?}"))
}

/// Sets `stop` when dropped, so that a failed assertion inside `std::thread::scope` stops the
/// sidecar's loop and the test reports its failure instead of waiting forever.
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

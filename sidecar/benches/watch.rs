//! The sidecar's read budgets, measured against their anchors in the same run.
//!
//! - `warm/*`: one armed watch sample of a struct global, taken through the agent's capture
//!   (reads, decode, limits, redaction, the snapshot queued), on a fixture process that keeps
//!   running. `c_config` is the C fixture's `g_config` (80 bytes, two pointers and two strings
//!   followed); `rust_order` is the Rust fixture's `Mutex<Option<Order>>` data (an Order with
//!   strings, a Vec of two items, an enum, a Box). The anchor `vm_readv_64b` is one bare
//!   `process_vm_readv` of 64 bytes. Budget: p50 ≤ 50 µs, p99 ≤ 200 µs; each case also prints
//!   its single-sample percentiles, since criterion's median is a median of per-sample means.
//! - `cold/*`: from nothing to the first decoded value of `g_config`: `sidecar_in_process`
//!   (attach, map_files ELF, DWARF, layout, read, decode to JSON), `sidecar_process` (the
//!   `loupe-agent sidecar --check` binary: the same plus exec, without the read), against the
//!   anchor `gdb_batch_print` (`gdb -nx -batch -p PID -ex 'print g_config'`); and the same
//!   in process on the Rust fixture (`orders::CURRENT`, a `Mutex<Option<Order>>`) against
//!   `rust_gdb_batch_print`; and on CPython (`/usr/bin/python3` sleeping, `_PyRuntime` with
//!   path `initialized`: Debian links libpython into the executable and ships its DWARF,
//!   9 MB compressed, in `python3.11-dbg`, found by build-id) `python_sidecar_in_process`
//!   against `python_gdb_batch_print` (`print _PyRuntime.initialized`), skipped with a note
//!   when python's DWARF is not installed. Budgets: the sidecar ≥ 20× faster than gdb on the
//!   Rust fixture, ≥ 5× on libpython.
//!
//! `cargo bench -p loupe-sidecar --bench watch`

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use loupe_agent::{CaptureLimits, CaptureSpec, CaptureStream, EngineConfig, RateLimit};
use loupe_sidecar::decode::Watched;
use loupe_sidecar::{PointsFile, Resolved, Sidecar, Target};

struct Fixture(Child);

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn build(dir: &Path) -> (PathBuf, PathBuf) {
    let c = dir.join("shapes");
    let ok = Command::new("cc")
        .args(["-g", "-O2", "-o"])
        .arg(&c)
        .arg(fixtures().join("shapes.c"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cc");
    let rust = dir.join("orders");
    let ok = Command::new("rustc")
        .args(["--edition", "2024", "-g", "-C", "opt-level=2", "-o"])
        .arg(&rust)
        .arg(fixtures().join("orders.rs"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "rustc");
    (c, rust)
}

fn spawn(binary: &Path) -> Fixture {
    let mut child = Command::new(binary)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    Fixture(child)
}

/// The distribution's python3, sleeping, if it runs here and its DWARF is installed.
fn spawn_python(watches: &[loupe_sidecar::WatchSpec]) -> Option<Fixture> {
    let child = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import time; print('ready', flush=True); time.sleep(3600)",
        ])
        .stdout(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        println!("cold/python_*: skipped, /usr/bin/python3 does not run here");
        return None;
    };
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    let fixture = Fixture(child);
    let target = Target::attach(i64::from(fixture.0.id())).expect("attach");
    match Resolved::attach(target, watches) {
        Ok(_) => Some(fixture),
        Err(error) => {
            println!("cold/python_*: skipped, _PyRuntime does not resolve: {error}");
            None
        }
    }
}

fn points(name: &str, symbol: &str, path: &str) -> PointsFile {
    let path = if path.is_empty() {
        String::new()
    } else {
        format!("path = \"{path}\"\n")
    };
    PointsFile::parse(
        Path::new("points.toml"),
        &format!("[[watch]]\nname = \"{name}\"\nsymbol = \"{symbol}\"\n{path}"),
    )
    .expect("points")
}

fn configure_for_benchmarks() {
    loupe_agent::Engine::global()
        .configure(EngineConfig {
            service: "bench".into(),
            // The budget and rate guards would skip most samples of a tight loop; the
            // benchmark measures the sample itself.
            cpu_budget: 1.0,
            rate_ceiling: RateLimit {
                per_second: 1e12,
                burst: u32::MAX,
            },
            max_snapshots_ceiling: u64::MAX,
            queue_capacity: 4_096,
            limit_ceiling: CaptureLimits::DEFAULT_CEILING,
            ..EngineConfig::default()
        })
        .expect("valid config");
}

fn arm(point: &str) -> CaptureStream {
    loupe_agent::arm(
        CaptureSpec::new("bench", point)
            .max_snapshots(u64::MAX)
            .duration(Duration::from_secs(3_600))
            .rate(RateLimit {
                per_second: 1e12,
                burst: u32::MAX,
            }),
    )
    .expect("armed")
}

fn percentiles(label: &str, values: &mut [u64]) {
    if values.is_empty() {
        return;
    }
    values.sort_unstable();
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize] as f64 / 1e3;
    println!(
        "{label}: single samples p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs (n={})",
        at(0.5),
        at(0.99),
        at(1.0),
        values.len()
    );
}

fn warm(c: &mut Criterion) {
    configure_for_benchmarks();
    let dir = tempfile::tempdir().expect("tempdir");
    let (c_binary, rust_binary) = build(dir.path());
    let c_fixture = spawn(&c_binary);
    let rust_fixture = spawn(&rust_binary);
    let attach = |fixture: &Fixture, points: PointsFile| {
        let target = Target::attach(i64::from(fixture.0.id())).expect("attach");
        Sidecar::declare(Resolved::attach(target, &points.watches).expect("resolve"))
            .expect("declare")
    };
    let c_sidecar = attach(&c_fixture, points("bench.c_config", "g_config", ""));
    let rust_sidecar = attach(
        &rust_fixture,
        points("bench.rust_order", "orders::CURRENT", "data"),
    );
    let anchor_target = Target::attach(i64::from(c_fixture.0.id())).expect("attach");
    let anchor_address = Resolved::attach(
        Target::attach(i64::from(c_fixture.0.id())).expect("attach"),
        &points("bench.anchor", "g_config", "").watches,
    )
    .expect("resolve")
    .watches[0]
        .address;

    let mut group = c.benchmark_group("warm");
    group.bench_function("vm_readv_64b", |b| {
        let mut buf = [0u8; 64];
        b.iter(|| anchor_target.read(anchor_address, &mut buf).expect("read"))
    });
    for (name, sidecar) in [("c_config", &c_sidecar), ("rust_order", &rust_sidecar)] {
        let mut stream = arm(&format!("bench.{name}"));
        let mut single = Vec::new();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    sidecar.sample_armed();
                    let took = start.elapsed();
                    total += took;
                    single.push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
                    while stream.try_next().is_some() {}
                }
                total
            })
        });
        percentiles(&format!("warm/{name}"), &mut single);
        stream.disarm();
    }
    group.finish();
}

/// Attach, resolve and decode one watch from nothing, as a fresh sidecar's first snapshot.
fn first_snapshot(pid: u32, watches: &[loupe_sidecar::WatchSpec]) -> String {
    let target = Target::attach(i64::from(pid)).expect("attach");
    let resolved = Resolved::attach(target, watches).expect("resolve");
    let watch = &resolved.watches[0];
    let watched = Watched {
        layouts: &resolved.layouts,
        access: &watch.access,
        address: watch.address,
        memory: &resolved.target,
    };
    serde_json::to_string(&watched).expect("decode")
}

/// The anchor: `gdb -nx -batch -p PID -ex 'print EXPR'`, whose output must contain `expect`.
fn gdb_batch_print(pid: u32, expr: &str, expect: &str) {
    let output = Command::new("gdb")
        .args(["-nx", "-batch", "-p", &pid.to_string()])
        .args(["-ex", &format!("print {expr}")])
        .output()
        .expect("gdb");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(expect),
        "gdb printed {output:?}"
    );
}

fn cold(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (c_binary, rust_binary) = build(dir.path());
    let fixture = spawn(&c_binary);
    let rust_fixture = spawn(&rust_binary);
    let pid = fixture.0.id();
    let rust_pid = rust_fixture.0.id();
    let watches = points("cold.config", "g_config", "").watches;
    let rust_watches = points("cold.order", "orders::CURRENT", "").watches;
    let points_file = dir.path().join("points.toml");
    std::fs::write(
        &points_file,
        "[[watch]]\nname = \"cold.config\"\nsymbol = \"g_config\"\n",
    )
    .expect("points file");

    let mut group = c.benchmark_group("cold");
    group.sample_size(10);
    group.bench_function("sidecar_in_process", |b| {
        b.iter(|| first_snapshot(pid, &watches))
    });
    group.bench_function("rust_sidecar_in_process", |b| {
        b.iter(|| first_snapshot(rust_pid, &rust_watches))
    });
    group.bench_function("rust_gdb_batch_print", |b| {
        b.iter(|| gdb_batch_print(rust_pid, "orders::CURRENT", "4242"))
    });
    let python_watches = points("cold.python", "_PyRuntime", "initialized").watches;
    if let Some(python) = spawn_python(&python_watches) {
        let python_pid = python.0.id();
        group.bench_function("python_sidecar_in_process", |b| {
            b.iter(|| first_snapshot(python_pid, &python_watches))
        });
        group.bench_function("python_gdb_batch_print", |b| {
            b.iter(|| gdb_batch_print(python_pid, "_PyRuntime.initialized", "= 1"))
        });
    }
    group.bench_function("sidecar_process", |b| {
        b.iter(|| {
            let status = Command::new(env!("CARGO_BIN_EXE_loupe-agent"))
                .args(["sidecar", "--check", "--pid", &pid.to_string(), "--points"])
                .arg(&points_file)
                .stdout(Stdio::null())
                .status()
                .expect("sidecar");
            assert!(status.success());
        })
    });
    group.bench_function("gdb_batch_print", |b| {
        b.iter(|| gdb_batch_print(pid, "g_config", "limits"))
    });
    group.finish();
}

criterion_group!(benches, warm, cold);
criterion_main!(benches);

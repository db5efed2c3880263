//! What a probe hit costs the target, measured against the same call unprobed in the same run.
//!
//! The target is this benchmark process: two functions written in assembly so that the
//! instruction at their entry is fixed, `bench_push` (starts with `push %rbp`, which the kernel
//! emulates) and `bench_mov` (starts with `mov %rdi,%rax`, which it single-steps out of line).
//! Each is timed as `*/unprobed`, then with a uprobe open at its entry exactly as an armed probe
//! point opens it (registers and 512 bytes of stack sampled per hit, one ring per thread, a
//! second thread draining the rings as the sidecar's loop does) as `*/probed`. The difference is
//! the cost added per hit. Budget: ≤ 1.5 µs at an emulated instruction, ≤ 10 µs otherwise.
//!
//! `debug_exception_floor/breakpoint` calls `bench_mov` with no uprobe but a hardware execute
//! breakpoint on its entry, counting only: one debug exception (#DB) and nothing else. The
//! out-of-line step of the single-stepped case ends in the same exception, so this is the part
//! of that case the host sets (under KVM every #DB leaves the guest for the hypervisor), and
//! `single_stepped_mov/probed` minus it is what the uprobe adds.
//! Needs root (uprobes need CAP_SYS_ADMIN); without it the probed cases are skipped with a note.
//!
//! `cargo bench -p loupe-sidecar --bench probe`

// The functions probed are assembly, so that their first instruction is fixed whatever the
// compiler does: that needs `global_asm!` and an `extern` block to call them.
#![allow(unsafe_code)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use loupe_sidecar::uprobe::{DebugTrapCounter, Uprobe};
use object::{Object, ObjectSegment, ObjectSymbol};

std::arch::global_asm!(
    ".globl loupe_bench_push",
    "loupe_bench_push:",
    "push rbp",
    "mov rax, rdi",
    "add rax, 1",
    "pop rbp",
    "ret",
    ".globl loupe_bench_mov",
    "loupe_bench_mov:",
    "mov rax, rdi",
    "add rax, 1",
    "ret",
);

unsafe extern "C" {
    fn loupe_bench_push(x: u64) -> u64;
    fn loupe_bench_mov(x: u64) -> u64;
}

fn call_push(x: u64) -> u64 {
    // SAFETY: a leaf function in this binary that only reads rdi and returns in rax.
    unsafe { loupe_bench_push(x) }
}

fn call_mov(x: u64) -> u64 {
    // SAFETY: as above.
    unsafe { loupe_bench_mov(x) }
}

/// The file offset of `symbol` in this executable.
fn file_offset(symbol: &str) -> Option<u64> {
    let bytes = std::fs::read("/proc/self/exe").ok()?;
    let file = object::File::parse(&*bytes).ok()?;
    let address = file.symbols().find(|s| s.name() == Ok(symbol))?.address();
    file.segments().find_map(|segment| {
        let start = segment.address();
        let (offset, size) = segment.file_range();
        (start..start + size)
            .contains(&address)
            .then(|| offset + (address - start))
    })
}

/// A uprobe at `symbol` in this process, its rings drained by a thread until dropped.
struct Armed {
    stop: Arc<AtomicBool>,
    drainer: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl Armed {
    fn open(symbol: &str) -> Option<Armed> {
        let offset = file_offset(symbol)?;
        let pid = i32::try_from(std::process::id()).ok()?;
        let mut uprobe = match Uprobe::open(pid, Path::new("/proc/self/exe"), offset) {
            Ok(uprobe) => uprobe,
            Err(error) => {
                eprintln!("skipped the probed cases: {error}");
                return None;
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let drainer = std::thread::spawn(move || {
            let mut samples = 0u64;
            while !stopping.load(Ordering::Relaxed) {
                uprobe.drain(&mut |_| samples += 1);
                std::thread::sleep(Duration::from_millis(10));
            }
            uprobe.drain(&mut |_| samples += 1);
            (samples, uprobe.lost())
        });
        Some(Armed {
            stop,
            drainer: Some(drainer),
        })
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some((samples, lost)) = self.drainer.take().and_then(|d| d.join().ok()) {
            eprintln!("  ({samples} samples read, {lost} lost to full rings)");
        }
    }
}

fn probe_hit(c: &mut Criterion) {
    let mut group = c.benchmark_group("probe_hit");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for (name, symbol, call) in [
        (
            "emulated_push",
            "loupe_bench_push",
            call_push as fn(u64) -> u64,
        ),
        ("single_stepped_mov", "loupe_bench_mov", call_mov),
    ] {
        group.bench_function(format!("{name}/unprobed"), |b| {
            b.iter(|| call(black_box(1)))
        });
        let Some(armed) = Armed::open(symbol) else {
            continue;
        };
        group.bench_function(format!("{name}/probed"), |b| b.iter(|| call(black_box(1))));
        drop(armed);
    }
    debug_exception_floor(&mut group);
    group.finish();
}

/// The cost of one debug exception on this host: `bench_mov` under a hardware execute
/// breakpoint on the calling thread, counting only.
fn debug_exception_floor(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
) {
    let address = loupe_bench_mov as *const () as u64;
    let tid = i32::try_from(std::process::id()).unwrap_or(0);
    // The bench's iterations run on the main thread, whose tid is the pid.
    let breakpoint = match DebugTrapCounter::open(address, tid) {
        Ok(breakpoint) => breakpoint,
        Err(error) => {
            eprintln!("skipped debug_exception_floor: {error}");
            return;
        }
    };
    group.bench_function("debug_exception_floor/breakpoint", |b| {
        b.iter(|| call_mov(black_box(1)))
    });
    eprintln!("  ({} breakpoint hits)", breakpoint.hits());
}

criterion_group!(benches, probe_hit);
criterion_main!(benches);

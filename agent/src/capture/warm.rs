//! Keeps the hit path's code in the caches of the cores a point's hits run on, while a
//! capture is armed.
//!
//! A point hit a few times a second finds its code out of its core's caches, and on a machine
//! whose other work fills the last-level cache between two hits, out of that too: each line
//! of the agent's code a cold hit runs is then a trip to memory, or to the shared cache, one
//! after the other, since code is fetched in order. That is most of a cold hit's cost (README,
//! "armed, cold").
//!
//! So the agent's thread, which wakes on every tick while anything is armed (5–20 ms, see
//! `capture::stream`), prefetches each line of the hit path's link section (`loupe_hit`, see
//! `capture::hit`) on each tick. A prefetch fills the caches of the core that issues it; a
//! core's own second-level cache (2 MiB here) outlives the few hundred KiB a request's other
//! work touches, while the shared level serves another core more slowly, and on a large
//! machine may itself be emptied between two hits. So the pass is made **on the cores hits ran
//! on**: each hit that gets past the rate limit notes its CPU (`note_hit_cpu`: `sched_getcpu`,
//! which glibc reads from the thread's `rseq` area, and, the first time a CPU is seen in a
//! generation, one atomic or), and on each tick the agent's thread moves itself onto each CPU
//! noted in the last one to two seconds, at most [`MAX_CORES_A_PASS`] of them, prefetches
//! there, and gets back every CPU it was allowed before. Hits of real-time threads note
//! nothing: such a thread may keep its core to itself, and a move onto it would wait until it
//! yields.
//!
//! The pass also takes, ready to be written (`prefetchw` where the CPU has it), the memory a
//! hit writes that the engine can name (`Engine::memory_hits_write`): each armed capture's own
//! state, its spare records and their tapes' buffers, and the CPU budget. The agent's and the
//! stream's threads wrote those last, so a hit would otherwise wait for each line to leave
//! another core. With several noted cores, the last one warmed holds them.
//!
//! Measured in the demo (docs/measurements.md, the cold row): with the pass made wherever the
//! agent's thread ran, a snapshot's `capture_cost_ns` read 10–22 µs, depending on whether that
//! thread shared the hit's core and on how long the core idled; made on the hit's core with
//! the hit's memory taken too, 8.0–9.1 µs while the cores stay busy between hits, and 10.1–14.3
//! µs on an idle machine, where a core that idles between two hits loses part of even its own
//! caches (a virtual CPU's core goes to other guests, or a core to a deep sleep state); with
//! the library code rehearsed too (below), 6.1–9.5 µs idle and 6.2–7.0 µs busy in the rounds
//! measured, where the build before read up to 10.9 and 9.2 µs. A pass every 1–2 ms keeps the
//! caches (9.2–10.9 µs idle), but on this virtual machine any thread's wakeup costs it 28–50 µs
//! of CPU, 5 % of a core at 1 ms: the pass keeps the drain's cadence instead (5–20 ms, about
//! 0.2 % of a core with the wakeups).
//!
//! Code a hit runs outside the section, whose places the agent does not know, is run instead
//! ([`rehearse`]) on each core the pass warms: the standard library's formatting, which a
//! `?value` or `%value` field runs (a sample value formatted into a sink that keeps nothing),
//! and `tracing`'s way to the registry (the dispatcher, the layers' downcasts, the registry's
//! span stack), without looking up any of the host's spans: a hold on one could make its
//! removal, and the host's layers' `on_close`, happen late on this thread. Timed inside the
//! demo's hits (throwaway `rdtsc` marks around each step, idle machine, docs/measurements.md):
//! a Debug-captured coupon 4.38 → 2.92 µs; the span walk 1.99 → 1.47 µs with a span looked up
//! too, which the pass no longer does.
//!
//! What it cannot warm: the first-level caches and address translations a host thread's other
//! work replaces, the host thread's own thread-locals, and the host's code a hit runs that
//! no sample can run (its types' `Serialize`). What it costs: one pass over the section
//! (about 40 KiB, a prefetch a line), the hit's memory and the rehearsal per noted core on each
//! tick while armed, and two changes of the thread's CPU affinity when it moves: in the demo
//! the agent's thread used 2.2 ms of CPU a second against 1.9 ms with the pass made in place,
//! about 6 µs a tick, part of it on a host core; nothing while nothing is armed, when that
//! thread sleeps. A move that fails (the core left the process's cpuset) skips that core; if
//! the thread cannot be given its CPUs back it never moves again. A service whose seccomp
//! filter kills on `sched_setaffinity`, or that keeps its cores to itself by policy, calls
//! [`allow_core_moves`]`(false)` before arming.
//!
//! Prefetches rather than loads: a prefetch never faults, even where code pages cannot be read
//! as data. Linux on x86_64 only (where the section is placed and the prefetch is x86's);
//! elsewhere a pass does nothing.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::context::CorrelationIds;

/// Passes made so far in this process.
static PASSES: AtomicU64 = AtomicU64::new(0);

/// Times the agent's thread moved onto another core to warm it.
static MOVES: AtomicU64 = AtomicU64::new(0);

/// Times a pass ran `tracing`'s code against the host's registry (see [`rehearse`]).
static REGISTRY_REHEARSALS: AtomicU64 = AtomicU64::new(0);

/// Whether the agent's thread may move onto the cores hits ran on (see [`allow_core_moves`]).
static MAY_MOVE: AtomicBool = AtomicBool::new(true);

/// Most cores one tick's pass warms; with more noted, the next tick goes on from the next.
pub const MAX_CORES_A_PASS: usize = 4;

/// How long a noted CPU stays warmed without another hit on it: one to two of these.
const GENERATION_NS: u64 = 1_000_000_000;

/// Words of a CPU mask: 1024 CPUs, as glibc's `cpu_set_t`.
const CPU_WORDS: usize = 16;

/// The CPUs hits ran on in this generation, by bit; CPUs beyond the mask are not noted.
static HIT_CPUS: [AtomicU64; CPU_WORDS] = [const { AtomicU64::new(0) }; CPU_WORDS];

/// Notes the CPU this hit runs on, for the agent's thread to warm (see the module docs).
#[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
pub(crate) fn note_hit_cpu() {
    if !MAY_MOVE.load(Ordering::Relaxed) {
        return;
    }
    if !runs_at_normal_priority() {
        return;
    }
    let Some(cpu) = current_cpu() else { return };
    let Some(word) = HIT_CPUS.get(cpu / 64) else {
        return;
    };
    let bit = 1u64 << (cpu % 64);
    // Read first: a point hit on the same CPU again writes nothing, and the line stays shared.
    if word.load(Ordering::Relaxed) & bit == 0 {
        word.fetch_or(bit, Ordering::Relaxed);
    }
}

thread_local! {
    /// Whether this thread runs under one of the normal scheduling policies, asked once.
    static NORMAL_PRIORITY: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Whether the calling thread is scheduled as ordinary threads are, so that the agent's thread,
/// an ordinary one, gets to run on its core. A real-time thread (`SCHED_FIFO`, `SCHED_RR`,
/// `SCHED_DEADLINE`) may keep its core to itself, and a move onto it would return only when it
/// yields: its hits note nothing.
fn runs_at_normal_priority() -> bool {
    NORMAL_PRIORITY
        .try_with(|known| {
            known.get().unwrap_or_else(|| {
                let normal = policy_is_normal();
                known.set(Some(normal));
                normal
            })
        })
        .unwrap_or(false)
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn policy_is_normal() -> bool {
    // SAFETY: `sched_getscheduler` only reads the calling thread's policy (pid 0).
    let policy = unsafe { libc::sched_getscheduler(0) };
    policy >= 0
        && matches!(
            policy & !libc::SCHED_RESET_ON_FORK,
            libc::SCHED_OTHER | libc::SCHED_BATCH | libc::SCHED_IDLE
        )
}

#[cfg(not(target_os = "linux"))]
fn policy_is_normal() -> bool {
    false
}

/// The CPU the calling thread runs on (it may move at any time after).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn current_cpu() -> Option<usize> {
    // SAFETY: `sched_getcpu` takes nothing and only returns a number (-1 on error).
    usize::try_from(unsafe { libc::sched_getcpu() }).ok()
}

#[cfg(not(target_os = "linux"))]
fn current_cpu() -> Option<usize> {
    None
}

/// A set of CPUs, laid out as the kernel's affinity masks are on a 64-bit or little-endian
/// target (a bit a CPU, in words of `unsigned long`).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct CpuMask([u64; CPU_WORDS]);

impl CpuMask {
    fn contains(&self, cpu: usize) -> bool {
        self.0
            .get(cpu / 64)
            .is_some_and(|word| word & (1 << (cpu % 64)) != 0)
    }

    fn only(cpu: usize) -> CpuMask {
        let mut mask = CpuMask::default();
        if let Some(word) = mask.0.get_mut(cpu / 64) {
            *word = 1 << (cpu % 64);
        }
        mask
    }

    fn union(&self, other: &CpuMask) -> CpuMask {
        CpuMask(std::array::from_fn(|i| self.0[i] | other.0[i]))
    }

    /// The CPUs in the set, lowest first.
    fn cpus(&self) -> impl Iterator<Item = usize> + '_ {
        (0..CPU_WORDS * 64).filter(|&cpu| self.contains(cpu))
    }

    /// The CPUs hits noted since the last call, taking them.
    fn take_noted() -> CpuMask {
        CpuMask(std::array::from_fn(|i| {
            HIT_CPUS[i].swap(0, Ordering::Relaxed)
        }))
    }

    /// The CPUs hits noted so far in this generation, leaving them.
    fn noted() -> CpuMask {
        CpuMask(std::array::from_fn(|i| HIT_CPUS[i].load(Ordering::Relaxed)))
    }
}

/// Whether the agent's thread may move onto the cores hits ran on to warm them (the default),
/// or makes its pass wherever it runs. A service whose seccomp filter refuses
/// `sched_setaffinity`, or that keeps its cores to itself by policy, turns it off once at
/// start; the agent also stops on its own if its thread cannot be given its CPUs back.
pub fn allow_core_moves(allowed: bool) {
    MAY_MOVE.store(allowed, Ordering::Relaxed);
}

/// The agent thread's warm passes: which cores to warm, and whether it may move to them.
pub struct Warmer {
    /// The CPUs noted in the generation before this one.
    noted_before: CpuMask,
    generation_started_ns: u64,
    /// Where the next pass starts among the noted CPUs, when there are more than a pass takes.
    next_core: usize,
    /// False once the thread could not be given its CPUs back: from then on it warms where it
    /// runs.
    may_move: bool,
}

impl Warmer {
    pub fn new(now_ns: u64) -> Warmer {
        Warmer {
            noted_before: CpuMask::default(),
            generation_started_ns: now_ns,
            next_core: 0,
            may_move: cfg!(target_os = "linux"),
        }
    }

    /// One tick's pass over the hit path's code and the memory hits write (`written`), and the
    /// library code a hit runs ([`rehearse`]): on each core hits ran on lately, at most
    /// [`MAX_CORES_A_PASS`], or where this thread runs when none did or it may not move.
    pub fn pass(&mut self, now_ns: u64, written: &[Range<usize>]) {
        PASSES.fetch_add(1, Ordering::Relaxed);
        let Some(section) = hit_path_section() else {
            return;
        };
        let cores = self.cores_to_warm(now_ns);
        let here = current_cpu();
        let elsewhere = cores.iter().any(|&cpu| Some(cpu) != here);
        let allowed = match elsewhere && self.may_move && MAY_MOVE.load(Ordering::Relaxed) {
            true => affinity(),
            false => None,
        };
        let Some(allowed) = allowed else {
            return warm_this_core(section, written);
        };
        let mut moved = false;
        for cpu in cores.into_iter().filter(|&cpu| allowed.contains(cpu)) {
            if current_cpu() != Some(cpu) {
                // A core that went offline or left the cpuset since the hit: the next.
                if !set_affinity(&CpuMask::only(cpu)) {
                    continue;
                }
                moved = true;
                MOVES.fetch_add(1, Ordering::Relaxed);
            }
            warm_this_core(section.clone(), written);
        }
        // Kept on one core is the one outcome the host must not get: if the thread cannot be
        // given its CPUs back, it never moves again.
        if moved && !set_affinity(&allowed) {
            self.may_move = false;
        }
    }

    /// The noted cores this pass warms (see [`Warmer::choose`]).
    fn cores_to_warm(&mut self, now_ns: u64) -> Vec<usize> {
        let noted = self.noted_lately(now_ns);
        self.choose(&noted, current_cpu())
    }

    /// The CPUs hits noted in this generation and the one before: a core stays warmed for one
    /// to two generations after its last hit.
    fn noted_lately(&mut self, now_ns: u64) -> CpuMask {
        if now_ns.saturating_sub(self.generation_started_ns) < GENERATION_NS {
            return CpuMask::noted().union(&self.noted_before);
        }
        let this_generation = CpuMask::take_noted();
        let both = this_generation.union(&self.noted_before);
        self.noted_before = this_generation;
        self.generation_started_ns = now_ns;
        both
    }

    /// At most [`MAX_CORES_A_PASS`] of `noted`: all of them, the one this thread runs on
    /// (`here`) first, since it needs no move; in turn from one pass to the next when there
    /// are more.
    fn choose(&mut self, noted: &CpuMask, here: Option<usize>) -> Vec<usize> {
        let mut cores: Vec<usize> = noted.cpus().collect();
        if cores.len() <= MAX_CORES_A_PASS {
            cores.sort_by_key(|&cpu| Some(cpu) != here);
            return cores;
        }
        let start = self.next_core % cores.len();
        self.next_core = start + MAX_CORES_A_PASS;
        cores.rotate_left(start);
        cores.truncate(MAX_CORES_A_PASS);
        cores
    }
}

/// The CPUs this thread may run on.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn affinity() -> Option<CpuMask> {
    let mut mask = CpuMask::default();
    // SAFETY: the kernel writes at most the given size, which is the mask's own, into it; an
    // array of `u64` is the layout of its mask on a 64-bit target.
    let done = unsafe {
        libc::sched_getaffinity(
            0,
            std::mem::size_of::<CpuMask>(),
            (&raw mut mask.0).cast::<libc::cpu_set_t>(),
        )
    };
    (done == 0).then_some(mask)
}

/// Restricts this thread to `mask`, which moves it onto one of its CPUs before returning.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_affinity(mask: &CpuMask) -> bool {
    // SAFETY: the kernel reads the given size, which is the mask's own, from it.
    let done = unsafe {
        libc::sched_setaffinity(
            0,
            std::mem::size_of::<CpuMask>(),
            (&raw const mask.0).cast::<libc::cpu_set_t>(),
        )
    };
    done == 0
}

#[cfg(not(target_os = "linux"))]
fn affinity() -> Option<CpuMask> {
    None
}

#[cfg(not(target_os = "linux"))]
fn set_affinity(_: &CpuMask) -> bool {
    false
}

/// The addresses `value` occupies, for a pass to prefetch.
pub(crate) fn memory_of<T>(value: &T) -> Range<usize> {
    let start = std::ptr::from_ref(value) as usize;
    start..start + std::mem::size_of::<T>()
}

/// One core's share of a pass: the section's lines, the memory hits write, then
/// [`rehearse`].
fn warm_this_core(section: Range<usize>, written: &[Range<usize>]) {
    prefetch_lines(section);
    prefetch_for_writing(written);
    rehearse();
}

/// Runs, on the core a pass warms, the library code a hit runs whose addresses the agent
/// cannot name, so that it is in that core's caches too: the standard library's formatting
/// ([`rehearse_formatting`]) and `tracing`'s dispatch to the registry
/// ([`CorrelationIds::rehearse_walk`]). The host's subscriber is the host's code: should any of
/// it panic here (and the host unwinds on panic), the agent's thread goes on.
fn rehearse() {
    let _ = std::panic::catch_unwind(|| {
        rehearse_formatting();
        if CorrelationIds::rehearse_walk() {
            REGISTRY_REHEARSALS.fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// Formats a sample value as a `?value` and a `%value` field are formatted, into a sink that
/// keeps nothing: the standard library's formatting code (`core::fmt::write`, the Debug
/// builders that `#[derive(Debug)]` calls, a string's escaping, an integer's digits) is the
/// host's, outside the hit path's section, and a warm pass runs it on the core it warms.
fn rehearse_formatting() {
    use std::fmt::Write as _;

    #[derive(Debug)]
    #[allow(dead_code)] // read through Debug
    struct Sample {
        text: &'static str,
        number: u64,
    }

    /// Counts what it is given, so the formatting is not optimized away.
    struct Sink(usize);

    impl std::fmt::Write for Sink {
        fn write_str(&mut self, text: &str) -> std::fmt::Result {
            self.0 += text.len();
            Ok(())
        }
    }

    let some = std::hint::black_box(Some(Sample {
        text: "sample",
        number: 42,
    }));
    let none: Option<Sample> = std::hint::black_box(None);
    let mut sink = Sink(0);
    let _ = write!(
        sink,
        "{some:?}{none:?}{}{}",
        std::hint::black_box(42u64),
        std::hint::black_box("text")
    );
    std::hint::black_box(sink.0);
}

/// Brings every line of the hit path's section into the caches of the core this thread runs
/// on and runs the library code a hit runs there ([`rehearse`]): one core's share of a pass,
/// which the capture bench times (`warm/*`).
pub fn warm_hit_path() {
    if let Some(section) = hit_path_section() {
        warm_this_core(section, &[]);
    }
}

/// How many times a warm pass ran `tracing`'s code against the host's registry on the core it
/// warms (`tests/warm_rehearsal.rs`).
pub fn registry_rehearsals() -> u64 {
    REGISTRY_REHEARSALS.load(Ordering::Relaxed)
}

/// How many warm passes this process has made: they happen while a capture is armed, and
/// never while nothing is (`tests/warm_pass.rs`).
pub fn passes() -> u64 {
    PASSES.load(Ordering::Relaxed)
}

/// How many times the agent's thread moved onto another core that hits ran on, to warm it
/// there (`tests/warm_cores.rs`).
pub fn moves() -> u64 {
    MOVES.load(Ordering::Relaxed)
}

/// Where the hit path's section lies in this process's memory, `None` where it has none.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[allow(unsafe_code)]
pub fn hit_path_section() -> Option<Range<usize>> {
    unsafe extern "C" {
        // Defined by the linker at the bounds of the section named `loupe_hit`, which exists
        // in any binary that links this function: `section_anchor` is in it.
        static __start_loupe_hit: u8;
        static __stop_loupe_hit: u8;
    }
    std::hint::black_box(section_anchor as fn());
    let start = (&raw const __start_loupe_hit) as usize;
    let stop = (&raw const __stop_loupe_hit) as usize;
    (start < stop).then_some(start..stop)
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
pub fn hit_path_section() -> Option<Range<usize>> {
    None
}

/// Placed in the hit path's section so that the section, and the linker's symbols at its
/// bounds, exist in every binary that warms it, whatever else the linker drops.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[inline(never)]
#[allow(unsafe_code)]
#[unsafe(link_section = "loupe_hit")]
fn section_anchor() {}

#[cfg(not(target_arch = "x86_64"))]
fn prefetch_lines(_: Range<usize>) {}

#[cfg(not(target_arch = "x86_64"))]
fn prefetch_for_writing(_: &[Range<usize>]) {}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn prefetch_lines(range: Range<usize>) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    const LINE: usize = 64;
    for line in (range.start & !(LINE - 1)..range.end).step_by(LINE) {
        // SAFETY: a prefetch is a hint to the caches; it never faults and changes no memory,
        // whatever the address (here, the process's own code).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line as *const i8) };
    }
}

/// Brings the lines of `ranges` into this core's caches, ready to be written: with
/// `prefetchw` (taking each line for this core, as a write would) where the CPU has it,
/// otherwise as for reading.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn prefetch_for_writing(ranges: &[Range<usize>]) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    const LINE: usize = 64;
    let for_writing = has_prefetchw();
    for range in ranges {
        for line in (range.start & !(LINE - 1)..range.end).step_by(LINE) {
            if for_writing {
                // SAFETY: `prefetchw` exists on this CPU (checked above); like any prefetch
                // it is a hint, never faults whatever the address, and changes no memory.
                unsafe {
                    std::arch::asm!(
                        "prefetchw [{line}]",
                        line = in(reg) line,
                        options(nostack, preserves_flags, readonly)
                    );
                }
            } else {
                // SAFETY: as in `prefetch_lines`: a hint, whatever the address.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(line as *const i8) };
            }
        }
    }
}

/// Whether this CPU has `prefetchw` (CPUID 8000_0001h, ECX bit 8).
#[cfg(target_arch = "x86_64")]
fn has_prefetchw() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        use std::arch::x86_64::__cpuid;
        // `__cpuid` is safe to call on x86_64, which always has CPUID.
        let highest = __cpuid(0x8000_0000).eax;
        highest >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fn the_section_holds_the_hit_path() {
        let section = hit_path_section().expect("the hit path's section is linked in");
        let hit = crate::capture::hit::hit_armed_address();
        assert!(section.contains(&hit), "{section:x?} does not hold {hit:x}");
        warm_hit_path();
    }

    fn mask(cpus: &[usize]) -> CpuMask {
        cpus.iter().fold(CpuMask::default(), |all, &cpu| {
            all.union(&CpuMask::only(cpu))
        })
    }

    #[test]
    fn a_mask_holds_the_cpus_put_in_it_and_no_others() {
        let cpus = [0, 1, 63, 64, 200, 1023];
        let set = mask(&cpus);
        assert_eq!(set.cpus().collect::<Vec<_>>(), cpus);
        assert!(!set.contains(2) && !set.contains(1024));
        assert_eq!(
            CpuMask::only(1024),
            CpuMask::default(),
            "beyond the mask: nothing"
        );
    }

    #[test]
    fn a_pass_takes_every_noted_core_the_one_it_runs_on_first() {
        let mut warmer = Warmer::new(0);
        assert_eq!(warmer.choose(&mask(&[0, 3, 5]), Some(3)), [3, 0, 5]);
        assert_eq!(warmer.choose(&mask(&[0, 3, 5]), None), [0, 3, 5]);
        assert!(warmer.choose(&CpuMask::default(), Some(0)).is_empty());
    }

    #[test]
    fn with_more_noted_cores_than_a_pass_takes_the_passes_take_them_in_turn() {
        let mut warmer = Warmer::new(0);
        let noted = mask(&[1, 2, 3, 4, 5, 6]);
        let mut warmed = Vec::new();
        for _ in 0..3 {
            let pass = warmer.choose(&noted, Some(1));
            assert_eq!(pass.len(), MAX_CORES_A_PASS);
            warmed.extend(pass);
        }
        assert_eq!(warmed, [1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6]);
    }
}

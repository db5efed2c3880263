//! Keeps the hit path's code in the caches the cores share while a capture is armed.
//!
//! A point hit a few times a second finds its code out of its core's caches, and on a machine
//! whose other work fills the last-level cache between two hits, out of that too: each line
//! of the agent's code a cold hit runs is then a trip to memory, one after the other, since
//! code is fetched in order. That is most of a cold hit's cost (README, "armed, cold").
//!
//! So the agent's thread, which wakes on every tick while anything is armed (5–20 ms, see
//! `capture::stream`), prefetches each line of the hit path's link section (`loupe_hit`, see
//! `capture::hit`) on each tick. The lines then stay in the last-level cache, or in the agent
//! core's own, from where a miss on another core is served, well before memory would answer.
//! In the demo, a snapshot's `capture_cost_ns` fell from about 20 to 10–14 µs. The capture
//! bench's cold cases empty the caches just before each hit, where no pass can help, except
//! `cold/spaced_in_request_span_after_idle`, which idles past a tick first (25 → 20 µs).
//!
//! What it cannot warm: another core's first-level caches and address translations, and the
//! code of the host's own that a hit runs (its types' `Serialize`, `tracing`'s registry),
//! whose places the agent does not know. What it costs: one pass over the section (about 40
//! KiB, a prefetch a line) on each tick while armed, on the agent's thread; nothing while
//! nothing is armed, when that thread sleeps.
//!
//! Prefetches rather than loads: a prefetch never faults, even where code pages cannot be read
//! as data. Linux on x86_64 only (where the section is placed and the prefetch is x86's);
//! elsewhere a pass does nothing.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

/// Passes made so far in this process.
static PASSES: AtomicU64 = AtomicU64::new(0);

/// Brings every line of the hit path's section into the shared caches (see the module docs).
pub fn warm_hit_path() {
    PASSES.fetch_add(1, Ordering::Relaxed);
    if let Some(section) = hit_path_section() {
        prefetch_lines(section);
    }
}

/// How many warm passes this process has made: they happen while a capture is armed, and
/// never while nothing is (`tests/warm_pass.rs`).
pub fn passes() -> u64 {
    PASSES.load(Ordering::Relaxed)
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
}

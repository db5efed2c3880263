//! The static callsite every `snapshot!` plants: where it is, which fields it names, and the
//! captures armed on it.
//!
//! The disarmed path is one relaxed load of [`Callsite::is_armed`] and a branch not taken. The
//! armed path ([`Callsite::hit`]) is out of line and lives in `capture::hit`. Callsites belong to
//! the capture layer because their armed state is the engine's; grouping them into named points
//! is the registry's job (`crate::point`), one layer up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arc_swap::ArcSwapOption;

use crate::capture::ArmedSet;

/// How many callsites have a capture armed, process-wide. Read by work that is only worth doing
/// while some capture could use it (the correlation layer's copy of span fields).
static ARMED_CALLSITES: AtomicUsize = AtomicUsize::new(0);

/// Whether any callsite in the process has a capture armed: one relaxed load.
#[inline]
pub(crate) fn any_armed() -> bool {
    ARMED_CALLSITES.load(Ordering::Relaxed) != 0
}

/// What a callsite observes, as `Describe` lists its point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SiteKind {
    /// A place in code that runs: a `snapshot!`, or a point declared for one.
    Snapshot,
    /// A value in memory that a sidecar samples while armed.
    Watch,
    /// A function entry that a sidecar probes.
    Probe,
}

/// One `snapshot!` in the source.
pub struct Callsite {
    name: &'static str,
    file: &'static str,
    line: u32,
    module_path: &'static str,
    field_names: &'static [&'static str],
    /// How each field is captured: `serde`, `debug` or `display`; for a point a sidecar
    /// declares, the field's type in the target (as its debug info names it).
    field_kinds: &'static [&'static str],
    /// What the callsite observes, for Describe.
    kind: SiteKind,
    /// Mirrors `armed.is_some()`; the one value the disarmed path reads.
    is_armed: AtomicBool,
    /// The captures armed on this callsite's point. Written only by the engine (under its arm
    /// lock), read lock-free by threads that pass the point.
    armed: ArcSwapOption<ArmedSet>,
}

impl std::fmt::Debug for Callsite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callsite")
            .field("name", &self.name)
            .field("file", &self.file)
            .field("line", &self.line)
            .field("armed", &self.is_armed())
            .finish_non_exhaustive()
    }
}

impl Callsite {
    /// Used by `snapshot!` and by [`crate::point::declare_point`].
    #[doc(hidden)]
    pub const fn new(
        name: &'static str,
        file: &'static str,
        line: u32,
        module_path: &'static str,
        field_names: &'static [&'static str],
        field_kinds: &'static [&'static str],
    ) -> Callsite {
        Callsite {
            name,
            file,
            line,
            module_path,
            field_names,
            field_kinds,
            kind: SiteKind::Snapshot,
            is_armed: AtomicBool::new(false),
            armed: ArcSwapOption::const_empty(),
        }
    }

    /// Whether any capture is armed on this callsite. The whole cost of a disarmed point.
    #[inline(always)]
    pub fn is_armed(&self) -> bool {
        self.is_armed.load(Ordering::Relaxed)
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn file(&self) -> &'static str {
        self.file
    }

    pub fn line(&self) -> u32 {
        self.line
    }

    pub fn module_path(&self) -> &'static str {
        self.module_path
    }

    pub fn field_names(&self) -> &'static [&'static str] {
        self.field_names
    }

    pub fn field_kinds(&self) -> &'static [&'static str] {
        self.field_kinds
    }

    pub fn kind(&self) -> SiteKind {
        self.kind
    }

    /// Set once by `declare_point_of_kind`, before the callsite is shared.
    pub(crate) fn set_kind(&mut self, kind: SiteKind) {
        self.kind = kind;
    }

    pub(crate) fn armed_set(&self) -> arc_swap::Guard<Option<Arc<ArmedSet>>> {
        self.armed.load()
    }

    /// Installs the captures armed on this callsite. Only the engine calls this, serialized by
    /// its arm lock, so the flag and the set never disagree for long: the set is stored first,
    /// so a thread that sees the flag also finds the set (or finds it empty and returns).
    pub(crate) fn install(&self, set: Option<Arc<ArmedSet>>) {
        let armed = set.is_some();
        self.armed.store(set);
        let was_armed = self.is_armed.swap(armed, Ordering::Release);
        match (was_armed, armed) {
            (false, true) => {
                ARMED_CALLSITES.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                ARMED_CALLSITES.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

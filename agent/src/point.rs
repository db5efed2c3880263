//! Snapshot points: the static callsites that `snapshot!` plants, and the registry that groups
//! them by name.
//!
//! Every `snapshot!` expands to one `static Callsite` registered in a link-time list (linkme), so
//! the agent can describe every point before any is hit. A *point* is a name; every callsite that
//! uses the name belongs to it, and arming the point arms all of them.
//!
//! The disarmed path is one relaxed load of [`Callsite::is_armed`] and a branch not taken. The
//! armed path ([`Callsite::hit`]) is out of line and lives in `capture::hit`.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwapOption;

use crate::capture::ArmedSet;

/// Every callsite in the program, gathered at link time.
#[linkme::distributed_slice]
pub static CALLSITES: [&'static Callsite];

/// The longest point name accepted: names travel in tokens and audit records.
pub const MAX_POINT_NAME_LEN: usize = 128;

/// One `snapshot!` in the source.
pub struct Callsite {
    name: &'static str,
    file: &'static str,
    line: u32,
    module_path: &'static str,
    field_names: &'static [&'static str],
    /// How each field is captured: `serde`, `debug` or `display`.
    field_kinds: &'static [&'static str],
    /// Mirrors `armed.is_some()`; the one value the disarmed path reads.
    is_armed: AtomicBool,
    /// The captures armed on this callsite's point. Written only by the engine (under its arm
    /// lock), read lock-free by threads that pass the point.
    armed: ArcSwapOption<ArmedSet>,
}

impl Callsite {
    /// Used by `snapshot!`; not for hand-written callsites.
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

    pub(crate) fn armed_set(&self) -> arc_swap::Guard<Option<std::sync::Arc<ArmedSet>>> {
        self.armed.load()
    }

    /// Installs the captures armed on this callsite. Only the engine calls this, serialized by
    /// its arm lock, so the flag and the set never disagree for long: the set is stored first,
    /// so a thread that sees the flag also finds the set (or finds it empty and returns).
    pub(crate) fn install(&self, set: Option<std::sync::Arc<ArmedSet>>) {
        let armed = set.is_some();
        self.armed.store(set);
        self.is_armed.store(armed, Ordering::Release);
    }
}

/// Why a point name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointNameError {
    Empty,
    TooLong,
    /// A character outside `[a-z0-9_.]`, at this byte offset.
    BadCharacter(usize),
    /// A dot at the start or end, or two dots in a row, at this byte offset.
    EmptySegment(usize),
}

impl std::fmt::Display for PointNameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PointNameError::Empty => f.write_str("a point name cannot be empty"),
            PointNameError::TooLong => write!(
                f,
                "a point name is at most {MAX_POINT_NAME_LEN} bytes (lowercase dotted segments of [a-z0-9_])"
            ),
            PointNameError::BadCharacter(at) => write!(
                f,
                "character at byte {at} is not allowed: point names are lowercase dotted segments of [a-z0-9_], e.g. `checkout.apply_discount`"
            ),
            PointNameError::EmptySegment(at) => write!(
                f,
                "empty segment at byte {at}: point names are dotted segments with no leading, trailing or doubled dot"
            ),
        }
    }
}

impl std::error::Error for PointNameError {}

/// Checks a point name: lowercase dotted segments of `[a-z0-9_]`. A `const fn` so `snapshot!`
/// rejects a bad literal at compile time.
pub const fn check_point_name(name: &str) -> Result<(), PointNameError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err(PointNameError::Empty);
    }
    if bytes.len() > MAX_POINT_NAME_LEN {
        return Err(PointNameError::TooLong);
    }
    let mut i = 0;
    let mut segment_start = true;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'.' {
            if segment_start {
                return Err(PointNameError::EmptySegment(i));
            }
            segment_start = true;
        } else if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' {
            segment_start = false;
        } else {
            return Err(PointNameError::BadCharacter(i));
        }
        i += 1;
    }
    if segment_start {
        return Err(PointNameError::EmptySegment(bytes.len()));
    }
    Ok(())
}

/// Compile-time form of [`check_point_name`], used by `snapshot!`.
#[doc(hidden)]
pub const fn assert_point_name(name: &str) {
    match check_point_name(name) {
        Ok(()) => {}
        Err(PointNameError::Empty) => panic!("snapshot! point name cannot be empty"),
        Err(PointNameError::TooLong) => panic!("snapshot! point name is longer than 128 bytes"),
        Err(PointNameError::BadCharacter(_)) => panic!(
            "snapshot! point name must be lowercase dotted segments of [a-z0-9_], e.g. \"checkout.apply_discount\""
        ),
        Err(PointNameError::EmptySegment(_)) => {
            panic!("snapshot! point name has an empty segment (leading, trailing or doubled dot)")
        }
    }
}

/// A named point and every callsite that shares its name.
pub struct Point {
    name: &'static str,
    callsites: Vec<&'static Callsite>,
}

impl Point {
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn callsites(&self) -> &[&'static Callsite] {
        &self.callsites
    }

    /// Field names across all callsites, first-seen order, without repeats.
    pub fn field_names(&self) -> Vec<&'static str> {
        self.fields().into_iter().map(|(name, _)| name).collect()
    }

    /// Field names with how each is captured (`serde`, `debug`, `display`), first-seen order.
    pub fn fields(&self) -> Vec<(&'static str, &'static str)> {
        let mut fields: Vec<(&'static str, &'static str)> = Vec::new();
        for site in &self.callsites {
            for (name, kind) in site.field_names().iter().zip(site.field_kinds()) {
                if !fields.iter().any(|(seen, _)| seen == name) {
                    fields.push((name, kind));
                }
            }
        }
        fields
    }
}

/// All points of the program, by name. Built once, on first use, from the link-time list.
pub struct PointRegistry {
    points: BTreeMap<&'static str, Point>,
    /// Callsites whose name failed validation (only possible for callsites not made by
    /// `snapshot!`); they are never armed.
    rejected: Vec<(&'static Callsite, PointNameError)>,
}

impl PointRegistry {
    pub fn global() -> &'static PointRegistry {
        static REGISTRY: OnceLock<PointRegistry> = OnceLock::new();
        REGISTRY.get_or_init(|| PointRegistry::from_callsites(CALLSITES.iter().copied()))
    }

    fn from_callsites(sites: impl Iterator<Item = &'static Callsite>) -> PointRegistry {
        let mut points: BTreeMap<&'static str, Point> = BTreeMap::new();
        let mut rejected = Vec::new();
        for site in sites {
            if let Err(err) = check_point_name(site.name) {
                rejected.push((site, err));
                continue;
            }
            points
                .entry(site.name)
                .or_insert_with(|| Point {
                    name: site.name,
                    callsites: Vec::new(),
                })
                .callsites
                .push(site);
        }
        for point in points.values_mut() {
            point
                .callsites
                .sort_by_key(|site| (site.file, site.line, site.module_path));
        }
        PointRegistry { points, rejected }
    }

    pub fn get(&self, name: &str) -> Option<&Point> {
        self.points.get(name)
    }

    /// Every point, sorted by name.
    pub fn points(&self) -> impl Iterator<Item = &Point> {
        self.points.values()
    }

    pub fn rejected(&self) -> &[(&'static Callsite, PointNameError)] {
        &self.rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_lowercase_dotted_names() {
        for name in [
            "a",
            "checkout.apply_discount",
            "payments.v2.charge_3ds",
            "x_1.y_2",
        ] {
            assert_eq!(check_point_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn refuses_malformed_names() {
        assert_eq!(check_point_name(""), Err(PointNameError::Empty));
        assert_eq!(
            check_point_name("Checkout"),
            Err(PointNameError::BadCharacter(0))
        );
        assert_eq!(
            check_point_name("a-b"),
            Err(PointNameError::BadCharacter(1))
        );
        assert_eq!(
            check_point_name("a b"),
            Err(PointNameError::BadCharacter(1))
        );
        assert_eq!(check_point_name(".a"), Err(PointNameError::EmptySegment(0)));
        assert_eq!(check_point_name("a."), Err(PointNameError::EmptySegment(2)));
        assert_eq!(
            check_point_name("a..b"),
            Err(PointNameError::EmptySegment(2))
        );
        assert_eq!(check_point_name("é"), Err(PointNameError::BadCharacter(0)));
        let long = "a".repeat(MAX_POINT_NAME_LEN + 1);
        assert_eq!(check_point_name(&long), Err(PointNameError::TooLong));
    }

    #[test]
    fn registry_groups_callsites_by_name_and_rejects_bad_names() {
        static A1: Callsite = Callsite::new("svc.a", "f.rs", 1, "m", &["x"], &["serde"]);
        static A2: Callsite =
            Callsite::new("svc.a", "f.rs", 9, "m", &["y", "x"], &["debug", "serde"]);
        static B: Callsite = Callsite::new("svc.b", "g.rs", 3, "m", &[], &[]);
        static BAD: Callsite = Callsite::new("Svc.B", "g.rs", 4, "m", &[], &[]);
        let registry = PointRegistry::from_callsites([&A2, &B, &A1, &BAD].into_iter());
        let names: Vec<_> = registry.points().map(Point::name).collect();
        assert_eq!(names, ["svc.a", "svc.b"]);
        let a = registry.get("svc.a").expect("svc.a registered");
        assert_eq!(a.callsites().len(), 2);
        assert_eq!(a.callsites()[0].line(), 1);
        assert_eq!(a.field_names(), ["x", "y"]);
        assert_eq!(a.fields(), [("x", "serde"), ("y", "debug")]);
        assert_eq!(registry.rejected().len(), 1);
    }
}

//! Snapshot points: the registry that groups callsites by name, from every source of them.
//!
//! A *point* is a name; every callsite that uses the name belongs to it, and arming the point
//! arms all of them. Callsites come from two sources the rest of the agent does not tell apart:
//! - `snapshot!`, which expands to one `static Callsite` registered in a link-time list
//!   (linkme), so the agent can describe every point before any is hit;
//! - [`declare_point`], for points known only at start-up (a sidecar declares points from a
//!   reviewed file and the target's debug info), called before the registry is first used.
//!
//! The registry is built once, on first use, and never changes after: arming, the endpoint and
//! the control plane all see one fixed list of points.
//!
//! A program that serves only declared points although `snapshot!` callsites are linked into
//! it (the `loupe` binary, which carries the demo service's points and can also run the
//! sidecar) says so with [`serve_declared_points_only`] before the registry is built.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::capture::ArmTarget;
use crate::capture::callsite::Callsite;
pub use crate::capture::callsite::SiteKind;
use crate::capture::engine::{ArmError, Engine};
use crate::capture::spec::CaptureSpec;
use crate::capture::stream::CaptureStream;

/// Every callsite in the program, gathered at link time. linkme places the slice in a link
/// section of its own, which the `unsafe_code` lint flags; nothing here is unsafe to use.
#[allow(unsafe_code)]
#[linkme::distributed_slice]
pub static CALLSITES: [&'static Callsite];

pub use loupe_proto::names::{MAX_POINT_NAME_LEN, NameError, check_point_name};

/// Compile-time form of [`check_point_name`], used by `snapshot!`.
#[doc(hidden)]
pub const fn assert_point_name(name: &str) {
    match check_point_name(name) {
        Ok(()) => {}
        Err(NameError::Empty) => panic!("snapshot! point name cannot be empty"),
        Err(NameError::TooLong { .. }) => {
            panic!("snapshot! point name is longer than 128 bytes")
        }
        Err(NameError::EmptySegment(_)) => {
            panic!("snapshot! point name has an empty segment (leading, trailing or doubled dot)")
        }
        Err(_) => panic!(
            "snapshot! point name must be lowercase dotted segments of [a-z0-9_], e.g. \"checkout.apply_discount\""
        ),
    }
}

static REGISTRY: OnceLock<PointRegistry> = OnceLock::new();

/// Points declared at start-up, until the registry is built from them.
static DECLARED: Mutex<Declared> = Mutex::new(Declared {
    callsites: Vec::new(),
    names: BTreeSet::new(),
    frozen: false,
    declared_only: false,
});

struct Declared {
    callsites: Vec<&'static Callsite>,
    /// Every string a declaration leaked, so that one name is leaked once however often it is
    /// declared (a point with several locations, the same field name on many points).
    names: BTreeSet<&'static str>,
    frozen: bool,
    /// The linked `snapshot!` callsites stay out of the registry.
    declared_only: bool,
}

impl Declared {
    fn intern(&mut self, text: &str) -> &'static str {
        if let Some(known) = self.names.get(text) {
            return known;
        }
        let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
        self.names.insert(leaked);
        leaked
    }
}

/// The most points a process may declare at start-up. Declared points live for the process,
/// so their number is bounded like everything else the agent keeps.
pub const MAX_DECLARED_POINTS: usize = 4_096;

/// The most fields one declared point may name.
pub const MAX_DECLARED_FIELDS: usize = 64;

/// A point known only at start-up: its name, where it is in the source (or the binary) it
/// describes, and the fields each hit hands to the capture, with how each is captured
/// (`serde`, `debug` or `display`).
#[derive(Debug, Clone)]
pub struct DeclaredPoint {
    pub name: String,
    pub file: String,
    pub line: u32,
    /// What the point's location is inside (a module path, or a function for a probe).
    pub module_path: String,
    pub fields: Vec<(String, FieldKind)>,
}

/// How a declared field is captured, as `snapshot!`'s sigils say for a planted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Serde,
    Debug,
    Display,
}

impl FieldKind {
    fn as_str(self) -> &'static str {
        match self {
            FieldKind::Serde => "serde",
            FieldKind::Debug => "debug",
            FieldKind::Display => "display",
        }
    }
}

/// Why a point could not be declared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeclareError {
    #[error("point {name:?}: {error}; point names are {rule}", rule = loupe_proto::names::POINT_NAME_RULE)]
    InvalidName { name: String, error: NameError },
    #[error("point `{name}` names field `{field}` twice")]
    DuplicateField { name: String, field: String },
    #[error("point `{name}` names {count} fields; at most {MAX_DECLARED_FIELDS} are allowed")]
    TooManyFields { name: String, count: usize },
    #[error("{MAX_DECLARED_POINTS} points are declared already, the most a process may declare")]
    TooManyPoints,
    #[error(
        "the point registry is already in use; declare points at start-up, before the agent starts or anything is armed"
    )]
    RegistryInUse,
    #[error("point `{name}` names {fields} fields but {types} field types")]
    FieldTypes {
        name: String,
        fields: usize,
        types: usize,
    },
}

/// Adds a point to the registry at start-up, beside the `snapshot!` callsites, and returns its
/// callsite: the declaring code passes `callsite.is_armed()` and calls `callsite.hit(fields)`
/// when the point is reached, exactly as `snapshot!` does. Declaring the same name again adds
/// another callsite to the same point.
pub fn declare_point(point: DeclaredPoint) -> Result<&'static Callsite, DeclareError> {
    declare(point, SiteKind::Snapshot, None)
}

/// [`declare_point`] for a point that is not a place in code (a sidecar's watch or probe
/// point): `Describe` lists it as `kind`, with `field_types[i]` (the type in the target, as
/// its debug info names it) as the type of field `i` instead of how it is captured.
pub fn declare_point_of_kind(
    point: DeclaredPoint,
    kind: SiteKind,
    field_types: &[String],
) -> Result<&'static Callsite, DeclareError> {
    if field_types.len() != point.fields.len() {
        return Err(DeclareError::FieldTypes {
            name: point.name,
            fields: point.fields.len(),
            types: field_types.len(),
        });
    }
    declare(point, kind, Some(field_types))
}

fn declare(
    point: DeclaredPoint,
    kind: SiteKind,
    field_types: Option<&[String]>,
) -> Result<&'static Callsite, DeclareError> {
    check_point_name(&point.name).map_err(|error| DeclareError::InvalidName {
        name: point.name.clone(),
        error,
    })?;
    if point.fields.len() > MAX_DECLARED_FIELDS {
        return Err(DeclareError::TooManyFields {
            name: point.name,
            count: point.fields.len(),
        });
    }
    for (index, (field, _)) in point.fields.iter().enumerate() {
        if point.fields[..index].iter().any(|(seen, _)| seen == field) {
            return Err(DeclareError::DuplicateField {
                name: point.name.clone(),
                field: field.clone(),
            });
        }
    }
    let mut declared = DECLARED.lock().unwrap_or_else(PoisonError::into_inner);
    if declared.frozen || REGISTRY.get().is_some() {
        return Err(DeclareError::RegistryInUse);
    }
    if declared.callsites.len() >= MAX_DECLARED_POINTS {
        return Err(DeclareError::TooManyPoints);
    }
    let field_names: Vec<&'static str> = point
        .fields
        .iter()
        .map(|(field, _)| declared.intern(field))
        .collect();
    let field_kinds: Vec<&'static str> = match field_types {
        Some(types) => types.iter().map(|t| declared.intern(t)).collect(),
        None => point.fields.iter().map(|(_, kind)| kind.as_str()).collect(),
    };
    let mut callsite = Box::new(Callsite::new(
        declared.intern(&point.name),
        declared.intern(&point.file),
        point.line,
        declared.intern(&point.module_path),
        Box::leak(field_names.into_boxed_slice()),
        Box::leak(field_kinds.into_boxed_slice()),
    ));
    callsite.set_kind(kind);
    let callsite: &'static Callsite = Box::leak(callsite);
    declared.callsites.push(callsite);
    Ok(callsite)
}

/// Leaves the `snapshot!` callsites linked into this program out of its registry, so that it
/// serves exactly the points declared with [`declare_point`]: a sidecar's registry is its
/// reviewed points file, whatever else the program it runs in was linked with. Called at
/// start-up, before the registry is first used.
pub fn serve_declared_points_only() -> Result<(), DeclareError> {
    let mut declared = DECLARED.lock().unwrap_or_else(PoisonError::into_inner);
    if declared.frozen || REGISTRY.get().is_some() {
        return Err(DeclareError::RegistryInUse);
    }
    declared.declared_only = true;
    Ok(())
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

    /// What the point observes (its first callsite's kind; a name is declared by one source).
    pub fn kind(&self) -> SiteKind {
        self.callsites
            .first()
            .map_or(SiteKind::Snapshot, |site| site.kind())
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
    rejected: Vec<(&'static Callsite, NameError)>,
}

impl PointRegistry {
    /// The process's registry: every `snapshot!` callsite and every point declared before this
    /// was first called. Built once; later declarations are refused.
    pub fn global() -> &'static PointRegistry {
        REGISTRY.get_or_init(|| {
            let mut declared = DECLARED.lock().unwrap_or_else(PoisonError::into_inner);
            declared.frozen = true;
            let linked: &[&'static Callsite] = if declared.declared_only {
                &[]
            } else {
                &CALLSITES
            };
            let sources = linked
                .iter()
                .copied()
                .chain(declared.callsites.iter().copied());
            PointRegistry::from_callsites(sources)
        })
    }

    fn from_callsites(sites: impl Iterator<Item = &'static Callsite>) -> PointRegistry {
        let mut points: BTreeMap<&'static str, Point> = BTreeMap::new();
        let mut rejected = Vec::new();
        for site in sites {
            if let Err(err) = check_point_name(site.name()) {
                rejected.push((site, err));
                continue;
            }
            points
                .entry(site.name())
                .or_insert_with(|| Point {
                    name: site.name(),
                    callsites: Vec::new(),
                })
                .callsites
                .push(site);
        }
        for point in points.values_mut() {
            point
                .callsites
                .sort_by_key(|site| (site.file(), site.line(), site.module_path()));
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

    pub fn rejected(&self) -> &[(&'static Callsite, NameError)] {
        &self.rejected
    }
}

impl PointRegistry {
    /// Arms a capture on the point `spec` names and returns the stream its snapshots arrive on.
    pub fn arm(&'static self, spec: CaptureSpec) -> Result<CaptureStream, ArmError> {
        let Some(point) = self.get(&spec.point) else {
            return Err(ArmError::UnknownPoint {
                hint: suggest(&spec.point, self.points().map(|p| p.name())),
                point: spec.point,
            });
        };
        let target = ArmTarget {
            point: point.name,
            field_names: point.field_names(),
            callsites: &point.callsites,
        };
        Engine::global().arm_target(spec, target)
    }
}

/// "; did you mean `x`?" for the closest known point, or the list when there are few.
fn suggest<'a>(asked: &str, known: impl Iterator<Item = &'a str>) -> String {
    let known: Vec<&str> = known.collect();
    if known.is_empty() {
        return " (it has no snapshot points)".to_owned();
    }
    let closest = known
        .iter()
        .map(|name| (edit_distance(asked, name), *name))
        .min()
        .filter(|(distance, _)| *distance <= 3);
    match closest {
        Some((_, name)) => format!("; did you mean `{name}`?"),
        None if known.len() <= 8 => format!("; it has {}", known.join(", ")),
        None => format!("; it has {} points", known.len()),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn suggests_the_closest_point() {
        let known = ["checkout.apply_discount", "payments.charge"];
        assert_eq!(
            suggest("checkout.apply_discont", known.into_iter()),
            "; did you mean `checkout.apply_discount`?"
        );
        assert_eq!(
            suggest("zzz", known.into_iter()),
            "; it has checkout.apply_discount, payments.charge"
        );
    }
}

//! The reviewed points file: which globals of the target a sidecar may expose, under which
//! point names. It is the whole of what the sidecar can show, so it is parsed strictly
//! (`deny_unknown_fields`, every name checked by the same rules as `snapshot!`) and the sidecar
//! refuses to start on any point it cannot honour, naming the point and why.
//!
//! ```toml
//! [target]
//! pid_file = "/run/checkout.pid"   # or --pid on the command line
//!
//! [[watch]]
//! name = "checkout.config"         # the point name policies see
//! symbol = "g_config"              # a global or static, by (qualified) DWARF or linkage name
//! path = "limits.max"              # optional: a member path into it; pointers are followed
//! object = "libfoo.so"              # optional: a mapped shared library instead of the executable
//! field = "max"                    # optional: the snapshot's field name (default: last segment)
//! interval_ms = 1000               # optional: one sample per interval while armed
//! ```
//!
//!
//! ```toml
//! [[probe]]
//! name = "checkout.work"           # the point name policies see
//! function = "work"                # a function by (qualified) DWARF name or linkage name
//! object = "libfoo.so"              # optional, as for watch points
//! args = ["n", "item"]             # optional: the parameters captured (default: all of them)
//! max_hits_per_second = 1000       # optional: the breaker closes the probe above this
//! ```
//!
//! A probe's fields are its captured parameters, named as in the source.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use loupe_proto::names::{NameError, POINT_NAME_RULE, check_point_name};
use serde::Deserialize;

/// The shortest sampling interval a watch point may ask for: 100 samples a second, each a
/// handful of `process_vm_readv` calls, stays well inside the capture CPU budget.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// The longest: an hour. Longer would look like a point that never fires.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// One sample a second unless the file says otherwise, as the capture's default rate.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Bounds on what one file may declare and how long its strings may be.
pub const MAX_POINTS: usize = 1024;
pub const MAX_SYMBOL_LEN: usize = 1024;
pub const MAX_PATH_SEGMENTS: usize = 32;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    target: RawTarget,
    #[serde(default)]
    watch: Vec<RawWatch>,
    #[serde(default)]
    probe: Vec<RawProbe>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    pid_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    name: String,
    symbol: String,
    object: Option<String>,
    path: Option<String>,
    field: Option<String>,
    interval_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    name: String,
    function: String,
    object: Option<String>,
    args: Option<Vec<String>>,
    max_hits_per_second: Option<u32>,
}

/// A validated points file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointsFile {
    pub pid_file: Option<PathBuf>,
    pub watches: Vec<WatchSpec>,
    pub probes: Vec<ProbeSpec>,
}

/// One probe point as declared: a function whose entry is trapped, not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub name: String,
    pub function: String,
    /// As for [`WatchSpec::object`].
    pub object: Option<String>,
    /// The parameters captured, by name; `None`: every formal parameter.
    pub args: Option<Vec<String>>,
    /// Hits per second above which the breaker closes the probe, besides its CPU budget.
    pub max_hits_per_second: Option<u32>,
}

/// One watch point as declared: where its value is, not yet resolved against a binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    pub name: String,
    pub symbol: String,
    /// The mapped shared library the symbol is in (its file name, e.g. `libfoo.so`, which also
    /// matches `libfoo.so.1.2`); `None` for the main executable.
    pub object: Option<String>,
    /// Member names from the symbol's value inward; pointers on the way are followed.
    pub path: Vec<String>,
    pub field: String,
    pub interval: Duration,
}

/// Why a points file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PointsError {
    #[error("cannot read points file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("points file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("points file {path}: point {point:?}: {problem}")]
    Point {
        path: PathBuf,
        point: String,
        problem: String,
    },
    #[error(
        "points file {path} declares no points; a sidecar with nothing to watch would only hold privileges"
    )]
    Empty { path: PathBuf },
    #[error("points file {path} declares {count} points; at most {MAX_POINTS} are allowed")]
    TooMany { path: PathBuf, count: usize },
}

impl PointsFile {
    pub fn load(path: &Path) -> Result<PointsFile, PointsError> {
        let text = std::fs::read_to_string(path).map_err(|source| PointsError::Read {
            path: path.to_owned(),
            source,
        })?;
        PointsFile::parse(path, &text)
    }

    /// Parses `text`; `path` only names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<PointsFile, PointsError> {
        let raw: RawFile = toml::from_str(text).map_err(|error| PointsError::Syntax {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
        let count = raw.watch.len() + raw.probe.len();
        if count == 0 {
            return Err(PointsError::Empty {
                path: path.to_owned(),
            });
        }
        if count > MAX_POINTS {
            return Err(PointsError::TooMany {
                path: path.to_owned(),
                count,
            });
        }
        let point_error = |point: &str, problem: String| PointsError::Point {
            path: path.to_owned(),
            point: point.to_owned(),
            problem,
        };
        let mut names = BTreeSet::new();
        let declared = raw
            .watch
            .iter()
            .map(|w| w.name.as_str())
            .chain(raw.probe.iter().map(|p| p.name.as_str()));
        for name in declared {
            check_point_name(name).map_err(|error| point_error(name, name_problem(error)))?;
            if !names.insert(name) {
                return Err(point_error(
                    name,
                    "declared twice; each point name is declared once".into(),
                ));
            }
        }
        let watches = raw
            .watch
            .into_iter()
            .map(|watch| watch_spec(&watch).map_err(|problem| point_error(&watch.name, problem)))
            .collect::<Result<Vec<_>, _>>()?;
        let probes = raw
            .probe
            .into_iter()
            .map(|probe| probe_spec(&probe).map_err(|problem| point_error(&probe.name, problem)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PointsFile {
            pid_file: raw.target.pid_file,
            watches,
            probes,
        })
    }
}

fn name_problem(error: NameError) -> String {
    format!("{error}; point names are {POINT_NAME_RULE}")
}

fn watch_spec(raw: &RawWatch) -> Result<WatchSpec, String> {
    check_symbol(&raw.symbol)?;
    if let Some(object) = &raw.object {
        check_object(object)?;
    }
    let path = match &raw.path {
        None => Vec::new(),
        Some(path) => parse_member_path(path)?,
    };
    let field = match &raw.field {
        Some(field) => {
            check_identifier(field).map_err(|problem| format!("field {field:?}: {problem}"))?;
            field.clone()
        }
        None => path
            .last()
            .cloned()
            .unwrap_or_else(|| default_field(&raw.symbol)),
    };
    let interval = match raw.interval_ms {
        None => DEFAULT_INTERVAL,
        Some(ms) => {
            let interval = Duration::from_millis(ms);
            if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
                return Err(format!(
                    "interval_ms = {ms} is outside {}..={} ms",
                    MIN_INTERVAL.as_millis(),
                    MAX_INTERVAL.as_millis()
                ));
            }
            interval
        }
    };
    Ok(WatchSpec {
        name: raw.name.clone(),
        symbol: raw.symbol.clone(),
        object: raw.object.clone(),
        path,
        field,
        interval,
    })
}

/// The most parameters one probe may capture (the agent's bound on a point's fields).
pub const MAX_PROBE_ARGS: usize = 32;
/// The highest `max_hits_per_second`: above it the trap alone costs a core.
pub const MAX_HITS_PER_SECOND: u32 = 100_000;

fn probe_spec(raw: &RawProbe) -> Result<ProbeSpec, String> {
    check_symbol(&raw.function)?;
    if let Some(object) = &raw.object {
        check_object(object)?;
    }
    if let Some(args) = &raw.args {
        if args.is_empty() || args.len() > MAX_PROBE_ARGS {
            return Err(format!(
                "args lists {} parameters; list 1..={MAX_PROBE_ARGS}, or leave it out for all of them",
                args.len()
            ));
        }
        let mut seen = BTreeSet::new();
        for arg in args {
            check_identifier(arg).map_err(|problem| format!("args: {problem}"))?;
            if !seen.insert(arg.as_str()) {
                return Err(format!("args lists `{arg}` twice"));
            }
        }
    }
    if let Some(rate) = raw.max_hits_per_second
        && !(1..=MAX_HITS_PER_SECOND).contains(&rate)
    {
        return Err(format!(
            "max_hits_per_second = {rate} is outside 1..={MAX_HITS_PER_SECOND}"
        ));
    }
    Ok(ProbeSpec {
        name: raw.name.clone(),
        function: raw.function.clone(),
        object: raw.object.clone(),
        args: raw.args.clone(),
        max_hits_per_second: raw.max_hits_per_second,
    })
}

/// The field name a watch gets by default: the symbol's last `::` segment (`rfix::CURRENT`
/// gives `CURRENT`), which is how the engineer wrote it in the source.
fn default_field(symbol: &str) -> String {
    symbol.rsplit("::").next().unwrap_or(symbol).to_owned()
}

/// A symbol is a DWARF name, possibly qualified (`a::b::C`), or a linkage name: printable
/// ASCII without spaces, bounded.
fn check_symbol(symbol: &str) -> Result<(), String> {
    if symbol.is_empty() {
        return Err("symbol is empty".into());
    }
    if symbol.len() > MAX_SYMBOL_LEN {
        return Err(format!(
            "symbol is {} bytes long; at most {MAX_SYMBOL_LEN}",
            symbol.len()
        ));
    }
    if let Some(bad) = symbol.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "symbol {symbol:?} contains {bad:?}; symbols are printable ASCII without spaces"
        ));
    }
    Ok(())
}

/// A shared library by file name: no directories (the target's maps decide which file it is).
fn check_object(object: &str) -> Result<(), String> {
    let valid = !object.is_empty()
        && object.len() <= 255
        && !object.contains('/')
        && object.chars().all(|c| c.is_ascii_graphic());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "object {object:?} is not a library file name (printable ASCII, no `/`, e.g. \"libfoo.so\")"
        ))
    }
}

/// `a.b.c`: member names, each a C/Rust identifier.
fn parse_member_path(path: &str) -> Result<Vec<String>, String> {
    let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
    if segments.len() > MAX_PATH_SEGMENTS {
        return Err(format!(
            "path {path:?} has {} segments; at most {MAX_PATH_SEGMENTS}",
            segments.len()
        ));
    }
    for segment in &segments {
        check_identifier(segment).map_err(|problem| format!("path {path:?}: {problem}"))?;
    }
    Ok(segments)
}

fn check_identifier(text: &str) -> Result<(), String> {
    let mut chars = text.chars();
    let valid = match chars.next() {
        Some(first) => {
            (first.is_ascii_alphabetic() || first == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                && text.len() <= 128
        }
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{text:?} is not a member name (letters, digits and `_`, not starting with a digit, at most 128 bytes)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PointsFile, PointsError> {
        PointsFile::parse(Path::new("points.toml"), text)
    }

    #[test]
    fn watch_points_parse_with_defaults() {
        let file = parse(
            r#"
            [target]
            pid_file = "/run/app.pid"
            [[watch]]
            name = "app.config"
            symbol = "g_config"
            [[watch]]
            name = "app.limit"
            symbol = "rfix::CURRENT"
            path = "limits.max"
            interval_ms = 250
            "#,
        )
        .expect("valid");
        assert_eq!(file.pid_file.as_deref(), Some(Path::new("/run/app.pid")));
        assert_eq!(file.watches[0].field, "g_config");
        assert_eq!(file.watches[0].interval, DEFAULT_INTERVAL);
        assert_eq!(file.watches[1].path, ["limits", "max"]);
        assert_eq!(file.watches[1].field, "max");
        assert_eq!(file.watches[1].interval, Duration::from_millis(250));
        let plain = parse("[[watch]]\nname = \"a.b\"\nsymbol = \"rfix::CURRENT\"\n").expect("ok");
        assert_eq!(plain.watches[0].field, "CURRENT");
    }

    #[test]
    fn unknown_fields_bad_names_and_bad_paths_are_refused_naming_the_point() {
        let unknown = parse("[[watch]]\nname = \"a.b\"\nsymbol = \"x\"\nwrite = true\n");
        assert!(
            matches!(&unknown, Err(PointsError::Syntax { message, .. }) if message.contains("write")),
            "{unknown:?}"
        );
        let bad_name = parse("[[watch]]\nname = \"A.b\"\nsymbol = \"x\"\n").unwrap_err();
        assert!(bad_name.to_string().contains("\"A.b\""), "{bad_name}");
        let twice =
            parse("[[watch]]\nname = \"a.b\"\nsymbol = \"x\"\n[[watch]]\nname = \"a.b\"\nsymbol = \"y\"\n")
                .unwrap_err();
        assert!(twice.to_string().contains("declared twice"), "{twice}");
        let path =
            parse("[[watch]]\nname = \"a.b\"\nsymbol = \"x\"\npath = \"a..b\"\n").unwrap_err();
        assert!(
            path.to_string().contains("a.b") && path.to_string().contains("member name"),
            "{path}"
        );
        let symbol = parse("[[watch]]\nname = \"a.b\"\nsymbol = \"x y\"\n").unwrap_err();
        assert!(symbol.to_string().contains("printable"), "{symbol}");
        let interval =
            parse("[[watch]]\nname = \"a.b\"\nsymbol = \"x\"\ninterval_ms = 1\n").unwrap_err();
        assert!(interval.to_string().contains("interval_ms"), "{interval}");
        let object =
            parse("[[watch]]\nname = \"a.b\"\nsymbol = \"x\"\nobject = \"/usr/lib/libx.so\"\n")
                .unwrap_err();
        assert!(object.to_string().contains("library file name"), "{object}");
        assert!(matches!(parse(""), Err(PointsError::Empty { .. })));
    }

    #[test]
    fn probe_points_parse_and_bad_ones_are_refused_naming_the_point() {
        let file = parse(
            "[[watch]]\nname = \"a.b\"\nsymbol = \"x\"\n[[probe]]\nname = \"a.enter\"\nfunction = \"work\"\nargs = [\"n\"]\nmax_hits_per_second = 50\n",
        )
        .expect("valid");
        assert_eq!(file.probes[0].function, "work");
        assert_eq!(file.probes[0].args.as_deref(), Some(&["n".to_owned()][..]));
        assert_eq!(file.probes[0].max_hits_per_second, Some(50));
        for (bad, why) in [
            ("args = []", "args lists 0"),
            ("args = [\"n\", \"n\"]", "twice"),
            ("args = [\"a b\"]", "member name"),
            ("max_hits_per_second = 0", "max_hits_per_second"),
            ("write = true", "write"),
        ] {
            let error = parse(&format!(
                "[[probe]]\nname = \"a.enter\"\nfunction = \"work\"\n{bad}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }
}

//! A sidecar attached to one process: its watch and probe points resolved against the
//! target's DWARF, declared to the agent's point registry, and sampled while armed.
//!
//! **What a hit of a watch point is.** A watch point has no place in the target's code that
//! runs, so the sidecar makes its hits: while a capture is armed on the point, the sidecar's
//! sampling thread takes one sample every `interval_ms` of the point (default 1 s), the first
//! one within [`POLL`] of arming. Each sample is one hit of the point's callsite, so the
//! capture's condition, rate limit, `max_snapshots`, CPU budget, limits and redaction decide
//! what becomes of it exactly as for an in-process `snapshot!`. Disarmed, the sidecar reads
//! nothing. A value with no code path of its own is read the way a `bpftrace` `interval:`
//! probe or a metrics scraper reads one: a sample at a cadence, never a stop of the target
//! (gdb's `print` stops it for hundreds of milliseconds).
//!
//! **What a hit of a probe point is.** While a capture is armed on a probe point, its uprobe
//! is open on every thread of the target ([`crate::uprobe`]); the sampling thread reads the
//! rings every [`PROBE_DRAIN`] and each sample is one hit of the point's callsite, its fields
//! the function's parameters decoded from the registers and stack copied at the trap
//! ([`crate::probe::param_bytes`]) and from memory read right after. The capture's condition,
//! rate limit, limits and redaction apply unchanged. When no capture is armed the events are
//! closed, so the breakpoint is gone from the target's code. The target is never stopped: the
//! trap only copies registers and 512 bytes of stack; every read is `process_vm_readv`.
//!
//! **The circuit breaker.** Every [`BREAKER_INTERVAL`] (100 ms) the cost of each open probe to
//! the target is estimated as `hits in the window × cost per hit / window`, the hits read
//! exactly from the events' counters (lost samples included) and the cost per hit taken from
//! the probed instruction's class ([`crate::probe::CostClass::nanos_per_hit`]: 3.2 µs when the
//! kernel emulates it, 15 µs when it single-steps it, the upper ends measured on this kind of
//! machine with registers and stack sampled). A probe above [`PER_PROBE_BUDGET`] (1 % of one
//! core) or its `max_hits_per_second` is closed; then, costliest first, probes are closed while
//! all together pass [`ALL_PROBES_BUDGET`] (5 %). Its captures end with
//! [`EndReason::CpuBudgetExceeded`], which the engineer sees as the end of the stream; a new
//! capture may arm it again (and will trip again if the function is still hot). Datadog's
//! dynamic instrumentation uses the same model (hits × interrupt overhead per interval) with
//! looser limits (10 % / 50 %, 2 µs per hit); this machine's measured trap costs call for the
//! tighter ones in DESIGN.md.
//!
//! **The target going away.** The pidfd says when the target exits; then every capture on the
//! sidecar's points ends with [`EndReason::TargetGone`] and [`Sidecar::run`] returns, so the
//! sidecar exits rather than serve points that can no longer be read. A restarted target is a
//! new process: run a new sidecar for it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use loupe_agent::point::FieldKind;
use loupe_agent::{
    Callsite, DeclareError, DeclaredPoint, EndReason, Engine, FieldValue, SiteKind, ThreadInfo,
};

use crate::decode::{Captured, Watched};
use std::os::unix::fs::FileExt;

use loupe_agent::point::MAX_DECLARED_FIELDS;

use crate::dwarf::{Debug, DebugSections, DwarfError, Function, Global, Purpose};
use crate::elf::{MappedObject, ObjectError};
use crate::layout::{Access, Compiler, Layouts};
use crate::points::{ProbeSpec, WatchSpec};
use crate::probe::{self, ResolvedProbe};
use crate::target::Target;
use crate::uprobe::{Hit, ProbeError, Uprobe};

/// The longest the sampling thread sleeps before it looks at its points' armed flags and the
/// target's pidfd again: a newly armed point gets its first sample within this, and an idle
/// sidecar wakes 20 times a second (sooner only when an armed point's sample is due).
pub const POLL: Duration = Duration::from_millis(50);
/// How often an armed probe's rings are read.
pub const PROBE_DRAIN: Duration = Duration::from_millis(10);
/// The breaker's window, and how often threads started later are looked for.
pub const BREAKER_INTERVAL: Duration = Duration::from_millis(100);
/// The most one probe may cost the target: 1 % of one core.
pub const PER_PROBE_BUDGET: f64 = 0.01;
/// The most all probes together may cost it: 5 % of one core.
pub const ALL_PROBES_BUDGET: f64 = 0.05;

/// Why a sidecar did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SidecarError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("{path}: {source}")]
    Dwarf { path: String, source: DwarfError },
    #[error("{} point(s) do not resolve in {exe}; the sidecar serves all declared points or none:\n  {}", problems.len(), problems.join("\n  "))]
    Unresolved { exe: String, problems: Vec<String> },
    #[error(transparent)]
    Declare(#[from] DeclareError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
}

/// A watch point resolved against the target.
#[derive(Debug, Clone)]
pub struct ResolvedWatch {
    pub spec: WatchSpec,
    /// Index in [`Resolved::objects`] of the object its global is in.
    pub object: usize,
    /// The global's address in the target (bias applied).
    pub address: u64,
    pub access: Access,
    /// The watched value's type, for Describe and review.
    pub type_name: String,
    pub decl_file: String,
    pub decl_line: u32,
}

/// An object (the executable or a library) some watch resolved in.
#[derive(Debug, Clone)]
pub struct ResolvedObject {
    /// The path the target's maps give it.
    pub path: String,
    pub build_id: String,
    /// The file its DWARF came from (itself, or its split debug info).
    pub debug_file: String,
    pub bias: u64,
    /// The object through `/proc/PID/map_files`, which uprobes name.
    pub map_file: std::path::PathBuf,
}

/// Everything resolved at attach, before anything is declared to the agent.
#[derive(Debug)]
pub struct Resolved {
    pub target: Target,
    pub objects: Vec<ResolvedObject>,
    pub layouts: Layouts,
    pub watches: Vec<ResolvedWatch>,
    pub probes: Vec<ResolvedProbe>,
}

impl Resolved {
    /// [`Resolved::attach_points`] for watch points only.
    pub fn attach(target: Target, watches: &[WatchSpec]) -> Result<Resolved, SidecarError> {
        Resolved::attach_points(target, watches, &[])
    }

    /// Reads the ELF and DWARF of every object the points name (the executable unless a
    /// point names a library) and resolves every point; refuses (naming each point and why)
    /// unless all resolve. The DWARF is dropped before this returns.
    pub fn attach_points(
        target: Target,
        watches: &[WatchSpec],
        probes: &[ProbeSpec],
    ) -> Result<Resolved, SidecarError> {
        type Group<'s> = (Vec<&'s WatchSpec>, Vec<&'s ProbeSpec>);
        let mut by_object: BTreeMap<Option<&str>, Group<'_>> = BTreeMap::new();
        for watch in watches {
            by_object
                .entry(watch.object.as_deref())
                .or_default()
                .0
                .push(watch);
        }
        for probe in probes {
            by_object
                .entry(probe.object.as_deref())
                .or_default()
                .1
                .push(probe);
        }
        let mut layouts = Layouts::default();
        let mut objects = Vec::new();
        let mut resolved = Vec::new();
        let mut resolved_probes = Vec::new();
        let mut problems = Vec::new();
        let mut main_path = String::new();
        for (name, (group, probe_group)) in by_object {
            let object = match name {
                None => MappedObject::main_executable(&target)?,
                Some(name) => MappedObject::library(&target, name)?,
            };
            if name.is_none() {
                main_path = object.path.clone();
            }
            let debug_path = object.debug.path.display().to_string();
            let dwarf_error = |source| SidecarError::Dwarf {
                path: debug_path.clone(),
                source,
            };
            let purpose = if probe_group.is_empty() {
                Purpose::Globals
            } else {
                Purpose::GlobalsAndFunctions
            };
            let sections =
                DebugSections::read(&object.debug.bytes, purpose).map_err(dwarf_error)?;
            let debug = Debug::load(&sections).map_err(dwarf_error)?;
            let wanted: BTreeSet<&str> = group.iter().map(|w| w.symbol.as_str()).collect();
            let found = debug.find_globals(&wanted).map_err(dwarf_error)?;
            let wanted_functions: BTreeSet<&str> =
                probe_group.iter().map(|p| p.function.as_str()).collect();
            let functions = if wanted_functions.is_empty() {
                BTreeMap::new()
            } else {
                debug
                    .find_functions(&wanted_functions)
                    .map_err(dwarf_error)?
            };
            let mut compiler = Compiler::continuing(&debug, layouts);
            for watch in group {
                match resolve_watch(&mut compiler, &found, watch, object.bias) {
                    Ok(Ok(mut point)) => {
                        point.object = objects.len();
                        resolved.push(point);
                    }
                    Ok(Err(problem)) => problems.push(format!(
                        "point `{}` (symbol `{}` in {}): {problem}",
                        watch.name, watch.symbol, object.path
                    )),
                    Err(source) => return Err(dwarf_error(source)),
                }
            }
            for probe in probe_group {
                match resolve_probe(&mut compiler, &functions, probe, &object) {
                    Ok(Ok(mut point)) => {
                        point.object = objects.len();
                        resolved_probes.push(point);
                    }
                    Ok(Err(problem)) => problems.push(format!(
                        "point `{}` (function `{}` in {}): {problem}",
                        probe.name, probe.function, object.path
                    )),
                    Err(source) => return Err(dwarf_error(source)),
                }
            }
            layouts = compiler.finish();
            objects.push(ResolvedObject {
                path: object.path,
                build_id: object.build_id,
                debug_file: debug_path,
                bias: object.bias,
                map_file: object.map_file,
            });
        }
        if !problems.is_empty() {
            return Err(SidecarError::Unresolved {
                exe: if main_path.is_empty() {
                    format!("process {}", target.pid())
                } else {
                    main_path
                },
                problems,
            });
        }
        // Declared in the order the file gives them.
        resolved.sort_by_key(|point| {
            watches
                .iter()
                .position(|w| w.name == point.spec.name)
                .unwrap_or(usize::MAX)
        });
        resolved_probes.sort_by_key(|point| {
            probes
                .iter()
                .position(|p| p.name == point.spec.name)
                .unwrap_or(usize::MAX)
        });
        Ok(Resolved {
            target,
            objects,
            layouts,
            watches: resolved,
            probes: resolved_probes,
        })
    }
}

/// One probe: `Ok(Err(problem))` when it does not resolve, `Err` when the DWARF is broken.
fn resolve_probe(
    compiler: &mut Compiler<'_, '_>,
    functions: &BTreeMap<String, Vec<Function>>,
    probe: &ProbeSpec,
    object: &MappedObject,
) -> Result<Result<ResolvedProbe, String>, DwarfError> {
    let candidates = functions
        .get(&probe.function)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let function = match probe::pick_function(candidates) {
        Ok(function) => function,
        Err(problem) => return Ok(Err(problem)),
    };
    let Some(entry) = function.entry else {
        return Ok(Err("the function has no entry address".into()));
    };
    let Some(entry_offset) = object.code_file_offset(entry) else {
        return Ok(Err(format!(
            "its entry {entry:#x} is not in an executable segment of the file"
        )));
    };
    let mut code = [0u8; 16];
    let read = std::fs::File::open(&object.map_file)
        .and_then(|file| file.read_at(&mut code, entry_offset));
    let code = match read {
        Ok(n) => &code[..n],
        Err(error) => {
            return Ok(Err(format!(
                "cannot read its first instructions from {}: {error}",
                object.map_file.display()
            )));
        }
    };
    let after_endbr64 = code.starts_with(&probe::ENDBR64);
    let skip = if after_endbr64 { 4 } else { 0 };
    let params = match probe::resolve_params(compiler, function, probe.args.as_deref())? {
        Ok(params) => params,
        Err(problem) => return Ok(Err(problem)),
    };
    if params.len() > MAX_DECLARED_FIELDS {
        return Ok(Err(format!(
            "it has {} parameters; list at most {MAX_DECLARED_FIELDS} in `args`",
            params.len()
        )));
    }
    Ok(Ok(ResolvedProbe {
        spec: probe.clone(),
        object: 0,
        qualified_name: function.qualified_name.clone(),
        entry: entry.wrapping_add(object.bias),
        address: entry.wrapping_add(skip).wrapping_add(object.bias),
        file_offset: entry_offset + skip,
        after_endbr64,
        cost: probe::classify(code.get(skip as usize..).unwrap_or(&[])),
        map_file: object.map_file.clone(),
        params,
        decl_file: function.decl_file.clone(),
        decl_line: function.decl_line,
    }))
}

/// One watch: `Ok(Err(problem))` when it does not resolve, `Err` when the DWARF is broken.
fn resolve_watch(
    compiler: &mut Compiler<'_, '_>,
    found: &BTreeMap<String, Vec<Global>>,
    watch: &WatchSpec,
    bias: u64,
) -> Result<Result<ResolvedWatch, String>, DwarfError> {
    let candidates = found.get(&watch.symbol).map(Vec::as_slice).unwrap_or(&[]);
    let mut addresses: Vec<&Global> = Vec::new();
    for global in candidates {
        if !addresses.iter().any(|seen| seen.address == global.address) {
            addresses.push(global);
        }
    }
    let global = match addresses.as_slice() {
        [] => {
            return Ok(Err(
                "no global or static of that name in the DWARF (qualify Rust statics with their module path, e.g. `crate::module::NAME`, or give the linkage name; function-local statics are not supported yet)".into(),
            ));
        }
        [one] => *one,
        many => {
            let places: Vec<String> = many
                .iter()
                .map(|g| format!("{}:{}", g.decl_file, g.decl_line))
                .collect();
            return Ok(Err(format!(
                "{} different globals have that name ({}); give the linkage name of the one to watch",
                many.len(),
                places.join(", ")
            )));
        }
    };
    let address = match global.address {
        Ok(address) => address.wrapping_add(bias),
        Err(why) => return Ok(Err(format!("cannot be watched: {why}"))),
    };
    let root = compiler.compile(global.type_die)?;
    let access = match compiler.layouts().access(root, &watch.path) {
        Ok(access) => access,
        Err(error) => return Ok(Err(format!("path `{}`: {error}", watch.path.join(".")))),
    };
    Ok(Ok(ResolvedWatch {
        spec: watch.clone(),
        object: 0,
        address,
        type_name: compiler.layouts().type_name(access.node),
        access,
        decl_file: global.decl_file.clone(),
        decl_line: global.decl_line,
    }))
}

/// A watch point declared to the agent.
struct WatchPoint {
    resolved: ResolvedWatch,
    callsite: &'static Callsite,
}

/// A probe point declared to the agent.
struct ProbePoint {
    resolved: ResolvedProbe,
    callsite: &'static Callsite,
}

/// An open uprobe and the breaker's view of it.
struct Armed {
    uprobe: Uprobe,
    /// Hits counted at the start of the breaker's current window.
    window_hits: u64,
    lost_reported: u64,
}

/// What a probe has cost so far, for tests and the operator's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeStats {
    pub armed: bool,
    pub threads: usize,
    pub hits: u64,
    pub lost: u64,
    /// How many times the breaker closed it.
    pub tripped: u64,
}

/// An attached sidecar whose points are in the agent's registry.
pub struct Sidecar {
    target: Target,
    layouts: Layouts,
    points: Vec<WatchPoint>,
    probes: Vec<ProbePoint>,
    stats: Mutex<Vec<ProbeStats>>,
    /// The target's threads as probe snapshots name them, by tid: read from `/proc` once per
    /// thread (see [`Sidecar::thread`]).
    threads: Mutex<HashMap<u32, ThreadInfo>>,
}

/// Threads whose names are remembered; past it the memory starts over (a target that keeps
/// starting short-lived threads).
const MAX_REMEMBERED_THREADS: usize = 4_096;

/// Why [`Sidecar::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// The target exited; its captures ended with [`EndReason::TargetGone`].
    TargetGone,
    /// The caller asked it to stop.
    Stopped,
}

impl Sidecar {
    /// Declares every resolved watch as a point before the agent's registry is first used:
    /// kind WATCH, one field (decoded through serde), whose type Describe shows is the
    /// watched value's type in the target, at the global's declaration file and line. The
    /// registry holds these points alone: `snapshot!` callsites linked into the program that
    /// runs the sidecar (the `loupe` binary carries the demo's) are left out.
    pub fn declare(resolved: Resolved) -> Result<Sidecar, SidecarError> {
        if !resolved.probes.is_empty() {
            crate::uprobe::check_privileges()?;
        }
        loupe_agent::serve_declared_points_only()?;
        let mut points = Vec::new();
        for watch in resolved.watches {
            let callsite = loupe_agent::declare_point_of_kind(
                DeclaredPoint {
                    name: watch.spec.name.clone(),
                    file: watch.decl_file.clone(),
                    line: watch.decl_line,
                    module_path: watch.spec.symbol.clone(),
                    fields: vec![(watch.spec.field.clone(), FieldKind::Serde)],
                },
                SiteKind::Watch,
                std::slice::from_ref(&watch.type_name),
            )?;
            points.push(WatchPoint {
                resolved: watch,
                callsite,
            });
        }
        let mut probes = Vec::new();
        for probe in resolved.probes {
            let object = &resolved.objects[probe.object];
            let callsite = loupe_agent::declare_point_of_kind(
                DeclaredPoint {
                    name: probe.spec.name.clone(),
                    file: probe.decl_file.clone(),
                    line: probe.decl_line,
                    module_path: format!("{} in {}", probe.qualified_name, object.path),
                    fields: probe
                        .params
                        .iter()
                        .map(|p| (p.name.clone(), FieldKind::Serde))
                        .collect(),
                },
                SiteKind::Probe,
                &probe
                    .params
                    .iter()
                    .map(|p| p.type_name.clone())
                    .collect::<Vec<_>>(),
            )?;
            probes.push(ProbePoint {
                resolved: probe,
                callsite,
            });
        }
        let stats = Mutex::new(vec![ProbeStats::default(); probes.len()]);
        Ok(Sidecar {
            target: resolved.target,
            layouts: resolved.layouts,
            points,
            probes,
            stats,
            threads: Mutex::new(HashMap::new()),
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Takes one sample of every armed point now (one hit each). Returns how many were armed.
    pub fn sample_armed(&self) -> usize {
        let mut armed = 0;
        for point in &self.points {
            if point.callsite.is_armed() {
                armed += 1;
                self.sample(point);
            }
        }
        armed
    }

    fn sample(&self, point: &WatchPoint) {
        let watched = Watched {
            layouts: &self.layouts,
            access: &point.resolved.access,
            address: point.resolved.address,
            memory: &self.target,
        };
        point.callsite.hit(&[FieldValue::serde(&watched)]);
    }

    /// Samples armed watch points at their intervals and serves armed probes until the
    /// target exits or `stop` is set.
    pub fn run(&self, stop: &AtomicBool) -> RunEnd {
        self.run_with(stop, &mut Vec::new())
    }

    fn run_with(&self, stop: &AtomicBool, probes: &mut Vec<Option<Armed>>) -> RunEnd {
        let mut next_due: Vec<Option<Instant>> = vec![None; self.points.len()];
        probes.resize_with(self.probes.len(), || None);
        let mut window_start = Instant::now();
        loop {
            if self.target.exited() {
                probes.iter_mut().for_each(|armed| *armed = None);
                self.end_captures(EndReason::TargetGone);
                return RunEnd::TargetGone;
            }
            if stop.load(Ordering::Relaxed) {
                probes.iter_mut().for_each(|armed| *armed = None);
                return RunEnd::Stopped;
            }
            let now = Instant::now();
            let mut wake = now + POLL;
            for (point, due) in self.points.iter().zip(next_due.iter_mut()) {
                if !point.callsite.is_armed() {
                    *due = None;
                    continue;
                }
                if due.is_none_or(|at| at <= now) {
                    self.sample(point);
                    *due = Some(now + point.resolved.spec.interval);
                }
                if let Some(at) = *due {
                    wake = wake.min(at);
                }
            }
            let window_over = now.duration_since(window_start) >= BREAKER_INTERVAL;
            for (index, armed) in probes.iter_mut().enumerate() {
                self.serve_probe(index, armed, window_over);
                if armed.is_some() {
                    wake = wake.min(now + PROBE_DRAIN);
                }
            }
            if window_over {
                self.check_breaker(probes, now.duration_since(window_start));
                window_start = now;
            }
            std::thread::sleep(wake.saturating_duration_since(Instant::now()));
        }
    }

    /// Opens or closes a probe's uprobe as its callsite is armed or not, and turns its
    /// samples into hits.
    fn serve_probe(&self, index: usize, armed: &mut Option<Armed>, rescan: bool) {
        let point = &self.probes[index];
        if !point.callsite.is_armed() {
            if let Some(closed) = armed.take() {
                self.record_closed(index, closed);
            }
            return;
        }
        if armed.is_none() {
            let file = &point.resolved.map_file;
            match Uprobe::open(self.target.pid(), file, point.resolved.file_offset) {
                Ok(uprobe) => {
                    let window_hits = uprobe.hits();
                    *armed = Some(Armed {
                        uprobe,
                        window_hits,
                        lost_reported: 0,
                    });
                }
                Err(error) => {
                    tracing::warn!(point = %point.callsite.name(), %error, "cannot arm the probe; its captures end");
                    self.end_point(point, EndReason::Disarmed);
                    return;
                }
            }
        }
        let Some(open) = armed.as_mut() else {
            return;
        };
        let mut hit = |hit: Hit| self.hit_probe(point, &hit);
        if rescan && let Err(error) = open.uprobe.rescan(&mut hit) {
            tracing::warn!(point = %point.callsite.name(), %error, "cannot rescan the target's threads");
        }
        open.uprobe.drain(&mut hit);
        let lost = open.uprobe.lost();
        if lost > open.lost_reported {
            tracing::warn!(point = %point.callsite.name(), lost, "probe samples lost: the target hit the probe faster than the sidecar read");
            point.callsite.count_lost(lost - open.lost_reported);
            open.lost_reported = lost;
        }
        self.record(index, open, true);
    }

    /// One sample of a probe: one hit of its callsite, with each parameter decoded.
    fn hit_probe(&self, point: &ProbePoint, hit: &Hit) {
        let captured: Vec<Captured<'_>> = point
            .resolved
            .params
            .iter()
            .map(|param| Captured {
                layouts: &self.layouts,
                node: param.node,
                bytes: probe::param_bytes(&self.layouts, param, hit, &self.target),
                memory: &self.target,
            })
            .collect();
        let fields: Vec<FieldValue<'_>> = captured.iter().map(FieldValue::serde).collect();
        point.callsite.hit_on_thread(&self.thread(hit.tid), &fields);
    }

    /// The target's thread `tid` as snapshots name it: its `comm` (as `/proc` shows it when
    /// first seen; a thread that renames itself later keeps its first name here) and its tid.
    /// A thread gone before it is named is named by its tid alone.
    fn thread(&self, tid: u32) -> ThreadInfo {
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = threads.get(&tid) {
            return known.clone();
        }
        if threads.len() >= MAX_REMEMBERED_THREADS {
            threads.clear();
        }
        let path = format!("/proc/{}/task/{tid}/comm", self.target.pid());
        let name = std::fs::read_to_string(path).unwrap_or_default();
        let thread = ThreadInfo::foreign(name.trim_end_matches('\n'), u64::from(tid));
        threads.insert(tid, thread.clone());
        thread
    }

    fn record(&self, index: usize, armed: &Armed, open: bool) {
        let (hits, lost) = (armed.uprobe.hits(), armed.uprobe.lost());
        let threads = if open { armed.uprobe.threads() } else { 0 };
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = stats.get_mut(index) {
            entry.armed = open;
            entry.threads = threads;
            entry.hits = hits.max(entry.hits);
            entry.lost = lost.max(entry.lost);
        }
    }

    /// Closes a probe's events (removing the breakpoint), then says so in its stats: once a
    /// probe reads as not armed, its descriptors are closed.
    fn record_closed(&self, index: usize, closed: Armed) {
        let (hits, lost) = (closed.uprobe.hits(), closed.uprobe.lost());
        drop(closed);
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = stats.get_mut(index) {
            entry.armed = false;
            entry.threads = 0;
            entry.hits = hits.max(entry.hits);
            entry.lost = lost.max(entry.lost);
        }
    }

    /// The breaker (see the module docs): every [`BREAKER_INTERVAL`], closes any probe whose
    /// estimated cost to the target passes its budget, then the costliest ones while all
    /// probes together pass theirs.
    fn check_breaker(&self, probes: &mut [Option<Armed>], elapsed: Duration) {
        let elapsed_ns = elapsed.as_nanos().max(1) as f64;
        let mut costs: Vec<(usize, f64, f64)> = Vec::new();
        for (index, armed) in probes.iter_mut().enumerate() {
            let Some(open) = armed.as_mut() else {
                continue;
            };
            let hits = open.uprobe.hits();
            let delta = hits.saturating_sub(open.window_hits);
            open.window_hits = hits;
            let point = &self.probes[index];
            let share = delta as f64 * point.resolved.cost.nanos_per_hit() as f64 / elapsed_ns;
            let rate = delta as f64 * 1e9 / elapsed_ns;
            costs.push((index, share, rate));
        }
        let mut total: f64 = costs.iter().map(|(_, share, _)| share).sum();
        costs.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (index, share, rate) in costs {
            let point = &self.probes[index];
            let over_rate = point
                .resolved
                .spec
                .max_hits_per_second
                .is_some_and(|max| rate > f64::from(max));
            if share > PER_PROBE_BUDGET || total > ALL_PROBES_BUDGET || over_rate {
                tracing::warn!(
                    point = %point.callsite.name(),
                    cost_percent_of_a_core = share * 100.0,
                    hits_per_second = rate,
                    "circuit breaker: the probe costs the target more than its budget; closed, and its captures end (cpu budget exceeded)"
                );
                if let Some(closed) = probes[index].take() {
                    self.record_closed(index, closed);
                }
                total -= share;
                if let Some(entry) = self
                    .stats
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_mut(index)
                {
                    entry.tripped += 1;
                }
                self.end_point(point, EndReason::CpuBudgetExceeded);
            }
        }
    }

    /// What each probe point has cost so far, in declaration order.
    pub fn probe_stats(&self) -> Vec<(String, ProbeStats)> {
        let stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        self.probes
            .iter()
            .zip(stats.iter())
            .map(|(point, stats)| (point.callsite.name().to_owned(), stats.clone()))
            .collect()
    }

    fn end_point(&self, point: &ProbePoint, reason: EndReason) {
        let engine = Engine::global();
        for capture in engine.captures() {
            if capture.point == point.callsite.name() {
                engine.disarm(&capture.capture_id, reason);
            }
        }
    }

    /// Ends every capture armed on this sidecar's points.
    pub fn end_captures(&self, reason: EndReason) -> usize {
        let names: BTreeSet<&str> = self
            .points
            .iter()
            .map(|p| p.callsite.name())
            .chain(self.probes.iter().map(|p| p.callsite.name()))
            .collect();
        let engine = Engine::global();
        engine
            .captures()
            .into_iter()
            .filter(|capture| names.contains(capture.point.as_str()))
            .filter(|capture| engine.disarm(&capture.capture_id, reason))
            .count()
    }
}

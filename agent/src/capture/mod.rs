//! The capture engine: arming points, taking snapshots on the threads that pass them, and
//! handing the snapshots to whoever armed the capture.
//!
//! - [`callsite`]: the static callsites `snapshot!` plants, with the captures armed on each.
//! - [`dry_run`]: a condition evaluated on example values, as a hit would.
//! - [`spec`]: what a capture asks for, and how the agent's ceilings clamp it.
//! - [`engine`]: the process-wide engine — arm, disarm, and the agent thread that retires
//!   finished captures.
//! - [`hit`]: the out-of-line path a thread takes through an armed point.
//! - [`serialize`]: the bounded serializer that path uses: raw values for a snapshot, redacted
//!   on the agent's thread before encoding; redacted as it goes for what a condition reads.
//! - [`stream`]: the receiving end of a capture, where snapshots are redacted and encoded.
//! - [`warm`]: the agent thread's pass that keeps the hit path's code and the memory a hit
//!   writes in the caches of the cores hits run on.
//! - [`budget`]: the throttles that protect the host (the limits on what one snapshot may take
//!   are [`crate::limits`], shared with conditions).

pub mod budget;
pub mod callsite;
pub mod dry_run;
pub mod engine;
pub mod hit;
mod name_cache;
pub mod serialize;
pub mod spec;
pub mod stream;
pub mod warm;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crate::condition::Condition;
use crate::context::SpanFieldRequest;
use crate::limits::CaptureLimits;
use crate::redaction::RedactionRules;
use budget::RateLimiter;
use callsite::Callsite;
use stream::SnapshotSender;

/// Why a capture ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// It delivered its maximum number of snapshots.
    Completed,
    /// Its deadline passed.
    DeadlineReached,
    /// Whoever armed it stopped listening.
    ReceiverDropped,
    /// It was disarmed on request (close, revoke, shutdown).
    Disarmed,
    /// Its hits kept finding the agent's CPU budget for capture work spent.
    CpuBudgetExceeded,
    /// Its condition ran out of its per-hit cost budget on several hits in a row.
    ConditionOverBudget,
    /// What the point observes is gone: a sidecar's target process exited or was replaced.
    TargetGone,
}

impl EndReason {
    fn code(self) -> u8 {
        match self {
            EndReason::Completed => 1,
            EndReason::DeadlineReached => 2,
            EndReason::ReceiverDropped => 3,
            EndReason::Disarmed => 4,
            EndReason::CpuBudgetExceeded => 5,
            EndReason::ConditionOverBudget => 6,
            EndReason::TargetGone => 7,
        }
    }

    fn from_code(code: u8) -> Option<EndReason> {
        Some(match code {
            1 => EndReason::Completed,
            2 => EndReason::DeadlineReached,
            3 => EndReason::ReceiverDropped,
            4 => EndReason::Disarmed,
            5 => EndReason::CpuBudgetExceeded,
            6 => EndReason::ConditionOverBudget,
            7 => EndReason::TargetGone,
            _ => return None,
        })
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EndReason::Completed => "completed: maximum number of snapshots delivered",
            EndReason::DeadlineReached => "deadline reached",
            EndReason::ReceiverDropped => "receiver went away",
            EndReason::Disarmed => "disarmed",
            EndReason::CpuBudgetExceeded => {
                "disarmed: the agent's CPU budget for capture work was exceeded for 3 seconds in a row"
            }
            EndReason::ConditionOverBudget => {
                "disarmed: the condition ran out of its per-hit cost budget on 3 hits in a row; the last condition error says where"
            }
            EndReason::TargetGone => {
                "ended: the process this point observes exited or was replaced (the sidecar's target is gone)"
            }
        })
    }
}

/// Counters of one capture. Every hit lands in exactly one outcome: a snapshot sent, or one of
/// the skip/drop counters.
#[derive(Default)]
pub(crate) struct Counters {
    pub hits: AtomicU64,
    pub condition_false: AtomicU64,
    pub condition_errors: AtomicU64,
    pub skipped_rate: AtomicU64,
    pub skipped_cpu_budget: AtomicU64,
    pub skipped_reentrant: AtomicU64,
    pub skipped_after_end: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    /// Hits its source saw but could not deliver (see [`Callsite::count_lost`]).
    pub lost_at_source: AtomicU64,
    pub sent: AtomicU64,
    /// Hits that passed condition and rate limit; the source of sequence numbers.
    pub matched: AtomicU64,
    pub cost_ns: AtomicU64,
}

/// A point-in-time copy of a capture's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureCounters {
    pub hits: u64,
    pub condition_false: u64,
    pub condition_errors: u64,
    pub skipped_rate: u64,
    pub skipped_cpu_budget: u64,
    pub skipped_reentrant: u64,
    /// Hits that arrived after the capture ended but before its callsites were disarmed.
    pub skipped_after_end: u64,
    pub dropped_queue_full: u64,
    /// Hits the point's source saw but could not deliver: a sidecar's probe samples lost
    /// because the target hit the probe faster than the sidecar read them.
    pub lost_at_source: u64,
    pub sent: u64,
    /// Total time spent capturing on application threads, in nanoseconds.
    pub cost_ns: u64,
}

impl Counters {
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub fn read(&self) -> CaptureCounters {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CaptureCounters {
            hits: load(&self.hits),
            condition_false: load(&self.condition_false),
            condition_errors: load(&self.condition_errors),
            skipped_rate: load(&self.skipped_rate),
            skipped_cpu_budget: load(&self.skipped_cpu_budget),
            skipped_reentrant: load(&self.skipped_reentrant),
            skipped_after_end: load(&self.skipped_after_end),
            dropped_queue_full: load(&self.dropped_queue_full),
            lost_at_source: load(&self.lost_at_source),
            sent: load(&self.sent),
            cost_ns: load(&self.cost_ns),
        }
    }
}

#[inline]
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What the armed capture and its stream share.
pub(crate) struct CaptureShared {
    pub id: u64,
    pub session_id: Arc<str>,
    pub point: &'static str,
    /// The point's callsites, where the engine installs and removes this capture.
    pub callsites: &'static [&'static Callsite],
    pub condition_source: Option<String>,
    pub max_snapshots: u64,
    pub counters: Counters,
    end: AtomicU8,
    /// The last condition evaluation error, for the capture's status.
    pub last_condition_error: std::sync::Mutex<Option<String>>,
    /// Records of snapshots already encoded, for the capturing threads to reuse.
    pub spare_records: stream::SpareRecords,
    /// Hits in a row whose condition ran out of its cost budget.
    pub condition_budget_strikes: std::sync::atomic::AtomicU32,
    /// Wakes the capture's stream: the agent thread's drain tick when snapshots wait, and the
    /// sender's drop at the end. A hit wakes it only in a burst (see `capture::stream`).
    pub delivery: tokio::sync::Notify,
}

/// Consecutive hits whose condition runs out of its cost budget after which the capture ends.
/// The arm-time estimate should make this unreachable; if it is wrong, one hit's budget is
/// spent in vain, not every hit's.
pub(crate) const CONDITION_BUDGET_STRIKES: u32 = 3;

impl CaptureShared {
    /// Ends the capture (first reason wins). Returns whether this call ended it.
    pub fn end(&self, reason: EndReason) -> bool {
        self.end
            .compare_exchange(0, reason.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Notes a hit whose condition ran out of budget; true when that makes
    /// [`CONDITION_BUDGET_STRIKES`] in a row.
    pub fn condition_over_budget(&self) -> bool {
        self.condition_budget_strikes
            .fetch_add(1, Ordering::Relaxed)
            + 1
            >= CONDITION_BUDGET_STRIKES
    }

    /// Notes a hit whose condition finished within budget.
    #[inline]
    pub fn condition_within_budget(&self) {
        if self.condition_budget_strikes.load(Ordering::Relaxed) != 0 {
            self.condition_budget_strikes.store(0, Ordering::Relaxed);
        }
    }

    pub fn end_reason(&self) -> Option<EndReason> {
        EndReason::from_code(self.end.load(Ordering::Acquire))
    }

    #[inline]
    pub fn is_ended(&self) -> bool {
        self.end.load(Ordering::Relaxed) != 0
    }

    pub fn id_string(&self) -> String {
        format!("cap-{:016x}", self.id)
    }
}

/// A capture as the capturing threads see it.
pub(crate) struct ArmedCapture {
    pub shared: Arc<CaptureShared>,
    /// Boxed: a compiled condition is a few hundred bytes, and inline it would spread the
    /// fields every hit reads (rate limit, deadline, limits, sender) over more cache lines.
    pub condition: Option<Box<Condition>>,
    pub limits: CaptureLimits,
    pub rules: Arc<RedactionRules>,
    pub rate: RateLimiter,
    /// In the engine's monotonic nanoseconds.
    pub deadline_ns: u64,
    /// How big this capture's snapshots have been, to size the next one's tape in one go.
    pub tape_sizes: TapeSizes,
    /// The bounded hand-off to the receiver. Dropped when the engine retires the capture,
    /// which is how the receiver learns that no more snapshots will come.
    pub sender: SnapshotSender,
    /// The span fields this capture reads, for the correlation layer to record.
    pub span_fields: SpanFieldRequest,
}

/// The sizes of the last snapshot's tape, so the next starts with room for as much and the
/// capturing thread allocates once per buffer instead of growing it.
#[derive(Default)]
pub(crate) struct TapeSizes {
    nodes: std::sync::atomic::AtomicU32,
    text: std::sync::atomic::AtomicU32,
}

impl TapeSizes {
    /// Never reserve more than this up front, whatever earlier snapshots held.
    const MAX_NODES: u32 = 4_096;
    const MAX_TEXT: u32 = 64 * 1024;

    pub fn empty_tape(&self) -> crate::value::Tape {
        let nodes = self
            .nodes
            .load(Ordering::Relaxed)
            .clamp(16, Self::MAX_NODES);
        let text = self.text.load(Ordering::Relaxed).clamp(64, Self::MAX_TEXT);
        crate::value::Tape::with_capacity(nodes as usize, text as usize)
    }

    /// Remembers the nodes and text bytes a snapshot's tape held.
    pub fn remember(&self, (nodes, text): (usize, usize)) {
        let nodes = u32::try_from(nodes).unwrap_or(u32::MAX);
        let text = u32::try_from(text).unwrap_or(u32::MAX);
        self.nodes.store(nodes, Ordering::Relaxed);
        self.text.store(text, Ordering::Relaxed);
    }
}

/// What arming a point installs on: the point's name, the fields its callsites name (for
/// compiling a condition), and the callsites themselves. Built by the point registry.
pub(crate) struct ArmTarget {
    pub point: &'static str,
    pub field_names: Vec<&'static str>,
    pub callsites: &'static [&'static Callsite],
}

/// The captures armed on one point, as installed on each of its callsites.
pub(crate) struct ArmedSet {
    pub captures: Vec<Arc<ArmedCapture>>,
}

/// A capture as reported to operators.
#[derive(Debug, Clone)]
pub struct CaptureStatus {
    pub capture_id: String,
    pub session_id: String,
    pub point: String,
    pub condition: Option<String>,
    pub max_snapshots: u64,
    /// `None` while the capture is armed.
    pub ended: Option<EndReason>,
    pub counters: CaptureCounters,
    pub last_condition_error: Option<String>,
}

impl CaptureStatus {
    pub(crate) fn of(shared: &CaptureShared) -> CaptureStatus {
        CaptureStatus {
            capture_id: shared.id_string(),
            session_id: shared.session_id.to_string(),
            point: shared.point.to_owned(),
            condition: shared.condition_source.clone(),
            max_snapshots: shared.max_snapshots,
            ended: shared.end_reason(),
            counters: shared.counters.read(),
            last_condition_error: shared
                .last_condition_error
                .lock()
                .ok()
                .and_then(|error| error.clone()),
        }
    }
}

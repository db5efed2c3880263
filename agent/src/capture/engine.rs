//! The process-wide capture engine: arms and disarms captures on points, and runs the agent
//! thread that retires captures that ended and, every tick (5–20 ms) while any capture is
//! armed, wakes the streams whose snapshots wait (hits wake them only in a burst: see
//! `capture::stream`).
//!
//! Callsites are statics, so the engine is too ([`Engine::global`]). Arming and disarming take
//! the engine's lock and swap each callsite's armed set atomically; threads passing a point
//! never take that lock. A capture that ends on an application thread (count reached, deadline,
//! receiver gone) is only flagged there; the agent thread then removes it from its callsites,
//! which drops its sender and so ends its stream.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use crate::capture::budget::{CpuBudget, RateLimiter};
use crate::capture::callsite::Callsite;
use crate::capture::spec::{CaptureSpec, EngineConfig};
use crate::capture::stream::{
    CaptureStream, DRAIN_TICK, EngineHooks, IDLE_DRAIN_TICK, SnapshotSender,
};
use crate::capture::warm;
use crate::capture::{
    ArmTarget, ArmedCapture, ArmedSet, CaptureShared, CaptureStatus, Counters, EndReason,
};
use crate::condition::{Condition, ConditionError};
use crate::context::{ContextReads, SpanFieldRequest, select_span_fields};
use crate::redaction::{RedactionError, RedactionRules};

/// Consecutive seconds of CPU-budget skips after which a capture is disarmed.
const BUDGET_STRIKES: u32 = 3;

/// Why a capture could not be armed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArmError {
    #[error("no snapshot point named `{point}` in this process{hint}")]
    UnknownPoint { point: String, hint: String },
    #[error("invalid condition: {0}")]
    Condition(#[from] ConditionError),
    #[error("invalid redaction addition: {0}")]
    Redaction(#[from] RedactionError),
    #[error("{armed} captures are armed, the agent's maximum; end one first")]
    TooManyCaptures { armed: usize },
    #[error("invalid capture request: {0}")]
    InvalidRequest(&'static str),
}

/// How a stream ends its own capture (disarmed by its holder, or dropped), and charges the
/// capture work it does (redaction): functions the engine hands each stream, so that the
/// stream needs no knowledge of the engine.
const STREAM_HOOKS: EngineHooks = EngineHooks {
    retire: |id, reason| Engine::global().retire_one(id, reason),
    charge: |cost_ns| {
        let engine = Engine::global();
        engine.cpu.charge(engine.now_ns(), cost_ns);
    },
    now_ns: || Engine::global().now_ns(),
};

/// The agent's capture engine.
pub struct Engine {
    config: ArcSwap<EngineConfig>,
    /// Built-in rules plus the agent's configured additions; each capture adds its own.
    base_rules: ArcSwap<RedactionRules>,
    pub(crate) cpu: CpuBudget,
    epoch: Instant,
    next_id: AtomicU64,
    armed: Mutex<BTreeMap<u64, Arc<ArmedCapture>>>,
    agent_thread: OnceLock<Thread>,
}

impl Engine {
    /// The engine of this process.
    pub fn global() -> &'static Engine {
        static ENGINE: OnceLock<Engine> = OnceLock::new();
        ENGINE.get_or_init(|| {
            let config = EngineConfig::default();
            Engine {
                cpu: CpuBudget::new(config.cpu_budget),
                base_rules: ArcSwap::from_pointee(RedactionRules::builtin()),
                config: ArcSwap::from_pointee(config),
                epoch: Instant::now(),
                next_id: AtomicU64::new(1),
                armed: Mutex::new(BTreeMap::new()),
                agent_thread: OnceLock::new(),
            }
        })
    }

    /// Replaces the agent's configuration. Ceilings and redaction apply to captures armed from
    /// now on; the CPU budget applies at once.
    pub fn configure(&self, config: EngineConfig) -> Result<(), RedactionError> {
        let rules = RedactionRules::builtin().with_additions(&config.redaction)?;
        self.base_rules.store(Arc::new(rules));
        self.cpu.set_fraction(config.cpu_budget);
        self.config.store(Arc::new(config));
        Ok(())
    }

    pub fn config(&self) -> Arc<EngineConfig> {
        self.config.load_full()
    }

    /// Nanoseconds since the engine started; the clock of deadlines and budgets.
    ///
    /// Out of line: a hit reads it two or three times, and one copy of its code is fewer
    /// cache lines for a cold hit to fetch.
    #[inline(never)]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Arms a capture on the callsites of `target` and returns the stream its snapshots arrive
    /// on. The registry resolves a point's name to its target
    /// ([`crate::point::PointRegistry::arm`]).
    pub(crate) fn arm_target(
        &'static self,
        spec: CaptureSpec,
        target: ArmTarget,
    ) -> Result<CaptureStream, ArmError> {
        let config = self.config.load_full();
        if spec.max_snapshots == 0 {
            return Err(ArmError::InvalidRequest("max_snapshots must be at least 1"));
        }
        if spec.duration.is_zero() {
            return Err(ArmError::InvalidRequest("duration must be positive"));
        }
        SpanFieldRequest::check(&spec.span_fields).map_err(ArmError::InvalidRequest)?;
        let limits = spec.limits.resolve(config.limit_ceiling);
        // The condition's cost is estimated for values captured with these limits.
        let condition = match &spec.condition {
            Some(source) if !source.trim().is_empty() => {
                Some(Condition::compile(source, &target.field_names, &limits)?)
            }
            _ => None,
        };
        let rules = self.base_rules.load().with_additions(&spec.redaction)?;
        let span_fields = SpanFieldRequest::new(
            &spec.span_fields,
            condition
                .as_ref()
                .map_or(ContextReads::Named(Vec::new()), Condition::context_reads),
        );
        let rate = spec.rate.clamped_to(config.rate_ceiling);
        let max_snapshots = spec.max_snapshots.min(config.max_snapshots_ceiling);
        let duration = spec.duration.min(config.max_duration);
        let (sender, receiver) = mpsc::channel(config.queue_capacity.max(1));

        let shared = Arc::new(CaptureShared {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            session_id: Arc::from(spec.session_id.as_str()),
            point: target.point,
            callsites: target.callsites,
            condition_source: condition.as_ref().map(|c| c.source().to_owned()),
            max_snapshots,
            counters: Counters::default(),
            end: Default::default(),
            last_condition_error: Mutex::new(None),
            spare_records: Default::default(),
            condition_budget_strikes: Default::default(),
            delivery: Default::default(),
        });
        let duration_ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let rules = Arc::new(rules);
        let capture = Arc::new(ArmedCapture {
            shared: Arc::clone(&shared),
            condition: condition.map(Box::new),
            limits,
            rules: Arc::clone(&rules),
            rate: RateLimiter::new(rate),
            tape_sizes: Default::default(),
            deadline_ns: self.now_ns().saturating_add(duration_ns),
            sender: SnapshotSender::new(sender, Arc::clone(&shared)),
            span_fields,
        });

        let mut armed = self.lock_armed();
        if armed.len() >= config.max_captures {
            return Err(ArmError::TooManyCaptures { armed: armed.len() });
        }
        armed.insert(shared.id, capture);
        // The span fields first: a span created once the capture can be hit records what the
        // capture reads.
        select_span_fields(armed.values().map(|capture| &capture.span_fields));
        self.install(&armed, target.point, target.callsites);
        drop(armed);
        self.wake_agent_thread();
        Ok(CaptureStream::new(
            shared,
            receiver,
            (
                Arc::from(config.service.as_str()),
                Arc::from(config.instance.as_str()),
            ),
            (limits, rules),
            STREAM_HOOKS,
        ))
    }

    /// Ends one capture now. Returns false if it was not armed.
    pub fn disarm(&self, capture_id: &str, reason: EndReason) -> bool {
        let mut armed = self.lock_armed();
        let Some(id) = armed
            .values()
            .find(|c| c.shared.id_string() == capture_id)
            .map(|c| c.shared.id)
        else {
            return false;
        };
        self.retire(&mut armed, &[id], reason);
        true
    }

    /// Ends every capture of a session now (revocation). Returns how many ended.
    pub fn disarm_session(&self, session_id: &str, reason: EndReason) -> usize {
        let mut armed = self.lock_armed();
        let ids: Vec<u64> = armed
            .values()
            .filter(|c| &*c.shared.session_id == session_id)
            .map(|c| c.shared.id)
            .collect();
        self.retire(&mut armed, &ids, reason);
        ids.len()
    }

    /// Ends every capture.
    pub fn disarm_all(&self, reason: EndReason) -> usize {
        let mut armed = self.lock_armed();
        let ids: Vec<u64> = armed.keys().copied().collect();
        self.retire(&mut armed, &ids, reason);
        ids.len()
    }

    /// Status of every armed capture.
    pub fn captures(&self) -> Vec<CaptureStatus> {
        self.lock_armed()
            .values()
            .map(|c| CaptureStatus::of(&c.shared))
            .collect()
    }

    /// Retires one capture by its numeric id, if it is still armed.
    fn retire_one(&self, id: u64, reason: EndReason) {
        let mut armed = self.lock_armed();
        if armed.contains_key(&id) {
            self.retire(&mut armed, &[id], reason);
        }
    }

    /// Flags each capture with `reason` (unless it already ended) and removes it from its
    /// callsites; its sender drops with it, ending the stream once drained.
    fn retire(
        &self,
        armed: &mut MutexGuard<'_, BTreeMap<u64, Arc<ArmedCapture>>>,
        ids: &[u64],
        reason: EndReason,
    ) {
        let mut points: Vec<(&'static str, &'static [&'static Callsite])> = Vec::new();
        for id in ids {
            if let Some(capture) = armed.remove(id) {
                capture.shared.end(reason);
                if !points
                    .iter()
                    .any(|(point, _)| *point == capture.shared.point)
                {
                    points.push((capture.shared.point, capture.shared.callsites));
                }
            }
        }
        for (point, callsites) in points {
            self.install(armed, point, callsites);
        }
        select_span_fields(armed.values().map(|capture| &capture.span_fields));
    }

    /// Installs on every callsite of `point` the set of captures armed on it.
    fn install(
        &self,
        armed: &BTreeMap<u64, Arc<ArmedCapture>>,
        point: &'static str,
        callsites: &[&'static Callsite],
    ) {
        let captures: Vec<Arc<ArmedCapture>> = armed
            .values()
            .filter(|c| c.shared.point == point)
            .cloned()
            .collect();
        let set = (!captures.is_empty()).then(|| Arc::new(ArmedSet { captures }));
        for site in callsites {
            site.install(set.clone());
        }
    }

    fn lock_armed(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<ArmedCapture>>> {
        // A panic while holding the lock cannot leave the map half-updated (every update is a
        // single insert/remove followed by installs), so a poisoned lock is still usable.
        self.armed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks the agent thread to look at the captures now. Never blocks.
    pub(crate) fn wake_agent_thread(&'static self) {
        self.agent_thread
            .get_or_init(|| {
                let spawned = thread::Builder::new()
                    .name("loupe-capture".into())
                    .spawn(move || self.run_agent_thread());
                match spawned {
                    Ok(handle) => handle.thread().clone(),
                    // Without the thread, ended captures are still retired by their streams'
                    // drop and by the next arm/disarm; unpark on our own thread is harmless.
                    Err(_) => thread::current(),
                }
            })
            .unpark();
    }

    /// The agent thread: retires ended and expired captures, and those that keep finding the
    /// CPU budget spent, and keeps the hit path warm while anything is armed (`capture::warm`).
    /// Parks indefinitely while nothing is armed.
    fn run_agent_thread(&'static self) {
        let mut budget_watch: HashMap<u64, BudgetWatch> = HashMap::new();
        let mut tick = DRAIN_TICK;
        let mut warmer = warm::Warmer::new(self.now_ns());
        let mut written = Vec::new();
        loop {
            let any_armed = !self.lock_armed().is_empty();
            if any_armed {
                thread::park_timeout(tick);
                self.memory_hits_write(&mut written);
                warmer.pass(self.now_ns(), &written);
                tick = next_tick(tick, self.deliver());
            } else {
                budget_watch.clear();
                tick = DRAIN_TICK;
                thread::park();
            }
            self.sweep(&mut budget_watch);
        }
    }

    /// Puts in `ranges` (emptied first, its allocation kept from tick to tick) the memory a hit
    /// on an armed point writes that the engine can name: each capture's own state and spare
    /// records, and the CPU budget (`capture::warm`).
    fn memory_hits_write(&self, ranges: &mut Vec<std::ops::Range<usize>>) {
        ranges.clear();
        ranges.push(warm::memory_of(&self.cpu));
        for capture in self.lock_armed().values() {
            ranges.push(warm::memory_of(&**capture));
            ranges.push(warm::memory_of(&*capture.shared));
            capture.shared.spare_records.memory(ranges);
        }
    }

    /// Wakes the stream of every capture whose snapshots wait: the drain tick that stands in
    /// for a wake by the hit (see `capture::stream`). True when any did wait.
    fn deliver(&self) -> bool {
        let mut delivered = false;
        for capture in self.lock_armed().values() {
            if capture.sender.has_waiting() {
                capture.shared.delivery.notify_one();
                delivered = true;
            }
        }
        delivered
    }

    fn sweep(&self, budget_watch: &mut HashMap<u64, BudgetWatch>) {
        let now = self.now_ns();
        let mut armed = self.lock_armed();
        let mut by_reason: Vec<(u64, EndReason)> = Vec::new();
        for capture in armed.values() {
            let shared = &capture.shared;
            if let Some(reason) = shared.end_reason() {
                by_reason.push((shared.id, reason));
            } else if now >= capture.deadline_ns {
                by_reason.push((shared.id, EndReason::DeadlineReached));
            } else {
                let skips = shared.counters.skipped_cpu_budget.load(Ordering::Relaxed);
                let watch = budget_watch.entry(shared.id).or_insert(BudgetWatch {
                    second_started_ns: now,
                    skips_at_start: skips,
                    strikes: 0,
                });
                if now - watch.second_started_ns >= 1_000_000_000 {
                    if skips > watch.skips_at_start {
                        watch.strikes += 1;
                    } else {
                        watch.strikes = 0;
                    }
                    watch.second_started_ns = now;
                    watch.skips_at_start = skips;
                    if watch.strikes >= BUDGET_STRIKES {
                        by_reason.push((shared.id, EndReason::CpuBudgetExceeded));
                    }
                }
            }
        }
        for (id, reason) in by_reason {
            budget_watch.remove(&id);
            self.retire(&mut armed, &[id], reason);
        }
        budget_watch.retain(|id, _| armed.contains_key(id));
    }
}

struct BudgetWatch {
    second_started_ns: u64,
    skips_at_start: u64,
    strikes: u32,
}

/// The agent thread's next sleep while something is armed: half the last while snapshots
/// arrive (down to [`DRAIN_TICK`]), twice it while none do (up to [`IDLE_DRAIN_TICK`]).
fn next_tick(tick: Duration, delivered: bool) -> Duration {
    if delivered {
        (tick / 2).max(DRAIN_TICK)
    } else {
        (tick * 2).min(IDLE_DRAIN_TICK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_lengthens_while_nothing_waits_and_shortens_while_snapshots_arrive() {
        let mut tick = DRAIN_TICK;
        let mut idle = Vec::new();
        for _ in 0..4 {
            tick = next_tick(tick, false);
            idle.push(tick.as_millis());
        }
        assert_eq!(idle, [10, 20, 20, 20], "doubles up to the idle tick");
        tick = next_tick(tick, true);
        assert_eq!(tick, Duration::from_millis(10));
        tick = next_tick(tick, true);
        assert_eq!(tick, DRAIN_TICK);
        assert_eq!(
            next_tick(tick, true),
            DRAIN_TICK,
            "never below the drain tick"
        );
    }
}

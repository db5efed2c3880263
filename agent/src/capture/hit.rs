//! The path a thread takes through an armed point. Out of line, and written for the host:
//! it never blocks (the armed set is read lock-free, the hand-off is `try_send`), never panics
//! out (everything runs under `catch_unwind`), never recurses (a hit inside a capture is
//! skipped and counted), and stops doing work when the agent's CPU budget is spent.
//!
//! Per capture, a hit ends in exactly one counted outcome; sequence numbers count hits that
//! passed the condition and rate limit, so a gap in received sequence numbers is a drop. A
//! condition's evaluation is charged to the CPU budget whatever it answers; one that runs out
//! of its per-hit cost budget on several hits in a row ends its capture.
//!
//! **The hit path's code sits together.** A point hit a few times a second finds its code out
//! of the caches and its pages out of the TLB, and pays for every page and line it touches.
//! Left where the compiler puts them, the functions a hit runs were spread over about 50 pages
//! of the host's text. Every function a host thread runs for a hit with no condition or one
//! the direct path answers — this module's, the deferred serializer's, the direct reading, the
//! span walk's, the tape's writes — is therefore placed in one link section of its own,
//! `loupe_hit`, marked on each function by
//! `#[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]`.
//! The linker places it as one block beside `.text`: a cold hit then touches 13 pages of the
//! agent's code instead of 21, and costs 6–11 % less (README, "armed, cold").
//! Only Linux (ELF) is targeted; elsewhere the attribute is off. Code that only the agent's
//! thread runs (the replay's redaction, encoding) stays out, so the section holds the hit path
//! alone; `tests/hit_path_layout.rs` checks both. The general evaluator and the redacting
//! capture it reads stay out too: a condition that needs them costs a hit far more than the
//! pages they would save.
//!
//! Together, the section can also be kept warm: while a capture is armed, the agent's thread
//! prefetches it on every tick on the cores hits ran on (`capture::warm`, which is why a hit
//! notes its CPU), so that a hit finds the agent's code in its own core's caches.
//!
//! SAFETY of the attribute: `link_section` is unsafe because a section name can carry meaning
//! to the linker or the loader (`.init_array` runs what it holds). `loupe_hit` has none: it
//! is an ordinary executable section and holds nothing but these functions' code. Its name is
//! a C identifier on purpose, so that the linker defines `__start_loupe_hit` and
//! `__stop_loupe_hit` at its bounds for `capture::warm` to read; a linker that keeps a section
//! whose bounds are referenced keeps every hit-path function of the agent, a few KiB.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::capture::callsite::Callsite;
use crate::capture::engine::Engine;
use crate::capture::serialize::field::FieldValue;
use crate::capture::serialize::{SnapshotBuilder, UnredactedTape};
use crate::capture::stream::{CapturedSnapshot, NotQueued};
use crate::capture::warm;
use crate::capture::{ArmedCapture, CaptureShared, Counters, EndReason, bump};
use crate::condition::{Condition, ConditionContext, EvaluationError, cost};
use crate::context::{CorrelationIds, SpanValue, ThreadInfo, TraceIdentifier};
use crate::value::Tape;

thread_local! {
    static IN_CAPTURE: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as capturing; a second, nested hit (a `Serialize` impl that passes a
/// snapshot point) finds the mark and is skipped.
struct ReentryGuard;

impl ReentryGuard {
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn enter() -> Option<ReentryGuard> {
        IN_CAPTURE
            .try_with(|flag| (!flag.replace(true)).then_some(ReentryGuard))
            .ok()
            .flatten()
    }
}

impl Drop for ReentryGuard {
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn drop(&mut self) {
        let _ = IN_CAPTURE.try_with(|flag| flag.set(false));
    }
}

impl Callsite {
    /// Takes the snapshots this hit owes to the captures armed here. Called by `snapshot!`
    /// only after [`Callsite::is_armed`] said yes.
    #[cold]
    #[inline(never)]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub fn hit(&'static self, fields: &[FieldValue<'_>]) {
        // Nothing below panics by design; this is the last line that keeps a bug of ours from
        // unwinding into the host.
        let _ = catch_unwind(AssertUnwindSafe(|| hit_armed(self, fields, None)));
    }

    /// [`Callsite::hit`] for a hit that happened on another thread than the calling one — a
    /// sidecar's probe, hit by a thread of the process it reads. Snapshots name `thread`, and
    /// carry no correlation context (the calling thread's spans are not the hit's).
    #[cold]
    #[inline(never)]
    pub fn hit_on_thread(&'static self, thread: &ThreadInfo, fields: &[FieldValue<'_>]) {
        let _ = catch_unwind(AssertUnwindSafe(|| hit_armed(self, fields, Some(thread))));
    }

    /// Counts `lost` hits that this point's source saw but could not deliver (a sidecar's
    /// probe samples lost in its ring buffer) against every capture armed here, as hits and as
    /// `lost_at_source`, so the engineer's counters account for them.
    pub fn count_lost(&'static self, lost: u64) {
        if lost == 0 {
            return;
        }
        let guard = self.armed_set();
        let Some(set) = guard.as_ref() else { return };
        for capture in &set.captures {
            let counters = &capture.shared.counters;
            counters.hits.fetch_add(lost, Ordering::Relaxed);
            counters.lost_at_source.fetch_add(lost, Ordering::Relaxed);
        }
    }
}

#[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
fn hit_armed(site: &'static Callsite, fields: &[FieldValue<'_>], thread: Option<&ThreadInfo>) {
    // The clock is read first so that a snapshot's reported cost covers all of the hit's work
    // on this thread before the hand-off, including finding the armed captures.
    let engine = Engine::global();
    let start_ns = engine.now_ns();
    let guard = site.armed_set();
    let Some(set) = guard.as_ref() else { return };
    if refused_by_every_rate_limit(&set.captures, start_ns) {
        return;
    }
    let Some(_reentry) = ReentryGuard::enter() else {
        return count_skipped(&set.captures, |counters| &counters.skipped_reentrant);
    };
    if !engine.cpu.has_room(start_ns) {
        return count_skipped(&set.captures, |counters| &counters.skipped_cpu_budget);
    }
    let this_hit = ThisHit {
        engine,
        site,
        fields,
        start_ns,
    };
    let mut scene = Scene::default();
    match thread {
        Some(thread) => {
            scene.thread = Some(thread.clone());
            scene.on_behalf_of_another_thread = true;
        }
        // A hit on this thread: its core is one to keep warm.
        None => warm::note_hit_cpu(),
    }
    let mut worked = false;
    for capture in &set.captures {
        let counters = &capture.shared.counters;
        bump(&counters.hits);
        if capture.shared.is_ended() {
            bump(&counters.skipped_after_end);
            continue;
        }
        if start_ns >= capture.deadline_ns {
            bump(&counters.skipped_after_end);
            if capture.shared.end(EndReason::DeadlineReached) {
                engine.wake_agent_thread();
            }
            continue;
        }
        // The first capture's work starts with the hit; a later one's when it begins, so each
        // snapshot reports its own cost (the shared work of the hit goes to the first).
        let began_ns = if scene.captures_begun == 0 {
            start_ns
        } else {
            engine.now_ns()
        };
        scene.captures_begun += 1;
        worked |= capture_one(&this_hit, capture, &mut scene, began_ns);
    }
    // Only hits that serialized or evaluated something are charged: a hit turned away by the
    // rate limit costs a few loads, and charging it would let a busy point spend the budget
    // without capturing anything. The charge is the work up to the last snapshot's hand-off
    // plus a fixed allowance for the hand-off itself, rather than the hand-off's wall time:
    // on a busy machine this thread can be descheduled at any point, and that wall time is
    // not capture work; charged, it would disarm captures for the machine's load rather than
    // their own cost. Hits that ended before a hand-off (a false condition) are charged
    // their whole time. One hit is charged at most `CpuBudget::MAX_CHARGE_NS`.
    if worked {
        let cost = if scene.work_ns > 0 {
            scene.work_ns.saturating_add(HANDOFF_CHARGE_NS)
        } else {
            engine.now_ns().saturating_sub(start_ns)
        };
        engine.cpu.charge(start_ns, cost);
    }
}

/// Where [`hit_armed`]'s code starts, for the tests of its section.
#[cfg(test)]
pub(crate) fn hit_armed_address() -> usize {
    hit_armed as *const () as usize
}

/// The short way through a busy point: at the default rate (10 snapshots a second) nearly
/// every hit finds each capture's rate limit spent, and would be turned away after the
/// re-entry mark, the CPU budget and the hit's scene. When every capture armed here is live
/// and its limiter would refuse now (one load each, taking nothing), the hit is counted as
/// rate-limited for each and ends here; a capture with a condition is not evaluated, since
/// its snapshot could not be taken anyway. Otherwise the full path decides, and takes the
/// allowance for real.
#[inline]
#[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
fn refused_by_every_rate_limit(captures: &[Arc<ArmedCapture>], now_ns: u64) -> bool {
    let refused = |capture: &Arc<ArmedCapture>| {
        !capture.shared.is_ended() && now_ns < capture.deadline_ns && capture.rate.refuses(now_ns)
    };
    if !captures.iter().all(refused) {
        return false;
    }
    for capture in captures {
        let counters = &capture.shared.counters;
        bump(&counters.hits);
        bump(&counters.skipped_rate);
    }
    true
}

/// What a snapshot's hand-off to the agent's thread is charged: a queue push with cold caches,
/// and in a burst that fills half the queue, a wake of the stream (see `capture::stream`).
const HANDOFF_CHARGE_NS: u64 = 2_000;

/// The hit being served: where, with which values, and when it began.
#[derive(Clone, Copy)]
struct ThisHit<'h, 'v> {
    engine: &'static Engine,
    site: &'static Callsite,
    fields: &'h [FieldValue<'v>],
    start_ns: u64,
}

/// What is shared by all captures of one hit, gathered once and only if needed.
#[derive(Default)]
struct Scene {
    /// Capture work done for this hit so far, up to each snapshot's hand-off (see
    /// [`hit_armed`]'s charge).
    work_ns: u64,
    /// Captures of this hit that started their work.
    captures_begun: u32,
    thread: Option<ThreadInfo>,
    /// A hit that a point source takes for a thread of the process it reads: the calling
    /// thread's spans are not the hit's, so it has no correlation context.
    on_behalf_of_another_thread: bool,
}

impl Scene {
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn thread(&mut self) -> &ThreadInfo {
        self.thread.get_or_insert_with(ThreadInfo::current)
    }

    /// Gives `visit` each field of the hit's span context, as [`CorrelationIds::walk`] does,
    /// and returns the context's ids. Each capture walks for itself and copies what it takes
    /// into its own tape; nothing is kept between them. So a condition and its snapshot read
    /// the span's record moments apart: a value another thread records on the span in
    /// between shows in the snapshot, not in what the condition saw.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn walk_context(&self, visit: &mut dyn FnMut(&'static str, SpanValue<'_>)) -> CorrelationIds {
        if self.on_behalf_of_another_thread {
            return CorrelationIds::default();
        }
        CorrelationIds::walk(visit)
    }
}

/// Takes one capture's snapshot of this hit, if its condition, rate and count allow. Without a
/// condition the rate limit and count decide first, so a hit they turn away costs a few loads
/// and no tape (at the default rate most hits of a busy point are turned away). With one, the
/// condition comes first (out of line, on its own redacted capture of what it reads), then the
/// reservation, then the snapshot's raw capture and the hand-off. True when the hit did capture
/// work (for the CPU charge).
#[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
fn capture_one(
    this_hit: &ThisHit<'_, '_>,
    capture: &Arc<ArmedCapture>,
    scene: &mut Scene,
    began_ns: u64,
) -> bool {
    let conditional = match &capture.condition {
        None => false,
        Some(condition) => {
            if !passes_condition(this_hit, capture, condition, scene) {
                return true;
            }
            true
        }
    };
    let Some(reserved) = reserve_snapshot(capture, this_hit.start_ns) else {
        return conditional;
    };
    let snapshot = take_snapshot(this_hit, capture, scene, began_ns, reserved);
    hand_off(this_hit.engine, capture, snapshot, reserved);
    true
}

/// A tape sized like the capture's recent snapshots, out of the hit's line.
#[cold]
#[inline(never)]
fn new_tape(capture: &ArmedCapture) -> Tape {
    capture.tape_sizes.empty_tape()
}

/// One of the capture's spare records (for a snapshot to fill, or a condition's own capture
/// to use the tape of and give back), or a new one with a tape sized like the capture's recent
/// snapshots when a burst has them all in the queue.
#[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
fn spare_record(capture: &ArmedCapture, site: &'static Callsite) -> Box<CapturedSnapshot> {
    capture
        .shared
        .spare_records
        .take()
        .unwrap_or_else(|| new_record(capture, site))
}

/// One of a capture's snapshots, reserved for this hit.
#[derive(Clone, Copy)]
struct Reserved {
    /// Snapshots delivered before this one.
    sent_before: u64,
    sequence: u64,
}

/// Reserves one of the capture's snapshots if its rate limit and count allow, counting the
/// hit as skipped otherwise. The reservation is given back if the hand-off fails, so
/// `max_snapshots` counts delivered snapshots.
#[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
fn reserve_snapshot(capture: &ArmedCapture, start_ns: u64) -> Option<Reserved> {
    let shared = &capture.shared;
    let counters = &shared.counters;
    if !capture.rate.allow(start_ns) {
        bump(&counters.skipped_rate);
        return None;
    }
    let reserved = counters
        .sent
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |sent| {
            (sent < shared.max_snapshots).then_some(sent + 1)
        });
    let Ok(sent_before) = reserved else {
        bump(&counters.skipped_after_end);
        return None;
    };
    let sequence = counters.matched.fetch_add(1, Ordering::Relaxed) + 1;
    Some(Reserved {
        sent_before,
        sequence,
    })
}

/// Copies the fields and the correlation context raw (the agent's thread redacts them before
/// anything is encoded: see `capture::serialize`), and closes the snapshot with its cost: the
/// work of this capture from `began_ns` up to here.
#[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
fn take_snapshot(
    this_hit: &ThisHit<'_, '_>,
    capture: &ArmedCapture,
    scene: &mut Scene,
    began_ns: u64,
    reserved: Reserved,
) -> Box<CapturedSnapshot> {
    // The record is filled in place, field by field: built whole on the stack and moved in,
    // it cost a cold hit its size in stack lines twice.
    let mut record = spare_record(capture, this_hit.site);
    let tape = std::mem::take(&mut record.tape).into_spare();
    let mut builder =
        SnapshotBuilder::deferred(&capture.limits, &capture.rules, capture.shared.id, tape);
    let names = this_hit.site.field_names();
    for (name, field) in names.iter().zip(this_hit.fields) {
        builder.capture_root(name, *field);
    }
    // Span fields go through the capture's redaction like every other value.
    let ids = scene.walk_context(&mut |name, value| builder.capture_context_root(name, value));
    let tape = builder.into_unredacted();
    capture.tape_sizes.remember(tape.sizes());
    let counters = &capture.shared.counters;
    let ready_ns = this_hit.engine.now_ns();
    let cost_ns = ready_ns.saturating_sub(began_ns);
    counters.cost_ns.fetch_add(cost_ns, Ordering::Relaxed);
    scene.work_ns = ready_ns.saturating_sub(this_hit.start_ns);
    // Every field is named, so a field added to the record cannot be left stale from the
    // snapshot it carried before.
    let CapturedSnapshot {
        sequence,
        monotonic_nanos,
        thread,
        trace_id,
        span_id,
        callsite,
        tape: record_tape,
        counters: record_counters,
        cost_ns: record_cost_ns,
    } = &mut *record;
    let this_thread = scene.thread();
    if !this_thread.same_as(thread) {
        *thread = this_thread.clone();
    }
    *sequence = reserved.sequence;
    *monotonic_nanos = this_hit.start_ns;
    *trace_id = ids.trace_id;
    *span_id = ids.span_id;
    *callsite = this_hit.site;
    *record_tape = tape;
    *record_counters = counters.read();
    *record_cost_ns = cost_ns;
    record
}

/// A new record, out of the hit's line: a steady capture finds a spare one.
#[cold]
#[inline(never)]
fn new_record(capture: &ArmedCapture, site: &'static Callsite) -> Box<CapturedSnapshot> {
    CapturedSnapshot::blank(site, new_tape(capture))
}

/// Hands the snapshot to whoever armed the capture, without waiting; the capture ends when this
/// was its last snapshot.
#[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
fn hand_off(
    engine: &'static Engine,
    capture: &ArmedCapture,
    snapshot: Box<CapturedSnapshot>,
    reserved: Reserved,
) {
    let shared = &capture.shared;
    match capture.sender.try_send(snapshot) {
        Ok(()) => {
            if reserved.sent_before + 1 == shared.max_snapshots && shared.end(EndReason::Completed)
            {
                engine.wake_agent_thread();
            }
        }
        Err(failed) => handoff_failed(engine, shared, failed),
    }
}

/// Counts a hit that every capture armed here skips for the same reason.
#[cold]
#[inline(never)]
fn count_skipped(
    captures: &[Arc<ArmedCapture>],
    reason: impl Fn(&Counters) -> &std::sync::atomic::AtomicU64,
) {
    for capture in captures {
        bump(&capture.shared.counters.hits);
        bump(reason(&capture.shared.counters));
    }
}

/// Gives back the snapshot a failed hand-off reserved, and counts why it failed.
#[cold]
#[inline(never)]
fn handoff_failed(engine: &'static Engine, shared: &CaptureShared, failed: NotQueued) {
    let counters = &shared.counters;
    counters.sent.fetch_sub(1, Ordering::AcqRel);
    match failed {
        NotQueued::Full => bump(&counters.dropped_queue_full),
        NotQueued::Closed => {
            bump(&counters.skipped_after_end);
            if shared.end(EndReason::ReceiverDropped) {
                engine.wake_agent_thread();
            }
        }
    }
}

/// Captures what `condition` reads and evaluates it; false when the hit ends here (the
/// condition said no or failed, counted). Out of line: most captures have no condition, and a
/// cold hit should not fetch this code.
///
/// The condition reads its own capture, redacted on this thread as it is taken (a redacted
/// value reads as `null`: a condition cannot probe a secret one guess at a time), of only the
/// parts it reads (for `order.total_cents`, that one field), and discarded once evaluated: the
/// snapshot is a raw capture of its own, redacted on the agent's thread like any other.
#[inline(never)]
#[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
fn passes_condition(
    this_hit: &ThisHit<'_, '_>,
    capture: &ArmedCapture,
    condition: &Condition,
    scene: &mut Scene,
) -> bool {
    let direct = condition.evaluate_direct(
        this_hit.site.field_names(),
        this_hit.fields,
        &capture.rules,
        capture.shared.id,
    );
    if let Some(answer) = direct {
        if scene.work_ns > 0 {
            // As in `evaluate_condition`: the charge extends over this evaluation.
            scene.work_ns = this_hit.engine.now_ns().saturating_sub(this_hit.start_ns);
        }
        return count_condition_outcome(this_hit.engine, capture, Ok(answer));
    }
    let mut record = spare_record(capture, this_hit.site);
    let mut builder = SnapshotBuilder::for_condition(
        &capture.limits,
        &capture.rules,
        capture.shared.id,
        std::mem::take(&mut record.tape).into_spare(),
        Condition::capture_scan_budget(),
    );
    let outcome = evaluate_condition(this_hit, condition, &mut builder, scene);
    let (tape, _, _) = builder.into_parts();
    record.tape = UnredactedTape::spare(tape);
    capture.shared.spare_records.give_back(record);
    count_condition_outcome(this_hit.engine, capture, outcome)
}

/// Captures, redacted, what `condition` reads, and evaluates it.
#[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
fn evaluate_condition<'r>(
    this_hit: &ThisHit<'_, '_>,
    condition: &'r Condition,
    builder: &mut SnapshotBuilder<'r>,
    scene: &mut Scene,
) -> Result<bool, EvaluationError> {
    let ThisHit {
        engine,
        site,
        fields,
        start_ns,
    } = *this_hit;
    // Where each field and span field starts is kept in the (reused) tape itself, as for a
    // snapshot, so the condition's capture allocates no lists of its own.
    let names = site.field_names();
    for (name, field) in names.iter().zip(fields) {
        let root = match condition.projection(name) {
            Some(projection) => builder.capture_field_projected(name, *field, Some(projection)),
            None => {
                builder.follow_left_out_root(name, *field);
                NOT_YET
            }
        };
        builder.keep_root(root);
    }
    let ids = if condition.reads_context() {
        scene.walk_context(&mut |name, value| builder.capture_context_root(name, value))
    } else {
        CorrelationIds::default()
    };
    let outcome = if builder.scan_limit_reached() {
        Err(scan_over_budget())
    } else {
        evaluate_captured(condition, builder, names, &ids, scene)
    };
    if scene.work_ns > 0 {
        // An earlier capture of this hit handed a snapshot off; the charge counts work up
        // to the last hand-off, so extend it over this condition's evaluation.
        scene.work_ns = engine.now_ns().saturating_sub(start_ns);
    }
    outcome
}

/// A condition whose capture the scan limit cut: its answer would rest on values it could
/// not read, so the hit is a condition error, over budget, like an evaluation that runs out.
#[cold]
#[inline(never)]
fn scan_over_budget() -> EvaluationError {
    EvaluationError::OverBudget(format!(
        "the redaction scan of the values it reads passed {} bytes' worth of work (each byte \
         scanned, and each label in the text judged as a name); read fewer of them, or arm with \
         tighter limits (shorter strings, fewer elements)",
        Condition::capture_scan_budget()
    ))
}

/// Evaluates `condition` on what `builder` captured, on the budget its scan left.
#[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
fn evaluate_captured(
    condition: &Condition,
    builder: &SnapshotBuilder<'_>,
    names: &[&str],
    ids: &CorrelationIds,
    scene: &mut Scene,
) -> Result<bool, EvaluationError> {
    let tape = builder.tape();
    let field = |name: &str| {
        let index = names.iter().position(|field| *field == name)?;
        let root = *tape.roots.get(index)?;
        if root == NOT_YET {
            return None;
        }
        tape.get(root)
    };
    let context = condition.reads_context().then(|| {
        let thread = scene.thread();
        ConditionContext {
            tape,
            span_fields: &tape.context_roots,
            trace_id: ids.trace_id.as_ref().map(TraceIdentifier::as_str),
            span_id: ids.span_id.as_ref().map(TraceIdentifier::as_str),
            thread: &thread.name,
            thread_id: thread.id,
        }
    });
    let capture_units = cost::scanned(builder.scanned_bytes());
    condition.evaluate_after_capture(&field, context.as_ref(), capture_units)
}

/// Counts a condition's answer; true when the hit goes on to a snapshot.
#[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
fn count_condition_outcome(
    engine: &'static Engine,
    capture: &ArmedCapture,
    outcome: Result<bool, EvaluationError>,
) -> bool {
    let shared = &capture.shared;
    let counters = &shared.counters;
    match outcome {
        Ok(true) => {
            shared.condition_within_budget();
            true
        }
        Ok(false) => {
            shared.condition_within_budget();
            bump(&counters.condition_false);
            false
        }
        Err(error) => {
            bump(&counters.condition_errors);
            if let Ok(mut last) = shared.last_condition_error.try_lock() {
                *last = Some(error.to_string());
            }
            if matches!(error, EvaluationError::OverBudget(_)) {
                if shared.condition_over_budget() && shared.end(EndReason::ConditionOverBudget) {
                    engine.wake_agent_thread();
                }
            } else {
                shared.condition_within_budget();
            }
            false
        }
    }
}

/// A field not captured yet.
const NOT_YET: u32 = u32::MAX;

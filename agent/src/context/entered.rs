//! Which span this thread is in, as the correlation layer saw spans entered and exited, so a
//! hit finds its current span with one thread-local read instead of asking the dispatcher.
//!
//! Asking `tracing` costs a cold hit its most expensive few microseconds: the default
//! dispatcher, two downcasts through the subscriber's layers, the registry's per-thread stack
//! and a slab lookup per span, about a hundred cache lines that nothing else on a hit touches.
//! The layer already sees every enter and exit while anything is armed, so it keeps its own
//! copy of this thread's stack here.
//!
//! **When the copy may be used.** The layer records nothing while nothing is armed (the idle
//! promise), so it misses enters and exits then, and a thread that entered a span before the
//! first capture was armed has it on the registry's stack and not on this one. So the copy is
//! *known* only once it has been seen to match: when an exit empties it, the layer asks the
//! registry whether this thread is in any span, and if not the two are equal from then on. It
//! stays known while the layer records without a break (one armed epoch, see
//! `capture::callsite::armed_epoch`), and while this thread is no deeper than
//! [`MAX_ENTERED`]. Until then a hit asks the dispatcher, as it always did; a thread that stays
//! inside a span entered before arming always does.
//!
//! Duplicates are kept as the registry keeps them: a span entered again while already entered
//! is marked, and the current span is the innermost unmarked one.

use std::cell::RefCell;

use super::Recording;

/// Spans deep a thread's copy follows; deeper, it is unknown until it empties again.
pub(super) const MAX_ENTERED: usize = 32;

/// A span as one layer names it: ids are unique only within one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SpanKey {
    pub owner: u32,
    pub id: u64,
}

/// This thread's current span, as far as the copy knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Current {
    /// The copy is not known to match the registry's stack: ask the dispatcher.
    Unknown,
    /// The thread is in no span.
    None,
    Span(SpanKey),
}

#[derive(Debug, Clone, Copy)]
struct Entered {
    key: SpanKey,
    /// Already entered lower on the stack (the registry does not count it as current).
    duplicate: bool,
}

/// One thread's copy of its span stack.
struct EnteredSpans {
    /// What the layer that keeps this copy records by, and the epoch it was recording in;
    /// `None` before its first event.
    recording: Option<(Recording, u64)>,
    /// Whether the copy is known to be the registry's stack (see the module docs).
    known: bool,
    len: usize,
    spans: [Entered; MAX_ENTERED],
}

impl EnteredSpans {
    const EMPTY: EnteredSpans = EnteredSpans {
        recording: None,
        known: false,
        len: 0,
        spans: [Entered {
            key: SpanKey { owner: 0, id: 0 },
            duplicate: false,
        }; MAX_ENTERED],
    };

    /// Starts over, unknown, when events may have been missed since the last one: the layer
    /// stopped recording in between (a new epoch), or another kind of layer kept the copy.
    fn follow(&mut self, recording: Recording, epoch: u64) {
        if self.recording != Some((recording, epoch)) {
            self.recording = Some((recording, epoch));
            self.known = false;
            self.len = 0;
        }
    }

    fn entered(&self) -> &[Entered] {
        &self.spans[..self.len]
    }

    fn enter(&mut self, key: SpanKey) {
        let duplicate = self.entered().iter().any(|span| span.key == key);
        match self.spans.get_mut(self.len) {
            Some(place) => {
                *place = Entered { key, duplicate };
                self.len += 1;
            }
            // Deeper than the copy follows: the exits to come may not match what it holds.
            None => self.known = false,
        }
    }

    /// Removes the innermost entry of `key`, as the registry does. True when the copy is now
    /// empty but not known: the moment to ask the registry.
    fn exit(&mut self, key: SpanKey) -> bool {
        if let Some(at) = self.entered().iter().rposition(|span| span.key == key) {
            self.spans.copy_within(at + 1..self.len, at);
            self.len -= 1;
        }
        self.len == 0 && !self.known
    }

    fn current(&self) -> Current {
        let Some((recording, epoch)) = self.recording else {
            return Current::Unknown;
        };
        if !self.known || recording.epoch() != Some(epoch) {
            return Current::Unknown;
        }
        match self.entered().iter().rev().find(|span| !span.duplicate) {
            Some(span) => Current::Span(span.key),
            None => Current::None,
        }
    }
}

thread_local! {
    static ENTERED: RefCell<EnteredSpans> = const { RefCell::new(EnteredSpans::EMPTY) };
}

/// Runs `f` on this thread's copy; nothing when it is busy or being torn down.
fn with_copy<R>(f: impl FnOnce(&mut EnteredSpans) -> R) -> Option<R> {
    ENTERED
        .try_with(|copy| copy.try_borrow_mut().ok().map(|mut copy| f(&mut copy)))
        .ok()
        .flatten()
}

/// The layer saw this thread enter `key` while recording in `epoch`.
pub(super) fn enter(key: SpanKey, recording: Recording, epoch: u64) {
    with_copy(|copy| {
        copy.follow(recording, epoch);
        copy.enter(key);
    });
}

/// The layer saw this thread exit `key`. True when the layer should ask the registry whether
/// the thread is in any span now, and call [`registry_is_empty`] if not.
pub(super) fn exit(key: SpanKey, recording: Recording, epoch: u64) -> bool {
    with_copy(|copy| {
        copy.follow(recording, epoch);
        copy.exit(key)
    })
    .unwrap_or(false)
}

/// The registry says this thread is in no span, just after [`exit`] emptied the copy: from
/// here on the copy is the registry's stack.
pub(super) fn registry_is_empty(recording: Recording, epoch: u64) {
    with_copy(|copy| {
        if copy.recording == Some((recording, epoch)) && copy.len == 0 {
            copy.known = true;
        }
    });
}

/// This thread's current span, if the copy is known.
pub(super) fn current() -> Current {
    ENTERED
        .try_with(|copy| {
            copy.try_borrow()
                .map_or(Current::Unknown, |copy| copy.current())
        })
        .unwrap_or(Current::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u64) -> SpanKey {
        SpanKey { owner: 1, id }
    }

    fn known_copy() -> EnteredSpans {
        let mut copy = EnteredSpans::EMPTY;
        copy.follow(Recording::Always, 0);
        copy.known = true;
        copy
    }

    #[test]
    fn a_copy_is_unknown_until_an_exit_empties_it_and_the_registry_agrees() {
        let mut copy = EnteredSpans::EMPTY;
        assert_eq!(copy.current(), Current::Unknown);
        copy.follow(Recording::Always, 0);
        copy.enter(key(1));
        assert_eq!(copy.current(), Current::Unknown, "a span may be below it");
        assert!(copy.exit(key(1)), "empty and unknown: ask the registry");
        copy.known = true;
        copy.enter(key(2));
        assert_eq!(copy.current(), Current::Span(key(2)));
        assert!(!copy.exit(key(2)), "known: nothing to ask");
        assert_eq!(copy.current(), Current::None);
    }

    #[test]
    fn a_span_entered_again_is_not_the_current_one() {
        let mut copy = known_copy();
        copy.enter(key(1));
        copy.enter(key(2));
        copy.enter(key(1));
        assert_eq!(
            copy.current(),
            Current::Span(key(2)),
            "as the registry answers"
        );
        copy.exit(key(1));
        assert_eq!(copy.current(), Current::Span(key(2)));
        copy.exit(key(2));
        assert_eq!(copy.current(), Current::Span(key(1)));
    }

    #[test]
    fn exits_out_of_order_remove_the_innermost_entry_of_that_span() {
        let mut copy = known_copy();
        copy.enter(key(1));
        copy.enter(key(2));
        copy.exit(key(1));
        assert_eq!(copy.current(), Current::Span(key(2)));
        copy.exit(key(9));
        assert_eq!(
            copy.current(),
            Current::Span(key(2)),
            "an unknown exit changes nothing"
        );
    }

    #[test]
    fn a_stack_deeper_than_followed_is_unknown_until_it_empties() {
        let mut copy = known_copy();
        for id in 0..=MAX_ENTERED as u64 {
            copy.enter(key(id + 1));
        }
        assert_eq!(copy.current(), Current::Unknown);
        for id in (0..=MAX_ENTERED as u64).rev() {
            copy.exit(key(id + 1));
        }
        assert_eq!(copy.len, 0);
        assert_eq!(
            copy.current(),
            Current::Unknown,
            "until the registry is asked"
        );
    }

    #[test]
    fn a_new_epoch_forgets_the_copy() {
        let mut copy = known_copy();
        copy.enter(key(1));
        copy.follow(Recording::Always, 1);
        assert_eq!(copy.len, 0);
        assert_eq!(copy.current(), Current::Unknown);
    }

    #[test]
    fn a_copy_kept_while_armed_is_unknown_once_nothing_is() {
        let mut copy = EnteredSpans::EMPTY;
        copy.follow(Recording::WhileArmed, u64::MAX);
        copy.known = true;
        // Armed epochs are 32-bit: this one is never the current one.
        assert_eq!(copy.current(), Current::Unknown);
    }
}

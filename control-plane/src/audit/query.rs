//! Reading the log: which events (a [`Filter`]), and how far (a [`Cursor`] into a [`Page`]).
//!
//! Pages are keyed by sequence number, not by offset: the next page starts after the last
//! sequence returned, so paging through millions of events never rereads what was already
//! read, and events appended meanwhile never shift a page.

use loupe_audit::event::{Action, AuditEvent, Outcome};

/// Which events to return; every field set must match (`None` matches anything).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Sequenced at or after this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// Sequenced strictly before this time.
    pub until_ms: Option<u64>,
    /// Actor identity, exact.
    pub actor: Option<String>,
    pub session: Option<String>,
    pub service: Option<String>,
    pub point: Option<String>,
    pub action: Option<Action>,
    pub outcome: Option<Outcome>,
}

/// Where the next page starts: after this sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor(pub u64);

/// One page of results, in sequence order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub events: Vec<AuditEvent>,
    /// `Some` when the page was full: pass it to get the next one.
    pub next: Option<Cursor>,
}

/// The sequence numbers a filter's time range allows: after `after`, before `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqRange {
    pub after: Option<u64>,
    pub end: Option<u64>,
}

/// `filter`'s time range (and the cursor `after`) as a range of sequence numbers, in a log of
/// `count` events whose event `seq` was sequenced at `time_at(seq)`; `None` when no event can
/// match. Times never decrease along the log (the writer sequences them so, and the start-up
/// check enforces it), so each bound is a binary search over the sequence — a few primary-key
/// lookups, and time needs no index of its own (appends maintain one index fewer). `E` is
/// the caller's storage error (this module stays below the stores that use it).
pub fn seq_range<E>(
    filter: &Filter,
    after: Option<u64>,
    count: u64,
    time_at: &mut dyn FnMut(u64) -> Result<u64, E>,
) -> Result<Option<SeqRange>, E> {
    let mut after = after;
    if let Some(since) = filter.since_ms {
        match first_at_or_after(since, count, time_at)? {
            Some(0) => {}
            Some(first) => after = Some(after.map_or(first - 1, |a| a.max(first - 1))),
            None => return Ok(None),
        }
    }
    let end = match filter.until_ms {
        Some(until) => Some(first_at_or_after(until, count, time_at)?.unwrap_or(u64::MAX >> 1)),
        None => None,
    };
    Ok(Some(SeqRange { after, end }))
}

/// The first sequence number sequenced at or after `time_ms`, if any.
fn first_at_or_after<E>(
    time_ms: u64,
    count: u64,
    time_at: &mut dyn FnMut(u64) -> Result<u64, E>,
) -> Result<Option<u64>, E> {
    let (mut lo, mut hi) = (0u64, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if time_at(mid)? < time_ms {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok((lo < count).then_some(lo))
}

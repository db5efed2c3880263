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

//! The bound on every client string and list that reaches the audit log or the session state,
//! stated once. Handlers and the registry check against these; the README's "Limits" table is
//! this file in prose.
//!
//! Decisions, per field:
//! - **Refused** (INVALID_ARGUMENT naming the field, its length and the bound) — everything a
//!   client can simply send again shorter: reasons, comments, tickets, session ids, point
//!   patterns, audit filters, page tokens, capture options, and every string of a
//!   registration. A refusal at the entry of a call is itself recorded, but only as the field's
//!   name, length and SHA-256 (see [`Violation`]), never the oversize text: a refused caller
//!   adds a few hundred bytes to the log, whatever it sent.
//! - **Replaced**: a request id over its bound is replaced by a generated one (it only
//!   correlates; losing the caller's is harmless, refusing the call for it is not).
//! - **Cut with a marker**: only the capture condition, which a refused `Capture` records cut
//!   to its bound (the broker's rule), so the record still shows what was tried.
//!
//! Counts are bounded the same way: points named in a session request (after removing
//! repeats), the points a session may cover, points per registered instance, fields and source
//! locations per point, instances of one agent identity, redaction additions of a capture.
//! Lists are paged (see [`page_size`]) so that no answer can pass the response cap.

use crate::policy::names::{MAX_POINT_NAME_LEN, MAX_SERVICE_NAME_LEN, MAX_USER_ID_LEN};
use crate::policy::request::{MAX_REASON_LEN, MAX_TICKET_LEN};

/// The most bytes a client string may have in one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// The field's name as the request spells it.
    pub field: &'static str,
    pub max_bytes: usize,
}

/// The most entries a client list may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountBound {
    pub field: &'static str,
    pub max: usize,
}

// ---- Sessions -------------------------------------------------------------------------------

/// Why a session is opened, closed, denied or revoked.
pub const REASON: Bound = Bound {
    field: "reason",
    max_bytes: MAX_REASON_LEN,
};
/// An approver's note.
pub const COMMENT: Bound = Bound {
    field: "comment",
    max_bytes: MAX_REASON_LEN,
};
pub const TICKET: Bound = Bound {
    field: "ticket",
    max_bytes: MAX_TICKET_LEN,
};
/// Session ids are `ses-` and 20 hex digits; the bound leaves room for other id schemes.
pub const SESSION_ID: Bound = Bound {
    field: "session_id",
    max_bytes: 64,
};
pub const SERVICE: Bound = Bound {
    field: "service",
    max_bytes: MAX_SERVICE_NAME_LEN,
};
/// A point name, or a namespace pattern (`payments.*`).
pub const POINT_PATTERN: Bound = Bound {
    field: "points[]",
    max_bytes: MAX_POINT_NAME_LEN + 2,
};
/// Distinct names and patterns in one `OpenSession` (repeats count once).
pub const SESSION_PATTERNS: CountBound = CountBound {
    field: "points",
    max: 256,
};
/// Exact points one session may cover once its patterns are expanded.
pub const SESSION_POINTS: CountBound = CountBound {
    field: "points (expanded)",
    max: 256,
};
/// States named in a `ListSessions` filter (there are six).
pub const SESSION_STATES: CountBound = CountBound {
    field: "states",
    max: 16,
};
/// A caller's correlation id; longer ones are replaced by a generated id.
pub const REQUEST_ID_BYTES: usize = 128;

// ---- Captures -------------------------------------------------------------------------------

pub const POINT: Bound = Bound {
    field: "point",
    max_bytes: MAX_POINT_NAME_LEN,
};
pub const CAPTURE_INSTANCES: CountBound = CountBound {
    field: "instances",
    max: 256,
};
pub const REDACT_KEYWORDS: CountBound = CountBound {
    field: "redact_keywords",
    max: 64,
};
pub const REDACT_KEYWORD: Bound = Bound {
    field: "redact_keywords[]",
    max_bytes: 128,
};
pub const REDACT_PATTERNS: CountBound = CountBound {
    field: "redact_patterns",
    max: 32,
};
pub const REDACT_PATTERN: Bound = Bound {
    field: "redact_patterns[]",
    max_bytes: 512,
};

// ---- Registrations --------------------------------------------------------------------------

pub const INSTANCE: Bound = Bound {
    field: "instance",
    max_bytes: 128,
};
/// `host:port`; the longest IPv6 form with a scope and a port fits easily.
pub const ADDRESS: Bound = Bound {
    field: "address",
    max_bytes: 64,
};
pub const VERSION: Bound = Bound {
    field: "version",
    max_bytes: 64,
};
pub const POINTS_PER_INSTANCE: CountBound = CountBound {
    field: "points",
    max: 1024,
};
pub const FIELDS_PER_POINT: CountBound = CountBound {
    field: "points[].fields",
    max: 64,
};
pub const LOCATIONS_PER_POINT: CountBound = CountBound {
    field: "points[].locations",
    max: 16,
};
pub const FIELD_NAME: Bound = Bound {
    field: "points[].fields[].name",
    max_bytes: 128,
};
/// In-process: `serde`, `debug` or `display`; sidecar: a DWARF type name.
pub const FIELD_TYPE: Bound = Bound {
    field: "points[].fields[].type",
    max_bytes: 256,
};
pub const SOURCE_FILE: Bound = Bound {
    field: "points[].locations[].file",
    max_bytes: 512,
};
pub const MODULE_PATH: Bound = Bound {
    field: "points[].locations[].module_path",
    max_bytes: 256,
};
/// Point names a registration's audit record lists; past that it keeps their count and digest.
pub const POINTS_NAMED_IN_RECORD: usize = 64;
/// Live instances one agent identity may hold at once, unless configured otherwise
/// (`[limits] instances_per_agent_identity`), counted over every replica on a shared database.
pub const DEFAULT_INSTANCES_PER_IDENTITY: usize = 256;

// ---- Reviewers ------------------------------------------------------------------------------

pub const FILTER_ACTOR: Bound = Bound {
    field: "actor",
    max_bytes: MAX_USER_ID_LEN,
};
pub const FILTER_SESSION: Bound = Bound {
    field: "session",
    max_bytes: 64,
};
pub const FILTER_SERVICE: Bound = Bound {
    field: "service",
    max_bytes: MAX_SERVICE_NAME_LEN,
};
pub const FILTER_POINT: Bound = Bound {
    field: "point",
    max_bytes: MAX_POINT_NAME_LEN,
};
pub const FILTER_ACTION: Bound = Bound {
    field: "action",
    max_bytes: 64,
};
pub const FILTER_OUTCOME: Bound = Bound {
    field: "outcome",
    max_bytes: 16,
};

// ---- Lists ----------------------------------------------------------------------------------

pub const PAGE_TOKEN: Bound = Bound {
    field: "page_token",
    max_bytes: 1024,
};
/// Entries per page when the request says 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Most entries per page, whatever the request says.
pub const MAX_PAGE_SIZE: usize = 500;
/// A page stops before its encoding passes this, a quarter of the response cap: the largest
/// entry the bounds above allow is far smaller, so every page holds at least one.
pub const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// The page size a list call uses for `requested`.
pub fn page_size(requested: u32) -> usize {
    match usize::try_from(requested) {
        Ok(0) | Err(_) => DEFAULT_PAGE_SIZE,
        Ok(n) => n.min(MAX_PAGE_SIZE),
    }
}

/// A field over its bound: what a refusal says and records — the length and a digest of what
/// was sent, never the text itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {verb} {actual} {unit}; at most {max} are accepted", verb = if self.sha256.is_empty() { "has" } else { "is" })]
pub struct Violation {
    /// The field, with its position when it is inside a list (`points[3].fields[1].name`).
    pub field: String,
    pub actual: usize,
    pub max: usize,
    /// `bytes` or `entries`.
    pub unit: &'static str,
    /// Hex SHA-256 of the oversize text (empty for a list).
    pub sha256: String,
}

impl Bound {
    /// `value` if within the bound.
    pub fn check(&self, value: &str) -> Result<(), Violation> {
        self.check_at(self.field.to_owned(), value)
    }

    /// Same, naming the field `field` (a position inside a list).
    pub fn check_at(&self, field: String, value: &str) -> Result<(), Violation> {
        if value.len() <= self.max_bytes {
            return Ok(());
        }
        Err(Violation {
            field,
            actual: value.len(),
            max: self.max_bytes,
            unit: "bytes",
            sha256: sha256_hex(value.as_bytes()),
        })
    }
}

impl CountBound {
    /// `len` if within the bound.
    pub fn check(&self, len: usize) -> Result<(), Violation> {
        self.check_at(self.field.to_owned(), len)
    }

    /// Same, naming the field `field`.
    pub fn check_at(&self, field: String, len: usize) -> Result<(), Violation> {
        if len <= self.max {
            return Ok(());
        }
        Err(Violation {
            field,
            actual: len,
            max: self.max,
            unit: "entries",
            sha256: String::new(),
        })
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_violation_names_the_field_its_length_and_the_bound_but_not_the_text() {
        let long = "x".repeat(REASON.max_bytes + 1);
        let violation = REASON.check(&long).expect_err("over");
        let message = violation.to_string();
        assert_eq!(message, "`reason` is 1025 bytes; at most 1024 are accepted");
        assert_eq!(violation.sha256.len(), 64);
        assert!(!message.contains("xxxx"));
        assert!(REASON.check(&long[1..]).is_ok());
        let count = SESSION_PATTERNS.check(257).expect_err("over");
        assert_eq!(
            count.to_string(),
            "`points` has 257 entries; at most 256 are accepted"
        );
    }

    #[test]
    fn page_sizes_default_and_clamp() {
        assert_eq!(page_size(0), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(7), 7);
        assert_eq!(page_size(u32::MAX), MAX_PAGE_SIZE);
    }
}

//! `Uncaptured`: a value a point source other than `snapshot!` knows it could not capture, such
//! as a sidecar's read of memory that is not mapped, or a shape (a union, a bitfield) it will
//! not guess at.
//!
//! It reaches the capture the way every value does, through `serde::Serialize`, so that limits,
//! redaction and conditions apply to the values around it unchanged. The capture serializer
//! recognises the marker and writes `not_captured{reason, detail}`; any other serializer sees a
//! unit variant whose name is the detail. The detail is `'static`: a point source states why in
//! words it chose, never in bytes it read.

use crate::value::NotCapturedReason;

/// The enum name that marks an [`Uncaptured`] to the capture serializer.
pub(crate) const UNCAPTURED_MARKER: &str = "loupe_agent::Uncaptured";

/// Why a value was not captured, as far as a point source can say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UncapturedReason {
    /// The memory behind it could not be read (unmapped, partial, the process gone).
    Unreadable,
    /// It has a shape the source does not decode (a union, a bitfield, an unknown encoding).
    Unsupported,
    /// Reading it would pass what the source allows itself for one snapshot.
    Size,
}

impl UncapturedReason {
    fn index(self) -> u32 {
        match self {
            UncapturedReason::Unreadable => 0,
            UncapturedReason::Unsupported => 1,
            UncapturedReason::Size => 2,
        }
    }

    pub(crate) fn from_index(index: u32) -> NotCapturedReason {
        match index {
            0 => NotCapturedReason::Unreadable,
            2 => NotCapturedReason::Size,
            _ => NotCapturedReason::Unsupported,
        }
    }
}

/// A value that becomes `not_captured{reason}` with `detail` in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uncaptured {
    pub reason: UncapturedReason,
    pub detail: &'static str,
}

impl Uncaptured {
    pub const fn new(reason: UncapturedReason, detail: &'static str) -> Uncaptured {
        Uncaptured { reason, detail }
    }
}

impl serde::Serialize for Uncaptured {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit_variant(UNCAPTURED_MARKER, self.reason.index(), self.detail)
    }
}

//! Capture limits: how much of a value a snapshot may hold, with the defaults of the design and
//! the rule that a request can only tighten what the agent allows.

/// How much of each value a snapshot holds. Every cut is marked in the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureLimits {
    /// Container nesting below a field: a struct, list or map nested this deep is replaced by
    /// `not_captured{depth}`. Scalars are captured at any depth reached.
    pub max_depth: u32,
    /// Elements of a list or entries of a map.
    pub max_collection_len: u32,
    /// Fields of one struct or enum variant.
    pub max_struct_fields: u32,
    /// Bytes of one string or byte string, cut on a UTF-8 boundary.
    pub max_string_bytes: u32,
    /// Approximate encoded bytes of one snapshot; values past it become `not_captured{size}`.
    pub max_snapshot_bytes: u32,
}

/// Bytes of a string or formatted value scanned beyond the string limit, so that a secret that
/// starts inside the kept text is seen whole by the pattern scan before the text is cut.
pub const TEXT_SCAN_MARGIN: usize = 4096;

impl CaptureLimits {
    /// Bytes of one string or formatted value a capture holds and scans: the string limit and
    /// the [`TEXT_SCAN_MARGIN`] after it. A text handed to a capture longer than this is
    /// marked truncated, its length a lower bound; a point source that cuts text itself must
    /// hand over more than this for the cut to show.
    pub const fn text_window(&self) -> usize {
        (self.max_string_bytes as usize).saturating_add(TEXT_SCAN_MARGIN)
    }

    /// The design's defaults: depth 3, 100 elements, 20 fields, 255-byte strings, 64 KiB.
    pub const DEFAULT: CaptureLimits = CaptureLimits {
        max_depth: 3,
        max_collection_len: 100,
        max_struct_fields: 20,
        max_string_bytes: 255,
        max_snapshot_bytes: 64 * 1024,
    };

    /// The largest values an agent accepts unless configured otherwise.
    pub const DEFAULT_CEILING: CaptureLimits = CaptureLimits {
        max_depth: 8,
        max_collection_len: 1_000,
        max_struct_fields: 100,
        max_string_bytes: 4 * 1024,
        max_snapshot_bytes: 1024 * 1024,
    };

    /// Each limit is the smaller of `self` and `ceiling`.
    pub fn clamped_to(self, ceiling: CaptureLimits) -> CaptureLimits {
        CaptureLimits {
            max_depth: self.max_depth.min(ceiling.max_depth),
            max_collection_len: self.max_collection_len.min(ceiling.max_collection_len),
            max_struct_fields: self.max_struct_fields.min(ceiling.max_struct_fields),
            max_string_bytes: self.max_string_bytes.min(ceiling.max_string_bytes),
            max_snapshot_bytes: self.max_snapshot_bytes.min(ceiling.max_snapshot_bytes),
        }
    }
}

impl Default for CaptureLimits {
    fn default() -> Self {
        CaptureLimits::DEFAULT
    }
}

/// Limits a capture request asks for; unset ones take the default. The effective limits are
/// always clamped to the agent's ceiling, so a request can tighten but never loosen them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitRequest {
    pub max_depth: Option<u32>,
    pub max_collection_len: Option<u32>,
    pub max_struct_fields: Option<u32>,
    pub max_string_bytes: Option<u32>,
    pub max_snapshot_bytes: Option<u32>,
}

impl LimitRequest {
    pub fn resolve(&self, ceiling: CaptureLimits) -> CaptureLimits {
        let d = CaptureLimits::DEFAULT;
        CaptureLimits {
            max_depth: self.max_depth.unwrap_or(d.max_depth),
            max_collection_len: self.max_collection_len.unwrap_or(d.max_collection_len),
            max_struct_fields: self.max_struct_fields.unwrap_or(d.max_struct_fields),
            max_string_bytes: self.max_string_bytes.unwrap_or(d.max_string_bytes),
            max_snapshot_bytes: self.max_snapshot_bytes.unwrap_or(d.max_snapshot_bytes),
        }
        .clamped_to(ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_can_tighten_but_not_loosen() {
        let ceiling = CaptureLimits {
            max_depth: 4,
            ..CaptureLimits::DEFAULT_CEILING
        };
        let loosen = LimitRequest {
            max_depth: Some(50),
            max_string_bytes: Some(u32::MAX),
            ..LimitRequest::default()
        };
        let effective = loosen.resolve(ceiling);
        assert_eq!(effective.max_depth, 4);
        assert_eq!(effective.max_string_bytes, ceiling.max_string_bytes);
        let tighten = LimitRequest {
            max_depth: Some(1),
            max_collection_len: Some(2),
            ..LimitRequest::default()
        };
        let effective = tighten.resolve(ceiling);
        assert_eq!(effective.max_depth, 1);
        assert_eq!(effective.max_collection_len, 2);
        assert_eq!(effective.max_struct_fields, 20);
    }

    #[test]
    fn defaults_never_exceed_a_small_ceiling() {
        let ceiling = CaptureLimits {
            max_depth: 1,
            max_collection_len: 5,
            max_struct_fields: 5,
            max_string_bytes: 16,
            max_snapshot_bytes: 1024,
        };
        assert_eq!(LimitRequest::default().resolve(ceiling), ceiling);
    }
}

//! Dry runs of a condition: captures example values as a hit would (with the limits the
//! condition was compiled for and the built-in redaction) and evaluates the condition on them,
//! to check a condition, its cost, or a fuzzer's output without arming anything.

use crate::capture::serialize::SnapshotBuilder;
use crate::capture::serialize::field::FieldValue;
use crate::condition::{Condition, Evaluated};
use crate::redaction::RedactionRules;
use crate::value::Tape;

/// Field values captured for a dry run of a condition.
pub struct CapturedValues {
    tape: Tape,
    roots: Vec<(&'static str, u32)>,
}

impl CapturedValues {
    /// Captures `fields` as a hit of a capture with `condition` would.
    pub fn capture(condition: &Condition, fields: &[(&'static str, FieldValue<'_>)]) -> Self {
        let rules = RedactionRules::builtin();
        let mut builder =
            SnapshotBuilder::new(condition.limits(), &rules, u64::MAX, Tape::default());
        let roots = fields
            .iter()
            .map(|(name, value)| (*name, builder.capture_field(name, *value)))
            .collect();
        CapturedValues {
            tape: builder.into_parts().0,
            roots,
        }
    }

    /// Evaluates `condition` on these values, without a correlation context.
    pub fn evaluate(&self, condition: &Condition) -> Evaluated {
        let field = |name: &str| {
            let (_, root) = self.roots.iter().find(|(field, _)| *field == name)?;
            self.tape.get(*root)
        };
        condition.evaluate_metered(&field, None)
    }
}

/// [`CapturedValues::capture`], then [`CapturedValues::evaluate`].
pub fn evaluate_values(
    condition: &Condition,
    fields: &[(&'static str, FieldValue<'_>)],
) -> Evaluated {
    CapturedValues::capture(condition, fields).evaluate(condition)
}

//! Dry runs of a condition: captures example values as a hit would (with the limits the
//! condition was compiled for and the built-in redaction) and evaluates the condition on them,
//! to check a condition, its cost, or a fuzzer's output without arming anything.

use crate::capture::serialize::SnapshotBuilder;
use crate::capture::serialize::field::FieldValue;
use crate::condition::{Condition, Evaluated, Projection};
use crate::redaction::RedactionRules;
use crate::value::Tape;

/// Field values captured for a dry run of a condition.
pub struct CapturedValues {
    tape: Tape,
    roots: Vec<(&'static str, u32)>,
}

impl CapturedValues {
    /// Captures `fields` as a hit of a capture with `condition` would: only the parts of each
    /// that the condition reads, and nothing of the fields it does not read.
    pub fn capture(condition: &Condition, fields: &[(&'static str, FieldValue<'_>)]) -> Self {
        Self::capture_with(condition, fields, |name| {
            condition
                .reads_field(name)
                .then(|| condition.projection(name))
        })
    }

    /// Captures `fields` whole, as a snapshot would, for comparing what a condition answers on
    /// them with what it answers on [`CapturedValues::capture`]'s narrower capture.
    #[doc(hidden)]
    pub fn capture_whole(condition: &Condition, fields: &[(&'static str, FieldValue<'_>)]) -> Self {
        Self::capture_with(condition, fields, |_| Some(None))
    }

    /// `projection(name)` says what to capture of a field: `None` to leave it out, `Some(None)`
    /// for all of it.
    fn capture_with<'c>(
        condition: &'c Condition,
        fields: &[(&'static str, FieldValue<'_>)],
        projection: impl Fn(&str) -> Option<Option<&'c Projection>>,
    ) -> Self {
        let rules = RedactionRules::builtin();
        let mut builder =
            SnapshotBuilder::new(condition.limits(), &rules, u64::MAX, Tape::default());
        let mut roots = Vec::with_capacity(fields.len());
        for (name, value) in fields {
            match projection(name) {
                Some(projection) => {
                    roots.push((
                        *name,
                        builder.capture_field_projected(name, *value, projection),
                    ));
                }
                None => builder.follow_left_out_root(name, *value),
            }
        }
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

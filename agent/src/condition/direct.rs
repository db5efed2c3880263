//! The condition's shortest path: for a [`FastCondition`] over
//! point fields only, each compared path is read straight out of the value's `Serialize` as
//! one scalar — no tape, no builder, no allocation — and the answer computed from those.
//!
//! Why: a hit on an armed point with a condition otherwise captures what the condition reads
//! into a redacting builder, then walks that tape; for `order.total_cents == 0u` that was
//! some 2,000 instructions a hit, 4 % of the demo's whole request, most of it the builder's
//! set-up, the path and plan bookkeeping and the allocations, for one integer.
//!
//! It answers only when the result is certainly the general path's (capture what the condition
//! reads, redacted and within the capture's limits, then evaluate): every compared path reads a
//! bool or a number of the literal's CEL type, through structs (and `Option`s and newtypes)
//! only, within the capture's depth, field and size limits, through field names that no rule
//! withholds or masks, and no number that reads as a card number. Anything else — a string, a
//! missing field, an enum, a map, a `Secret`, a `Serialize` that fails or panics — and it
//! declines whole, and the hit takes the general path, which decides with its own errors.
//! Since every compared value is then exactly the one the general path would capture, the
//! answer is the native path's on that capture, which agrees with the evaluator
//! (`fast`'s tests, and this module's differential test against the whole general path).
//!
//! Its cost is bounded like the rest: each compared path runs the value's own `Serialize`
//! once (as the general path runs it once for all of them), through to the end of every struct
//! on the path (a member named twice declines), reading nothing but the path. A condition with
//! more than [`MAX_DIRECT_PATHS`] comparisons takes the general path instead, so the direct
//! path never serializes a value more than that many times a hit.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::capture::serialize::field::FieldValue;
use crate::condition::fast::FastCondition;
use crate::condition::path_reader::{PathReader, Reading, Scalar};
use crate::condition::projection::Projection;
use crate::limits::CaptureLimits;
use crate::redaction::RedactionRules;

/// Bytes the general path charges a snapshot's size budget per path segment, beyond the
/// name: a container's placeholder and a name node, each with its overhead (see
/// `capture::serialize`), rounded up.
const BYTES_PER_SEGMENT: usize = 16;

/// Comparisons the direct path reads at most, one run of the value's `Serialize` each.
pub(crate) const MAX_DIRECT_PATHS: usize = 4;

/// Whether the direct path can ever answer `fast` under `limits`: at most
/// [`MAX_DIRECT_PATHS`] comparisons, no `ctx` paths, and the most the general path could
/// charge for every compared path together fits the snapshot's size budget (so no compared
/// value is ever cut for size there).
pub(crate) fn applies(fast: &FastCondition, limits: &CaptureLimits) -> bool {
    let mut bytes = 0usize;
    let mut only_fields = true;
    let mut paths = 0usize;
    fast.for_each_path(&mut |path| {
        paths += 1;
        only_fields &= path
            .first()
            .is_some_and(|first| first != super::CONTEXT_VARIABLE);
        bytes += path
            .iter()
            .map(|segment| segment.len() + BYTES_PER_SEGMENT)
            .sum::<usize>();
    });
    paths <= MAX_DIRECT_PATHS && only_fields && bytes <= limits.max_snapshot_bytes as usize
}

/// Whether no name on any compared path would be withheld or masked as a field name under
/// `rules`.
pub(crate) fn names_plain(fast: &FastCondition, rules: &RedactionRules) -> bool {
    let mut plain = true;
    fast.for_each_path(&mut |path| {
        for name in path {
            plain &= matches!(rules.name_answers(name), (None, None));
        }
    });
    plain
}

/// The scalar at `path` (field name first) among the point's `fields`, or `None` when the
/// general path must decide.
#[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
pub(crate) fn read(
    path: &[String],
    projection: &Projection,
    names: &[&str],
    fields: &[FieldValue<'_>],
    reading: &Reading<'_>,
) -> Option<Scalar> {
    let (first, rest) = path.split_first()?;
    let index = names.iter().position(|name| name == first)?;
    let FieldValue::Serde(value) = *fields.get(index)? else {
        return None;
    };
    let reader = PathReader::new(rest, projection, reading);
    // The general path catches a panicking `Serialize` and records it; here it only declines.
    catch_unwind(AssertUnwindSafe(|| value.read_scalar(reader)))
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::serialize::SnapshotBuilder;
    use crate::condition::{Condition, EvaluationError};
    use crate::secret::Secret;
    use crate::value::Tape;

    #[derive(serde::Serialize)]
    struct Outer {
        a: u64,
        b: i64,
        f: f64,
        flag: bool,
        inner: Inner,
        maybe: Option<u32>,
        name: &'static str,
        card_number: u64,
        pan: u64,
        hidden: Secret<u64>,
        tier: Tier,
        wrapped: Wrapped,
    }

    #[derive(serde::Serialize)]
    struct Inner {
        x: u64,
        y: i32,
        deep: Deeper,
    }

    #[derive(serde::Serialize)]
    struct Deeper {
        z: u8,
    }

    #[derive(serde::Serialize)]
    struct Wrapped(i16);

    #[derive(serde::Serialize)]
    enum Tier {
        Gold,
    }

    const NAMES: [&str; 3] = ["outer", "n", "shown"];

    /// A small deterministic generator (xorshift), so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len() as u64) as usize]
        }
    }

    fn outer(rng: &mut Rng) -> Outer {
        Outer {
            a: rng.below(4),
            b: rng.below(5) as i64 - 2,
            f: *rng.pick(&[0.0, 1.5, -2.25, f64::NAN]),
            flag: rng.below(2) == 0,
            inner: Inner {
                x: rng.below(3),
                y: rng.below(3) as i32 - 1,
                deep: Deeper {
                    z: rng.below(3) as u8,
                },
            },
            maybe: (rng.below(2) == 0).then(|| rng.below(3) as u32),
            name: "plain",
            card_number: 7,
            pan: *rng.pick(&[4_111_111_111_111_111, 1]),
            hidden: Secret::from(3),
            tier: Tier::Gold,
            wrapped: Wrapped(rng.below(3) as i16),
        }
    }

    fn comparison(rng: &mut Rng) -> String {
        let path = rng.pick(&[
            "outer.a",
            "outer.b",
            "outer.f",
            "outer.flag",
            "outer.inner.x",
            "outer.inner.y",
            "outer.inner.deep.z",
            "outer.maybe",
            "outer.name",
            "outer.card_number",
            "outer.pan",
            "outer.hidden",
            "outer.tier",
            "outer.wrapped",
            "outer.missing",
            "outer.inner",
            "outer.a.b",
            "n",
            "shown",
        ]);
        let literal = rng.pick(&[
            "0u",
            "1u",
            "2u",
            "0",
            "1",
            "-1",
            "2",
            "1.5",
            "0.0",
            "true",
            "false",
            "'plain'",
            "'Gold'",
            "4111111111111111u",
        ]);
        let op = rng.pick(&["==", "!=", "<", "<=", ">", ">="]);
        if rng.below(4) == 0 {
            format!("{literal} {op} {path}")
        } else {
            format!("{path} {op} {literal}")
        }
    }

    fn condition(rng: &mut Rng, depth: u32) -> String {
        match if depth == 0 { 0 } else { rng.below(5) } {
            0 | 1 => comparison(rng),
            2 => format!(
                "({}) && ({})",
                condition(rng, depth - 1),
                condition(rng, depth - 1)
            ),
            3 => format!(
                "({}) || ({})",
                condition(rng, depth - 1),
                condition(rng, depth - 1)
            ),
            _ => format!("!({})", condition(rng, depth - 1)),
        }
    }

    /// What a hit does without the direct path: captures, redacted and projected, what the
    /// condition reads, then evaluates it.
    fn general(
        condition: &Condition,
        fields: &[FieldValue<'_>],
        rules: &RedactionRules,
    ) -> Result<bool, EvaluationError> {
        let limits = *condition.limits();
        let mut builder = SnapshotBuilder::new(&limits, rules, 41, Tape::default());
        let roots: Vec<Option<u32>> = NAMES
            .iter()
            .zip(fields)
            .map(|(name, field)| {
                let projection = condition.projection(name)?;
                Some(builder.capture_field_projected(name, *field, Some(projection)))
            })
            .collect();
        let tape = builder.tape();
        let field = |name: &str| {
            let index = NAMES.iter().position(|n| *n == name)?;
            tape.get(roots[index]?)
        };
        condition.evaluate(&field, None)
    }

    /// The direct path on generated conditions, values and limits answers exactly what the
    /// general path does whenever it answers, and answers often.
    #[test]
    fn agrees_with_capturing_and_evaluating() {
        let rules = RedactionRules::builtin();
        let limits = [
            CaptureLimits::DEFAULT,
            CaptureLimits {
                max_depth: 1,
                ..CaptureLimits::DEFAULT
            },
            CaptureLimits {
                max_depth: 2,
                max_struct_fields: 1,
                ..CaptureLimits::DEFAULT
            },
            CaptureLimits {
                max_snapshot_bytes: 40,
                ..CaptureLimits::DEFAULT
            },
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut answered, mut compiled) = (0, 0);
        for _ in 0..4000 {
            let source = condition(&mut rng, 3);
            let limits = *rng.pick(&limits);
            let Ok(condition) = Condition::compile(&source, &NAMES, &limits) else {
                continue;
            };
            compiled += 1;
            let value = outer(&mut rng);
            let n = rng.below(3);
            let shown = "x";
            let fields = [
                FieldValue::serde(&value),
                FieldValue::serde(&n),
                FieldValue::debug(&shown),
            ];
            let general = general(&condition, &fields, &rules);
            for rules_id in [41, 41, u64::MAX] {
                let direct = condition.evaluate_direct(&NAMES, &fields, &rules, rules_id);
                if let Some(direct) = direct {
                    assert_eq!(
                        Ok(direct),
                        general,
                        "{source} under {limits:?}, pan {}, z {}",
                        value.pan,
                        value.inner.deep.z
                    );
                    answered += 1;
                }
            }
        }
        assert!(compiled > 2000, "{compiled} conditions compiled");
        assert!(answered > 300, "only {answered} answered directly");
    }

    #[test]
    fn answers_a_number_compared_and_declines_what_redaction_or_limits_touch() {
        let rules = RedactionRules::builtin();
        let mut rng = Rng(7);
        let mut value = outer(&mut rng);
        value.a = 3;
        value.pan = 4_111_111_111_111_111;
        let fields = [
            FieldValue::serde(&value),
            FieldValue::serde(&1u64),
            FieldValue::debug(&"x"),
        ];
        let direct = |source: &str, limits: CaptureLimits| {
            let condition = Condition::compile(source, &NAMES, &limits).expect(source);
            condition.evaluate_direct(&NAMES, &fields, &rules, 1)
        };
        let limits = CaptureLimits::DEFAULT;
        assert_eq!(direct("outer.a == 0u", limits), Some(false));
        assert_eq!(direct("outer.a == 3u && n < 2u", limits), Some(true));
        assert_eq!(direct("outer.wrapped >= -1", limits), Some(true));
        for declined in [
            "outer.card_number == 7u",        // a withheld name
            "outer.pan == 4111111111111111u", // a card number
            "outer.hidden == 3u",             // a `Secret`
            "outer.name == 'plain'",          // a string: the scanner's business
            "outer.a == 3",                   // int against uint: CEL compares by value
            "outer.missing == 1u",
            "outer.tier == 'Gold'",
            "shown == 'x'",
            "outer.a == 3u || ctx.request_id == 'r'",
        ] {
            assert_eq!(direct(declined, limits), None, "{declined}");
        }
        let shallow = CaptureLimits {
            max_depth: 1,
            ..limits
        };
        assert_eq!(direct("outer.a == 3u", shallow), Some(true));
        assert_eq!(
            direct("outer.inner.x == 1u", shallow),
            None,
            "cut for depth"
        );
        let one_field = CaptureLimits {
            max_struct_fields: 1,
            ..limits
        };
        assert_eq!(direct("outer.b == 0 && outer.a == 3u", one_field), None);
    }

    /// A value whose `Serialize` collects its `Display` (as chrono's types do), whose
    /// formatting would never end; and one that names the compared member twice.
    struct Hostile {
        twice: bool,
    }

    struct EndlessDisplay;

    impl std::fmt::Display for EndlessDisplay {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("the direct path formatted a collected string");
        }
    }

    impl serde::Serialize for Hostile {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeStruct;
            let mut state = serializer.serialize_struct("Hostile", 3)?;
            state.serialize_field("stamp", &Stamp)?;
            state.serialize_field("n", &1u64)?;
            if self.twice {
                state.serialize_field("n", &2u64)?;
            }
            state.end()
        }
    }

    struct Stamp;

    impl serde::Serialize for Stamp {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(&EndlessDisplay)
        }
    }

    #[test]
    fn declines_a_collected_string_unformatted_and_a_member_named_twice() {
        let rules = RedactionRules::builtin();
        let limits = CaptureLimits::DEFAULT;
        let names = ["h"];
        let read = |source: &str, value: &Hostile| {
            let condition = Condition::compile(source, &names, &limits).expect(source);
            condition.evaluate_direct(&names, &[FieldValue::serde(value)], &rules, 1)
        };
        let once = Hostile { twice: false };
        // The collected string is only passed by, never formatted (formatting it panics,
        // which would read here as a decline: the test below tells the two apart).
        assert_eq!(read("h.n == 1u", &once), Some(true));
        assert_eq!(read("h.stamp == 1u", &once), None);
        let twice = Hostile { twice: true };
        assert_eq!(read("h.n == 1u", &twice), None, "a member named twice");
    }

    /// Names `b` twice and then `a`, dropping every error a serializer returns, as a
    /// hand-written `Serialize` may.
    struct IgnoresErrors;

    impl serde::Serialize for IgnoresErrors {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeStruct;
            let mut state = serializer.serialize_struct("IgnoresErrors", 3)?;
            let _ = state.serialize_field("b", &1u64);
            let _ = state.serialize_field("b", &1u64);
            let _ = state.serialize_field("a", &1u64);
            state.end()
        }
    }

    /// A struct with one member, `n`, that counts how often it is serialized.
    struct Counted<'c>(&'c std::cell::Cell<u32>);

    impl serde::Serialize for Counted<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeStruct;
            self.0.set(self.0.get() + 1);
            let mut state = serializer.serialize_struct("Counted", 1)?;
            state.serialize_field("n", &1u64)?;
            state.end()
        }
    }

    #[test]
    fn a_value_is_serialized_at_most_once_a_comparison_and_a_few_times_a_hit() {
        let rules = RedactionRules::builtin();
        let limits = CaptureLimits::DEFAULT;
        let names = ["h"];
        let runs = std::cell::Cell::new(0);
        let value = Counted(&runs);
        for comparisons in [1, MAX_DIRECT_PATHS, MAX_DIRECT_PATHS + 1, 40] {
            let source = vec!["h.n == 2u"; comparisons].join(" || ");
            let condition = Condition::compile(&source, &names, &limits).expect("compiles");
            runs.set(0);
            let direct = condition.evaluate_direct(&names, &[FieldValue::serde(&value)], &rules, 1);
            if comparisons <= MAX_DIRECT_PATHS {
                assert_eq!(direct, Some(false), "{comparisons} comparisons");
                assert_eq!(runs.get() as usize, comparisons);
            } else {
                assert_eq!(
                    direct, None,
                    "{comparisons} comparisons take the general path"
                );
                assert_eq!(runs.get(), 0);
            }
        }
    }

    #[test]
    fn a_decline_stands_when_the_value_drops_the_error() {
        let rules = RedactionRules::builtin();
        // The general capture takes both copies of `b` and, at two fields, never reaches `a`.
        let limits = CaptureLimits {
            max_struct_fields: 2,
            ..CaptureLimits::DEFAULT
        };
        let names = ["h"];
        let source = "h.a == 1u && h.b == 1u";
        let condition = Condition::compile(source, &names, &limits).expect(source);
        let direct =
            condition.evaluate_direct(&names, &[FieldValue::serde(&IgnoresErrors)], &rules, 1);
        assert_eq!(
            direct, None,
            "the direct path answered where the general path differs"
        );
    }

    #[test]
    fn a_collected_string_on_the_path_is_declined_before_it_is_formatted() {
        let reading = Reading {
            limits: &CaptureLimits::DEFAULT,
            rules: &RedactionRules::builtin(),
        };
        let projection = Projection::default();
        let reader = PathReader::new(&[], &projection, &reading);
        // Not under `catch_unwind`: a formatted `EndlessDisplay` fails this test.
        assert_eq!(reader.read(&Stamp), None);
    }
}

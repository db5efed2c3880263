//! A per-thread memo of which static names (struct fields, snapshot fields) a capture's
//! redaction rules withhold, and which static names (field, type and variant names) hold a
//! secret themselves by the value patterns.
//!
//! The same few dozen `&'static str` field names come back on every hit, and normalizing and
//! matching each against the keyword lists is most of the redaction cost of a struct. Static
//! names never change and a rule set never changes, so the answers for (rule set, name address)
//! are fixed: remember them. Per thread, so the hot path takes no lock; a small two-way table,
//! so a lookup is one index and at most two compares, and a program with many types costs a
//! recomputation, never memory.
//!
//! On top of it, a [`StructPlan`] per struct type remembers the answers of all its fields
//! together, so that a struct costs one lookup instead of one per field (see there for why).

use std::cell::RefCell;
use std::rc::Rc;

use crate::redaction::{Reason, RedactionRules};

/// Slots per thread (a power of two), in pairs: a name may sit in either slot of its pair, so
/// two names that hash alike do not evict each other on every hit. A pair is one 64-byte cache
/// line, so a cold lookup of an ordinary name costs one line; the reasons of the few names
/// that have any live in a side table read only when a slot says it holds one. 256 × (32 + 48)
/// bytes = 20 KiB per thread that captures.
const SLOTS: usize = 256;

/// The key of one static name and which of its two answers are `Some`; the answers
/// themselves are in [`Memo::reasons`] at the same index.
#[derive(Clone, Copy)]
#[repr(C)]
struct Slot {
    rules_id: u64,
    name: usize,
    len: u32,
    /// [`WITHHOLDS_VALUE`] and [`HOLDS_SECRET`] bits: which reasons are stored.
    present: u32,
}

/// `rules.sensitive_name(name)` is `Some`: the name withholds its value.
const WITHHOLDS_VALUE: u32 = 1;
/// `rules.mask_secrets(name, true)` is `Some`: the name's own text holds a secret.
const HOLDS_SECRET: u32 = 2;

const EMPTY: Slot = Slot {
    rules_id: u64::MAX,
    name: 0,
    len: 0,
    present: 0,
};

impl Slot {
    #[inline]
    fn holds(&self, rules_id: u64, name: &'static str) -> bool {
        self.rules_id == rules_id
            && self.name == name.as_ptr() as usize
            && self.len as usize == name.len()
    }
}

/// The two answers for one static name, computed together on a miss: most names are asked
/// both questions on every hit (field names), and one lookup then serves both.
type Answers = (Option<Reason>, Option<Reason>);

/// The two ways of one pair, aligned so that a pair is exactly one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Pair([Slot; 2]);

struct Memo {
    /// `SLOTS / 2` pairs once used; slot `i` is way `i % 2` of pair `i / 2`.
    pairs: Vec<Pair>,
    reasons: Vec<Answers>,
}

thread_local! {
    static MEMO: RefCell<Memo> = const {
        RefCell::new(Memo {
            pairs: Vec::new(),
            reasons: Vec::new(),
        })
    };
}

/// The first slot of the pair `name` belongs to.
#[inline]
fn slot_of(rules_id: u64, name: &'static str) -> usize {
    let address = name.as_ptr() as usize as u64;
    let mixed = (address ^ rules_id.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 56) as usize & (SLOTS - 2)
}

fn answers(rules: &RedactionRules, name: &'static str) -> Answers {
    #[cfg(test)]
    COMPUTED.with(|computed| computed.set(computed.get() + 1));
    rules.name_answers(name)
}

impl Memo {
    /// The remembered answers at `index`; reads the side table only when one is `Some`.
    #[inline]
    fn answers_at(&self, index: usize) -> Option<Answers> {
        let present = self.pairs.get(index / 2)?.0[index % 2].present;
        if present == 0 {
            return Some((None, None));
        }
        self.reasons.get(index).cloned()
    }

    fn remember(&mut self, pair: usize, rules_id: u64, name: &'static str, answers: &Answers) {
        let Ok(len) = u32::try_from(name.len()) else {
            return;
        };
        // The newer name takes the first slot of the pair and the older moves to the second,
        // evicting whatever was there: of two names that alternate, both stay remembered.
        let Some(ways) = self.pairs.get_mut(pair / 2) else {
            return;
        };
        ways.0.swap(0, 1);
        self.reasons.swap(pair, pair + 1);
        let mut present = 0;
        if answers.0.is_some() {
            present |= WITHHOLDS_VALUE;
        }
        if answers.1.is_some() {
            present |= HOLDS_SECRET;
        }
        ways.0[0] = Slot {
            rules_id,
            name: name.as_ptr() as usize,
            len,
            present,
        };
        if let Some(reasons) = self.reasons.get_mut(pair) {
            *reasons = answers.clone();
        }
    }
}

/// Both answers for a static name: whether it withholds its value, and whether its own text
/// holds a secret. `rules_id` must identify `rules` uniquely for the life of the process.
#[inline]
pub(crate) fn static_name_answers(
    rules_id: u64,
    rules: &RedactionRules,
    name: &'static str,
) -> Answers {
    let pair = slot_of(rules_id, name);
    let remembered = MEMO.try_with(|memo| {
        let mut memo = memo.try_borrow_mut().ok()?;
        if memo.pairs.is_empty() {
            memo.pairs.resize(SLOTS / 2, Pair([EMPTY; 2]));
            memo.reasons.resize(SLOTS, (None, None));
        }
        let ways = memo.pairs.get(pair / 2)?;
        if let Some(way) = ways.0.iter().position(|slot| slot.holds(rules_id, name)) {
            return memo.answers_at(pair + way);
        }
        let computed = answers(rules, name);
        memo.remember(pair, rules_id, name, &computed);
        Some(computed)
    });
    match remembered {
        Ok(Some(answers)) => answers,
        _ => answers(rules, name),
    }
}

/// `rules.sensitive_name(name)`, remembered for static names.
#[inline]
pub(crate) fn sensitive_static_name(
    rules_id: u64,
    rules: &RedactionRules,
    name: &'static str,
) -> Option<Reason> {
    static_name_answers(rules_id, rules, name).0
}

/// The first reason `rules.mask_secrets(name, true)` gives, remembered for static names.
#[inline]
pub(crate) fn secret_in_static_text(
    rules_id: u64,
    rules: &RedactionRules,
    name: &'static str,
) -> Option<Reason> {
    static_name_answers(rules_id, rules, name).1
}

/// Struct plans per thread (a power of two), direct-mapped: a program captures a few dozen
/// struct types at most, and a collision only costs relearning one.
const PLAN_SLOTS: usize = 64;

/// The most fields a plan remembers; a struct with more is answered name by name past them.
const MAX_PLANNED_FIELDS: usize = 64;

/// What one struct type (or struct variant) looked like the last time this thread captured it
/// under a rule set: whether its type and variant names are plain (hold no secret), and its
/// field names in order, each with which of its two answers are `Some`.
///
/// Why: a struct is then answered with one lookup for the type and a pointer compare per
/// field, and its answers sit together in a line or two of memory instead of one memo line per
/// field name. On a cold hit (a point hit a few times a second, its data evicted between hits)
/// each of those lines is a miss to memory. The per-name memo above stays the authority: a
/// field that does not match the plan, or has an answer, is asked there.
pub(crate) struct StructPlan {
    names_plain: bool,
    fields: Vec<PlannedName>,
}

/// A field name of a plan: its address, length and [`Slot::present`] bits.
#[derive(Clone, Copy)]
struct PlannedName {
    name: usize,
    len: u32,
    present: u32,
}

impl PlannedName {
    fn of(name: &'static str, answers: &Answers) -> Option<PlannedName> {
        let mut present = 0;
        if answers.0.is_some() {
            present |= WITHHOLDS_VALUE;
        }
        if answers.1.is_some() {
            present |= HOLDS_SECRET;
        }
        Some(PlannedName {
            name: name.as_ptr() as usize,
            len: u32::try_from(name.len()).ok()?,
            present,
        })
    }
}

/// Which struct a plan is for.
#[derive(Clone, Copy, PartialEq, Eq)]
struct PlanKey {
    rules_id: u64,
    type_name: usize,
    type_len: usize,
    variant: usize,
    variant_len: usize,
}

impl PlanKey {
    fn slot(&self) -> usize {
        let mixed = (self.type_name as u64 ^ (self.variant as u64).rotate_left(29))
            ^ self.rules_id.rotate_left(17);
        (mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize & (PLAN_SLOTS - 1)
    }
}

/// One slot of the plan table: the struct a plan is for, and the plan.
type PlanSlot = Option<(PlanKey, Rc<StructPlan>)>;

thread_local! {
    static PLANS: RefCell<Vec<PlanSlot>> = const { RefCell::new(Vec::new()) };
}

/// One struct being captured: the plan it follows, if this thread has one, or the plan being
/// learned from it for the next hit.
pub(crate) struct PlanCursor {
    key: PlanKey,
    plan: Option<Rc<StructPlan>>,
    /// `Some` while every field so far was a static name answered in order.
    learning: Option<StructPlan>,
}

impl PlanCursor {
    /// Looks up the plan of `type_name` (and `variant`) under the rule set `rules_id`.
    pub(crate) fn open(
        rules_id: u64,
        type_name: &'static str,
        variant: Option<&'static str>,
    ) -> PlanCursor {
        let key = PlanKey {
            rules_id,
            type_name: type_name.as_ptr() as usize,
            type_len: type_name.len(),
            variant: variant.map_or(0, |v| v.as_ptr() as usize),
            variant_len: variant.map_or(0, str::len),
        };
        let plan = PLANS
            .try_with(|plans| {
                let plans = plans.try_borrow().ok()?;
                match plans.get(key.slot())? {
                    Some((held, plan)) if *held == key => Some(Rc::clone(plan)),
                    _ => None,
                }
            })
            .ok()
            .flatten();
        let learning = plan.is_none().then(|| StructPlan {
            names_plain: false,
            fields: Vec::new(),
        });
        PlanCursor {
            key,
            plan,
            learning,
        }
    }

    /// A cursor with no plan that learns none, for a builder that asks no names.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub(crate) fn unplanned() -> PlanCursor {
        PlanCursor {
            key: PlanKey {
                rules_id: u64::MAX,
                type_name: 0,
                type_len: 0,
                variant: 0,
                variant_len: 0,
            },
            plan: None,
            learning: None,
        }
    }

    /// Whether the plan says the type's and variant's names hold no secret.
    pub(crate) fn names_plain(&self) -> bool {
        self.plan.as_ref().is_some_and(|plan| plan.names_plain)
    }

    /// Records whether the type's and variant's names turned out plain.
    pub(crate) fn learn_names(&mut self, plain: bool) {
        if let Some(learning) = &mut self.learning {
            learning.names_plain = plain;
        }
    }

    /// Whether the plan says field `index` is `name` and has neither answer.
    #[inline]
    pub(crate) fn is_plain(&self, index: u32, name: &'static str) -> bool {
        let Some(plan) = &self.plan else { return false };
        plan.fields.get(index as usize).is_some_and(|field| {
            field.name == name.as_ptr() as usize
                && field.len as usize == name.len()
                && field.present == 0
        })
    }

    /// Records field `index`'s answers, if the plan is being learned and this is the next field.
    pub(crate) fn learn(&mut self, index: u32, name: &'static str, answers: &Answers) {
        let Some(learning) = &mut self.learning else {
            return;
        };
        let next =
            learning.fields.len() == index as usize && learning.fields.len() < MAX_PLANNED_FIELDS;
        match PlannedName::of(name, answers).filter(|_| next) {
            Some(planned) => learning.fields.push(planned),
            None => self.learning = None,
        }
    }

    /// This struct's fields are not all learnable (a name built at run time, a field skipped):
    /// the plan is not learned from it.
    pub(crate) fn stop_learning(&mut self) {
        self.learning = None;
    }

    /// The struct is done: a plan learned from all of its `fields` is kept for the next hit.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub(crate) fn close(self, fields: u32) {
        let Some(learned) = self.learning else { return };
        if learned.fields.len() != fields as usize {
            return;
        }
        let key = self.key;
        let _ = PLANS.try_with(|plans| {
            let Ok(mut plans) = plans.try_borrow_mut() else {
                return;
            };
            if plans.is_empty() {
                plans.resize(PLAN_SLOTS, None);
            }
            if let Some(slot) = plans.get_mut(key.slot()) {
                *slot = Some((key, Rc::new(learned)));
            }
        });
    }
}

#[cfg(test)]
thread_local! {
    static COMPUTED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redaction::{AdditionOrigin, RedactionAdditions};

    #[test]
    fn a_pair_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Pair>(), 64);
        assert_eq!(std::mem::align_of::<Pair>(), 64);
    }

    #[test]
    fn answers_per_rule_set() {
        let builtin = RedactionRules::builtin();
        let stricter = builtin
            .with_additions(&RedactionAdditions {
                keywords: vec!["coupon".into()],
                patterns: vec![],
                origin: AdditionOrigin::Request,
            })
            .expect("valid");
        for _ in 0..3 {
            assert!(sensitive_static_name(1, &builtin, "coupon").is_none());
            assert!(sensitive_static_name(2, &stricter, "coupon").is_some());
            assert!(sensitive_static_name(1, &builtin, "password").is_some());
        }
    }

    #[test]
    fn collisions_recompute_rather_than_answer_wrongly() {
        let rules = RedactionRules::builtin();
        // Far more distinct keys than slots: every answer must still be right.
        for id in 0..(SLOTS as u64 * 8) {
            assert!(sensitive_static_name(id, &rules, "email").is_none());
            assert!(sensitive_static_name(id, &rules, "api_key").is_some());
        }
        MEMO.with(|memo| assert_eq!(memo.borrow().pairs.len() * 2, SLOTS));
    }

    #[test]
    fn two_names_of_one_pair_both_stay_remembered() {
        let rules = RedactionRules::builtin();
        let names: Vec<&'static str> = (0..4 * SLOTS)
            .map(|i| &*Box::leak(format!("field_{i}").into_boxed_str()))
            .collect();
        let (a, b) = names
            .iter()
            .enumerate()
            .find_map(|(i, a)| {
                let b = names[i + 1..]
                    .iter()
                    .find(|b| slot_of(7, a) == slot_of(7, b))?;
                Some((*a, *b))
            })
            .expect("some two names share a pair");
        sensitive_static_name(7, &rules, a);
        sensitive_static_name(7, &rules, b);
        let before = COMPUTED.with(|computed| computed.get());
        for _ in 0..10 {
            assert!(sensitive_static_name(7, &rules, a).is_none());
            assert!(sensitive_static_name(7, &rules, b).is_none());
        }
        assert_eq!(COMPUTED.with(|computed| computed.get()), before);
    }

    #[test]
    fn a_struct_plan_answers_the_fields_it_learned_and_nothing_else() {
        let rules = RedactionRules::builtin();
        let fields: [&'static str; 3] = ["sku", "api_key", "qty"];
        let learn = |rules_id: u64| {
            let mut cursor = PlanCursor::open(rules_id, "PlanItem", None);
            assert!(!cursor.is_plain(0, "sku"), "nothing learned yet");
            cursor.learn_names(true);
            for (index, name) in fields.iter().enumerate() {
                let answers = static_name_answers(rules_id, &rules, name);
                cursor.learn(index as u32, name, &answers);
            }
            cursor.close(fields.len() as u32);
        };
        learn(11);
        let cursor = PlanCursor::open(11, "PlanItem", None);
        assert!(cursor.names_plain());
        assert!(cursor.is_plain(0, "sku"));
        assert!(
            !cursor.is_plain(1, "api_key"),
            "an answered name is asked again"
        );
        assert!(cursor.is_plain(2, "qty"));
        assert!(!cursor.is_plain(2, "sku"), "another name at that place");
        assert!(!cursor.is_plain(3, "qty"), "past the plan");
        assert!(
            !PlanCursor::open(12, "PlanItem", None).is_plain(0, "sku"),
            "another rule set"
        );
        assert!(
            !PlanCursor::open(11, "PlanItem", Some("V")).is_plain(0, "sku"),
            "a variant is its own type"
        );

        // A struct whose fields were not all learned (one skipped) teaches nothing.
        let mut partial = PlanCursor::open(13, "PlanItem", None);
        partial.learn(0, "sku", &(None, None));
        partial.stop_learning();
        partial.close(fields.len() as u32);
        assert!(!PlanCursor::open(13, "PlanItem", None).is_plain(0, "sku"));
        let mut gap = PlanCursor::open(14, "PlanItem", None);
        gap.learn(0, "sku", &(None, None));
        gap.learn(2, "qty", &(None, None));
        gap.close(3);
        assert!(!PlanCursor::open(14, "PlanItem", None).is_plain(0, "sku"));
    }

    #[test]
    fn the_two_questions_have_their_own_answers() {
        let rules = RedactionRules::builtin();
        let token_name: &'static str = "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";
        for _ in 0..3 {
            assert!(secret_in_static_text(7, &rules, token_name).is_some());
            assert!(sensitive_static_name(7, &rules, token_name).is_none());
            assert!(secret_in_static_text(7, &rules, "password").is_none());
            assert!(sensitive_static_name(7, &rules, "password").is_some());
        }
    }
}

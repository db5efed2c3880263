//! A per-thread memo of which static names (struct fields, snapshot fields) a capture's
//! redaction rules withhold.
//!
//! The same few dozen `&'static str` field names come back on every hit, and normalizing and
//! matching each against the keyword lists is most of the redaction cost of a struct. Static
//! names never change and a rule set never changes, so the answer for (rule set, name address)
//! is fixed: remember it. Per thread, so the hot path takes no lock; bounded, so a program with
//! many types cannot grow it without limit.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::redaction::{Reason, RedactionRules};

/// Entries kept per thread before the memo starts over.
const MAX_ENTRIES: usize = 4096;

/// (rule set id, name address, name length).
type Key = (u64, usize, usize);

/// A multiply-rotate hasher: the keys are already well-mixed integers.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }
}

thread_local! {
    static MEMO: RefCell<HashMap<Key, Option<Reason>, BuildHasherDefault<KeyHasher>>> =
        RefCell::new(HashMap::default());
}

/// `rules.sensitive_name(name)`, remembered for static names. `rules_id` must identify `rules`
/// uniquely for the life of the process.
#[inline]
pub(crate) fn sensitive_static_name(
    rules_id: u64,
    rules: &RedactionRules,
    name: &'static str,
) -> Option<Reason> {
    let key = (rules_id, name.as_ptr() as usize, name.len());
    MEMO.try_with(|memo| {
        let mut memo = memo.try_borrow_mut().ok()?;
        if let Some(known) = memo.get(&key) {
            return Some(known.clone());
        }
        let answer = rules.sensitive_name(name);
        if memo.len() >= MAX_ENTRIES {
            memo.clear();
        }
        memo.insert(key, answer.clone());
        Some(answer)
    })
    .ok()
    .flatten()
    .unwrap_or_else(|| rules.sensitive_name(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redaction::{AdditionOrigin, RedactionAdditions};

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
    fn stays_bounded() {
        let rules = RedactionRules::builtin();
        for id in 0..(MAX_ENTRIES as u64 * 2) {
            let _ = sensitive_static_name(id, &rules, "email");
        }
        MEMO.with(|memo| assert!(memo.borrow().len() <= MAX_ENTRIES));
    }
}

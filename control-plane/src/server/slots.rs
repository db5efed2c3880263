//! How many captures each engineer runs at once.
//!
//! An agent has capture slots of its own (16 per instance and 4 per session by default) and
//! refuses past them; without a cap here, one engineer with a few sessions could take every
//! slot of an instance and lock everyone else out during an incident. So the control plane
//! caps concurrent captures per user (`limits.captures_per_user`, 4 by default, below the
//! agent's slots), as Lightrun and Datadog Dynamic Instrumentation cap probes per user. A
//! capture holds its slot from the moment it is allowed until its stream ends, however it
//! ends; past the cap a new capture is RESOURCE_EXHAUSTED with a message naming the cap.
//!
//! The table holds one entry per engineer with a live capture, so it is bounded by the live
//! captures themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Live captures per user.
#[derive(Debug)]
pub struct CaptureSlots {
    max_per_user: u32,
    held: Arc<Mutex<HashMap<String, u32>>>,
}

/// Why a capture got no slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{user}` already runs {held} captures, the most one engineer may run at once (limits.captures_per_user = {max}); end one first"
)]
pub struct SlotsFull {
    pub user: String,
    pub held: u32,
    pub max: u32,
}

/// One capture's slot; given back when dropped.
#[derive(Debug)]
pub struct CaptureSlot {
    held: Arc<Mutex<HashMap<String, u32>>>,
    user: String,
}

impl CaptureSlots {
    pub fn new(max_per_user: u32) -> CaptureSlots {
        CaptureSlots {
            max_per_user,
            held: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A slot for `user`, unless they already hold the most they may.
    pub fn take(&self, user: &str) -> Result<CaptureSlot, SlotsFull> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(user.to_owned()).or_insert(0);
        if *count >= self.max_per_user {
            return Err(SlotsFull {
                user: user.to_owned(),
                held: *count,
                max: self.max_per_user,
            });
        }
        *count += 1;
        Ok(CaptureSlot {
            held: Arc::clone(&self.held),
            user: user.to_owned(),
        })
    }

    /// Captures `user` runs now.
    pub fn held_by(&self, user: &str) -> u32 {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(user)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for CaptureSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_gets_at_most_the_cap_and_slots_come_back() {
        let slots = CaptureSlots::new(2);
        let first = slots.take("alice").expect("one");
        let _second = slots.take("alice").expect("two");
        let full = slots.take("alice").expect_err("three");
        assert!(full.to_string().contains("limits.captures_per_user = 2"));
        let _bob = slots.take("bob").expect("bob has his own");
        drop(first);
        let _again = slots.take("alice").expect("a slot came back");
        assert_eq!(slots.held_by("alice"), 2);
    }

    #[test]
    fn the_table_forgets_users_without_captures() {
        let slots = CaptureSlots::new(1);
        drop(slots.take("alice").expect("one"));
        assert!(slots.held.lock().expect("lock").is_empty());
    }
}

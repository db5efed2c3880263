//! The Merkle tree as the log keeps it in memory: every full-subtree hash, by level.
//!
//! Level 0 holds the leaf hashes, level `l` the hash of each complete run of `2^l` leaves.
//! That is two hashes (64 bytes) per event, which is what makes any inclusion or consistency
//! proof a handful of lookups at any size — no leaf is reread and nothing is recomputed. The
//! tree is rebuilt from the stored events on start, which also re-verifies them. (At 10⁷
//! events this is 640 MB; a later version can keep only the upper levels and read the lower
//! ones from storage.)

use loupe_audit::merkle::{Hash, empty_root, node_hash};
use loupe_audit::proof::{ProofError, SubtreeSource, range_root};

/// Every full-subtree hash of the tree, by level.
#[derive(Debug, Default)]
pub struct TreeCache {
    levels: Vec<Vec<Hash>>,
}

impl TreeCache {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends a leaf hash, completing whatever subtrees it completes.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let row = &mut self.levels[level];
            row.push(hash);
            if row.len() % 2 == 1 {
                break;
            }
            hash = node_hash(&row[row.len() - 2], &row[row.len() - 1]);
            level += 1;
        }
    }

    /// Drops every leaf from `size` on (and every subtree they completed).
    pub fn truncate(&mut self, size: u64) {
        for (level, row) in self.levels.iter_mut().enumerate() {
            let keep = usize::try_from(size >> level).unwrap_or(usize::MAX);
            row.truncate(keep);
        }
        while self.levels.last().is_some_and(Vec::is_empty) && self.levels.len() > 1 {
            self.levels.pop();
        }
    }

    /// Leaf hash `index`, if present.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        let index = usize::try_from(index).ok()?;
        self.levels.first()?.get(index).copied()
    }

    /// The root of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        if size == 0 {
            return Ok(empty_root());
        }
        if size > self.size() {
            return Err(ProofError::IndexOutOfRange {
                index: size - 1,
                size: self.size(),
            });
        }
        range_root(self, 0, size)
    }
}

impl TreeCache {
    /// The root the tree would have with `more` leaves appended, without appending them: the
    /// writer signs the checkpoint of a batch before the batch is durable, and only a durable
    /// batch joins the tree readers see.
    pub fn root_with(&self, more: &[Hash]) -> Hash {
        root_of_right_edge(&self.right_edge_with(more))
    }

    /// The right edge of the tree with `more` leaves appended: the roots of its maximal full
    /// subtrees, largest first (one per set bit of the size) — what a compact range keeps to
    /// extend the tree, and what the coordination row of a shared log stores.
    pub fn right_edge_with(&self, more: &[Hash]) -> Vec<Hash> {
        // The maximal full subtrees of the tree as it stands, then the new leaves folded in as
        // a compact tree would.
        let size = self.size();
        let mut peaks = Vec::with_capacity(65);
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            if size & (1u64 << level) != 0 {
                let index = usize::try_from(start >> level).unwrap_or(usize::MAX);
                if let Some(hash) = self.levels.get(level as usize).and_then(|l| l.get(index)) {
                    peaks.push(*hash);
                }
                start += 1u64 << level;
            }
        }
        for (count, leaf) in (size..).zip(more) {
            let mut merged = *leaf;
            let mut bits = count;
            while bits & 1 == 1 {
                let left = peaks.pop().unwrap_or_default();
                merged = node_hash(&left, &merged);
                bits >>= 1;
            }
            peaks.push(merged);
        }
        peaks
    }
}

/// The root of the tree whose right edge (largest subtree first) is `right_edge`.
pub fn root_of_right_edge(right_edge: &[Hash]) -> Hash {
    let mut peaks = right_edge.iter().rev();
    let Some(last) = peaks.next() else {
        return empty_root();
    };
    peaks.fold(*last, |acc, peak| node_hash(peak, &acc))
}

impl SubtreeSource for TreeCache {
    fn full_subtree(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        let missing = ProofError::MissingSubtree { level, index };
        let row = self.levels.get(level as usize).ok_or(missing.clone())?;
        let i = usize::try_from(index).map_err(|_| missing.clone())?;
        row.get(i).copied().ok_or(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loupe_audit::merkle::{leaf_hash, root_of};

    #[test]
    fn roots_at_every_size_match_the_reference() {
        let leaves: Vec<Hash> = (0u32..70).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut tree = TreeCache::new();
        for (n, leaf) in leaves.iter().enumerate() {
            tree.push(*leaf);
            for size in 0..=n + 1 {
                assert_eq!(tree.root_at(size as u64), Ok(root_of(&leaves[..size])));
            }
        }
        assert!(tree.root_at(71).is_err());
    }

    #[test]
    fn a_truncated_tree_is_the_tree_of_the_leaves_kept() {
        let leaves: Vec<Hash> = (0u32..40).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for keep in 0..leaves.len() {
            let mut tree = TreeCache::new();
            for leaf in &leaves {
                tree.push(*leaf);
            }
            tree.truncate(keep as u64);
            assert_eq!(tree.size(), keep as u64);
            assert_eq!(tree.root_at(keep as u64), Ok(root_of(&leaves[..keep])));
            for leaf in &leaves[keep..] {
                tree.push(*leaf);
            }
            assert_eq!(tree.root_at(40), Ok(root_of(&leaves)));
        }
    }

    #[test]
    fn the_root_with_more_leaves_is_the_root_after_pushing_them() {
        let leaves: Vec<Hash> = (0u32..40).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for split in 0..leaves.len() {
            let mut tree = TreeCache::new();
            for leaf in &leaves[..split] {
                tree.push(*leaf);
            }
            for end in split..=leaves.len() {
                assert_eq!(tree.root_with(&leaves[split..end]), root_of(&leaves[..end]));
            }
        }
    }
}

//! Inclusion and consistency proofs: building them (RFC 9162 §2.1.3.1, §2.1.4.1) from any
//! store of full-subtree hashes, and checking them (§2.1.3.2, §2.1.4.2) with nothing but the
//! proof, the sizes and the roots.
//!
//! Building asks a [`SubtreeSource`] only for *full* subtrees (aligned, power-of-two sized);
//! the ragged right edge of a tree is folded from them here. A log that keeps every full
//! subtree hash therefore answers any proof with O(log² n) lookups and never rereads leaves.

use super::merkle::{Hash, node_hash, split_point};

/// Why a proof could not be built or does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf {index} is not in a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    /// The first tree is larger than the second.
    #[error("tree size {first} is larger than {second}")]
    SizesOutOfOrder { first: u64, second: u64 },
    /// The proof has the wrong number of hashes for these sizes.
    #[error("the proof has the wrong number of hashes")]
    WrongLength,
    /// The proof does not lead to the expected root(s).
    #[error("the proof does not match the root hash")]
    RootMismatch,
    /// The source has no hash for a subtree the proof needs.
    #[error("no hash for the subtree at level {level}, index {index}")]
    MissingSubtree { level: u32, index: u64 },
}

/// Where proofs get their hashes from: the hash of the full subtree of `2^level` leaves that
/// starts at leaf `index << level`.
pub trait SubtreeSource {
    /// The full subtree's hash, or [`ProofError::MissingSubtree`].
    fn full_subtree(&self, level: u32, index: u64) -> Result<Hash, ProofError>;
}

/// Leaf hashes in memory are a source too (the reference the tests and small tools use).
impl SubtreeSource for [Hash] {
    fn full_subtree(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        let missing = ProofError::MissingSubtree { level, index };
        let width = 1usize.checked_shl(level).ok_or(missing.clone())?;
        let start = usize::try_from(index)
            .ok()
            .and_then(|i| i.checked_mul(width))
            .ok_or(missing.clone())?;
        let end = start.checked_add(width).ok_or(missing.clone())?;
        let leaves = self.get(start..end).ok_or(missing)?;
        let mut level_hashes = leaves.to_vec();
        while level_hashes.len() > 1 {
            level_hashes = level_hashes
                .chunks_exact(2)
                .map(|pair| node_hash(&pair[0], &pair[1]))
                .collect();
        }
        Ok(level_hashes[0])
    }
}

/// The root of leaves `[lo, hi)`, where `lo` is aligned to the largest power of two not above
/// `hi - lo` — true of every range the RFC's recursion visits.
pub fn range_root<S: SubtreeSource + ?Sized>(
    source: &S,
    lo: u64,
    hi: u64,
) -> Result<Hash, ProofError> {
    let mut peaks = Vec::new();
    let mut start = lo;
    while start < hi {
        let level = 63 - (hi - start).leading_zeros();
        peaks.push(source.full_subtree(level, start >> level)?);
        start += 1 << level;
    }
    let mut peaks = peaks.into_iter().rev();
    let last = peaks.next().ok_or(ProofError::WrongLength)?;
    Ok(peaks.fold(last, |acc, peak| node_hash(&peak, &acc)))
}

/// The audit path of leaf `index` in the tree of the first `size` leaves (RFC 9162 PATH).
pub fn inclusion_proof<S: SubtreeSource + ?Sized>(
    source: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::new();
    path(source, index, 0, size, &mut proof)?;
    Ok(proof)
}

fn path<S: SubtreeSource + ?Sized>(
    source: &S,
    m: u64,
    lo: u64,
    hi: u64,
    out: &mut Vec<Hash>,
) -> Result<(), ProofError> {
    let n = hi - lo;
    if n <= 1 {
        return Ok(());
    }
    let k = split_point(n);
    if m < k {
        path(source, m, lo, lo + k, out)?;
        out.push(range_root(source, lo + k, hi)?);
    } else {
        path(source, m - k, lo + k, hi, out)?;
        out.push(range_root(source, lo, lo + k)?);
    }
    Ok(())
}

/// The consistency proof from the tree of `first` leaves to the tree of `second` leaves
/// (RFC 9162 PROOF). Empty when `first` is 0 or equal to `second`.
pub fn consistency_proof<S: SubtreeSource + ?Sized>(
    source: &S,
    first: u64,
    second: u64,
) -> Result<Vec<Hash>, ProofError> {
    if first > second {
        return Err(ProofError::SizesOutOfOrder { first, second });
    }
    let mut proof = Vec::new();
    if first > 0 && first < second {
        subproof(source, first, 0, second, true, &mut proof)?;
    }
    Ok(proof)
}

fn subproof<S: SubtreeSource + ?Sized>(
    source: &S,
    m: u64,
    lo: u64,
    hi: u64,
    first_is_whole: bool,
    out: &mut Vec<Hash>,
) -> Result<(), ProofError> {
    let n = hi - lo;
    if m == n {
        if !first_is_whole {
            out.push(range_root(source, lo, hi)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(source, m, lo, lo + k, first_is_whole, out)?;
        out.push(range_root(source, lo + k, hi)?);
    } else {
        subproof(source, m - k, lo + k, hi, false, out)?;
        out.push(range_root(source, lo, lo + k)?);
    }
    Ok(())
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves with root `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `first` leaves with root `first_root` is a prefix of the tree of
/// `second` leaves with root `second_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::SizesOutOfOrder { first, second });
    }
    if first == second {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if first_root == second_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if first == 0 {
        // The empty tree is a prefix of every tree; its root is fixed.
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if *first_root == super::merkle::empty_root() {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut fn_, mut sn) = (first - 1, second - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let mut fr = path[0];
    let mut sr = path[0];
    for c in &path[1..] {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *first_root || sr != *second_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

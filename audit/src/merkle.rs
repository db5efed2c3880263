//! Merkle tree hashing exactly as RFC 6962 §2.1 (and RFC 9162 §2.1) define it.
//!
//! A leaf hash is `SHA-256(0x00 ‖ data)`, an interior node `SHA-256(0x01 ‖ left ‖ right)`, the
//! empty tree `SHA-256("")`, and a tree of `n > 1` leaves splits at the largest power of two
//! smaller than `n`. Any other split (a midpoint, say) gives a tree no other implementation
//! agrees with, so the split lives in one function, [`split_point`].

use ring::digest::{Context, SHA256, digest};

/// A SHA-256 hash: a leaf, an interior node or a tree root.
pub type Hash = [u8; 32];

/// The hash of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    to_hash(digest(&SHA256, b"").as_ref())
}

/// The leaf hash of `data`: `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[0x00]);
    ctx.update(data);
    to_hash(ctx.finish().as_ref())
}

/// The hash of an interior node: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[0x01]);
    ctx.update(left);
    ctx.update(right);
    to_hash(ctx.finish().as_ref())
}

/// Where RFC 6962 splits a tree of `n ≥ 2` leaves: the largest power of two strictly below `n`.
pub fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2, "only trees of two or more leaves split");
    1u64 << (63 - (n - 1).leading_zeros())
}

fn to_hash(bytes: &[u8]) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(bytes);
    out
}

/// The root of the tree whose leaf hashes are `leaves`.
pub fn root_of(leaves: &[Hash]) -> Hash {
    let mut tree = CompactTree::new();
    for leaf in leaves {
        tree.push(*leaf);
    }
    tree.root()
}

/// A tree kept as the hashes of its maximal full subtrees, largest first (one per set bit of
/// the size): appending is amortised O(1) and the root is O(log n), in O(log n) memory. The
/// verifier streams an export through one of these.
#[derive(Clone, Debug, Default)]
pub struct CompactTree {
    size: u64,
    peaks: Vec<Hash>,
}

impl CompactTree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut merged = leaf;
        let mut size = self.size;
        // Each trailing one bit of the old size is a full subtree the new leaf completes.
        while size & 1 == 1 {
            let left = self.peaks.pop().unwrap_or_default();
            merged = node_hash(&left, &merged);
            size >>= 1;
        }
        self.peaks.push(merged);
        self.size += 1;
    }

    /// The root hash of the tree as it stands.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(last) = peaks.next() else {
            return empty_root();
        };
        peaks.fold(*last, |acc, peak| node_hash(peak, &acc))
    }
}

/// Lower-case hexadecimal, the form hashes take inside audit events.
pub fn to_hex(hash: &Hash) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for byte in hash {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    out
}

/// Parses 64 lower- or upper-case hexadecimal digits; `None` for anything else.
pub fn from_hex(text: &str) -> Option<Hash> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(out)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_point_is_the_largest_power_of_two_below_n() {
        for (n, k) in [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1000, 512)] {
            assert_eq!(split_point(n), k, "n = {n}");
        }
        assert_eq!(split_point(u64::MAX), 1 << 63);
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let h = leaf_hash(b"x");
        assert_eq!(from_hex(&to_hex(&h)), Some(h));
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex(&"g".repeat(64)), None);
    }
}

//! RFC 6962 / RFC 9162 conformance: the published certificate-transparency test vectors, and
//! every (m, n) up to 40 against a naive reference written straight from the RFC's recursion.

use loupe_audit::merkle::{CompactTree, Hash, empty_root, from_hex, leaf_hash, node_hash, root_of};
use loupe_audit::proof::{
    ProofError, consistency_proof, inclusion_proof, verify_consistency, verify_inclusion,
};

/// The leaves of the RFC 6962 test vectors used across certificate-transparency code.
const LEAVES: [&[u8]; 8] = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
];

/// Their published roots for sizes 0 through 8.
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn h(hex: &str) -> Hash {
    from_hex(hex).expect("test vector hex")
}

fn vector_leaves() -> Vec<Hash> {
    LEAVES.iter().map(|l| leaf_hash(l)).collect()
}

#[test]
fn roots_match_the_published_vectors_for_every_size() {
    let leaves = vector_leaves();
    assert_eq!(empty_root(), h(ROOTS[0]));
    for n in 0..=8 {
        assert_eq!(root_of(&leaves[..n]), h(ROOTS[n]), "size {n}");
    }
}

#[test]
fn inclusion_proofs_match_the_published_vectors() {
    let leaves = vector_leaves();
    let cases: [(u64, u64, &[&str]); 4] = [
        (0, 1, &[]),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
    ];
    for (index, size, want) in cases {
        let want: Vec<Hash> = want.iter().map(|x| h(x)).collect();
        let got = inclusion_proof(leaves.as_slice(), index, size).expect("proof");
        assert_eq!(got, want, "inclusion of {index} in {size}");
        let root = h(ROOTS[size as usize]);
        verify_inclusion(&leaves[index as usize], index, size, &want, &root).expect("verifies");
    }
}

#[test]
fn consistency_proofs_match_the_published_vectors() {
    let leaves = vector_leaves();
    let cases: [(u64, u64, &[&str]); 4] = [
        (1, 1, &[]),
        (
            2,
            8,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (first, second, want) in cases {
        let want: Vec<Hash> = want.iter().map(|x| h(x)).collect();
        let got = consistency_proof(leaves.as_slice(), first, second).expect("proof");
        assert_eq!(got, want, "consistency {first} -> {second}");
        let (r1, r2) = (h(ROOTS[first as usize]), h(ROOTS[second as usize]));
        verify_consistency(first, second, &r1, &r2, &want).expect("verifies");
    }
}

// ---- the naive reference: the RFC's definitions, recursing over leaf slices ----

fn largest_pow2_below(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => empty_root(),
        1 => d[0],
        n => {
            let k = largest_pow2_below(n);
            node_hash(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

fn naive_path(m: usize, d: &[Hash]) -> Vec<Hash> {
    if d.len() <= 1 {
        return Vec::new();
    }
    let k = largest_pow2_below(d.len());
    if m < k {
        let mut p = naive_path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = naive_path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

fn naive_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { Vec::new() } else { vec![mth(d)] };
    }
    let k = largest_pow2_below(n);
    if m <= k {
        let mut p = naive_subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = naive_subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

fn many_leaves(n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
        .collect()
}

#[test]
fn the_naive_reference_agrees_with_the_published_roots() {
    let leaves = vector_leaves();
    for n in 0..=8 {
        assert_eq!(mth(&leaves[..n]), h(ROOTS[n]));
    }
}

#[test]
fn every_root_and_inclusion_proof_up_to_40_matches_the_reference() {
    let leaves = many_leaves(40);
    let mut compact = CompactTree::new();
    for n in 1..=40usize {
        compact.push(leaves[n - 1]);
        let tree = &leaves[..n];
        let root = mth(tree);
        assert_eq!(compact.root(), root, "compact root at {n}");
        assert_eq!(root_of(tree), root);
        let nu = n as u64;
        for m in 0..n {
            let mu = m as u64;
            let proof = inclusion_proof(leaves.as_slice(), mu, nu).expect("proof");
            assert_eq!(proof, naive_path(m, tree), "path({m}, {n})");
            verify_inclusion(&tree[m], mu, nu, &proof, &root).expect("verifies");
            // Nothing else verifies: another leaf, index or root, or a changed, longer or shorter path.
            let other = (m + 1) % n;
            if other != m {
                assert!(verify_inclusion(&tree[other], mu, nu, &proof, &root).is_err());
                let wrong_index = verify_inclusion(&tree[m], other as u64, nu, &proof, &root);
                assert!(wrong_index.is_err());
            }
            assert!(verify_inclusion(&tree[m], mu, nu, &proof, &leaves[0]).is_err() || n == 1);
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i][0] ^= 1;
                assert!(verify_inclusion(&tree[m], mu, nu, &bad, &root).is_err());
            }
            let mut longer = proof.clone();
            longer.push(root);
            assert!(verify_inclusion(&tree[m], mu, nu, &longer, &root).is_err());
            if !proof.is_empty() {
                let shorter = &proof[..proof.len() - 1];
                assert!(verify_inclusion(&tree[m], mu, nu, shorter, &root).is_err());
            }
        }
        assert_eq!(
            verify_inclusion(&tree[0], nu, nu, &[], &root),
            Err(ProofError::IndexOutOfRange {
                index: nu,
                size: nu
            })
        );
    }
}

#[test]
fn every_consistency_proof_up_to_40_matches_the_reference() {
    let leaves = many_leaves(40);
    for n in 1..=40usize {
        let nu = n as u64;
        let second_root = mth(&leaves[..n]);
        for m in 0..=n {
            let mu = m as u64;
            let first_root = mth(&leaves[..m]);
            let proof = consistency_proof(leaves.as_slice(), mu, nu).expect("proof");
            let want = if m == 0 {
                Vec::new()
            } else {
                naive_subproof(m, &leaves[..n], true)
            };
            assert_eq!(proof, want, "proof({m}, {n})");
            verify_consistency(mu, nu, &first_root, &second_root, &proof).expect("verifies");
            if m > 0 && m < n {
                // A first tree that is not a prefix, a changed proof, or wrong roots fail.
                assert!(verify_consistency(mu, nu, &leaves[39], &second_root, &proof).is_err());
                assert!(verify_consistency(mu, nu, &first_root, &first_root, &proof).is_err());
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i][31] ^= 0x80;
                    assert!(
                        verify_consistency(mu, nu, &first_root, &second_root, &bad).is_err(),
                        "changed hash {i} of proof({m}, {n})"
                    );
                }
                assert!(verify_consistency(mu, nu, &first_root, &second_root, &[]).is_err());
            }
        }
        assert!(matches!(
            verify_consistency(nu + 1, nu, &second_root, &second_root, &[]),
            Err(ProofError::SizesOutOfOrder { .. })
        ));
    }
}

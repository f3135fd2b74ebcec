//! The record as an RFC 6962 Merkle tree: leaf and node hashes, the tree
//! head, inclusion and consistency proofs and their verification, and a
//! [`Frontier`] that grows the tree head one leaf at a time.
//!
//! The leaf of record `seq` is at index `seq - 1`; its data is the 32 bytes
//! of the record's chain hash, so its leaf hash is
//! `SHA-256(0x00 || record hash)`. An inner node is
//! `SHA-256(0x01 || left || right)`; the empty tree's head is `SHA-256("")`.
//! Everything here works on leaf *hashes*.

use sha2::{Digest, Sha256};

/// A SHA-256 value: a leaf hash, a node hash or a tree head.
pub type Hash = [u8; 32];

/// Why a proof did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The index or sizes cannot be proven at all.
    #[error("{0}")]
    Shape(String),
    /// The proof has the wrong number of hashes for these sizes.
    #[error("the proof has {got} hashes; {expected} are needed for these sizes")]
    Length {
        /// Hashes given.
        got: usize,
        /// Hashes needed.
        expected: usize,
    },
    /// The proof leads to another tree head.
    #[error("the proof leads to another tree head")]
    Mismatch,
}

/// The leaf hash of `data`: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// An inner node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The head of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two smaller than `n` (n > 1): where RFC 6962 splits.
fn split(n: usize) -> usize {
    debug_assert!(n > 1);
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// The tree head over these leaf hashes (RFC 6962 `MTH`).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The inclusion proof of leaf `index` in the tree of these leaves (RFC
/// 6962 `PATH`), from the leaf's neighbour up. `None` when out of range.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut out = Vec::new();
    path(index, leaves, &mut out);
    Some(out)
}

fn path(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(m, &leaves[..k], out);
        out.push(root(&leaves[k..]));
    } else {
        path(m - k, &leaves[k..], out);
        out.push(root(&leaves[..k]));
    }
}

/// The consistency proof between the tree of the first `size1` leaves and
/// the tree of all of them (RFC 6962 `PROOF`). `None` when `size1` is
/// larger than the tree.
pub fn consistency_proof(leaves: &[Hash], size1: usize) -> Option<Vec<Hash>> {
    if size1 > leaves.len() {
        return None;
    }
    let mut out = Vec::new();
    if size1 > 0 && size1 < leaves.len() {
        subproof(size1, leaves, true, &mut out);
    }
    Some(out)
}

fn subproof(m: usize, leaves: &[Hash], whole: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !whole {
            out.push(root(leaves));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &leaves[..k], whole, out);
        out.push(root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, out);
        out.push(root(&leaves[..k]));
    }
}

/// The tree head an inclusion proof leads to (RFC 9162 §2.1.3.2).
pub fn root_from_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::Shape(format!(
            "leaf index {index} is not in a tree of {size} leaves"
        )));
    }
    let (inner, border) = decompose(index, size);
    if proof.len() != inner + border {
        return Err(ProofError::Length {
            got: proof.len(),
            expected: inner + border,
        });
    }
    let mut r = *leaf;
    for (i, p) in proof[..inner].iter().enumerate() {
        r = if (index >> i) & 1 == 0 {
            node_hash(&r, p)
        } else {
            node_hash(p, &r)
        };
    }
    for p in &proof[inner..] {
        r = node_hash(p, &r);
    }
    Ok(r)
}

/// Checks that `leaf` is at `index` in the tree of `size` leaves whose head
/// is `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_inclusion(index, size, leaf, proof)? == *root {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

/// How many proof hashes sit below the point where the paths of `index`
/// and of the last leaf part (inner), and how many above it (border).
fn decompose(index: u64, size: u64) -> (usize, usize) {
    let inner = (64 - (index ^ (size - 1)).leading_zeros()) as usize;
    let border = (index >> inner).count_ones() as usize;
    (inner, border)
}

/// Checks that the tree of `size2` leaves with head `root2` extends the
/// tree of `size1` leaves with head `root1` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), ProofError> {
    if size2 < size1 {
        return Err(ProofError::Shape(format!(
            "a tree of {size2} leaves cannot extend one of {size1}"
        )));
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::Length {
                got: proof.len(),
                expected: 0,
            });
        }
        return if root1 == root2 {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if size1 == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::Length {
                got: proof.len(),
                expected: 0,
            })
        };
    }
    if proof.is_empty() {
        return Err(ProofError::Length {
            got: 0,
            expected: 1,
        });
    }
    // The subtree of the old tree's last leaf that is whole in both trees
    // starts the walk; when the old tree is itself a perfect tree, it is
    // the old head and not in the proof.
    let (inner, border) = decompose(size1 - 1, size2);
    let shift = (size1 - 1).trailing_ones() as usize;
    let inner = inner - shift;
    let (seed, rest) = if size1 == 1 << shift {
        (root1, proof)
    } else {
        (&proof[0], &proof[1..])
    };
    if rest.len() != inner + border {
        let extra = proof.len() - rest.len();
        return Err(ProofError::Length {
            got: proof.len(),
            expected: inner + border + extra,
        });
    }
    let index = (size1 - 1) >> shift;
    let mut fr = *seed;
    let mut sr = *seed;
    for (i, p) in rest[..inner].iter().enumerate() {
        if (index >> i) & 1 == 1 {
            fr = node_hash(p, &fr);
            sr = node_hash(p, &sr);
        } else {
            sr = node_hash(&sr, p);
        }
    }
    for p in &rest[inner..] {
        fr = node_hash(p, &fr);
        sr = node_hash(p, &sr);
    }
    if fr == *root1 && sr == *root2 {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

/// The right edge of a growing tree: the heads of its perfect subtrees,
/// largest first. Enough to append a leaf and to compute the tree head
/// without keeping the leaves (the checkpointer's memory).
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    /// (height, head) of each perfect subtree, left to right.
    peaks: Vec<(u32, Hash)>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (0u32, leaf);
        while let Some(&(height, left)) = self.peaks.last() {
            if height != node.0 {
                break;
            }
            self.peaks.pop();
            node = (height + 1, node_hash(&left, &node.1));
        }
        self.peaks.push(node);
        self.size += 1;
    }

    /// The tree head now.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(&(_, mut r)) = peaks.next() else {
            return empty_root();
        };
        for (_, left) in peaks {
            r = node_hash(left, &r);
        }
        r
    }
}

/// The leaf hash of a record, from its hex chain hash; `None` when the
/// stored hash is not 32 bytes of hex.
pub fn record_leaf(record_hash_hex: &str) -> Option<Hash> {
    let bytes: [u8; 32] = hex::decode(record_hash_hex).ok()?.try_into().ok()?;
    Some(leaf_hash(&bytes))
}

#[cfg(test)]
mod tests {
    //! Vectors from transparency-dev/merkle, proof/verify_test.go (the
    //! certificate-transparency-go merkle tests): eight leaves, the tree
    //! head of each prefix, and inclusion and consistency proofs.
    use super::*;

    fn h(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    fn leaves() -> Vec<Hash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|d| leaf_hash(&hex::decode(d).unwrap()))
        .collect()
    }

    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    /// (1-based leaf, tree size, proof)
    fn inclusion_vectors() -> Vec<(usize, usize, Vec<Hash>)> {
        vec![
            (1, 1, vec![]),
            (
                1,
                8,
                vec![
                    h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
                ],
            ),
            (
                6,
                8,
                vec![
                    h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                    h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
                ],
            ),
            (
                3,
                3,
                vec![h(
                    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                )],
            ),
            (
                2,
                5,
                vec![
                    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                ],
            ),
        ]
    }

    /// (size1, size2, proof)
    fn consistency_vectors() -> Vec<(usize, usize, Vec<Hash>)> {
        vec![
            (1, 1, vec![]),
            (
                1,
                8,
                vec![
                    h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
                ],
            ),
            (
                6,
                8,
                vec![
                    h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                    h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
                ],
            ),
            (
                2,
                5,
                vec![
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                ],
            ),
            (
                6,
                7,
                vec![
                    h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                    h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
                    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
                ],
            ),
        ]
    }

    #[test]
    fn tree_heads_match_the_published_roots() {
        let leaves = leaves();
        assert_eq!(
            hex::encode(root(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), empty_root());
        for (n, expected) in ROOTS.iter().enumerate() {
            assert_eq!(
                hex::encode(root(&leaves[..=n])),
                *expected,
                "size {}",
                n + 1
            );
            frontier.push(leaves[n]);
            assert_eq!(
                hex::encode(frontier.root()),
                *expected,
                "frontier {}",
                n + 1
            );
            assert_eq!(frontier.size(), n as u64 + 1);
        }
    }

    #[test]
    fn inclusion_proofs_match_and_verify() {
        let leaves = leaves();
        for (leaf, size, proof) in inclusion_vectors() {
            let made = inclusion_proof(&leaves[..size], leaf - 1).unwrap();
            assert_eq!(made, proof, "leaf {leaf} of {size}");
            let root = h(ROOTS[size - 1]);
            verify_inclusion(
                leaf as u64 - 1,
                size as u64,
                &leaves[leaf - 1],
                &proof,
                &root,
            )
            .unwrap();
            // The transparency-dev corruptions: each is refused.
            let (i, n) = (leaf as u64 - 1, size as u64);
            let l = &leaves[leaf - 1];
            assert!(verify_inclusion(i.wrapping_sub(1), n, l, &proof, &root).is_err());
            assert!(verify_inclusion(i + 1, n, l, &proof, &root).is_err());
            assert!(verify_inclusion(i ^ 2, n, l, &proof, &root).is_err());
            assert!(verify_inclusion(i, n * 2, l, &proof, &root).is_err());
            assert!(verify_inclusion(i, n / 2, l, &proof, &root).is_err());
            assert!(verify_inclusion(i, n, &leaf_hash(b"WrongLeaf"), &proof, &root).is_err());
            assert!(verify_inclusion(i, n, l, &proof, &empty_root()).is_err());
            let mut longer = proof.clone();
            longer.push(root);
            assert!(verify_inclusion(i, n, l, &longer, &root).is_err());
            let mut front = vec![root];
            front.extend(proof.iter().copied());
            assert!(verify_inclusion(i, n, l, &front, &root).is_err());
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k][0] ^= 8;
                assert!(verify_inclusion(i, n, l, &bad, &root).is_err());
            }
            if !proof.is_empty() {
                assert!(verify_inclusion(i, n, l, &proof[..proof.len() - 1], &root).is_err());
            }
        }
    }

    #[test]
    fn every_inclusion_proof_of_every_small_tree_verifies() {
        let leaves: Vec<Hash> = (0u32..40).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for n in 1..=leaves.len() {
            let r = root(&leaves[..n]);
            for i in 0..n {
                let p = inclusion_proof(&leaves[..n], i).unwrap();
                verify_inclusion(i as u64, n as u64, &leaves[i], &p, &r).unwrap();
            }
            for m in 0..=n {
                let p = consistency_proof(&leaves[..n], m).unwrap();
                verify_consistency(m as u64, n as u64, &p, &root(&leaves[..m]), &r).unwrap();
            }
        }
        assert!(inclusion_proof(&leaves[..3], 3).is_none());
    }

    #[test]
    fn consistency_proofs_match_and_verify() {
        let leaves = leaves();
        for (m, n, proof) in consistency_vectors() {
            assert_eq!(
                consistency_proof(&leaves[..n], m).unwrap(),
                proof,
                "{m} → {n}"
            );
            let (r1, r2) = (h(ROOTS[m - 1]), h(ROOTS[n - 1]));
            verify_consistency(m as u64, n as u64, &proof, &r1, &r2).unwrap();
            if proof.is_empty() {
                continue;
            }
            let (m, n) = (m as u64, n as u64);
            assert!(verify_consistency(m - 1, n, &proof, &r1, &r2).is_err());
            assert!(verify_consistency(m + 1, n, &proof, &r1, &r2).is_err());
            assert!(verify_consistency(m ^ 2, n, &proof, &r1, &r2).is_err());
            assert!(verify_consistency(m, n * 2, &proof, &r1, &r2).is_err());
            assert!(verify_consistency(m, n / 2, &proof, &r1, &r2).is_err());
            assert!(verify_consistency(m, n, &proof, &empty_root(), &r2).is_err());
            assert!(verify_consistency(m, n, &proof, &r2, &r1).is_err());
            assert!(verify_consistency(m, n, &[], &r1, &r2).is_err());
            for extra in [r1, r2] {
                let mut longer = proof.clone();
                longer.push(extra);
                assert!(verify_consistency(m, n, &longer, &r1, &r2).is_err());
                let mut front = vec![extra];
                front.extend(proof.iter().copied());
                assert!(verify_consistency(m, n, &front, &r1, &r2).is_err());
            }
            assert!(verify_consistency(m, n, &proof[..proof.len() - 1], &r1, &r2).is_err());
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k][0] ^= 16;
                assert!(verify_consistency(m, n, &bad, &r1, &r2).is_err());
            }
        }
        // The edge cases of TestVerifyConsistency.
        let (a, b) = (leaf_hash(b"1"), leaf_hash(b"2"));
        assert!(verify_consistency(0, 0, &[], &a, &b).is_err());
        assert!(verify_consistency(1, 1, &[], &a, &b).is_err());
        assert!(verify_consistency(0, 0, &[], &a, &a).is_ok());
        assert!(verify_consistency(0, 1, &[], &a, &b).is_ok());
        assert!(verify_consistency(1, 0, &[], &a, &b).is_err());
        assert!(verify_consistency(2, 1, &[], &a, &b).is_err());
        assert!(verify_consistency(1, 2, &[], &a, &b).is_err());
        let e = empty_root();
        assert!(verify_consistency(0, 0, &[e], &e, &e).is_err());
        assert!(verify_consistency(0, 1, &[e], &e, &e).is_err());
        assert!(verify_consistency(1, 1, &[e], &e, &e).is_err());
    }
}

//! Consistent hashing on a ring with virtual nodes: a key maps to the first virtual
//! node clockwise from its hash, so a key stays on one endpoint and, when an endpoint
//! leaves, only the keys it held move (about 1/N of them). Virtual nodes per endpoint
//! are proportional to its weight.

use std::sync::Arc;

use super::Candidate;

/// Virtual nodes for an endpoint of the default weight.
const VNODES: u64 = 160;
/// Bound on the ring size, so a huge set with huge weights stays cheap to build.
const MAX_RING: u64 = 1 << 20;

#[derive(Debug)]
pub(crate) struct Ring {
    /// (hash, endpoint index), sorted by hash.
    nodes: Vec<(u64, u32)>,
}

/// FNV-1a then a 64-bit finalizer (from splitmix64) to spread close inputs apart.
/// Stable across processes and versions, unlike std's randomly keyed hasher, so
/// every proxy maps a key to the same endpoint.
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Ring {
    pub(crate) fn new<E: Candidate>(endpoints: &[Arc<E>], ready: &[u32]) -> Ring {
        let total_weight: u64 = ready
            .iter()
            .map(|&i| u64::from(endpoints[i as usize].weight().max(1)))
            .sum();
        let default = u64::from(weft_api::mesh::DEFAULT_WEIGHT);
        let wanted = total_weight * VNODES / default;
        let scale = if wanted > MAX_RING {
            wanted as f64 / MAX_RING as f64
        } else {
            1.0
        };
        let mut nodes = Vec::new();
        for &i in ready {
            let ep = &endpoints[i as usize];
            let n = ((u64::from(ep.weight().max(1)) * VNODES / default) as f64 / scale).max(1.0);
            let name = ep.addr().to_string();
            for v in 0..n as u64 {
                let mut key = name.clone().into_bytes();
                key.extend_from_slice(&v.to_le_bytes());
                nodes.push((hash_bytes(&key), i));
            }
        }
        nodes.sort_unstable();
        Ring { nodes }
    }

    /// The endpoint owning `key`, walking clockwise past endpoints `ok` refuses.
    pub(crate) fn pick(&self, key: u64, ok: &impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.nodes.len();
        if len == 0 {
            return None;
        }
        let start = self.nodes.partition_point(|(h, _)| *h < key);
        let mut refused = None;
        for k in 0..len {
            let idx = self.nodes[(start + k) % len].1 as usize;
            if refused == Some(idx) {
                continue;
            }
            if ok(idx) {
                return Some(idx);
            }
            refused = Some(idx);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::endpoints;
    use crate::balance::{Algorithm, Balancer, HashKey};

    #[test]
    fn a_key_stays_and_only_about_one_in_n_keys_move_when_an_endpoint_leaves() {
        let (eps, _reg) = endpoints(&[100, 100, 100, 100]);
        let all = Balancer::new(Algorithm::ConsistentHash(HashKey::ClientIdentity), &eps);
        let three: Vec<_> = eps[..3].to_vec();
        let fewer = Balancer::new(Algorithm::ConsistentHash(HashKey::ClientIdentity), &three);
        let keys: Vec<u64> = (0..4000u32).map(|k| hash_bytes(&k.to_le_bytes())).collect();
        let mut moved = 0;
        for &k in &keys {
            let a = all.pick(&eps, Some(k), None).expect("pick");
            assert_eq!(all.pick(&eps, Some(k), None), Some(a), "sticky");
            let b = fewer.pick(&three, Some(k), None).expect("pick");
            if a != 3 {
                assert_eq!(a, b, "keys of remaining endpoints stay");
            } else {
                moved += 1;
            }
        }
        // A quarter of the keys belonged to the endpoint that left.
        assert!((700..1300).contains(&moved), "{moved} of 4000 moved");
    }
}

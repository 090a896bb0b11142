//! Deterministic payloads and a checksum, so a test can tell that every byte of a
//! large body arrived in order.

/// `len` bytes of a pattern that depends on `seed` and on each byte's position.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(2_654_435_761).rotate_right(13) as u8 ^ seed)
        .collect()
}

/// FNV-1a, 64 bits: cheap and order-sensitive.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_depends_on_seed_and_checksum_on_order() {
        let a = pattern(1000, 1);
        assert_ne!(a, pattern(1000, 2));
        let mut b = a.clone();
        b.swap(10, 11);
        assert_ne!(a[10], a[11]);
        assert_ne!(checksum(&a), checksum(&b));
    }
}

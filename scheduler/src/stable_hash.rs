//! A hash that is the same on every node, build and run: 64-bit FNV-1a, finished where
//! avalanche matters with MurmurHash3's `fmix64`.
//!
//! Placement (object owners, shard of a key, replica sets) and node identity must agree
//! across machines and restarts, so std's `DefaultHasher` (randomly keyed, and an algorithm
//! std does not promise to keep) is out. FNV-1a is simple and stable but mixes its last bytes
//! poorly; `fmix64` makes every input bit affect every output bit. Not for hostile keys in
//! hash tables (no HashDoS resistance).

/// FNV-1a's 64-bit offset basis: the state to start from.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Folds `bytes` into the FNV-1a state `h` (start from [`FNV_OFFSET`]).
pub fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// MurmurHash3's 64-bit finalizer: every input bit affects every output bit.
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Placement on every node depends on these exact values: a change here moves keys.
    #[test]
    fn the_hash_matches_the_published_algorithms() {
        // FNV-1a 64 test vectors (Fowler/Noll/Vo): "" and "a".
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
        // fmix64 fixes 0 and scatters neighbours.
        assert_eq!(fmix64(0), 0);
        assert_ne!(fmix64(1) >> 32, fmix64(2) >> 32);
    }
}

//! Hash maps keyed by bytes, as the index uses them, with a fast hasher.
//!
//! The standard library's SipHash is built to resist hash flooding: an
//! attacker who can choose the keys *inserted* into a map. These maps are
//! filled once from the configuration and only ever *looked up* with request
//! data, so a request cannot lengthen any probe sequence; the worst lookup
//! is fixed when the router is built. That leaves speed, and a multiply hash
//! over 8-byte words (`FxHash`'s, finished with a folded multiply as in
//! `foldhash`) is several times faster than SipHash on short keys.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Map from a byte string (a host name or a path) to `V`.
pub(crate) type BytesMap<V> = HashMap<Box<[u8]>, V, BuildHasherDefault<WordHasher>>;

/// Multiply hasher over 8-byte words; see the module docs.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WordHasher(u64);

impl WordHasher {
    /// Odd, with well-spread bits (from `rustc-hash`).
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    fn add(&mut self, word: u64) {
        self.0 = self.0.wrapping_add(word).wrapping_mul(Self::K);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let mut word = [0; 8];
            word[..tail.len()].copy_from_slice(tail);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_usize(&mut self, n: usize) {
        // `[u8]`'s `Hash` writes the length first, which keeps `a` and
        // `a\0` apart despite the zero padding above.
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        // Each multiply pushes entropy only upwards, but the map takes its
        // bucket from the low bits: a folded full-width multiply mixes the
        // high half back into them.
        let full = u128::from(self.0) * u128::from(Self::K);
        (full as u64) ^ ((full >> 64) as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::WordHasher;

    fn hash(bytes: &[u8]) -> u64 {
        BuildHasherDefault::<WordHasher>::default().hash_one(bytes)
    }

    #[test]
    fn zero_padding_does_not_collide() {
        assert_ne!(hash(b"a"), hash(b"a\0"));
        assert_ne!(hash(b""), hash(b"\0"));
        assert_ne!(hash(b"abcdefgh"), hash(b"abcdefgh\0"));
    }

    #[test]
    fn similar_names_spread_over_the_low_bits() {
        // Hosts that differ in a few digits must fill a 1024-bucket table
        // about as well as random hashes would (638 buckets expected).
        let mut buckets = std::collections::HashSet::new();
        for i in 0..1000 {
            buckets.insert(hash(format!("svc{i}.example.com").as_bytes()) & 1023);
        }
        assert!(buckets.len() > 600, "{} buckets used", buckets.len());
    }
}

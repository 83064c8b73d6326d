//! Endpoint ids stored at the width the endpoint count needs: a Maglev
//! table of 65,537 slots for 3 endpoints takes 16 KiB at 2 bits a slot
//! instead of 256 KiB at 32 (Envoy's `CompactMaglevTable` does the same).
//!
//! Widths are powers of two (1, 2, 4, 8, 16 or 32 bits), so an entry never
//! straddles two words and a lookup is a shift, a load and a mask.

/// A fixed-length array of endpoint ids, each `bits` wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PackedIds {
    words: Vec<u64>,
    len: usize,
    /// log2 of the entry width in bits (0..=5).
    width_log2: u32,
    /// log2 of the entries per word: `i >> index_shift` is `i`'s word.
    index_shift: u32,
    /// `i & slot_mask` is `i`'s place in its word.
    slot_mask: usize,
    /// The low `width` bits.
    entry_mask: u64,
}

impl PackedIds {
    /// Packs `ids`, every one below `endpoints`.
    pub(crate) fn new(ids: &[u32], endpoints: usize) -> PackedIds {
        let width_log2 = width_log2_for(endpoints);
        let bits = 1usize << width_log2;
        let per_word = 64 / bits;
        let mut words = vec![0u64; ids.len().div_ceil(per_word)];
        for (i, &id) in ids.iter().enumerate() {
            let shift = (i % per_word) * bits;
            words[i / per_word] |= u64::from(id) << shift;
        }
        PackedIds {
            words,
            len: ids.len(),
            width_log2,
            index_shift: 6 - width_log2,
            slot_mask: per_word - 1,
            entry_mask: u64::MAX >> (64 - bits),
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The id at `i`; 0 past the end (callers stay below `len`).
    #[inline]
    pub(crate) fn get(&self, i: usize) -> u32 {
        let word = self.words.get(i >> self.index_shift).copied().unwrap_or(0);
        let shift = (i & self.slot_mask) << self.width_log2;
        ((word >> shift) & self.entry_mask) as u32
    }

    /// Every entry in order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).map(|i| self.get(i))
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.words.capacity() * std::mem::size_of::<u64>()
    }
}

/// log2 of the narrowest power-of-two width that holds ids below
/// `endpoints`.
fn width_log2_for(endpoints: usize) -> u32 {
    let largest = endpoints.saturating_sub(1) as u64;
    let bits_needed = (64 - largest.leading_zeros()).max(1);
    bits_needed.next_power_of_two().trailing_zeros().min(5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_follow_the_endpoint_count() {
        let width = |n| 1u32 << width_log2_for(n);
        assert_eq!(width(1), 1);
        assert_eq!(width(2), 1);
        assert_eq!(width(3), 2);
        assert_eq!(width(4), 2);
        assert_eq!(width(5), 4);
        assert_eq!(width(16), 4);
        assert_eq!(width(17), 8);
        assert_eq!(width(256), 8);
        assert_eq!(width(257), 16);
        assert_eq!(width(65_536), 16);
        assert_eq!(width(65_537), 32);
        assert_eq!(width(usize::MAX), 32);
    }

    #[test]
    fn every_width_reads_back_what_was_packed() {
        for endpoints in [1usize, 2, 3, 7, 16, 200, 256, 300, 65_536, 70_000] {
            let ids: Vec<u32> = (0..1_000u64)
                .map(|i| ((i * 2_654_435_761) % endpoints as u64) as u32)
                .collect();
            let packed = PackedIds::new(&ids, endpoints);
            assert_eq!(packed.len(), ids.len());
            assert!(packed.iter().eq(ids.iter().copied()), "{endpoints}");
            assert_eq!(packed.get(ids.len() + 1_000_000), 0);
        }
        let three = PackedIds::new(&vec![2; 65_537], 3);
        assert_eq!(three.heap_bytes(), 65_537usize.div_ceil(32) * 8);
    }
}

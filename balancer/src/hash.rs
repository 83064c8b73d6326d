//! The stable 64-bit key hash: XXH64, the function Envoy uses for ring hash
//! and maglev, implemented here so that no dependency update can ever
//! change which endpoint a key lands on.
//!
//! XXH64's output is fixed by its specification; the tests below pin it to
//! values produced by the reference implementation, and the golden files
//! under `tests/golden/` pin it again for the keys the balancers see.

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

/// Hashes a request's balancing key (a header value, a cookie, a client
/// address): XXH64 with seed 0.
///
/// The value never changes across releases; callers may persist it or
/// compare it between processes.
pub fn hash_key(key: &[u8]) -> u64 {
    xxh64(key, 0)
}

/// XXH64 of `input` with `seed`.
pub(crate) fn xxh64(input: &[u8], seed: u64) -> u64 {
    let mut rest = input;
    let mut h = if input.len() >= 32 {
        let mut v = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
        while let Some((stripe, tail)) = rest.split_first_chunk::<32>() {
            for (acc, lane) in v.iter_mut().zip(stripe.chunks_exact(8)) {
                *acc = round(*acc, le64(lane));
            }
            rest = tail;
        }
        let mut h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        for lane in v {
            h = merge(h, lane);
        }
        h
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(input.len() as u64);
    while let Some((word, tail)) = rest.split_first_chunk::<8>() {
        h ^= round(0, u64::from_le_bytes(*word));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        rest = tail;
    }
    if let Some((word, tail)) = rest.split_first_chunk::<4>() {
        h ^= u64::from(u32::from_le_bytes(*word)).wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = tail;
    }
    for &byte in rest {
        h ^= u64::from(byte).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

fn round(acc: u64, lane: u64) -> u64 {
    acc.wrapping_add(lane.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

fn merge(h: u64, lane: u64) -> u64 {
    (h ^ round(0, lane)).wrapping_mul(P1).wrapping_add(P4)
}

/// Little-endian u64 of an 8-byte slice (`chunks_exact(8)` guarantees the
/// length; a short slice would read as zero rather than panic).
fn le64(lane: &[u8]) -> u64 {
    u64::from_le_bytes(lane.try_into().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from the reference implementation (the `xxhash` Python
    /// binding of Yann Collet's C library), seeds 0 and 1, covering every
    /// tail path: empty, 1 byte, 3 bytes, 5 bytes, 13 bytes, and 100 bytes
    /// (three 32-byte stripes plus a 4-byte tail).
    #[test]
    fn xxh64_matches_the_reference_implementation() {
        let hundred: Vec<u8> = (0..100).collect();
        let cases: [(&[u8], u64, u64); 6] = [
            (b"", 0xef46db3751d8e999, 0xd5afba1336a3be4b),
            (b"a", 0xd24ec4f1a98c6e5b, 0xdec2bc81c3cd46c6),
            (b"abc", 0x44bc2cf5ad770999, 0xbea9ca8199328908),
            (b"key-0", 0x12daf06715ffa373, 0xdc494360fbbe5f96),
            (b"10.0.0.1:8080", 0xcb972177068eb685, 0x0dfce9efd349b428),
            (&hundred, 0x6ac1e58032166597, 0x3d19a3a2098a7023),
        ];
        for (input, seed0, seed1) in cases {
            assert_eq!(xxh64(input, 0), seed0, "seed 0, {input:?}");
            assert_eq!(xxh64(input, 1), seed1, "seed 1, {input:?}");
            assert_eq!(hash_key(input), seed0);
        }
    }
}
